"""
The server side of pbext: L{PBServerFactory}.

L{PBServerFactory} is a drop-in replacement for
L{twisted.spread.pb.PBServerFactory}: it takes the same arguments, keeps the
same attributes and private hooks, and builds pbext's hardened
L{pbext.broker.Broker}.  When the root is a L{twisted.cred.portal.Portal},
the login it serves to classic clients is pbext's, which also accepts
checkers that store passwords as text.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.application import service, strports
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import Portal
from twisted.spread import pb
from twisted.spread.jelly import SecurityOptions, globalSecurity
from zope.interface import implementer

from pbext.broker import Broker


class _PortalAuthChallenger(pb._PortalAuthChallenger):
    """
    PB's challenge/response credentials, tolerant of checkers that keep
    passwords as C{str}.

    L{twisted.cred.strcred}'s C{memory:} checker stores the text it parsed
    from the command line, while PB's login hashes bytes; the classic
    challenger raises C{TypeError} on a C{str} password.  Text passwords are
    encoded as UTF-8 here, which is what a classic client hashed.
    """

    def checkPassword(self, password: bytes | str) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        return super().checkPassword(password)


class _PortalWrapper(pb._PortalWrapper):
    """
    The root object of a portal-backed server: classic PB's, with pbext's
    challenger.
    """

    def remote_login(self, username: bytes) -> tuple[bytes, _PortalAuthChallenger]:
        c = pb.challenge()
        return c, _PortalAuthChallenger(self.portal, self.broker, username, c)


@implementer(pb.IPBRoot)
class _PortalRoot:
    """
    Adapts a L{Portal} to L{pb.IPBRoot} with pbext's login objects.
    """

    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def rootObject(self, broker: pb.Broker) -> _PortalWrapper:
        return _PortalWrapper(self.portal, broker)


class PBServerFactory(pb.PBServerFactory):
    """
    Server factory for Perspective Broker, hardened by pbext.

    Accepts everything L{pb.PBServerFactory} accepts.  C{root} is an object
    providing or adaptable to L{pb.IPBRoot}: a L{pb.Root}, or a L{Portal} for
    logins.

    @ivar options: the pbext keyword options this factory was built with.
    """

    protocol = Broker

    def __init__(
        self,
        root: Any,
        unsafeTracebacks: bool = False,
        security: SecurityOptions = globalSecurity,
        **pbextOptions: Any,
    ) -> None:
        if isinstance(root, Portal):
            root = _PortalRoot(root)
        super().__init__(root, unsafeTracebacks, security)
        self.options = pbextOptions


def buildServerFactory(
    root: Any = None,
    realm: Any = None,
    checkers: Sequence[ICredentialsChecker] = (),
    **factoryOptions: Any,
) -> PBServerFactory:
    """
    Build the L{PBServerFactory} that C{twistd pbserver} would build.

    With C{checkers}, clients log in through a L{Portal} on C{realm} (the
    L{pbext.demo.DemoRealm} when C{realm} is L{None}).  Without, C{root} is
    served as it is (the L{pbext.demo.DemoRoot} when L{None}).

    @param factoryOptions: passed on to L{PBServerFactory}.
    @raise ValueError: if both C{root} and C{checkers} are given, or a
        C{realm} without C{checkers}.
    """
    from pbext import demo

    if checkers:
        if root is not None:
            raise ValueError("a root is served without login; give a realm")
        portal = Portal(realm if realm is not None else demo.DemoRealm(), checkers)
        return PBServerFactory(portal, **factoryOptions)
    if realm is not None:
        raise ValueError("a realm needs at least one credentials checker")
    return PBServerFactory(
        root if root is not None else demo.DemoRoot(), **factoryOptions
    )


class PBServerService(service.MultiService):
    """
    A service that serves one L{PBServerFactory} on any number of endpoints.

    This is what C{twistd pbserver} runs, and what a C{.tac} file uses to
    build the same server::

        from twisted.application import service
        from pbext.server import PBServerService, buildServerFactory

        application = service.Application("pb")
        factory = buildServerFactory(root=MyRoot())
        PBServerService(factory, ["tcp:8787"]).setServiceParent(application)

    @ivar factory: the factory served.
    @ivar listen: the strports server endpoint descriptions listened on.
    """

    def __init__(
        self,
        factory: PBServerFactory,
        listen: Sequence[str] = ("tcp:8787",),
        reactor: Any = None,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.listen = list(listen)
        for description in self.listen:
            child = strports.service(description, factory, reactor=reactor)
            child.setServiceParent(self)
