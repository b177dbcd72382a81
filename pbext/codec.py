# -*- test-case-name: tests.test_codec -*-
"""
A linear-time, limit-checking banana decoder and a fast banana encoder.

Twisted's L{twisted.spread.banana.Banana} re-slices its whole receive
buffer for every token it parses, so decoding a message costs time
quadratic in its size, and the only limits it enforces are the length of a
number prefix and the length of one string or one list.  This module
decodes and encodes exactly the same wire format (the bytes are banana,
byte for byte) but:

  - L{Decoder} parses in time linear in the bytes received, however they
    are split into chunks, and checks every limit while bytes arrive,
    before it allocates anything for them: string and list lengths are
    refused at their header, nesting depth at the list header that goes too
    deep, and the size of one message (one top-level expression) in bytes
    and in tokens as soon as it is known to be too large (a string's
    declared length and a list's declared elements count at the header).
  - L{encode} produces the very bytes C{Banana._encode} would, from cached
    tables into a C{bytearray} (long strings are copied once, by the final
    join), and can stop as soon as a message grows past a size limit.

Neither keeps any state outside its own instance: pbext's broker owns one
L{Decoder} per connection.

Both have a C twin in pbext's optional accelerator (L{pbext._accelerator}):
where it is built, L{encode} is the C function and a L{Decoder} parses with
the C parser, with the same results, limits and errors as the Python code
here, which stays the specification and the fallback.

@since: pbext NEXT
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from twisted.python.reflect import fullyQualifiedName
from twisted.spread import banana

from pbext._accelerator import speedups as _speedups

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_MESSAGE_TOKENS",
    "Decoder",
    "FramingError",
    "encode",
    "encodePieces",
]

# Type bytes, as integers (banana's module constants are one-byte strings).
_LIST = banana.LIST[0]
_INT = banana.INT[0]
_STRING = banana.STRING[0]
_NEG = banana.NEG[0]
_FLOAT = banana.FLOAT[0]
_LONGINT = banana.LONGINT[0]
_LONGNEG = banana.LONGNEG[0]
_VOCAB = banana.VOCAB[0]

# Stock banana's limit on the length of one string or one list.
_SIZE_LIMIT: int = banana.SIZE_LIMIT

# Stock banana's default prefix limit, in bytes; it fixes the range of
# integers an encoder may send.
_PREFIX_LIMIT = 64
_LARGEST_INT = 2**31 - 1
_SMALLEST_INT = -(2**31)
_LARGEST_LONG = 2 ** (_PREFIX_LIMIT * 7) - 1
_SMALLEST_LONG = -_LARGEST_LONG

#: Default for L{Decoder}'s C{maxDepth}: how many lists may be open at once.
#: A PB call puts its arguments two lists deep, and jelly adds one level per
#: list and two per dictionary, so this admits over 45 levels of nested
#: application data while keeping Twisted's recursive unjelly well inside
#: Python's recursion limit.
DEFAULT_MAX_DEPTH = 100

#: Default for L{Decoder}'s C{maxMessageTokens}.  A banana token is one byte
#: or more and can cost about 64 bytes of memory once decoded (an empty
#: list), so this bounds one message at roughly 64 MB of Python objects,
#: while a list of 15,000 dictionaries of ten string keys still fits.
DEFAULT_MAX_MESSAGE_TOKENS = 1_000_000

#: Default for L{Decoder}'s C{maxMessageBytes}: 16 MiB, room for 25 strings
#: of stock banana's maximum size in one message.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Strings longer than this are received in place: see L{Decoder.receiveBuffer}.
_LONG_STRING = 64 * 1024
#: ... once this share of them has arrived, so a peer makes a decoder hold at
#: most this many times the bytes it sent.
_LONG_STRING_SHARE = 16

_findTypeByte = re.compile(b"[\x80-\xff]").search
_unpackDouble = struct.Struct("!d").unpack_from
_packDouble = struct.Struct("!d").pack


class FramingError(banana.BananaError):
    """
    A peer broke one of the banana framing rules or limits of a L{Decoder},
    or a message to send is larger than allowed.

    A L{Decoder} that raised this is dead: the connection it decodes for
    can no longer be parsed and should be dropped.

    @ivar limit: A short machine-readable name of the rule broken: the name
        of the L{Decoder} limit (C{"maxPrefixBytes"}, C{"maxStringBytes"},
        C{"maxListLength"}, C{"maxDepth"}, C{"maxMessageTokens"},
        C{"maxMessageBytes"}), C{"badTypeByte"} for a type byte banana does
        not define, or C{"badVocabulary"} for a vocabulary token that is
        unknown or arrives before the C{b"pb"} dialect is selected.
    @ivar message: A sentence describing what was wrong, for people.

    @since: pbext NEXT
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class Decoder:
    """
    An incremental banana decoder for one connection.

    Feed it bytes as they arrive with L{feed} (or L{feedTo}); it returns
    (or delivers) every top-level expression completed by those bytes, as
    the same Python objects L{twisted.spread.banana.Banana} hands to
    C{expressionReceived}: C{list} for lists, C{bytes} for strings, C{int}
    for the four integer types (not range-checked, as in stock), C{float}
    for floats and the vocabulary's C{bytes} for vocabulary tokens.

    Limits are checked as the bytes arrive, before anything is allocated
    for them; the first one broken raises L{FramingError} and leaves the
    decoder dead (every later call raises again).

    Parsing costs time linear in the bytes fed, whatever the chunking:
    bytes are scanned once with local variables, and while a long string is
    incomplete each new chunk is only appended to a list until the string's
    declared length has arrived.

    @since: pbext NEXT
    """

    def __init__(
        self,
        *,
        maxPrefixBytes: int = 64,
        maxStringBytes: int = _SIZE_LIMIT,
        maxListLength: int = _SIZE_LIMIT,
        maxDepth: int = DEFAULT_MAX_DEPTH,
        maxMessageTokens: int = DEFAULT_MAX_MESSAGE_TOKENS,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        vocabulary: Optional[Mapping[int, bytes]] = None,
        accelerated: Optional[bool] = None,
    ) -> None:
        """
        @param maxPrefixBytes: The longest number prefix accepted, in bytes
            (stock banana's C{prefixLimit}, 64).  At least 1.
        @param maxStringBytes: The longest string accepted, in bytes (stock:
            640 KiB).
        @param maxListLength: The most elements one list may declare (stock:
            640 Ki).
        @param maxDepth: How many lists may be open at once; a top-level
            list is depth 1.  Stock banana has no such limit.
        @param maxMessageTokens: How many tokens (list headers, strings,
            numbers, vocabulary words) one top-level expression may hold.
            A list's elements are counted when its header declares them, so
            a header declaring too many fails at once.  Stock banana has no
            such limit.
        @param maxMessageBytes: How many bytes one top-level expression may
            take on the wire, counting a string's declared length as soon as
            its header arrives.  Stock banana has no such limit.
        @param vocabulary: The incoming vocabulary (token number to word) if
            the C{b"pb"} dialect is already selected, else L{None}: then
            vocabulary tokens are refused until L{setVocabulary} is called.
        @param accelerated: Whether to parse with pbext's C accelerator:
            L{None} (the default) uses it when it is built, C{False} uses
            the pure-Python parser, C{True} requires the accelerator.

        @raise ValueError: If a limit is not a positive integer, or if
            C{accelerated} is C{True} and the accelerator is not available.
        """
        limits = {
            "maxPrefixBytes": maxPrefixBytes,
            "maxStringBytes": maxStringBytes,
            "maxListLength": maxListLength,
            "maxDepth": maxDepth,
            "maxMessageTokens": maxMessageTokens,
            "maxMessageBytes": maxMessageBytes,
        }
        for name, value in limits.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
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
        if accelerated is None:
            accelerated = _speedups is not None
        if accelerated:
            if _speedups is None:
                from pbext._accelerator import reason

                raise ValueError(f"the C accelerator is not available: {reason}")
            # The C parser keeps all the parsing state; its methods
            # replace this instance's, saving a call per chunk.
            core = _speedups.DecoderCore(**limits)
            self._core = core
            self.feed = core.feed  # type: ignore[method-assign]
            self.feedTo = core.feedTo  # type: ignore[method-assign]
            self.setVocabulary = core.setVocabulary  # type: ignore[method-assign]
            self.receiveBuffer = core.receiveBuffer  # type: ignore[method-assign]
            self.bufferFilled = core.bufferFilled  # type: ignore[method-assign]
        else:
            self._core = None
        self.setVocabulary(vocabulary)

    def setVocabulary(self, vocabulary: Optional[Mapping[int, bytes]]) -> None:
        """
        Accept vocabulary tokens from now on, as when the connection selects
        banana's C{b"pb"} dialect (or stop accepting them, given L{None}).

        Called from inside a L{feedTo} callback, this applies to the very
        next token, as the dialect selection in stock banana does.

        @param vocabulary: Maps token numbers to the words they stand for,
            like L{banana.Banana.incomingVocabulary}.
        """
        self._vocabulary = None if vocabulary is None else dict(vocabulary)

    def setPlainJelly(self, enabled: bool) -> None:
        """
        Deliver the plain jelly inside messages already unjellied: each
        element of a top-level list that is the jelly of a plain value
        (what L{pbext._jelly.unjellyPlain} turns into a value) is
        delivered as C{pbext._speedups.Jellied(value)}, built while the
        bytes are parsed, without the expression; any other element is the
        usual expression, for the full unjellier.  pbext's broker turns
        this on where its policy lets plain values through.

        Only the C accelerator parses this way; call it before any bytes
        are fed.

        @raise ValueError: If this decoder does not use the accelerator.
        """
        if self._core is None:
            raise ValueError("plain-jelly decoding needs the C accelerator")
        self._core.setPlainJelly(enabled)

    def setPlainTypes(self, types: Optional[Mapping[bytes, Any]]) -> None:
        """
        In plain-jelly mode, also build the registered copyable types whose
        receive specs C{types} holds (L{pbext._jelly.PlainTypes.receive})
        and that can be built without running any code of their own (a
        dataclass with a generated C{__init__}, given every field), as
        L{pbext._jelly.unjellyPlain} builds them: a copy whose state passes
        every check of its registration arrives built, inside the plain
        value that holds it.  Any other copy is left as an expression, for
        C{unjellyPlain} or the full unjellier once the message is accepted
        (the latter reports a refusal).  Call it before the
        bytes whose types it should apply to are fed.

        @param types: Receive specs by wire name, or L{None} for none.

        @raise ValueError: If this decoder does not use the accelerator.
        """
        if self._core is None:
            raise ValueError("plain-jelly decoding needs the C accelerator")
        if types is not None and type(types) is not dict:
            types = dict(types)
        # Not copied: the tables are never changed once made, and
        # connections share them.
        self._core.setPlainTypes(types)

    @property
    def accelerated(self) -> bool:
        """
        Whether this decoder parses with pbext's C accelerator.
        """
        return self._core is not None

    @property
    def pendingBytes(self) -> int:
        """
        How many bytes of an incomplete top-level expression have been
        received (parsed or held); 0 between messages.
        """
        if self._core is not None:
            return self._core.pendingBytes  # type: ignore[no-any-return]
        return self._messageBytes + self._have

    @property
    def wantedBytes(self) -> int:
        """
        How many more bytes complete the string (or float) whose header has
        arrived and whose body is still arriving; 0 when no such token is
        pending.  A transport can read that much at once.
        """
        if self._core is not None:
            return self._core.wantedBytes  # type: ignore[no-any-return]
        if self._chunks or self._long is not None:
            return max(self._need - self._have, 0)
        return 0

    @property
    def messageStarted(self) -> bool:
        """
        Whether a top-level expression has been partly received.
        """
        if self._core is not None:
            return self._core.messageStarted  # type: ignore[no-any-return]
        return self._messageBytes + self._have > 0

    def feed(self, data: bytes) -> List[object]:
        """
        Parse bytes received from the peer.

        All the expressions completed by C{data} are parsed with the
        vocabulary in force when this is called.  The first message of a
        connection selects the dialect, and the peer may send the next one,
        which uses the vocabulary, in the same chunk; a broker that switches
        vocabulary on a message should use L{feedTo} instead, which lets it
        do so before the next token is parsed.

        @param data: The bytes, in any chunking.

        @return: Every top-level expression completed by C{data}, in order.

        @raise FramingError: If the bytes break a rule or a limit (the
            expressions completed before it in C{data} are discarded), or
            if this decoder already raised one.
        """
        received: List[object] = []
        self._decode(data, received.append)
        return received

    def feedTo(
        self, data: bytes, expressionReceived: Callable[[object], object]
    ) -> None:
        """
        Parse bytes received from the peer and hand each completed top-level
        expression to C{expressionReceived} as soon as it is complete.

        This is how L{banana.Banana.dataReceived} delivers: the callback may
        call L{setVocabulary} and the tokens after that expression are
        parsed with the new vocabulary.  Expressions completed before a
        framing error are delivered before it is raised.  If the callback
        raises, the exception propagates and the bytes after that
        expression stay buffered for the next call.  The callback must not
        call L{feed} or L{feedTo} itself.

        @param data: The bytes, in any chunking.
        @param expressionReceived: Called with each expression, in order.

        @raise FramingError: If the bytes break a rule or a limit, or if
            this decoder already raised one.
        """
        self._decode(data, expressionReceived)

    def receiveBuffer(self) -> Optional[memoryview]:
        """
        A writable buffer for the rest of the long string arriving, or
        L{None} when none is.

        Once the header and a sixteenth of a string longer than 64 KiB have
        arrived, the decoder makes a buffer for the string at its final
        size; the rest of its bytes can then be received with
        C{socket.recv_into}, say, instead of into new bytes objects that
        L{feedTo} would copy again.  The buffer holds at least one byte and
        at most L{wantedBytes} (the pure-Python decoder's is a view of the
        string's own buffer, exactly that long; the C accelerator's holds
        at most 64 KiB, which it copies into the string, since the string
        is a C{bytes} object and no buffer handed out may write into one).
        After writing the first C{count} bytes of it, call L{bufferFilled}
        with C{count}, before feeding or asking for another buffer.
        Writing into a buffer handed out earlier after that call changes
        nothing received.

        @return: A writable buffer (a C{memoryview}, or the C accelerator's
            own buffer object), or L{None}.
        """
        if self._long is None or self._failure is not None or self._busy:
            return None
        self._offered = True
        room = self._need - self._have
        return memoryview(self._long)[self._longSize - room :]

    def bufferFilled(
        self, count: int, expressionReceived: Callable[[object], object]
    ) -> None:
        """
        Parse the first C{count} bytes written into the buffer from
        L{receiveBuffer}, exactly as L{feedTo} would parse them.

        @param count: How many bytes were written, from the buffer's start.
        @param expressionReceived: As for L{feedTo}.

        @raise ValueError: If no buffer is outstanding (none was asked for,
            or bytes were parsed since), or C{count} is negative or more
            than the buffer holds.
        @raise FramingError: As for L{feedTo}.
        """
        if self._failure is not None:
            raise FramingError(*self._failure)
        if self._busy:
            raise RuntimeError("a Decoder cannot be fed from its own callback")
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

    def _startLong(self) -> None:
        """
        If the held bytes start a long string of which enough has arrived,
        make its final buffer now, with the body held copied into it.
        """
        size = self._longSize
        if not self._chunks or size <= _LONG_STRING:
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

    def _fail(self, limit: str, message: str) -> FramingError:
        """
        Remember that parsing failed for good, and make the exception.
        """
        self._failure = (limit, message)
        return FramingError(limit, message)

    def _decode(
        self,
        data: bytes,
        emit: Callable[[object], object],
        first: Optional[bytes] = None,
    ) -> None:
        """
        Parse C{data} after what is held, calling C{emit} with each complete
        top-level expression; or, given C{first} (a long string just
        completed), that string and then C{data}.
        """
        if self._failure is not None:
            raise FramingError(*self._failure)
        if self._busy:
            raise RuntimeError("a Decoder cannot be fed from its own callback")
        if type(data) is not bytes:
            data = bytes(data)
        chunks = self._chunks
        if first is not None:
            buf = data
        elif self._long is not None:
            # Copy into the long string what belongs to it.
            self._offered = False
            room = self._need - self._have
            taken = memoryview(data)[:room]
            at = self._longSize - room
            self._long[at : at + len(taken)] = taken
            self._have += len(taken)
            if self._have < self._need:
                return
            first = self._finishLong()
            buf = data[len(taken) :]
        elif chunks:
            # Waiting for the rest of a token: only the chunk is kept until
            # the token is whole.
            chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                self._startLong()
                return
            buf = b"".join(chunks)
        else:
            buf = data
        self._busy = True

        end = len(buf)
        pos = 0
        need = 0
        stringSize = 0
        stack = self._stack
        cur = self._current
        want = self._want
        tokens = self._tokens
        maxMessageBytes = self.maxMessageBytes
        # Offset (possibly negative) of the current message's first byte;
        # the message must not extend past messageLimit.
        messageOrigin = -self._messageBytes
        messageLimit = messageOrigin + maxMessageBytes
        stringLimit = end if end < messageLimit else messageLimit
        maxTokens = self.maxMessageTokens
        maxPrefix = self.maxPrefixBytes
        maxString = self.maxStringBytes
        maxList = self.maxListLength
        maxDepth = self.maxDepth
        vocabulary = self._vocabulary
        findTypeByte = _findTypeByte
        unpackDouble = _unpackDouble
        item: object
        # Type bytes are literals below (0x80 LIST, 0x81 INT, 0x82 STRING,
        # 0x83 NEG, 0x84 FLOAT, 0x85 LONGINT, 0x86 LONGNEG, 0x87 VOCAB):
        # this loop runs once per token and constants are the fastest.
        try:
            if first is not None:
                # A long string just completed: place it as the loop below
                # places an item.
                item = first
                while cur is not None:
                    cur.append(item)
                    if len(cur) < want:
                        break
                    item = cur
                    cur, want = stack.pop()
                else:
                    tokens = 1
                    messageOrigin = pos
                    messageLimit = pos + maxMessageBytes
                    stringLimit = end if end < messageLimit else messageLimit
                    emit(item)
                    vocabulary = self._vocabulary
            while True:
                # The number prefix (base-128, least significant first) and
                # the type byte, fast for the usual zero- or one-byte prefix;
                # running off the end of the bytes means they are used up or
                # end in an incomplete prefix.
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
                        else:
                            found = findTypeByte(buf, pos, pos + maxPrefix + 1)
                            if found is None:
                                if end - pos > maxPrefix:
                                    raise self._fail(
                                        "maxPrefixBytes",
                                        f"more than {maxPrefix} bytes of prefix",
                                    )
                                break
                            pos = found.start()
                            typ = buf[pos]
                            num = 0
                            for i in range(pos - 1, start - 1, -1):
                                num = (num << 7) | buf[i]
                            pos += 1
                except IndexError:
                    break

                if typ == 0x82:
                    if num > maxString:
                        raise self._fail(
                            "maxStringBytes",
                            f"string of {num} bytes, more than {maxString}",
                        )
                    stop = pos + num
                    if stop > stringLimit:
                        if stop > messageLimit:
                            raise self._tooLong(maxMessageBytes)
                        need = stop - start
                        stringSize = num
                        pos = start
                        break
                    item = buf[pos:stop]
                    pos = stop
                elif typ == 0x80:
                    # A message may hold one token and the elements its lists
                    # declare: refuse as soon as a header declares too many.
                    tokens += num
                    if tokens > maxTokens:
                        raise self._fail(
                            "maxMessageTokens",
                            f"message of more than {maxTokens} tokens",
                        )
                    if num > maxList:
                        raise self._fail(
                            "maxListLength",
                            f"list of {num} elements, more than {maxList}",
                        )
                    if len(stack) >= maxDepth:
                        raise self._fail(
                            "maxDepth", f"lists nested more than {maxDepth} deep"
                        )
                    if pos > messageLimit:
                        raise self._tooLong(maxMessageBytes)
                    if num:
                        stack.append((cur, want))
                        cur = []
                        want = num
                        continue
                    item = []
                elif typ == 0x87:
                    if vocabulary is None:
                        raise self._fail(
                            "badVocabulary",
                            "vocabulary token before the pb dialect was selected",
                        )
                    item = vocabulary.get(num)
                    if item is None:
                        raise self._fail(
                            "badVocabulary", f"unknown vocabulary token {num}"
                        )
                elif typ == 0x81 or typ == 0x85:
                    item = num
                elif typ == 0x83 or typ == 0x86:
                    item = -num
                elif typ == 0x84:
                    stop = pos + 8
                    if stop > stringLimit:
                        if stop > messageLimit:
                            raise self._tooLong(maxMessageBytes)
                        need = stop - start
                        pos = start
                        break
                    item = unpackDouble(buf, pos)[0]
                    pos = stop
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
                        raise self._tooLong(maxMessageBytes)
                    tokens = 1
                    messageOrigin = pos
                    messageLimit = pos + maxMessageBytes
                    stringLimit = end if end < messageLimit else messageLimit
                    emit(item)
                    vocabulary = self._vocabulary

            if end > messageLimit:
                # The current message, with the bytes held of its incomplete
                # last token, is already too long.
                raise self._tooLong(maxMessageBytes)
        finally:
            self._busy = False
            self._current = cur
            self._want = want
            self._tokens = tokens
            self._messageBytes = pos - messageOrigin
            if pos < end:
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
        self._startLong()

    def _tooLong(self, maxMessageBytes: int) -> FramingError:
        """
        Fail because the current message is longer than C{maxMessageBytes}.
        """
        return self._fail(
            "maxMessageBytes", f"message of more than {maxMessageBytes} bytes"
        )


def _token(number: int, typeByte: int) -> bytes:
    """
    Encode a non-negative number prefix and a type byte, as banana's
    C{int2b128} does (zero is one zero byte, not an empty prefix).
    """
    if number < 128:
        return bytes((number, typeByte))
    out = bytearray()
    while number:
        out.append(number & 0x7F)
        number >>= 7
    out.append(typeByte)
    return bytes(out)


def _intToken(value: int) -> bytes:
    """
    Encode an integer as C{Banana._encode} does.

    @raise banana.BananaError: If it needs more than 64 bytes of prefix.
    """
    if value < 0:
        if value >= _SMALLEST_INT:
            return _token(-value, _NEG)
        if value >= _SMALLEST_LONG:
            return _token(-value, _LONGNEG)
    elif value <= _LARGEST_INT:
        return _token(value, _INT)
    elif value <= _LARGEST_LONG:
        return _token(value, _LONGINT)
    raise banana.BananaError(f"int is too large to send ({value})")


_TABLE_SIZE = 1024
_INT_TOKENS: Dict[int, bytes] = {
    value: _intToken(value) for value in range(-_TABLE_SIZE, _TABLE_SIZE)
}
_LIST_HEADERS = [_token(n, _LIST) for n in range(_TABLE_SIZE)]
_STRING_HEADERS = [_token(n, _STRING) for n in range(_TABLE_SIZE)]
_VOCAB_TOKENS: Dict[int, bytes] = {n: _token(n, _VOCAB) for n in range(_TABLE_SIZE)}
_FLOAT_BYTE = banana.FLOAT
_NO_VOCABULARY: Dict[bytes, int] = {}


def _encodePython(
    obj: object,
    vocabulary: Optional[Mapping[bytes, int]] = None,
    maxMessageBytes: Optional[int] = None,
) -> bytes:
    """
    Encode C{obj} exactly as L{banana.Banana._encode} would.

    See L{_encodeParts} for the arguments and errors.
    """
    return b"".join(_encodeParts(obj, vocabulary, maxMessageBytes))


def _encodePiecesPython(
    obj: object,
    vocabulary: Optional[Mapping[bytes, int]] = None,
    maxMessageBytes: Optional[int] = None,
) -> List[bytes]:
    """
    Encode C{obj} as L{encode} does, in pieces: the encoding is their
    concatenation, and every string longer than 64 KiB (and not a
    vocabulary word) is a piece of its own, the very object given, so a
    transport can send it without copying it into the message
    (C{socket.sendmsg}).  No piece is empty.

    See L{_encodeParts} for the arguments and errors.
    """
    pieces: List[bytes] = []
    pending: List[Union[bytes, bytearray]] = []
    for part in _encodeParts(obj, vocabulary, maxMessageBytes):
        if type(part) is bytes and len(part) > _LONG_STRING:
            if pending:
                pieces.append(b"".join(pending))
                pending = []
            pieces.append(part)
        elif part:
            pending.append(part)
    if pending:
        pieces.append(b"".join(pending))
    return pieces


def _encodeParts(
    obj: object,
    vocabulary: Optional[Mapping[bytes, int]] = None,
    maxMessageBytes: Optional[int] = None,
) -> List[Union[bytes, bytearray]]:
    """
    Encode C{obj} exactly as L{banana.Banana._encode} would, as parts to
    join: bytes objects given in C{obj} (strings of at least 1 KiB) and
    byte arrays of the rest.

    @param obj: A list or tuple (of the types listed here), an C{int} of at
        most 64 bytes of prefix (C{bool} included), a C{float} or C{bytes}.
    @param vocabulary: Word to token number, when the C{b"pb"} dialect is
        selected (normally L{banana.Banana.outgoingVocabulary}); L{None}
        before a dialect is selected and in dialect C{b"none"}.
    @param maxMessageBytes: If not L{None}, the most bytes the encoding may
        take.  It is checked after every token, and before a string is
        copied, so encoding stops as soon as the limit is passed.

    @return: The parts of the encoding.

    @raise banana.BananaError: Where stock banana raises it: a list, tuple
        or string longer than 640 KiB, an integer out of range, or an
        object of another type.
    @raise FramingError: With C{limit} C{"maxMessageBytes"} if the encoding
        would be longer than C{maxMessageBytes}.
    @raise RecursionError: If lists nest deeper than Python's recursion
        limit (a list containing itself, say), where stock banana overflows
        the stack.
    """
    limit = sys.maxsize if maxMessageBytes is None else maxMessageBytes
    lookupWord = (_NO_VOCABULARY if vocabulary is None else vocabulary).get
    intTokens = _INT_TOKENS
    listHeaders = _LIST_HEADERS
    stringHeaders = _STRING_HEADERS
    vocabTokens = _VOCAB_TOKENS
    tableSize = _TABLE_SIZE
    packDouble = _packDouble
    floatByte = _FLOAT_BYTE
    maxNesting = sys.getrecursionlimit()
    out = bytearray()
    # Encoded bytes before out, and how many more may follow them.
    parts: List[Union[bytes, bytearray]] = []
    room = limit
    # Iterators over the lists being encoded, outermost first: the for loop
    # breaks out to descend into a list and its else clause climbs back.
    stack: List[Iterator[Any]] = []
    items: Iterator[Any] = iter((obj,))
    item: Any
    while True:
        for item in items:
            kind = type(item)
            if kind is bytes:
                word = lookupWord(item)
                if word is None:
                    size = len(item)
                    if size < tableSize:
                        out += stringHeaders[size]
                        if len(out) + size > room:
                            raise _tooLarge(limit)
                        out += item
                    else:
                        # Long strings are not copied until the final join.
                        if size > _SIZE_LIMIT:
                            raise banana.BananaError(
                                f"byte string is too long to send ({size})"
                            )
                        out += _token(size, _STRING)
                        room -= len(out) + size
                        if room < 0:
                            raise _tooLarge(limit)
                        parts.append(out)
                        parts.append(item)
                        out = bytearray()
                    continue
                try:
                    out += vocabTokens[word]
                except KeyError:
                    out += _token(word, _VOCAB)
            elif kind is list or kind is tuple:
                size = len(item)
                if size == 2:
                    # Two short strings (jelly's [b"unicode", text], mostly):
                    # encoded in place, without descending into the list.
                    first, second = item
                    if (
                        type(first) is bytes
                        and type(second) is bytes
                        and len(first) < tableSize
                        and len(second) < tableSize
                    ):
                        out += listHeaders[2]
                        word = lookupWord(first)
                        if word is None:
                            out += stringHeaders[len(first)]
                            out += first
                        else:
                            out += vocabTokens.get(word) or _token(word, _VOCAB)
                        word = lookupWord(second)
                        if word is None:
                            out += stringHeaders[len(second)]
                            out += second
                        else:
                            out += vocabTokens.get(word) or _token(word, _VOCAB)
                        if len(out) > room:
                            raise _tooLarge(limit)
                        continue
                if size < tableSize:
                    out += listHeaders[size]
                elif size > _SIZE_LIMIT:
                    raise banana.BananaError(f"list/tuple is too long to send ({size})")
                else:
                    out += _token(size, _LIST)
                if size:
                    # The header is counted with the list's first scalar.
                    if len(stack) >= maxNesting:
                        raise RecursionError(
                            "lists nested too deeply to encode with banana"
                        )
                    stack.append(items)
                    items = iter(item)
                    break
            elif kind is int:
                token = intTokens.get(item)
                out += _intToken(item) if token is None else token
            elif kind is float:
                out += floatByte
                out += packDouble(item)
            else:
                # A subclass (bool, say): encode its plain equivalent next.
                stack.append(items)
                items = iter((_plain(item),))
                break
            if len(out) > room:
                raise _tooLarge(limit)
        else:
            if not stack:
                parts.append(out)
                return parts
            items = stack.pop()


#: The pure-Python L{encode}, which the C one follows.
encode = _encodePython
#: The pure-Python L{encodePieces}, which the C one follows.
encodePieces = _encodePiecesPython


def _plain(obj: object) -> object:
    """
    Convert an object of a subclass of a type banana sends (such as C{bool})
    to a value of the base type that banana encodes the same way, following
    the order of L{banana.Banana._encode}'s C{isinstance} checks.

    @raise banana.BananaError: If banana cannot send it.
    """
    if isinstance(obj, (list, tuple)):
        return tuple(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    raise banana.BananaError(
        f"Banana cannot send {fullyQualifiedName(type(obj))} objects: {obj!r}"
    )


def _tooLarge(limit: int) -> FramingError:
    """
    The error for an encoding longer than C{limit} bytes.
    """
    return FramingError(
        "maxMessageBytes", f"message to send is longer than {limit} bytes"
    )


if _speedups is not None:
    _speedups.configure(
        framingError=FramingError,
        bananaError=banana.BananaError,
        plain=_plain,
        intToken=_intToken,
        sizeLimit=_SIZE_LIMIT,
    )
    encode = _speedups.encode  # noqa: F811
    encodePieces = _speedups.encodePieces  # noqa: F811

# The C decoder also needs the jelly half of the accelerator's
# configuration, which pbext._jelly gives when it is imported: import it
# here (last, as codec is complete by now), so that a program importing
# only this module gets a working Decoder.
from pbext import _jelly as _jellyConfiguresTheAccelerator  # noqa: E402, F401
