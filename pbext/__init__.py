"""
pbext: Twisted's Perspective Broker, hardened.

pbext extends the classic PB stack (L{twisted.spread.pb}, C{jelly},
C{banana}) without forking it: the bytes on the wire stay classic PB, so
stock peers keep working, while pbext adds a security policy with limits,
typed copyable registries, connection lifecycle management and a
C{twistd pbserver} plugin.

Switching an existing PB program is one import::

    from pbext import PBServerFactory, PBClientFactory

The names below are imported from their modules the first time they are
used: twistd imports pbext's plugin dropins (and so this package) on every
plugin scan, which must not cost the import of the broker, the codec or
the C accelerator.

@since: pbext NEXT
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbext._version import __version__
    from pbext.broker import Broker, CallTimeout, MessageTooLarge, PolicyViolation
    from pbext.client import PBClientFactory, PBClientService, connect
    from pbext.copyable import CopyableRegistry, CopyableStateError, RegistryError
    from pbext.policylookup import loadPolicy
    from pbext.security import (
        Limits,
        PolicyError,
        SecurityPolicy,
        classicPolicy,
        defaultPolicy,
        strictPolicy,
    )
    from pbext.server import PBServerFactory, PBServerService, buildServerFactory
    from pbext.streams import RemoteStream, Stream
    from pbext.typecheck import TypedCallError, typed

#: Each public name, and the module it comes from.
_EXPORTS: dict[str, str] = {
    "__version__": "pbext._version",
    "Broker": "pbext.broker",
    "CallTimeout": "pbext.broker",
    "MessageTooLarge": "pbext.broker",
    "PolicyViolation": "pbext.broker",
    "PBClientFactory": "pbext.client",
    "PBClientService": "pbext.client",
    "connect": "pbext.client",
    "CopyableRegistry": "pbext.copyable",
    "CopyableStateError": "pbext.copyable",
    "RegistryError": "pbext.copyable",
    "Limits": "pbext.security",
    "PolicyError": "pbext.security",
    "SecurityPolicy": "pbext.security",
    "classicPolicy": "pbext.security",
    "defaultPolicy": "pbext.security",
    "loadPolicy": "pbext.policylookup",
    "strictPolicy": "pbext.security",
    "PBServerFactory": "pbext.server",
    "PBServerService": "pbext.server",
    "buildServerFactory": "pbext.server",
    "RemoteStream": "pbext.streams",
    "Stream": "pbext.streams",
    "TypedCallError": "pbext.typecheck",
    "typed": "pbext.typecheck",
}


def __getattr__(name: str) -> object:
    """
    Import a public name from its module on first use, and keep it here.

    (Type checkers see each name's own type: every name is imported under
    C{TYPE_CHECKING} above.)
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pbext' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "__version__",
    "Broker",
    "CallTimeout",
    "CopyableRegistry",
    "CopyableStateError",
    "Limits",
    "MessageTooLarge",
    "PBClientFactory",
    "PBClientService",
    "PBServerFactory",
    "PBServerService",
    "PolicyError",
    "PolicyViolation",
    "RegistryError",
    "RemoteStream",
    "SecurityPolicy",
    "Stream",
    "TypedCallError",
    "buildServerFactory",
    "classicPolicy",
    "connect",
    "defaultPolicy",
    "loadPolicy",
    "strictPolicy",
    "typed",
]
