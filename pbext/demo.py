"""
The demo service that C{twistd pbserver} runs when given no root or realm.

With no options, L{DemoRoot} is served: it answers C{echo(x)},
C{ping()} and C{version()}.  With C{--auth} and no C{--realm},
L{DemoRealm} hands each logged-in user a L{DemoAvatar} that answers
C{echo(x)} and C{whoami()}.  Both are small enough to read as examples of a
PB root and a cred realm.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Callable, TypeVar

from twisted.cred.portal import IRealm
from twisted.spread import pb
from zope.interface import Interface, implementer

from pbext._version import __version__

_T = TypeVar("_T")


def _versionString() -> str:
    return __version__.public()


class DemoRoot(pb.Root):
    """
    The demo root object: echo, ping and version.
    """

    def remote_echo(self, value: _T) -> _T:
        """
        Return C{value} unchanged: a round trip through jelly and banana.
        """
        return value

    def remote_ping(self) -> str:
        """
        Answer C{"pong"}: proof that the server is alive and serving.
        """
        return "pong"

    def remote_version(self) -> str:
        """
        Return pbext's version as a string, such as C{"0.1.0"}.
        """
        return _versionString()


class DemoAvatar(pb.Avatar):
    """
    What a logged-in user of the demo realm gets.

    @ivar username: the avatar ID the checker returned, as text.
    """

    def __init__(self, username: str) -> None:
        self.username = username

    def perspective_echo(self, value: _T) -> _T:
        """
        Return C{value} unchanged.
        """
        return value

    def perspective_whoami(self) -> str:
        """
        Return the name this avatar logged in with.
        """
        return self.username


def _avatarName(avatarId: bytes | str | tuple[()]) -> str:
    if isinstance(avatarId, bytes):
        return avatarId.decode("utf-8", "replace")
    if isinstance(avatarId, str):
        return avatarId
    # twisted.cred.checkers.ANONYMOUS is an empty tuple.
    return "anonymous"


@implementer(IRealm)
class DemoRealm:
    """
    A realm whose avatars are L{DemoAvatar}s named after the avatar ID.
    """

    def requestAvatar(
        self,
        avatarId: bytes | str | tuple[()],
        mind: object,
        *interfaces: type[Interface],
    ) -> tuple[type[Interface], DemoAvatar, Callable[[], None]]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("DemoRealm only serves pb.IPerspective")
        return pb.IPerspective, DemoAvatar(_avatarName(avatarId)), lambda: None
