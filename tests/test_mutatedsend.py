"""
Tests for sending values that change while they are serialized.

Reading a registered copyable's fields runs the class's own code (a
property), which may clear, shrink or grow the very container being sent,
or drop the last reference to the object being read.  Every serialization
path (the C accelerator's C{jellyPlain}, C{isPlain}, C{preparePlain},
C{encodeIfPlain} and the encoding of a C{Jellied}, and the pure-Python
C{jellyPlain}) fails such a send with the same C{RuntimeError}, never
reading freed memory nor writing a list header that disagrees with what
follows it; a server whose remote method returns such a value answers
with that error and keeps serving.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.spread import banana, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import _jelly, codec
from pbext._accelerator import reason, speedups
from pbext.copyable import CopyableRegistry
from pbext.security import defaultPolicy
from pbext.testing import connectedPair

OUTGOING = banana.Banana.outgoingVocabulary
INCOMING = banana.Banana.incomingVocabulary

LIST_CHANGED = "list changed size during serialization"
DICT_CHANGED = "dictionary changed size during iteration"


class Meddler:
    """
    A registered class whose first field is a property that runs an action
    the first time it is read: the application code a send may run.
    """

    first: int
    second: int

    def __init__(self, action: Optional[Callable[[], object]] = None) -> None:
        self._action = action

    @property  # type: ignore[no-redef]
    def first(self) -> int:
        action, self._action = self._action, None
        if action is not None:
            action()
        return 1

    @property  # type: ignore[no-redef]
    def second(self) -> int:
        return 2


class OrderedMeddler(Meddler):
    """
    A L{Meddler} hashed by the order it was made in, so that a set of them
    is laid out (and iterated) the same way each time a plan is built.
    """

    def __init__(self, order: int) -> None:
        super().__init__()
        self._order = order

    def __hash__(self) -> int:
        return self._order


class LateMeddler:
    """
    A registered class whose field runs an action the second time it is
    read: a value found plain when it is prepared for a message, which
    changes before the message is written.
    """

    field: int

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action
        self._reads = 0

    @property  # type: ignore[no-redef]
    def field(self) -> int:
        self._reads += 1
        if self._reads == 2:
            self._action()
        return 1


REGISTRY = CopyableRegistry()
REGISTRY.register(Meddler, "t.Meddler")
REGISTRY.register(LateMeddler, "t.LateMeddler")
REGISTRY.register(OrderedMeddler, "t.OrderedMeddler")
TYPES = _jelly.PlainTypes((REGISTRY,), defaultPolicy().forConnection((REGISTRY,)))
SEND = TYPES.send


def clearList() -> list:
    """
    A list that its first item's field clears.
    """
    value: list = []
    value.extend([Meddler(value.clear), 1, "two", [3]])
    return value


def deleteTrailing() -> list:
    """
    A list whose first item's field deletes the items after it.
    """
    value: list = []
    value.extend(
        [Meddler(lambda: value.__delitem__(slice(1, None))), [1, 2], {"k": 3}, "x" * 40]
    )
    return value


def clearDict() -> dict:
    """
    A dict that a value's field clears.
    """
    value: dict = {}
    value.update(a=Meddler(value.clear), b=[1, 2], c="text")
    return value


def clearContainers() -> list:
    """
    A list holding a tuple, a dict and a list, which its first item's field
    clears (so that they are freed unless held).
    """
    value: list = []
    value.extend([Meddler(value.clear), (1, [2], "t" * 30), {"k": [1]}, [[5]]])
    return value


def dropOwner() -> list:
    """
    A list holding the only reference to a registered object, which that
    object's first field clears before its second is read.
    """
    value: list = []
    value.append(Meddler(value.clear))
    return value


def growDict() -> dict:
    """
    A dict that a value's field grows by eight entries.
    """
    value: dict = {}
    value["a"] = Meddler(lambda: value.update({f"n{i}": i for i in range(8)}))
    return value


def growList() -> list:
    """
    A list that its only item's field grows.
    """
    value: list = []
    value.append(Meddler(lambda: value.extend(range(8))))
    return value


def clearOuter() -> list:
    """
    A list that a registered object two levels down clears.
    """
    value: list = []
    value.extend([{"m": [Meddler(value.clear)]}, [1, 2], "t"])
    return value


def clearLarge() -> list:
    """
    A list with more values than L{speedups.preparePlain} looks at before it
    encodes instead, cleared by its last item's field.
    """
    value: list = list(range(100))
    value.append(Meddler(value.clear))
    return value


#: Each mutated value's builder, and the error sending it gives.
CASES: List[Tuple[Callable[[], Any], str]] = [
    (clearList, LIST_CHANGED),
    (deleteTrailing, LIST_CHANGED),
    (clearDict, DICT_CHANGED),
    (clearContainers, LIST_CHANGED),
    (dropOwner, LIST_CHANGED),
    (growDict, DICT_CHANGED),
    (growList, LIST_CHANGED),
    (clearOuter, LIST_CHANGED),
    (clearLarge, LIST_CHANGED),
]


def pythonEntryPoints() -> List[Tuple[str, Callable[[Any], Any]]]:
    """
    The pure-Python serializations of a value with registered types.
    """
    return [("_jellyPlainPython", lambda v: _jelly._jellyPlainPython(v, SEND))]


def cEntryPoints() -> List[Tuple[str, Callable[[Any], Any]]]:
    """
    The C accelerator's serializations of a value with registered types.
    """
    assert speedups is not None
    s = speedups
    return [
        ("jellyPlain", lambda v: s.jellyPlain(v, SEND)),
        ("isPlain", lambda v: s.isPlain(v, SEND)),
        ("preparePlain", lambda v: s.preparePlain(v, SEND, OUTGOING, None)),
        ("encodeIfPlain", lambda v: s.encodeIfPlain(v, SEND, OUTGOING, None)),
        ("encode", lambda v: s.encode([b"answer", 1, s.Jellied(v, SEND)], OUTGOING)),
        (
            "encodePieces",
            lambda v: s.encodePieces([b"answer", 1, s.Jellied(v, SEND)], None),
        ),
    ]


class EntryPointTests(SynchronousTestCase):
    """
    Every serialization entry point fails a value that changes while it is
    serialized with the same C{RuntimeError}.
    """

    def check(self, entryPoints: List[Tuple[str, Callable[[Any], Any]]]) -> None:
        for build, message in CASES:
            for name, serialize in entryPoints:
                value = build()
                error = self.assertRaises(RuntimeError, serialize, value)
                self.assertEqual(str(error), message, (build.__name__, name))

    def test_python(self) -> None:
        """
        The pure-Python plain jellier fails each mutated value with a
        C{RuntimeError}: Python's own for a dict, the same words for a list
        (whose iterator would otherwise stop short, or run past its
        length, silently).
        """
        self.check(pythonEntryPoints())

    def test_accelerated(self) -> None:
        """
        Each of the C accelerator's entry points fails each mutated value
        with the C{RuntimeError} the pure-Python jellier gives, instead of
        crashing (a NULL item, a freed item or object, a double free) or
        writing a header that disagrees with the items that follow.
        """
        if speedups is None:
            raise self.skipTest(f"the C accelerator is not available: {reason}")
        self.check(cEntryPoints())

    def test_messageChanged(self) -> None:
        """
        The banana encoder fails a message whose list changes while it is
        encoded (here, by a registered object's field inside a
        C{Jellied} of the message) instead of writing a header that
        disagrees with the items that follow.
        """
        if speedups is None:
            raise self.skipTest(f"the C accelerator is not available: {reason}")
        message: list = [b"answer", 1]
        message.append(speedups.Jellied(Meddler(message.clear), SEND))
        error = self.assertRaises(RuntimeError, speedups.encode, message, OUTGOING)
        self.assertEqual(str(error), LIST_CHANGED)
        message = [b"answer", 1]
        message.append(
            speedups.Jellied(Meddler(lambda: message.append(b"x" * 10)), SEND)
        )
        self.assertRaises(RuntimeError, speedups.encodePieces, message, None)

    def test_stillWorks(self) -> None:
        """
        A registered object whose field runs code that changes nothing
        else is sent as before, by every entry point.
        """
        value = [Meddler(lambda: None), {"k": Meddler()}]
        expected = [
            b"list",
            [
                b"t.Meddler",
                [
                    b"dictionary",
                    [[b"unicode", b"first"], 1],
                    [[b"unicode", b"second"], 2],
                ],
            ],
            [
                b"dictionary",
                [
                    [b"unicode", b"k"],
                    [
                        b"t.Meddler",
                        [
                            b"dictionary",
                            [[b"unicode", b"first"], 1],
                            [[b"unicode", b"second"], 2],
                        ],
                    ],
                ],
            ],
        ]
        self.assertEqual(_jelly._jellyPlainPython(value, SEND), expected)
        if speedups is None:
            return
        self.assertEqual(speedups.jellyPlain(value, SEND), expected)
        self.assertTrue(speedups.isPlain(value, SEND))
        encoded = speedups.encodeIfPlain(value, SEND, OUTGOING, None)
        self.assertEqual(
            b"".join(encoded.pieces), codec._encodePython(expected, OUTGOING)
        )


class Root(pb.Root):
    """
    A root whose method returns one of the mutated values.
    """

    def remote_mutated(self, name: str) -> Any:
        return {build.__name__: build for build, _ in CASES}[name]()

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_late(self) -> Any:
        value: list = []
        value.extend([LateMeddler(value.clear), 1, 2])
        return value


class RemoteTests(SynchronousTestCase):
    """
    A remote method that returns a value its own registered objects change
    while it is sent gets the caller an error answer, and the server keeps
    answering; a caller whose arguments change so gets the error itself.
    """

    def setUp(self) -> None:
        clock = task.Clock()
        server = pbext.PBServerFactory(Root(), registry=REGISTRY, reactor=clock)
        client = pbext.PBClientFactory(registry=REGISTRY, reactor=clock)
        self.connection = connectedPair(server, client, clock=clock)
        self.addCleanup(self.connection.disconnect)
        self.root = self.connection.rootObject()

    def test_answers(self) -> None:
        """
        Each mutated result is a remote C{RuntimeError} saying what
        changed; the connection still answers the next call.
        """
        for build, message in CASES:
            failure = self.connection.failureOf(
                self.root.callRemote("mutated", build.__name__)
            )
            self.assertTrue(failure.check(RuntimeError), (build.__name__, failure))
            self.assertIn(message, str(failure.value))
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
            self.assertEqual(
                self.connection.resultOf(self.root.callRemote("echo", [1, "x"])),
                [1, "x"],
            )
        self.assertTrue(self.connection.connected)

    def test_arguments(self) -> None:
        """
        Mutated call arguments fail the call with the C{RuntimeError},
        on the caller's side, and nothing is sent.
        """
        for build, message in CASES:
            failure = self.connection.failureOf(self.root.callRemote("echo", build()))
            self.assertTrue(failure.check(RuntimeError), build.__name__)
            self.assertEqual(str(failure.value), message)
            self.assertEqual(
                self.connection.resultOf(self.root.callRemote("echo", 7)), 7
            )

    def test_changedAfterCheck(self) -> None:
        """
        A small value checked when it is prepared and changed by its own
        code before its message is written fails that call alone: an error
        answer for a result, a failed call for arguments; the connection
        stays up.  (Without the accelerator a value is read once, when it
        is jellied.)
        """
        if speedups is None:
            raise self.skipTest(f"the C accelerator is not available: {reason}")
        failure = self.connection.failureOf(self.root.callRemote("late"))
        self.assertTrue(failure.check(RuntimeError), failure)
        self.assertIn(LIST_CHANGED, str(failure.value))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        value: list = []
        value.extend([LateMeddler(value.clear), 1])
        failure = self.connection.failureOf(self.root.callRemote("echo", value))
        self.assertTrue(failure.check(RuntimeError), failure)
        self.assertEqual(self.connection.resultOf(self.root.callRemote("echo", 7)), 7)
        self.assertTrue(self.connection.connected)


# Values with registered objects whose field changes a container of the
# value: a plan is built afresh for each implementation, so both meet the
# same changes in the same order.
OPERATIONS = ["clear", "pop", "append", "insert", "delete", "replace", "grow"]

leafPlans = st.one_of(
    st.tuples(st.just("int"), st.integers(-3, 3)),
    st.tuples(st.just("str"), st.text("ab", max_size=3)),
    st.tuples(st.just("meddler"), st.integers(0, 30), st.sampled_from(OPERATIONS)),
)
plans = st.recursive(
    leafPlans,
    lambda children: st.one_of(
        st.tuples(st.just("list"), st.lists(children, max_size=4)),
        st.tuples(st.just("tuple"), st.lists(children, max_size=3)),
        st.tuples(
            st.just("dict"),
            st.lists(st.tuples(st.text("abc", max_size=2), children), max_size=3),
        ),
        # Sets of leaves (registered objects hash by identity).
        st.tuples(st.just("set"), st.lists(leafPlans, max_size=4)),
    ),
    max_leaves=14,
)


def change(container: Any, operation: str) -> None:
    """
    Change a list, dict or set in one of several ways.
    """
    if type(container) is set:
        if operation == "clear":
            container.clear()
        elif operation == "pop" and container:
            container.pop()
        elif operation in ("append", "grow"):
            container.update(range(100, 101 if operation == "append" else 106))
        elif operation in ("delete", "replace") and container:
            # The same size, other members: the iterator does not notice.
            container.pop()
            container.add(("swapped", len(container)))
        return
    if type(container) is list:
        if operation == "clear":
            container.clear()
        elif operation == "pop" and container:
            container.pop()
        elif operation in ("append", "grow"):
            container.extend([1] * (1 if operation == "append" else 5))
        elif operation == "insert":
            container.insert(0, "x")
        elif operation == "delete" and container:
            del container[0]
        elif operation == "replace" and container:
            container[0] = "y"
    else:
        if operation == "clear":
            container.clear()
        elif operation == "pop" and container:
            container.popitem()
        elif operation in ("append", "grow"):
            for i in range(1 if operation == "append" else 9):
                container[f"new{len(container)}-{i}"] = i
        elif operation == "insert":
            container["inserted"] = 0
        elif operation == "delete" and container:
            del container[next(iter(container))]
            container["again"] = 1
        elif operation == "replace" and container:
            container[next(iter(container))] = "z"


def build(plan: Any) -> Any:
    """
    The value a plan describes, its registered objects wired to change the
    lists and dicts it names.
    """
    containers: List[Any] = []
    meddlers: List[Tuple[Meddler, int, str]] = []

    def make(node: Any) -> Any:
        kind = node[0]
        if kind in ("int", "str"):
            return node[1]
        if kind == "meddler":
            meddler = OrderedMeddler(len(meddlers))
            meddlers.append((meddler, node[1], node[2]))
            return meddler
        if kind == "tuple":
            return tuple(make(child) for child in node[1])
        if kind == "list":
            value: Any = []
            containers.append(value)
            value.extend(make(child) for child in node[1])
            return value
        if kind == "set":
            value = set()
            containers.append(value)
            value.update(make(child) for child in node[1])
            return value
        value = {}
        containers.append(value)
        for key, child in node[1]:
            value[key] = make(child)
        return value

    value = make(plan)
    for meddler, target, operation in meddlers:
        if containers:
            container = containers[target % len(containers)]
            meddler._action = lambda c=container, o=operation: change(c, o)
    return value


def outcome(function: Callable[[], Any]) -> Tuple[str, Any]:
    try:
        return ("ok", function())
    except Exception as e:
        return ("error", (type(e), str(e)))


class AgreementTests(SynchronousTestCase):
    """
    The C accelerator and the pure-Python plain jellier agree on values
    whose registered objects change them while they are sent.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(plans)
    def test_sameOutcome(self, plan: Any) -> None:
        """
        C{jellyPlain}, C{isPlain}, C{encodeIfPlain} and the encoding of a
        C{Jellied} give what the pure-Python C{jellyPlain} gives: the same
        expression (or its bytes), the same step aside, the same error.
        """
        assert speedups is not None
        python = outcome(lambda: _jelly._jellyPlainPython(build(plan), SEND))
        self.assertEqual(
            repr(outcome(lambda: speedups.jellyPlain(build(plan), SEND))), repr(python)
        )
        notPlain = python == ("ok", _jelly.NOT_PLAIN)
        isPlain = outcome(lambda: speedups.isPlain(build(plan), SEND))
        ahead = outcome(
            lambda: speedups.encodeIfPlain(build(plan), SEND, OUTGOING, None)
        )
        jellied = outcome(
            lambda: speedups.encode(
                [b"answer", 1, speedups.Jellied(build(plan), SEND)], OUTGOING
            )
        )
        if python[0] == "error":
            self.assertEqual(isPlain, python)
            self.assertEqual(ahead, python)
            self.assertEqual(jellied, python)
        elif notPlain:
            self.assertEqual(isPlain, ("ok", False))
            self.assertEqual(ahead, ("ok", None))
            self.assertEqual(
                jellied, ("error", (speedups.NotPlainError, "not a plain value"))
            )
        else:
            self.assertEqual(isPlain, ("ok", True))
            self.assertEqual(
                b"".join(ahead[1].pieces), codec._encodePython(python[1], OUTGOING)
            )
            self.assertEqual(
                jellied,
                ("ok", codec._encodePython([b"answer", 1, python[1]], OUTGOING)),
            )
        # Whatever happened, a message the decoder reads back is whole.
        if jellied[0] == "ok":
            decoder = codec.makeDecoder(vocabulary=INCOMING)
            self.assertEqual(len(decoder.feed(jellied[1])), 1)
            self.assertEqual(decoder.pendingBytes, 0)


class NestingTests(SynchronousTestCase):
    """
    The plain paths step aside for values nested deeper than a fixed depth,
    in C and in Python alike, whatever the stack holds.
    """

    def nested(self, depth: int, wrap: Callable[[Any], Any]) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = wrap(value)
        return value

    def test_sameDepth(self) -> None:
        """
        Lists, dicts, tuples and registered objects nested up to
        C{_PLAIN_MAX_NESTING} deep are plain; one more level, or as deep as
        the recursion limit allows, is not, by every entry point.
        """
        limit = _jelly._PLAIN_MAX_NESTING
        wrappers: List[Callable[[Any], Any]] = [
            lambda v: [v],
            lambda v: {"k": v},
            lambda v: (v,),
        ]
        for wrap in wrappers:
            for depth, plain in (
                (limit, True),
                (limit + 1, False),
                (997, False),
                (998, False),
            ):
                value = self.nested(depth, wrap)
                self.assertEqual(
                    _jelly._jellyPlainPython(value) is not _jelly.NOT_PLAIN,
                    plain,
                    depth,
                )
                if speedups is None:
                    continue
                self.assertEqual(
                    speedups.jellyPlain(value) is not _jelly.NOT_PLAIN, plain, depth
                )
                self.assertEqual(speedups.isPlain(value), plain)
                self.assertEqual(
                    speedups.encodeIfPlain(value, None, OUTGOING, None) is not None,
                    plain,
                )
                self.assertEqual(
                    speedups.preparePlain(value, None, OUTGOING, None) is not None,
                    plain,
                )

    def test_typedDepth(self) -> None:
        """
        A registered object counts as a level, as a container does.
        """
        limit = _jelly._PLAIN_MAX_NESTING
        for depth, plain in ((limit, True), (limit + 1, False)):
            # Lists around a registered object: depth levels in all.
            inner: Any = Meddler()
            for _ in range(depth - 1):
                inner = [inner]
            self.assertEqual(
                _jelly._jellyPlainPython(inner, SEND) is not _jelly.NOT_PLAIN, plain
            )
            if speedups is not None:
                self.assertEqual(
                    speedups.jellyPlain(inner, SEND) is not _jelly.NOT_PLAIN, plain
                )
                self.assertEqual(speedups.isPlain(inner, SEND), plain)


class NotPlainTooLargeTests(SynchronousTestCase):
    """
    L{speedups.encodeIfPlain} answers L{None} for a value that is not plain
    even where encoding it fails first, for its size or a number banana
    cannot send.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    def test_tooLargeNotPlain(self) -> None:
        """
        A value too large for the message limit, or holding an integer
        banana cannot send, before the part that is not plain: L{None}, as
        for any value that is not plain; the same value without that part
        still raises the encoding error.
        """
        assert speedups is not None
        for value, limit in (
            ([b"x" * 500, object()], 100),
            ([2**1000, object()], None),
            ({"a": "y" * 500, "b": Meddler(), "c": object()}, 100),
        ):
            self.assertIsNone(speedups.encodeIfPlain(value, SEND, OUTGOING, limit))
            self.assertIsNone(speedups.preparePlain(value, SEND, OUTGOING, limit))
        self.assertRaises(
            codec.FramingError,
            speedups.encodeIfPlain,
            [b"x" * 500, 1],
            SEND,
            OUTGOING,
            100,
        )
        self.assertRaises(
            banana.BananaError,
            speedups.encodeIfPlain,
            [2**1000, 1],
            SEND,
            OUTGOING,
            None,
        )
