"""
The streaming benchmark: pbext's remote streams beside Pyro5's item
streaming (when Pyro5 and msgpack import), each server in its own process
on 127.0.0.1.

    python benchmarks/streams.py            # full
    python benchmarks/streams.py --quick    # under a minute
    python benchmarks/streams.py --smoke    # proves it runs; numbers mean nothing

Two rows:

C{items}
    A client reads a stream of many small items (ints) as fast as it can:
    items per second (higher is better).  pbext sends them in batches
    within the consumer's window; Pyro5 fetches one item per round trip.
C{slowMemory}
    A deliberately slow client (it waits 2 ms after each 64 KiB chunk)
    reads a stream of chunks while the server's resident memory is sampled
    every 20 ms: the peak growth in MB (lower is better).  Both servers
    produce chunks only as the client asks for them.

The results are printed as a table with pbext/Pyro5 ratios, and written as
JSON (C{--json}, default C{benchmarks/results/streams.json}).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.systems import (  # noqa: E402
    available,
    configurePyroClient,
    configurePyroServer,
    readRSS,
)

SYSTEMS = ("pbext", "pyro5")

#: Per mode: small items streamed, rounds of the items row, bytes the slow
#: client reads, and its pause after each chunk.
MODES: Dict[str, Dict[str, Any]] = {
    "full": {"items": 200_000, "rounds": 5, "slowBytes": 128 << 20, "pause": 0.002},
    "quick": {"items": 50_000, "rounds": 2, "slowBytes": 32 << 20, "pause": 0.002},
    "smoke": {"items": 500, "rounds": 1, "slowBytes": 1 << 20, "pause": 0.0},
}

CHUNK = 64 * 1024

_FILLER = bytes(range(256)) * (CHUNK // 256)


def _count(count: int) -> Iterator[int]:
    yield from range(count)


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // CHUNK):
        yield _FILLER


def _announce(port: int) -> None:
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()


def _exitWhenStdinCloses() -> None:
    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


# -- servers ------------------------------------------------------------------


def servePbext() -> None:
    from twisted.internet import reactor
    from twisted.spread import pb

    import pbext

    class StreamRoot(pb.Root):
        def remote_count(self, count: int) -> Iterator[int]:
            return _count(count)

        def remote_chunks(self, total: int) -> Iterator[bytes]:
            return _chunks(total)

    port = reactor.listenTCP(
        0, pbext.PBServerFactory(StreamRoot()), interface="127.0.0.1"
    )
    _announce(port.getHost().port)
    _exitWhenStdinCloses()
    reactor.run()


def servePyro() -> None:
    import Pyro5.api

    configurePyroServer()

    @Pyro5.api.expose
    class StreamRoot:
        def count(self, count: int) -> Iterator[int]:
            return _count(count)

        def chunks(self, total: int) -> Iterator[bytes]:
            return _chunks(total)

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    daemon.register(StreamRoot(), "bench")
    _announce(daemon.sock.getsockname()[1])
    _exitWhenStdinCloses()
    daemon.requestLoop()


# -- clients ------------------------------------------------------------------


def clientPbext(port: int, workload: str, amount: int, pause: float) -> float:
    from twisted.internet import defer, reactor, task

    import pbext

    result: List[float] = []

    async def main() -> None:
        factory = pbext.PBClientFactory()
        reactor.connectTCP("127.0.0.1", port, factory)
        root = await factory.getRootObject()
        started = time.perf_counter()
        if workload == "items":
            stream = await root.callRemote("count", amount)
            count = await stream.consume(lambda item: None)
        else:
            stream = await root.callRemote("chunks", amount)

            def slow(chunk: bytes) -> Any:
                return task.deferLater(reactor, pause, lambda: None)

            count = await stream.consume(slow)
        result.append(time.perf_counter() - started)
        assert count == (amount if workload == "items" else amount // CHUNK), count
        factory.disconnect()

    def run() -> None:
        defer.ensureDeferred(main()).addBoth(lambda r: reactor.stop() or r)

    reactor.callWhenRunning(run)
    reactor.run()
    return result[0]


def clientPyro(port: int, workload: str, amount: int, pause: float) -> float:
    import Pyro5.api

    configurePyroClient()
    with Pyro5.api.Proxy(f"PYRO:bench@127.0.0.1:{port}") as proxy:
        started = time.perf_counter()
        count = 0
        if workload == "items":
            for _ in proxy.count(amount):
                count += 1
        else:
            for _ in proxy.chunks(amount):
                count += 1
                if pause:
                    time.sleep(pause)
        elapsed = time.perf_counter() - started
    assert count == (amount if workload == "items" else amount // CHUNK), count
    return elapsed


# -- the runner ---------------------------------------------------------------


class Server:
    """
    A benchmark server process of one system.
    """

    def __init__(self, system: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", system],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = json.loads(self.process.stdout.readline())
        self.port: int = line["port"]
        self.pid: int = line["pid"]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def runClient(
    system: str, port: int, workload: str, amount: int, pause: float
) -> float:
    output = subprocess.check_output(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--client",
            system,
            str(port),
            workload,
            str(amount),
            str(pause),
        ],
        timeout=900,
    )
    return float(json.loads(output.splitlines()[-1])["seconds"])


def measureSystem(system: str, mode: Dict[str, Any]) -> Dict[str, Any]:
    server = Server(system)
    try:
        rates = [
            mode["items"] / runClient(system, server.port, "items", mode["items"], 0.0)
            for _ in range(mode["rounds"])
        ]
        rates.sort()
        before = readRSS(server.pid) or 0
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                rss = readRSS(server.pid)
                if rss is not None:
                    peak[0] = max(peak[0], rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds = runClient(
            system, server.port, "slowMemory", mode["slowBytes"], mode["pause"]
        )
        done.set()
        sampler.join()
    finally:
        server.stop()
    return {
        "itemsPerSecond": rates[len(rates) // 2],
        "slowMemoryMB": (peak[0] - before) * 1024 / 1e6,
        "slowSeconds": seconds,
    }


def parseArguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--json",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "streams.json"
        ),
    )
    parser.add_argument("--serve", choices=SYSTEMS)
    parser.add_argument(
        "--client", nargs=5, metavar=("SYSTEM", "PORT", "WORKLOAD", "N", "PAUSE")
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parseArguments(argv)
    if options.serve:
        {"pbext": servePbext, "pyro5": servePyro}[options.serve]()
        return 0
    if options.client:
        system, port, workload, amount, pause = options.client
        client = {"pbext": clientPbext, "pyro5": clientPyro}[system]
        seconds = client(int(port), workload, int(amount), float(pause))
        print(json.dumps({"seconds": seconds}))
        return 0
    modeName = "smoke" if options.smoke else "quick" if options.quick else "full"
    mode = MODES[modeName]
    results: Dict[str, Any] = {"mode": modeName, "parameters": mode, "systems": {}}
    for system in SYSTEMS:
        ok, note = available(system)
        if not ok:
            print(f"{system}: skipped, {note}")
            continue
        results["systems"][system] = measureSystem(system, mode)
    measured = results["systems"]
    print(f"{'':24}" + "".join(f"{s:>14}" for s in measured) + "  pbext/pyro5")
    for key, label in (
        ("itemsPerSecond", "items/s (small items)"),
        ("slowMemoryMB", "slow reader: server MB"),
    ):
        row = f"{label:24}" + "".join(f"{measured[s][key]:>14.1f}" for s in measured)
        if "pyro5" in measured and measured["pyro5"][key]:
            ratio = measured["pbext"][key] / measured["pyro5"][key]
            results.setdefault("ratios", {})[key] = ratio
            row += f"  {ratio:10.2f}"
        print(row)
    os.makedirs(os.path.dirname(options.json), exist_ok=True)
    with open(options.json, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
