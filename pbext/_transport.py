"""
Writing to a TCP transport without waiting for a reactor turn, and reading
long strings in few reads.

Twisted's TCP transport buffers every C{write}, asks the reactor to watch
the socket for writability, and sends on the reactor's next turn.  For a
request/response protocol such as PB that costs, for every message, two
extra system calls (to watch and stop watching the socket) and one more
turn of the reactor before the bytes leave.  When the transport has
nothing buffered, sending at once is what it would do on that turn anyway;
L{directWriter} does so, and hands whatever the socket does not take (and
every write while something is buffered) to the transport's own C{write},
so the order of bytes and Twisted's error handling are unchanged.  The
first time a connection sends a large message, its socket send buffer is
set to L{LARGE_SEND_BUFFER}.

@since: pbext NEXT
"""

from __future__ import annotations

import socket
from typing import Callable, Optional

from twisted.internet import tcp

__all__ = ["LargeReads", "directWriter"]

#: The most a connection reads at once while a long string is arriving.
LARGEST_READ = 4 * 1024 * 1024

#: The socket send buffer asked for once a connection sends a message
#: larger than L{LARGE_MESSAGE}: what Linux's own autotuning grows to at
#: most by default (C{net.ipv4.tcp_wmem}), asked for at once, so a large
#: message leaves in one send instead of trickling out over many reactor
#: turns while the kernel grows the buffer.  The kernel caps it at
#: C{net.core.wmem_max}.
LARGE_SEND_BUFFER = 4 * 1024 * 1024
LARGE_MESSAGE = 64 * 1024

# Exactly these classes: subclasses (UNIX sockets passing descriptors,
# say) may queue more than bytes.
_TCP_CONNECTIONS = (tcp.Server, tcp.Client)
_NEEDED = (
    "socket",
    "dataBuffer",
    "offset",
    "_tempDataLen",
    "connected",
    "disconnecting",
    "_writeDisconnected",
)


def directWriter(transport: object) -> Optional[Callable[[bytes], None]]:
    """
    A function that writes to C{transport} like its C{write}, sending at
    once when nothing is buffered; or L{None} if C{transport} is not a
    plain Twisted TCP connection (TLS, UNIX and in-memory transports keep
    their own C{write}).
    """
    if type(transport) not in _TCP_CONNECTIONS:
        return None
    if not all(hasattr(transport, name) for name in _NEEDED):
        return None
    t: tcp.Connection = transport  # type: ignore[assignment]
    write = t.write
    sock = t.socket
    send = sock.send
    bufferRaised = False

    def directWrite(data: bytes) -> None:
        nonlocal bufferRaised
        if not bufferRaised and len(data) > LARGE_MESSAGE:
            bufferRaised = True
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LARGE_SEND_BUFFER)
            except OSError:
                pass
        if (
            t.offset == len(t.dataBuffer)
            and not t._tempDataLen
            and t.connected
            and not t.disconnecting
            and not t._writeDisconnected
            and not t.TLS
        ):
            try:
                sent = send(data)
            except OSError:
                # Would block, or failed: the transport's own write path
                # retries and reports a real failure as it always does.
                sent = 0
            if sent >= len(data):
                return
            if sent:
                data = data[sent:]
        write(data)

    return directWrite


class LargeReads:
    """
    Let a TCP connection read a long string in few reads.

    Twisted's TCP transport reads at most C{bufferSize} (64 KiB) per turn
    of the reactor, so a 512 KiB string takes nine turns, each with its
    own callbacks.  Once a string's header says how many bytes are still
    to come, L{update} raises the transport's read size to that (up to
    L{LARGEST_READ}); after it, back to the transport's own.  Only the read
    size changes: the bytes and their order do not.

    Twisted uses the same C{bufferSize} as the amount of buffered output
    past which it pauses a registered producer, so while a long string
    arrives the broker's write backpressure starts later, by at most
    L{LARGEST_READ} bytes.
    """

    def __init__(self, transport: tcp.Connection) -> None:
        self.transport = transport
        self.normal: int = transport.bufferSize

    @classmethod
    def forTransport(cls, transport: object) -> Optional[LargeReads]:
        """
        A L{LargeReads} for C{transport} if it is a plain Twisted TCP
        connection, else L{None}.
        """
        if type(transport) not in _TCP_CONNECTIONS:
            return None
        if not isinstance(getattr(transport, "bufferSize", None), int):
            return None
        return cls(transport)  # type: ignore[arg-type]

    def update(self, wanted: int) -> None:
        """
        Read up to C{wanted} bytes at once if that is more than usual, else
        the usual amount.
        """
        transport = self.transport
        if wanted > self.normal:
            transport.bufferSize = min(wanted, LARGEST_READ)
        elif transport.bufferSize != self.normal:
            transport.bufferSize = self.normal
