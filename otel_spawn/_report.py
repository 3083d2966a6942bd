"""The local funnel report (`otel-spawn funnel`): PostHog's funnel count over PostHog-shaped events.

Counting follows PostHog's ordered funnel (its `aggregate_funnel` UDF), per unit (`distinct_id` by
default, or any property such as `funnel_id` to count runs):

- An *attempt* starts at a step-1 event. It reaches step k+1 with the earliest step-(k+1) event whose
  timestamp is >= the attempt's step-k event and <= the attempt's step-1 timestamp + the conversion
  window (default 14 days). Events at the same instant are taken in step order.
- Each unit counts once, with its attempt that gets furthest; if several get equally far, the first
  one to get there (PostHog's "first touch / furthest"). Counts are cumulative: a unit that reached
  step 3 counts in steps 1, 2 and 3.
- A breakdown value is taken from that attempt, first touch: the first non-empty value of the
  property on its matched events in step order, normally the step-1 event's (PostHog's first touch
  also takes the first non-null value). Missing everywhere: "(none)". Past `breakdown_limit`
  values, the least common are merged into "(other)".
- The median time of a step is the median `elapsed_ms` of the units' matched events of that step.

Pure: no I/O except reading the file given to `read_events_file`, and progress on a given stream.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO

from otel_spawn._errors import ConfigError
from otel_spawn._posthog import Event

JSON_SCHEMA = "otel-spawn.funnel/1"
NONE_VALUE = "(none)"
OTHER_VALUE = "(other)"
PROGRESS_EVERY = 50_000  # progress lines start after this many events, then one per as many again
_BIG_FILE = 64 * 1024 * 1024  # a file this large reports progress from the start
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}:?\d{2})?$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # terminal control characters (ESC sequences...)
# One step event: timestamp (epoch seconds), step code, elapsed_ms, breakdown value, run (funnel_id;
# kept only to infer the step order).
_Row = tuple[float, int, "float | None", "str | None", "str | None"]


def parse_timestamp(value: object) -> float:
    """ISO-8601 (with `Z`, an offset or none: naive means UTC) -> epoch seconds; ValueError if not."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        match = _ISO.match(value.strip())
        day, clock, fraction, zone = match.groups() if match else ("", "", "", "")
        zone = "+00:00" if zone in (None, "Z", "z") else f"{zone[:3]}:{zone[-2:]}"
        try:  # Python < 3.11 reads neither `Z` nor fractions other than 3 or 6 digits
            moment = datetime.fromisoformat(f"{day}T{clock}.{(fraction or '').ljust(6, '0')[:6]}{zone}")
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class Progress:
    """Progress lines on `stream` (stderr, never stdout): silent below PROGRESS_EVERY items read.

    After `long_input()` (a file over ~64 MiB) it also reports from the start and every 5% of bytes.
    """

    def __init__(self, stream: TextIO, label: str = "otel-spawn funnel") -> None:
        self.stream, self.label = stream, label
        self._next_count, self._next_share = PROGRESS_EVERY, 2.0
        self._shown = False

    def long_input(self) -> None:
        self._next_share = 0.0

    def update(self, count: int, share: float | None = None) -> None:
        """Report `count` items read (and the share of the input, if known) when due."""
        if count < self._next_count and (share is None or share < self._next_share):
            return
        self._next_count = count + PROGRESS_EVERY
        if share is not None and self._next_share <= 1.0:
            self._next_share = share + 0.05
        line = f"{self.label}: {count:,} read" + (f" ({share:.0%})" if share is not None else "")
        self.stream.write(f"\r{line}" if self.stream.isatty() else f"{line}\n")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        """End an overwritten terminal line."""
        if self._shown and self.stream.isatty():
            self.stream.write("\n")
        self._shown = False


def counted(events: Iterable[Event], progress: Progress) -> Iterator[Event]:
    """`events`, reporting progress every PROGRESS_EVERY // 5 items (for inputs that are not files)."""
    for number, event in enumerate(events, start=1):
        if number % (PROGRESS_EVERY // 5) == 0:
            progress.update(number)
        yield event


@dataclass
class Problems:
    """Malformed input lines: how many, and the first `keep` with their line numbers."""

    keep: int = 20
    count: int = 0
    first: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append((line, reason))

    def lines(self, source: str) -> list[str]:
        """`source:line: reason` for each kept problem, plus how many more were not shown."""
        out = [f"{source}:{line}: {reason}" for line, reason in self.first]
        if self.count > len(self.first):
            out.append(f"{source}: {self.count - len(self.first)} more malformed line(s) skipped")
        return out


def read_events_file(
    path: str | os.PathLike[str], *, problems: Problems | None = None, progress: Progress | None = None
) -> Iterator[Event]:
    """Stream PostHog events from a JSON-lines file (one object per line, as PostHog exports them).

    Blank lines are skipped; a `distinct_id` found only in `properties` is lifted to the event.
    A malformed line (not JSON, no event name, distinct_id or ISO-8601 timestamp) is recorded in
    `problems` with its line number and skipped. Raises OSError at once if the file cannot be read.
    """
    size = os.stat(path).st_size
    if progress is not None and size >= _BIG_FILE:
        progress.long_input()
        progress.update(0, 0.0)
    return _read_lines(Path(path), size, problems if problems is not None else Problems(), progress)


def _read_lines(path: Path, size: int, problems: Problems, progress: Progress | None) -> Iterator[Event]:
    done, mark = 0, size // 20 if size >= _BIG_FILE else size + 1  # check progress every 5% of a big file
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            done += len(line)
            if progress is not None and (number % (PROGRESS_EVERY // 5) == 0 or done >= mark):
                mark = done + size // 20 if size >= _BIG_FILE else mark
                progress.update(number, min(1.0, done / size) if size else None)
            if not line.strip():
                continue
            try:
                event = json.loads(line.decode("utf-8"))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                problems.add(number, f"not JSON ({exc})")
                continue
            reason = _shape_problem(event)
            if reason:
                problems.add(number, reason)
                continue
            yield event


def _shape_problem(event: Any) -> str:
    """Why `event` is not a PostHog event ("" if it is); lifts `properties.distinct_id`."""
    if not isinstance(event, dict):
        return "not a JSON object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "no event name"
    props = event.get("properties")
    if isinstance(props, str):  # some exports store properties as a JSON string
        try:
            props = event["properties"] = json.loads(props)
        except ValueError:
            return "properties is not valid JSON"
    if props is None:
        props = event["properties"] = {}
    elif not isinstance(props, dict):
        return "properties is not an object"
    if event.get("distinct_id") in (None, ""):
        if props.get("distinct_id") in (None, ""):
            return "no distinct_id"
        event["distinct_id"] = props["distinct_id"]
    try:
        parse_timestamp(event.get("timestamp"))
    except ValueError as exc:
        return str(exc)
    return ""


@dataclass(frozen=True)
class StepStats:
    """One step of one funnel: cumulative units, conversions (percent), drop-off, median time."""

    step: str
    users: int
    conversion_from_first: float | None  # percent; None when nobody entered the funnel
    conversion_from_previous: float | None  # percent; 100 for step 1
    dropped: int  # units of the previous step that did not reach this one
    median_elapsed_ms: float | None  # None when no matched event carried elapsed_ms


@dataclass(frozen=True)
class Funnel:
    """The funnel of all units (`value` None) or of one breakdown value."""

    value: str | None
    steps: tuple[StepStats, ...]

    @property
    def entered(self) -> int:
        return self.steps[0].users if self.steps else 0


@dataclass(frozen=True)
class FunnelReport:
    """Everything the renderers show."""

    steps: tuple[str, ...]
    window_days: float
    by: str
    breakdown: str | None
    overall: Funnel
    breakdowns: tuple[Funnel, ...]
    events_read: int
    events_ignored: int  # step events without a unit key or a readable timestamp
    first_timestamp: str | None
    last_timestamp: str | None


def funnel_report(
    events: Iterable[Mapping[str, Any]],
    steps: Sequence[str] | None = None,
    window_days: float = 14,
    breakdown: str | None = None,
    prefix: str = "funnel_",
    *,
    by: str = "distinct_id",
    breakdown_limit: int = 25,
) -> FunnelReport:
    """Count the funnel over `events` in one pass (see the module docstring for the exact rules).

    `steps` defaults to the events named `<prefix>…` that are present (except `<prefix>failed` and
    `<prefix>abandoned`) in their typical order: the median position in a run (events of one
    `funnel_id`), then the median `elapsed_ms`. `by` is `distinct_id` (per person, PostHog's
    default) or a property name (`funnel_id` counts runs).
    """
    explicit = list(steps) if steps is not None else None
    _validate(explicit, window_days, breakdown, by, breakdown_limit)
    seen = _Collected(codes={name: i for i, name in enumerate(explicit or ())})
    seen.collect(events, explicit is not None, prefix, by, breakdown)
    order = explicit if explicit is not None else _typical_order(seen.codes, seen.units)
    rank = [0] * len(seen.codes)
    for position, name in enumerate(order):
        rank[seen.codes[name]] = position
    chains = [_furthest(rows, rank, len(order), window_days * 86_400) for rows in seen.units.values()]
    reached = [chain for chain in chains if chain is not None]
    return FunnelReport(
        steps=tuple(order),
        window_days=window_days,
        by=by,
        breakdown=breakdown,
        overall=_funnel(None, order, reached),
        breakdowns=_breakdown(order, reached, breakdown_limit) if breakdown else (),
        events_read=seen.read,
        events_ignored=seen.ignored,
        first_timestamp=_iso(seen.low) if seen.units else None,
        last_timestamp=_iso(seen.high) if seen.units else None,
    )


@dataclass
class _Collected:
    """The step events of each unit, reduced to _Rows, gathered in one pass over the input."""

    codes: dict[str, int]  # step event name -> code (first-seen order when the steps are inferred)
    units: dict[str, list[_Row]] = field(default_factory=dict)
    read: int = 0
    ignored: int = 0
    low: float = math.inf
    high: float = -math.inf
    _strings: dict[str, str] = field(default_factory=dict)  # one object per distinct value or run id

    def collect(
        self, events: Iterable[Mapping[str, Any]], explicit: bool, prefix: str, by: str, breakdown: str | None
    ) -> None:
        skip = {f"{prefix}failed", f"{prefix}abandoned"}
        for event in events:
            self.read += 1
            name = event.get("event")
            if not isinstance(name, str):
                continue
            code = self.codes.get(name)
            if code is None:
                if explicit or not name.startswith(prefix) or name in skip:
                    continue
                code = self.codes[name] = len(self.codes)
            props = event.get("properties")
            props = props if isinstance(props, dict) else {}
            unit = props.get(by) if by != "distinct_id" else event.get(by) or props.get(by)
            try:
                moment = parse_timestamp(event.get("timestamp"))
            except ValueError:
                self.ignored += 1
                continue
            if unit is None or unit == "":
                self.ignored += 1
                continue
            self.low, self.high = min(self.low, moment), max(self.high, moment)
            elapsed = props.get("elapsed_ms")
            number = None if isinstance(elapsed, bool) or not isinstance(elapsed, int | float) else elapsed
            value = _text(props.get(breakdown)) if breakdown else None
            run = props.get("funnel_id") if not explicit else None
            row = (moment, code, number, self._one(value), self._one(run if isinstance(run, str) else None))
            self.units.setdefault(str(unit), []).append(row)

    def _one(self, text: str | None) -> str | None:
        return None if text is None else self._strings.setdefault(text, text)


def _validate(
    steps: list[str] | None, window_days: float, breakdown: str | None, by: str, limit: int
) -> None:
    if steps is not None:
        if not steps or not all(isinstance(s, str) and s for s in steps):
            raise ConfigError(
                "funnel steps must be non-empty event names, e.g. funnel_started,funnel_handoff"
            )
        repeated = sorted({s for s in steps if steps.count(s) > 1})
        if repeated:
            raise ConfigError(f"funnel step(s) {', '.join(repeated)} listed twice: list each step once")
    if not window_days > 0:
        raise ConfigError(f"the conversion window must be a positive number of days, got {window_days!r}")
    if breakdown is not None and not breakdown:
        raise ConfigError("the breakdown property name is empty: give e.g. agent, cloud, source or ref")
    if not by:
        raise ConfigError("count funnels by distinct_id (per person) or a property name such as funnel_id")
    if limit < 1:
        raise ConfigError(f"breakdown_limit must be at least 1, got {limit!r}")


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).isoformat()


def _typical_order(codes: dict[str, int], units: dict[str, list[_Row]]) -> list[str]:
    """Steps by the median of their position within runs (a unit's events of one funnel_id, in time
    order; each step placed at its first occurrence), then by median elapsed_ms. Positions within a
    run do not depend on how far the run got, where a median over all events would."""
    positions: list[list[int]] = [[] for _ in codes]
    elapsed: list[list[float]] = [[] for _ in codes]
    for rows in units.values():
        by_run: dict[str | None, list[_Row]] = {}
        for row in rows:
            by_run.setdefault(row[4], []).append(row)
            if row[2] is not None:
                elapsed[row[1]].append(row[2])
        for run in by_run.values():
            run.sort(key=itemgetter(0, 1))
            first: dict[int, int] = {}
            for row in run:
                first.setdefault(row[1], len(first))
            for code, position in first.items():
                positions[code].append(position)

    def typical(name: str) -> tuple[float, float, int]:
        code = codes[name]
        times = elapsed[code]
        return (statistics.median(positions[code]), statistics.median(times) if times else math.inf, code)

    return sorted((name for name, code in codes.items() if positions[code]), key=typical)


def _furthest(rows: list[_Row], rank: list[int], n_steps: int, window: float) -> list[_Row] | None:
    """The matched events of the attempt that gets furthest (the first to get there), or None."""
    rows.sort(key=lambda row: (row[0], rank[row[1]]))
    entered: list[tuple[float, list[_Row]] | None] = [None] * n_steps  # per step: (start, chain)
    best: list[_Row] | None = None
    for row in rows:
        step = rank[row[1]]
        if step == 0:
            entered[0] = (row[0], [row])
            if best is None:
                best = [row]
            continue
        previous = entered[step - 1]
        if previous is None or row[0] - previous[0] > window:
            continue
        current = entered[step]
        if current is not None and current[0] == previous[0]:
            continue  # this attempt already reached this step, earlier
        chain = [*previous[1], row]
        entered[step] = (previous[0], chain)
        if best is None or len(chain) > len(best):
            best = chain
            if step == n_steps - 1:
                break
    return best


def _funnel(value: str | None, order: Sequence[str], chains: Iterable[list[_Row]]) -> Funnel:
    users = [0] * len(order)
    elapsed: list[list[float]] = [[] for _ in order]
    for chain in chains:
        for step, row in enumerate(chain):
            users[step] += 1
            if row[2] is not None:
                elapsed[step].append(row[2])
    first = users[0] if users else 0
    stats = []
    for step, name in enumerate(order):
        previous = users[step - 1] if step else users[step]
        stats.append(
            StepStats(
                step=name,
                users=users[step],
                conversion_from_first=100.0 * users[step] / first if first else None,
                conversion_from_previous=100.0 * users[step] / previous if previous else None,
                dropped=previous - users[step],
                median_elapsed_ms=float(statistics.median(elapsed[step])) if elapsed[step] else None,
            )
        )
    return Funnel(value=value, steps=tuple(stats))


def _breakdown(order: Sequence[str], chains: list[list[_Row]], limit: int) -> tuple[Funnel, ...]:
    def value_of(chain: list[_Row]) -> str:
        return next((row[3] for row in chain if row[3] is not None), NONE_VALUE)

    groups: dict[str, list[list[_Row]]] = {}
    for chain in chains:
        groups.setdefault(value_of(chain), []).append(chain)
    ranked = sorted(groups, key=lambda v: (-len(groups[v]), v))
    kept, rest = ranked[:limit], ranked[limit:]
    out = [_funnel(v, order, groups[v]) for v in kept]
    if rest:
        out.append(_funnel(OTHER_VALUE, order, [c for v in rest for c in groups[v]]))
    return tuple(out)


# --- rendering ---------------------------------------------------------------------------------


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
