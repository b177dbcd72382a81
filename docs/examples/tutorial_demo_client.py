# Run with: python docs/examples/tutorial_demo_client.py [HOST [PORT]]
# Not run by tests: it talks to a server you start first, with `twistd -n pbserver`
"""
A client for the demo server of C{twistd pbserver}: it connects (by default
to 127.0.0.1 port 8787, the server's default), calls the demo root's three
methods and prints the answers.
"""

import sys

from twisted.internet import task

from pbext import PBClientFactory


async def main(reactor, host="127.0.0.1", port="8787"):
    factory = PBClientFactory()
    reactor.connectTCP(host, int(port), factory)
    try:
        root = await factory.getRootObject()
    except Exception as e:
        raise SystemExit(f"cannot reach a PB server at {host}:{port}: {e}")
    print("ping:", await root.callRemote("ping"))
    print("echo:", await root.callRemote("echo", ["any", b"jelly", {"value": 1}]))
    print("version:", await root.callRemote("version"))
    factory.disconnect()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
