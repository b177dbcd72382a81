"""
Draw a benchmark run's results as an SVG bar chart, with no dependencies.

    python benchmarks/chart.py results.json chart.svg

One group of bars per workload, one bar per system: the system's median
over the baseline's (classic PB) median, on a logarithmic axis, so the
baseline's bars all stand at 1x.  Rows where lower is better (server memory
per connection) are left out; the table has them.  The C{floor} system's
bars (a raw Twisted echo; msgpack's codec in the serialization workload)
show how far the RPC systems are from the cost of moving the bytes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

if __package__ in (None, ""):  # pragma: no cover - run as a file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.report import formatRatio, summarise

#: Bar colours by system; systems not listed take the spare ones in order.
COLOURS: Dict[str, str] = {
    "classic": "#8c8c8c",
    "pbext": "#1f6fb4",
    "pyro5": "#e08a1e",
    "rpyc": "#3a9a4a",
    "floor": "#2b2b2b",
}

#: What the legend says of a system besides its name.
LEGEND: Dict[str, str] = {
    "floor": " (raw Twisted echo; msgpack)",
}
SPARE_COLOURS = ("#9b59b6", "#c0392b", "#16a085", "#7f8c8d")

WIDTH = 960
HEIGHT = 540
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 78, 100

#: The axis never extends past these ratios; larger ones are drawn capped.
SMALLEST, LARGEST = 0.01, 100_000.0


def _axisRange(ratios: Sequence[float]) -> Tuple[float, float]:
    """
    Decades that hold every ratio and 1x: from the decade below the
    smallest to the decade above the largest, within L{SMALLEST} and
    L{LARGEST}.
    """
    low = min([1.0, *ratios])
    high = max([1.0, *ratios])
    bottom = 10 ** math.floor(math.log10(max(low, SMALLEST)))
    top = 10 ** math.ceil(math.log10(min(high, LARGEST)))
    if bottom >= 1.0:
        bottom = 0.1
    if top <= bottom * 10:
        top = bottom * 100
    return bottom, top


def _colours(systems: Sequence[str]) -> Dict[str, str]:
    spare = iter(SPARE_COLOURS * (len(systems) // len(SPARE_COLOURS) + 1))
    return {s: COLOURS.get(s) or next(spare) for s in systems}


def _text(
    x: float,
    y: float,
    text: str,
    size: int = 12,
    anchor: str = "middle",
    weight: str = "normal",
    fill: str = "#222",
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" '
        f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">'
        f"{escape(text)}</text>"
    )


def renderChart(results: Dict[str, Any]) -> str:
    """
    Draw the summarised results (see L{benchmarks.report.summarise}).

    @return: A standalone SVG document.
    """
    baseline = results.get("baseline", "classic")
    systems: List[str] = list(results.get("systems", []))
    rows = [r for r in results.get("workloads", []) if r.get("higherIsBetter", True)]
    ratios: List[float] = [
        value
        for row in rows
        for value in row.get("ratio", {}).values()
        if isinstance(value, (int, float)) and value > 0
    ]
    bottom, top = _axisRange(ratios)
    colours = _colours(systems)
    plotWidth = WIDTH - LEFT - RIGHT
    plotHeight = HEIGHT - TOP - BOTTOM
    span = math.log10(top) - math.log10(bottom)

    def y(ratio: float) -> float:
        ratio = min(max(ratio, bottom), top)
        return TOP + plotHeight * (1 - (math.log10(ratio) - math.log10(bottom)) / span)

    parts: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        _text(
            LEFT,
            24,
            f"Throughput relative to {baseline} PB (median; log scale; higher "
            "is better)",
            size=16,
            anchor="start",
            weight="bold",
        ),
        _text(LEFT, 44, _subtitle(results), size=11, anchor="start", fill="#555"),
    ]
    # Grid lines and labels: each decade, with lighter lines at 2x and 5x.
    decade = bottom
    while decade <= top * 1.0001:
        for step in (1, 2, 5):
            value = decade * step
            if value > top * 1.0001:
                break
            yy = y(value)
            colour = "#bbbbbb" if step == 1 else "#e6e6e6"
            parts.append(
                f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" '
                f'y2="{yy:.1f}" stroke="{colour}" stroke-width="1"/>'
            )
            if step == 1 or span <= 3:
                parts.append(_text(LEFT - 6, yy + 4, _axisLabel(value), 11, "end"))
        decade *= 10
    one = y(1.0)
    parts.append(
        f'<line x1="{LEFT}" y1="{one:.1f}" x2="{WIDTH - RIGHT}" y2="{one:.1f}" '
        'stroke="#333" stroke-width="1.5" stroke-dasharray="6 3"/>'
    )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plotHeight}" '
        'stroke="#333" stroke-width="1"/>'
    )
    # Bars.
    if rows and systems:
        groupWidth = plotWidth / len(rows)
        barWidth = min(40.0, groupWidth * 0.8 / len(systems))
        for n, row in enumerate(rows):
            left = LEFT + n * groupWidth + (groupWidth - barWidth * len(systems)) / 2
            for m, system in enumerate(systems):
                x = left + m * barWidth
                ratio = row.get("ratio", {}).get(system)
                parts.extend(_bar(x, barWidth, ratio, y, bottom, top, colours[system]))
            centre = LEFT + (n + 0.5) * groupWidth
            for k, line in enumerate(str(row.get("short", row["name"])).split("\n")):
                parts.append(_text(centre, TOP + plotHeight + 18 + 14 * k, line, 11))
    # Legend.
    x = LEFT
    for system in systems:
        parts.append(
            f'<rect x="{x}" y="56" width="12" height="12" fill="{colours[system]}"/>'
        )
        label = system + (" (baseline)" if system == baseline else "")
        label += LEGEND.get(system, "")
        parts.append(_text(x + 16, 66, label, 12, "start"))
        x += 24 + 8 * len(label)
    left = [r["title"] for r in results.get("workloads", []) if r not in rows]
    if left:
        parts.append(
            _text(
                LEFT,
                HEIGHT - 12,
                "Not drawn (lower is better; see the table): " + ", ".join(left),
                10,
                "start",
                fill="#555",
            )
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _axisLabel(value: float) -> str:
    if value >= 1:
        return f"{value:,.0f}x"
    return f"{value:g}x"


def _bar(
    x: float,
    width: float,
    ratio: Optional[float],
    y: Any,
    bottom: float,
    top: float,
    colour: str,
) -> List[str]:
    base = y(bottom)
    if not isinstance(ratio, (int, float)) or ratio <= 0:
        return [_text(x + width / 2, base - 4, "n/a", 9, fill="#999")]
    height = base - y(ratio)
    parts = [
        f'<rect x="{x + 1:.1f}" y="{y(ratio):.1f}" width="{max(width - 2, 1):.1f}" '
        f'height="{height:.1f}" fill="{colour}"><title>{escape(formatRatio(ratio))}'
        "</title></rect>"
    ]
    label = formatRatio(ratio) + ("+" if ratio > top else "")
    if width >= 8 * len(label):
        parts.append(_text(x + width / 2, y(ratio) - 3, label, 10))
        return parts
    # Narrow bars: the label stands upright, above the bar or, where it
    # would run into the title, inside it.
    size = 10 if width >= 14 else 8
    length = 0.62 * size * len(label)
    centre = x + width / 2 + size * 0.35
    if y(ratio) - 4 - length >= TOP - 10:
        at, anchor, fill = y(ratio) - 4, "start", "#222"
    else:
        at, anchor, fill = y(ratio) + 4, "end", "#ffffff"
    parts.append(
        f'<text x="{centre:.1f}" y="{at:.1f}" font-size="{size}" '
        f'text-anchor="{anchor}" fill="{fill}" '
        f'transform="rotate(-90 {centre:.1f} {at:.1f})">{escape(label)}</text>'
    )
    return parts


def _subtitle(results: Dict[str, Any]) -> str:
    machine = results.get("machine", {})
    bits = [
        f"{machine.get('cpuCount', '?')} CPUs",
        f"Python {machine.get('python', '?')}",
        f"Twisted {machine.get('twisted', '?')}",
        f"pbext {machine.get('pbext', '?')} ({machine.get('pbextRevision') or '?'})",
        f"{results.get('mode', '?')} mode, medians of {results.get('rounds', '?')}"
        " round(s)",
    ]
    created = results.get("created")
    if created:
        bits.append(str(created)[:10])
    return " · ".join(bits)


def writeChart(results: Dict[str, Any], path: str) -> None:
    """
    Draw C{results} into the SVG file C{path}.
    """
    with open(path, "w", encoding="utf-8") as f:
        f.write(renderChart(results))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        sys.stderr.write("usage: python benchmarks/chart.py RESULTS.json OUT.svg\n")
        return 2
    with open(args[0], encoding="utf-8") as f:
        results = json.load(f)
    if any("median" not in row for row in results.get("workloads", [])):
        summarise(results)
    writeChart(results, args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
