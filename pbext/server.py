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
from twisted.logger import Logger
from twisted.spread import pb
from twisted.spread.jelly import SecurityOptions, globalSecurity

from pbext._peer import peerText
from pbext.broker import Broker, BrokerFactoryMixin
from pbext.login import (  # noqa: F401 (re-exported: they used to live here)
    _PortalAuthChallenger,
    _PortalRoot,
    _PortalWrapper,
)
from pbext.security import SecurityPolicy

_log = Logger()


class PBServerFactory(pb.PBServerFactory, BrokerFactoryMixin):
    """
    Server factory for Perspective Broker, hardened by pbext.

    Accepts everything L{pb.PBServerFactory} accepts.  C{root} is an object
    providing or adaptable to L{pb.IPBRoot}: a L{pb.Root}, or a L{Portal} for
    logins.  The keyword-only options are pbext's; see
    L{pbext.broker.Broker} for what each does.

    @ivar policy: the L{SecurityPolicy} of every connection.
    @ivar registries: the copyable registries of every connection.
    @ivar options: the pbext keyword options this factory was built with.
    """

    protocol = Broker

    def __init__(
        self,
        root: Any,
        unsafeTracebacks: bool = False,
        security: SecurityOptions = globalSecurity,
        *,
        policy: SecurityPolicy | str | None = None,
        registry: Any = None,
        reactor: Any = None,
        callTimeout: float | None = None,
        keepaliveInterval: float | None = None,
        keepaliveTimeout: float | None = None,
        **pbextOptions: Any,
    ) -> None:
        if isinstance(root, Portal):
            # Login options: classicLogin, allowPlaintextLogin, loginThrottle.
            root = _PortalRoot.fromOptions(root, dict(pbextOptions, reactor=reactor))
        super().__init__(root, unsafeTracebacks, security)
        self._setUpPbext(
            security,
            policy,
            registry,
            reactor,
            callTimeout,
            keepaliveInterval,
            keepaliveTimeout,
            pbextOptions,
        )
        self.connectionCount = 0
        self._perAddress: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> pb.Broker | None:
        """
        Build a broker for a new connection, or refuse it (return L{None},
        which closes it) when the policy's connection limits are reached.
        """
        limits = self.policy.limits
        host = getattr(addr, "host", None)
        if self.connectionCount >= limits.maxConnections or (
            host is not None
            and self._perAddress.get(host, 0) >= limits.maxConnectionsPerAddress
        ):
            _log.warn(
                "pbext: connection from {peer} refused: connection limit reached",
                peer=peerText(addr),
                connections=self.connectionCount,
                pbextEvent="connectionRefused",
            )
            return None
        proto = self._buildBroker(isClient=False)
        proto.setNameForLocal("root", self.root.rootObject(proto))
        self.connectionCount += 1
        proto._pbextAddress = host  # type: ignore[union-attr,attr-defined]
        if host is not None:
            self._perAddress[host] = self._perAddress.get(host, 0) + 1
        return proto

    def _brokerLost(self, broker: Broker) -> None:
        """
        A broker of this factory lost its connection: count it out.
        """
        self.connectionCount -= 1
        host = getattr(broker, "_pbextAddress", None)
        if host is not None:
            left = self._perAddress.get(host, 1) - 1
            if left > 0:
                self._perAddress[host] = left
            else:
                self._perAddress.pop(host, None)


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
