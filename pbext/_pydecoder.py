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
    SIZE_LIMIT,
    FramingError,
    checkLimits,
)
from pbext._heldbytes import HeldBytes
from pbext.interfaces import IDecoder

__all__ = ["PythonDecoder"]

_findTypeByte = re.compile(b"[\x80-\xff]").search
_unpackDouble = struct.Struct("!d").unpack_from

Emit = Callable[[object], object]


def _table(vocabulary: Optional[Mapping[int, bytes]]) -> Optional[Dict[int, bytes]]:
    """
    The vocabulary a decoder reads: a dict as it is, as stock banana reads
    its table (a copy of Twisted's, which every connection shares, would
    cost each connection a kilobyte); any other mapping copied into one.
    """
    if vocabulary is None or type(vocabulary) is dict:
        return vocabulary
    return dict(vocabulary)


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
        # Bytes received but not parsed yet: at most one incomplete token,
        # or a long string's final buffer.
        self._held = HeldBytes()
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
        self._vocabulary = _table(vocabulary)

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
        return self._messageBytes + self._held.have

    @property
    def wantedBytes(self) -> int:
        """
        See L{IDecoder.wantedBytes}.
        """
        return self._held.wanted()

    @property
    def messageStarted(self) -> bool:
        """
        See L{IDecoder.messageStarted}.
        """
        return self._messageBytes + self._held.have > 0

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
        if self._held.long is None or self._failure is not None or self._busy:
            return None
        return self._held.receiveBuffer()

    def bufferFilled(self, count: int, expressionReceived: Emit) -> None:
        """
        See L{IDecoder.bufferFilled}.
        """
        self._checkUsable()
        if not self._held.filled(count):
            return
        string, size = self._held.finishLong()
        self._messageBytes += size
        self._decode(b"", expressionReceived, string)

    # -- bytes held between calls --------------------------------------------

    def _checkUsable(self) -> None:
        """
        Refuse to parse on after a framing error, or from a callback.
        """
        if self._failure is not None:
            raise FramingError(*self._failure)
        if self._busy:
            raise RuntimeError("a Decoder cannot be fed from its own callback")

    def _hold(self, buf: bytes, pos: int, need: int = 0, stringSize: int = 0) -> None:
        """
        Keep the bytes of C{buf} from C{pos} on, which start a token that
        parsing resumes from once C{need} bytes are held.
        """
        self._held.hold(buf, pos, need, stringSize)

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
        held = self._held
        if first is None:
            if held.long is not None:
                first, data, size = held.fillLong(data)
                if first is None:
                    return
                self._messageBytes += size
            elif held.chunks:
                joined = held.join(data)
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
        held.startLong()

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
        return self._fail(
            *_listRefusal(
                size, tokens, self.maxMessageTokens, self.maxListLength, self.maxDepth
            )
        )

    def _badWord(
        self, number: int, vocabulary: Optional[Dict[int, bytes]]
    ) -> FramingError:
        """
        The error for a vocabulary token that C{vocabulary} does not know.
        """
        return self._fail("badVocabulary", _badWordMessage(number, vocabulary))

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


def _listRefusal(
    size: int, tokens: int, maxMessageTokens: int, maxListLength: int, maxDepth: int
) -> Tuple[str, str]:
    """
    The limit a list header of C{size} elements, bringing its message to
    C{tokens} tokens, breaks (the first of the token, length and depth
    limits, in that order), and the message saying how.
    """
    if tokens > maxMessageTokens:
        return "maxMessageTokens", f"message of more than {maxMessageTokens} tokens"
    if size > maxListLength:
        return "maxListLength", f"list of {size} elements, more than {maxListLength}"
    return "maxDepth", f"lists nested more than {maxDepth} deep"


def _badWordMessage(number: int, vocabulary: Optional[Dict[int, bytes]]) -> str:
    """
    What is wrong with vocabulary token C{number}: no vocabulary yet, or
    not one of C{vocabulary}'s words.
    """
    if vocabulary is None:
        return "vocabulary token before the pb dialect was selected"
    return f"unknown vocabulary token {number}"
