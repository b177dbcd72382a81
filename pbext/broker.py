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

import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.cred.error import LoginFailed
from twisted.internet import defer
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

from pbext import _jelly, _twisted, fairness, keepalive, typecheck
from pbext import streams as _streams
from pbext._accelerator import speedups as _speedups
from pbext._peer import peerText
from pbext._transport import (
    DirectReads,
    DirectWrites,
    discardPending,
    pendingWriter,
    producerTarget,
)
from pbext.budget import BYTES_STEP, MemoryBudget, budgetFor
from pbext.codec import FramingError, encodePieces, makeDecoder
from pbext.copyable import FailureRegistry, failureRegistry
from pbext.copystate import CopyHookError, HookErrorLog
from pbext.security import (
    SecurityPolicy,
    _allowsBasicTypes,
    _allowsSentBuiltins,
    defaultPolicy,
)

if TYPE_CHECKING:
    from pbext.admission import Admission
    from pbext.interfaces import IDecoder

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


def _seconds(seconds: float) -> str:
    """
    C{seconds} for a person: C{"1 second"}, C{"2 seconds"}, C{"0.5 seconds"}.
    """
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")


def _backpressureCapable(transport: object) -> bool:
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
        from pbext.policylookup import loadPolicy

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
_ENDPOINT_WRAPPER: Any = _twisted.WrappingProtocol


def _deliversTo(protocol: object, broker: object) -> bool:
    """
    Whether the bytes a transport gives C{protocol} reach C{broker}'s
    C{dataReceived} unchanged: C{protocol} is the broker, or wraps it (a
    few levels deep at most) in Twisted's endpoint wrapper or in a class
    that says it forwards them (C{_pbextForwardsReceivedBytes}) to the broker it
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
            protocol = _twisted.wrappedProtocol(protocol)
        elif getattr(kind, "_pbextForwardsReceivedBytes", False):
            protocol = getattr(protocol, "__dict__", {}).get("broker")
        else:
            return False
    return False


def _readsInPlace(brokerClass: type) -> bool:
    """
    Whether C{brokerClass} handles bytes received into the decoder's buffer
    (L{Broker._pbextReceivedInto}) as it handles bytes given to C{dataReceived}:
    true unless a subclass overrides C{dataReceived} without overriding
    C{_pbextReceivedInto} alongside it.
    """
    for klass in brokerClass.__mro__:
        if "dataReceived" in vars(klass):
            return "_pbextReceivedInto" in vars(klass)
    return False


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


class FactoryState:
    """
    pbext's state on one factory, held by the factory's single C{_pbext}
    attribute.

    Applications subclass pbext's factories and give their subclasses
    attributes of their own (a Buildbot worker's factory has a C{_reactor}
    class attribute; applications set C{self.options} or C{self.policy}).
    Keeping everything pbext needs here, under one name of pbext's own,
    lets a subclass use any other name without changing what pbext does.

    @ivar policy: the L{SecurityPolicy} of every connection.
    @ivar registries: the copyable registries of every connection, as
        given.
    @ivar reactor: the clock brokers keep time with, or L{None} for their
        transport's reactor.
    @ivar brokerOptions: the keyword arguments every L{Broker} is built
        with (C{callTimeout}, C{keepaliveInterval}, C{keepaliveTimeout},
        C{typedCalls}).
    @ivar options: the factory's other pbext keyword options (login
        options such as C{classicLogin} and C{allowPlaintextLogin}).
    @ivar connectionRegistries: C{registries} with a failure registry
        after them, as every broker gets them (built once).
    @ivar admission: who holds a server factory's connection slots
        (L{pbext.admission.Admission}), or L{None} on a client factory.
    @ivar budget: the memory budget the factory's connections share
        (L{pbext.budget.MemoryBudget}), made when first needed.
    @ivar brokerLost: called with each broker of the factory whose
        connection is lost, or L{None}.

    @since: pbext NEXT
    """

    def __init__(
        self,
        policy: SecurityPolicy,
        registries: tuple[Any, ...],
        reactor: Any,
        brokerOptions: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.policy = policy
        self.registries = registries
        self.reactor = reactor
        self.brokerOptions = brokerOptions
        self.options = options
        self.connectionRegistries: tuple[Any, ...] | None = None
        self.admission: Admission | None = None
        self.budget: MemoryBudget | None = None
        self.brokerLost: Callable[[Broker], None] | None = None

    @property
    def connectionCount(self) -> int:
        """
        How many brokers of a server factory are connected.
        """
        return 0 if self.admission is None else self.admission.connections


class _DefaultFactoryState:
    """
    The C{_pbext} of a factory whose C{__init__} never ran pbext's: a
    subclass written for Twisted's factory, rebased onto pbext's, may call
    C{pb.PBServerFactory.__init__} itself.  The first read sets the factory
    up with pbext's defaults (and its C{security}), as if it had been
    built with no pbext options.
    """

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        instance._pbextSetUp(
            getattr(instance, "security", jelly.globalSecurity),
            None,
            None,
            None,
            None,
            None,
            None,
            {},
        )
        return instance.__dict__["_pbext"]


class BrokerFactoryMixin:
    """
    What pbext's client and server factories share: the pbext options, and
    building a L{Broker} with them.

    All of pbext's state lives in one L{FactoryState}, C{_pbext}; the
    public names this class adds all start with C{pbext}, so a subclass
    may define any other attribute (see docs/architecture.rst, "Names").
    """

    # Mixed in after Twisted's factory class, so pbext's factories keep the
    # instance layout of Twisted's: code written for the stock classes may
    # even rebase its subclasses onto pbext's.

    protocol: Any
    security: Any
    _pbext: FactoryState = _DefaultFactoryState()  # type: ignore[assignment]

    def _pbextSetUp(
        self,
        security: jelly.SecurityOptions,
        policy: SecurityPolicy | str | None,
        registry: Any,
        reactor: Any,
        callTimeout: float | None,
        keepaliveInterval: float | None,
        keepaliveTimeout: float | None,
        options: dict[str, Any],
        typedCalls: bool | None = None,
    ) -> None:
        self._pbext = FactoryState(
            resolvePolicy(policy, security),
            registriesFrom(registry),
            reactor,
            {
                "callTimeout": callTimeout,
                "keepaliveInterval": keepaliveInterval,
                "keepaliveTimeout": keepaliveTimeout,
                "typedCalls": typedCalls,
            },
            options,
        )

    @property
    def pbextPolicy(self) -> SecurityPolicy:
        """
        The L{SecurityPolicy} of every connection of this factory.

        @since: pbext NEXT
        """
        return self._pbext.policy

    @property
    def pbextRegistries(self) -> tuple[Any, ...]:
        """
        The copyable registries of every connection this factory builds
        from now on.

        @since: pbext NEXT
        """
        return self._pbext.registries

    @pbextRegistries.setter
    def pbextRegistries(self, registries: Any) -> None:
        self._pbext.registries = registriesFrom(registries)

    @property
    def pbextOptions(self) -> dict[str, Any]:
        """
        The pbext keyword options this factory was given that are not
        broker options (the login options).

        @since: pbext NEXT
        """
        return self._pbext.options

    def _pbextBuildBroker(self, isClient: bool) -> pb.Broker:
        """
        Build a broker with this factory's policy, registries and options (a
        plain one if C{protocol} was replaced by a class that is not pbext's
        L{Broker}), attached to this factory.
        """
        state = self._pbext
        if issubclass(self.protocol, Broker):
            # One failure registry for all of this factory's connections
            # (it never changes), not one each.
            cached = state.connectionRegistries
            if cached is None or cached[:-1] != state.registries:
                cached = state.connectionRegistries = withFailures(state.registries)
            broker: pb.Broker = self.protocol(
                isClient=isClient,
                security=self.security,
                policy=state.policy,
                registries=cached,
                clock=state.reactor,
                **state.brokerOptions,
            )
            broker._pbextFactoryState = state  # type: ignore[attr-defined]
        else:
            broker = self.protocol(isClient=isClient, security=self.security)
        broker.factory = self  # type: ignore[assignment]
        if isinstance(broker, Broker):
            broker._pbextBudget = self._pbextMemoryBudget()
        return broker

    def _pbextMemoryBudget(self) -> MemoryBudget:
        """
        The memory budget all of this factory's connections share (see
        L{pbext.budget}), made with the policy's limits when first needed
        and again if the policy's limits change.
        """
        state = self._pbext
        limits = state.policy.limits
        budget = state.budget
        if (
            budget is None
            or budget.maxBufferedBytes != limits.maxServerBufferedBytes
            or budget.maxHeldObjects != limits.maxServerHeldObjects
        ):
            budget = state.budget = budgetFor(limits)
        return budget


def withFailures(registries: Iterable[Any]) -> tuple[Any, ...]:
    """
    C{registries} followed by a failure registry (L{failureRegistry}), as
    a broker uses them, unless the last already is one.
    """
    registries = tuple(registries)
    if registries and isinstance(registries[-1], FailureRegistry):
        return registries
    # pbext.streams: stream offers are sent and received by every broker.
    return (*registries, _streams.streamRegistry(), failureRegistry())


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
        self.broker._pbextPeerFeatures = frozenset(
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
        self.broker._pbextCancelIncoming(requestID)

    # -- introspection (pbext.introspect) --
    def remote_describe(self, target: object) -> Any:
        """
        Describe C{target}, an object the peer holds a reference to.
        """
        from pbext import introspect

        return introspect.answerDescribe(self.broker, target)


class Broker(pb.Broker):
    """
    A L{pb.Broker} that applies a L{SecurityPolicy}, copyable registries and
    connection lifecycle management, speaking the classic wire.

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

    _pbextPeerFeatures: frozenset[bytes] = frozenset()
    #: The streams open on this connection (pbext.streams), made when needed.
    _pbextStreams: Any = None
    _pbextFactoryState: FactoryState | None = None
    _pbextAddress: str | None = None
    callTimeout: float | None = None
    keepaliveInterval: float | None = None
    keepaliveTimeout: float = 30.0
    typedCalls: bool = False

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
        typedCalls: bool | None = None,
    ) -> None:
        super().__init__(isClient, security)
        if policy is None:
            policy = (
                security if isinstance(security, SecurityPolicy) else defaultPolicy()
            )
        self._pbextPolicy = policy
        self._pbextLimits = policy.limits
        # pbext's working CopiedFailure comes last, after the application's
        # registries (twisted#12530).
        self._pbextRegistries = withFailures(registries)
        self._pbextIncomingTaster = policy.forConnection(self._pbextRegistries)
        outgoing = policy.outgoingTaster()
        if security is not jelly.globalSecurity and not isinstance(
            security, SecurityPolicy
        ):
            # An application that passed its own SecurityOptions decides
            # what it sends, as with classic PB.
            outgoing = security
        self._pbextOutgoingTaster = outgoing
        # Whether plain builtin values may skip the jellier and unjellier
        # (decided once per connection: the tasters do not change).
        self._pbextPlainSend = _allowsSentBuiltins(outgoing)
        self._pbextPlainReceive = _allowsBasicTypes(self._pbextIncomingTaster)
        # The registered copyable types those paths handle too.
        self._pbextPlainTypes = _jelly.PlainTypes(
            self._pbextRegistries, self._pbextIncomingTaster
        )
        # With the C accelerator, plain arguments and results are not
        # jellied at all: the encoder writes their jelly straight to banana
        # (unless a subclass changed how values are serialized).
        self._pbextFusedSend = (
            _speedups is not None
            and self._pbextPlainSend
            and type(self).serialize is Broker.serialize
        )
        # And plain arguments and results arrive already unjellied, made
        # by the decoder while it parses (see IDecoder.setPlainJelly).
        self._pbextFusedReceive = (
            _speedups is not None
            and self._pbextPlainReceive
            and type(self).unserialize is Broker.unserialize
        )
        self._pbextClock = clock
        if callTimeout is not None:
            self.callTimeout = callTimeout
        if keepaliveInterval is not None:
            self.keepaliveInterval = keepaliveInterval
        if keepaliveTimeout is not None:
            self.keepaliveTimeout = keepaliveTimeout
        if typedCalls is not None:
            self.typedCalls = typedCalls
        self._pbextDecoder: IDecoder | None = None
        # How encoded messages reach the transport, and how long strings
        # are read (see connectionMade).
        self._pbextWrite: Callable[[bytes], None] = self._pbextWriteToTransport
        self._pbextWriteSequence: Callable[[list[bytes]], None] = self._pbextWriteJoined
        self._pbextDirectReads: DirectReads | None = None
        self._pbextBacklog: deque[object] = deque()
        self._pbextDrainCall: IDelayedCall | None = None
        self._pbextReadPauses: set[str] = set()
        self._pbextWritePaused = False
        self._pbextPausedBytes = 0
        self._pbextProducing = False
        self._pbextProducerOn: Any = None
        # How many bytes written wait to be sent (see connectionMade), and
        # whether that is past maxPendingWriteBytes.
        self._pbextPendingOut: Callable[[], int] | None = None
        # A message about to be written, charged to the budget first.
        self._pbextUnwritten = 0
        # The bytes of the reads whose messages wait in the backlog.
        self._pbextBacklogBytes = 0
        self._pbextOutputFull = False
        # The server-wide memory budget (set by the factory) and what this
        # connection last reported to it.
        self._pbextBudget: MemoryBudget | None = None
        self._pbextChargedBytes = 0
        # Whether _pbextDropConnection closed the connection: nothing more is
        # handled or sent.
        self._pbextDropped = False
        self._pbextTimers: dict[str, IDelayedCall] = {}
        # When bytes last arrived, for the idle timer.
        self._pbextLastHeard = 0.0
        self._pbextHandshakeDone = False
        self._pbextRunning: dict[int, defer.Deferred[Any]] = {}
        self._pbextAbandoned: dict[int, None] = {}
        self._pbextEventWindow = 0.0
        self._pbextEventCount = 0
        self._pbextSuppressed = 0
        self._pbextKeepalive: Any = None
        self._pbextControl = _Control(self)
        self.setNameForLocal(CONTROL_NAME, self._pbextControl)
        # Errors of the application's own code building received copies,
        # logged as its bugs (rate-limited per class); made when needed.
        self._pbextHookErrors: HookErrorLog | None = None

    # -- logging -----------------------------------------------------------

    def _pbextPeerName(self) -> str:
        transport = getattr(self, "transport", None)
        try:
            return peerText(transport.getPeer()) if transport is not None else "?"
        except Exception:
            return "?"

    def _pbextViolation(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log one policy violation as a structured event, rate-limited per
        connection.
        """
        now = self._pbextGetClock().seconds()
        if now - self._pbextEventWindow >= 60.0:
            if self._pbextSuppressed:
                _log.warn(
                    "pbext: {suppressed} more policy violations from {peer} "
                    "were not logged",
                    suppressed=self._pbextSuppressed,
                    peer=self._pbextPeerName(),
                    pbextEvent="violationsSuppressed",
                )
            self._pbextEventWindow = now
            self._pbextEventCount = 0
            self._pbextSuppressed = 0
        self._pbextEventCount += 1
        if self._pbextEventCount > self._pbextLimits.maxErrorEventsPerMinute:
            self._pbextSuppressed += 1
            return
        _log.warn(
            "pbext: {kind} from {peer}: {message}",
            kind=kind,
            message=message,
            peer=self._pbextPeerName(),
            policy=self._pbextPolicy.name,
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

    def _pbextDropConnection(self, kind: str, message: str, **fields: Any) -> None:
        """
        Log a violation that ends the connection, and abort it.
        """
        self._pbextViolation(kind, message, **fields)
        self._pbextDecoder = None
        self._pbextDropped = True
        self._pbextBacklog.clear()
        transport = self.transport
        if transport is None or self.disconnected:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
            # Its output will never be sent: free it now, not a turn later
            # (when many connections are cut at once, that adds up).
            discardPending(transport)
        else:
            transport.loseConnection()

    # -- timers ------------------------------------------------------------

    def _pbextGetClock(self) -> Any:
        """
        The clock timers run on: the one given, else the transport's
        reactor, else the global reactor.
        """
        if self._pbextClock is None:
            clock = getattr(self.transport, "reactor", None)
            if clock is None:
                from twisted.internet import reactor as clock
            self._pbextClock = clock
        return self._pbextClock

    def _pbextSetTimer(
        self, name: str, seconds: float | None, f: Callable[[], None]
    ) -> None:
        self._pbextCancelTimer(name)
        if seconds is not None:
            self._pbextTimers[name] = self._pbextGetClock().callLater(seconds, f)

    def _pbextCancelTimer(self, name: str) -> None:
        call = self._pbextTimers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _pbextIdleTimerFired(self) -> None:
        """
        The idle timer fired: close the connection if the peer has really
        been silent for C{idleTimeout} seconds, else wait for the rest.

        Bytes arriving only record the time (see L{_pbextParse}): moving the
        timer for every chunk would cost a reactor call each.
        """
        self._pbextTimers.pop("idleTimeout", None)
        timeout = self._pbextLimits.idleTimeout
        assert timeout is not None
        quiet = self._pbextGetClock().seconds() - self._pbextLastHeard
        if quiet < timeout:
            self._pbextSetTimer(
                "idleTimeout", timeout - quiet, self._pbextIdleTimerFired
            )
            return
        self._pbextDropConnection(
            "idleTimeout", "idleTimeout reached; closing the connection"
        )

    def _pbextTimedOut(self, kind: str) -> Callable[[], None]:
        def expire() -> None:
            self._pbextTimers.pop(kind, None)
            self._pbextDropConnection(kind, f"{kind} reached; closing the connection")

        return expire

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self._pbextGetClock()
        setNoDelay(self.transport)
        writes = DirectWrites.forTransport(self.transport)
        if writes is not None:
            self._pbextWrite = writes.write
            self._pbextWriteSequence = writes.writeSequence
        else:
            self._pbextWrite = self.transport.write
        if _readsInPlace(type(self)) and _deliversTo(
            getattr(self.transport, "protocol", None), self
        ):
            self._pbextDirectReads = DirectReads.forTransport(
                self.transport, self._pbextReceiveBuffer, self._pbextReceivedInto
            )
        self._pbextDecoder = makeDecoder(**self._pbextLimits.framingLimits())  # type: ignore[arg-type]
        if self._pbextFusedReceive and self._pbextDecoder.accelerated:
            self._pbextDecoder.setPlainJelly(True)
            self._pbextDecoder.setPlainTypes(self._pbextPlainTypes.receive)
        limits = self._pbextLimits
        self._pbextSetTimer(
            "handshakeTimeout",
            limits.handshakeTimeout,
            self._pbextTimedOut("handshakeTimeout"),
        )
        if limits.idleTimeout is not None:
            self._pbextLastHeard = self._pbextGetClock().seconds()
            self._pbextSetTimer(
                "idleTimeout", limits.idleTimeout, self._pbextIdleTimerFired
            )
        self._pbextPendingOut = pendingWriter(self.transport)
        if _backpressureCapable(self.transport):
            target = producerTarget(self.transport)
            try:
                target.registerProducer(self, True)
                self._pbextProducing = True
                self._pbextProducerOn = target
            except RuntimeError:
                # Somebody else produces for this transport already.
                self._pbextProducing = False
        if self.isClient:
            super().connectionMade()
        else:
            self.setPrefixLimit(_twisted.prefixLimit())
            self.currentDialect = None
            self.sendEncoded([*self.knownDialects, PBEXT_DIALECT])

    def callExpressionReceived(self, obj: object) -> None:
        if self.currentDialect:
            self.expressionReceived(obj)
            return
        if self.isClient:
            if isinstance(obj, list) and PBEXT_DIALECT in obj:
                self._pbextPeerFeatures = frozenset([PBEXT_DIALECT])
            if not isinstance(obj, list):
                self._pbextDropConnection("badHandshake", "dialect offer is not a list")
                return
        elif obj not in self.knownDialects:
            self._pbextDropConnection(
                "badHandshake", "client chose an unknown dialect", dialect=obj
            )
            return
        super().callExpressionReceived(obj)

    def _selectDialect(self, dialect: bytes) -> None:
        if self._pbextDecoder is not None and dialect == b"pb":
            self._pbextDecoder.setVocabulary(self.incomingVocabulary)
        super()._selectDialect(dialect)

    def connectionReady(self) -> None:
        if self.isClient and PBEXT_DIALECT in self._pbextPeerFeatures:
            # Said after the version and before the application hears of
            # the connection, so the server knows this side is pbext before
            # its first call (what it may answer, streams, depends on it).
            def hello() -> None:
                self.remoteForName(CONTROL_NAME).callRemote(
                    "hello", [PBEXT_DIALECT], pbanswer=0
                )

            self.connects.insert(0, hello)
        super().connectionReady()
        self._pbextStartKeepalive()

    def proto_version(self, vnum: int) -> None:
        super().proto_version(vnum)
        self._pbextHandshakeDone = True
        self._pbextCancelTimer("handshakeTimeout")

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[override]
        for name in list(self._pbextTimers):
            self._pbextCancelTimer(name)
        if self._pbextDrainCall is not None and self._pbextDrainCall.active():
            self._pbextDrainCall.cancel()
        self._pbextDrainCall = None
        self._pbextBacklog.clear()
        if self._pbextKeepalive is not None:
            self._pbextKeepalive.stop()
            self._pbextKeepalive = None
        running = list(self._pbextRunning.values())
        self._pbextRunning.clear()
        for d in running:
            d.cancel()
        self._pbextDecoder = None
        if self._pbextDirectReads is not None:
            self._pbextDirectReads.stop()
            self._pbextDirectReads = None
        self._pbextOutputFull = False
        budget = self._pbextBudget
        if budget is not None:
            budget.release(self)
            self._pbextChargedBytes = 0
        # Told through the factory's own pbext state, never by looking
        # for a method name on a factory an application may have written.
        state = self._pbextFactoryState
        if state is not None and state.brokerLost is not None:
            state.brokerLost(self)
        super().connectionLost(reason)

    # -- keepalive ---------------------------------------------------------

    def _pbextStartKeepalive(self) -> None:
        interval = self.keepaliveInterval
        if not interval:
            return
        from pbext import keepalive

        keepalive.enableTcpKeepAlive(self.transport)
        self._pbextKeepalive = keepalive.KeepAlive(
            self._pbextGetClock(),
            interval,
            self.keepaliveTimeout,
            self._pbextPing,
            lambda: self._pbextDropConnection(
                "keepaliveTimeout", "the peer stopped answering keepalive pings"
            ),
        )
        self._pbextKeepalive.start()

    @property
    def pbextPolicy(self) -> SecurityPolicy:
        """
        The security policy of this connection.

        @since: pbext NEXT
        """
        return self._pbextPolicy

    @property
    def pbextRegistries(self) -> tuple[Any, ...]:
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
        return self._pbextPing()

    def _pbextPing(self) -> defer.Deferred[Any]:
        if PBEXT_DIALECT in self._pbextPeerFeatures:
            return self.remoteForName(CONTROL_NAME).callRemote("ping")
        from pbext import keepalive

        return keepalive.pingPeer(self)

    # -- receiving bytes ---------------------------------------------------

    def dataReceived(self, chunk: bytes) -> None:
        decoder = self._pbextDecoder
        if decoder is None:
            return
        self._pbextParse(decoder.feedTo, chunk, len(chunk))

    def _pbextReceiveBuffer(self) -> Any:
        """
        Where the transport may receive the rest of the long string
        arriving, if one is (see L{IDecoder.receiveBuffer}) and reading is
        not paused, else L{None}.
        """
        decoder = self._pbextDecoder
        if decoder is None or self._pbextReadPauses:
            return None
        return decoder.receiveBuffer()

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
        self._pbextParse(decoder.bufferFilled, count, count)
        return self._pbextDecoder is not None and not self._pbextReadPauses

    def _pbextParse(
        self,
        parse: Callable[[Any, Callable[[object], None]], None],
        data: Any,
        size: int,
    ) -> None:
        """
        Parse C{size} received bytes with C{parse} (a method of the
        decoder), and keep the connection's timers, keepalive and queue up
        to date.
        """
        decoder = self._pbextDecoder
        assert decoder is not None
        started = fairness.cpuTime()
        try:
            self._pbextParseNow(decoder, parse, data)
        finally:
            if self._pbextBacklog:
                # Messages received and waiting to be handled: the bytes
                # they came in bound what they hold (for the budget).
                self._pbextBacklogBytes += size
                if self._pbextBudget is not None:
                    self._pbextChargeBytes()
            self._pbextTakeTurns(fairness.cpuTime() - started)

    def _pbextTakeTurns(self, spent: float) -> None:
        """
        Handling one read of this peer took C{spent} seconds of CPU time:
        if that is much, and other connections are open, stop reading it
        for a while, so that it has at most
        C{maxPeerCPUPercent} of the process (see L{pbext.fairness}).
        """
        pause = fairness.pauseAfter(spent, self._pbextLimits.maxPeerCPUPercent)
        if pause <= 0 or self.disconnected:
            return
        state = self._pbextFactoryState
        if state is not None and state.admission is not None:
            others = state.connectionCount > 1
        else:
            others = fairness.othersConnected(self._pbextGetClock())
        if not others:
            # Nobody else would be served meanwhile.
            return
        waiting = self._pbextTimers.get("cpuShare")
        if waiting is not None and waiting.active():
            # Bytes already read (a TLS record after another) still cost:
            # the pause grows by their share too.
            waiting.delay(pause)
            return
        self._pbextPauseReading("cpuShare")

        def resume() -> None:
            self._pbextTimers.pop("cpuShare", None)
            self._pbextResumeReading("cpuShare")

        self._pbextSetTimer("cpuShare", pause, resume)

    def _pbextParseNow(
        self,
        decoder: IDecoder,
        parse: Callable[[Any, Callable[[object], None]], None],
        data: Any,
    ) -> None:
        if self._pbextKeepalive is not None:
            self._pbextKeepalive.activity()
        # For the idle timer, and for pbext.admission's choice of whom to
        # evict.
        self._pbextLastHeard = self._pbextGetClock().seconds()
        plainTypes = self._pbextPlainTypes
        if plainTypes.stale:
            plainTypes.refresh()
        # Told here, between two parses, whoever refreshed the tables.
        if plainTypes.decoderStale and self._pbextFusedReceive:
            plainTypes.decoderStale = False
            if decoder.accelerated:
                decoder.setPlainTypes(plainTypes.receive)
        # Once a dialect is chosen every expression is queued, so the
        # decoder appends to the queue itself, without a call back here.
        backlog = self._pbextBacklog
        sink = backlog.append if self.currentDialect else self._pbextExpressionDecoded
        try:
            parse(data, sink)
        except FramingError as e:
            self._pbextDropConnection("framingError", str(e), limit=e.limit)
            return
        except Exception as e:
            # Anything else going wrong with the peer's bytes (a value the
            # decoder cannot build, a bug of pbext's) is this peer's
            # problem only: never an error out of dataReceived.
            self._pbextDropConnection("decodingError", f"{type(e).__name__}: {e}")
            return
        timers = self._pbextTimers
        if self._pbextBudget is not None:
            self._pbextChargeBytes()
        if decoder.messageStarted:
            if "messageTimeout" not in timers:
                self._pbextSetTimer(
                    "messageTimeout",
                    self._pbextLimits.messageTimeout,
                    self._pbextTimedOut("messageTimeout"),
                )
        elif "messageTimeout" in timers:
            self._pbextCancelTimer("messageTimeout")
        if backlog and self._pbextDrainCall is None:
            self._pbextDrain()

    def _pbextExpressionDecoded(self, expression: object) -> None:
        """
        Queue a decoded expression; but handle the dialect selection at
        once, since it changes how the very next token is decoded.
        """
        if self.currentDialect is None and not self._pbextBacklog:
            self.callExpressionReceived(expression)
        else:
            self._pbextBacklog.append(expression)

    def _pbextDrain(self) -> None:
        """
        Handle queued expressions, at most C{maxMessagesPerTurn} now; the
        rest after other connections had their turn, with this peer not
        read from meanwhile.
        """
        self._pbextDrainCall = None
        backlog = self._pbextBacklog
        budget = self._pbextLimits.maxMessagesPerTurn
        while backlog and budget > 0 and not self.disconnected:
            if self._pbextOutputFull:
                # The peer is not reading its answers: its messages wait
                # (reading is paused too) until the output drains.
                return
            budget -= 1
            expression = backlog.popleft()
            try:
                self.callExpressionReceived(expression)
            except Exception:
                _log.failure(
                    "pbext: unexpected error handling a message from {peer}",
                    peer=self._pbextPeerName(),
                )
                self._pbextDropConnection("internalError", "error handling a message")
                return
        if not backlog:
            self._pbextBacklogBytes = 0
        if backlog and not self.disconnected:
            self._pbextPauseReading("fairness")
            self._pbextDrainCall = self._pbextGetClock().callLater(0, self._pbextDrain)
        elif self._pbextReadPauses:
            self._pbextResumeReading("fairness")

    def expressionReceived(self, sexp: object) -> None:
        if type(sexp) is list and sexp:
            # The usual case first: a known command with the right arity.
            command = sexp[0]
            entry = _COMMAND_HANDLERS.get(command) if type(command) is bytes else None
            if entry is not None and len(sexp) - 1 == entry[1]:
                getattr(self, entry[0])(*sexp[1:])
                return
        if not isinstance(sexp, list) or not sexp:
            self._pbextDropConnection("badMessage", "message is not a non-empty list")
            return
        command = sexp[0]
        if isinstance(command, bytes):
            command = command.decode("utf-8", "replace")
        if not isinstance(command, str) or command not in _COMMANDS:
            self._pbextViolation("unknownCommand", "unknown command", command=command)
            name = command.encode("utf-8") if isinstance(command, str) else b"?"
            self.sendCall(b"didNotUnderstand", name[:64])
            return
        if len(sexp) - 1 != _COMMANDS[command]:
            self._pbextDropConnection(
                "badMessage", f"{command} with {len(sexp) - 1} arguments"
            )
            return
        getattr(self, "proto_" + command)(*sexp[1:])

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
        if self._pbextBudget is not None and not self._pbextPrecharge(pieces):
            return
        if len(pieces) == 1:
            self._pbextWrite(pieces[0])
        else:
            self._pbextWriteSequence(pieces)
        measure = self._pbextPendingOut
        if measure is not None:
            pending = measure()
        elif self._pbextWritePaused:
            # A transport pbext cannot look into: count what was written
            # since it asked us to pause.
            self._pbextPausedBytes += sum(map(len, pieces))
            pending = self._pbextPausedBytes
        else:
            return
        if (
            pending > self._pbextLimits.maxPendingWriteBytes
            and not self._pbextOutputFull
        ):
            self._pbextOutputBackedUp()
        if self._pbextBudget is not None and (
            abs(pending - self._pbextChargedBytes) >= BYTES_STEP
        ):
            self._pbextChargeBytes()

    def _pbextPrecharge(self, pieces: list[bytes]) -> bool:
        """
        Before a large message joins output that already waits for a peer
        that is not reading, charge it to the server's budget: if that
        makes this connection the one to cut, it is cut before the
        transport copies the message into its buffer (a copy the budget
        would otherwise only see afterwards).

        @return: Whether the message may still be written.
        """
        measure = self._pbextPendingOut
        if measure is None:
            return True
        pending = measure()
        if not pending:
            return True
        size = sum(map(len, pieces))
        if size < BYTES_STEP:
            return True
        budget = self._pbextBudget
        assert budget is not None
        self._pbextUnwritten = size
        try:
            self._pbextChargedBytes = pending + size
            budget.chargeBytes(self, pending + size)
        finally:
            self._pbextUnwritten = 0
        return not (self._pbextDropped or self.disconnected)

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
        except banana.BananaError as e:
            command = exp[0] if exp else None
            requestID = exp[1] if len(exp) > 1 else None
            if command in (b"message", b"cachemessage"):
                d = self.waitingForAnswers.pop(requestID, None)
                if d is not None:
                    d.errback(MessageTooLarge(f"call not sent: {e}"))
                    return
            if command == b"answer" and isinstance(requestID, int):
                self._pbextViolation("answerTooLarge", str(e))
                self._sendError(
                    Failure(MessageTooLarge(f"answer not sent: {e}")), requestID
                )
                return
            raise
        except Exception:
            # A value checked when it was prepared (a _speedups.Jellied)
            # that its own code (a registered class's property) changed
            # before it was written: the encoder refuses it, and the call
            # fails as if serializing it had failed.
            command = exp[0] if exp else None
            requestID = exp[1] if len(exp) > 1 else None
            if command in (b"message", b"cachemessage"):
                d = self.waitingForAnswers.pop(requestID, None)
                if d is not None:
                    d.errback()
                    return
            if command == b"answer" and isinstance(requestID, int):
                failure = Failure()
                _log.failure(
                    "pbext: the answer to request {requestID} could not be sent",
                    failure,
                    requestID=requestID,
                )
                self._sendError(failure, requestID)
                return
            raise

    def sendDecRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().sendDecRef(objectID)

    def decCacheRef(self, objectID: int) -> None:
        if not self.disconnected:
            super().decCacheRef(objectID)

    # -- flow control ------------------------------------------------------

    def _pbextOutputBackedUp(self) -> None:
        """
        More than C{maxPendingWriteBytes} wait to be sent to the peer: stop
        reading it and handling its messages until they drain.
        """
        self._pbextOutputFull = True
        self._pbextPauseReading("backpressure")
        if self._pbextPendingOut is not None:
            # Checked on a timer too: a transport whose bufferSize is above
            # the limit never asked us to pause, so never says to resume.
            self._pbextSetTimer("backpressure", 0.05, self._pbextCheckDrained)

    def _pbextCheckDrained(self) -> None:
        self._pbextTimers.pop("backpressure", None)
        if not self._pbextOutputFull or self.disconnected:
            return
        measure = self._pbextPendingOut
        if (
            measure is not None
            and measure() > self._pbextLimits.maxPendingWriteBytes // 2
        ):
            self._pbextSetTimer("backpressure", 0.05, self._pbextCheckDrained)
            return
        self._pbextOutputDrained()

    def _pbextOutputDrained(self) -> None:
        """
        The output drained: read the peer and handle its messages again.
        """
        self._pbextCancelTimer("backpressure")
        wasFull = self._pbextOutputFull
        self._pbextOutputFull = False
        self._pbextResumeReading("backpressure")
        if self._pbextBudget is not None:
            self._pbextChargeBytes()
        if (
            wasFull
            and self._pbextBacklog
            and self._pbextDrainCall is None
            and not self.disconnected
        ):
            self._pbextDrainCall = self._pbextGetClock().callLater(0, self._pbextDrain)

    def _pbextBufferedBytes(self) -> int:
        """
        How many bytes this connection buffers now: output not yet sent,
        and the part of an incoming message received so far (for the
        server's L{MemoryBudget}).
        """
        if self.disconnected:
            return 0
        measure = self._pbextPendingOut
        pending = measure() if measure is not None else self._pbextPausedBytes
        pending += self._pbextUnwritten + self._pbextBacklogBytes
        decoder = self._pbextDecoder
        if decoder is not None:
            pending += decoder.pendingBytes
        return pending

    def _pbextHeldObjects(self) -> int:
        """
        How many objects this connection holds for its peer now:
        references and cacheables given to it (not counting the root and
        the control object), copies cached for it, and its calls running.
        """
        if self.disconnected:
            return 0
        return (
            max(len(self.localObjects) - 2, 0)
            + len(self.remotelyCachedObjects)
            + len(self.locallyCachedObjects)
            + len(self._pbextRunning)
        )

    def _pbextCut(self, kind: str, message: str) -> None:
        """
        The server's memory budget is exhausted and this connection holds
        the most: close it.
        """
        self._pbextDropConnection(kind, message)

    def _pbextChargeBytes(self) -> None:
        budget = self._pbextBudget
        if budget is None:
            return
        amount = self._pbextBufferedBytes()
        if amount != self._pbextChargedBytes and (
            abs(amount - self._pbextChargedBytes) >= BYTES_STEP or not amount
        ):
            self._pbextChargedBytes = amount
            budget.chargeBytes(self, amount)

    def _pbextChargeObjects(self) -> None:
        budget = self._pbextBudget
        if budget is not None:
            budget.chargeObjects(self, self._pbextHeldObjects())

    def _pbextPauseReading(self, reason: str) -> None:
        if reason in self._pbextReadPauses:
            return
        if not self._pbextReadPauses and self.transport is not None:
            self.transport.pauseProducing()
            if reason == "backpressure":
                self._pbextViolation(
                    "backpressure",
                    "the peer is not reading its answers; reading paused",
                )
        self._pbextReadPauses.add(reason)

    def _pbextResumeReading(self, reason: str) -> None:
        if reason in self._pbextReadPauses:
            self._pbextReadPauses.discard(reason)
            if not self._pbextReadPauses and not self.disconnected:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: count what is written from
        now on, and stop reading the peer past C{maxPendingWriteBytes}.
        """
        self._pbextWritePaused = True

    def resumeProducing(self) -> None:
        """
        The transport drained its buffer: read the peer again, and send the
        next pages of any pagers.
        """
        self._pbextWritePaused = False
        self._pbextPausedBytes = 0
        if self._pbextOutputFull:
            self._pbextOutputDrained()
        if not self._pbextProducing:
            super().resumeProducing()
        elif self.pageProducers:
            self._pbextSendPages()

    def stopProducing(self) -> None:
        self._pbextWritePaused = True

    def registerPageProducer(self, pager: Any) -> None:
        if not self._pbextProducing:
            super().registerPageProducer(pager)
            return
        self.pageProducers.append(pager)
        self._pbextSendPages()

    def _pbextSendPages(self) -> None:
        """
        Send pages until every pager is done or the transport asks us to
        pause (it does so from inside C{write}); L{resumeProducing} carries
        on.
        """
        while (
            self.pageProducers and not self._pbextWritePaused and not self.disconnected
        ):
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
        if self._pbextPlainSend:
            # Builtin values (and the commonest registered copyables) need
            # neither a jellier nor the attributes below (only Jellyable
            # objects read them).
            plainTypes = self._pbextPlainTypes
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
            return _jelly.jelly(
                object,
                self._pbextOutgoingTaster,
                self,
                self._pbextRegistries,
                self._pbextPolicy,
            )
        finally:
            self.serializingPerspective = None
            self.jellyMethod = None
            self.jellyArgs = None
            self.jellyKw = None

    def _pbextSerializeOut(
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
        if self._pbextFusedSend and _speedups is not None:
            if type(value) is not defer.Deferred:
                plainTypes = self._pbextPlainTypes
                if plainTypes.stale:
                    plainTypes.refresh()
                send = plainTypes.send
                try:
                    prepared = _speedups.preparePlain(
                        value,
                        send,
                        self._pbextOutgoingVocabulary(),
                        self._pbextLimits.maxOutgoingMessageBytes,
                    )
                except banana.BananaError:
                    # Too large to send: encoding the message fails the
                    # same way, and sendCall reports it to the caller.
                    return _speedups.Jellied(value, send)
                if prepared is not None:
                    return prepared
            if isinstance(value, defer.Deferred):
                return value.addCallback(
                    self._pbextSerializeOut, perspective, method, args, kw
                )
        return self.serialize(value, perspective, method, args, kw)

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        if _JELLIED is not None and type(sexp) is _JELLIED:
            # Unjellied by the decoder already.
            return sexp.value
        if self._pbextPlainReceive:
            plainTypes = self._pbextPlainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            result = _jelly.unjellyPlain(sexp, plainTypes.receive)
            if result is not _NOT_PLAIN:
                return result
        self.unserializingPerspective = perspective
        try:
            return _jelly.unjelly(
                sexp,
                self._pbextIncomingTaster,
                self,
                self._pbextRegistries,
                self._pbextPolicy,
            )
        except CopyHookError as e:
            self._pbextReportHookError(e)
            raise
        finally:
            self.unserializingPerspective = None

    def _pbextReportHookError(self, error: CopyHookError) -> None:
        """
        Log an error of the application's own code building a received
        copy as a bug of the application, with its traceback (at most one
        a minute for each class): the peer is not blamed.
        """
        log = self._pbextHookErrors
        if log is None:
            log = self._pbextHookErrors = HookErrorLog(self._pbextGetClock().seconds)
        log.report(error, self._pbextPeerName())

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
        if len(self.localObjects) - 1 > self._pbextLimits.maxReferences:
            self._pbextViolation(
                "maxReferences", "too many references for one connection"
            )
            # As classic PB: a peer that keeps asking is disconnected.
            self.maxBrokerRefsViolations += 1
            if self.maxBrokerRefsViolations > 3:
                self.transport.loseConnection()
            raise PolicyViolation(
                f"more than {self._pbextLimits.maxReferences} references "
                "on one connection"
            )
        luid = self.newLocalID()
        self.localObjects[luid] = pb.Local(object)
        self.luids[puid] = luid
        if self._pbextBudget is not None:
            self._pbextChargeObjects()
        return luid

    def cacheLocally(self, cid: int, instance: Any) -> None:
        if len(self.locallyCachedObjects) >= self._pbextLimits.maxCachedObjects:
            raise jelly.InsecureJelly(
                f"more than {self._pbextLimits.maxCachedObjects} cached objects"
            )
        super().cacheLocally(cid, instance)
        if self._pbextBudget is not None:
            self._pbextChargeObjects()

    def _pbextKnownID(self, objectID: object, table: Any, command: str) -> bool:
        """
        Whether C{objectID} names an entry of C{table} that the peer may
        release; if not, log the bogus C{command} (classic PB crashed on it).
        """
        if isinstance(objectID, int) and objectID in table:
            return True
        self._pbextViolation(
            "bad" + command.capitalize(),
            f"{command} of an unknown object",
            objectID=objectID,
        )
        return False

    def proto_decref(self, objectID: object) -> None:
        if self._pbextKnownID(objectID, self.localObjects, "decref"):
            super().proto_decref(objectID)

    def proto_decache(self, objectID: object) -> None:
        if self._pbextKnownID(objectID, self.remotelyCachedObjects, "decache"):
            super().proto_decache(objectID)

    def proto_uncache(self, objectID: object) -> None:
        if self._pbextKnownID(objectID, self.locallyCachedObjects, "uncache"):
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
            return self._pbextChainedSendMessage(
                prefix, perspective, objectID, message, args, kw, timeout
            )
        answerRequired = kw.pop("pbanswer", 1)
        if self.disconnected:
            raise pb.DeadReferenceError("Calling Stale Broker")
        try:
            netArgs = self._pbextSerializeOut(args, perspective, message)
            # No keywords, the usual case: their jelly is always this.
            netKw = (
                self._pbextSerializeOut(kw, perspective, message)
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
                self._pbextAbandon(requestID)

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
                timeout,
                self._pbextGetClock(),
                self._pbextTimeoutCall(requestID, timeout, message),
            )
        return result

    def _pbextChainedSendMessage(
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
            self._pbextAbandon(requestID)

        outer: defer.Deferred[Any] = defer.Deferred(cancel)
        result.chainDeferred(outer)
        if timeout is not None:
            outer.addTimeout(
                timeout,
                self._pbextGetClock(),
                self._pbextTimeoutCall(requestID, timeout, message),
            )
        return outer

    def _pbextTimeoutCall(
        self, requestID: int, timeout: float, message: bytes | str
    ) -> Callable[[Any, float], Any]:
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")

        def onTimeout(result: Any, seconds: float) -> Any:
            if isinstance(result, Failure) and result.check(defer.CancelledError):
                return Failure(
                    CallTimeout(
                        f"no answer to {message}() (call {requestID}) in "
                        f"{_seconds(timeout)}; if it needs longer, pass a "
                        f"larger pbtimeout= to the call or callTimeout= to "
                        f"the factory"
                    )
                )
            return result

        return onTimeout

    def _pbextAbandon(self, requestID: int) -> None:
        """
        Forget the caller of C{requestID}: its answer, if one comes, is
        dropped quietly, and a pbext peer is asked to cancel the call.
        """
        if self.waitingForAnswers is None:
            return
        if self.waitingForAnswers.pop(requestID, None) is None:
            return
        self._pbextAbandoned[requestID] = None
        while len(self._pbextAbandoned) > _ABANDONED_MEMORY:
            del self._pbextAbandoned[next(iter(self._pbextAbandoned))]
        if PBEXT_DIALECT in self._pbextPeerFeatures and not self.disconnected:
            self.remoteForName(CONTROL_NAME).callRemote("cancel", requestID, pbanswer=0)

    def _pbextTakeWaiting(
        self, requestID: object, kind: str
    ) -> defer.Deferred[Any] | None:
        d = None
        if isinstance(requestID, int):
            d = self.waitingForAnswers.pop(requestID, None)
        if d is None:
            if isinstance(requestID, int) and requestID in self._pbextAbandoned:
                del self._pbextAbandoned[requestID]
            else:
                self._pbextViolation(
                    "unexpectedAnswer",
                    f"{kind} for no pending call",
                    requestID=requestID,
                )
        return d

    def proto_answer(self, requestID: object, netResult: object) -> None:
        d = self._pbextTakeWaiting(requestID, "answer")
        if d is None:
            return
        try:
            result = self.unserialize(netResult)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def proto_error(self, requestID: object, fail: object) -> None:
        d = self._pbextTakeWaiting(requestID, "error")
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

    def _pbextCancelIncoming(self, requestID: object) -> None:
        if isinstance(requestID, int):
            d = self._pbextRunning.get(requestID)
            if d is not None:
                d.cancel()

    def _pbextRefuse(
        self, requestID: int, answerRequired: object, exc: pb.Error
    ) -> None:
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
            self._pbextDropConnection(
                "badMessage", "malformed call", requestID=requestID, method=message
            )
            return
        try:
            name = message.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if not self._pbextPolicy.isMethodAllowed(name):
            self._pbextViolation(
                "methodRefused", "call to a refused method name", name=name
            )
            self._pbextRefuse(
                requestID,
                answerRequired,
                PolicyViolation(f"{name}(): refused by the server's security policy"),
            )
            return
        if len(self._pbextRunning) >= self._pbextLimits.maxOutstandingCalls:
            self._pbextViolation("maxOutstandingCalls", "too many outstanding calls")
            self._pbextRefuse(
                requestID,
                answerRequired,
                PolicyViolation(
                    f"{name}(): more than {self._pbextLimits.maxOutstandingCalls} "
                    "calls unanswered; wait for an answer before calling again"
                ),
            )
            return
        try:
            target = findObjMethod(objectID)
        except (KeyError, TypeError):
            target = None
        if target is None:
            if objectID != keepalive.PING_OBJECT_ID:
                self._pbextViolation(
                    "badObject", "call to an unknown object", objectID=objectID
                )
            self._pbextRefuse(requestID, answerRequired, pb.Error("Invalid Object ID"))
            return
        try:
            result = self._pbextDispatch(target, name, netArgs, netKw, answerRequired)
        except pb.Error as e:
            self._pbextRefuse(requestID, answerRequired, e)
            return
        except typecheck.TypedReturnError:
            # The method's own fault, not the peer's: logged as a failure.
            self._pbextFailCall(Failure(), requestID, answerRequired, name)
            return
        except (jelly.InsecureJelly, typecheck.TypeCheckError) as e:
            self._pbextViolation("refusedArguments", str(e), name=name)
            self._pbextRefuse(requestID, answerRequired, PolicyViolation(str(e)))
            return
        except flavors.NoSuchMethod as e:
            # Answered as classic PB answers it (a copied NoSuchMethod that
            # callers trap), but logged as an event, not a traceback.
            self._pbextViolation("noSuchMethod", str(e), name=name)
            if answerRequired:
                self._sendError(Failure(e), requestID)
            return
        except BaseException:
            self._pbextFailCall(Failure(), requestID, answerRequired, name)
            return
        if isinstance(result, defer.Deferred):
            self._pbextRunning[requestID] = result
            if self._pbextBudget is not None:
                self._pbextChargeObjects()

            def done(value: Any) -> Any:
                self._pbextRunning.pop(requestID, None)
                return value

            result.addBoth(done)
            if answerRequired:
                result.addCallbacks(
                    self._sendAnswer,
                    self._pbextAnswerFailure,
                    callbackArgs=(requestID,),
                    errbackArgs=(requestID, name),
                )
            else:
                result.addErrback(self._pbextFailCall, requestID, 0, name)
        elif answerRequired:
            self._sendAnswer(result, requestID)

    def _sendError(self, fail: Any, requestID: int) -> None:
        """
        Send an error answer, as L{pb.Broker._sendError} does, deciding
        whether the exception itself can travel with the taster jelly will
        use to send it.
        """
        taster: Any = self._pbextOutgoingTaster
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

    def _pbextAnswerFailure(self, fail: Failure, requestID: int, name: str) -> None:
        if fail.check(pb.Error):
            self._sendError(fail, requestID)
        else:
            self._pbextFailCall(fail, requestID, 1, name)

    def _pbextFailCall(
        self, fail: Failure, requestID: int, answerRequired: object, name: str
    ) -> None:
        if fail.check(defer.CancelledError):
            _log.debug("pbext: call {name} was cancelled", name=name)
        elif fail.check(LoginFailed):
            # Refused logins are audited by pbext.login; not a server bug.
            _log.info(
                "pbext: login refused for {peer} in {name}",
                name=name,
                peer=self._pbextPeerName(),
                pbextEvent="loginRefused",
            )
        else:
            _log.failure(
                "pbext: remote method {name} called by {peer} failed",
                fail,
                name=name,
                peer=self._pbextPeerName(),
            )
        if answerRequired:
            self._sendError(fail, requestID)

    def _pbextDispatch(
        self,
        target: Any,
        name: str,
        netArgs: Any,
        netKw: Any,
        answerRequired: object = 1,
    ) -> Any:
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
                return self._pbextClassicDispatch(target, name, netArgs, netKw)
        elif kind is flavors.Referenceable.remoteMessageReceived:
            obj, prefix = target, "remote_"
        elif kind is flavors.ViewPoint.remoteMessageReceived:
            obj, prefix = target.object, "view_"
            perspective = target.perspective
            extra = (perspective,)
        elif kind is flavors.RemoteCache.remoteMessageReceived:
            obj, prefix = target, "observe_"
        else:
            return self._pbextClassicDispatch(target, name, netArgs, netKw)
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
        # Annotations are checked only when the program asked for it (the
        # factory's typedCalls, or pbext.typed on the method or its class):
        # otherwise the method is called as classic PB calls it.
        checker = None
        if self.typedCalls or typecheck.isTyped(method):
            # The compiled checks of the method, looked up once per call; for
            # a method without annotations both checks are skipped.
            checker = typecheck._callChecker(method)
            if checker.checksArguments:
                checker.checkArguments((*extra, *args), kw)
                # -- pbext.streams: and the items of stream arguments --
                _streams.checkArgumentItems(method, (*extra, *args), kw)
        state = method(*extra, *args, **kw)
        if type(state) not in _NEVER_AWAITABLE and inspect.isawaitable(state):
            state = defer.ensureDeferred(state)  # type: ignore[arg-type]
        if checker is not None and checker.returns is not None:
            if isinstance(state, defer.Deferred):
                state.addCallback(self._pbextCheckReturn, method)
            else:
                self._pbextCheckReturn(state, method)
        if not answerRequired:
            # Nobody reads this answer: serializing it would only cost a
            # peer's CPU and memory (and register references it never
            # learns of, held until it disconnects).
            return state
        # -- pbext.streams: a generator, async generator or Stream result --
        if type(state) in _streams.RESULT_TYPES:
            state = _streams.prepareResult(self, state, method, checker is not None)
        # -- end of pbext.streams --
        return self._pbextSerializeOut(state, perspective, method, args, kw)

    @staticmethod
    def _pbextCheckReturn(value: Any, method: Any) -> Any:
        typecheck.checkReturn(method, value)
        return value

    def _pbextClassicDispatch(
        self, target: Any, name: str, netArgs: Any, netKw: Any
    ) -> Any:
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
