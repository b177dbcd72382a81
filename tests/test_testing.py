"""
Tests for L{pbext.testing}: PB clients and servers connected in memory.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IConnector,
    ISSLTransport,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import pbext
from pbext.client import connect
from pbext.testing import (
    PBConnection,
    PumpError,
    TLSMemoryTransport,
    connectedPair,
    memoryEndpoint,
)


class Echoer(pb.Root):
    """
    A root that echoes, answers later on a clock, and fails on request.
    """

    def __init__(self, clock: task.Clock | None = None) -> None:
        self.clock = clock if clock is not None else task.Clock()

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_later(self, seconds: float) -> Deferred[str]:
        return task.deferLater(self.clock, seconds, lambda: "later")

    def remote_fail(self) -> None:
        raise pb.Error("as asked")

    def remote_hold(self) -> Deferred[None]:
        return Deferred()


class Avatar(pb.Avatar):
    def __init__(self, name: bytes) -> None:
        self.name = name

    def perspective_whoami(self) -> bytes:
        return self.name


@implementer(IRealm)
class Realm:
    def requestAvatar(
        self, avatarId: bytes, mind: object, *interfaces: Any
    ) -> tuple[Any, Avatar, Callable[[], None]]:
        return pb.IPerspective, Avatar(avatarId), lambda: None


class RecordingClientFactory(pb.PBClientFactory):
    """
    A stock client factory that records the calls a connector makes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Any]] = []

    def startedConnecting(self, connector: Any) -> None:
        self.events.append(("startedConnecting", connector))

    def clientConnectionLost(
        self, connector: Any, reason: Failure, reconnecting: int = 0
    ) -> None:
        self.events.append(("clientConnectionLost", reason))
        super().clientConnectionLost(connector, reason, reconnecting)


def portal() -> Portal:
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"secret")
    return Portal(Realm(), [checker])


class ConnectedPairTests(SynchronousTestCase):
    """
    Tests for L{connectedPair} with stock and pbext factories.
    """

    def connect(
        self, server: Factory, client: ClientFactory, **kw: Any
    ) -> PBConnection:
        conn = connectedPair(server, client, **kw)
        self.addCleanup(conn.disconnect)
        return conn

    def assertEchoes(self, server: Factory, client: ClientFactory) -> None:
        conn = self.connect(server, client)
        root = conn.rootObject()
        self.assertIsInstance(root, pb.RemoteReference)
        self.assertEqual(conn.resultOf(root.callRemote("echo", [1, "two"])), [1, "two"])

    def test_pbextToPbext(self) -> None:
        """
        A pbext client calls a pbext server's root.
        """
        self.assertEchoes(pbext.PBServerFactory(Echoer()), pbext.PBClientFactory())

    def test_stockToPbext(self) -> None:
        """
        A stock client calls a pbext server's root.
        """
        self.assertEchoes(pbext.PBServerFactory(Echoer()), pb.PBClientFactory())

    def test_pbextToStock(self) -> None:
        """
        A pbext client calls a stock server's root.
        """
        self.assertEchoes(pb.PBServerFactory(Echoer()), pbext.PBClientFactory())

    def test_stockToStock(self) -> None:
        """
        A stock client calls a stock server's root.
        """
        self.assertEchoes(pb.PBServerFactory(Echoer()), pb.PBClientFactory())

    def test_handshakeDone(self) -> None:
        """
        By default the brokers have agreed on the dialect when
        L{connectedPair} returns: the client factory has the root and no
        bytes are waiting.
        """
        client = pb.PBClientFactory()
        conn = self.connect(pb.PBServerFactory(Echoer()), client)
        self.assertIsInstance(
            self.successResultOf(client.getRootObject()), pb.RemoteReference
        )
        self.assertEqual(conn.clientToServer.pending(), b"")
        self.assertEqual(conn.serverToClient.pending(), b"")

    def test_noHandshake(self) -> None:
        """
        With C{handshake=False} nothing has been delivered yet: the server's
        dialect offer waits, and the root arrives only after a pump.
        """
        client = pb.PBClientFactory()
        conn = self.connect(pb.PBServerFactory(Echoer()), client, handshake=False)
        self.assertIn(b"pb", conn.serverToClient.pending())
        d = client.getRootObject()
        self.assertNoResult(d)
        conn.pump()
        self.assertIsInstance(self.successResultOf(d), pb.RemoteReference)

    def test_connectorCalls(self) -> None:
        """
        The client factory is started, told C{startedConnecting} with an
        L{IConnector} whose destination is the server, and stopped with
        C{clientConnectionLost} when the connection ends; the server factory
        is started and stopped once per connection.
        """
        server = pb.PBServerFactory(Echoer())
        client = RecordingClientFactory()
        conn = self.connect(server, client)
        self.assertEqual((server.numPorts, client.numPorts), (1, 1))
        [(name, connector)] = client.events
        self.assertEqual(name, "startedConnecting")
        self.assertIs(connector, conn.connector)
        verifyObject(IConnector, connector)
        self.assertEqual(connector.getDestination(), conn.serverAddress)
        conn.disconnect()
        self.assertEqual(client.events[-1][0], "clientConnectionLost")
        client.events[-1][1].trap(ConnectionDone)
        self.assertEqual((server.numPorts, client.numPorts), (0, 0))

    def test_transports(self) -> None:
        """
        Each broker gets a L{MemoryTransport} that provides L{ITCPTransport}
        and reports the addresses given, with the connection's clock as its
        C{reactor}; the server factory built its broker for the client's
        address.
        """
        seen: list[Any] = []

        class Server(pb.PBServerFactory):
            def buildProtocol(self, addr: Any) -> pb.Broker:
                seen.append(addr)
                return super().buildProtocol(addr)

        serverAddress = IPv4Address("TCP", "10.0.0.1", 8800)
        clientAddress = IPv4Address("TCP", "10.0.0.2", 40000)
        conn = self.connect(
            Server(Echoer()),
            pb.PBClientFactory(),
            serverAddress=serverAddress,
            clientAddress=clientAddress,
        )
        self.assertEqual(seen, [clientAddress])
        for transport in (conn.serverTransport, conn.clientTransport):
            verifyObject(ITCPTransport, transport)
            self.assertIs(transport.reactor, conn.clock)
        assert conn.serverBroker is not None and conn.clientBroker is not None
        self.assertIs(conn.serverBroker.transport, conn.serverTransport)
        self.assertIs(conn.clientBroker.transport, conn.clientTransport)
        self.assertEqual(conn.serverTransport.getHost(), serverAddress)
        self.assertEqual(conn.serverTransport.getPeer(), clientAddress)
        self.assertEqual(conn.clientTransport.getHost(), clientAddress)
        self.assertEqual(conn.clientTransport.getPeer(), serverAddress)

    def test_tcpOptions(self) -> None:
        """
        The transports remember C{TCP_NODELAY} and keepalive settings.
        """
        conn = self.connect(pb.PBServerFactory(Echoer()), pb.PBClientFactory())
        transport = conn.clientTransport
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        self.assertTrue(transport.getTcpNoDelay())
        self.assertTrue(transport.getTcpKeepAlive())
        transport.setTcpNoDelay(False)
        self.assertFalse(transport.getTcpNoDelay())

    def test_tls(self) -> None:
        """
        With C{tls=True} both transports provide L{ISSLTransport} as well
        as L{ITCPTransport}, and the peer has no certificate; by default
        neither says it is TLS.
        """
        plain = self.connect(pb.PBServerFactory(Echoer()), pb.PBClientFactory())
        self.assertFalse(plain.tls)
        for transport in (plain.serverTransport, plain.clientTransport):
            self.assertFalse(ISSLTransport.providedBy(transport))
        conn = self.connect(
            pbext.PBServerFactory(Echoer()), pbext.PBClientFactory(), tls=True
        )
        self.assertTrue(conn.tls)
        for transport in (conn.serverTransport, conn.clientTransport):
            self.assertIsInstance(transport, TLSMemoryTransport)
            self.assertTrue(verifyObject(ISSLTransport, transport))
            self.assertTrue(verifyObject(ITCPTransport, transport))
            self.assertIsNone(transport.getPeerCertificate())
        root = conn.rootObject()
        self.assertEqual(conn.resultOf(root.callRemote("echo", 5)), 5)

    def test_plaintextLoginOverTLS(self) -> None:
        """
        A pbext server that takes plaintext passwords only over TLS takes
        one on a C{tls=True} connection, and refuses it on a plain one.
        """
        for tls in (True, False):
            conn = self.connect(
                pbext.PBServerFactory(portal(), reactor=task.Clock()),
                pbext.PBClientFactory(),
                tls=tls,
            )
            asked = conn.rootObject().callRemote(
                "loginWithPassword", b"alice", b"secret", None
            )
            if tls:
                avatar = conn.resultOf(asked)
                self.assertEqual(conn.resultOf(avatar.callRemote("whoami")), b"alice")
            else:
                self.assertTrue(conn.failureOf(asked).check(UnauthorizedLogin))

    def test_writeText(self) -> None:
        """
        Writing text instead of bytes raises L{TypeError}, as a real
        transport does.
        """
        conn = self.connect(pb.PBServerFactory(Echoer()), pb.PBClientFactory())
        self.assertRaises(TypeError, conn.clientTransport.write, "text")

    def test_severalClients(self) -> None:
        """
        Several clients connect to one server factory, each with its own
        server broker.
        """
        server = pbext.PBServerFactory(Echoer())
        first = self.connect(server, pb.PBClientFactory())
        second = self.connect(server, pbext.PBClientFactory())
        self.assertIsNot(first.serverBroker, second.serverBroker)
        self.assertEqual(server.numPorts, 2)
        self.assertEqual(first.resultOf(first.rootObject().callRemote("echo", 1)), 1)
        self.assertEqual(second.resultOf(second.rootObject().callRemote("echo", 2)), 2)
        first.disconnect()
        second.disconnect()
        self.assertEqual(server.numPorts, 0)

    def test_refusedByServer(self) -> None:
        """
        A server factory that builds no protocol refuses the connection: the
        client connects, then loses the connection cleanly.
        """

        class Refusing(pb.PBServerFactory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        client = RecordingClientFactory()
        conn = self.connect(Refusing(Echoer()), client)
        self.assertIsNone(conn.serverBroker)
        self.assertFalse(conn.connected)
        client.events[-1][1].trap(ConnectionDone)


class ResultTests(SynchronousTestCase):
    """
    Tests for L{PBConnection.resultOf}, L{PBConnection.failureOf} and
    L{PBConnection.rootObject}.
    """

    def setUp(self) -> None:
        self.conn = connectedPair(pbext.PBServerFactory(Echoer()), pb.PBClientFactory())
        self.addCleanup(self.conn.disconnect)
        self.root = self.conn.rootObject()

    def test_remoteFailureRaised(self) -> None:
        """
        A failure copied from the server is raised as L{pb.RemoteError},
        naming the remote type.
        """
        error = self.assertRaises(
            pb.RemoteError, self.conn.resultOf, self.root.callRemote("fail")
        )
        self.assertEqual(error.remoteType, b"twisted.spread.pb.Error")

    def test_failureOf(self) -> None:
        """
        L{PBConnection.failureOf} returns the copied failure, which
        C{check}s against the remote type.
        """
        failure = self.conn.failureOf(self.root.callRemote("fail"))
        self.assertTrue(failure.check(pb.Error))

    def test_failureOfSuccess(self) -> None:
        """
        L{PBConnection.failureOf} raises L{PumpError} when the call
        succeeded.
        """
        self.assertRaises(
            PumpError, self.conn.failureOf, self.root.callRemote("echo", 1)
        )

    def test_localFailureRaised(self) -> None:
        """
        A local failure is raised as its own exception.
        """
        d: Deferred[None] = Deferred()
        d.errback(ZeroDivisionError())
        self.assertRaises(ZeroDivisionError, self.conn.resultOf, d)

    def test_noResult(self) -> None:
        """
        A call the server never answers raises L{PumpError}, and the
        L{Deferred} can still be asked again later.
        """
        d = self.root.callRemote("hold")
        error = self.assertRaises(PumpError, self.conn.resultOf, d)
        self.assertIn("no result", str(error))
        self.conn.dropConnection()
        self.assertTrue(self.conn.failureOf(d).check(pb.PBConnectionLost))

    def test_coroutine(self) -> None:
        """
        L{PBConnection.resultOf} runs a coroutine to its result.
        """

        async def twice() -> int:
            once = await self.root.callRemote("echo", 21)
            return int(once) * 2

        self.assertEqual(self.conn.resultOf(twice()), 42)


class LoginTests(SynchronousTestCase):
    """
    Tests for L{PBConnection.login} against a portal.
    """

    def connect(self, serverFactory: Factory) -> PBConnection:
        conn = connectedPair(serverFactory, pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        return conn

    def test_goodPasswordStock(self) -> None:
        """
        The right password on a stock server yields the avatar's reference.
        """
        conn = self.connect(pb.PBServerFactory(portal()))
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        self.assertEqual(conn.resultOf(avatar.callRemote("whoami")), b"alice")

    def test_goodPasswordPbext(self) -> None:
        """
        The right password on a pbext server yields the avatar's reference.
        """
        conn = self.connect(pbext.PBServerFactory(portal()))
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        self.assertEqual(conn.resultOf(avatar.callRemote("whoami")), b"alice")

    def test_badPassword(self) -> None:
        """
        A wrong password fails with L{UnauthorizedLogin}, checked with
        C{failure.check}; L{PBConnection.login} raises it as
        L{pb.RemoteError}.
        """
        conn = self.connect(pb.PBServerFactory(portal()))
        client = conn.clientFactory
        failure = conn.failureOf(
            client.login(UsernamePassword(b"alice", b"wrong"))  # type: ignore[attr-defined]
        )
        self.assertTrue(failure.check(UnauthorizedLogin))
        error = self.assertRaises(
            pb.RemoteError, conn.login, UsernamePassword(b"alice", b"wrong")
        )
        self.assertEqual(error.remoteType, b"twisted.cred.error.UnauthorizedLogin")
        self.flushLoggedErrors(UnauthorizedLogin)


class DisconnectTests(SynchronousTestCase):
    """
    Tests for closing and losing a L{PBConnection}.
    """

    def setUp(self) -> None:
        self.client = RecordingClientFactory()
        self.conn = connectedPair(pb.PBServerFactory(Echoer()), self.client)
        self.addCleanup(self.conn.disconnect)
        self.root = self.conn.rootObject()

    def test_disconnectNotifies(self) -> None:
        """
        L{PBConnection.disconnect} closes cleanly: C{notifyOnDisconnect}
        callbacks run on both sides and both brokers see
        L{ConnectionDone}.
        """
        notified: list[str] = []
        self.root.notifyOnDisconnect(lambda ref: notified.append("client"))
        assert self.conn.serverBroker is not None
        self.conn.serverBroker.notifyOnDisconnect(lambda: notified.append("server"))
        self.conn.disconnect()
        self.assertEqual(sorted(notified), ["client", "server"])
        self.assertFalse(self.conn.connected)
        self.assertTrue(self.conn.clientBroker.disconnected)  # type: ignore[union-attr]
        self.assertTrue(self.conn.serverBroker.disconnected)
        self.client.events[-1][1].trap(ConnectionDone)

    def test_disconnectByServer(self) -> None:
        """
        C{disconnect(byServer=True)} closes from the server's side.
        """
        lost: list[Failure] = []
        self.conn.clientBroker.notifyOnDisconnect(lambda: lost.append(1))  # type: ignore[union-attr, arg-type]
        self.conn.disconnect(byServer=True)
        self.assertEqual(lost, [1])
        self.assertFalse(self.conn.connected)

    def test_disconnectTwice(self) -> None:
        """
        L{PBConnection.disconnect} may be called again, and after
        L{PBConnection.dropConnection}.
        """
        self.conn.dropConnection()
        self.conn.disconnect()
        self.conn.disconnect()
        self.assertEqual(
            [name for name, _ in self.client.events].count("clientConnectionLost"), 1
        )

    def test_dropConnection(self) -> None:
        """
        L{PBConnection.dropConnection} fails outstanding calls with
        L{pb.PBConnectionLost} and tells the client factory
        L{ConnectionLost}.
        """
        d = self.root.callRemote("echo", 1)
        self.conn.dropConnection()
        self.assertTrue(self.conn.failureOf(d).check(pb.PBConnectionLost))
        self.client.events[-1][1].trap(ConnectionLost)

    def test_dropDiscardsBytes(self) -> None:
        """
        Bytes not yet delivered when the connection drops are never
        delivered.
        """
        self.root.callRemote("echo", 1).addErrback(lambda f: None)
        self.assertNotEqual(self.conn.clientToServer.pending(), b"")
        self.conn.dropConnection()
        self.assertEqual(self.conn.clientToServer.pending(), b"")

    def test_disconnectWhileHeld(self) -> None:
        """
        When held bytes keep the clean close from arriving,
        L{PBConnection.disconnect} drops the connection instead.
        """
        self.conn.clientToServer.hold()
        self.conn.disconnect()
        self.assertFalse(self.conn.connected)
        self.client.events[-1][1].trap(ConnectionLost)

    def test_contextManager(self) -> None:
        """
        Leaving a C{with} block disconnects.
        """
        with connectedPair(pb.PBServerFactory(Echoer()), pb.PBClientFactory()) as conn:
            self.assertTrue(conn.connected)
        self.assertFalse(conn.connected)

    def test_abortConnection(self) -> None:
        """
        A protocol's C{abortConnection} ends the connection at the next
        pump: that side sees L{ConnectionAborted}, the peer
        L{ConnectionLost}.
        """
        reasons: dict[str, Failure] = {}
        broker = self.conn.serverBroker
        assert broker is not None
        original = broker.connectionLost

        def serverLost(reason: Failure) -> None:
            reasons["server"] = reason
            original(reason)

        broker.connectionLost = serverLost  # type: ignore[method-assign]
        self.conn.serverTransport.abortConnection()
        self.conn.pump()
        reasons["server"].trap(ConnectionAborted)
        self.client.events[-1][1].trap(ConnectionLost)

    def test_writeAfterClose(self) -> None:
        """
        Bytes written after C{loseConnection} are not sent.
        """
        self.conn.clientTransport.loseConnection()
        before = self.conn.clientToServer.pending()
        self.conn.clientTransport.write(b"late")
        self.assertEqual(self.conn.clientToServer.pending(), before)

    def test_reconnect(self) -> None:
        """
        A client factory that calls C{connector.connect()} again after
        losing the connection gets new brokers at the next pump.
        """
        clock = task.Clock()

        class Reconnecting(pb.PBClientFactory):
            def clientConnectionLost(
                self, connector: Any, reason: Failure, reconnecting: int = 0
            ) -> None:
                super().clientConnectionLost(connector, reason, reconnecting=1)
                clock.callLater(5, connector.connect)

        conn = connectedPair(pb.PBServerFactory(Echoer()), Reconnecting(), clock=clock)
        first = conn.serverBroker
        conn.dropConnection()
        self.assertFalse(conn.connected)
        conn.advance(5)
        self.assertTrue(conn.connected)
        self.assertIsNot(conn.serverBroker, first)
        self.assertEqual(conn.resultOf(conn.rootObject().callRemote("echo", 3)), 3)
        conn.clientFactory.clientConnectionLost = (  # type: ignore[method-assign]
            lambda *a, **kw: None
        )
        conn.disconnect()
        self.assertFalse(conn.connected)


class FaultTests(SynchronousTestCase):
    """
    Tests for holding, delaying, corrupting and injecting bytes.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.conn = connectedPair(
            pb.PBServerFactory(Echoer(self.clock)),
            pb.PBClientFactory(),
            clock=self.clock,
        )
        self.addCleanup(self.conn.disconnect)
        self.root = self.conn.rootObject()

    def test_holdAndRelease(self) -> None:
        """
        Held bytes wait, however much the connection is pumped, and arrive
        after L{Direction.release}.
        """
        self.conn.clientToServer.hold()
        d = self.root.callRemote("echo", "held")
        self.conn.pump()
        self.assertNoResult(d)
        self.assertIn(b"held", self.conn.clientToServer.pending())
        self.conn.clientToServer.release()
        self.assertEqual(self.conn.resultOf(d), "held")

    def test_delay(self) -> None:
        """
        Delayed bytes arrive once the clock has moved by the delay.
        """
        self.conn.clientToServer.delay(5)
        d = self.root.callRemote("echo", "late")
        self.conn.pump()
        self.assertNoResult(d)
        self.conn.advance(4)
        self.assertNoResult(d)
        self.conn.advance(1)
        self.assertEqual(self.successResultOf(d), "late")

    def test_delayKeepsOrder(self) -> None:
        """
        Lowering the delay does not let later bytes overtake earlier ones.
        """
        self.conn.serverToClient.delay(10)
        first = self.root.callRemote("echo", 1)
        self.conn.pump()
        self.conn.serverToClient.delay(0)
        second = self.root.callRemote("echo", 2)
        self.conn.pump()
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.conn.advance(10)
        self.assertEqual(self.successResultOf(first), 1)
        self.assertEqual(self.successResultOf(second), 2)

    def test_negativeDelay(self) -> None:
        """
        A negative delay is refused.
        """
        self.assertRaises(ValueError, self.conn.clientToServer.delay, -1)

    def test_corruptNext(self) -> None:
        """
        A corrupted chunk makes the receiving broker drop the connection:
        outstanding calls fail with L{pb.PBConnectionLost}.
        """
        seen: list[bytes] = []

        def corrupt(chunk: bytes) -> bytes:
            seen.append(chunk)
            return b"\x01\xff" + chunk

        self.conn.clientToServer.corruptNext(corrupt)
        d = self.root.callRemote("echo", "x")
        self.assertTrue(self.conn.failureOf(d).check(pb.PBConnectionLost))
        self.assertEqual(len(seen), 1)
        self.assertFalse(self.conn.connected)
        self.assertTrue(self.flushLoggedErrors())

    def test_corruptOnlyNext(self) -> None:
        """
        Only the next chunk is corrupted; an identity corruption leaves the
        call working.
        """
        seen: list[bytes] = []
        self.conn.serverToClient.corruptNext(lambda chunk: seen.append(chunk) or chunk)
        self.assertEqual(self.conn.resultOf(self.root.callRemote("echo", 1)), 1)
        self.assertEqual(self.conn.resultOf(self.root.callRemote("echo", 2)), 2)
        self.assertEqual(len(seen), 1)

    def test_sendRawToServer(self) -> None:
        """
        Raw bytes from a hostile peer reach the server broker, which drops
        the connection on garbage.
        """
        lost: list[int] = []
        assert self.conn.serverBroker is not None
        self.conn.serverBroker.notifyOnDisconnect(lambda: lost.append(1))
        self.conn.sendRawToServer(b"\x01\xff")
        self.conn.pump()
        self.assertEqual(lost, [1])
        self.assertTrue(self.flushLoggedErrors())

    def test_sendRawToClient(self) -> None:
        """
        Raw bytes queued for the client reach the client broker.
        """
        received: list[bytes] = []
        broker = self.conn.clientBroker
        assert broker is not None
        original = broker.dataReceived

        def dataReceived(data: bytes) -> None:
            received.append(data)
            original(data)

        broker.dataReceived = dataReceived  # type: ignore[method-assign]
        self.conn.sendRawToClient(b"\x01\xff")
        self.conn.pump()
        self.assertEqual(received, [b"\x01\xff"])
        self.assertFalse(self.conn.connected)
        self.assertTrue(self.flushLoggedErrors())

    def test_pauseReading(self) -> None:
        """
        A transport paused with C{pauseProducing} gets nothing until
        C{resumeProducing}.
        """
        self.conn.serverTransport.pauseProducing()
        d = self.root.callRemote("echo", 1)
        self.conn.pump()
        self.assertNoResult(d)
        self.conn.serverTransport.resumeProducing()
        self.assertEqual(self.conn.resultOf(d), 1)


class ClockTests(SynchronousTestCase):
    """
    Tests for L{PBConnection.advance} and the connection's clock.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.conn = connectedPair(
            pbext.PBServerFactory(Echoer(self.clock)),
            pbext.PBClientFactory(),
            clock=self.clock,
        )
        self.addCleanup(self.conn.disconnect)
        self.root = self.conn.rootObject()

    def test_defaultClock(self) -> None:
        """
        Without a clock argument the connection makes its own
        L{task.Clock}.
        """
        conn = connectedPair(pb.PBServerFactory(Echoer()), pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        self.assertIsInstance(conn.clock, task.Clock)
        self.assertIsNot(conn.clock, self.clock)

    def test_advance(self) -> None:
        """
        L{PBConnection.advance} moves the clock, runs timed calls and pumps
        what they send.
        """
        d = self.root.callRemote("later", 10)
        self.assertRaises(PumpError, self.conn.resultOf, d)
        self.conn.advance(10)
        self.assertEqual(self.clock.seconds(), 10)
        self.assertEqual(self.successResultOf(d), "later")

    def test_interleaved(self) -> None:
        """
        Within one L{PBConnection.advance}, bytes that fall due before a
        timed call are delivered before it runs.
        """
        self.conn.serverToClient.delay(10)
        d = self.root.callRemote("echo", 1)
        answered: list[bool] = []
        self.clock.callLater(30, lambda: answered.append(bool(d.called)))
        self.conn.advance(60)
        self.assertEqual(answered, [True])
        self.assertEqual(self.clock.seconds(), 60)

    def test_negative(self) -> None:
        """
        The clock cannot be moved back.
        """
        self.assertRaises(ValueError, self.conn.advance, -1)

    def test_endlessTimers(self) -> None:
        """
        A timer that reschedules itself forever within the span raises
        L{PumpError} instead of looping.
        """
        self.conn.maxRounds = 50
        call = task.LoopingCall(lambda: None)
        call.clock = self.clock
        call.start(0.001)
        self.addCleanup(call.stop)
        self.assertRaises(PumpError, self.conn.advance, 1)


class PumpTests(SynchronousTestCase):
    """
    Tests for L{PBConnection.pump}.
    """

    def test_endless(self) -> None:
        """
        Protocols that never stop talking make L{PBConnection.pump} raise
        L{PumpError} after L{PBConnection.maxRounds} rounds.
        """

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[union-attr]

        class Starter(Echo):
            def connectionMade(self) -> None:
                self.transport.write(b"ping")  # type: ignore[union-attr]

        conn = connectedPair(
            Factory.forProtocol(Echo),
            ClientFactory.forProtocol(Starter),
            handshake=False,
        )
        self.addCleanup(conn.dropConnection)
        conn.maxRounds = 20
        error = self.assertRaises(PumpError, conn.pump)
        self.assertIn("20 rounds", str(error))

    def test_reentrant(self) -> None:
        """
        Pumping from code run by a pump raises L{PumpError}.
        """
        conn = connectedPair(pb.PBServerFactory(Echoer()), pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        errors: list[Failure] = []
        d = conn.rootObject().callRemote("echo", 1)
        d.addCallback(lambda _: conn.pump()).addErrback(errors.append)
        conn.pump()
        self.assertEqual(len(errors), 1)
        errors[0].trap(PumpError)

    def test_flush(self) -> None:
        """
        C{flush} is another name for C{pump}.
        """
        self.assertEqual(PBConnection.flush, PBConnection.pump)

    def test_protocolError(self) -> None:
        """
        An exception raised by a protocol's C{dataReceived} is logged and
        ends the connection, as the reactor does: that side gets the
        failure as the reason, the peer L{ConnectionDone}.
        """
        reasons: list[Failure] = []

        class Broken(Protocol):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError()

        class Client(ClientFactory):
            protocol = Broken

            def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
                reasons.append(reason)

        conn = connectedPair(pb.PBServerFactory(Echoer()), Client(), handshake=False)
        broker = conn.serverBroker
        assert broker is not None
        original = broker.connectionLost

        def serverLost(reason: Failure) -> None:
            reasons.append(reason)
            original(reason)

        broker.connectionLost = serverLost  # type: ignore[method-assign]
        conn.pump()
        self.assertFalse(conn.connected)
        serverReason, clientReason = reasons
        serverReason.trap(ConnectionDone)
        clientReason.trap(ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class PagingTests(SynchronousTestCase):
    """
    Tests for producers registered on a L{MemoryTransport}.
    """

    def test_pager(self) -> None:
        """
        PB's pull-producer paging (L{twisted.spread.util.StringPager})
        delivers every page.
        """
        from twisted.spread import util

        class Collector(pb.Referenceable):
            def __init__(self) -> None:
                self.pages: list[bytes] = []
                self.done = False

            def remote_gotPage(self, page: bytes) -> None:
                self.pages.append(page)

            def remote_endedPaging(self) -> None:
                self.done = True

        class Sender(pb.Root):
            def remote_send(self, collector: pb.RemoteReference) -> None:
                util.StringPager(collector, b"x" * 10_000, chunkSize=1000)

        conn = connectedPair(pb.PBServerFactory(Sender()), pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        collector = Collector()
        conn.resultOf(conn.rootObject().callRemote("send", collector))
        conn.pump()
        self.assertTrue(collector.done)
        self.assertEqual(b"".join(collector.pages), b"x" * 10_000)


class TeardownTests(SynchronousTestCase):
    """
    Tests that a torn-down connection leaves nothing behind.
    """

    def test_nothingPending(self) -> None:
        """
        After L{PBConnection.disconnect}, no bytes wait, no call is
        scheduled on the clock or on the global reactor, and both factories
        are stopped.
        """
        from twisted.internet import reactor

        before = list(reactor.getDelayedCalls())  # type: ignore[attr-defined]
        server = pbext.PBServerFactory(portal())
        client = pbext.PBClientFactory()
        conn = connectedPair(server, client)
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        conn.resultOf(avatar.callRemote("whoami"))
        conn.disconnect()
        self.assertEqual(conn.clientToServer.pending(), b"")
        self.assertEqual(conn.serverToClient.pending(), b"")
        self.assertEqual(conn.clock.getDelayedCalls(), [])
        self.assertEqual(list(reactor.getDelayedCalls()), before)  # type: ignore[attr-defined]
        self.assertEqual((server.numPorts, client.numPorts), (0, 0))
        self.assertTrue(conn.serverBroker.disconnected)  # type: ignore[union-attr]
        self.assertTrue(conn.clientBroker.disconnected)  # type: ignore[union-attr]


class MemoryEndpointTests(SynchronousTestCase):
    """
    L{pbext.testing.memoryEndpoint} connects code that takes an endpoint to
    a server factory in memory.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.endpoint = memoryEndpoint(
            pbext.PBServerFactory(pb.Root()), clock=self.clock
        )
        self.addCleanup(self.endpoint.disconnect)

    def test_interface(self) -> None:
        """
        It provides L{IStreamClientEndpoint}.
        """
        self.assertTrue(verifyObject(IStreamClientEndpoint, self.endpoint))

    def test_connect(self) -> None:
        """
        L{pbext.client.connect} gets the root through it once pumped, on the
        endpoint's clock, and each connection has a client port of its own.
        """
        d = connect(self.clock, self.endpoint, timeout=5)
        self.assertNoResult(d)
        self.endpoint.pump()
        root = self.successResultOf(d)
        self.assertIsInstance(root, pb.RemoteReference)
        second = connect(self.clock, self.endpoint, timeout=None)
        self.endpoint.pump()
        self.successResultOf(second)
        ports = [c.clientAddress.port for c in self.endpoint.connections]
        self.assertEqual(len(set(ports)), 2)

    def test_refuseStallAccept(self) -> None:
        """
        C{refuse} fails the next attempts with L{ConnectionRefusedError};
        C{stall} leaves them pending, so the caller's timeout fires;
        C{accept} connects again.
        """
        self.endpoint.refuse()
        self.failureResultOf(connect(self.clock, self.endpoint), ConnectionRefusedError)
        self.endpoint.stall()
        d = connect(self.clock, self.endpoint, timeout=5)
        self.endpoint.advance(5)
        self.failureResultOf(d, TimeoutError)
        self.endpoint.accept()
        d = connect(self.clock, self.endpoint)
        self.endpoint.pump()
        self.successResultOf(d)
        self.assertEqual(self.endpoint.attempts, 3)
        self.assertEqual(len(self.endpoint.connections), 1)
