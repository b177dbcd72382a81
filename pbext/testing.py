"""
Connect a Perspective Broker client and server in memory, for trial tests.

Twisted's own PB tests connect their brokers with private helpers.  This
module does the same job with public Twisted APIs only, so that any
application can test its PB code with no sockets and no reactor::

    from twisted.trial.unittest import SynchronousTestCase
    from pbext import PBClientFactory, PBServerFactory
    from pbext.testing import connectedPair

    class EchoTests(SynchronousTestCase):
        def test_echo(self):
            conn = connectedPair(PBServerFactory(MyRoot()), PBClientFactory())
            self.addCleanup(conn.disconnect)
            root = conn.rootObject()
            self.assertEqual(conn.resultOf(root.callRemote("echo", 1)), 1)

L{connectedPair} builds both brokers from their factories and joins them with
two L{MemoryTransport}s.  Bytes move only when the test says so:
L{PBConnection.pump} moves them both ways until both sides are idle, and the
helpers that return a result (L{PBConnection.resultOf},
L{PBConnection.rootObject}, L{PBConnection.login}) pump first.  Time is a
L{twisted.internet.task.Clock} that moves only through
L{PBConnection.advance}.

Each way of the connection is a L{Direction} that can hold, delay or corrupt
the bytes it carries, and L{PBConnection.dropConnection} ends the connection
abruptly, so a test can check what its code does when the network misbehaves.

Stock L{twisted.spread.pb} factories and pbext's work alike, on either side.

@since: pbext NEXT
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import Any, Callable, Coroutine, Iterable, TypeVar, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    NotConnectingError,
    UserError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IConsumer,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ISSLTransport,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from pbext._pumping import (
    PumpError,
    advance,
    failureFrom,
    nextEventTime,
    noResult,
    resultFrom,
    settle,
)

__all__ = [
    "Direction",
    "MemoryEndpoint",
    "MemoryTransport",
    "PBConnection",
    "PumpError",
    "TLSMemoryTransport",
    "connectedPair",
    "memoryEndpoint",
]

_T = TypeVar("_T")

_log = Logger()

#: What a queued item of a L{Direction} is: bytes, or L{None} for the end of
#: the stream.
_Chunk = bytes | None


class Direction:
    """
    One way of a L{PBConnection}: the bytes one side writes, on their way to
    the other side.

    A test uses it to make the network misbehave: L{hold} and L{release} stop
    and restart delivery, L{delay} adds latency measured on the connection's
    clock, and L{corruptNext} rewrites the next chunk.  Each C{write} by the
    sender is delivered as one chunk, one C{dataReceived} call, so a chunk is
    usually one PB message.  These settings stay in force when the client
    reconnects; bytes still queued when the connection is lost are
    discarded.

    @ivar name: C{"client to server"} or C{"server to client"}.
    """

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._queue: deque[tuple[float, _Chunk]] = deque()
        self._corruptions: deque[Callable[[bytes], bytes]] = deque()
        self._held = False
        self._delay = 0.0

    def __repr__(self) -> str:
        return f"<Direction {self.name}: {len(self._queue)} chunks queued>"

    def hold(self) -> None:
        """
        Stop delivering: bytes written from now on, and bytes already queued,
        wait until L{release}.  A clean close waits with them.
        """
        self._held = True

    def release(self) -> None:
        """
        Deliver again, starting with what was held, at the next pump.
        """
        self._held = False

    def delay(self, seconds: float) -> None:
        """
        Add latency: each chunk written from now on is delivered C{seconds}
        after it was written, on the connection's clock (see
        L{PBConnection.advance}).  Order is kept, so lowering the delay never
        lets a later chunk overtake an earlier one.  C{delay(0)} restores
        immediate delivery.

        @raise ValueError: if C{seconds} is negative.
        """
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative: {seconds!r}")
        self._delay = seconds

    def corruptNext(self, function: Callable[[bytes], bytes]) -> None:
        """
        Deliver C{function(chunk)} instead of the next chunk.

        Called several times, the functions apply to successive chunks.

        @param function: takes the bytes about to be delivered and returns
            what the receiver gets instead (nothing is delivered if it
            returns C{b""}).
        """
        self._corruptions.append(function)

    def pending(self) -> bytes:
        """
        @return: the bytes written but not yet delivered (held, delayed, or
            waiting for the next pump).
        """
        return b"".join(chunk for _, chunk in self._queue if chunk is not None)

    def _push(self, chunk: _Chunk) -> None:
        when = self._clock.seconds() + self._delay
        if self._queue:
            when = max(when, self._queue[-1][0])
        self._queue.append((when, chunk))

    def _hasDue(self) -> bool:
        return (
            not self._held
            and bool(self._queue)
            and self._queue[0][0] <= self._clock.seconds()
        )

    def _nextTime(self) -> float | None:
        """
        When the first queued chunk falls due, if that is in the future and
        nothing holds it.
        """
        if self._held or not self._queue:
            return None
        when = self._queue[0][0]
        return when if when > self._clock.seconds() else None

    def _pop(self) -> _Chunk:
        chunk = self._queue.popleft()[1]
        if chunk is not None and self._corruptions:
            chunk = self._corruptions.popleft()(chunk)
        return chunk

    def _clear(self) -> None:
        self._queue.clear()


@implementer(ITCPTransport, IConsumer, IPushProducer)
class MemoryTransport:
    """
    One end of a L{PBConnection}: a TCP-like transport whose bytes go into a
    L{Direction} instead of a socket.

    It behaves as a TCP transport does where a protocol can tell: writes
    after C{loseConnection} are ignored, the closing side reads nothing more,
    a pull producer is asked for more whenever the outgoing bytes are
    delivered, and C{pauseProducing} stops delivery to this side's protocol
    until C{resumeProducing}.  Half-close is not modelled:
    C{loseWriteConnection} closes the whole connection.

    @ivar protocol: the protocol this transport carries.
    @ivar connected: true until the connection is lost.
    @ivar disconnecting: true once this side asked to close.
    @ivar producer: the producer registered with L{registerProducer}, if any.
    @ivar streamingProducer: whether that producer is a push producer.
    @ivar readingPaused: true between L{pauseProducing} and
        L{resumeProducing}.
    @ivar reactor: the connection's clock.  A TCP transport carries the
        reactor it runs on in this attribute; code that schedules its timers
        on C{transport.reactor} runs them on the connection's time here.
    """

    def __init__(
        self,
        connection: PBConnection,
        host: IPv4Address,
        peer: IPv4Address,
        outgoing: Direction,
    ) -> None:
        self._connection = connection
        self.reactor = connection.clock
        self._host = host
        self._peer = peer
        self._outgoing = outgoing
        self.protocol: IProtocol = Protocol()
        self.connected = True
        self.disconnecting = False
        self.aborting = False
        self.producer: IProducer | None = None
        self.streamingProducer = False
        self.readingPaused = False
        self._noDelay = False
        self._keepAlive = False

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._host} -> {self._peer}>"

    def write(self, data: bytes) -> None:
        """
        Send C{data} to the peer; it is delivered by a later pump.

        @raise TypeError: if C{data} is not C{bytes}.
        """
        if not isinstance(data, bytes):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if self.connected and not self.disconnecting and data:
            self._outgoing._push(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Send the concatenation of C{data} as one chunk.
        """
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        Close cleanly once the bytes written so far are delivered; both
        protocols then see L{ConnectionDone}.
        """
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self._outgoing._push(None)

    loseWriteConnection = loseConnection

    def abortConnection(self) -> None:
        """
        Close at the next pump, discarding undelivered bytes both ways: this
        side sees L{ConnectionAborted}, the peer L{ConnectionLost}.
        """
        if self.connected:
            self.aborting = True

    def getHost(self) -> IPv4Address:
        return self._host

    def getPeer(self) -> IPv4Address:
        return self._peer

    def getTcpNoDelay(self) -> bool:
        return self._noDelay

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._noDelay = bool(enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._keepAlive

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._keepAlive = bool(enabled)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Register a producer, as L{twisted.internet.abstract.FileDescriptor}
        does: a pull producer is asked for data at once, then whenever the
        bytes it wrote have been delivered.

        @raise RuntimeError: if another producer is still registered.
        """
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer "
                f"{self.producer!r} was never unregistered."
            )
        if not self.connected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = streaming
        if not streaming:
            # The ignore below: not streaming, so an IPullProducer.
            producer.resumeProducing()  # type: ignore[attr-defined]

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        """
        Stop delivering incoming bytes to this side's protocol.
        """
        self.readingPaused = True

    def resumeProducing(self) -> None:
        """
        Deliver incoming bytes again, from the next pump.
        """
        self.readingPaused = False

    def stopProducing(self) -> None:
        """
        Close the connection, as a TCP transport does.
        """
        self.loseConnection()


@implementer(ISSLTransport)
class TLSMemoryTransport(MemoryTransport):
    """
    A L{MemoryTransport} that says it is TLS: it provides L{ISSLTransport},
    as a TLS connection's transport does, so that code which allows
    something only over TLS (pbext's plaintext password login, for
    instance) allows it.  Nothing is encrypted, and the peer presents no
    certificate.

    @since: pbext NEXT
    """

    def __repr__(self) -> str:
        return f"<TLSMemoryTransport {self._host} -> {self._peer}>"

    def getPeerCertificate(self) -> None:
        """
        @return: L{None}: the peer presented no certificate.
        """
        return None


@implementer(IConnector)
class _Connector:
    """
    What the client factory of a L{PBConnection} sees as its connector.

    A real connector connects asynchronously; this one connects at the next
    pump, so a factory that calls L{connect} again after losing the
    connection (a reconnecting factory) gets a fresh pair of brokers.
    """

    def __init__(self, connection: PBConnection) -> None:
        self._connection = connection
        self.state = "disconnected"
        self.factoryStarted = False

    def __repr__(self) -> str:
        return f"<in-memory connector {self.state} {self.getDestination()}>"

    def connect(self) -> None:
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        self.state = "connecting"
        factory = self._connection.clientFactory
        if not self.factoryStarted:
            factory.doStart()
            self.factoryStarted = True
        factory.startedConnecting(self)

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise NotConnectingError("we're not trying to connect")
        self.state = "disconnected"
        self._connection.clientFactory.clientConnectionFailed(
            self, Failure(UserError())
        )
        self._stopFactoryUnlessConnecting()

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected":
            self._connection.clientTransport.loseConnection()

    def getDestination(self) -> IPv4Address:
        return self._connection.serverAddress

    def _lost(self, reason: Failure) -> None:
        self.state = "disconnected"
        self._connection.clientFactory.clientConnectionLost(self, reason)
        self._stopFactoryUnlessConnecting()

    def _stopFactoryUnlessConnecting(self) -> None:
        # A factory that called connect() again is still in use.
        if self.state == "disconnected" and self.factoryStarted:
            self.factoryStarted = False
            self._connection.clientFactory.doStop()


def _guarded(
    what: str, function: Callable[..., object], *args: object
) -> Failure | None:
    """
    Call C{function}, logging what it raises, as the reactor logs what a
    protocol raises.

    @return: the failure, if it raised.
    """
    try:
        function(*args)
    except Exception:
        failure = Failure()
        _log.failure("pbext.testing: unhandled error in {what}", failure, what=what)
        return failure
    return None


class PBConnection:
    """
    A PB client and server connected in memory, moved by hand.

    Build one with L{connectedPair}.  It is a context manager, and
    C{testCase.addCleanup(conn.disconnect)} tears it down: neither uses the
    global reactor, so trial finds it clean.

    @ivar serverFactory: the server factory.
    @ivar clientFactory: the client factory.
    @ivar serverBroker: the protocol the server factory built for the
        current (or last) connection, L{None} if it refused to build one.
    @ivar clientBroker: the same, for the client factory.
    @ivar serverTransport: the server broker's L{MemoryTransport}.
    @ivar clientTransport: the client broker's L{MemoryTransport}.
    @ivar clientToServer: the L{Direction} from client to server.
    @ivar serverToClient: the L{Direction} from server to client.
    @ivar clock: the clock moved by L{advance}.  Give the same clock to any
        code under test that schedules calls (a factory's C{clock} or
        C{reactor} argument), so that its timers run in step with the bytes.
    @ivar connector: the L{IConnector} the client factory was given.
    @ivar serverAddress: the server's address, as both sides see it.
    @ivar clientAddress: the client's address, as both sides see it.
    @ivar maxRounds: how many rounds L{pump} (and how many timed steps
        L{advance}) may take before raising L{PumpError}.
    @ivar tls: whether both transports are L{TLSMemoryTransport}s.
    """

    maxRounds = 10_000

    def __init__(
        self,
        serverFactory: Factory,
        clientFactory: ClientFactory,
        clock: Clock,
        serverAddress: IPv4Address,
        clientAddress: IPv4Address,
        tls: bool = False,
    ) -> None:
        self.serverFactory = serverFactory
        self.clientFactory = clientFactory
        self.clock = clock
        self.tls = tls
        self.serverAddress = serverAddress
        self.clientAddress = clientAddress
        self.clientToServer = Direction("client to server", clock)
        self.serverToClient = Direction("server to client", clock)
        self.connector = _Connector(self)
        self.serverBroker: pb.Broker | None = None
        self.clientBroker: pb.Broker | None = None
        self.serverTransport = self._newTransport(
            serverAddress, clientAddress, self.serverToClient
        )
        self.clientTransport = self._newTransport(
            clientAddress, serverAddress, self.clientToServer
        )
        self.serverTransport.connected = self.clientTransport.connected = False
        self._pumping = False

    def __repr__(self) -> str:
        return (
            f"<PBConnection {self.connector.state} "
            f"{self.clientAddress} -> {self.serverAddress}>"
        )

    def __enter__(self) -> PBConnection:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        excValue: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.disconnect()

    @property
    def connected(self) -> bool:
        """
        Whether the brokers are connected now.
        """
        return self.connector.state == "connected"

    # Making and losing the connection.

    def _newTransport(
        self, host: IPv4Address, peer: IPv4Address, outgoing: Direction
    ) -> MemoryTransport:
        transportClass = TLSMemoryTransport if self.tls else MemoryTransport
        return transportClass(self, host, peer, outgoing)

    def _establish(self) -> None:
        """
        Build both brokers and connect them, as accepting and completing a
        TCP connection would.
        """
        self.clientToServer._clear()
        self.serverToClient._clear()
        server = self.serverTransport = self._newTransport(
            self.serverAddress, self.clientAddress, self.serverToClient
        )
        client = self.clientTransport = self._newTransport(
            self.clientAddress, self.serverAddress, self.clientToServer
        )
        self.serverFactory.doStart()
        serverProtocol = self.serverFactory.buildProtocol(self.clientAddress)
        self.connector.state = "connected"
        clientProtocol = self.clientFactory.buildProtocol(self.serverAddress)
        # The ignore below: a PB factory builds a pb.Broker.
        self.serverBroker = serverProtocol  # type: ignore[assignment]
        # The ignore below: a PB factory builds a pb.Broker.
        self.clientBroker = clientProtocol  # type: ignore[assignment]
        failures: list[tuple[MemoryTransport, Failure]] = []
        for transport, protocol in ((server, serverProtocol), (client, clientProtocol)):
            if protocol is None:
                # As a TCP port or connector does when its factory refuses.
                transport.loseConnection()
                continue
            transport.protocol = protocol
            failure = _guarded("makeConnection", protocol.makeConnection, transport)
            if failure is not None:
                failures.append((transport, failure))
        if failures:
            transport, failure = failures[0]
            self._loseFrom(transport, failure, Failure(ConnectionDone()))

    def _loseFrom(
        self, transport: MemoryTransport, reason: Failure, peerReason: Failure
    ) -> None:
        """
        Lose the connection with C{reason} on C{transport}'s side and
        C{peerReason} on the other.
        """
        if transport is self.serverTransport:
            self._lose(reason, peerReason)
        else:
            self._lose(peerReason, reason)

    def _lose(self, serverReason: Failure, clientReason: Failure) -> None:
        """
        End the connection now: discard undelivered bytes, stop producers,
        and tell both protocols and the factories, as the reactor would.
        """
        if not self.connected:
            return
        self.clientToServer._clear()
        self.serverToClient._clear()
        transports = (self.serverTransport, self.clientTransport)
        for transport in transports:
            transport.connected = False
            producer, transport.producer = transport.producer, None
            if producer is not None:
                _guarded("stopProducing", producer.stopProducing)
        self.connector.state = "disconnecting"
        _guarded(
            "connectionLost",
            self.serverTransport.protocol.connectionLost,
            serverReason,
        )
        _guarded(
            "connectionLost",
            self.clientTransport.protocol.connectionLost,
            clientReason,
        )
        self.serverFactory.doStop()
        _guarded("clientConnectionLost", self.connector._lost, clientReason)

    def dropConnection(self, reason: Failure | None = None) -> None:
        """
        Lose the connection abruptly, now, as when a cable is pulled:
        undelivered bytes are discarded and both sides see C{reason}.
        Outstanding remote calls fail with L{pb.PBConnectionLost}.

        @param reason: what both protocols' C{connectionLost} receive; a
            L{ConnectionLost} failure by default.
        """
        if reason is None:
            reason = Failure(ConnectionLost("dropped by pbext.testing"))
        self._lose(reason, reason)

    def disconnect(self, byServer: bool = False) -> None:
        """
        Close the connection cleanly and pump until it is closed.

        Safe to call at any time and any number of times, which makes it a
        good cleanup.  If held or delayed bytes keep the close from
        arriving, the connection is dropped with L{dropConnection} instead,
        so that it is closed when this returns.  A reconnecting client
        factory may connect again afterwards; stop it first if that is not
        wanted.

        @param byServer: close from the server's side instead of the
            client's.
        """
        if self.connector.state == "connecting":
            self.connector.stopConnecting()
        if not self.connected:
            return
        transport = self.serverTransport if byServer else self.clientTransport
        transport.loseConnection()
        if self._pumping:
            # Called from code the pump is running: it finishes the close.
            return
        self.pump()
        if self.connected:
            self.dropConnection()

    # Moving bytes.

    def sendRawToServer(self, data: bytes) -> None:
        """
        Queue C{data} for the server as though the client had written it:
        how a test plays a hostile or broken peer.  The next pump delivers
        it, after what the client broker already wrote.
        """
        self.clientToServer._push(data)

    def sendRawToClient(self, data: bytes) -> None:
        """
        Queue C{data} for the client as though the server had written it.
        """
        self.serverToClient._push(data)

    def pump(self) -> None:
        """
        Move bytes both ways until neither side has anything more to
        deliver now.

        Bytes that are held, or delayed past the clock's current time, stay
        where they are.  A client factory's pending C{connect} is carried
        out first.

        @raise PumpError: if the bytes are still moving after L{maxRounds}
            rounds, or if called from inside a pump.
        """
        if self._pumping:
            raise PumpError("pump() called while already pumping")
        self._pumping = True
        try:
            for _ in range(self.maxRounds):
                if not self._round():
                    return
        finally:
            self._pumping = False
        raise PumpError(
            f"bytes still moving after {self.maxRounds} rounds; do the "
            f"protocols answer every message with another?"
        )

    flush = pump
    """
    Another name for L{pump}.
    """

    def _round(self) -> bool:
        """
        Deliver every chunk due now, both ways, once.

        @return: whether anything happened.
        """
        moved = False
        if self.connector.state == "connecting":
            self._establish()
            moved = True
        for direction, receiver in (
            (self.clientToServer, self.serverTransport),
            (self.serverToClient, self.clientTransport),
        ):
            if not self.connected:
                return moved
            moved = self._deliver(direction, receiver) or moved
        if not self.connected:
            return moved
        for transport in (self.serverTransport, self.clientTransport):
            producer = transport.producer
            if (
                producer is not None
                and not transport.streamingProducer
                and not transport._outgoing._queue
            ):
                # The ignore below: not streaming, so an IPullProducer.
                producer.resumeProducing()  # type: ignore[attr-defined]
                moved = moved or bool(transport._outgoing._queue)
        return self._abortIfAsked() or moved

    def _deliver(self, direction: Direction, receiver: MemoryTransport) -> bool:
        moved = False
        while self.connected and direction._hasDue() and not receiver.readingPaused:
            if self._abortIfAsked():
                return True
            chunk = direction._pop()
            moved = True
            if chunk is None:
                done = Failure(ConnectionDone())
                self._lose(done, done)
                return True
            if receiver.disconnecting or not chunk:
                # A closing TCP transport stops reading.
                continue
            failure = _guarded("dataReceived", receiver.protocol.dataReceived, chunk)
            if failure is not None:
                self._loseFrom(receiver, failure, Failure(ConnectionDone()))
                return True
        return self._abortIfAsked() or moved

    def _abortIfAsked(self) -> bool:
        if not self.connected:
            return False
        for transport in (self.serverTransport, self.clientTransport):
            if transport.aborting:
                self._loseFrom(
                    transport,
                    Failure(ConnectionAborted()),
                    Failure(ConnectionLost()),
                )
                return True
        return False

    def advance(self, seconds: float) -> None:
        """
        Move the clock C{seconds} forward, pumping at every step.

        The clock stops at each time a call is scheduled or a delayed chunk
        falls due, and pumps there, so timers and bytes interleave as they
        would in real time: a keepalive answer sent at second 30 arrives
        before a timeout checked at second 60.

        @raise ValueError: if C{seconds} is negative.
        @raise PumpError: if more than L{maxRounds} timed steps fall inside
            C{seconds}, or if a pump raises it.
        """
        advance(self.clock, seconds, self.maxRounds, self.pump, self._nextEventTime)

    def _nextEventTime(self) -> float | None:
        return nextEventTime(self.clock, (self.clientToServer, self.serverToClient))

    # Results.

    def _noResult(self, deferred: Deferred[Any]) -> PumpError:
        return noResult(
            deferred,
            self.connected,
            (self.clientToServer, self.serverToClient),
            self.clock,
        )

    # The coroutine type is twisted.internet.defer.ensureDeferred's own.
    def resultOf(
        self, deferred: Deferred[_T] | Coroutine[Deferred[Any], Any, _T]
    ) -> _T:
        """
        Pump, then return the result of C{deferred}, or raise its failure.

        A failure copied from the peer (a L{pb.CopiedFailure}) is raised as
        the L{pb.RemoteError} an C{inlineCallbacks} or C{async} caller would
        see; use L{failureOf} to inspect it with C{failure.check}.  The
        result is consumed, as trial's C{successResultOf} does.

        @param deferred: a L{Deferred}, or a coroutine to run with
            L{ensureDeferred}.
        @raise PumpError: if it has no result once the bytes settle.
        """
        d = ensureDeferred(deferred)
        captured = settle(d, self.pump)
        if not captured:
            raise self._noResult(d)
        return resultFrom(captured[0])

    # Deferred[Any]: a Deferred of any result (Deferred is invariant, so
    # Deferred[object] would refuse most); the coroutine type is
    # twisted.internet.defer.ensureDeferred's own.
    def failureOf(
        self, deferred: Deferred[Any] | Coroutine[Deferred[Any], Any, Any]
    ) -> Failure:
        """
        Pump, then return the failure C{deferred} fired with.

        A failure copied from the peer is a L{pb.CopiedFailure}, whose
        C{check} method compares the remote exception type by name::

            f = conn.failureOf(clientFactory.login(badCredentials))
            self.assertTrue(f.check(UnauthorizedLogin))

        @raise PumpError: if it has no result once the bytes settle, or
            succeeded.
        """
        d = ensureDeferred(deferred)
        captured = settle(d, self.pump)
        if not captured:
            raise self._noResult(d)
        return failureFrom(captured[0])

    def rootObject(self) -> pb.RemoteReference:
        """
        Ask the client factory for the server's root object, pump, and
        return it.

        @raise PumpError: if it has not arrived once the bytes settle.
        """
        # The ignore below: a PB client factory, not any ClientFactory.
        getRootObject = self.clientFactory.getRootObject  # type: ignore[attr-defined]
        root: pb.RemoteReference = self.resultOf(getRootObject())
        return root

    def login(self, credentials: object, mind: object = None) -> pb.RemoteReference:
        """
        Log in through the client factory, pump, and return the avatar's
        reference.

        @param credentials: what C{PBClientFactory.login} accepts: an
            L{twisted.cred.credentials.UsernamePassword} or
            L{twisted.cred.credentials.Anonymous}.
        @param mind: passed to the server's realm as the client's mind.
        @raise pb.RemoteError: if the server refused the login; use
            L{failureOf} on C{clientFactory.login(...)} to check the type.
        @raise PumpError: if the login has no result once the bytes settle.
        """
        # The ignore below: a PB client factory, not any ClientFactory.
        login = self.clientFactory.login  # type: ignore[attr-defined]
        avatar: pb.RemoteReference = self.resultOf(login(credentials, mind))
        return avatar


def connectedPair(
    serverFactory: Factory,
    clientFactory: ClientFactory,
    *,
    clock: Clock | None = None,
    serverAddress: IPv4Address | None = None,
    clientAddress: IPv4Address | None = None,
    handshake: bool = True,
    tls: bool = False,
) -> PBConnection:
    """
    Connect a client factory to a server factory in memory.

    Each factory builds its broker with C{buildProtocol}, exactly as it
    would for a TCP connection, and the client factory sees the calls a
    connector makes (C{startedConnecting}, then C{clientConnectionLost} at
    the end), so C{getRootObject()} and C{login()} behave as they do over
    the network.  Stock L{pb.PBServerFactory} and L{pb.PBClientFactory} and
    pbext's work alike, in any combination.  Connect several clients to one
    server factory by calling this once for each.

    @param serverFactory: builds the server's broker.
    @param clientFactory: builds the client's broker.
    @param clock: the clock for L{PBConnection.advance}; a new
        L{twisted.internet.task.Clock} if not given.
    @param serverAddress: the server's address; C{127.0.0.1:8787} by
        default.
    @param clientAddress: the client's address; C{127.0.0.1:49152} by
        default.
    @param handshake: pump once before returning, so that the brokers have
        agreed on the dialect and the client factory holds the root.  Pass
        C{False} to start from the very first byte, for instance to hold or
        corrupt the handshake itself.
    @param tls: connect with L{TLSMemoryTransport}s, which say they are
        TLS, so that what a server allows only over TLS (a plaintext
        password login) is allowed.
    @return: the connection.
    """
    connection = PBConnection(
        serverFactory,
        clientFactory,
        clock if clock is not None else Clock(),
        serverAddress or IPv4Address("TCP", "127.0.0.1", 8787),
        clientAddress or IPv4Address("TCP", "127.0.0.1", 49152),
        tls,
    )
    connection.connector.connect()
    connection._establish()
    if handshake:
        connection.pump()
    return connection


class _EndpointFactory(ClientFactory):
    """
    What a L{PBConnection} made by a L{MemoryEndpoint} sees as its client
    factory: the protocol factory given to C{connect}, which (like any
    endpoint's) is started and stopped and builds the protocol, but is not
    told about connectors.
    """

    def __init__(self, protocolFactory: IProtocolFactory) -> None:
        self._protocolFactory = protocolFactory

    def doStart(self) -> None:
        self._protocolFactory.doStart()

    def doStop(self) -> None:
        self._protocolFactory.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        # A PBConnection always gives an address; an endpoint's protocol
        # factory may build any IProtocol provider, which the connection
        # drives as ClientFactory's Protocol.
        assert addr is not None
        return cast("Protocol | None", self._protocolFactory.buildProtocol(addr))

    def startedConnecting(self, connector: IConnector) -> None:
        pass

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        pass

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        pass


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    A client endpoint that connects to a server factory in memory.

    Give it to code that takes an endpoint, such as
    L{pbext.client.PBClientService} or L{pbext.client.connect}: each
    C{connect} makes a new L{PBConnection} to the server factory, on the
    endpoint's clock, and fires with the client's protocol at once.  Bytes
    move only when the test calls L{pump} or L{advance}, which move every
    connection the endpoint made; each connection (L{connections}) can hold,
    delay, corrupt or drop its bytes as one made by L{connectedPair} can.

    L{refuse} makes the next connections fail, as a server that is down
    would, and L{stall} leaves them pending until cancelled, as a server
    that does not answer would; L{accept} undoes both.

    @ivar serverFactory: the server factory connections are made to.
    @ivar clock: the clock shared by every connection.
    @ivar connections: every L{PBConnection} made, oldest first.
    @ivar attempts: how many times C{connect} was called.
    @since: pbext NEXT
    """

    maxRounds = PBConnection.maxRounds

    def __init__(
        self,
        serverFactory: Factory,
        clock: Clock,
        serverAddress: IPv4Address,
    ) -> None:
        self.serverFactory = serverFactory
        self.clock = clock
        self.serverAddress = serverAddress
        self.connections: list[PBConnection] = []
        self.attempts = 0
        self._refusal: Failure | None = None
        self._stalled = False

    def __repr__(self) -> str:
        return f"<MemoryEndpoint to {self.serverAddress}, {self.attempts} attempts>"

    @property
    def connection(self) -> PBConnection | None:
        """
        The latest connection made, or L{None}.
        """
        return self.connections[-1] if self.connections else None

    def refuse(self, reason: BaseException | None = None) -> None:
        """
        Make the next connections fail with C{reason} (by default
        L{ConnectionRefusedError}), until L{accept} is called.
        """
        self._refusal = Failure(reason or ConnectionRefusedError())
        self._stalled = False

    def stall(self) -> None:
        """
        Leave the next connection attempts pending (until cancelled), until
        L{accept} is called.
        """
        self._stalled = True
        self._refusal = None

    def accept(self) -> None:
        """
        Connect the next attempts again.
        """
        self._refusal = None
        self._stalled = False

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect C{protocolFactory}'s protocol to a protocol of the server
        factory, in memory.
        """
        self.attempts += 1
        if self._refusal is not None:
            return fail(self._refusal)
        if self._stalled:
            return Deferred()
        port = 49152 + len(self.connections)
        connection = PBConnection(
            self.serverFactory,
            _EndpointFactory(protocolFactory),
            self.clock,
            self.serverAddress,
            IPv4Address("TCP", "127.0.0.1", port),
        )
        self.connections.append(connection)
        connection.connector.connect()
        connection._establish()
        protocol = connection.clientBroker
        if protocol is None:
            return fail(ConnectionRefusedError("the client factory built no protocol"))
        return succeed(protocol)

    def pump(self) -> None:
        """
        Move bytes on every connection until none has anything more to
        deliver now (connections made meanwhile included).
        """
        for _ in range(self.maxRounds):
            count = len(self.connections)
            for connection in list(self.connections):
                if connection.connected:
                    connection.pump()
            if len(self.connections) == count:
                return
        raise PumpError(f"still connecting after {self.maxRounds} rounds")

    def advance(self, seconds: float) -> None:
        """
        Move the clock C{seconds} forward, pumping every connection at each
        time something is scheduled, as L{PBConnection.advance} does.
        """
        advance(self.clock, seconds, self.maxRounds, self.pump, self._nextEventTime)

    def _nextEventTime(self) -> float | None:
        return nextEventTime(
            self.clock,
            [
                direction
                for connection in self.connections
                for direction in (connection.clientToServer, connection.serverToClient)
            ],
        )

    def disconnect(self) -> None:
        """
        Close every connection: a cleanup.  Stop the code that connects
        (such as a L{pbext.client.PBClientService}) first, or it may connect
        again.
        """
        for connection in self.connections:
            connection.disconnect()


def memoryEndpoint(
    serverFactory: Factory,
    *,
    clock: Clock | None = None,
    serverAddress: IPv4Address | None = None,
) -> MemoryEndpoint:
    """
    A client endpoint connecting to C{serverFactory} in memory, so that code
    taking an endpoint (L{pbext.client.PBClientService},
    L{pbext.client.connect}) can be tested without sockets::

        clock = Clock()
        endpoint = memoryEndpoint(PBServerFactory(MyRoot()), clock=clock)
        service = PBClientService(endpoint, clock=clock)
        service.startService()
        endpoint.pump()
        root = successResultOf(service.whenConnected())

    @param serverFactory: builds the server's broker for each connection.
    @param clock: the clock of every connection; give the same one to the
        code under test.  A new L{Clock} if not given.
    @param serverAddress: the server's address; C{127.0.0.1:8787} by
        default.  Each connection's client address has a new port.
    @since: pbext NEXT
    """
    return MemoryEndpoint(
        serverFactory,
        clock if clock is not None else Clock(),
        serverAddress or IPv4Address("TCP", "127.0.0.1", 8787),
    )
