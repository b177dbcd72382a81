"""
Tests for L{pbext.introspect}: what a server describes, to whom, and the
shape of the answer; in memory with L{pbext.testing}.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Union

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pbext import PBClientFactory, PBServerFactory, demo, introspect
from pbext.security import strictPolicy
from pbext.testing import PBConnection, connectedPair


class Counter(pb.Referenceable):
    """
    A counter, handed out by L{Shop}.
    """

    def remote_increment(self, by: int = 1) -> int:
        """
        Add C{by} to the count.  More text that is not described.
        """
        return by

    def remote__secret(self) -> None:
        """
        Never described: the name starts with an underscore.
        """


class Board(pb.Viewable):
    """
    A board, seen through a perspective.
    """

    def view_place(self, perspective: object, where: tuple[int, int]) -> bool:
        """
        Place a piece.
        """
        return True


class Notes(pb.RemoteCache):
    def observe_added(self, note: str) -> None:
        """
        A note was added.
        """


class Shop(pb.Root):
    """
    The shop: counters and sums.
    """

    def remote_add(self, a: int, b: int = 2, *more: int, scale: float = 1.0) -> int:
        """
        Add numbers.
        """
        return a + b

    async def remote_later(self, name: str) -> list[str]:
        return [name]

    def remote_deferred(self, secret: object = object()) -> Deferred[bytes | None]:
        return Deferred()

    def remote_counter(self) -> Counter:
        return Counter()

    def remote_local(self) -> Any:
        class Local:
            pass

        return None

    def _private(self) -> None:
        pass

    def notRemote(self) -> None:
        pass


class Clerk(pb.Avatar):
    """
    What a logged-in user of L{ShopRealm} gets.
    """

    def perspective_sell(self, item: str, count: int = 1) -> Counter:
        """
        Sell C{count} of C{item}; the sales counter.
        """
        return Counter()

    def perspective_board(self) -> Board:
        """
        The board, seen through this clerk.
        """
        return Board()


@implementer(IRealm)
class ShopRealm:
    """
    A realm of L{Clerk}s, served by the end-to-end tests of
    C{python -m pbext describe} (tests/test_cli.py).
    """

    def requestAvatar(
        self, avatarId: object, mind: object, *interfaces: Any
    ) -> tuple[Any, Clerk, Callable[[], None]]:
        return pb.IPerspective, Clerk(), lambda: None


#: The realm C{twistd pbserver --realm tests.test_introspect.shopRealm} serves.
shopRealm = ShopRealm()


def _localAnnotated() -> type:
    class Local:
        pass

    class Root(pb.Root):
        def remote_take(self, value: Local) -> Local:
            return value

    return Root


def _many(count: int) -> type:
    methods = {f"remote_m{i:03d}": (lambda self: None) for i in range(count)}
    return type("Many", (pb.Root,), methods)


def _connect(root: object, **options: Any) -> PBConnection:
    return connectedPair(PBServerFactory(root, **options), PBClientFactory())


def _describe(test: SynchronousTestCase, conn: PBConnection, ref: Any) -> Any:
    test.addCleanup(conn.disconnect)
    return conn.resultOf(introspect.describeRemote(ref))


class DescribeServerTests(SynchronousTestCase):
    """
    A pbext server describes the objects its pbext client holds.
    """

    def test_demoRoot(self) -> None:
        """
        The demo root is described with its three methods, their
        signatures from annotations and their docstrings' first sentences.
        """
        conn = _connect(demo.DemoRoot())
        description = _describe(self, conn, conn.rootObject())
        (root,) = description["classes"]
        self.assertEqual(root["name"], "pbext.demo.DemoRoot")
        self.assertEqual(root["flavor"], "remote")
        self.assertEqual(
            [m["name"] for m in root["methods"]], ["echo", "ping", "version"]
        )
        ping = root["methods"][1]
        self.assertEqual(ping["returns"], "str")
        self.assertEqual(ping["parameters"], [])
        self.assertEqual(
            ping["doc"], 'Answer "pong": proof that the server is alive and serving.'
        )

    def test_describeAtOnce(self) -> None:
        """
        A client may describe the root the moment it has it: its broker
        says it is pbext before handing the connection to its factory.
        """
        described: list[Deferred[Any]] = []

        class Eager(PBClientFactory):
            def clientConnectionMade(self, broker: Any) -> None:
                super().clientConnectionMade(broker)
                root = broker.remoteForName("root")
                described.append(ensureDeferred(introspect.describeRemote(root)))

        conn = connectedPair(PBServerFactory(demo.DemoRoot()), Eager())
        self.addCleanup(conn.disconnect)
        description = conn.resultOf(described[0])
        self.assertEqual(description["classes"][0]["name"], "pbext.demo.DemoRoot")

    def test_jsonShape(self) -> None:
        """
        The description is plain data (JSON round-trips it unchanged) with
        a version, the classes and each method's parameters: name, kind,
        annotation and default (a short literal, or C{...}).
        """
        conn = _connect(Shop())
        description = _describe(self, conn, conn.rootObject())
        self.assertEqual(json.loads(json.dumps(description)), description)
        self.assertEqual(description["version"], introspect.DESCRIPTION_VERSION)
        self.assertFalse(description["truncated"])
        shop = description["classes"][0]
        self.assertEqual(shop["name"], "tests.test_introspect.Shop")
        self.assertEqual(shop["doc"], "The shop: counters and sums.")
        self.assertEqual(shop["modules"], ["tests.test_introspect"])
        methods = {m["name"]: m for m in shop["methods"]}
        self.assertEqual(
            sorted(methods), ["add", "counter", "deferred", "later", "local"]
        )
        self.assertEqual(
            methods["add"]["parameters"],
            [
                {"name": "a", "kind": "either", "annotation": "int"},
                {"name": "b", "kind": "either", "annotation": "int", "default": "2"},
                {"name": "more", "kind": "varargs", "annotation": "int"},
                {
                    "name": "scale",
                    "kind": "keyword",
                    "annotation": "float",
                    "default": "1.0",
                },
            ],
        )
        self.assertEqual(methods["later"]["returns"], "list[str]")
        self.assertEqual(methods["deferred"]["returns"], "bytes | None")
        self.assertEqual(methods["deferred"]["parameters"][0]["default"], "...")
        self.assertEqual(methods["counter"]["returns"], "tests.test_introspect.Counter")

    def test_namedRemoteClasses(self) -> None:
        """
        A remote class named by a described method's annotation is
        described too, with only the methods a peer may call.
        """
        conn = _connect(Shop())
        description = _describe(self, conn, conn.rootObject())
        counter = description["classes"][1]
        self.assertEqual(counter["name"], "tests.test_introspect.Counter")
        self.assertEqual([m["name"] for m in counter["methods"]], ["increment"])
        self.assertEqual(counter["methods"][0]["doc"], "Add by to the count.")

    def test_heldReference(self) -> None:
        """
        Any reference the client holds can be described, not only the
        root.
        """
        conn = _connect(Shop())
        root = conn.rootObject()
        counter = conn.resultOf(root.callRemote("counter"))
        description = _describe(self, conn, counter)
        self.assertEqual(
            description["classes"][0]["name"], "tests.test_introspect.Counter"
        )

    def test_avatar(self) -> None:
        """
        After a login, the avatar is described with its C{perspective_}
        methods.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        conn = _connect(Portal(demo.DemoRealm(), [checker]))
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        description = _describe(self, conn, avatar)
        (cls,) = description["classes"]
        self.assertEqual(cls["name"], "pbext.demo.DemoAvatar")
        self.assertEqual(cls["flavor"], "perspective")
        self.assertEqual([m["name"] for m in cls["methods"]], ["echo", "whoami"])

    def test_viewPoint(self) -> None:
        """
        A L{pb.Viewable} an avatar hands out is described by its C{view_}
        methods, without the perspective argument the broker passes.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        conn = _connect(Portal(ShopRealm(), [checker]))
        avatar = conn.login(UsernamePassword(b"alice", b"secret"))
        board = conn.resultOf(avatar.callRemote("board"))
        description = _describe(self, conn, board)
        cls = description["classes"][0]
        self.assertEqual(
            (cls["name"], cls["flavor"]), ("tests.test_introspect.Board", "view")
        )
        (place,) = cls["methods"]
        self.assertEqual([p["name"] for p in place["parameters"]], ["where"])

    def test_unnameableClass(self) -> None:
        """
        A class that cannot be imported by name (defined in a function) is
        described as C{typing.Any}, and not described itself.
        """
        conn = _connect(_localAnnotated()())
        description = _describe(self, conn, conn.rootObject())
        (cls,) = description["classes"]
        (take,) = cls["methods"]
        self.assertEqual(take["parameters"][0]["annotation"], "typing.Any")
        self.assertEqual(take["returns"], "typing.Any")

    def test_bounded(self) -> None:
        """
        A class with more than L{introspect.MAX_METHODS} methods is
        described with that many, marked truncated.
        """
        conn = _connect(_many(introspect.MAX_METHODS + 50)())
        description = _describe(self, conn, conn.rootObject())
        cls = description["classes"][0]
        self.assertEqual(len(cls["methods"]), introspect.MAX_METHODS)
        self.assertTrue(cls["truncated"])

    def test_boundedSize(self) -> None:
        """
        However long the methods' annotations, a description stays within
        L{introspect.MAX_DESCRIPTION} characters of JSON (and the
        connection's message size), marked truncated.
        """
        wide = Union[tuple(type(f"T{i}", (), {}) for i in range(3))]  # noqa: UP007
        params = ", ".join(f"p{i}: wide" for i in range(40))
        namespace: dict[str, Any] = {"wide": wide}
        exec(f"def f(self, {params}) -> wide: pass", namespace)
        methods = {f"remote_m{i:03d}": namespace["f"] for i in range(150)}
        roots = [type(f"Big{n}", (pb.Root,), methods) for n in range(8)]
        description = introspect.describeClasses([(r, "remote") for r in roots])
        size = len(json.dumps(description))
        self.assertLess(size, introspect.MAX_DESCRIPTION + 20_000)
        self.assertTrue(
            description["truncated"] or description["classes"][-1]["truncated"]
        )
        conn = _connect(roots[0]())
        answer = _describe(self, conn, conn.rootObject())
        self.assertTrue(answer["classes"][0]["truncated"])


class RefusalTests(SynchronousTestCase):
    """
    When a server does not describe, the client gets a clear refusal.
    """

    def assertRefused(self, conn: PBConnection, ref: Any, text: str) -> None:
        self.addCleanup(conn.disconnect)
        failure = conn.failureOf(introspect.describeRemote(ref))
        self.assertTrue(failure.check(introspect.IntrospectionRefused), failure)
        self.assertIn(text, failure.getErrorMessage())

    def test_turnedOff(self) -> None:
        """
        C{introspection=False} on the factory refuses every description.
        """
        conn = _connect(demo.DemoRoot(), introspection=False)
        self.assertRefused(conn, conn.rootObject(), "introspection is off")

    def test_strictPolicy(self) -> None:
        """
        Under the C{strict} policy introspection is off unless the factory
        turns it on.
        """
        conn = _connect(demo.DemoRoot(), policy=strictPolicy())
        self.assertRefused(conn, conn.rootObject(), "introspection is off")
        conn = _connect(demo.DemoRoot(), policy=strictPolicy(), introspection=True)
        description = _describe(self, conn, conn.rootObject())
        self.assertEqual(description["classes"][0]["name"], "pbext.demo.DemoRoot")

    def test_stockClient(self) -> None:
        """
        A stock PB client that calls the control object's C{describe}
        itself is refused: introspection is for pbext peers.
        """
        conn = connectedPair(PBServerFactory(demo.DemoRoot()), pb.PBClientFactory())
        self.addCleanup(conn.disconnect)
        root = conn.rootObject()
        control = root.broker.remoteForName(b"pbext")
        failure = conn.failureOf(control.callRemote("describe", root))
        self.assertTrue(failure.check(introspect.IntrospectionRefused), failure)
        self.assertIn("pbext peers only", failure.getErrorMessage())

    def test_stockServer(self) -> None:
        """
        Against a stock PB server, describing fails on the client without
        sending anything, saying the server is not pbext.
        """
        conn = connectedPair(pb.PBServerFactory(demo.DemoRoot()), PBClientFactory())
        self.addCleanup(conn.disconnect)
        root = conn.rootObject()
        failure = conn.failureOf(introspect.describeRemote(root))
        self.assertTrue(failure.check(introspect.IntrospectionUnavailable))

    def test_notAReference(self) -> None:
        """
        Only references the peer holds are described: anything else sent
        in their place is refused.
        """
        conn = _connect(demo.DemoRoot())
        self.addCleanup(conn.disconnect)
        conn.rootObject()
        control = conn.clientFactory._broker.remoteForName(b"pbext")
        failure = conn.failureOf(control.callRemote("describe", "root"))
        self.assertTrue(failure.check(introspect.IntrospectionRefused), failure)
        self.assertIn("takes a reference", failure.getErrorMessage())

    def test_clientDoesNotDescribe(self) -> None:
        """
        A client broker never describes its objects to the server.
        """
        conn = _connect(demo.DemoRoot())
        self.addCleanup(conn.disconnect)
        conn.rootObject()
        self.assertFalse(introspect.introspectionEnabled(conn.clientFactory._broker))
        self.assertTrue(introspect.introspectionEnabled(conn.serverBroker))


class DescribeClassTests(SynchronousTestCase):
    """
    Classes described from their code, for C{--module}.
    """

    def test_flavors(self) -> None:
        """
        Each flavor's prefix is used, and a C{view_} method is described
        without the perspective the broker passes.
        """
        self.assertEqual(introspect.classFlavor(Shop), "remote")
        self.assertEqual(introspect.classFlavor(Board), "view")
        self.assertEqual(introspect.classFlavor(Notes), "observe")
        self.assertEqual(introspect.classFlavor(demo.DemoAvatar), "perspective")
        self.assertIsNone(introspect.classFlavor(object))
        board = introspect.describeClass(Board, "view")
        (place,) = board["methods"]
        self.assertEqual(
            place["parameters"],
            [{"name": "where", "kind": "either", "annotation": "tuple[int, int]"}],
        )
        notes = introspect.describeClass(Notes, "observe")
        self.assertEqual([m["name"] for m in notes["methods"]], ["added"])

    def test_freshCopies(self) -> None:
        """
        What a class offers is found once, but every description is a
        fresh copy: changing one changes no later one.
        """
        first = introspect.describeClass(Shop, "remote")
        first["methods"][0]["parameters"].clear()
        first["methods"].clear()
        again = introspect.describeClass(Shop, "remote")
        self.assertEqual(again["methods"][0]["name"], "add")
        self.assertEqual(len(again["methods"][0]["parameters"]), 4)

    def test_policyFilter(self) -> None:
        """
        Only the names the policy allows are described (the memo of the
        class holds them all).
        """
        described = introspect.describeClass(Shop, "remote", lambda name: name != "add")
        self.assertNotIn("add", [m["name"] for m in described["methods"]])
        self.assertIn(
            "add",
            [m["name"] for m in introspect.describeClass(Shop, "remote")["methods"]],
        )

    def test_module(self) -> None:
        """
        C{module:Class} describes that class and the classes it names;
        C{module} alone every remote class the module defines.
        """
        one = introspect.describeModule("tests.test_introspect:Shop")
        self.assertEqual(
            [c["name"].rsplit(".", 1)[1] for c in one["classes"]], ["Shop", "Counter"]
        )
        every = introspect.describeModule("tests.test_introspect")
        self.assertEqual(
            sorted(c["name"].rsplit(".", 1)[1] for c in every["classes"]),
            ["Board", "Clerk", "Counter", "Notes", "Shop"],
        )

    def test_moduleErrors(self) -> None:
        """
        A module that does not import, a missing class and a class that
        is not remote are named in the error.
        """
        for spec, text in [
            ("tests.noSuchModule:X", "cannot import tests.noSuchModule"),
            ("tests.test_introspect:Nope", "has no class Nope"),
            ("tests.test_introspect:PBConnection", "is not a remote class"),
        ]:
            with self.assertRaises(ValueError) as caught:
                introspect.describeModule(spec)
            self.assertIn(text, str(caught.exception))

    def test_text(self) -> None:
        """
        The plain-text form shows each class, then each method with short
        type names and its docstring's first sentence.
        """
        text = introspect.formatText(
            introspect.describeModule("tests.test_introspect:Shop")
        )
        self.assertIn(
            "  add(a: int, b: int = 2, *more: int, scale: float = 1.0) -> int\n"
            "      Add numbers.",
            text,
        )
        self.assertIn("  counter() -> Counter\n", text)
        self.assertIn("tests.test_introspect.Counter (remote_ methods)", text)


class TypeNamerTests(SynchronousTestCase):
    """
    L{pbext._typenames.TypeNamer} spells annotations as type expressions
    a stub module can hold.
    """

    def test_forms(self) -> None:
        """
        Builtins, generics, unions, literals, callables and classes of
        modules are spelt as Python writes them, with dotted names, and
        the modules and remote classes they name are noted.
        """
        import collections.abc
        import typing

        from pbext._typenames import TypeNamer

        namer = TypeNamer(lambda cls: issubclass(cls, pb.Referenceable))
        T = typing.TypeVar("T")
        cases: list[tuple[object, str]] = [
            (int, "int"),
            (None, "None"),
            (typing.List[int], "list[int]"),  # noqa: UP006
            (typing.Optional[bytes], "bytes | None"),  # noqa: UP045
            (dict[str, tuple[int, ...]], "dict[str, tuple[int, ...]]"),
            (typing.Literal["a", 1], "typing.Literal['a', 1]"),
            (
                collections.abc.Callable[[int], str],
                "collections.abc.Callable[[int], str]",
            ),
            (typing.Annotated[int, "meta"], "int"),
            (
                collections.abc.AsyncIterator[Counter],
                "collections.abc.AsyncIterator[tests.test_introspect.Counter]",
            ),
            (T, "typing.Any"),
            (typing.Any, "typing.Any"),
            (Deferred, "twisted.internet.defer.Deferred"),
        ]
        for annotation, text in cases:
            self.assertEqual(namer.name(annotation), text, annotation)
        self.assertEqual(namer.classes, [Counter])
        self.assertEqual(
            namer.modules,
            {
                "typing",
                "collections.abc",
                "tests.test_introspect",
                "twisted.internet.defer",
            },
        )
