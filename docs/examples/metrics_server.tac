# Run with: twistd -ny docs/examples/metrics_server.tac
#
# The demo root on tcp:8787 with Prometheus metrics at
# http://127.0.0.1:9187/metrics, built in a .tac file: what
# `twistd pbserver --metrics tcp:9187:interface=127.0.0.1` does.  Needs the
# metrics extra (pip install 'pbext[metrics]').  Set PBEXT_LISTEN and
# PBEXT_METRICS to listen elsewhere.
import os

from twisted.application import service, strports

from pbext import PBServerService, buildServerFactory
from pbext.demo import DemoRoot
from pbext.metrics import MemoryMetrics, instrument, metricsSite

listen = os.environ.get("PBEXT_LISTEN", "tcp:8787")
metricsEndpoint = os.environ.get("PBEXT_METRICS", "tcp:9187:interface=127.0.0.1")

application = service.Application("pbext server with metrics")
factory = buildServerFactory(root=DemoRoot())
server = PBServerService(factory, [listen])
server.setServiceParent(application)

counts = MemoryMetrics()
# Count the factory's connections, calls, logins, bytes and violations...
instrument(factory, counts).setServiceParent(server)
# ...and serve them over HTTP for Prometheus to scrape.
strports.service(metricsEndpoint, metricsSite(counts)).setServiceParent(server)
