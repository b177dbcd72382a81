"""
Tests for L{pbext._control}: how two pbext peers find each other on the
classic wire, and the control object's hello, ping and cancel.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import _control
from pbext._wire import PBEXT_DIALECT
from pbext.broker import Broker
from pbext.testing import PBConnection, connectedPair
from tests._parts import PartsRoot, connect, rootOf


def stockServer(test: SynchronousTestCase) -> tuple[PBConnection, Broker]:
    """
    Connect a pbext client to a stock L{pb.PBServerFactory} serving a
    L{PartsRoot}, in memory.

    @return: the connection and the client's broker.
    """
    clock = Clock()
    connection = connectedPair(
        pb.PBServerFactory(PartsRoot()),
        pbext.PBClientFactory(reactor=clock),
        clock=clock,
    )
    test.addCleanup(connection.disconnect)
    client = connection.clientBroker
    assert isinstance(client, Broker)
    return connection, client


class FindEachOtherTests(SynchronousTestCase):
    """
    A pbext client and a pbext server know each other after the
    handshake; a stock peer on either side is never told anything.
    """

    def test_pbextPair(self) -> None:
        """
        Both sides of a pbext pair record the other as pbext: the client
        from the server's dialect offer, the server from the client's
        hello, said before the application's first call.
        """
        _, server, client, _ = connect(self)
        self.assertIn(PBEXT_DIALECT, client._pbextPeerFeatures)
        self.assertIn(PBEXT_DIALECT, server._pbextPeerFeatures)

    def test_stockServer(self) -> None:
        """
        A pbext client of a stock server records no features and calls no
        control object: its calls work as classic ones.
        """
        connection, client = stockServer(self)
        self.assertEqual(client._pbextPeerFeatures, frozenset())
        results: list[Any] = []
        rootOf(connection).callRemote("echo", 5).addBoth(results.append)
        connection.pump()
        self.assertEqual(results, [5])

    def test_stockClient(self) -> None:
        """
        A stock client of a pbext server sends no hello; the server
        records no features and answers its calls.
        """
        clock = Clock()
        connection = connectedPair(
            pbext.PBServerFactory(PartsRoot(), reactor=clock),
            pb.PBClientFactory(),
            clock=clock,
        )
        self.addCleanup(connection.disconnect)
        server = connection.serverBroker
        assert isinstance(server, Broker)
        results: list[Any] = []
        rootOf(connection).callRemote("echo", 6).addBoth(results.append)
        connection.pump()
        self.assertEqual(results, [6])
        self.assertEqual(server._pbextPeerFeatures, frozenset())


class ControlObjectTests(SynchronousTestCase):
    """
    L{_control.Control}'s remote methods.
    """

    def test_helloKeepsShortBytesOnly(self) -> None:
        """
        A hello's features are kept when they are short byte strings; other
        entries are dropped, and the answer names pbext's dialect.
        """
        _, server, _, _ = connect(self)
        control = _control.Control(server)
        answer = control.remote_hello([b"a", "text", 7, b"x" * 100, PBEXT_DIALECT])
        self.assertEqual(answer, [PBEXT_DIALECT])
        self.assertEqual(server._pbextPeerFeatures, frozenset([b"a", PBEXT_DIALECT]))

    def test_pingAndCancel(self) -> None:
        """
        C{ping} answers C{True}; C{cancel} cancels the connection's running
        call of that request ID, and an unknown ID is ignored.
        """
        connection, server, client, root = connect(self)
        results: list[Any] = []
        _control.ping(client).addBoth(results.append)
        connection.pump()
        self.assertEqual(results, [True])
        failures: list[Any] = []
        rootOf(connection).callRemote("wait").addErrback(failures.append)
        connection.pump()
        (requestID,) = server._pbextDispatcher.running
        control = _control.Control(server)
        control.remote_cancel(requestID + 1000)
        self.assertEqual(root.cancelled, 0)
        control.remote_cancel(requestID)
        connection.pump()
        self.assertEqual(root.cancelled, 1)
        self.assertEqual(len(failures), 1)

    def test_pingStockPeer(self) -> None:
        """
        Against a stock server, L{_control.ping} asks a question every
        stock broker answers, and it succeeds.
        """
        connection, client = stockServer(self)
        results: list[Any] = []
        _control.ping(client).addCallback(lambda _: results.append("ok"))
        connection.pump()
        self.assertEqual(results, ["ok"])


class AcceptDialectTests(SynchronousTestCase):
    """
    L{_control.acceptDialect} checks the first expression of the
    handshake and drops a connection whose peer breaks it.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def kinds(self) -> list[Any]:
        return [e.get("kind") for e in self.events if "pbextEvent" in e]

    def test_clientRefusesNonList(self) -> None:
        """
        A client whose server's offer is not a list drops the connection
        with a C{badHandshake} violation.
        """
        connection, _, client, _ = connect(self)
        self.assertFalse(_control.acceptDialect(client, b"pb"))
        connection.pump()
        self.assertIn("badHandshake", self.kinds())
        self.assertTrue(client.disconnected)

    def test_serverRefusesUnknownDialect(self) -> None:
        """
        A server whose client chooses a dialect it did not offer drops the
        connection; a known one is accepted.
        """
        connection, server, _, _ = connect(self)
        self.assertTrue(_control.acceptDialect(server, b"pb"))
        self.assertFalse(_control.acceptDialect(server, b"nonesuch"))
        connection.pump()
        self.assertIn("badHandshake", self.kinds())
        self.assertTrue(server.disconnected)
