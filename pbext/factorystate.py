"""
pbext's state on a factory (L{FactoryState}) and what pbext's client and
server factories share (L{BrokerFactoryMixin}): resolving the policy,
normalizing registries, building a L{pbext.broker.Broker} with them.

Both names are also importable from L{pbext.broker}, where they lived
first.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.spread import jelly, pb

from pbext import streams as _streams
from pbext.budget import MemoryBudget, budgetFor
from pbext.copyable import FailureRegistry, failureRegistry
from pbext.security import SecurityPolicy, defaultPolicy

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from pbext.admission import Admission
    from pbext.broker import Broker
    from pbext.interfaces import ICopyableRegistry

    #: What a factory's C{registry} argument may be.
    Registries = (
        ICopyableRegistry
        | list[ICopyableRegistry]
        | tuple[ICopyableRegistry, ...]
        | None
    )


def resolvePolicy(
    policy: SecurityPolicy | str | None, security: jelly.SecurityOptions
) -> SecurityPolicy:
    """
    Decide the policy of a factory from its C{policy} and C{security}
    arguments.

    An explicit C{policy} wins: a L{SecurityPolicy}, or a name, dotted name
    or file for L{pbext.security.loadPolicy}.  Otherwise a C{security} that
    is a L{SecurityPolicy} is the policy; otherwise the C{default} preset is
    used, extended with whatever a classic C{SecurityOptions} the
    application passed explicitly allows (its own decision, as in classic
    PB).

    @raise pbext.security.PolicyError: if a named policy cannot be loaded.
    """
    if isinstance(policy, SecurityPolicy):
        return policy
    if policy is not None:
        from pbext.policylookup import loadPolicy

        return loadPolicy(policy)
    if isinstance(security, SecurityPolicy):
        return security
    result = defaultPolicy()
    if security is not jelly.globalSecurity and isinstance(
        security, jelly.SecurityOptions
    ):
        result.allowTypes(*security.allowedTypes)
        result.allowModules(*security.allowedModules)
        for klass in security.allowedClasses:
            result.allowedClasses[klass] = 1
    return result


class FactoryState:
    """
    pbext's state on one factory, held by the factory's single C{_pbext}
    attribute.

    Applications subclass pbext's factories and give their subclasses
    attributes of their own (a Buildbot worker's factory has a C{_reactor}
    class attribute; applications set C{self.options} or C{self.policy}).
    Keeping everything pbext needs here, under one name of pbext's own,
    lets a subclass use any other name without changing what pbext does.

    @ivar policy: the L{SecurityPolicy} of every connection.
    @ivar registries: the copyable registries of every connection, as
        given.
    @ivar reactor: the clock brokers keep time with, or L{None} for their
        transport's reactor.
    @ivar brokerOptions: the keyword arguments every L{Broker} is built
        with (C{callTimeout}, C{keepaliveInterval}, C{keepaliveTimeout},
        C{typedCalls}).
    @ivar options: the factory's other pbext keyword options (login
        options such as C{classicLogin} and C{allowPlaintextLogin}).
    @ivar connectionRegistries: C{registries} with a failure registry
        after them, as every broker gets them (built once).
    @ivar admission: who holds a server factory's connection slots
        (L{pbext.admission.Admission}), or L{None} on a client factory.
    @ivar budget: the memory budget the factory's connections share
        (L{pbext.budget.MemoryBudget}), made when first needed.
    @ivar brokerLost: called with each broker of the factory whose
        connection is lost, or L{None}.

    @since: pbext NEXT
    """

    def __init__(
        self,
        policy: SecurityPolicy,
        registries: tuple[ICopyableRegistry, ...],
        reactor: IReactorTime | None,
        brokerOptions: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.policy = policy
        self.registries = registries
        self.reactor = reactor
        self.brokerOptions = brokerOptions
        self.options = options
        self.connectionRegistries: tuple[Any, ...] | None = None
        self.admission: Admission | None = None
        self.budget: MemoryBudget | None = None
        self.brokerLost: Callable[[Broker], None] | None = None

    @property
    def connectionCount(self) -> int:
        """
        How many brokers of a server factory are connected.
        """
        return 0 if self.admission is None else self.admission.connections


class _DefaultFactoryState:
    """
    The C{_pbext} of a factory whose C{__init__} never ran pbext's: a
    subclass written for Twisted's factory, rebased onto pbext's, may call
    C{pb.PBServerFactory.__init__} itself.  The first read sets the factory
    up with pbext's defaults (and its C{security}), as if it had been
    built with no pbext options.
    """

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        instance._pbextSetUp(
            getattr(instance, "security", jelly.globalSecurity),
            None,
            None,
            None,
            None,
            None,
            None,
            {},
        )
        return instance.__dict__["_pbext"]


class BrokerFactoryMixin:
    """
    What pbext's client and server factories share: the pbext options, and
    building a L{Broker} with them.

    All of pbext's state lives in one L{FactoryState}, C{_pbext}; the
    public names this class adds all start with C{pbext}, so a subclass
    may define any other attribute (see docs/architecture.rst, "Names").
    """

    # Mixed in after Twisted's factory class, so pbext's factories keep the
    # instance layout of Twisted's: code written for the stock classes may
    # even rebase its subclasses onto pbext's.

    protocol: Any
    security: Any
    _pbext: FactoryState = _DefaultFactoryState()  # type: ignore[assignment]  # the class default stands in until a factory has its own state

    def _pbextSetUp(
        self,
        security: jelly.SecurityOptions,
        policy: SecurityPolicy | str | None,
        registry: Any,
        reactor: Any,
        callTimeout: float | None,
        keepaliveInterval: float | None,
        keepaliveTimeout: float | None,
        options: dict[str, Any],
        typedCalls: bool | None = None,
    ) -> None:
        self._pbext = FactoryState(
            resolvePolicy(policy, security),
            registriesFrom(registry),
            reactor,
            {
                "callTimeout": callTimeout,
                "keepaliveInterval": keepaliveInterval,
                "keepaliveTimeout": keepaliveTimeout,
                "typedCalls": typedCalls,
            },
            options,
        )

    @property
    def pbextPolicy(self) -> SecurityPolicy:
        """
        The L{SecurityPolicy} of every connection of this factory.

        @since: pbext NEXT
        """
        return self._pbext.policy

    @property
    def pbextRegistries(self) -> tuple[ICopyableRegistry, ...]:
        """
        The copyable registries of every connection this factory builds
        from now on.

        @since: pbext NEXT
        """
        return self._pbext.registries

    @pbextRegistries.setter
    def pbextRegistries(self, registries: Registries) -> None:
        self._pbext.registries = registriesFrom(registries)

    @property
    def pbextOptions(self) -> dict[str, Any]:
        """
        The pbext keyword options this factory was given that are not
        broker options (the login options).

        @since: pbext NEXT
        """
        return self._pbext.options

    def _pbextBuildBroker(self, isClient: bool) -> pb.Broker:
        """
        Build a broker with this factory's policy, registries and options (a
        plain one if C{protocol} was replaced by a class that is not pbext's
        L{Broker}), attached to this factory.
        """
        from pbext.broker import Broker

        state = self._pbext
        if issubclass(self.protocol, Broker):
            # One failure registry for all of this factory's connections
            # (it never changes), not one each.
            cached = state.connectionRegistries
            if (
                cached is None
                or cached[: len(cached) - _ADDED_REGISTRIES] != state.registries
            ):
                cached = state.connectionRegistries = withFailures(state.registries)
            broker: pb.Broker = self.protocol(
                isClient=isClient,
                security=self.security,
                policy=state.policy,
                registries=cached,
                clock=state.reactor,
                **state.brokerOptions,
            )
            broker._pbextFactoryState = state  # type: ignore[attr-defined]  # Twisted's Broker declares no such attribute; pbext's does
        else:
            broker = self.protocol(isClient=isClient, security=self.security)
        broker.factory = self  # type: ignore[assignment]  # Twisted types Broker.factory as a client factory only
        if isinstance(broker, Broker):
            broker._pbextFlow.budget = self._pbextMemoryBudget()
        return broker

    def _pbextMemoryBudget(self) -> MemoryBudget:
        """
        The memory budget all of this factory's connections share (see
        L{pbext.budget}), made with the policy's limits when first needed
        and again if the policy's limits change.
        """
        state = self._pbext
        limits = state.policy.limits
        budget = state.budget
        if (
            budget is None
            or budget.maxBufferedBytes != limits.maxServerBufferedBytes
            or budget.maxHeldObjects != limits.maxServerHeldObjects
        ):
            budget = state.budget = budgetFor(limits)
        return budget


#: How many registries L{withFailures} adds after a factory's own.
_ADDED_REGISTRIES = 2


def withFailures(
    registries: Iterable[ICopyableRegistry],
) -> tuple[ICopyableRegistry, ...]:
    """
    C{registries} followed by a failure registry (L{failureRegistry}), as
    a broker uses them, unless the last already is one.
    """
    registries = tuple(registries)
    if registries and isinstance(registries[-1], FailureRegistry):
        return registries
    # pbext.streams: stream offers are sent and received by every broker.
    return (*registries, _streams.streamRegistry(), failureRegistry())


def registriesFrom(registry: Registries) -> tuple[ICopyableRegistry, ...]:
    """
    Normalize a factory's C{registry} argument (L{None}, one registry, or
    a list or tuple of registries) to a tuple.
    """
    if registry is None:
        return ()
    if isinstance(registry, (list, tuple)):
        return tuple(registry)
    return (registry,)


__all__ = [
    "BrokerFactoryMixin",
    "FactoryState",
    "registriesFrom",
    "resolvePolicy",
    "withFailures",
]
