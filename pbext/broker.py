"""
pbext's L{Broker}: Twisted's PB broker, hardened.

This first version adds one thing to L{twisted.spread.pb.Broker}: it turns
off Nagle's algorithm on the connection (classic PB leaves it on, so large
messages stall waiting for delayed ACKs).

@since: pbext NEXT
"""

from __future__ import annotations

from twisted.internet.interfaces import ITCPTransport
from twisted.spread import pb


def setNoDelay(transport: object) -> bool:
    """
    Turn on C{TCP_NODELAY} on C{transport} or on the TCP transport it wraps
    (a TLS transport wraps one).

    @return: C{True} if a TCP transport was found and changed.
    """
    seen = 0
    while transport is not None and seen < 8:
        if ITCPTransport.providedBy(transport):
            try:
                transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
            except OSError:
                return False
            return True
        transport = getattr(transport, "transport", None)
        seen += 1
    return False


class Broker(pb.Broker):
    """
    A L{pb.Broker} that speaks the classic wire and sets C{TCP_NODELAY}.
    """

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        super().connectionMade()
