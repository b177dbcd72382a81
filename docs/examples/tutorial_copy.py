# Run with: python docs/examples/tutorial_copy.py
# Expect: received LocalPond with 2 frogs, 3 lilies
# Expect: state sent: ['frogs', 'lilies']
# Expect: mutating the copy leaves the original alone: 2 frogs on the server
"""
Copying objects by value with L{pb.Copyable} and L{pb.RemoteCopy}.

The server's C{Pond} is a L{pb.Copyable}: whenever it is returned from or
passed to a remote method, its state is sent, not a reference.  The
receiving side names the class that rebuilds it, a L{pb.RemoteCopy}, with
L{pb.setUnjellyableForClass}; under pbext's default security policy a
class registered this way by local code is allowed, and nothing else is.

Here both sides live in one process; in a real program the Copyable is
defined by the server's code and the RemoteCopy by the client's.
"""

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory
from pbext.copystate import stateFields


class Pond(pb.Copyable):
    """
    The server's object.
    """

    def __init__(self, frogs, lilies):
        self.frogs = frogs
        self.lilies = lilies
        self.lock = object()  # local-only: cannot and should not be sent

    def getStateToCopy(self):
        # Send only what the peer needs, never the whole __dict__.
        return {"frogs": self.frogs, "lilies": self.lilies}


@stateFields("frogs", "lilies")
class LocalPond(pb.RemoteCopy):
    """
    The client's copy.  The receiver creates it without calling
    C{__init__}, then hands it the state: under pbext's default policy,
    only the fields it declares.
    """

    def setCopyableState(self, state):
        self.stateKeys = sorted(state)
        self.frogs = state["frogs"]
        self.lilies = state["lilies"]


# The type name a Pond travels under is its qualified class name; the
# receiver says which class rebuilds it.
pb.setUnjellyableForClass(Pond, LocalPond)


class PondKeeper(pb.Root):
    def __init__(self):
        self.pond = Pond(frogs=2, lilies=3)

    def remote_getPond(self):
        return self.pond

    def remote_frogCount(self):
        return self.pond.frogs


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(PondKeeper()))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    pond = await root.callRemote("getPond")
    print(
        f"received {type(pond).__name__} with {pond.frogs} frogs, {pond.lilies} lilies"
    )
    print("state sent:", pond.stateKeys)
    pond.frogs = 100
    frogs = await root.callRemote("frogCount")
    print(f"mutating the copy leaves the original alone: {frogs} frogs on the server")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
