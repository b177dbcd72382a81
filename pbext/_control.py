"""
The control object a pbext broker publishes as C{b"pbext"}: what a pbext
peer calls to say hello, to ping and to cancel a call.  A stock peer never
calls it.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.spread import pb

from pbext._wire import PBEXT_DIALECT

if TYPE_CHECKING:
    from pbext.broker import Broker


class Control(pb.Referenceable):
    """
    The object a pbext broker publishes as C{b"pbext"} for a pbext peer:
    hello, ping and remote cancellation.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def remote_hello(self, features: list[bytes]) -> list[bytes]:
        """
        The peer says it is pbext and which features it has.
        """
        self.broker._pbextPeerFeatures = frozenset(
            f for f in features if isinstance(f, bytes) and len(f) < 64
        )
        return [PBEXT_DIALECT]

    def remote_ping(self) -> bool:
        """
        Answer a keepalive ping.
        """
        return True

    def remote_cancel(self, requestID: int) -> None:
        """
        Cancel the running call C{requestID} of this connection, if any.
        """
        self.broker._pbextCancelIncoming(requestID)
