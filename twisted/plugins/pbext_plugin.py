# This is a twisted.plugins dropin.  It must stay cheap and safe to import:
# twistd imports every dropin to list its commands, so nothing here may import
# the reactor, pbext itself, or any optional dependency.  The real work lives
# in pbext.tap and is imported only when `twistd pbserver` runs.
"""
The C{twistd pbserver} command: serve a Perspective Broker root or realm.
"""

from twisted.application.service import ServiceMaker

pbserver = ServiceMaker(
    "pbext PB server",
    "pbext.tap",
    "Serve a Perspective Broker root or twisted.cred realm, hardened by pbext.",
    "pbserver",
)
