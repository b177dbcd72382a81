"""
The echo floor: what moving the same bytes over the same loopback TCP costs
with a raw Twisted protocol and no RPC system at all.

Both ends speak L{Int32StringReceiver} (a 4-byte big-endian length before
every frame), as a Twisted programmer would write the smallest RPC: each
request frame starts with a 4-byte request id followed by the body; the
server sends every frame straight back, id included, without looking into
it; the client matches each answer to its waiting L{Deferred} by the id, so
any number of calls can be in flight on one connection.  Both ends turn
C{TCP_NODELAY} on, as pbext does.  There is no
serialization: each workload's body is built once, before timing, and the
answer is checked against it only while warming up.

The bodies:

  - C{small}, C{inflight}, C{clients}: L{SMALL_BODY}, a few bytes, the size
    of a method name and a small integer.
  - C{bytes}: the 512 KiB blob of the C{bytes} workload.
  - C{struct}: the nested structure of the C{struct} workload as compact
    JSON (about 120 KB), made once and echoed as opaque bytes: the floor of
    moving a structure of that size, without encoding or decoding it.

The C{serialize} workload's floor is not here: it is msgpack's
C{packb}/C{unpackb} (see L{benchmarks.serialization}).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from benchmarks import payloads
from benchmarks.client import _TwistedClient, _withTimeout
from benchmarks.sample import MeasurementError, check

#: The largest frame either end accepts: room for the 512 KiB blob and the
#: structure, where Twisted's default (99,999 bytes) would refuse both.
MAX_FRAME = 4 * 1024 * 1024

#: The request id at the start of every frame.
_REQUEST_ID = struct.Struct("!I")

#: The body of the small calls: a method name and a small integer's worth.
SMALL_BODY = b"echo:42"

#: The workloads the floor answers (besides C{clients}, which uses
#: L{SMALL_BODY}).
WORKLOADS = ("small", "inflight", "struct", "bytes")


def makeBody(workload: str, dicts: int = payloads.STRUCTURE_DICTS) -> bytes:
    """
    The bytes the floor echoes in C{workload}.

    @raise MeasurementError: If the floor has no such workload.
    """
    if workload in ("small", "inflight", "clients"):
        return SMALL_BODY
    if workload == "bytes":
        return payloads.makeBlob()
    if workload == "struct":
        structure = payloads.makeStructure(dicts)
        return json.dumps(structure, separators=(",", ":")).encode("utf-8")
    raise MeasurementError(f"the echo floor has no {workload!r} workload")


def _noDelay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off, as pbext does on its TCP connections:
    otherwise the last segment of a large frame can wait for a delayed
    acknowledgement, and the floor would measure that wait.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        setTcpNoDelay(True)


class EchoServerProtocol(Int32StringReceiver):
    """
    Send every frame back as it came, request id and all.
    """

    MAX_LENGTH = MAX_FRAME

    def connectionMade(self) -> None:
        _noDelay(self.transport)

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


def serverFactory() -> ServerFactory:
    """
    A factory of L{EchoServerProtocol}s, for C{listenTCP}.
    """
    factory = ServerFactory()
    factory.protocol = EchoServerProtocol
    return factory


class EchoClientProtocol(Int32StringReceiver):
    """
    The client end: L{call} sends a body under a new request id and returns
    a L{Deferred} that fires with the body of the answer carrying that id.
    """

    MAX_LENGTH = MAX_FRAME

    def __init__(self) -> None:
        self._pending: Dict[int, Deferred[bytes]] = {}
        self._lastId = 0

    def connectionMade(self) -> None:
        _noDelay(self.transport)

    def call(self, body: bytes) -> Deferred[bytes]:
        """
        Send C{body} as a request.

        @return: A L{Deferred} firing with the answer's body, or failing if
            the connection is lost first.
        """
        self._lastId = requestId = (self._lastId + 1) & 0xFFFFFFFF
        answer: Deferred[bytes] = Deferred()
        self._pending[requestId] = answer
        self.sendString(_REQUEST_ID.pack(requestId) + body)
        return answer

    def stringReceived(self, string: bytes) -> None:
        (requestId,) = _REQUEST_ID.unpack_from(string)
        answer = self._pending.pop(requestId, None)
        if answer is None:
            raise MeasurementError(f"an answer to request {requestId}, never sent")
        answer.callback(string[_REQUEST_ID.size :])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            answer.errback(reason)


class FloorClient(_TwistedClient):
    """
    Measurements of the echo floor, with the PB clients' loops and bounds:
    only the connection and the call differ.
    """

    def __init__(self, reactor: Any, system: str, options: Any) -> None:
        super().__init__(reactor, system, options)
        self.connections: List[EchoClientProtocol] = []

    async def connect(self) -> EchoClientProtocol:
        endpoint = TCP4ClientEndpoint(
            self.reactor, "127.0.0.1", self.options.port, timeout=30
        )
        connecting = connectProtocol(endpoint, EchoClientProtocol())
        connection: EchoClientProtocol = await _withTimeout(
            self.reactor, connecting, 30.0, "connect"
        )
        self.connections.append(connection)
        return connection

    def disconnect(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.loseConnection()
        self.connections = []

    def smallCall(self, connection: Any) -> Deferred[Any]:
        call: Deferred[Any] = connection.call(SMALL_BODY)
        return call

    async def measure(self) -> Dict[str, Any]:
        o = self.options
        if o.workload == "clients":
            return await self.clients()
        body = makeBody(o.workload, o.dicts)
        connection = await self.connect()
        answer = await self.warm(lambda: connection.call(body), o.warmup)
        check(answer == body, f"echo of the {o.workload} body")
        lanes = o.lanes if o.workload == "inflight" else 1
        result = await self.sequence(lambda: connection.call(body), o.count, lanes)
        if o.workload == "bytes" and result["value"] is not None:
            result["value"] = result["value"] * len(body) / 1e6
        result["extra"]["bodyBytes"] = len(body)
        result["notes"] = self.notes + result["notes"]
        return result
