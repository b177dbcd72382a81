"""
The outgoing call table of one broker's connection: the calls sent and
waiting for their answers, with a timeout (the C{pbtimeout} keyword or
the broker's C{callTimeout}) and cancellation; an abandoned call's late
answer is dropped quietly, and a pbext peer is asked to cancel it.

The table itself is Twisted's C{waitingForAnswers} on the broker, as
classic code (L{pbext.keepalive.pingPeer}, applications) expects.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.spread import jelly, pb

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

#: What jelly expressions that are not lists may be: each stands for itself
#: (every unjellier gives it as it is).
_ATOMS = frozenset({int, float, bytes})


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
    )

    def __init__(
        self,
        broker: Broker,
        serialization: Serialization,
        unserializer: Serialization | Broker,
    ) -> None:
        """
        @param serialization: the broker's serializer: call arguments are
            its C{serializeOut}.
        @param unserializer: whose C{unserialize} answers go through: the
            broker's serializer, or the broker if its class overrides
            C{unserialize}.
        """
        self._broker = broker
        self._serialization = serialization
        self._unserializer = unserializer
        # The serializer's unserialize gives a Jellied's value, and an atom,
        # as they are: answers the decoder made need no call to it.
        self._inlineAnswers = unserializer is serialization
        # Made when a call is first abandoned.
        self._abandoned: dict[int, None] | None = None

    def send(
        self,
        prefix: bytes,
        perspective: Any,
        objectID: Any,
        message: bytes,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> defer.Deferred[Any] | None:
        """
        Send a call as L{pb.Broker._sendMessage} does, with a timeout (the
        C{pbtimeout} keyword, or the broker's C{callTimeout}) and cancellation.
        """
        broker = self._broker
        timeout = kw.pop("pbtimeout", broker.callTimeout)
        if "pbcallback" in kw or "pberrback" in kw:
            # The deprecated callback keywords: Twisted's own path.
            return self._sendChained(
                prefix, perspective, objectID, message, args, kw, timeout
            )
        answerRequired = kw.pop("pbanswer", 1)
        if broker.disconnected:
            raise pb.DeadReferenceError("Calling Stale Broker")
        try:
            serializeOut = self._serialization.serializeOut
            netArgs = serializeOut(args, perspective, message)
            # No keywords, the usual case: their jelly is always this.
            netKw = serializeOut(kw, perspective, message) if kw else [_DICTIONARY_ATOM]
        except BaseException:
            return defer.fail(Failure())
        requestID = broker.newRequestID()
        result: defer.Deferred[Any] | None = None
        if answerRequired:
            # One Deferred, waited for, returned, and cancellable.
            def cancel(d: defer.Deferred[Any]) -> None:
                self.abandon(requestID)

            result = defer.Deferred(cancel)
            broker.waitingForAnswers[requestID] = result
        broker.sendCall(
            prefix + b"message",
            requestID,
            objectID,
            message,
            answerRequired,
            netArgs,
            netKw,
        )
        if (
            result is not None
            and timeout is not None
            and broker.waitingForAnswers.get(requestID) is result
        ):
            result.addTimeout(
                timeout,
                broker._pbextGetClock(),
                self._onTimeout(requestID, timeout, message),
            )
        return result

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
