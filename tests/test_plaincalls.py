"""
Tests for L{pbext._plaincalls}: the direct path of plain incoming calls,
and every case that leaves it for the general path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.spread import flavors, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import _dispatch, _plaincalls, codec
from pbext._accelerator import speedups
from pbext.broker import Broker, PolicyViolation
from pbext.security import defaultPolicy
from pbext.testing import PBConnection, connectedPair
from pbext.typecheck import typed
from tests._parts import rootOf
from tests.test_accelerator import plainValues


@dataclasses.dataclass
class Point:
    """
    A registered copyable, to answer with a value that is not builtins.
    """

    x: int
    y: int


class Taker(pb.Referenceable):
    """
    What the client gives the server to call back.
    """

    def __init__(self) -> None:
        self.taken: list[int] = []

    def remote_take(self, data: str) -> None:
        self.taken.append(len(data))


class TypedClass(pb.Referenceable):
    """
    A class marked with L{typed}: every method's arguments are checked.
    """

    def remote_double(self, value: int) -> int:
        return value * 2


typed(TypedClass)


class PlainRoot(pb.Root):
    """
    A root with a method for every way a call can go.
    """

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[Any]] = []
        self.told: list[object] = []
        self.taker: Any = None

    def remote_echo(self, value: Any) -> Any:
        return value

    @typed
    def remote_typedEcho(self, value: int) -> int:
        return value

    def remote_marked(self, value: int) -> int:
        return value

    remote_marked._pbextTyped = 1  # type: ignore[attr-defined]  # a marker of another kind

    def remote_keywords(self, a: int, b: int = 1) -> int:
        return a * 10 + b

    def remote_wait(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiting.append(d)
        return d

    async def remote_later(self, value: int) -> int:
        return value + 1

    def remote_point(self) -> Point:
        return Point(1, 2)

    def remote_fail(self) -> None:
        raise ValueError("the method failed")

    def remote_tell(self, value: object) -> None:
        self.told.append(value)

    def remote_large(self, size: int) -> str:
        return "x" * size

    def remote_typedClass(self) -> TypedClass:
        return TypedClass()

    def remote_setTaker(self, taker: pb.RemoteReference) -> None:
        self.taker = taker

    def remote_push(self, size: int) -> int:
        # A message larger than what is held back: the answers held are
        # written first, and held back anew after it.
        self.taker.callRemote("take", "y" * size)
        return size


def sendTable() -> Any:
    """
    The send table of a connection whose registry knows L{Point}.
    """
    connection = connectedPair(
        pbext.PBServerFactory(PlainRoot(), registry=_registry()),
        pbext.PBClientFactory(registry=_registry()),
    )
    broker = connection.serverBroker
    table = broker._pbextSerialization.plainTypes
    if table.stale:
        table.refresh()
    connection.disconnect()
    return table.send


def _registry() -> Any:
    """
    A copyable registry that knows L{Point}.
    """
    registry = pbext.copyable.CopyableRegistry()
    registry.register(Point, "tests.plaincalls.Point")
    return registry


def connect(
    test: SynchronousTestCase,
    brokerClass: type[Broker] | None = None,
    **options: Any,
) -> tuple[PBConnection, Broker, PlainRoot]:
    """
    Connect a pbext client to a pbext server serving a L{PlainRoot}, whose
    brokers are C{brokerClass}, handshake done.
    """
    root = PlainRoot()
    registry = _registry()
    server = pbext.PBServerFactory(root, registry=registry, **options)
    if brokerClass is not None:
        server.protocol = brokerClass
    client = pbext.PBClientFactory(registry=registry)
    connection = connectedPair(server, client)
    test.addCleanup(connection.disconnect)
    serverBroker = connection.serverBroker
    assert isinstance(serverBroker, Broker)
    return connection, serverBroker, root


def inOneRead(
    connection: PBConnection, server: Broker, calls: Callable[[], list[Any]]
) -> list[Any]:
    """
    Make C{calls} and give them to the server in one read (so that their
    answers are held back to leave together); deliver the answers.

    @return: what C{calls} made.
    """
    connection.clientToServer.hold()
    made = calls()
    connection.pump()
    data = connection.clientToServer.pending()
    # Delivered here, in one read, not again by the next pump.
    connection.clientToServer._clear()
    connection.clientToServer.release()
    server.dataReceived(data)
    connection.pump()
    return made


class Counted:
    """
    Count the calls of methods of a class, patched by a test.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.test = test
        self.counts: dict[str, int] = {}

    def patch(self, cls: type, name: str) -> None:
        original = getattr(cls, name)
        self.counts[name] = 0

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return original(*args, **kwargs)

        self.test.patch(cls, name, counting)


class PlainPathTests(SynchronousTestCase):
    """
    A broker that keeps pbext's route for calls has its plain calls run
    straight from the queue.
    """

    def test_dispatcherClass(self) -> None:
        """
        pbext's broker gets a L{_plaincalls.PlainDispatch}; a subclass
        that overrides a method of L{_plaincalls.CALL_ROUTE} gets an
        L{_dispatch.IncomingDispatch}.
        """
        connection, server, root = connect(self)
        self.assertIs(type(server._pbextDispatcher), _plaincalls.PlainDispatch)
        for name in _plaincalls.CALL_ROUTE:
            kind = type("Routed", (Broker,), {name: lambda *args: None})
            self.assertIs(
                _plaincalls.dispatcherClass(kind, Broker), _dispatch.IncomingDispatch
            )

    def test_routeSkipped(self) -> None:
        """
        Plain calls, in one read or alone, are answered without the
        broker's chain of calls; with the accelerator, without the
        dispatcher's Python steps for the method either.
        """
        connection, server, root = connect(self)
        ref = rootOf(connection)
        counted = Counted(self)
        for name in _plaincalls.CALL_ROUTE:
            counted.patch(Broker, name)
        for name in ("received", "found", "invoke", "plainFind"):
            counted.patch(_plaincalls.PlainDispatch, name)
        calls = inOneRead(
            connection,
            server,
            lambda: [ref.callRemote("echo", n) for n in range(5)],
        )
        self.assertEqual([self.successResultOf(d) for d in calls], list(range(5)))
        alone = ref.callRemote("echo", [1, "two", 3.0])
        connection.pump()
        self.assertEqual(self.successResultOf(alone), [1, "two", 3.0])
        expected = dict.fromkeys(counted.counts, 0)
        if speedups is None:
            # Without the accelerator's Jellied arguments, invoke unjellies.
            expected["plainFind"] = expected["invoke"] = 6
        else:
            # Alone: its answer is not held back.
            expected["plainFind"] = 1
        self.assertEqual(counted.counts, expected)

    def test_overridesGetEveryCall(self) -> None:
        """
        A broker class that overrides any method of the route gets every
        call through its override, in one read or alone.
        """
        for name in _plaincalls.CALL_ROUTE:
            self.assertOverrideSees(name)

    def assertOverrideSees(self, name: str) -> None:
        """
        A broker class that overrides C{name} (calling pbext's) sees every
        call, in one read or alone.
        """
        seen: list[str] = []
        original = getattr(Broker, name)

        def override(self: Broker, *args: Any) -> Any:
            seen.append(name)
            return original(self, *args)

        kind = type("Routed", (Broker,), {name: override})
        connection, server, root = connect(self, brokerClass=kind)
        ref = rootOf(connection)
        del seen[:]
        calls = inOneRead(
            connection, server, lambda: [ref.callRemote("echo", n) for n in range(3)]
        )
        self.assertEqual([self.successResultOf(d) for d in calls], [0, 1, 2])
        alone = ref.callRemote("echo", 3)
        connection.pump()
        self.assertEqual(self.successResultOf(alone), 3)
        self.assertGreaterEqual(len(seen), 4, name)

    def test_instanceOverride(self) -> None:
        """
        A broker given its own C{_recvMessage} gets every call through it.
        """
        connection, server, root = connect(self)
        ref = rootOf(connection)
        seen: list[object] = []
        original = server._recvMessage

        def record(*args: Any) -> None:
            seen.append(args[2])
            original(*args)

        server._recvMessage = record  # type: ignore[method-assign]  # records each call
        calls = inOneRead(
            connection, server, lambda: [ref.callRemote("echo", n) for n in range(3)]
        )
        self.assertEqual([self.successResultOf(d) for d in calls], [0, 1, 2])
        self.assertEqual(len(seen), 3)


class FallbackTests(SynchronousTestCase):
    """
    Every call the direct path does not finish goes on as the general path
    goes: with plain calls around it, in one read.
    """

    def around(self, call: Callable[[pb.RemoteReference], Any], **options: Any) -> Any:
        """
        Make C{call} between two plain calls, in one read.

        @return: the Deferred C{call} made, the server and the root.
        """
        connection, server, root = connect(self, **options)
        ref = rootOf(connection)
        before, made, after = inOneRead(
            connection,
            server,
            lambda: [ref.callRemote("echo", 1), call(ref), ref.callRemote("echo", 2)],
        )
        self.assertEqual(self.successResultOf(before), 1)
        self.assertEqual(self.successResultOf(after), 2)
        self.connection = connection
        return made, server, root

    def test_typedMethod(self) -> None:
        """
        A method marked with L{typed} has its arguments checked.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("typedEcho", "no"))
        self.assertIn("expected int", str(self.failureResultOf(d).value))
        d, server, root = self.around(lambda ref: ref.callRemote("typedEcho", 3))
        self.assertEqual(self.successResultOf(d), 3)

    def test_typedClass(self) -> None:
        """
        A method of a class marked with L{typed} has its arguments checked.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("typedClass"))
        other = self.successResultOf(d)
        bad = other.callRemote("double", "no")
        good = other.callRemote("double", 4)
        self.connection.pump()
        self.assertIn("expected int", str(self.failureResultOf(bad).value))
        self.assertEqual(self.successResultOf(good), 8)

    def test_typedCalls(self) -> None:
        """
        Under the factory's C{typedCalls}, every annotated method's
        arguments are checked.
        """
        d, server, root = self.around(
            lambda ref: ref.callRemote("keywords", "no"), typedCalls=True
        )
        self.assertIn("expected int", str(self.failureResultOf(d).value))

    def test_nonBoolMarker(self) -> None:
        """
        A marker that is not a bool but is true still marks a method typed.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("marked", "no"))
        self.assertIn("expected int", str(self.failureResultOf(d).value))
        d, server, root = self.around(lambda ref: ref.callRemote("marked", 3))
        self.assertEqual(self.successResultOf(d), 3)

    def test_keywords(self) -> None:
        """
        Keyword arguments are passed.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("keywords", 1, b=5))
        self.assertEqual(self.successResultOf(d), 15)

    def test_deferred(self) -> None:
        """
        A Deferred result is kept running and answered when it fires.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("wait"))
        self.assertNoResult(d)
        self.assertEqual(len(server._pbextDispatcher.running), 1)
        root.waiting[0].callback("done")
        self.connection.pump()
        self.assertEqual(self.successResultOf(d), "done")

    def test_async(self) -> None:
        """
        An C{async def} method is awaited.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("later", 4))
        self.assertEqual(self.successResultOf(d), 5)

    def test_registeredResult(self) -> None:
        """
        A result that is not builtins is sent as its registry sends it.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("point"))
        self.assertEqual(self.successResultOf(d), Point(1, 2))

    def test_largeResult(self) -> None:
        """
        A result too large to be held back is answered on its own.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("large", 200_000))
        self.assertEqual(len(self.successResultOf(d)), 200_000)

    def test_noSuchMethod(self) -> None:
        """
        A missing method is answered with the classic C{NoSuchMethod}.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("missing"))
        self.failureResultOf(d, flavors.NoSuchMethod)

    def test_methodFails(self) -> None:
        """
        A method that raises is answered with its error, and logged.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("fail"))
        self.assertIn("the method failed", str(self.failureResultOf(d).value))
        self.assertTrue(self.flushLoggedErrors(ValueError))

    def test_noAnswer(self) -> None:
        """
        A call that asks for no answer runs and is not answered.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("tell", 7, pbanswer=0))
        self.assertEqual(root.told, [7])

    def test_refusedName(self) -> None:
        """
        A private method name is refused without running.
        """
        d, server, root = self.around(lambda ref: ref.callRemote("_secret"))
        self.failureResultOf(d, PolicyViolation)

    def test_tooManyRunning(self) -> None:
        """
        Past C{maxOutstandingCalls}, a plain call is refused.
        """
        policy = defaultPolicy()
        policy.limits = dataclasses.replace(policy.limits, maxOutstandingCalls=1)
        connection, server, root = connect(self, policy=policy)
        ref = rootOf(connection)
        waiting, refused = inOneRead(
            connection,
            server,
            lambda: [ref.callRemote("wait"), ref.callRemote("echo", 1)],
        )
        self.assertIn("more than 1", str(self.failureResultOf(refused).value))
        waiting.addErrback(lambda f: None)

    def test_batchWrittenDuringCall(self) -> None:
        """
        A method that sends a message too large to hold back (so that the
        answers held are written and held anew) does not lose the answers
        around it, nor its own.
        """
        taker = Taker()
        connection, server, root = connect(self)
        ref = rootOf(connection)
        ref.callRemote("setTaker", taker)
        connection.pump()
        before, pushed, after = inOneRead(
            connection,
            server,
            lambda: [
                ref.callRemote("echo", 1),
                ref.callRemote("push", 200_000),
                ref.callRemote("echo", 2),
            ],
        )
        self.assertEqual(
            [self.successResultOf(d) for d in (before, pushed, after)],
            [1, 200_000, 2],
        )
        self.assertEqual(taker.taken, [200_000])

    def test_controlObject(self) -> None:
        """
        The control object answers in the same read as plain calls.
        """
        connection, server, root = connect(self)
        ref = rootOf(connection)
        client = connection.clientBroker
        before, ping = inOneRead(
            connection, server, lambda: [ref.callRemote("echo", 1), client.ping()]
        )
        self.assertEqual(self.successResultOf(before), 1)
        self.assertTrue(self.successResultOf(ping))


class AcceleratorTests(SynchronousTestCase):
    """
    C{_speedups.answerBytes} and C{_speedups.callPlain}.
    """

    if speedups is None:
        skip = "the C accelerator is not built"

    def test_answerBytes(self) -> None:
        """
        C{answerBytes} gives the one piece C{encodePieces} makes of the
        answer with a small value of builtins, else L{None}.
        """
        assert speedups is not None
        codec.encode(0)
        vocabulary = {b"answer": 3}
        for value in (42, "x", [1, 2, {"a": 1.5}], b"y", None, True, (1,), {1, 2}):
            expected = speedups.encodePieces(
                (b"answer", 7, speedups.Jellied(value, None)), vocabulary, None
            )
            self.assertEqual(
                [speedups.answerBytes(b"answer", 7, value, vocabulary, None)],
                expected,
            )
        for value in ([object()], list(range(100)), Point(1, 2)):
            self.assertIsNone(speedups.answerBytes(b"answer", 7, value, None, None))
        self.assertIsNone(speedups.answerBytes(b"answer", 7, "x" * 100, None, 50))

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        value=plainValues(),
        vocabulary=st.sampled_from([None, {b"answer": 3, b"list": 1}]),
        limit=st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
    )
    def test_answerBytesAgrees(
        self, value: object, vocabulary: Any, limit: int | None
    ) -> None:
        """
        What C{answerBytes} gives, for any tree of builtins, is the one
        piece the general path (C{preparePlain} with a connection's send
        table, then C{encodePieces}) sends; where it gives L{None}, the
        general path does not send a small value in one piece, or fails.
        """
        assert speedups is not None
        codec.encode(0)
        send = sendTable()
        given = speedups.answerBytes(b"answer", 7, value, vocabulary, limit)
        try:
            prepared = speedups.preparePlain(value, send, vocabulary, limit)
            pieces = speedups.encodePieces((b"answer", 7, prepared), vocabulary, limit)
        except Exception:
            self.assertIsNone(given)
            return
        if given is not None:
            self.assertEqual([given], pieces)
            self.assertIs(type(prepared), speedups.Jellied)

    def test_callPlain(self) -> None:
        """
        C{callPlain} says how far it went.
        """
        assert speedups is not None
        codec.encode(0)
        root = PlainRoot()

        def call(name: str, args: Any, kw: Any = None) -> Any:
            return speedups.callPlain(
                root,
                "remote_" + name,
                speedups.Jellied(args, None),
                speedups.Jellied({} if kw is None else kw, None),
                b"answer",
                1,
                None,
                None,
            )

        self.assertIsNone(call("missing", []))
        self.assertEqual(call("keywords", [1], {"b": 2}), (root.remote_keywords,))
        self.assertEqual(call("typedEcho", [1]), (root.remote_typedEcho,))
        self.assertEqual(call("point", []), (root.remote_point, Point(1, 2)))
        method, result, message = call("echo", [5])
        self.assertEqual((method, result), (root.remote_echo, 5))
        self.assertEqual(message, codec.encode((b"answer", 1, 5)))
        self.assertRaises(ValueError, call, "fail", [])
