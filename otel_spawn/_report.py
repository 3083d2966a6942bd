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
The text, JSON and HTML renderers are in `_report_render`.
"""

from __future__ import annotations

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

NONE_VALUE = "(none)"
OTHER_VALUE = "(other)"
PROGRESS_EVERY = 50_000  # progress lines start after this many events, then one per as many again
_BIG_FILE = 64 * 1024 * 1024  # a file this large reports progress from the start
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}:?\d{2})?$"
)
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
