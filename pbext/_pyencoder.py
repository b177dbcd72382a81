# -*- test-case-name: tests.test_codec -*-
"""
The pure-Python banana encoder: the specification that the C accelerator's
encoder follows, and the encoder used where the accelerator is not built.

It produces the very bytes C{Banana._encode} would, from cached tables into
a C{bytearray} (long strings are copied once, by the final join), and can
stop as soon as a message grows past a size limit.

@since: pbext NEXT
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

from twisted.python.reflect import fullyQualifiedName
from twisted.spread import banana

from pbext._framing import LONG_STRING, SIZE_LIMIT, FramingError

__all__ = ["encode", "encodeParts", "encodePieces", "intToken", "plain"]

# Type bytes, as integers (banana's module constants are one-byte strings).
_LIST = banana.LIST[0]
_INT = banana.INT[0]
_STRING = banana.STRING[0]
_NEG = banana.NEG[0]
_LONGINT = banana.LONGINT[0]
_LONGNEG = banana.LONGNEG[0]
_VOCAB = banana.VOCAB[0]

# Stock banana's default prefix limit, in bytes; it fixes the range of
# integers an encoder may send.
_PREFIX_LIMIT = 64
_LARGEST_INT = 2**31 - 1
_SMALLEST_INT = -(2**31)
_LARGEST_LONG = 2 ** (_PREFIX_LIMIT * 7) - 1
_SMALLEST_LONG = -_LARGEST_LONG

_packDouble = struct.Struct("!d").pack

Parts = List[Union[bytes, bytearray]]


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


def intToken(value: int) -> bytes:
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
    value: intToken(value) for value in range(-_TABLE_SIZE, _TABLE_SIZE)
}
_LIST_HEADERS = [_token(n, _LIST) for n in range(_TABLE_SIZE)]
_PAIR_HEADER = _LIST_HEADERS[2]
_STRING_HEADERS = [_token(n, _STRING) for n in range(_TABLE_SIZE)]
_VOCAB_TOKENS: Dict[int, bytes] = {n: _token(n, _VOCAB) for n in range(_TABLE_SIZE)}
_FLOAT_BYTE = banana.FLOAT
_NO_VOCABULARY: Dict[bytes, int] = {}


def encode(
    obj: object,
    vocabulary: Optional[Mapping[bytes, int]] = None,
    maxMessageBytes: Optional[int] = None,
) -> bytes:
    """
    Encode C{obj} exactly as L{banana.Banana._encode} would.

    See L{encodeParts} for the arguments and errors.
    """
    return b"".join(encodeParts(obj, vocabulary, maxMessageBytes))


def encodePieces(
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

    See L{encodeParts} for the arguments and errors.
    """
    pieces: List[bytes] = []
    pending: List[Union[bytes, bytearray]] = []
    for part in encodeParts(obj, vocabulary, maxMessageBytes):
        if type(part) is bytes and len(part) > LONG_STRING:
            if pending:
                pieces.append(b"".join(pending))
                pending = []
            pieces.append(part)
        elif part:
            pending.append(part)
    if pending:
        pieces.append(b"".join(pending))
    return pieces


def encodeParts(
    obj: object,
    vocabulary: Optional[Mapping[bytes, int]] = None,
    maxMessageBytes: Optional[int] = None,
) -> Parts:
    """
    Encode C{obj} exactly as L{banana.Banana._encode} would, as parts to
    join: bytes objects given in C{obj} (strings of at least 1 KiB) and
    byte arrays of the rest.

    One loop walks the values, with an explicit stack of the lists being
    encoded, and writes the commonest values (short strings, small ints,
    list headers) itself; rarer work (long strings, big lists, vocabulary
    words, jelly's pairs of strings) is done by small functions.

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
    intTokens, stringHeaders, tableSize = _INT_TOKENS, _STRING_HEADERS, _TABLE_SIZE
    listHeaders, pairHeader = _LIST_HEADERS, _PAIR_HEADER
    maxNesting = sys.getrecursionlimit()
    # Encoded bytes before out, and how many more may follow them.
    out = bytearray()
    parts: Parts = []
    room = limit
    # Iterators over the lists being encoded, outermost first: the for loop
    # breaks out to descend into a list and its else clause climbs back.
    stack: List[Iterator[Any]] = []
    items: Iterator[Any] = iter((obj,))
    # Any: mypy does not narrow on "type(item) is bytes".
    item: Any
    while True:
        for item in items:
            kind = type(item)
            if kind is bytes:
                word = lookupWord(item)
                if word is not None:
                    out += _wordToken(word)
                elif len(item) < tableSize:
                    out += stringHeaders[len(item)]
                    if len(out) + len(item) > room:
                        raise _tooLarge(limit)
                    out += item
                    continue
                else:
                    # Long strings are not copied until the final join.
                    room = _writeLongString(item, out, parts, room, limit)
                    out = bytearray()
                    continue
            elif kind is int:
                token = intTokens.get(item)
                out += intToken(item) if token is None else token
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
                        if lookupWord(first) is None and lookupWord(second) is None:
                            out += pairHeader
                            out += stringHeaders[len(first)]
                            out += first
                            out += stringHeaders[len(second)]
                            out += second
                        else:
                            _writeShortPair(first, second, out, lookupWord)
                        if len(out) > room:
                            raise _tooLarge(limit)
                        continue
                out += listHeaders[size] if size < tableSize else _listHeader(size)
                if size:
                    # The header is counted with the list's first scalar.
                    if len(stack) >= maxNesting:
                        raise RecursionError(
                            "lists nested too deeply to encode with banana"
                        )
                    stack.append(items)
                    items = iter(item)
                    break
            elif kind is float:
                out += _FLOAT_BYTE
                out += _packDouble(item)
            else:
                # A subclass (bool, say): encode its plain equivalent next.
                stack.append(items)
                items = iter((plain(item),))
                break
            if len(out) > room:
                raise _tooLarge(limit)
        else:
            if not stack:
                parts.append(out)
                return parts
            items = stack.pop()


def _writeLongString(
    string: bytes, out: bytearray, parts: Parts, room: int, limit: int
) -> int:
    """
    Write the header of a string of 1 KiB or more, and end the current part
    with it: the string itself is the next part, so that it is copied only
    by the final join (or sent as it is, by L{encodePieces}).

    @return: How many more bytes the encoding may take after the string.
    """
    size = len(string)
    if size > SIZE_LIMIT:
        raise banana.BananaError(f"byte string is too long to send ({size})")
    out += _token(size, _STRING)
    room -= len(out) + size
    if room < 0:
        raise _tooLarge(limit)
    parts.append(out)
    parts.append(string)
    return room


def _writeShortPair(
    first: bytes,
    second: bytes,
    out: bytearray,
    lookupWord: Callable[[bytes], Optional[int]],
) -> None:
    """
    Write a list of two strings shorter than 1 KiB.
    """
    out += _PAIR_HEADER
    word = lookupWord(first)
    if word is None:
        out += _STRING_HEADERS[len(first)]
        out += first
    else:
        out += _wordToken(word)
    word = lookupWord(second)
    if word is None:
        out += _STRING_HEADERS[len(second)]
        out += second
    else:
        out += _wordToken(word)


def _listHeader(size: int) -> bytes:
    """
    The header of a list or tuple of C{size} elements.
    """
    if size < _TABLE_SIZE:
        return _LIST_HEADERS[size]
    if size > SIZE_LIMIT:
        raise banana.BananaError(f"list/tuple is too long to send ({size})")
    return _token(size, _LIST)


def _wordToken(number: int) -> bytes:
    """
    The token of vocabulary word C{number}.
    """
    return _VOCAB_TOKENS.get(number) or _token(number, _VOCAB)


def plain(obj: object) -> object:
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
