"""
A benchmark server, run in its own process by the runner.

    python -m benchmarks.server --system classic --port 0

It listens on 127.0.0.1 only, prints one line of JSON to stdout (C{port},
C{pid}, C{system}, C{copyables}: C{"typed"} if it serves pbext's typed
dataclass, and C{notes}), then serves until its standard input closes or it
gets SIGTERM.  Its root answers C{echo(value)}, C{ping()},
C{objects(count)} (small copyable objects) and, with a pbext typed
registry, C{typedObjects(count)}.  The C{floor} system has no root: it
sends every length-prefixed frame back (L{benchmarks.floor}).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import payloads
from benchmarks.systems import (
    ALL_SYSTEMS,
    FLOOR,
    RPYC_CONFIG,
    TWISTED_SYSTEMS,
    configurePyroServer,
)

#: The most objects one C{objects()} call builds.
MAX_OBJECTS = 100_000

#: Pending connections the listening socket holds.
BACKLOG = 1024


def _announce(port: int, system: str, copyables: str, notes: Sequence[str]) -> None:
    line = {
        "port": port,
        "pid": os.getpid(),
        "system": system,
        "copyables": copyables,
        "notes": list(notes),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _watchStdin(stop: Callable[[], None]) -> None:
    """
    Call C{stop} (from a daemon thread) once standard input closes: the
    runner holds the other end, so a server never outlives its runner.
    """

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop()

    threading.Thread(target=watch, daemon=True).start()


def _clamp(count: int) -> int:
    return max(0, min(int(count), MAX_OBJECTS))


def serveTwisted(system: str, port: int) -> None:
    """
    Serve a PB root with classic or pbext factories.
    """
    from twisted.internet import reactor
    from twisted.spread import pb

    payloads.registerClassicCopyables()
    notes: List[str] = []
    registry: Any = None
    if system == "pbext":
        registry, note = payloads.typedRegistry()
        if registry is None:
            notes.append(note)

    class BenchRoot(pb.Root):
        def remote_echo(self, value: Any) -> Any:
            return value

        def remote_ping(self) -> str:
            return "pong"

        def remote_objects(self, count: int) -> List[payloads.Point]:
            return payloads.makePoints(payloads.Point, _clamp(count))

        def remote_typedObjects(self, count: int) -> List[payloads.TypedPoint]:
            return payloads.makePoints(payloads.TypedPoint, _clamp(count))

    factory: Any
    if system == "classic":
        factory = pb.PBServerFactory(BenchRoot())
    else:
        import pbext

        if registry is not None:
            factory = pbext.PBServerFactory(BenchRoot(), registry=registry)
        else:
            factory = pbext.PBServerFactory(BenchRoot())
    listening = reactor.listenTCP(port, factory, backlog=BACKLOG, interface="127.0.0.1")
    copyables = "typed" if registry is not None else "classic"
    _announce(listening.getHost().port, system, copyables, notes)
    _watchStdin(lambda: reactor.callFromThread(reactor.stop))
    reactor.run()


def serveFloor(port: int) -> None:
    """
    Serve the raw Twisted echo floor.
    """
    from twisted.internet import reactor

    from benchmarks import floor

    listening = reactor.listenTCP(
        port, floor.serverFactory(), backlog=BACKLOG, interface="127.0.0.1"
    )
    _announce(listening.getHost().port, FLOOR, "none", [])
    _watchStdin(lambda: reactor.callFromThread(reactor.stop))
    reactor.run()


def servePyro(port: int) -> None:
    """
    Serve a Pyro5 object named C{bench} (threaded server).
    """
    import Pyro5.api

    configurePyroServer()

    @Pyro5.api.expose
    class PyroRoot:
        def echo(self, value: Any) -> Any:
            return value

        def ping(self) -> str:
            return "pong"

        def objects(self, count: int) -> List[payloads.PlainPoint]:
            return payloads.makePoints(payloads.PlainPoint, _clamp(count))

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=port)
    daemon.register(PyroRoot(), "bench")
    _announce(daemon.sock.getsockname()[1], "pyro5", "plain", [])
    _watchStdin(lambda: os._exit(0))
    daemon.requestLoop()


def serveRPyC(port: int) -> None:
    """
    Serve an RPyC service (threaded server).
    """
    import rpyc
    from rpyc.utils.classic import obtain
    from rpyc.utils.server import ThreadedServer

    class RPyCRoot(rpyc.Service):
        def exposed_echo(self, value: Any) -> Any:
            # RPyC passes lists and dictionaries by reference: copy them
            # here, so that the echo moves the data both ways.
            if isinstance(value, rpyc.BaseNetref):
                return obtain(value)
            return value

        def exposed_ping(self) -> str:
            return "pong"

        def exposed_objects(self, count: int) -> List[payloads.PlainPoint]:
            return payloads.makePoints(payloads.PlainPoint, _clamp(count))

    server = ThreadedServer(
        RPyCRoot,
        hostname="127.0.0.1",
        port=port,
        backlog=BACKLOG,
        protocol_config=dict(RPYC_CONFIG),
    )
    _announce(server.port, "rpyc", "plain", [])
    _watchStdin(lambda: os._exit(0))
    server.start()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", required=True, choices=ALL_SYSTEMS)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    serve: Dict[str, Callable[[], None]] = {
        "pyro5": lambda: servePyro(options.port),
        "rpyc": lambda: serveRPyC(options.port),
        FLOOR: lambda: serveFloor(options.port),
    }
    if options.system in TWISTED_SYSTEMS:
        serveTwisted(options.system, options.port)
    else:
        serve[options.system]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
