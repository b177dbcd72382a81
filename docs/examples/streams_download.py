# Run with: python docs/examples/streams_download.py
# Expect: progress: 25%
# Expect: progress: 100%
# Expect: downloaded 4194304 bytes, same as the server's file: True
"""
A file download with progress: the server streams a file in chunks, the
client writes them to a local file (an L{IConsumer}) and reports progress.

The server reads the file only as fast as the client writes it: at most
one window (256 KiB by default) is ever in flight, however large the file.
"""

import hashlib
import os
import tempfile

from twisted.internet import endpoints, task
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory, Stream


class FileServer(pb.Root):
    def __init__(self, directory):
        self.directory = directory

    def remote_size(self, name: str) -> int:
        return os.path.getsize(os.path.join(self.directory, name))

    def remote_download(self, name: str) -> Stream[bytes]:
        path = os.path.join(self.directory, name)
        return Stream.fromFile(open(path, "rb"), chunkSize=256 * 1024)


class ProgressFile:
    """
    An IConsumer writing to a file and printing progress every quarter.
    """

    def __init__(self, file, total):
        self.file = file
        self.total = total
        self.written = 0
        self.reported = 0

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.file.write(data)
        self.written += len(data)
        quarter = self.written * 4 // self.total
        if quarter > self.reported:
            self.reported = quarter
            print(f"progress: {quarter * 25}%")


async def main(reactor):
    directory = tempfile.mkdtemp()
    source = os.path.join(directory, "data.bin")
    with open(source, "wb") as f:
        f.write(os.urandom(4 * 1024 * 1024))

    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(FileServer(directory)))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    total = await root.callRemote("size", "data.bin")
    target = os.path.join(directory, "copy.bin")
    with open(target, "wb") as f:
        stream = await root.callRemote("download", "data.bin")
        await stream.writeTo(ProgressFile(f, total))
    with open(source, "rb") as a, open(target, "rb") as b:
        same = hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
    size = os.path.getsize(target)
    print(f"downloaded {size} bytes, same as the server's file: {same}")

    for name in ("data.bin", "copy.bin"):
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)
    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
