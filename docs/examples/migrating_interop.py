# Run with: python docs/examples/migrating_interop.py
# Expect: stock client -> pbext server: 5
# Expect: pbext client -> stock server: 5
# Expect: private method, default policy: refused
# Expect: private method, classic policy: called
"""
pbext and stock Twisted PB, in every combination.

The same root is served by a pbext server and by a stock
L{twisted.spread.pb.PBServerFactory}; a stock client calls the first and a
pbext client the second.  Then a pbext server with the C{classic} policy
shows how to get back a classic behaviour the C{default} policy refuses.
"""

from twisted.internet import endpoints, task
from twisted.spread import pb

import pbext


class Root(pb.Root):
    def remote_add(self, a, b):
        return a + b

    def remote__internal(self):
        return "called"


async def callOnce(reactor, serverFactory, clientFactory, *call):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(serverFactory)
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    try:
        root = await clientFactory.getRootObject()
        return await root.callRemote(*call)
    except pb.RemoteError:
        return "refused"
    finally:
        clientFactory.disconnect()
        await port.stopListening()


async def main(reactor):
    result = await callOnce(
        reactor, pbext.PBServerFactory(Root()), pb.PBClientFactory(), "add", 2, 3
    )
    print("stock client -> pbext server:", result)

    result = await callOnce(
        reactor, pb.PBServerFactory(Root()), pbext.PBClientFactory(), "add", 2, 3
    )
    print("pbext client -> stock server:", result)

    result = await callOnce(
        reactor, pbext.PBServerFactory(Root()), pb.PBClientFactory(), "_internal"
    )
    print("private method, default policy:", result)

    result = await callOnce(
        reactor,
        pbext.PBServerFactory(Root(), policy="classic"),
        pb.PBClientFactory(),
        "_internal",
    )
    print("private method, classic policy:", result)


task.react(main)
