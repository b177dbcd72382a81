"""
The client side of pbext: L{PBClientFactory}.

L{PBClientFactory} is a drop-in replacement for
L{twisted.spread.pb.PBClientFactory}: same arguments, same attributes, same
private hooks (C{_cbSendUsername}, C{_root}, C{_broker}, C{_failAll}), and
pbext's hardened L{pbext.broker.Broker}.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any

from twisted.spread import pb
from twisted.spread.jelly import SecurityOptions, globalSecurity

from pbext.broker import Broker


class PBClientFactory(pb.PBClientFactory):
    """
    Client factory for Perspective Broker, hardened by pbext.

    @ivar options: the pbext keyword options this factory was built with.
    """

    protocol = Broker

    def __init__(
        self,
        unsafeTracebacks: bool = False,
        security: SecurityOptions = globalSecurity,
        **pbextOptions: Any,
    ) -> None:
        super().__init__(unsafeTracebacks, security)
        self.options = pbextOptions
