"""
Tests for classic copy classes on pbext's plain fast paths
(L{pbext._classiccopies}): a L{pb.Copyable} sent and a L{pb.RemoteCopy}
registered with C{pb.setUnjellyableForClass} received, where they keep
Twisted's methods.

The fast paths must give exactly what the full jellier and unjellier give
(and what stock Twisted sends and builds), refuse nothing the full
unjellier accepts without stepping aside to it, and let nothing through
that it refuses: the copy-state check is made for every object, against
the class as it is then.
"""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any, Callable

from twisted.spread import banana, jelly, pb
from twisted.trial.unittest import SkipTest, SynchronousTestCase

import pbext
from pbext import _jelly, codec
from pbext._accelerator import reason, speedups
from pbext._classiccopies import receiveSpec, sendSpec
from pbext.copystate import stateFields, uncheckedState
from pbext.security import defaultPolicy
from pbext.testing import connectedPair

OUTGOING = banana.Banana.outgoingVocabulary

#: What the overriding classes below saw.
SEEN: list[tuple[str, Any]] = []


class Sent(pb.Copyable):
    """
    A classic copyable keeping Twisted's methods.
    """

    def __init__(self, x: Any = 1, y: Any = 2, name: Any = "p") -> None:
        self.x = x
        self.y = y
        self.name = name


class Received(pb.RemoteCopy):
    """
    Its copy, keeping Twisted's C{setCopyableState}, with a method and a
    class-level flag a peer must not set.
    """

    isAdmin = False

    def greet(self) -> str:
        return "hello"


class ReceivedChild(Received):
    """
    A subclass of a registered class, registered for its own name, with
    a method of its own.
    """

    def extra(self) -> str:
        return "extra"


class OwnState(pb.Copyable):
    """
    A copyable with its own C{getStateToCopy}.
    """

    def __init__(self) -> None:
        self.x = 1
        self.secret = "s"

    def getStateToCopy(self) -> dict[str, Any]:
        SEEN.append(("getStateToCopy", self))
        return {"x": self.x}


class OwnSetter(pb.RemoteCopy):
    """
    The commonest classic pattern: its own C{setCopyableState} calling
    Twisted's.
    """

    isAdmin = False

    def setCopyableState(self, state: Any) -> None:
        SEEN.append(("setCopyableState", dict(state)))
        super().setCopyableState(state)


@stateFields("x", "y", "name", "isAdmin")
class Declared(pb.RemoteCopy):
    """
    Declares the fields it accepts, one with a class-level default.
    """

    isAdmin = False


@uncheckedState
class Unchecked(pb.RemoteCopy):
    """
    Opted out of the state check.
    """

    def greet(self) -> str:
        return "hello"


class Injector(pb.Copyable):
    """
    Sends any state under any type name, as a hostile stock peer can.
    """

    def __init__(self, typeName: bytes, state: Any) -> None:
        self.typeName = typeName
        self.state = state

    def getTypeToCopy(self) -> bytes:
        return self.typeName

    def getStateToCopy(self) -> Any:
        return self.state


SENT = b"tests.test_classiccopies.Sent"
OWN_STATE = b"tests.test_classiccopies.OwnState"
CHILD = b"classic.child"
OWN_SETTER = b"classic.ownSetter"
DECLARED = b"classic.declared"
UNCHECKED = b"classic.unchecked"

#: Injected states the default rule refuses for L{Received}.
INJECTED: list[dict[Any, Any]] = [
    {"__class__": "x"},
    {"__dict__": {}},
    {"greet": 1},
    {"isAdmin": True},
    {"setCopyableState": 1},
    {"unjellyFor": 1},
    {"x": 1, "not an identifier": 2},
    {b"greet": 1},
    {1: 2},
]


class FakeBroker:
    """
    What Twisted's copyable methods read of a broker.
    """

    serializingPerspective = None
    unserializingPerspective = None


def register(testCase: SynchronousTestCase) -> None:
    """
    Register the classes above in a copy of Twisted's global registry, for
    this test only.
    """
    registry = dict(jelly.unjellyableRegistry)
    registry.update(
        {
            SENT: Received,
            OWN_STATE: Received,
            CHILD: ReceivedChild,
            OWN_SETTER: OwnSetter,
            DECLARED: Declared,
            UNCHECKED: Unchecked,
        }
    )
    testCase.patch(jelly, "unjellyableRegistry", registry)
    del SEEN[:]
    testCase.addCleanup(SEEN.clear)


def addClassAttribute(
    testCase: SynchronousTestCase, cls: type, name: str, value: Any
) -> None:
    """
    Give C{cls} a new class attribute for this test only.
    """
    setattr(cls, name, value)
    testCase.addCleanup(delattr, cls, name)


def stockJelly(value: Any) -> Any:
    """
    Stock Twisted's jelly of C{value}, as a broker sends it.
    """
    return jelly.jelly(value, invoker=FakeBroker())


def fullUnjelly(sexp: Any) -> tuple[str, Any]:
    """
    What pbext's full unjellier makes of C{sexp}: C{("ok", value)} or
    C{("refused", exception type)}.
    """
    taster = defaultPolicy().forConnection(())
    try:
        return "ok", _jelly.Unjellier(taster, FakeBroker()).unjellyFull(sexp)
    except jelly.InsecureJelly as e:
        return "refused", type(e)


def stateExpression(state: dict[Any, Any]) -> list[Any]:
    """
    The jelly of a state dictionary, as a stock peer sends it.
    """
    return stockJelly(state)  # type: ignore[no-any-return]


def skipOnImmortalInterning() -> None:
    """
    Skip a test of interned keys on CPython 3.12, whose interned strs
    live as long as the process (so pbext does not intern a peer's keys
    there).
    """
    if sys.version_info[:2] == (3, 12):
        raise SkipTest("CPython 3.12's interned strs are immortal")


def receiveTable(*pairs: tuple[bytes, type]) -> dict[bytes, Any]:
    """
    Receive specs for C{pairs} of (tag, class), as a connection with the
    default policy learns them.
    """
    table = {}
    for tag, cls in pairs:
        spec = receiveSpec(cls, tag, True)
        assert spec is not None, cls
        table[tag] = spec
    return table


def heldBy(values: list[Any]) -> int:
    """
    The memory that emptying C{values} frees (as tracemalloc, which must
    be tracing, counts it): what its elements take.
    """
    before = tracemalloc.get_traced_memory()[0]
    del values[:]
    return before - tracemalloc.get_traced_memory()[0]


def same(a: Any, b: Any) -> bool:
    """
    Whether two unjellied values are equal, comparing copies by class and
    state.
    """
    if isinstance(a, pb.RemoteCopy):
        return type(a) is type(b) and same(vars(a), vars(b))
    if type(a) in (list, tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b))
        )
    if type(a) is dict:
        return (
            type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        )
    return type(a) is type(b) and bool(a == b)


class ClassicSpecTestsMixin:
    """
    C{jellyPlain} and C{unjellyPlain} with classic specs; run against the C
    accelerator and the pure-Python twins.
    """

    jellyPlain: Callable[..., Any]
    unjellyPlain: Callable[..., Any]

    def setUp(self) -> None:
        register(self)  # type: ignore[arg-type]

    def assertNotPlain(self, value: Any, *args: Any) -> None:
        self.assertIs(value, _jelly.NOT_PLAIN, *args)  # type: ignore[attr-defined]

    def test_specs(self) -> None:
        """
        Only classes that keep Twisted's methods have specs: not one with
        its own C{getStateToCopy} or C{setCopyableState}, nor a
        L{pb.RemoteCache}.
        """
        self.assertIsNotNone(sendSpec(Sent))
        self.assertIsNone(sendSpec(OwnState))
        self.assertIsNone(sendSpec(pb.Cacheable))
        self.assertIsNone(sendSpec(Received))
        self.assertIsNotNone(receiveSpec(Received, SENT, True))
        self.assertIsNone(receiveSpec(OwnSetter, OWN_SETTER, True))
        self.assertIsNone(receiveSpec(pb.RemoteCache, b"cache", True))
        self.assertIsNone(receiveSpec(Sent, SENT, True))

    def test_jellySameAsStock(self) -> None:
        """
        Values holding classic copyables (none twice) are jellied exactly
        as stock Twisted jellies them for a broker.
        """
        send = {Sent: sendSpec(Sent)}
        values = [
            Sent(),
            [Sent(i, -i, f"p{i}") for i in range(5)],
            {"a": Sent([1, (2, "x")], {"k": None}, True)},
            (Sent(Sent(1, 2, "inner"), 1.5, b"bytes"),),
        ]
        for value in values:
            plain = self.jellyPlain(value, send)
            self.assertEqual(repr(plain), repr(stockJelly(value)))  # type: ignore[attr-defined]

    def test_jellyStepsAside(self) -> None:
        """
        An object met twice, a state that is not plain, and a class whose
        method was overridden after its spec was made are left to the full
        jellier.
        """
        send = {Sent: sendSpec(Sent)}
        shared = Sent()
        self.assertNotPlain(self.jellyPlain([shared, shared], send))
        self.assertNotPlain(self.jellyPlain(Sent(object()), send))
        self.assertNotPlain(self.jellyPlain(Sent(), None))
        sharedState = Sent()
        self.assertNotPlain(self.jellyPlain([sharedState, vars(sharedState)], send))
        self.patch(Sent, "getStateToCopy", lambda self: {"x": 0})  # type: ignore[attr-defined]
        self.assertNotPlain(self.jellyPlain(Sent(), send))

    def test_unjellySameAsFull(self) -> None:
        """
        What stock Twisted sends, the plain path builds as the full
        unjellier does: an instance of the registered class (without
        C{__init__}) whose C{__dict__} is the state.
        """
        receive = receiveTable((SENT, Received), (CHILD, ReceivedChild))
        values = [
            Sent(),
            [Sent(i, -i, f"p{i}") for i in range(5)],
            {"a": Sent([1, (2, "x")], {"k": None}, True)},
            Sent(Sent(1, 2, "inner"), 1.5, b"bytes"),
            Injector(CHILD, {"x": 1, "y": [2]}),
            Injector(SENT, {}),
        ]
        for value in values:
            sexp = stockJelly(value)
            plain = self.unjellyPlain(sexp, receive)
            kind, full = fullUnjelly(sexp)
            self.assertEqual(kind, "ok")  # type: ignore[attr-defined]
            self.assertTrue(same(plain, full), (plain, full))  # type: ignore[attr-defined]
        built = self.unjellyPlain(stockJelly(Sent(7, 8, "n")), receive)
        self.assertEqual(type(built), Received)  # type: ignore[attr-defined]
        self.assertEqual(vars(built), {"x": 7, "y": 8, "name": "n"})  # type: ignore[attr-defined]
        self.assertEqual(built.greet(), "hello")  # type: ignore[attr-defined]

    def test_injectedRefused(self) -> None:
        """
        Every injected state steps aside to the full unjellier, which
        refuses it.
        """
        receive = receiveTable((SENT, Received), (CHILD, ReceivedChild))
        for state in INJECTED:
            for tag in (SENT, CHILD):
                sexp = [tag, stateExpression(state)]
                self.assertNotPlain(self.unjellyPlain(sexp, receive), sexp)
                self.assertEqual(fullUnjelly(sexp)[0], "refused", sexp)  # type: ignore[attr-defined]
        sexp = [CHILD, stateExpression({"extra": 1})]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        self.assertEqual(fullUnjelly(sexp)[0], "refused")  # type: ignore[attr-defined]
        # Bytes keys (a Python 2 peer's) are decoded by the full unjellier.
        sexp = [SENT, stateExpression({b"x": 1})]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        self.assertEqual(fullUnjelly(sexp)[0], "ok")  # type: ignore[attr-defined]
        for state in ([b"list"], [b"None"], [b"dictionary"]):
            self.assertNotPlain(self.unjellyPlain([SENT, state, 1], receive))
        self.assertNotPlain(self.unjellyPlain([SENT, [b"list"]], receive))

    def test_classAttributeAddedLater(self) -> None:
        """
        A key accepted for earlier objects is refused once the class has an
        attribute of that name: the check is made for every object against
        the class as it is.
        """
        receive = receiveTable((SENT, Received), (CHILD, ReceivedChild))
        sexp = stockJelly([Sent(1, 2, "n")])
        childExpression = [CHILD, stateExpression({"x": 1})]
        self.assertEqual(self.unjellyPlain(sexp, receive)[0].x, 1)  # type: ignore[attr-defined]
        self.assertEqual(self.unjellyPlain(childExpression, receive).x, 1)  # type: ignore[attr-defined]
        addClassAttribute(self, Received, "x", property(lambda self: 0))  # type: ignore[arg-type]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        self.assertEqual(fullUnjelly(sexp)[0], "refused")  # type: ignore[attr-defined]
        # A subclass sees its base's new attribute too.
        self.assertNotPlain(self.unjellyPlain(childExpression, receive))
        self.assertEqual(fullUnjelly(childExpression)[0], "refused")  # type: ignore[attr-defined]

    def test_methodOverriddenLater(self) -> None:
        """
        A class given its own C{setCopyableState} (or C{postUnjelly}) after
        its spec was made steps aside, so that its code runs.
        """
        receive = receiveTable((SENT, Received))
        sexp = stockJelly(Sent())

        def setCopyableState(self: Any, state: Any) -> None:
            SEEN.append(("patched", state))

        addClassAttribute(self, Received, "setCopyableState", setCopyableState)  # type: ignore[arg-type]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        self.assertEqual(fullUnjelly(sexp)[0], "ok")  # type: ignore[attr-defined]
        self.assertEqual(SEEN, [("patched", {"x": 1, "y": 2, "name": "p"})])  # type: ignore[attr-defined]

    def test_reregistered(self) -> None:
        """
        Once another class is registered for the name (or the registry is
        replaced), the spec made for the first steps aside.
        """
        receive = receiveTable((SENT, Received))
        sexp = stockJelly(Sent())
        jelly.unjellyableRegistry[SENT] = ReceivedChild
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        self.patch(jelly, "unjellyableRegistry", {})  # type: ignore[attr-defined]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))

    def test_declaredFields(self) -> None:
        """
        A class declaring its fields gets those; anything else, or a
        declared field with a class-level default, is left to the full
        unjellier (which accepts the latter).
        """
        receive = receiveTable((DECLARED, Declared))
        good = [DECLARED, stateExpression({"x": 1, "name": "n"})]
        self.assertEqual(vars(self.unjellyPlain(good, receive)), {"x": 1, "name": "n"})  # type: ignore[attr-defined]
        other = [DECLARED, stateExpression({"x": 1, "other": 2})]
        self.assertNotPlain(self.unjellyPlain(other, receive))
        self.assertEqual(fullUnjelly(other)[0], "refused")  # type: ignore[attr-defined]
        flag = [DECLARED, stateExpression({"isAdmin": True})]
        self.assertNotPlain(self.unjellyPlain(flag, receive))
        self.assertEqual(fullUnjelly(flag)[0], "ok")  # type: ignore[attr-defined]

    def test_unchecked(self) -> None:
        """
        A class that opted out of the check gets any dictionary of str
        keys, as the full unjellier gives it.
        """
        receive = receiveTable((UNCHECKED, Unchecked))
        sexp = [UNCHECKED, stateExpression({"greet": 1, "x y": 2})]
        plain = self.unjellyPlain(sexp, receive)
        self.assertTrue(same(plain, fullUnjelly(sexp)[1]))  # type: ignore[attr-defined]
        self.assertEqual(vars(plain), {"greet": 1, "x y": 2})  # type: ignore[attr-defined]

    def test_uncheckedBytesKeys(self) -> None:
        """
        Bytes keys (a Python 2 peer's) for a class that opted out of the
        check are left to the full unjellier, where Twisted's
        C{setCopyableState} decodes them.
        """
        receive = receiveTable((UNCHECKED, Unchecked))
        sexp = [UNCHECKED, [b"dictionary", [b"x", 1], [[b"unicode", b"y"], 2]]]
        self.assertNotPlain(self.unjellyPlain(sexp, receive))
        kind, full = fullUnjelly(sexp)
        self.assertEqual((kind, vars(full)), ("ok", {"x": 1, "y": 2}))  # type: ignore[attr-defined]


class ClassicSpecTests(ClassicSpecTestsMixin, SynchronousTestCase):
    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"
    else:
        jellyPlain = staticmethod(speedups.jellyPlain)
        unjellyPlain = staticmethod(speedups.unjellyPlain)


class PythonClassicSpecTests(ClassicSpecTestsMixin, SynchronousTestCase):
    jellyPlain = staticmethod(_jelly._jellyPlainPython)
    unjellyPlain = staticmethod(_jelly._unjellyPlainPython)


class FusedClassicTests(SynchronousTestCase):
    """
    The accelerator's fused encoder and decoder with classic specs: the
    bytes stock Twisted sends, and the objects the full unjellier builds.
    """

    if speedups is None:
        skip = f"the C accelerator is not available: {reason}"

    def setUp(self) -> None:
        register(self)

    def test_encodedAsStock(self) -> None:
        """
        A value holding classic copyables is encoded to the bytes of stock
        jelly's expression for it.
        """
        send = {Sent: sendSpec(Sent)}
        value = [Sent(i, {"k": [i]}, f"p{i}") for i in range(3)]
        self.assertTrue(speedups.isPlain(value, send))
        message = [b"answer", 1, speedups.Jellied(value, send)]
        expected = codec._encodePython([b"answer", 1, stockJelly(value)], OUTGOING)
        self.assertEqual(speedups.encode(message, OUTGOING), expected)
        encoded = speedups.encodeIfPlain(value, send, OUTGOING, None)
        self.assertEqual(speedups.encode([b"answer", 1, encoded], OUTGOING), expected)

    def test_decodedBuilt(self) -> None:
        """
        The decoder builds classic copies whose state passes the check
        while it parses, and leaves refused ones as expressions.
        """
        receive = receiveTable((SENT, Received))
        good = stockJelly([Sent(1, 2, "a"), Sent(3, 4, "b")])
        bad = stockJelly([Sent(1, 2, "a"), Injector(SENT, {"greet": 1})])
        data = codec._encodePython([b"answer", 1, good, bad], OUTGOING)
        decoder = codec.makeDecoder(
            vocabulary=banana.Banana.incomingVocabulary, accelerated=True
        )
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(receive)
        received: list[Any] = []
        decoder.feedTo(data, received.append)
        ((_, _, built, left),) = received
        self.assertIs(type(built), speedups.Jellied)
        self.assertTrue(same(built.value, fullUnjelly(good)[1]))
        self.assertIsNot(type(left), speedups.Jellied)
        self.assertEqual(fullUnjelly(left)[0], "refused")

    def test_classChangedBetweenChunks(self) -> None:
        """
        A class given an attribute while a message is still arriving is
        checked afresh for the copies after it: what the decoder
        remembers of a class holds only while the class is unchanged.
        """
        receive = receiveTable((SENT, Received))
        copies = stockJelly([Sent(i, i, f"p{i}") for i in range(3)])
        data = codec._encodePython([b"answer", 1, copies], OUTGOING)
        cut = data.index(b"p1")
        decoder = codec.makeDecoder(
            vocabulary=banana.Banana.incomingVocabulary, accelerated=True
        )
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(receive)
        received: list[Any] = []
        decoder.feedTo(data[:cut], received.append)
        addClassAttribute(self, Received, "name", "a class attribute")
        decoder.feedTo(data[cut:], received.append)
        ((_, _, left),) = received
        self.assertIsNot(type(left), speedups.Jellied)
        self.assertEqual(fullUnjelly(left)[0], "refused")

    def test_registryChangedBetweenMessages(self) -> None:
        """
        What the decoder found registered while reading one message is
        not trusted for the next, nor after more bytes of the same
        message: another class registered for the name, or the name
        unregistered, by code that runs when a message is delivered (here
        in the same bytes) or between two pieces of a message (cut
        anywhere), takes effect for the copies after it.
        """
        receive = receiveTable((SENT, Received))
        copies = stockJelly([Sent(i, i, f"p{i}") for i in range(3)])
        message = codec._encodePython([b"answer", 1, copies], OUTGOING)

        def decoder() -> Any:
            made = codec.makeDecoder(
                vocabulary=banana.Banana.incomingVocabulary, accelerated=True
            )
            made.setPlainJelly(True)
            made.setPlainTypes(receive)
            return made

        received: list[Any] = []

        def deliver(expression: Any) -> None:
            received.append(expression)
            jelly.unjellyableRegistry[SENT] = ReceivedChild

        decoder().feedTo(message + message, deliver)
        first, second = (element for (_, _, element) in received)
        self.assertIs(type(first), speedups.Jellied)
        self.assertEqual([type(o) for o in first.value], [Received] * 3)
        self.assertIsNot(type(second), speedups.Jellied)
        built = []
        for cut in range(1, len(message)):
            jelly.unjellyableRegistry[SENT] = Received
            cutDecoder = decoder()
            del received[:]
            cutDecoder.feedTo(message[:cut], received.append)
            del jelly.unjellyableRegistry[SENT]
            cutDecoder.feedTo(message[cut:], received.append)
            ((_, _, element),) = received
            if type(element) is speedups.Jellied:
                built.append(cut)
        self.assertEqual(built, [])

    def decodeAll(self, receive: dict[bytes, Any], data: bytes, cut: int) -> Any:
        """
        The elements of the message C{data} decodes to in plain-jelly mode,
        fed in two pieces cut at C{cut}, each as C{fullUnjelly} gives it
        (where the decoder built it, the value it built).
        """
        decoder = codec.makeDecoder(
            vocabulary=banana.Banana.incomingVocabulary, accelerated=True
        )
        decoder.setPlainJelly(True)
        decoder.setPlainTypes(receive)
        received: list[Any] = []
        decoder.feedTo(data[:cut], received.append)
        decoder.feedTo(data[cut:], received.append)
        ((_, _, *elements),) = received
        return [
            ("ok", e.value) if type(e) is speedups.Jellied else fullUnjelly(e)
            for e in elements
        ]

    def assertSameOutcomes(self, got: list[Any], expected: list[Any]) -> None:
        self.assertEqual([kind for kind, _ in got], [kind for kind, _ in expected])
        for (kind, a), (_, b) in zip(got, expected):
            if kind == "ok":
                self.assertTrue(same(a, b), (a, b))

    def test_quickReadAsFull(self) -> None:
        """
        Copies the decoder reads straight from the bytes are what the full
        unjellier builds from the same expressions (or refuses), wherever
        the message is cut: values of every kind it reads so, the same
        keys in another order, other keys, a key sent twice, empty state,
        and state it leaves to the general parser; for a class checking
        keys, declaring them, or not checking them.
        """
        receive = receiveTable(
            (SENT, Received), (DECLARED, Declared), (UNCHECKED, Unchecked)
        )
        states: list[Any] = [
            {"x": 1, "y": -2, "name": "p"},
            {"x": 2**40, "y": -(2**40), "name": "\u00e9t\u00e9"},
            {"x": 1.5, "y": b"bytes", "name": None},
            {"x": True, "y": False, "name": ""},
            {"name": "n", "x": 1, "y": 2},
            {"x": 1},
            {},
            {"x": [1, 2], "y": {"k": "v"}, "name": (1,)},
            {"x": 1, "isAdmin": True},
            {"x": 1, "greet": 2},
            {"x": 1, "y": 2, "name": "p"},
        ]
        elements = [
            stockJelly(Injector(tag, state))
            for tag in (SENT, DECLARED, UNCHECKED)
            for state in states
        ]
        elements.append(stockJelly([Sent(i, -i, f"p{i}") for i in range(5)]))
        # A key sent twice, which stock jelly never writes.
        twice = [
            SENT,
            [b"dictionary", [[b"unicode", b"x"], 1], [[b"unicode", b"x"], 2]],
        ]
        elements += [twice, twice]
        expected = [fullUnjelly(e) for e in elements]
        self.assertIn("refused", [kind for kind, _ in expected])
        data = codec._encodePython([b"answer", 1, *elements], OUTGOING)
        for cut in range(0, len(data), 5):
            self.assertSameOutcomes(self.decodeAll(receive, data, cut), expected)

    def test_quickReadChecksEachCopy(self) -> None:
        """
        A copy whose bytes around its values are those of an accepted copy
        before it, but for one key, is checked afresh (and refused); the
        copies after it are read again.
        """
        receive = receiveTable((SENT, Received))
        state = {"x": 1, "y": 2, "name": "n"}
        refused = {"x": 1, "y": 2, "greet": "n"}
        elements = [
            stockJelly([Injector(SENT, state)] * 2),
            stockJelly([Injector(SENT, refused)]),
            stockJelly([Injector(SENT, state)] * 2),
        ]
        data = codec._encodePython([b"answer", 1, *elements], OUTGOING)
        got = self.decodeAll(receive, data, len(data))
        self.assertEqual([kind for kind, _ in got], ["ok", "refused", "ok"])
        self.assertEqual([vars(o) for o in got[2][1]], [state, state])

    def test_quickReadKindsChanging(self) -> None:
        """
        Copies of the same keys in one message whose values change kind
        from one copy to the next (the bytes around them then differ, or
        a value is not of the kind the copy before held) are each what
        the full unjellier builds.
        """
        receive = receiveTable((SENT, Received))
        values: list[Any] = [1, "a", None, True, 1.5, b"b", False, "", -(2**40)]
        copies = [
            Injector(SENT, {"x": values[i % 9], "y": values[(i * 4) % 9], "name": "n"})
            for i in range(30)
        ]
        copies += [Injector(SENT, {"x": 1, "y": 2.5, "name": "n"})] * 2
        elements = [stockJelly(copies)]
        expected = [fullUnjelly(e) for e in elements]
        data = codec._encodePython([b"answer", 1, *elements], OUTGOING)
        got = self.decodeAll(receive, data, len(data))
        self.assertSameOutcomes(got, expected)
        self.assertEqual([vars(o) for o in got[0][1]], [dict(c.state) for c in copies])

    def test_quickReadKeysInterned(self) -> None:
        """
        The decoder sets a copy's keys interned, also those it does not
        keep interned itself (long or not ASCII): the key table its
        class's instances share then holds the very objects any attribute
        access names.
        """
        skipOnImmortalInterning()
        fresh = type("Fresh", (pb.RemoteCopy,), {})
        jelly.unjellyableRegistry[b"classic.fresh"] = fresh
        receive = receiveTable((b"classic.fresh", fresh))
        state = {"k" * 40: 1, "\u00e9t\u00e9": 2, "x": 3}
        data = codec._encodePython(
            [b"answer", 1, stockJelly([Injector(b"classic.fresh", state)] * 3)],
            OUTGOING,
        )
        ((kind, built),) = self.decodeAll(receive, data, len(data))
        self.assertEqual(kind, "ok")
        keys = list(vars(built[-1]))
        self.assertEqual(keys, list(state))
        self.assertEqual([k is sys.intern(k) for k in keys], [True] * 3)

    def test_encodedKeysKept(self) -> None:
        """
        Copies written with the bytes kept for the keys of the copy
        before are the bytes of stock jelly's expression: the same keys,
        the same keys in another order, other keys, keys that are not
        short ASCII texts, and more keys than are kept.
        """
        send = {Sent: sendSpec(Sent)}
        many = Sent()
        for i in range(40):
            setattr(many, f"k{i}", i)
        odd = Sent()
        odd.__dict__ = {"\u00e9": 1, "x": 2}
        reordered = Sent()
        reordered.__dict__ = {"name": "n", "x": 1, "y": 2}
        value = [Sent(i, -i, f"p{i}") for i in range(3)]
        value += [reordered, Sent(), odd, Sent(), many, many.__class__(), Sent()]
        value.insert(1, [Sent(Sent(1, 2, "inner"), 3, "outer")])
        expected = codec._encodePython([b"answer", 1, stockJelly(value)], OUTGOING)
        encoded = speedups.encodeIfPlain(value, send, OUTGOING, None)
        self.assertEqual(speedups.encode([b"answer", 1, encoded], OUTGOING), expected)


class OwnSetterTests(SynchronousTestCase):
    """
    A class with its own C{setCopyableState} (and Twisted's
    C{unjellyFor}) gets the state Twisted's C{unjellyFor} gives it for a
    broker, from pbext's full unjellier.
    """

    def setUp(self) -> None:
        register(self)

    def test_plainStateInOneStep(self) -> None:
        """
        A plain state is unjellied by the plain path, without a call of
        the unjellier for each of its nodes, into what the unjellier
        makes of it.
        """
        state = {"x": [1, (2, "three")], "y": {"k": None}, "name": "\u00e9"}
        sexp = [OWN_SETTER, stateExpression(state)]
        calls: list[Any] = []
        original = _jelly.Unjellier.unjelly

        def counting(unjellier: Any, obj: Any) -> Any:
            calls.append(obj)
            return original(unjellier, obj)

        self.patch(_jelly.Unjellier, "unjelly", counting)
        kind, built = fullUnjelly(sexp)
        self.assertEqual((kind, vars(built)), ("ok", state))
        self.assertEqual(SEEN, [("setCopyableState", state)])
        self.assertEqual(calls, [sexp])

    def test_referencesInState(self) -> None:
        """
        A state that refers to a value of the expression, or holds one the
        rest of the expression refers to, is unjellied by the unjellier,
        which records and resolves the reference.
        """
        shared = [1, 2]
        for value in (
            [shared, Injector(OWN_SETTER, {"x": shared})],
            [Injector(OWN_SETTER, {"x": shared}), shared],
        ):
            kind, built = fullUnjelly(stockJelly(value))
            self.assertEqual(kind, "ok")
            copy, other = built if type(built[0]) is OwnSetter else built[::-1]
            self.assertEqual(vars(copy), {"x": [1, 2]})
            self.assertIs(copy.x, other)


class Root(pb.Root):
    """
    Gives and keeps copies.
    """

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def remote_objects(self, count: int) -> list[Sent]:
        return [Sent(i, -i, f"p{i}") for i in range(count)]

    def remote_give(self, typeName: bytes, state: Any) -> Any:
        return Injector(typeName, state)

    def remote_many(self, typeName: bytes, count: int) -> list[Any]:
        return [
            Injector(typeName, {"x": i, "y": -i, "name": f"p{i}"}) for i in range(count)
        ]

    def remote_keep(self, *values: Any) -> int:
        self.kept.extend(values)
        return len(values)


FACTORIES = {
    "pbext": (pbext.PBServerFactory, pbext.PBClientFactory),
    "stock": (pb.PBServerFactory, pb.PBClientFactory),
}


class BrokerTests(SynchronousTestCase):
    """
    Classic copies between pbext and stock brokers, before and after pbext
    learnt their classes: the same state delivered, the same refusals.
    """

    def setUp(self) -> None:
        register(self)

    def connect(self, server: str, client: str) -> Any:
        root = Root()
        connection = connectedPair(FACTORIES[server][0](root), FACTORIES[client][1]())
        self.addCleanup(connection.disconnect)
        return connection, root

    def call(self, connection: Any, *args: Any) -> Any:
        d = connection.rootObject().callRemote(*args)
        connection.pump()
        return d

    def test_sameStateEveryWay(self) -> None:
        """
        Every pairing of pbext and stock brokers delivers the same copies,
        in both directions, on the first call and once pbext has learnt
        the classes.
        """
        expected = [Sent(i, -i, f"p{i}") for i in range(20)]
        for server, client in [
            ("pbext", "pbext"),
            ("stock", "pbext"),
            ("pbext", "stock"),
        ]:
            connection, root = self.connect(server, client)
            for _ in range(3):
                got = connection.resultOf(self.call(connection, "objects", 20))
                self.assertEqual([type(o) for o in got], [Received] * 20)
                self.assertEqual([vars(o) for o in got], [vars(o) for o in expected])
                d = self.call(connection, "keep", *expected)
                self.assertEqual(connection.resultOf(d), 20)
            self.assertEqual(
                [vars(o) for o in root.kept], [vars(o) for o in expected] * 3
            )
            self.assertEqual({type(o) for o in root.kept}, {Received})

    def test_learnt(self) -> None:
        """
        Once a copy went through the full paths, a pbext broker's plain
        tables hold the class, each way.
        """
        connection, root = self.connect("pbext", "pbext")
        connection.resultOf(self.call(connection, "objects", 2))
        server = connection.serverBroker._pbextSerialization.plainTypes
        client = connection.clientBroker._pbextSerialization.plainTypes
        for types in (server, client):
            self.assertTrue(types.stale)
            types.refresh()
        self.assertIn(Sent, server.send)
        self.assertIn(SENT, client.receive)

    def test_injectedAfterLearning(self) -> None:
        """
        Injected state from a stock peer is refused after the class was
        learnt just as before, and never reaches the application.
        """
        for client in ("pbext", "stock"):
            connection, root = self.connect("pbext", client)
            for _attempt in range(2):
                d = self.call(connection, "keep", Sent())
                self.assertEqual(connection.resultOf(d), 1)
                for state in INJECTED:
                    d = self.call(connection, "keep", Injector(SENT, state))
                    failure = connection.failureOf(d)
                    self.assertIn("refused state", str(failure.value), (state, failure))
            self.assertEqual([vars(o) for o in root.kept], [vars(Sent())] * 2)
            self.flushLoggedErrors()

    def test_registeredAgain(self) -> None:
        """
        A name registered again for another class builds that class from
        then on, and the connection learns it in place of the first.
        """
        connection, root = self.connect("pbext", "pbext")
        for _ in range(2):
            got = connection.resultOf(self.call(connection, "objects", 2))
            self.assertEqual([type(o) for o in got], [Received] * 2)
        jelly.unjellyableRegistry[SENT] = ReceivedChild
        for _ in range(2):
            got = connection.resultOf(self.call(connection, "objects", 2))
            self.assertEqual([type(o) for o in got], [ReceivedChild] * 2)
            self.assertEqual(vars(got[1]), {"x": 1, "y": -1, "name": "p1"})
        client = connection.clientBroker._pbextSerialization.plainTypes
        if client.stale:
            client.refresh()
        self.assertIs(client.receive[SENT][0], ReceivedChild)

    def test_classAttributeAfterFirstObject(self) -> None:
        """
        A class attribute added after the first copies were received
        shadows that key from then on: the next copy setting it is
        refused.
        """
        connection, root = self.connect("stock", "pbext")
        got = connection.resultOf(self.call(connection, "objects", 3))
        self.assertEqual(got[2].name, "p2")
        addClassAttribute(self, Received, "name", "a class attribute")
        failure = connection.failureOf(self.call(connection, "objects", 3))
        self.assertIn("name", str(failure.value))
        self.flushLoggedErrors()

    def test_overridesHonoured(self) -> None:
        """
        A class with its own C{setCopyableState} gets every copy through
        it, and a copyable with its own C{getStateToCopy} sends what that
        gives, every time.
        """
        connection, root = self.connect("pbext", "pbext")
        for _ in range(3):
            d = self.call(connection, "give", OWN_SETTER, {"x": 1})
            self.assertEqual(vars(connection.resultOf(d)), {"x": 1})
            d = self.call(connection, "keep", OwnState())
            self.assertEqual(connection.resultOf(d), 1)
        self.assertEqual(
            [s for s in SEEN if s[0] == "setCopyableState"],
            [("setCopyableState", {"x": 1})] * 3,
        )
        self.assertEqual(len([s for s in SEEN if s[0] == "getStateToCopy"]), 3)
        self.assertEqual([vars(o) for o in root.kept], [{"x": 1}] * 3)
        d = self.call(connection, "give", OWN_SETTER, {"isAdmin": True})
        self.assertIn("refused state", str(connection.failureOf(d).value))
        self.flushLoggedErrors()

    def test_copiesShareKeys(self) -> None:
        """
        Copies get their attributes as CPython gives any instance its own,
        in the key table their class's instances share, from the first
        copies a connection receives (built by the full unjellier) on: a
        copy takes no more memory than an instance given the same
        attributes by its C{__init__}.
        """
        fresh = type("Fresh", (pb.RemoteCopy,), {})
        jelly.unjellyableRegistry[b"classic.fresh"] = fresh
        connection, root = self.connect("pbext", "pbext")
        for _ in range(2):
            got = connection.resultOf(
                self.call(connection, "many", b"classic.fresh", 200)
            )
            self.assertEqual(vars(got[-1]), {"x": 199, "y": -199, "name": "p199"})
        tracemalloc.start()
        try:
            got = connection.resultOf(
                self.call(connection, "many", b"classic.fresh", 200)
            )
            built = [Sent(i, -i, f"p{i}") for i in range(200)]
            self.assertEqual([type(o) for o in got], [fresh] * 200)
            # Attributes read one by one: vars() would give each a dict.
            self.assertEqual(
                [(o.x, o.y, o.name) for o in got], [(o.x, o.y, o.name) for o in built]
            )
            copies, reference = heldBy(got), heldBy(built)
        finally:
            tracemalloc.stop()
        self.assertLess(copies, reference * 1.2, (copies, reference))

    def test_copiesKeysInterned(self) -> None:
        """
        Copies are given their keys interned, as C{setattr} interns a
        name, from the first copies a connection receives (built by the
        full unjellier) on: the key table their class's instances share
        holds the very objects any attribute access names, and finds
        every later copy's keys by identity.
        """
        skipOnImmortalInterning()
        fresh = type("Fresh", (pb.RemoteCopy,), {})
        jelly.unjellyableRegistry[b"classic.fresh"] = fresh
        connection, root = self.connect("pbext", "pbext")
        for _ in range(3):
            got = connection.resultOf(
                self.call(connection, "many", b"classic.fresh", 5)
            )
            keys = list(vars(got[-1]))
            self.assertEqual(keys, ["x", "y", "name"])
            self.assertEqual([k is sys.intern(k) for k in keys], [True] * 3)

    def test_boundedLearning(self) -> None:
        """
        A connection learns at most C{maxClassic} classes each way.
        """
        taster = defaultPolicy().forConnection(())
        self.patch(_jelly.PlainTypes, "maxClassic", 2)
        types = _jelly.PlainTypes((), taster)
        classes = [type(f"C{i}", (Sent,), {}) for i in range(4)]
        for cls in classes:
            jelly.unjellyableRegistry[cls.__name__.encode()] = Received
            types.learnSend(cls)
            types.learnReceive(cls.__name__.encode(), Received)
        types.refresh()
        self.assertEqual(set(types.send or ()), set(classes[:2]))
        self.assertEqual(set(types.receive or ()), {b"C0", b"C1"})
