"""
The data the benchmarks send, and the copyable classes they return.

Every process of a benchmark run (the runner, the servers and the clients)
imports this module as C{benchmarks.payloads}, so class names on the wire
are the same on both ends.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Optional, Tuple

from twisted.spread import pb

#: How many dictionaries the nested structure holds, and keys per dictionary.
STRUCTURE_DICTS = 1000
STRUCTURE_KEYS = 10

#: Size of the byte string of the C{bytes} workload: 512 KiB, under banana's
#: 640 KiB limit on one string.
BLOB_BYTES = 512 * 1024

#: The wire name of L{TypedPoint} in a pbext typed registry.
TYPED_POINT_NAME = "benchmarks.TypedPoint"

#: The wire name of L{PlainPoint} for Pyro5's class-to-dict hooks.
PLAIN_POINT_NAME = "benchmarks.PlainPoint"


def makeStructure(
    dicts: int = STRUCTURE_DICTS, keys: int = STRUCTURE_KEYS
) -> list[dict[str, str]]:
    """
    Build the nested structure echoed by the C{struct} workload.

    With the defaults: a list of 1,000 dictionaries of 10 short text keys
    and short text values, about 120 KB as compact JSON and about 340 KB as
    PB puts it on the wire (jelly tags every C{str}).
    """
    return [{f"k{j}": f"{i:x}{j}" for j in range(keys)} for i in range(dicts)]


def makeBlob(size: int = BLOB_BYTES) -> bytes:
    """
    Build the byte string echoed by the C{bytes} workload.
    """
    pattern = bytes(range(256))
    return (pattern * (size // len(pattern) + 1))[:size]


class Point(pb.Copyable):
    """
    A small classic PB copyable: what the C{copyables} workload returns from
    classic servers (and from pbext servers without a typed registry).
    """

    def __init__(self, x: int, y: int, name: str) -> None:
        self.x = x
        self.y = y
        self.name = name


class RemotePoint(pb.RemoteCopy):
    """
    The receiving side's copy of a L{Point}.
    """


def registerClassicCopyables() -> None:
    """
    Register L{RemotePoint} as the copy of L{Point} in Twisted's global
    unjellyable registry.

    This is classic PB's only way to accept a copyable, and it is why pbext
    has typed registries: it changes the whole process.  Benchmark processes
    are disposable, so they call this once at start.
    """
    pb.setUnjellyableForClass(Point, RemotePoint)


@dataclasses.dataclass
class TypedPoint:
    """
    The same small object as L{Point}, as a dataclass for pbext's typed
    copyable registry.
    """

    x: int
    y: int
    name: str


class PlainPoint:
    """
    The same small object as L{Point}, for Pyro5 (class-to-dict hooks) and
    RPyC (pickle).
    """

    def __init__(self, x: int, y: int, name: str) -> None:
        self.x = x
        self.y = y
        self.name = name


def makePoints(kind: type, count: int) -> list[Any]:
    """
    Build C{count} objects of class C{kind} (L{Point}, L{TypedPoint} or
    L{PlainPoint}).
    """
    return [kind(i, 2 * i, f"p{i}") for i in range(count)]


def typedRegistry() -> Tuple[Optional[Any], str]:
    """
    Build a pbext typed copyable registry holding L{TypedPoint}, if the
    pbext in the tree has one that both factories accept.

    pbext's typed registries are being written alongside these benchmarks:
    until C{pbext.copyable.CopyableRegistry} exists and both factories take
    a C{registry} argument, the C{copyables} workload uses the classic
    L{Point} for pbext too.

    @return: C{(registry, note)}: the registry, or L{None} and a note
        saying why there is none.
    """
    try:
        from pbext.copyable import CopyableRegistry  # type: ignore[import-not-found]
    except ImportError as e:
        return None, f"pbext.copyable.CopyableRegistry is not importable ({e})"
    if not callable(getattr(CopyableRegistry, "register", None)):
        return None, "pbext.copyable.CopyableRegistry has no register()"
    import pbext

    for factory in (pbext.PBServerFactory, pbext.PBClientFactory):
        parameters = inspect.signature(factory.__init__).parameters
        if "registry" not in parameters:
            return None, f"pbext.{factory.__name__} does not declare registry="
    try:
        registry = CopyableRegistry()
        registry.register(TypedPoint, name=TYPED_POINT_NAME)
    except Exception as e:
        return None, f"registering a dataclass failed: {e!r}"
    return registry, "pbext uses a dataclass in a typed CopyableRegistry"
