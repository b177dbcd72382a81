"""
What one measurement reports: the sample dictionary every client returns.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence

#: The clock of every measurement.
now = time.perf_counter


class MeasurementError(Exception):
    """
    The measurement could not be made; the message says why.
    """


def sample(
    value: Optional[float],
    completed: int,
    elapsed: float,
    truncated: bool,
    notes: Sequence[str] = (),
    extra: Optional[Dict[str, Any]] = None,
    error: Optional[str] = None,
) -> Dict[str, Any]:
    """
    Build a sample.

    @param value: The measured rate, or L{None} if there is none.
    @param completed: How many operations completed.
    @param elapsed: In how many seconds.
    @param truncated: Whether the time bound stopped it before its count.
    @param notes: Remarks on how it was measured.
    @param extra: Further figures (wire sizes, memory).
    @param error: Why the measurement failed, if it did.
    """
    return {
        "value": value,
        "completed": completed,
        "elapsed": elapsed,
        "truncated": truncated,
        "notes": list(notes),
        "extra": extra or {},
        "error": error,
    }


def rate(
    completed: int, elapsed: float, perOperation: float, target: int
) -> Dict[str, Any]:
    """
    A sample whose value is C{completed * perOperation / elapsed}.

    @param target: The operations asked for; fewer means truncated.
    """
    value = completed * perOperation / elapsed if elapsed > 0 and completed else None
    return sample(value, completed, elapsed, completed < target)


def check(condition: bool, what: str) -> None:
    """
    Raise L{MeasurementError} about a wrong answer unless C{condition}.
    """
    if not condition:
        raise MeasurementError(f"wrong answer: {what}")
