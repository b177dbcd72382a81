# Run with: python docs/examples/tutorial_first.py
# Expect: echo: hello, PB
# Expect: 2 + 3 = 5
"""
The smallest complete PB program: a server publishes a root object, a
client connects, gets a reference to that root and calls two of its remote
methods.  Both ends run in this one process, on a free loopback port, so
the program needs nothing else and exits when it is done.
"""

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class Calculator(pb.Root):
    """
    The root object: the first thing a client can reach.
    """

    def remote_echo(self, text):
        return text

    def remote_add(self, a, b):
        return a + b


async def main(reactor):
    # The server side: a factory serving the root, on a port the system picks.
    serverEndpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await serverEndpoint.listen(PBServerFactory(Calculator()))
    portNumber = port.getHost().port

    # The client side: connect, then ask for the server's root object.
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", portNumber, clientFactory)
    root = await clientFactory.getRootObject()

    # Each callRemote returns a Deferred; await it for the result.
    print("echo:", await root.callRemote("echo", "hello, PB"))
    total = await root.callRemote("add", 2, 3)
    print(f"2 + 3 = {total}")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
