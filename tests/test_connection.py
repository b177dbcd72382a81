"""
Tests for L{pbext._connection}: the set-up and tear-down steps of a
broker's connection and the decisions they make once per connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.spread import jelly
from twisted.trial.unittest import SynchronousTestCase

from pbext import _connection, _twisted
from pbext.broker import Broker
from pbext.security import SecurityPolicy, classicPolicy, defaultPolicy
from tests._parts import connect, rootOf


class Forwarder(Protocol):
    """
    A protocol that says it hands its bytes to the broker it holds.
    """

    _pbextForwardsReceivedBytes = True

    def __init__(self, broker: object) -> None:
        self.broker = broker


class Rewriter(Protocol):
    """
    A protocol that holds a broker but says nothing of what it does with
    the bytes.
    """

    def __init__(self, broker: object) -> None:
        self.broker = broker


class DeliversToTests(SynchronousTestCase):
    """
    L{_connection.deliversTo} lets a transport receive into the broker's
    buffers only when nothing between them can change the bytes.
    """

    def test_broker(self) -> None:
        """
        The broker itself, or a forwarder holding it, receives unchanged.
        """
        broker = object()
        self.assertTrue(_connection.deliversTo(broker, broker))
        self.assertTrue(_connection.deliversTo(Forwarder(broker), broker))
        self.assertTrue(_connection.deliversTo(Forwarder(Forwarder(broker)), broker))

    def test_endpointWrapper(self) -> None:
        """
        Twisted's endpoint wrapper around the broker hands bytes on
        unchanged.
        """
        broker = Protocol()
        wrapper = _twisted.WrappingProtocol(defer.Deferred(), broker)
        self.assertTrue(_connection.deliversTo(wrapper, broker))

    def test_others(self) -> None:
        """
        Any other protocol, a wrapper chain too deep, or C{None} does not.
        """
        broker = object()
        self.assertFalse(_connection.deliversTo(Rewriter(broker), broker))
        self.assertFalse(_connection.deliversTo(None, broker))
        deep: object = broker
        for _ in range(5):
            deep = Forwarder(deep)
        self.assertFalse(_connection.deliversTo(deep, broker))


class ReadsInPlaceTests(SynchronousTestCase):
    """
    L{_connection.readsInPlace} keeps a subclass that overrides
    C{dataReceived} on Twisted's reading path.
    """

    def test_subclasses(self) -> None:
        """
        pbext's broker reads in place; a subclass that overrides
        C{dataReceived} does not, unless it overrides
        C{_pbextReceivedInto} with it.
        """

        class Sees(Broker):
            def dataReceived(self, data: bytes) -> None:
                Broker.dataReceived(self, data)

        class SeesBoth(Sees):
            def dataReceived(self, data: bytes) -> None:
                Sees.dataReceived(self, data)

            def _pbextReceivedInto(self, count: int) -> bool:
                return Sees._pbextReceivedInto(self, count)

        self.assertTrue(_connection.readsInPlace(Broker))
        self.assertFalse(_connection.readsInPlace(Sees))
        self.assertTrue(_connection.readsInPlace(SeesBoth))
        self.assertFalse(_connection.readsInPlace(Protocol))


class PolicyForTests(SynchronousTestCase):
    """
    L{_connection.policyFor} picks the policy a broker applies.
    """

    def test_choice(self) -> None:
        """
        An explicit policy wins; else a L{SecurityPolicy} given as the
        classic C{security} argument; else the default policy.
        """
        mine = SecurityPolicy(name="mine")
        classic = classicPolicy()
        self.assertIs(_connection.policyFor(classic, mine), mine)
        self.assertIs(_connection.policyFor(classic, None), classic)
        chosen = _connection.policyFor(jelly.SecurityOptions(), None)
        self.assertEqual(chosen.name, defaultPolicy().name)


class ApplyOptionsTests(SynchronousTestCase):
    """
    L{_connection.applyOptions} sets what the constructor was given and
    leaves a subclass's class attributes alone otherwise.
    """

    def test_givenAndNot(self) -> None:
        """
        Given options become instance attributes; options not given leave
        the class's values.
        """

        class Patient(Broker):
            callTimeout = 99.0
            keepaliveInterval = 7.0

        broker = Patient()
        _connection.applyOptions(broker, None, 3.0, None, True)
        self.assertEqual(broker.callTimeout, 99.0)
        self.assertEqual(broker.keepaliveInterval, 3.0)
        self.assertTrue(broker.typedCalls)
        self.assertNotIn("callTimeout", vars(broker))


class UnserializerTests(SynchronousTestCase):
    """
    L{_connection.unserializerOf} keeps a subclass's own C{unserialize} in
    the path of every received value.
    """

    def test_override(self) -> None:
        """
        pbext's broker unserializes through its serialization part; a
        subclass that overrides C{unserialize} through itself.
        """

        class Own(Broker):
            def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
                return Broker.unserialize(self, sexp, perspective)

        plain = Broker()
        own = Own()
        self.assertIs(
            _connection.unserializerOf(plain, Broker), plain._pbextSerialization
        )
        self.assertIs(_connection.unserializerOf(own, Broker), own)


class SetUpTearDownTests(SynchronousTestCase):
    """
    L{_connection.setUp} and L{_connection.tearDown} over a connection's
    life.
    """

    def test_tearDownTellsFactoryState(self) -> None:
        """
        A lost connection is reported through the factory's pbext state,
        its running calls are cancelled and its decoder is dropped.
        """
        connection, server, _, root = connect(self)
        lost: list[Broker] = []
        state = server._pbextFactoryState
        assert state is not None
        previous = state.brokerLost
        self.addCleanup(setattr, state, "brokerLost", previous)
        state.brokerLost = lost.append
        rootOf(connection).callRemote("wait").addErrback(lambda f: None)
        connection.pump()
        connection.disconnect()
        self.assertEqual(lost, [server])
        self.assertEqual(root.cancelled, 1)
        self.assertIsNone(server._pbextDecoder)

    def test_dropAborts(self) -> None:
        """
        L{_connection.drop} aborts the transport and discards what it had
        not sent yet; nothing more is decoded.
        """
        clock = Clock()
        broker = Broker(clock=clock)
        transport = StringTransport()
        broker.makeConnection(transport)
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]  # records the call
        _connection.drop(broker)
        self.assertEqual(aborted, [True])
        self.assertTrue(broker._pbextDropped)
        self.assertIsNone(broker._pbextDecoder)
        broker.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
