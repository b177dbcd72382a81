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

from twisted.spread import banana, flavors, pb

from pbext._accelerator import speedups as _speedups
from pbext._dispatch import (
    _JELLIED,
    _NEVER_AWAITABLE,
    _REFERENCEABLE,
    IncomingDispatch,
    checkedArguments,
)
from pbext._flow import BATCH_BYTES

if TYPE_CHECKING:
    from pbext._serialization import Serialization
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


def keepsMethods(kind: type, base: type, names: tuple[str, ...]) -> bool:
    """
    Whether the broker class C{kind} keeps every method of C{names} as
    C{base} (pbext's broker) has it: what tells whether pbext may skip
    calling them on a path of its own.
    """
    return all(getattr(kind, name) is getattr(base, name) for name in names)


def dispatcherClass(kind: type, base: type) -> type[IncomingDispatch]:
    """
    The dispatcher of a broker of class C{kind}: a L{PlainDispatch} if
    it keeps L{CALL_ROUTE}, else an L{IncomingDispatch}.
    """
    return PlainDispatch if keepsMethods(kind, base, CALL_ROUTE) else IncomingDispatch


class PlainDispatch(IncomingDispatch):
    """
    The dispatcher of a broker whose class keeps L{CALL_ROUTE}: it handles
    the expressions queued itself (L{plainMessage}).
    """

    __slots__ = ("_answersHeld",)

    def __init__(
        self,
        broker: Broker,
        serialization: Serialization,
        unserializer: Serialization | Broker,
        directAnswers: bool = False,
    ) -> None:
        super().__init__(broker, serialization, unserializer, directAnswers)
        # Whether _speedups.callPlain may run and answer plain calls: the
        # accelerator is there and makes the arguments, and answers and
        # plain results go as pbext sends them.
        self._answersHeld = (
            _speedups is not None
            and directAnswers
            and self._jelliedArguments
            and serialization.fusedSend
        )

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
        name = self.admitted(requestID, message, answerRequired)
        if name is None:
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
        do, and answer it: with the accelerator, while answers are held
        back to leave together (see L{pbext._flow.FlowControl.drain}), a
        plain call is run and its answer encoded by C{_speedups.callPlain}
        (which says where it stopped otherwise: L{plainOutcome}), and added
        to them as L{sendAnswer} adds it.
        """
        broker = self._broker
        flow = broker._pbextFlow
        batch = flow.batch
        try:
            if (
                batch is not None
                and answerRequired
                and self._answersHeld
                and type(netArgs) is type(netKw) is _JELLIED
                and not broker.typedCalls
                and not broker._pbextDropped
                and not self._serialization.plainTypes.stale
            ):
                outcome = _speedups.callPlain(  # type: ignore[union-attr] # _answersHeld: the accelerator is there
                    target,
                    "remote_" + name,
                    netArgs,
                    netKw,
                    b"answer",
                    requestID,
                    broker._pbextOutgoingVocabulary(),
                    broker._pbextLimits.maxOutgoingMessageBytes,
                )
                if outcome is not None and len(outcome) == 3:
                    # What sendAnswer does with an answer that fits.
                    data = outcome[2]
                    batch = flow.batch
                    if (
                        batch is not None
                        and not broker._pbextDropped
                        and flow.batchBytes + len(data) <= BATCH_BYTES
                    ):
                        batch.append(data)
                        flow.batchBytes += len(data)
                        return
                result = self.plainOutcome(
                    outcome, name, netArgs, netKw, answerRequired
                )
            else:
                result = self.plainFind(target, name, answerRequired, netArgs, netKw)
        except BaseException as e:
            self._refused(e, requestID, answerRequired, name)
            return
        self.answer(result, requestID, answerRequired, name)

    def plainFind(
        self, target: Any, name: str, answerRequired: object, netArgs: Any, netKw: Any
    ) -> Any:
        """
        Find and run the method of a call on C{target}, a
        L{pb.Referenceable}, as C{dispatch} does, where
        C{_speedups.callPlain} does not.

        @return: the serialized result (possibly a L{defer.Deferred}).
        """
        method = getattr(target, "remote_" + name, None)
        if method is None:
            raise flavors.NoSuchMethod(f"No such method: remote_{name}")
        if self._jelliedArguments and type(netArgs) is type(netKw) is _JELLIED:
            return self.plainCall(method, netArgs.value, netKw.value, answerRequired)
        return self.invoke(method, None, (), netArgs, netKw, answerRequired)

    def plainOutcome(
        self, outcome: Any, name: str, netArgs: Any, netKw: Any, answerRequired: object
    ) -> Any:
        """
        Go on with a call where C{_speedups.callPlain} stopped (its
        C{outcome}): no such method, a method not called, or a result not
        encoded (or whose answer was not added to those held back: it is
        serialized again, as nothing of its own runs to encode it).

        @return: the serialized result (possibly a L{defer.Deferred}).
        """
        if outcome is None:
            raise flavors.NoSuchMethod(f"No such method: remote_{name}")
        if len(outcome) == 1:
            return self.invoke(outcome[0], None, (), netArgs, netKw, answerRequired)
        method, state = outcome[:2]
        return self.plainResult(
            state, method, netArgs.value, netKw.value, answerRequired
        )

    def plainCall(self, method: Any, args: Any, kw: Any, answerRequired: object) -> Any:
        """
        L{IncomingDispatch.invoke} for arguments the decoder unjellied: a
        call with no keyword arguments, of a method not typed, is run here
        and its result serialized by L{plainResult}; anything else goes on
        as C{invoke} goes.
        """
        if kw or type(kw) is not dict or type(args) not in (tuple, list):
            args, kw = checkedArguments(args, kw)
        # typecheck.isTyped, inline (the path every plain call takes).
        typed = self._broker.typedCalls or (
            getattr(method, "_pbextTyped", False)
            or bool(
                getattr(type(getattr(method, "__self__", None)), "_pbextTyped", False)
            )
        )
        if typed or kw:
            return self.run(method, None, (), args, kw, typed, answerRequired)
        return self.plainResult(method(*args), method, args, kw, answerRequired)

    def plainResult(
        self, state: Any, method: Any, args: Any, kw: Any, answerRequired: object
    ) -> Any:
        """
        L{IncomingDispatch.finish} for the result C{state} of a call with
        no keyword arguments of a method not typed: a plain builtin is
        serialized here, as L{pbext._serialization.Serialization.serializeOut}
        does.
        """
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
        send = plainTypes.send
        broker = self._broker
        try:
            prepared = _speedups.preparePlain(
                state,
                send,
                broker._pbextOutgoingVocabulary(),
                serialization._maxOutgoing,
            )
        except banana.BananaError:
            # As serializeOut: encoding the answer fails the same way.
            return _JELLIED(state, send)
        if prepared is not None:
            return prepared
        return broker.serialize(state, None, method, args, kw)
