"""The local funnel report: PostHog's counting rules, the JSON-lines reader and the three renderers."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_cli

import otel_spawn
from otel_spawn import _report
from otel_spawn._errors import ConfigError
from otel_spawn._local import LocalStore
from otel_spawn._report import (
    PROGRESS_EVERY,
    FunnelReport,
    Problems,
    Progress,
    counted,
    funnel_report,
    parse_timestamp,
    read_events_file,
)
from otel_spawn._report_render import JSON_SCHEMA, format_ms, render_html, render_json, render_text

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
STEPS = ["funnel_started", "funnel_vm_ready", "funnel_handoff"]
DEMO_ORDER = [
    "funnel_started",
    "funnel_cloud_authed",
    "funnel_credentials_ready",
    "funnel_vm_ready",
    "funnel_install_completed",
    "funnel_configure_completed",
    "funnel_prelaunch_completed",
    "funnel_handoff",
]


def ev(
    name: str, who: str, minutes: float = 0.0, elapsed: float | None = None, **props: Any
) -> dict[str, Any]:
    """A PostHog-shaped event `minutes` after T0."""
    properties = dict(props)
    if elapsed is not None:
        properties["elapsed_ms"] = elapsed
    stamp = (T0 + timedelta(minutes=minutes)).isoformat()
    uuid = f"{who}-{name}-{minutes}"
    return {"uuid": uuid, "event": name, "distinct_id": who, "timestamp": stamp, "properties": properties}


def users(report: FunnelReport, value: str | None = None) -> list[int]:
    funnel = report.overall if value is None else next(f for f in report.breakdowns if f.value == value)
    return [s.users for s in funnel.steps]


def run(person: str, reached: int, start: float = 0.0, **props: Any) -> list[dict[str, Any]]:
    """One attempt of `person` through the first `reached` of STEPS, a minute apart."""
    return [ev(STEPS[i], person, start + i, elapsed=1000.0 * i, **props) for i in range(reached)]


# --- counting ------------------------------------------------------------------------------------


def test_counts_are_cumulative_with_conversions_and_drop_off() -> None:
    """A unit that reached step 3 counts in steps 1-3; percentages and drop-off follow from the counts."""
    events = run("a", 3) + run("b", 1) + run("c", 2) + run("d", 2)
    report = funnel_report(events, steps=STEPS)
    assert [
        (s.users, s.conversion_from_first, s.conversion_from_previous, s.dropped)
        for s in report.overall.steps
    ] == [
        (4, 100.0, 100.0, 0),
        (3, 75.0, 75.0, 1),
        (1, 25.0, pytest.approx(100 / 3), 2),
    ]


def test_a_step_before_the_previous_one_does_not_count() -> None:
    """Steps must happen in order in time: a later step's timestamp must be >= the previous step's."""
    events = [
        ev("funnel_vm_ready", "early", 0),
        ev("funnel_started", "early", 1),
        ev("funnel_handoff", "early", 2),
        ev("funnel_vm_ready", "same", 5),  # the same instant counts, whatever the input order
        ev("funnel_started", "same", 5),
    ]
    report = funnel_report(events, steps=STEPS)
    assert users(report) == [2, 1, 0]


def test_conversion_window_expires_and_is_configurable() -> None:
    """A step later than the window after step 1 does not count; exactly at the window's end it does."""
    day = 24 * 60.0
    events = [
        ev("funnel_started", "late", 0),
        ev("funnel_vm_ready", "late", 15 * day),
        ev("funnel_started", "edge", 0),
        ev("funnel_vm_ready", "edge", 14 * day),
    ]
    assert users(funnel_report(events, steps=STEPS)) == [2, 1, 0]
    assert users(funnel_report(events, steps=STEPS, window_days=30)) == [2, 2, 0]
    assert users(funnel_report(events, steps=STEPS, window_days=1)) == [2, 0, 0]


def test_the_attempt_that_gets_furthest_counts_once() -> None:
    """Several attempts of one person count once, at the furthest step, with that attempt's times."""
    day = 24 * 60.0
    events = [
        *run("p", 2),  # gets to step 2
        ev("funnel_handoff", "p", 20 * day, elapsed=999.0),  # too late for the first attempt
        ev("funnel_started", "p", 19 * day, elapsed=0.0),  # a second attempt: reaches step 3
        ev("funnel_vm_ready", "p", 19.5 * day, elapsed=5.0),
    ]
    report = funnel_report(events, steps=STEPS)
    assert users(report) == [1, 1, 1]
    assert [s.median_elapsed_ms for s in report.overall.steps] == [0.0, 5.0, 999.0]


def test_equally_far_attempts_keep_the_first() -> None:
    """When two attempts get equally far, the first to get there is the matched one (first touch)."""
    events = [*run("p", 2, start=0, agent="first"), *run("p", 2, start=10, agent="second")]
    report = funnel_report(events, steps=STEPS, breakdown="agent")
    assert [f.value for f in report.breakdowns] == ["first"]
    assert users(report, "first") == [1, 1, 0]


def test_a_new_attempt_can_use_a_later_start_to_stay_in_the_window() -> None:
    """An old start whose window ran out does not block a newer start from converting."""
    day = 24 * 60.0
    events = [
        ev("funnel_started", "p", 0),
        ev("funnel_started", "p", 10 * day),
        ev("funnel_vm_ready", "p", 20 * day),
        ev("funnel_handoff", "p", 23 * day),
    ]
    assert users(funnel_report(events, steps=STEPS)) == [1, 1, 1]


def test_a_repeated_step_keeps_its_earliest_event() -> None:
    """A step seen twice in one attempt is matched by its first occurrence (its elapsed_ms counts)."""
    events = [*run("p", 2), ev("funnel_vm_ready", "p", 5, elapsed=7000.0), ev("funnel_handoff", "p", 6)]
    report = funnel_report(events, steps=STEPS)
    assert users(report) == [1, 1, 1]
    assert report.overall.steps[1].median_elapsed_ms == 1000.0


def test_breakdown_uses_the_matched_attempt_first_touch() -> None:
    """A unit's breakdown value is the first non-empty one on its matched events; none -> "(none)"."""
    events = [
        *run("a", 3, agent="claude"),
        *run("b", 2, agent="codex"),
        ev("funnel_started", "c", 0),  # no agent on step 1: the next step's value counts
        ev("funnel_vm_ready", "c", 1, agent="claude"),
        *run("d", 1),
        *run("e", 1, agent=""),
        *run("f", 1, agent=True),
    ]
    report = funnel_report(events, steps=STEPS, breakdown="agent")
    assert [(f.value, users(report, f.value)) for f in report.breakdowns] == [
        ("(none)", [2, 0, 0]),
        ("claude", [2, 2, 1]),
        ("codex", [1, 1, 0]),
        ("true", [1, 0, 0]),
    ]
    assert users(report) == [6, 3, 1]


def test_breakdown_merges_values_past_the_limit_into_other() -> None:
    """The least common breakdown values beyond the limit are counted together as "(other)"."""
    events = run("a", 2, ref="hn") + run("b", 3, ref="hn") + run("c", 1, ref="x") + run("d", 3, ref="y")
    report = funnel_report(events, steps=STEPS, breakdown="ref", breakdown_limit=1)
    assert [(f.value, users(report, f.value)) for f in report.breakdowns] == [
        ("hn", [2, 2, 1]),
        ("(other)", [2, 1, 1]),
    ]


def test_median_time_comes_from_the_matched_events_elapsed_ms() -> None:
    """Each step's median is over the matched events' elapsed_ms; none carried -> None."""
    events = [
        ev("funnel_started", "a", 0, elapsed=0),
        ev("funnel_vm_ready", "a", 1, elapsed=100),
        ev("funnel_started", "b", 0, elapsed=2),
        ev("funnel_vm_ready", "b", 1, elapsed=300),
        ev("funnel_started", "c", 0, elapsed=4),
        ev("funnel_vm_ready", "c", 1),
        ev("funnel_handoff", "c", 2, elapsed_ms="fast"),
    ]
    report = funnel_report(events, steps=STEPS)
    assert [s.median_elapsed_ms for s in report.overall.steps] == [2.0, 200.0, None]


def test_default_steps_are_the_prefixed_events_in_typical_order() -> None:
    """Without --steps: prefixed events except failed/abandoned, by position in runs, then elapsed_ms."""
    events = [
        ev("funnel_handoff", "a", 3, elapsed=900),
        ev("funnel_started", "a", 0, elapsed=0),
        ev("agent_selected", "a", 1, elapsed=5),
        ev("funnel_failed", "b", 2, elapsed=50),
        ev("funnel_abandoned", "c", 2, elapsed=60),
        ev("funnel_vm_ready", "a", 2, elapsed=400),
        ev("funnel_no_time", "a", 4),
        ev("funnel_started", "b", 0, elapsed=0),  # b's second step: same position as vm_ready, sooner
        ev("funnel_quick", "b", 1, elapsed=300),
    ]
    report = funnel_report(events)
    assert report.steps == (
        "funnel_started",
        "funnel_quick",
        "funnel_vm_ready",
        "funnel_handoff",
        "funnel_no_time",
    )
    assert users(report) == [2, 1, 0, 0, 0]
    assert funnel_report(events, prefix="agent_").steps == ("agent_selected",)


def test_default_order_does_not_depend_on_how_far_runs_got() -> None:
    """Step order comes from positions within runs: slow runs that stopped early do not reorder steps."""
    events = [
        *(ev(n, "fast", i, elapsed=10 * i, funnel_id="f") for i, n in enumerate(STEPS)),
        *(
            ev(n, f"slow{k}", i, elapsed=1000 * i, funnel_id=f"s{k}")
            for k in range(3)
            for i, n in enumerate(STEPS[:2])
        ),
    ]
    report = funnel_report(events)
    assert report.steps == tuple(
        STEPS
    )  # by median elapsed_ms alone vm_ready (1000) would follow handoff (20)
    assert users(report) == [4, 4, 1]


def test_explicit_steps_may_name_any_event() -> None:
    """--steps can use events without the prefix, such as tracked picker events."""
    events = [ev("funnel_started", "a", 0), ev("agent_selected", "a", 1), ev("funnel_started", "b", 0)]
    report = funnel_report(events, steps=["funnel_started", "agent_selected"])
    assert users(report) == [2, 1]


def test_counting_by_a_property_counts_runs() -> None:
    """`by="funnel_id"` makes every run a unit, so one machine's runs do not collapse into one person."""
    events = run("me", 3, funnel_id="r1") + run("me", 1, start=10, funnel_id="r2")
    assert users(funnel_report(events, steps=STEPS)) == [1, 1, 1]
    report = funnel_report(events, steps=STEPS, by="funnel_id")
    assert users(report) == [2, 1, 1]
    assert "2 funnel_id values entered" in render_text(report)


def test_events_without_a_unit_or_a_timestamp_are_ignored_and_counted() -> None:
    """A step event lacking distinct_id or a readable timestamp is skipped and reported as ignored."""
    events: list[Mapping[str, Any]] = [
        ev("funnel_started", "a"),
        {"event": "funnel_started", "timestamp": T0.isoformat(), "properties": {}},
        {"event": "funnel_started", "distinct_id": "b", "timestamp": "yesterday", "properties": None},
        {"event": "funnel_started", "properties": {"distinct_id": "c"}, "timestamp": T0.isoformat()},
        {"event": "other", "distinct_id": "d", "timestamp": "nope"},
        {"event": 7, "distinct_id": "e", "timestamp": T0.isoformat()},
    ]
    report = funnel_report(events, steps=STEPS)
    assert (report.events_read, report.events_ignored, users(report)) == (6, 2, [2, 0, 0])
    assert funnel_report(events).steps == ("funnel_started",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": []}, "event names"),
        ({"steps": ["a", "b", "a"]}, "listed twice"),
        ({"window_days": 0}, "positive number of days"),
        ({"breakdown": ""}, "breakdown property"),
        ({"by": ""}, "distinct_id"),
        ({"breakdown_limit": 0}, "at least 1"),
    ],
)
def test_bad_parameters_fail_with_a_config_error(kwargs: dict[str, Any], message: str) -> None:
    """A wrong option is a ConfigError (a ValueError) that says what to give instead."""
    with pytest.raises(ConfigError, match=message):
        funnel_report([], **kwargs)


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00+00:00", T0),
        ("2026-03-01T12:00:00Z", T0),
        ("2026-03-01 12:00:00", T0),
        ("2026-03-01T13:30:00+0130", T0),
        ("2026-03-01T12:00:00.5Z", T0 + timedelta(milliseconds=500)),
        ("2026-03-01T12:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        ("2026-03-01T14:00:00.250+02:00", T0 + timedelta(milliseconds=250)),
    ],
)
def test_timestamps_with_or_without_a_zone(text: str, expected: datetime) -> None:
    """ISO-8601 with Z, an offset, no zone (UTC), a space separator or any fraction length parses."""
    assert parse_timestamp(text) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize("value", ["yesterday", "", 1767225600, None, "2026-13-01T00:00:00Z"])
def test_unreadable_timestamps_raise_value_error(value: object) -> None:
    """Anything that is not an ISO-8601 string is refused with a ValueError."""
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(value)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_reader_tolerates_export_quirks_and_reports_bad_lines(tmp_path: Path) -> None:
    """Blank lines are skipped, distinct_id is lifted from properties, bad lines are listed by number."""
    good = json.dumps(ev("funnel_started", "a"))
    lifted = json.dumps(
        {"event": "funnel_started", "timestamp": "2026-03-01T12:00:00Z", "properties": {"distinct_id": "b"}}
    )
    as_string = json.dumps(
        {
            "event": "x",
            "distinct_id": "c",
            "timestamp": "2026-03-01 12:00:00",
            "properties": json.dumps({"k": 1}),
        }
    )
    path = write_lines(
        tmp_path / "events.jsonl",
        [
            good,
            "",
            "   ",
            lifted,
            "{not json",
            "[1, 2]",
            as_string,
            '{"event": "x", "timestamp": "2026"}',
            '{"event": "", "distinct_id": "d"}',
            '{"event": "x", "distinct_id": "d", "timestamp": "soon"}',
            '{"event": "x", "distinct_id": "d", "timestamp": "2026-03-01", "properties": 3}',
            '{"event": "x", "distinct_id": "d", "timestamp": "2026-03-01", "properties": "{"}',
        ],
    )
    problems = Problems()
    events = list(read_events_file(path, problems=problems))
    assert [(e["event"], e["distinct_id"]) for e in events] == [
        ("funnel_started", "a"),
        ("funnel_started", "b"),
        ("x", "c"),
    ]
    assert events[2]["properties"] == {"k": 1}
    assert [line for line, _ in problems.first] == [5, 6, 8, 9, 10, 11, 12]
    assert problems.lines("events.jsonl")[:3] == [
        "events.jsonl:5: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1))",
        "events.jsonl:6: not a JSON object",
        "events.jsonl:8: no distinct_id",
    ]


def test_problem_list_keeps_the_first_and_counts_the_rest(tmp_path: Path) -> None:
    """Only the first problems are kept in memory; the summary says how many more were skipped."""
    path = write_lines(tmp_path / "bad.jsonl", ["oops"] * 25)
    problems = Problems(keep=3)
    assert list(read_events_file(path, problems=problems)) == []
    assert problems.count == 25
    assert problems.lines("bad.jsonl")[-1] == "bad.jsonl: 22 more malformed line(s) skipped"


def test_progress_counts_events_that_do_not_come_from_a_file() -> None:
    """`counted` passes events through unchanged and reports progress for long in-memory inputs."""
    stream = Stream(tty=False)
    events = [{"n": n} for n in range(PROGRESS_EVERY + 1)]
    assert list(counted(events, Progress(stream))) == events
    assert stream.getvalue() == "otel-spawn funnel: 50,000 read\n"


def test_a_big_file_reports_progress_from_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over the size threshold shows progress at once and by share of bytes, even with few lines."""
    monkeypatch.setattr(_report, "_BIG_FILE", 1000)
    line = json.dumps(ev("funnel_started", "a", note="x" * 200))
    path = write_lines(tmp_path / "wide.jsonl", [line] * 10)
    stream = Stream(tty=False)
    assert len(list(read_events_file(path, progress=Progress(stream)))) == 10
    assert stream.getvalue() == "".join(f"otel-spawn funnel: {n} read ({n / 10:.0%})\n" for n in range(11))


def test_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    """read_events_file raises FileNotFoundError when called, not later while counting."""
    with pytest.raises(FileNotFoundError):
        read_events_file(tmp_path / "missing.jsonl")


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_appears_only_for_long_reads(tmp_path: Path) -> None:
    """Reading more than PROGRESS_EVERY lines writes progress lines; a small file writes nothing."""
    line = json.dumps(ev("funnel_started", "a"))
    big = write_lines(tmp_path / "big.jsonl", [line] * (PROGRESS_EVERY + 10_000))
    small = write_lines(tmp_path / "small.jsonl", [line] * 10)
    loud, quiet = Stream(tty=False), Stream(tty=False)
    assert sum(1 for _ in read_events_file(big, progress=Progress(loud))) == PROGRESS_EVERY + 10_000
    assert sum(1 for _ in read_events_file(small, progress=Progress(quiet))) == 10
    assert loud.getvalue() == "otel-spawn funnel: 50,000 read (83%)\n"
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_overwrites_one_line() -> None:
    """On a terminal each progress line overwrites the last, and finish() ends the line."""
    stream = Stream(tty=True)
    progress = Progress(stream, "reading")
    for count in (10, PROGRESS_EVERY, PROGRESS_EVERY + 1, 2 * PROGRESS_EVERY):
        progress.update(count)
    progress.finish()
    assert stream.getvalue() == "\rreading: 50,000 read\rreading: 100,000 read\n"


# --- rendering -----------------------------------------------------------------------------------


def sample_report() -> FunnelReport:
    events = run("a", 3, agent="claude") + run("b", 2, agent="codex") + run("c", 1, agent="claude")
    return funnel_report(events, steps=STEPS, breakdown="agent")


def test_text_table_shows_every_column() -> None:
    """The terminal table lists users, both conversions, drop-off and the median time per step."""
    assert render_text(sample_report()) == (
        "Funnel: 3 persons entered; window 14 days; 6 events read, 0 ignored, "
        "2026-03-01T12:00:00Z .. 2026-03-01T12:02:00Z\n"
        "\n"
        "step                  users  of first  of prev  dropped  median time\n"
        "1. funnel_started         3    100.0%   100.0%        0         0 ms\n"
        "2. funnel_vm_ready        2     66.7%    66.7%        1        1.0 s\n"
        "3. funnel_handoff         1     33.3%    50.0%        1        2.0 s\n"
        "\n"
        "agent = claude (2 entered)\n"
        "step                  users  of first  of prev  dropped  median time\n"
        "1. funnel_started         2    100.0%   100.0%        0         0 ms\n"
        "2. funnel_vm_ready        1     50.0%    50.0%        1        1.0 s\n"
        "3. funnel_handoff         1     50.0%   100.0%        0        2.0 s\n"
        "\n"
        "agent = codex (1 entered)\n"
        "step                  users  of first  of prev  dropped  median time\n"
        "1. funnel_started         1    100.0%   100.0%        0         0 ms\n"
        "2. funnel_vm_ready        1    100.0%   100.0%        0        1.0 s\n"
        "3. funnel_handoff         0      0.0%     0.0%        1            -\n"
    )


def test_text_output_neutralises_terminal_escapes() -> None:
    """A property value holding an escape sequence cannot drive the terminal: control characters become ?."""
    events = [ev("funnel_started", "a", agent="\x1b]0;pwned\x07\x1b[2Jclaude\nfake line")]
    text = render_text(funnel_report(events, steps=STEPS, breakdown="agent"))
    assert "agent = ?]0;pwned??[2Jclaude?fake line (1 entered)" in text
    assert "\x1b" not in text
    assert "\x07" not in text


def test_empty_input_says_so() -> None:
    """With no funnel events the text says so instead of printing an empty table."""
    report = funnel_report([ev("other", "a")])
    assert render_text(report) == "no funnel events found (1 events read)\n"
    assert render_json(report)["overall"] == {"value": None, "steps": []}
    assert "<p>No funnel events found.</p>" in render_html(report)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (999.4, "999 ms"),
        (12_345, "12.3 s"),
        (270_000, "4.5 min"),
        (7_560_000, "2.1 h"),
    ],
)
def test_durations_read_naturally(ms: float | None, text: str) -> None:
    """Median times are shown in ms, s, min or h as fits."""
    assert format_ms(ms) == text


def test_json_has_the_documented_schema() -> None:
    """--json output: a versioned, stable shape with every number of the table."""
    data = render_json(sample_report())
    assert json.loads(json.dumps(data)) == data
    step = {
        "step": "",
        "users": 0,
        "conversion_from_first": 0.0,
        "conversion_from_previous": 0.0,
        "dropped": 0,
        "median_elapsed_ms": 0.0,
    }
    assert data == {
        "schema": JSON_SCHEMA,
        "steps": STEPS,
        "window_days": 14,
        "by": "distinct_id",
        "breakdown": "agent",
        "events_read": 6,
        "events_ignored": 0,
        "first_timestamp": "2026-03-01T12:00:00+00:00",
        "last_timestamp": "2026-03-01T12:02:00+00:00",
        "overall": {
            "value": None,
            "steps": [
                {
                    **step,
                    "step": "funnel_started",
                    "users": 3,
                    "conversion_from_first": 100.0,
                    "conversion_from_previous": 100.0,
                },
                {
                    **step,
                    "step": "funnel_vm_ready",
                    "users": 2,
                    "conversion_from_first": 66.67,
                    "conversion_from_previous": 66.67,
                    "dropped": 1,
                    "median_elapsed_ms": 1000.0,
                },
                {
                    **step,
                    "step": "funnel_handoff",
                    "users": 1,
                    "conversion_from_first": 33.33,
                    "conversion_from_previous": 50.0,
                    "dropped": 1,
                    "median_elapsed_ms": 2000.0,
                },
            ],
        },
        "breakdowns": data["breakdowns"],
    }
    assert [(b["value"], [s["users"] for s in b["steps"]]) for b in data["breakdowns"]] == [
        ("claude", [2, 1, 1]),
        ("codex", [1, 1, 0]),
    ]
    assert data["breakdowns"][1]["steps"][2]["median_elapsed_ms"] is None


def test_html_is_one_self_contained_page() -> None:
    """The page has inline SVG charts and nothing that loads from elsewhere (no URL, src, script, link)."""
    page = render_html(sample_report())
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 3  # overall + one per breakdown value
    assert re.search(r"https?:|src=|<script|<link|@import|url\(", page, re.IGNORECASE) is None
    assert "default-src 'none'" in page
    assert ">3 · 100.0%<" in page
    assert ">1 · 33.3%<" in page


def test_html_escapes_untrusted_property_values() -> None:
    """A hostile breakdown value or event name reaches the page only escaped."""
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    events = [ev(f"funnel_{evil}", "a", 0, agent=evil), ev("funnel_started", "a", 1)]
    report = funnel_report(events, steps=[f"funnel_{evil}", "funnel_started"], breakdown="agent")
    page = render_html(report)
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


# --- end to end ----------------------------------------------------------------------------------


class QuotaExceeded(RuntimeError):
    pass


def launch(agent: str, cloud: str, ref: str | None = None, fail_at: str | None = None) -> None:
    """One spawn-like launch through the public funnel API (the demo CLI's steps, in order)."""
    otel_spawn.configure(app="spawn", exporters="local", enabled=True)
    try:
        with otel_spawn.funnel("spawn", ref=ref):
            otel_spawn.set_context("agent", agent)
            otel_spawn.set_context("cloud", cloud)
            for name in DEMO_ORDER[1:]:
                with otel_spawn.step(name.removeprefix("funnel_")):
                    if name == f"funnel_{fail_at}":
                        raise QuotaExceeded("quota exceeded")
    except QuotaExceeded:
        pass
    finally:
        otel_spawn.shutdown()


@pytest.fixture
def demo_events(_isolated_home: Path) -> list[dict[str, Any]]:
    """Three launches on one machine (the second fails at vm_ready), as recorded by the local sink."""
    launch("claude", "hetzner", ref="hn")
    launch("codex", "gcp", fail_at="vm_ready")
    launch("claude", "aws")
    store = LocalStore(_isolated_home)
    try:
        return store.events()
    finally:
        store.close()


def test_demo_runs_of_one_machine_are_one_person(demo_events: list[dict[str, Any]]) -> None:
    """All local runs share one distinct_id: per person it is one user who reached the end; per run 3."""
    report = funnel_report(demo_events)
    assert list(report.steps) == DEMO_ORDER
    assert users(report) == [1] * 8
    per_run = funnel_report(demo_events, by="funnel_id")
    assert users(per_run) == [3, 3, 3, 2, 2, 2, 2, 2]
    assert per_run.overall.steps[3].dropped == 1


def test_exported_demo_events_count_per_person(demo_events: list[dict[str, Any]], tmp_path: Path) -> None:
    """Demo events exported as JSON lines with one person per run: 3 start, 2 reach vm_ready and handoff."""
    lines = []
    for number, event in enumerate(demo_events):
        exported = {**event, "distinct_id": f"person-{event['properties']['funnel_id'][:8]}"}
        if number % 2:  # PostHog-export quirks: distinct_id only in properties, a `Z` timestamp
            exported["properties"] = {**event["properties"], "distinct_id": exported.pop("distinct_id")}
            exported["timestamp"] = event["timestamp"].replace("+00:00", "Z")
        lines.append(json.dumps(exported))
    path = write_lines(tmp_path / "export.jsonl", [*lines, "", "{truncated"])
    problems = Problems()
    report = funnel_report(read_events_file(path, problems=problems), breakdown="agent")
    assert problems.first == [(len(lines) + 2, problems.first[0][1])]
    assert (report.events_read, report.events_ignored) == (len(demo_events), 0)
    assert users(report) == [3, 3, 3, 2, 2, 2, 2, 2]
    assert [(f.value, users(report, f.value)[::3]) for f in report.breakdowns] == [
        ("claude", [2, 2, 2]),
        ("codex", [1, 0, 0]),
    ]
    assert all(s.median_elapsed_ms is not None for s in report.overall.steps)


def test_cli_funnel_prints_the_report_and_writes_html(tmp_path: Path) -> None:
    """`otel-spawn funnel --events FILE --json --html PAGE`: report on stdout, bad lines on stderr, a page."""
    path = write_lines(tmp_path / "e.jsonl", [json.dumps(e) for e in run("a", 3) + run("b", 1)] + ["{oops"])
    page = tmp_path / "funnel.html"
    args = ["funnel", "--events", str(path), "--steps", ",".join(STEPS), "--json", "--html", str(page)]
    result = run_cli(*args, env=child_env())
    assert result.returncode == 0
    assert [s["users"] for s in json.loads(result.stdout)["overall"]["steps"]] == [2, 1, 1]
    assert result.stderr.splitlines() == [
        f"{path}:5: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        f"wrote {page}",
    ]
    assert "<svg" in page.read_text(encoding="utf-8")
