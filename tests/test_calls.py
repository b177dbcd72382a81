"""
Tests for L{pbext._calls}: the outgoing call table of a broker, in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from pbext._calls import ABANDONED_MEMORY
from pbext._serialization import Serialization
from pbext.broker import CallTimeout
from tests._parts import connect, rootOf


class OutgoingCallsTests(SynchronousTestCase):
    """
    L{pbext._calls.OutgoingCalls} sends calls, answers their callers, times
    them out and cancels them.
    """

    def setUp(self) -> None:
        self.connection, self.server, self.client, self.root = connect(self)
        self.ref = rootOf(self.connection)
        self.calls = self.client._pbextOutgoing()

    def test_answered(self) -> None:
        """
        A call's caller gets the answer, and the table forgets the call.
        """
        d = self.ref.callRemote("echo", [1, "two"])
        self.connection.pump()
        self.assertEqual(self.successResultOf(d), [1, "two"])
        self.assertEqual(self.client.waitingForAnswers, {})

    def test_timeout(self) -> None:
        """
        A call with C{pbtimeout} and no answer in time fails with a
        L{CallTimeout} naming the method, the time and what to change; a
        pbext peer is asked to cancel it, and the late answer is dropped.
        """
        d = self.ref.callRemote("wait", pbtimeout=2)
        self.connection.pump()
        self.connection.advance(2)
        failure = self.failureResultOf(d, CallTimeout)
        self.assertIn("no answer to wait()", str(failure.value))
        self.assertIn("2 seconds", str(failure.value))
        self.connection.pump()
        self.assertEqual(self.root.cancelled, 1)
        self.assertEqual(self.client.waitingForAnswers, {})

    def test_cancelled(self) -> None:
        """
        Cancelling a call's Deferred forgets it and cancels it remotely.
        """
        d = self.ref.callRemote("wait")
        self.connection.pump()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.connection.pump()
        self.assertEqual(self.root.cancelled, 1)

    def test_lateAnswerDropped(self) -> None:
        """
        The answer to an abandoned call is dropped quietly: no violation.
        """
        violations: list[str] = []
        self.client._pbextViolation = (  # type: ignore[method-assign]
            lambda kind, message, **fields: violations.append(kind)
        )
        d = self.ref.callRemote("wait")
        self.connection.pump()
        requestID = max(self.client.waitingForAnswers)
        d.cancel()
        self.failureResultOf(d)
        self.calls.answer(requestID, 42)
        self.assertEqual(violations, [])
        self.calls.answer(requestID, 42)
        self.assertEqual(violations, ["unexpectedAnswer"])

    def test_abandonedMemoryBounded(self) -> None:
        """
        At most L{ABANDONED_MEMORY} abandoned request IDs are remembered.
        """
        waiting = self.client.waitingForAnswers
        for requestID in range(ABANDONED_MEMORY + 10):
            waiting[requestID] = defer.Deferred()
            self.calls.abandon(requestID)
        abandoned: Any = self.calls._abandoned
        self.assertEqual(len(abandoned), ABANDONED_MEMORY)
        self.assertNotIn(0, abandoned)

    def test_noAbandonedTableUntilNeeded(self) -> None:
        """
        A connection whose calls are all answered keeps no table of
        abandoned calls.
        """
        d = self.ref.callRemote("echo", 1)
        self.connection.pump()
        self.successResultOf(d)
        self.assertIsNone(self.calls._abandoned)

    def test_errorAnswer(self) -> None:
        """
        An error answer fails the caller's Deferred with the remote error.
        """
        d = self.ref.callRemote("fail")
        self.connection.pump()
        failure = self.failureResultOf(d)
        self.assertIn("the method failed", str(failure.value))
        self.flushLoggedErrors(ValueError)


class InlineAnswerTests(SynchronousTestCase):
    """
    An answer that needs no unjellying reaches its caller without the
    serializer's C{unserialize}; any other answer goes through it.
    """

    def test_atomsAndListsAnswered(self) -> None:
        """
        An int, float or bytes answer is given to its caller as it is,
        without a call to C{Serialization.unserialize}; a list answer is
        unjellied (by the decoder when accelerated, else by
        C{unserialize}) and arrives equal to what was sent.
        """
        seen: list[object] = []
        original = Serialization.unserialize

        def spy(self: Serialization, sexp: Any, perspective: Any = None) -> Any:
            seen.append(sexp)
            return original(self, sexp, perspective)

        self.patch(Serialization, "unserialize", spy)
        connection, server, client, root = connect(self)
        ref = rootOf(connection)
        del seen[:]
        results = [ref.callRemote("echo", v) for v in (42, 2.5, b"x")]
        connection.pump()
        self.assertEqual([self.successResultOf(d) for d in results], [42, 2.5, b"x"])
        # Only lists (the server's arguments, in pure-Python mode) went
        # through it: never an answer that is an atom.
        self.assertEqual([s for s in seen if type(s) in (int, float, bytes)], [])
        del seen[:]
        d = ref.callRemote("echo", [1, "two"])
        connection.pump()
        self.assertEqual(self.successResultOf(d), [1, "two"])
