"""Goal 3: export throughput of the PostHog path, end to end, against the official PostHog SDK.

The endpoint is capture_fast.py in its own process (asyncio, HTTP/1.1 keep-alive; per request it
gunzips, parses the JSON and counts the batch); both clients send to the same instance. Its ceiling,
and that of tests/servers.py's CaptureServer, is measured first with one keep-alive connection posting
pre-encoded 100-event batches: CaptureServer (a ThreadingHTTPServer that validates and stores every
event) is far below the rates measured here, which is why it is not used.

The events: EVENTS finished step spans made with the funnel API beforehand (not timed), like the
README's `vm_ready` event (about 680 bytes of JSON each). Timed, from the first event handed over to
the last one acknowledged by the server:
- otel-spawn: `PostHogSpanExporter.export([span])` per span as the SDK's span processor calls it
  (append the span record to the spool's journal, wake the sender, which translates the records,
  folds them into the SQLite spool and sends batches), built by `posthog_exporter()` as `configure()`
  builds it, then `force_flush()` until the spool is empty (every batch acknowledged);
- posthog SDK: `Posthog.capture()` per event with the same name, distinct_id, properties, timestamp
  and uuid, then `flush()` (which returns when its queue is drained). Settings as shipped: capture
  mode v0 (`POST /batch/`), flush_at 100, flush_interval 5 s, max_queue_size 10,000, gzip off,
  1 consumer thread, 3 retries, 15 s timeout.
EVENTS is the SDK's queue size, so neither client drops anything (the spool cap, 10 MiB, holds them
too); the server's count is checked. Both run in one child process, alternating, each repeat with a
fresh spool and a fresh client. Then, for "sustained", otel-spawn alone sends SUSTAINED events in one
go (the SDK's queue would drop all but 10,000 of them; the spool cap is raised to hold them all).
Goal: >= 20,000 events/s and >= 3x the SDK.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import (
    API_KEY,
    Row,
    clean_env,
    emit,
    median,
    package_version,
    progress,
    ratio,
    run_child,
    verdict,
)
from benchlib import table as render_table

EVENTS = 10_000
SUSTAINED = 100_000
REPEATS = 5
CEILING_SECONDS = 2.0
GOAL_EVENTS_S = 20_000.0
GOAL_RATIO = 3.0


def _spans(n: int) -> list[Any]:
    """n finished `vm_ready` step spans of one funnel, made with the real funnel API."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import otel_spawn
    from otel_spawn._funnel import use_tracer_provider

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "spawn", "service.version": "1.4.0"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    use_tracer_provider(provider)
    try:
        with otel_spawn.funnel("spawn", agent="claude", cloud="hetzner"):
            for _ in range(n):
                with otel_spawn.step("vm_ready", properties={"size": "cx22"}):
                    pass
    finally:
        use_tracer_provider(None)
    return [span for span in memory.get_finished_spans() if span.name == "vm_ready"]


def _respan(spans: list[Any], n: int) -> list[Any]:
    """n spans like `spans` (cycled), each with a span id of its own (so an event uuid of its own)."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext

    out = []
    for i in range(n):
        span = spans[i % len(spans)]
        context = SpanContext(
            span.context.trace_id, i + 1, is_remote=False, trace_flags=span.context.trace_flags
        )
        out.append(
            ReadableSpan(
                name=span.name,
                context=context,
                parent=span.parent,
                resource=span.resource,
                attributes=span.attributes,
                events=span.events,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )
    return out


def _ceiling(kind: str, body: bytes, per_batch: int) -> float:
    """Events/s a capture endpoint acknowledges from one keep-alive connection (pre-encoded batches)."""
    import httpx
    from capture_fast import ServerProcess

    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    with ServerProcess(kind) as server, httpx.Client(timeout=30) as client:
        before = server.count()
        start = time.perf_counter()
        sent = 0
        while time.perf_counter() - start < CEILING_SECONDS:
            response = client.post(server.url + "/batch/", content=body, headers=headers)
            response.raise_for_status()
            sent += per_batch
        elapsed = time.perf_counter() - start
        assert server.count() - before == sent
    return sent / elapsed


def _child(n: int, repeats: int, sustained: int) -> dict[str, Any]:
    import posthog
    from capture_fast import ServerProcess

    from otel_spawn import _config, _setup, _state
    from otel_spawn._translate import EventContext, translate

    progress(f"export: making {n} step spans")
    spans = _spans(n)

    def settings_for(home: Path, url: str, spool_max_bytes: int = 10 << 20) -> _config.Settings:
        explicit = {"app": "bench", "app_version": "1.0.0", "home": home, "exporters": "posthog",
                    "posthog_host": url, "posthog_api_key": API_KEY,
                    "spool_max_bytes": spool_max_bytes}  # fmt: skip
        return _config.resolve(explicit, environ={}, cwd=home)

    def ours_once(spans: list[Any], url: str, spool_max_bytes: int = 10 << 20) -> tuple[float, int]:
        """(events/s from the first export to the last acknowledgement, events the server received)."""
        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        exporter = _setup.posthog_exporter(settings_for(home, url, spool_max_bytes), context)
        before = server.count()
        start = time.perf_counter()
        for span in spans:
            exporter.export([span])
        flushed = exporter.force_flush(300_000)
        elapsed = time.perf_counter() - start
        got = server.count() - before
        exporter.shutdown()
        assert flushed, "otel-spawn did not drain its spool"
        return got / elapsed, got

    work = Path(tempfile.mkdtemp(prefix="otel-spawn-bench-export-"))
    probe_home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    context = EventContext(
        distinct_id=_state.distinct_id(probe_home),
        prefix="funnel_",
        static=_setup.static_properties(settings_for(probe_home, "http://127.0.0.1:9")),
    )
    events = [event for span in spans for event in translate(span, context)]
    assert len(events) == n
    event_bytes = median(len(json.dumps(e)) for e in events[:100])
    body = gzip.compress(json.dumps({"api_key": API_KEY, "batch": events[:100]}).encode(), mtime=0)
    progress("export: capture endpoint ceilings (fast, CaptureServer)")
    ceilings = {kind: _ceiling(kind, body, 100) for kind in ("fast", "threading")}

    ours: list[float] = []
    sdk: list[float] = []
    received: dict[str, list[int]] = {"otel-spawn": [], "posthog": []}
    with ServerProcess("fast") as server:
        for repeat in range(repeats):
            rate, got = ours_once(spans, server.url)
            ours.append(rate)
            received["otel-spawn"].append(got)

            client = posthog.Posthog(API_KEY, host=server.url)
            before = server.count()
            start = time.perf_counter()
            for event in events:
                client.capture(
                    event["event"],
                    distinct_id=event["distinct_id"],
                    properties=event["properties"],
                    timestamp=datetime.fromisoformat(event["timestamp"]),
                    uuid=event["uuid"],
                )
            client.flush(timeout_seconds=None)
            elapsed = time.perf_counter() - start
            got = server.count() - before
            client.shutdown()
            sdk.append(got / elapsed)
            received["posthog"].append(got)
            progress(
                f"export: {repeat + 1}/{repeats}: otel-spawn {ours[-1]:,.0f} events/s, posthog {sdk[-1]:,.0f}"
            )
        progress(f"export: sustained, {sustained:,} events in one go")
        many = _respan(spans, sustained)
        sustained_rate, sustained_got = ours_once(many, server.url, spool_max_bytes=1 << 30)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "sustained_events": len(many),
        "sustained_events_s": sustained_rate,
        "sustained_received": sustained_got,
        "events_per_repeat": n,
        "repeats": repeats,
        "event_json_bytes": event_bytes,
        "ceiling_events_s": ceilings,
        "otel-spawn_events_s": median(ours),
        "posthog_events_s": median(sdk),
        "samples_events_s": {"otel-spawn": ours, "posthog": sdk},
        "received": received,
        "lost": {who: [n - got for got in counts] for who, counts in received.items()},
        "posthog_version": package_version("posthog"),
    }


def run(events: int = EVENTS, repeats: int = REPEATS, sustained: int = SUSTAINED) -> dict[str, object]:
    progress(f"export: {repeats} x {events} events per client")
    env = clean_env(OTEL_SPAWN_FLUSHER_SECONDS="0")  # no exit-time flusher: bench_exit.py measures it
    args = [str(events), str(repeats), str(sustained)]
    figures: dict[str, object] = run_child("bench_export.py", args, env=env)
    figures.update(goal_events_s=GOAL_EVENTS_S, goal_ratio=GOAL_RATIO)
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    ours, sdk = figures["otel-spawn_events_s"], figures["posthog_events_s"]
    lost = {who: max(values) for who, values in figures["lost"].items()}
    ceilings = figures["ceiling_events_s"]
    return [
        Row(
            "3",
            f"export throughput, spans -> acknowledged (lost of {figures['events_per_repeat']:,})",
            f"{ours:,.0f} events/s, lost {lost['otel-spawn']}",
            f"posthog SDK {sdk:,.0f} events/s, lost {lost['posthog']}",
            ratio(ours, sdk),
            f">= {GOAL_EVENTS_S:,.0f}/s and >= {GOAL_RATIO:g}x",
            verdict(ours >= GOAL_EVENTS_S and ours / sdk >= GOAL_RATIO),
        ),
        Row(
            "3",
            f"export throughput sustained, {figures['sustained_events']:,} events in one go",
            f"{figures['sustained_events_s']:,.0f} events/s, lost "
            f"{figures['sustained_events'] - figures['sustained_received']}",
            "posthog SDK: its queue holds 10,000",
            "-",
            f">= {GOAL_EVENTS_S:,.0f}/s",
            verdict(figures["sustained_events_s"] >= GOAL_EVENTS_S),
        ),
        Row(
            "3",
            "capture endpoint ceiling (1 connection)",
            f"capture_fast {ceilings['fast']:,.0f} events/s",
            f"tests' CaptureServer {ceilings['threading']:,.0f} events/s",
            ratio(ceilings["fast"], ceilings["threading"]),
            "above both clients",
            "-" if ceilings["fast"] > max(ours, sdk) else "LIMITS",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        emit(_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    else:
        print(render_table(rows(run())))
