"""
Medians, ratios and the text table of a benchmark run's results.

The results are one JSON-able dictionary (see C{benchmarks/README.rst});
this module fills in its medians and ratios and formats it for people.
"""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.systems import FLOOR
from benchmarks.workloads import MEMORY

#: The system whose ratio to the floor the table shows, when measured.
FLOOR_SUBJECT = "pbext"


def _value(s: Dict[str, Any], key: str) -> Optional[float]:
    """
    A sample's C{key} value (or its C{extra[key]}), if it is a number.
    """
    value = s.get(key) if key == "value" else s.get("extra", {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def median(samples: Sequence[Dict[str, Any]], key: str = "value") -> Optional[float]:
    """
    The median of the samples' C{key} values (or of their C{extra[key]}),
    ignoring failed samples; L{None} if none succeeded.
    """
    values = [v for v in (_value(s, key) for s in samples) if v is not None]
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


def paired(
    samples: Sequence[Dict[str, Any]],
    references: Sequence[Dict[str, Any]],
    key: str = "value",
) -> Optional[Dict[str, Any]]:
    """
    The ratios of C{samples} to C{references} round by round: each of a
    system's samples over the reference's sample of the same round, so
    that a round's noise falls on both sides of its ratio.

    @return: C{ratios} (one per round where both succeeded), their
        C{median}, C{low} and C{high}; L{None} if there is no such round.
    """
    byRound: Dict[Any, float] = {}
    for s in references:
        value = _value(s, key)
        if value:
            byRound[s.get("round")] = value
    ratios = []
    for s in samples:
        value = _value(s, key)
        reference = byRound.get(s.get("round"))
        if value is not None and reference:
            ratios.append(value / reference)
    if not ratios:
        return None
    return {
        "ratios": ratios,
        "median": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
    }


def _comparisons(
    samples: Dict[str, Sequence[Dict[str, Any]]],
    medians: Dict[str, Optional[float]],
    baseline: str,
    key: str,
) -> Dict[str, Any]:
    """
    The ratios to the floor (C{floorRatio}) and the paired ratios of every
    system to the baseline and to the floor (C{paired}, keyed
    C{"pbext/classic"}, C{"pbext/floor"}...) of one row.
    """
    out: Dict[str, Any] = {"paired": {}}
    references = [baseline] + ([FLOOR] if FLOOR in medians else [])
    for reference in references:
        for system in samples:
            if system == reference or reference not in samples:
                continue
            pair = paired(samples[system], samples[reference], key)
            if pair is not None:
                out["paired"][f"{system}/{reference}"] = pair
    if FLOOR in medians:
        out["floorRatio"] = _ratios(medians, FLOOR)
    return out


def _phases(samples: Dict[str, Sequence[Dict[str, Any]]]) -> Dict[str, Any]:
    """
    The median encode and decode times of each system of the
    serialization workload (empty for other workloads).
    """
    phases: Dict[str, Any] = {}
    for system, systemSamples in samples.items():
        encode = median(systemSamples, "encodeSeconds")
        decode = median(systemSamples, "decodeSeconds")
        if encode is not None and decode is not None:
            phases[system] = {"encodeSeconds": encode, "decodeSeconds": decode}
    return phases


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
    Fill in C{median}, C{ratio}, C{paired} and C{notes} of every workload
    of C{results} (with the floor measured, C{floorRatio}; in the
    serialization workload, C{phases}), and add the derived C{memory} row
    after C{clients}.

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
        row.update(_comparisons(samples, row["median"], baseline, "value"))
        row["notes"] = {system: _uniqueNotes(samples[system]) for system in samples}
        phases = _phases(samples)
        if phases:
            row["phases"] = phases
        rows.append(row)
        if row["name"] == "clients":
            rows.append(_memoryRow(row, baseline))
    results["workloads"] = rows
    return results


def _memoryRow(clients: Dict[str, Any], baseline: str) -> Dict[str, Any]:
    """
    The derived row of server memory per idle connection, from the
    C{clients} row's samples.
    """
    samples = clients["samples"]
    key = "memoryPerConnectionKB"
    medians = {system: median(samples[system], key) for system in samples}
    row = {
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
    row.update(_comparisons(samples, medians, baseline, key))
    return row


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


def formatPaired(pair: Optional[Dict[str, Any]]) -> str:
    """
    Format the range of paired ratios, such as C{"(0.61-0.66)"}; empty
    with fewer than two rounds.
    """
    if not pair or len(pair["ratios"]) < 2:
        return ""
    return f"({formatRatio(pair['low'])[:-1]}-{formatRatio(pair['high'])})"


def _header(results: Dict[str, Any]) -> Tuple[List[str], List[str], Optional[str]]:
    """
    The systems with a value and ratio column each, and the system whose
    ratio to the floor gets a column (if the floor was measured).
    """
    baseline = results["baseline"]
    systems = results["systems"]
    others = [s for s in systems if s not in (baseline, FLOOR)]
    header = ["workload", "unit", baseline]
    for system in others:
        header += [system, f"{system}/{baseline}"]
    subject = None
    if FLOOR in systems:
        subject = FLOOR_SUBJECT if FLOOR_SUBJECT in systems else baseline
        header += [FLOOR, f"{subject}/{FLOOR}"]
    return header, others, subject


def formatTable(results: Dict[str, Any]) -> str:
    """
    The summarised results as a text table, followed by the notes.

    Each system has its median and its ratio to the baseline; the floor,
    when measured, has its median and pbext's ratio to it, with the range
    of the paired (round by round) ratios.
    """
    baseline = results["baseline"]
    header, others, subject = _header(results)
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
        if subject is not None:
            floorRatio = row.get("floorRatio", {}).get(subject)
            pair = row.get("paired", {}).get(f"{subject}/{FLOOR}")
            ratio = formatRatio(floorRatio)
            if floorRatio is not None and formatPaired(pair):
                ratio += " " + formatPaired(pair)
            cells += [_cell(row, FLOOR), ratio]
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
        for system, reason in row.get("skipped", {}).items():
            out.append(f"note: {row['name']}/{system}: not measured: {reason}")
        for system, notes in row.get("notes", {}).items():
            for note in notes:
                out.append(f"note: {row['name']}/{system}: {note}")
        if row.get("phases"):
            out.append(f"note: {row['name']}: {_formatPhases(row['phases'])}")
    return out


def _formatPhases(phases: Dict[str, Dict[str, float]]) -> str:
    """
    The median encode and decode times of each system, in microseconds.
    """
    parts = []
    for system, times in phases.items():
        encode = formatNumber(times["encodeSeconds"] * 1e6)
        decode = formatNumber(times["decodeSeconds"] * 1e6)
        label = f"{system} (msgpack)" if system == FLOOR else system
        parts.append(f"{label} {encode} / {decode}")
    return "median encode / decode, us: " + ", ".join(parts)
