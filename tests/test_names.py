"""
Tests for the rule that pbext's state on the classes applications subclass
(the factories, the broker, L{PBClientService}) lives under C{_pbext} names
or is documented public API, so that a subclass may define any other name.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

from twisted.application.internet import ClientService
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.spread import banana, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext.broker import Broker
from pbext.client import PBClientService
from pbext.copyable import CopyableRegistry
from pbext.demo import DemoRealm, DemoRoot
from pbext.metrics import MeteredBroker
from pbext.security import defaultPolicy
from pbext.testing import connectedPair
from tests.test_client import ALICE, MemoryEndpoint, stockLoginServer

#: Names pbext's factories used for their own state before they were
#: namespaced (issue 18).  A subclass defining any of them must change
#: nothing pbext does.
OLD_FACTORY_NAMES = [
    "policy",
    "registries",
    "options",
    "_reactor",
    "_brokerOptions",
    "_connectionRegistries",
    "_setUpPbext",
    "_buildBroker",
]
OLD_SERVER_NAMES = [*OLD_FACTORY_NAMES, "connectionCount", "_perAddress", "_brokerLost"]
OLD_CLIENT_NAMES = [*OLD_FACTORY_NAMES, "loginOnRoot"]

#: The same, for pbext's broker.
OLD_BROKER_NAMES = """
policy limits registries peerFeatures _abandon _abandoned _answerFailure
_backlog _cancelIncoming _cancelTimer _chainedSendMessage _checkReturn
_classicDispatch _clock _control _decoder _directReads _dispatch _drain
_drainCall _dropConnection _eventCount _eventWindow _expressionDecoded
_failCall _fusedReceive _fusedSend _getClock _handshakeDone _idleTimerFired
_incomingTaster _keepalive _knownID _lastHeard _outgoingTaster
_outgoingVocabulary _parse _pauseReading _pausedBytes _peerName
_plainReceive _plainSend _plainTypes _producing _readPauses _receiveBuffer
_receivedInto _refuse _resumeReading _running _sendPages _serializeOut
_setTimer _startKeepalive _suppressed _takeWaiting _timedOut _timeoutCall
_timers _violation _write _writeJoined _writePaused _writeSequence
_writeToTransport _instrumentation _metricCalls _metricPeer _metrics
_finishCall
""".split()

#: The same, for L{PBClientService}.
OLD_SERVICE_NAMES = """
_description _clock _onConnect _onDisconnect _retryPolicy _refusedRetryPolicy
_timeout _broker _reference _timeoutCall _connecting _attemptEnded
_failedAttempts _refusedAttempts _lastRefused _stopped _waiters _attempt
_connectFailed _timedOut _brokerBuilt _brokerReady _gotReference _refused
_brokerLost _attemptFailed _retryDelay _cancelTimeout _callHook
""".split()

#: The public names pbext adds to each class, all documented.
PUBLIC_FACTORY = {"pbextPolicy", "pbextRegistries", "pbextOptions"}
PUBLIC = {
    pbext.PBServerFactory: PUBLIC_FACTORY | {"pbextAdmission"},
    pbext.PBClientFactory: PUBLIC_FACTORY | {"pbextLoginOnRoot"},
    Broker: {
        "callTimeout",
        "keepaliveInterval",
        "keepaliveTimeout",
        "peerFeatures",
        "ping",
        "pbextPolicy",
        "pbextRegistries",
        "typedCalls",
    },
    PBClientService: {
        "state",
        "lastFailure",
        "factory",
        "endpoint",
        "credentials",
        "mind",
    },
}


class Sentinel:
    """
    A subclass's own value for a name: records it if pbext ever calls it.
    """

    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def __repr__(self) -> str:
        return f"<Sentinel {self.name}>"

    def __call__(self, *args: object, **kwargs: object) -> Any:
        self.calls.append(self.name)
        raise AssertionError(f"pbext called the subclass's {self.name}")

    def __getattr__(self, name: str) -> Any:
        self.calls.append(f"{self.name}.{name}")
        raise AttributeError(f"pbext read {self.name}.{name}")


def subclassDefining(
    base: type, names: list[str], calls: list[str], **extra: Any
) -> tuple[type, dict[str, Sentinel]]:
    """
    A subclass of C{base} whose body defines each of C{names} as a
    L{Sentinel}.
    """
    sentinels = {name: Sentinel(name, calls) for name in names}
    return type("Mine" + base.__name__, (base,), {**sentinels, **extra}), sentinels


class Avatar(pb.Avatar):
    def __init__(self) -> None:
        self.keepalives = 0

    def perspective_keepalive(self) -> None:
        self.keepalives += 1


class WorkerRealm:
    """
    A realm whose one avatar counts the keepalives a worker sends.
    """

    def __init__(self) -> None:
        self.avatar = Avatar()

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return pb.IPerspective, self.avatar, lambda: None


class BuildbotWorkerFactory(pbext.PBClientFactory):
    """
    The parts of Buildbot's worker factory (C{buildbot_worker.pb.BotFactory})
    that collided with pbext: a C{_reactor} class attribute its keepalive
    timer runs on (replaced by tests), and a keepalive of its own.
    """

    keepaliveInterval = 10
    keepaliveTimer = None
    perspective = None
    _reactor: Any = None

    def gotPerspective(self, perspective: Any) -> None:
        self.perspective = perspective
        self.startTimers()

    def startTimers(self) -> None:
        def doKeepalive() -> None:
            self.keepaliveTimer = None
            self.startTimers()
            self.perspective.callRemote("keepalive")

        self.keepaliveTimer = self._reactor.callLater(
            self.keepaliveInterval, doKeepalive
        )


def limitedPolicy(**limits: Any) -> Any:
    policy = defaultPolicy()
    policy.limits = dataclasses.replace(policy.limits, **limits)
    return policy


class SubclassNamesTests(SynchronousTestCase):
    """
    A subclass that defines, for its own use, any name pbext once used
    internally keeps its values, and pbext behaves the same.
    """

    def test_serverFactory(self) -> None:
        """
        A L{pbext.PBServerFactory} subclass whose body defines every old
        name, and whose C{__init__} sets C{policy}, C{registries} and
        C{options}, keeps them all; pbext's policy, registries, clock and
        connection limits still apply, and nothing of the subclass is
        called.
        """
        calls: list[str] = []

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            pbext.PBServerFactory.__init__(self, *args, **kwargs)
            self.policy = "mine"
            self.registries = ["mine"]
            self.options = {"mine": True}

        Mine, sentinels = subclassDefining(
            pbext.PBServerFactory, OLD_SERVER_NAMES, calls, __init__=__init__
        )
        policy = limitedPolicy(maxConnections=1)
        registry = CopyableRegistry()
        clock = Clock()
        factory = Mine(DemoRoot(), policy=policy, registry=registry, reactor=clock)
        conn = connectedPair(factory, pbext.PBClientFactory(), clock=clock)
        root = conn.rootObject()
        self.assertEqual(conn.resultOf(root.callRemote("echo", 5)), 5)
        server = conn.serverBroker
        self.assertIs(server.pbextPolicy, policy)
        self.assertIn(registry, server.pbextRegistries)
        self.assertIs(factory.pbextPolicy, policy)
        # Connections are counted in pbext's state, and counted out once
        # gone (the broker told the factory, not the subclass).
        self.assertEqual(factory._pbext.connectionCount, 1)
        conn.disconnect()
        again = connectedPair(factory, pbext.PBClientFactory(), clock=clock)
        self.assertEqual(again.resultOf(again.rootObject().callRemote("echo", 6)), 6)
        again.disconnect()
        self.assertEqual(factory._pbext.connectionCount, 0)
        self.assertEqual(
            (factory.policy, factory.registries, factory.options),
            ("mine", ["mine"], {"mine": True}),
        )
        for name, sentinel in sentinels.items():
            if name not in ("policy", "registries", "options"):
                self.assertIs(getattr(factory, name), sentinel, name)
        self.assertEqual(calls, [])

    def test_clientFactory(self) -> None:
        """
        A L{pbext.PBClientFactory} subclass whose body defines every old
        name, and whose C{__init__} sets its own C{options} after pbext's,
        keeps them; C{classicLogin=False} given to the constructor is still
        honoured (no classic login with a stock server), and nothing of the
        subclass is called.
        """
        calls: list[str] = []

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            pbext.PBClientFactory.__init__(self, *args, **kwargs)
            self.options = {"classicLogin": True}
            self.policy = "mine"

        Mine, sentinels = subclassDefining(
            pbext.PBClientFactory, OLD_CLIENT_NAMES, calls, __init__=__init__
        )
        clock = Clock()
        factory = Mine(reactor=clock, classicLogin=False)
        conn = connectedPair(stockLoginServer(), factory, clock=clock)
        self.assertTrue(
            conn.failureOf(conn.clientFactory.login(ALICE)).check(UnauthorizedLogin)
        )
        self.assertEqual(factory.pbextOptions, {"classicLogin": False})
        self.assertEqual(factory.options, {"classicLogin": True})
        self.assertEqual(factory.policy, "mine")
        for name, sentinel in sentinels.items():
            if name not in ("policy", "options"):
                self.assertIs(getattr(factory, name), sentinel, name)
        self.assertEqual(calls, [])

    def test_clientFactoryLogsIn(self) -> None:
        """
        The same subclass, allowed the classic login, logs in to a stock
        server through pbext's login, never its own C{loginOnRoot}.
        """
        calls: list[str] = []
        Mine, sentinels = subclassDefining(
            pbext.PBClientFactory, OLD_CLIENT_NAMES, calls
        )
        clock = Clock()
        conn = connectedPair(stockLoginServer(), Mine(reactor=clock), clock=clock)
        avatar = conn.login(ALICE)
        self.assertEqual(conn.resultOf(avatar.callRemote("whoami")), "alice")
        self.assertEqual(calls, [])

    def test_buildbotWorkerKeepalive(self) -> None:
        """
        A clone of Buildbot's worker factory, whose C{_reactor} class
        attribute drives its own keepalive timer, keeps that attribute: its
        keepalives reach the master.
        """
        clock = Clock()

        class WorkerFactory(BuildbotWorkerFactory):
            _reactor = clock

        realm = WorkerRealm()
        passwords = InMemoryUsernamePasswordDatabaseDontUse(worker=b"pass")
        server = pbext.PBServerFactory(Portal(realm, [passwords]), reactor=clock)
        factory = WorkerFactory()
        self.assertIs(factory._reactor, clock)
        conn = connectedPair(server, factory, clock=clock)
        perspective = conn.login(UsernamePassword(b"worker", b"pass"))
        factory.gotPerspective(perspective)
        for _ in range(3):
            conn.advance(10)
        self.assertEqual(realm.avatar.keepalives, 3)

    def test_twistedInit(self) -> None:
        """
        Subclasses written for Twisted's factories that call Twisted's
        C{__init__} themselves, skipping pbext's, get pbext's defaults:
        their connections work and are counted in and out.
        """

        class Server(pbext.PBServerFactory):
            def __init__(self, root: Any) -> None:
                pb.PBServerFactory.__init__(self, root)

        class Client(pbext.PBClientFactory):
            def __init__(self) -> None:
                pb.PBClientFactory.__init__(self)

        clock = Clock()
        server = Server(DemoRoot())
        for _ in range(3):
            conn = connectedPair(server, Client(), clock=clock)
            self.assertEqual(conn.resultOf(conn.rootObject().callRemote("echo", 1)), 1)
            self.assertIsInstance(conn.serverBroker, Broker)
            self.assertEqual(conn.serverBroker.pbextPolicy.name, "default")
            self.assertEqual(server._pbext.connectionCount, 1)
            conn.disconnect()
        self.assertEqual(server._pbext.connectionCount, 0)

    def test_stockProtocol(self) -> None:
        """
        A server factory whose C{protocol} is a stock broker class does not
        count its connections, which would never be counted out.
        """
        clock = Clock()
        server = pbext.PBServerFactory(
            DemoRoot(), policy=limitedPolicy(maxConnections=1), reactor=clock
        )
        server.protocol = pb.Broker
        for _ in range(3):
            conn = connectedPair(server, pb.PBClientFactory(), clock=clock)
            self.assertEqual(conn.resultOf(conn.rootObject().callRemote("echo", 1)), 1)
            conn.disconnect()
        self.assertEqual(server._pbext.connectionCount, 0)

    def test_broker(self) -> None:
        """
        A L{Broker} subclass whose body defines every old name, and whose
        C{__init__} sets C{policy}, C{limits} and C{registries}, keeps them
        all; calls, errors and pbext's keepalive still work, and nothing of
        the subclass is called.
        """
        calls: list[str] = []

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            Broker.__init__(self, *args, **kwargs)
            self.policy = "mine"
            self.limits = "mine"
            self.registries = "mine"
            self.peerFeatures = "mine"

        Mine, sentinels = subclassDefining(
            Broker, OLD_BROKER_NAMES, calls, __init__=__init__
        )
        clock = Clock()
        server = pbext.PBServerFactory(DemoRoot(), reactor=clock)
        server.protocol = Mine
        client = pbext.PBClientFactory(
            reactor=clock, keepaliveInterval=5, keepaliveTimeout=5
        )
        client.protocol = Mine
        conn = connectedPair(server, client, clock=clock)
        root = conn.rootObject()
        self.assertEqual(conn.resultOf(root.callRemote("echo", [1, "a"])), [1, "a"])
        self.assertTrue(
            conn.failureOf(root.callRemote("noSuchMethod")).check(pb.NoSuchMethod)
        )
        self.assertEqual(
            conn.clientBroker._pbextPeerFeatures,
            frozenset([pbext.broker.PBEXT_DIALECT]),
        )
        # The keepalive pings a silent server, and the answers keep the
        # connection up.
        for _ in range(4):
            conn.advance(6)
        self.assertTrue(conn.connected)
        for broker in (conn.serverBroker, conn.clientBroker):
            self.assertEqual(
                (broker.policy, broker.limits, broker.registries, broker.peerFeatures),
                ("mine", "mine", "mine", "mine"),
            )
            for name, sentinel in sentinels.items():
                if name not in ("policy", "limits", "registries", "peerFeatures"):
                    self.assertIs(getattr(broker, name), sentinel, name)
        self.flushLoggedErrors()
        self.assertEqual(calls, [])

    def test_clientService(self) -> None:
        """
        A L{PBClientService} subclass whose body defines every old name
        connects, logs in and hands out its avatar, and keeps its names.
        """
        calls: list[str] = []
        Mine, sentinels = subclassDefining(PBClientService, OLD_SERVICE_NAMES, calls)
        clock = Clock()
        endpoint = MemoryEndpoint(clock, stockLoginServer())
        service = Mine(endpoint, ALICE, clock=clock)
        service.startService()
        pump = endpoint.succeed()
        avatar = self.successResultOf(service.whenConnected())
        self.assertIsInstance(avatar, pb.RemoteReference)
        self.assertEqual(service.state, "connected")
        for name, sentinel in sentinels.items():
            self.assertIs(getattr(service, name), sentinel, name)
        stopped = service.stopService()
        pump.flush()
        self.successResultOf(stopped)
        self.assertEqual(calls, [])


def twistedNames(*classes: type) -> set[str]:
    """
    Every attribute name Twisted's own code uses on C{self} in C{classes}
    (and their bases), or defines on them.
    """
    names: set[str] = set()
    for klass in classes:
        for base in klass.__mro__:
            names.update(vars(base))
            try:
                source = inspect.getsource(base)
            except (OSError, TypeError):
                continue
            names.update(re.findall(r"\bself\.(\w+)", source))
    return names


class NamespaceShapeTests(SynchronousTestCase):
    """
    Every name pbext adds to a class applications subclass, on the class or
    on its instances, is C{_pbext}-prefixed or in the documented public
    list; a new un-namespaced name fails here.
    """

    def assertNamespaced(self, klass: type, names: set[str], twisted: set[str]) -> None:
        added = {
            name
            for name in names - twisted
            if not name.startswith("_pbext") and not name.startswith("__")
        }
        self.assertEqual(added - PUBLIC[klass], set(), f"un-namespaced on {klass}")

    def test_factories(self) -> None:
        """
        The server and client factories, after a connection, add only
        C{_pbext} names and documented public ones to Twisted's.
        """
        clock = Clock()
        server = pbext.PBServerFactory(DemoRoot(), reactor=clock, classicLogin=True)
        client = pbext.PBClientFactory(reactor=clock, callTimeout=5)
        conn = connectedPair(server, client, clock=clock)
        conn.rootObject()
        stock = connectedPair(
            pb.PBServerFactory(DemoRoot()), pb.PBClientFactory(), clock=clock
        )
        stock.rootObject()
        for factory, base, stockFactory in (
            (server, pb.PBServerFactory, stock.serverFactory),
            (client, pb.PBClientFactory, stock.clientFactory),
        ):
            twisted = twistedNames(base) | set(vars(stockFactory))
            self.assertNamespaced(
                type(factory), set(dir(type(factory))) | set(vars(factory)), twisted
            )

    def test_portalFactory(self) -> None:
        """
        So does a server factory serving a portal, with login options.
        """
        portal = Portal(DemoRealm(), [InMemoryUsernamePasswordDatabaseDontUse()])
        factory = pbext.PBServerFactory(portal, classicLogin=False)
        self.assertNamespaced(
            pbext.PBServerFactory,
            set(dir(pbext.PBServerFactory)) | set(vars(factory)),
            twistedNames(pb.PBServerFactory),
        )

    def test_broker(self) -> None:
        """
        pbext's broker (and the metered broker applications' brokers are
        mixed with), on the class and on both ends of a connection that
        made calls and pings, adds only C{_pbext} names and documented
        public ones to Twisted's.
        """
        clock = Clock()
        server = pbext.PBServerFactory(DemoRoot(), reactor=clock)
        server.protocol = MeteredBroker
        client = pbext.PBClientFactory(
            reactor=clock, keepaliveInterval=5, callTimeout=10
        )
        conn = connectedPair(server, client, clock=clock)
        root = conn.rootObject()
        conn.resultOf(root.callRemote("echo", {"a": [1]}))
        conn.advance(6)
        stock = connectedPair(
            pb.PBServerFactory(DemoRoot()), pb.PBClientFactory(), clock=clock
        )
        stock.resultOf(stock.rootObject().callRemote("echo", {"a": [1]}))
        twisted = (
            twistedNames(pb.Broker, banana.Banana)
            | set(vars(stock.serverBroker))
            | set(vars(stock.clientBroker))
        )
        for klass in (Broker, MeteredBroker):
            self.assertNamespaced(Broker, set(dir(klass)), twisted)
        for broker in (conn.serverBroker, conn.clientBroker):
            self.assertNamespaced(Broker, set(vars(broker)), twisted)

    def test_clientService(self) -> None:
        """
        L{PBClientService}, connected, adds only C{_pbext} names and
        documented public ones to Twisted's L{ClientService}.
        """
        clock = Clock()
        endpoint = MemoryEndpoint(clock, stockLoginServer())
        service = PBClientService(endpoint, ALICE, clock=clock)
        service.startService()
        pump = endpoint.succeed()
        self.successResultOf(service.whenConnected())
        stock = ClientService(endpoint, pb.PBClientFactory(), clock=clock)
        twisted = twistedNames(ClientService) | set(vars(stock))
        self.assertNamespaced(
            PBClientService, set(dir(PBClientService)) | set(vars(service)), twisted
        )
        stopped = service.stopService()
        pump.flush()
        self.successResultOf(stopped)
