"""The funnel API and the pure span -> PostHog event translation."""

from __future__ import annotations

import asyncio
import marshal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import otel_spawn
from otel_spawn._funnel import use_tracer_provider
from otel_spawn._translate import (
    _UUID_NAMESPACE,
    EventContext,
    as_record,
    event_uuid,
    exception_frames,
    iso_timestamp,
    plain_attributes,
    span_entry,
    span_fields,
    span_record,
    translate,
    translate_record,
)

CTX = EventContext(distinct_id="d-1", prefix="funnel_", static={"app": "spawn", "$ip": None})


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    yield exporter
    use_tracer_provider(None)


def events_of(exporter: InMemorySpanExporter, ctx: EventContext = CTX) -> list[dict[str, Any]]:
    return [event for span in exporter.get_finished_spans() for event in translate(span, ctx)]


def names(exporter: InMemorySpanExporter) -> list[str]:
    return [event["event"] for event in events_of(exporter)]


def test_completed_steps_become_funnel_events_in_order(spans: InMemorySpanExporter) -> None:
    """Each completed step becomes `funnel_<step>`, after `funnel_started`, in completion order."""
    with otel_spawn.funnel("spawn", agent="claude"):
        with otel_spawn.step("cloud_authed"):
            pass
        with otel_spawn.step("vm_ready"):
            pass
    assert names(spans) == ["funnel_started", "funnel_cloud_authed", "funnel_vm_ready"]


def test_step_event_payload_is_complete(spans: InMemorySpanExporter) -> None:
    """A step event carries context, funnel id, timings, static properties and a span-derived uuid."""
    with otel_spawn.funnel("spawn", agent="claude", cloud="hetzner") as root:
        otel_spawn.set_context("ref", "hn")
        with otel_spawn.step("vm_ready", properties={"size": "cx22"}) as span:
            span.set_attribute("vm.ip", "203.0.113.9")
            time.sleep(0.01)
    step_span = next(s for s in spans.get_finished_spans() if s.name == "vm_ready")
    [event] = translate(step_span, CTX)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    props = event["properties"]
    assert step_span.end_time is not None
    assert step_span.start_time is not None
    funnel_start = step_span.attributes["otel_spawn.funnel.start_ns"] if step_span.attributes else 0
    assert isinstance(funnel_start, int)
    assert event == {
        "event": "funnel_vm_ready",
        "distinct_id": "d-1",
        "timestamp": iso_timestamp(step_span.end_time),
        "uuid": event["uuid"],
        "properties": {
            "app": "spawn",
            "$ip": None,
            "agent": "claude",
            "cloud": "hetzner",
            "ref": "hn",
            "funnel": "spawn",
            "funnel_id": trace_id,
            "trace_id": trace_id,
            "elapsed_ms": round((step_span.end_time - funnel_start) / 1e6),
            "step": "vm_ready",
            "step_duration_ms": round((step_span.end_time - step_span.start_time) / 1e6),
            "size": "cx22",
        },
    }
    assert props["step_duration_ms"] >= 10
    assert uuid.UUID(event["uuid"]).version == 5
    assert translate(step_span, CTX)[0]["uuid"] == event["uuid"]  # re-export: same uuid


def test_elapsed_ms_grows_and_matches_step_timing(spans: InMemorySpanExporter) -> None:
    """elapsed_ms is measured from the funnel's start and is consistent with the steps' durations."""
    with otel_spawn.funnel("spawn"):
        for name in ("a", "b", "c"):
            with otel_spawn.step(name):
                time.sleep(0.02)
    events = events_of(spans)
    elapsed = [e["properties"]["elapsed_ms"] for e in events]
    assert elapsed[0] == 0
    assert elapsed == sorted(elapsed)
    durations = [e["properties"]["step_duration_ms"] for e in events[1:]]
    assert elapsed[-1] >= sum(durations) - 3
    assert all(d >= 20 for d in durations)


def test_context_set_later_reaches_only_later_events(spans: InMemorySpanExporter) -> None:
    """set_context adds context to events after it, not before."""
    with otel_spawn.funnel("spawn"):
        with otel_spawn.step("one"):
            pass
        otel_spawn.set_context("agent", "codex")
        with otel_spawn.step("two"):
            pass
    by_name = {e["event"]: e["properties"] for e in events_of(spans)}
    assert "agent" not in by_name["funnel_one"]
    assert by_name["funnel_two"]["agent"] == "codex"


def test_track_records_span_event_and_product_event(spans: InMemorySpanExporter) -> None:
    """track() adds a span event on the current span and delivers its own product event at once."""
    with otel_spawn.funnel("spawn"):
        otel_spawn.track("agent_selected", agent="claude")
        delivered = names(spans)
    assert delivered == ["funnel_started", "agent_selected"]  # before the funnel ended
    root_span = next(s for s in spans.get_finished_spans() if s.name == "spawn")
    assert [(e.name, dict(e.attributes or {})) for e in root_span.events] == [
        ("agent_selected", {"agent": "claude"})
    ]
    event = events_of(spans)[1]
    assert event["properties"]["agent"] == "claude"
    assert "step_duration_ms" not in event["properties"]


def test_other_library_spans_and_attributes_stay_in_traces(
    spans: InMemorySpanExporter, provider: TracerProvider
) -> None:
    """Spans made by other libraries inside a step never become product events."""
    with otel_spawn.funnel("spawn"), otel_spawn.step("vm_ready") as step_span:
        step_span.set_attribute("vm.password_hint", "trace only")
        with provider.get_tracer("httpx-like").start_as_current_span("HTTP POST") as child:
            child.set_attribute("http.url", "https://api.example")
    assert "HTTP POST" in [s.name for s in spans.get_finished_spans()]
    assert names(spans) == ["funnel_started", "funnel_vm_ready"]
    assert all("http.url" not in e["properties"] for e in events_of(spans))
    assert all("vm.password_hint" not in e["properties"] for e in events_of(spans))


def test_failed_step_gives_exception_and_funnel_failed(spans: InMemorySpanExporter) -> None:
    """A raising step produces `$exception` and `funnel_failed`; the host's exception is unchanged."""
    error = ValueError("disk full")
    with pytest.raises(ValueError, match="disk full") as caught, otel_spawn.funnel("spawn"):
        with otel_spawn.step("cloud_authed"):
            pass
        with otel_spawn.step("vm_ready"):
            raise error
    assert caught.value is error
    events = events_of(spans)
    assert [e["event"] for e in events] == [
        "funnel_started",
        "funnel_cloud_authed",
        "$exception",
        "funnel_failed",
    ]
    exc = events[2]["properties"]
    [entry] = exc["$exception_list"]
    assert entry["type"] == "ValueError"
    assert entry["value"] == "disk full"
    assert entry["mechanism"] == {"handled": False, "type": "generic", "synthetic": False}
    assert entry["stacktrace"]["type"] == "raw"
    frame = entry["stacktrace"]["frames"][-1]
    assert frame["platform"] == "python"
    assert frame["filename"].endswith("test_translate.py")
    assert frame["in_app"] is True
    assert frame["function"] == "test_failed_step_gives_exception_and_funnel_failed"
    assert exc["$exception_level"] == "error"
    assert exc["funnel_id"] == events[0]["properties"]["funnel_id"]
    failed = events[3]["properties"]
    assert failed["failed_step"] == "vm_ready"
    assert failed["last_completed_step"] == "cloud_authed"
    assert failed["error_type"] == "ValueError"
    assert failed["elapsed_ms"] >= events[1]["properties"]["elapsed_ms"]


def test_error_outside_steps_is_reported_by_the_funnel(spans: InMemorySpanExporter) -> None:
    """An exception raised between steps still yields `$exception` and `funnel_failed`."""
    with pytest.raises(KeyError), otel_spawn.funnel("spawn"):
        with otel_spawn.step("one"):
            pass
        raise KeyError("x")
    events = events_of(spans)
    assert [e["event"] for e in events][-2:] == ["$exception", "funnel_failed"]
    assert events[-1]["properties"]["failed_step"] is None
    assert events[-1]["properties"]["last_completed_step"] == "one"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(2)])
def test_interrupt_or_exit_code_abandons(spans: InMemorySpanExporter, exc: BaseException) -> None:
    """KeyboardInterrupt and non-zero SystemExit give `funnel_abandoned`, never `$exception`."""
    with pytest.raises(type(exc)), otel_spawn.funnel("spawn"):
        with otel_spawn.step("one"):
            pass
        with otel_spawn.step("two"):
            raise exc
    events = events_of(spans)
    assert [e["event"] for e in events] == ["funnel_started", "funnel_one", "funnel_abandoned"]
    props = events[-1]["properties"]
    assert props["at_step"] == "two"
    assert props["last_completed_step"] == "one"


def test_system_exit_zero_completes(spans: InMemorySpanExporter) -> None:
    """SystemExit(0) is a normal end: no failure or abandon event."""
    with pytest.raises(SystemExit), otel_spawn.funnel("spawn"):
        raise SystemExit(0)
    assert names(spans) == ["funnel_started"]


def test_async_step_decorator_measures_awaited_time(spans: InMemorySpanExporter) -> None:
    """An async function decorated with step() is timed over its awaited duration."""

    @otel_spawn.step("render")
    async def render() -> str:
        await asyncio.sleep(0.02)
        return "ok"

    async def main() -> str:
        with otel_spawn.funnel("media"):
            return await render()

    assert asyncio.run(main()) == "ok"
    events = events_of(spans)
    assert events[-1]["event"] == "funnel_render"
    assert events[-1]["properties"]["step_duration_ms"] >= 20


def test_async_with_step(spans: InMemorySpanExporter) -> None:
    """`async with step(...)` works like the sync form."""

    async def main() -> None:
        with otel_spawn.funnel("media"):
            async with otel_spawn.step("upload"):
                await asyncio.sleep(0)

    asyncio.run(main())
    assert names(spans) == ["funnel_started", "funnel_upload"]


def test_sync_step_decorator_keeps_return_value(spans: InMemorySpanExporter) -> None:
    """The sync decorator returns the function's value and records the step."""

    @otel_spawn.step("pick")
    def pick(x: int) -> int:
        return x * 2

    with otel_spawn.funnel("f"):
        assert pick(21) == 42
    assert names(spans) == ["funnel_started", "funnel_pick"]


def test_step_outside_funnel_is_trace_only(spans: InMemorySpanExporter) -> None:
    """A step outside any funnel is traced but produces no product event."""
    with otel_spawn.step("lonely"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["lonely"]
    assert names(spans) == []


def test_prefix_is_configurable(spans: InMemorySpanExporter) -> None:
    """The event name prefix comes from the context."""
    with otel_spawn.funnel("f"), otel_spawn.step("x"):
        pass
    ctx = EventContext(distinct_id="d", prefix="spawn_")
    assert [e["event"] for e in events_of(spans, ctx)] == ["spawn_started", "spawn_x"]


def test_uuids_are_unique_across_events(spans: InMemorySpanExporter) -> None:
    """Every event of a run has its own uuid."""
    with otel_spawn.funnel("f"):
        for name in ("a", "b", "c"):
            with otel_spawn.step(name):
                otel_spawn.track("inside", n=1)
    uuids = [e["uuid"] for e in events_of(spans)]
    assert len(uuids) == len(set(uuids)) == 7


def test_exception_frames_parse_in_app() -> None:
    """Frames from site-packages are not in_app; the app's own are."""
    text = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/main.py", line 3, in run\n    go()\n'
        '  File "/usr/lib/python3.11/site-packages/httpx/_client.py", line 90, in send\n    x\n'
        "ValueError: boom\n"
    )
    frames = exception_frames(text)
    assert [(f["function"], f["lineno"], f["in_app"]) for f in frames] == [
        ("run", 3, True),
        ("send", 90, False),
    ]


def test_unmarked_span_translates_to_nothing() -> None:
    """A plain span without otel-spawn attributes is never a product event."""
    assert translate(ReadableSpan(name="GET /"), CTX) == []


@pytest.mark.parametrize("micros", [0, 1, 999_999])
def test_iso_timestamp_and_uuid_match_the_standard_library(micros: int) -> None:
    """The per-event fast paths give exactly what datetime.isoformat() and uuid.uuid5() give."""
    from datetime import datetime, timezone

    for seconds in (1_795_000_000, 1_795_000_001, 1_795_000_000):  # the cached second changes, and back
        ns = seconds * 1_000_000_000 + micros * 1000 + 999
        expected = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=micros).isoformat()
        assert iso_timestamp(ns) == expected
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    name = f"{trace_id:032x}-{span_id:016x}-funnel_vm_ready"
    assert event_uuid(trace_id, span_id, "funnel_vm_ready") == str(uuid.uuid5(_UUID_NAMESPACE, name))
    variants = set()
    for span_id in range(64):  # each of the four variant digits, and what SHA-1 puts around them
        name = f"{trace_id:032x}-{span_id:016x}-funnel_é"
        variants.add(event_uuid(trace_id, span_id, "funnel_é")[19])
        assert event_uuid(trace_id, span_id, "funnel_é") == str(uuid.uuid5(_UUID_NAMESPACE, name))
    assert variants == set("89ab")


def test_plain_attributes_copies_what_spans_and_events_hold(spans: InMemorySpanExporter) -> None:
    """A finished span's attributes (a read-only view of the SDK's BoundedAttributes), an event's, a
    plain mapping or none: always a new plain dict with the same items."""
    with otel_spawn.funnel("f"), otel_spawn.step("one") as span:
        span.add_event("e", {"k": "v"})
    finished = next(s for s in spans.get_finished_spans() if s.name == "one")
    for attributes in (finished.attributes, finished.events[0].attributes, {"a": 1}, None):
        plain = plain_attributes(attributes)
        assert type(plain) is dict
        assert plain == dict(attributes or {})
        plain["new"] = 1
        assert "new" not in (attributes or {})


def _fields_by_property(span: ReadableSpan) -> tuple[Any, ...]:
    return (
        *(span.name, span.context, dict(span.attributes or {}), span.status, span.start_time),
        *(span.end_time, tuple(span.events), tuple(span.links)),
    )


def test_span_fields_read_what_the_properties_show(spans: InMemorySpanExporter) -> None:
    """The fields behind an SDK span's properties, read directly, are what the properties show; a
    ReadableSpan subclass (it may override a property) is read through its properties."""
    with pytest.raises(RuntimeError), otel_spawn.funnel("f"), otel_spawn.step("one") as span:
        span.add_event("e", {"k": "v"})
        raise RuntimeError("boom")
    finished = next(s for s in spans.get_finished_spans() if s.name == "one")
    assert type(finished) is ReadableSpan
    fields = span_fields(finished)
    assert (*fields[:6], tuple(fields[6]), tuple(fields[7])) == _fields_by_property(finished)
    assert fields[3].status_code is StatusCode.ERROR

    class Renamed(ReadableSpan):
        @property
        def name(self) -> str:
            return "renamed"

    renamed = Renamed(name="one", context=finished.context, attributes={"a": 1}, end_time=5)
    assert span_fields(renamed)[:3] == ("renamed", finished.context, {"a": 1})


def test_a_record_and_its_entry_form_translate_alike(spans: InMemorySpanExporter) -> None:
    """The journal keeps a record as a tuple (`span_entry`); `as_record` gives the record back, and a
    record kept as a dict (older journals) is taken as it is. A tuple of another length is refused."""
    with pytest.raises(RuntimeError), otel_spawn.funnel("f"):
        with otel_spawn.step("one"):
            pass
        with otel_spawn.step("two"):
            raise RuntimeError("boom")
    for span in spans.get_finished_spans():
        entry = span_entry(span)
        record = span_record(span)
        if record is None:
            assert entry is None
            continue
        assert entry is not None
        assert as_record(entry) == record == as_record(record)
        assert translate_record(as_record(marshal.loads(marshal.dumps(entry))), CTX) == translate(span, CTX)
    with pytest.raises(ValueError, match="zip"):
        as_record((1, 2, 3))  # type: ignore[arg-type]


def test_steps_share_attributes_until_the_context_changes(spans: InMemorySpanExporter) -> None:
    """Steps without properties start from attributes built once per name; a context change, or
    properties, give new ones."""
    with otel_spawn.funnel("f"):
        for _ in range(2):
            with otel_spawn.step("one"):
                pass
        otel_spawn.set_context("agent", "codex")
        with otel_spawn.step("one"):
            pass
        with otel_spawn.step("one", properties={"size": 2}):
            pass
    ones = [dict(s.attributes or {}) for s in spans.get_finished_spans() if s.name == "one"]
    assert ones[0] == ones[1]
    assert "otel_spawn.context.agent" not in ones[1]
    assert ones[2]["otel_spawn.context.agent"] == "codex"
    assert ones[3]["otel_spawn.property.size"] == 2
    assert ones[3]["otel_spawn.context.agent"] == "codex"
