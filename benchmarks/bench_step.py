"""Goal 1: what one instrumented step costs on the host's thread, against a bare OpenTelemetry span.

otel-spawn: the real `configure()` pipeline (exporters="posthog", enabled, a temp OTEL_SPAWN_HOME):
`with otel_spawn.step("work")` inside an open funnel, so the time includes the funnel API, the SDK
span, scrubbing and the durable write of the step (its span record appended to the spool's
journal), plus whatever the sender thread takes from the host while it translates the records into
PostHog events and sends or folds them into SQLite (every ~20 ms, concurrently; while the endpoint
is down it makes a failed attempt now and then, with backoff, and folds only once half the spool's
cap waits); also the same step through a spec-wrapped function (`funnel_spec`). Baseline, in the
same process and interleaved with it: `with tracer.start_as_current_span("work")` on a bare SDK
TracerProvider with a BatchSpanProcessor and a no-op exporter. Two endpoints: down (an unused
port: the sender backs off, events accumulate and, past the spool cap, are evicted) and live (the
fast capture endpoint in another process: the sender thread drains while the host works, and
competes with it for the GIL).
Every figure is a median over REPEATS samples of STEPS steps, taken twice from the same loops: the
CPU time of the host's thread (what the goal names: the cost on the host's thread), and the wall
clock, which also counts what the sender thread takes from the host through the GIL while it
translates, stores and sends concurrently. Goal: <= 2x and <= 40 us.

A breakdown of one step (down endpoint) shows where the time goes: each stage timed alone on a real
finished step span (and the sender thread's fold, per record, which is not on the host's thread),
and, interleaved with the main loops, the same steps with `Sender.notify()` made a no-op (a
diagnostic variant: the sender thread then never wakes during the loop, so the difference is what
its concurrent work costs the host through the GIL). The children run with
OTEL_SPAWN_FLUSHER_SECONDS=0.

Run `python benchmarks/bench_step.py` for the figures; `run()` returns them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib import (
    API_KEY,
    HOST,
    Row,
    clean_env,
    emit,
    median,
    per_call_us,
    per_call_wall_and_thread_us,
    progress,
    ratio,
    run_child,
    unused_port,
    verdict,
)
from benchlib import table as render_table

STEPS = 500
REPEATS = 15
GOAL_RATIO = 2.0
GOAL_US = 40.0
SENDER_STAGE = "fold into SQLite: translate, encode, insert"
MODULE = "otel_spawn_bench_step_app"
SPEC = {
    "name": "bench",
    "root": f"{MODULE}:root",
    "steps": [{"target": f"{MODULE}:work", "step": "work_wrapped"}],
}


def _app() -> types.ModuleType:
    module = types.ModuleType(MODULE)
    source = "def root():\n    return None\ndef work(x):\n    return x + 1\n"
    exec(compile(source, f"<{MODULE}>", "exec"), module.__dict__)
    sys.modules[MODULE] = module
    return module


def _child(mode: str, steps: int, repeats: int) -> dict[str, Any]:
    from capture_fast import ServerProcess
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    import otel_spawn
    from otel_spawn import _state
    from otel_spawn._spool import SqliteSpool

    class NoopExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    home = Path(tempfile.mkdtemp(prefix="otel-spawn-bench-step-"))
    _state.ensure_home(home)
    _state.claim_notice(home)  # the one-time notice is not what is measured
    server = ServerProcess() if mode == "live" else None
    url = server.url if server is not None else f"http://{HOST}:{unused_port()}"
    app = _app()
    work = app.work  # the original, for the hand-written and bare loops
    telemetry = otel_spawn.configure(
        app="bench",
        app_version="1.0.0",
        exporters="posthog",
        enabled=True,
        posthog_host=url,
        posthog_api_key=API_KEY,
        home=home,
        funnel_spec=SPEC,
    )
    assert telemetry.enabled
    wrapped = app.work
    assert wrapped is not work, "the spec did not wrap the step"
    bare_provider = TracerProvider(
        resource=Resource.create({"service.name": "bench", "service.version": "1.0"})
    )
    bare_provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    tracer = bare_provider.get_tracer("bench")
    step = otel_spawn.step

    def bare(n: int) -> None:
        with tracer.start_as_current_span("root"):
            for _ in range(n):
                with tracer.start_as_current_span("work"):
                    work(1)

    def ours(n: int) -> None:
        for _ in range(n):
            with step("work"):
                work(1)

    def ours_wrapped(n: int) -> None:
        for _ in range(n):
            wrapped(1)

    loops: dict[str, Callable[[int], None]] = {"bare": bare, "step": ours, "wrapped": ours_wrapped}
    if mode == "down":
        loops["step, notify() a no-op"] = _without_wakeups(ours)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    thread: dict[str, list[float]] = {name: [] for name in loops}
    with otel_spawn.funnel("bench"):
        for loop in loops.values():  # warm up
            loop(steps // 5)
        for repeat in range(repeats):  # interleaved: drift hits every variant alike
            for name, loop in loops.items():
                wall_us, thread_us = per_call_wall_and_thread_us(loop, steps)
                samples[name].append(wall_us)
                thread[name].append(thread_us)
            if repeat % 5 == 4:
                progress(f"step ({mode}): {repeat + 1}/{repeats} samples")
    figures: dict[str, Any] = {name: median(values) for name, values in samples.items()}
    figures["thread_us"] = {name: median(values) for name, values in thread.items()}
    figures["samples_us"] = samples
    figures["thread_samples_us"] = thread
    if mode == "down":
        figures["breakdown_us"] = _breakdown(telemetry, home, steps)
    otel_spawn.shutdown()
    spool = SqliteSpool(home)
    status = spool.status()
    spool.close()
    figures.update(
        endpoint=mode,
        sent=telemetry.delivery.sent,
        spooled=status.depth,
        evicted=status.evicted,
        steps_per_sample=steps,
        repeats=repeats,
    )
    if server is not None:
        figures["server_received"] = server.count()
        server.close()
    shutil.rmtree(home, ignore_errors=True)
    return figures


def _without_wakeups(loop: Callable[[int], None]) -> Callable[[int], None]:
    """Diagnostic: `loop` with `Sender.notify()` a no-op, so no export wakes the sender thread (with
    the endpoint down nothing is sent either way; the events are spooled all the same)."""
    from otel_spawn._delivery import Sender

    original = Sender.notify

    def quiet(n: int) -> None:
        setattr(Sender, "notify", lambda self: None)  # noqa: B010
        try:
            loop(n)
        finally:
            setattr(Sender, "notify", original)  # noqa: B010

    return quiet


def _breakdown(telemetry: Any, home: Path, steps: int) -> dict[str, float]:
    """Per-stage cost of one step, each stage timed alone on a real finished step span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import otel_spawn
    from otel_spawn._funnel import use_tracer_provider
    from otel_spawn._scrub_processor import ScrubbingSpanProcessor
    from otel_spawn._setup import static_properties
    from otel_spawn._spool import SqliteSpool
    from otel_spawn._translate import EventContext, span_entry, span_record

    memory = InMemorySpanExporter()
    collector = TracerProvider(resource=telemetry.provider.resource)
    collector.add_span_processor(SimpleSpanProcessor(memory))
    bare_sdk = TracerProvider(resource=telemetry.provider.resource).get_tracer("bench")
    use_tracer_provider(collector)
    try:
        with otel_spawn.funnel("bench"), otel_spawn.step("work"):
            pass
    finally:
        use_tracer_provider(telemetry.provider)
    span = next(s for s in memory.get_finished_spans() if s.name == "work")
    scrubbing = ScrubbingSpanProcessor(telemetry.scrubber, [])
    settings = telemetry.settings
    context = EventContext(
        distinct_id=telemetry.distinct_id, prefix=settings.event_prefix, static=static_properties(settings)
    )
    record = span_record(span)
    assert record is not None
    # No sender folds this spool: a cap it never reaches keeps the host from folding (not this stage).
    spool = SqliteSpool(home / "breakdown", max_bytes=1 << 40)
    spool.put_records([record], context)  # creates the journal: not what is measured
    sender_thread_records = [{**record, "s": n} for n in range(steps * (REPEATS + 1))]  # distinct uuids
    pending = iter(sender_thread_records)

    def sdk_span(n: int) -> None:
        for _ in range(n):
            with bare_sdk.start_as_current_span("work"):
                pass

    def scrub(n: int) -> None:
        for _ in range(n):
            scrubbing.scrub_span(span)

    def journal(n: int) -> None:
        for _ in range(n):
            spool.put_records([span_entry(span)], context)  # type: ignore[list-item]

    def fold(n: int) -> None:
        for _ in range(n):
            spool.put_records([next(pending)], context)
        spool.ingest()

    stages = {
        "sdk span, no processor": sdk_span,
        "scrub check (clean span)": scrub,
        "span record + journal append": journal,
    }
    samples: dict[str, list[float]] = {name: [] for name in stages}
    folded: list[float] = []
    for _ in range(REPEATS):
        for name, loop in stages.items():
            samples[name].append(per_call_us(loop, steps))
        folded.append(per_call_us(fold, steps) - samples["span record + journal append"][-1])
    spool.close()
    figures = {name: median(values) for name, values in samples.items()}
    figures[SENDER_STAGE] = median(folded)
    return figures


def run(steps: int = STEPS, repeats: int = REPEATS) -> dict[str, object]:
    """Both endpoints, each in a fresh process; microseconds per step."""
    figures: dict[str, object] = {"goal_ratio": GOAL_RATIO, "goal_us": GOAL_US}
    for mode in ("down", "live"):
        progress(f"step: endpoint {mode}, {repeats} x {steps} steps per variant")
        env = clean_env(OTEL_SPAWN_FLUSHER_SECONDS="0")  # no exit-time flusher: bench_exit.py measures it
        figures[mode] = run_child("bench_step.py", [mode, str(steps), str(repeats)], env=env)
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """The goal on the host's thread (its CPU time per step), then the wall clock of the same loops,
    which also counts what the sender thread takes from the host through the GIL while it works."""
    out = []
    for clock in ("thread", "wall"):
        for mode, label in (("down", "endpoint down"), ("live", "endpoint up")):
            f = figures[mode]
            times = f["thread_us"] if clock == "thread" else f
            for variant, name in (("step", "`with step()`"), ("wrapped", "spec-wrapped call")):
                us, bare = times[variant], times["bare"]
                what = "host thread CPU" if clock == "thread" else "wall clock, tight loop"
                out.append(
                    Row(
                        "1",
                        f"per-step cost ({what}), {name}, {label}",
                        f"{us:.1f} us",
                        f"bare SDK span + BSP {bare:.1f} us",
                        ratio(us, bare),
                        f"<= {GOAL_RATIO:g}x and <= {GOAL_US:g} us",
                        verdict(us <= GOAL_US and us / bare <= GOAL_RATIO),
                    )
                )
    return out


def breakdown_lines(figures: dict[str, Any]) -> list[str]:
    down = figures["down"]
    stages = dict(down.get("breakdown_us", {}))
    background = stages.pop(SENDER_STAGE, None)
    if "step, notify() a no-op" in down:  # the sender thread, working meanwhile, takes the GIL
        stages["sender thread meanwhile (diagnostic)"] = down["step"] - down["step, notify() a no-op"]
    lines = [f"one step, endpoint down: {down['step']:.1f} us in all; stages timed alone:"]
    for name, us in stages.items():
        lines.append(f"  {name:44} {us:8.1f} us")
    rest = down["step"] - sum(stages.values())
    lines.append(f"  {'the rest (funnel API, processors, ...)':44} {rest:8.1f} us")
    if background is not None:
        lines.append("on the sender thread, per step (every ~20 ms, in batches):")
        lines.append(f"  {SENDER_STAGE:44} {background:8.1f} us")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        emit(_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        result = run()
        print(render_table(rows(result)))
        print("\n".join(breakdown_lines(result)))
