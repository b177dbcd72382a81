"""
Hostile copy state over real loopback sockets: a stock
L{twisted.spread.pb} client (and a raw banana peer) sends injected state
for classic copy classes registered with C{pb.setUnjellyableForClass},
with and without their own C{setCopyableState}, C{setStateFor} and
C{unjellyFor}, to a real pbext server.

Each attack is judged as in L{tests.test_hostile}: nothing injected
reaches application code, the server survives, a well-behaved client on
another connection is answered in under 250 ms during the attack, and the
server logs less than 64 KB for the hostile connection.  Run in both
modes (C{PBEXT_PURE_PYTHON=1} and the accelerator), since the accelerated
decoder hands the unjellier state it has already partly decoded.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from pbext.broker import PolicyViolation
from pbext.copystate import CopyHookError
from pbext.security import UnsendableError
from tests._hostile import (
    WAIT,
    HostileMixin,
    callMessage,
    errorText,
    wireMessage,
)
from tests.test_copystate import (
    CLASSES,
    SEEN,
    InjectingCache,
    Injector,
    ReceiveOnly,
    injectedFor,
    registerClassic,
)

#: The most a hostile connection may make the server log, in bytes.
LOG_BUDGET = 64 * 1024

#: The longest a well-behaved client may wait for an answer during an
#: attack, in seconds.
ANSWER_BUDGET = 0.25

#: The classic classes attacked, with and without hooks of their own.
ATTACKED = (
    "Plain",
    "WithSetter",
    "WithUnjellyFor",
    "WithSetStateFor",
    "PlainUnjellyable",
    "Declared",
)


class LogVolume:
    """
    Counts the bytes of every log event (as a classic log file would hold
    them, tracebacks included) while it is observing.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.bytes = 0
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEventAsClassicLogText(event) or ""
        self.bytes += len(text.encode("utf-8"))


class CopyStateAttackTests(HostileMixin, TestCase):
    """
    Injected copy state from a stock client never reaches the
    application.
    """

    def setUp(self) -> None:
        self.setUpHostile()
        registerClassic(self)

    @defer.inlineCallbacks
    def connectStock(self) -> Any:
        """
        Connect a stock PB client; fire with the server's root reference.
        """
        client = pb.PBClientFactory()
        connector = self.reactor.connectTCP(
            "127.0.0.1", self.factory.portNumber, client
        )
        self.addCleanup(connector.disconnect)
        root = yield client.getRootObject().addTimeout(WAIT, self.reactor)
        return root

    @defer.inlineCallbacks
    def assertPromptAnswer(self, good: Any) -> Any:
        """
        The well-behaved client's call is answered within L{ANSWER_BUDGET}.
        """
        started = time.monotonic()
        result = yield good.callRemote("echo", "still here").addTimeout(
            WAIT, self.reactor
        )
        elapsed = time.monotonic() - started
        self.assertEqual(result, "still here")
        self.assertLess(elapsed, ANSWER_BUDGET)

    @defer.inlineCallbacks
    def assertRefused(self, hostile: Any, copy: Any, expected: type) -> Any:
        """
        C{keep(copy)} fails with C{expected}, a remote error.
        """
        try:
            yield hostile.callRemote("keep", copy).addTimeout(WAIT, self.reactor)
        except pb.RemoteError as e:
            self.assertEqual(
                e.remoteType, f"{expected.__module__}.{expected.__name__}".encode()
            )
        except Exception as e:
            failure = getattr(e, "failure", None)
            self.fail(f"unexpected {e!r} {failure}")
        else:
            self.fail(f"{copy.typeName} accepted {copy.state!r}")

    @defer.inlineCallbacks
    def test_stockClientInjection(self) -> Any:
        """
        Every injected state, for every kind of classic class and for a
        classic cache, is refused with L{PolicyViolation}; no hook runs, no
        method runs; the hostile connection keeps working, another client
        is answered promptly throughout, and the log stays small.
        """
        self.startServer()
        good = yield self.connectStock()
        hostile = yield self.connectStock()
        self.assertNotIn("pbext", type(hostile.broker).__module__)
        volume = LogVolume(self)
        for name in ATTACKED:
            for state in injectedFor(CLASSES[f"copystate.{name}"]):
                if name == "Declared" and not set(state) - {"name", "isAdmin"}:
                    continue
                copy = Injector(f"copystate.{name}", state)
                yield self.assertRefused(hostile, copy, PolicyViolation)
            yield self.assertPromptAnswer(good)
        for key in ("broker", "luid", "observe_change", "__class__"):
            cache = InjectingCache("copystate.Cache", {key: 1})
            yield self.assertRefused(hostile, cache, PolicyViolation)
        yield self.assertPromptAnswer(good)
        self.assertEqual(SEEN, [])
        self.assertNotIn("keep", self.root.calls)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertLess(volume.bytes, LOG_BUDGET)
        # Good state still works on the same connection.
        answer = yield hostile.callRemote(
            "keep", Injector("copystate.WithSetter", {"a": 1})
        )
        self.assertIsNone(answer)
        self.assertEqual(self.root.kept[0].a, 1)
        yield self.stockEcho()

    @defer.inlineCallbacks
    def test_rawInjection(self) -> Any:
        """
        Hand-made expressions a stock client would not send (bytes keys,
        copies with extra elements, state by reference, a cache whose ID
        is a list) are refused with an error answer; nothing is built.
        """
        self.startServer()
        good = yield self.connectStock()
        peer = yield self.connectRaw()
        volume = LogVolume(self)
        attacks = [
            [b"copystate.WithSetter", [b"dictionary", [b"greet", 1]]],
            [b"copystate.WithSetter", [b"dictionary", [b"__class__", 1]]],
            [b"copystate.WithUnjellyFor", [b"dictionary"], [b"dictionary"]],
            [b"copystate.WithUnjellyFor"],
            [b"copystate.WithSetStateFor", [b"list", 1, 2]],
            [b"copystate.WithSetStateFor", [b"None"]],
            [
                b"list",
                [b"reference", 1, [b"dictionary", [b"isAdmin", 1]]],
                [b"copystate.WithSetter", [b"dereference", 1]],
            ],
            [b"copystate.WithSetter", [b"dereference", 7]],
            [b"copystate.Cache", [b"list"], [b"dictionary"]],
            [b"copystate.Cache", 5, [b"dictionary", [b"luid", 1]]],
            [b"copystate.factory", [b"dictionary", [b"__dict__", 1]]],
        ]
        for requestID, attack in enumerate(attacks, 1):
            peer.transport.write(
                wireMessage(callMessage(requestID, b"keep", [b"tuple", attack]))
            )
            answer = yield peer.answerTo(requestID, self.reactor)
            self.assertEqual(answer[0], b"error", attack)
            self.assertIn(b"PolicyViolation", errorText(answer))
        yield self.assertPromptAnswer(good)
        self.assertEqual(SEEN, [])
        self.assertNotIn("keep", self.root.calls)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertLess(volume.bytes, LOG_BUDGET)

    @defer.inlineCallbacks
    def test_applicationBugNotBlamedOnPeer(self) -> Any:
        """
        A classic class whose C{setCopyableState} has a bug: every call
        carrying it is answered with L{CopyHookError}, the server logs the
        bug once with its traceback (no policy violation), the log stays
        small however often a peer triggers it, and others are answered.
        """
        self.startServer()
        good = yield self.connectStock()
        hostile = yield self.connectStock()
        volume = LogVolume(self)
        for _ in range(100):
            yield self.assertRefused(
                hostile, Injector("copystate.Buggy", {"a": 1}), CopyHookError
            )
        yield self.assertPromptAnswer(good)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        [event] = [
            e for e in self.recorder.events if e["pbextEvent"] == "applicationError"
        ]
        self.assertEqual(event["className"], "tests.test_copystate.Buggy")
        self.assertEqual(self.recorder.kinds().count("refusedArguments"), 0)
        self.assertEqual(
            [e for e in self.recorder.events if e["pbextEvent"] == "policyViolation"],
            [],
        )
        self.assertLess(volume.bytes, LOG_BUDGET)

    @defer.inlineCallbacks
    def test_unsendableResult(self) -> Any:
        """
        A result that cannot be sent reaches the stock caller as a remote
        L{UnsendableError} naming the class, never as a placeholder string.
        """
        self.startServer()
        self.root.remote_receiveOnly = lambda: ReceiveOnly()  # type: ignore[attr-defined]
        client = yield self.connectStock()
        try:
            yield client.callRemote("receiveOnly").addTimeout(WAIT, self.reactor)
        except pb.RemoteError as e:
            self.assertEqual(e.remoteType, b"pbext.security.UnsendableError")
            self.assertIn("tests.test_copystate.ReceiveOnly", str(e))
        else:
            self.fail("an unsendable result was delivered")
        self.assertEqual(len(self.flushLoggedErrors(UnsendableError)), 1)
        yield self.stockEcho()
