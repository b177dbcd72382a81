"""
The reference caps of one broker's connection: how many objects it gives
its peer references to (the policy's C{maxReferences}, instead of classic
PB's module-wide C{MAX_BROKER_REFS}), how many copies it caches for it
(C{maxCachedObjects}), and the checks that a C{decref}, C{decache} or
C{uncache} names an object the peer may release.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.spread import jelly, pb

from pbext._wire import PolicyViolation

if TYPE_CHECKING:
    from pbext.broker import Broker


def registerReference(broker: Broker, object: Any) -> Any:
    """
    Give C{object} an ID the peer of C{broker} can call, as
    L{pb.Broker.registerReference} does, within the policy's
    C{maxReferences}.

    @raise PolicyViolation: if the connection holds too many already.
    """
    puid = object.processUniqueID()
    luid = broker.luids.get(puid)
    if luid is not None:
        broker.localObjects[luid].incref()
        return luid
    # The same quota as classic (the control object is not stored).
    limit = broker._pbextLimits.maxReferences
    if len(broker.localObjects) > limit:
        broker._pbextViolation(
            "maxReferences", "too many references for one connection"
        )
        # As classic PB: a peer that keeps asking is disconnected.
        broker.maxBrokerRefsViolations += 1
        if broker.maxBrokerRefsViolations > 3:
            broker.transport.loseConnection()
        raise PolicyViolation(f"more than {limit} references on one connection")
    luid = broker.newLocalID()
    broker.localObjects[luid] = pb.Local(object)
    broker.luids[puid] = luid
    broker._pbextFlow.chargeObjects()
    return luid


def checkCacheRoom(broker: Broker) -> None:
    """
    Refuse to cache one more copy for C{broker}'s peer past the policy's
    C{maxCachedObjects}.

    @raise jelly.InsecureJelly: if the cache is full.
    """
    limit = broker._pbextLimits.maxCachedObjects
    if len(broker.locallyCachedObjects) >= limit:
        raise jelly.InsecureJelly(f"more than {limit} cached objects")


def knownID(broker: Broker, objectID: object, table: Any, command: str) -> bool:
    """
    Whether C{objectID} names an entry of C{table} that the peer may
    release; if not, log the bogus C{command} (classic PB crashed on it).
    """
    if isinstance(objectID, int) and objectID in table:
        return True
    broker._pbextViolation(
        "bad" + command.capitalize(),
        f"{command} of an unknown object",
        objectID=objectID,
    )
    return False


def heldObjects(broker: Broker) -> int:
    """
    How many objects C{broker}'s connection holds for its peer now:
    references and cacheables given to it (not counting the root; the
    control object is not stored), copies cached for it, and its calls
    running.
    """
    if broker.disconnected:
        return 0
    return (
        max(len(broker.localObjects) - 1, 0)
        + len(broker.remotelyCachedObjects)
        + len(broker.locallyCachedObjects)
        + len(broker._pbextDispatcher.running)
    )
