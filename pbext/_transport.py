"""
Writing to a TCP transport without waiting for a reactor turn, and
receiving long strings straight into their final buffer.

Twisted's TCP transport buffers every C{write}, asks the reactor to watch
the socket for writability, and sends on the reactor's next turn.  For a
request/response protocol such as PB that costs, for every message, two
extra system calls (to watch and stop watching the socket) and one more
turn of the reactor before the bytes leave.  When the transport has
nothing buffered, sending at once is what it would do on that turn anyway;
L{DirectWrites} does so, and hands whatever the socket does not take (and
every write while something is buffered) to the transport's own C{write}
or C{writeSequence}, so the order of bytes and Twisted's error handling
are unchanged.  A message given in pieces (a long string is its own piece,
see L{pbext.codec.encodePieces}) is sent with one C{sendmsg}, so the
string is never copied into a joined message.  The first time a connection
sends a large message, its socket send buffer is set to
L{LARGE_SEND_BUFFER}.

Twisted's TCP transport reads at most C{bufferSize} (64 KiB) per turn of
the reactor, each read into a new bytes object, which a decoder then
copies into the string it assembles.  L{DirectReads} reads the rest of a
long string with C{recv_into} straight into the buffer the decoder made
for it (L{pbext.interfaces.IDecoder.receiveBuffer}), as many reads as the socket
has bytes for in one turn, and reads everything else as Twisted does; but
where a read fills Twisted's buffer and the connection says to read on (a
message is partly received, say), it reads again in the same turn, so a
large message of small values is not parsed over as many turns of the
reactor as it has 64 KiB.

@since: pbext NEXT
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable, Optional, Protocol, Sequence

from twisted.internet import main, tcp

from pbext._twisted import (
    TCP_ATTRIBUTES,
    bufferedBytes,
    discardTLSHeld,
    discardWriteBuffer,
    tlsHeldBytes,
    writeBufferEmpty,
)

__all__ = [
    "DirectReads",
    "DirectWrites",
    "RECEIVE_FROM_SOCKET",
    "directWriter",
    "discardPending",
    "pendingWriter",
    "producerTarget",
]

#: The socket send buffer asked for once a connection sends a message
#: larger than L{LARGE_MESSAGE}: what Linux's own autotuning grows to at
#: most by default (C{net.ipv4.tcp_wmem}), asked for at once, so a large
#: message leaves in one send instead of trickling out over many reactor
#: turns while the kernel grows the buffer.  The kernel caps it at
#: C{net.core.wmem_max}.
LARGE_SEND_BUFFER = 4 * 1024 * 1024
LARGE_MESSAGE = 64 * 1024

#: The most pieces one C{sendmsg} is given (POSIX guarantees 16, Linux and
#: the BSDs take 1024); a message in more is joined first.
MOST_PIECES = 512

#: The most reads L{DirectReads} makes in one turn of the reactor, so a
#: peer sending a long string quickly does not keep other connections
#: waiting for long.
MOST_READS = 16


class _ReceiveFromSocket:
    """
    The type of L{RECEIVE_FROM_SOCKET}.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "RECEIVE_FROM_SOCKET"


#: What the C{receiveBuffer} of a L{DirectReads} returns to say that the
#: rest of the long string arriving is received by its C{receiveFrom},
#: from the socket itself, rather than into a buffer.
RECEIVE_FROM_SOCKET = _ReceiveFromSocket()

_WOULD_BLOCK: int = getattr(tcp, "EWOULDBLOCK", errno.EWOULDBLOCK)

# Exactly these classes: subclasses (UNIX sockets passing descriptors,
# say) may queue more than bytes.
_TCP_CONNECTIONS = (tcp.Server, tcp.Client)
_NEEDED = TCP_ATTRIBUTES


def _plainTCP(transport: object) -> bool:
    """
    Whether C{transport} is one of Twisted's own TCP connections, with the
    attributes L{DirectWrites} and L{DirectReads} use.
    """
    if type(transport) not in _TCP_CONNECTIONS:
        return False
    return all(hasattr(transport, name) for name in _NEEDED)


class DirectWrites:
    """
    Write to a plain Twisted TCP connection like its C{write} and
    C{writeSequence}, sending at once when nothing is buffered.
    """

    # One per connection: no instance dict, and no bound methods kept.
    __slots__ = ("transport", "_bufferRaised")

    def __init__(self, transport: tcp.Connection) -> None:
        self.transport = transport
        self._bufferRaised = False

    @classmethod
    def forTransport(cls, transport: object) -> Optional[DirectWrites]:
        """
        A L{DirectWrites} for C{transport} if it is a plain Twisted TCP
        connection, else L{None} (TLS, UNIX and in-memory transports keep
        their own C{write}).
        """
        if not _plainTCP(transport):
            return None
        # The ignore below: _plainTCP checked it is a tcp.Connection.
        return cls(transport)  # type: ignore[arg-type]

    def _idle(self, size: int) -> bool:
        """
        Whether bytes may be sent at once: nothing is buffered and the
        connection is open for writing, without TLS.  Raises the socket
        send buffer the first time C{size} is large.
        """
        t = self.transport
        if not self._bufferRaised and size > LARGE_MESSAGE:
            self._bufferRaised = True
            try:
                t.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDBUF, LARGE_SEND_BUFFER
                )
            except OSError:
                pass
        return bool(
            t.connected and not t.disconnecting and not t.TLS and writeBufferEmpty(t)
        )

    def write(self, data: bytes) -> None:
        """
        Write C{data}, as C{transport.write(data)} would.
        """
        t = self.transport
        # _idle, spelled out for the commonest case: a small message on an
        # idle connection (this runs once per message).
        if (
            len(data) <= LARGE_MESSAGE
            and t.connected
            and not t.disconnecting
            and not t.TLS
            and writeBufferEmpty(t)
        ) or self._idle(len(data)):
            try:
                sent = t.socket.send(data)
            except OSError:
                # Would block, or failed: the transport's own write path
                # retries and reports a real failure as it always does.
                sent = 0
            if sent >= len(data):
                return
            if sent:
                data = data[sent:]
        t.write(data)

    def writeSequence(self, pieces: Sequence[bytes]) -> None:
        """
        Write the concatenation of C{pieces}, as
        C{transport.writeSequence(pieces)} would, but sending at once, with
        one C{sendmsg}, when nothing is buffered.
        """
        t = self.transport
        size = sum(map(len, pieces))
        sendmsg: Optional[Callable[..., int]] = getattr(t.socket, "sendmsg", None)
        if sendmsg is None or len(pieces) > MOST_PIECES:
            self.write(b"".join(pieces))
            return
        if self._idle(size):
            try:
                sent = sendmsg(pieces)
            except OSError:
                sent = 0
            if sent >= size:
                return
            if sent:
                rest = []
                for piece in pieces:
                    if sent >= len(piece):
                        sent -= len(piece)
                        continue
                    rest.append(piece[sent:] if sent else piece)
                    sent = 0
                pieces = rest
        t.writeSequence(pieces)


def directWriter(transport: object) -> Optional[Callable[[bytes], None]]:
    """
    A function that writes to C{transport} like its C{write}, sending at
    once when nothing is buffered; or L{None} if C{transport} is not a
    plain Twisted TCP connection (see L{DirectWrites}).
    """
    writes = DirectWrites.forTransport(transport)
    return None if writes is None else writes.write


class ReadsOn(Protocol):
    """
    What tells L{DirectReads} whether to read on in the same turn.
    """

    def readOn(self) -> bool:
        """
        Whether to read again now after a read that filled the transport's
        buffer: for a broker, while a message is partly received and
        reading is not paused.
        """


class DirectReads:
    """
    Read the rest of a long string straight into the buffer made for it.

    While C{receiveBuffer()} returns a writable buffer, the connection's
    C{doRead} receives into it with C{recv_into} and reports each read with
    C{bufferFilled(count)}, up to L{MOST_READS} times in a turn of the
    reactor while the socket has bytes and C{bufferFilled} returns true;
    once the buffer is complete it reads once more as Twisted does, for
    what follows the string.  When no buffer is offered, C{doRead} reads as
    Twisted's own does, and then goes on into a buffer if that read made
    one (C{receiveBuffer} returns L{None} whenever reading should stop).
    The bytes and their order are those Twisted would read: only where they
    are written to changes.

    The connection's C{doRead} is replaced on this one connection (an
    attribute of the instance) until L{stop}.

    @ivar transport: The connection.
    """

    # One per connection: no instance dict, and no bound methods of the
    # transport or its socket kept (found when a long string arrives).
    __slots__ = (
        "transport",
        "_receiveBuffer",
        "_bufferFilled",
        "_receiveFrom",
        "_expecting",
        "_reader",
    )

    def __init__(
        self,
        transport: tcp.Connection,
        receiveBuffer: Callable[[], Optional[Any]],
        bufferFilled: Callable[[int], bool],
        reader: Optional[ReadsOn] = None,
        receiveFrom: Optional[Callable[[socket.socket], Optional[int]]] = None,
    ) -> None:
        self.transport = transport
        self._receiveBuffer = receiveBuffer
        self._bufferFilled = bufferFilled
        self._receiveFrom = receiveFrom
        # An object the connection has anyway (its flow control), not a
        # bound method of it: nothing more is kept per connection.
        self._reader = reader
        # Whether the last read left a buffer to receive into: if not, the
        # next read need not ask first (a plain read is always right).
        self._expecting = False
        # The ignore below: replaced on this one connection, by design.
        transport.doRead = self.doRead  # type: ignore[method-assign]

    @classmethod
    def forTransport(
        cls,
        transport: object,
        receiveBuffer: Callable[[], Optional[Any]],
        bufferFilled: Callable[[int], bool],
        reader: Optional[ReadsOn] = None,
        receiveFrom: Optional[Callable[[socket.socket], Optional[int]]] = None,
    ) -> Optional[DirectReads]:
        """
        A L{DirectReads} on C{transport} if it is a plain Twisted TCP
        connection, else L{None}.

        @param reader: If given, its C{readOn()} says whether to read
            again in the same turn after a read that filled Twisted's
            buffer (see L{plainReads}); if not, one such read a turn, as
            Twisted.
        @param receiveFrom: If given, what receives the rest of a long
            string from the socket itself when C{receiveBuffer} returns
            L{RECEIVE_FROM_SOCKET}: the count received (as
            C{socket.recv_into} returns it, and raising what it raises),
            then given to C{bufferFilled} as for a buffer.
        """
        if not _plainTCP(transport):
            return None
        # The ignore below: _plainTCP checked it is a tcp.Connection.
        return cls(transport, receiveBuffer, bufferFilled, reader, receiveFrom)  # type: ignore[arg-type]

    @classmethod
    def reading(cls, transport: object) -> Optional[DirectReads]:
        """
        The L{DirectReads} that reads C{transport} now, or L{None} if it
        reads with its own C{doRead}.
        """
        doRead = getattr(transport, "__dict__", {}).get("doRead")
        reads = getattr(doRead, "__self__", None)
        return reads if isinstance(reads, cls) else None

    def stop(self) -> None:
        """
        Give the connection its own C{doRead} back.
        """
        if DirectReads.reading(self.transport) is self:
            del self.transport.doRead

    def doRead(self) -> Any:
        """
        Read what the socket has, as C{tcp.Connection.doRead} does.

        @return: L{None}, or why the connection is lost, as Twisted's.
        """
        t = self.transport
        buffer = self._receiveBuffer() if self._expecting else None
        if buffer is None:
            # A read as Twisted's; if it brings a long string's header, the
            # rest is likely here already: read it in this turn too.
            self._expecting = False
            result = self.plainReads()
            if result is not None or t.disconnecting:
                return result
            buffer = self._receiveBuffer()
            if buffer is None:
                return None
        self._expecting = True
        sock = t.socket
        for _ in range(MOST_READS):
            try:
                if buffer is RECEIVE_FROM_SOCKET:
                    # The decoder receives straight into the string.
                    count = self._receiveFrom(sock)  # type: ignore[misc]  # given with RECEIVE_FROM_SOCKET
                    if count is None:
                        return None
                else:
                    count = sock.recv_into(buffer)
            except OSError as e:
                if e.args[0] == _WOULD_BLOCK:
                    return None
                return main.CONNECTION_LOST
            if not count:
                return main.CONNECTION_DONE
            if not self._bufferFilled(count) or t.disconnecting:
                return None
            buffer = self._receiveBuffer()
            if buffer is None:
                # Complete: what follows it may be here already.
                return type(t).doRead(t)
        return None

    def plainReads(self) -> Any:
        """
        Read as C{tcp.Connection.doRead} does; and again, up to
        L{MOST_READS} times in this turn, while each read fills the
        transport's C{bufferSize} (the socket likely has more), no buffer
        is offered and the reader's C{readOn} says to.

        @return: L{None}, or why the connection is lost, as Twisted's.
        """
        reader = self._reader
        t = self.transport
        if reader is None:
            return type(t).doRead(t)
        recv = t.socket.recv
        size = t.bufferSize
        for _ in range(MOST_READS):
            try:
                data = recv(size)
            except OSError as e:
                if e.args[0] == _WOULD_BLOCK:
                    return None
                return main.CONNECTION_LOST
            if not data:
                return main.CONNECTION_DONE
            # As Connection._dataReceived: what dataReceived returns is
            # ignored.
            t.protocol.dataReceived(data)
            if t.disconnecting:
                return None
            if (
                len(data) < size
                or not reader.readOn()
                or self._receiveBuffer() is not None
            ):
                # A long string's buffer is offered: doRead reads into it.
                return None
        return None


def _tlsClass() -> Any:
    try:
        from twisted.protocols.tls import TLSMemoryBIOProtocol
    except ImportError:  # pragma: no cover (pyOpenSSL is not installed)
        return None
    return TLSMemoryBIOProtocol


_TLS: Any = _tlsClass()


def _bufferedIn(transport: object) -> Optional[int]:
    """
    The bytes a Twisted file-descriptor transport (TCP, UNIX) holds that
    its socket has not taken yet, or L{None} if C{transport} is not one.
    """
    try:
        return bufferedBytes(transport)
    except (AttributeError, TypeError):
        return None


class _Pending:
    """
    How many bytes written to one TCP or UNIX connection wait to be sent:
    a callable smaller than a closure (one per connection).
    """

    __slots__ = ("transport",)

    def __init__(self, transport: tcp.Connection) -> None:
        self.transport = transport

    def __call__(self) -> int:
        return bufferedBytes(self.transport)


def pendingWriter(transport: object) -> Optional[Callable[[], int]]:
    """
    A function that tells how many bytes written to C{transport} are still
    waiting to be sent, or L{None} if pbext cannot tell for this transport.

    Known: Twisted's TCP and UNIX transports (their write buffer) and TLS
    over either (the bytes TLS holds back, and the buffer of the transport
    under it).  The figure does not depend on the transport's
    C{bufferSize}, which decides when a transport pauses its producer, so
    raising it (for larger reads) does not delay write backpressure.
    """
    tls = None
    if _TLS is not None and isinstance(transport, _TLS):
        tls = transport
        transport = getattr(transport, "transport", None)
    if not isinstance(transport, tcp.Connection) or _bufferedIn(transport) is None:
        return None
    lower = transport
    if tls is None:
        return _Pending(lower)

    def pendingTLS() -> int:
        held = tlsHeldBytes(tls)
        return held + (_bufferedIn(lower) or 0)

    return pendingTLS


def discardPending(transport: object) -> None:
    """
    Drop the bytes an aborted connection still buffers for writing (they
    will never be sent: C{abortConnection} stops writing at once, but the
    buffer lives until the connection is reported lost, a reactor turn
    later).  Does nothing on transports L{pendingWriter} does not know.
    """
    if _TLS is not None and isinstance(transport, _TLS):
        discardTLSHeld(transport)
        transport = getattr(transport, "transport", None)
    if isinstance(transport, tcp.Connection) and _bufferedIn(transport) is not None:
        discardWriteBuffer(transport)


def producerTarget(transport: object) -> Any:
    """
    The transport a broker registers itself on as a streaming producer, to
    learn when its peer stops reading: C{transport} itself for TCP and
    UNIX, the TCP or UNIX transport under it for TLS.

    Registered on a TLS transport, a producer would keep C{loseConnection}
    waiting for it to unregister (TLS closes only once its producer is
    gone); registered below it, it is told when the encrypted bytes back
    up, which is when the peer stops reading, and TLS closes as usual.
    """
    if _TLS is not None and isinstance(transport, _TLS):
        return getattr(transport, "transport", None)
    return transport
