"""
pbext: Twisted's Perspective Broker, hardened.

pbext extends the classic PB stack (L{twisted.spread.pb}, C{jelly},
C{banana}) without forking it: the bytes on the wire stay classic PB, so
stock peers keep working, while pbext adds a security policy with limits,
typed copyable registries, connection lifecycle management and a
C{twistd pbserver} plugin.

Switching an existing PB program is one import::

    from pbext import PBServerFactory, PBClientFactory

@since: pbext NEXT
"""

from pbext._version import __version__
from pbext.broker import Broker, CallTimeout, MessageTooLarge, PolicyViolation
from pbext.client import PBClientFactory, PBClientService, connect
from pbext.copyable import CopyableRegistry, CopyableStateError, RegistryError
from pbext.security import (
    Limits,
    PolicyError,
    SecurityPolicy,
    classicPolicy,
    defaultPolicy,
    loadPolicy,
    strictPolicy,
)
from pbext.server import PBServerFactory, PBServerService, buildServerFactory
from pbext.typecheck import TypedCallError, typed

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
    "SecurityPolicy",
    "TypedCallError",
    "buildServerFactory",
    "classicPolicy",
    "connect",
    "defaultPolicy",
    "loadPolicy",
    "strictPolicy",
    "typed",
]
