"""
Helpers for L{tests.test_hostile}: a raw banana peer that speaks (or
breaks) the PB wire byte by byte, a recording pbext server, and a stock
PB client to prove the server still serves everybody else.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure
from twisted.spread import banana, pb
from zope.interface import implementer

import pbext
from pbext.codec import encode, makeDecoder
from pbext.security import SecurityPolicy

#: How long any single wait in these tests may take, in seconds.  Waits
#: end much sooner when the server behaves; this only bounds a failure.
WAIT = 10.0

#: The words of the C{b"pb"} dialect, both ways.
OUTGOING = banana.Banana.outgoingVocabulary
INCOMING = banana.Banana.incomingVocabulary


def wireMessage(obj: object) -> bytes:
    """
    Encode C{obj} as a post-handshake message (C{b"pb"} vocabulary).
    """
    return encode(obj, OUTGOING)


def callMessage(
    requestID: int,
    method: bytes,
    args: list[Any] | None = None,
    kw: list[Any] | None = None,
    objectID: object = b"root",
    answerRequired: int = 1,
) -> list[Any]:
    """
    Build the expression of a PB call.

    @param args: The jellied argument tuple (default: no arguments).
    @param kw: The jellied keyword dictionary (default: none).
    """
    return [
        b"message",
        requestID,
        objectID,
        method,
        answerRequired,
        args if args is not None else [b"tuple"],
        kw if kw is not None else [b"dictionary"],
    ]


def flattenBytes(expression: object) -> bytes:
    """
    Every string inside a decoded expression, joined: enough to look for
    an exception's name in an error answer without unjellying it.
    """
    parts: list[bytes] = []
    stack = [expression]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            parts.append(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return b" ".join(parts)


class HostileRoot(pb.Root):
    """
    The root object the hostile tests serve.

    @ivar calls: The names of the methods run, in order.
    @ivar kept: The arguments given to C{keep}.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kept: list[Any] = []

    def remote_echo(self, value: Any) -> Any:
        self.calls.append("echo")
        return value

    def remote_keep(self, *values: Any) -> None:
        self.calls.append("keep")
        self.kept.extend(values)

    def remote__private(self) -> str:
        self.calls.append("_private")
        return "private"


class RecordingServerFactory(pbext.PBServerFactory):
    """
    A pbext server factory that remembers every broker it built.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.brokers: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        if proto is not None:
            self.brokers.append(proto)
        return proto


class HostilePeer(protocol.Protocol):
    """
    A raw PB peer: writes whatever bytes it is told to and decodes what
    the server sends back.

    @ivar received: Every expression received, in order.
    @ivar counts: How many messages of each command were received.
    @ivar answers: The first C{answer} or C{error} message received for
        each request ID.
    @ivar receivedBytes: How many bytes were received.
    @ivar lost: Fires when the connection is lost.
    @ivar lostReason: Why it was lost.
    @ivar handshaken: Fires once the server's C{version} message arrived.
    """

    def __init__(self) -> None:
        self.decoder = makeDecoder(maxMessageBytes=64 * 1024 * 1024)
        self.received: list[object] = []
        self.counts: dict[object, int] = {}
        self.answers: dict[object, list[Any]] = {}
        self.receivedBytes = 0
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.lostReason: Failure | None = None
        self.handshaken: defer.Deferred[HostilePeer] = defer.Deferred()
        self.connected = False
        self.handshake = False
        self._waiters: list[tuple[Callable[[], object], defer.Deferred[Any]]] = []

    def connectionMade(self) -> None:
        self.connected = True

    def dataReceived(self, data: bytes) -> None:
        self.receivedBytes += len(data)
        self.decoder.feedTo(data, self._expression)
        self._check()

    def _expression(self, expression: object) -> None:
        self.received.append(expression)
        if isinstance(expression, list) and expression:
            command = expression[0]
            self.counts[command] = self.counts.get(command, 0) + 1
            if command in (b"answer", b"error") and len(expression) == 3:
                self.answers.setdefault(expression[1], expression)
        if self.handshake and len(self.received) == 1:
            # The dialect offer: choose b"pb", then speak it.
            self.transport.write(encode(b"pb"))
            self.decoder.setVocabulary(INCOMING)
            self.transport.write(wireMessage([b"version", 6]))
        elif self.handshake and expression == [b"version", 6]:
            if not self.handshaken.called:
                self.handshaken.callback(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.connected = False
        self.lostReason = reason
        self.lost.callback(None)
        self._check()

    def _check(self) -> None:
        for entry in list(self._waiters):
            test, d = entry
            result = test()
            if result is not None:
                self._waiters.remove(entry)
                d.callback(result)

    def waitFor(
        self, test: Callable[[], object], reactor: Any, timeout: float = WAIT
    ) -> defer.Deferred[Any]:
        """
        Fire with C{test()}'s value once it is not L{None}, checked after
        every chunk received; time out after C{timeout} seconds.
        """
        d: defer.Deferred[Any] = defer.Deferred()
        result = test()
        if result is not None:
            d.callback(result)
            return d
        entry = (test, d)
        self._waiters.append(entry)

        def forget(passthrough: object) -> object:
            if entry in self._waiters:
                self._waiters.remove(entry)
            return passthrough

        d.addTimeout(timeout, reactor)
        d.addErrback(forget)
        return d

    def answerTo(self, requestID: int, reactor: Any) -> defer.Deferred[list[Any]]:
        """
        Fire with the C{answer} or C{error} message of C{requestID}, or
        fail if the connection is lost first.
        """

        def find() -> object:
            if requestID in self.answers:
                return self.answers[requestID]
            if not self.connected:
                return ConnectionError(f"lost before request {requestID} answered")
            return None

        def check(result: object) -> Any:
            if isinstance(result, ConnectionError):
                raise result
            return result

        return self.waitFor(find, reactor).addCallback(check)

    def messages(self, command: bytes) -> list[list[Any]]:
        """
        The received messages whose command is C{command}.
        """
        return [
            e for e in self.received if isinstance(e, list) and e and e[0] == command
        ]


@implementer(ILogObserver)
class EventRecorder:
    """
    Records pbext's structured events (those with a C{pbextEvent} key).
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if "pbextEvent" in event:
            self.events.append(event)

    def kinds(self) -> list[str]:
        """
        The C{kind} of every policy violation recorded.
        """
        return [e.get("kind", "") for e in self.events]


def errorText(message: list[Any]) -> bytes:
    """
    The strings inside an error answer (its exception type and message).
    """
    return flattenBytes(message[2])


class HostileMixin:
    """
    Server, hostile peers and stock client for one L{TestCase}.
    """

    def setUpHostile(self: Any) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.recorder = EventRecorder()
        globalLogPublisher.addObserver(self.recorder)
        self.addCleanup(globalLogPublisher.removeObserver, self.recorder)

    def startServer(
        self: Any, policy: SecurityPolicy | None = None
    ) -> RecordingServerFactory:
        """
        Listen on a loopback port with a fresh L{HostileRoot}.

        @return: the factory; its C{port} attribute is the port number and
            its C{root} the root object.
        """
        self.root = HostileRoot()
        factory = RecordingServerFactory(self.root, policy=policy)
        port: IListeningPort = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self._dropAll, factory)
        factory.portNumber = port.getHost().port  # type: ignore[attr-defined]
        self.factory = factory
        return factory

    def _dropAll(self: Any, factory: RecordingServerFactory) -> defer.Deferred[Any]:
        """
        Close every server-side connection still open, and wait for them.
        """
        waits = []
        for broker in factory.brokers:
            if not broker.disconnected and broker.transport is not None:
                lost: defer.Deferred[None] = defer.Deferred()
                original = broker.connectionLost

                def connectionLost(
                    reason: Failure, original: Any = original, lost: Any = lost
                ) -> None:
                    original(reason)
                    lost.callback(None)

                broker.connectionLost = connectionLost
                broker.transport.abortConnection()
                waits.append(lost.addTimeout(WAIT, self.reactor))
        return defer.gatherResults(waits)  # type: ignore[return-value]

    def connectRaw(self: Any, handshake: bool = True) -> defer.Deferred[HostilePeer]:
        """
        Connect a L{HostilePeer} to the server; fire with it once
        connected, or once the PB handshake is done if C{handshake}.
        """
        peer = HostilePeer()
        peer.handshake = handshake
        creator = protocol.ClientCreator(self.reactor, lambda: peer)
        d = creator.connectTCP("127.0.0.1", self.factory.portNumber)

        def connected(proto: HostilePeer) -> Any:
            self.addCleanup(self._closePeer, proto)
            if handshake:
                return proto.handshaken.addTimeout(WAIT, self.reactor)
            return proto

        return d.addCallback(connected)

    def _closePeer(self: Any, peer: HostilePeer) -> defer.Deferred[Any] | None:
        if not peer.connected:
            return None
        peer.transport.abortConnection()
        return peer.lost.addTimeout(WAIT, self.reactor)

    def waitLost(self: Any, peer: HostilePeer) -> defer.Deferred[None]:
        """
        Fire when the server closed C{peer}'s connection (bounded wait).
        """
        if not peer.connected:
            return defer.succeed(None)
        d: defer.Deferred[Any] = defer.Deferred()
        peer.lost.addBoth(lambda r: (d.callback(r), r)[1])
        return d.addTimeout(WAIT, self.reactor)

    @defer.inlineCallbacks
    def stockEcho(self: Any, value: object = "still served") -> Any:
        """
        Connect a stock L{pb.PBClientFactory} client, call C{echo} and
        check the answer; fail if it does not come within L{WAIT} seconds.
        """
        client = pb.PBClientFactory()
        connector = self.reactor.connectTCP(
            "127.0.0.1", self.factory.portNumber, client
        )
        self.addCleanup(connector.disconnect)
        root = yield client.getRootObject().addTimeout(WAIT, self.reactor)
        result = yield root.callRemote("echo", value).addTimeout(WAIT, self.reactor)
        self.assertEqual(result, value)
        # Disconnect now so that limits on connections are not used up.
        lost: defer.Deferred[None] = defer.Deferred()
        root.broker.notifyOnDisconnect(lambda: lost.callback(None))
        connector.disconnect()
        yield lost.addTimeout(WAIT, self.reactor)
        return result

    def poll(self: Any, test: Callable[[], bool]) -> defer.Deferred[None]:
        """
        Fire once C{test()} is true, checked every 10 ms, for at most
        L{WAIT} seconds.
        """
        d: defer.Deferred[None] = defer.Deferred()

        def check() -> None:
            if test():
                loop.stop()

        loop = task.LoopingCall(check)
        loop.clock = self.reactor
        loop.start(0.01).chainDeferred(d)

        def stop(passthrough: object) -> object:
            if loop.running:
                loop.stop()
            return passthrough

        return d.addTimeout(WAIT, self.reactor).addErrback(stop)

    def serverBroker(self: Any, index: int = -1) -> Any:
        """
        The server-side broker of the C{index}-th connection.
        """
        return self.factory.brokers[index]


__all__ = [
    "EventRecorder",
    "HostileMixin",
    "HostilePeer",
    "HostileRoot",
    "RecordingServerFactory",
    "WAIT",
    "callMessage",
    "errorText",
    "flattenBytes",
    "wireMessage",
]
