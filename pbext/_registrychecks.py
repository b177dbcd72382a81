"""
What a L{pbext.copyable.CopyableRegistry} checks of the arguments it is
asked to register, before it builds an entry: wire names (not reserved,
not taken), classes (classes, not taken, Enums only through copiers),
versions, upgraders' versions and the classes of a cache registration.
Each check raises L{RegistryError} saying what to give instead.
"""

from __future__ import annotations

import enum
from typing import Container, Mapping, Protocol

from twisted.spread import flavors

from pbext import _twisted


class RegistryError(ValueError):
    """
    A registration is inconsistent: a wire name or a class registered twice,
    a reserved wire name, an annotation that cannot be checked, ...

    Raised when the registration is made (or, for annotations that name
    classes defined later, when the registry is first used or
    L{CopyableRegistry.validate} is called), never because of what a peer
    sent.

    @since: pbext NEXT
    """


# Its public home is pbext.copyable, which exports it.
RegistryError.__module__ = "pbext.copyable"

# Type names that jelly and PB already use for their own expressions: a
# registration under one of them would take over, for example, every list.
RESERVED = frozenset(
    [
        name[len("_unjelly_") :].encode("ascii")
        for name in dir(_twisted.Unjellier)
        if name.startswith("_unjelly_")
    ]
    + [
        b"remote",
        b"local",
        b"cached",
        b"lcache",
        b"copy",
        b"cache",
        b"long",
        b"long_int",
        b"dict",
        b"string",
        b"str",
        b"int",
        b"float",
        b"bool",
        b"NoneType",
    ]
)


class _Named(Protocol):
    typeName: str


def checkWireName(name: object, taken: Container[bytes]) -> bytes:
    """
    C{name} as sent: a non-empty C{str}, neither reserved nor in C{taken}.
    """
    if not isinstance(name, str) or not name:
        raise RegistryError(
            f"wire name {name!r}: give a non-empty str, such as 'myapp.Job'"
        )
    wireName = name.encode("utf-8")
    if wireName in RESERVED:
        raise RegistryError(
            f"wire name {name!r} is a jelly or PB type name; choose a name "
            f"of your own, such as 'myapp.Job'"
        )
    if wireName in taken:
        raise RegistryError(
            f"wire name {name!r} is already registered; give each "
            f"registration a wire name of its own"
        )
    return wireName


def checkIsClass(cls: object, role: str) -> type:
    """
    C{cls}, the argument C{role}, if it is a class.
    """
    if not isinstance(cls, type):
        raise RegistryError(
            f"{role} {cls!r} is not a class; give the class itself, not an "
            f"instance or its name"
        )
    return cls


def checkClass(
    cls: object,
    role: str,
    taken: Mapping[type, _Named],
    allowEnum: bool = False,
) -> type:
    """
    C{cls}, the argument C{role}, if it is a class not in C{taken} (and not
    an Enum unless C{allowEnum}).
    """
    cls = checkIsClass(cls, role)
    if not allowEnum:
        checkNotEnum(cls)
    if cls in taken:
        raise RegistryError(
            f"{cls.__qualname__} is already registered as "
            f"{taken[cls].typeName!r}; register each class once"
        )
    return cls


def checkNotEnum(cls: type) -> None:
    """
    Refuse an Enum: it is registered with a copier.
    """
    if issubclass(cls, enum.Enum):
        raise RegistryError(
            f"{cls.__qualname__} is an Enum: register it with registerCopier"
        )


def checkVersion(version: object) -> int:
    """
    C{version}, if it is a whole number of 1 or more.
    """
    if type(version) is not int or version < 1:
        raise RegistryError(f"version={version!r}: give a whole number of 1 or more")
    return version


def checkUpgrade(
    name: str, fromVersion: object, version: int, upgraded: Container[int]
) -> None:
    """
    Refuse an upgrader of the type registered as C{name}, at C{version},
    from C{fromVersion} unless it is below C{version} and not in
    C{upgraded}.
    """
    if type(fromVersion) is not int or not 1 <= fromVersion < version:
        fix = (
            f"give a version from 1 to {version - 1}"
            if version > 1
            else "register the type with version=2 or more first"
        )
        raise RegistryError(
            f"{name!r} is at version {version}: cannot upgrade from "
            f"version {fromVersion!r}; {fix}"
        )
    if fromVersion in upgraded:
        raise RegistryError(
            f"{name!r} already has an upgrader from version {fromVersion}; "
            f"register one upgrader per version"
        )


def checkCacheClasses(cacheableClass: type, remoteCacheClass: object) -> None:
    """
    Refuse classes of L{CopyableRegistry.registerCache} that are not a
    L{pb.Cacheable<twisted.spread.pb.Cacheable>} and a
    L{pb.RemoteCache<twisted.spread.pb.RemoteCache>}.
    """
    if not issubclass(cacheableClass, flavors.Cacheable):
        raise RegistryError(
            f"{cacheableClass.__qualname__} is not a pb.Cacheable subclass; "
            f"registerCache takes a pb.Cacheable and a pb.RemoteCache"
        )
    if not (
        isinstance(remoteCacheClass, type)
        and issubclass(remoteCacheClass, flavors.RemoteCache)
    ):
        raise RegistryError(
            f"{remoteCacheClass!r} is not a pb.RemoteCache subclass; "
            f"registerCache takes a pb.Cacheable and a pb.RemoteCache"
        )
