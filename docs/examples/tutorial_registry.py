# Run with: python docs/examples/tutorial_registry.py
# Expect: got Point(x=1, y=2, label='origin+1')
# Expect: bad state refused
"""
pbext's typed copies: a L{pbext.copyable.CopyableRegistry}.

A registry, given to both factories, says which classes travel by value and
under which stable wire name.  The same dataclass is sent and rebuilt (no
separate Copyable and RemoteCopy classes), and the state received is
checked against the class's annotations before any object is built.  The
registry belongs to the factories: another server in the same process does
not accept these types.
"""

from dataclasses import dataclass

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory
from pbext.copyable import CopyableRegistry

registry = CopyableRegistry()


@registry.register(name="example.Point")
@dataclass
class Point:
    x: int
    y: int
    label: str = ""


class Geometry(pb.Root):
    def remote_shift(self, point):
        # point arrived as a Point, its fields checked.
        return Point(point.x + 1, point.y + 1, point.label + "+1")


class Forged(pb.Copyable):
    """
    A classic Copyable that claims to be an example.Point but sends a
    string where an int belongs.
    """

    def getTypeToCopy(self):
        return b"example.Point"

    def getStateToCopy(self):
        return {"x": "0; DROP TABLE", "y": 0}


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Geometry(), registry=registry))
    clientFactory = PBClientFactory(registry=registry)
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    print("got", await root.callRemote("shift", Point(0, 1, "origin")))

    try:
        await root.callRemote("shift", Forged())
    except pb.RemoteError as e:
        print("bad state refused")
        print(f"    {e.remoteType.decode()}: {e}")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
