"""
Extension points of pbext, as zope.interface interfaces.

Every piece of pbext that an application or another installed package may
replace is described here: security policies, copyable registries, and the
plugins through which C{twistd pbserver --policy NAME} and
C{--registry NAME} find them.  pbext's own implementations are declared
with C{@implementer} and checked with C{verifyObject} in the tests.

@since: pbext NEXT
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISecurityPolicy(Interface):
    """
    A jelly security policy: what a peer may send, and how much of it.

    A policy is a drop-in for L{twisted.spread.jelly.SecurityOptions}: it
    answers the same questions (C{isTypeAllowed}, C{isModuleAllowed},
    C{isClassAllowed}) so Twisted's jelly can consult it directly, and adds
    limits and per-connection binding.  A policy belongs to a factory; it is
    never process-global state.
    """

    name = Attribute("A short name for this policy (C{str}), used in logs.")

    limits = Attribute(
        "The L{pbext.security.Limits} applied to every connection that uses "
        "this policy."
    )

    allowPrivateMethods = Attribute(
        "C{bool}: whether a peer may call remote methods whose names start "
        "with an underscore."
    )

    def isTypeAllowed(typeName: bytes | str) -> bool:
        """
        Whether a peer may send a jelly type of this name.
        """

    def isModuleAllowed(moduleName: bytes | str) -> bool:
        """
        Whether a peer may name this module.
        """

    def isClassAllowed(klass: type) -> bool:
        """
        Whether instances of this class may be received.
        """

    def isMethodAllowed(name: str) -> bool:
        """
        Whether a peer may call a remote method of this name (the part after
        C{remote_}, C{perspective_}, ...).
        """

    def outgoingTaster() -> object:
        """
        The C{SecurityOptions}-compatible object jelly consults for what
        this side sends (the local program chooses what it sends).
        """

    def forConnection(registries: tuple[ICopyableRegistry, ...]) -> object:
        """
        Bind this policy to the copyable registries of one connection.

        @return: a C{SecurityOptions}-compatible object that allows, in
            addition to what the policy allows, exactly the type names the
            given registries know.
        """


class ICopyableRegistry(Interface):
    """
    A scoped registry of copy-by-value types.

    A registry is owned by one or more factories and consulted by the
    brokers those factories build, never by anyone else: two factories in
    one process with different registries accept different types.
    """

    def isTypeKnown(typeName: bytes) -> bool:
        """
        Whether this registry can build an object from a jelly expression
        tagged C{typeName}.
        """

    def jellyFor(obj: object, jellier: object) -> list[object] | None:
        """
        Serialize C{obj} if its class is registered here for sending.

        @param jellier: the L{twisted.spread.jelly._Jellier}-compatible
            object doing the serialization; its C{invoker} is the broker.

        @return: the jelly expression for C{obj}, or L{None} if this
            registry does not know C{obj}'s class (so the next registry, or
            classic jelly, handles it).
        """

    def unjellyFor(
        typeName: bytes, unjellier: object, jellyList: list[object]
    ) -> object:
        """
        Build the local object for a received expression tagged C{typeName}.

        The received state is checked before any object is built.

        @raise pbext.copyable.CopyableStateError: if the state does not
            match the registered type (unknown, missing or mistyped
            fields).
        """


class IPolicyPlugin(Interface):
    """
    A named security policy that an installed package offers through
    L{twisted.plugin}, so that C{twistd pbserver --policy NAME} finds it.

    Providers live in a C{twisted/plugins/} dropin and must be cheap to
    import: they name the policy and build it only when asked.
    """

    name = Attribute("The name given to C{--policy} (C{str}).")
    description = Attribute("One line saying what the policy is for (C{str}).")

    def load() -> ISecurityPolicy:
        """
        Build a fresh policy object.
        """


class IRegistryPlugin(Interface):
    """
    A named copyable registry that an installed package offers through
    L{twisted.plugin}, so that C{twistd pbserver --registry NAME} finds it.
    """

    name = Attribute("The name given to C{--registry} (C{str}).")
    description = Attribute("One line saying what the registry holds (C{str}).")

    def load() -> ICopyableRegistry:
        """
        Build or return the registry.
        """
