# Run with: python docs/examples/tutorial_login.py
# Expect: logged in as alice
# Expect: alice says: hello from alice
# Expect: chat log: ['alice: hello from alice']
# Expect: wrong password: refused (twisted.cred.error.UnauthorizedLogin)
# Expect: the realm logged alice out
"""
Logging in: avatars, perspective_ and view_ methods, the client's mind, and
logout.

The server serves a L{twisted.cred.portal.Portal} instead of a root.  A
client logs in with credentials and gets a reference to its I{avatar}, a
L{pb.Avatar} made for it by the realm; the avatar's C{perspective_} methods
know who is calling because each user has their own avatar.  The avatar
hands out a L{pb.Viewable} chat room: its C{view_} methods receive the
caller's avatar as their first argument.  The client passes a
L{pb.Referenceable} "mind" when it logs in, which the server uses to call
the client.  When the connection closes, the realm's logout function runs.
"""

from twisted.cred import checkers, credentials, portal
from twisted.internet import defer, endpoints, task
from twisted.spread import pb
from zope.interface import implementer

from pbext import PBClientFactory, PBServerFactory


class ChatRoom(pb.Viewable):
    """
    Shared by every user; each caller is told apart by its avatar.
    """

    def __init__(self):
        self.lines = []
        self.listeners = {}

    def view_say(self, avatar, text):
        self.lines.append(f"{avatar.name}: {text}")
        for mind in self.listeners.values():
            mind.callRemote("heard", avatar.name, text)

    def view_history(self, avatar):
        return list(self.lines)


class User(pb.Avatar):
    def __init__(self, name, room, mind):
        self.name = name
        self.room = room
        self.mind = mind

    def perspective_whoami(self):
        return self.name

    def perspective_joinRoom(self):
        self.room.listeners[self.name] = self.mind
        # A Viewable arrives at the client as a reference whose calls reach
        # the view_ methods with this avatar as first argument.
        return self.room


@implementer(portal.IRealm)
class ChatRealm:
    def __init__(self):
        self.room = ChatRoom()
        self.loggedOut = defer.Deferred()

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("only PB logins are served")
        name = avatarId.decode("utf-8")
        avatar = User(name, self.room, mind)

        def logout():
            self.room.listeners.pop(name, None)
            self.loggedOut.callback(name)

        return pb.IPerspective, avatar, logout


class Mind(pb.Referenceable):
    """
    What the client lends the server when it logs in.
    """

    def __init__(self):
        self.heard = defer.Deferred()

    def remote_heard(self, who, text):
        self.heard.callback(f"{who} says: {text}")


async def main(reactor):
    realm = ChatRealm()
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    serverFactory = PBServerFactory(portal.Portal(realm, [checker]))
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(serverFactory)
    address = ("127.0.0.1", port.getHost().port)

    # A wrong password: the login Deferred fails.
    badFactory = PBClientFactory()
    reactor.connectTCP(*address, badFactory)
    try:
        await badFactory.login(credentials.UsernamePassword(b"alice", b"guess"))
    except pb.RemoteError as e:
        print(f"wrong password: refused ({e.remoteType.decode()})")
    badFactory.disconnect()

    clientFactory = PBClientFactory()
    reactor.connectTCP(*address, clientFactory)
    mind = Mind()
    avatar = await clientFactory.login(
        credentials.UsernamePassword(b"alice", b"secret"), client=mind
    )
    print("logged in as", await avatar.callRemote("whoami"))

    room = await avatar.callRemote("joinRoom")
    await room.callRemote("say", "hello from alice")
    print(await mind.heard)
    print("chat log:", await room.callRemote("history"))

    clientFactory.disconnect()
    print("the realm logged", await realm.loggedOut, "out")
    await port.stopListening()


task.react(main)
