# Run with:  twistd -ny docs/examples/pbserver.tac
#
# A .tac file that builds the same server as `twistd pbserver`: the demo
# root on tcp:8787.  Set PBEXT_LISTEN to listen elsewhere (the tests use
# tcp:0:interface=127.0.0.1).
import os

from twisted.application import service

from pbext.demo import DemoRoot
from pbext import PBServerService, buildServerFactory

listen = os.environ.get("PBEXT_LISTEN", "tcp:8787")

application = service.Application("pbext demo server")
factory = buildServerFactory(root=DemoRoot())
PBServerService(factory, [listen]).setServiceParent(application)
