"""
Memory a hostile peer can make a real C{twistd pbserver} hold.

Each test starts C{twistd pbserver} (the demo root, the default policy) in
a subprocess, lets hostile peers from this process attack it over TCP, a
UNIX socket or TLS, and reads the server's resident set size
(C{/proc/PID/status}) every 20 ms meanwhile.  A well-behaved stock PB
client on another connection calls C{echo} every 50 ms throughout and
must be answered in under 250 ms; the server's log must stay small.

The attacks take their sizes from the default policy's limits (the
largest message, the most tokens), so they stay the worst a peer can do
when the limits change.  Each is bounded in time (a few seconds) and in
bytes sent.  What classic PB does with the same bytes is said in a
comment; none is run against classic PB here.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from twisted.internet import defer, endpoints, protocol, task
from twisted.python import log
from twisted.python.filepath import FilePath
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from pbext.security import defaultPolicy
from tests import _memory
from tests._process import startTwistd

#: The most a server's resident set size may grow for one hostile peer.
PER_PEER = 16 * 1024 * 1024

#: The longest a well-behaved client may wait for an answer meanwhile.
LATENCY = 0.25

#: The most a server may log for one hostile peer.
LOG_PER_PEER = 64 * 1024

_PORTS = re.compile(rb"starting on (\d+)")

if not sys.platform.startswith("linux"):
    skip = "reads /proc/PID/status"


def _limits() -> Any:
    return defaultPolicy().limits


class _Prober:
    """
    A stock PB client calling C{echo} every 50 ms, recording the slowest
    answer.
    """

    def __init__(self, reactor: Any, root: Any) -> None:
        self.reactor = reactor
        self.root = root
        self.slowest = 0.0
        self.calls = 0
        self.failures: list[Any] = []
        self._busy = False
        self._loop = task.LoopingCall(self._probe)
        self._loop.clock = reactor
        self._loop.start(0.05)

    def _probe(self) -> None:
        if self._busy:
            # Still waiting for the last one: that counts as slow.
            return
        self._busy = True
        started = self.reactor.seconds()

        def answered(result: object) -> None:
            self._busy = False
            self.calls += 1
            self.slowest = max(self.slowest, self.reactor.seconds() - started)
            if result != "probe":
                self.failures.append(result)

        self.root.callRemote("echo", "probe").addBoth(answered)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


class _MemoryBase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor

    @defer.inlineCallbacks
    def serve(self, *listen: str, extra: tuple[str, ...] = ()) -> Any:
        """
        Start C{twistd pbserver} on TCP and on C{listen}; fire with the
        process once every listener is up.
        """
        args = ["pbserver", "--listen", "tcp:0:interface=127.0.0.1"]
        for description in listen:
            args += ["--listen", description]
        proc = yield startTwistd(self, [*args, *extra])
        numeric = 1 + sum(1 for d in listen if not d.startswith("unix:"))
        for _ in range(500):
            if len(_PORTS.findall(proc.output)) >= numeric:
                break
            yield task.deferLater(self.reactor, 0.01, lambda: None)
        proc.ports = [int(p) for p in _PORTS.findall(proc.output)]
        self.proc = proc
        return proc

    @defer.inlineCallbacks
    def stockRoot(self, port: int) -> Any:
        client = pb.PBClientFactory()
        connector = self.reactor.connectTCP("127.0.0.1", port, client)
        self.addCleanup(connector.disconnect)
        root = yield client.getRootObject().addTimeout(10, self.reactor)
        self.assertEqual((yield root.callRemote("echo", 1)), 1)
        return root

    @defer.inlineCallbacks
    def connectAttacker(self, description: str, kind: type[Any]) -> Any:
        endpoint = endpoints.clientFromString(self.reactor, description)
        peer = kind()
        peer.handshake = True
        yield endpoint.connect(protocol.Factory.forProtocol(lambda: peer))
        self.addCleanup(self._close, peer)
        yield peer.handshaken.addTimeout(10, self.reactor)
        return peer

    def _close(self, peer: Any) -> Any:
        peer.stop()
        if not peer.connected:
            return None
        peer.transport.abortConnection()
        return peer.lost.addTimeout(10, self.reactor)

    @defer.inlineCallbacks
    def attack(
        self, descriptions: list[str], kind: type[Any], settle: float = 1.0
    ) -> Any:
        """
        Attack the server with one C{kind} peer per description (all at
        once), while a stock client probes it; return the server's RSS
        growth, the slowest probe and the log bytes written.
        """
        proc = self.proc
        root = yield self.stockRoot(proc.ports[0])
        # Let the server settle after its start and the first call.
        yield task.deferLater(self.reactor, 0.5, lambda: None)
        before = _memory.residentBytes(proc.transport.pid)
        logged = len(proc.output)
        watch = _memory.RSSWatch(proc.transport.pid, self.reactor)
        self.addCleanup(watch.stop)
        prober = _Prober(self.reactor, root)
        self.addCleanup(prober.stop)
        peers = yield defer.gatherResults(
            [self.connectAttacker(d, kind) for d in descriptions]
        )
        yield defer.gatherResults([p.start(self.reactor) for p in peers])
        yield task.deferLater(self.reactor, settle, lambda: None)
        prober.stop()
        peak = watch.stop()
        growth = peak - before
        logBytes = len(proc.output) - logged
        log.msg(
            f"pbext memory: {kind.__name__} x{len(descriptions)} "
            f"over {descriptions[0].split(':')[0]}: RSS {before / 2**20:.1f} MiB "
            f"-> peak {peak / 2**20:.1f} MiB (+{growth / 2**20:.1f} MiB), "
            f"sent {sum(p.sent for p in peers) / 2**20:.1f} MiB, "
            f"slowest probe {prober.slowest * 1000:.0f} ms of {prober.calls}, "
            f"log {logBytes} bytes"
        )
        self.assertEqual(prober.failures, [])
        self.assertGreater(prober.calls, 5)
        return growth, prober.slowest, logBytes, peers

    @defer.inlineCallbacks
    def assertBounded(self, description: str, kind: type[Any]) -> Any:
        growth, slowest, logBytes, peers = yield self.attack([description], kind)
        self.assertLess(growth, PER_PEER, f"{growth / 2**20:.1f} MiB")
        self.assertLess(slowest, LATENCY)
        self.assertLess(logBytes, LOG_PER_PEER)
        # The server survived.
        self.assertFalse(self.proc.ended.called)


def _sized(kind: type[Any]) -> type[Any]:
    """
    C{kind}, with its sizes raised to the default policy's limits.
    """
    limits = _limits()
    attrs: dict[str, Any] = {}
    if issubclass(kind, (_memory.LargeMessages, _memory.Unfinished)):
        attrs["fill"] = min(limits.maxMessageBytes, 64 * 2**20) - 4096
        attrs["size"] = min(limits.maxStringBytes, 640 * 1024)
    if issubclass(kind, (_memory.ManyTokens, _memory.Cycles)):
        attrs["tokens"] = min(limits.maxMessageTokens, 2_000_000)
    return type(kind.__name__, (kind,), attrs)


class TCPMemoryTests(_MemoryBase):
    """
    One hostile peer over TCP grows the server by less than 16 MB.
    """

    @defer.inlineCallbacks
    def runAttack(self, kind: type[Any]) -> Any:
        proc = yield self.serve()
        yield self.assertBounded(f"tcp:127.0.0.1:{proc.ports[0]}", _sized(kind))

    def test_neverReads(self) -> Any:
        """
        A peer that sends calls and never reads the answers is no longer
        read from once its pending output reaches C{maxPendingWriteBytes}.
        """
        # Classic PB buffers every answer: it grows as long as the peer
        # sends.
        return self.runAttack(_memory.NeverReads)

    def test_cycles(self) -> Any:
        """
        Calls whose arguments are large reference cycles leave no more
        than a bounded amount of garbage behind.
        """
        return self.runAttack(_memory.Cycles)

    def test_largeMessages(self) -> Any:
        """
        Messages of the largest size accepted, one after another.
        """
        return self.runAttack(_memory.LargeMessages)

    def test_manyTokens(self) -> Any:
        """
        Messages of as many tokens as accepted, each a distinct integer.
        """
        return self.runAttack(_memory.ManyTokens)

    def test_unfinished(self) -> Any:
        """
        A large message that is never finished.
        """
        return self.runAttack(_memory.Unfinished)


class UNIXMemoryTests(_MemoryBase):
    """
    One hostile peer over a UNIX socket grows the server by less than 16
    MB.
    """

    @defer.inlineCallbacks
    def runAttack(self, kind: type[Any]) -> Any:
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        yield self.serve(f"unix:{path}")
        yield self.assertBounded(f"unix:{path}", _sized(kind))

    def test_neverReads(self) -> Any:
        """
        A UNIX-socket peer that never reads its answers stops being read.
        """
        return self.runAttack(_memory.NeverReads)

    def test_largeMessages(self) -> Any:
        """
        Largest messages over a UNIX socket.
        """
        return self.runAttack(_memory.LargeMessages)


class TLSMemoryTests(_MemoryBase):
    """
    One hostile peer over TLS grows the server by less than 16 MB: write
    backpressure works on TLS transports too.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            from tests.test_tls import Certificates
        except ImportError:
            raise self.skipException("cryptography is not installed")
        self.certificates = Certificates(FilePath(self.mktemp()))

    @defer.inlineCallbacks
    def runAttack(self, kind: type[Any]) -> Any:
        proc = yield self.serve(self.certificates.serverDescription())
        yield self.assertBounded(
            self.certificates.clientDescription(proc.ports[1]), _sized(kind)
        )

    def test_neverReads(self) -> Any:
        """
        A TLS peer that never reads its answers stops being read.
        """
        # pbext before this change registered no producer on TLS: the
        # output grew without bound.
        return self.runAttack(_memory.NeverReads)

    def test_cycles(self) -> Any:
        """
        Reference cycles over TLS.
        """
        return self.runAttack(_memory.Cycles)

    def test_largeMessages(self) -> Any:
        """
        Largest messages over TLS.
        """
        return self.runAttack(_memory.LargeMessages)
