"""
Tests for L{pbext.copystate}: the state a peer may give a classic copy
class, errors of the application's own code while a copy is built, and
values that cannot be sent.

The unjellier is driven directly where the exact expression matters; the
rest runs a stock or pbext client against a pbext server in memory
(L{pbext.testing}).  tests.test_hostile_copystate sends the same state
from a stock client over real sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.spread import jelly, pb
from twisted.trial.unittest import SynchronousTestCase

import pbext
from pbext import _jelly
from pbext.broker import PolicyViolation
from pbext.copystate import (
    UNCHECKED,
    CopyHookError,
    HookErrorLog,
    keyProblem,
    ruleOf,
    stateFields,
    stateProblem,
    uncheckedState,
)
from pbext.security import (
    SecurityPolicy,
    UnsendableError,
    classicPolicy,
    defaultPolicy,
    loadPolicy,
    strictPolicy,
)
from pbext.testing import connectedPair

#: What the application hooks below saw: (hook, what it was given).
SEEN: list[tuple[str, Any]] = []


class Plain(pb.Copyable, pb.RemoteCopy):
    """
    A classic copy class (sent and received, as Twisted's documentation
    shows) with Twisted's own C{setCopyableState}, a method and a
    class-level flag.
    """

    isAdmin = False

    def greet(self) -> str:
        return "hello"


class WithSetter(pb.Copyable, pb.RemoteCopy):
    """
    The commonest classic pattern: its own C{setCopyableState}, calling
    Twisted's.
    """

    isAdmin = False

    def setCopyableState(self, state: Any) -> None:
        SEEN.append(("setCopyableState", state))
        super().setCopyableState(state)

    def greet(self) -> str:
        return "hello"


class WithUnjellyFor(pb.Copyable, pb.RemoteCopy):
    """
    A classic copy class that reads its expression itself.
    """

    isAdmin = False

    def unjellyFor(self, unjellier: Any, jellyList: list[Any]) -> Any:
        SEEN.append(("unjellyFor", jellyList))
        state = unjellier.unjelly(jellyList[1])
        self.__dict__.update(state)
        return self

    def greet(self) -> str:
        return "hello"


class WithSetStateFor(jelly.Jellyable, jelly.Unjellyable):
    """
    A classic L{jelly.Unjellyable} with its own C{setStateFor}.
    """

    isAdmin = False

    def setStateFor(self, unjellier: Any, state: Any) -> None:
        SEEN.append(("setStateFor", state))
        self.__dict__ = state


class PlainUnjellyable(jelly.Jellyable, jelly.Unjellyable):
    """
    A classic L{jelly.Unjellyable} with Twisted's own C{setStateFor}.
    """

    isAdmin = False


@stateFields("name", "isAdmin")
class Declared(WithSetter):
    """
    A class that declares the fields it accepts, one with a class-level
    default.
    """


class DeclaredChild(Declared):
    """
    Inherits L{Declared}'s declaration.
    """


@uncheckedState
class Unchecked(WithSetter):
    """
    A class that opted out: it checks its state itself.
    """


class Cache(pb.RemoteCache):
    """
    A classic remote cache with its own C{setCopyableState}.
    """

    def setCopyableState(self, state: Any) -> None:
        SEEN.append(("setCopyableState", state))
        super().setCopyableState(state)

    def observe_change(self, value: Any) -> None:
        self.value = value


class NewStyle(pb.Copyable, pb.RemoteCopy):
    """
    Twisted's own C{NewStyleCopy2} pattern (tests.test_twisted_pb skips
    that test): a class-level default the sender's state overrides.
    """

    value = 1


@stateFields("value")
class DeclaredNewStyle(NewStyle):
    """
    The same, declaring its field.
    """


class Buggy(pb.RemoteCopy):
    """
    A copy class whose C{setCopyableState} has a bug.
    """

    def setCopyableState(self, state: Any) -> None:
        self.missing.attribute = state  # type: ignore[attr-defined]


class BuggyUnjellyFor(pb.RemoteCopy):
    """
    A copy class whose C{unjellyFor} has a bug.
    """

    def unjellyFor(self, unjellier: Any, jellyList: list[Any]) -> Any:
        state = unjellier.unjelly(jellyList[1])
        return len(state["count"])  # type: ignore[arg-type]


class Refusing(pb.RemoteCopy):
    """
    A copy class that refuses state on purpose.
    """

    def setCopyableState(self, state: Any) -> None:
        raise jelly.InsecureJelly("no thanks")


class BuggyPostUnjelly(pb.RemoteCopy):
    """
    A copy class whose C{postUnjelly} has a bug.
    """

    def postUnjelly(self) -> None:
        raise KeyError("oops")


class BuggyNew(pb.RemoteCopy):
    """
    A copy class whose C{__new__} has a bug.
    """

    def __new__(cls, *args: Any) -> Any:
        raise TypeError("no instances today")


class BuggySetState:
    """
    An C{allowInstancesOf} class whose C{__setstate__} has a bug.
    """

    def __setstate__(self, state: Any) -> None:
        raise ValueError("bad __setstate__")


class ReceiveOnly(pb.RemoteCopy):
    """
    A class registered only for receiving: it cannot be sent.
    """


class Injector(pb.Copyable):
    """
    What a stock peer can send: any type name with any state.
    """

    def __init__(self, typeName: str, state: Any) -> None:
        self.typeName = typeName
        self.state = state

    def getTypeToCopy(self) -> bytes:
        return self.typeName.encode("utf-8")

    def getStateToCopy(self) -> Any:
        return self.state


class InjectingCache(pb.Cacheable):
    """
    A cacheable a stock peer sends with any type name and state.
    """

    def __init__(self, typeName: str, state: Any) -> None:
        self.typeName = typeName
        self.state = state

    def getTypeToCopy(self) -> bytes:
        return self.typeName.encode("utf-8")

    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        return self.state


def createFromFactory(state: Any) -> Any:
    """
    A copy factory that uses its state wholesale.
    """
    SEEN.append(("factory", state))
    made = Plain()
    made.__dict__.update(state)
    return made


def buggyFactory(state: Any) -> Any:
    """
    A copy factory with a bug.
    """
    return state.nonexistent


#: Wire names: class.
CLASSES: dict[str, Any] = {
    "copystate.Plain": Plain,
    "copystate.WithSetter": WithSetter,
    "copystate.WithUnjellyFor": WithUnjellyFor,
    "copystate.WithSetStateFor": WithSetStateFor,
    "copystate.PlainUnjellyable": PlainUnjellyable,
    "copystate.Declared": Declared,
    "copystate.DeclaredChild": DeclaredChild,
    "copystate.Unchecked": Unchecked,
    "copystate.Cache": Cache,
    "copystate.Buggy": Buggy,
    "copystate.BuggyUnjellyFor": BuggyUnjellyFor,
    "copystate.Refusing": Refusing,
    "copystate.BuggyPostUnjelly": BuggyPostUnjelly,
    "copystate.BuggyNew": BuggyNew,
    "copystate.ReceiveOnly": ReceiveOnly,
    "copystate.NewStyle": NewStyle,
    "copystate.DeclaredNewStyle": DeclaredNewStyle,
}

#: Wire names: factory.
FACTORIES: dict[str, Any] = {
    "copystate.factory": createFromFactory,
    "copystate.buggyFactory": buggyFactory,
}

#: The state a hostile peer sends to poison a copy of any of the classes
#: above (str keys, as a stock peer's copyable sends them): special names,
#: methods every one of them has, a class-level flag.
INJECTED: list[dict[str, Any]] = [
    {"__class__": "x"},
    {"__dict__": {}},
    {"__init__": 1},
    {"getStateFor": 1},
    {"jellyFor": 1},
    {"unjellyFor": 1},
    {"setStateFor": 1},
    {"name": "ok", "isAdmin": True},
]

#: More of it, for the classes that are L{pb.Copyable} and L{pb.RemoteCopy}
#: (their methods) and have a C{greet} method.
COPY_INJECTED: list[dict[str, Any]] = [
    {"getStateToCopy": 1},
    {"setCopyableState": 1},
    {"greet": 1},
]


def injectedFor(cls: type) -> list[dict[str, Any]]:
    """
    The injected states that must be refused for C{cls}.
    """
    if issubclass(cls, pb.RemoteCopy):
        return INJECTED + COPY_INJECTED
    return INJECTED


def registerClassic(testCase: SynchronousTestCase) -> None:
    """
    Register the classes and factories above in Twisted's global
    registries for this test only.
    """
    registry = dict(jelly.unjellyableRegistry)
    factories = dict(jelly.unjellyableFactoryRegistry)
    for name, cls in CLASSES.items():
        registry[name.encode("utf-8")] = cls
    for name, factory in FACTORIES.items():
        factories[name.encode("utf-8")] = factory
    testCase.patch(jelly, "unjellyableRegistry", registry)
    testCase.patch(jelly, "unjellyableFactoryRegistry", factories)
    del SEEN[:]
    testCase.addCleanup(SEEN.clear)


class Root(pb.Root):
    """
    Keeps what it is given; gives what it is asked for.
    """

    def __init__(self) -> None:
        self.kept: list[Any] = []

    def remote_keep(self, *values: Any) -> int:
        self.kept.extend(values)
        return len(values)

    def remote_give(self, typeName: str, state: Any) -> Any:
        return Injector(typeName, state)

    def remote_receiveOnly(self) -> Any:
        return ReceiveOnly()

    def remote_receiveOnlyLater(self) -> Any:
        return defer.succeed(ReceiveOnly())

    def remote_nested(self) -> Any:
        return [1, {"deep": (object(),)}]


class Recorder:
    """
    Records pbext's structured log events.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        if "pbextEvent" in event:
            self.events.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["pbextEvent"] == name]


def unjellyOne(sexp: Any, policy: SecurityPolicy | None = None) -> Any:
    """
    Unjelly C{sexp} as a connection with C{policy} would.
    """
    taster = (policy or defaultPolicy()).forConnection(())
    return _jelly.unjelly(sexp, taster, FakeBroker())


def stateOf(*pairs: Any) -> list[Any]:
    """
    A jellied state dictionary with str keys.
    """
    return [
        b"dictionary",
        *([[b"unicode", key.encode("utf-8")], value] for key, value in pairs),
    ]


class DeclarationTests(SynchronousTestCase):
    """
    Tests for L{stateFields} and L{uncheckedState}.
    """

    def test_rules(self) -> None:
        """
        L{ruleOf} gives the declared fields, L{UNCHECKED}, or L{None};
        subclasses inherit a declaration; functions can be declared too.
        """
        self.assertEqual(ruleOf(Declared), frozenset({"name", "isAdmin"}))
        self.assertEqual(ruleOf(DeclaredChild), frozenset({"name", "isAdmin"}))
        self.assertIs(ruleOf(Unchecked), UNCHECKED)
        self.assertIsNone(ruleOf(WithSetter))
        self.assertIsNone(ruleOf(createFromFactory))

        @stateFields("a")
        def factory(state: Any) -> Any:
            return state

        self.assertEqual(ruleOf(factory), frozenset({"a"}))
        self.assertIs(ruleOf(uncheckedState(lambda state: state)), UNCHECKED)

    def test_badNames(self) -> None:
        """
        Field names must be identifiers, not dunder names, and not the
        name of a method or property of the class.
        """
        self.assertEqual(
            str(self.assertRaises(TypeError, stateFields, b"x")),
            "field name b'x' is a bytes; give each field name as a str",
        )
        self.assertEqual(
            str(self.assertRaises(ValueError, stateFields, "not-a-name")),
            "field name 'not-a-name' is not a Python identifier; give the "
            "attribute name as it is spelt in the class",
        )
        self.assertEqual(
            str(self.assertRaises(ValueError, stateFields, "__class__")),
            "field name '__class__' is a special (dunder) name, which a peer "
            "must never set; leave it out of the fields",
        )
        with self.assertRaises(ValueError) as raised:
            stateFields("greet")(type("Copy", (Plain,), {}))
        self.assertIn("method", str(raised.exception))
        self.assertIn("greet", str(raised.exception))
        self.assertTrue(
            str(raised.exception).endswith(
                "; leave it out of the fields, or rename the attribute"
            ),
            str(raised.exception),
        )
        withProperty = type("Copy", (pb.RemoteCopy,), {"p": property(lambda s: 1)})
        self.assertRaises(ValueError, stateFields("p"), withProperty)
        # A subclass that adds a method named like a declared field does
        # not let a peer hide it.
        later = type("Later", (Declared,), {"name": lambda self: "method"})
        problem = keyProblem("name", later, ruleOf(later))
        self.assertIn("would hide the method", problem or "")
        self.assertIsNone(keyProblem("isAdmin", later, ruleOf(later)))
        # A class-level value may be declared: that is what lets a peer
        # set it.
        self.assertIs(stateFields("isAdmin")(Plain), Plain)
        self.addCleanup(delattr, Plain, "_pbextStateRule")

    def test_uncheckedKeys(self) -> None:
        """
        Under L{UNCHECKED}, L{keyProblem} finds no problem with any key, as
        L{stateProblem} finds none with any state: each takes every rule
        L{ruleOf} gives.
        """
        for key in ("name", "__class__", b"\xff", 3):
            self.assertIsNone(keyProblem(key, Unchecked, UNCHECKED))
        self.assertIsNone(stateProblem({"__class__": 1}, Unchecked, UNCHECKED))


class ClassicStateTests(SynchronousTestCase):
    """
    The state received for classic copy classes is checked before any of
    their code sees it, whatever they override.
    """

    def setUp(self) -> None:
        registerClassic(self)

    def assertRefused(
        self, name: str, sexp: Any, policy: SecurityPolicy | None = None
    ) -> jelly.InsecureJelly:
        with self.assertRaises(jelly.InsecureJelly, msg=repr(sexp)) as raised:
            unjellyOne(sexp, policy)
        self.assertIn(name, str(raised.exception))
        return raised.exception

    def test_injectedKeysRefused(self) -> None:
        """
        Dunder keys, keys naming a method or a class attribute, and
        non-dictionary state are refused for every kind of classic class,
        and none of their code runs.
        """
        states = [
            stateOf(("name", "ok"), ("isAdmin", [b"boolean", b"true"])),
            [b"dictionary", [b"__class__", 1]],
            [b"dictionary", [b"setStateFor", 1]],
            [b"dictionary", [1, 1]],
            [b"dictionary", [[b"tuple"], 1]],
            [b"dictionary", [b"\xff", 1]],
            [b"reference", 1, stateOf(("__class__", 1))],
            [b"list", 1],
            [b"unicode", b"text"],
            5,
        ]
        for name in (
            "Plain",
            "WithSetter",
            "WithUnjellyFor",
            "WithSetStateFor",
            "PlainUnjellyable",
        ):
            injected = [
                stateOf(*((key, [b"None"]) for key in state))
                for state in injectedFor(CLASSES[f"copystate.{name}"])
            ]
            for state in states + injected:
                message = self.assertRefused(
                    name, [f"copystate.{name}".encode(), state]
                )
                self.assertNotIsInstance(message, _jelly.MalformedJelly)
        self.assertEqual(SEEN, [])

    def test_goodState(self) -> None:
        """
        State of ordinary attribute names reaches each class's own code.
        """
        sexp = stateOf(("name", [b"unicode", b"n"]), ("count", 2))
        for name in ("WithSetter", "WithUnjellyFor", "WithSetStateFor"):
            del SEEN[:]
            made = unjellyOne([f"copystate.{name}".encode(), sexp])
            self.assertEqual((made.name, made.count), ("n", 2))
            self.assertEqual(len(SEEN), 1)
        made = unjellyOne([b"copystate.Plain", sexp])
        self.assertEqual(vars(made), {"name": "n", "count": 2})
        self.assertFalse(made.isAdmin)

    def test_declaredFields(self) -> None:
        """
        A class declared with L{stateFields} accepts exactly its fields,
        class-level defaults included; its subclasses too.
        """
        for name in (b"copystate.Declared", b"copystate.DeclaredChild"):
            made = unjellyOne(
                [name, stateOf(("isAdmin", [b"boolean", b"true"]), ("name", 5))]
            )
            self.assertEqual((made.isAdmin, made.name), (True, 5))
            for state in injectedFor(Declared):
                if set(state) - {"name", "isAdmin"}:
                    self.assertRefused("Declared", [name, stateOf(*state.items())])
            self.assertRefused("declared field", [name, stateOf(("other", 1))])

    def test_unchecked(self) -> None:
        """
        A class declared with L{uncheckedState} gets whatever was sent.
        """
        made = unjellyOne([b"copystate.Unchecked", stateOf(("greet", 1))])
        self.assertEqual(made.greet, 1)
        self.assertEqual(SEEN, [("setCopyableState", {"greet": 1})])

    def test_classicPolicy(self) -> None:
        """
        The classic policy (or C{checkCopyState} off) checks nothing, as
        stock PB.
        """
        for policy in (classicPolicy(), SecurityPolicy(checkCopyState=False)):
            made = unjellyOne(
                [b"copystate.WithSetter", stateOf(("isAdmin", [b"boolean", b"true"]))],
                policy,
            )
            self.assertIs(made.isAdmin, True)

    def test_strictPolicy(self) -> None:
        """
        The strict policy ignores Twisted's global registry altogether.
        """
        self.assertRaises(
            jelly.InsecureJelly,
            unjellyOne,
            [b"copystate.WithSetter", stateOf(("a", 1))],
            strictPolicy(),
        )

    def test_shape(self) -> None:
        """
        A copy is C{[name, state]}: more or fewer elements are refused
        before the class's own C{unjellyFor} runs, unless it opted out.
        """
        self.assertRefused(
            "uncheckedState", [b"copystate.WithUnjellyFor", stateOf(), 1]
        )
        self.assertRefused("WithUnjellyFor", [b"copystate.WithUnjellyFor"])
        self.assertEqual(SEEN, [])

    def test_cache(self) -> None:
        """
        A classic remote cache (C{[name, cacheID, state]}) has its state
        checked: C{broker} and C{luid} are class attributes of
        L{pb.RemoteCache}.
        """

        class Broker(FakeBroker):
            pass

        for key in ("broker", "luid", "observe_change", "__dict__"):
            with self.assertRaises(jelly.InsecureJelly):
                _jelly.unjelly(
                    [b"copystate.Cache", 1, stateOf((key, 1))],
                    defaultPolicy().forConnection(()),
                    Broker(),
                )
        self.assertRaises(
            _jelly.MalformedJelly,
            _jelly.unjelly,
            [b"copystate.Cache", [b"list"], stateOf(("a", 1))],
            defaultPolicy().forConnection(()),
            Broker(),
        )
        self.assertEqual(SEEN, [])
        made = _jelly.unjelly(
            [b"copystate.Cache", 1, stateOf(("value", 1))],
            defaultPolicy().forConnection(()),
            Broker(),
        )
        self.assertEqual(made.value, 1)

    def test_neverPlain(self) -> None:
        """
        The plain fast paths (the C accelerator's, where it is built, and
        the pure-Python twin) never build a classic copy, even when its
        state is plain: the unjellier that checks it always does.
        """
        sexp = [b"copystate.WithSetter", stateOf(("greet", 1))]
        for unjellyPlain in (_jelly._unjellyPlainPython, _jelly.unjellyPlain):
            self.assertIs(unjellyPlain(sexp), _jelly.NOT_PLAIN)
            self.assertIs(unjellyPlain([b"list", sexp]), _jelly.NOT_PLAIN)

    def test_sharedState(self) -> None:
        """
        State sent as a reference to a dictionary already received is
        checked as that dictionary; a forward reference is refused.
        """
        good = stateOf(("a", 1))
        bad = stateOf(("greet", 1))
        for state, ok in ((good, True), (bad, False)):
            sexp = [
                b"list",
                [b"reference", 1, state],
                [b"copystate.WithSetter", [b"dereference", 1]],
            ]
            if ok:
                self.assertEqual(unjellyOne(sexp)[1].a, 1)
            else:
                self.assertRefused("WithSetter", sexp)
        forward = [
            b"list",
            [b"copystate.WithSetter", [b"dereference", 1]],
            [b"reference", 1, good],
        ]
        self.assertRefused("not yet complete", forward)

    def test_prebuiltState(self) -> None:
        """
        State the accelerated decoder already built (C{[PREBUILT, value]})
        is checked as a value.
        """
        self.assertRefused(
            "WithSetter", [b"copystate.WithSetter", [_jelly.PREBUILT, {"greet": 1}]]
        )
        made = unjellyOne([b"copystate.WithSetter", [_jelly.PREBUILT, {"a": 1}]])
        self.assertEqual(made.a, 1)

    def test_factories(self) -> None:
        """
        The state given to a copy factory is checked as for a class:
        identifiers, no dunder names.
        """
        self.assertRefused(
            "createFromFactory", [b"copystate.factory", stateOf(("__class__", 1))]
        )
        self.assertRefused("createFromFactory", [b"copystate.factory", [b"list", 1]])
        self.assertEqual(SEEN, [])
        made = unjellyOne([b"copystate.factory", stateOf(("a", 1))])
        self.assertEqual(made.a, 1)

    def test_allowedInstances(self) -> None:
        """
        Classes a policy allows with C{allowInstancesOf} have their state
        checked too: no key may hide a class attribute.
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(Plain)
        sexp = [b"tests.test_copystate.Plain", stateOf(("isAdmin", 1))]
        self.assertRefused("Plain", sexp, policy)
        sexp = [b"tests.test_copystate.Plain", stateOf(("a", 1))]
        self.assertEqual(unjellyOne(sexp, policy).a, 1)


class FakeBroker:
    """
    The parts of a broker a classic cache uses.
    """

    unserializingPerspective = None
    serializingPerspective = None

    def __init__(self) -> None:
        self.cached: dict[Any, Any] = {}

    def cacheLocally(self, cid: Any, instance: Any) -> None:
        self.cached[cid] = instance

    def decCacheRef(self, luid: Any) -> None:
        pass


class HookErrorUnjellyTests(SynchronousTestCase):
    """
    Errors of the application's own code while a copy is built are
    L{CopyHookError}s; malformed input is still L{_jelly.MalformedJelly}.
    """

    def setUp(self) -> None:
        registerClassic(self)

    def hookError(self, sexp: Any, policy: SecurityPolicy | None = None) -> Any:
        with self.assertRaises(CopyHookError) as raised:
            unjellyOne(sexp, policy)
        return raised.exception

    def test_setCopyableState(self) -> None:
        """
        An C{AttributeError} in C{setCopyableState} is a L{CopyHookError}
        naming the class, the method and the exception type, with the
        original failure (and traceback) attached; under the classic
        policy too.
        """
        for policy in (defaultPolicy(), classicPolicy()):
            error = self.hookError([b"copystate.Buggy", stateOf(("a", 1))], policy)
            self.assertEqual(error.className, "tests.test_copystate.Buggy")
            self.assertEqual(error.hook, "setCopyableState")
            self.assertEqual(error.errorType, "builtins.AttributeError")
            self.assertTrue(error.failure.check(AttributeError))
            self.assertIn("setCopyableState", error.failure.getTraceback())
            self.assertIn("tests.test_copystate.Buggy", str(error))
            self.assertIsInstance(error, pb.Error)
            self.assertNotIsInstance(error, jelly.InsecureJelly)

    def test_otherHooks(self) -> None:
        """
        C{unjellyFor}, C{postUnjelly}, C{__new__}, C{__setstate__} and copy
        factories are application code too.
        """
        policy = defaultPolicy()
        policy.allowInstancesOf(BuggySetState)
        cases = [
            (b"copystate.BuggyUnjellyFor", "unjellyFor", "TypeError"),
            (b"copystate.BuggyPostUnjelly", "postUnjelly", "KeyError"),
            (b"copystate.BuggyNew", "__new__", "TypeError"),
            (b"copystate.buggyFactory", "buggyFactory", "AttributeError"),
            (b"tests.test_copystate.BuggySetState", "__setstate__", "ValueError"),
        ]
        for name, hook, errorType in cases:
            error = self.hookError([name, stateOf(("count", 1))], policy)
            self.assertEqual(
                (error.hook, error.errorType.split(".")[-1]), (hook, errorType)
            )

    def test_nested(self) -> None:
        """
        A hook error inside another copy's state is reported for the class
        that failed, not for the one around it.
        """
        sexp = [
            b"copystate.WithUnjellyFor",
            stateOf(("inner", [b"copystate.Buggy", stateOf(("a", 1))])),
        ]
        error = self.hookError(sexp)
        self.assertEqual(error.className, "tests.test_copystate.Buggy")

    def test_malformedInsideHook(self) -> None:
        """
        Malformed input that the application's C{unjellyFor} (or
        Twisted's) asks to unjelly is still the peer's fault.
        """
        bad = stateOf(("a", [b"set", [b"list"]]))
        for name in (b"copystate.WithUnjellyFor", b"copystate.WithSetter"):
            self.assertRaises(_jelly.MalformedJelly, unjellyOne, [name, bad])

    def test_refusalPassesThrough(self) -> None:
        """
        A hook that raises L{jelly.InsecureJelly} refuses the state: that
        is not an application error.
        """
        with self.assertRaises(jelly.InsecureJelly) as raised:
            unjellyOne([b"copystate.Refusing", stateOf(("a", 1))])
        self.assertEqual(str(raised.exception), "no thanks")


class HookErrorLogTests(SynchronousTestCase):
    """
    Tests for L{HookErrorLog}.
    """

    def test_rateLimited(self) -> None:
        """
        One traceback per class a minute; the others are counted and the
        count given with the next one logged.
        """
        now = [0.0]
        log = HookErrorLog(lambda: now[0])
        recorder = Recorder(self)

        def error(name: str) -> CopyHookError:
            try:
                raise AttributeError("x")
            except AttributeError:
                from twisted.python.failure import Failure

                return CopyHookError(name, "hook", "AttributeError", Failure())

        self.assertTrue(log.report(error("a.A"), "peer"))
        self.assertFalse(log.report(error("a.A"), "peer"))
        self.assertFalse(log.report(error("a.A"), "peer"))
        self.assertTrue(log.report(error("b.B"), "peer"))
        now[0] = 61.0
        self.assertTrue(log.report(error("a.A"), "peer"))
        events = recorder.named("applicationError")
        self.assertEqual(
            [(e["className"], e["suppressed"]) for e in events],
            [("a.A", 0), ("b.B", 0), ("a.A", 2)],
        )
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 3)


def serverAndClient(
    testCase: SynchronousTestCase,
    stockClient: bool = False,
    serverPolicy: Any = None,
    clientPolicy: Any = None,
) -> tuple[Any, Root, Any]:
    """
    A pbext server with a L{Root}, a client connected in memory, and the
    root's remote reference.
    """
    root = Root()
    server = pbext.PBServerFactory(root, policy=serverPolicy)
    client = (
        pb.PBClientFactory()
        if stockClient
        else pbext.PBClientFactory(policy=clientPolicy)
    )
    conn = connectedPair(server, client)
    testCase.addCleanup(conn.disconnect)
    return conn, root, conn.rootObject()


class BrokerHookErrorTests(SynchronousTestCase):
    """
    A broker reports an application error building a received copy as the
    application's bug, not as the peer's violation.
    """

    def setUp(self) -> None:
        registerClassic(self)
        self.recorder = Recorder(self)

    def test_arguments(self) -> None:
        """
        A call whose argument's C{setCopyableState} fails is answered with a
        L{CopyHookError}; the server logs one C{applicationError} event with
        the traceback, no policy violation, and at most one a minute for
        the class; the method does not run.
        """
        conn, root, ref = serverAndClient(self, stockClient=True)
        copy = Injector("copystate.Buggy", {"a": 1})
        for _ in range(3):
            failure = conn.failureOf(ref.callRemote("keep", copy))
            self.assertTrue(failure.check(CopyHookError))
            self.assertIn("tests.test_copystate.Buggy", failure.value)
            self.assertIn("setCopyableState", failure.value)
            self.assertIn("AttributeError", failure.value)
        self.assertEqual(root.kept, [])
        self.assertEqual(self.recorder.named("policyViolation"), [])
        [event] = self.recorder.named("applicationError")
        self.assertEqual(event["className"], "tests.test_copystate.Buggy")
        self.assertEqual(event["hook"], "setCopyableState")
        self.assertIn("setCopyableState", event["log_failure"].getTraceback())
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        conn.advance(61)
        conn.failureOf(ref.callRemote("keep", copy))
        self.assertEqual(
            [e["suppressed"] for e in self.recorder.named("applicationError")], [0, 2]
        )
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        # The connection still works.
        self.assertEqual(conn.resultOf(ref.callRemote("keep", 1)), 1)

    def test_answer(self) -> None:
        """
        A result whose C{setCopyableState} fails on the client fails the
        call there with the local L{CopyHookError}, logged by the client.
        """
        conn, root, ref = serverAndClient(self)
        failure = conn.failureOf(ref.callRemote("give", "copystate.Buggy", {"a": 1}))
        self.assertIsInstance(failure.value, CopyHookError)
        self.assertEqual(self.recorder.named("policyViolation"), [])
        self.assertEqual(len(self.recorder.named("applicationError")), 1)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)

    def test_injectedArguments(self) -> None:
        """
        Injected state from a stock client is refused with
        L{PolicyViolation}, blamed on the peer, and reaches no application
        code.
        """
        conn, root, ref = serverAndClient(self, stockClient=True)
        for name in ("WithSetter", "WithUnjellyFor", "WithSetStateFor", "Plain"):
            for state in injectedFor(CLASSES[f"copystate.{name}"]):
                copy = Injector(f"copystate.{name}", state)
                d = ref.callRemote("keep", copy)
                try:
                    failure = conn.failureOf(d)
                except Exception:
                    self.fail(f"{name} accepted {state!r}")
                self.assertTrue(failure.check(PolicyViolation), (name, state))
        self.assertEqual(SEEN, [])
        self.assertEqual(root.kept, [])
        self.assertTrue(self.recorder.named("policyViolation"))
        self.assertEqual(
            {e["kind"] for e in self.recorder.named("policyViolation")},
            {"refusedArguments"},
        )
        copy = Injector("copystate.WithSetter", {"name": "n"})
        self.assertEqual(conn.resultOf(ref.callRemote("keep", copy)), 1)
        self.assertEqual(root.kept[0].name, "n")

    def test_answerInjection(self) -> None:
        """
        A client checks the copies in its answers the same way: injected
        state from the server fails the call locally and reaches none of
        the client's code.
        """
        conn, root, ref = serverAndClient(self)
        for state in injectedFor(WithSetter):
            d = ref.callRemote("give", "copystate.WithSetter", state)
            self.assertIsInstance(conn.failureOf(d).value, jelly.InsecureJelly)
        self.assertEqual(SEEN, [])
        made = conn.resultOf(ref.callRemote("give", "copystate.WithSetter", {"a": 1}))
        self.assertEqual(made.a, 1)

    def test_newStyleDeclared(self) -> None:
        """
        Twisted's C{NewStyleCopy2} pattern (a class-level default the state
        overrides) is refused, and works once the class declares its field.
        """
        conn, root, ref = serverAndClient(self, stockClient=True)
        sent = Injector("copystate.NewStyle", {"value": 2})
        self.assertTrue(
            conn.failureOf(ref.callRemote("keep", sent)).check(PolicyViolation)
        )
        sent = Injector("copystate.DeclaredNewStyle", {"value": 2})
        conn.resultOf(ref.callRemote("keep", sent))
        self.assertEqual(root.kept[0].value, 2)

    def test_cacheFromStockClient(self) -> None:
        """
        A classic cacheable's injected state is refused too.
        """
        conn, root, ref = serverAndClient(self, stockClient=True)
        for key in ("broker", "luid", "observe_change", "__class__"):
            cache = InjectingCache("copystate.Cache", {key: 1})
            failure = conn.failureOf(ref.callRemote("keep", cache))
            self.assertTrue(failure.check(PolicyViolation), key)
        self.assertEqual(SEEN, [])
        cache = InjectingCache("copystate.Cache", {"value": 1})
        conn.resultOf(ref.callRemote("keep", cache))
        self.assertEqual(root.kept[0].value, 1)


class UnsendableTests(SynchronousTestCase):
    """
    A value that cannot be sent fails its call; it is never replaced by a
    placeholder the receiver takes for the value.
    """

    def setUp(self) -> None:
        registerClassic(self)

    def assertUnsendable(self, failure: Any, *words: str) -> None:
        self.assertTrue(failure.check(UnsendableError), failure)
        message = (
            failure.value if isinstance(failure.value, str) else str(failure.value)
        )
        for word in words:
            self.assertIn(word, message)

    def test_result(self) -> None:
        """
        A result of a class registered only for receiving fails the call:
        the caller (stock or pbext) gets a remote L{UnsendableError} naming
        the class and the reason, the server logs it; a Deferred result
        too.
        """
        for stock in (True, False):
            conn, root, ref = serverAndClient(self, stockClient=stock)
            for method in ("receiveOnly", "receiveOnlyLater"):
                failure = conn.failureOf(ref.callRemote(method))
                self.assertIsInstance(failure, pb.CopiedFailure)
                self.assertUnsendable(
                    failure, "tests.test_copystate.ReceiveOnly", "only for receiving"
                )
            self.assertEqual(len(self.flushLoggedErrors(UnsendableError)), 2)
            self.assertEqual(conn.resultOf(ref.callRemote("keep", 1)), 1)

    def test_nestedUnknown(self) -> None:
        """
        An instance of any class that may not be sent, deep inside a
        result, fails it.
        """
        conn, root, ref = serverAndClient(self)
        failure = conn.failureOf(ref.callRemote("nested"))
        self.assertUnsendable(failure, "builtins.object", "not a pb.Copyable")
        self.assertEqual(len(self.flushLoggedErrors(UnsendableError)), 1)

    def test_arguments(self) -> None:
        """
        Call arguments that cannot be sent fail C{callRemote}'s Deferred
        locally, and nothing is sent.
        """
        conn, root, ref = serverAndClient(self)
        d = ref.callRemote("keep", 1, ReceiveOnly())
        failure = self.failureResultOf(d)
        self.assertIsInstance(failure.value, UnsendableError)
        self.assertEqual(failure.value.className, "tests.test_copystate.ReceiveOnly")
        conn.pump()
        self.assertEqual(root.kept, [])
        failure = conn.failureOf(ref.callRemote("keep", x=object()))
        self.assertIsInstance(failure.value, UnsendableError)
        self.assertEqual(root.kept, [])

    def test_classicSwitch(self) -> None:
        """
        With C{sendUnpersistable} (the classic preset's choice) the
        classic placeholder is sent instead, both ways.
        """
        policy = SecurityPolicy(sendUnpersistable=True)
        conn, root, ref = serverAndClient(self, stockClient=True, serverPolicy=policy)
        result = conn.resultOf(ref.callRemote("receiveOnly"))
        self.assertIsInstance(result, jelly.Unpersistable)
        self.assertIn("deemed insecure", str(result.reason))
        conn, root, ref = serverAndClient(
            self, clientPolicy=SecurityPolicy(sendUnpersistable=True)
        )
        conn.resultOf(ref.callRemote("keep", ReceiveOnly()))
        self.assertIsInstance(root.kept[0], jelly.Unpersistable)

    def test_policies(self) -> None:
        """
        Only the classic preset sends placeholders; a policy file can turn
        it on.
        """
        self.assertTrue(classicPolicy().sendUnpersistable)
        self.assertFalse(defaultPolicy().sendUnpersistable)
        self.assertFalse(strictPolicy().sendUnpersistable)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[policy]\nsendUnpersistable = yes\n")
        self.assertTrue(loadPolicy(path).sendUnpersistable)

    def test_twistedReasonShape(self) -> None:
        """
        Stock jelly's reason for the placeholder of an instance it may not
        send names the class as pbext expects, so that the error names it
        too; any other reason still fails the call.
        """
        sexp = jelly.jelly(ReceiveOnly(), jelly.SecurityOptions())
        self.assertEqual(sexp[0], b"unpersistable")
        reason = sexp[1].decode("utf-8")
        self.assertEqual(
            _jelly._insecureClassName(reason), "tests.test_copystate.ReceiveOnly"
        )
        jellier = _jelly.Jellier(defaultPolicy().outgoingTaster(), substitute=False)
        with self.assertRaises(UnsendableError) as raised:
            jellier.unpersistable("my own reason")
        self.assertIn("my own reason", str(raised.exception))
        self.assertEqual(
            _jelly.Jellier(None).unpersistable("x"), [b"unpersistable", b"x"]
        )

    def test_lowLevelDefault(self) -> None:
        """
        L{_jelly.jelly} without a policy sends what stock jelly sends.
        """
        taster = defaultPolicy().outgoingTaster()
        sexp = _jelly.jelly(ReceiveOnly(), taster)
        self.assertEqual(sexp[0], b"unpersistable")
        self.assertRaises(
            UnsendableError,
            _jelly.jelly,
            ReceiveOnly(),
            taster,
            None,
            (),
            defaultPolicy(),
        )
