"""`make bench`: run every benchmark, print one table, write benchmarks/results.json.

Each figure is measured in the same run as the figure it is compared with, as a ratio where there is
one, and is a median over repeats. The parts, in order (the longest last):

  step     goal 1  per-step cost on the host's thread vs a bare OpenTelemetry span   bench_step.py
  scrub    goal 2  scrubbing throughput and corpus quality vs legacy and Logfire     bench_scrub_peers.py
  export   goal 3  PostHog export throughput vs the official posthog SDK             bench_export.py
  startup  goal 5  start-up cost vs bare Python, `import posthog`, the OTel SDK      bench_startup.py
  exit     goal 4  exit delay with a dead endpoint vs the posthog SDK and OTLP       bench_exit.py
  memory   goal 6  one million steps with the endpoint down: RSS, spool bounds       bench_memory.py

`python benchmarks/run.py [--only PART ...] [--quick] [--memory-steps N]`. --quick shrinks every
repeat count (and the memory run to 50,000 steps) for development. A full run writes
benchmarks/results.json; a partial or quick one writes only where --output says. Progress goes to
stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_exit
import bench_export
import bench_memory
import bench_scrub_peers
import bench_startup
import bench_step
from benchlib import BENCH_DIR, REPO, Row, package_version, progress, table

RESULTS = BENCH_DIR / "results.json"
PARTS = ("step", "scrub", "export", "startup", "exit", "memory")


def _runners(quick: bool, memory_steps: int) -> dict[str, Callable[[], dict[str, object]]]:
    return {
        "step": lambda: bench_step.run(steps=200, repeats=5) if quick else bench_step.run(),
        "scrub": bench_scrub_peers.run,
        "export": lambda: (
            bench_export.run(events=2_000, repeats=2, sustained=10_000) if quick else bench_export.run()
        ),
        "startup": lambda: bench_startup.run(repeats=5) if quick else bench_startup.run(),
        "exit": lambda: bench_exit.run(3, 1, 2) if quick else bench_exit.run(),
        "memory": lambda: bench_memory.run(steps=memory_steps),
    }


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "step": bench_step.rows,
    "scrub": bench_scrub_peers.rows,
    "export": bench_export.rows,
    "startup": bench_startup.rows,
    "exit": bench_exit.rows,
    "memory": bench_memory.rows,
}


def _notes(figures: dict[str, Any]) -> list[str]:
    """What limits the figures: printed under the table."""
    notes = []
    if "step" in figures:
        notes.extend(bench_step.breakdown_lines(figures["step"]))
    if "startup" in figures:
        slowest = ", ".join(f"{name} {ms:.0f} ms" for name, ms in figures["startup"]["slowest_imports_ms"])
        notes.append(f"slowest imports of `import otel_spawn; otel_spawn.configure()`: {slowest}")
    if "exit" in figures:
        off = {who: figures["exit"][who]["off_s"] * 1000 for who in ("otel-spawn", *bench_exit.PEERS)}
        notes.append("telemetry-off run times: " + ", ".join(f"{who} {ms:.0f} ms" for who, ms in off.items()))
    return notes


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def _source_digest() -> str:
    """sha256 of the measured library's sources (the commit id misses uncommitted changes)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "otel_spawn").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _meta(quick: bool) -> dict[str, Any]:
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "commit": _git_commit(),
        "otel_spawn_sources_sha256": _source_digest(),
        "versions": {
            name: package_version(name)
            for name in (
                "otel-spawn",
                "opentelemetry-sdk",
                "opentelemetry-exporter-otlp-proto-http",
                "httpx",
                "posthog",
            )
        },
    }


def _report(meta: dict[str, Any], figures: dict[str, Any], parts: list[str]) -> list[Row]:
    """Print the table, the notes and a summary line; return the rows."""
    rows = sorted((row for part in parts for row in ROWS[part](figures[part])), key=lambda row: row.goal)
    print(table(rows))
    notes = _notes(figures)
    if notes:
        print()
        print("\n".join(notes))
    print(
        f"\n{len(rows)} figures, {sum(r.result == 'PASS' for r in rows)} PASS, "
        f"{sum(r.result == 'MISS' for r in rows)} MISS; {meta['total_seconds']:.0f} s; load average "
        f"{meta['load_average_at_start'][0]:.1f} at start, {meta['load_average_at_end'][0]:.1f} at end "
        f"({meta['cpus']} CPUs)"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", action="append", choices=PARTS, metavar="PART", help=f"one of {', '.join(PARTS)}"
    )
    parser.add_argument("--quick", action="store_true", help="small repeat counts, for development")
    parser.add_argument("--memory-steps", type=int, default=None, help="steps of the memory part (1,000,000)")
    parser.add_argument("--output", help="where to write the results (default: results.json, full runs only)")
    parser.add_argument("--show", action="store_true", help="print the table of results.json; run nothing")
    args = parser.parse_args(argv)
    if args.show:
        saved = json.loads(RESULTS.read_text(encoding="utf-8"))
        _report(saved["meta"], saved["figures"], list(saved["figures"]))
        return 0
    parts = [part for part in PARTS if not args.only or part in args.only]
    if {"export", "exit"} & set(parts) and package_version("posthog") is None:
        print("export and exit compare with the posthog SDK: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    memory_steps = args.memory_steps or (50_000 if args.quick else bench_memory.STEPS)
    runners = _runners(args.quick, memory_steps)

    meta = _meta(args.quick)
    figures: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for part in parts:
        progress(f"== {part}")
        began = time.perf_counter()
        figures[part] = runners[part]()
        seconds[part] = time.perf_counter() - began
        progress(f"== {part} done in {seconds[part]:.0f} s")
    meta.update(
        parts=parts,
        seconds=seconds,
        total_seconds=time.perf_counter() - start,
        load_average_at_end=os.getloadavg(),
        logfire=(figures.get("scrub") or {}).get("logfire", {}).get("version"),
    )
    rows = _report(meta, figures, parts)
    partial = args.quick or bool(args.only) or args.memory_steps is not None
    output = Path(args.output) if args.output else None if partial else RESULTS
    if output is None:
        progress("a partial or quick run: results not written (use --output)")
        return 0
    results = {"meta": meta, "table": [row.as_dict() for row in rows], "figures": figures}
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, output)
    progress(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
