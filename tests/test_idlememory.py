"""
Tests for what an idle connection holds: a handshaken pbext connection
makes its per-connection state only when it is first used, and shares
what never changes, so that it costs a server no more than a classic PB
connection (issue 23).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.task import Clock
from twisted.spread import banana, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import _control, _flow, _timers
from pbext._accelerator import speedups
from pbext._transport import DirectReads, DirectWrites, _Pending
from pbext._wire import CONTROL_NAME, PBEXT_DIALECT
from pbext.broker import Broker
from pbext.codec import makeDecoder
from pbext.testing import PBConnection, connectedPair


class _Root(pb.Root):
    def remote_echo(self, value: object) -> object:
        return value


def _idlePair(test: SynchronousTestCase) -> PBConnection:
    """
    A pbext server and client, handshaken: the client has said hello and
    holds the root, and both sides have nothing more to do.
    """
    clock = Clock()
    server: Any = pbext.PBServerFactory(_Root(), reactor=clock)
    client: Any = pbext.PBClientFactory()
    connection = connectedPair(server, client, clock=clock)
    test.addCleanup(connection.disconnect)
    connection.rootObject()
    connection.pump()
    return connection


def _brokers(connection: PBConnection) -> tuple[Broker, Broker]:
    """
    The server's and the client's pbext brokers of C{connection}.
    """
    return (
        cast(Broker, connection.serverBroker),
        cast(Broker, connection.clientBroker),
    )


class IdleConnectionTests(SynchronousTestCase):
    """
    An idle handshaken connection holds no per-connection copy of what it
    could share, and no state it has not used yet.
    """

    def test_controlObjectNotStored(self) -> None:
        """
        The C{b"pbext"} control object is found by name but not stored in
        the connection's table of local objects: one is made for each call
        to it, and it still answers.
        """
        connection = _idlePair(self)
        server, client = _brokers(connection)
        self.assertNotIn(CONTROL_NAME, server.localObjects)
        for name in (CONTROL_NAME, "pbext"):
            control = server.localObjectForID(name)
            assert isinstance(control, _control.Control), control
            self.assertIs(control.broker, server)
        self.assertIsNone(server.localObjectForID(b"nothing"))
        ping = client.ping()
        self.assertIs(connection.resultOf(ping), True)

    def test_peerFeaturesShared(self) -> None:
        """
        Both sides of a pbext connection hold the one shared frozenset of
        features rather than one each.
        """
        server, client = _brokers(_idlePair(self))
        self.assertIs(server._pbextPeerFeatures, _control.PBEXT_ONLY)
        self.assertIs(client._pbextPeerFeatures, _control.PBEXT_ONLY)
        self.assertEqual(
            _control.peerFeatures([PBEXT_DIALECT, b"more", "text"]),
            frozenset([PBEXT_DIALECT, b"more"]),
        )

    def test_flowAndTimersHoldNothingUnused(self) -> None:
        """
        Until reading pauses or a timer runs, the flow control and timers
        of a connection hold the empty collections all connections share,
        and its queue of messages is an empty list (an empty deque holds a
        block of 64 slots).
        """
        for broker in _brokers(_idlePair(self)):
            flow = broker._pbextFlow
            self.assertIs(flow.readPauses, _flow._NO_PAUSES)
            self.assertEqual(flow.backlog, [])
            self.assertIs(type(flow.backlog), list)
            self.assertIs(broker._pbextTimers.calls, _timers._NONE_RUNNING)
        self.assertEqual(_timers._NONE_RUNNING, {})

    def test_pausesAndTimersMadeWhenUsed(self) -> None:
        """
        A read pause or a timer gives the connection collections of its
        own, and they go back to the shared empty ones once empty again.
        """
        broker = _brokers(_idlePair(self))[0]
        flow, timers = broker._pbextFlow, broker._pbextTimers
        flow.pauseReading("fairness")
        self.assertEqual(flow.readPauses, {"fairness"})
        self.assertEqual(_flow._NO_PAUSES, frozenset())
        flow.resumeReading("fairness")
        self.assertEqual(flow.readPauses, frozenset())
        timers.set("example", 5.0, lambda: None)
        self.assertIn("example", timers.calls)
        self.assertEqual(_timers._NONE_RUNNING, {})
        timers.cancel("example")
        self.assertIs(timers.calls, _timers._NONE_RUNNING)

    def test_timeoutDropsThroughBroker(self) -> None:
        """
        A connection's timeouts keep no bound method of their broker: one
        that expires drops the connection through the broker's
        C{_pbextDropConnection}, found then.
        """
        broker = _brokers(_idlePair(self))[0]
        self.assertIs(broker._pbextTimers._expired, _timers._BROKER_DROPS)
        broker._pbextTimers.timedOut("messageTimeout")()
        self.assertTrue(broker._pbextDropped)

    def test_transportHelpersSlotted(self) -> None:
        """
        The per-connection helpers of TCP transports have no instance
        dict.
        """
        for kind in (DirectReads, DirectWrites, _Pending):
            instance = object.__new__(kind)
            self.assertFalse(hasattr(instance, "__dict__"), kind)


class VocabularyTests(SynchronousTestCase):
    """
    The decoders read the vocabulary dict they are given as it is, as stock
    banana reads its table, instead of keeping a copy for each connection.
    """

    def check(self, accelerated: bool) -> None:
        decoder = makeDecoder(accelerated=accelerated)
        table = dict(banana.Banana.incomingVocabulary)
        decoder.setVocabulary(table)
        table[120] = b"added"
        received: list[object] = []
        # Token 120 of the vocabulary (type byte 0x87), then token 1.
        decoder.feedTo(b"\x78\x87\x01\x87", received.append)
        self.assertEqual(received, [b"added", table[1]])

    def test_python(self) -> None:
        """
        The pure-Python decoder sees a word added to its table afterwards.
        """
        self.check(False)

    def test_accelerated(self) -> None:
        """
        The C decoder does too.
        """
        if speedups is None:
            raise self.skipTest("the C accelerator is not built")
        self.check(True)

    def test_otherMappingCopied(self) -> None:
        """
        A mapping that is not a dict is still copied into one (the C
        decoder reads only dicts).
        """
        from types import MappingProxyType

        for accelerated in (False, True) if speedups is not None else (False,):
            decoder = makeDecoder(accelerated=accelerated)
            decoder.setVocabulary(MappingProxyType({5: b"five"}))
            received: list[object] = []
            decoder.feedTo(b"\x05\x87", received.append)
            self.assertEqual(received, [b"five"])
