"""
The bytes a pure-Python banana decoder holds between two calls: an
incomplete token, or, once enough of a long string has arrived, that
string's final buffer, filled in place.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from pbext._framing import LONG_STRING

#: A long string's final buffer is made once this share of it has arrived,
#: so a peer makes a decoder hold at most this many times the bytes it sent.
LONG_STRING_SHARE = 16


class HeldBytes:
    """
    The bytes of an incomplete token of one L{pbext._pydecoder.PythonDecoder}.

    While a long string is incomplete each new chunk is only appended to a
    list until the string's declared length has arrived (or, once a
    sixteenth of it has, copied into its final buffer).

    @ivar chunks: bytes received but not parsed yet, at most one
        incomplete token, starting at a token boundary (empty while a long
        string's buffer is being filled).
    @ivar have: their total length (or, for a long string's buffer, the
        bytes of the token arrived so far).
    @ivar need: the length at which parsing resumes.
    @ivar longSize: the declared length of the string whose header starts
        the held bytes (0 if they hold no string's header).
    @ivar long: that string's final buffer once it is long and enough of it
        arrived, filled up to its last C{longSize - (need - have)} bytes.
    @ivar offered: whether a view of that buffer was handed out to fill.
    """

    __slots__ = ("chunks", "have", "need", "longSize", "long", "offered")

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.have = 0
        self.need = 0
        self.longSize = 0
        self.long: Optional[bytearray] = None
        self.offered = False

    def wanted(self) -> int:
        """
        How many more bytes the held token needs (0 if none is held).
        """
        if self.chunks or self.long is not None:
            return max(self.need - self.have, 0)
        return 0

    def receiveBuffer(self) -> memoryview:
        """
        A view of the long string's buffer, exactly the bytes it lacks.
        """
        assert self.long is not None
        self.offered = True
        room = self.need - self.have
        return memoryview(self.long)[self.longSize - room :]

    def filled(self, count: int) -> bool:
        """
        C{count} bytes were written into the view L{receiveBuffer} gave.

        @return: Whether that completes the string.
        @raise ValueError: If no view is outstanding, or C{count} does not
            fit it.
        """
        if not self.offered:
            raise ValueError("no receive buffer is outstanding")
        room = self.need - self.have
        if count < 0 or count > room:
            raise ValueError(f"{count} bytes cannot fill a receive buffer of {room}")
        self.offered = False
        self.have += count
        return self.have >= self.need

    def fillLong(self, data: bytes) -> Tuple[Optional[bytes], bytes, int]:
        """
        Copy into the long string being received what of C{data} belongs
        to it.

        @return: The string if that completes it, else L{None}; the bytes
            of C{data} after it; and (if it is complete) the bytes of its
            token.
        """
        assert self.long is not None
        self.offered = False
        room = self.need - self.have
        taken = memoryview(data)[:room]
        at = self.longSize - room
        self.long[at : at + len(taken)] = taken
        self.have += len(taken)
        if self.have < self.need:
            return None, b"", 0
        string, size = self.finishLong()
        return string, data[len(taken) :], size

    def join(self, data: bytes) -> Optional[bytes]:
        """
        Add C{data} to the bytes held of an incomplete token.

        @return: All the bytes held, once the token is whole, else L{None}.
        """
        self.chunks.append(data)
        self.have += len(data)
        if self.have < self.need:
            self.startLong()
            return None
        return b"".join(self.chunks)

    def hold(self, buf: bytes, pos: int, need: int = 0, stringSize: int = 0) -> None:
        """
        Keep the bytes of C{buf} from C{pos} on, which start a token that
        parsing resumes from once C{need} bytes are held.
        """
        if pos < len(buf):
            tail = buf[pos:] if pos else buf
            self.chunks = [tail]
            self.have = len(tail)
            self.need = need
            self.longSize = stringSize
        else:
            self.chunks = []
            self.have = 0
            self.need = 0
            self.longSize = 0

    def startLong(self) -> None:
        """
        If the held bytes start a long string of which enough has arrived,
        make its final buffer now, with the body held copied into it.
        """
        size = self.longSize
        if not self.chunks or size <= LONG_STRING:
            return
        header = self.need - size
        if self.have - header < size // LONG_STRING_SHARE:
            return
        string = bytearray(size)
        at = 0
        skip = header
        for chunk in self.chunks:
            piece = memoryview(chunk)[skip:]
            skip = max(skip - len(chunk), 0)
            string[at : at + len(piece)] = piece
            at += len(piece)
        self.chunks = []
        self.long = string

    def finishLong(self) -> Tuple[bytes, int]:
        """
        Take the completed long string.

        @return: The string, and the bytes of its token (header included),
            which the message has now parsed.
        """
        assert self.long is not None
        string = bytes(self.long)
        size = self.need
        self.long = None
        self.offered = False
        self.have = 0
        self.need = 0
        self.longSize = 0
        return string, size
