"""
pbext's L{Broker}: Twisted's PB broker, hardened, on the unchanged wire.

L{Broker} subclasses L{twisted.spread.pb.Broker} and keeps its protocol:
banana framing (dialect C{b"pb"}, the same vocabulary), the C{version}
handshake, and the C{message}, C{answer}, C{error}, C{decref},
C{decache} and C{uncache} expressions.  What changes is how it treats its
peer:

 - B{Framing.}  Bytes are decoded by L{pbext.codec.Decoder} in linear time,
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
   backpressure (a peer that does not read its answers is not read from);
   fairness (a burst of messages yields to other connections).
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

import inspect
from collections import deque
from typing import Any, Callable, Iterable

from twisted.cred.error import LoginFailed
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import (
    IDelayedCall,
    ISSLTransport,
    ITCPTransport,
    IUNIXTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import banana, flavors, jelly, pb

from pbext import _jelly, keepalive, typecheck
from pbext._accelerator import speedups as _speedups
from pbext._transport import DirectReads, DirectWrites
from pbext.codec import Decoder, FramingError, encodePieces
from pbext.copyable import FailureRegistry, failureRegistry
from pbext.security import (
    SecurityPolicy,
    _allowsBasicTypes,
    _allowsSentBuiltins,
    defaultPolicy,
)

_NOT_PLAIN = _jelly.NOT_PLAIN
_JELLIED: Any = None if _speedups is None else _speedups.Jellied

#: The jelly of an empty dictionary is C{[_DICTIONARY_ATOM]}.  Read once:
#: C{twisted.spread.jelly} is a deprecation proxy, slow to read from.
_DICTIONARY_ATOM: bytes = jelly.dictionary_atom

#: Result types of remote methods that are never awaitable, so the call
#: path need not ask L{inspect.isawaitable}.
_NEVER_AWAITABLE = frozenset(
    {int, float, str, bytes, bool, type(None), list, tuple, dict, set, frozenset}
)

#: The entry a pbext server adds to banana's dialect offer.
PBEXT_DIALECT = b"pbext/1"

#: The name under which every pbext broker publishes its control object.
CONTROL_NAME = b"pbext"

#: Commands a peer may send, and how many arguments each takes.
_COMMANDS: dict[str, int] = {
    "version": 1,
    "didNotUnderstand": 1,
    "message": 6,
    "cachemessage": 6,
    "answer": 2,
    "error": 2,
    "decref": 1,
    "decache": 1,
    "uncache": 1,
}

#: The handler method and arity of each command, by its name on the wire.
_COMMAND_HANDLERS: dict[bytes, tuple[str, int]] = {
    name.encode("ascii"): ("proto_" + name, count) for name, count in _COMMANDS.items()
}

#: How many abandoned (timed out or cancelled) request IDs are remembered so
#: that their late answers are dropped quietly.
_ABANDONED_MEMORY = 4096

#: Longest repr of peer data put in a log event.
_REPR_LIMIT = 200

_log = Logger()


def _short(value: object) -> str:
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        text = text[:_REPR_LIMIT] + "..."
    return text


def setNoDelay(transport: object) -> bool:
    """
    Turn on C{TCP_NODELAY} on C{transport} or on the TCP transport it wraps
    (a TLS transport wraps one).

    @return: C{True} if a TCP transport was found and changed.
    """
    tcp = keepalive.tcpTransportOf(transport)
    if tcp is None:
        return False
    try:
        tcp.setTcpNoDelay(True)
    except OSError:
        return False
    return True


class PolicyViolation(pb.Error):
    """
    A call was refused by the connection's security policy or limits.

    Sent to the peer as the error answer of the refused call.  A
    L{pb.Error} subclass, so the server logs no traceback for it.
    """


class MessageTooLarge(PolicyViolation):
    """
    An answer or call would exceed the policy's outgoing message limit.
    """


class CallTimeout(defer.TimeoutError):
    """
    A remote call got no answer in the time allowed.

    The late answer, if one comes, is discarded quietly.
    """


def _backpressureCapable(transport: object) -> bool:
    """
    Whether pbext registers its broker as a streaming producer of this
    transport, to learn when the peer stops reading.

    Only plain TCP and UNIX transports: a TLS transport waits for its
    producer to unregister before it closes, which would make
    C{loseConnection} hang; other transports keep classic PB's behaviour.
    """
    if ISSLTransport.providedBy(transport):
        return False
    return (
        ITCPTransport.providedBy(transport) or IUNIXTransport.providedBy(transport)
    ) and hasattr(transport, "registerProducer")


def resolvePolicy(
    policy: SecurityPolicy | str | None, security: jelly.SecurityOptions
) -> SecurityPolicy:
    """
    Decide the policy of a factory from its C{policy} and C{security}
    arguments.

    An explicit C{policy} wins: a L{SecurityPolicy}, or a name, dotted name
    or file for L{pbext.security.loadPolicy}.  Otherwise a C{security} that
    is a L{SecurityPolicy} is the policy; otherwise the C{default} preset is
    used, extended with whatever a classic C{SecurityOptions} the
    application passed explicitly allows (its own decision, as in classic
    PB).

    @raise pbext.security.PolicyError: if a named policy cannot be loaded.
    """
    if isinstance(policy, SecurityPolicy):
        return policy
    if policy is not None:
        from pbext.security import loadPolicy

        return loadPolicy(policy)
    if isinstance(security, SecurityPolicy):
        return security
    result = defaultPolicy()
    if security is not jelly.globalSecurity and isinstance(
        security, jelly.SecurityOptions
    ):
        result.allowTypes(*security.allowedTypes)
        result.allowModules(*security.allowedModules)
        for klass in security.allowedClasses:
            result.allowedClasses[klass] = 1
    return result


# Twisted's client endpoints put this between the transport and the
# protocol; its dataReceived hands the bytes on unchanged.
_ENDPOINT_WRAPPER: Any = getattr(endpoints, "_WrappingProtocol", None)


def _deliversTo(protocol: object, broker: object) -> bool:
    """
    Whether the bytes a transport gives C{protocol} reach C{broker}'s
    C{dataReceived} unchanged: C{protocol} is the broker, or wraps it (a
    few levels deep at most) in Twisted's endpoint wrapper or in a class
    that says it forwards them (C{forwardsReceivedBytes}) to the broker it
    holds as C{broker}.  Only then may the transport receive into the
    broker's buffers past C{protocol}; anything else reads as Twisted does.
    """
    for _level in range(4):
        if protocol is broker:
            return True
        kind: Any = type(protocol)
        if (
            _ENDPOINT_WRAPPER is not None
            and isinstance(protocol, _ENDPOINT_WRAPPER)
            and kind.dataReceived is _ENDPOINT_WRAPPER.dataReceived
        ):
            protocol = getattr(protocol, "_wrappedProtocol", None)
        elif getattr(kind, "forwardsReceivedBytes", False):
            protocol = getattr(protocol, "__dict__", {}).get("broker")
        else:
            return False
    return False


def _readsInPlace(brokerClass: type) -> bool:
    """
    Whether C{brokerClass} handles bytes received into the decoder's buffer
    (L{Broker._receivedInto}) as it handles bytes given to C{dataReceived}:
    true unless a subclass overrides C{dataReceived} without overriding
    C{_receivedInto} alongside it.
    """
    for klass in brokerClass.__mro__:
        if "dataReceived" in vars(klass):
            return "_receivedInto" in vars(klass)
    return False


class BrokerFactoryMixin:
    """
    What pbext's client and server factories share: the pbext options, and
    building a L{Broker} with them.

    @ivar policy: the L{SecurityPolicy} of every connection.
    @ivar registries: the copyable registries of every connection.
    @ivar options: the other pbext keyword options the factory was given.
    """

    # Mixed in after Twisted's factory class, so pbext's factories keep the
    # instance layout of Twisted's: code written for the stock classes may
    # even rebase its subclasses onto pbext's.

    protocol: Any
    security: Any

    def _setUpPbext(
        self,
        security: jelly.SecurityOptions,
        policy: SecurityPolicy | str | None,
        registry: Any,
        reactor: Any,
        callTimeout: float | None,
        keepaliveInterval: float | None,
        keepaliveTimeout: float | None,
        options: dict[str, Any],
    ) -> None:
        self.policy = resolvePolicy(policy, security)
        self.registries = registriesFrom(registry)
        self._reactor = reactor
        self._brokerOptions = {
            "callTimeout": callTimeout,
            "keepaliveInterval": keepaliveInterval,
            "keepaliveTimeout": keepaliveTimeout,
        }
        self.options = options

    def _buildBroker(self, isClient: bool) -> pb.Broker:
        """
        Build a broker with this factory's policy, registries and options (a
        plain one if C{protocol} was replaced by a class that is not pbext's
        L{Broker}), attached to this factory.
        """
        if issubclass(self.protocol, Broker):
            # One failure registry for all of this factory's connections
            # (it never changes), not one each.
            cached = getattr(self, "_connectionRegistries", None)
            if cached is None or cached[:-1] != self.registries:
                cached = self._connectionRegistries = withFailures(self.registries)
            broker: pb.Broker = self.protocol(
                isClient=isClient,
                security=self.security,
                policy=self.policy,
                registries=cached,
                clock=self._reactor,
                **self._brokerOptions,
            )
        else:
            broker = self.protocol(isClient=isClient, security=self.security)
        broker.factory = self  # type: ignore[assignment]
        return broker


def withFailures(registries: Iterable[Any]) -> tuple[Any, ...]:
    """
    C{registries} followed by a failure registry (L{failureRegistry}), as
    a broker uses them, unless the last already is one.
    """
    registries = tuple(registries)
    if registries and isinstance(registries[-1], FailureRegistry):
        return registries
    return (*registries, failureRegistry())


def registriesFrom(registry: Any) -> tuple[Any, ...]:
    """
    Normalize a factory's C{registry} argument (L{None}, one registry, or
    an iterable of registries) to a tuple.
    """
    if registry is None:
        return ()
    if isinstance(registry, (list, tuple)):
        return tuple(registry)
    return (registry,)


class _Control(pb.Referenceable):
    """
    The object a pbext broker publishes as C{b"pbext"} for a pbext peer:
    hello, ping and remote cancellation.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def remote_hello(self, features: list[bytes]) -> list[bytes]:
        """
        The peer says it is pbext and which features it has.
        """
        self.broker.peerFeatures = frozenset(
            f for f in features if isinstance(f, bytes) and len(f) < 64
        )
        return [PBEXT_DIALECT]

    def remote_ping(self) -> bool:
        """
        Answer a keepalive ping.
        """
        return True

    def remote_cancel(self, requestID: int) -> None:
        """
        Cancel the running call C{requestID} of this connection, if any.
        """
        self.broker._cancelIncoming(requestID)


class Broker(pb.Broker):
    """
    A L{pb.Broker} that applies a L{SecurityPolicy}, copyable registries and
    connection lifecycle management, speaking the classic wire.

    @ivar policy: the security policy of this connection.
    @ivar registries: the copyable registries of this connection.
    @ivar peerFeatures: what the peer said it supports; empty for a stock
        peer.  A pbext client knows it once banana's handshake is done.
    @ivar callTimeout: default seconds a call waits for its answer, or
        L{None}.
    """

    # pb.Broker's attributes, as this module uses them.
    transport: Any
    factory: Any
    waitingForAnswers: Any
    localObjects: Any
    luids: Any

    peerFeatures: frozenset[bytes] = frozenset()
    callTimeout: float | None = None
    keepaliveInterval: float | None = None
    keepaliveTimeout: float = 30.0

    def __init__(
        self,
        isClient: int = 1,
        security: jelly.SecurityOptions = jelly.globalSecurity,
        policy: SecurityPolicy | None = None,
        registries: Iterable[Any] = (),
        clock: Any = None,
        callTimeout: float | None = None,
        keepaliveInterval: float | None = None,
        keepaliveTimeout: float | None = None,
    ) -> None:
        super().__init__(isClient, security)
        if policy is None:
            policy = (
                security if isinstance(security, SecurityPolicy) else defaultPolicy()
            )
        self.policy = policy
        self.limits = policy.limits
        # pbext's working CopiedFailure comes last, after the application's
        # registries (twisted#12530).
        self.registries = withFailures(registries)
        self._incomingTaster = policy.forConnection(self.registries)
        outgoing = policy.outgoingTaster()
        if security is not jelly.globalSecurity and not isinstance(
            security, SecurityPolicy
        ):
            # An application that passed its own SecurityOptions decides
            # what it sends, as with classic PB.
            outgoing = security
        self._outgoingTaster = outgoing
        # Whether plain builtin values may skip the jellier and unjellier
        # (decided once per connection: the tasters do not change).
        self._plainSend = _allowsSentBuiltins(outgoing)
        self._plainReceive = _allowsBasicTypes(self._incomingTaster)
        # The registered copyable types those paths handle too.
        self._plainTypes = _jelly.PlainTypes(self.registries, self._incomingTaster)
        # With the C accelerator, plain arguments and results are not
        # jellied at all: the encoder writes their jelly straight to banana
        # (unless a subclass changed how values are serialized).
        self._fusedSend = (
            _speedups is not None
            and self._plainSend
            and type(self).serialize is Broker.serialize
        )
        # And plain arguments and results arrive already unjellied, made
        # by the decoder while it parses (see Decoder.setPlainJelly).
        self._fusedReceive = (
            _speedups is not None
            and self._plainReceive
            and type(self).unserialize is Broker.unserialize
        )
        self._clock = clock
        if callTimeout is not None:
            self.callTimeout = callTimeout
        if keepaliveInterval is not None:
            self.keepaliveInterval = keepaliveInterval
        if keepaliveTimeout is not None:
            self.keepaliveTimeout = keepaliveTimeout
        self._decoder: Decoder | None = None
        # How encoded messages reach the transport, and how long strings
        # are read (see connectionMade).
        self._write: Callable[[bytes], None] = self._writeToTransport
        self._writeSequence: Callable[[list[bytes]], None] = self._writeJoined
        self._directReads: DirectReads | None = None
        self._backlog: deque[object] = deque()
        self._drainCall: IDelayedCall | None = None
        self._readPauses: set[str] = set()
        self._writePaused = False
        self._pausedBytes = 0
        self._producing = False
        self._timers: dict[str, IDelayedCall] = {}
        # When bytes last arrived, for the idle timer.
        self._lastHeard = 0.0
        self._handshakeDone = False
        self._running: dict[int, defer.Deferred[Any]] = {}
        self._abandoned: dict[int, None] = {}
        self._eventWindow = 0.0
        self._eventCount = 0
        self._suppressed = 0
        self._keepalive: Any = None
        self._control = _Control(self)
        self.setNameForLocal(CONTROL_NAME, self._control)

    # -- logging -----------------------------------------------------------

    def _peerName(self) -> str:
        transport = getattr(self, "transport", None)
        try:
            return str(transport.getPeer()) if transport is not None else "?"
        except Exception:
            return "?"

    def _violation(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log one policy violation as a structured event, rate-limited per
        connection.
        """
        now = self._getClock().seconds()
        if now - self._eventWindow >= 60.0:
            if self._suppressed:
                _log.warn(
                    "pbext: {suppressed} more policy violations from {peer} "
                    "were not logged",
                    suppressed=self._suppressed,
                    peer=self._peerName(),
                    pbextEvent="violationsSuppressed",
                )
            self._eventWindow = now
            self._eventCount = 0
            self._suppressed = 0
        self._eventCount += 1
        if self._eventCount > self.limits.maxErrorEventsPerMinute:
            self._suppressed += 1
            return
        _log.warn(
            "pbext: {kind} from {peer}: {message}",
            kind=kind,
            message=message,
            peer=self._peerName(),
            policy=self.policy.name,
            pbextEvent="policyViolation",
            **{
                k: (
                    v
                    if isinstance(v, (str, int)) and len(str(v)) <= _REPR_LIMIT
                    else _short(v)
                )
                for k, v in fields.items()
            },
        )

    def _dropConnection(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log a violation that ends the connection, and abort it.
        """
        self._violation(kind, message, **fields)
        self._decoder = None
        transport = self.transport
        if transport is None or self.disconnected:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    # -- timers ------------------------------------------------------------

    def _getClock(self) -> Any:
        """
        The clock timers run on: the one given, else the transport's
        reactor, else the global reactor.
        """
        if self._clock is None:
            clock = getattr(self.transport, "reactor", None)
            if clock is None:
                from twisted.internet import reactor as clock
            self._clock = clock
        return self._clock

    def _setTimer(
        self, name: str, seconds: float | None, f: Callable[[], None]
    ) -> None:
        self._cancelTimer(name)
        if seconds is not None:
            self._timers[name] = self._getClock().callLater(seconds, f)

    def _cancelTimer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _idleTimerFired(self) -> None:
        """
        The idle timer fired: close the connection if the peer has really
        been silent for C{idleTimeout} seconds, else wait for the rest.

        Bytes arriving only record the time (see L{_parse}): moving the
        timer for every chunk would cost a reactor call each.
        """
        self._timers.pop("idleTimeout", None)
        timeout = self.limits.idleTimeout
        assert timeout is not None
        quiet = self._getClock().seconds() - self._lastHeard
        if quiet < timeout:
            self._setTimer("idleTimeout", timeout - quiet, self._idleTimerFired)
            return
        self._dropConnection(
            "idleTimeout", "idleTimeout reached; closing the connection"
        )

    def _timedOut(self, kind: str) -> Callable[[], None]:
        def expire() -> None:
            self._timers.pop(kind, None)
            self._dropConnection(kind, f"{kind} reached; closing the connection")

        return expire

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self._getClock()
        setNoDelay(self.transport)
        writes = DirectWrites.forTransport(self.transport)
        if writes is not None:
            self._write = writes.write
            self._writeSequence = writes.writeSequence
        else:
            self._write = self.transport.write
        if _readsInPlace(type(self)) and _deliversTo(
            getattr(self.transport, "protocol", None), self
        ):
            self._directReads = DirectReads.forTransport(
                self.transport, self._receiveBuffer, self._receivedInto
            )
        self._decoder = Decoder(**self.limits.framingLimits())  # type: ignore[arg-type]
        if self._fusedReceive and self._decoder.accelerated:
            self._decoder.setPlainJelly(True)
            self._decoder.setPlainTypes(self._plainTypes.receive)
        limits = self.limits
        self._setTimer(
            "handshakeTimeout",
            limits.handshakeTimeout,
            self._timedOut("handshakeTimeout"),
        )
        if limits.idleTimeout is not None:
            self._lastHeard = self._getClock().seconds()
            self._setTimer("idleTimeout", limits.idleTimeout, self._idleTimerFired)
        if _backpressureCapable(self.transport):
            try:
                self.transport.registerProducer(self, True)
                self._producing = True
            except RuntimeError:
                # Somebody else produces for this transport already.
                self._producing = False
        if self.isClient:
            super().connectionMade()
        else:
            self.setPrefixLimit(banana._PREFIX_LIMIT)
            self.currentDialect = None
            self.sendEncoded([*self.knownDialects, PBEXT_DIALECT])

    def callExpressionReceived(self, obj: object) -> None:
        if self.currentDialect:
            self.expressionReceived(obj)
            return
        if self.isClient:
            if isinstance(obj, list) and PBEXT_DIALECT in obj:
                self.peerFeatures = frozenset([PBEXT_DIALECT])
            if not isinstance(obj, list):
                self._dropConnection("badHandshake", "dialect offer is not a list")
                return
        elif obj not in self.knownDialects:
            self._dropConnection(
                "badHandshake", "client chose an unknown dialect", dialect=obj
            )
            return
        super().callExpressionReceived(obj)

    def _selectDialect(self, dialect: bytes) -> None:
        if self._decoder is not None and dialect == b"pb":
            self._decoder.setVocabulary(self.incomingVocabulary)
        super()._selectDialect(dialect)

    def connectionReady(self) -> None:
        super().connectionReady()
        if self.isClient and PBEXT_DIALECT in self.peerFeatures:
            self.remoteForName(CONTROL_NAME).callRemote(
                "hello", [PBEXT_DIALECT], pbanswer=0
            )
        self._startKeepalive()

    def proto_version(self, vnum: int) -> None:
        super().proto_version(vnum)
        self._handshakeDone = True
        self._cancelTimer("handshakeTimeout")

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[override]
        for name in list(self._timers):
            self._cancelTimer(name)
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self._backlog.clear()
        if self._keepalive is not None:
            self._keepalive.stop()
            self._keepalive = None
        running = list(self._running.values())
        self._running.clear()
        for d in running:
            d.cancel()
        self._decoder = None
        if self._directReads is not None:
            self._directReads.stop()
            self._directReads = None
        factory = self.factory
        if factory is not None and hasattr(factory, "_brokerLost"):
            factory._brokerLost(self)
        super().connectionLost(reason)

    # -- keepalive ---------------------------------------------------------

    def _startKeepalive(self) -> None:
        interval = self.keepaliveInterval
        if not interval:
            return
        from pbext import keepalive

        keepalive.enableTcpKeepAlive(self.transport)
        self._keepalive = keepalive.KeepAlive(
            self._getClock(),
            interval,
            self.keepaliveTimeout,
            self.ping,
            lambda: self._dropConnection(
                "keepaliveTimeout", "the peer stopped answering keepalive pings"
            ),
        )
        self._keepalive.start()

    def ping(self) -> defer.Deferred[Any]:
        """
        Ask the peer for an answer, to prove it is alive.

        A pbext peer answers its control object's C{ping}; a stock peer is
        sent a request every stock broker answers without side effects (see
        L{pbext.keepalive.pingPeer}).

        @return: a L{defer.Deferred} that fires when the answer arrives.
        """
        if PBEXT_DIALECT in self.peerFeatures:
            return self.remoteForName(CONTROL_NAME).callRemote("ping")
        from pbext import keepalive

        return keepalive.pingPeer(self)

    # -- receiving bytes ---------------------------------------------------

    def dataReceived(self, chunk: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        self._parse(decoder.feedTo, chunk)

    def _receiveBuffer(self) -> Any:
        """
        Where the transport may receive the rest of the long string
        arriving, if one is (see L{Decoder.receiveBuffer}) and reading is
        not paused, else L{None}.
        """
        decoder = self._decoder
        if decoder is None or self._readPauses:
            return None
        return decoder.receiveBuffer()

    def _receivedInto(self, count: int) -> bool:
        """
        The transport received C{count} bytes into the buffer from
        L{_receiveBuffer}: handle them as L{dataReceived} handles bytes.
        A subclass that overrides C{dataReceived} overrides this too, or
        its transport reads as Twisted does (see L{_readsInPlace}).

        @return: Whether the transport may read on at once.
        """
        decoder = self._decoder
        if decoder is None:
            return False
        self._parse(decoder.bufferFilled, count)
        return self._decoder is not None and not self._readPauses

    def _parse(
        self, parse: Callable[[Any, Callable[[object], None]], None], data: Any
    ) -> None:
        """
        Parse received bytes with C{parse} (a method of the decoder), and
        keep the connection's timers, keepalive and queue up to date.
        """
        decoder = self._decoder
        assert decoder is not None
        if self._keepalive is not None:
            self._keepalive.activity()
        if self.limits.idleTimeout is not None:
            self._lastHeard = self._getClock().seconds()
        plainTypes = self._plainTypes
        if plainTypes.stale and plainTypes.refresh() and self._fusedReceive:
            if decoder.accelerated:
                decoder.setPlainTypes(plainTypes.receive)
        # Once a dialect is chosen every expression is queued, so the
        # decoder appends to the queue itself, without a call back here.
        backlog = self._backlog
        sink = backlog.append if self.currentDialect else self._expressionDecoded
        try:
            parse(data, sink)
        except FramingError as e:
            self._dropConnection("framingError", str(e), limit=e.limit)
            return
        except Exception as e:
            # Anything else going wrong with the peer's bytes (a value the
            # decoder cannot build, a bug of pbext's) is this peer's
            # problem only: never an error out of dataReceived.
            self._dropConnection("decodingError", f"{type(e).__name__}: {e}")
            return
        timers = self._timers
        if decoder.messageStarted:
            if "messageTimeout" not in timers:
                self._setTimer(
                    "messageTimeout",
                    self.limits.messageTimeout,
                    self._timedOut("messageTimeout"),
                )
        elif "messageTimeout" in timers:
            self._cancelTimer("messageTimeout")
        if backlog and self._drainCall is None:
            self._drain()

    def _expressionDecoded(self, expression: object) -> None:
        """
        Queue a decoded expression; but handle the dialect selection at
        once, since it changes how the very next token is decoded.
        """
        if self.currentDialect is None and not self._backlog:
            self.callExpressionReceived(expression)
        else:
            self._backlog.append(expression)

    def _drain(self) -> None:
        """
        Handle queued expressions, at most C{maxMessagesPerTurn} now; the
        rest after other connections had their turn, with this peer not
        read from meanwhile.
        """
        self._drainCall = None
        backlog = self._backlog
        budget = self.limits.maxMessagesPerTurn
        while backlog and budget > 0 and not self.disconnected:
            budget -= 1
            expression = backlog.popleft()
            try:
                self.callExpressionReceived(expression)
            except Exception:
                _log.failure(
                    "pbext: unexpected error handling a message from {peer}",
                    peer=self._peerName(),
                )
                self._dropConnection("internalError", "error handling a message")
                return
        if backlog and not self.disconnected:
            self._pauseReading("fairness")
            self._drainCall = self._getClock().callLater(0, self._drain)
        elif self._readPauses:
            self._resumeReading("fairness")

    def expressionReceived(self, sexp: object) -> None:
        if type(sexp) is list and sexp:
            # The usual case first: a known command with the right arity.
            command = sexp[0]
            entry = _COMMAND_HANDLERS.get(command) if type(command) is bytes else None
            if entry is not None and len(sexp) - 1 == entry[1]:
                getattr(self, entry[0])(*sexp[1:])
                return
        if not isinstance(sexp, list) or not sexp:
            self._dropConnection("badMessage", "message is not a non-empty list")
            return
        command = sexp[0]
        if isinstance(command, bytes):
            command = command.decode("utf-8", "replace")
        if not isinstance(command, str) or command not in _COMMANDS:
            self._violation("unknownCommand", "unknown command", command=command)
            name = command.encode("utf-8") if isinstance(command, str) else b"?"
            self.sendCall(b"didNotUnderstand", name[:64])
            return
        if len(sexp) - 1 != _COMMANDS[command]:
            self._dropConnection(
                "badMessage", f"{command} with {len(sexp) - 1} arguments"
            )
            return
        getattr(self, "proto_" + command)(*sexp[1:])

    def proto_didNotUnderstand(self, command: object) -> None:
        self._violation(
            "didNotUnderstand", "the peer did not understand a command", command=command
        )

    # -- sending bytes -----------------------------------------------------

    def _outgoingVocabulary(self) -> dict[bytes, int] | None:
        """
        The vocabulary messages are sent with: the C{b"pb"} dialect's, once
        it is selected.
        """
        return self.outgoingSymbols if self.currentDialect == b"pb" else None

    def sendEncoded(self, obj: object) -> None:
        pieces = encodePieces(
            obj, self._outgoingVocabulary(), self.limits.maxOutgoingMessageBytes
        )
        if self._writePaused:
            self._pausedBytes += sum(map(len, pieces))
            if self._pausedBytes > self.limits.maxPendingWriteBytes:
                self._pauseReading("backpressure")
        if len(pieces) == 1:
            self._write(pieces[0])
        else:
            self._writeSequence(pieces)

    def _writeToTransport(self, data: bytes) -> None:
        self.transport.write(data)

    def _writeJoined(self, pieces: list[bytes]) -> None:
        # Transports other than plain TCP get one write, as they always did.
        self.transport.write(b"".join(pieces))

    def sendCall(self, *exp: object) -> None:
        """
        Send one expression.  An answer too large to send becomes an error
        answer; a call too large to send fails its caller's L{Deferred}.
        """
        try:
            self.sendEncoded(exp)
        except banana.BananaError as e:
            command = exp[0] if exp else None
            requestID = exp[1] if len(exp) > 1 else None
            if command in (b"message", b"cachemessage"):
                d = self.waitingForAnswers.pop(requestID, None)
                if d is not None:
                    d.errback(MessageTooLarge(f"call not sent: {e}"))
                    return
            if command == b"answer" and isinstance(requestID, int):
                self._violation("answerTooLarge", str(e))
                self._sendError(
                    Failure(MessageTooLarge(f"answer not sent: {e}")), requestID
                )
                return
            raise

    def sendDecRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().sendDecRef(objectID)

    def decCacheRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().decCacheRef(objectID)

    # -- flow control ------------------------------------------------------

    def _pauseReading(self, reason: str) -> None:
        if not self._readPauses and self.transport is not None:
            self.transport.pauseProducing()
            if reason == "backpressure":
                self._violation(
                    "backpressure",
                    "the peer is not reading its answers; reading paused",
                )
        self._readPauses.add(reason)

    def _resumeReading(self, reason: str) -> None:
        if reason in self._readPauses:
            self._readPauses.discard(reason)
            if not self._readPauses and not self.disconnected:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: count what is written from
        now on, and stop reading the peer past C{maxPendingWriteBytes}.
        """
        self._writePaused = True

    def resumeProducing(self) -> None:
        """
        The transport drained its buffer: read the peer again, and send the
        next pages of any pagers.
        """
        self._writePaused = False
        self._pausedBytes = 0
        self._resumeReading("backpressure")
        if not self._producing:
            super().resumeProducing()
        elif self.pageProducers:
            self._sendPages()

    def stopProducing(self) -> None:
        self._writePaused = True

    def registerPageProducer(self, pager: Any) -> None:
        if not self._producing:
            super().registerPageProducer(pager)
            return
        self.pageProducers.append(pager)
        self._sendPages()

    def _sendPages(self) -> None:
        """
        Send pages until every pager is done or the transport asks us to
        pause (it does so from inside C{write}); L{resumeProducing} carries
        on.
        """
        while self.pageProducers and not self._writePaused and not self.disconnected:
            for pager in list(self.pageProducers):
                pager.sendNextPage()
                if not pager.stillPaging():
                    self.pageProducers.remove(pager)

    # -- serialization -----------------------------------------------------

    def serialize(
        self,
        object: Any,
        perspective: Any = None,
        method: Any = None,
        args: Any = None,
        kw: Any = None,
    ) -> Any:
        if self._plainSend:
            # Builtin values (and the commonest registered copyables) need
            # neither a jellier nor the attributes below (only Jellyable
            # objects read them).
            plainTypes = self._plainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            sexp = _jelly.jellyPlain(object, plainTypes.send)
            if sexp is not _NOT_PLAIN:
                return sexp
        if isinstance(object, defer.Deferred):
            return object.addCallback(self.serialize, perspective, method, args, kw)
        self.serializingPerspective = perspective
        self.jellyMethod = method
        self.jellyArgs = args
        self.jellyKw = kw
        try:
            return _jelly.jelly(object, self._outgoingTaster, self, self.registries)
        finally:
            self.serializingPerspective = None
            self.jellyMethod = None
            self.jellyArgs = None
            self.jellyKw = None

    def _serializeOut(
        self,
        value: Any,
        perspective: Any = None,
        method: Any = None,
        args: Any = None,
        kw: Any = None,
    ) -> Any:
        """
        Serialize a value that goes straight into a message (call arguments
        or a result) with the accelerated encoder, if it is plain: the
        encoder writes exactly the bytes of its plain jelly, without
        building that expression.  Anything else is L{serialize}d.

        A small value becomes a L{_speedups.Jellied}, which the message's
        encoder writes; a larger one is encoded here, to a
        L{_speedups.Encoded} the message carries as it is: encoding it is
        how it is found to be plain, so its fields are read once, not once
        to check and once to write (see L{_speedups.preparePlain}).
        """
        if self._fusedSend and _speedups is not None:
            if type(value) is not defer.Deferred:
                plainTypes = self._plainTypes
                if plainTypes.stale:
                    plainTypes.refresh()
                send = plainTypes.send
                try:
                    prepared = _speedups.preparePlain(
                        value,
                        send,
                        self._outgoingVocabulary(),
                        self.limits.maxOutgoingMessageBytes,
                    )
                except banana.BananaError:
                    # Too large to send: encoding the message fails the
                    # same way, and sendCall reports it to the caller.
                    return _speedups.Jellied(value, send)
                if prepared is not None:
                    return prepared
            if isinstance(value, defer.Deferred):
                return value.addCallback(
                    self._serializeOut, perspective, method, args, kw
                )
        return self.serialize(value, perspective, method, args, kw)

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        if _JELLIED is not None and type(sexp) is _JELLIED:
            # Unjellied by the decoder already.
            return sexp.value
        if self._plainReceive:
            plainTypes = self._plainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            result = _jelly.unjellyPlain(sexp, plainTypes.receive)
            if result is not _NOT_PLAIN:
                return result
        self.unserializingPerspective = perspective
        try:
            return _jelly.unjelly(
                sexp, self._incomingTaster, self, self.registries, self.policy
            )
        finally:
            self.unserializingPerspective = None

    # -- references and caches ---------------------------------------------

    def registerReference(self, object: Any) -> Any:
        """
        Give C{object} an ID the peer can call, as L{pb.Broker} does, with
        the policy's C{maxReferences} instead of the module-wide
        C{MAX_BROKER_REFS}.
        """
        puid = object.processUniqueID()
        luid = self.luids.get(puid)
        if luid is not None:
            self.localObjects[luid].incref()
            return luid
        # The control object does not count: the same quota as classic.
        if len(self.localObjects) - 1 > self.limits.maxReferences:
            self._violation("maxReferences", "too many references for one connection")
            # As classic PB: a peer that keeps asking is disconnected.
            self.maxBrokerRefsViolations += 1
            if self.maxBrokerRefsViolations > 3:
                self.transport.loseConnection()
            raise PolicyViolation(
                f"more than {self.limits.maxReferences} references on one connection"
            )
        luid = self.newLocalID()
        self.localObjects[luid] = pb.Local(object)
        self.luids[puid] = luid
        return luid

    def cacheLocally(self, cid: int, instance: Any) -> None:
        if len(self.locallyCachedObjects) >= self.limits.maxCachedObjects:
            raise jelly.InsecureJelly(
                f"more than {self.limits.maxCachedObjects} cached objects"
            )
        super().cacheLocally(cid, instance)

    def _knownID(self, objectID: object, table: Any, command: str) -> bool:
        """
        Whether C{objectID} names an entry of C{table} that the peer may
        release; if not, log the bogus C{command} (classic PB crashed on it).
        """
        if isinstance(objectID, int) and objectID in table:
            return True
        self._violation(
            "bad" + command.capitalize(),
            f"{command} of an unknown object",
            objectID=objectID,
        )
        return False

    def proto_decref(self, objectID: object) -> None:
        if self._knownID(objectID, self.localObjects, "decref"):
            super().proto_decref(objectID)

    def proto_decache(self, objectID: object) -> None:
        if self._knownID(objectID, self.remotelyCachedObjects, "decache"):
            super().proto_decache(objectID)

    def proto_uncache(self, objectID: object) -> None:
        if self._knownID(objectID, self.locallyCachedObjects, "uncache"):
            super().proto_uncache(objectID)

    # -- outgoing calls ----------------------------------------------------

    def _sendMessage(
        self,
        prefix: bytes,
        perspective: Any,
        objectID: Any,
        message: bytes,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> defer.Deferred[Any] | None:
        """
        Send a call, as L{pb.Broker._sendMessage} does, adding a timeout
        (the C{pbtimeout} keyword, or L{callTimeout}) and cancellation.
        """
        timeout = kw.pop("pbtimeout", self.callTimeout)
        if "pbcallback" in kw or "pberrback" in kw:
            # The deprecated callback keywords: Twisted's own path.
            return self._chainedSendMessage(
                prefix, perspective, objectID, message, args, kw, timeout
            )
        answerRequired = kw.pop("pbanswer", 1)
        if self.disconnected:
            raise pb.DeadReferenceError("Calling Stale Broker")
        try:
            netArgs = self._serializeOut(args, perspective, message)
            # No keywords, the usual case: their jelly is always this.
            netKw = (
                self._serializeOut(kw, perspective, message)
                if kw
                else [_DICTIONARY_ATOM]
            )
        except BaseException:
            return defer.fail(Failure())
        requestID = self.newRequestID()
        result: defer.Deferred[Any] | None = None
        if answerRequired:
            # One Deferred, answered by proto_answer and cancellable by the
            # caller: the same one is waited for and returned.
            def cancel(d: defer.Deferred[Any]) -> None:
                self._abandon(requestID)

            result = defer.Deferred(cancel)
            self.waitingForAnswers[requestID] = result
        self.sendCall(
            prefix + b"message",
            requestID,
            objectID,
            message,
            answerRequired,
            netArgs,
            netKw,
        )
        if (
            result is not None
            and timeout is not None
            and self.waitingForAnswers.get(requestID) is result
        ):
            result.addTimeout(
                timeout, self._getClock(), self._timeoutCall(requestID, timeout)
            )
        return result

    def _chainedSendMessage(
        self,
        prefix: bytes,
        perspective: Any,
        objectID: Any,
        message: bytes,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        timeout: float | None,
    ) -> defer.Deferred[Any] | None:
        """
        Send a call with L{pb.Broker._sendMessage} and chain a cancellable
        Deferred (with the timeout) to the one it waits on.
        """
        result = super()._sendMessage(prefix, perspective, objectID, message, args, kw)
        if result is None:
            return None
        requestID = self.currentRequestID
        if self.waitingForAnswers.get(requestID) is not result:
            # Failed before it was sent (serialization) or already answered.
            return result

        def cancel(d: defer.Deferred[Any]) -> None:
            self._abandon(requestID)

        outer: defer.Deferred[Any] = defer.Deferred(cancel)
        result.chainDeferred(outer)
        if timeout is not None:
            outer.addTimeout(
                timeout, self._getClock(), self._timeoutCall(requestID, timeout)
            )
        return outer

    def _timeoutCall(
        self, requestID: int, timeout: float
    ) -> Callable[[Any, float], Any]:
        def onTimeout(result: Any, seconds: float) -> Any:
            if isinstance(result, Failure) and result.check(defer.CancelledError):
                return Failure(
                    CallTimeout(f"no answer to call {requestID} in {timeout} seconds")
                )
            return result

        return onTimeout

    def _abandon(self, requestID: int) -> None:
        """
        Forget the caller of C{requestID}: its answer, if one comes, is
        dropped quietly, and a pbext peer is asked to cancel the call.
        """
        if self.waitingForAnswers is None:
            return
        if self.waitingForAnswers.pop(requestID, None) is None:
            return
        self._abandoned[requestID] = None
        while len(self._abandoned) > _ABANDONED_MEMORY:
            del self._abandoned[next(iter(self._abandoned))]
        if PBEXT_DIALECT in self.peerFeatures and not self.disconnected:
            self.remoteForName(CONTROL_NAME).callRemote("cancel", requestID, pbanswer=0)

    def _takeWaiting(self, requestID: object, kind: str) -> defer.Deferred[Any] | None:
        d = None
        if isinstance(requestID, int):
            d = self.waitingForAnswers.pop(requestID, None)
        if d is None:
            if isinstance(requestID, int) and requestID in self._abandoned:
                del self._abandoned[requestID]
            else:
                self._violation(
                    "unexpectedAnswer",
                    f"{kind} for no pending call",
                    requestID=requestID,
                )
        return d

    def proto_answer(self, requestID: object, netResult: object) -> None:
        d = self._takeWaiting(requestID, "answer")
        if d is None:
            return
        try:
            result = self.unserialize(netResult)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def proto_error(self, requestID: object, fail: object) -> None:
        d = self._takeWaiting(requestID, "error")
        if d is None:
            return
        try:
            result = self.unserialize(fail)
        except Exception:
            d.errback(Failure())
            return
        if not isinstance(result, (Failure, BaseException)):
            result = pb.RemoteError("?", _short(result), "")
        d.errback(result)

    # -- incoming calls ----------------------------------------------------

    def _cancelIncoming(self, requestID: object) -> None:
        if isinstance(requestID, int):
            d = self._running.get(requestID)
            if d is not None:
                d.cancel()

    def _refuse(self, requestID: int, answerRequired: object, exc: pb.Error) -> None:
        if answerRequired:
            # As a Failure, so that _sendError copies it (with no traceback)
            # unless it is Jellyable or allowed, as classic PB does.
            self._sendError(Failure(exc), requestID)

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
        if not isinstance(requestID, int) or not isinstance(message, bytes):
            self._dropConnection(
                "badMessage", "malformed call", requestID=requestID, method=message
            )
            return
        try:
            name = message.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if not self.policy.isMethodAllowed(name):
            self._violation("methodRefused", "call to a refused method name", name=name)
            self._refuse(
                requestID, answerRequired, PolicyViolation(f"method {name!r} refused")
            )
            return
        if len(self._running) >= self.limits.maxOutstandingCalls:
            self._violation("maxOutstandingCalls", "too many outstanding calls")
            self._refuse(
                requestID,
                answerRequired,
                PolicyViolation(
                    f"more than {self.limits.maxOutstandingCalls} outstanding calls"
                ),
            )
            return
        try:
            target = findObjMethod(objectID)
        except (KeyError, TypeError):
            target = None
        if target is None:
            if objectID != keepalive.PING_OBJECT_ID:
                self._violation(
                    "badObject", "call to an unknown object", objectID=objectID
                )
            self._refuse(requestID, answerRequired, pb.Error("Invalid Object ID"))
            return
        try:
            result = self._dispatch(target, name, netArgs, netKw)
        except pb.Error as e:
            self._refuse(requestID, answerRequired, e)
            return
        except (jelly.InsecureJelly, typecheck.TypeCheckError) as e:
            self._violation("refusedArguments", str(e), name=name)
            self._refuse(requestID, answerRequired, PolicyViolation(str(e)))
            return
        except flavors.NoSuchMethod as e:
            # Answered as classic PB answers it (a copied NoSuchMethod that
            # callers trap), but logged as an event, not a traceback.
            self._violation("noSuchMethod", str(e), name=name)
            if answerRequired:
                self._sendError(Failure(e), requestID)
            return
        except BaseException:
            self._failCall(Failure(), requestID, answerRequired, name)
            return
        if isinstance(result, defer.Deferred):
            self._running[requestID] = result

            def done(value: Any) -> Any:
                self._running.pop(requestID, None)
                return value

            result.addBoth(done)
            if answerRequired:
                result.addCallbacks(
                    self._sendAnswer,
                    self._answerFailure,
                    callbackArgs=(requestID,),
                    errbackArgs=(requestID, name),
                )
            else:
                result.addErrback(self._failCall, requestID, 0, name)
        elif answerRequired:
            self._sendAnswer(result, requestID)

    def _sendError(self, fail: Any, requestID: int) -> None:
        """
        Send an error answer, as L{pb.Broker._sendError} does, deciding
        whether the exception itself can travel with the taster jelly will
        use to send it.
        """
        taster: Any = self._outgoingTaster
        if isinstance(fail, Failure):
            value = fail.value
            if isinstance(value, jelly.Jellyable) or taster.isClassAllowed(
                value.__class__
            ):
                fail = value
            elif not isinstance(fail, pb.CopyableFailure):
                fail = pb.failure2Copyable(fail, self.factory.unsafeTracebacks)
        if isinstance(fail, pb.CopyableFailure):
            fail.unsafeTracebacks = self.factory.unsafeTracebacks
        self.sendCall(b"error", requestID, self.serialize(fail))

    def _answerFailure(self, fail: Failure, requestID: int, name: str) -> None:
        if fail.check(pb.Error):
            self._sendError(fail, requestID)
        else:
            self._failCall(fail, requestID, 1, name)

    def _failCall(
        self, fail: Failure, requestID: int, answerRequired: object, name: str
    ) -> None:
        if fail.check(defer.CancelledError):
            _log.debug("pbext: call {name} was cancelled", name=name)
        elif fail.check(LoginFailed):
            # Refused logins are audited by pbext.login; not a server bug.
            _log.info(
                "pbext: login refused for {peer} in {name}",
                name=name,
                peer=self._peerName(),
                pbextEvent="loginRefused",
            )
        else:
            _log.failure(
                "pbext: remote method {name} called by {peer} failed",
                fail,
                name=name,
                peer=self._peerName(),
            )
        if answerRequired:
            self._sendError(fail, requestID)

    def _dispatch(self, target: Any, name: str, netArgs: Any, netKw: Any) -> Any:
        """
        Find and run the method a call names on C{target}, the way the
        target's flavor would, and return its serialized result (possibly
        a L{defer.Deferred}).

        The known flavors (L{pb.Referenceable}, L{pb.ViewPoint},
        L{pb.RemoteCache}, and avatars wrapped by L{pb.AsReferenceable}) are
        dispatched here, so that arguments are type-checked and C{async
        def} methods awaited; any other C{remoteMessageReceived} is called
        as it is.
        """
        kind = type(target).remoteMessageReceived
        perspective = None
        extra: tuple[Any, ...] = ()
        if isinstance(target, pb.AsReferenceable):
            bound = target.__dict__.get("remoteMessageReceived")
            owner = getattr(bound, "__self__", None)
            if (
                isinstance(owner, pb.Avatar)
                and type(owner).perspectiveMessageReceived
                is pb.Avatar.perspectiveMessageReceived
            ):
                obj, prefix, perspective = owner, "perspective_", owner
            else:
                return self._classicDispatch(target, name, netArgs, netKw)
        elif kind is flavors.Referenceable.remoteMessageReceived:
            obj, prefix = target, "remote_"
        elif kind is flavors.ViewPoint.remoteMessageReceived:
            obj, prefix = target.object, "view_"
            perspective = target.perspective
            extra = (perspective,)
        elif kind is flavors.RemoteCache.remoteMessageReceived:
            obj, prefix = target, "observe_"
        else:
            return self._classicDispatch(target, name, netArgs, netKw)
        method = getattr(obj, prefix + name, None)
        if method is None:
            raise flavors.NoSuchMethod(f"No such method: {prefix}{name}")
        args = self.unserialize(netArgs, perspective)
        kw = self.unserialize(netKw, perspective)
        if not isinstance(args, (tuple, list)) or not isinstance(kw, dict):
            raise _jelly.MalformedJelly("call arguments are not a list and a dict")
        if kw:
            kw = {
                (k.decode("utf-8") if isinstance(k, bytes) else k): v
                for k, v in kw.items()
            }
            if not all(isinstance(k, str) for k in kw):
                raise _jelly.MalformedJelly("keyword argument names must be strings")
        # The compiled checks of the method, looked up once per call; for a
        # method without annotations both checks are skipped.
        checker = typecheck._callChecker(method)
        if checker.checksArguments:
            checker.checkArguments((*extra, *args), kw)
        state = method(*extra, *args, **kw)
        if type(state) not in _NEVER_AWAITABLE and inspect.isawaitable(state):
            state = defer.ensureDeferred(state)  # type: ignore[arg-type]
        if checker.returns is not None:
            if isinstance(state, defer.Deferred):
                state.addCallback(self._checkReturn, method)
            else:
                self._checkReturn(state, method)
        return self._serializeOut(state, perspective, method, args, kw)

    @staticmethod
    def _checkReturn(value: Any, method: Any) -> Any:
        typecheck.checkReturn(method, value)
        return value

    def _classicDispatch(self, target: Any, name: str, netArgs: Any, netKw: Any) -> Any:
        result = target.remoteMessageReceived(self, name, netArgs, netKw)
        if inspect.isawaitable(result) and not isinstance(result, defer.Deferred):
            result = defer.ensureDeferred(result).addCallback(  # type: ignore[arg-type]
                self.serialize
            )
        return result


__all__ = [
    "Broker",
    "CallTimeout",
    "MessageTooLarge",
    "PBEXT_DIALECT",
    "PolicyViolation",
    "setNoDelay",
]
