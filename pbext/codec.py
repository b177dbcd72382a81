# -*- test-case-name: tests.test_codec -*-
"""
A linear-time, limit-checking banana decoder and a fast banana encoder.

Twisted's L{twisted.spread.banana.Banana} re-slices its whole receive
buffer for every token it parses, so decoding a message costs time
quadratic in its size, and the only limits it enforces are the length of a
number prefix and the length of one string or one list.  This module
decodes and encodes exactly the same wire format (the bytes are banana,
byte for byte) but:

  - a decoder (L{pbext.interfaces.IDecoder}, made by L{makeDecoder})
    parses in time linear in the bytes received, however they are split
    into chunks, and checks every limit while bytes arrive, before it
    allocates anything for them: string and list lengths are refused at
    their header, nesting depth at the list header that goes too deep, and
    the size of one message (one top-level expression) in bytes and in
    tokens as soon as it is known to be too large (a string's declared
    length and a list's declared elements count at the header).
  - L{encode} produces the very bytes C{Banana._encode} would, from cached
    tables into a C{bytearray} (long strings are copied once, by the final
    join), and can stop as soon as a message grows past a size limit.

Neither keeps any state outside its own instance: pbext's broker owns one
decoder per connection.

Each has two implementations with the same results, limits and errors:
pure Python (L{PythonDecoder}, in L{pbext._pydecoder}, and the encoder in
L{pbext._pyencoder}), which is the specification and the fallback, and C
in pbext's optional accelerator (L{AcceleratedDecoder}; L{pbext._accelerator}
loads it).  L{makeDecoder} and L{encode} use the accelerator where it is
loaded.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Mapping, Optional

from twisted.spread import banana

from pbext._accelerator import speedups as _speedups
from pbext._cdecoder import AcceleratedDecoder
from pbext._framing import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_MESSAGE_TOKENS,
    SIZE_LIMIT,
    FramingError,
)
from pbext._pydecoder import PythonDecoder
from pbext._pyencoder import encode as _encodePython
from pbext._pyencoder import encodePieces as _encodePiecesPython
from pbext._pyencoder import intToken as _intToken
from pbext._pyencoder import plain as _plain
from pbext.interfaces import IDecoder

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_MESSAGE_TOKENS",
    "AcceleratedDecoder",
    "FramingError",
    "PythonDecoder",
    "encode",
    "encodePieces",
    "makeDecoder",
]


def makeDecoder(
    *,
    maxPrefixBytes: int = 64,
    maxStringBytes: int = SIZE_LIMIT,
    maxListLength: int = SIZE_LIMIT,
    maxDepth: int = DEFAULT_MAX_DEPTH,
    maxMessageTokens: int = DEFAULT_MAX_MESSAGE_TOKENS,
    maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    vocabulary: Optional[Mapping[int, bytes]] = None,
    accelerated: Optional[bool] = None,
) -> IDecoder:
    """
    Make a banana decoder for one connection: an L{AcceleratedDecoder}
    where pbext's C accelerator is loaded (not with C{PBEXT_PURE_PYTHON}
    set), else a L{PythonDecoder}.

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
        vocabulary tokens are refused until C{setVocabulary} is called.
    @param accelerated: Which implementation to make: L{None} (the
        default) uses the accelerator when it is loaded, C{False} the
        pure-Python parser, C{True} requires the accelerator.

    @raise ValueError: If a limit is not a positive integer, or if
        C{accelerated} is C{True} and the accelerator is not available.

    @since: pbext NEXT
    """
    if accelerated is None:
        accelerated = _speedups is not None
    decoderClass = AcceleratedDecoder if accelerated else PythonDecoder
    return decoderClass(
        maxPrefixBytes=maxPrefixBytes,
        maxStringBytes=maxStringBytes,
        maxListLength=maxListLength,
        maxDepth=maxDepth,
        maxMessageTokens=maxMessageTokens,
        maxMessageBytes=maxMessageBytes,
        vocabulary=vocabulary,
    )


#: Encode an expression as banana: the C encoder where the accelerator is
#: loaded, else the pure-Python one it follows (see
#: L{pbext._pyencoder.encodeParts} for the arguments and errors).
encode = _encodePython
#: Encode an expression as banana in pieces, every string longer than
#: 64 KiB a piece of its own (see L{pbext._pyencoder.encodePieces}).  The
#: accelerator's also cuts the plain values it writes itself into pieces
#: of about 64 KiB, and sends an encoded-ahead value's long pieces as they
#: are: the bytes are the same, only where they are cut differs (its
#: C{encode} joins such pieces once, at the end).
encodePieces = _encodePiecesPython

if _speedups is not None:
    _speedups.configure(
        framingError=FramingError,
        bananaError=banana.BananaError,
        plain=_plain,
        intToken=_intToken,
        sizeLimit=SIZE_LIMIT,
    )
    encode = _speedups.encode  # noqa: F811
    encodePieces = _speedups.encodePieces  # noqa: F811

# The C decoder also needs the jelly half of the accelerator's
# configuration, which pbext._jelly gives when it is imported: import it
# here (last, as codec is complete by now), so that a program importing
# only this module gets a working decoder.
from pbext import _jelly as _jellyConfiguresTheAccelerator  # noqa: E402, F401
