"""
The systems the benchmarks compare, and what they share.

C{classic} is stock L{twisted.spread.pb} on both ends and the baseline of
every ratio; C{pbext} is L{pbext.PBServerFactory} and L{pbext.PBClientFactory}
on both ends with their default options.  C{pyro5} (msgpack serializer) and
C{rpyc} are optional peers, measured only when importable.  C{floor} is no
RPC system at all but the reference under them: a raw Twisted
length-prefixed echo (L{benchmarks.floor}) on the network, and msgpack's own
C{packb}/C{unpackb} in the serialization workload.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Optional, Tuple

#: The baseline system: every ratio is a system's median over its median.
BASELINE = "classic"

#: Systems built on Twisted's PB, measured with a Twisted client.
TWISTED_SYSTEMS: Tuple[str, ...] = ("classic", "pbext")

#: Optional peers, measured with their own blocking clients.
PEERS: Tuple[str, ...] = ("pyro5", "rpyc")

#: The reference system: a raw Twisted echo protocol, and msgpack's codec.
FLOOR = "floor"

ALL_SYSTEMS: Tuple[str, ...] = TWISTED_SYSTEMS + PEERS + (FLOOR,)

#: Workloads where there is nothing for the floor to echo.
_NO_FLOOR: Dict[str, str] = {
    "copyables": "the echo floor moves bytes: it has no objects to copy",
    "classiccopies": "the echo floor moves bytes: it has no objects to copy",
}

#: The modules each optional peer needs.
_PEER_MODULES: Dict[str, Tuple[str, ...]] = {
    "pyro5": ("Pyro5.api", "msgpack"),
    "rpyc": ("rpyc",),
}

#: RPyC's connection settings on both ends.  C{allow_pickle} lets
#: C{rpyc.utils.classic.obtain} copy lists, dictionaries and objects by
#: value: without it RPyC hands out references, and an echo would measure
#: nothing but a proxy.
RPYC_CONFIG: Dict[str, Any] = {
    "allow_pickle": True,
    "sync_request_timeout": 120,
}

#: Worker threads of the Pyro5 server: more than the clients workload's
#: connections, which Pyro5's default pool of 80 would refuse.
PYRO_THREADS = 512


def available(system: str) -> Tuple[bool, str]:
    """
    Whether C{system} can be measured in this environment.

    @return: C{(True, version)} or C{(False, reason)}.
    """
    if system in TWISTED_SYSTEMS or system == FLOOR:
        return True, ""
    for name in _PEER_MODULES.get(system, ()):
        try:
            importlib.import_module(name)
        except ImportError as e:
            return False, f"not importable ({e}); `tox -e bench` installs it"
    return True, peerVersion(system) or ""


def unsupported(system: str, workload: str) -> Optional[str]:
    """
    Why C{system} takes no part in C{workload}, if it does not.

    The serialization workload compares PB's codecs (C{classic} and
    C{pbext}) with msgpack's (the C{floor}, when msgpack imports); the
    echo floor has no objects to copy.

    @return: The reason, for the notes, or L{None} if it takes part.
    """
    if workload == "serialize":
        if system in TWISTED_SYSTEMS:
            return None
        if system == FLOOR:
            try:
                importlib.import_module("msgpack")
            except ImportError as e:
                return f"msgpack is not importable ({e}); `tox -e bench` installs it"
            return None
        return "the serialization workload compares PB's codecs with msgpack's"
    if system == FLOOR:
        return _NO_FLOOR.get(workload)
    return None


def peerVersion(system: str) -> Optional[str]:
    """
    The installed version of an optional peer (or of msgpack, the
    floor's codec), or L{None}.
    """
    module = {"pyro5": "Pyro5", "rpyc": "rpyc", "msgpack": "msgpack"}.get(system)
    if module is None:
        return None
    try:
        imported = importlib.import_module(module)
    except ImportError:
        return None
    version = getattr(imported, "__version__", None)
    if version is None and system == "rpyc":
        version = getattr(imported, "version", None)
        version = getattr(version, "version_string", version)
    if version is None and system == "msgpack":
        version = ".".join(str(part) for part in getattr(imported, "version", ()))
    return None if version is None else str(version)


def readRSS(pid: int) -> Optional[int]:
    """
    The resident set size of process C{pid} in KiB, from
    C{/proc/<pid>/status}, or L{None} where there is no such file.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pointToDict(point: Any) -> Dict[str, Any]:
    from benchmarks.payloads import PLAIN_POINT_NAME

    return {
        "__class__": PLAIN_POINT_NAME,
        "x": point.x,
        "y": point.y,
        "name": point.name,
    }


def _dictToPoint(name: str, state: Dict[str, Any]) -> Any:
    from benchmarks.payloads import PlainPoint

    return PlainPoint(state["x"], state["y"], state["name"])


def configurePyroServer() -> None:
    """
    Set up Pyro5 in a server process: a thread pool large enough for the
    clients workload, and L{PlainPoint} sent as a dictionary.
    """
    import Pyro5
    import Pyro5.api

    from benchmarks.payloads import PlainPoint

    Pyro5.config.SERVERTYPE = "thread"
    Pyro5.config.THREADPOOL_SIZE = PYRO_THREADS
    Pyro5.api.register_class_to_dict(PlainPoint, _pointToDict)


def configurePyroClient() -> None:
    """
    Set up Pyro5 in a client process: the msgpack serializer, and
    L{PlainPoint} rebuilt from its dictionary.
    """
    import Pyro5
    import Pyro5.api

    from benchmarks.payloads import PLAIN_POINT_NAME

    Pyro5.config.SERIALIZER = "msgpack"
    Pyro5.api.register_dict_to_class(PLAIN_POINT_NAME, _dictToPoint)
