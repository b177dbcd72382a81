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
    LARGE_MESSAGE,
    DirectReads,
    DirectWrites,
    pendingWriter,
    producerTarget,
)
from pbext.budget import BYTES_STEP, MemoryBudget, precharge
from pbext.codec import FramingError, encodePieces

if TYPE_CHECKING:
    from pbext.broker import Broker
    from pbext.security import Limits

_log = Logger()

#: The last reading of the CPU clock (see L{pbext.fairness}).
_LAST_CPU = fairness.lastCPU

#: The read pauses of a connection reading none.
_NO_PAUSES: frozenset[str] = frozenset()

#: How often a backed-up output is measured again, in seconds.
_RECHECK = 0.05

#: The most bytes of messages held back while a read's messages are
#: handled, to leave in one write (see L{FlowControl.drain}); a larger
#: message is written at once, after those held.  No more than
#: L{pbext._transport.LARGE_MESSAGE}: the messages held are small ones, and
#: their write must not count as a large message's (which raises the
#: socket's send buffer).
BATCH_BYTES = LARGE_MESSAGE


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

    @ivar backlog: decoded expressions waiting to be handled.  A list,
        not a deque: an empty deque holds a block of 64 slots (760 bytes
        for each idle connection).  L{drain} handles them from the front
        by index and removes them together.
    @ivar draining: whether L{drain} is running (a message it handles may
        lead to it again).
    @ivar holdsBack: whether the answers to several messages handled in one
        turn may be held back, to leave in one write (L{drain}): not if the
        broker's class overrides C{sendEncoded} (as L{pbext.metrics} does,
        to count what each message writes).
    @ivar batch: the messages held back, while they are.
    @ivar outputFull: whether more than C{maxPendingWriteBytes} wait to be
        sent: the peer is not read from, nor its messages handled.
    @ivar readPauses: why reading the peer is paused (C{"fairness"},
        C{"backpressure"}); empty when it is not.  A frozenset, replaced
        when it changes (pauses are rare): a connection that never pauses
        holds the one empty set every connection shares.
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
        "batch",
        "batchBytes",
        "holdsBack",
        "draining",
    )

    def __init__(self, broker: Broker, limits: Limits, holdsBack: bool = True) -> None:
        self._broker = broker
        self.holdsBack = holdsBack
        self.draining = False
        self._maxPending = limits.maxPendingWriteBytes
        self._messageTimeout = limits.messageTimeout
        self.backlog: list[object] = []
        self.drainCall: IDelayedCall | None = None
        self.readPauses: frozenset[str] = _NO_PAUSES
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
        # Messages to send held back while several queued are handled.
        self.batch: list[bytes] | None = None
        self.batchBytes = 0

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
                broker._pbextReceiveFrom,
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
        self.measured(pending)

    def measured(self, pending: int) -> None:
        """
        After a write, C{pending} bytes wait to be sent: stop reading the
        peer past C{maxPendingWriteBytes}, and keep the budget current.
        """
        if pending > self._maxPending and not self.outputFull:
            self._outputBackedUp()
        if self.budget is not None and (abs(pending - self.chargedBytes) >= BYTES_STEP):
            self.chargeBytes()

    # -- the queue -----------------------------------------------------------

    def parse(
        self,
        parse: Callable[[Any, Callable[[object], None]], None],
        data: bytes | int,
    ) -> None:
        """
        Parse received bytes with C{parse} (a method of the broker's
        decoder: C{data} is the bytes, or how many it received in place),
        queue what they complete, keep the connection's
        timers, keepalive and budget up to date, handle the messages
        queued, and give other connections their turn if handling them
        cost much (see L{pbext.fairness}).
        """
        # fairness.readStarted, inline: the CPU clock is read only if its
        # last reading is not fresh.
        started = fairness.wallTime()
        if not 0.0 <= started - _LAST_CPU.wall <= fairness.FRESH:
            fairness.readCPU(started)
        broker = self._broker
        decoder = broker._pbextDecoder
        assert decoder is not None
        timers = broker._pbextTimers
        timers.heard()
        backlog = self.backlog
        try:
            plainTypes = broker._pbextSerialization.plainTypes
            if plainTypes.stale or plainTypes.decoderStale:
                broker._pbextSerialization.refreshPlainTypes(decoder)
            # Once a dialect is chosen every expression is queued, so the
            # decoder appends to the queue itself, without a call back here.
            sink = backlog.append if broker.currentDialect else self._expressionDecoded
            try:
                parse(data, sink)
            except FramingError as e:
                broker._pbextDropConnection("framingError", str(e), limit=e.limit)
                return
            except Exception as e:
                # Anything else going wrong with the peer's bytes (a value
                # the decoder cannot build, a bug of pbext's) is this peer's
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
        finally:
            if backlog:
                # Messages received and waiting to be handled: the bytes
                # they came in bound what they hold (for the budget).
                self.backlogBytes += data if isinstance(data, int) else len(data)
                if self.budget is not None:
                    self.chargeBytes()
            # Timed on the wall clock; only a long read reads the CPU clock.
            ended = fairness.wallTime()
            if ended - started > fairness.HEAVY_READ:
                spent = fairness.spentSince(started, ended)
                fairness.takeTurns(self, broker, spent)

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

        When several are handled, the messages they send (their answers)
        are held back and leave together, in one write (L{flush}), rather
        than in one write (a system call on TCP) each.
        """
        if self.draining:
            # Reached again from a message being handled: the drain running
            # goes on with what is queued.
            return
        self.drainCall = None
        broker = self._broker
        backlog = self.backlog
        # More than one queued (each expression is a list of its own)?
        several = bool(backlog) and backlog[0] is not backlog[-1]
        batching = several and self.holdsBack and self.batch is None
        if batching:
            self.batch = []
        try:
            finished = handleQueued(self, broker, backlog)
        finally:
            if batching:
                flush(self, last=True)
        if not finished:
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
        self.readPauses = self.readPauses | {reason}

    def resumeReading(self, reason: str) -> None:
        """
        C{reason} to pause reading is gone: read the peer if no other is
        left.
        """
        if reason in self.readPauses:
            self.readPauses = self.readPauses - {reason}
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
        pending += self.unwritten + self.backlogBytes + self.batchBytes
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


def send(flow: FlowControl, pieces: list[bytes]) -> None:
    """
    Send the message C{pieces} on C{flow}'s connection, when it is not the
    usual case the broker's C{sendEncoded} writes itself: messages are held
    back (see L{FlowControl.drain}), or it is large (charged to the
    budget first, see L{pbext.budget.precharge}), or in pieces.
    """
    # While several messages are handled, their answers leave together.
    if flow.batch is not None and hold(flow, pieces):
        return
    if flow.budget is not None and not precharge(flow, pieces):
        return
    broker = flow._broker
    if len(pieces) == 1:
        broker._pbextWrite(pieces[0])
    else:
        broker._pbextWriteSequence(pieces)
    flow.written(pieces)


def holdEncoded(
    flow: FlowControl,
    exp: tuple[object, ...],
    vocabulary: dict[bytes, int] | None,
    maxMessageBytes: int,
) -> None:
    """
    Encode the message C{exp} and send it as L{send} does, for a broker
    that keeps pbext's C{sendCall} and C{sendEncoded}, while messages are
    held back: a small message is added to those held, inline (the usual
    case of a call or an answer handled among others), anything else goes
    to L{send}.  Raises what L{encodePieces} raises (too large, or a
    prepared value its own code changed), nothing being sent.
    """
    pieces = encodePieces(exp, vocabulary, maxMessageBytes)
    batch = flow.batch
    if batch is not None and len(pieces) == 1:
        data = pieces[0]
        size = len(data)
        if flow.batchBytes + size <= BATCH_BYTES:
            # What hold does with a message that fits.
            batch.append(data)
            flow.batchBytes += size
            return
    send(flow, pieces)


def hold(flow: FlowControl, pieces: list[bytes]) -> bool:
    """
    Hold back the message C{pieces} to send it with the others of this
    turn, if it is small; else write what is held (it is written next).

    @return: Whether it was held.
    """
    if len(pieces) != 1 or len(pieces[0]) > BATCH_BYTES:
        flush(flow)
        return False
    data = pieces[0]
    if flow.batchBytes + len(data) > BATCH_BYTES:
        flush(flow)
    batch = flow.batch
    assert batch is not None
    batch.append(data)
    flow.batchBytes += len(data)
    return True


def handleQueued(flow: FlowControl, broker: Broker, backlog: list[object]) -> bool:
    """
    Handle the expressions at the front of C{flow}'s backlog, at most
    C{maxMessagesPerTurn} of them, while the output has room.

    They are handled by index and removed together at the end: a list's
    C{pop(0)} moves the rest each time, which a read of thousands of tiny
    messages would make quadratic.

    @return: C{False} if handling stopped early: the output is full, or a
        message could not be handled and the connection is being dropped.
    """
    handle = broker._pbextDispatcher.handler()
    # -- answers: straight to the outgoing call table (pbext._calls), when
    # the broker's class keeps the methods they would pass through --
    calls = broker._pbextCalls
    answer = None if calls is None else calls.answerer()
    turn = broker._pbextLimits.maxMessagesPerTurn
    flow.draining = True
    handled = 0
    try:
        while handled < len(backlog) and turn > 0 and not broker.disconnected:
            if flow.outputFull:
                # The peer is not reading its answers: its messages wait
                # (reading is paused too) until the output drains.
                return False
            turn -= 1
            expression = backlog[handled]
            handled += 1
            try:
                if (
                    answer is not None
                    and type(expression) is list
                    and len(expression) == 3
                    and expression[0] == b"answer"
                ):
                    answer(expression[1], expression[2])
                else:
                    handle(expression)
            except Exception:
                _log.failure(
                    "pbext: unexpected error handling a message from {peer}",
                    peer=broker._pbextPeerName(),
                )
                broker._pbextDropConnection("internalError", "error handling a message")
                return False
    finally:
        del backlog[:handled]
        flow.draining = False
    return True


def flush(flow: FlowControl, last: bool = False) -> None:
    """
    Write the messages C{flow} held back, in one write; if C{last}, hold
    no more back.
    """
    batch = flow.batch
    flow.batch = None if last else []
    flow.batchBytes = 0
    if not batch:
        return
    broker = flow._broker
    if broker._pbextDropped:
        return
    if len(batch) == 1:
        broker._pbextWrite(batch[0])
    else:
        broker._pbextWriteSequence(batch)
    flow.written(batch)


def sendPages(flow: FlowControl) -> None:
    """
    Send pages until every pager is done or the transport asks us to
    pause (it does so from inside C{write}); L{resumeProducing} carries
    on.
    """
    broker = flow._broker
    pagers = broker.pageProducers
    while pagers and not flow.writePaused and not broker.disconnected:
        for pager in list(pagers):
            pager.sendNextPage()
            if not pager.stillPaging():
                pagers.remove(pager)


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
        sendPages(flow)
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
    sendPages(flow)
    return True
