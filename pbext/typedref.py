"""
L{TypedReference}: call a remote object's methods as attributes, so that
mypy can check the calls against a C{typing.Protocol}.

C{ref.callRemote("add", 1, 2)} names its method with a string, which no
type checker can follow.  C{pbext.typed(ref, AppRoot)} returns a
L{TypedReference} typed as C{AppRoot} (a protocol written by C{python -m
pbext stubs}, or by hand): C{await root.add(1, 2)} runs
C{ref.callRemote("add", 1, 2)}, and mypy reports a misspelt method or an
argument of the wrong type.

At run time the proxy checks nothing: every public attribute is a remote
method.  A result that is a reference comes back as a L{TypedReference}
too (the stubs type such a result as its class's protocol), and a
L{TypedReference} passed as an argument is sent as the reference it
wraps.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.spread import pb

__all__ = ["TypedReference", "referenceOf"]


class TypedReference:
    """
    A remote reference whose attributes are its remote methods.

    Made by L{pbext.typed}C{(reference, Protocol)}; its methods return the
    L{Deferred} that C{callRemote} returns, which can be awaited.  Names
    starting with an underscore are not remote methods (PB's policy refuses
    them anyway), so they raise L{AttributeError}.

    @since: pbext NEXT
    """

    __slots__ = ("_pbextReference",)

    def __init__(self, reference: pb.RemoteReference) -> None:
        if not isinstance(reference, pb.RemoteReference):
            raise TypeError(
                f"pbext.typed(reference, Protocol) needs a RemoteReference, "
                f"not {type(reference).__name__}"
            )
        self._pbextReference = reference

    # Deferred[Any]: the peer's answer, as pb.RemoteReference.callRemote
    # gives it; the protocol given to pbext.typed types it for callers.
    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        reference = self._pbextReference

        def call(*args: object, **kwargs: object) -> Deferred[Any]:
            sent = [_unwrap(a) for a in args]
            sentKw = {k: _unwrap(v) for k, v in kwargs.items()}
            return reference.callRemote(name, *sent, **sentKw).addCallback(_wrap)

        call.__name__ = call.__qualname__ = name
        return call

    def __repr__(self) -> str:
        return f"<TypedReference to {self._pbextReference!r}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedReference):
            return self._pbextReference == other._pbextReference
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._pbextReference)


def referenceOf(proxy: object) -> pb.RemoteReference:
    """
    The L{pb.RemoteReference} a L{TypedReference} calls (or C{proxy}
    itself, if it is one), to call C{callRemote} with options such as
    C{pbtimeout} or to notify on disconnect.

    @raise TypeError: if C{proxy} is neither.
    @since: pbext NEXT
    """
    if isinstance(proxy, TypedReference):
        return proxy._pbextReference
    if isinstance(proxy, pb.RemoteReference):
        return proxy
    raise TypeError(f"not a remote reference: {type(proxy).__name__}")


def _unwrap(value: object) -> object:
    if isinstance(value, TypedReference):
        return value._pbextReference
    return value


def _wrap(value: object) -> object:
    if isinstance(value, pb.RemoteReference):
        return TypedReference(value)
    return value
