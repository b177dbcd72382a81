# -*- test-case-name: tests.test_codec -*-
"""
The C accelerator's banana decoder, as an L{IDecoder}.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Mapping, Optional, TypeGuard

from zope.interface import implementer

from pbext._accelerator import reason, speedups
from pbext._framing import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_MESSAGE_TOKENS,
    SIZE_LIMIT,
    checkLimits,
)
from pbext.interfaces import IDecoder

__all__ = ["AcceleratedDecoder", "receivesFrom"]

Emit = Callable[[object], object]

if TYPE_CHECKING or speedups is None:

    class _Core:
        """
        What L{AcceleratedDecoder} needs of C{pbext._speedups.DecoderCore},
        which takes its place where the accelerator is loaded; where it is
        not, this refuses to make a decoder.
        """

        def __init__(self, **limits: int) -> None:
            raise ValueError(f"the C accelerator is not available: {reason}")

        # The C type's methods and properties, for the type checker only.

        def feed(self, data: bytes) -> List[object]:
            raise NotImplementedError()

        def feedTo(self, data: bytes, expressionReceived: Emit) -> None:
            raise NotImplementedError()

        def setVocabulary(self, vocabulary: Optional[Mapping[int, bytes]]) -> None:
            raise NotImplementedError()

        def receiveBuffer(self) -> Optional[object]:
            raise NotImplementedError()

        def bufferFilled(self, count: int, expressionReceived: Emit) -> None:
            raise NotImplementedError()

        def receiveFrom(self, socket: object) -> Optional[int]:
            raise NotImplementedError()

        def setPlainJelly(self, enabled: bool) -> None:
            raise NotImplementedError()

        def setPlainTypes(self, types: Optional[Mapping[bytes, object]]) -> None:
            raise NotImplementedError()

        pendingBytes: int
        wantedBytes: int
        messageStarted: bool
        receivingString: bool

else:
    _Core = speedups.DecoderCore


@implementer(IDecoder)
class AcceleratedDecoder(_Core):
    """
    The L{IDecoder} that parses with pbext's C accelerator.

    Parsing, buffering and the limits are all in C
    (C{pbext._speedups.DecoderCore}, of which this is a subclass, so its
    methods are called with no Python code in between); this class only
    checks its arguments and keeps the limits it was given.  It also
    decodes plain jelly while parsing (L{setPlainJelly}), which the
    pure-Python L{pbext.codec.PythonDecoder} does not.

    @since: pbext NEXT
    """

    __slots__ = (
        "maxPrefixBytes",
        "maxStringBytes",
        "maxListLength",
        "maxDepth",
        "maxMessageTokens",
        "maxMessageBytes",
    )

    accelerated = True

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

        @raise ValueError: If a limit is not a positive integer, or the
            accelerator is not available.
        """
        limits = checkLimits(
            maxPrefixBytes=maxPrefixBytes,
            maxStringBytes=maxStringBytes,
            maxListLength=maxListLength,
            maxDepth=maxDepth,
            maxMessageTokens=maxMessageTokens,
            maxMessageBytes=maxMessageBytes,
        )
        super().__init__(**limits)
        self.maxPrefixBytes = maxPrefixBytes
        self.maxStringBytes = maxStringBytes
        self.maxListLength = maxListLength
        self.maxDepth = maxDepth
        self.maxMessageTokens = maxMessageTokens
        self.maxMessageBytes = maxMessageBytes
        self.setVocabulary(vocabulary)

    def setPlainTypes(self, types: Optional[Mapping[bytes, object]]) -> None:
        """
        See L{IDecoder.setPlainTypes}.
        """
        if types is not None and type(types) is not dict:
            types = dict(types)
        # Not copied: the tables are never changed once made, and
        # connections share them.
        super().setPlainTypes(types)


#: Whether the accelerator's decoder can receive a long string straight
#: from a socket (C{DecoderCore.receiveFrom}: not on Windows).
_RECEIVES_FROM = speedups is not None and hasattr(speedups.DecoderCore, "receiveFrom")


def receivesFrom(decoder: object) -> TypeGuard[AcceleratedDecoder]:
    """
    Whether C{decoder} is pbext's accelerated decoder, able to receive the
    rest of a long string straight from a socket into the string
    (C{receiveFrom}) rather than through L{IDecoder.receiveBuffer}.
    """
    return _RECEIVES_FROM and type(decoder) is AcceleratedDecoder
