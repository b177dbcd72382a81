# Run with: python docs/examples/tutorial_references.py
# Expect: counter: 1 2 3
# Expect: the server called us back: counter reached 3
"""
References in both directions.

The root hands out a new L{pb.Referenceable} (a counter) each time it is
asked: the client receives a L{pb.RemoteReference} to it and calls its
C{remote_} methods.  The client also passes one of its own Referenceables
to the server, which calls it back: PB is symmetric, and whichever side
holds a reference can call the other.
"""

from twisted.internet import defer, endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class Counter(pb.Referenceable):
    """
    A server-side object that lives as long as a peer refers to it.
    """

    def __init__(self):
        self.value = 0
        self.watchers = []

    def remote_increment(self):
        self.value += 1
        for watcher in self.watchers:
            # A RemoteReference to an object of the client.
            watcher.callRemote("counterChanged", self.value)
        return self.value

    def remote_watch(self, watcher):
        self.watchers.append(watcher)


class CounterFactory(pb.Root):
    def remote_newCounter(self):
        return Counter()


class Watcher(pb.Referenceable):
    """
    A client-side object the server calls.
    """

    def __init__(self, target):
        self.target = target
        self.reached = defer.Deferred()

    def remote_counterChanged(self, value):
        if value == self.target:
            self.reached.callback(value)


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(CounterFactory()))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    counter = await root.callRemote("newCounter")
    watcher = Watcher(target=3)
    await counter.callRemote("watch", watcher)
    values = [await counter.callRemote("increment") for _ in range(3)]
    print("counter:", *values)

    value = await watcher.reached
    print(f"the server called us back: counter reached {value}")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
