"""Spec wrapper benchmark: what the wrapt wrapper adds per call, beyond the step/event it records.

Run `python benchmarks/bench_wrapper.py` for a table; `run()` returns the figures as a dict.
For each case the same work is done three ways: a bare call; the same by hand (`with
otel_spawn.step(...)`, `otel_spawn.track(...)`); and a call through the spec's wrapper. Samples
of each are taken back to back, in alternating order, many times, in CPU time with the garbage
collector off (as timeit does); "wrapper overhead" is the median of the paired differences
wrapped - by hand: the wrapper's own cost per call. "wrapt floor" is what a do-nothing wrapt
wrapper costs: module functions get a FunctionWrapper with the "staticmethod" binding, which skips
wrapt's per-call check for an unbound method call (see otel_spawn_instrumentation/_patcher.py).
Goal: <= 1 us. After `uninstrument()` the original function object is back, so a call costs
exactly a bare call. Tracer providers: "noop" (no spans: least noise) and "sdk" (an SDK
TracerProvider without processors: real spans, dropped when they end).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wrapt
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otel_spawn_instrumentation._patcher import _ModuleFunctionWrapper

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, however we are loaded
from benchlib import Row, verdict

import otel_spawn
from otel_spawn._funnel import use_tracer_provider
from otel_spawn._spec import instrument_spec, parse_spec, uninstrument

CALLS = 2_000
REPEATS = 101
GOAL_NS = 1_000
MODULE = "otel_spawn_bench_app"
SPEC = {
    "name": "bench",
    "root": f"{MODULE}:root",
    "steps": [
        {"target": f"{MODULE}:work", "step": "work"},
        {"target": f"{MODULE}:work_ctx", "step": "work_ctx", "context_args": ["region"]},
        {"target": f"{MODULE}:Target.run", "step": "method"},
    ],
    "events": [{"target": f"{MODULE}:pick", "event": "picked", "properties": {"value": "return"}}],
}


def _app() -> types.ModuleType:
    module = types.ModuleType(MODULE)
    source = (
        "def root():\n    return None\n"
        "def work(x):\n    return x + 1\n"
        "def work_ctx(x, region):\n    return x + 1\n"
        "def pick(x):\n    return x + 1\n"
        "class Target:\n    def run(self, x):\n        return x + 1\n"
        "class Plain:\n    def run(self, x):\n        return x + 1\n"
    )
    exec(compile(source, f"<{MODULE}>", "exec"), module.__dict__)
    sys.modules[MODULE] = module
    return module


def _per_call_ns(loop: Callable[[int], None], calls: int) -> float:
    # CPU time of this (single-threaded) process: time spent descheduled on a busy machine is not counted.
    start = time.process_time_ns()
    loop(calls)
    return (time.process_time_ns() - start) / calls


def _cases(
    app: types.ModuleType, originals: types.SimpleNamespace
) -> dict[str, dict[str, Callable[[int], None]]]:
    work, work_ctx, pick = originals.work, originals.work_ctx, originals.pick
    step, set_context, track = otel_spawn.step, otel_spawn.set_context, otel_spawn.track

    def bare_work(n: int) -> None:
        for _ in range(n):
            work(1)

    def hand_work(n: int) -> None:
        for _ in range(n):
            with step("work"):
                work(1)

    def wrapped_work(n: int) -> None:
        f = app.work
        for _ in range(n):
            f(1)

    target, plain = app.Target(), app.Plain()  # same method; only Target's is instrumented

    def bare_method(n: int) -> None:
        for _ in range(n):
            plain.run(1)

    def hand_method(n: int) -> None:
        for _ in range(n):
            with step("method"):
                plain.run(1)

    def wrapped_method(n: int) -> None:
        for _ in range(n):
            target.run(1)

    def bare_ctx(n: int) -> None:
        for _ in range(n):
            work_ctx(1, "eu")

    def hand_ctx(n: int) -> None:
        for _ in range(n):
            with step("work_ctx"):
                set_context("region", "eu")
                work_ctx(1, "eu")

    def wrapped_ctx(n: int) -> None:
        f = app.work_ctx
        for _ in range(n):
            f(1, "eu")

    def bare_pick(n: int) -> None:
        for _ in range(n):
            pick(1)

    def hand_pick(n: int) -> None:
        for _ in range(n):
            value = pick(1)
            track("picked", value=value)

    def wrapped_pick(n: int) -> None:
        f = app.pick
        for _ in range(n):
            f(1)

    return {
        "step": {"bare": bare_work, "by hand": hand_work, "wrapped": wrapped_work},
        "step (method)": {"bare": bare_method, "by hand": hand_method, "wrapped": wrapped_method},
        "step + context_args": {"bare": bare_ctx, "by hand": hand_ctx, "wrapped": wrapped_ctx},
        "event + return property": {"bare": bare_pick, "by hand": hand_pick, "wrapped": wrapped_pick},
    }


def _paired(
    hand: Callable[[int], None], wrapped: Callable[[int], None], calls: int, repeats: int
) -> tuple[float, float, float]:
    """Medians of `hand`, of `wrapped` and of their paired differences (ns per call), GC off as in timeit."""
    hands, wraps, diffs = [], [], []
    for i in range(repeats):
        gc.collect()
        gc.disable()
        try:
            if i % 2:
                a, b = _per_call_ns(hand, calls), _per_call_ns(wrapped, calls)
            else:
                b, a = _per_call_ns(wrapped, calls), _per_call_ns(hand, calls)
        finally:
            gc.enable()
        hands.append(a)
        wraps.append(b)
        diffs.append(b - a)
    return statistics.median(hands), statistics.median(wraps), statistics.median(diffs)


def _wrapt_floors(calls: int, repeats: int) -> dict[str, float]:
    """What a wrapt wrapper that only passes the call through costs beyond a bare call (ns): with
    wrapt's default FunctionWrapper, and with the one the spec uses for module functions."""

    def work(x: int) -> int:
        return x + 1

    def passthrough(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return wrapped(*args, **kwargs)

    def bare(n: int) -> None:
        for _ in range(n):
            work(1)

    floors = {}
    for label, factory in (
        ("FunctionWrapper", wrapt.FunctionWrapper),
        ("module function", _ModuleFunctionWrapper),
    ):
        through = factory(work, passthrough)

        def wrapped(n: int, through: Callable[[int], int] = through) -> None:
            for _ in range(n):
                through(1)

        floors[label] = _paired(bare, wrapped, calls, repeats)[2]
    return floors


def _measure(
    app: types.ModuleType, provider: trace.TracerProvider, calls: int, repeats: int
) -> dict[str, dict[str, float]]:
    originals = types.SimpleNamespace(work=app.work, work_ctx=app.work_ctx, pick=app.pick)
    use_tracer_provider(provider)
    instrument_spec(parse_spec(SPEC, "the benchmark"))
    out: dict[str, dict[str, float]] = {}
    try:
        with otel_spawn.funnel("bench"):
            cases = _cases(app, originals)
            for loops in cases.values():  # warm up
                for loop in loops.values():
                    loop(1_000)
            for case, loops in cases.items():
                bare = statistics.median(
                    _per_call_ns(loops["bare"], calls) for _ in range(max(1, repeats // 4))
                )
                hand, wrapped, overhead = _paired(loops["by hand"], loops["wrapped"], calls, repeats)
                out[case] = {"bare": bare, "by hand": hand, "wrapped": wrapped, "wrapper overhead": overhead}
    finally:
        uninstrument()
        use_tracer_provider(None)
    return out


def _after_uninstrument(app: types.ModuleType, calls: int, repeats: int) -> dict[str, float | bool]:
    original = app.work
    instrument_spec(parse_spec(SPEC, "the benchmark"))
    uninstrument()
    restored = app.work is original

    def bare(n: int) -> None:
        for _ in range(n):
            original(1)

    def through_module(n: int) -> None:
        f = app.work
        for _ in range(n):
            f(1)

    times: dict[str, list[float]] = {"bare": [], "after": []}
    for _ in range(repeats):
        times["bare"].append(_per_call_ns(bare, calls))
        times["after"].append(_per_call_ns(through_module, calls))
    return {"original restored": restored, **{k: statistics.median(v) for k, v in times.items()}}


def run(calls: int = CALLS, repeats: int = REPEATS) -> dict[str, object]:
    """Measure every case under both providers; nanoseconds per call."""
    app = _app()
    try:
        figures: dict[str, object] = {
            "calls_per_sample": calls,
            "repeats": repeats,
            "goal_ns": GOAL_NS,
            "wrapt_floor_ns": _wrapt_floors(calls, repeats),
            "noop": _measure(app, trace.NoOpTracerProvider(), calls, repeats),
            "sdk": _measure(app, TracerProvider(), calls, repeats),
            "uninstrumented": _after_uninstrument(app, calls, repeats),
        }
    finally:
        del sys.modules[MODULE]
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    """Lines for benchmarks/run.py's table: the wrapper's own cost per call, per case."""
    out = []
    for provider in ("noop", "sdk"):
        for case, m in figures[provider].items():
            overhead = m["wrapper overhead"]
            out.append(
                Row(
                    "-",
                    f"spec wrapper's own cost, {case}, {provider} provider",
                    f"{overhead / 1000:.2f} us",
                    f"by hand {m['by hand'] / 1000:.1f} us",
                    "-",
                    f"<= {figures['goal_ns'] / 1000:g} us",
                    verdict(overhead <= figures["goal_ns"]),
                )
            )
    after = figures["uninstrumented"]
    out.append(
        Row(
            "-",
            "call after uninstrument()",
            f"{after['after']:.0f} ns",
            f"bare {after['bare']:.0f} ns",
            "-",
            "the original object",
            verdict(bool(after["original restored"])),
        )
    )
    return out


def _print(figures: dict[str, Any]) -> None:
    print(f"ns per call; {figures['repeats']} paired samples of {figures['calls_per_sample']} calls")
    floors = figures["wrapt_floor_ns"]
    print(
        f"wrapt floor, a pass-through wrapper: FunctionWrapper {floors['FunctionWrapper']:.0f} ns, "
        f"the spec's wrapper for module functions {floors['module function']:.0f} ns\n"
    )
    header = f"{'provider':8} {'case':24} {'bare':>8} {'by hand':>9} {'wrapped':>9} {'wrapper overhead':>17}"
    print(header)
    print("-" * len(header))
    for provider in ("noop", "sdk"):
        for case, m in figures[provider].items():
            verdict = "ok" if m["wrapper overhead"] <= figures["goal_ns"] else "OVER GOAL"
            print(
                f"{provider:8} {case:24} {m['bare']:8.0f} {m['by hand']:9.0f} {m['wrapped']:9.0f} "
                f"{m['wrapper overhead']:13.0f}  {verdict}"
            )
    after = figures["uninstrumented"]
    print(
        f"\nafter uninstrument(): original object restored: {after['original restored']}; "
        f"bare {after['bare']:.0f} ns, through the module attribute {after['after']:.0f} ns"
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    _print(run(calls=500, repeats=21) if quick else run())
