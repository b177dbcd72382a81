# Run with: python docs/examples/tutorial_async.py
# Expect: slowSquare(7) = 49
# Expect: check(-1) failed: builtins.ValueError
"""
Remote methods written with C{async def}.

pbext awaits a remote method that returns a coroutine, and sends its result
(or its exception) to the caller exactly as if the method had returned a
L{Deferred}.  Classic PB would try to send the coroutine object itself.
"""

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class Worker(pb.Root):
    def __init__(self, reactor):
        self.reactor = reactor

    async def remote_slowSquare(self, n):
        # Wait without blocking the reactor: other calls are served meanwhile.
        await task.deferLater(self.reactor, 0.05, lambda: None)
        return n * n

    async def remote_check(self, n):
        await task.deferLater(self.reactor, 0, lambda: None)
        if n < 0:
            raise ValueError(n)
        return n


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Worker(reactor)))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    print("slowSquare(7) =", await root.callRemote("slowSquare", 7))
    try:
        await root.callRemote("check", -1)
    except pb.RemoteError as e:
        print("check(-1) failed:", e.remoteType.decode("ascii"))

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
