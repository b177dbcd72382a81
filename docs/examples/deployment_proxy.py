# Run with: python docs/examples/deployment_proxy.py
# Expect: the server saw the client as 203.0.113.7
"""
What a pbext server behind HAProxy sees.

The server listens on a C{haproxy:} endpoint, as each process behind a
load balancer speaking the PROXY protocol does.  The client here plays
HAProxy's part itself: before PB's first byte it sends the PROXY header
HAProxy would send, naming the address of the real client.  The server
reports the peer address its connection sees, which is that address, not
the proxy's: this is the address pbext's per-address limits, login
throttling and logs use.
"""

from twisted.internet import endpoints, task
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class PeerReporter(pb.Referenceable):
    def __init__(self, broker):
        self.broker = broker

    def remote_whereAmIFrom(self):
        return self.broker.transport.getPeer().host


class Root(pb.Root):
    def rootObject(self, broker):
        # One root per connection, so it knows its connection.
        return PeerReporter(broker)


class SendProxyHeader(ProtocolWrapper):
    """
    Send a PROXY protocol (version 1) header, then behave as the wrapped
    protocol: what HAProxy's C{send-proxy} does for a real client.
    """

    def connectionMade(self):
        here = self.transport.getHost()
        self.transport.write(
            f"PROXY TCP4 203.0.113.7 {here.host} 51000 {here.port}\r\n".encode()
        )
        super().connectionMade()


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "haproxy:tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Root()))

    clientFactory = PBClientFactory()
    proxied = WrappingFactory(clientFactory)
    proxied.protocol = SendProxyHeader
    reactor.connectTCP("127.0.0.1", port.getHost().port, proxied)
    root = await clientFactory.getRootObject()

    address = await root.callRemote("whereAmIFrom")
    print("the server saw the client as", address)

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
