"""
Checks for pbext's optional extras, so that a feature used without its
extra says which extra to install instead of failing deep inside Twisted.
"""

from __future__ import annotations

import importlib

#: What a TLS endpoint without the C{tls} extra says.
TLS_MISSING = "TLS needs the tls extra: pip install 'pbext[tls]'"

#: What metrics without the C{metrics} extra say.
METRICS_MISSING = "metrics need the metrics extra: pip install 'pbext[metrics]'"

#: Endpoint types that need the C{tls} extra (C{haproxy:} wraps another).
_TLS_KINDS = {"ssl", "tls"}


def isTLSDescription(description: str) -> bool:
    """
    Whether the strports endpoint description C{description} uses TLS
    (C{ssl:} or C{tls:}, also behind C{haproxy:}).
    """
    kind, _, rest = description.partition(":")
    kind = kind.strip().lower()
    if kind == "haproxy":
        return isTLSDescription(rest)
    return kind in _TLS_KINDS


def tlsMissing() -> str | None:
    """
    Why TLS cannot be used here, or L{None} if the C{tls} extra is
    installed.

    @return: L{TLS_MISSING} followed by the import error, if pyOpenSSL or
        service_identity cannot be imported.
    """
    for name in ("OpenSSL.SSL", "service_identity"):
        try:
            importlib.import_module(name)
        except ImportError as e:
            return f"{TLS_MISSING} ({e})"
    return None


def checkTLSEndpoint(description: str) -> None:
    """
    Refuse a TLS endpoint description when the C{tls} extra is missing.

    @raise ImportError: naming the extra to install, if C{description} uses
        TLS and pyOpenSSL or service_identity cannot be imported.
    """
    if isTLSDescription(description):
        missing = tlsMissing()
        if missing is not None:
            raise ImportError(missing)
