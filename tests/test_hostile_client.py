"""
Hostile servers against a pbext client.

A pbext client connects to servers it may not control (a worker to a
compromised master).  Each test runs a pbext client application
(L{tests._victim}) in its own process, connected both to a raw hostile
server in this process, which speaks or breaks the PB wire byte by byte,
and to a well-behaved pbext server.  The client must survive, stay under
the per-peer memory bound, answer nothing unsafe to its application, fail
its calls to the hostile server with clear errors within their timeout,
log little, and keep getting answers from the good server in under
250 ms (nine in ten: on a loaded machine the slowest measures the
scheduler).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.python import log
from twisted.spread import banana
from twisted.trial.unittest import TestCase

from pbext.codec import FramingError, encode, makeDecoder
from tests import _memory
from tests._hostile import INCOMING, HostileMixin, wireMessage
from tests.test_hostile import header

#: The most the client's resident set size may grow.
PER_PEER = 16 * 1024 * 1024

#: The longest nine in ten good calls may wait.
LATENCY = 0.25

#: The most the client may log for the hostile connection.
LOG_PER_PEER = 64 * 1024

#: How long the client runs.
SECONDS = 3.0

if not sys.platform.startswith("linux"):
    skip = "reads /proc/PID/status"

_THING = b"tests._victim.Thing"


def _text(value: str) -> list[bytes]:
    return [b"unicode", value.encode("utf-8")]


class HostileServer(protocol.Protocol):
    """
    A raw PB server: it offers the C{b"pb"} dialect, sends its version,
    and answers the client's calls as its C{mode} says.

    @ivar callbackID: The ID of the client's C{Callback}, once registered.
    """

    mode = "silent"

    def __init__(self) -> None:
        self.decoder = makeDecoder(maxMessageBytes=64 * 1024 * 1024)
        self.chosen = False
        self.callbackID: int | None = None
        self.calls = 0

    def connectionMade(self) -> None:
        self.transport.write(encode([b"pb", b"none"]))

    def dataReceived(self, data: bytes) -> None:
        try:
            self.decoder.feedTo(data, self.expression)
        except FramingError:
            self.transport.abortConnection()

    def send(self, expression: object) -> None:
        self.transport.write(wireMessage(expression))

    def expression(self, expression: Any) -> None:
        if not self.chosen:
            self.chosen = True
            self.decoder.setVocabulary(INCOMING)
            self.send([b"version", 6])
            return
        if not isinstance(expression, list) or expression[0] != b"message":
            return
        requestID, method, args = expression[1], expression[3], expression[5]
        if method == b"register":
            # [b"tuple", [b"remote", luid]]
            self.callbackID = args[1][1]
            self.send([b"answer", requestID, [b"None"]])
            self.registered()
            return
        self.calls += 1
        getattr(self, "answer_" + self.mode)(requestID)

    def registered(self) -> None:
        pass

    def answer_silent(self, requestID: int) -> None:
        """
        Never answer.
        """


class Oversize(HostileServer):
    def answer_oversize(self, requestID: int) -> None:
        self.transport.write(header(10 * 1024 * 1024, banana.STRING) + b"o" * 65536)

    mode = "oversize"


class Deep(HostileServer):
    def answer_deep(self, requestID: int) -> None:
        self.transport.write(header(1, banana.LIST) * 500)

    mode = "deep"


class Inject(HostileServer):
    """
    Answers with copies of the client's registered C{Thing} whose state
    tries to set C{__class__}, C{__dict__}, or shadow a method.
    """

    mode = "inject"
    wireName = _THING
    STATES = [
        [b"dictionary", [_text("__class__"), _text("x")]],
        [b"dictionary", [_text("__dict__"), [b"dictionary"]]],
        [b"dictionary", [_text("__init__"), 1]],
    ]

    def answer_inject(self, requestID: int) -> None:
        state = self.STATES[self.calls % len(self.STATES)]
        self.send([b"answer", requestID, [self.wireName, state]])


class InjectOwnState(Inject):
    """
    The same states, and one shadowing a method, for a class with its own
    C{setCopyableState}.
    """

    wireName = b"tests._victim.OwnStateThing"
    STATES = [
        *Inject.STATES,
        [b"dictionary", [_text("setCopyableState"), 1]],
    ]


class ShadowMethod(Inject):
    """
    State that shadows a method of the client's class (one it inherits
    from C{pb.RemoteCopy}).
    """

    STATES = [[b"dictionary", [_text("setCopyableState"), 1]]]


class Cycles(HostileServer):
    """
    Answers every call with a list that refers to itself through as many
    inner lists as a message may hold.
    """

    mode = "cycles"

    def answer_cycles(self, requestID: int) -> None:
        from pbext.security import defaultPolicy

        count = (defaultPolicy().limits.maxMessageTokens - 40) // 7
        inner = [b"list", [b"dereference", 1], 1, 2]
        self.send(
            [b"answer", requestID, [b"reference", 1, [b"list", *([inner] * count)]]]
        )


class Strangers(HostileServer):
    """
    Answers and errors for request IDs the client never sent (and never
    the real one): the client's calls time out.
    """

    mode = "strangers"

    def answer_strangers(self, requestID: int) -> None:
        for offset in range(1, 51):
            self.send([b"answer", requestID + 100_000 * offset, [b"list", 1]])
            self.send([b"error", -offset, _text("boo")])
        self.send([b"answer", b"notAnID", 1])


class AnswerFlood(HostileServer):
    """
    Floods large answers for unknown request IDs, then answers the call.
    """

    mode = "answerFlood"

    def answer_answerFlood(self, requestID: int) -> None:
        junk = wireMessage([b"answer", 999_999_999, b"j" * 60_000])
        self.transport.write(junk * 30)
        self.send([b"answer", requestID, _text("x")])


class CallFlood(HostileServer):
    """
    Floods calls to the client's own C{Callback} (with 60 KB arguments,
    whose answers it never reads) and to objects the client never gave
    out.
    """

    mode = "callFlood"

    def registered(self) -> None:
        self.transport.pauseProducing()
        self._loop = task.LoopingCall(self.flood)
        self._loop.start(0.02)

    def flood(self) -> None:
        if not self.transport.connected or self.calls > 4000:
            if self._loop.running:
                self._loop.stop()
            return
        batch = []
        for _ in range(20):
            self.calls += 1
            batch.append(
                wireMessage(
                    [
                        b"message",
                        self.calls,
                        self.callbackID,
                        b"poke",
                        1,
                        [b"tuple", b"f" * 60_000],
                        [b"dictionary"],
                    ]
                )
            )
            batch.append(
                wireMessage(
                    [
                        b"message",
                        10**9 + self.calls,
                        424242,
                        b"poke",
                        1,
                        [b"tuple", 1],
                        [b"dictionary"],
                    ]
                )
            )
        self.transport.write(b"".join(batch))

    def connectionLost(self, reason: Any = None) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.running:
            loop.stop()

    def answer_callFlood(self, requestID: int) -> None:
        """
        Never answers (reading is paused anyway).
        """


class _Victim(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.errors = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[dict[str, Any]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ready\n" in self.output and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Any) -> None:
        text = (self.output + self.errors[-5000:]).decode("utf-8", "replace")
        if not self.ready.called:
            self.ready.errback(RuntimeError(text))
        lines = [line for line in self.output.splitlines() if line.startswith(b"{")]
        if lines:
            self.ended.callback(json.loads(lines[-1]))
        else:
            self.ended.errback(RuntimeError(text))


class HostileServerTests(HostileMixin, TestCase):
    """
    Each hostile server, against a pbext client process.
    """

    timeout = 60

    def setUp(self) -> None:
        self.setUpHostile()
        # The well-behaved server.
        self.startServer()

    @defer.inlineCallbacks
    def attack(self, kind: type[HostileServer], latency: float = LATENCY) -> Any:
        """
        Run the client against a C{kind} server and the good one; check the
        common judgement and return the client's report.
        """
        factory = protocol.Factory.forProtocol(kind)
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        victim = _Victim()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [root, env.get("PYTHONPATH", "")] if p
        )
        self.reactor.spawnProcess(
            victim,
            sys.executable,
            [
                sys.executable,
                "-m",
                "tests._victim",
                str(port.getHost().port),
                str(self.factory.portNumber),
                str(SECONDS),
            ],
            env=env,
        )

        def kill() -> Any:
            if not victim.ended.called:
                try:
                    victim.transport.signalProcess("KILL")
                except Exception:
                    pass
            return victim.ended.addErrback(lambda f: None)

        self.addCleanup(kill)
        yield victim.ready.addTimeout(30, self.reactor)
        pid = victim.transport.pid
        before = _memory.residentBytes(pid)
        watch = _memory.RSSWatch(pid, self.reactor)
        self.addCleanup(watch.stop)
        report = yield victim.ended.addTimeout(SECONDS + 30, self.reactor)
        peak = watch.stop()
        growth = peak - before
        log.msg(
            f"pbext client memory: {kind.__name__}: RSS {before / 2**20:.1f} MiB "
            f"-> peak {peak / 2**20:.1f} MiB (+{growth / 2**20:.1f} MiB), "
            f"log {len(victim.errors)} bytes, report {report}"
        )
        # Survived, and said what happened.
        self.assertIsNone(report["error"], report)
        self.assertLess(growth, PER_PEER, f"{growth / 2**20:.1f} MiB")
        self.assertLess(len(victim.errors), LOG_PER_PEER)
        self.assertNotIn(b"Traceback", victim.errors)
        # The good server kept answering.
        self.assertEqual(report["goodFailures"], [])
        self.assertGreater(report["goodCalls"], 10)
        self.assertLess(report["goodP90"], latency, report)
        # Nothing unsafe reached the application.
        self.assertEqual(report["injected"], [])
        # Every hostile call ended, none later than its 1 s timeout (plus
        # a loaded machine's margin).
        self.assertGreater(sum(report["hostile"].values()), 0, report)
        self.assertLess(report["hostileSlowest"], 2.0, report)
        return report

    @defer.inlineCallbacks
    def test_silent(self) -> Any:
        """
        A server that never answers: each call fails with C{CallTimeout}
        after its timeout.
        """
        report = yield self.attack(HostileServer)
        self.assertGreaterEqual(report["hostile"].get("CallTimeout", 0), 2, report)

    @defer.inlineCallbacks
    def test_oversizeToken(self) -> Any:
        """
        A string header of 10 MB drops the connection; the pending call
        fails with a connection error, later ones with C{DeadReferenceError}.
        """
        report = yield self.attack(Oversize)
        self.assertNotIn("answer:str", report["hostile"])

    @defer.inlineCallbacks
    def test_deepNesting(self) -> Any:
        """
        Nesting beyond C{maxDepth} drops the connection.
        """
        report = yield self.attack(Deep)
        self.assertNotIn("answer:str", report["hostile"])

    @defer.inlineCallbacks
    def test_copyStateInjection(self) -> Any:
        """
        Answers that are copies of the client's registered class with
        C{__class__}, C{__dict__} or C{__init__} in their state fail the
        call with C{InsecureJelly}; none of that state reaches the class.
        """
        report = yield self.attack(Inject)
        self.assertNotIn("answer:Thing", report["hostile"])
        self.assertGreater(report["hostile"].get("InsecureJelly", 0), 0, report)

    @defer.inlineCallbacks
    def test_copyStateInjectionOwnState(self) -> Any:
        """
        The same, for a classic class that overrides C{setCopyableState}
        and calls C{super()}: none of the injected state reaches it.
        """
        report = yield self.attack(InjectOwnState)
        self.assertNotIn("answer:OwnStateThing", report["hostile"])

    @defer.inlineCallbacks
    def test_methodShadowing(self) -> Any:
        """
        State whose key shadows a method of the client's class fails the
        call.
        """
        report = yield self.attack(ShadowMethod)
        self.assertNotIn("answer:Thing", report["hostile"])

    @defer.inlineCallbacks
    def test_cycles(self) -> Any:
        """
        Answers of reference cycles as large as a message may hold are
        delivered as values, within the memory bound, and the good server's
        answers keep coming as during any other attack.
        """
        yield self.attack(Cycles)

    @defer.inlineCallbacks
    def test_unknownRequestIDs(self) -> Any:
        """
        Answers and errors for request IDs never sent are dropped (logged,
        rate-limited); the real calls time out.
        """
        report = yield self.attack(Strangers)
        self.assertGreaterEqual(report["hostile"].get("CallTimeout", 0), 2, report)

    @defer.inlineCallbacks
    def test_answerFlood(self) -> Any:
        """
        Floods of large answers for unknown IDs do not stop real answers.
        """
        report = yield self.attack(AnswerFlood)
        self.assertGreater(report["hostile"].get("answer:str", 0), 5, report)

    @defer.inlineCallbacks
    def test_callFlood(self) -> Any:
        """
        A flood of calls to the client's own object, whose answers the
        server never reads, and to unknown objects: the client stops
        reading that server once its output backs up.
        """
        report = yield self.attack(CallFlood)
        self.assertGreater(report["pokes"], 0)
        self.assertLess(report["pokes"], 4000)
