"""
pbext's L{Broker}: Twisted's PB broker, hardened, on the unchanged wire.

L{Broker} subclasses L{twisted.spread.pb.Broker} and keeps its protocol:
banana framing (dialect C{b"pb"}, the same vocabulary), the C{version}
handshake, and the C{message}, C{answer}, C{error}, C{decref},
C{decache} and C{uncache} expressions.  What changes is how it treats its
peer:

 - B{Framing.}  Bytes are decoded by a L{pbext.interfaces.IDecoder} in linear time,
   with the policy's limits checked as bytes arrive.  Bad framing drops that
   connection, with one structured log event.
 - B{Types.}  Received jelly is unjellied by L{pbext._jelly} against the
   connection's security policy and copyable registries: nothing is
   imported because a peer named it.
 - B{Calls.}  A call is answered with an error, without running anything,
   when it names a private method (under the C{default} policy), a missing
   method, a bad object, malformed or refused arguments, or arguments that
   do not match the method's annotations; when too many calls are already
   waiting; or when the answer would be too large.  Expected refusals are
   logged as rate-limited events, never as tracebacks.
 - B{Resources.}  Per-connection caps on outstanding calls, references and
   cached objects; a handshake, message and idle timeout; write
   backpressure on TCP, UNIX and TLS (a peer that does not read its
   answers is not read from); fairness (a burst of messages yields to
   other connections); a memory budget shared by all connections of a
   factory (L{pbext.budget}), which closes the largest holders first.
 - B{Lifecycle.}  C{async def} remote methods are awaited; calls can time
   out and be cancelled, remotely when the peer is pbext; an application
   keepalive notices a dead peer.

Features that need both ends to be pbext are negotiated with ordinary PB:
a pbext server adds L{PBEXT_DIALECT} to banana's dialect offer (stock
clients pick C{b"pb"} and ignore it), and a pbext client that sees it
talks to the C{b"pbext"} control object of the server.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb

from pbext import _calls, _connection, _control, _dispatch, _flow, _references
from pbext._calls import OutgoingCalls
from pbext._connection import deliversTo as _deliversTo  # noqa: F401 (tests)
from pbext._connection import readsInPlace as _readsInPlace  # noqa: F401 (tests)
from pbext._connection import setNoDelay
from pbext._dispatch import COMMANDS as _COMMANDS
from pbext._violations import ViolationLog, peerName
from pbext._wire import (  # CONTROL_NAME: importable from here, as before
    CONTROL_NAME,  # noqa: F401
    PBEXT_DIALECT,
    CallTimeout,
    MessageTooLarge,
    PolicyViolation,
)
from pbext.budget import BYTES_STEP
from pbext.codec import encodePieces
from pbext.factorystate import (
    BrokerFactoryMixin,
    FactoryState,
    registriesFrom,
    resolvePolicy,
    withFailures,
)
from pbext.security import SecurityPolicy

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from pbext._dispatch import IncomingDispatch
    from pbext._flow import FlowControl
    from pbext._serialization import Serialization
    from pbext._timers import ConnectionTimers
    from pbext.interfaces import ICopyableRegistry, IDecoder

#: The handler method and arity of each command, by its name on the wire.
_COMMAND_HANDLERS: dict[bytes, tuple[str, int]] = {
    name.encode("ascii"): ("proto_" + name, count) for name, count in _COMMANDS.items()
}


class _ReadOnlyView:
    """
    A public name that reads one of pbext's C{_pbext} attributes.

    A non-data descriptor: an instance whose class (an application's
    subclass) sets the public name gets an attribute of its own, and pbext,
    which reads only the private name, behaves the same.
    """

    def __init__(self, private: str) -> None:
        self._private = private

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(instance, self._private)


class Broker(pb.Broker):
    """
    A L{pb.Broker} that applies a L{SecurityPolicy}, copyable registries and
    connection lifecycle management, speaking the classic wire.

    The broker is a shell that wires parts with one concern each (see
    docs/architecture.rst): its flow control (L{pbext._flow}), timers
    (L{pbext._timers}), serializer (L{pbext._serialization}), outgoing
    call table (L{pbext._calls}) and incoming dispatch
    (L{pbext._dispatch}).  The methods Twisted's broker calls, and those
    applications override, stay methods of this class.

    Applications subclass brokers too, so every name this class adds to
    L{pb.Broker} is either public and documented here or starts with
    C{_pbext} (see docs/architecture.rst, "Names").  The public ones:

    @ivar callTimeout: default seconds a call waits for its answer, or
        L{None}.  A class attribute a subclass may override.
    @ivar keepaliveInterval: seconds without a byte from the peer before
        it is pinged, or L{None} for no keepalive.  A class attribute a
        subclass may override.
    @ivar keepaliveTimeout: seconds a ping may wait for its answer before
        the connection is dropped.  A class attribute a subclass may
        override.
    @ivar typedCalls: whether the arguments of every annotated remote
        method called on this connection are checked against the
        annotations (see L{pbext.typecheck}); when false (the default),
        only methods marked with L{pbext.typecheck.typed} are.  A class
        attribute a subclass may override.
    """

    # pb.Broker's attributes, as this module uses them.
    transport: Any
    factory: Any
    waitingForAnswers: Any
    localObjects: Any
    luids: Any

    # The parts, made by _connection.wireParts.
    _pbextSerialization: Serialization
    _pbextTimers: ConnectionTimers
    _pbextFlow: FlowControl
    _pbextDispatcher: IncomingDispatch
    _pbextWrite: Callable[[bytes], None]
    _pbextWriteSequence: Callable[[list[bytes]], None]
    _pbextPeerFeatures: frozenset[bytes] = frozenset()
    #: The streams open on this connection (pbext.streams), made when needed.
    _pbextStreams: Any = None
    _pbextFactoryState: FactoryState | None = None
    # Made when the peer first does something wrong.
    _pbextViolations: ViolationLog | None = None
    # Whether _pbextDropConnection closed the connection: nothing more is
    # handled or sent.
    _pbextDropped = False
    _pbextDecoder: IDecoder | None = None
    # Made on the first outgoing call (see _pbextOutgoing).
    _pbextCalls: OutgoingCalls | None = None
    callTimeout: float | None = None
    keepaliveInterval: float | None = None
    keepaliveTimeout: float = 30.0
    typedCalls: bool = False

    def __init__(
        self,
        isClient: int = 1,
        security: jelly.SecurityOptions = jelly.globalSecurity,
        policy: SecurityPolicy | None = None,
        registries: Iterable[ICopyableRegistry] = (),
        clock: IReactorTime | None = None,
        callTimeout: float | None = None,
        keepaliveInterval: float | None = None,
        keepaliveTimeout: float | None = None,
        typedCalls: bool | None = None,
    ) -> None:
        super().__init__(isClient, security)
        policy = self._pbextPolicy = _connection.policyFor(security, policy)
        self._pbextLimits = policy.limits
        # pbext's working CopiedFailure comes last, after the application's
        # registries (twisted#12530).
        self._pbextRegistries = withFailures(registries)
        _connection.applyOptions(
            self, callTimeout, keepaliveInterval, keepaliveTimeout, typedCalls
        )
        _connection.wireParts(self, security, clock, Broker)

    # -- logging and the connection ----------------------------------------

    def _pbextPeerName(self) -> str:
        return peerName(getattr(self, "transport", None))

    def _pbextViolation(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log one policy violation as a structured event, rate-limited per
        connection.
        """
        _connection.violation(self, kind, message, fields)

    def _pbextDropConnection(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log a violation that ends the connection, and abort it.
        """
        self._pbextViolation(kind, message, **fields)
        _connection.drop(self)

    #: Finds the shared control object too, which no connection stores.
    localObjectForID = _control.localObjectForID

    def _pbextGetClock(self) -> Any:
        """
        The clock timers run on: the one given, else the transport's
        reactor, else the global reactor.
        """
        return self._pbextTimers.clock()

    @property
    def _pbextLastHeard(self) -> float:
        """
        When bytes last arrived from the peer (for L{pbext.admission}).
        """
        return self._pbextTimers.lastHeard

    def connectionMade(self) -> None:
        _connection.setUp(self)
        if self.isClient:
            super().connectionMade()
        else:
            _connection.offerDialects(self)

    def callExpressionReceived(self, obj: object) -> None:
        if self.currentDialect:
            self.expressionReceived(obj)
            return
        if _control.acceptDialect(self, obj):
            super().callExpressionReceived(obj)

    def _selectDialect(self, dialect: bytes) -> None:
        if self._pbextDecoder is not None and dialect == b"pb":
            self._pbextDecoder.setVocabulary(self.incomingVocabulary)
        super()._selectDialect(dialect)

    def connectionReady(self) -> None:
        _control.sayHello(self)
        super().connectionReady()
        _connection.startKeepalive(self)

    def proto_version(self, vnum: int) -> None:
        super().proto_version(vnum)
        self._pbextTimers.cancel("handshakeTimeout")

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[override]  # Twisted's Broker.connectionLost has no default for reason
        _connection.tearDown(self)
        super().connectionLost(reason)

    @property
    def pbextPolicy(self) -> SecurityPolicy:
        """
        The security policy of this connection.

        @since: pbext NEXT
        """
        return self._pbextPolicy

    @property
    def pbextRegistries(self) -> tuple[ICopyableRegistry, ...]:
        """
        The copyable registries of this connection, pbext's failure
        registry last.

        @since: pbext NEXT
        """
        return self._pbextRegistries

    #: What the peer said it supports; empty for a stock peer.  A pbext
    #: client knows it once banana's handshake is done.  Read-only, but a
    #: subclass may give its instances a C{peerFeatures} of their own:
    #: pbext itself reads C{_pbextPeerFeatures}.
    peerFeatures = _ReadOnlyView("_pbextPeerFeatures")

    def ping(self) -> defer.Deferred[Any]:
        """
        Ask the peer for an answer, to prove it is alive.

        A pbext peer answers its control object's C{ping}; a stock peer is
        sent a request every stock broker answers without side effects (see
        L{pbext.keepalive.pingPeer}).  The keepalive pings the same way
        whether or not a subclass overrides this method.

        @return: a L{defer.Deferred} that fires when the answer arrives.
        """
        return _control.ping(self)

    # -- receiving bytes ---------------------------------------------------

    def dataReceived(self, chunk: bytes) -> None:
        decoder = self._pbextDecoder
        if decoder is None:
            return
        self._pbextFlow.parse(decoder.feedTo, chunk)

    #: Where the transport receives the rest of a long string (see
    #: L{_connection.receiveTarget} and L{_connection.receiveFrom}).
    _pbextReceiveBuffer = _connection.receiveTarget
    _pbextReceiveFrom = _connection.receiveFrom

    def _pbextReceivedInto(self, count: int) -> bool:
        """
        The transport received C{count} bytes into the buffer from
        L{_pbextReceiveBuffer}: handle them as L{dataReceived} handles bytes.
        A subclass that overrides C{dataReceived} overrides this too, or
        its transport reads as Twisted does (see L{_readsInPlace}).

        @return: Whether the transport may read on at once.
        """
        decoder = self._pbextDecoder
        if decoder is None:
            return False
        self._pbextFlow.parse(decoder.bufferFilled, count)
        return self._pbextDecoder is not None and not self._pbextFlow.readPauses

    def expressionReceived(self, sexp: object) -> None:
        if type(sexp) is list and sexp:
            # The usual case first: a known command with the right arity.
            command = sexp[0]
            entry = _COMMAND_HANDLERS.get(command) if type(command) is bytes else None
            if entry is not None and len(sexp) - 1 == entry[1]:
                getattr(self, entry[0])(*sexp[1:])
                return
        self._pbextDispatcher.unusualExpression(sexp)

    def proto_didNotUnderstand(self, command: object) -> None:
        self._pbextViolation(
            "didNotUnderstand", "the peer did not understand a command", command=command
        )

    # -- sending bytes -----------------------------------------------------

    def _pbextOutgoingVocabulary(self) -> dict[bytes, int] | None:
        """
        The vocabulary messages are sent with: the C{b"pb"} dialect's, once
        it is selected.
        """
        return self.outgoingSymbols if self.currentDialect == b"pb" else None

    def sendEncoded(self, obj: object) -> None:
        if self._pbextDropped:
            return
        pieces = encodePieces(
            obj,
            self._pbextOutgoingVocabulary(),
            self._pbextLimits.maxOutgoingMessageBytes,
        )
        flow = self._pbextFlow
        # Held back, charged to the budget first or in pieces; else written.
        large = flow.budget is not None and len(pieces[0]) >= BYTES_STEP
        if len(pieces) > 1 or flow.batch is not None or large:
            _flow.send(flow, pieces)
            return
        self._pbextWrite(pieces[0])
        measure = flow.pendingOut
        if measure is not None:
            pending = measure()
            if pending or flow.chargedBytes:
                flow.measured(pending)
        elif flow.writePaused:
            flow.written(pieces)

    def _pbextWritesConnected(self) -> None:
        """
        The connection's two ways of writing, C{_pbextWrite} and
        C{_pbextWriteSequence}, are chosen (see
        L{pbext._flow.FlowControl.connect}), before anything is sent: every
        byte this broker sends goes through one of them, so a pbext broker
        class that counts what is sent (L{pbext.metrics.MeteredBroker})
        wraps them here.  Does nothing here.
        """

    def _pbextWriteToTransport(self, data: bytes) -> None:
        self.transport.write(data)

    def _pbextWriteJoined(self, pieces: list[bytes]) -> None:
        # Transports other than plain TCP get one write, as they always did.
        self.transport.write(b"".join(pieces))

    def sendCall(self, *exp: object) -> None:
        """
        Send one expression.  An answer too large to send becomes an error
        answer; a call too large to send fails its caller's L{Deferred}.
        """
        try:
            self.sendEncoded(exp)
        except Exception as e:
            # Too large (BananaError), or a prepared Jellied its own code
            # changed: it fails as if serializing it had failed.
            if not _dispatch.notSent(
                self, exp, e if isinstance(e, banana.BananaError) else None
            ):
                raise

    def sendDecRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().sendDecRef(objectID)

    def decCacheRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().decCacheRef(objectID)

    # -- flow control: the transport's producer and the memory budget ------

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: count what is written from
        now on, and stop reading the peer past C{maxPendingWriteBytes}.
        """
        self._pbextFlow.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The transport drained its buffer: read the peer again, and send the
        next pages of any pagers.
        """
        if not _flow.resumePaging(self._pbextFlow):
            super().resumeProducing()

    def stopProducing(self) -> None:
        self._pbextFlow.pauseProducing()

    def registerPageProducer(self, pager: Any) -> None:
        if not _flow.registerPager(self._pbextFlow, pager):
            super().registerPageProducer(pager)

    def _pbextBufferedBytes(self) -> int:
        """
        How many bytes this connection buffers now, for the server's
        L{MemoryBudget}.
        """
        return self._pbextFlow.bufferedBytes()

    def _pbextHeldObjects(self) -> int:
        return _references.heldObjects(self)

    def _pbextCut(self, kind: str, message: str) -> None:
        """
        The server's memory budget is exhausted and this connection holds
        the most: close it.
        """
        self._pbextDropConnection(kind, message)

    # -- serialization -----------------------------------------------------

    def serialize(
        self,
        object: object,
        perspective: object = None,
        method: object = None,
        args: object = None,
        kw: object = None,
    ) -> object:
        return self._pbextSerialization.serialize(object, perspective, method, args, kw)

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        return self._pbextSerialization.unserialize(sexp, perspective)

    # -- references and caches ---------------------------------------------

    def registerReference(self, object: pb.Serializable) -> int:
        return _references.registerReference(self, object)

    def cacheLocally(self, cid: int, instance: object) -> None:
        _references.checkCacheRoom(self)
        super().cacheLocally(cid, instance)
        self._pbextFlow.chargeObjects()

    def proto_decref(self, objectID: object) -> None:
        if _references.knownID(self, objectID, self.localObjects, "decref"):
            super().proto_decref(objectID)

    def proto_decache(self, objectID: object) -> None:
        if _references.knownID(self, objectID, self.remotelyCachedObjects, "decache"):
            super().proto_decache(objectID)

    def proto_uncache(self, objectID: object) -> None:
        if _references.knownID(self, objectID, self.locallyCachedObjects, "uncache"):
            super().proto_uncache(objectID)

    # -- calls: outgoing (pbext._calls) and incoming (pbext._dispatch) -----

    #: Sends a call, as L{pb.Broker._sendMessage} does, adding a timeout
    #: (the C{pbtimeout} keyword, or L{callTimeout}) and cancellation.
    _sendMessage = _calls.sendMessage

    def proto_answer(self, requestID: object, netResult: object) -> None:
        (self._pbextCalls or self._pbextOutgoing()).answer(requestID, netResult)

    def proto_error(self, requestID: object, fail: object) -> None:
        (self._pbextCalls or self._pbextOutgoing()).error(requestID, fail)

    def _pbextOutgoing(self) -> OutgoingCalls:
        """
        The outgoing call table, made on the first call (many connections
        of a server never call their peer).
        """
        return self._pbextCalls or _connection.outgoingCalls(self, Broker)

    def _recvMessage(
        self,
        findObjMethod: Callable[[Any], Any],
        requestID: object,
        objectID: object,
        message: object,
        answerRequired: object,
        netArgs: object,
        netKw: object,
    ) -> None:
        self._pbextDispatcher.received(
            findObjMethod, requestID, objectID, message, answerRequired, netArgs, netKw
        )

    def _sendError(self, fail: Any, requestID: int) -> None:
        _dispatch.sendError(self, fail, requestID)


__all__ = [
    "Broker",
    "BrokerFactoryMixin",
    "CallTimeout",
    "FactoryState",
    "MessageTooLarge",
    "PBEXT_DIALECT",
    "PolicyViolation",
    "registriesFrom",
    "resolvePolicy",
    "setNoDelay",
    "withFailures",
]
