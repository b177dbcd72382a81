# Run with: python docs/examples/copying_evolution.py
# Expect: new peer sent version 2: Contact(name='Ada', email='ada@example.com')
# Expect: old peer sent version 1, upgraded: Contact(name='Bob', email='')
# Expect: stock PB client's copyable: Contact(name='Cy', email='cy@example.com')
"""
Types that change: versions, upgraders, and a stock client's classic copies.

Version 1 of C{example.Contact} had one field, C{fullName}.  Version 2
renames it to C{name} and adds C{email} with a default.  The server knows
version 2 and registers an upgrader for state from version 1; an old peer
still registers version 1.  A third client is stock Twisted PB with a
classic L{pb.Copyable}, whose type name is its class's qualified name: the
server accepts it with C{registerClassic}, checked like any other state.
"""

from dataclasses import dataclass

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory
from pbext.copyable import CopyableRegistry

# The server's (and new clients') registry: version 2.
current = CopyableRegistry()


@current.register(name="example.Contact", version=2)
@dataclass
class Contact:
    name: str
    email: str = ""  # absent from version 1 state: the default applies


def fromVersion1(state):
    # Receives the state as the old peer sent it; its result is checked.
    state["name"] = state.pop("fullName", "")
    return state


current.registerUpgrader("example.Contact", 1, fromVersion1)

# What a stock PB client sends: a classic Copyable, named by its class's
# qualified name (here it claims to be myapp.models.Contact).
current.registerClassic(Contact, "myapp.models.Contact")


# An old client's registry: version 1 of the same wire name.
old = CopyableRegistry()


@old.register(name="example.Contact")
@dataclass
class ContactV1:
    fullName: str


class StockContact(pb.Copyable):
    """
    A classic copyable, as code written for stock PB defines it.
    """

    def __init__(self, name, email):
        self.name = name
        self.email = email

    def getTypeToCopy(self):
        # Stand-in for a class defined in myapp/models.py.
        return b"myapp.models.Contact"


class AddressBook(pb.Root):
    def remote_add(self, contact: Contact) -> str:
        return repr(contact)


async def connect(reactor, port, factory):
    reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
    return await factory.getRootObject()


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(AddressBook(), registry=current))

    newFactory = PBClientFactory(registry=current)
    root = await connect(reactor, port, newFactory)
    added = await root.callRemote("add", Contact("Ada", "ada@example.com"))
    print("new peer sent version 2:", added)

    oldFactory = PBClientFactory(registry=old)
    root = await connect(reactor, port, oldFactory)
    added = await root.callRemote("add", ContactV1("Bob"))
    print("old peer sent version 1, upgraded:", added)

    stockFactory = pb.PBClientFactory()
    root = await connect(reactor, port, stockFactory)
    added = await root.callRemote("add", StockContact("Cy", "cy@example.com"))
    print("stock PB client's copyable:", added)

    for factory in (newFactory, oldFactory, stockFactory):
        factory.disconnect()
    await port.stopListening()


task.react(main)
