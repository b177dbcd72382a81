"""
End-to-end tests of remote streams: a real C{twistd pbserver} serving
L{tests._streamroot.StreamRoot} on 127.0.0.1, its resident memory measured
while a deliberately slow client reads 1 GB from it.

In L{tools.suite.END_TO_END}: the 1 GB stream takes a while.
"""

from __future__ import annotations

import zlib
from typing import Any

from twisted.internet import defer, endpoints, reactor, task
from twisted.python import log
from twisted.spread import pb
from twisted.trial.unittest import TestCase

import pbext
from pbext.streams import StreamLost
from tests import _memory
from tests._process import TwistdProcess, startPBServer
from tests._streamroot import chunk, chunks

ROOT = "tests._streamroot.StreamRoot"

_MIB = 1024 * 1024

#: The stream the slow client reads.
TOTAL = 1024 * _MIB
CHUNK = 256 * 1024

#: How much the server's resident memory may grow while it streams.
RSS_BUDGET = 16 * _MIB

#: How many chunks the server may produce ahead of the reader: the
#: default window is one 256 KiB chunk, a batch may go one item over it,
#: and the reader keeps at most two requests in flight.
WINDOW_CHUNKS = 4

#: The slow client waits this long after every chunk.
PAUSE = 0.001

#: Seconds any one step (connecting, a call) may take before the test fails.
STEP = 30.0


def _bounded(d: defer.Deferred[Any], seconds: float = STEP) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


class StreamEndToEndTests(TestCase):
    """
    Streams between a real pbext server process and clients over TCP.
    """

    timeout = 900

    @defer.inlineCallbacks
    def connect(self, factory: pb.PBClientFactory | None = None) -> Any:
        if not hasattr(self, "proc"):
            self.proc: TwistdProcess = yield startPBServer(self, "--root", ROOT)
        factory = factory or pbext.PBClientFactory()
        endpoint = endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.proc.port, timeout=10
        )
        yield _bounded(endpoint.connect(factory))
        self.addCleanup(factory.disconnect)
        root = yield _bounded(factory.getRootObject())
        return root

    @defer.inlineCallbacks
    def test_slowConsumerBoundsServerMemory(self) -> Any:
        """
        A 1 GB stream of chunks read by a client slower than the server
        keeps the server's resident memory growth under 16 MB, the server
        never produces more than a window ahead of the reader (asked over
        a second connection while the stream runs), and every byte arrives
        in order.
        """
        root = yield self.connect()
        # Asks, while the stream runs, how far the server has produced.
        observer = yield self.connect()
        # Warm the server's allocator with a short stream first.
        warm = yield _bounded(root.callRemote("chunks", 32 * _MIB, CHUNK))
        yield _bounded(warm.consume(lambda data: None))
        warmChunks = 32 * _MIB // CHUNK
        ahead: list[int] = []

        def aheadBy(produced: int) -> None:
            ahead.append(produced - warmChunks - state["chunks"])

        pid = self.proc.transport.pid
        before = _memory.residentBytes(pid)
        watch = _memory.RSSWatch(pid, reactor)
        stream = yield _bounded(root.callRemote("chunks", TOTAL, CHUNK))
        expected = chunks(TOTAL, CHUNK)
        state = {"bytes": 0, "crc": 0, "expectedCrc": 0, "chunks": 0}

        def read(data: bytes) -> defer.Deferred[None]:
            state["chunks"] += 1
            if state["chunks"] % 256 == 0:
                observer.callRemote("produced").addCallback(aheadBy)
            state["bytes"] += len(data)
            state["crc"] = zlib.crc32(data, state["crc"])
            state["expectedCrc"] = zlib.crc32(next(expected), state["expectedCrc"])
            return task.deferLater(reactor, PAUSE, lambda: None)

        started = reactor.seconds()
        count = yield _bounded(stream.consume(read), 600)
        peak = watch.stop()
        log.msg(
            f"streamed {TOTAL // _MIB} MiB to a slow client in "
            f"{reactor.seconds() - started:.1f} s; server RSS "
            f"{before / _MIB:.1f} MiB before, peak growth "
            f"{(peak - before) / _MIB:.1f} MiB; the server ran at most "
            f"{max(ahead, default=0)} chunks ahead of the reader"
        )
        self.assertEqual(count, TOTAL // CHUNK)
        self.assertEqual(state["bytes"], TOTAL)
        self.assertEqual(state["crc"], state["expectedCrc"])
        # The server never ran more than a window (one chunk, and one over)
        # and two requests' worth ahead of what the client had read.
        self.assertTrue(ahead)
        self.assertLessEqual(max(ahead), WINDOW_CHUNKS, ahead)
        self.assertLess(
            peak - before,
            RSS_BUDGET,
            f"server RSS grew {(peak - before) / _MIB:.1f} MiB while streaming",
        )

    @defer.inlineCallbacks
    def test_cancelRunsCleanup(self) -> Any:
        """
        Cancelling mid-stream runs the producer's cleanup within one round
        trip: once the cancel is answered, the server reports it.
        """
        root = yield self.connect()
        stream = yield _bounded(root.callRemote("chunks", TOTAL, CHUNK))
        first = yield _bounded(stream.next())
        self.assertEqual(first, chunk(0, CHUNK))
        yield _bounded(stream.cancel())
        cleanups = yield _bounded(root.callRemote("cleanups"))
        self.assertEqual(cleanups, 1)

    @defer.inlineCallbacks
    def test_droppedConnection(self) -> Any:
        """
        A dropped connection fails the reader with L{StreamLost} and runs
        the server's cleanup.
        """
        factory = pbext.PBClientFactory()
        root = yield self.connect(factory)
        stream = yield _bounded(root.callRemote("chunks", TOTAL, CHUNK))
        yield _bounded(stream.next())
        reading = stream.consume(
            lambda data: task.deferLater(reactor, 0.01, lambda: None)
        )
        factory._broker.transport.abortConnection()
        yield self.assertFailure(_bounded(reading), StreamLost)
        other = yield self.connect()
        for _ in range(100):
            cleanups = yield _bounded(other.callRemote("cleanups"))
            if cleanups:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(cleanups, 1)

    @defer.inlineCallbacks
    def test_upload(self) -> Any:
        """
        A client passes a generator as an argument; the server reads it
        whole and in order.
        """
        root = yield self.connect()
        total = 64 * _MIB
        size, crc = yield _bounded(root.callRemote("upload", chunks(total, CHUNK)), 120)
        expected = 0
        for data in chunks(total, CHUNK):
            expected = zlib.crc32(data, expected)
        self.assertEqual((size, crc), (total, expected))

    @defer.inlineCallbacks
    def test_stockPeer(self) -> Any:
        """
        A stock PB client calling a streaming method gets a clear error.
        """
        root = yield self.connect(pb.PBClientFactory())
        failure = yield self.assertFailure(
            _bounded(root.callRemote("chunks", CHUNK, CHUNK)), pb.Error
        )
        self.assertIn("only a pbext peer can read", str(failure))
