"""
Medians, ratios and the text table of a benchmark run's results.

The results are one JSON-able dictionary (see C{benchmarks/README.rst});
this module fills in its medians and ratios and formats it for people.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.workloads import MEMORY


def median(samples: Sequence[Dict[str, Any]], key: str = "value") -> Optional[float]:
    """
    The median of the samples' C{key} values (or of their C{extra[key]}),
    ignoring failed samples; L{None} if none succeeded.
    """
    values = []
    for s in samples:
        value = s.get(key) if key == "value" else s.get("extra", {}).get(key)
        if isinstance(value, (int, float)):
            values.append(float(value))
    return statistics.median(values) if values else None


def _ratios(
    medians: Dict[str, Optional[float]], baseline: str
) -> Dict[str, Optional[float]]:
    base = medians.get(baseline)
    ratios: Dict[str, Optional[float]] = {}
    for system, value in medians.items():
        if value is None or not base:
            ratios[system] = None
        else:
            ratios[system] = value / base
    return ratios


def _uniqueNotes(samples: Sequence[Dict[str, Any]]) -> List[str]:
    notes: List[str] = []
    for s in samples:
        for note in s.get("notes", []):
            if note not in notes:
                notes.append(note)
        error = s.get("error")
        if error and f"error: {error}" not in notes:
            notes.append(f"error: {error}")
    return notes


def summarise(results: Dict[str, Any]) -> Dict[str, Any]:
    """
    Fill in C{median}, C{ratio} and C{notes} of every workload of
    C{results}, and add the derived C{memory} row after C{clients}.

    @return: C{results}, changed in place.
    """
    baseline = results["baseline"]
    rows: List[Dict[str, Any]] = []
    for row in results["workloads"]:
        if row["name"] == MEMORY.name:
            continue
        samples = row["samples"]
        row["median"] = {system: median(samples[system]) for system in samples}
        row["ratio"] = _ratios(row["median"], baseline)
        row["notes"] = {system: _uniqueNotes(samples[system]) for system in samples}
        rows.append(row)
        if row["name"] == "clients":
            medians = {
                system: median(samples[system], "memoryPerConnectionKB")
                for system in samples
            }
            rows.append(
                {
                    "name": MEMORY.name,
                    "title": MEMORY.title,
                    "short": MEMORY.short,
                    "unit": MEMORY.unit,
                    "description": MEMORY.description,
                    "higherIsBetter": False,
                    "derivedFrom": "clients",
                    "median": medians,
                    "ratio": _ratios(medians, baseline),
                    "notes": {},
                }
            )
    results["workloads"] = rows
    return results


def formatNumber(value: Optional[float]) -> str:
    """
    Format a measured value with about three significant digits.
    """
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def formatRatio(ratio: Optional[float]) -> str:
    """
    Format a ratio to the baseline, such as C{"2.15x"}.
    """
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def formatTable(results: Dict[str, Any]) -> str:
    """
    The summarised results as a text table, followed by the notes.
    """
    baseline = results["baseline"]
    systems = results["systems"]
    others = [s for s in systems if s != baseline]
    header = ["workload", "unit", baseline]
    for system in others:
        header += [system, f"{system}/{baseline}"]
    lines = [header]
    for row in results["workloads"]:
        medians = row.get("median", {})
        ratios = row.get("ratio", {})
        title = row["title"] + (
            "" if row.get("higherIsBetter", True) else " (lower is better)"
        )
        cells = [title, row["unit"], _cell(row, baseline)]
        for system in others:
            cells += [_cell(row, system), formatRatio(ratios.get(system))]
        if not medians:
            cells = [title, row["unit"]] + ["-"] * (len(header) - 2)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        text = line[0].ljust(widths[0]) + "  " + line[1].ljust(widths[1])
        text += "".join("  " + c.rjust(w) for c, w in zip(line[2:], widths[2:]))
        out.append(text.rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    notes = _notes(results)
    if notes:
        out.append("")
        out.extend(notes)
    return "\n".join(out) + "\n"


def _cell(row: Dict[str, Any], system: str) -> str:
    if system not in row.get("median", {}):
        return "n/a"
    value = row["median"][system]
    if value is None and row.get("samples", {}).get(system):
        return "error"
    return formatNumber(value)


def _notes(results: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    for system, reason in results.get("skipped", {}).items():
        out.append(f"note: {system} skipped: {reason}")
    for note in results.get("notes", []):
        out.append(f"note: {note}")
    for row in results["workloads"]:
        for system, notes in row.get("notes", {}).items():
            for note in notes:
                out.append(f"note: {row['name']}/{system}: {note}")
    return out
