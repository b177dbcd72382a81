"""
Tests for L{pbext._transport}: messages sent at once on idle TCP
connections, through the transport's own buffer otherwise, arrive whole and
in order, to stock and pbext peers alike.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, List

from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted.trial.unittest import TestCase

import pbext
from pbext import testing
from pbext._transport import (
    LARGE_SEND_BUFFER,
    LARGEST_READ,
    LargeReads,
    directWriter,
)


class Echo(pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value


class FakeConnection:
    bufferSize = 65536


class LargeReadsTests(TestCase):
    """
    L{LargeReads} raises a connection's read size while a long string
    arrives, and puts it back after.
    """

    def test_update(self) -> None:
        connection = FakeConnection()
        reads = LargeReads(connection)  # type: ignore[arg-type]
        reads.update(10)
        self.assertEqual(connection.bufferSize, 65536)
        reads.update(500_000)
        self.assertEqual(connection.bufferSize, 500_000)
        reads.update(LARGEST_READ * 3)
        self.assertEqual(connection.bufferSize, LARGEST_READ)
        reads.update(0)
        self.assertEqual(connection.bufferSize, 65536)

    def test_onlyPlainTCP(self) -> None:
        self.assertIsNone(LargeReads.forTransport(FakeConnection()))


def recordReadSizes(broker: Any) -> List[int]:
    """
    Record the transport's read size each time the broker's L{LargeReads}
    updates it.
    """
    sizes: List[int] = []
    update = broker._largeReads.update

    def recordingUpdate(wanted: int) -> None:
        update(wanted)
        sizes.append(broker.transport.bufferSize)

    broker._largeReads.update = recordingUpdate
    return sizes


class DirectWriterTests(TestCase):
    """
    Over real loopback TCP connections.
    """

    timeout = 60

    def serve(self, factory: pb.PBServerFactory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def rootOf(self, factory: pb.PBClientFactory, portNumber: int) -> Any:
        connector = reactor.connectTCP("127.0.0.1", portNumber, factory)
        self.addCleanup(connector.disconnect)
        root = yield factory.getRootObject()
        return root

    def test_onlyPlainTCP(self) -> None:
        """
        Only Twisted's own TCP connections get a direct writer.
        """
        self.assertIsNone(directWriter(object()))
        pair = testing.connectedPair(
            pbext.PBServerFactory(Echo()), pbext.PBClientFactory()
        )
        self.addCleanup(pair.disconnect)
        broker = pair.serverBroker
        self.assertEqual(broker._write, broker.transport.write)  # type: ignore[union-attr]

    @defer.inlineCallbacks
    def test_largeAndPipelined(self) -> None:
        """
        Messages much larger than the socket takes at once, and many calls in
        flight, arrive whole and in order, between pbext peers and between a
        pbext server and a stock client.
        """
        portNumber = self.serve(pbext.PBServerFactory(Echo()))
        big = [bytes([i]) * 600_000 for i in range(5)]
        for clientFactory in (pbext.PBClientFactory(), pb.PBClientFactory()):
            root = yield self.rootOf(clientFactory, portNumber)
            broker = root.broker
            readSizes: List[int] = []
            if isinstance(clientFactory, pbext.PBClientFactory):
                self.assertNotEqual(broker._write, broker.transport.write)
                readSizes = recordReadSizes(broker)
            self.assertEqual((yield root.callRemote("echo", big)), big)
            if isinstance(clientFactory, pbext.PBClientFactory):
                # Read in large pieces, then back to the usual size.
                self.assertGreater(max(readSizes), 65536)
                self.assertEqual(broker.transport.bufferSize, 65536)
                # Having sent a large message, the socket got a large send
                # buffer (Linux reports twice what was set, capped).
                if sys.platform.startswith("linux"):
                    with open("/proc/sys/net/core/wmem_max") as f:
                        cap = int(f.read())
                    self.assertEqual(
                        broker.transport.socket.getsockopt(
                            socket.SOL_SOCKET, socket.SO_SNDBUF
                        ),
                        2 * min(LARGE_SEND_BUFFER, cap),
                    )
            calls: List[defer.Deferred[Any]] = [
                root.callRemote("echo", [i, b"x" * (i * 997)]) for i in range(150)
            ]
            answers = yield defer.gatherResults(calls)
            self.assertEqual(answers, [[i, b"x" * (i * 997)] for i in range(150)])
            clientFactory.disconnect()
