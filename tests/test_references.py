"""
Tests for L{pbext._references}: the reference and cache caps of one
connection and the checks on what a peer asks to release.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.logger import LogEvent, globalLogPublisher
from twisted.spread import jelly, pb
from twisted.trial.unittest import SynchronousTestCase

from pbext import _references
from pbext._wire import PolicyViolation
from pbext.security import SecurityPolicy, defaultPolicy
from tests._parts import connect, rootOf


def policyWith(**limits: Any) -> SecurityPolicy:
    """
    The default policy with some limits changed.
    """
    return SecurityPolicy(
        name="references-test",
        limits=dataclasses.replace(defaultPolicy().limits, **limits),
    )


class Thing(pb.Referenceable):
    """
    An object a broker can give its peer a reference to.
    """


class RegisterReferenceTests(SynchronousTestCase):
    """
    L{_references.registerReference} gives an object one ID per connection,
    within the policy's C{maxReferences}.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.connection, self.server, _, _ = connect(self, policyWith(maxReferences=3))

    def test_sameObjectSameID(self) -> None:
        """
        The same object registered twice keeps its ID and counts one more
        reference, as classic PB's C{registerReference} does.
        """
        thing = Thing()
        first = _references.registerReference(self.server, thing)
        second = _references.registerReference(self.server, thing)
        self.assertEqual(first, second)
        self.assertEqual(self.server.localObjects[first].refcount, 2)

    def test_cap(self) -> None:
        """
        Past C{maxReferences} objects, registering one more raises
        L{PolicyViolation} and logs a C{maxReferences} violation; the
        connection stays up.
        """
        held = [Thing() for _ in range(8)]
        registered = 0
        with self.assertRaises(PolicyViolation) as caught:
            for thing in held:
                _references.registerReference(self.server, thing)
                registered += 1
        self.assertIn("more than 3 references", str(caught.exception))
        self.assertGreaterEqual(registered, 3)
        self.assertLessEqual(registered, 4)
        kinds = [e.get("kind") for e in self.events if "pbextEvent" in e]
        self.assertIn("maxReferences", kinds)
        self.assertFalse(self.server.disconnected)

    def test_repeatedViolationsDisconnect(self) -> None:
        """
        A peer that keeps asking past the cap is disconnected after the
        fourth refusal, as classic PB does past C{MAX_BROKER_REFS}.
        """
        refused = 0
        for _ in range(20):
            try:
                _references.registerReference(self.server, Thing())
            except PolicyViolation:
                refused += 1
                if refused == 3:
                    self.connection.pump()
                    self.assertFalse(self.server.disconnected)
        self.connection.pump()
        self.assertTrue(self.server.disconnected)


class CacheRoomTests(SynchronousTestCase):
    """
    L{_references.checkCacheRoom} refuses a copy past C{maxCachedObjects}.
    """

    def test_full(self) -> None:
        """
        With as many cached copies as the limit, one more is refused with
        L{jelly.InsecureJelly}; below it, nothing is raised.
        """
        _, server, _, _ = connect(self, policyWith(maxCachedObjects=2))
        _references.checkCacheRoom(server)
        server.locallyCachedObjects[1] = object()
        _references.checkCacheRoom(server)
        server.locallyCachedObjects[2] = object()
        error = self.assertRaises(
            jelly.InsecureJelly, _references.checkCacheRoom, server
        )
        self.assertIn("more than 2 cached objects", str(error))
        server.locallyCachedObjects.clear()


class KnownIDTests(SynchronousTestCase):
    """
    L{_references.knownID} says whether a peer may release an ID, and logs
    a bogus one instead of failing as classic PB did.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        _, self.server, _, _ = connect(self)

    def kinds(self) -> list[Any]:
        return [e.get("kind") for e in self.events if "pbextEvent" in e]

    def test_known(self) -> None:
        """
        An integer ID in the table is known, and nothing is logged.
        """
        self.assertTrue(_references.knownID(self.server, 7, {7: "x"}, "decref"))
        self.assertEqual(self.kinds(), [])

    def test_unknown(self) -> None:
        """
        An ID missing from the table, or one that is not an integer, is
        refused with a C{bad<Command>} violation naming the ID (a value
        that is not a number as a short repr).
        """
        self.assertFalse(_references.knownID(self.server, 8, {7: "x"}, "decref"))
        self.assertFalse(_references.knownID(self.server, [7], {7: "x"}, "uncache"))
        self.assertEqual(self.kinds(), ["badDecref", "badUncache"])
        ids = [e.get("objectID") for e in self.events if "pbextEvent" in e]
        self.assertEqual(ids, [8, "[7]"])


class HeldObjectsTests(SynchronousTestCase):
    """
    L{_references.heldObjects} counts what a connection holds for its peer.
    """

    def test_counts(self) -> None:
        """
        A fresh connection holds nothing (the root and the control object
        do not count); a reference given to the peer counts one, a running
        call one; a closed connection holds nothing.
        """
        connection, server, _, root = connect(self)
        remote = rootOf(connection)
        self.assertEqual(_references.heldObjects(server), 0)
        _references.registerReference(server, Thing())
        self.assertEqual(_references.heldObjects(server), 1)
        remote.callRemote("wait")
        connection.pump()
        self.assertEqual(_references.heldObjects(server), 2)
        root.waiting.pop().callback(None)
        connection.pump()
        self.assertEqual(_references.heldObjects(server), 1)
        connection.disconnect()
        self.assertEqual(_references.heldObjects(server), 0)
