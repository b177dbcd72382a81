# Run with: python docs/examples/tutorial_cache.py
# Expect: cached copy: 20.0 degrees
# Expect: cached copy updated: 21.5 degrees
# Expect: the server saw the observer leave
"""
Copies that stay up to date: L{pb.Cacheable} and L{pb.RemoteCache}.

A Cacheable is sent once per connection; the receiver gets a
L{pb.RemoteCache}.  When the server sends the state, it also gets an
I{observer} for that copy, and calls the copy's C{observe_} methods through
it whenever the original changes.  When the peer goes away (or drops the
copy), the server's C{stoppedObserving} is called.
"""

from twisted.internet import defer, endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class Thermometer(pb.Cacheable):
    def __init__(self):
        self.degrees = 20.0
        self.observers = []
        self.allGone = defer.Deferred()

    def getStateToCacheAndObserveFor(self, perspective, observer):
        # Called once per connection that receives this object.
        self.observers.append(observer)
        return {"degrees": self.degrees}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        if not self.observers:
            self.allGone.callback(None)

    def setDegrees(self, degrees):
        self.degrees = degrees
        for observer in self.observers:
            observer.callRemote("setDegrees", degrees)


class ThermometerCopy(pb.RemoteCache):
    def setCopyableState(self, state):
        self.degrees = state["degrees"]
        self.changed = defer.Deferred()

    def observe_setDegrees(self, degrees):
        self.degrees = degrees
        self.changed.callback(degrees)


pb.setUnjellyableForClass(Thermometer, ThermometerCopy)


class Station(pb.Root):
    def __init__(self, thermometer):
        self.thermometer = thermometer

    def remote_getThermometer(self):
        return self.thermometer


async def main(reactor):
    thermometer = Thermometer()
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Station(thermometer)))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    copy = await root.callRemote("getThermometer")
    print(f"cached copy: {copy.degrees} degrees")

    thermometer.setDegrees(21.5)
    await copy.changed
    print(f"cached copy updated: {copy.degrees} degrees")

    clientFactory.disconnect()
    await thermometer.allGone
    print("the server saw the observer leave")
    await port.stopListening()


task.react(main)
