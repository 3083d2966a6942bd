"""Shared helpers of the benchmark suite: medians, the result table, child processes, environments.

Every benchmark that configures telemetry, or whose timing a leftover thread could disturb, runs its
measurement in a fresh child process (`python bench_x.py --child ...`) that prints its figures as
one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
HOST = "127.0.0.1"
API_KEY = "phc_benchmark"
MB = 1_000_000
MiB = 1024 * 1024

# Variables that would change what a child measures: opt-outs, exporters, hosts, propagated context.
_CLEARED_PREFIXES = ("OTEL_", "POSTHOG_", "PEER_", "SPAWN_", "BENCH_")
_CLEARED = frozenset(
    {"DO_NOT_TRACK", "TRACEPARENT", "TRACESTATE", "BAGGAGE", "PYTEST_CURRENT_TEST", "PYTHONPATH", "CI"}
)


def progress(message: str) -> None:
    """One line of progress on stderr (stdout is for results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def per_call_us(loop: Callable[[int], object], n: int) -> float:
    """Microseconds per iteration of `loop(n)`."""
    start = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - start) / n / 1000


def per_call_wall_and_thread_us(loop: Callable[[int], object], n: int) -> tuple[float, float]:
    """Microseconds per iteration of `loop(n)`: wall clock, and CPU time of the calling thread only
    (not counting other threads of the process, nor time spent waiting for the GIL)."""
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    loop(n)
    return (time.perf_counter_ns() - wall) / n / 1000, (time.thread_time_ns() - cpu) / n / 1000


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any telemetry setting, plus `overrides`.

    Children read compiled modules from a bytecode cache of the benchmarks' own (as an installed
    package does: pip compiles on install), even if this shell sets PYTHONDONTWRITEBYTECODE: else an
    editable install recompiles otel_spawn on every run while installed peers do not, and a run that
    imports more of it (telemetry on vs off) pays its compilation as if it were run time. The demo's
    own state (its list of VMs) starts empty, so runs do not slow down as it grows.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _CLEARED and not name.startswith(_CLEARED_PREFIXES)
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "otel-spawn-bench-pycache")
    env["SPAWN_DEMO_HOME"] = tempfile.mkdtemp(prefix="otel-spawn-bench-demo-")  # the demo's fleet file
    env.update(overrides)
    return env


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def run_child(
    script: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run `python benchmarks/<script> --child <args>` and return the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), "--child", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else clean_env(),
        cwd=BENCH_DIR,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script} {' '.join(args)} failed with exit code {proc.returncode}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def emit(figures: Mapping[str, Any]) -> None:
    """A child's result: one JSON line on stdout."""
    print(json.dumps(figures), flush=True)


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Row:
    """One line of the results table. `result` is PASS, MISS, or "-" for a figure without a goal."""

    goal: str  # which goal of the issue (1-6)
    figure: str
    ours: str
    peer: str
    ratio: str
    target: str
    result: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}x" if peer else "-"


HEADER = ("#", "figure", "otel-spawn", "comparison (same run)", "ratio (ours ÷ comparison)", "goal", "result")


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    cells = [HEADER, *((r.goal, r.figure, r.ours, r.peer, r.ratio, r.target, r.result) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(cells[0]), separator, *(line(row) for row in cells[1:])])
