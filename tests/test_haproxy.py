"""
Several C{twistd pbserver} processes behind a real HAProxy speaking the
PROXY protocol to C{haproxy:} endpoints.

The tests skip when the C{haproxy} program is not installed (Debian package
C{haproxy}).
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any, Generator

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.endpoints import clientFromString
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from tests._process import startTwistd

HAPROXY = shutil.which("haproxy")

#: Seconds any single wait (a connection, a call, an exit) may take.
WAIT = 10.0

#: How many times to try reaching HAProxy's frontend while it starts.
START_ATTEMPTS = 100

#: How many clients connect through the proxy, one connection each.
CLIENTS = 6

PROXIED = "haproxy:tcp:0:interface=127.0.0.1"

CONFIG = """\
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend pb
    bind 127.0.0.1:{front}
    default_backend pbservers

backend pbservers
    balance roundrobin
{servers}
"""


def freePort() -> int:
    """
    Return a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HAProxyProcess(protocol.ProcessProtocol):
    """
    A foreground C{haproxy} process whose output is collected.

    @ivar output: everything it wrote to stdout and stderr.
    @ivar ended: fires when the process has exited.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        assert self.transport is not None
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def startHAProxy(test: TestCase, config: str) -> HAProxyProcess:
    """
    Write C{config} to a file and run C{haproxy -f FILE -db} on it; the
    test's cleanup stops it and waits (bounded) for it to exit.
    """
    assert HAPROXY is not None
    directory = test.mktemp()
    os.makedirs(directory)
    path = os.path.join(directory, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(config)
    proc = HAProxyProcess()
    reactor.spawnProcess(proc, HAPROXY, [HAPROXY, "-f", path, "-db"], env=os.environ)

    def stop() -> defer.Deferred[None]:
        proc.signal("TERM")
        killer = reactor.callLater(WAIT, proc.signal, "KILL")

        def ended(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return proc.ended.addBoth(ended)

    test.addCleanup(stop)
    return proc


@defer.inlineCallbacks
def waitUntilListening(
    proc: HAProxyProcess, port: int
) -> Generator[defer.Deferred[Any], Any, None]:
    """
    Retry, a bounded number of times, a plain TCP connection to C{port} on
    127.0.0.1 until one succeeds, and close it again.

    @raise RuntimeError: if HAProxy exits or never accepts a connection.
    """
    endpoint = f"tcp:host=127.0.0.1:port={port}"
    for _ in range(START_ATTEMPTS):
        if proc.ended.called:
            break
        try:
            probe = yield clientFromString(reactor, endpoint).connect(
                protocol.Factory.forProtocol(protocol.Protocol)
            )
        except error.ConnectError:
            yield task.deferLater(reactor, 0.1, lambda: None)
        else:
            probe.transport.abortConnection()
            return
    raise RuntimeError(
        "haproxy did not start listening:\n" + proc.output.decode("utf-8", "replace")
    )


class HAProxyTests(TestCase):
    """
    Two C{twistd pbserver} processes, each on a C{haproxy:} endpoint,
    behind one HAProxy frontend that balances connections round robin and
    sends the PROXY protocol (version 2) header.
    """

    timeout = 60

    if HAPROXY is None:
        skip = "haproxy is not installed (Debian package haproxy); see deployment.rst"

    @defer.inlineCallbacks
    def connect(
        self, port: int
    ) -> Generator[defer.Deferred[Any], Any, pb.RemoteReference]:
        """
        Connect a stock L{pb.PBClientFactory} to C{port} on 127.0.0.1 and
        return its root; the test's cleanup disconnects it.
        """
        factory = pb.PBClientFactory()
        # Twisted's stubs want a Protocol subclass; a Broker is one at run time.
        reactor.connectTCP("127.0.0.1", port, factory, timeout=WAIT)  # type: ignore[type-var]
        root = yield factory.getRootObject().addTimeout(WAIT, reactor)
        gone: defer.Deferred[None] = defer.Deferred()
        root.notifyOnDisconnect(lambda ref: gone.callback(None))

        def disconnect() -> defer.Deferred[None]:
            factory.disconnect()
            return gone.addTimeout(WAIT, reactor)

        self.addCleanup(disconnect)
        return root

    @defer.inlineCallbacks
    def test_realClientAddresses(self) -> Generator[defer.Deferred[Any], Any, None]:
        """
        Clients connecting through HAProxy are spread over both server
        processes, their calls succeed, and each process sees the address
        and source port of the real client connection, not HAProxy's.
        """
        servers = []
        for _ in range(2):
            server = yield startTwistd(
                self,
                [
                    "pbserver",
                    "--listen",
                    PROXIED,
                    "--root",
                    "tests._haproxyroot.AddressRoot",
                ],
            )
            servers.append(server)

        front = freePort()
        lines = "\n".join(
            f"    server pb{i} 127.0.0.1:{server.port} send-proxy-v2"
            for i, server in enumerate(servers)
        )
        haproxy = startHAProxy(self, CONFIG.format(front=front, servers=lines))
        yield waitUntilListening(haproxy, front)

        pids = set()
        for _ in range(CLIENTS):
            root = yield self.connect(front)
            host, port, pid = yield root.callRemote("whoami").addTimeout(WAIT, reactor)
            here = root.broker.transport.getHost()
            self.assertEqual((host, port), (here.host, here.port))
            self.assertEqual(host, "127.0.0.1")
            pids.add(pid)

        self.assertEqual(pids, {server.transport.pid for server in servers})
