# -*- test-case-name: tests.test_codec -*-
"""
The pure-Python banana decoder: the specification that the C accelerator's
decoder follows, and the decoder used where the accelerator is not built.

@since: pbext NEXT
"""

from __future__ import annotations

import re
import struct
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from zope.interface import implementer

from pbext._framing import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_MESSAGE_TOKENS,
    LONG_STRING,
    SIZE_LIMIT,
    FramingError,
    checkLimits,
)
from pbext.interfaces import IDecoder

__all__ = ["PythonDecoder"]

#: A long string's final buffer is made once this share of it has arrived,
#: so a peer makes a decoder hold at most this many times the bytes it sent.
_LONG_STRING_SHARE = 16

_findTypeByte = re.compile(b"[\x80-\xff]").search
_unpackDouble = struct.Struct("!d").unpack_from

Emit = Callable[[object], object]


@implementer(IDecoder)
class PythonDecoder:
    """
    The pure-Python L{IDecoder}.

    Bytes are scanned once, with local variables, by one loop over tokens
    (L{_parse}) that handles every token kind itself: a call per token
    would cost more than the work most tokens need.  Limits broken and
    tokens cut short by the end of the bytes are handled by other methods.
    While a long string is incomplete each new chunk is only appended to a
    list until the string's declared length has arrived (or, once a
    sixteenth of it has, copied into its final buffer).

    @since: pbext NEXT
    """

    accelerated = False

    def __init__(
        self,
        *,
        maxPrefixBytes: int = 64,
        maxStringBytes: int = SIZE_LIMIT,
        maxListLength: int = SIZE_LIMIT,
        maxDepth: int = DEFAULT_MAX_DEPTH,
        maxMessageTokens: int = DEFAULT_MAX_MESSAGE_TOKENS,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        vocabulary: Optional[Mapping[int, bytes]] = None,
    ) -> None:
        """
        See L{pbext.codec.makeDecoder} for the arguments.

        @raise ValueError: If a limit is not a positive integer.
        """
        checkLimits(
            maxPrefixBytes=maxPrefixBytes,
            maxStringBytes=maxStringBytes,
            maxListLength=maxListLength,
            maxDepth=maxDepth,
            maxMessageTokens=maxMessageTokens,
            maxMessageBytes=maxMessageBytes,
        )
        self.maxPrefixBytes = maxPrefixBytes
        self.maxStringBytes = maxStringBytes
        self.maxListLength = maxListLength
        self.maxDepth = maxDepth
        self.maxMessageTokens = maxMessageTokens
        self.maxMessageBytes = maxMessageBytes
        self._vocabulary: Optional[Dict[int, bytes]] = None
        # Bytes received but not parsed yet: at most one incomplete token.
        # They start at a token boundary; parsing resumes once _have (their
        # total length) reaches _need.
        self._chunks: List[bytes] = []
        self._have = 0
        self._need = 0
        # The declared length of the string whose header starts the held
        # bytes (0 if they hold no string's header); and, once it is long
        # and enough of it arrived, its final buffer, filled up to its last
        # _longSize - (_need - _have) bytes, with _chunks empty meanwhile.
        self._longSize = 0
        self._long: Optional[bytearray] = None
        self._offered = False
        # The lists being filled: the innermost one and its declared length,
        # and (list, length) for each enclosing one, outermost first; the
        # first entry of a non-empty stack is (None, 0), the top level.
        self._current: Optional[List[object]] = None
        self._want = 0
        self._stack: List[Tuple[Optional[List[object]], int]] = []
        # Tokens the current message has declared so far (itself, and the
        # elements of its lists), and its bytes already parsed.
        self._tokens = 1
        self._messageBytes = 0
        self._failure: Optional[Tuple[str, str]] = None
        self._busy = False
        self.setVocabulary(vocabulary)

    # -- IDecoder ----------------------------------------------------------

    def setVocabulary(self, vocabulary: Optional[Mapping[int, bytes]]) -> None:
        """
        See L{IDecoder.setVocabulary}.
        """
        self._vocabulary = None if vocabulary is None else dict(vocabulary)

    def setPlainJelly(self, enabled: bool) -> None:
        """
        Refuse: only the C accelerator decodes plain jelly while parsing
        (see L{IDecoder.setPlainJelly}).

        @raise ValueError: Always.
        """
        raise ValueError("plain-jelly decoding needs the C accelerator")

    def setPlainTypes(self, types: Optional[Mapping[bytes, object]]) -> None:
        """
        Refuse, as L{setPlainJelly} does.

        @raise ValueError: Always.
        """
        raise ValueError("plain-jelly decoding needs the C accelerator")

    @property
    def pendingBytes(self) -> int:
        """
        See L{IDecoder.pendingBytes}.
        """
        return self._messageBytes + self._have

    @property
    def wantedBytes(self) -> int:
        """
        See L{IDecoder.wantedBytes}.
        """
        if self._chunks or self._long is not None:
            return max(self._need - self._have, 0)
        return 0

    @property
    def messageStarted(self) -> bool:
        """
        See L{IDecoder.messageStarted}.
        """
        return self._messageBytes + self._have > 0

    def feed(self, data: bytes) -> List[object]:
        """
        See L{IDecoder.feed}.
        """
        received: List[object] = []
        self._decode(data, received.append)
        return received

    def feedTo(self, data: bytes, expressionReceived: Emit) -> None:
        """
        See L{IDecoder.feedTo}.
        """
        self._decode(data, expressionReceived)

    def receiveBuffer(self) -> Optional[memoryview]:
        """
        See L{IDecoder.receiveBuffer}: here, a view of the string's own
        buffer, exactly L{wantedBytes} long.
        """
        if self._long is None or self._failure is not None or self._busy:
            return None
        self._offered = True
        room = self._need - self._have
        return memoryview(self._long)[self._longSize - room :]

    def bufferFilled(self, count: int, expressionReceived: Emit) -> None:
        """
        See L{IDecoder.bufferFilled}.
        """
        self._checkUsable()
        if not self._offered:
            raise ValueError("no receive buffer is outstanding")
        room = self._need - self._have
        if count < 0 or count > room:
            raise ValueError(f"{count} bytes cannot fill a receive buffer of {room}")
        self._offered = False
        self._have += count
        if self._have < self._need:
            return
        self._decode(b"", expressionReceived, self._finishLong())

    # -- bytes held between calls --------------------------------------------

    def _checkUsable(self) -> None:
        """
        Refuse to parse on after a framing error, or from a callback.
        """
        if self._failure is not None:
            raise FramingError(*self._failure)
        if self._busy:
            raise RuntimeError("a Decoder cannot be fed from its own callback")

    def _fillLong(self, data: bytes) -> Tuple[Optional[bytes], bytes]:
        """
        Copy into the long string being received what of C{data} belongs
        to it.

        @return: The string if that completes it, else L{None}; and the
            bytes of C{data} after it.
        """
        assert self._long is not None
        self._offered = False
        room = self._need - self._have
        taken = memoryview(data)[:room]
        at = self._longSize - room
        self._long[at : at + len(taken)] = taken
        self._have += len(taken)
        if self._have < self._need:
            return None, b""
        return self._finishLong(), data[len(taken) :]

    def _joinHeld(self, data: bytes) -> Optional[bytes]:
        """
        Add C{data} to the bytes held of an incomplete token.

        @return: All the bytes held, once the token is whole, else L{None}.
        """
        self._chunks.append(data)
        self._have += len(data)
        if self._have < self._need:
            self._startLong()
            return None
        return b"".join(self._chunks)

    def _hold(self, buf: bytes, pos: int, need: int = 0, stringSize: int = 0) -> None:
        """
        Keep the bytes of C{buf} from C{pos} on, which start a token that
        parsing resumes from once C{need} bytes are held.
        """
        if pos < len(buf):
            tail = buf[pos:] if pos else buf
            self._chunks = [tail]
            self._have = len(tail)
            self._need = need
            self._longSize = stringSize
        else:
            self._chunks = []
            self._have = 0
            self._need = 0
            self._longSize = 0

    def _startLong(self) -> None:
        """
        If the held bytes start a long string of which enough has arrived,
        make its final buffer now, with the body held copied into it.
        """
        size = self._longSize
        if not self._chunks or size <= LONG_STRING:
            return
        header = self._need - size
        if self._have - header < size // _LONG_STRING_SHARE:
            return
        string = bytearray(size)
        at = 0
        skip = header
        for chunk in self._chunks:
            piece = memoryview(chunk)[skip:]
            skip = max(skip - len(chunk), 0)
            string[at : at + len(piece)] = piece
            at += len(piece)
        self._chunks = []
        self._long = string

    def _finishLong(self) -> bytes:
        """
        Take the completed long string, counting its bytes as parsed bytes
        of the message.
        """
        assert self._long is not None
        string = bytes(self._long)
        self._long = None
        self._offered = False
        self._messageBytes += self._need
        self._have = 0
        self._need = 0
        self._longSize = 0
        return string

    # -- parsing -------------------------------------------------------------

    def _decode(self, data: bytes, emit: Emit, first: Optional[bytes] = None) -> None:
        """
        Parse C{data} after what is held, calling C{emit} with each complete
        top-level expression; or, given C{first} (a long string just
        completed), that string and then C{data}.
        """
        self._checkUsable()
        if type(data) is not bytes:
            data = bytes(data)
        if first is None:
            if self._long is not None:
                first, data = self._fillLong(data)
                if first is None:
                    return
            elif self._chunks:
                joined = self._joinHeld(data)
                if joined is None:
                    return
                data = joined
        self._busy = True
        try:
            if first is not None:
                self._placeLong(first, data, emit)
            self._parse(data, emit)
        finally:
            self._busy = False
        self._startLong()

    def _placeLong(self, string: bytes, after: bytes, emit: Emit) -> None:
        """
        Place a long string just completed as L{_parse} places an item,
        holding the bytes C{after} it if C{emit} raises.
        """
        item: object = string
        cur, want, stack = self._current, self._want, self._stack
        while cur is not None:
            cur.append(item)
            if len(cur) < want:
                break
            item = cur
            cur, want = stack.pop()
        self._current, self._want = cur, want
        if cur is None:
            self._tokens = 1
            self._messageBytes = 0
            try:
                emit(item)
            except BaseException:
                self._hold(after, 0)
                raise

    def _parse(self, buf: bytes, emit: Emit) -> None:
        """
        Parse C{buf} with the state the last call left, calling C{emit}
        with each complete top-level expression, and hold the bytes of a
        token it ends in the middle of.
        """
        end = len(buf)
        pos = need = stringSize = 0
        stack, cur, want, tokens = self._stack, self._current, self._want, self._tokens
        maxMessageBytes = self.maxMessageBytes
        # Offset (possibly negative) of the current message's first byte;
        # the message must not extend past messageLimit.
        messageOrigin = -self._messageBytes
        messageLimit = messageOrigin + maxMessageBytes
        stringLimit = end if end < messageLimit else messageLimit
        maxTokens, maxList = self.maxMessageTokens, self.maxListLength
        maxString, maxPrefix = self.maxStringBytes, self.maxPrefixBytes
        maxDepth, vocabulary = self.maxDepth, self._vocabulary
        readPrefix, unpackDouble = self._readPrefix, _unpackDouble
        item: object
        # Type bytes are literals below (0x80 LIST, 0x81 INT, 0x82 STRING,
        # 0x83 NEG, 0x84 FLOAT, 0x85 LONGINT, 0x86 LONGNEG, 0x87 VOCAB):
        # this loop runs once per token and constants are the fastest.
        try:
            while True:
                # The number prefix and the type byte, inline for prefixes of
                # up to two bytes (numbers below 16384).  An IndexError means
                # the bytes are used up or end in an incomplete prefix.
                start = pos
                try:
                    typ = buf[pos]
                    if typ > 127:
                        num = 0
                        pos += 1
                    else:
                        num = buf[pos + 1]
                        if num > 127:
                            num, typ = typ, num
                            pos += 2
                        elif maxPrefix > 1 and buf[pos + 2] > 127:
                            num, typ = typ | num << 7, buf[pos + 2]
                            pos += 3
                        else:
                            num, typ, pos = readPrefix(buf, pos)
                except IndexError:
                    break
                if typ == 0x82:
                    stop = pos + num
                    if stop > stringLimit or num > maxString:
                        need = self._bodyMissing(num, stop - start, stop > messageLimit)
                        stringSize = num
                        pos = start
                        break
                    item = buf[pos:stop]
                    pos = stop
                elif typ == 0x80:
                    # A message may hold one token and the elements its lists
                    # declare: refuse as soon as a header declares too many.
                    tokens += num
                    if tokens > maxTokens or num > maxList or len(stack) >= maxDepth:
                        raise self._listRefused(num, tokens)
                    if pos > messageLimit:
                        raise self._tooLong()
                    if num:
                        stack.append((cur, want))
                        cur = []
                        want = num
                        continue
                    item = []
                elif typ == 0x87:
                    item = None if vocabulary is None else vocabulary.get(num)
                    if item is None:
                        raise self._badWord(num, vocabulary)
                elif typ == 0x81 or typ == 0x85:
                    item = num
                elif typ == 0x83 or typ == 0x86:
                    item = -num
                elif typ == 0x84:
                    if pos + 8 > stringLimit:
                        need = self._bodyMissing(
                            0, pos + 8 - start, pos + 8 > messageLimit
                        )
                        pos = start
                        break
                    item = unpackDouble(buf, pos)[0]
                    pos += 8
                else:
                    raise self._fail("badTypeByte", f"invalid type byte 0x{typ:02x}")

                # Add the item to the innermost open list, closing every
                # list it completes; a complete top-level item is a message.
                while cur is not None:
                    cur.append(item)
                    if len(cur) < want:
                        break
                    item = cur
                    cur, want = stack.pop()
                else:
                    # Scalars are not checked against maxMessageBytes one by
                    # one (each is at most 73 bytes): check the whole here.
                    if pos > messageLimit:
                        raise self._tooLong()
                    tokens = 1
                    messageOrigin = pos
                    messageLimit = pos + maxMessageBytes
                    stringLimit = end if end < messageLimit else messageLimit
                    emit(item)
                    vocabulary = self._vocabulary
            if end > messageLimit:
                # The current message, with the bytes held of its incomplete
                # last token, is already too long.
                raise self._tooLong()
        finally:
            self._current, self._want, self._tokens = cur, want, tokens
            self._messageBytes = pos - messageOrigin
            self._hold(buf, pos, need, stringSize)

    def _readPrefix(self, buf: bytes, pos: int) -> Tuple[int, int, int]:
        """
        Read a token whose number prefix is two bytes or more.

        @return: The number, the type byte and the position after it.

        @raise IndexError: If C{buf} ends before the type byte.
        @raise FramingError: If the prefix is longer than C{maxPrefixBytes}.
        """
        maxPrefix = self.maxPrefixBytes
        found = _findTypeByte(buf, pos, pos + maxPrefix + 1)
        if found is None:
            if len(buf) - pos > maxPrefix:
                raise self._fail(
                    "maxPrefixBytes", f"more than {maxPrefix} bytes of prefix"
                )
            raise IndexError("incomplete prefix")
        at = found.start()
        num = 0
        for i in range(at - 1, pos - 1, -1):
            num = (num << 7) | buf[i]
        return num, buf[at], at + 1

    # -- refusals --------------------------------------------------------------

    def _bodyMissing(self, size: int, need: int, tooLong: bool) -> int:
        """
        A string of C{size} bytes (or a float, given 0) is refused or not
        all in the bytes at hand: refuse it, or check that it may arrive.

        @param need: How many bytes, from its header, the token takes.
        @param tooLong: Whether it ends past the message's byte limit.

        @return: C{need}, if the rest may arrive.
        """
        if size > self.maxStringBytes:
            raise self._fail(
                "maxStringBytes",
                f"string of {size} bytes, more than {self.maxStringBytes}",
            )
        if tooLong:
            raise self._tooLong()
        return need

    def _listRefused(self, size: int, tokens: int) -> FramingError:
        """
        The error for a list header of C{size} elements, bringing its
        message to C{tokens} tokens, that breaks the token, length or depth
        limit (the first of them, in that order).
        """
        if tokens > self.maxMessageTokens:
            return self._fail(
                "maxMessageTokens",
                f"message of more than {self.maxMessageTokens} tokens",
            )
        if size > self.maxListLength:
            return self._fail(
                "maxListLength",
                f"list of {size} elements, more than {self.maxListLength}",
            )
        return self._fail("maxDepth", f"lists nested more than {self.maxDepth} deep")

    def _badWord(
        self, number: int, vocabulary: Optional[Dict[int, bytes]]
    ) -> FramingError:
        """
        The error for a vocabulary token that C{vocabulary} does not know.
        """
        if vocabulary is None:
            return self._fail(
                "badVocabulary", "vocabulary token before the pb dialect was selected"
            )
        return self._fail("badVocabulary", f"unknown vocabulary token {number}")

    def _tooLong(self) -> FramingError:
        """
        The error for a message longer than C{maxMessageBytes}.
        """
        return self._fail(
            "maxMessageBytes", f"message of more than {self.maxMessageBytes} bytes"
        )

    def _fail(self, limit: str, message: str) -> FramingError:
        """
        Remember that parsing failed for good, and make the exception.
        """
        self._failure = (limit, message)
        return FramingError(limit, message)
