"""
Flow control of one broker's connection: how its bytes reach the
transport (L{pbext._transport.DirectWrites}) and arrive from it
(L{pbext._transport.DirectReads}), the queue of its decoded messages
(handled at most C{maxMessagesPerTurn} a reactor turn: fairness), write
backpressure (a peer that does not read its answers is not read from),
and what the connection reports to its factory's memory budget.

@since: pbext NEXT
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.interfaces import (
    IDelayedCall,
    ISSLTransport,
    ITCPTransport,
    IUNIXTransport,
)
from twisted.logger import Logger

from pbext import fairness
from pbext._transport import (
    DirectReads,
    DirectWrites,
    pendingWriter,
    producerTarget,
)
from pbext.budget import BYTES_STEP, MemoryBudget
from pbext.codec import FramingError

if TYPE_CHECKING:
    from pbext.broker import Broker
    from pbext.security import Limits

_log = Logger()

#: How often a backed-up output is measured again, in seconds.
_RECHECK = 0.05


def backpressureCapable(transport: object) -> bool:
    """
    Whether pbext registers its broker as a streaming producer, to learn
    when the peer stops reading: on TCP and UNIX transports, and on TLS
    over them (registered on the transport under TLS: see
    L{pbext._transport.producerTarget}).  Other transports keep classic
    PB's behaviour.
    """
    if ISSLTransport.providedBy(transport):
        transport = producerTarget(transport)
    return (
        ITCPTransport.providedBy(transport) or IUNIXTransport.providedBy(transport)
    ) and hasattr(transport, "registerProducer")


class FlowControl:
    """
    The flow of one connection's messages, in and out.

    @ivar backlog: decoded expressions waiting to be handled.
    @ivar outputFull: whether more than C{maxPendingWriteBytes} wait to be
        sent: the peer is not read from, nor its messages handled.
    @ivar readPauses: why reading the peer is paused (C{"fairness"},
        C{"backpressure"}); empty when it is not.
    @ivar pendingOut: how many bytes written wait to be sent, or L{None}
        on a transport pbext cannot look into.
    @ivar budget: the memory budget of the broker's factory, or L{None}.
    @ivar directReads: the transport's in-place reads, or L{None}.
    @ivar producerOn: the transport the broker is registered on as a
        streaming producer, or L{None}.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_broker",
        "_maxPending",
        "_messageTimeout",
        "backlog",
        "drainCall",
        "readPauses",
        "writePaused",
        "pausedBytes",
        "producing",
        "producerOn",
        "pendingOut",
        "outputFull",
        "budget",
        "chargedBytes",
        "directReads",
        "unwritten",
        "backlogBytes",
    )

    def __init__(self, broker: Broker, limits: Limits) -> None:
        self._broker = broker
        self._maxPending = limits.maxPendingWriteBytes
        self._messageTimeout = limits.messageTimeout
        self.backlog: deque[object] = deque()
        self.drainCall: IDelayedCall | None = None
        self.readPauses: set[str] = set()
        self.writePaused = False
        self.pausedBytes = 0
        self.producing = False
        self.producerOn: Any = None
        self.pendingOut: Callable[[], int] | None = None
        self.outputFull = False
        self.budget: MemoryBudget | None = None
        self.chargedBytes = 0
        self.directReads: DirectReads | None = None
        # A message about to be written, charged to the budget first.
        self.unwritten = 0
        # The bytes of the reads whose messages wait in the backlog.
        self.backlogBytes = 0

    @property
    def broker(self) -> Broker:
        """
        The broker whose connection this is.
        """
        return self._broker

    # -- the transport -------------------------------------------------------

    def connect(self, transport: Any, readsInPlace: bool) -> None:
        """
        The connection is made on C{transport}: choose how the broker writes
        (L{DirectWrites} where it can), whether it receives long strings in
        place (C{readsInPlace}), and register it as the transport's
        producer where backpressure is possible.
        """
        broker = self._broker
        writes = DirectWrites.forTransport(transport)
        if writes is not None:
            broker._pbextWrite = writes.write
            broker._pbextWriteSequence = writes.writeSequence
        else:
            broker._pbextWrite = transport.write
        if readsInPlace:
            self.directReads = DirectReads.forTransport(
                transport,
                broker._pbextReceiveBuffer,
                broker._pbextReceivedInto,
                self,
            )
        self.pendingOut = pendingWriter(transport)
        if backpressureCapable(transport):
            target = producerTarget(transport)
            try:
                target.registerProducer(broker, True)
                self.producing = True
                self.producerOn = target
            except RuntimeError:
                # Somebody else produces for this transport already.
                self.producing = False

    def stopQueue(self) -> None:
        """
        The connection is lost: forget the messages queued.
        """
        if self.drainCall is not None and self.drainCall.active():
            self.drainCall.cancel()
        self.drainCall = None
        self.backlog.clear()

    def release(self) -> None:
        """
        The connection is lost: stop reading in place and release what the
        budget was charged.
        """
        if self.directReads is not None:
            self.directReads.stop()
            self.directReads = None
        self.outputFull = False
        if self.budget is not None:
            self.budget.release(self._broker)
            self.chargedBytes = 0

    def written(self, pieces: list[bytes]) -> None:
        """
        C{pieces} were written: stop reading the peer if its output backed
        up past C{maxPendingWriteBytes}, and keep the budget current.
        """
        measure = self.pendingOut
        if measure is not None:
            pending = measure()
        elif self.writePaused:
            # A transport pbext cannot look into: count what was written
            # since it asked us to pause.
            self.pausedBytes += sum(map(len, pieces))
            pending = self.pausedBytes
        else:
            return
        if pending > self._maxPending and not self.outputFull:
            self._outputBackedUp()
        if self.budget is not None and (abs(pending - self.chargedBytes) >= BYTES_STEP):
            self.chargeBytes()

    # -- the queue -----------------------------------------------------------

    def parse(
        self,
        parse: Callable[[Any, Callable[[object], None]], None],
        data: Any,
        size: int,
    ) -> None:
        """
        Parse C{size} received bytes with C{parse} (a method of the
        broker's decoder), queue what they complete, keep the connection's
        timers, keepalive and budget up to date, and give other
        connections their turn if handling them cost much (see
        L{pbext.fairness}).
        """
        started = fairness.cpuTime()
        try:
            self._parseNow(parse, data)
        finally:
            if self.backlog:
                # Messages received and waiting to be handled: the bytes
                # they came in bound what they hold (for the budget).
                self.backlogBytes += size
                if self.budget is not None:
                    self.chargeBytes()
            fairness.takeTurns(self, self._broker, fairness.cpuTime() - started)

    def _parseNow(
        self, parse: Callable[[Any, Callable[[object], None]], None], data: Any
    ) -> None:
        broker = self._broker
        decoder = broker._pbextDecoder
        assert decoder is not None
        timers = broker._pbextTimers
        timers.heard()
        serialization = broker._pbextSerialization
        plainTypes = serialization.plainTypes
        if plainTypes.stale or plainTypes.decoderStale:
            serialization.refreshPlainTypes(decoder)
        # Once a dialect is chosen every expression is queued, so the
        # decoder appends to the queue itself, without a call back here.
        backlog = self.backlog
        sink = backlog.append if broker.currentDialect else self._expressionDecoded
        try:
            parse(data, sink)
        except FramingError as e:
            broker._pbextDropConnection("framingError", str(e), limit=e.limit)
            return
        except Exception as e:
            # Anything else going wrong with the peer's bytes (a value the
            # decoder cannot build, a bug of pbext's) is this peer's
            # problem only: never an error out of dataReceived.
            broker._pbextDropConnection("decodingError", f"{type(e).__name__}: {e}")
            return
        if self.budget is not None:
            self.chargeBytes()
        # Usually no message is left partly received: one dict lookup.
        if decoder.messageStarted or "messageTimeout" in timers.calls:
            timers.messageProgress(decoder.messageStarted, self._messageTimeout)
        if backlog and self.drainCall is None:
            self.drain()

    def _expressionDecoded(self, expression: object) -> None:
        """
        Queue a decoded expression; but handle the dialect selection at
        once, since it changes how the very next token is decoded.
        """
        if self._broker.currentDialect is None and not self.backlog:
            self._broker.callExpressionReceived(expression)
        else:
            self.backlog.append(expression)

    def drain(self) -> None:
        """
        Handle queued expressions, at most C{maxMessagesPerTurn} now; the
        rest after other connections had their turn, with this peer not
        read from meanwhile.
        """
        self.drainCall = None
        broker = self._broker
        backlog = self.backlog
        handle = broker.callExpressionReceived
        turn = broker._pbextLimits.maxMessagesPerTurn
        while backlog and turn > 0 and not broker.disconnected:
            if self.outputFull:
                # The peer is not reading its answers: its messages wait
                # (reading is paused too) until the output drains.
                return
            turn -= 1
            expression = backlog.popleft()
            try:
                handle(expression)
            except Exception:
                _log.failure(
                    "pbext: unexpected error handling a message from {peer}",
                    peer=broker._pbextPeerName(),
                )
                broker._pbextDropConnection("internalError", "error handling a message")
                return
        if not backlog:
            self.backlogBytes = 0
        if backlog and not broker.disconnected:
            self.pauseReading("fairness")
            self.drainCall = broker._pbextGetClock().callLater(0, self.drain)
        elif self.readPauses:
            self.resumeReading("fairness")

    # -- reading -------------------------------------------------------------

    def readOn(self) -> bool:
        """
        Whether the connection reads again in this turn after a read that
        filled the transport's buffer: while a message is partly received
        and reading is not paused (see L{DirectReads.plainReads}).
        """
        decoder = self._broker._pbextDecoder
        return not self.readPauses and decoder is not None and decoder.messageStarted

    def pauseReading(self, reason: str) -> None:
        """
        Stop reading the peer, for C{reason}, until L{resumeReading} with
        every reason given.
        """
        if reason in self.readPauses:
            return
        broker = self._broker
        if not self.readPauses and broker.transport is not None:
            broker.transport.pauseProducing()
            if reason == "backpressure":
                broker._pbextViolation(
                    "backpressure",
                    "the peer is not reading its answers; reading paused",
                )
        self.readPauses.add(reason)

    def resumeReading(self, reason: str) -> None:
        """
        C{reason} to pause reading is gone: read the peer if no other is
        left.
        """
        if reason in self.readPauses:
            self.readPauses.discard(reason)
            if not self.readPauses and not self._broker.disconnected:
                self._broker.transport.resumeProducing()

    # -- backpressure --------------------------------------------------------

    def _outputBackedUp(self) -> None:
        """
        More than C{maxPendingWriteBytes} wait to be sent to the peer: stop
        reading it and handling its messages until they drain.
        """
        self.outputFull = True
        self.pauseReading("backpressure")
        if self.pendingOut is not None:
            # Checked on a timer too: a transport whose bufferSize is above
            # the limit never asked us to pause, so never says to resume.
            self._broker._pbextTimers.set("backpressure", _RECHECK, self._checkDrained)

    def _checkDrained(self) -> None:
        timers = self._broker._pbextTimers
        timers.fired("backpressure")
        if not self.outputFull or self._broker.disconnected:
            return
        measure = self.pendingOut
        if measure is not None and measure() > self._maxPending // 2:
            timers.set("backpressure", _RECHECK, self._checkDrained)
            return
        self._outputDrained()

    def _outputDrained(self) -> None:
        """
        The output drained: read the peer and handle its messages again.
        """
        broker = self._broker
        broker._pbextTimers.cancel("backpressure")
        wasFull = self.outputFull
        self.outputFull = False
        self.resumeReading("backpressure")
        if self.budget is not None:
            self.chargeBytes()
        if (
            wasFull
            and self.backlog
            and self.drainCall is None
            and not broker.disconnected
        ):
            self.drainCall = broker._pbextGetClock().callLater(0, self.drain)

    # -- the transport's producer ------------------------------------------

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: count what is written from
        now on.
        """
        self.writePaused = True

    def resumeProducing(self) -> bool:
        """
        The transport drained its buffer: read the peer again.

        @return: whether the broker is the transport's streaming producer
            (else the transport's call is classic PB's, for its pagers).
        """
        self.writePaused = False
        self.pausedBytes = 0
        if self.outputFull:
            self._outputDrained()
        return self.producing

    def sendPages(self) -> None:
        """
        Send pages until every pager is done or the transport asks us to
        pause (it does so from inside C{write}); L{resumeProducing} carries
        on.
        """
        broker = self._broker
        pagers = broker.pageProducers
        while pagers and not self.writePaused and not broker.disconnected:
            for pager in list(pagers):
                pager.sendNextPage()
                if not pager.stillPaging():
                    pagers.remove(pager)

    # -- the memory budget ---------------------------------------------------

    def bufferedBytes(self) -> int:
        """
        How many bytes this connection buffers now: output not yet sent,
        and the part of an incoming message received so far.
        """
        broker = self._broker
        if broker.disconnected:
            return 0
        measure = self.pendingOut
        pending = measure() if measure is not None else self.pausedBytes
        pending += self.unwritten + self.backlogBytes
        decoder = broker._pbextDecoder
        if decoder is not None:
            pending += decoder.pendingBytes
        return pending

    def chargeBytes(self) -> None:
        """
        Tell the budget what this connection buffers, if it changed by
        enough to matter.
        """
        budget = self.budget
        if budget is None:
            return
        amount = self.bufferedBytes()
        if amount != self.chargedBytes and (
            abs(amount - self.chargedBytes) >= BYTES_STEP or not amount
        ):
            self.chargedBytes = amount
            budget.chargeBytes(self._broker, amount)

    def chargeObjects(self) -> None:
        """
        Tell the budget how many objects this connection holds.
        """
        budget = self.budget
        if budget is not None:
            budget.chargeObjects(self._broker, self._broker._pbextHeldObjects())


def resumePaging(flow: FlowControl) -> bool:
    """
    The transport drained its buffer: read the peer again, and send the
    next pages of any pagers.

    @return: whether the broker is the transport's streaming producer
        (else the broker hands the call to classic PB, for its pagers).
    """
    if not flow.resumeProducing():
        return False
    if flow._broker.pageProducers:
        flow.sendPages()
    return True


def registerPager(flow: FlowControl, pager: Any) -> bool:
    """
    Page C{pager}'s pages out as the transport takes them.

    @return: whether it is paged here (else the broker hands it to classic
        PB: it is not the transport's streaming producer).
    """
    if not flow.producing:
        return False
    flow._broker.pageProducers.append(pager)
    flow.sendPages()
    return True
