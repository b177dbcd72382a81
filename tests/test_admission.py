"""
Tests for L{pbext.admission}: connection caps that evict the least valuable
connection instead of refusing newcomers, per-prefix caps and the login
deadline, in memory on a fake clock and over real 127.0.0.x sockets.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.cred import checkers, credentials
from twisted.cred.portal import Portal
from twisted.internet import defer, endpoints, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs, formatEvent, globalLogPublisher
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pbext
from pbext import admission, demo
from pbext.security import Limits, SecurityPolicy
from pbext.testing import PBConnection, connectedPair


def policyWith(**limits: Any) -> SecurityPolicy:
    return SecurityPolicy(limits=Limits(**limits))


def events(captured: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in captured if e.get("pbextEvent") == kind]


class NetworkKeysTests(SynchronousTestCase):
    """
    Tests for L{admission.networkKeys}.
    """

    def test_ipv4(self) -> None:
        """
        An IPv4 peer counts against its address and its /24.
        """
        self.assertEqual(
            admission.networkKeys(IPv4Address("TCP", "203.0.113.9", 1)),
            ("203.0.113.9", "203.0.113.0/24"),
        )

    def test_ipv6(self) -> None:
        """
        An IPv6 peer counts against its address and its /64; an
        IPv4-mapped one as IPv4.
        """
        self.assertEqual(
            admission.networkKeys(IPv6Address("TCP", "2001:db8:1:2:3:4:5:6", 1)),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        )
        self.assertEqual(
            admission.networkKeys(IPv6Address("TCP", "::ffff:192.0.2.5", 1)),
            ("192.0.2.5", "192.0.2.0/24"),
        )

    def test_noIP(self) -> None:
        """
        A peer without an IP address counts against no address or prefix.
        """
        self.assertEqual(admission.networkKeys(UNIXAddress(b"/tmp/s")), (None, None))


class AdmissionTests(SynchronousTestCase):
    """
    A server factory's admission of connections, with in-memory
    connections on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.passwords = checkers.InMemoryUsernamePasswordDatabaseDontUse(
            alice=b"wonderland", bob=b"builder"
        )

    def rootServer(self, **limits: Any) -> pbext.PBServerFactory:
        return pbext.PBServerFactory(
            demo.DemoRoot(), reactor=self.clock, policy=policyWith(**limits)
        )

    def portalServer(self, *checkerList: Any, **limits: Any) -> pbext.PBServerFactory:
        portal = Portal(demo.DemoRealm(), list(checkerList) or [self.passwords])
        return pbext.PBServerFactory(
            portal,
            reactor=self.clock,
            policy=policyWith(**limits),
            loginThrottle=None,
        )

    def connect(self, server: Any, host: str, port: int = 40000) -> PBConnection:
        conn = connectedPair(
            server,
            pbext.PBClientFactory(reactor=self.clock),
            clock=self.clock,
            clientAddress=IPv4Address("TCP", host, port),
        )
        self.addCleanup(conn.disconnect)
        return conn

    def test_fullServerEvictsFromBusiestAddress(self) -> None:
        """
        At C{maxConnections}, a newcomer from another address is admitted,
        and the connection closed for it is one of the address holding the
        most, the one idle longest; an event and a count say so.
        """
        server = self.rootServer(maxConnections=4)
        crowd = [self.connect(server, "203.0.113.2", 40000 + n) for n in range(3)]
        other = self.connect(server, "198.51.100.3")
        self.clock.advance(10)
        # The first of the crowd speaks; the second is now idle longest.
        crowd[0].resultOf(crowd[0].rootObject().callRemote("ping"))
        with capturedLogs() as captured:
            newcomer = self.connect(server, "192.0.2.1")
            for conn in [*crowd, other]:
                conn.pump()
        self.assertTrue(newcomer.connected)
        self.assertEqual([c.connected for c in crowd], [True, False, True])
        self.assertTrue(other.connected)
        self.assertEqual(
            newcomer.resultOf(newcomer.rootObject().callRemote("echo", 7)), 7
        )
        (evicted,) = events(captured, "connectionEvicted")
        self.assertEqual(evicted["cap"], "maxConnections")
        self.assertIn("203.0.113.2", evicted["peer"])
        self.assertEqual(
            server.pbextAdmission.counts, {("evicted", "maxConnections"): 1}
        )
        self.assertEqual(server.pbextAdmission.connections, 4)

    def test_busiestPrefixFirst(self) -> None:
        """
        The connection evicted comes from the network prefix (IPv4 /24)
        holding the most connections, even if each of its addresses holds
        fewer than another address.
        """
        server = self.rootServer(maxConnections=5)
        spread = [self.connect(server, f"203.0.113.{n}") for n in range(1, 4)]
        pair = [self.connect(server, "198.51.100.9", 40000 + n) for n in range(2)]
        self.connect(server, "192.0.2.1")
        for conn in [*spread, *pair]:
            conn.pump()
        self.assertEqual([c.connected for c in pair], [True, True])
        self.assertEqual(sum(c.connected for c in spread), 2)

    def test_loggedInNeverEvicted(self) -> None:
        """
        Connections that logged in are never evicted: with every slot held
        by one, a newcomer is refused, with an event; they keep answering.
        """
        server = self.portalServer(maxConnections=2)
        users = [self.connect(server, f"198.51.100.{n}") for n in (1, 2)]
        avatars = [
            u.login(credentials.UsernamePassword(b"alice", b"wonderland"))
            for u in users
        ]
        self.clock.advance(3600)
        with capturedLogs() as captured:
            refused = connectedPair(
                server,
                pbext.PBClientFactory(reactor=self.clock),
                clock=self.clock,
                clientAddress=IPv4Address("TCP", "203.0.113.5", 1),
                handshake=False,
            )
            refused.pump()
        self.assertFalse(refused.connected)
        (event,) = events(captured, "connectionRefused")
        self.assertEqual(event["cap"], "maxConnections")
        for user, avatar in zip(users, avatars):
            self.assertEqual(user.resultOf(avatar.callRemote("whoami")), "alice")

    def test_notLoggedInEvictedBeforeLoggedIn(self) -> None:
        """
        A connection that never logged in makes room before any logged-in
        one, even from a less crowded address.
        """
        server = self.portalServer(maxConnections=3)
        users = [self.connect(server, "198.51.100.1", 40000 + n) for n in range(2)]
        for u in users:
            u.login(credentials.UsernamePassword(b"bob", b"builder"))
        idle = self.connect(server, "203.0.113.5")
        newcomer = self.connect(server, "192.0.2.1")
        idle.pump()
        self.assertFalse(idle.connected)
        self.assertEqual([u.connected for u in users], [True, True])
        newcomer.login(credentials.UsernamePassword(b"bob", b"builder"))

    def test_anonymousEvictable(self) -> None:
        """
        An anonymous login ends the login deadline but does not protect a
        connection from eviction.
        """
        server = self.portalServer(
            checkers.AllowAnonymousAccess(), maxConnections=1, loginTimeout=5.0
        )
        anonymous = self.connect(server, "203.0.113.5")
        anonymous.login(credentials.Anonymous())
        self.clock.advance(10)
        self.assertTrue(anonymous.connected)
        self.connect(server, "192.0.2.1")
        anonymous.pump()
        self.assertFalse(anonymous.connected)

    def test_prefixCap(self) -> None:
        """
        Past C{maxConnectionsPerPrefix}, a newcomer from that prefix evicts
        a connection of the prefix's busiest address; newcomers from other
        prefixes are admitted without evicting anything.
        """
        server = self.rootServer(maxConnectionsPerPrefix=3)
        crowd = [self.connect(server, "203.0.113.5", 40000 + n) for n in range(2)]
        single = self.connect(server, "203.0.113.6")
        newcomer = self.connect(server, "203.0.113.7")
        for conn in [*crowd, single]:
            conn.pump()
        self.assertTrue(newcomer.connected)
        self.assertTrue(single.connected)
        self.assertEqual(sum(c.connected for c in crowd), 1)
        elsewhere = [self.connect(server, f"198.51.100.{n}") for n in range(1, 4)]
        self.assertTrue(all(c.connected for c in elsewhere))
        self.assertEqual(
            server.pbextAdmission.counts, {("evicted", "maxConnectionsPerPrefix"): 1}
        )
        self.assertEqual(server.pbextAdmission.fromPrefix("203.0.113.0/24"), 3)

    def test_ipv6Prefix(self) -> None:
        """
        IPv6 peers count against their /64: many addresses of one /64 hold
        at most C{maxConnectionsPerPrefix} connections.
        """
        server = self.rootServer(maxConnectionsPerPrefix=2)
        conns = []
        for n in range(1, 6):
            conn = connectedPair(
                server,
                pbext.PBClientFactory(reactor=self.clock),
                clock=self.clock,
                clientAddress=IPv6Address("TCP", f"2001:db8::{n}", 1),  # type: ignore[arg-type]
            )
            self.addCleanup(conn.disconnect)
            conns.append(conn)
        for conn in conns:
            conn.pump()
        self.assertEqual(sum(c.connected for c in conns), 2)
        self.assertEqual(server.pbextAdmission.fromPrefix("2001:db8::/64"), 2)

    def test_addressCapRefuses(self) -> None:
        """
        An address at C{maxConnectionsPerAddress} is refused rather than
        evicting anyone.
        """
        server = self.rootServer(maxConnectionsPerAddress=2)
        held = [self.connect(server, "203.0.113.5", 40000 + n) for n in range(2)]
        third = connectedPair(
            server,
            pbext.PBClientFactory(reactor=self.clock),
            clock=self.clock,
            clientAddress=IPv4Address("TCP", "203.0.113.5", 1),
        )
        self.assertFalse(third.connected)
        self.assertTrue(all(c.connected for c in held))
        self.assertEqual(
            server.pbextAdmission.counts, {("refused", "maxConnectionsPerAddress"): 1}
        )

    def test_loginDeadline(self) -> None:
        """
        On a portal server, a connection that has not logged in within
        C{loginTimeout} is closed, with an event; one that logged in stays.
        """
        server = self.portalServer(loginTimeout=30.0)
        idle = self.connect(server, "203.0.113.5")
        user = self.connect(server, "198.51.100.1")
        avatar = user.login(credentials.UsernamePassword(b"alice", b"wonderland"))
        with capturedLogs() as captured:
            idle.advance(29)
            self.assertTrue(idle.connected)
            idle.advance(1)
        self.assertFalse(idle.connected)
        (event,) = events(captured, "loginTimeout")
        self.assertIn("203.0.113.5", event["peer"])
        user.advance(3600)
        self.assertEqual(user.resultOf(avatar.callRemote("whoami")), "alice")
        self.assertEqual(server.pbextAdmission.connections, 1)

    def test_defaultLoginDeadline(self) -> None:
        """
        By default the login deadline is 60 seconds.
        """
        self.assertEqual(Limits().loginTimeout, 60.0)
        server = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [self.passwords]), reactor=self.clock
        )
        idle = self.connect(server, "203.0.113.5")
        idle.advance(59)
        self.assertTrue(idle.connected)
        idle.advance(1)
        self.assertFalse(idle.connected)

    def test_noDeadlineOnRootServer(self) -> None:
        """
        A plain root server has no login, so no login deadline.
        """
        server = self.rootServer(loginTimeout=5.0)
        conn = self.connect(server, "203.0.113.5")
        conn.advance(3600)
        self.assertTrue(conn.connected)

    def test_deadlineOff(self) -> None:
        """
        C{loginTimeout=None} keeps connections that never log in.
        """
        server = self.portalServer(loginTimeout=None)
        conn = self.connect(server, "203.0.113.5")
        conn.advance(3600)
        self.assertTrue(conn.connected)

    def test_eventsRateLimited(self) -> None:
        """
        Evictions are logged at most 30 times a minute; the first event
        after that says how many were left out.
        """
        server = self.rootServer(maxConnections=1)
        with capturedLogs() as captured:
            for n in range(100):
                conn = self.connect(server, f"203.0.113.{n}")
                conn.pump()
        self.assertEqual(len(events(captured, "connectionEvicted")), 30)
        self.assertEqual(
            server.pbextAdmission.counts[("evicted", "maxConnections")], 99
        )
        self.clock.advance(60)
        with capturedLogs() as captured:
            self.connect(server, "192.0.2.1")
        (event,) = events(captured, "connectionEvicted")
        self.assertEqual(event["suppressedBefore"], 69)

    def test_stockBrokerHoldsNoSlot(self) -> None:
        """
        A connection of a stock broker class (the factory's C{protocol}
        replaced) never reports its loss, so it holds no slot.
        """
        server = self.rootServer(maxConnections=2)
        server.protocol = pb.Broker
        conns = [self.connect(server, f"203.0.113.{n}") for n in range(3)]
        self.assertTrue(all(c.connected for c in conns))
        self.assertEqual(server.pbextAdmission.connections, 0)

    def test_stateBounded(self) -> None:
        """
        Once connections close, the admission holds nothing of them.
        """
        server = self.rootServer(maxConnections=8)
        conns = [self.connect(server, f"203.0.113.{n % 5}") for n in range(40)]
        for conn in conns:
            conn.disconnect()
        state = server.pbextAdmission
        self.assertEqual(state.connections, 0)
        self.assertEqual(
            (
                len(state._slots),
                len(state._perAddress),
                len(state._perPrefix),
                len(state._evictablePrefixes),
                len(state._evictableAddresses),
                len(state._evictable),
            ),
            (0, 0, 0, 0, 0, 0),
        )


class FullServerEndToEndTests(TestCase):
    """
    Over real sockets: a server whose connection cap is filled by idle
    connections from a few addresses still admits, logs in and answers a
    legitimate client from another address, and keeps its logged-in idle
    clients.  Linux routes all of 127.0.0.0/8 to the loopback interface.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_legitimateClientGetsIn(self) -> Any:
        """
        With C{maxConnections} 24 filled from 127.0.0.2-127.0.0.5 (and
        three logged-in workers from 127.0.0.6 idle meanwhile), a client
        from 127.0.0.1 connects, logs in and gets an answer within a
        second; the workers still answer; the attackers' connections made
        room.
        """
        passwords = checkers.InMemoryUsernamePasswordDatabaseDontUse(
            alice=b"wonderland", worker=b"pass"
        )
        factory = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [passwords]),
            policy=policyWith(maxConnections=24, maxConnectionsPerAddress=16),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        portNumber = port.getHost().port
        clients: list[pb.PBClientFactory] = []

        def cleanup() -> None:
            for client in clients:
                client.disconnect()

        self.addCleanup(cleanup)

        def connect(source: str, factory: Any) -> Any:
            endpoint = endpoints.TCP4ClientEndpoint(
                reactor, "127.0.0.1", portNumber, bindAddress=(source, 0)
            )
            clients.append(factory)
            return endpoint.connect(factory)

        workers = []
        for _ in range(3):
            client = pbext.PBClientFactory()
            yield connect("127.0.0.6", client)
            avatar = yield client.login(
                credentials.UsernamePassword(b"worker", b"pass")
            )
            workers.append(avatar)

        # Stock PB clients that finish the handshake and then sit idle.
        captured: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(captured.append)
        self.addCleanup(globalLogPublisher.removeObserver, captured.append)
        attackers = []
        refused = 0
        for n in range(40):
            client = pb.PBClientFactory()
            yield connect(f"127.0.0.{2 + n % 4}", client)
            attackers.append(client)
            try:
                yield client.getRootObject().addTimeout(1, reactor)
            except defer.TimeoutError:
                refused += 1
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(refused, 0)
        self.assertEqual(factory.pbextAdmission.connections, 24)

        started = time.monotonic()
        client = pbext.PBClientFactory()
        yield connect("127.0.0.1", client)
        avatar = yield client.login(
            credentials.UsernamePassword(b"alice", b"wonderland")
        ).addTimeout(5, reactor)
        name = yield avatar.callRemote("whoami")
        elapsed = time.monotonic() - started
        self.assertEqual(name, "alice")
        self.assertLess(elapsed, 1.0)

        for worker in workers:
            started = time.monotonic()
            self.assertEqual((yield worker.callRemote("whoami")), "worker")
            self.assertLess(time.monotonic() - started, 0.25)
        hostile = [
            e
            for e in captured
            if str(e.get("peer", "")).split(":")[0]
            in {f"127.0.0.{n}" for n in range(2, 6)}
        ]
        volume = sum(len(formatEvent(e)) for e in hostile)
        self.assertGreater(len(hostile), 0)
        self.assertLess(volume / len(attackers), 64 * 1024)
        counts = factory.pbextAdmission.counts
        self.assertGreaterEqual(counts[("evicted", "maxConnections")], 20)
        self.assertEqual(counts[("refused", "maxConnections")], 0)


class TwistdAdmissionTests(TestCase):
    """
    A real C{twistd pbserver} subprocess with small connection limits.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_fullServerAndLoginDeadline(self) -> Any:
        """
        With C{--limit maxConnections=3 --limit loginTimeout=2}, three idle
        stock clients from 127.0.0.2 fill the server; a client from
        127.0.0.1 still logs in and is answered, and the idle ones left are
        closed by the login deadline while the logged-in one stays.
        """
        from tests._process import startPBServer

        proc = yield startPBServer(
            self,
            "--auth",
            "memory:alice:secret",
            "--limit",
            "maxConnections=3",
            "--limit",
            "loginTimeout=2",
        )
        clients: list[pb.PBClientFactory] = []
        self.addCleanup(lambda: [c.disconnect() for c in clients])

        def connect(source: str, factory: pb.PBClientFactory) -> Any:
            clients.append(factory)
            endpoint = endpoints.TCP4ClientEndpoint(
                reactor, "127.0.0.1", proc.port, bindAddress=(source, 0)
            )
            return endpoint.connect(factory)

        idle = []
        for _ in range(3):
            factory = pb.PBClientFactory()
            yield connect("127.0.0.2", factory)
            idle.append((yield factory.getRootObject().addTimeout(10, reactor)))
        factory = pbext.PBClientFactory()
        yield connect("127.0.0.1", factory)
        started = time.monotonic()
        avatar = yield factory.login(
            credentials.UsernamePassword(b"alice", b"secret")
        ).addTimeout(10, reactor)
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        self.assertLess(time.monotonic() - started, 1.0)
        for _ in range(100):
            if all(root.broker.disconnected for root in idle):
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(all(root.broker.disconnected for root in idle))
        self.assertEqual((yield avatar.callRemote("whoami")), "alice")
        self.assertIn(b"to admit", proc.output)
        self.assertIn(b"did not log in within loginTimeout", proc.output)
