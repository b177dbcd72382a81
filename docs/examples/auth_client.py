# Run with: python docs/examples/auth_client.py [PORT]
# Not run by tests: needs auth_server.tac running; tests/test_tls.py runs both
# Expect: alice logged in with the plaintext login: whoami() says alice
# Expect: a wrong password is refused: UnauthorizedLogin
# Expect: carol logged in with her certificate: whoami() says carol
"""
Log in to docs/examples/auth_server.tac over TLS: with a password, then
with a TLS client certificate.

Start the server first (C{twistd -ny docs/examples/auth_server.tac}); this
client reads the demo CA and carol's certificate from the same directory
($PBEXT_AUTH_DIR, by default "pbext-auth-demo" in the temporary directory)
and connects to 127.0.0.1:8788, or the port given.

The client trusts only the demo CA (C{trustRoots=}) and checks that the
server's certificate is for 127.0.0.1.  Over TLS the pbext client sends the
password itself, which is what lets the server keep only PBKDF2 hashes.
"""

import os
import sys
import tempfile

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints, task
from twisted.logger import globalLogPublisher

from pbext import PBClientFactory
from pbext.login import CertificateLogin

directory = os.environ.get(
    "PBEXT_AUTH_DIR", os.path.join(tempfile.gettempdir(), "pbext-auth-demo")
)


def path(name):
    return os.path.join(directory, name)


def tlsDescription(port, certificate=None):
    """
    A tls: client endpoint description, with a client certificate if given.
    """
    description = f"tls:127.0.0.1:{port}:trustRoots={path('roots')}"
    if certificate:
        description += (
            f":certificate={path(certificate + '.pem')}"
            f":privateKey={path(certificate + '.key')}"
        )
    return description


@defer.inlineCallbacks
def connect(reactor, description):
    factory = PBClientFactory()
    yield endpoints.clientFromString(reactor, description).connect(factory)
    return factory


@defer.inlineCallbacks
def main(reactor, port="8788"):
    # pbext logs which login it chose; keep those events to show them.
    chosen = []

    def observe(event):
        if event.get("pbextEvent") == "loginMethodChosen":
            chosen.append(event["method"])

    globalLogPublisher.addObserver(observe)

    factory = yield connect(reactor, tlsDescription(port))
    avatar = yield factory.login(UsernamePassword(b"alice", b"wonderland"))
    name = yield avatar.callRemote("whoami")
    print(f"alice logged in with the {chosen[-1]} login: whoami() says {name}")

    try:
        yield factory.login(UsernamePassword(b"alice", b"looking-glass"))
    except Exception as e:
        # Remote errors arrive as pb.RemoteError naming the server's type.
        if getattr(e, "remoteType", b"").endswith(b"UnauthorizedLogin"):
            print("a wrong password is refused: UnauthorizedLogin")
        else:
            raise
    else:
        raise UnauthorizedLogin("a wrong password logged in")
    factory.disconnect()

    factory = yield connect(reactor, tlsDescription(port, "carol"))
    avatar = yield factory.login(CertificateLogin())
    name = yield avatar.callRemote("whoami")
    print(f"carol logged in with her certificate: whoami() says {name}")
    factory.disconnect()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
