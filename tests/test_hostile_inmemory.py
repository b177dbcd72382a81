"""
Hostile-input unit tests on in-memory connections: the timeouts and caps
of L{tests.test_hostile}, pinned with a L{Clock} instead of waits on the
real reactor.

A raw peer (L{tests._hostile.HostilePeer}) writes the hostile bytes on a
L{pbext.testing} connection to a pbext server whose timers run on the
test's clock; each test moves the clock to just before the limit (nothing
happened yet) and then to it (the server acted), and then shows that a
stock PB client is still served.  L{tests.test_hostile} sends the same
bytes over real loopback TCP, in the integration part of the suite.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import ClientFactory
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.spread import banana, pb
from twisted.trial.unittest import SynchronousTestCase

from pbext.codec import encode
from pbext.testing import PBConnection, connectedPair
from tests._hostile import (
    INCOMING,
    EventRecorder,
    HostilePeer,
    HostileRoot,
    RecordingServerFactory,
    callMessage,
    wireMessage,
)
from tests.test_hostile import header, policyWith


class _PeerFactory(ClientFactory):
    """
    Builds the one L{HostilePeer} it was given.
    """

    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer

    def buildProtocol(self, addr: Any) -> HostilePeer:
        return self.peer


class InMemoryHostileTestCase(SynchronousTestCase):
    """
    A pbext server on a clock, raw peers and stock clients connected to it
    in memory.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = EventRecorder()
        globalLogPublisher.addObserver(self.recorder)
        self.addCleanup(globalLogPublisher.removeObserver, self.recorder)

    def serve(self, **limits: Any) -> None:
        """
        Serve a fresh L{HostileRoot} under the default policy with
        C{limits} changed, keeping time with the test's clock.
        """
        self.root = HostileRoot()
        self.factory = RecordingServerFactory(
            self.root, policy=policyWith(**limits), reactor=self.clock
        )

    def connectRaw(self, handshake: bool = True) -> tuple[PBConnection, HostilePeer]:
        """
        Connect a L{HostilePeer}; with C{handshake}, it has chosen the
        C{b"pb"} dialect and exchanged versions when this returns.
        """
        peer = HostilePeer()
        peer.handshake = handshake
        connection = connectedPair(
            self.factory, _PeerFactory(peer), clock=self.clock, handshake=False
        )
        self.addCleanup(connection.disconnect)
        connection.pump()
        if handshake:
            self.assertTrue(peer.handshaken.called, "no handshake")
        return connection, peer

    def lostAt(self, peer: HostilePeer) -> list[float]:
        """
        @return: a list that gets the clock's time when C{peer} is lost.
        """
        times: list[float] = []
        peer.lost.addCallback(lambda _: times.append(self.clock.seconds()))
        return times

    def assertStockServed(self, value: object = "still served") -> None:
        """
        A stock L{pb.PBClientFactory} client connects and gets C{echo}
        answered.
        """
        connection = connectedPair(self.factory, pb.PBClientFactory(), clock=self.clock)
        self.addCleanup(connection.disconnect)
        root = connection.rootObject()
        self.assertEqual(connection.resultOf(root.callRemote("echo", value)), value)
        connection.disconnect()

    def assertDropped(self, kind: str, count: int = 1) -> None:
        """
        The server logged C{count} violations of C{kind}.
        """
        self.assertEqual(
            self.recorder.kinds().count(kind), count, self.recorder.kinds()
        )


class TimeoutTests(InMemoryHostileTestCase):
    """
    Connections that hold resources without using them are closed when
    their time is up, and not before.
    """

    def test_idleConnection(self) -> None:
        """
        With C{idleTimeout=1} a silent, handshaken connection is closed
        one second after the handshake.
        """
        # Classic PB keeps idle connections forever.
        self.serve(idleTimeout=1.0)
        connection, peer = self.connectRaw()
        lost = self.lostAt(peer)
        connection.advance(0.9)
        self.assertTrue(peer.connected)
        connection.advance(0.1)
        self.assertEqual(lost, [1.0])
        self.assertDropped("idleTimeout")
        self.assertStockServed()

    def test_neverHandshaking(self) -> None:
        """
        With C{handshakeTimeout=1} a connection that never answers the
        dialect offer is closed after a second, and so is one that chooses
        a dialect but never sends its version.
        """
        # Classic PB waits forever for the handshake.
        self.serve(handshakeTimeout=1.0)
        silentConnection, silent = self.connectRaw(handshake=False)
        halfwayConnection, halfway = self.connectRaw(handshake=False)
        halfway.transport.write(encode(b"pb"))
        # The server answers in the pb dialect (its version message).
        halfway.decoder.setVocabulary(INCOMING)
        halfwayConnection.pump()
        self.assertEqual(halfway.messages(b"version"), [[b"version", 6]])
        times = [self.lostAt(silent), self.lostAt(halfway)]
        silentConnection.advance(0.9)
        self.assertEqual(times, [[], []])
        silentConnection.advance(0.1)
        halfwayConnection.pump()
        self.assertEqual(times, [[1.0], [1.0]])
        self.assertDropped("handshakeTimeout", 2)
        self.assertStockServed()

    def test_dribbling(self) -> None:
        """
        A message sent one byte every 0.2 s is dropped once it has taken
        C{messageTimeout} (one second) since its first byte, before it
        completes, and is never answered.
        """
        # Classic PB has no message timeout: a peer can hold a buffer open
        # forever by dribbling.
        self.serve(messageTimeout=1.0)
        connection, peer = self.connectRaw()
        lost = self.lostAt(peer)
        message = wireMessage(callMessage(1, b"echo", [b"tuple", b"d" * 40]))
        start = self.clock.seconds()
        sent = 0
        for byte in message:
            if not peer.connected:
                break
            peer.transport.write(bytes([byte]))
            sent += 1
            connection.advance(0.2)
        self.assertFalse(peer.connected)
        self.assertLess(sent, len(message))
        self.assertEqual(lost, [start + 1.0])
        self.assertDropped("messageTimeout")
        self.assertEqual(peer.messages(b"answer"), [])
        self.assertStockServed()

    def test_unclosedListsOpen(self) -> None:
        """
        A message whose list is never completed is held for
        C{messageTimeout}, while other clients are served, and then its
        connection is dropped.
        """
        # Classic PB keeps the partial message forever.
        self.serve(messageTimeout=1.0)
        connection, peer = self.connectRaw()
        lost = self.lostAt(peer)
        partial = header(1000, banana.LIST) + header(0, banana.LIST) * 500
        peer.transport.write(partial)
        connection.pump()
        self.assertStockServed()
        connection.advance(0.9)
        self.assertTrue(peer.connected)
        connection.advance(0.1)
        self.assertEqual(lost, [1.0])
        self.assertDropped("messageTimeout")


class CapTests(InMemoryHostileTestCase):
    """
    Limits on what one peer may send or hold drop it as soon as they are
    crossed, however its bytes arrive.
    """

    def test_tokenFlood(self) -> None:
        """
        A message of more than C{maxMessageTokens} tiny tokens, arriving
        256 bytes at a time, drops the connection within the chunks that
        carry the first 1000 tokens: the rest is never read.
        """
        # Classic banana has no token limit and decodes such a flood in
        # quadratic time (348 KB: 1.4 s of a blocked reactor).
        self.serve(maxMessageTokens=1000)
        connection, peer = self.connectRaw()
        sublist = header(100, banana.LIST) + encode(0) * 100
        flood = header(50, banana.LIST) + sublist * 50
        chunks = [flood[start : start + 256] for start in range(0, len(flood), 256)]
        delivered = 0
        for chunk in chunks:
            if not peer.connected:
                break
            peer.transport.write(chunk)
            connection.pump()
            delivered += 1
        self.assertFalse(peer.connected)
        self.assertDropped("framingError")
        self.assertIn(
            "maxMessageTokens", [e.get("limit") for e in self.recorder.events]
        )
        # 1000 tokens of 2 bytes each, plus the headers.
        self.assertLess(delivered * 256, 2500)
        self.assertStockServed()

    def test_connectionsPerAddress(self) -> None:
        """
        With C{maxConnectionsPerAddress=3}, a fourth connection from the
        same address is closed before any byte is sent, while the others
        are served; once one leaves, a stock client gets its place.
        """
        # Classic PB accepts every connection.
        self.serve(maxConnectionsPerAddress=3)
        peers = [self.connectRaw() for _ in range(3)]
        extraConnection, extra = self.connectRaw(handshake=False)
        self.assertFalse(extra.connected)
        self.assertEqual(extra.receivedBytes, 0)
        for requestID, (connection, peer) in enumerate(peers, 1):
            peer.transport.write(
                wireMessage(callMessage(requestID, b"echo", [b"tuple", 5]))
            )
            connection.pump()
            self.assertEqual(peer.answers[requestID], [b"answer", requestID, 5])
        # A fourth client is refused while the three stay.
        refused = connectedPair(self.factory, pb.PBClientFactory(), clock=self.clock)
        self.addCleanup(refused.disconnect)
        self.assertFalse(refused.connected)
        firstConnection, first = peers[0]
        first.transport.abortConnection()
        firstConnection.pump()
        self.assertFalse(first.connected)
        self.assertStockServed()
