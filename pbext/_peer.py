"""
How pbext's log events name a peer: one format everywhere, so that a
peer's connection, calls, violations and logins can be found with one
search (C{127.0.0.1:48194}, C{[::1]:48194}, C{unix:/run/pb.sock}).
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress


def peerText(address: object) -> str:
    """
    The text log events use for the peer address C{address}:
    C{HOST:PORT}, C{[HOST]:PORT} for IPv6, C{unix:PATH}, or C{str(address)}
    for other kinds of address.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        return f"unix:{text or ''}"
    return str(address)
