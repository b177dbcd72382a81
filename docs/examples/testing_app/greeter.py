# Not run by tests: imported by test_greeter.py, which tests it.
# The application of the how-to docs/howto/testing.rst: a tiny PB greeting
# service and the client code that uses it.  To run its tests, from this
# directory (docs/examples/testing_app):
#     python -m twisted.trial test_greeter
"""
A greeting service over Perspective Broker, small enough to read in one go.

The server offers a root object to anyone, and a greeting for each user who
logs in.  L{GreeterClient} is what an application would call: it turns a
lost connection into a polite answer instead of an exception.

Anything that waits takes a C{clock} argument instead of importing the
reactor, so that tests can give it the clock of their in-memory connection.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.spread import pb
from zope.interface import implementer

import pbext

#: What L{GreeterClient} answers when the server cannot be reached.
UNAVAILABLE = "(the greeter is unavailable)"


class GreeterRoot(pb.Root):
    """
    The root object: greets anyone, now or after a pause.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def remote_greet(self, name: str) -> str:
        return f"Hello, {name}!"

    def remote_greetLater(self, name: str, seconds: float) -> Deferred[str]:
        return deferLater(self.clock, seconds, self.remote_greet, name)


class Member(pb.Avatar):
    """
    What a logged-in user gets.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def perspective_greet(self) -> str:
        return f"Welcome back, {self.name}."


@implementer(IRealm)
class GreeterRealm:
    """
    Hands each user who logs in a L{Member} named after them.
    """

    def requestAvatar(
        self, avatarId: bytes, mind: object, *interfaces: Any
    ) -> tuple[Any, Member, Callable[[], None]]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("the greeter only serves pb.IPerspective")
        return pb.IPerspective, Member(avatarId.decode("utf-8")), lambda: None


def greeterFactory(
    clock: IReactorTime, users: dict[bytes, bytes] | None = None
) -> pbext.PBServerFactory:
    """
    Build the server factory: the greeter's root for everyone, or, given
    C{users} (name to password), a login for those users.
    """
    if users is None:
        return pbext.PBServerFactory(GreeterRoot(clock))
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    for name, password in users.items():
        checker.addUser(name, password)
    return pbext.PBServerFactory(Portal(GreeterRealm(), [checker]))


class GreeterClient:
    """
    The application's side: asks the greeter's root for greetings.
    """

    def __init__(self, root: pb.RemoteReference) -> None:
        self.root = root

    async def greet(self, name: str) -> str:
        """
        Greet C{name}, or say the greeter is unavailable if the connection
        is lost (or was lost before the call).
        """
        try:
            greeting: str = await self.root.callRemote("greet", name)
        except (pb.PBConnectionLost, pb.DeadReferenceError):
            return UNAVAILABLE
        return greeting
