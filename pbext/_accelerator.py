"""
Find pbext's optional C accelerator, L{pbext._speedups}.

pip builds it from C{pbext/_speedups.c} when it installs pbext on a machine
with a C compiler and the Python headers; without them pip installs pbext
anyway, and L{pbext.codec} and L{pbext._jelly} run their pure-Python code,
which is the specification the accelerator follows (the tests run both on
the same inputs).  Setting the environment variable C{PBEXT_PURE_PYTHON} to
a non-empty value before pbext is imported also turns the accelerator off.

@var speedups: The accelerator module, or L{None} when it is not built or is
    turned off.  Decided once, at import; it never changes afterwards.
@var reason: Why L{speedups} is L{None}, or L{None} when it is not.

@since: pbext NEXT
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Optional

__all__ = ["reason", "speedups"]


def _load() -> tuple[Optional[ModuleType], Optional[str]]:
    if os.environ.get("PBEXT_PURE_PYTHON"):
        return None, "PBEXT_PURE_PYTHON is set"
    try:
        # The ignore below: built in place; absent from a source checkout.
        from pbext import _speedups  # type: ignore[attr-defined]
    except ImportError as e:
        if importlib.util.find_spec("pbext._speedups") is None:
            return None, (
                "pbext._speedups is not built (pip found no C compiler or "
                "Python headers when it installed pbext)"
            )
        return None, f"pbext._speedups does not load ({e})"
    return _speedups, None


speedups, reason = _load()
