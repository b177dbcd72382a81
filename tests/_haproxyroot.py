"""
A PB root for the HAProxy tests: it tells each client which process served
it and which address that process sees the client connecting from.
"""

from __future__ import annotations

import os
from typing import cast

from twisted.internet.address import IPv4Address
from twisted.spread import pb


class AddressReporter(pb.Referenceable):
    """
    The root object of one connection.

    @ivar broker: the server's broker for that connection.
    """

    def __init__(self, broker: pb.Broker) -> None:
        self.broker = broker

    def remote_whoami(self) -> tuple[str, int, int]:
        """
        Return the peer address this connection reports, as C{(host, port)},
        followed by the id of the process serving it.
        """
        transport = self.broker.transport
        assert transport is not None
        peer = cast(IPv4Address, transport.getPeer())
        return (peer.host, peer.port, os.getpid())


class AddressRoot(pb.Root):
    """
    A root handing every connection its own L{AddressReporter}, so that the
    reporter knows its broker and hence its connection's peer address.
    """

    def rootObject(self, broker: pb.Broker) -> AddressReporter:
        """
        Make the root object of C{broker}'s connection.
        """
        return AddressReporter(broker)
