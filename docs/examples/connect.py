# Run with: python docs/examples/connect.py [ENDPOINT [USERNAME PASSWORD]]
# Not run by tests: it needs a server you start first (tests/test_client.py starts one)
#
# Connects to a PB server with pbext.client.connect(), calls it and exits.
# ENDPOINT is a client endpoint description (default
# tcp:host=127.0.0.1:port=8787, where `twistd -n pbserver` listens).  With a
# username and password it logs in, as to
# `twistd -n pbserver --auth memory:alice:secret`:
#
#     python docs/examples/connect.py tcp:host=127.0.0.1:port=8787 alice secret
import sys

from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from pbext.client import connect


async def main(reactor, endpoint="tcp:host=127.0.0.1:port=8787", *login):
    credentials = None
    if login:
        username, password = login
        credentials = UsernamePassword(username.encode(), password.encode())
    # One call: connect, then get the root object or log in.  A refused
    # connection or a wrong password fails here, with the real reason.
    reference = await connect(reactor, endpoint, credentials, timeout=10)
    try:
        if credentials is None:
            print("Server version:", await reference.callRemote("version"))
        else:
            print("Logged in as", await reference.callRemote("whoami"))
        print("Echo:", await reference.callRemote("echo", ["pbext", 1, 2.5]))
    finally:
        reference.broker.transport.loseConnection()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
