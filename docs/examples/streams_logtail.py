# Run with: python docs/examples/streams_logtail.py
# Expect: tail: GET /index.html 200
# Expect: tail: GET /missing 404
# Expect: read 3 lines; the server's tail stopped: True
"""
A log tail: the server streams log lines as they are written, the client
reads them with C{async for} and stops when it has seen enough.

The remote method is an async generator.  It produces a line only when the
client has granted credit for it, and when the client cancels, its
C{finally} runs on the server within one round trip.
"""

from collections.abc import AsyncIterator

from twisted.internet import defer, endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class LogServer(pb.Root):
    def __init__(self, reactor):
        self.reactor = reactor
        self.lines = ["GET / 200", "GET /index.html 200", "GET /missing 404"]
        self.tailStopped = defer.Deferred()

    async def remote_tail(self, since: int) -> AsyncIterator[str]:
        try:
            position = since
            while True:
                while position < len(self.lines):
                    yield self.lines[position]
                    position += 1
                # Wait for new lines without blocking the reactor.
                await task.deferLater(self.reactor, 0.05, lambda: None)
                self.lines.append(f"GET /page/{position} 200")
        finally:
            self.tailStopped.callback(True)


async def main(reactor):
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    server = LogServer(reactor)
    port = await endpoint.listen(PBServerFactory(server))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    lines = await root.callRemote("tail", 1)
    count = 0
    async for line in lines:
        print("tail:", line)
        count += 1
        if count == 3:
            # Enough: stop the server's generator (its finally runs).
            await lines.cancel()
            break
    stopped = await server.tailStopped
    print(f"read {count} lines; the server's tail stopped: {stopped}")

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
