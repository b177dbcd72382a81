"""
The direct path of a plain incoming call: the dispatcher of a broker
that keeps pbext's route for calls takes each queued C{message} straight
from the queue, finds a L{pb.Referenceable} target and its C{remote_}
method, runs it and answers it, without the broker's chain of calls
(C{callExpressionReceived}, C{expressionReceived}, C{proto_message},
C{_recvMessage}, C{localObjectForID}) and, for the commonest call (a
plain result, arguments the decoder unjellied, no keyword arguments, a
method not typed), without the general path's steps.

Every step is the general path's, in the same order: anything else
leaves this path before the step where it differs, and goes on along
L{pbext._dispatch.IncomingDispatch}'s general path from there, so that
nothing is done twice.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.spread import banana, flavors, pb

from pbext._accelerator import speedups as _speedups
from pbext._dispatch import (
    _JELLIED,
    _NEVER_AWAITABLE,
    _REFERENCEABLE,
    IncomingDispatch,
    checkedArguments,
    sendAnswer,
)
from pbext._flow import BATCH_BYTES

if TYPE_CHECKING:
    from pbext.broker import Broker

#: The broker methods a call goes through on its way to its dispatcher
#: (the last one finds its target): a broker whose class overrides none
#: of them gets a L{PlainDispatch}.
CALL_ROUTE = (
    "callExpressionReceived",
    "expressionReceived",
    "proto_message",
    "_recvMessage",
    "localObjectForID",
)

#: What L{PlainDispatch.plainCall} gives for a call it answered itself.
_ANSWERED = object()

#: The types of a result serialized ahead of its answer (see
#: L{pbext._serialization.Serialization.serializeOut}): never a Deferred.
_PREPARED: frozenset[type] = (
    frozenset()
    if _speedups is None
    else frozenset({_speedups.Jellied, _speedups.Encoded})
)


def keepsCallRoute(kind: type, base: type) -> bool:
    """
    Whether the broker class C{kind} keeps every method of L{CALL_ROUTE}
    as C{base} (pbext's broker) has it.
    """
    return all(getattr(kind, name) is getattr(base, name) for name in CALL_ROUTE)


def dispatcherClass(kind: type, base: type) -> type[IncomingDispatch]:
    """
    The dispatcher of a broker of class C{kind}: a L{PlainDispatch} if
    it keeps L{CALL_ROUTE}, else an L{IncomingDispatch}.
    """
    return PlainDispatch if keepsCallRoute(kind, base) else IncomingDispatch


class PlainDispatch(IncomingDispatch):
    """
    The dispatcher of a broker whose class keeps L{CALL_ROUTE}: it handles
    the expressions queued itself (L{plainMessage}).
    """

    __slots__ = ()

    def handler(self) -> Callable[[object], None]:
        """
        What handles the expressions queued now: L{plainMessage}, unless
        the broker was given a method of L{CALL_ROUTE} of its own (then
        its C{callExpressionReceived}).
        """
        broker: Broker = self._broker
        own = broker.__dict__
        if (
            "callExpressionReceived" in own
            or "expressionReceived" in own
            or "proto_message" in own
            or "_recvMessage" in own
            or "localObjectForID" in own
        ):
            return broker.callExpressionReceived
        return self.plainMessage

    def plainMessage(self, expression: object) -> None:
        """
        Handle one queued expression as the broker's methods of
        L{CALL_ROUTE} would: a call admitted to a L{pb.Referenceable} the
        broker holds is run by L{plainRun}, an answer handed to the
        broker's C{proto_answer} (as C{expressionReceived} hands it);
        anything else takes that chain of calls, or, once admitted,
        L{IncomingDispatch.found}.
        """
        broker = self._broker
        if type(expression) is not list or not broker.currentDialect:
            broker.callExpressionReceived(expression)
            return
        if len(expression) != 7 or expression[0] != b"message":
            # What expressionReceived does, the commonest case inline.
            if len(expression) == 3 and expression[0] == b"answer":
                broker.proto_answer(expression[1], expression[2])
            else:
                broker.expressionReceived(expression)
            return
        _, requestID, objectID, message, answerRequired, netArgs, netKw = expression
        if type(requestID) is not int or type(message) is not bytes:
            self.received(broker.localObjectForID, *expression[1:])
            return
        try:
            name = message.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        if not (
            self._policy.isMethodAllowed(name) and len(self.running) < self._maxCalls
        ) and not self._admit(requestID, name, answerRequired):
            return
        try:
            # As _control.localObjectForID finds an object the broker holds.
            local = broker.localObjects.get(objectID)
        except TypeError:
            local = None
        target = None if local is None else local.object
        if (
            target is None
            or getattr(type(target), "remoteMessageReceived", None)
            is not _REFERENCEABLE
            or isinstance(target, pb.AsReferenceable)
        ):
            self.found(
                broker.localObjectForID,
                requestID,
                objectID,
                name,
                answerRequired,
                netArgs,
                netKw,
            )
            return
        self.plainRun(target, requestID, name, answerRequired, netArgs, netKw)

    def plainRun(
        self,
        target: Any,
        requestID: int,
        name: str,
        answerRequired: object,
        netArgs: Any,
        netKw: Any,
    ) -> None:
        """
        Run the admitted call C{requestID} of C{name} on C{target}, a
        L{pb.Referenceable}, as L{IncomingDispatch.found} and C{dispatch}
        do, and answer it.
        """
        try:
            method = getattr(target, "remote_" + name, None)
            if method is None:
                raise flavors.NoSuchMethod(f"No such method: remote_{name}")
            if self._jelliedArguments and type(netArgs) is type(netKw) is _JELLIED:
                result = self.plainCall(
                    method, netArgs.value, netKw.value, answerRequired, requestID
                )
            else:
                result = self.invoke(method, None, (), netArgs, netKw, answerRequired)
        except BaseException as e:
            self._refused(e, requestID, answerRequired, name)
            return
        if result is _ANSWERED:
            return
        if type(result) not in _PREPARED and isinstance(result, defer.Deferred):
            self._track(result, requestID, answerRequired, name)
        elif answerRequired:
            if self._directAnswers:
                sendAnswer(self._broker, result, requestID)
            else:
                self._broker._sendAnswer(result, requestID)

    def plainCall(
        self,
        method: Any,
        args: Any,
        kw: Any,
        answerRequired: object,
        requestID: int,
    ) -> Any:
        """
        L{IncomingDispatch.invoke} for arguments the decoder unjellied: a
        call with no keyword arguments, of a method not typed, whose result
        is a plain builtin, is run and its result serialized here (as
        L{pbext._serialization.Serialization.serializeOut} does), or even
        answered (L{answerHeld}); anything else goes on as C{invoke} goes.

        @return: the serialized result, or L{_ANSWERED}.
        """
        if kw or type(kw) is not dict or type(args) not in (tuple, list):
            args, kw = checkedArguments(args, kw)
        broker = self._broker
        # typecheck.isTyped, inline (the path every plain call takes).
        typed = broker.typedCalls or (
            getattr(method, "_pbextTyped", False)
            or bool(
                getattr(type(getattr(method, "__self__", None)), "_pbextTyped", False)
            )
        )
        if typed or kw:
            return self.run(method, None, (), args, kw, typed, answerRequired)
        state = method(*args)
        serialization = self._serialization
        plainTypes = serialization.plainTypes
        if (
            type(state) not in _NEVER_AWAITABLE
            or not answerRequired
            or not serialization.fusedSend
            or plainTypes.stale
            or _speedups is None
        ):
            return self.finish(state, method, None, None, args, kw, answerRequired)
        vocabulary = broker._pbextOutgoingVocabulary()
        if self._directAnswers and self.answerHeld(state, requestID, vocabulary):
            return _ANSWERED
        send = plainTypes.send
        try:
            prepared = _speedups.preparePlain(
                state, send, vocabulary, serialization._maxOutgoing
            )
        except banana.BananaError:
            # As serializeOut: encoding the answer fails the same way.
            return _JELLIED(state, send)
        if prepared is not None:
            return prepared
        return broker.serialize(state, None, method, args, kw)

    def answerHeld(
        self, state: Any, requestID: int, vocabulary: dict[bytes, int] | None
    ) -> bool:
        """
        Answer the call C{requestID} with C{state}, as L{sendAnswer} would,
        if the answers are held back to leave together (see
        L{pbext._flow.FlowControl.drain}), C{state} is a small value of
        builtins only and its answer fits: encoded at once
        (C{_speedups.answerBytes}) and added to them.

        @return: whether it was; if not, nothing was done.
        """
        broker = self._broker
        flow = broker._pbextFlow
        batch = flow.batch
        if batch is None or broker._pbextDropped or _speedups is None:
            return False
        data = _speedups.answerBytes(
            b"answer",
            requestID,
            state,
            vocabulary,
            broker._pbextLimits.maxOutgoingMessageBytes,
        )
        if data is None or flow.batchBytes + len(data) > BATCH_BYTES:
            return False
        batch.append(data)
        flow.batchBytes += len(data)
        return True
