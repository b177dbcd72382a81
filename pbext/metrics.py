"""
Metrics for a pbext server: connections, logins, calls, bytes and policy
violations, counted in-process and optionally exported to Prometheus.

L{instrument} attaches an L{IMetrics} provider to one
L{pbext.server.PBServerFactory}: the factory's brokers become
L{MeteredBroker}s that count and time what they do, and an observer of the
login audit log (L{pbext.login.auditLog}) counts the logins of that
factory's connections.  L{MemoryMetrics} keeps the numbers in memory,
readable as attributes, and needs nothing beyond Twisted.

With the C{metrics} extra installed (C{pip install pbext[metrics]}, which
brings C{prometheus-client}), L{metricsResource} renders a
L{MemoryMetrics} in the Prometheus text format, every name prefixed
C{pbext_}, and C{twistd pbserver --metrics ENDPOINT} serves it at
C{/metrics}::

    metrics = MemoryMetrics()
    instrumentation = instrument(factory, metrics)
    instrumentation.setServiceParent(application)

@since: pbext NEXT
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, cast

from twisted.application import service
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.logger import (
    ILogObserver,
    LogPublisher,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import Interface, implementer

from pbext import _twisted
from pbext._peer import peerText
from pbext.broker import CONTROL_NAME, Broker
from pbext.keepalive import PING_OBJECT_ID

if TYPE_CHECKING:
    from twisted.web.resource import Resource
    from twisted.web.server import Site

__all__ = [
    "DEFAULT_BUCKETS",
    "IAdmissionMetrics",
    "IMetrics",
    "Instrumentation",
    "MemoryMetrics",
    "MeteredBroker",
    "MetricsUnavailable",
    "instrument",
    "metricsResource",
    "metricsSite",
    "renderPrometheus",
]

#: Upper bounds, in seconds, of the call latency histogram's buckets.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: The method label calls get once L{MemoryMetrics.maxMethodNames} distinct
#: names have been seen.
OTHER_METHOD = "other"

#: Login outcomes, as the C{result} label of C{pbext_logins_total} names them.
LOGIN_RESULTS = ("success", "failure", "throttled")

_AUDIT_NAMESPACE = "pbext.login.audit"
_AUDIT_RESULTS = {
    "login": "success",
    "loginFailed": "failure",
    "loginThrottled": "throttled",
}

#: Object IDs whose calls are pbext's own housekeeping, not application calls.
_HOUSEKEEPING = frozenset([CONTROL_NAME, PING_OBJECT_ID])


def _loginObjectTypes() -> tuple[type, ...]:
    """
    The classes of the objects a login talks to (the portal's root and its
    challengers, classic and pbext's): their methods (C{login},
    C{loginMethods}, C{loginWithNonce}, C{respond} ...) are the login's
    internals, counted as logins rather than as application calls.
    """
    from pbext import loginserver

    return (
        _twisted.PortalWrapper,
        _twisted.PortalAuthChallenger,
        loginserver._NonceChallenger,
    )


class MetricsUnavailable(ImportError):
    """
    The Prometheus exporter needs C{prometheus-client}, which is not
    installed: C{pip install pbext[metrics]}.
    """


class IMetrics(Interface):
    """
    Receives the measurements of an instrumented PB server.

    Every method is called on the reactor thread and must return quickly.
    """

    def connectionOpened() -> None:
        """
        A connection was accepted.
        """

    def connectionClosed() -> None:
        """
        An accepted connection ended.
        """

    def connectionRefused() -> None:
        """
        A connection was refused because a connection limit was reached.
        """

    def loginAttempted(result: str) -> None:
        """
        A login ended, or was throttled.

        @param result: C{"success"}, C{"failure"} or C{"throttled"} (a
            login delayed or refused after recent failures).
        """

    def callFinished(method: str, seconds: float, error: bool) -> None:
        """
        A remote call was answered.

        @param method: the method name the peer called (any string: the
            peer chooses it).
        @param seconds: how long the call took, from its arrival to its
            answer.
        @param error: whether it was answered with an error.
        """

    def bytesReceived(count: int) -> None:
        """
        C{count} bytes arrived from a peer.
        """

    def bytesSent(count: int) -> None:
        """
        C{count} bytes were written to a peer.
        """

    def policyViolation(kind: str) -> None:
        """
        A peer violated the security policy or a limit.

        @param kind: what it did, as the C{kind} of pbext's
            C{policyViolation} log events names it (such as
            C{"methodRefused"} or C{"framingError"}).
        """


class IAdmissionMetrics(Interface):
    """
    Receives what a server's admission of connections does
    (L{pbext.admission}): evictions and login deadlines.  An L{IMetrics}
    provider that also provides this gets them from L{instrument}.

    @since: pbext NEXT
    """

    def connectionEvicted(reason: str) -> None:
        """
        A connection was closed to make room for a new one.

        @param reason: the cap that was reached: C{"maxConnections"} or
            C{"maxConnectionsPerPrefix"}.
        """

    def loginTimedOut() -> None:
        """
        A connection was closed because it did not log in within the
        policy's C{loginTimeout}.
        """


class _Histogram:
    """
    Cumulative-bucket histogram of one label value.

    Each observation is counted once, in the first bucket it fits
    (L{observe} runs once per call); L{cumulative} adds them up when the
    histogram is read.
    """

    __slots__ = ("buckets", "_counts", "count", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        # One more than the buckets: observations above the last bound.
        self._counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self._counts[bisect_left(self.buckets, value)] += 1

    def cumulative(self) -> list[int]:
        """
        How many observations are at most each bucket's bound.
        """
        return list(accumulate(self._counts[:-1]))


@implementer(IMetrics, IAdmissionMetrics)
class MemoryMetrics:
    """
    An L{IMetrics} that keeps every number in memory, for tests, for an
    application to read, and for the Prometheus exporter to render.

    Method names come from peers, so only the first L{maxMethodNames}
    distinct names get their own label; later ones are counted as
    L{OTHER_METHOD}.

    @ivar connectionsOpen: connections open now.
    @ivar connectionsTotal: connections accepted so far.
    @ivar connectionsRefused: connections refused by the connection limits.
    @ivar connectionsEvicted: L{Counter} of connections closed to make room
        for new ones, by the cap reached.
    @ivar loginTimeouts: connections closed for not logging in in time.
    @ivar logins: L{Counter} of login outcomes (see L{LOGIN_RESULTS}).
    @ivar calls: L{Counter} of answered calls by method name.
    @ivar callErrors: L{Counter} of calls answered with an error, by name.
    @ivar bytesIn: bytes received.
    @ivar bytesOut: bytes sent.
    @ivar violations: L{Counter} of policy violations by kind.
    @ivar buckets: upper bounds of the latency histogram's buckets.
    """

    def __init__(
        self,
        maxMethodNames: int = 256,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        """
        @param maxMethodNames: how many distinct method names get a label.
        @param buckets: the latency histogram's bucket bounds, in seconds.
        """
        self.maxMethodNames = maxMethodNames
        self.buckets = tuple(sorted(buckets))
        self.connectionsOpen = 0
        self.connectionsTotal = 0
        self.connectionsRefused = 0
        self.connectionsEvicted: Counter[str] = Counter()
        self.loginTimeouts = 0
        self.logins: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.callErrors: Counter[str] = Counter()
        self._latency: dict[str, _Histogram] = {}
        self.bytesIn = 0
        self.bytesOut = 0
        self.violations: Counter[str] = Counter()

    def methodLabel(self, method: str) -> str:
        """
        The label C{method} is counted under: itself while fewer than
        L{maxMethodNames} names are known, else L{OTHER_METHOD}.
        """
        if method in self._latency or len(self._latency) < self.maxMethodNames:
            return method
        return OTHER_METHOD

    def latency(self, method: str) -> tuple[int, float]:
        """
        How many calls of C{method} were timed, and their total seconds.
        """
        histogram = self._latency.get(method)
        if histogram is None:
            return (0, 0.0)
        return (histogram.count, histogram.sum)

    def latencyBuckets(self) -> Iterator[tuple[str, list[int], int, float]]:
        """
        Each method's latency histogram: its label, the cumulative count of
        each of L{buckets}, the count and the sum.
        """
        for name, histogram in self._latency.items():
            yield name, histogram.cumulative(), histogram.count, histogram.sum

    # IMetrics

    def connectionOpened(self) -> None:
        self.connectionsOpen += 1
        self.connectionsTotal += 1

    def connectionClosed(self) -> None:
        self.connectionsOpen -= 1

    def connectionRefused(self) -> None:
        self.connectionsRefused += 1

    def loginAttempted(self, result: str) -> None:
        self.logins[result] += 1

    def connectionEvicted(self, reason: str) -> None:
        self.connectionsEvicted[reason] += 1

    def loginTimedOut(self) -> None:
        self.loginTimeouts += 1

    def callFinished(self, method: str, seconds: float, error: bool) -> None:
        label = self.methodLabel(method)
        self.calls[label] += 1
        if error:
            self.callErrors[label] += 1
        histogram = self._latency.get(label)
        if histogram is None:
            histogram = self._latency[label] = _Histogram(self.buckets)
        histogram.observe(max(seconds, 0.0))

    def bytesReceived(self, count: int) -> None:
        self.bytesIn += count

    def bytesSent(self, count: int) -> None:
        self.bytesOut += count

    def policyViolation(self, kind: str) -> None:
        self.violations[kind] += 1


class MeteredBroker(Broker):
    """
    A L{Broker} that reports to the L{Instrumentation} it was built for.

    L{instrument} makes a subclass of the factory's broker class bound to
    one L{Instrumentation}; this class itself is bound to none and counts
    nothing.

    Calls are timed from their arrival to their answer (or, for calls that
    want no answer, to the end of the method's synchronous part).  pbext's
    own keepalive and control calls are not counted as calls.
    """

    _pbextInstrumentation: Instrumentation | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pbextMetricCalls: dict[int, tuple[str, float]] = {}
        self._pbextMetricPeer: str | None = None

    def _pbextMetrics(self) -> IMetrics | None:
        inst = self._pbextInstrumentation
        return None if inst is None else inst.metrics

    def connectionMade(self) -> None:
        inst = self._pbextInstrumentation
        if inst is not None:
            inst.metrics.connectionOpened()
            try:
                self._pbextMetricPeer = peerText(self.transport.getPeer())
            except Exception:
                self._pbextMetricPeer = None
            inst._peerConnected(self._pbextMetricPeer)
        super().connectionMade()

    # The ignore below: pb.Broker's is untyped.
    def connectionLost(self, reason: Failure = connectionDone) -> None:  # type: ignore[override]
        inst = self._pbextInstrumentation
        self._pbextMetricCalls.clear()
        try:
            super().connectionLost(reason)
        finally:
            if inst is not None:
                inst.metrics.connectionClosed()
                inst._peerDisconnected(self._pbextMetricPeer)

    def dataReceived(self, chunk: bytes) -> None:
        metrics = self._pbextMetrics()
        if metrics is not None:
            metrics.bytesReceived(len(chunk))
        super().dataReceived(chunk)

    def _pbextReceivedInto(self, count: int) -> bool:
        metrics = self._pbextMetrics()
        if metrics is not None:
            metrics.bytesReceived(count)
        return super()._pbextReceivedInto(count)

    def _pbextWritesConnected(self) -> None:
        super()._pbextWritesConnected()
        # Count what is sent where it is written, so that the answers to
        # several calls read together still leave in one write.
        # The instrumentation is the class's; its metrics are read at each
        # write (they may be replaced).  The broker itself is not kept, so
        # that no cycle outlives the connection.
        inst = self._pbextInstrumentation
        if inst is None:
            return
        write = self._pbextWrite
        writeSequence = self._pbextWriteSequence

        def countingWrite(data: bytes) -> None:
            inst.metrics.bytesSent(len(data))
            write(data)

        def countingWriteSequence(pieces: list[bytes]) -> None:
            inst.metrics.bytesSent(sum(map(len, pieces)))
            writeSequence(pieces)

        self._pbextWrite = countingWrite
        self._pbextWriteSequence = countingWriteSequence

    def _pbextViolation(self, kind: str, message: str, **fields: Any) -> None:
        # Counted here rather than from the log: the log is rate-limited.
        metrics = self._pbextMetrics()
        if metrics is not None:
            metrics.policyViolation(kind)
        super()._pbextViolation(kind, message, **fields)

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
        tracked = (
            self._pbextInstrumentation is not None
            and isinstance(requestID, int)
            and isinstance(message, bytes)
            and objectID not in _HOUSEKEEPING
            and not isinstance(self.localObjectForID(objectID), _loginObjectTypes())
        )
        if tracked:
            assert isinstance(requestID, int) and isinstance(message, bytes)
            name = message.decode("utf-8", "replace")
            self._pbextMetricCalls[requestID] = (name, self._pbextGetClock().seconds())
        try:
            super()._recvMessage(
                findObjMethod,
                requestID,
                objectID,
                message,
                answerRequired,
                netArgs,
                netKw,
            )
        finally:
            if tracked and not answerRequired:
                self._pbextFinishCall(requestID, False)

    def _pbextFinishCall(self, requestID: object, error: bool) -> None:
        # The ignore below: request IDs are ints on the wire, object here.
        entry = self._pbextMetricCalls.pop(requestID, None)  # type: ignore[call-overload]
        metrics = self._pbextMetrics()
        if entry is None or metrics is None:
            return
        name, started = entry
        metrics.callFinished(name, self._pbextGetClock().seconds() - started, error)

    def _sendAnswer(self, netResult: Any, requestID: int) -> None:
        super()._sendAnswer(netResult, requestID)
        # An answer too large to send became an error, already counted.
        self._pbextFinishCall(requestID, False)

    def _sendError(self, fail: Any, requestID: int) -> None:
        self._pbextFinishCall(requestID, True)
        super()._sendError(fail, requestID)


@implementer(ILogObserver)
class _AuditObserver:
    """
    Counts the login audit events of one instrumented factory's connections.
    """

    def __init__(self, instrumentation: Instrumentation) -> None:
        self._instrumentation = instrumentation

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") != _AUDIT_NAMESPACE:
            return
        result = _AUDIT_RESULTS.get(event.get("pbextEvent", ""))
        if result is None:
            return
        inst = self._instrumentation
        if event.get("peer") in inst._peers:
            inst.metrics.loginAttempted(result)


class Instrumentation(service.Service):
    """
    The link between one server factory and its L{IMetrics}, made by
    L{instrument}.

    Brokers count as soon as it exists; logins are counted while it runs
    (between C{startService} and C{stopService}), because they are read
    from the login audit log, which is shared by the whole process.  Each
    login event is attributed to this factory by the peer address of one of
    its open connections.

    @ivar factory: the instrumented factory.
    @ivar metrics: where the measurements go.
    """

    def __init__(
        self,
        factory: pb.PBServerFactory,
        metrics: IMetrics,
        publisher: LogPublisher | None = None,
    ) -> None:
        self.factory = factory
        self.metrics = metrics
        self._publisher = globalLogPublisher if publisher is None else publisher
        self._observer = _AuditObserver(self)
        self._peers: Counter[str | None] = Counter()

    def _peerConnected(self, peer: str | None) -> None:
        self._peers[peer] += 1

    def _peerDisconnected(self, peer: str | None) -> None:
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]

    def startService(self) -> None:
        super().startService()
        self._publisher.addObserver(self._observer)

    def stopService(self) -> None:
        self._publisher.removeObserver(self._observer)
        # The ignore below: Service.stopService is untyped.
        return super().stopService()  # type: ignore[no-any-return]


def instrument(
    factory: pb.PBServerFactory,
    metrics: IMetrics,
    publisher: LogPublisher | None = None,
) -> Instrumentation:
    """
    Count and time what C{factory}'s connections do, into C{metrics}.

    C{factory.protocol} (a L{pbext.broker.Broker} subclass) is replaced by a
    subclass of it bound to the returned L{Instrumentation}, and the
    factory's C{buildProtocol} counts connections it refuses.  Start the
    returned service (or give it a parent) to count logins too; stopping it
    stops observing the log.

    @param factory: a L{pbext.server.PBServerFactory}.
    @param metrics: receives the measurements.
    @param publisher: the log publisher the login audit events are read
        from; the global one by default.
    @raise TypeError: if C{factory.protocol} is not a pbext broker, or the
        factory is instrumented already.
    """
    base = factory.protocol
    if not (isinstance(base, type) and issubclass(base, Broker)):
        raise TypeError(f"{factory!r} does not build pbext brokers; cannot meter it")
    metered = issubclass(base, MeteredBroker)
    if metered and getattr(base, "_pbextInstrumentation", None) is not None:
        raise TypeError(f"{factory!r} is instrumented already")
    inst = Instrumentation(factory, metrics, publisher)
    bases = (base,) if metered else (MeteredBroker, base)
    factory.protocol = cast(
        "type[Broker]",
        type("Metered" + base.__name__, bases, {"_pbextInstrumentation": inst}),
    )
    buildProtocol = factory.buildProtocol

    def countRefusals(addr: IAddress | None) -> pb.Broker | None:
        protocol = buildProtocol(addr)
        if protocol is None:
            metrics.connectionRefused()
        return protocol

    # The ignore below: replaced on this factory only, by design; every
    # other factory of its class is unchanged.
    factory.buildProtocol = countRefusals  # type: ignore[method-assign]
    admission = getattr(getattr(factory, "_pbext", None), "admission", None)
    if admission is not None and IAdmissionMetrics.providedBy(metrics):

        def admissionOutcome(outcome: str, reason: str) -> None:
            if outcome == "evicted":
                metrics.connectionEvicted(reason)
            elif outcome == "loginTimeout":
                metrics.loginTimedOut()

        admission.observers.append(admissionOutcome)
    return inst


# -- Prometheus --------------------------------------------------------------


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as e:
        from pbext._extras import METRICS_MISSING

        raise MetricsUnavailable(METRICS_MISSING) from e
    return prometheus_client


def _connectionFamilies(metrics: MemoryMetrics) -> Iterator[Any]:
    """
    The families counting connections: open, accepted, refused, evicted
    and timed out before logging in.
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily(
        "pbext_connections_open",
        "PB connections open now.",
        value=metrics.connectionsOpen,
    )
    yield CounterMetricFamily(
        "pbext_connections",
        "PB connections accepted.",
        value=metrics.connectionsTotal,
    )
    yield CounterMetricFamily(
        "pbext_connections_refused",
        "PB connections refused by the connection limits.",
        value=metrics.connectionsRefused,
    )
    evicted = CounterMetricFamily(
        "pbext_connections_evicted",
        "PB connections closed to make room for new ones, by the cap reached.",
        labels=["cap"],
    )
    for cap, count in metrics.connectionsEvicted.items():
        evicted.add_metric([cap], count)
    yield evicted
    yield CounterMetricFamily(
        "pbext_login_timeouts",
        "PB connections closed for not logging in within loginTimeout.",
        value=metrics.loginTimeouts,
    )
    logins = CounterMetricFamily("pbext_logins", "Logins by result.", labels=["result"])
    for result in LOGIN_RESULTS:
        logins.add_metric([result], metrics.logins[result])
    yield logins


def _callFamilies(metrics: MemoryMetrics) -> Iterator[Any]:
    """
    The families counting remote calls: answered and failed by method, and
    their latency histogram.
    """
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    calls = CounterMetricFamily(
        "pbext_calls", "Remote calls answered, by method.", labels=["method"]
    )
    errors = CounterMetricFamily(
        "pbext_call_errors",
        "Remote calls answered with an error, by method.",
        labels=["method"],
    )
    for name, count in metrics.calls.items():
        calls.add_metric([name], count)
        errors.add_metric([name], metrics.callErrors[name])
    yield calls
    yield errors
    latency = HistogramMetricFamily(
        "pbext_call_duration_seconds",
        "Time from a call's arrival to its answer, by method.",
        labels=["method"],
    )
    for name, counts, count, total in metrics.latencyBuckets():
        buckets = [(repr(float(bound)), c) for bound, c in zip(metrics.buckets, counts)]
        buckets.append(("+Inf", count))
        latency.add_metric([name], buckets, total)
    yield latency


def _trafficFamilies(metrics: MemoryMetrics) -> Iterator[Any]:
    """
    The families counting bytes each way and policy violations by kind.
    """
    from prometheus_client.core import CounterMetricFamily

    yield CounterMetricFamily(
        "pbext_received_bytes", "Bytes received.", value=metrics.bytesIn
    )
    yield CounterMetricFamily("pbext_sent_bytes", "Bytes sent.", value=metrics.bytesOut)
    violations = CounterMetricFamily(
        "pbext_policy_violations",
        "Security policy and limit violations, by kind.",
        labels=["kind"],
    )
    for kind, count in metrics.violations.items():
        violations.add_metric([kind], count)
    yield violations


def _collector(metrics: MemoryMetrics) -> Any:
    """
    A prometheus-client collector reading C{metrics} when scraped: the
    connection, call and traffic families, in that order.
    """

    class Collector:
        def collect(self) -> Iterator[Any]:
            yield from _connectionFamilies(metrics)
            yield from _callFamilies(metrics)
            yield from _trafficFamilies(metrics)

    return Collector()


def renderPrometheus(metrics: MemoryMetrics) -> bytes:
    """
    C{metrics} in the Prometheus text exposition format.

    @raise MetricsUnavailable: if C{prometheus-client} is not installed.
    """
    client = _prometheus()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(_collector(metrics))
    # The ignore below: prometheus_client is untyped.
    return client.generate_latest(registry)  # type: ignore[no-any-return]


def metricsResource(metrics: MemoryMetrics) -> Resource:
    """
    A L{twisted.web.resource.Resource} rendering C{metrics} for Prometheus.

    @raise MetricsUnavailable: if C{prometheus-client} is not installed.
    """
    client = _prometheus()
    from twisted.web.resource import Resource

    class MetricsPage(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", client.CONTENT_TYPE_LATEST.encode())
            return renderPrometheus(metrics)

    return MetricsPage()


def metricsSite(metrics: MemoryMetrics) -> Site:
    """
    A L{twisted.web.server.Site} serving C{metrics} at C{/metrics}, for
    C{twistd pbserver --metrics}.

    @raise MetricsUnavailable: if C{prometheus-client} is not installed.
    """
    page = metricsResource(metrics)
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class QuietSite(Site):
        """
        A site that writes no access log line per request: Prometheus
        scrapes every few seconds, and the lines would bury the server's
        own log.
        """

        noisy = False

        def log(self, request: Any) -> None:
            pass

    root = Resource()
    root.putChild(b"metrics", page)
    return QuietSite(root)
