"""The renderers of the local funnel report (`otel-spawn funnel`): a terminal table, JSON-ready data
and one self-contained HTML page with SVG bars. The counting is in `_report`.
"""

from __future__ import annotations

import html
import re
from typing import Any

from otel_spawn._report import Funnel, FunnelReport, StepStats

JSON_SCHEMA = "otel-spawn.funnel/1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # terminal control characters (ESC sequences...)


def format_ms(ms: float | None) -> str:
    """`850 ms`, `12.3 s`, `4.5 min`, `2.1 h`; `-` when unknown."""
    if ms is None:
        return "-"
    if ms < 1_000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1_000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _units(report: FunnelReport) -> str:
    count = report.overall.entered
    word = ("person" if count == 1 else "persons") if report.by == "distinct_id" else f"{report.by} value"
    return f"{count:,} {word}{'s' if count != 1 and report.by != 'distinct_id' else ''}"


def _summary(report: FunnelReport) -> str:
    period = (
        f", {report.first_timestamp[:19]}Z .. {report.last_timestamp[:19]}Z"
        if report.first_timestamp and report.last_timestamp
        else ""
    )
    window = f"{report.window_days:g} day{'s' if report.window_days != 1 else ''}"
    return (
        f"{_units(report)} entered; window {window}; "
        f"{report.events_read:,} events read, {report.events_ignored:,} ignored{period}"
    )


def _table(funnel: Funnel) -> list[str]:
    width = max([len("step"), *(len(s.step) for s in funnel.steps)]) + 3
    head = f"{'step':<{width}} {'users':>8} {'of first':>9} {'of prev':>8} {'dropped':>8} {'median time':>12}"
    rows = [
        f"{f'{i}. {s.step}':<{width}} {s.users:>8,} {_pct(s.conversion_from_first):>9} "
        f"{_pct(s.conversion_from_previous):>8} {s.dropped:>8,} {format_ms(s.median_elapsed_ms):>12}"
        for i, s in enumerate(funnel.steps, start=1)
    ]
    return [head, *rows]


def render_text(report: FunnelReport) -> str:
    """A terminal table: the whole funnel, then one table per breakdown value.

    Event names and property values are untrusted: control characters (terminal escape sequences)
    are shown as `?`.
    """
    if not report.steps:
        return f"no funnel events found ({report.events_read:,} events read)\n"
    lines = [f"Funnel: {_summary(report)}", "", *_table(report.overall)]
    for funnel in report.breakdowns:
        lines += ["", f"{report.breakdown} = {funnel.value} ({funnel.entered:,} entered)", *_table(funnel)]
    return "".join(_CONTROL.sub("?", line) + "\n" for line in lines)


def _step_json(s: StepStats) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "step": s.step,
        "users": s.users,
        "conversion_from_first": rounded(s.conversion_from_first),
        "conversion_from_previous": rounded(s.conversion_from_previous),
        "dropped": s.dropped,
        "median_elapsed_ms": rounded(s.median_elapsed_ms),
    }


def render_json(report: FunnelReport) -> dict[str, Any]:
    """The report as JSON-ready data; the shape is versioned by `schema` (see docs in the README)."""
    return {
        "schema": JSON_SCHEMA,
        "steps": list(report.steps),
        "window_days": report.window_days,
        "by": report.by,
        "breakdown": report.breakdown,
        "events_read": report.events_read,
        "events_ignored": report.events_ignored,
        "first_timestamp": report.first_timestamp,
        "last_timestamp": report.last_timestamp,
        "overall": {"value": None, "steps": [_step_json(s) for s in report.overall.steps]},
        "breakdowns": [
            {"value": f.value, "steps": [_step_json(s) for s in f.steps]} for f in report.breakdowns
        ],
    }


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:60rem;
color:#1f2933;padding:0 1rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2.2rem}p.meta{color:#52606d}
table{border-collapse:collapse;margin:.6rem 0 1rem}th,td{padding:.25rem .7rem;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:1px solid #cbd2d9}
tbody tr:nth-child(odd){background:#f5f7fa}
svg text{font:12px system-ui,sans-serif;fill:#1f2933}svg text.drop{fill:#b91c1c}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _svg(funnel: Funnel) -> str:
    """Horizontal bars: each step's share of step 1, its count, and the drop from the previous step."""
    label_w, bar_w, row_h = 240, 420, 34
    first, right = funnel.entered, label_w + bar_w + 8
    about = "" if funnel.value is None else f" for {funnel.value}"
    parts = [
        f'<svg width="{right + 210}" height="{row_h * len(funnel.steps) + 8}" role="img" '
        f'aria-label="{_e(f"funnel chart{about}")}">'
    ]
    for i, s in enumerate(funnel.steps):
        y = 4 + i * row_h
        width = round(bar_w * s.users / first, 1) if first else 0
        label = f"{i + 1}. {s.step}"
        tip = (
            f"{label}: {s.users:,} ({_pct(s.conversion_from_first)} of first, "
            f"{_pct(s.conversion_from_previous)} of previous, {format_ms(s.median_elapsed_ms)})"
        )
        parts += [
            f'<text x="0" y="{y + 20}">{_e(label if len(label) <= 34 else label[:33] + "…")}'
            f"<title>{_e(tip)}</title></text>",
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="{row_h - 10}" fill="#e4e7eb"/>',
            f'<rect x="{label_w}" y="{y + 4}" width="{width}" height="{row_h - 10}" fill="#2563eb">'
            f"<title>{_e(tip)}</title></rect>",
            f'<text x="{right}" y="{y + 20}">{s.users:,} · {_pct(s.conversion_from_first)}</text>',
        ]
        if i and s.dropped:
            lost = f"−{s.dropped:,} ({_pct(100 - (s.conversion_from_previous or 0))})"
            parts.append(f'<text x="{right + 120}" y="{y + 20}" class="drop">{lost}</text>')
    return "".join(parts) + "</svg>"


def _html_table(funnel: Funnel) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("step", "users", "of first", "of previous", "dropped", "median time")
    )
    rows = "".join(
        f"<tr><td>{_e(s.step)}</td><td>{s.users:,}</td><td>{_pct(s.conversion_from_first)}</td>"
        f"<td>{_pct(s.conversion_from_previous)}</td><td>{s.dropped:,}</td>"
        f"<td>{_e(format_ms(s.median_elapsed_ms))}</td></tr>"
        for s in funnel.steps
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_html(report: FunnelReport) -> str:
    """One self-contained page (inline CSS and SVG; no script, no external resource)."""
    body = [f"<h1>Funnel</h1><p class=meta>{_e(_summary(report))}</p>"]
    if not report.steps:
        body.append("<p>No funnel events found.</p>")
    else:
        body += [_svg(report.overall), _html_table(report.overall)]
    for funnel in report.breakdowns:
        title = f"{report.breakdown} = {funnel.value} ({funnel.entered:,} entered)"
        body += [f"<h2>{_e(title)}</h2>", _svg(funnel), _html_table(funnel)]
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>otel-spawn funnel</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
