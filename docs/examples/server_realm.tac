# Run with:  twistd -ny docs/examples/server_realm.tac
#
# A .tac file serving a realm behind PB logins: what `twistd pbserver
# --realm ... --auth ...` does, written out so you can add to it.
#
# Environment (all optional):
#   PBEXT_LISTEN  endpoints to listen on, separated by spaces
#                 (default: tcp:8787:interface=127.0.0.1)
#   PBEXT_AUTH    a twisted.cred.strcred checker description
#                 (default: memory:alice:secret, for trying it out)
#   PBEXT_POLICY  a security policy: a preset name, a dotted name or a file
#                 (default: default)
import os

from twisted.application import service
from twisted.cred import strcred

from pbext.demo import DemoRealm
from pbext import PBServerService, buildServerFactory

listen = os.environ.get("PBEXT_LISTEN", "tcp:8787:interface=127.0.0.1").split()
checker = strcred.makeChecker(os.environ.get("PBEXT_AUTH", "memory:alice:secret"))

# Your application's realm goes here; the demo realm's avatars answer
# echo(x) and whoami().
realm = DemoRealm()

factory = buildServerFactory(
    realm=realm,
    checkers=[checker],
    policy=os.environ.get("PBEXT_POLICY", "default"),
)

application = service.Application("pbext realm server")
PBServerService(factory, listen).setServiceParent(application)
