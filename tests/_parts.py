"""
A pbext client and server connected in memory, for the tests of the
broker's parts (L{tests.test_flow}, L{tests.test_calls}, ...).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext.broker import Broker
from pbext.testing import PBConnection, connectedPair


class PartsRoot(pb.Root):
    """
    A root whose calls the part tests make.
    """

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[Any]] = []
        self.cancelled = 0

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_wait(self) -> defer.Deferred[Any]:
        def cancel(d: defer.Deferred[Any]) -> None:
            self.cancelled += 1

        d: defer.Deferred[Any] = defer.Deferred(cancel)
        self.waiting.append(d)
        return d

    def remote_fail(self) -> None:
        raise ValueError("the method failed")


def connect(
    test: SynchronousTestCase, policy: Any = None, **options: Any
) -> tuple[PBConnection, Broker, Broker, PartsRoot]:
    """
    Connect a pbext client to a pbext server serving a L{PartsRoot}, on a
    new L{Clock}, handshake done.

    @return: the connection, the server's broker, the client's, the root.
    """
    clock = Clock()
    root = PartsRoot()
    server = pbext.PBServerFactory(root, reactor=clock, policy=policy, **options)
    client = pbext.PBClientFactory(reactor=clock, policy=policy, **options)
    connection = connectedPair(server, client, clock=clock)
    test.addCleanup(connection.disconnect)
    serverBroker = connection.serverBroker
    clientBroker = connection.clientBroker
    assert isinstance(serverBroker, Broker) and isinstance(clientBroker, Broker)
    return connection, serverBroker, clientBroker, root


def rootOf(connection: PBConnection) -> pb.RemoteReference:
    """
    The client's reference to the server's root.
    """
    d = connection.clientFactory.getRootObject()
    connection.pump()
    result: list[Any] = []
    d.addBoth(result.append)
    assert isinstance(result[0], pb.RemoteReference), result
    return result[0]
