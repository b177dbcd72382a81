"""
The outgoing call table of one broker's connection: the calls sent and
waiting for their answers, with a timeout (the C{pbtimeout} keyword or
the broker's C{callTimeout}) and cancellation; an abandoned call's late
answer is dropped quietly, and a pbext peer is asked to cancel it.

The table itself is Twisted's C{waitingForAnswers} on the broker, as
classic code (L{pbext.keepalive.pingPeer}, applications) expects.  Calls
are sent by L{sendMessage}, which is the broker's C{_sendMessage}.

@since: pbext NEXT
"""

from __future__ import annotations

from types import MethodType as _MethodType
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb

from pbext import _flow
from pbext._accelerator import speedups as _speedups
from pbext._violations import seconds, short
from pbext._wire import CONTROL_NAME, PBEXT_DIALECT, CallTimeout, MessageTooLarge

if TYPE_CHECKING:
    from pbext._serialization import Serialization
    from pbext.broker import Broker

#: How many abandoned (timed out or cancelled) request IDs are remembered so
#: that their late answers are dropped quietly.
ABANDONED_MEMORY = 4096

#: The jelly of an empty dictionary is C{[_DICTIONARY_ATOM]}.  Read once:
#: C{twisted.spread.jelly} is a deprecation proxy, slow to read from.
_DICTIONARY_ATOM: bytes = jelly.dictionary_atom

#: The type of the values the accelerated decoder unjellied already.
_JELLIED: Any = None if _speedups is None else _speedups.Jellied

#: The accelerated encoder's check and preparation of a plain value (see
#: L{pbext._serialization.Serialization.serializeOut}).
_preparePlain: Any = None if _speedups is None else _speedups.preparePlain

#: What jelly expressions that are not lists may be: each stands for itself
#: (every unjellier gives it as it is).
_ATOMS = frozenset({int, float, bytes})


def _cancelCall(call: tuple[OutgoingCalls, int], d: defer.Deferred[Any]) -> None:
    """
    The canceller of a call's Deferred, bound to its table and request ID
    (C{call}): abandon the call.  Bound with L{types.MethodType}, which
    costs less per call than a closure.
    """
    calls, requestID = call
    calls.abandon(requestID)


class OutgoingCalls:
    """
    The calls one connection sent and waits on.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_broker",
        "_serialization",
        "_unserializer",
        "_inlineAnswers",
        "_abandoned",
        "_direct",
        "_routed",
    )

    def __init__(
        self,
        broker: Broker,
        serialization: Serialization,
        unserializer: Serialization | Broker,
        direct: bool = False,
        routed: bool = False,
    ) -> None:
        """
        @param serialization: the broker's serializer: call arguments are
            its C{serializeOut}.
        @param unserializer: whose C{unserialize} answers go through: the
            broker's serializer, or the broker if its class overrides
            C{unserialize}.
        @param direct: whether the broker's class keeps Twisted's
            C{newRequestID} and pbext's C{sendCall} and C{sendEncoded}, so
            that a call may be numbered and held back without calling them
            (see L{sendMessage} and L{_transmit}).
        @param routed: whether the broker's class keeps pbext's
            C{callExpressionReceived}, C{expressionReceived} and
            C{proto_answer}, so that answers may come straight here (see
            L{answerer}).
        """
        self._broker = broker
        self._serialization = serialization
        self._unserializer = unserializer
        # The serializer's unserialize gives a Jellied's value, and an atom,
        # as they are: answers the decoder made need no call to it.
        self._inlineAnswers = unserializer is serialization
        self._direct = direct
        self._routed = routed
        # Made when a call is first abandoned.
        self._abandoned: dict[int, None] | None = None

    def _sendChained(
        self,
        prefix: bytes,
        perspective: Any,
        objectID: Any,
        message: bytes,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        timeout: float | None,
    ) -> defer.Deferred[Any] | None:
        """
        Send a call with L{pb.Broker._sendMessage} and chain a cancellable
        Deferred (with the timeout) to the one it waits on.
        """
        broker = self._broker
        result = pb.Broker._sendMessage(
            broker, prefix, perspective, objectID, message, args, kw
        )
        if result is None:
            return None
        requestID = broker.currentRequestID
        if broker.waitingForAnswers.get(requestID) is not result:
            # Failed before it was sent (serialization) or already answered.
            return result

        def cancel(d: defer.Deferred[Any]) -> None:
            self.abandon(requestID)

        outer: defer.Deferred[Any] = defer.Deferred(cancel)
        result.chainDeferred(outer)
        if timeout is not None:
            outer.addTimeout(
                timeout,
                broker._pbextGetClock(),
                self._onTimeout(requestID, timeout, message),
            )
        return outer

    def _startTimeout(
        self,
        result: defer.Deferred[Any],
        requestID: int,
        timeout: float,
        message: bytes | str,
    ) -> None:
        """
        Time out the call C{requestID} waited for by C{result} after
        C{timeout} seconds, if it still waits (it may be answered or failed
        already).
        """
        broker = self._broker
        if broker.waitingForAnswers.get(requestID) is result:
            result.addTimeout(
                timeout,
                broker._pbextGetClock(),
                self._onTimeout(requestID, timeout, message),
            )

    @staticmethod
    def _onTimeout(
        requestID: int, timeout: float, message: bytes | str
    ) -> Callable[[Any, float], Any]:
        """
        What a call's Deferred gives when its timeout cancels it: a
        L{CallTimeout} naming the call and what to do.
        """
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")

        def onTimeout(result: Any, _seconds: float) -> Any:
            if isinstance(result, Failure) and result.check(defer.CancelledError):
                return Failure(
                    CallTimeout(
                        f"no answer to {message}() (call {requestID}) in "
                        f"{seconds(timeout)}; if it needs longer, pass a "
                        f"larger pbtimeout= to the call or callTimeout= to "
                        f"the factory"
                    )
                )
            return result

        return onTimeout

    def abandon(self, requestID: int) -> None:
        """
        Forget the caller of C{requestID}: its answer, if one comes, is
        dropped quietly, and a pbext peer is asked to cancel the call.
        """
        broker = self._broker
        if broker.waitingForAnswers is None:
            return
        if broker.waitingForAnswers.pop(requestID, None) is None:
            return
        abandoned = self._abandoned
        if abandoned is None:
            abandoned = self._abandoned = {}
        abandoned[requestID] = None
        while len(abandoned) > ABANDONED_MEMORY:
            del abandoned[next(iter(abandoned))]
        if PBEXT_DIALECT in broker._pbextPeerFeatures and not broker.disconnected:
            broker.remoteForName(CONTROL_NAME).callRemote(
                "cancel", requestID, pbanswer=0
            )

    def _take(self, requestID: object, kind: str) -> defer.Deferred[Any] | None:
        """
        The Deferred waiting for C{requestID}'s C{kind} (answer or error),
        no longer waiting; L{None} if no call waits for it.
        """
        broker = self._broker
        d = None
        if isinstance(requestID, int):
            d = broker.waitingForAnswers.pop(requestID, None)
        if d is None:
            abandoned = self._abandoned
            if abandoned is not None and requestID in abandoned:
                del abandoned[requestID]  # type: ignore[arg-type] # an int: it is a key
            else:
                broker._pbextViolation(
                    "unexpectedAnswer",
                    f"{kind} for no pending call",
                    requestID=requestID,
                )
        return d

    def answerer(self) -> Callable[[object, object], None] | None:
        """
        Where the queue's drain (L{pbext._flow.handleQueued}) may hand an
        C{answer} expression's request ID and value, without the broker's
        C{callExpressionReceived}, C{expressionReceived} and
        C{proto_answer} it would pass through: L{answer}, if the broker's
        class keeps those and a dialect is chosen (as those would check),
        else L{None}.
        """
        if self._routed and self._broker.currentDialect:
            return self.answer
        return None

    def answer(self, requestID: object, netResult: object) -> None:
        """
        The answer to C{requestID} arrived: give its caller the value.
        """
        # The usual case inline: an answer to a call that waits for it.
        d = None
        if type(requestID) is int:
            d = self._broker.waitingForAnswers.pop(requestID, None)
        if d is None:
            d = self._take(requestID, "answer")
            if d is None:
                return
        if self._inlineAnswers:
            kind = type(netResult)
            if kind is _JELLIED:
                d.callback(netResult.value)  # type: ignore[attr-defined] # a Jellied
                return
            if kind in _ATOMS:
                d.callback(netResult)
                return
        try:
            result = self._unserializer.unserialize(netResult)
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)

    def error(self, requestID: object, fail: object) -> None:
        """
        The error answer to C{requestID} arrived: fail its caller.
        """
        d = self._take(requestID, "error")
        if d is None:
            return
        try:
            result = self._unserializer.unserialize(fail)
        except Exception:
            d.errback(Failure())
            return
        if not isinstance(result, (Failure, BaseException)):
            result = pb.RemoteError("?", short(result), "")
        d.errback(result)

    def notSent(self, requestID: object, error: Exception | None) -> bool:
        """
        The call C{requestID} could not be sent (C{error}: too large; L{None}:
        the current exception): fail its caller.

        @return: whether a caller was waiting for it.
        """
        d = self._broker.waitingForAnswers.pop(requestID, None)
        if d is None:
            return False
        if error is None:
            d.errback()
        else:
            d.errback(MessageTooLarge(f"call not sent: {error}"))
        return True


def sendMessage(
    broker: Broker,
    prefix: bytes,
    perspective: Any,
    objectID: Any,
    message: bytes,
    args: tuple[Any, ...],
    kw: dict[str, Any],
) -> defer.Deferred[Any] | None:
    """
    Send a call as L{pb.Broker._sendMessage} does, with a timeout (the
    C{pbtimeout} keyword, or the broker's C{callTimeout}) and cancellation:
    the broker's C{_sendMessage} (L{pbext.broker.Broker._sendMessage} is
    this function, so that a call costs no Python call more).

    The deprecated C{pbcallback} and C{pberrback} keywords take Twisted's
    own path (L{OutgoingCalls._sendChained}).  Keyword arguments go
    through the serializer's C{serializeOut}; a tuple of arguments takes
    its plain path inline (a tuple is no Deferred), with the vocabulary of
    the broker's C{_pbextOutgoingVocabulary}, found inline too.  The call
    is numbered inline if the broker's class keeps Twisted's
    C{newRequestID}, and sent by L{_transmit}.
    """
    calls = broker._pbextCalls or broker._pbextOutgoing()
    timeout = broker.callTimeout
    answerRequired = 1
    if kw:
        timeout = kw.pop("pbtimeout", timeout)
        if "pbcallback" in kw or "pberrback" in kw:
            return calls._sendChained(
                prefix, perspective, objectID, message, args, kw, timeout
            )
        answerRequired = kw.pop("pbanswer", 1)
    if broker.disconnected:
        raise pb.DeadReferenceError("Calling Stale Broker")
    serialization = calls._serialization
    vocabulary = broker.outgoingSymbols if broker.currentDialect == b"pb" else None
    try:
        if not serialization.fusedSend or type(args) is not tuple:
            netArgs = serialization.serializeOut(args, perspective, message)
        else:
            plainTypes = serialization.plainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            try:
                netArgs = _preparePlain(
                    args, plainTypes.send, vocabulary, serialization._maxOutgoing
                )
            except banana.BananaError:
                # Too large: encoding the message fails the same way.
                netArgs = _JELLIED(args, plainTypes.send)
            if netArgs is None:
                netArgs = broker.serialize(args, perspective, message)
        netKw = [_DICTIONARY_ATOM]  # no keywords, the usual case: always this
        if kw:
            netKw = serialization.serializeOut(kw, perspective, message)
    except BaseException:
        return defer.fail(Failure())
    if calls._direct:
        requestID = broker.currentRequestID = broker.currentRequestID + 1
    else:
        requestID = broker.newRequestID()
    result: defer.Deferred[Any] | None = None
    if answerRequired:
        result = defer.Deferred(_MethodType(_cancelCall, (calls, requestID)))
        broker.waitingForAnswers[requestID] = result
    command = prefix + b"message" if prefix else b"message"
    exp = (command, requestID, objectID, message, answerRequired, netArgs, netKw)
    _transmit(calls, exp, vocabulary)
    if timeout is not None and result is not None:
        calls._startTimeout(result, requestID, timeout, message)
    return result


def _transmit(
    calls: OutgoingCalls,
    exp: tuple[Any, ...],
    vocabulary: dict[bytes, int] | None,
) -> None:
    """
    Send the call C{exp} with the broker's C{sendCall}; but while messages
    are held back to leave together (see L{pbext._flow.FlowControl.drain})
    and the broker's class keeps pbext's C{sendCall} and C{sendEncoded},
    encode it (with C{vocabulary}) and hold it back as they would, without
    that chain of calls: a small call is added to those held, anything else
    goes to L{pbext._flow.send}, and a call that cannot be encoded fails
    its caller as C{sendCall} makes it.
    """
    broker = calls._broker
    flow = broker._pbextFlow
    batch = flow.batch
    if batch is None or not calls._direct or broker._pbextDropped:
        broker.sendCall(*exp)
        return
    try:
        _flow.holdEncoded(
            flow, exp, vocabulary, broker._pbextLimits.maxOutgoingMessageBytes
        )
    except Exception as e:
        # As Broker.sendCall handles it: too large, or a prepared value
        # its own code changed.
        error = e if isinstance(e, banana.BananaError) else None
        if not calls.notSent(exp[1], error):
            raise
