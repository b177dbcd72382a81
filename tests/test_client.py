"""
Tests for L{pbext.client}: L{PBClientFactory}, L{connect} and
L{PBClientService}.

The timing logic runs in memory on a L{Clock}, against stock
L{twisted.spread.pb} servers connected through an in-memory endpoint; the
end-to-end tests run a real C{twistd pbserver} subprocess, a stock PB
server in this process, and the documentation's examples.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints, protocol, reactor, utils
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    ProcessExitedAlready,
    TimeoutError,
)
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.test import iosim
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

import pbext.broker
from pbext.client import PBClientFactory, PBClientService, connect
from pbext.demo import DemoRealm, DemoRoot
from tests._process import TwistdProcess, _environment, startPBServer, startTwistd

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "examples")

ALICE = UsernamePassword(b"alice", b"secret")


def checker() -> InMemoryUsernamePasswordDatabaseDontUse:
    """
    A checker knowing alice, with the bytes PB logins carry.
    """
    users = InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser(b"alice", b"secret")
    return users


def stockLoginServer() -> pb.PBServerFactory:
    """
    A stock L{pb.PBServerFactory} serving the demo realm to alice.
    """
    return pb.PBServerFactory(Portal(DemoRealm(), [checker()]))


class SilentProtocol(protocol.Protocol):
    """
    A server that accepts connections and never says a word.
    """


class HangUpProtocol(protocol.Protocol):
    """
    A server that closes every connection at once.
    """

    def connectionMade(self) -> None:
        self.transport.loseConnection()


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    A client endpoint whose connection attempts the test completes by hand,
    connecting them in memory to a server factory.

    @ivar attempts: pending attempts, oldest first.
    @ivar cancelled: how many attempts were cancelled.
    """

    def __init__(self, clock: Clock, serverFactory: IProtocolFactory) -> None:
        self.clock = clock
        self.serverFactory = serverFactory
        self.attempts: list[tuple[Deferred[Any], IProtocolFactory]] = []
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        attempt: Deferred[Any] = Deferred(self._cancel)
        self.attempts.append((attempt, factory))
        return attempt

    def _cancel(self, attempt: Deferred[Any]) -> None:
        self.attempts = [(a, f) for a, f in self.attempts if a is not attempt]
        self.cancelled += 1

    def succeed(self, serverFactory: IProtocolFactory | None = None) -> iosim.IOPump:
        """
        Connect the oldest attempt and pump until nothing moves.
        """
        attempt, factory = self.attempts.pop(0)
        client = factory.buildProtocol(iosim.FakeAddress())
        server = (serverFactory or self.serverFactory).buildProtocol(
            iosim.FakeAddress()
        )
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            greet=False,
            clock=self.clock,
        )
        attempt.callback(client)
        pump.flush()
        return pump

    def fail(self, reason: Exception | None = None) -> None:
        """
        Fail the oldest attempt, by default as refused.
        """
        attempt, factory = self.attempts.pop(0)
        attempt.errback(reason if reason is not None else ConnectionRefusedError())


def serverClose(pump: iosim.IOPump) -> None:
    """
    Close a connection from the server's side and deliver the news.
    """
    pump.serverIO.loseConnection()
    pump.flush()


class PBClientFactoryTests(SynchronousTestCase):
    """
    L{PBClientFactory} is a drop-in L{pb.PBClientFactory} that does not
    leave requests hanging when an endpoint's attempt fails.
    """

    def test_dropIn(self) -> None:
        """
        It is a L{pb.PBClientFactory} taking the same positional arguments.
        """
        factory = PBClientFactory(True, pb.globalSecurity, classicLogin=False)
        self.assertIsInstance(factory, pb.PBClientFactory)
        self.assertTrue(factory.unsafeTracebacks)
        self.assertIs(factory.security, pb.globalSecurity)
        self.assertEqual(factory.pbextOptions, {"classicLogin": False})

    def test_brokerOptions(self) -> None:
        """
        The broker options reach every broker the factory builds.
        """
        clock = Clock()
        factory = PBClientFactory(
            reactor=clock, callTimeout=3, keepaliveInterval=5, keepaliveTimeout=2
        )
        broker = factory.buildProtocol(None)
        self.assertIsInstance(broker, pbext.broker.Broker)
        self.assertIs(broker.factory, factory)
        self.assertTrue(broker.isClient)
        self.assertEqual(
            (broker.callTimeout, broker.keepaliveInterval, broker.keepaliveTimeout),
            (3, 5, 2),
        )

    def test_stockBrokerClass(self) -> None:
        """
        A factory whose C{protocol} is a stock broker class builds one.
        """

        class Stock(PBClientFactory):
            protocol = pb.Broker

        broker = Stock().buildProtocol(None)
        self.assertIs(type(broker), pb.Broker)
        self.assertTrue(broker.isClient)

    def test_stopFactoryFailsPending(self) -> None:
        """
        When every connection attempt ended (C{doStop}, which endpoints do
        call) without a PB connection, pending L{getRootObject} and L{login}
        requests fail with L{ConnectError} instead of hanging
        (twisted#4976).
        """
        factory = PBClientFactory()
        factory.doStart()
        root = factory.getRootObject()
        login = factory.login(ALICE)
        factory.doStop()
        self.failureResultOf(root, ConnectError)
        self.failureResultOf(login, ConnectError)

    def test_stopFactoryNothingPending(self) -> None:
        """
        With no pending request, stopping the factory changes nothing: a
        request made afterwards waits for the next connection.
        """
        factory = PBClientFactory()
        factory.doStart()
        factory.doStop()
        self.assertNoResult(factory.getRootObject())

    def test_loginUsesLoginOnRoot(self) -> None:
        """
        L{PBClientFactory.login} logs in through
        L{PBClientFactory.pbextLoginOnRoot}, the one method a stronger login
        replaces.
        """
        calls = []

        class Recording(PBClientFactory):
            def pbextLoginOnRoot(self, root: Any, credentials: Any, client: Any = None):
                calls.append((root, credentials, client))
                return defer.succeed("avatar")

        factory = Recording(reactor=Clock())
        client, server, pump = iosim.connectedServerAndClient(
            lambda: stockLoginServer().buildProtocol(None),
            lambda: factory.buildProtocol(None),
        )
        self.assertEqual(self.successResultOf(factory.login(ALICE, "mind")), "avatar")
        [(root, credentials, mind)] = calls
        self.assertIsInstance(root, pb.RemoteReference)
        self.assertIs(credentials, ALICE)
        self.assertEqual(mind, "mind")

    def test_loginClassic(self) -> None:
        """
        L{PBClientFactory.login} still speaks PB's classic login to a stock
        server, through the C{_cbSendUsername} hook subclasses override.
        """
        hooked = []

        class Hooked(PBClientFactory):
            def _cbSendUsername(self, root, username, password, client):
                hooked.append(username)
                return super()._cbSendUsername(root, username, password, client)

        factory = Hooked(reactor=Clock())
        client, server, pump = iosim.connectedServerAndClient(
            lambda: stockLoginServer().buildProtocol(None),
            lambda: factory.buildProtocol(None),
        )
        login = factory.login(ALICE)
        pump.flush()
        avatar = self.successResultOf(login)
        whoami = avatar.callRemote("whoami")
        pump.flush()
        self.assertEqual(self.successResultOf(whoami), "alice")
        self.assertEqual(hooked, [b"alice"])

    def test_loginAnonymous(self) -> None:
        """
        Anonymous credentials take the anonymous login path.
        """
        users = InMemoryUsernamePasswordDatabaseDontUse()
        from twisted.cred.checkers import AllowAnonymousAccess

        server = pb.PBServerFactory(
            Portal(DemoRealm(), [users, AllowAnonymousAccess()])
        )
        factory = PBClientFactory(reactor=Clock())
        client, _, pump = iosim.connectedServerAndClient(
            lambda: server.buildProtocol(None), lambda: factory.buildProtocol(None)
        )
        login = factory.login(Anonymous())
        pump.flush()
        avatar = self.successResultOf(login)
        whoami = avatar.callRemote("whoami")
        pump.flush()
        self.assertEqual(self.successResultOf(whoami), "anonymous")


class ConnectTests(SynchronousTestCase):
    """
    L{connect} connects, gets the root or logs in, and fails with the real
    reason, in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint(self.clock, stockLoginServer())

    def test_root(self) -> None:
        """
        Without credentials, L{connect} fires with the root object.
        """
        self.endpoint.serverFactory = pb.PBServerFactory(DemoRoot())
        d = connect(self.clock, self.endpoint)
        self.assertNoResult(d)
        pump = self.endpoint.succeed()
        root = self.successResultOf(d)
        echo = root.callRemote("echo", [1, "two"])
        pump.flush()
        self.assertEqual(self.successResultOf(echo), [1, "two"])

    def test_login(self) -> None:
        """
        With credentials, L{connect} logs in and fires with the avatar;
        no timer is left behind.
        """
        d = connect(self.clock, self.endpoint, ALICE)
        pump = self.endpoint.succeed()
        avatar = self.successResultOf(d)
        whoami = avatar.callRemote("whoami")
        pump.flush()
        self.assertEqual(self.successResultOf(whoami), "alice")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_mind(self) -> None:
        """
        The C{mind} reaches the server's realm.
        """
        minds = []

        class Realm(DemoRealm):
            def requestAvatar(self, avatarId, mind, *interfaces):
                minds.append(mind)
                return super().requestAvatar(avatarId, mind, *interfaces)

        server = pb.PBServerFactory(Portal(Realm(), [checker()]))
        d = connect(self.clock, self.endpoint, ALICE, mind=pb.Referenceable())
        self.endpoint.succeed(server)
        self.successResultOf(d)
        [mind] = minds
        self.assertIsInstance(mind, pb.RemoteReference)

    def test_wrongPassword(self) -> None:
        """
        A refused login fails with L{UnauthorizedLogin}, after the
        connection was closed.
        """
        d = connect(self.clock, self.endpoint, UsernamePassword(b"alice", b"bad"))
        pump = self.endpoint.succeed()
        failure = self.failureResultOf(d)
        self.assertTrue(failure.check(UnauthorizedLogin), failure)
        self.assertTrue(pump.clientIO.disconnected)
        # The stock server logs each refused login as an error.
        self.assertEqual(len(self.flushLoggedErrors(UnauthorizedLogin)), 1)

    def test_refused(self) -> None:
        """
        A refused connection fails L{connect} at once with
        L{ConnectionRefusedError}; no timer is left behind.
        """
        d = connect(self.clock, self.endpoint)
        self.endpoint.fail()
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lostBeforeHandshake(self) -> None:
        """
        A connection closed before the PB handshake finished fails
        L{connect} with the reason it was closed (as a TLS error would be).
        """
        d = connect(self.clock, self.endpoint)
        attempt, factory = self.endpoint.attempts.pop(0)
        client = factory.buildProtocol(None)
        transport = iosim.makeFakeClient(client)
        client.makeConnection(transport)
        attempt.callback(client)
        self.assertNoResult(d)
        client.connectionLost(Failure(ConnectionLost("certificate rejected")))
        failure = self.failureResultOf(d, ConnectionLost)
        self.assertIn("certificate rejected", str(failure.value))

    def test_serverHangsUp(self) -> None:
        """
        A server that closes the connection at once fails L{connect} with
        L{ConnectionDone}.
        """
        d = connect(self.clock, self.endpoint)
        self.endpoint.succeed(protocol.Factory.forProtocol(HangUpProtocol))
        self.failureResultOf(d, ConnectionDone)

    def test_timeout(self) -> None:
        """
        A server that never answers the handshake makes L{connect} fail with
        L{defer.TimeoutError} after C{timeout} seconds, and the connection
        is closed.
        """
        d = connect(self.clock, self.endpoint, timeout=10)
        pump = self.endpoint.succeed(protocol.Factory.forProtocol(SilentProtocol))
        self.clock.advance(9)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.failureResultOf(d, defer.TimeoutError)
        pump.flush()
        self.assertTrue(pump.clientIO.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noTimeout(self) -> None:
        """
        With C{timeout=None}, nothing is scheduled.
        """
        d = connect(self.clock, self.endpoint, timeout=None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(d)

    def test_cancelWhileConnecting(self) -> None:
        """
        Cancelling before the connection is made cancels the endpoint's
        attempt and fails with L{CancelledError}.
        """
        d = connect(self.clock, self.endpoint)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.endpoint.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelWhileLoggingIn(self) -> None:
        """
        Cancelling after the connection was made closes it.
        """
        d = connect(self.clock, self.endpoint, ALICE)
        pump = self.endpoint.succeed(protocol.Factory.forProtocol(SilentProtocol))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        pump.flush()
        self.assertTrue(pump.clientIO.disconnected)

    def test_factory(self) -> None:
        """
        The given factory builds the broker, and its own
        L{PBClientFactory.getRootObject} works on that connection.
        """
        factory = PBClientFactory(reactor=self.clock)
        self.endpoint.serverFactory = pb.PBServerFactory(DemoRoot())
        d = connect(self.clock, self.endpoint, factory=factory)
        self.endpoint.succeed()
        root = self.successResultOf(d)
        self.assertIs(root.broker.factory, factory)
        self.assertIsInstance(root.broker, pbext.broker.Broker)
        self.assertIsInstance(
            self.successResultOf(factory.getRootObject()), pb.RemoteReference
        )


class HookRecorder:
    """
    Records the service's C{onConnect} and C{onDisconnect} calls.
    """

    def __init__(self) -> None:
        self.connected: list[pb.RemoteReference] = []
        self.disconnected: list[Failure] = []
        self._waiting: dict[str, list[Deferred[Any]]] = {"connect": [], "lost": []}

    def onConnect(self, reference: pb.RemoteReference) -> None:
        self.connected.append(reference)
        self._fire("connect", reference)

    def onDisconnect(self, reason: Failure) -> None:
        self.disconnected.append(reason)
        self._fire("lost", None)

    def _fire(self, kind: str, value: Any) -> None:
        waiting, self._waiting[kind] = self._waiting[kind], []
        for d in waiting:
            d.callback(value)

    def nextConnect(self) -> Deferred[pb.RemoteReference]:
        d: Deferred[pb.RemoteReference] = Deferred()
        self._waiting["connect"].append(d)
        return d

    def nextLoss(self) -> Deferred[None]:
        """
        Fire (with L{None}; the reason is in C{disconnected}) at the next
        loss.
        """
        d: Deferred[None] = Deferred()
        self._waiting["lost"].append(d)
        return d


class PBClientServiceTests(SynchronousTestCase):
    """
    L{PBClientService} keeps a logged-in reference, in memory on a
    L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint(self.clock, stockLoginServer())
        self.hooks = HookRecorder()
        self.events: list[dict[str, Any]] = []

    def service(self, credentials: Any = ALICE, **kwargs: Any) -> PBClientService:
        kwargs.setdefault("onConnect", self.hooks.onConnect)
        kwargs.setdefault("onDisconnect", self.hooks.onDisconnect)
        service = PBClientService(
            self.endpoint, credentials, clock=self.clock, **kwargs
        )
        service._log = Logger(observer=self.events.append)
        return service

    def delay(self) -> float:
        """
        How long until the only pending timer fires.
        """
        [call] = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def eventsOf(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("pbextEvent") == kind]

    def test_connectsAndLogsIn(self) -> None:
        """
        Once started, the service connects, logs in, passes the avatar to
        C{onConnect} and hands it out through C{whenConnected}, at once.
        """
        service = self.service()
        self.assertEqual(service.state, "stopped")
        service.startService()
        self.assertEqual(service.state, "connecting")
        waiting = service.whenConnected()
        pump = self.endpoint.succeed()
        [avatar] = self.hooks.connected
        self.assertIs(self.successResultOf(waiting), avatar)
        self.assertIs(self.successResultOf(service.whenConnected()), avatar)
        self.assertEqual(service.state, "connected")
        self.assertIsNone(service.lastFailure)
        whoami = avatar.callRemote("whoami")
        pump.flush()
        self.assertEqual(self.successResultOf(whoami), "alice")
        self.assertEqual(len(self.eventsOf("connected")), 1)
        # The attempt's timeout was cancelled.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_root(self) -> None:
        """
        Without credentials the service hands out the root object.
        """
        self.endpoint.serverFactory = pb.PBServerFactory(DemoRoot())
        service = self.service(None)
        service.startService()
        pump = self.endpoint.succeed()
        root = self.successResultOf(service.whenConnected())
        echo = root.callRemote("echo", "hi")
        pump.flush()
        self.assertEqual(self.successResultOf(echo), "hi")

    def test_reconnectsAndLogsInAgain(self) -> None:
        """
        When the connection is lost, C{onDisconnect} gets the reason, the
        service waits, connects again and logs in again, and C{onConnect}
        gets the new avatar.
        """
        service = self.service()
        service.startService()
        serverClose(self.endpoint.succeed())
        [reason] = self.hooks.disconnected
        self.assertTrue(reason.check(ConnectionDone))
        self.assertIs(service.lastFailure, reason)
        self.assertEqual(service.state, "waiting")
        self.assertEqual(len(self.eventsOf("disconnected")), 1)
        waiting = service.whenConnected()
        self.assertNoResult(waiting)
        self.clock.advance(self.delay())
        self.assertEqual(service.state, "connecting")
        pump = self.endpoint.succeed()
        first, second = self.hooks.connected
        self.assertIsNot(first, second)
        self.assertIs(self.successResultOf(waiting), second)
        whoami = second.callRemote("whoami")
        pump.flush()
        self.assertEqual(self.successResultOf(whoami), "alice")
        self.assertEqual(service.state, "connected")

    def test_backoffWithJitter(self) -> None:
        """
        By default, failed attempts are retried after 1.5**n seconds (at
        most a minute) plus up to one second of random jitter.
        """
        service = self.service()
        service.startService()
        for n in range(1, 16):
            self.endpoint.fail()
            self.assertEqual(service.state, "waiting")
            self.assertTrue(service.lastFailure.check(ConnectionRefusedError))
            base = min(1.5**n, 60.0)
            delay = self.delay()
            self.assertTrue(base <= delay < base + 1, (n, delay))
            self.clock.advance(delay)
            self.assertEqual(service.state, "connecting")

    def test_retryPolicy(self) -> None:
        """
        C{retryPolicy} is given the number of attempts that failed since the
        last successful login.  A connection that is made but never leads
        to a login does not reset it; a login does.
        """
        service = self.service(retryPolicy=lambda n: 10.0 * n, timeout=5)
        service.startService()
        self.endpoint.fail()
        self.assertEqual(self.delay(), 10)
        self.clock.advance(10)
        pump = self.endpoint.succeed(protocol.Factory.forProtocol(SilentProtocol))
        self.clock.advance(5)
        pump.flush()
        self.assertTrue(service.lastFailure.check(TimeoutError))
        self.assertEqual(self.delay(), 20)
        self.clock.advance(20)
        serverClose(self.endpoint.succeed())
        self.assertEqual(self.delay(), 10)

    def test_refusedLoginBacksOffLong(self) -> None:
        """
        A refused login is not retried in a tight loop: the service closes
        the connection, records the failure, logs a warning and waits
        C{refusedRetryPolicy} (by default two minutes, then four...).
        """
        service = self.service(UsernamePassword(b"alice", b"wrong"))
        service.startService()
        failing = service.whenConnected(failAfterFailures=1)
        pump = self.endpoint.succeed()
        self.assertTrue(pump.clientIO.disconnected)
        self.assertTrue(service.lastFailure.check(UnauthorizedLogin))
        self.assertTrue(self.failureResultOf(failing).check(UnauthorizedLogin))
        self.assertEqual(service.state, "waiting")
        self.assertEqual(self.hooks.connected, [])
        self.assertEqual(self.hooks.disconnected, [])
        [event] = self.eventsOf("loginRefused")
        self.assertEqual(event["log_level"].name, "warn")
        self.assertTrue(event["reason"].check(UnauthorizedLogin))
        delay = self.delay()
        self.assertTrue(120 <= delay < 121, delay)
        self.clock.advance(delay)
        self.endpoint.succeed()
        delay = self.delay()
        self.assertTrue(240 <= delay < 241, delay)
        # The stock server logs each refused login as an error.
        self.assertEqual(len(self.flushLoggedErrors(UnauthorizedLogin)), 2)

    def test_refusedRetryPolicy(self) -> None:
        """
        C{refusedRetryPolicy} chooses the wait after refused logins; other
        failures still follow C{retryPolicy}, and a successful login resets
        both.
        """
        service = self.service(
            UsernamePassword(b"alice", b"wrong"),
            retryPolicy=lambda n: 1.0,
            refusedRetryPolicy=lambda n: 1000.0 * n,
        )
        service.startService()
        self.endpoint.succeed()
        self.assertEqual(self.delay(), 1000)
        self.clock.advance(1000)
        self.endpoint.fail()
        self.assertEqual(self.delay(), 1)
        self.clock.advance(1)
        self.endpoint.succeed()
        self.assertEqual(self.delay(), 2000)
        service.credentials = ALICE
        self.clock.advance(2000)
        serverClose(self.endpoint.succeed())
        self.assertEqual(self.delay(), 1)
        self.clock.advance(1)
        service.credentials = UsernamePassword(b"alice", b"wrong")
        self.endpoint.succeed()
        self.assertEqual(self.delay(), 1000)
        self.assertEqual(len(self.flushLoggedErrors(UnauthorizedLogin)), 3)

    def test_lostBeforeLogin(self) -> None:
        """
        A connection closed before the login finished is a failed attempt
        with the real reason; no hook is called.
        """
        service = self.service()
        service.startService()
        self.endpoint.succeed(protocol.Factory.forProtocol(HangUpProtocol))
        self.assertTrue(service.lastFailure.check(ConnectionDone))
        self.assertEqual(service.state, "waiting")
        self.assertEqual(self.hooks.disconnected, [])
        self.assertEqual(len(self.eventsOf("attemptFailed")), 1)

    def test_timeoutWhileConnecting(self) -> None:
        """
        An endpoint that neither connects nor fails within C{timeout}
        seconds is cancelled, and the attempt fails with L{TimeoutError}.
        """
        service = self.service(timeout=7)
        service.startService()
        self.clock.advance(7)
        self.assertEqual(self.endpoint.cancelled, 1)
        self.assertTrue(service.lastFailure.check(TimeoutError))
        self.assertEqual(service.state, "waiting")

    def test_whenConnectedFailAfterFailures(self) -> None:
        """
        C{whenConnected(failAfterFailures=n)} fails with the reason of the
        n-th attempt in a row that failed.
        """
        service = self.service()
        service.startService()
        d = service.whenConnected(failAfterFailures=2)
        self.endpoint.fail()
        self.assertNoResult(d)
        self.clock.advance(self.delay())
        self.endpoint.fail(ConnectError(string="second"))
        self.assertIn("second", str(self.failureResultOf(d, ConnectError).value))

    def test_whenConnectedCancel(self) -> None:
        """
        A cancelled C{whenConnected} L{Deferred} is forgotten.
        """
        service = self.service()
        service.startService()
        d = service.whenConnected()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.endpoint.succeed()
        self.assertEqual(len(self.hooks.connected), 1)

    def test_stopWhileConnected(self) -> None:
        """
        Stopping a connected service closes the connection, calls
        C{onDisconnect}, fires once the connection is closed and leaves no
        timer behind; C{whenConnected} then fails.
        """
        service = self.service()
        service.startService()
        pump = self.endpoint.succeed()
        stopped = service.stopService()
        self.assertEqual(service.state, "stopped")
        self.assertNoResult(stopped)
        pump.flush()
        self.successResultOf(stopped)
        self.assertEqual(len(self.hooks.disconnected), 1)
        self.assertTrue(pump.clientIO.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(service.whenConnected(), CancelledError)
        self.assertEqual(service.state, "stopped")

    def test_stopWhileWaiting(self) -> None:
        """
        Stopping while waiting to retry cancels the retry and fails pending
        C{whenConnected} L{Deferred}s.
        """
        service = self.service()
        service.startService()
        waiting = service.whenConnected()
        self.endpoint.fail()
        self.successResultOf(service.stopService())
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(service.state, "stopped")

    def test_stopWhileConnecting(self) -> None:
        """
        Stopping while connecting cancels the endpoint's attempt and the
        attempt's timeout; the cancellation is not recorded as a failure.
        """
        service = self.service()
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(self.endpoint.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNone(service.lastFailure)

    def test_stopWhileLoggingIn(self) -> None:
        """
        Stopping during the handshake closes the connection quietly: no
        hook, no failure recorded.
        """
        service = self.service()
        service.startService()
        pump = self.endpoint.succeed(protocol.Factory.forProtocol(SilentProtocol))
        stopped = service.stopService()
        pump.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.hooks.connected + self.hooks.disconnected, [])
        self.assertIsNone(service.lastFailure)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        A stopped service can be started again and logs in again.
        """
        service = self.service()
        service.startService()
        pump = self.endpoint.succeed()
        stopped = service.stopService()
        pump.flush()
        self.successResultOf(stopped)
        service.startService()
        self.assertEqual(service.state, "connecting")
        self.endpoint.succeed()
        self.assertEqual(len(self.hooks.connected), 2)
        self.assertEqual(service.state, "connected")

    def test_hookErrorsLogged(self) -> None:
        """
        An exception from C{onConnect} is logged and the service stays
        connected.
        """

        def onConnect(reference: pb.RemoteReference) -> None:
            raise ZeroDivisionError()

        service = self.service(onConnect=onConnect)
        service.startService()
        self.endpoint.succeed()
        self.assertEqual(service.state, "connected")
        [event] = [e for e in self.events if "log_failure" in e]
        self.assertTrue(event["log_failure"].check(ZeroDivisionError))

    def test_stringEndpoint(self) -> None:
        """
        An endpoint description is parsed with the given reactor.
        """
        service = PBClientService("tcp:host=127.0.0.1:port=8787", reactor=self.clock)
        self.assertIsInstance(service.endpoint, endpoints.TCP4ClientEndpoint)
        self.assertIsInstance(service.factory, PBClientFactory)


def closeReference(reference: pb.RemoteReference) -> Deferred[None]:
    """
    Close the connection C{reference} lives on and fire once it is closed.
    """
    broker = reference.broker
    if broker.disconnected:
        return defer.succeed(None)
    closed: Deferred[None] = Deferred()
    broker.notifyOnDisconnect(lambda: closed.callback(None))
    broker.transport.loseConnection()
    return closed


def closedPort() -> int:
    """
    A loopback TCP port nothing listens on (it was free a moment ago).
    """
    port = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    number = port.getHost().port
    port.stopListening()
    return number


def bounded(d: Deferred[Any], seconds: float = 20) -> Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds} instead of hanging.
    """
    return d.addTimeout(seconds, reactor)


def sendSignal(proc: TwistdProcess, number: int) -> None:
    """
    Send signal C{number} to C{proc} if it still runs.  (Twisted's
    C{signalProcess} knows only a few signals by name.)
    """
    try:
        proc.transport.signalProcess(number)
    except ProcessExitedAlready:
        pass


def brokerHasKeepAlive() -> bool:
    """
    Whether L{pbext.broker.Broker} accepts the keepalive options that
    L{PBClientFactory} passes on (and so runs L{pbext.keepalive}).
    """
    parameters = inspect.signature(pbext.broker.Broker.__init__).parameters
    return "keepaliveInterval" in parameters and "keepaliveTimeout" in parameters


class ConnectEndToEndTests(TestCase):
    """
    L{connect} against a real C{twistd pbserver} subprocess over loopback.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_root(self):
        """
        L{connect} with a C{tcp:} description gets the demo root.
        """
        proc = yield startPBServer(self)
        root = yield connect(reactor, f"tcp:host=127.0.0.1:port={proc.port}")
        self.addCleanup(closeReference, root)
        self.assertEqual((yield root.callRemote("echo", [1, b"2"])), [1, b"2"])

    @defer.inlineCallbacks
    def test_login(self):
        """
        L{connect} with credentials logs in to C{--auth memory:...}.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        avatar = yield connect(reactor, f"tcp:host=127.0.0.1:port={proc.port}", ALICE)
        self.addCleanup(closeReference, avatar)
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")

    @defer.inlineCallbacks
    def test_wrongPassword(self):
        """
        A wrong password fails L{connect} with L{UnauthorizedLogin}.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        d = connect(
            reactor,
            f"tcp:host=127.0.0.1:port={proc.port}",
            UsernamePassword(b"alice", b"wrong"),
        )
        (failure,) = yield d.addCallbacks(
            lambda avatar: self.fail(f"logged in: {avatar!r}"), lambda f: [f]
        )
        self.assertTrue(failure.check(UnauthorizedLogin), failure)

    @defer.inlineCallbacks
    def test_refused(self):
        """
        L{connect} to a closed port fails with L{ConnectionRefusedError}
        without waiting for any timeout.
        """
        d = connect(reactor, f"tcp:host=127.0.0.1:port={closedPort()}", timeout=None)
        yield self.assertFailure(d, ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_factoryThroughEndpoint(self):
        """
        A stock-style program calling C{endpoint.connect(factory)} and then
        C{factory.getRootObject()} gets a failure, not a hang, when the
        connection is refused (twisted#4976).
        """
        factory = PBClientFactory()
        root = factory.getRootObject()
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", closedPort())
        yield self.assertFailure(endpoint.connect(factory), ConnectionRefusedError)
        yield self.assertFailure(root, ConnectError)


class PBClientServiceEndToEndTests(TestCase):
    """
    L{PBClientService} against a real C{twistd pbserver} subprocess that
    stops, restarts or freezes.
    """

    timeout = 120

    def service(self, port: int, **kwargs: Any) -> tuple[PBClientService, HookRecorder]:
        hooks = HookRecorder()
        kwargs.setdefault("retryPolicy", lambda n: 0.2)
        service = PBClientService(
            f"tcp:host=127.0.0.1:port={port}",
            onConnect=hooks.onConnect,
            onDisconnect=hooks.onDisconnect,
            reactor=reactor,
            **kwargs,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service, hooks

    @defer.inlineCallbacks
    def test_serverRestart(self):
        """
        The service logs in; when the server stops and starts again on the
        same port, the service notices, logs in again on its own and calls
        succeed again.
        """
        args = ("--auth", "memory:alice:secret")
        proc = yield startPBServer(self, *args)
        service, hooks = self.service(proc.port, credentials=ALICE)
        avatar = yield bounded(service.whenConnected())
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")

        lost = hooks.nextLoss()
        proc.signal("TERM")
        yield bounded(proc.ended)
        yield bounded(lost)
        self.assertIn(service.state, ("waiting", "connecting"))

        yield startTwistd(
            self,
            ["pbserver", "--listen", f"tcp:{proc.port}:interface=127.0.0.1", *args],
        )
        again = yield bounded(service.whenConnected())
        self.assertIsNot(again, avatar)
        self.assertEqual((yield again.callRemote("whoami")), "alice")
        self.assertEqual(len(hooks.connected), 2)
        self.assertEqual(service.state, "connected")

    @defer.inlineCallbacks
    def test_wrongPassword(self):
        """
        Against a real server, a wrong password is recorded and not retried
        in a tight loop.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        service, hooks = self.service(
            proc.port, credentials=UsernamePassword(b"alice", b"wrong")
        )
        (failure,) = yield bounded(
            service.whenConnected(failAfterFailures=1).addCallbacks(
                lambda avatar: self.fail("logged in"), lambda f: [f]
            )
        )
        self.assertTrue(failure.check(UnauthorizedLogin), failure)
        self.assertTrue(service.lastFailure.check(UnauthorizedLogin))
        self.assertEqual(service.state, "waiting")

    @defer.inlineCallbacks
    def test_frozenServer(self):
        """
        With keepalive options on the factory, a server process that is
        stopped (SIGSTOP) is noticed: the connection is dropped, and once
        the server runs again the service logs in again.
        """
        if not brokerHasKeepAlive():
            raise SkipTest(
                "pbext.broker.Broker does not use pbext.keepalive yet, so the "
                "keepaliveInterval/keepaliveTimeout factory options do nothing"
            )
        proc = yield startPBServer(self)
        factory = PBClientFactory(keepaliveInterval=1.0, keepaliveTimeout=1.0)
        service, hooks = self.service(proc.port, factory=factory, timeout=3)
        root = yield bounded(service.whenConnected())
        lost = hooks.nextLoss()
        sendSignal(proc, signal.SIGSTOP)
        self.addCleanup(sendSignal, proc, signal.SIGCONT)
        yield bounded(lost, 15)
        sendSignal(proc, signal.SIGCONT)
        again = yield bounded(service.whenConnected())
        self.assertIsNot(again, root)
        self.assertEqual((yield again.callRemote("echo", "back")), "back")


class StockServerTests(TestCase):
    """
    pbext's client works against a stock L{twisted.spread.pb} server.
    """

    timeout = 30

    def listen(self, factory: pb.PBServerFactory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_connectRoot(self):
        """
        L{connect} gets a stock server's root.
        """
        port = self.listen(pb.PBServerFactory(DemoRoot()))
        root = yield connect(reactor, f"tcp:host=127.0.0.1:port={port}")
        self.addCleanup(closeReference, root)
        self.assertEqual((yield root.callRemote("ping")), "pong")

    @defer.inlineCallbacks
    def test_connectLogin(self):
        """
        L{connect} logs in to a stock server's portal.
        """
        port = self.listen(stockLoginServer())
        avatar = yield connect(reactor, f"tcp:host=127.0.0.1:port={port}", ALICE)
        self.addCleanup(closeReference, avatar)
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")

    @defer.inlineCallbacks
    def test_unixSocket(self):
        """
        L{connect} accepts C{unix:} descriptions.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "pb.sock")
        port = reactor.listenUNIX(path, pb.PBServerFactory(DemoRoot()))
        self.addCleanup(port.stopListening)
        root = yield connect(reactor, f"unix:path={path}")
        self.addCleanup(closeReference, root)
        self.assertEqual((yield root.callRemote("echo", "unix")), "unix")

    @defer.inlineCallbacks
    def test_service(self):
        """
        L{PBClientService} logs in to a stock server, and again after the
        connection drops.
        """
        factory = stockLoginServer()
        port = self.listen(factory)
        hooks = HookRecorder()
        service = PBClientService(
            f"tcp:host=127.0.0.1:port={port}",
            ALICE,
            onConnect=hooks.onConnect,
            retryPolicy=lambda n: 0.1,
            reactor=reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        avatar = yield bounded(service.whenConnected())
        self.assertEqual((yield avatar.callRemote("echo", 7)), 7)
        reconnected = hooks.nextConnect()
        avatar.broker.transport.loseConnection()
        again = yield bounded(reconnected)
        self.assertEqual((yield again.callRemote("whoami")), "alice")


class MarkerProcess(TwistdProcess):
    """
    A C{twistd} child that is ready when its output shows a marker.
    """

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker
        self.seen: Deferred[None] = Deferred()
        # A client never listens; only the marker matters.
        self.listening.addErrback(lambda f: None)

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        if not self.seen.called and self.marker in self.output:
            self.seen.callback(None)

    errReceived = outReceived


class ExampleTests(TestCase):
    """
    The documentation's client examples run.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_connectScript(self):
        """
        C{python docs/examples/connect.py ENDPOINT USER PASSWORD} logs in,
        prints what the avatar answers and exits with status 0.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable,
            [
                os.path.join(EXAMPLES, "connect.py"),
                f"tcp:host=127.0.0.1:port={proc.port}",
                "alice",
                "secret",
            ],
            env=_environment(),
        )
        self.assertEqual(code, 0, err)
        self.assertIn(b"Logged in as alice", out)

    @defer.inlineCallbacks
    def test_clientServiceTac(self):
        """
        C{twistd -ny docs/examples/client_service.tac} logs in to the
        server named by C{PBEXT_CONNECT}.
        """
        proc = yield startPBServer(self, "--auth", "memory:alice:secret")
        client = MarkerProcess(b"Logged in as alice")
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "--logfile=-",
            "-y",
            os.path.join(EXAMPLES, "client_service.tac"),
        ]
        env = _environment({"PBEXT_CONNECT": f"tcp:host=127.0.0.1:port={proc.port}"})
        reactor.spawnProcess(client, sys.executable, argv, env=env)

        def stop() -> Deferred[None]:
            client.signal("TERM")
            return client.ended

        self.addCleanup(stop)
        yield bounded(client.seen, 30)
