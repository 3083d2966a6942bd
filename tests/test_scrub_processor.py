"""ScrubbingSpanProcessor with a real TracerProvider: every span part scrubbed, the original untouched."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from otel_spawn import _guard
from otel_spawn._scrub_processor import ScrubbingSpanProcessor
from otel_spawn._scrubber import Scrubber

KEY = "sk-or-v1-" + secrets.token_hex(32)
EMAIL = f"dev.{secrets.token_hex(3)}@example.org"
USER = "u" + secrets.token_hex(4)
RESOURCE = Resource.create(
    {
        "service.name": "spawn",
        "host.owner": EMAIL,
        "process.executable.path": f"/home/{USER}/.venv/bin/python",
    }
)


class Pipeline:
    """A provider whose spans reach `scrubbed` through the processor and `raw` directly."""

    def __init__(self, resource: Resource = RESOURCE, extra: tuple[SpanProcessor, ...] = ()) -> None:
        self.scrubbed = InMemorySpanExporter()
        self.raw = InMemorySpanExporter()
        self.processor = ScrubbingSpanProcessor(Scrubber(), [SimpleSpanProcessor(self.scrubbed), *extra])
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.raw))
        self.tracer = self.provider.get_tracer("test")

    def one(self) -> tuple[ReadableSpan, ReadableSpan]:
        """The (scrubbed, raw) views of the only finished span."""
        (scrubbed,) = self.scrubbed.get_finished_spans()
        (raw,) = self.raw.get_finished_spans()
        return scrubbed, raw


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    p = Pipeline()
    yield p
    p.provider.shutdown()


def _dirty_span(pipeline: Pipeline) -> None:
    link_ctx = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with pipeline.tracer.start_as_current_span(
        f"GET /keys/{KEY}",
        attributes={
            "cmd": f"spawn --api-key {KEY} --region eu",
            "emails": [EMAIL, "ok", "[REDACTED]"],
            "api_key": "s3cr3t-" + secrets.token_hex(8),
            "attempt": 3,
            "ratio": 0.5,
            "dry_run": False,
            "ports": [22, 8080],
            "agent": "claude",
        },
        links=[Link(link_ctx, {"peer": "203.0.113.9", "cwd": f"/home/{USER}/x", "port": 22})],
    ) as span:
        span.add_event(f"mail {EMAIL}", {"to": EMAIL, "n": 1}, timestamp=1_700_000_000_000_000_000)
        try:
            raise PermissionError(f"denied for {KEY} in /home/{USER}/spawn/cli.py")
        except PermissionError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"PermissionError: denied for {KEY}"))


def _everything(span: ReadableSpan) -> str:
    """All strings of a span, its events, links, status and resource, as one text."""
    parts: list[Any] = [span.name, span.status.description, dict(span.attributes or {})]
    parts += [(e.name, dict(e.attributes or {})) for e in span.events]
    parts += [dict(link.attributes or {}) for link in span.links]
    parts.append(dict(span.resource.attributes))
    return repr(parts)


def test_every_part_of_the_span_is_scrubbed(pipeline: Pipeline) -> None:
    """Name, attributes, sequences, events, exception, status, links and resource lose their secrets."""
    _dirty_span(pipeline)
    scrubbed, raw = pipeline.one()
    text = _everything(scrubbed)
    assert KEY not in text
    assert EMAIL not in text
    assert USER not in text
    assert "203.0.113.9" not in text
    assert scrubbed.name == "GET /keys/[REDACTED:openrouter_key]"
    assert scrubbed.attributes is not None
    assert scrubbed.attributes["cmd"] == "spawn --api-key [REDACTED:openrouter_key] --region eu"
    assert scrubbed.attributes["emails"] == ("[REDACTED:email]", "ok", "[REDACTED]")
    assert scrubbed.attributes["api_key"] == "[REDACTED:secret_attribute]"
    event, exception = scrubbed.events
    assert (event.name, dict(event.attributes or {})) == (
        "mail [REDACTED:email]",
        {"to": "[REDACTED:email]", "n": 1},
    )
    assert event.timestamp == raw.events[0].timestamp
    assert exception.attributes is not None
    assert exception.attributes["exception.message"] == (
        "denied for [REDACTED:openrouter_key] in /home/[REDACTED:home_user]/spawn/cli.py"
    )
    assert KEY not in str(exception.attributes["exception.stacktrace"])
    assert scrubbed.status.description == "PermissionError: denied for [REDACTED:openrouter_key]"
    assert scrubbed.status.status_code is StatusCode.ERROR
    assert dict(scrubbed.links[0].attributes or {}) == {
        "peer": "[REDACTED:ipv4]",
        "cwd": "/home/[REDACTED:home_user]/x",
        "port": 22,
    }


def test_scrubbed_attribute_lists_rules_and_counts(pipeline: Pipeline) -> None:
    """`otel_spawn.scrubbed` holds sorted `rule:count` pairs of everything redacted, resource included."""
    _dirty_span(pipeline)
    scrubbed, raw = pipeline.one()
    assert scrubbed.attributes is not None
    assert raw.attributes is not None
    summary = str(scrubbed.attributes["otel_spawn.scrubbed"])
    pairs = dict(pair.split(":") for pair in summary.split(","))
    assert list(pairs) == sorted(pairs)
    assert {"openrouter_key", "email", "home_user", "secret_attribute"} <= set(pairs)
    assert all(n.isdigit() and int(n) > 0 for n in pairs.values())
    assert "otel_spawn.scrubbed" not in raw.attributes


def test_the_original_span_is_never_changed(pipeline: Pipeline) -> None:
    """The raw processor sees the untouched span; the scrubbed one is a different object."""
    _dirty_span(pipeline)
    scrubbed, raw = pipeline.one()
    assert scrubbed is not raw
    assert raw.name == f"GET /keys/{KEY}"
    assert raw.attributes is not None
    assert raw.attributes["emails"] == (EMAIL, "ok", "[REDACTED]")
    assert raw.resource is RESOURCE
    assert raw.resource.attributes["host.owner"] == EMAIL
    assert raw.status.description == f"PermissionError: denied for {KEY}"
    assert (scrubbed.context, scrubbed.parent, scrubbed.kind) == (raw.context, raw.parent, raw.kind)
    assert (scrubbed.start_time, scrubbed.end_time) == (raw.start_time, raw.end_time)
    assert scrubbed.instrumentation_scope == raw.instrumentation_scope
    assert scrubbed.links[0].context == raw.links[0].context


def test_non_string_values_pass_through(pipeline: Pipeline) -> None:
    """Numbers, booleans and numeric sequences are handed on unchanged."""
    _dirty_span(pipeline)
    scrubbed, _ = pipeline.one()
    assert scrubbed.attributes is not None
    assert (scrubbed.attributes["attempt"], scrubbed.attributes["ratio"]) == (3, 0.5)
    assert (scrubbed.attributes["dry_run"], scrubbed.attributes["ports"]) == (False, (22, 8080))
    assert scrubbed.attributes["agent"] == "claude"


def test_resource_is_scrubbed_once_and_shared() -> None:
    """All spans of a provider get the same scrubbed Resource object."""
    pipeline = Pipeline()
    for name in ("a", "b"):
        with pipeline.tracer.start_as_current_span(name):
            pass
    first, second = pipeline.scrubbed.get_finished_spans()
    assert first.resource is second.resource is not RESOURCE
    assert dict(first.resource.attributes) == {
        **RESOURCE.attributes,
        "host.owner": "[REDACTED:email]",
        "process.executable.path": "/home/[REDACTED:home_user]/.venv/bin/python",
    }
    assert first.attributes == {"otel_spawn.scrubbed": "email:1,home_user:1"}


def test_a_clean_span_is_passed_on_as_the_same_object() -> None:
    """Nothing to redact: the downstream gets the original span, not a copy."""
    pipeline = Pipeline(resource=Resource.create({"service.name": "spawn"}))
    with pipeline.tracer.start_as_current_span(
        "spawn.step provision", attributes={"agent": "claude", "n": 2}
    ) as span:
        span.add_event("started", {"cloud": "hetzner"})
    scrubbed, raw = pipeline.one()
    assert scrubbed is raw


def test_a_scrubbed_span_is_stable_under_a_second_processor() -> None:
    """Scrubbing an already scrubbed span changes nothing and hands on the same object."""
    pipeline = Pipeline()
    _dirty_span(pipeline)
    scrubbed, _ = pipeline.one()
    second = ScrubbingSpanProcessor(Scrubber(), [])
    assert second.scrub_span(second.scrub_span(scrubbed)) is second.scrub_span(scrubbed)


class _Recorder(SpanProcessor):
    """Records what it is called with; optionally fails."""

    def __init__(self, fail: bool = False, flush_ok: bool = True) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.flush_ok = flush_ok

    def on_start(self, span: Span, parent_context: object = None) -> None:
        self.calls.append("start")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append("end")
        if self.fail:
            raise RuntimeError("downstream broke")

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.calls.append(f"flush:{timeout_millis}")
        return self.flush_ok


def test_lifecycle_calls_are_forwarded_to_every_downstream() -> None:
    """on_start, shutdown and force_flush reach each downstream; flush is True only if all succeed."""
    good, slow = _Recorder(), _Recorder(flush_ok=False)
    processor = ScrubbingSpanProcessor(Scrubber(), [good])
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("x"):
        pass
    assert processor.force_flush(123) is True
    assert ScrubbingSpanProcessor(Scrubber(), [good, slow]).force_flush(5) is False
    processor.shutdown()
    assert good.calls == ["start", "end", "flush:123", "flush:5", "shutdown"]


def test_a_broken_downstream_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """With errors swallowed, the processor after a failing one still gets the span."""
    monkeypatch.setenv("OTEL_SPAWN_SWALLOW_ERRORS", "1")
    broken, good = _Recorder(fail=True), _Recorder()
    pipeline = Pipeline(extra=(broken, good))
    _dirty_span(pipeline)
    assert broken.calls == good.calls == ["start", "end"]
    assert len(pipeline.scrubbed.get_finished_spans()) == 1


def test_a_broken_downstream_is_raised_under_pytest() -> None:
    """Under pytest (errors not swallowed) a downstream's exception surfaces, after the others ran."""
    broken, good = _Recorder(fail=True), _Recorder()
    pipeline = Pipeline(extra=(broken, good))
    with pytest.raises(RuntimeError, match="downstream broke"):
        _dirty_span(pipeline)
    assert good.calls == ["start", "end"]


def _boom(self: Scrubber, key: str, value: str) -> Any:
    raise RuntimeError("scrubber bug")


def test_an_internal_error_drops_the_span_and_costs_the_host_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A scrubbing failure drops the span (never forwarded unscrubbed) and warns once."""
    monkeypatch.setenv("OTEL_SPAWN_SWALLOW_ERRORS", "1")
    monkeypatch.setattr(_guard, "_warned", set())
    monkeypatch.setattr(Scrubber, "scrub_value", _boom)
    pipeline = Pipeline()
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        _dirty_span(pipeline)
        _dirty_span(pipeline)
    assert pipeline.scrubbed.get_finished_spans() == ()
    assert len(pipeline.raw.get_finished_spans()) == 2
    warnings = [r.getMessage() for r in caplog.records if "scrubber bug" in r.getMessage()]
    assert len(warnings) == 1
    assert "span dropped" in warnings[0]


def test_an_internal_error_is_raised_under_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OTEL_SPAWN_SWALLOW_ERRORS the bug surfaces in tests, and nothing is forwarded."""
    monkeypatch.setattr(Scrubber, "scrub_value", _boom)
    pipeline = Pipeline()
    with pytest.raises(RuntimeError, match="scrubber bug"):
        _dirty_span(pipeline)
    assert pipeline.scrubbed.get_finished_spans() == ()


def test_known_clean_strings_never_hide_a_secret() -> None:
    """Strings found clean are remembered (a cheaper check next time); a secret never is, however often
    it comes and whatever clean strings come with it."""
    pipeline = Pipeline(resource=Resource.create({"service.name": "spawn"}))
    for _ in range(3):
        with pipeline.tracer.start_as_current_span("vm_ready", attributes={"agent": "claude", "note": "ls"}):
            pass
        with pipeline.tracer.start_as_current_span("vm_ready", attributes={"agent": "claude", "note": KEY}):
            pass
    scrubbed = [dict(span.attributes or {}) for span in pipeline.scrubbed.get_finished_spans()]
    assert [attrs["note"] for attrs in scrubbed] == ["ls", "[REDACTED:openrouter_key]"] * 3
    assert KEY not in repr(scrubbed)
    assert {"vm_ready", "claude", "ls"} <= pipeline.processor._clean
    assert KEY not in pipeline.processor._clean


def test_a_span_known_clean_by_its_values_still_has_its_keys_and_events_checked() -> None:
    """A span with the very name and values of one found clean is passed on after one lookup; the
    same values under a secret-looking key, or with an event that holds a secret, are still scrubbed."""
    pipeline = Pipeline(resource=Resource.create({"service.name": "spawn"}))
    values = {"agent": "claude", "note": "s3cr3t-value"}
    for _ in range(2):  # the second is known clean from the first
        with pipeline.tracer.start_as_current_span("vm_ready", attributes=values):
            pass
    assert ("vm_ready", None, "claude", "s3cr3t-value") in pipeline.processor._clean_spans
    with pipeline.tracer.start_as_current_span(
        "vm_ready", attributes={"agent": "claude", "password": "s3cr3t-value"}
    ):
        pass
    with pipeline.tracer.start_as_current_span("vm_ready", attributes=values) as span:
        span.add_event("login", {"token": KEY})
    with pipeline.tracer.start_as_current_span("vm_ready", attributes={**values, "ports": [22, 8080]}):
        pass  # a list value: no lookup key, the check runs in full
    first, second, by_key, with_event, with_list = pipeline.scrubbed.get_finished_spans()
    assert dict(first.attributes or {}) == dict(second.attributes or {}) == values
    assert dict(by_key.attributes or {})["password"] != "s3cr3t-value"
    assert KEY not in _everything(with_event)
    assert dict(with_list.attributes or {})["note"] == "s3cr3t-value"


def test_the_clean_span_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("otel_spawn._scrub_processor._CLEAN_CACHE_SIZE", 4)
    pipeline = Pipeline(resource=Resource.create({"service.name": "spawn"}))
    for n in range(10):
        with pipeline.tracer.start_as_current_span("step", attributes={"n": n}):
            pass
    assert 1 <= len(pipeline.processor._clean_spans) <= 4
