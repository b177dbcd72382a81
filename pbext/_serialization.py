"""
How one broker's connection turns values into jelly and back: the
connection's tasters, the plain fast paths (builtins and the registered
copyables of L{pbext._jelly.PlainTypes}), the fused C paths that skip
jelly altogether (L{pbext._speedups.preparePlain}; the decoder's
plain-jelly mode), and the full L{pbext._jelly} jellier and unjellier
with the connection's registries and policy.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.spread import banana, jelly

from pbext import _jelly
from pbext._accelerator import speedups as _speedups
from pbext.codec import makeDecoder
from pbext.copystate import CopyHookError, HookErrorLog
from pbext.security import (
    Limits,
    SecurityPolicy,
    _allowsBasicTypes,
    _allowsSentBuiltins,
)

if TYPE_CHECKING:
    from pbext.broker import Broker
    from pbext.interfaces import IDecoder

_NOT_PLAIN = _jelly.NOT_PLAIN
_JELLIED: Any = None if _speedups is None else _speedups.Jellied


class Serialization:
    """
    The serializer of one connection.

    @ivar incomingTaster: the taster received jelly is checked with.
    @ivar outgoingTaster: the taster sent jelly is checked with: the
        policy's, or the classic C{SecurityOptions} the application gave.
    @ivar plainSend: whether plain builtin values skip the jellier.
    @ivar plainReceive: whether plain builtin values skip the unjellier.
    @ivar plainTypes: the registered copyable types those paths handle.
    @ivar fusedSend: whether plain values are encoded by the C accelerator
        straight from the value, never jellied.
    @ivar fusedReceive: whether plain values arrive made by the decoder.
    """

    # One of each part per connection: no instance dict.
    __slots__ = (
        "_broker",
        "_policy",
        "_registries",
        "incomingTaster",
        "outgoingTaster",
        "plainSend",
        "plainReceive",
        "plainTypes",
        "fusedSend",
        "fusedReceive",
        "_maxOutgoing",
        "_hookErrors",
    )

    def __init__(
        self,
        broker: Broker,
        policy: SecurityPolicy,
        security: jelly.SecurityOptions,
        registries: tuple[Any, ...],
        ownSerialize: bool,
        ownUnserialize: bool,
    ) -> None:
        """
        @param ownSerialize: whether the broker's class serializes as
            pbext's does (it does not override C{serialize}); only then may
            the fused path skip it.
        @param ownUnserialize: the same, for C{unserialize}.
        """
        self._broker = broker
        self._policy = policy
        self._registries = registries
        self.incomingTaster = policy.forConnection(registries)
        outgoing: Any = policy.outgoingTaster()
        if security is not jelly.globalSecurity and not isinstance(
            security, SecurityPolicy
        ):
            # An application that passed its own SecurityOptions decides
            # what it sends, as with classic PB.
            outgoing = security
        self.outgoingTaster = outgoing
        # Decided once per connection: the tasters do not change.
        self.plainSend = _allowsSentBuiltins(outgoing)
        self.plainReceive = _allowsBasicTypes(self.incomingTaster)
        self.plainTypes = _jelly.PlainTypes(registries, self.incomingTaster)
        self.fusedSend = _speedups is not None and self.plainSend and ownSerialize
        self.fusedReceive = (
            _speedups is not None and self.plainReceive and ownUnserialize
        )
        self._maxOutgoing = policy.limits.maxOutgoingMessageBytes
        self._hookErrors: HookErrorLog | None = None

    def serialize(
        self,
        object: Any,
        perspective: Any = None,
        method: Any = None,
        args: Any = None,
        kw: Any = None,
    ) -> Any:
        """
        The jelly of C{object}, as L{twisted.spread.pb.Broker.serialize}
        gives it (a L{defer.Deferred} becomes one of the jelly).
        """
        if self.plainSend:
            # Builtin values (and the commonest registered copyables) need
            # neither a jellier nor the attributes below (only Jellyable
            # objects read them).
            plainTypes = self.plainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            sexp = _jelly.jellyPlain(object, plainTypes.send)
            if sexp is not _NOT_PLAIN:
                return sexp
        broker = self._broker
        if isinstance(object, defer.Deferred):
            return object.addCallback(broker.serialize, perspective, method, args, kw)
        broker.serializingPerspective = perspective
        broker.jellyMethod = method
        broker.jellyArgs = args
        broker.jellyKw = kw
        try:
            return _jelly.jelly(
                object, self.outgoingTaster, broker, self._registries, self._policy
            )
        finally:
            broker.serializingPerspective = None
            broker.jellyMethod = None
            broker.jellyArgs = None
            broker.jellyKw = None

    def serializeOut(
        self,
        value: Any,
        perspective: Any = None,
        method: Any = None,
        args: Any = None,
        kw: Any = None,
    ) -> Any:
        """
        Serialize a value that goes straight into a message (call arguments
        or a result) with the accelerated encoder, if it is plain: the
        encoder writes exactly the bytes of its plain jelly, without
        building that expression.  Anything else is the broker's
        C{serialize}.

        A small value becomes a L{_speedups.Jellied}, which the message's
        encoder writes; a larger one is encoded here, to a
        L{_speedups.Encoded} the message carries as it is: encoding it is
        how it is found to be plain, so its fields are read once, not once
        to check and once to write (see L{_speedups.preparePlain}).
        """
        if self.fusedSend and _speedups is not None:
            if type(value) is not defer.Deferred:
                plainTypes = self.plainTypes
                if plainTypes.stale:
                    plainTypes.refresh()
                send = plainTypes.send
                try:
                    prepared = _speedups.preparePlain(
                        value,
                        send,
                        self._broker._pbextOutgoingVocabulary(),
                        self._maxOutgoing,
                    )
                except banana.BananaError:
                    # Too large to send: encoding the message fails the
                    # same way, and sendCall reports it to the caller.
                    return _speedups.Jellied(value, send)
                if prepared is not None:
                    return prepared
            if isinstance(value, defer.Deferred):
                return value.addCallback(
                    self.serializeOut, perspective, method, args, kw
                )
        return self._broker.serialize(value, perspective, method, args, kw)

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        """
        The value of the jelly C{sexp}, checked against the connection's
        policy and registries.
        """
        if _JELLIED is not None and type(sexp) is _JELLIED:
            # Unjellied by the decoder already.
            return sexp.value
        if self.plainReceive:
            plainTypes = self.plainTypes
            if plainTypes.stale:
                plainTypes.refresh()
            result = _jelly.unjellyPlain(sexp, plainTypes.receive)
            if result is not _NOT_PLAIN:
                return result
        broker = self._broker
        broker.unserializingPerspective = perspective
        try:
            return _jelly.unjelly(
                sexp, self.incomingTaster, broker, self._registries, self._policy
            )
        except CopyHookError as e:
            self._reportHookError(e)
            raise
        finally:
            broker.unserializingPerspective = None

    def _reportHookError(self, error: CopyHookError) -> None:
        """
        Log an error of the application's own code building a received
        copy as a bug of the application, with its traceback (at most one
        a minute for each class): the peer is not blamed.
        """
        log = self._hookErrors
        if log is None:
            log = self._hookErrors = HookErrorLog(self._broker._pbextGetClock().seconds)
        log.report(error, self._broker._pbextPeerName())

    def decoder(self, limits: Limits) -> IDecoder:
        """
        A decoder for the connection's bytes, with the framing C{limits},
        that makes plain values itself where the fused path may.
        """
        decoder = makeDecoder(**limits.framingLimits())  # type: ignore[arg-type] # framingLimits gives makeDecoder's keywords
        if self.fusedReceive and decoder.accelerated:
            decoder.setPlainJelly(True)
            decoder.setPlainTypes(self.plainTypes.receive)
        return decoder

    def refreshPlainTypes(self, decoder: Any) -> None:
        """
        The registries changed, or the types learnt did (on either path):
        give the decoder the types it may build.  Called between two
        parses, whoever refreshed the tables.
        """
        plainTypes = self.plainTypes
        if plainTypes.stale:
            plainTypes.refresh()
        if plainTypes.decoderStale and self.fusedReceive:
            plainTypes.decoderStale = False
            if decoder.accelerated:
                decoder.setPlainTypes(plainTypes.receive)
