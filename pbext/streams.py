# -*- test-case-name: tests.test_streams -*-
"""
Remote streams between pbext peers, with credit-based flow control.

A remote method may return a generator, an async generator or a L{Stream}
(which wraps any iterable, async iterable, file or push producer); a client
may pass one as an argument too.  The receiving side gets a
L{RemoteStream}: iterate it with C{async for}, or from callback code with
L{RemoteStream.next}, L{RemoteStream.consume} or L{RemoteStream.writeTo} (an
L{IConsumer} such as a file)::

    class Logs(pb.Root):
        def remote_tail(self, count: int) -> Iterator[str]:
            for line in lines[-count:]:
                yield line

    async for line in await root.callRemote("tail", 100):
        print(line)

The wire is ordinary PB: the offer travels as a registered copyable (wire
name C{"pbext.stream"}) holding a reference to a L{pb.Referenceable} per
stream and the window the producer proposes; the consumer calls that
reference's C{next(maxItems, maxBytes)} to grant credit and receives a
batch of items per answer, and its C{cancel()} to stop.  The producer runs
only when asked: it pulls at most the granted items (and about the granted
bytes, one item over at most) from the source, so a slow consumer makes it
hold no more than one window.  Nothing in the codec changes.

Streams are offered only to a pbext peer (one that said C{hello}, see
L{pbext.broker}); a stock L{twisted.spread.pb} peer calling a method that
returns a stream gets a L{StreamsNotSupported} error, or the whole sequence
as a list when the method returned a L{Stream} made with
C{asListForStockPeers=N} and the sequence has at most N items.

@since: pbext NEXT
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
import weakref
from collections import deque
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    AsyncIterable,
    Callable,
    Generic,
    Iterable,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    ensureDeferred,
    fail,
    succeed,
)
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from pbext import typecheck
from pbext.copyable import CopyableRegistry, _mappingFields, _StateEntry

if TYPE_CHECKING:
    from pbext.broker import Broker

__all__ = [
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_BYTES",
    "RemoteStream",
    "Stream",
    "StreamCancelled",
    "StreamError",
    "StreamLost",
    "StreamsNotSupported",
    "TooManyStreams",
    "streamRegistry",
]

_T = TypeVar("_T")

_log = Logger()

WIRE_NAME = "pbext.stream"
"""
The copyable type name a stream offer travels under.
"""

DEFAULT_WINDOW = 1024
"""
How many items a consumer lets the producer send ahead, unless the
L{Stream} or the consumer says otherwise.
"""

DEFAULT_WINDOW_BYTES = 256 * 1024
"""
About how many bytes (of C{bytes} and C{str} items) a consumer lets the
producer send ahead.
"""

_SMALL_ITEM = 1
"""
What an item that is not C{bytes} or C{str} counts for in the byte window.
"""


class StreamError(pb.Error):
    """
    A remote stream could not go on.

    @since: pbext NEXT
    """


class StreamCancelled(StreamError):
    """
    The stream was cancelled by its consumer.

    @since: pbext NEXT
    """


class StreamLost(StreamError):
    """
    The connection carrying the stream was lost before the stream ended.

    @since: pbext NEXT
    """


class StreamsNotSupported(StreamError):
    """
    A stream was to be sent to a peer that cannot receive one (a stock
    L{twisted.spread.pb} peer).

    @since: pbext NEXT
    """


class TooManyStreams(StreamError):
    """
    The connection has as many open streams as its policy allows
    (L{pbext.security.Limits.maxOpenStreams}).

    @since: pbext NEXT
    """


# -- the producing side ------------------------------------------------------

_END = object()


async def _anext(iterator: collections.abc.AsyncIterator[Any]) -> object:
    """
    The next item of an async iterator, or L{_END}.
    """
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


def _take(d: Deferred[Any]) -> list[Any]:
    """
    Take the result of C{d} as soon as it has one: the returned list holds
    it (a value or a L{Failure}) once C{d} has fired, which may be at once.
    """
    box: list[Any] = []
    d.addBoth(box.append)
    return box


def _sizeOf(item: object) -> int:
    if isinstance(item, (bytes, str, bytearray)):
        return len(item) or _SMALL_ITEM
    return _SMALL_ITEM


class Stream(Generic[_T]):
    """
    A sequence to send as a remote stream: what a remote method returns
    (or a caller passes) to choose the window, or to stream a source that
    is not a generator.

    @ivar window: how many items the producer may send ahead of the
        consumer.
    @ivar windowBytes: about how many bytes of C{bytes}/C{str} items it may
        send ahead (at most one item more).
    @ivar asListForStockPeers: if not L{None}, a stock PB peer receives the
        whole sequence as a list when it has at most this many items (a
        longer one is an error for it).

    @since: pbext NEXT
    """

    def __init__(
        self,
        source: Iterable[_T] | AsyncIterable[_T],
        *,
        window: int = DEFAULT_WINDOW,
        windowBytes: int = DEFAULT_WINDOW_BYTES,
        asListForStockPeers: int | None = None,
    ) -> None:
        if type(window) is not int or window < 1:
            raise ValueError(f"window={window!r}: give a whole number of 1 or more")
        if type(windowBytes) is not int or windowBytes < 1:
            raise ValueError(
                f"windowBytes={windowBytes!r}: give a whole number of 1 or more"
            )
        self.window = window
        self.windowBytes = windowBytes
        self.asListForStockPeers = asListForStockPeers
        self._sync: collections.abc.Iterator[_T] | None = None
        self._async: collections.abc.AsyncIterator[_T] | None = None
        self._source = source
        if hasattr(source, "__aiter__"):
            # mypy cannot narrow a union by hasattr.
            self._async = source.__aiter__()  # type: ignore[union-attr]
        elif hasattr(source, "__iter__"):
            self._sync = iter(source)  # type: ignore[arg-type]  # as above
        else:
            raise TypeError(
                f"{source!r} is neither iterable nor async iterable; give a "
                f"generator, an async generator or a list"
            )
        # An async source's next item while it is being produced: the box
        # it arrives in, and the Deferred producing it.
        self._pending: list[Any] | None = None
        self._running: Deferred[Any] | None = None
        self._closed = False
        #: Checks each item against the method's annotation (typed calls).
        self._check: Callable[[object], Any] | None = None
        self._checkName = ""
        self._count = 0
        #: Run by close(), after the source's own cleanup.
        self._cleanups: list[Callable[[], object]] = []

    @classmethod
    def fromFile(
        cls, file: IO[bytes], chunkSize: int = 64 * 1024, **options: Any
    ) -> Stream[bytes]:
        """
        Stream the rest of an open binary file in chunks of C{chunkSize}
        bytes (the file is read as the consumer asks, and closed when the
        stream ends or is cancelled).
        """

        def chunks() -> collections.abc.Iterator[bytes]:
            while True:
                chunk = file.read(chunkSize)
                if not chunk:
                    return
                yield chunk

        stream = Stream(chunks(), **options)
        # Closed by the stream, even if it never started.
        stream._cleanups.append(file.close)
        return stream

    @classmethod
    def fromProducer(cls, producer: IPushProducer, **options: Any) -> Stream[bytes]:
        """
        Stream what a push producer writes: returns a stream whose source
        is an L{IConsumer} the producer is registered with.  The producer
        is paused while more than a window of bytes waits, and the stream
        ends when the producer unregisters itself.
        """
        queue = _ProducerQueue(options.get("windowBytes", DEFAULT_WINDOW_BYTES))
        queue.registerProducer(producer, True)
        return Stream(queue, **options)

    @property
    def isAsync(self) -> bool:
        """
        Whether the source is an async iterable.
        """
        return self._async is not None

    def pull(self) -> tuple[bool, object]:
        """
        The next item: C{(True, item)}, C{(True, _END)} at the end, or
        C{(False, deferred)} when an async source has not produced it yet.

        @raise Exception: what the source raised.
        """
        if self._sync is not None:
            try:
                return True, self._checked(next(self._sync))
            except StopIteration:
                return True, _END
        box = self._pending
        if box is None:
            assert self._async is not None
            self._running = ensureDeferred(_anext(self._async))
            box = _take(self._running)
        if not box:
            # Not produced yet: the caller waits for it, then pulls again.
            self._pending = box
            waiting: Deferred[None] = Deferred()
            assert self._running is not None
            self._running.addCallback(lambda _: waiting.callback(None))
            return False, waiting
        self._pending = None
        self._running = None
        result = box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return True, (result if result is _END else self._checked(result))

    def _checked(self, item: object) -> object:
        index = self._count
        self._count += 1
        check = self._check
        if check is not None:
            mismatch = check(item)
            if mismatch is not None:
                raise typecheck.TypedReturnError(
                    self._checkName,
                    f"stream item {index}{mismatch[0]}",
                    mismatch[1],
                    mismatch[2],
                )
        return item

    def close(self) -> Deferred[None]:
        """
        Stop the source and run its cleanup (a generator's C{finally}, an
        async generator's C{aclose}, a producer's C{stopProducing}).

        @return: a L{Deferred} firing when the cleanup has run.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        running, self._running = self._running, None
        self._pending = None
        if running is not None:
            running.cancel()
        done: Deferred[None] = succeed(None)
        if self._sync is not None:
            close = getattr(self._sync, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _logCleanupError(Failure())
        else:
            aclose = getattr(self._async, "aclose", None)
            if aclose is not None:

                async def closing() -> None:
                    await aclose()

                done = ensureDeferred(closing()).addErrback(_logCleanupError)
        return done.addCallback(self._runCleanups)

    def _runCleanups(self, ignored: object) -> None:
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:
                _logCleanupError(Failure())


def _logCleanupError(failure: Failure) -> None:
    if not failure.check(CancelledError):
        _log.failure("pbext: a stream's cleanup failed", failure)


@implementer(IConsumer)
class _ProducerQueue:
    """
    An L{IConsumer} that turns what a push producer writes into an async
    iterator, pausing the producer while more than C{limit} bytes wait.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._producer: IPushProducer | None = None
        self._paused = False
        self._done = False
        self._waiter: Deferred[object] | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if not streaming:
            raise TypeError(
                f"{producer!r} is a pull producer; Stream.fromProducer takes a "
                f"push producer (use Stream.fromFile for a file)"
            )
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._done = True
        self._producer = None
        self._wake(_END)

    def write(self, data: bytes) -> None:
        if self._waiter is not None:
            self._wake(data)
            return
        self._items.append(data)
        self._bytes += len(data)
        if self._bytes > self._limit and not self._paused and self._producer:
            self._paused = True
            self._producer.pauseProducing()

    def _wake(self, value: object) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(value)

    def __aiter__(self) -> collections.abc.AsyncIterator[bytes]:
        return self

    # A Deferred is awaitable, as async for needs, but not the Awaitable
    # that AsyncIterator declares.
    def __anext__(self) -> Deferred[bytes]:  # type: ignore[override]
        if self._items:
            item = self._items.popleft()
            self._bytes -= len(item)
            if self._paused and self._bytes <= self._limit // 2 and self._producer:
                self._paused = False
                self._producer.resumeProducing()
            return succeed(item)
        if self._done:
            return fail(StopAsyncIteration())
        if self._paused and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()
        self._waiter = Deferred()
        return self._waiter.addCallback(self._ended)

    @staticmethod
    def _ended(value: Any) -> Any:
        if value is _END:
            raise StopAsyncIteration()
        return value

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        self._done = True
        self._items.clear()
        if producer is not None:
            producer.stopProducing()


class _StreamSource(pb.Referenceable):
    """
    The producing end of one stream on one connection: answers the
    consumer's C{next} (credit) and C{cancel}.
    """

    def __init__(self, stream: Stream[Any], broker: Broker) -> None:
        self._stream = stream
        self._broker = broker
        self._connection = _connectionStreams(broker)
        self._connection.openSource(self)
        self._queue: deque[tuple[int, int, Deferred[list[object]]]] = deque()
        self._filling = False
        self._finished = False
        self._failure: Failure | None = None

    def remote_next(self, maxItems: int, maxBytes: int) -> Deferred[list[object]]:
        """
        Grant credit: answer with C{[items, done]}, at most C{maxItems}
        items (and about C{maxBytes} bytes), once at least one is ready.
        """
        if type(maxItems) is not int or type(maxBytes) is not int:
            raise StreamError("next(maxItems, maxBytes) takes two integers")
        limits = self._broker.pbextPolicy.limits
        maxItems = max(1, min(maxItems, limits.maxStreamBufferedItems))
        maxBytes = max(1, min(maxBytes, limits.maxOutgoingMessageBytes // 2))
        answer: Deferred[list[object]] = Deferred()
        self._queue.append((maxItems, maxBytes, answer))
        if not self._filling:
            self._fillNext()
        return answer

    def remote_cancel(self) -> Deferred[None]:
        """
        Stop the producer and run its cleanup; answered once it has run.
        """
        return self._finish(Failure(StreamCancelled("the consumer cancelled")))

    def _fillNext(self) -> None:
        while self._queue and not self._filling:
            maxItems, maxBytes, answer = self._queue.popleft()
            if self._finished:
                if self._failure is not None:
                    answer.errback(self._failure)
                else:
                    answer.callback([[], True])
                continue
            self._filling = True
            self._fill([], 0, maxItems, maxBytes, answer)

    def _fill(
        self,
        batch: list[object],
        size: int,
        maxItems: int,
        maxBytes: int,
        answer: Deferred[list[object]],
    ) -> None:
        stream = self._stream
        while len(batch) < maxItems and size < maxBytes and not self._finished:
            try:
                ready, item = stream.pull()
            except BaseException:
                failure = Failure()
                if batch:
                    self._failure = failure
                    self._finish(failure)
                    break
                self._finish(failure)
                self._answer(answer, failure)
                return
            if not ready:
                if batch:
                    break
                assert isinstance(item, Deferred)
                item.addCallback(self._resume, maxItems, maxBytes, answer)
                return
            if item is _END:
                self._finish(None)
                self._answer(answer, [batch, True])
                return
            batch.append(item)
            size += _sizeOf(item)
        if self._finished and not batch and self._failure is not None:
            self._answer(answer, self._failure)
            return
        self._answer(answer, [batch, self._finished and self._failure is None])

    def _resume(
        self,
        ignored: object,
        maxItems: int,
        maxBytes: int,
        answer: Deferred[list[object]],
    ) -> None:
        self._fill([], 0, maxItems, maxBytes, answer)

    def _answer(
        self, answer: Deferred[list[object]], result: list[object] | Failure
    ) -> None:
        self._filling = False
        if isinstance(result, Failure):
            answer.errback(result)
        else:
            answer.callback(result)
        self._fillNext()

    def _finish(self, failure: Failure | None) -> Deferred[None]:
        """
        End the stream (with C{failure}, or at its end), run the source's
        cleanup, and fail any credit still queued.
        """
        if self._finished:
            return succeed(None)
        self._finished = True
        if failure is not None and self._failure is None:
            self._failure = failure
        self._connection.closeSource(self)
        done = self._stream.close()
        if not self._filling:
            self._fillNext()
        return done

    def lost(self) -> None:
        """
        The connection was lost: end the stream and run its cleanup.
        """
        self._finish(Failure(StreamLost("the connection to the consumer was lost")))


# -- the consuming side ------------------------------------------------------


class RemoteStream(Generic[_T]):
    """
    A stream sent by the peer: an async iterator of its items.

    C{async for item in stream} reads it; from callback code,
    L{next}, L{consume} or L{writeTo}.  The producer sends at most
    L{window} items (about L{windowBytes} bytes) ahead of what has been
    read.  A lost connection fails the reader with L{StreamLost}; an error
    of the producer arrives after the items sent before it.

    @ivar window: items the producer may send ahead: what it proposed,
        cut to what the connection's policy grants this stream (see
        L{maxStreamBufferedItems<pbext.security.Limits.maxStreamBufferedItems>});
        lower it to buffer less.
    @ivar windowBytes: likewise, in bytes of C{bytes} and C{str} items.
    @ivar received: how many items have been read so far.

    @since: pbext NEXT
    """

    def __init__(
        self, source: pb.RemoteReference, window: int, windowBytes: int
    ) -> None:
        # Dropped once the producer has ended, so a finished stream that
        # is kept does not keep the peer's object.
        self._source: pb.RemoteReference | None = source
        self.windowBytes = max(1, windowBytes)
        self.received = 0
        self._buffer: deque[object] = deque()
        self._bufferedBytes = 0
        self._inflight = 0
        self._reservedItems = 0
        self._reservedBytes = 0
        self._done = False
        self._failure: Failure | None = None
        self._waiters: deque[Deferred[Any]] = deque()
        self._connection = _connectionStreams(source.broker)
        # The items this stream may buffer, out of what the connection's
        # policy lets all of its received streams buffer together.
        self._granted = self._connection.openSink(self, max(1, window))
        self.window = self._granted
        self._open = True
        # Under typed calls, the checker of the items the parameter this
        # stream was passed as declares (see checkArgumentItems).
        self._check: Callable[[object], Any] | None = None
        self._checkName = ""
        self._checkPath = ""

    def __repr__(self) -> str:
        return f"<RemoteStream {self.received} items read>"

    def __aiter__(self) -> RemoteStream[_T]:
        return self

    def __anext__(self) -> Deferred[_T]:
        return self.next()

    def next(self) -> Deferred[_T]:
        """
        The next item, as a L{Deferred}; at the end it fails with
        C{StopAsyncIteration}.
        """
        if self._buffer:
            item = self._buffer.popleft()
            self._bufferedBytes -= _sizeOf(item)
            self.received += 1
            self._request()
            # Items are what the producer sent, typed _T on trust.
            return succeed(item)  # type: ignore[arg-type]
        if self._failure is not None:
            return fail(self._failure)
        if self._done:
            return fail(StopAsyncIteration())
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        self._request()
        return waiter

    def consume(self, callback: Callable[[_T], object]) -> Deferred[int]:
        """
        Call C{callback} with each item in order; if it returns a
        L{Deferred}, wait for it before the next item (so a slow callback
        slows the producer).

        @return: a L{Deferred} firing with the number of items when the
            stream ends, or failing with its error.
        """
        done: Deferred[int] = Deferred()
        count = [0]

        def loop() -> None:
            while True:
                d = self.next()
                box = _take(d)
                if not box:
                    # Wait for the item, then go on.
                    d.addBoth(resume, box)
                    return
                if not step(box[0]):
                    return

        def resume(ignored: object, box: list[object]) -> None:
            if step(box[0]):
                loop()

        def step(result: object) -> bool:
            if isinstance(result, Failure):
                if result.check(StopAsyncIteration):
                    done.callback(count[0])
                else:
                    done.errback(result)
                return False
            count[0] += 1
            try:
                # result is an item here (failures were handled above).
                outcome = callback(result)  # type: ignore[arg-type]
            except BaseException:
                # The reader's own error: stop the producer and report it.
                self.cancel()
                done.errback()
                return False
            if isinstance(outcome, Deferred):
                outcome.addCallbacks(lambda _: loop(), done.errback)
                return False
            return True

        loop()
        return done

    def writeTo(self, consumer: IConsumer) -> Deferred[int]:
        """
        Write every item (C{bytes}) to C{consumer}, registered as a push
        producer: while the consumer pauses it, no credit is granted, so
        the remote producer stops too.

        @return: a L{Deferred} firing with the number of items written.
        """
        return _ConsumerWriter(self, consumer).start()

    def cancel(self) -> Deferred[None]:
        """
        Stop the stream: the producer stops and runs its cleanup.  Readers
        waiting for an item fail with L{StreamCancelled}.

        @return: a L{Deferred} firing once the producer's cleanup has run
            (within one round trip).
        """
        if self._failure is not None:
            return succeed(None)
        endedRemotely = self._done
        self._buffer.clear()
        self._bufferedBytes = 0
        self._done = True
        self._end(Failure(StreamCancelled("the stream was cancelled")))
        if endedRemotely:
            return succeed(None)
        return self._forgetSource("cancel").addErrback(_ignoreLost)

    # -- credit

    def _request(self) -> None:
        if self._done or self._failure is not None:
            return
        window = max(1, min(self.window, self._granted))
        freeItems = window - len(self._buffer) - self._reservedItems
        freeBytes = self.windowBytes - self._bufferedBytes - self._reservedBytes
        idle = not self._inflight and not self._buffer
        if not idle:
            if self._inflight >= 2:
                return
            if freeItems < max(1, window // 2):
                return
            if freeBytes < max(1, self.windowBytes // 2):
                return
        items = max(1, freeItems)
        size = max(1, freeBytes)
        self._inflight += 1
        self._reservedItems += items
        self._reservedBytes += size
        d = self._callSource("next", items, size)
        d.addCallbacks(
            self._batch,
            self._batchFailed,
            callbackArgs=(items, size),
            errbackArgs=(items, size),
        )

    def _release(self, items: int, size: int) -> None:
        self._inflight -= 1
        self._reservedItems -= items
        self._reservedBytes -= size

    def _batch(self, answer: object, items: int, size: int) -> None:
        self._release(items, size)
        if self._failure is not None:
            return
        if (
            not isinstance(answer, list)
            or len(answer) != 2
            or not isinstance(answer[0], list)
        ):
            self._end(Failure(StreamError(f"malformed stream batch {answer!r}")))
            return
        batch, done = answer
        failure = None
        if len(batch) > items:
            batch = []
            failure = Failure(
                StreamError(
                    f"the producer sent {len(answer[0])} items where {items} "
                    f"were asked for"
                )
            )
        elif self._check is not None:
            batch, failure = self._checkItems(batch)
        for item in batch:
            self._bufferedBytes += _sizeOf(item)
        self._buffer.extend(batch)
        if done or failure is not None:
            self._done = True
            if self._failure is None:
                # Read after the items before it.
                self._failure = failure
            self._close()
        while self._waiters and self._buffer:
            item = self._buffer.popleft()
            self._bufferedBytes -= _sizeOf(item)
            self.received += 1
            self._waiters.popleft().callback(item)
        if failure is not None:
            self._end(None)
            self._forgetSource(None if done else "cancel").addErrback(_ignoreLost)
        elif self._done:
            self._forgetSource(None)
            if not self._buffer:
                self._end(None)
        else:
            self._request()

    def _callSource(self, *message: object) -> Deferred[Any]:
        source = self._source
        if source is None:
            return succeed(None)
        return source.callRemote(*message)

    def _forgetSource(self, message: str | None) -> Deferred[Any]:
        """
        Send the producer C{message} (if any), then drop the reference to
        it: the producer has ended or is told to.
        """
        d = self._callSource(message) if message is not None else succeed(None)
        self._source = None
        return d

    def _checkItems(self, batch: list[object]) -> tuple[list[object], Failure | None]:
        """
        Check received items against the annotation of the parameter this
        stream was passed as (typed calls): the items before the first
        that does not match, and the error for it.
        """
        check = self._check
        assert check is not None
        for index, item in enumerate(batch):
            mismatch = check(item)
            if mismatch is not None:
                error = typecheck.TypedCallError(
                    self._checkName,
                    f"{self._checkPath}: stream item "
                    f"{self.received + len(self._buffer) + index}{mismatch[0]}",
                    mismatch[1],
                    mismatch[2],
                )
                return batch[:index], Failure(error)
        return batch, None

    def _batchFailed(self, failure: Failure, items: int, size: int) -> None:
        self._release(items, size)
        if failure.check(pb.PBConnectionLost):
            failure = self._lostFailure()
        self._done = True
        self._forgetSource(None)
        self._end(failure)

    def _end(self, failure: Failure | None) -> None:
        """
        Fail the waiting readers (with C{failure}, or C{StopAsyncIteration}
        at the end) and forget the connection.
        """
        if failure is not None and self._failure is None:
            self._failure = failure
        self._close()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if self._failure is not None:
                waiter.errback(self._failure)
            else:
                waiter.errback(StopAsyncIteration())

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._connection.closeSink(self)

    def _lostFailure(self) -> Failure:
        return Failure(
            StreamLost(
                f"the connection to the producer was lost after "
                f"{self.received + len(self._buffer)} items; call the method "
                f"again to start a new stream"
            )
        )

    def _lost(self) -> None:
        if self._done and self._failure is None:
            return
        self._done = True
        self._end(self._lostFailure())

    def __del__(self) -> None:
        # Dropped unfinished: stop the producer, as a RemoteReference that
        # is dropped tells its peer (decref) from its own __del__.
        # (An __init__ refused by a limit never set _open.)
        if getattr(self, "_open", False) and not self._done:
            try:
                self._callSource("cancel").addErrback(lambda f: None)
            except BaseException:
                pass


def _ignoreLost(failure: Failure) -> None:
    failure.trap(pb.PBConnectionLost, pb.DeadReferenceError)


@implementer(IPushProducer)
class _ConsumerWriter:
    """
    Writes a L{RemoteStream}'s items to an L{IConsumer}, as a push
    producer the consumer can pause.
    """

    def __init__(self, stream: RemoteStream[Any], consumer: IConsumer) -> None:
        self._stream = stream
        self._consumer = consumer
        self._paused = False
        self._waiting = False
        self._count = 0
        self._done: Deferred[int] = Deferred()

    def start(self) -> Deferred[int]:
        self._consumer.registerProducer(self, True)
        self._pump()
        return self._done

    def _pump(self) -> None:
        while not self._paused and not self._waiting and not self._done.called:
            d = self._stream.next()
            box = _take(d)
            if not box:
                self._waiting = True
                d.addCallback(self._arrived, box)
                return
            self._deliver(box[0])

    def _arrived(self, ignored: object, box: list[object]) -> None:
        self._waiting = False
        self._deliver(box[0])
        self._pump()

    def _deliver(self, result: object) -> None:
        if self._done.called:
            return
        if isinstance(result, Failure):
            self._consumer.unregisterProducer()
            if result.check(StopAsyncIteration):
                self._done.callback(self._count)
            else:
                self._done.errback(result)
            return
        self._count += 1
        try:
            # The items are the bytes the consumer is written.
            self._consumer.write(result)  # type: ignore[arg-type]
        except BaseException:
            # The consumer's own error: stop the producer and report it.
            self._consumer.unregisterProducer()
            self._stream.cancel()
            self._done.errback()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        if not self._done.called:
            self._stream.cancel()
            self._done.errback(StreamCancelled("the consumer stopped the stream"))


# -- per connection: limits --------------------------------------------------


class _ConnectionStreams:
    """
    The streams open on one connection, held to its policy's
    L{maxOpenStreams<pbext.security.Limits.maxOpenStreams>}.
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.sources: set[_StreamSource] = set()
        # Each open received stream and the items it may buffer; held
        # weakly: a reader dropped unfinished cancels its stream.
        self.sinks: weakref.WeakKeyDictionary[RemoteStream[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        broker.notifyOnDisconnect(self._lost)

    def _lost(self) -> None:
        for source in list(self.sources):
            source.lost()
        for sink in list(self.sinks.keys()):
            sink._lost()

    def _check(self) -> None:
        limit = self._broker.pbextPolicy.limits.maxOpenStreams
        if len(self.sources) + len(self.sinks) >= limit:
            raise TooManyStreams(
                f"more than {limit} streams open on this connection; read or "
                f"cancel one before opening another"
            )

    def openSource(self, source: _StreamSource) -> None:
        self._check()
        self.sources.add(source)

    def closeSource(self, source: _StreamSource) -> None:
        self.sources.discard(source)

    def openSink(self, sink: RemoteStream[Any], window: int) -> int:
        """
        Count a received stream, and grant it a window of at most
        C{window} items out of the connection's
        L{maxStreamBufferedItems<pbext.security.Limits.maxStreamBufferedItems>}.

        @return: the window granted.
        @raise TooManyStreams: if the connection has no streams or no
            items left to grant.
        """
        self._check()
        limit = self._broker.pbextPolicy.limits.maxStreamBufferedItems
        granted = min(window, limit - sum(self.sinks.values()))
        if granted < 1:
            raise TooManyStreams(
                f"the streams open on this connection may already buffer "
                f"{limit} items together; read or cancel one before opening "
                f"another"
            )
        self.sinks[sink] = granted
        return granted

    def closeSink(self, sink: RemoteStream[Any]) -> None:
        self.sinks.pop(sink, None)


def _connectionStreams(broker: Broker) -> _ConnectionStreams:
    streams = broker._pbextStreams
    if streams is None:
        streams = broker._pbextStreams = _ConnectionStreams(broker)
    # The broker declares _pbextStreams as Any, not to import this module.
    return streams  # type: ignore[no-any-return]


# -- the registry that sends and receives offers -----------------------------

#: The result types the broker hands to L{prepareResult}.
RESULT_TYPES = frozenset([types.GeneratorType, types.AsyncGeneratorType, Stream])


def _peerStreams(broker: object) -> bool:
    from pbext.broker import PBEXT_DIALECT, Broker

    return isinstance(broker, Broker) and PBEXT_DIALECT in broker._pbextPeerFeatures


def _notSupported(broker: object = None) -> StreamsNotSupported:
    if getattr(broker, "isClient", False):
        return StreamsNotSupported(
            "a stream argument (a generator, an async generator or a Stream) "
            "can be read only by a pbext server, and this server is stock PB; "
            "serve it with pbext.PBServerFactory, or send a list"
        )
    return StreamsNotSupported(
        "this method returns a stream, which only a pbext peer can read; "
        "connect with pbext.PBClientFactory"
    )


def _offerState(obj: object, jellier: Any) -> dict[str, object]:
    # The registry sends only generators and Streams here.
    stream = obj if isinstance(obj, Stream) else Stream(obj)  # type: ignore[arg-type]
    broker = getattr(jellier, "invoker", None)
    if not _peerStreams(broker):
        stream.close()
        raise _notSupported(broker)
    try:
        # _peerStreams checked that it is a Broker.
        source = _StreamSource(stream, broker)  # type: ignore[arg-type]
    except StreamError:
        stream.close()
        raise
    return {
        "source": source,
        "window": stream.window,
        "windowBytes": stream.windowBytes,
    }


def _buildRemote(state: dict[str, Any]) -> RemoteStream[Any]:
    return RemoteStream(state["source"], state["window"], state["windowBytes"])


class StreamRegistry(CopyableRegistry):
    """
    The registry every pbext broker consults (after the application's) to
    send generators, async generators and L{Stream}s as stream offers and
    to receive offers as L{RemoteStream}s.

    @since: pbext NEXT
    """

    def __init__(self) -> None:
        super().__init__()
        entry = _StateEntry(
            WIRE_NAME.encode("ascii"),
            1,
            lambda: _mappingFields(
                "RemoteStream",
                {"source": pb.RemoteReference, "window": int, "windowBytes": int},
            ),
            _buildRemote,
            _offerState,
        )
        for cls in RESULT_TYPES:
            self._add(entry, cls)


def streamRegistry() -> StreamRegistry:
    """
    A new L{StreamRegistry}.

    @since: pbext NEXT
    """
    return StreamRegistry()


# -- the broker's hook ------------------------------------------------------

_ITERATORS = frozenset(
    [
        collections.abc.Iterator,
        collections.abc.Iterable,
        collections.abc.Generator,
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
        Stream,
        RemoteStream,
    ]
)


def _itemChecker(method: Callable[..., object]) -> Callable[[object], Any] | None:
    """
    The checker of the items a method's return annotation declares
    (C{Iterator[Row]}, C{AsyncIterator[bytes]}, C{Stream[str]} ...), or
    L{None}.
    """
    try:
        hints = typing.get_type_hints(method)
    except Exception:
        return None
    return _itemsOf(typecheck._awaitedAnnotation(hints.get("return")))


def _itemsOf(annotation: object) -> Callable[[object], Any] | None:
    """
    The checker of the items of an iterator annotation, or L{None}.
    """
    if get_origin(annotation) not in _ITERATORS:
        return None
    args = get_args(annotation)
    if not args:
        return None
    try:
        return typecheck._compile(args[0])
    except TypeError:
        return None


def checkArgumentItems(
    method: Callable[..., object], args: tuple[object, ...], kw: dict[str, object]
) -> None:
    """
    Under typed calls: give each L{RemoteStream} argument of a call the
    checker of the items its parameter's annotation declares
    (C{AsyncIterator[Row]}, C{RemoteStream[bytes]} ...), so that its
    items are checked as they arrive, like the other arguments.
    """
    positions = [i for i, value in enumerate(args) if type(value) is RemoteStream]
    names = [k for k, value in kw.items() if type(value) is RemoteStream]
    if not positions and not names:
        return
    try:
        hints = typing.get_type_hints(method)
        parameters = list(inspect.signature(method).parameters)
    except Exception:
        return
    name = getattr(method, "__qualname__", repr(method))
    chosen = [(parameters[i], args[i]) for i in positions if i < len(parameters)]
    chosen += [(k, kw[k]) for k in names]
    for parameter, value in chosen:
        check = _itemsOf(hints.get(parameter))
        if check is not None:
            assert isinstance(value, RemoteStream)
            value._check = check
            value._checkName = name
            value._checkPath = f"arg {parameter!r}"


def prepareResult(
    broker: Broker, result: object, method: Callable[..., object], typed: bool
) -> object:
    """
    Prepare a remote method's generator, async generator or L{Stream}
    result for sending: check its items against the method's annotation
    when calls are typed, and for a stock peer give the list (if the
    L{Stream} allows) or raise L{StreamsNotSupported}.

    @return: the L{Stream} to send, or a list (or L{Deferred} of one).
    """
    # The broker hands over only RESULT_TYPES: iterables.
    stream = result if isinstance(result, Stream) else Stream(result)  # type: ignore[arg-type]
    if typed:
        stream._check = _itemChecker(method)
        stream._checkName = getattr(method, "__qualname__", repr(method))
    if _peerStreams(broker):
        return stream
    limit = stream.asListForStockPeers
    if limit is None:
        stream.close()
        raise _notSupported()
    return _asList(stream, limit)


def _asList(stream: Stream[Any], limit: int) -> Union[list[object], Deferred[Any]]:
    """
    The items of C{stream} as a list, for a stock peer: at most C{limit}.
    """
    items: list[object] = []
    result: Deferred[Any] = Deferred()

    def loop() -> None:
        while True:
            try:
                ready, item = stream.pull()
            except BaseException:
                stream.close()
                result.errback()
                return
            if not ready:
                assert isinstance(item, Deferred)
                item.addCallback(lambda _: loop())
                return
            if item is _END:
                stream.close()
                result.callback(items)
                return
            if len(items) >= limit:
                stream.close()
                result.errback(
                    StreamsNotSupported(
                        f"this method's stream has more than {limit} items, "
                        f"more than a stock PB peer is sent as a list; "
                        f"connect with pbext.PBClientFactory"
                    )
                )
                return
            items.append(item)

    loop()
    box = _take(result)
    if box:
        if isinstance(box[0], Failure):
            box[0].raiseException()
        # The list the loop built.
        return box[0]  # type: ignore[no-any-return]
    waiting: Deferred[Any] = Deferred()

    # The result arrives later: hand it on.
    def later(_: object) -> None:
        value = box[0]
        if isinstance(value, Failure):
            waiting.errback(value)
        else:
            waiting.callback(value)

    result.addCallback(later)
    return waiting
