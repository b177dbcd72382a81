"""
pbext's preset security policies, offered as L{IPolicyPlugin} providers
exactly as a third-party package would offer its own.

This dropin is imported whenever anything on the machine looks for Twisted
plugins, so it builds nothing and imports only interfaces: each provider
holds a name, a description and the dotted name of the function that
builds its policy, and imports that function only in L{load}.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from pbext.interfaces import IPolicyPlugin


@implementer(IPlugin, IPolicyPlugin)
class _LazyPolicy:
    """
    A named policy built on demand by a zero-argument callable.

    @ivar name: The name given to C{--policy}.
    @ivar description: One line for C{--help-policies}.
    @ivar factoryName: The dotted name of the callable building the policy.
    """

    def __init__(self, name: str, description: str, factoryName: str) -> None:
        self.name = name
        self.description = description
        self.factoryName = factoryName

    def __repr__(self) -> str:
        return f"<policy plugin {self.name!r}: {self.factoryName}>"

    def load(self) -> object:
        """
        Build a fresh policy.
        """
        from twisted.python.reflect import namedAny

        return namedAny(self.factoryName)()


classic = _LazyPolicy(
    "classic",
    "Stock PB behaviour: any dotted type name passes to jelly's module/class "
    "checks, private methods callable, no extra limits.",
    "pbext.security.classicPolicy",
)
default = _LazyPolicy(
    "default",
    "Closed type allowlist (PB types, registries, pb.setUnjellyableForClass), "
    "no imports, generous limits.",
    "pbext.security.defaultPolicy",
)
strict = _LazyPolicy(
    "strict",
    "Only PB and registry types, tighter limits, timeouts and an idle timeout.",
    "pbext.security.strictPolicy",
)
