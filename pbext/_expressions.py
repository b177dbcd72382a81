"""
What pbext's unjellier and the modules it hands work to share about
received jelly expressions: L{MalformedJelly} and the errors malformed
input makes other code raise, the arity and reference-ID checks, and the
C{PREBUILT} tag.
"""

from __future__ import annotations

from typing import Any

from twisted.spread.jelly import InsecureJelly


class MalformedJelly(InsecureJelly):
    """
    A received jelly expression is not well formed: an expression with the
    wrong number or kinds of elements, a reference ID defined twice or
    never, a bad boolean or date string, an unhashable dictionary key, or
    nesting deeper than the stack allows.

    It is an L{twisted.spread.jelly.InsecureJelly}, so code that handles
    refused jelly handles it too; the original error, if any, is its C{__cause__}.

    @since: pbext NEXT
    """


# Its public home (and its name in a failure sent to a peer) is
# pbext._jelly, which exports it.
MalformedJelly.__module__ = "pbext._jelly"

# Errors that malformed input makes Python or Twisted code raise while
# unjellying; unjellyFull turns them into MalformedJelly.
MALFORMED_ERRORS = (
    ArithmeticError,
    AssertionError,
    AttributeError,
    ImportError,
    LookupError,
    RecursionError,
    TypeError,
    ValueError,
)


def checkArity(rest: list[Any], count: int, tag: str) -> None:
    """
    Refuse an expression whose arguments (after the tag) are not C{count}.
    """
    if len(rest) != count:
        raise MalformedJelly(
            f"{tag} expression needs {count} argument(s), got {len(rest)}"
        )


def checkRefID(refid: object) -> None:
    """
    Refuse a reference ID that is not an integer.
    """
    if type(refid) is not int:
        raise MalformedJelly(f"reference IDs are integers, not {type(refid).__name__}")


#: The tag of C{[PREBUILT, obj]}, an expression the L{Unjellier} turns
#: into C{obj} itself: pbext's decoder, when part of a message it has
#: already turned into values proves not to be plain, hands the objects it
#: built for registered types to the full unjellier this way, so that they
#: are not built twice.  No peer can send it: tags on the wire are bytes.
PREBUILT: Any = object()
