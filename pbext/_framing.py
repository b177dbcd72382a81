# -*- test-case-name: tests.test_codec -*-
"""
The banana framing rules pbext adds to Twisted's, shared by its decoders and
its encoder: L{FramingError} and the default limits, which L{pbext.codec}
exports.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Dict

from twisted.spread import banana

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_MESSAGE_TOKENS",
    "FramingError",
    "checkLimits",
]

# Stock banana's limit on the length of one string or one list.
SIZE_LIMIT: int = banana.SIZE_LIMIT

#: Default for a decoder's C{maxDepth}: how many lists may be open at once.
#: A PB call puts its arguments two lists deep, and jelly adds one level per
#: list and two per dictionary, so this admits over 45 levels of nested
#: application data while keeping Twisted's recursive unjelly well inside
#: Python's recursion limit.
DEFAULT_MAX_DEPTH = 100

#: Default for a decoder's C{maxMessageTokens}.  A banana token is one byte
#: or more and can cost about 64 bytes of memory once decoded (an empty
#: list), so this bounds one message at roughly 64 MB of Python objects,
#: while a list of 15,000 dictionaries of ten string keys still fits.
DEFAULT_MAX_MESSAGE_TOKENS = 1_000_000

#: Default for a decoder's C{maxMessageBytes}: 16 MiB, room for 25 strings
#: of stock banana's maximum size in one message.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Strings longer than this are received in place (see
#: L{pbext.interfaces.IDecoder.receiveBuffer}) and sent as pieces of their
#: own (L{pbext.codec.encodePieces}).
LONG_STRING = 64 * 1024


class FramingError(banana.BananaError):
    """
    A peer broke one of the banana framing rules or limits of a decoder
    (L{pbext.interfaces.IDecoder}), or a message to send is larger than
    allowed.

    A decoder that raised this is dead: the connection it decodes for
    can no longer be parsed and should be dropped.

    @ivar limit: A short machine-readable name of the rule broken: the name
        of the decoder limit (C{"maxPrefixBytes"}, C{"maxStringBytes"},
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


def checkLimits(
    *,
    maxPrefixBytes: int,
    maxStringBytes: int,
    maxListLength: int,
    maxDepth: int,
    maxMessageTokens: int,
    maxMessageBytes: int,
) -> Dict[str, int]:
    """
    Check a decoder's limits, as both decoders take them.

    @return: The limits by name, in keyword order.

    @raise ValueError: If a limit is not a positive integer.
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
    return limits
