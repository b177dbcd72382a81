"""
A PB root for the end-to-end stream tests (L{tests.test_streams_endtoend}),
served by a real C{twistd pbserver --root tests._streamroot.StreamRoot}.

Its chunks are made as they are asked for, each starting with its index,
so a reader can check that every byte arrived in order without the server
holding the stream.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

from twisted.internet import defer
from twisted.spread import pb

from pbext.streams import RemoteStream, Stream

_FILLER = bytes(range(256)) * 4096


def chunk(index: int, size: int) -> bytes:
    """
    Chunk number C{index} of C{size} bytes: its index, then filler.
    """
    return struct.pack(">Q", index) + _FILLER[: size - 8]


def chunks(total: int, size: int) -> Iterator[bytes]:
    """
    The chunks of a C{total}-byte stream.
    """
    for index in range(total // size):
        yield chunk(index, size)


class StreamRoot(pb.Root):
    """
    Streams chunks, and reports how many streams ran their cleanup.

    @ivar cleanups: how many streams of C{chunks} ended (by running to the
        end, being cancelled or losing their connection).
    @ivar produced: how many chunks all streams of C{chunks} produced.
    """

    def __init__(self) -> None:
        self.cleanups = 0
        self.produced = 0

    def remote_chunks(self, total: int, size: int) -> Stream[bytes]:
        return Stream(self._chunks(total, size))

    def _chunks(self, total: int, size: int) -> Iterator[bytes]:
        try:
            for data in chunks(total, size):
                self.produced += 1
                yield data
        finally:
            self.cleanups += 1

    def remote_cleanups(self) -> int:
        return self.cleanups

    def remote_produced(self) -> int:
        return self.produced

    def remote_upload(self, stream: RemoteStream[bytes]) -> defer.Deferred[list[int]]:
        state = [0, 0]

        def add(data: bytes) -> None:
            state[0] += len(data)
            state[1] = zlib.crc32(data, state[1])

        return stream.consume(add).addCallback(lambda _: state)
