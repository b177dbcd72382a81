"""
Tests for L{pbext._dispatch}: a broker's incoming dispatch, in memory.
"""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from pbext.broker import PolicyViolation
from pbext.security import defaultPolicy
from tests._parts import connect, rootOf


class IncomingDispatchTests(SynchronousTestCase):
    """
    L{pbext._dispatch.IncomingDispatch} admits, runs and answers the peer's
    calls, and keeps those still running.
    """

    def test_runningKeptUntilAnswered(self) -> None:
        """
        A call whose method returns a Deferred is kept as running until it
        fires, then answered.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        d = ref.callRemote("wait")
        connection.pump()
        running = server._pbextDispatcher.running
        self.assertEqual(len(running), 1)
        root.waiting[0].callback("done")
        connection.pump()
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(running, {})

    def test_cancel(self) -> None:
        """
        L{IncomingDispatch.cancel} cancels a running call by request ID; an
        unknown or malformed ID is ignored.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        connection.pump()
        dispatcher = server._pbextDispatcher
        (requestID,) = dispatcher.running
        dispatcher.cancel("x")
        dispatcher.cancel(requestID + 1)
        self.assertEqual(root.cancelled, 0)
        dispatcher.cancel(requestID)
        self.assertEqual(root.cancelled, 1)

    def test_tooManyRunning(self) -> None:
        """
        Past C{maxOutstandingCalls} running calls, a call is refused with a
        L{PolicyViolation} without running.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutstandingCalls=1)
        connection, server, client, root = connect(self, policy=policy)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        d = ref.callRemote("wait")
        connection.pump()
        failure = self.failureResultOf(d)
        self.assertIn("more than 1 calls unanswered", str(failure.value))
        self.assertTrue(failure.check(PolicyViolation), failure.type)
        self.assertEqual(len(root.waiting), 1)

    def test_noSuchMethod(self) -> None:
        """
        A call of a method the target lacks is answered with the classic
        C{NoSuchMethod} error.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        d = ref.callRemote("missing")
        connection.pump()
        self.assertIn("No such method", str(self.failureResultOf(d).value))

    def test_closedCancelsRunning(self) -> None:
        """
        When the connection is lost, every running call is cancelled.
        """
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        ref.callRemote("wait").addErrback(lambda f: None)
        connection.pump()
        connection.disconnect()
        self.assertEqual(root.cancelled, 1)
        self.assertEqual(server._pbextDispatcher.running, {})
