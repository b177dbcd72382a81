"""
The connection set-up and tear-down sequence of a L{pbext.broker.Broker},
and the broker's violation reporting: the steps the broker's own methods
(C{__init__}, C{connectionMade}, C{connectionLost}) hand their work to.

Nothing here is on the per-call path.
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING, Any

from twisted.spread import jelly

from pbext import _control, _twisted, keepalive
from pbext._calls import OutgoingCalls
from pbext._cdecoder import receivesFrom
from pbext._flow import FlowControl
from pbext._plaincalls import dispatcherClass, keepsMethods
from pbext._serialization import Serialization
from pbext._timers import ConnectionTimers
from pbext._transport import RECEIVE_FROM_SOCKET, discardPending
from pbext._violations import ViolationLog
from pbext._wire import PBEXT_DIALECT
from pbext.security import SecurityPolicy, defaultPolicy

if TYPE_CHECKING:
    from pbext.broker import Broker


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


# Twisted's client endpoints put this between the transport and the
# protocol; its dataReceived hands the bytes on unchanged.
_ENDPOINT_WRAPPER: Any = _twisted.WrappingProtocol


def deliversTo(protocol: object, broker: object) -> bool:
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


def readsInPlace(brokerClass: type) -> bool:
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


def policyFor(
    security: jelly.SecurityOptions, policy: SecurityPolicy | None
) -> SecurityPolicy:
    """
    The policy a broker applies: C{policy} if given, else C{security} if it
    is a L{SecurityPolicy}, else the default policy.
    """
    if policy is not None:
        return policy
    return security if isinstance(security, SecurityPolicy) else defaultPolicy()


def applyOptions(
    broker: Broker,
    callTimeout: float | None,
    keepaliveInterval: float | None,
    keepaliveTimeout: float | None,
    typedCalls: bool | None,
) -> None:
    """
    Give C{broker} the options its constructor was given, leaving the class
    attributes (which a subclass may override) where one was not.
    """
    if callTimeout is not None:
        broker.callTimeout = callTimeout
    if keepaliveInterval is not None:
        broker.keepaliveInterval = keepaliveInterval
    if keepaliveTimeout is not None:
        broker.keepaliveTimeout = keepaliveTimeout
    if typedCalls is not None:
        broker.typedCalls = typedCalls


def unserializerOf(broker: Broker, base: type[Broker]) -> Any:
    """
    What unserializes for C{broker}'s parts: its serializer, unless its
    class overrides C{unserialize} of C{base} (pbext's Broker), then the
    broker itself.
    """
    if type(broker).unserialize is base.unserialize:
        return broker._pbextSerialization
    return broker


def wireParts(
    broker: Broker, security: jelly.SecurityOptions, clock: Any, base: type[Broker]
) -> None:
    """
    Make the parts C{broker} is made of, and bind what the call path uses
    most.  C{base} is pbext's Broker class, to tell which of its methods
    C{broker}'s class overrides.
    """
    kind: Any = type(broker)
    serialization = broker._pbextSerialization = Serialization(
        broker,
        broker._pbextPolicy,
        security,
        broker._pbextRegistries,
        ownSerialize=kind.serialize is base.serialize,
        ownUnserialize=kind.unserialize is base.unserialize,
    )
    broker._pbextTimers = ConnectionTimers(clock, broker)
    broker._pbextFlow = FlowControl(
        broker, broker._pbextLimits, holdsBack=kind.sendEncoded is base.sendEncoded
    )
    broker._pbextDispatcher = dispatcherClass(kind, base)(
        broker,
        serialization,
        unserializerOf(broker, base),
        directAnswers=keepsMethods(
            kind, base, ("_sendAnswer", "sendCall", "sendEncoded")
        ),
    )
    # How encoded messages reach the transport (see FlowControl.connect).
    broker._pbextWrite = broker._pbextWriteToTransport
    broker._pbextWriteSequence = broker._pbextWriteJoined


def outgoingCalls(broker: Broker, base: type[Broker]) -> OutgoingCalls:
    """
    Make C{broker}'s outgoing call table (on its first call: many
    connections of a server never call their peer).
    """
    serialization = broker._pbextSerialization
    kind: Any = type(broker)
    calls = broker._pbextCalls = OutgoingCalls(
        broker,
        serialization,
        unserializerOf(broker, base),
        direct=keepsMethods(kind, base, ("newRequestID", "sendCall", "sendEncoded")),
        routed=keepsMethods(
            kind, base, ("callExpressionReceived", "expressionReceived", "proto_answer")
        ),
    )
    return calls


def setUp(broker: Broker) -> None:
    """
    The connection is made: start C{broker}'s clock, flow control, decoder
    and timers.
    """
    transport = broker.transport
    timers = broker._pbextTimers
    timers.clock()
    setNoDelay(transport)
    broker._pbextFlow.connect(
        transport,
        readsInPlace(type(broker))
        and deliversTo(getattr(transport, "protocol", None), broker),
    )
    broker._pbextWritesConnected()
    limits = broker._pbextLimits
    broker._pbextDecoder = broker._pbextSerialization.decoder(limits)
    # Expired timeouts drop the connection through the broker's
    # _pbextDropConnection, found then (not a bound method kept).
    timers.start(limits.handshakeTimeout, limits.idleTimeout)


def offerDialects(broker: Broker) -> None:
    """
    A server's side of banana's handshake: offer the classic dialects and
    pbext's.
    """
    broker.setPrefixLimit(_twisted.prefixLimit())
    broker.currentDialect = None
    broker.sendEncoded([*broker.knownDialects, PBEXT_DIALECT])


def tearDown(broker: Broker) -> None:
    """
    The connection is lost: stop C{broker}'s timers, queue and calls, free
    what it holds, and tell its factory.
    """
    broker._pbextTimers.stop()
    flow = broker._pbextFlow
    flow.stopQueue()
    broker._pbextDispatcher.cancelAll()
    broker._pbextDecoder = None
    flow.release()
    # Told through the factory's own pbext state, never by looking for a
    # method name on a factory an application may have written.
    state = broker._pbextFactoryState
    if state is not None and state.brokerLost is not None:
        state.brokerLost(broker)


def startKeepalive(broker: Broker) -> None:
    """
    Start C{broker}'s keepalive, if it has an interval.
    """
    interval = broker.keepaliveInterval
    if not interval:
        return
    broker._pbextTimers.startKeepalive(
        broker.transport,
        interval,
        broker.keepaliveTimeout,
        functools.partial(_control.ping, broker),
        lambda: broker._pbextDropConnection(
            "keepaliveTimeout", "the peer stopped answering keepalive pings"
        ),
    )


def violation(broker: Broker, kind: str, message: str, fields: dict[str, Any]) -> None:
    """
    Log one policy violation of C{broker}'s peer as a structured event,
    rate-limited per connection.
    """
    log = broker._pbextViolations
    if log is None:
        log = broker._pbextViolations = ViolationLog(
            lambda: broker._pbextGetClock().seconds(),
            broker._pbextPeerName,
            broker._pbextPolicy.name,
            broker._pbextLimits.maxErrorEventsPerMinute,
        )
    log.report(kind, message, fields)


def drop(broker: Broker) -> None:
    """
    Abort C{broker}'s connection after a violation that ends it: nothing
    more is handled or sent.
    """
    broker._pbextDecoder = None
    broker._pbextDropped = True
    broker._pbextFlow.backlog.clear()
    transport = broker.transport
    if transport is None or broker.disconnected:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
        # Its output will never be sent: free it now, not a turn later
        # (when many connections are cut at once, that adds up).
        discardPending(transport)
    else:
        transport.loseConnection()


def receiveTarget(broker: Broker) -> Any:
    """
    Where C{broker}'s transport may receive the rest of the long string
    arriving, if one is and reading is not paused (else L{None}): with the
    accelerated decoder, L{RECEIVE_FROM_SOCKET}, for L{receiveFrom};
    otherwise the decoder's L{IDecoder.receiveBuffer
    <pbext.interfaces.IDecoder.receiveBuffer>}.  (C{Broker._pbextReceiveBuffer}.)
    """
    decoder = broker._pbextDecoder
    if decoder is None or broker._pbextFlow.readPauses:
        return None
    if receivesFrom(decoder):
        return RECEIVE_FROM_SOCKET if decoder.receivingString else None
    return decoder.receiveBuffer()


def receiveFrom(broker: Broker, sock: socket.socket) -> int | None:
    """
    Receive what C{sock} has of the rest of the long string arriving into
    C{broker}'s accelerated decoder, straight into the string: one system
    call and no copy, where a receive buffer takes a read and a copy per
    64 KiB.  The count is then handed to C{Broker._pbextReceivedInto}, as
    for a buffer.  (C{Broker._pbextReceiveFrom}.)

    @return: The count, or L{None} if no string is arriving.
    @raise OSError: As C{socket.recv_into} raises it.
    """
    decoder = broker._pbextDecoder
    if decoder is None or not receivesFrom(decoder):
        return None
    return decoder.receiveFrom(sock)
