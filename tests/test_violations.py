"""
Tests for L{pbext._violations}: the rate-limited log of what a peer did
wrong.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from pbext._violations import REPR_LIMIT, ViolationLog, seconds, short


class ViolationLogTests(SynchronousTestCase):
    """
    L{ViolationLog} logs at most C{maxPerWindow} violations a minute, then
    says how many it left out.
    """

    def setUp(self) -> None:
        self.now = 100.0
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.log = ViolationLog(lambda: self.now, lambda: "1.2.3.4:5", "default", 2)

    def kinds(self) -> list[Any]:
        return [e.get("pbextEvent") for e in self.events if "pbextEvent" in e]

    def test_fields(self) -> None:
        """
        An event names the kind, the peer, the policy, and its fields, a
        long one cut to a short repr.
        """
        self.assertTrue(self.log.report("badThing", "it was bad", {"n": 1}))
        self.log.report("other", "x", {"data": b"x" * 1000})
        first, second = (e for e in self.events if "pbextEvent" in e)
        self.assertEqual(
            (first["kind"], first["peer"], first["policy"], first["n"]),
            ("badThing", "1.2.3.4:5", "default", 1),
        )
        self.assertLessEqual(len(second["data"]), REPR_LIMIT + 3)

    def test_rateLimited(self) -> None:
        """
        Past C{maxPerWindow} events in a window, events are counted, not
        logged; the next window starts with one event saying how many.
        """
        results = [self.log.report("k", "m", {}) for _ in range(5)]
        self.assertEqual(results, [True, True, False, False, False])
        self.assertEqual(self.kinds(), ["policyViolation"] * 2)
        self.now += 60
        self.log.report("k", "m", {})
        self.assertEqual(
            self.kinds(),
            ["policyViolation"] * 2 + ["violationsSuppressed", "policyViolation"],
        )
        suppressed = [e for e in self.events if e.get("suppressed")]
        self.assertEqual(suppressed[0]["suppressed"], 3)


class TextTests(SynchronousTestCase):
    """
    The helpers that put values in events and messages.
    """

    def test_seconds(self) -> None:
        """
        L{seconds} says C{second} for one and C{seconds} otherwise.
        """
        self.assertEqual(
            [seconds(1), seconds(2), seconds(0.5)],
            ["1 second", "2 seconds", "0.5 seconds"],
        )

    def test_short(self) -> None:
        """
        L{short} cuts a long repr to L{REPR_LIMIT} characters and an
        ellipsis.
        """
        self.assertEqual(short("ab"), "'ab'")
        self.assertEqual(len(short("x" * 500)), REPR_LIMIT + 3)
