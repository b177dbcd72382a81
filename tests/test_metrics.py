"""
Tests for L{pbext.metrics}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.cred import credentials
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogPublisher
from twisted.spread import pb
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import pbext
from pbext import demo, metrics
from pbext.login import LoginThrottle
from pbext.security import Limits, SecurityPolicy
from pbext.testing import connectedPair

try:
    from prometheus_client import parser as promParser
except ImportError:
    promParser = None

_NO_PROMETHEUS = "prometheus-client is not installed (pip install pbext[metrics])"


class Root(pb.Root):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_fail(self) -> None:
        raise ValueError("deliberate")

    def remote_slow(self) -> defer.Deferred[str]:
        d: defer.Deferred[str] = defer.Deferred()
        self.clock.callLater(2, d.callback, "done")
        return d


class MemoryMetricsTests(SynchronousTestCase):
    """
    L{metrics.MemoryMetrics} counts what it is told.
    """

    def test_interface(self) -> None:
        """
        L{metrics.MemoryMetrics} provides L{metrics.IMetrics}.
        """
        self.assertTrue(verifyObject(metrics.IMetrics, metrics.MemoryMetrics()))

    def test_methodCardinality(self) -> None:
        """
        Only the first C{maxMethodNames} distinct method names get their own
        label; later names are counted as C{"other"}, known names still
        under their own.
        """
        m = metrics.MemoryMetrics(maxMethodNames=2)
        for name in ["a", "b", "c", "d", "a"]:
            m.callFinished(name, 0.1, False)
        self.assertEqual(dict(m.calls), {"a": 2, "b": 1, "other": 2})

    def test_latencyBuckets(self) -> None:
        """
        Latencies fill cumulative buckets, with their count and sum.
        """
        m = metrics.MemoryMetrics(buckets=[1.0, 2.0])
        m.callFinished("x", 0.5, False)
        m.callFinished("x", 1.5, True)
        m.callFinished("x", 3.0, False)
        self.assertEqual(list(m.latencyBuckets()), [("x", [1, 2], 3, 5.0)])
        self.assertEqual(m.callErrors["x"], 1)


class InstrumentTests(SynchronousTestCase):
    """
    L{metrics.instrument} counts a factory's connections, calls, logins,
    bytes and violations.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = metrics.MemoryMetrics()
        self.publisher = LogPublisher()

    def instrumented(
        self, factory: Any, publisher: LogPublisher | None = None
    ) -> metrics.Instrumentation:
        inst = metrics.instrument(factory, self.metrics, publisher=publisher)
        inst.startService()
        self.addCleanup(inst.stopService)
        return inst

    def connect(self, server: Any, host: str = "127.0.0.1") -> Any:
        conn = connectedPair(
            server,
            pbext.PBClientFactory(reactor=self.clock),
            clock=self.clock,
            clientAddress=IPv4Address("TCP", host, 49152),
        )
        self.addCleanup(conn.disconnect)
        return conn

    def test_calls(self) -> None:
        """
        Answered calls are counted by method name, errors by method name,
        and timed from arrival to answer on the broker's clock; violations
        are counted by kind; pbext's own control calls are not counted.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        self.instrumented(server)
        conn = self.connect(server)
        root = conn.rootObject()
        self.assertEqual(conn.resultOf(root.callRemote("echo", 1)), 1)
        self.assertEqual(conn.resultOf(root.callRemote("echo", 2)), 2)
        conn.failureOf(root.callRemote("fail"))
        self.flushLoggedErrors(ValueError)
        conn.failureOf(root.callRemote("missing"))
        conn.failureOf(root.callRemote("_private"))
        d = root.callRemote("slow")
        conn.pump()
        conn.advance(2)
        self.assertEqual(conn.resultOf(d), "done")

        m = self.metrics
        self.assertEqual(
            dict(m.calls),
            {"echo": 2, "fail": 1, "missing": 1, "_private": 1, "slow": 1},
        )
        self.assertEqual(dict(m.callErrors), {"fail": 1, "missing": 1, "_private": 1})
        self.assertEqual(m.latency("echo"), (2, 0.0))
        self.assertEqual(m.latency("slow"), (1, 2.0))
        self.assertEqual(m.violations["noSuchMethod"], 1)
        self.assertEqual(m.violations["methodRefused"], 1)

    def test_bytes(self) -> None:
        """
        Bytes received and sent are counted: a large argument and its echo
        each add at least their size.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        self.instrumented(server)
        conn = self.connect(server)
        root = conn.rootObject()
        before = (self.metrics.bytesIn, self.metrics.bytesOut)
        self.assertGreater(before[0], 0)
        self.assertGreater(before[1], 0)
        conn.resultOf(root.callRemote("echo", b"x" * 5000))
        self.assertGreaterEqual(self.metrics.bytesIn - before[0], 5000)
        self.assertGreaterEqual(self.metrics.bytesOut - before[1], 5000)

    def test_answersHeldBack(self) -> None:
        """
        A metered broker, like a plain one, holds back the answers to the
        calls of one read to write them together, and counts the bytes of
        that one write: what it counts is what reaches the peer.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        self.instrumented(server)
        conn = self.connect(server)
        root = conn.rootObject()
        self.assertTrue(conn.serverBroker._pbextFlow.holdsBack)
        toServer, toClient = conn.clientToServer, conn.serverToClient
        # Three calls, delivered to the server in one read.
        toServer.hold()
        calls = [root.callRemote("echo", i) for i in range(3)]
        together = toServer.pending()
        toServer.corruptNext(lambda chunk: together)
        toServer.corruptNext(lambda chunk: b"")
        toServer.corruptNext(lambda chunk: b"")
        toClient.hold()
        before = self.metrics.bytesOut
        toServer.release()
        conn.pump()
        self.assertEqual(len(toClient._queue), 1)
        self.assertEqual(self.metrics.bytesOut - before, len(toClient.pending()))
        self.assertEqual(self.metrics.calls["echo"], 3)
        toClient.release()
        self.assertEqual([conn.resultOf(d) for d in calls], [0, 1, 2])

    def test_bytesSentFromTheStart(self) -> None:
        """
        Every byte a metered server writes is counted, its side of the
        handshake included.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        self.instrumented(server)
        conn = connectedPair(
            server,
            pbext.PBClientFactory(reactor=self.clock),
            clock=self.clock,
            handshake=False,
        )
        self.addCleanup(conn.disconnect)
        conn.serverToClient.hold()
        conn.pump()
        sent = conn.serverToClient.pending()
        self.assertGreater(len(sent), 0)
        self.assertEqual(self.metrics.bytesOut, len(sent))

    def test_connections(self) -> None:
        """
        Open connections are a gauge, accepted ones a total; those closed to
        make room for a newcomer at the connection limit, and those refused
        by a limit, are counted.
        """
        policy = SecurityPolicy(
            limits=Limits(maxConnections=2, maxConnectionsPerAddress=2)
        )
        server = pbext.PBServerFactory(
            Root(self.clock), reactor=self.clock, policy=policy
        )
        self.instrumented(server)
        first = self.connect(server, host="198.51.100.1")
        second = self.connect(server, host="198.51.100.2")
        self.clock.advance(1)
        self.connect(server, host="198.51.100.2")
        first.pump()
        self.assertFalse(first.connected)
        self.assertEqual(self.metrics.connectionsOpen, 2)
        self.assertEqual(self.metrics.connectionsTotal, 3)
        self.assertEqual(self.metrics.connectionsEvicted, {"maxConnections": 1})
        self.assertEqual(self.metrics.connectionsRefused, 0)
        self.connect(server, host="198.51.100.2")
        self.assertEqual(self.metrics.connectionsRefused, 1)
        second.disconnect()
        self.assertEqual(self.metrics.connectionsOpen, 1)
        self.assertEqual(self.metrics.connectionsTotal, 3)

    def test_logins(self) -> None:
        """
        Successful, failed and throttled logins of the factory's connections
        are counted from the login audit log (the global log publisher).
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        server = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [checker]),
            reactor=self.clock,
            loginThrottle=LoginThrottle(self.clock, freeFailures=1),
        )
        self.instrumented(server)
        conn = self.connect(server)
        conn.login(credentials.UsernamePassword(b"alice", b"secret"))
        login = conn.clientFactory.login
        conn.failureOf(login(credentials.UsernamePassword(b"alice", b"wrong")))
        d = login(credentials.UsernamePassword(b"alice", b"wrong"))
        conn.pump()
        conn.advance(60)
        self.assertTrue(conn.failureOf(d).check(UnauthorizedLogin))
        self.assertEqual(
            dict(self.metrics.logins), {"success": 1, "failure": 2, "throttled": 1}
        )

    def test_loginTimeouts(self) -> None:
        """
        Connections closed for not logging in within C{loginTimeout} are
        counted.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        server = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [checker]),
            reactor=self.clock,
            policy=SecurityPolicy(limits=Limits(loginTimeout=5.0)),
        )
        self.instrumented(server)
        conn = self.connect(server)
        conn.advance(5)
        self.assertFalse(conn.connected)
        self.assertEqual(self.metrics.loginTimeouts, 1)
        self.assertEqual(self.metrics.connectionsOpen, 0)

    def test_loginInternalsAreNotCalls(self) -> None:
        """
        The methods a login calls on the portal's root and its challengers
        (C{loginMethods}, C{loginWithNonce}, C{respond}, classic C{login}
        ...) are not counted as application calls; the avatar's methods are.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        server = pbext.PBServerFactory(
            Portal(demo.DemoRealm(), [checker]), reactor=self.clock
        )
        self.instrumented(server)
        conn = self.connect(server)
        avatar = conn.login(credentials.UsernamePassword(b"alice", b"secret"))
        classic = connectedPair(server, pb.PBClientFactory(), clock=self.clock)
        self.addCleanup(classic.disconnect)
        classic.login(credentials.UsernamePassword(b"alice", b"secret"))
        conn.failureOf(
            conn.clientFactory.login(credentials.UsernamePassword(b"alice", b"no"))
        )
        self.flushLoggedErrors(UnauthorizedLogin)
        self.assertEqual(conn.resultOf(avatar.callRemote("whoami")), "alice")
        self.assertEqual(dict(self.metrics.calls), {"whoami": 1})
        self.assertEqual(dict(self.metrics.callErrors), {})
        self.assertEqual(self.metrics.logins["success"], 2)

    def test_otherFactoriesLogins(self) -> None:
        """
        Login events from connections of another factory are not counted.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        self.instrumented(server, self.publisher)
        self.publisher(
            {
                "log_namespace": "pbext.login.audit",
                "pbextEvent": "login",
                "peer": "192.0.2.1:1",
            }
        )
        self.assertEqual(dict(self.metrics.logins), {})

    def test_stopService(self) -> None:
        """
        A stopped instrumentation no longer observes the log.
        """
        server = pbext.PBServerFactory(Root(self.clock), reactor=self.clock)
        inst = metrics.instrument(server, self.metrics, publisher=self.publisher)
        inst.startService()
        inst.stopService()
        self.assertEqual(self.publisher._observers, [])

    def test_notABroker(self) -> None:
        """
        Factories that do not build pbext brokers, and factories already
        instrumented, are refused with L{TypeError}.
        """
        self.assertRaises(
            TypeError,
            metrics.instrument,
            pb.PBServerFactory(pb.Root()),
            self.metrics,
        )
        server = pbext.PBServerFactory(pb.Root())
        metrics.instrument(server, self.metrics)
        self.assertRaises(TypeError, metrics.instrument, server, self.metrics)


class PrometheusTests(TestCase):
    """
    The Prometheus exporter renders L{metrics.MemoryMetrics}.
    """

    if promParser is None:
        skip = _NO_PROMETHEUS

    def sample(self, text: str) -> dict[tuple[str, tuple[Any, ...]], float]:
        values = {}
        for family in promParser.text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return values

    def filled(self) -> metrics.MemoryMetrics:
        m = metrics.MemoryMetrics(buckets=[0.5, 1.0])
        m.connectionOpened()
        m.connectionOpened()
        m.connectionClosed()
        m.connectionRefused()
        m.loginAttempted("success")
        m.loginAttempted("failure")
        m.callFinished('we"ird\n', 0.25, False)
        m.callFinished("echo", 0.75, True)
        m.bytesReceived(10)
        m.bytesSent(20)
        m.policyViolation("framingError")
        return m

    def check(self, text: str) -> None:
        v = self.sample(text)
        echo = ("method", "echo")
        self.assertEqual(v[("pbext_connections_open", ())], 1)
        self.assertEqual(v[("pbext_connections_total", ())], 2)
        self.assertEqual(v[("pbext_connections_refused_total", ())], 1)
        self.assertEqual(v[("pbext_logins_total", (("result", "success"),))], 1)
        self.assertEqual(v[("pbext_logins_total", (("result", "throttled"),))], 0)
        self.assertEqual(v[("pbext_calls_total", (("method", 'we"ird\n'),))], 1)
        self.assertEqual(v[("pbext_call_errors_total", (("method", "echo"),))], 1)
        bucket = ("pbext_call_duration_seconds_bucket", (("le", "0.5"), echo))
        self.assertEqual(v[bucket], 0)
        bucket = ("pbext_call_duration_seconds_bucket", (("le", "1.0"), echo))
        self.assertEqual(v[bucket], 1)
        self.assertEqual(
            v[("pbext_call_duration_seconds_sum", (("method", "echo"),))], 0.75
        )
        self.assertEqual(v[("pbext_received_bytes_total", ())], 10)
        self.assertEqual(v[("pbext_sent_bytes_total", ())], 20)
        self.assertEqual(
            v[("pbext_policy_violations_total", (("kind", "framingError"),))], 1
        )
        for name, _ in v:
            self.assertTrue(name.startswith("pbext_"), name)

    def test_render(self) -> None:
        """
        L{metrics.renderPrometheus} writes every metric, prefixed C{pbext_},
        in the text format C{prometheus_client}'s parser reads.
        """
        self.check(metrics.renderPrometheus(self.filled()).decode("utf-8"))

    @defer.inlineCallbacks
    def test_servedOverHTTP(self) -> Any:
        """
        L{metrics.metricsSite} serves the metrics at C{/metrics} over HTTP.
        """
        from twisted.internet import reactor
        from twisted.web.client import Agent, readBody

        port = reactor.listenTCP(
            0, metrics.metricsSite(self.filled()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        agent = Agent(reactor)
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        response = yield agent.request(b"GET", url)
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        body = yield readBody(response)
        self.check(body.decode("utf-8"))

    @defer.inlineCallbacks
    def test_noAccessLog(self) -> Any:
        """
        A scrape of L{metrics.metricsSite} writes no access log line:
        Prometheus scrapes every few seconds.
        """
        from twisted.internet import reactor
        from twisted.logger import globalLogPublisher
        from twisted.web.client import Agent, readBody

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = reactor.listenTCP(
            0, metrics.metricsSite(self.filled()), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/metrics".encode()
        for _ in range(3):
            response = yield Agent(reactor).request(b"GET", url)
            yield readBody(response)
        logged = [repr(event) for event in events]
        self.assertEqual([line for line in logged if "/metrics" in line], [])


class UnavailableTests(SynchronousTestCase):
    """
    Without prometheus-client, the exporter says how to get it.
    """

    def test_missing(self) -> None:
        """
        L{metrics.metricsSite} raises L{metrics.MetricsUnavailable} naming
        C{pip install pbext[metrics]} when prometheus-client cannot be
        imported.
        """
        import sys

        saved = sys.modules.get("prometheus_client")

        def restore() -> None:
            if saved is None:
                sys.modules.pop("prometheus_client", None)
            else:
                sys.modules["prometheus_client"] = saved

        sys.modules["prometheus_client"] = None  # type: ignore[assignment]
        self.addCleanup(restore)
        e = self.assertRaises(
            metrics.MetricsUnavailable,
            metrics.metricsSite,
            metrics.MemoryMetrics(),
        )
        self.assertEqual(
            str(e), "metrics need the metrics extra: pip install 'pbext[metrics]'"
        )


class TapMetricsTests(TestCase):
    """
    C{twistd pbserver --metrics ENDPOINT}.
    """

    def test_missingExtra(self) -> None:
        """
        Without prometheus-client, C{--metrics} is a L{usage.UsageError}
        naming C{pip install 'pbext[metrics]'}; without C{--metrics} the
        options parse as before.
        """
        import sys

        from twisted.python import usage

        from pbext import tap

        saved = sys.modules.get("prometheus_client")

        def restore() -> None:
            if saved is None:
                sys.modules.pop("prometheus_client", None)
            else:
                sys.modules["prometheus_client"] = saved

        sys.modules["prometheus_client"] = None  # type: ignore[assignment]
        self.addCleanup(restore)
        e = self.assertRaises(
            usage.UsageError, tap.Options().parseOptions, ["--metrics", "tcp:9187"]
        )
        self.assertEqual(
            str(e),
            "--metrics tcp:9187: metrics need the metrics extra: "
            "pip install 'pbext[metrics]'",
        )
        options = tap.Options()
        options.parseOptions([])
        self.assertIsNone(options.get("metrics"))
        tap.makeService(options)

    @defer.inlineCallbacks
    def test_served(self) -> Any:
        """
        The service C{makeService} builds with C{--metrics} serves
        C{/metrics} counting the PB server's calls.
        """
        if promParser is None:
            raise SkipTest(_NO_PROMETHEUS)
        from twisted.internet import reactor
        from twisted.internet.endpoints import UNIXClientEndpoint
        from twisted.web.client import Agent, readBody

        from pbext import tap
        from pbext.client import connect

        directory = self.mktemp()
        os.makedirs(directory)
        pbPath = os.path.join(directory, "pb.sock")
        metricsPath = os.path.join(directory, "metrics.sock")
        options = tap.Options()
        options.parseOptions(
            ["--listen", f"unix:{pbPath}", "--metrics", f"unix:{metricsPath}"]
        )
        service = tap.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        root = yield connect(reactor, f"unix:path={pbPath}")
        self.addCleanup(root.broker.transport.loseConnection)
        result = yield root.callRemote("echo", "hello")
        self.assertEqual(result, "hello")

        class UnixEndpoints:
            def endpointForURI(self, uri: Any) -> Any:
                return UNIXClientEndpoint(reactor, metricsPath)

        agent = Agent.usingEndpointFactory(reactor, UnixEndpoints())
        response = yield agent.request(b"GET", b"http://localhost/metrics")
        self.assertEqual(response.code, 200)
        body = (yield readBody(response)).decode("utf-8")
        values = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in promParser.text_string_to_metric_families(body)
            for s in family.samples
        }
        self.assertEqual(values[("pbext_calls_total", (("method", "echo"),))], 1)
        self.assertEqual(values[("pbext_connections_open", ())], 1)
