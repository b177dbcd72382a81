"""
Tests for L{pbext._serialization}: how a broker turns values into jelly
and back.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.spread import jelly
from twisted.trial.unittest import SynchronousTestCase

from pbext._accelerator import speedups
from pbext.broker import Broker
from pbext.security import defaultPolicy


class Mine(Broker):
    """
    A broker that serializes in its own way.
    """

    def serialize(self, object, perspective=None, method=None, args=None, kw=None):  # type: ignore[no-untyped-def]
        return super().serialize(object, perspective, method, args, kw)


class SerializationTests(SynchronousTestCase):
    """
    L{pbext._serialization.Serialization} jellies and unjellies a
    connection's values with its policy, on the fast paths where it can.
    """

    def test_roundTrip(self) -> None:
        """
        A plain value's jelly unjellies to an equal value.
        """
        part = Broker()._pbextSerialization
        value = {"a": [1, 2.5, b"x", ("t", None)]}
        self.assertEqual(part.unserialize(part.serialize(value)), value)

    def test_plainSkipsJellier(self) -> None:
        """
        Under the default policy plain builtins take the plain path, whose
        jelly is classic jelly's.
        """
        part = Broker()._pbextSerialization
        self.assertTrue(part.plainSend)
        self.assertTrue(part.plainReceive)
        self.assertEqual(part.serialize([1, "a"]), jelly.jelly([1, "a"]))

    def test_fusedOnlyWithOwnSerialize(self) -> None:
        """
        The fused C path is used only when the broker's class serializes as
        pbext's does: a subclass overriding C{serialize} has its own called.
        """
        self.assertEqual(Broker()._pbextSerialization.fusedSend, speedups is not None)
        self.assertFalse(Mine()._pbextSerialization.fusedSend)

    def test_classicSecurityDecidesSending(self) -> None:
        """
        A classic C{SecurityOptions} given by the application is the
        taster of what is sent, as in classic PB.
        """
        options = jelly.SecurityOptions()
        part = Broker(security=options, policy=defaultPolicy())._pbextSerialization
        self.assertIs(part.outgoingTaster, options)

    def test_deferredSerializedLater(self) -> None:
        """
        A Deferred is serialized when it fires.
        """
        part = Broker()._pbextSerialization
        d: defer.Deferred[object] = defer.Deferred()
        result = part.serialize(d)
        d.callback([1])
        self.assertEqual(self.successResultOf(result), jelly.jelly([1]))
