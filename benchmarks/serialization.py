"""
The serialization-only workload: jelly and banana without a network.

Both PB codecs turn the nested structure into the bytes PB puts on the wire
(jelly, then banana in the C{b"pb"} dialect with its vocabulary) and back
(banana decoding fed in 64 KiB chunks, as a TCP transport delivers them,
then unjelly).  The C{floor} system's codec is msgpack's own C{packb} and
C{unpackb} of the same structure (the serializer Pyro5 is measured with),
so that pbext's encode and decode can be set against a C codec's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from twisted.spread import banana, jelly

from benchmarks import payloads
from benchmarks.sample import check, now, sample

#: The most bytes a Twisted TCP transport hands to C{dataReceived} at once.
CHUNK = 64 * 1024

#: The jelly security options classic PB brokers use.
_SECURITY = jelly.globalSecurity


def _chunks(data: bytes) -> List[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]


class RoundTrip(Protocol):
    """
    What L{measure} times: an encoder and a decoder.
    """

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class Codec:
    """
    A jelly and banana encoder and decoder for one system.

    @ivar jelly: Turns an object into a jelly s-expression.
    @ivar unjelly: Turns an s-expression back into an object.
    @ivar bananaEncode: Turns an s-expression into banana bytes.
    @ivar bananaDecode: Turns banana bytes (a list of chunks) into the
        s-expression.
    """

    def __init__(
        self,
        jelly: Callable[[Any], Any],
        unjelly: Callable[[Any], Any],
        bananaEncode: Callable[[Any], bytes],
        bananaDecode: Callable[[List[bytes]], Any],
    ) -> None:
        self.jelly = jelly
        self.unjelly = unjelly
        self.bananaEncode = bananaEncode
        self.bananaDecode = bananaDecode

    def encode(self, obj: Any) -> bytes:
        return self.bananaEncode(self.jelly(obj))

    def decode(self, data: bytes) -> Any:
        return self.unjelly(self.bananaDecode(_chunks(data)))


class MsgpackCodec:
    """
    msgpack's C{packb} and C{unpackb} with their defaults: the floor of the
    serialization workload.  Decoding joins the 64 KiB chunks a transport
    delivers into one message first, as a framed reader does.
    """

    def __init__(self) -> None:
        import msgpack

        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def encode(self, obj: Any) -> bytes:
        data: bytes = self._packb(obj)
        return data

    def decode(self, data: bytes) -> Any:
        return self._unpackb(b"".join(_chunks(data)))


def _msgpackNotes() -> List[str]:
    """
    Which msgpack the floor uses, and whether it is its C extension.
    """
    import msgpack

    kind = "C extension"
    if not msgpack.Packer.__module__.endswith("_cmsgpack"):
        kind = "pure Python fallback"
    version = ".".join(str(part) for part in msgpack.version)
    return [f"msgpack {version} packb/unpackb ({kind})"]


def _stockBanana() -> Tuple[Callable[[Any], bytes], Callable[[List[bytes]], Any]]:
    """
    Stock banana in the C{b"pb"} dialect: C{Banana.sendEncoded} and
    C{Banana.dataReceived}, as a classic broker uses them.
    """
    written: List[bytes] = []
    received: List[Any] = []

    class Transport:
        write = written.append

    encoder = banana.Banana(isClient=1)
    encoder.connectionMade()
    encoder._selectDialect(b"pb")
    encoder.transport = Transport()
    decoder = banana.Banana(isClient=1)
    decoder.connectionMade()
    decoder._selectDialect(b"pb")
    decoder.expressionReceived = received.append

    def encode(sexp: Any) -> bytes:
        del written[:]
        encoder.sendEncoded(sexp)
        return b"".join(written)

    def decode(chunks: List[bytes]) -> Any:
        del received[:]
        for chunk in chunks:
            decoder.dataReceived(chunk)
        return received[0]

    return encode, decode


def _stockJelly() -> Tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    return (
        lambda obj: jelly.jelly(obj, taster=_SECURITY),
        lambda sexp: jelly.unjelly(sexp, taster=_SECURITY),
    )


def codecFor(system: str) -> Tuple[Optional[RoundTrip], List[str]]:
    """
    The codec of C{system} and notes on what it is made of.

    For pbext these are the pieces its broker uses, with the C{default}
    policy: C{pbext._jelly}'s C{jelly} and C{unjelly} with the policy's
    tasters, and C{pbext.codec}'s C{encode} and C{makeDecoder} with the policy's
    framing limits.  pbext's broker is being rewritten alongside these
    benchmarks: a piece that does not import (or fails a trial round trip)
    is replaced by stock Twisted's and a note says so; when neither
    exists the pbext side is skipped.

    @return: C{(codec, notes)}; C{codec} is L{None} for a system that is
        not measured here, and then the first note says why.
    """
    if system == "classic":
        return Codec(*_stockJelly(), *_stockBanana()), []
    if system == "floor":
        try:
            return MsgpackCodec(), _msgpackNotes()
        except ImportError as e:
            return None, [f"msgpack is not importable ({e})"]
    if system != "pbext":
        return None, [f"{system}: the serialization workload compares PB codecs"]
    notes: List[str] = []
    policy = _pbextPolicy(notes)
    jellyPair = _stockJelly()
    bananaPair = _stockBanana()
    found = 0
    try:
        jellyPair = _pbextJelly(policy)
        found += 1
    except Exception as e:
        notes.append(f"stock jelly/unjelly: pbext._jelly is unusable ({e!r:.200})")
    try:
        bananaPair = _pbextBanana(policy)
        found += 1
    except Exception as e:
        notes.append(f"stock banana: pbext.codec is unusable ({e!r:.200})")
    if not found:
        return None, ["skipped: neither pbext.codec nor pbext._jelly is usable"]
    return Codec(*jellyPair, *bananaPair), notes


def _pbextPolicy(notes: List[str]) -> Any:
    """
    pbext's C{default} security policy, or L{None} (with a note) if
    C{pbext.security} does not provide it.
    """
    try:
        from pbext.security import defaultPolicy

        return defaultPolicy()
    except Exception as e:
        notes.append(f"no pbext default policy ({e!r:.200}): codec defaults")
        return None


_TRIAL: Any = [{"a": "b", "c": [1, 2.5, None, b"d"]}, ("e",)]


def _pbextJelly(policy: Any) -> Tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """
    pbext's jelly and unjelly as its broker calls them (plain fast paths
    first), with no broker (as C{invoker}) and no copyable registries.

    @raise Exception: If they do not import or fail a trial round trip.
    """
    from pbext import _jelly  # type: ignore[attr-defined]

    jellyWith = _jelly.jelly
    unjellyWith = _jelly.unjelly
    outgoing = policy.outgoingTaster()
    incoming = policy.forConnection(())

    # The broker's own order: with the C accelerator, plain values are
    # written straight to banana and decoded straight to values (see
    # _pbextBanana); then the plain fast paths; then the full jellier and
    # unjellier for anything else.
    jellyPlain = getattr(_jelly, "jellyPlain", None)
    unjellyPlain = getattr(_jelly, "unjellyPlain", None)
    notPlain = getattr(_jelly, "NOT_PLAIN", None)
    speedups = _speedups()

    def jellyIt(obj: Any) -> Any:
        if speedups is not None and speedups.isPlain(obj):
            return speedups.Jellied(obj)
        if jellyPlain is not None:
            sexp = jellyPlain(obj)
            if sexp is not notPlain:
                return sexp
        return jellyWith(obj, outgoing, None, ())

    def unjellyIt(sexp: Any) -> Any:
        if speedups is not None and type(sexp) is speedups.Jellied:
            return sexp.value
        if unjellyPlain is not None:
            value = unjellyPlain(sexp)
            if value is not notPlain:
                return value
        return unjellyWith(sexp, incoming, None, (), policy)

    if unjellyIt(jellyIt(_TRIAL)) != _TRIAL:
        raise ValueError("pbext._jelly does not round-trip a small structure")
    return jellyIt, unjellyIt


def _speedups() -> Any:
    """
    pbext's C accelerator, or L{None} where it is not built (or pbext
    predates it).
    """
    try:
        from pbext._accelerator import speedups
    except ImportError:
        return None
    return speedups


def _pbextBanana(
    policy: Any,
) -> Tuple[Callable[[Any], bytes], Callable[[List[bytes]], Any]]:
    """
    pbext's banana codec with the C{b"pb"} vocabulary and the policy's
    limits, as its broker uses it.

    @raise Exception: If it does not import or fails a trial round trip.
    """
    from pbext import codec

    outgoing = banana.Banana.outgoingVocabulary
    incoming = banana.Banana.incomingVocabulary
    encodeWith = codec.encode
    limits: Dict[str, Any] = {}
    maxBytes = None
    if policy is not None:
        limits = policy.limits.framingLimits()
        maxBytes = policy.limits.maxOutgoingMessageBytes
    decoder = codec.makeDecoder(vocabulary=incoming, **limits)
    if _speedups() is not None:
        # As pbext's broker decodes: plain values unjellied while parsing.
        decoder.setPlainJelly(True)
    feed = decoder.feed

    # A value travels in an answer message, as in a call's result: with the
    # accelerator, that is where it is written and read in one pass.
    def encode(sexp: Any) -> bytes:
        return encodeWith([b"answer", 1, sexp], outgoing, maxBytes)

    def decode(chunks: List[bytes]) -> Any:
        received: List[Any] = []
        for chunk in chunks:
            received.extend(feed(chunk))
        return received[0][2]

    trial = [b"trial", 1, -2, 2**40, 1.5, b"x" * 300, [b"nested"]]
    if decode([encode(trial)]) != trial:
        raise ValueError("pbext.codec does not round-trip a small expression")
    return encode, decode


def measure(
    codec: RoundTrip,
    count: int,
    seconds: float,
    warmup: int,
    dicts: int = payloads.STRUCTURE_DICTS,
) -> Dict[str, Any]:
    """
    Time up to C{count} round trips (encode then decode) of the nested
    structure, stopping once C{seconds} have passed.

    @return: The client's result dictionary; C{extra} holds the wire size
        and the mean time of one encoding and of one decoding.
    """
    structure = payloads.makeStructure(dicts)
    data = codec.encode(structure)
    check(codec.decode(data) == structure, "decode(encode(structure))")
    for _i in range(max(0, warmup - 1)):
        codec.decode(codec.encode(structure))
    encoding = decoding = 0.0
    completed = 0
    start = now()
    deadline = start + seconds
    for _i in range(count):
        t0 = now()
        data = codec.encode(structure)
        t1 = now()
        codec.decode(data)
        t2 = now()
        encoding += t1 - t0
        decoding += t2 - t1
        completed += 1
        if t2 >= deadline:
            break
    elapsed = now() - start
    extra = {
        "wireBytes": len(data),
        "encodeSeconds": encoding / completed,
        "decodeSeconds": decoding / completed,
    }
    return sample(
        completed / elapsed, completed, elapsed, completed < count, extra=extra
    )
