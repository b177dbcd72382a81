"""
Tests for opt-in call checks: a remote method's annotations are checked
only when the program asks for it (L{pbext.typed}, or the factory option
C{typedCalls=True}), and an annotation pbext cannot check or resolve is
skipped with one warning event, never an error on the call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import typecheck
from pbext.testing import connectedPair

if TYPE_CHECKING:
    from decimal import Decimal  # only for readers and mypy, as Buildbot does


class Legacy(pb.Root):
    """
    Annotations written for readers and mypy, as existing programs have
    them (Buildbot's C{RemoteCommand.remote_update} among them).
    """

    def __init__(self) -> None:
        self.received: list[Any] = []

    def remote_update(self, updates: tuple[dict[str, Any], int]) -> int:
        self.received.append(updates)
        return 0

    def remote_later(self, when: Decimal) -> str:
        self.received.append(when)
        return "later"

    def remote_callback(self, f: Callable[[int], int], n: int) -> int:
        self.received.append(n)
        return n

    def remote_count(self, n: int) -> str:
        return str(n)

    def remote_wrongResult(self) -> int:
        return "not an int"  # type: ignore[return-value]


class Marked(Legacy):
    """
    The same methods, one marked with L{pbext.typed}.
    """

    @pbext.typed
    def remote_count(self, n: int) -> str:
        return str(n)


@pbext.typed
class WholeClass(Legacy):
    """
    Every remote method of this class, and of its subclasses, is checked.
    """


class Inherits(WholeClass):
    pass


class Events:
    """
    Collect pbext's log events of one kind while a test runs.
    """

    def __init__(self, test: SynchronousTestCase, kind: str) -> None:
        self.kind = kind
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        test.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("pbextEvent") == self.kind:
            self.events.append(event)


class TypedCallsTests(SynchronousTestCase):
    """
    Remote call checks are opt-in.
    """

    def connect(self, root: pb.Root, stock: bool = True, **options: Any) -> Any:
        clock = Clock()
        server = pbext.PBServerFactory(root, reactor=clock, **options)
        client = pb.PBClientFactory() if stock else pbext.PBClientFactory()
        conn = connectedPair(server, client, clock=clock)
        self.addCleanup(conn.disconnect)
        return conn

    def call(self, conn: Any, name: str, *args: Any) -> Any:
        return conn.resultOf(conn.rootObject().callRemote(name, *args))

    def refusal(self, conn: Any, name: str, *args: Any) -> Any:
        return conn.failureOf(conn.rootObject().callRemote(name, *args))

    def test_unmarkedAsClassic(self) -> None:
        """
        A plain annotated method of an existing program, called by a stock
        client, is dispatched as classic PB does: a list where it says
        tuple, a value for a name imported only under C{TYPE_CHECKING}, a
        C{Callable} parameter, a wrong type and a wrong result all reach it,
        and no warning is logged.
        """
        root = Legacy()
        skipped = Events(self, "annotationSkipped")
        conn = self.connect(root)
        self.assertEqual(self.call(conn, "update", [{"stdout": "hi"}, 0]), 0)
        self.assertEqual(self.call(conn, "later", "soon"), "later")
        self.assertEqual(self.call(conn, "callback", None, 3), 3)
        self.assertEqual(self.call(conn, "count", "two"), "two")
        self.assertEqual(self.call(conn, "wrongResult"), "not an int")
        self.assertEqual(root.received, [[{"stdout": "hi"}, 0], "soon", 3])
        self.assertEqual(skipped.events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_markedMethod(self) -> None:
        """
        A method marked with L{pbext.typed} has its arguments checked; the
        other methods of its class do not.
        """
        conn = self.connect(Marked())
        self.assertEqual(self.call(conn, "count", 2), "2")
        f = self.refusal(conn, "count", "two")
        self.assertTrue(f.check(typecheck.TypedCallError), f)
        self.assertEqual(self.call(conn, "update", [{}, 0]), 0)

    def test_markedClass(self) -> None:
        """
        Every method of a class marked with L{pbext.typed}, and of its
        subclasses, has its arguments checked.
        """
        for root in (WholeClass(), Inherits()):
            conn = self.connect(root)
            f = self.refusal(conn, "count", "two")
            self.assertTrue(f.check(typecheck.TypedCallError), f)
            f = self.refusal(conn, "update", [{}, 0])
            self.assertTrue(f.check(typecheck.TypedCallError), f)
            self.assertEqual(self.call(conn, "update", ({}, 0)), 0)

    def test_factoryOption(self) -> None:
        """
        C{typedCalls=True} on the factory checks every annotated method of
        its connections, for pbext and stock clients alike.
        """
        for stock in (True, False):
            conn = self.connect(Legacy(), stock=stock, typedCalls=True)
            f = self.refusal(conn, "count", "two")
            self.assertTrue(f.check(typecheck.TypedCallError), f)
            self.assertEqual(self.call(conn, "count", 2), "2")

    def test_returnChecked(self) -> None:
        """
        With checks on, a result that does not match the return annotation
        is a L{typecheck.TypedReturnError} logged on the server; without,
        it is sent as it is.
        """
        conn = self.connect(Legacy(), typedCalls=True)
        self.refusal(conn, "wrongResult")
        self.assertEqual(len(self.flushLoggedErrors(typecheck.TypedReturnError)), 1)

    def test_skippedOnce(self) -> None:
        """
        With checks on, a parameter whose annotation cannot be resolved (a
        name imported only under C{TYPE_CHECKING}) or checked (C{Callable})
        accepts anything; the other parameters are checked, and one warning
        event per method is logged, however often it is called.
        """

        class Fresh(Legacy):
            # New functions, so that their checks are compiled here.
            def remote_later(self, when: Decimal) -> str:
                return "later"

            def remote_callback(self, f: Callable[[int], int], n: int) -> int:
                return n

        skipped = Events(self, "annotationSkipped")
        conn = self.connect(Fresh(), typedCalls=True)
        for _ in range(3):
            self.assertEqual(self.call(conn, "later", "soon"), "later")
            self.assertEqual(self.call(conn, "callback", None, 3), 3)
        f = self.refusal(conn, "callback", None, "three")
        self.assertTrue(f.check(typecheck.TypedCallError), f)
        self.assertEqual(
            sorted((e["function"], e["skipped"]) for e in skipped.events),
            [
                (
                    "TypedCallsTests.test_skippedOnce.<locals>.Fresh.remote_callback",
                    ["f"],
                ),
                (
                    "TypedCallsTests.test_skippedOnce.<locals>.Fresh.remote_later",
                    ["when"],
                ),
            ],
        )
        self.assertTrue(all(e["log_level"] is LogLevel.warn for e in skipped.events))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_classicPolicy(self) -> None:
        """
        The C{classic} policy does not check annotations either.
        """
        conn = self.connect(Legacy(), policy="classic")
        self.assertEqual(self.call(conn, "count", "two"), "two")

    def test_isTyped(self) -> None:
        """
        L{typecheck.isTyped} sees a mark on the method or on the class of
        the object it is bound to, and L{typecheck.typed} returns what it
        marks.
        """
        self.assertFalse(typecheck.isTyped(Legacy().remote_count))
        self.assertTrue(typecheck.isTyped(Marked().remote_count))
        self.assertFalse(typecheck.isTyped(Marked().remote_update))
        self.assertTrue(typecheck.isTyped(Inherits().remote_update))

        def f() -> None:
            pass

        self.assertIs(typecheck.typed(f), f)
