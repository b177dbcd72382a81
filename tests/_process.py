"""
Run a real C{twistd} subprocess for end-to-end tests, on 127.0.0.1 only.

The server listens on C{tcp:0:interface=127.0.0.1} and the port it got is
read from its log, so tests never race for a free port.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Sequence

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

_PORT = re.compile(rb"starting on (\d+)")

#: How long a server may take to start listening.
START_TIMEOUT = 30.0

LOOPBACK = "tcp:0:interface=127.0.0.1"


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Make the working tree importable, as trial does for the tests.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [root, env.get("PYTHONPATH", "")] if p
    )
    if extra:
        env.update(extra)
    return env


class TwistdProcess(protocol.ProcessProtocol):
    """
    A C{twistd -n} child process whose output is collected.

    @ivar port: the TCP port it listens on, once known.
    @ivar output: everything it wrote to stdout and stderr.
    """

    def __init__(self) -> None:
        self.output = b""
        self.port: int | None = None
        self.listening: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.port is None:
            match = _PORT.search(self.output)
            if match:
                self.port = int(match.group(1))
                self.listening.callback(self.port)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(
                    "twistd ended before listening:\n"
                    + self.output.decode("utf-8", "replace")
                )
            )
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass


def startTwistd(
    test: TestCase,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> defer.Deferred[TwistdProcess]:
    """
    Start C{twistd -n --pidfile= <args>} and fire with the process once it
    listens; the test's cleanup stops it and waits for it to exit.
    """
    proc = TwistdProcess()
    argv = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "--logfile=-",
        *args,
    ]
    reactor.spawnProcess(proc, sys.executable, argv, env=_environment(env), path=cwd)

    def stop() -> defer.Deferred[None]:
        proc.signal("TERM")
        killer = reactor.callLater(10, proc.signal, "KILL")

        def ended(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return proc.ended.addBoth(ended)

    test.addCleanup(stop)
    timeout = reactor.callLater(
        START_TIMEOUT, lambda: proc.listening.called or proc.listening.cancel()
    )

    def started(port: int) -> TwistdProcess:
        if timeout.active():
            timeout.cancel()
        return proc

    return proc.listening.addCallback(started)


def startPBServer(
    test: TestCase, *options: str, env: dict[str, str] | None = None
) -> defer.Deferred[TwistdProcess]:
    """
    Start C{twistd -n pbserver --listen tcp:0:interface=127.0.0.1 <options>}.
    """
    return startTwistd(test, ["pbserver", "--listen", LOOPBACK, *options], env=env)


__all__ = ["TwistdProcess", "startTwistd", "startPBServer", "ProcessDone"]
