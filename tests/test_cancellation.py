"""
Tests of remote cancellation: a pbext server serving
L{tests._slowroot.SlowRoot}, called by pbext and stock clients.

A pbext client that cancels a call, or whose call times out, asks a pbext
server to cancel the Deferred running it; a stock client is served as
classic PB serves it.  L{CancellationTests} pins this on an in-memory
connection whose time is a L{task.Clock}; L{RemoteCancellationTests} (in
the integration part of the suite) runs the same calls against a real
C{twistd pbserver} on 127.0.0.1.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, endpoints, reactor, task
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase, TestCase

import pbext
from pbext.broker import CallTimeout
from pbext.testing import PBConnection, connectedPair
from tests._process import startPBServer
from tests._slowroot import MARKER_VARIABLE, SlowRoot

ROOT = "tests._slowroot.SlowRoot"

#: Seconds any one step (connecting, a call) may take before the test fails.
STEP = 10.0

#: Seconds the server has, in all, to report a cancellation.
POLL_TOTAL = 5.0
POLL_INTERVAL = 0.1


def _bounded(d: defer.Deferred[Any], seconds: float = STEP) -> defer.Deferred[Any]:
    """
    Fail C{d} with L{defer.TimeoutError} unless it fires in C{seconds}.
    """
    return d.addTimeout(seconds, reactor)


@defer.inlineCallbacks
def _connect(test: TestCase, port: int, factory: pb.PBClientFactory) -> Any:
    """
    Connect C{factory} to 127.0.0.1:C{port}, disconnect it at cleanup, and
    return its root object.
    """
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    yield _bounded(endpoint.connect(factory))
    test.addCleanup(factory.disconnect)
    root = yield _bounded(factory.getRootObject())
    return root


@defer.inlineCallbacks
def _pollCancelled(root: pb.RemoteReference) -> Any:
    """
    Ask C{root} whether its last C{wait} was cancelled until it says so,
    for at most L{POLL_TOTAL} seconds.

    @return: a L{defer.Deferred} firing with the last answer.
    """
    answer = False
    deadline = reactor.seconds() + POLL_TOTAL
    for _attempt in range(int(POLL_TOTAL / POLL_INTERVAL)):
        left = deadline - reactor.seconds()
        if left <= 0:
            break
        answer = yield _bounded(root.callRemote("wasCancelled"), left)
        if answer:
            break
        yield task.deferLater(reactor, POLL_INTERVAL)
    return answer


class CancellationTests(SynchronousTestCase):
    """
    Cancelling a pbext client's call cancels the server's Deferred, on an
    in-memory connection.
    """

    def connect(self, clientFactory: pb.PBClientFactory) -> PBConnection:
        """
        Connect C{clientFactory} to a pbext server of a fresh L{SlowRoot},
        both keeping time with the connection's clock.
        """
        self.marker = os.path.abspath(self.mktemp())
        self.root = SlowRoot(markerPath=self.marker)
        clock = task.Clock()
        connection = connectedPair(
            pbext.PBServerFactory(self.root, reactor=clock), clientFactory, clock=clock
        )
        self.addCleanup(connection.disconnect)
        return connection

    def test_cancelCancelsServerCall(self) -> None:
        """
        Cancelling the Deferred of a pbext client's C{wait} fails it with
        L{defer.CancelledError} at once, and the server's Deferred for that
        call is cancelled too.
        """
        connection = self.connect(pbext.PBClientFactory())
        root = connection.rootObject()
        self.assertFalse(connection.resultOf(root.callRemote("wasCancelled")))
        waiting = root.callRemote("wait")
        connection.pump()
        self.assertNoResult(waiting)
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertFalse(self.root.cancelled)
        connection.pump()
        self.assertTrue(self.root.cancelled)
        self.assertTrue(connection.resultOf(root.callRemote("wasCancelled")))
        self.assertTrue(os.path.exists(self.marker))

    def test_timeoutCancelsServerCall(self) -> None:
        """
        A pbext client's per-call C{pbtimeout} fails the call with
        L{CallTimeout} when its time is up, not before, and the server's
        Deferred for that call is cancelled.
        """
        connection = self.connect(pbext.PBClientFactory())
        root = connection.rootObject()
        waiting = root.callRemote("wait", pbtimeout=0.5)
        connection.advance(0.4)
        self.assertNoResult(waiting)
        self.assertFalse(self.root.cancelled)
        connection.advance(0.1)
        self.failureResultOf(waiting, CallTimeout)
        connection.pump()
        self.assertTrue(self.root.cancelled)
        self.assertTrue(os.path.exists(self.marker))

    def test_stockClientUnaffected(self) -> None:
        """
        A stock L{pb.PBClientFactory} client is served as classic PB serves
        it: its C{wait} stays running, uncancelled, while its other calls
        are answered.
        """
        connection = self.connect(pb.PBClientFactory())
        root = connection.rootObject()
        waiting = root.callRemote("wait")
        # Disconnecting at cleanup fails the wait, as classic PB does.
        waiting.addErrback(lambda f: f.trap(pb.PBConnectionLost))
        connection.advance(60)
        self.assertFalse(connection.resultOf(root.callRemote("wasCancelled")))
        self.assertNoResult(waiting)
        self.assertFalse(self.root.cancelled)
        self.assertFalse(os.path.exists(self.marker))


class RemoteCancellationTests(TestCase):
    """
    Cancelling a pbext client's call cancels the server's Deferred, served
    by a real C{twistd pbserver}.
    """

    timeout = 60

    @defer.inlineCallbacks
    def _startServer(self) -> Any:
        """
        Start the server and return C{(port, markerPath)}.
        """
        marker = os.path.abspath(self.mktemp())
        proc = yield startPBServer(self, "--root", ROOT, env={MARKER_VARIABLE: marker})
        return proc.port, marker

    @defer.inlineCallbacks
    def test_cancelCancelsServerCall(self):
        """
        Cancelling the Deferred of a pbext client's C{wait} fails it with
        L{defer.CancelledError} at once, and the server's Deferred for that
        call is cancelled too.
        """
        port, marker = yield self._startServer()
        root = yield _connect(self, port, pbext.PBClientFactory())
        self.assertFalse((yield _bounded(root.callRemote("wasCancelled"))))
        waiting = root.callRemote("wait")
        self.assertNoResult(waiting)
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertTrue((yield _pollCancelled(root)))
        self.assertTrue(os.path.exists(marker))

    @defer.inlineCallbacks
    def test_timeoutCancelsServerCall(self):
        """
        A pbext client's per-call C{pbtimeout} fails the call with
        L{CallTimeout}, and the server's Deferred for that call is cancelled.
        """
        port, marker = yield self._startServer()
        root = yield _connect(self, port, pbext.PBClientFactory())
        waiting = root.callRemote("wait", pbtimeout=0.5)
        (failure,) = yield _bounded(waiting.addCallbacks(self.fail, lambda f: [f]))
        self.assertTrue(failure.check(CallTimeout), failure)
        self.assertTrue((yield _pollCancelled(root)))
        self.assertTrue(os.path.exists(marker))

    @defer.inlineCallbacks
    def test_stockClientUnaffected(self):
        """
        A stock L{pb.PBClientFactory} client is served as classic PB serves
        it: its C{wait} stays running, uncancelled, while its other calls
        are answered.  (Cancelling a stock client's Deferred is not
        supported, so it is not tried.)
        """
        port, marker = yield self._startServer()
        root = yield _connect(self, port, pb.PBClientFactory())
        waiting = root.callRemote("wait")
        # Disconnecting at cleanup fails the wait, as classic PB does.
        waiting.addErrback(lambda f: f.trap(pb.PBConnectionLost))
        self.assertFalse((yield _bounded(root.callRemote("wasCancelled"))))
        self.assertNoResult(waiting)
        self.assertFalse(os.path.exists(marker))
