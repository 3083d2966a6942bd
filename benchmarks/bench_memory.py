"""Goal 6: memory and bounds over one million steps with the PostHog endpoint down.

A child process runs the real `configure()` pipeline (exporters="posthog", enabled, a temp
OTEL_SPAWN_HOME, the endpoint an unused port, every other setting default) and one funnel with
STEPS `with otel_spawn.step(...)` blocks, so the sender keeps failing and backing off while the spool
fills up to its cap and then evicts its oldest events. Reported: peak RSS (VmHWM, sampled along the
way; ru_maxrss is kept too, but it also counts the parent's RSS at fork, which Linux keeps over exec),
the spool's counted bytes against its cap, its size on disk (database + WAL), events evicted and
kept, the largest size of the spool's journal (records not yet folded into SQLite) at the sample
points, and the time taken. Goal: peak RSS <= 150 MB and the spool within its cap.

The run takes STEPS x the per-step cost of goal 1 (bench_step.py). The exit-time flusher is turned
off for this child (OTEL_SPAWN_FLUSHER_SECONDS=0): bench_exit.py measures it.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import API_KEY, HOST, MiB, Row, clean_env, emit, progress, run_child, unused_port, verdict
from benchlib import table as render_table

STEPS = 1_000_000
GOAL_RSS_MB = 150.0
SAMPLES = 10


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM): ru_maxrss also counts the parent's RSS at fork (kept over exec)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _ru_maxrss_mb()


def _ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _journal_bytes(home: Path) -> int:
    """The spool's journal files on disk now (records not yet folded into SQLite)."""
    total = 0
    for path in home.glob("*journal-*"):
        with contextlib.suppress(OSError):  # folded and removed meanwhile
            total += path.stat().st_size
    return total


def _child(steps: int) -> dict[str, Any]:
    import otel_spawn
    from otel_spawn import _state
    from otel_spawn._spool import SPOOL_DB, SqliteSpool

    home = Path(tempfile.mkdtemp(prefix="otel-spawn-bench-memory-"))
    _state.claim_notice(home)
    rss_start = _peak_rss_mb()
    telemetry = otel_spawn.configure(
        app="bench",
        app_version="1.0.0",
        exporters="posthog",
        enabled=True,
        posthog_host=f"http://{HOST}:{unused_port()}",
        posthog_api_key=API_KEY,
        home=home,
    )
    cap = telemetry.settings.spool_max_bytes
    rss_configured = _peak_rss_mb()
    every = max(1, steps // SAMPLES)
    trajectory: list[tuple[int, float, float, int]] = []  # (steps done, seconds, peak RSS MB, journal bytes)
    step = otel_spawn.step
    start = time.perf_counter()
    with otel_spawn.funnel("bench", agent="claude", cloud="hetzner"):
        for done in range(1, steps + 1):
            with step("work"):
                pass
            if done % every == 0:
                elapsed = time.perf_counter() - start
                trajectory.append((done, elapsed, _peak_rss_mb(), _journal_bytes(home)))
                progress(
                    f"memory: {done:,} steps, {elapsed:.0f} s ({elapsed / done * 1e6:.0f} us/step), "
                    f"peak RSS {trajectory[-1][2]:.0f} MB, journal {trajectory[-1][3] / MiB:.2f} MiB"
                )
    elapsed = time.perf_counter() - start
    otel_spawn.shutdown()
    spool = SqliteSpool(home)
    status = spool.status()
    spool.close()
    on_disk = sum(p.stat().st_size for p in home.iterdir() if p.name.startswith(SPOOL_DB))
    shutil.rmtree(home, ignore_errors=True)
    return {
        "steps": steps,
        "seconds": elapsed,
        "us_per_step": elapsed / steps * 1e6,
        "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": _ru_maxrss_mb(),
        "rss_at_start_mb": rss_start,
        "rss_after_configure_mb": rss_configured,
        "trajectory": trajectory,
        "spool_bytes": status.bytes,
        "spool_cap_bytes": cap,
        "spool_on_disk_bytes": on_disk,
        "journal_max_bytes": max(point[3] for point in trajectory),
        "spool_events": status.depth,
        "evicted": status.evicted,
        "events": status.depth + status.evicted + telemetry.delivery.sent,
        "sent": telemetry.delivery.sent,
        "last_error": status.last_error,
    }


def run(steps: int = STEPS) -> dict[str, object]:
    progress(f"memory: {steps:,} steps with the endpoint down (takes steps x the per-step cost)")
    figures: dict[str, object] = run_child(
        "bench_memory.py", [str(steps)], env=clean_env(OTEL_SPAWN_FLUSHER_SECONDS="0"), timeout=3600
    )
    figures["goal_rss_mb"] = GOAL_RSS_MB
    return figures


def rows(figures: dict[str, Any]) -> list[Row]:
    rss, spool, cap = figures["peak_rss_mb"], figures["spool_bytes"], figures["spool_cap_bytes"]
    return [
        Row(
            "6",
            f"{figures['steps']:,} steps, endpoint down: peak RSS; spool bytes / cap",
            f"{rss:.0f} MB; {spool / MiB:.2f} / {cap / MiB:.0f} MiB "
            f"({figures['spool_on_disk_bytes'] / MiB:.1f} MiB on disk; journal <= "
            f"{figures['journal_max_bytes'] / MiB:.1f} MiB), {figures['evicted']:,} evicted",
            f"took {figures['seconds']:.0f} s ({figures['us_per_step']:.0f} us/step)",
            "-",
            f"<= {GOAL_RSS_MB:g} MB; <= cap",
            verdict(rss <= GOAL_RSS_MB and spool <= cap),
        )
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        emit(_child(int(sys.argv[2])))
    else:
        print(render_table(rows(run(int(sys.argv[1]) if len(sys.argv) > 1 else STEPS))))
