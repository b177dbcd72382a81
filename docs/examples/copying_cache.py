# Run with: python docs/examples/copying_cache.py
# Expect: cached copy: 20.0 degrees in 'lab'
# Expect: cached copy updated: 21.5 degrees
# Expect: bad update refused by the copy: TypedCallError
# Expect: the server saw the observer leave
"""
Typed cacheables: C{registerCache}.

A L{pb.Cacheable} registered with a wire name is sent once per connection,
as classic cacheables are; the state the copy receives is checked against
the L{pb.RemoteCache} class's annotations, and the annotations of its
C{observe_} method marked with C{pbext.typed} are checked on every update.
"""

from twisted.internet import defer, endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory, typed
from pbext.copyable import CopyableRegistry

registry = CopyableRegistry()


class Thermometer(pb.Cacheable):
    def __init__(self, room):
        self.room = room
        self.degrees = 20.0
        self.observers = []
        self.allGone = defer.Deferred()

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"room": self.room, "degrees": self.degrees}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        if not self.observers:
            self.allGone.callback(None)

    def setDegrees(self, degrees):
        self.degrees = degrees
        return defer.gatherResults(
            [o.callRemote("setDegrees", degrees) for o in self.observers]
        )


class ThermometerCopy(pb.RemoteCache):
    # The fields the copy accepts; they are set on the copy once checked.
    room: str
    degrees: float

    @typed
    def observe_setDegrees(self, degrees: float) -> None:
        self.degrees = degrees


registry.registerCache(Thermometer, ThermometerCopy, "example.Thermometer")


class Station(pb.Root):
    def __init__(self, thermometer):
        self.thermometer = thermometer

    def remote_getThermometer(self):
        return self.thermometer


async def main(reactor):
    thermometer = Thermometer("lab")
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    factory = PBServerFactory(Station(thermometer), registry=registry)
    port = await endpoint.listen(factory)
    clientFactory = PBClientFactory(registry=registry)
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    copy = await root.callRemote("getThermometer")
    print(f"cached copy: {copy.degrees} degrees in {copy.room!r}")

    await thermometer.setDegrees(21.5)
    print(f"cached copy updated: {copy.degrees} degrees")

    # An update the copy's annotations refuse, sent as setDegrees sends it.
    observer = thermometer.observers[0]
    try:
        await observer.callRemote("setDegrees", "warm")
    except pb.RemoteError as e:
        kind = e.remoteType.decode().rpartition(".")[2]
        print(f"bad update refused by the copy: {kind}")

    clientFactory.disconnect()
    await thermometer.allGone
    print("the server saw the observer leave")
    await port.stopListening()


task.react(main)
