"""
Incoming dispatch of one broker's connection: a C{message} from the peer
is admitted (method name allowed by the policy, not too many calls
running, a known object), its method found the way the target's flavor
finds it, its arguments unjellied and, where asked, checked against the
method's annotations, the method run (an C{async def} awaited), and its
result or failure answered.  Running calls are kept by request ID so a
pbext peer can cancel them.

@since: pbext NEXT
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from twisted.cred.error import LoginFailed
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import banana, flavors, jelly, pb

from pbext import _flow, _jelly, keepalive, typecheck
from pbext import streams as _streams
from pbext._accelerator import speedups as _speedups
from pbext._wire import MessageTooLarge, PolicyViolation

if TYPE_CHECKING:
    from pbext._serialization import Serialization
    from pbext.broker import Broker

#: Result types of remote methods that are never awaitable, so the call
#: path need not ask L{inspect.isawaitable}.
_NEVER_AWAITABLE = frozenset(
    {int, float, str, bytes, bool, type(None), list, tuple, dict, set, frozenset}
)

#: The type of the arguments the accelerated decoder unjellied already.
_JELLIED: Any = None if _speedups is None else _speedups.Jellied

#: How a L{pb.Referenceable} receives calls: C{remote_} methods.
_REFERENCEABLE = flavors.Referenceable.remoteMessageReceived

#: The types of a result serialized ahead of its answer (see
#: L{pbext._serialization.Serialization.serializeOut}): never a Deferred.
_PREPARED: frozenset[type] = (
    frozenset()
    if _speedups is None
    else frozenset({_speedups.Jellied, _speedups.Encoded})
)

#: Commands a peer may send, and how many arguments each takes.
COMMANDS: dict[str, int] = {
    "version": 1,
    "didNotUnderstand": 1,
    "message": 6,
    "cachemessage": 6,
    "answer": 2,
    "error": 2,
    "decref": 1,
    "decache": 1,
    "uncache": 1,
}

_log = Logger()


class IncomingDispatch:
    """
    The calls one connection's peer makes, and those still running.

    @ivar running: the Deferreds of the calls running, by request ID.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_broker",
        "_serialization",
        "_unserializer",
        "_policy",
        "_maxCalls",
        "_directAnswers",
        "_jelliedArguments",
        "running",
    )

    def __init__(
        self,
        broker: Broker,
        serialization: Serialization,
        unserializer: Serialization | Broker,
        directAnswers: bool = False,
    ) -> None:
        """
        @param serialization: the broker's serializer: results are its
            C{serializeOut}.
        @param unserializer: whose C{unserialize} arguments go through:
            the broker's serializer, or the broker if its class overrides
            C{unserialize}.
        @param directAnswers: whether the broker's class sends answers as
            pbext's broker does (it overrides none of C{_sendAnswer},
            C{sendCall} and C{sendEncoded}), so that L{sendAnswer} may
            send them without that chain of calls.
        """
        self._broker = broker
        self._serialization = serialization
        self._unserializer = unserializer
        self._directAnswers = directAnswers
        # The serializer's unserialize gives a Jellied's value as it is:
        # arguments the decoder made need no call to it.
        self._jelliedArguments = _JELLIED is not None and unserializer is serialization
        self._policy = broker._pbextPolicy
        self._maxCalls = broker._pbextLimits.maxOutstandingCalls
        self.running: dict[int, defer.Deferred[Any]] = {}

    def handler(self) -> Callable[[object], None]:
        """
        What handles the expressions queued now: the broker's
        C{callExpressionReceived} (see L{pbext._plaincalls} for a
        dispatcher that handles plain calls itself).
        """
        return self._broker.callExpressionReceived

    def cancel(self, requestID: object) -> None:
        """
        Cancel the running call C{requestID}, if there is one.
        """
        if isinstance(requestID, int):
            d = self.running.get(requestID)
            if d is not None:
                d.cancel()

    def cancelAll(self) -> None:
        """
        The connection is lost: cancel every running call.
        """
        running = list(self.running.values())
        self.running.clear()
        for d in running:
            d.cancel()

    def unusualExpression(self, sexp: object) -> None:
        """
        Handle an expression that is not a known command with the right
        number of arguments (see L{unusualExpression}).
        """
        unusualExpression(self._broker, sexp)

    def _refuse(self, requestID: int, answerRequired: object, exc: pb.Error) -> None:
        if answerRequired:
            # As a Failure, so that _sendError copies it (with no traceback)
            # unless it is Jellyable or allowed, as classic PB does.
            self._broker._sendError(Failure(exc), requestID)

    def received(
        self,
        findObjMethod: Callable[[Any], Any],
        requestID: object,
        objectID: object,
        message: object,
        answerRequired: object,
        netArgs: object,
        netKw: object,
    ) -> None:
        """
        A call arrived (L{pb.Broker._recvMessage}'s arguments): admit, run
        and answer it, or refuse it.
        """
        broker = self._broker
        if not isinstance(requestID, int) or not isinstance(message, bytes):
            broker._pbextDropConnection(
                "badMessage", "malformed call", requestID=requestID, method=message
            )
            return
        name = self.admitted(requestID, message, answerRequired)
        if name is None:
            return
        self.found(
            findObjMethod, requestID, objectID, name, answerRequired, netArgs, netKw
        )

    def admitted(
        self, requestID: int, message: bytes, answerRequired: object
    ) -> str | None:
        """
        Admit the call C{requestID} of the method named C{message}: its
        name as text if the policy allows the name and not too many calls
        run already; else L{None}, the call refused.
        """
        try:
            name = message.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if self._policy.isMethodAllowed(name) and len(self.running) < self._maxCalls:
            return name
        broker = self._broker
        if not broker._pbextPolicy.isMethodAllowed(name):
            broker._pbextViolation(
                "methodRefused", "call to a refused method name", name=name
            )
            self._refuse(
                requestID,
                answerRequired,
                PolicyViolation(f"{name}(): refused by the server's security policy"),
            )
            return None
        limit = broker._pbextLimits.maxOutstandingCalls
        if len(self.running) >= limit:
            broker._pbextViolation("maxOutstandingCalls", "too many outstanding calls")
            self._refuse(
                requestID,
                answerRequired,
                PolicyViolation(
                    f"{name}(): more than {limit} "
                    "calls unanswered; wait for an answer before calling again"
                ),
            )
            return None
        return name

    def found(
        self,
        findObjMethod: Callable[[Any], Any],
        requestID: int,
        objectID: object,
        name: str,
        answerRequired: object,
        netArgs: object,
        netKw: object,
    ) -> None:
        """
        The call C{requestID} of C{name} was admitted: find its target
        with C{findObjMethod}, run it and answer it, or refuse it.
        """
        broker = self._broker
        try:
            target = findObjMethod(objectID)
        except (KeyError, TypeError):
            target = None
        if target is None:
            if objectID != keepalive.PING_OBJECT_ID:
                broker._pbextViolation(
                    "badObject", "call to an unknown object", objectID=objectID
                )
            self._refuse(requestID, answerRequired, pb.Error("Invalid Object ID"))
            return
        try:
            result = self.dispatch(target, name, netArgs, netKw, answerRequired)
        except BaseException as e:
            self._refused(e, requestID, answerRequired, name)
            return
        self.answer(result, requestID, answerRequired, name)

    def answer(
        self, result: Any, requestID: int, answerRequired: object, name: str
    ) -> None:
        """
        Answer the call C{requestID} of C{name} with its serialized
        C{result}: now, or when it is done if it is a L{defer.Deferred}.
        """
        if type(result) not in _PREPARED and isinstance(result, defer.Deferred):
            self._track(result, requestID, answerRequired, name)
        elif answerRequired:
            if self._directAnswers:
                sendAnswer(self._broker, result, requestID)
            else:
                self._broker._sendAnswer(result, requestID)

    def _refused(
        self, e: BaseException, requestID: int, answerRequired: object, name: str
    ) -> None:
        """
        Running the call C{requestID} raised C{e}: answer it as the kind of
        error it is.
        """
        broker = self._broker
        if isinstance(e, pb.Error):
            self._refuse(requestID, answerRequired, e)
        elif isinstance(e, typecheck.TypedReturnError):
            # The method's own fault, not the peer's: logged as a failure.
            self.failCall(Failure(), requestID, answerRequired, name)
        elif isinstance(e, (jelly.InsecureJelly, typecheck.TypeCheckError)):
            broker._pbextViolation("refusedArguments", str(e), name=name)
            self._refuse(requestID, answerRequired, PolicyViolation(str(e)))
        elif isinstance(e, flavors.NoSuchMethod):
            # Answered as classic PB answers it (a copied NoSuchMethod that
            # callers trap), but logged as an event, not a traceback.
            broker._pbextViolation("noSuchMethod", str(e), name=name)
            if answerRequired:
                broker._sendError(Failure(e), requestID)
        else:
            self.failCall(Failure(), requestID, answerRequired, name)

    def _track(
        self,
        result: defer.Deferred[Any],
        requestID: int,
        answerRequired: object,
        name: str,
    ) -> None:
        """
        The call C{requestID} runs on: keep it (a pbext peer may cancel it)
        and answer it when it is done.
        """
        broker = self._broker
        self.running[requestID] = result
        broker._pbextFlow.chargeObjects()
        running = self.running

        def done(value: Any) -> Any:
            running.pop(requestID, None)
            return value

        result.addBoth(done)
        if answerRequired:
            result.addCallbacks(
                broker._sendAnswer,
                self._answerFailure,
                callbackArgs=(requestID,),
                errbackArgs=(requestID, name),
            )
        else:
            result.addErrback(self.failCall, requestID, 0, name)

    def _answerFailure(self, fail: Failure, requestID: int, name: str) -> None:
        if fail.check(pb.Error):
            self._broker._sendError(fail, requestID)
        else:
            self.failCall(fail, requestID, 1, name)

    def failCall(
        self, fail: Failure, requestID: int, answerRequired: object, name: str
    ) -> None:
        """
        The call C{requestID} of C{name} failed with C{fail}: log it as
        the kind of failure it is, and answer it.
        """
        logFailure(self._broker, fail, name)
        if answerRequired:
            self._broker._sendError(fail, requestID)

    def dispatch(
        self,
        target: Any,
        name: str,
        netArgs: Any,
        netKw: Any,
        answerRequired: object = 1,
    ) -> Any:
        """
        Find and run the method a call names on C{target}, the way the
        target's flavor would, and return its serialized result (possibly
        a L{defer.Deferred}).

        The known flavors (L{pb.Referenceable}, L{pb.ViewPoint},
        L{pb.RemoteCache}, and avatars wrapped by L{pb.AsReferenceable}) are
        dispatched here, so that arguments are type-checked and C{async
        def} methods awaited; any other C{remoteMessageReceived} is called
        as it is.
        """
        if type(target).remoteMessageReceived is _REFERENCEABLE and not isinstance(
            target, pb.AsReferenceable
        ):
            # The commonest flavor inline (as findMethod finds it).
            method = getattr(target, "remote_" + name, None)
            if method is None:
                raise flavors.NoSuchMethod(f"No such method: remote_{name}")
            perspective = None
            extra: tuple[Any, ...] = ()
        else:
            found = findMethod(target, name)
            if found is None:
                return self._classicDispatch(target, name, netArgs, netKw)
            method, perspective, extra = found
        return self.invoke(method, perspective, extra, netArgs, netKw, answerRequired)

    def invoke(
        self,
        method: Any,
        perspective: Any,
        extra: tuple[Any, ...],
        netArgs: Any,
        netKw: Any,
        answerRequired: object,
    ) -> Any:
        """
        Run the C{method} a call found (see L{findMethod} for
        C{perspective} and C{extra}) with the call's arguments, and return
        its serialized result (possibly a L{defer.Deferred}).
        """
        if self._jelliedArguments and type(netArgs) is type(netKw) is _JELLIED:
            # Made by the decoder: what Serialization.unserialize gives.
            args, kw = netArgs.value, netKw.value
        else:
            unserializer = self._unserializer
            args = unserializer.unserialize(netArgs, perspective)
            kw = unserializer.unserialize(netKw, perspective)
        if kw or type(kw) is not dict or type(args) not in (tuple, list):
            args, kw = checkedArguments(args, kw)
        # Annotations are checked only when the program asked for it (the
        # factory's typedCalls, or pbext.typed on the method or its class):
        # otherwise the method is called as classic PB calls it.
        typed = self._broker.typedCalls or typecheck.isTyped(method)
        return self.run(method, perspective, extra, args, kw, typed, answerRequired)

    def run(
        self,
        method: Any,
        perspective: Any,
        extra: tuple[Any, ...],
        args: Any,
        kw: dict[str, Any],
        typed: bool,
        answerRequired: object,
    ) -> Any:
        """
        Run C{method} with the call's unjellied arguments, checked against
        its annotations if C{typed}, and return its serialized result
        (possibly a L{defer.Deferred}).
        """
        checker = None
        if typed:
            checker = _checkArguments(method, extra, args, kw)
        state = method(*extra, *args, **kw)
        return self.finish(
            state, method, checker, perspective, args, kw, answerRequired
        )

    def finish(
        self,
        state: Any,
        method: Any,
        checker: Any,
        perspective: Any,
        args: Any,
        kw: dict[str, Any],
        answerRequired: object,
    ) -> Any:
        """
        C{method} returned C{state}: await it if it is awaitable, check it
        against the annotations of a typed method (C{checker}), and return
        it serialized for the answer (as it is, if none is required).
        """
        if type(state) not in _NEVER_AWAITABLE and inspect.isawaitable(state):
            state = defer.ensureDeferred(state)  # type: ignore[arg-type] # an awaitable, not only a coroutine
        if checker is not None and checker.returns is not None:
            if isinstance(state, defer.Deferred):
                state.addCallback(_checkReturn, method)
            else:
                _checkReturn(state, method)
        if not answerRequired:
            # Nobody reads this answer: serializing it would only cost a
            # peer's CPU and memory (and register references it never
            # learns of, held until it disconnects).
            return state
        # -- pbext.streams: a generator, async generator or Stream result --
        if type(state) in _streams.RESULT_TYPES:
            state = _streams.prepareResult(
                self._broker, state, method, checker is not None
            )
        return self._serialization.serializeOut(state, perspective, method, args, kw)

    def _classicDispatch(self, target: Any, name: str, netArgs: Any, netKw: Any) -> Any:
        broker = self._broker
        result = target.remoteMessageReceived(broker, name, netArgs, netKw)
        if inspect.isawaitable(result) and not isinstance(result, defer.Deferred):
            result = defer.ensureDeferred(result).addCallback(  # type: ignore[arg-type] # an awaitable, not only a coroutine
                broker.serialize
            )
        return result


def logFailure(broker: Broker, fail: Failure, name: str) -> None:
    """
    Log the failure C{fail} of a call of C{name} on C{broker} as the kind
    of failure it is.
    """
    if fail.check(defer.CancelledError):
        _log.debug("pbext: call {name} was cancelled", name=name)
    elif fail.check(LoginFailed):
        # Refused logins are audited by pbext.login; not a server bug.
        _log.info(
            "pbext: login refused for {peer} in {name}",
            name=name,
            peer=broker._pbextPeerName(),
            pbextEvent="loginRefused",
        )
    else:
        _log.failure(
            "pbext: remote method {name} called by {peer} failed",
            fail,
            name=name,
            peer=broker._pbextPeerName(),
        )


def unusualExpression(broker: Broker, sexp: object) -> None:
    """
    Handle an expression that is not a known command with the right
    number of arguments (the broker handles those at once): drop the
    connection, or answer an unknown command with C{didNotUnderstand}.
    """
    if not isinstance(sexp, list) or not sexp:
        broker._pbextDropConnection("badMessage", "message is not a non-empty list")
        return
    command = sexp[0]
    if isinstance(command, bytes):
        command = command.decode("utf-8", "replace")
    if not isinstance(command, str) or command not in COMMANDS:
        broker._pbextViolation("unknownCommand", "unknown command", command=command)
        name = command.encode("utf-8") if isinstance(command, str) else b"?"
        broker.sendCall(b"didNotUnderstand", name[:64])
        return
    if len(sexp) - 1 != COMMANDS[command]:
        broker._pbextDropConnection(
            "badMessage", f"{command} with {len(sexp) - 1} arguments"
        )
        return
    getattr(broker, "proto_" + command)(*sexp[1:])


def findMethod(target: Any, name: str) -> Any:
    """
    The method a call of C{name} on C{target} runs, the way the
    target's flavor finds it, as C{(method, perspective, extra)}
    (C{extra}: the arguments the flavor passes first); or L{None} if
    the target's C{remoteMessageReceived} is its own.
    """
    kind = type(target).remoteMessageReceived
    perspective = None
    extra: tuple[Any, ...] = ()
    if isinstance(target, pb.AsReferenceable):
        bound = target.__dict__.get("remoteMessageReceived")
        owner = getattr(bound, "__self__", None)
        if not (
            isinstance(owner, pb.Avatar)
            and type(owner).perspectiveMessageReceived
            is pb.Avatar.perspectiveMessageReceived
        ):
            return None
        obj, prefix, perspective = owner, "perspective_", owner
    elif kind is flavors.Referenceable.remoteMessageReceived:
        obj, prefix = target, "remote_"
    elif kind is flavors.ViewPoint.remoteMessageReceived:
        obj, prefix = target.object, "view_"
        perspective = target.perspective
        extra = (perspective,)
    elif kind is flavors.RemoteCache.remoteMessageReceived:
        obj, prefix = target, "observe_"
    else:
        return None
    method = getattr(obj, prefix + name, None)
    if method is None:
        raise flavors.NoSuchMethod(f"No such method: {prefix}{name}")
    return method, perspective, extra


def checkedArguments(args: Any, kw: Any) -> Any:
    """
    The unjellied positional and keyword arguments of a call, checked,
    with keyword names as C{str}.
    """
    if not isinstance(args, (tuple, list)) or not isinstance(kw, dict):
        raise _jelly.MalformedJelly("call arguments are not a list and a dict")
    if kw:
        kw = {
            (k.decode("utf-8") if isinstance(k, bytes) else k): v for k, v in kw.items()
        }
        if not all(isinstance(k, str) for k in kw):
            raise _jelly.MalformedJelly("keyword argument names must be strings")
    return args, kw


def _checkArguments(
    method: Any, extra: tuple[Any, ...], args: Any, kw: dict[str, Any]
) -> Any:
    """
    Check the arguments of a typed call of C{method} against its
    annotations, and return its compiled checks (looked up once per call;
    for a method without annotations both checks are skipped).
    """
    checker = typecheck._callChecker(method)
    if checker.checksArguments:
        checker.checkArguments((*extra, *args), kw)
        # -- pbext.streams: and the items of stream arguments --
        _streams.checkArgumentItems(method, (*extra, *args), kw)
    return checker


def _checkReturn(value: Any, method: Any) -> Any:
    typecheck.checkReturn(method, value)
    return value


def sendAnswer(broker: Broker, netResult: Any, requestID: int) -> None:
    """
    Send the answer C{netResult} to C{requestID} on C{broker}, whose class
    keeps pbext's C{_sendAnswer}, C{sendCall} and C{sendEncoded}.

    While answers are held back to leave together (see
    L{pbext._flow.FlowControl.drain}), a small one is encoded and added to
    them here, without that chain of calls; anything else, and any
    failure, goes the way C{sendCall} takes it.
    """
    flow = broker._pbextFlow
    batch = flow.batch
    if batch is None or broker._pbextDropped:
        broker._sendAnswer(netResult, requestID)
        return
    exp = (b"answer", requestID, netResult)
    try:
        _flow.holdEncoded(
            flow,
            exp,
            broker._pbextOutgoingVocabulary(),
            broker._pbextLimits.maxOutgoingMessageBytes,
        )
    except Exception as e:
        # As Broker.sendCall handles it: too large, or a prepared value
        # its own code changed.
        if not notSent(broker, exp, e if isinstance(e, banana.BananaError) else None):
            raise


def sendError(broker: Broker, fail: Any, requestID: int) -> None:
    """
    Send an error answer on C{broker}, as L{pb.Broker._sendError} does, deciding
    whether the exception itself can travel with the taster jelly will
    use to send it.
    """
    taster: Any = broker._pbextSerialization.outgoingTaster
    unsafe = broker.factory.unsafeTracebacks
    if isinstance(fail, Failure):
        value = fail.value
        if isinstance(value, jelly.Jellyable) or taster.isClassAllowed(value.__class__):
            fail = value
        elif not isinstance(fail, pb.CopyableFailure):
            fail = pb.failure2Copyable(fail, unsafe)
    if isinstance(fail, pb.CopyableFailure):
        fail.unsafeTracebacks = unsafe
    broker.sendCall(b"error", requestID, broker.serialize(fail))


def notSent(broker: Broker, exp: tuple[object, ...], error: Exception | None) -> bool:
    """
    The expression C{exp} could not be sent by C{broker} (C{error}: too large;
    L{None}: the exception being handled).  Fail the call's caller, or
    answer the call with an error instead.

    @return: whether it was one of those, so handled.
    """
    command = exp[0] if exp else None
    requestID = exp[1] if len(exp) > 1 else None
    if command in (b"message", b"cachemessage"):
        if broker._pbextOutgoing().notSent(requestID, error):
            return True
    if command == b"answer" and isinstance(requestID, int):
        if error is not None:
            broker._pbextViolation("answerTooLarge", str(error))
            failure = Failure(MessageTooLarge(f"answer not sent: {error}"))
        else:
            failure = Failure()
            _log.failure(
                "pbext: the answer to request {requestID} could not be sent",
                failure,
                requestID=requestID,
            )
        broker._sendError(failure, requestID)
        return True
    return False
