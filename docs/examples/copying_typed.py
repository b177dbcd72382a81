# Run with: python docs/examples/copying_typed.py
# Expect: moved: Point(x=3, y=4, label='home')
# Expect: unknown field: PolicyViolation: example.Point: unknown field 'colour'
# Expect: missing field: PolicyViolation: example.Point: missing field 'y'
# Expect: wrong type: PolicyViolation: example.Point: field 'x': expected int, got str
# Expect: typed call: TypedCallError: Shapes.remote_move: arg 'n': expected int, got str
# Expect: copier: UUID('12345678-1234-5678-1234-567812345678') came back as a UUID
# Expect: pair: got RemotePond with 2 frogs
"""
Typed copies with a L{pbext.copyable.CopyableRegistry}.

One registry, given to both factories, says which classes travel by value
and under which wire name: a dataclass registered with C{register}, a
class this program does not own (L{uuid.UUID}) with C{registerCopier}, and
a classic Copyable/RemoteCopy pair with C{registerPair}.  Received state is
checked field by field before anything is built, and the annotations of
a remote method marked with C{pbext.typed} are checked before it runs; a
refusal is an error answer to the
caller, and the connection carries on.
"""

import uuid
from dataclasses import dataclass

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory, typed
from pbext.copyable import CopyableRegistry

registry = CopyableRegistry()


@registry.register(name="example.Point")
@dataclass
class Point:
    x: int
    y: int
    label: str = ""


# uuid.UUID is not ours to change: say how to turn it into state and back.
registry.registerCopier(
    uuid.UUID,
    "example.UUID",
    toState=lambda u: {"hex": u.hex},
    fromState=lambda state: uuid.UUID(hex=state["hex"]),
    fields={"hex": str},
)


class Pond(pb.Copyable):
    """
    A classic Copyable: it chooses its state with getStateToCopy.
    """

    def __init__(self, frogs):
        self.frogs = frogs
        self.lock = object()  # local only

    def getStateToCopy(self):
        return {"frogs": self.frogs}


class RemotePond(pb.RemoteCopy):
    """
    The copy; its annotations declare (and check) the state it accepts.
    """

    frogs: int


registry.registerPair(Pond, RemotePond, "example.Pond")


class Shapes(pb.Root):
    @typed
    def remote_move(self, point: Point, n: int) -> Point:
        # Runs only if point is a Point and n an int.
        return Point(point.x + n, point.y + n, point.label)

    def remote_echo(self, value):
        return value

    def remote_pond(self):
        return Pond(frogs=2)


class Forged(pb.Copyable):
    """
    A classic Copyable sending whatever state it is given as an
    example.Point, as a careless or hostile peer might.
    """

    def __init__(self, state):
        self.state = state

    def getTypeToCopy(self):
        return b"example.Point"

    def getStateToCopy(self):
        return self.state


async def refusal(call):
    try:
        await call
    except pb.RemoteError as e:
        kind = e.remoteType.decode().rpartition(".")[2]
        return f"{kind}: {e}"
    return "not refused!"


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Shapes(), registry=registry))
    clientFactory = PBClientFactory(registry=registry)
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    print("moved:", await root.callRemote("move", Point(1, 2, "home"), 2))

    bad = {
        "unknown field": {"x": 1, "y": 2, "colour": "red"},
        "missing field": {"x": 1},
        "wrong type": {"x": "1", "y": 2},
    }
    for what, state in bad.items():
        print(f"{what}:", await refusal(root.callRemote("move", Forged(state), 1)))
    print("typed call:", await refusal(root.callRemote("move", Point(1, 2), "3")))

    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    back = await root.callRemote("echo", key)
    print(f"copier: {back!r} came back as a {type(back).__name__}")

    pond = await root.callRemote("pond")
    print(f"pair: got {type(pond).__name__} with {pond.frogs} frogs")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
