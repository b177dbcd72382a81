"""
Tests for L{pbext.streams}: remote streams between pbext peers, in memory.
"""

from __future__ import annotations

import gc
import io
from typing import Any, AsyncIterator, Iterator

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import pbext
from pbext import streams
from pbext.broker import PBEXT_DIALECT
from pbext.security import Limits, SecurityPolicy
from pbext.streams import (
    RemoteStream,
    Stream,
    StreamCancelled,
    StreamError,
    StreamLost,
    StreamsNotSupported,
    TooManyStreams,
)
from pbext.testing import PBConnection, connectedPair
from pbext.typecheck import TypedCallError, TypedReturnError, typed


class Counted:
    """
    A source that counts how many items were pulled from it and whether
    its cleanup ran.
    """

    def __init__(self) -> None:
        self.pulled = 0
        self.cleaned = False

    def items(self, count: int, size: int = 0) -> Iterator[Any]:
        try:
            for i in range(count):
                self.pulled += 1
                yield (b"%08d" % i) * (size // 8) if size else i
        finally:
            self.cleaned = True


class StreamingRoot(pb.Root):
    """
    A root whose methods return streams of several kinds.
    """

    def __init__(self) -> None:
        self.counted = Counted()
        self.waiting: defer.Deferred[None] | None = None
        self.asyncCleaned = False
        self.received: list[object] = []

    def remote_count(self, count: int, window: int = 1024) -> Stream[int]:
        return Stream(self.counted.items(count), window=window)

    def remote_chunks(self, count: int, size: int, windowBytes: int) -> Stream[bytes]:
        return Stream(self.counted.items(count, size), windowBytes=windowBytes)

    def remote_plain(self, count: int) -> Iterator[int]:
        return self.counted.items(count)

    async def remote_slow(self, count: int) -> AsyncIterator[int]:
        return self._slow(count)

    async def _slow(self, count: int) -> AsyncIterator[int]:
        try:
            for i in range(count):
                self.waiting = defer.Deferred()
                await self.waiting
                yield i
        finally:
            self.asyncCleaned = True

    def remote_slowDirect(self, count: int) -> AsyncIterator[int]:
        return self._slow(count)

    def remote_failing(self) -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("the source broke")

    @typed
    def remote_typed(self) -> Iterator[int]:
        yield 1
        yield "two"  # type: ignore[misc]

    def remote_small(self, count: int) -> Stream[int]:
        return Stream(iter(range(count)), asListForStockPeers=10)

    def remote_sum(self, stream: RemoteStream[int]) -> defer.Deferred[int]:
        return stream.consume(self.received.append)

    @typed
    def remote_total(self, stream: AsyncIterator[int]) -> defer.Deferred[int]:
        return stream.consume(self.received.append)  # type: ignore[attr-defined]

    def remote_produced(self, windowBytes: int) -> Stream[bytes]:
        self.producer = PushSource()
        stream = Stream.fromProducer(self.producer, windowBytes=windowBytes)
        self.queue = stream._source
        return stream

    def remote_hold(self, stream: RemoteStream[int]) -> int:
        self.received.append(stream)
        return stream.window

    def remote_file(self, data: bytes) -> Stream[bytes]:
        self.file = io.BytesIO(data)
        return Stream.fromFile(self.file, chunkSize=4)


def _pair(
    root: StreamingRoot, client: pb.PBClientFactory | None = None, **limits: Any
) -> tuple[PBConnection, pb.RemoteReference]:
    policy = SecurityPolicy(limits=Limits(**limits))
    conn = connectedPair(
        pbext.PBServerFactory(root, security=policy),
        client if client is not None else pbext.PBClientFactory(),
    )
    return conn, conn.rootObject()


class StreamTestCase(SynchronousTestCase):
    def connect(self, **limits: Any) -> tuple[StreamingRoot, PBConnection, Any]:
        root = StreamingRoot()
        conn, ref = _pair(root, **limits)
        self.addCleanup(conn.disconnect)
        return root, conn, ref

    def readAll(self, conn: PBConnection, stream: RemoteStream[Any]) -> list[Any]:
        items: list[Any] = []
        d = stream.consume(items.append)
        conn.pump()
        self.assertEqual(self.successResultOf(d), len(items))
        return items


class CreditTests(StreamTestCase):
    """
    The producer runs only as far as the consumer granted credit.
    """

    def test_nothingBeforeFirstRead(self) -> None:
        """
        Receiving a stream pulls nothing from its source: credit is
        granted by the first read.
        """
        root, conn, ref = self.connect()
        conn.resultOf(ref.callRemote("count", 100, 10))
        conn.pump()
        self.assertEqual(root.counted.pulled, 0)

    def test_itemWindow(self) -> None:
        """
        With a window of 10 items, an unread stream makes the producer pull
        at most 10 items however long the connection runs; reading them
        grants more.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 1000, 10))
        self.assertEqual(conn.resultOf(stream.next()), 0)
        for _ in range(5):
            conn.pump()
        self.assertLessEqual(root.counted.pulled, 10)
        for i in range(1, 10):
            self.assertEqual(conn.resultOf(stream.next()), i)
        conn.pump()
        self.assertGreater(root.counted.pulled, 10)
        self.assertLessEqual(root.counted.pulled, 20)

    def test_byteWindow(self) -> None:
        """
        With a window of 4000 bytes, 1000-byte items are pulled at most one
        over the window ahead of the reader.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("chunks", 100, 1000, 4000))
        self.assertEqual(len(conn.resultOf(stream.next())), 1000)
        conn.pump()
        self.assertLessEqual(root.counted.pulled, 5)

    def test_hostileCreditIsClipped(self) -> None:
        """
        A consumer that asks for more items than the policy's
        maxStreamBufferedItems gets at most that many in one batch.
        """
        root, conn, ref = self.connect(maxStreamBufferedItems=16)
        stream = conn.resultOf(ref.callRemote("count", 1000))
        source = stream._source
        batch = conn.resultOf(source.callRemote("next", 10**9, 10**9))
        self.assertEqual(len(batch[0]), 16)

    def test_everyItemInOrder(self) -> None:
        """
        A long stream arrives whole and in order, through many batches.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 5000, 64))
        self.assertEqual(self.readAll(conn, stream), list(range(5000)))
        self.assertTrue(root.counted.cleaned)

    def test_finishedStreamFreesReference(self) -> None:
        """
        Once a stream has ended, the reader no longer holds the producer's
        object, even if the application keeps the L{RemoteStream}: the
        server's reference to it is released.
        """
        root, conn, ref = self.connect()
        held = len(conn.serverBroker.localObjects)  # type: ignore[union-attr]
        stream = conn.resultOf(ref.callRemote("count", 5))
        self.assertEqual(self.readAll(conn, stream), [0, 1, 2, 3, 4])
        gc.collect()
        conn.pump()
        self.assertEqual(len(conn.serverBroker.localObjects), held)  # type: ignore[union-attr]
        self.assertIsNotNone(stream)

    def test_generatorResult(self) -> None:
        """
        A remote method returning a plain generator streams it.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("plain", 3))
        self.assertIsInstance(stream, RemoteStream)
        self.assertEqual(self.readAll(conn, stream), [0, 1, 2])

    def test_asyncGenerator(self) -> None:
        """
        An async generator's items arrive as they are produced, whether the
        method returns it directly or from an C{async def}.
        """
        for method in ("slow", "slowDirect"):
            root, conn, ref = self.connect()
            stream = conn.resultOf(ref.callRemote(method, 3))
            items: list[int] = []
            d = stream.consume(items.append)
            for _ in range(3):
                conn.pump()
                assert root.waiting is not None
                root.waiting.callback(None)
            conn.pump()
            self.assertEqual(self.successResultOf(d), 3)
            self.assertEqual(items, [0, 1, 2])

    def test_asyncFor(self) -> None:
        """
        A L{RemoteStream} is read with C{async for}.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 5))

        async def read() -> list[int]:
            return [item async for item in stream]

        d = defer.ensureDeferred(read())
        conn.pump()
        self.assertEqual(self.successResultOf(d), [0, 1, 2, 3, 4])

    def test_fromFile(self) -> None:
        """
        L{Stream.fromFile} streams a file's bytes in chunks, and closes the
        file at the end.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("file", b"0123456789"))
        self.assertEqual(self.readAll(conn, stream), [b"0123", b"4567", b"89"])
        self.assertTrue(root.file.closed)

    def test_fromFileNeverRead(self) -> None:
        """
        A file stream that never starts (a stock caller) still closes its
        file.
        """
        f = io.BytesIO(b"data")
        Stream.fromFile(f).close()
        self.assertTrue(f.closed)


class CancelTests(StreamTestCase):
    """
    A consumer that cancels stops the producer and runs its cleanup.
    """

    def test_cancelRunsCleanup(self) -> None:
        """
        Cancelling runs the generator's C{finally} within one round trip,
        and the cancel's Deferred fires once it has run.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 1000, 10))
        conn.resultOf(stream.next())
        d = stream.cancel()
        self.assertFalse(root.counted.cleaned)
        conn.pump()
        self.assertTrue(root.counted.cleaned)
        self.successResultOf(d)
        self.failureResultOf(stream.next(), StreamCancelled)

    def test_cancelAsync(self) -> None:
        """
        Cancelling an async generator waiting for its next item runs its
        cleanup.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("slow", 10))
        failures: list[Any] = []
        stream.next().addErrback(failures.append)
        conn.pump()
        stream.cancel()
        conn.pump()
        self.assertTrue(root.asyncCleaned)
        self.assertTrue(failures[0].check(StreamCancelled))


class ErrorTests(StreamTestCase):
    """
    Errors of the producer and of the connection reach both ends.
    """

    def test_producerError(self) -> None:
        """
        The items produced before an error arrive, then the error.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("failing"))
        items: list[int] = []
        d = stream.consume(items.append)
        conn.pump()
        f = self.failureResultOf(d)
        self.assertEqual(items, [1, 2])
        self.assertTrue(f.check(ValueError))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_readerError(self) -> None:
        """
        An exception raised by C{consume}'s callback fails its Deferred and
        cancels the stream, running the producer's cleanup.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 1000, 10))

        def broken(item: int) -> None:
            if item == 3:
                raise ZeroDivisionError(item)

        d = stream.consume(broken)
        conn.pump()
        self.failureResultOf(d, ZeroDivisionError)
        self.assertTrue(root.counted.cleaned)

    def test_droppedConnection(self) -> None:
        """
        A lost connection fails the reader with L{StreamLost} and runs the
        producer's cleanup.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 1000, 10))
        conn.resultOf(stream.next())
        conn.pump()
        items: list[int] = []
        d = stream.consume(items.append)
        conn.dropConnection()
        f = self.failureResultOf(d, StreamLost)
        self.assertIn("connection to the producer was lost", str(f.value))
        self.assertTrue(root.counted.cleaned)

    def test_typedItems(self) -> None:
        """
        With typed calls, an item that does not match the return annotation
        C{Iterator[int]} fails the stream after the items before it.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("typed"))
        items: list[int] = []
        d = stream.consume(items.append)
        conn.pump()
        f = self.failureResultOf(d)
        self.assertEqual(items, [1])
        self.assertTrue(f.check(TypedReturnError))
        self.assertIn("stream item 1: expected int, got str", str(f.value))
        self.flushLoggedErrors(TypedReturnError)

    def test_typedArgumentItems(self) -> None:
        """
        With typed calls, the items of a stream passed as an argument are
        checked against the parameter's C{AsyncIterator[int]} as they
        arrive: the server reads the items before a mismatch, then gets a
        L{TypedCallError} naming the item, and the client's generator is
        stopped.
        """
        root, conn, ref = self.connect()
        counted = Counted()

        def items() -> Iterator[object]:
            yield 1
            yield "two"
            yield from counted.items(1000)

        d = ref.callRemote("total", Stream(items(), window=10))
        conn.pump()
        f = self.failureResultOf(d, TypedCallError)
        self.assertIn(
            "remote_total: arg 'stream': stream item 1: expected int, got str",
            str(f.value),
        )
        self.assertEqual(root.received, [1])
        self.assertLess(counted.pulled, 1000)
        self.assertTrue(counted.cleaned)

    def test_moreThanAskedFor(self) -> None:
        """
        A batch with more items than the reader asked for ends the stream
        with an error instead of being buffered.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 100, 10))
        stream._inflight += 1
        stream._batch([[1, 2, 3], False], 2, 100)
        f = self.failureResultOf(stream.next(), StreamError)
        self.assertIn("sent 3 items where 2 were asked for", str(f.value))


class LimitTests(StreamTestCase):
    """
    The policy limits the streams one connection may hold.
    """

    def test_maxOpenStreams(self) -> None:
        """
        Past maxOpenStreams, opening a stream fails with
        L{TooManyStreams}, and finishing one makes room.
        """
        root, conn, ref = self.connect(maxOpenStreams=2)
        first = conn.resultOf(ref.callRemote("count", 3))
        second = conn.resultOf(ref.callRemote("count", 3))
        d = ref.callRemote("count", 3)
        conn.pump()
        f = self.failureResultOf(d)
        self.assertTrue(f.check(TooManyStreams))
        self.assertIn("more than 2 streams open", str(f.value))
        self.readAll(conn, first)
        self.assertIsInstance(conn.resultOf(ref.callRemote("count", 3)), RemoteStream)
        self.readAll(conn, second)

    def test_bufferedItemsPerConnection(self) -> None:
        """
        The streams a connection receives share its maxStreamBufferedItems:
        each is granted a window out of what is left, and a stream with
        nothing left to grant is refused with L{TooManyStreams}; a stream
        that ends gives its window back.
        """
        root, conn, ref = self.connect(maxStreamBufferedItems=15)

        def offer() -> Any:
            return ref.callRemote("hold", Stream(iter(range(3)), window=10))

        self.assertEqual(conn.resultOf(offer()), 10)
        self.assertEqual(conn.resultOf(offer()), 5)
        d = offer()
        conn.pump()
        f = self.failureResultOf(d)
        self.assertIn("may already buffer 15 items together", str(f.value))
        self.flushLoggedErrors()
        first = root.received[0]
        self.assertEqual(self.readAll(conn, first), [0, 1, 2])
        self.assertEqual(conn.resultOf(offer()), 10)

    def test_abandonedStreamIsCancelled(self) -> None:
        """
        A reader dropped before the end cancels its stream: the producer's
        cleanup runs and the stream no longer counts against
        maxOpenStreams.
        """
        root, conn, ref = self.connect(maxOpenStreams=1)
        stream = conn.resultOf(ref.callRemote("count", 1000, 10))
        conn.resultOf(stream.next())
        del stream
        gc.collect()
        conn.pump()
        self.assertTrue(root.counted.cleaned)
        self.assertIsInstance(conn.resultOf(ref.callRemote("count", 3)), RemoteStream)


class NegotiationTests(SynchronousTestCase):
    """
    A pbext client is known to be pbext before its first call.
    """

    def test_callFromRootCallback(self) -> None:
        """
        A call made as soon as the root object arrives (before any other
        round trip) already gets a stream: the client's hello precedes it.
        """
        client = pbext.PBClientFactory()
        conn = connectedPair(
            pbext.PBServerFactory(StreamingRoot()), client, handshake=False
        )
        self.addCleanup(conn.disconnect)
        d = client.getRootObject().addCallback(lambda root: root.callRemote("count", 3))
        conn.pump()
        stream = self.successResultOf(d)
        self.assertIsInstance(stream, RemoteStream)


class DirectionTests(StreamTestCase):
    """
    A client may pass a stream as an argument.
    """

    def test_argument(self) -> None:
        """
        A generator passed as an argument arrives as a L{RemoteStream} the
        server reads.
        """
        root, conn, ref = self.connect()
        self.assertEqual(conn.resultOf(ref.callRemote("sum", (i for i in range(3)))), 3)
        gen = (i * 2 for i in range(2000))
        self.assertEqual(conn.resultOf(ref.callRemote("sum", gen)), 2000)
        self.assertEqual(root.received[:3], [0, 1, 2])
        self.assertEqual(root.received[3:], [i * 2 for i in range(2000)])


class StockPeerTests(SynchronousTestCase):
    """
    A stock PB peer is never sent a stream.
    """

    def connectStock(self) -> tuple[PBConnection, Any]:
        conn, ref = _pair(StreamingRoot(), pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        return conn, ref

    def test_clearError(self) -> None:
        """
        A stock client calling a streaming method gets
        L{StreamsNotSupported} naming the fix.
        """
        conn, ref = self.connectStock()
        d = ref.callRemote("count", 3)
        conn.pump()
        f = self.failureResultOf(d)
        self.assertTrue(f.check(StreamsNotSupported))
        self.assertIn("only a pbext peer can read", str(f.value))

    def test_asList(self) -> None:
        """
        A L{Stream} made with C{asListForStockPeers} reaches a stock client
        as a list when it is short enough, and as an error otherwise.
        """
        conn, ref = self.connectStock()
        self.assertEqual(conn.resultOf(ref.callRemote("small", 3)), [0, 1, 2])
        d = ref.callRemote("small", 11)
        conn.pump()
        f = self.failureResultOf(d)
        self.assertIn("more than 10 items", str(f.value))

    def test_argumentToStockServer(self) -> None:
        """
        A pbext client passing a generator to a stock server fails the
        call with L{StreamsNotSupported}, sends nothing, and closes the
        generator.
        """
        counted = Counted()
        conn = connectedPair(
            pb.PBServerFactory(StreamingRoot()), pbext.PBClientFactory()
        )
        self.addCleanup(conn.disconnect)
        ref = conn.rootObject()
        d = ref.callRemote("sum", counted.items(3))
        conn.pump()
        f = self.failureResultOf(d, StreamsNotSupported)
        self.assertIn("serve it with pbext.PBServerFactory", str(f.value))
        self.assertEqual(counted.pulled, 0)

    def test_dialect(self) -> None:
        """
        Streams are offered to a peer that said it is pbext/1.
        """
        self.assertEqual(PBEXT_DIALECT, b"pbext/1")


@implementer(IConsumer)
class SlowConsumer:
    """
    An L{IConsumer} that pauses its producer after every write until told.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.producer: IPushProducer | None = None
        self.unregistered = False

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.data.append(data)
        assert self.producer is not None
        self.producer.pauseProducing()


@implementer(IPushProducer)
class PushSource:
    """
    A push producer that writes when resumed, and records pauses.
    """

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


class ProducerConsumerTests(StreamTestCase):
    """
    Streams work with Twisted's producers and consumers.
    """

    def test_writeToPausingConsumer(self) -> None:
        """
        While the consumer pauses, no credit is granted and the producer
        stops; resuming goes on, and every item is written in order.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("count", 100, 4))
        consumer = SlowConsumer()
        d = stream.writeTo(consumer)
        conn.pump()
        self.assertEqual(consumer.data, [0])
        self.assertLessEqual(root.counted.pulled, 4)
        while not d.called:
            assert consumer.producer is not None
            consumer.producer.resumeProducing()
            conn.pump()
            self.assertLessEqual(root.counted.pulled, len(consumer.data) + 4)
        self.assertEqual(self.successResultOf(d), 100)
        self.assertEqual(consumer.data, list(range(100)))
        self.assertTrue(consumer.unregistered)

    def test_fromProducerOverConnection(self) -> None:
        """
        What a push producer writes reaches the reader; the producer is
        paused while the reader reads nothing, and the reader's cancel
        stops it.
        """
        root, conn, ref = self.connect()
        stream = conn.resultOf(ref.callRemote("produced", 8))
        first = stream.next()
        conn.pump()
        root.queue.write(b"a" * 4)
        conn.pump()
        self.assertEqual(self.successResultOf(first), b"a" * 4)
        # More than the reader's window and the producer's queue hold.
        for _ in range(6):
            root.queue.write(b"b" * 4)
        conn.pump()
        self.assertTrue(root.producer.paused)
        self.assertEqual(conn.resultOf(stream.next()), b"b" * 4)
        stream.cancel()
        conn.pump()
        self.assertTrue(root.producer.stopped)

    def test_fromProducer(self) -> None:
        """
        L{Stream.fromProducer} streams what a push producer writes, pausing
        it past the byte window, until it unregisters.
        """
        producer = PushSource()
        stream = Stream.fromProducer(producer, windowBytes=10)
        queue = stream._source
        queue.write(b"a" * 6)  # type: ignore[union-attr]
        queue.write(b"b" * 6)  # type: ignore[union-attr]
        self.assertTrue(producer.paused)
        self.assertEqual(stream.pull(), (True, b"a" * 6))
        self.assertTrue(producer.paused)
        self.assertEqual(stream.pull(), (True, b"b" * 6))
        self.assertFalse(producer.paused)
        ready, waiting = stream.pull()
        self.assertFalse(ready)
        queue.unregisterProducer()  # type: ignore[union-attr]
        self.assertTrue(waiting.called)  # type: ignore[union-attr]
        self.assertEqual(stream.pull(), (True, streams._END))
