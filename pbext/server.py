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
from twisted.cred.portal import IRealm, Portal
from twisted.internet.interfaces import IAddress, IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.spread import pb
from twisted.spread.jelly import SecurityOptions, globalSecurity

from pbext.admission import Admission
from pbext.broker import Broker, BrokerFactoryMixin
from pbext.interfaces import ICopyableRegistry
from pbext.loginserver import _PortalRoot
from pbext.security import SecurityPolicy

_log = Logger()


class PBServerFactory(pb.PBServerFactory, BrokerFactoryMixin):
    """
    Server factory for Perspective Broker, hardened by pbext.

    Accepts everything L{pb.PBServerFactory} accepts.  C{root} is an object
    providing or adaptable to L{pb.IPBRoot}: a L{pb.Root}, or a L{Portal} for
    logins.  The keyword-only options are pbext's; see
    L{pbext.broker.Broker} for what each does, and L{pbext.introspect} for
    C{introspection} (whether pbext clients may ask which remote methods
    the objects they hold offer; L{None}, the default, means yes unless
    the policy is C{strict}).

    pbext's state lives in one attribute, C{_pbext}; what it adds in
    public starts with C{pbext} (L{pbextPolicy}, L{pbextRegistries},
    L{pbextOptions}, L{pbextAdmission}), so a subclass may define any other
    name.
    """

    protocol = Broker

    def __init__(
        self,
        root: object,
        unsafeTracebacks: bool = False,
        security: SecurityOptions = globalSecurity,
        *,
        policy: SecurityPolicy | str | None = None,
        registry: ICopyableRegistry | Sequence[ICopyableRegistry] | None = None,
        reactor: IReactorTime | None = None,
        callTimeout: float | None = None,
        keepaliveInterval: float | None = None,
        keepaliveTimeout: float | None = None,
        typedCalls: bool | None = None,
        introspection: bool | None = None,
        **pbextOptions: Any,
    ) -> None:
        if isinstance(root, Portal):
            # Login options: classicLogin, allowPlaintextLogin, loginThrottle.
            root = _PortalRoot.fromOptions(root, dict(pbextOptions, reactor=reactor))
        super().__init__(root, unsafeTracebacks, security)
        if introspection is not None:
            # Read by pbext.introspect.introspectionEnabled.
            pbextOptions["introspection"] = introspection
        self._pbextSetUp(
            security,
            policy,
            registry,
            reactor,
            callTimeout,
            keepaliveInterval,
            keepaliveTimeout,
            pbextOptions,
            typedCalls,
        )

    def _pbextSetUp(self, *args: Any, **kwargs: Any) -> None:
        """
        Set up pbext's state (see L{BrokerFactoryMixin._pbextSetUp}), with
        the hook that counts a lost connection out.
        """
        super()._pbextSetUp(*args, **kwargs)
        state = self._pbext
        state.brokerLost = self._pbextBrokerLost
        # Who holds a connection slot: caps, eviction, login deadline.
        root = self.root
        portal = isinstance(root, _PortalRoot)
        state.admission = Admission(state.reactor, loginRequired=portal)
        if isinstance(root, _PortalRoot):
            root.onLogin = state.admission.loggedIn

    @property
    def pbextAdmission(self) -> Admission:
        """
        Who holds this factory's connection slots: its L{Admission} counts
        the connections open, per address and per network, and what it
        refused or evicted (C{counts}), and enforces the login deadline.

        @since: pbext NEXT
        """
        admission = self._pbext.admission
        assert admission is not None, "set up in __init__"
        return admission

    def buildProtocol(self, addr: IAddress | None) -> pb.Broker | None:
        """
        Build a broker for a new connection.  At a connection cap, the
        least valuable connection held makes room for it, or it is refused
        (L{None}, which closes it); see L{pbext.admission}.
        """
        admission = self._pbext.admission
        assert admission is not None
        limits = self._pbext.policy.limits
        slot = admission.admit(addr, limits)
        if slot is None:
            return None
        try:
            proto = self._pbextBuildBroker(isClient=False)
            proto.setNameForLocal("root", self.root.rootObject(proto))
        except BaseException:
            admission.release(slot)
            raise
        if not isinstance(proto, Broker):
            # Not pbext's broker (a stock protocol class): it would never
            # report its loss, so it holds no slot.
            admission.release(slot)
            return proto
        admission.attach(slot, proto, limits)
        return proto

    def _pbextBrokerLost(self, broker: Broker) -> None:
        """
        A broker of this factory lost its connection: give its slot back.
        """
        admission = self._pbext.admission
        if admission is not None:
            admission.lost(broker)


def buildServerFactory(
    root: object = None,
    realm: IRealm | None = None,
    checkers: Sequence[ICredentialsChecker] = (),
    **factoryOptions: Any,
) -> PBServerFactory:
    """
    Build the L{PBServerFactory} that C{twistd pbserver} would build.

    With C{checkers}, clients log in through a L{Portal} on C{realm}.
    Without, C{root} is served as it is.  (C{twistd pbserver} passes
    L{pbext.demo.DemoRoot} or L{pbext.demo.DemoRealm} when given no
    C{--root} or C{--realm}.)

    @param factoryOptions: passed on to L{PBServerFactory}.
    @raise ValueError: if both C{root} and C{checkers} are given, a
        C{realm} without C{checkers}, C{checkers} without a C{realm}, or
        nothing to serve.
    """
    if checkers:
        if root is not None:
            raise ValueError(
                "buildServerFactory(root=..., checkers=...): a root is served "
                "without a login, so checkers have nothing to log in to; give "
                "realm= instead of root="
            )
        if realm is None:
            raise ValueError(
                "buildServerFactory(checkers=...): logins need a realm to hand "
                "out avatars; give realm=YourRealm() (pbext.demo.DemoRealm() "
                "is the demo twistd pbserver serves)"
            )
        return PBServerFactory(Portal(realm, checkers), **factoryOptions)
    if realm is not None:
        raise ValueError(
            "buildServerFactory(realm=...): a realm is served behind a login, "
            "which needs a credentials checker; give checkers=[...]"
        )
    if root is None:
        raise ValueError(
            "buildServerFactory(): nothing to serve; give root=YourRoot() "
            "(pbext.demo.DemoRoot() is the demo twistd pbserver serves)"
        )
    return PBServerFactory(root, **factoryOptions)


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
        reactor: IReactorCore | None = None,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.listen = list(listen)
        for description in self.listen:
            child = strports.service(description, factory, reactor=reactor)
            child.setServiceParent(self)
