"""Goal 2: scrubbing throughput and quality, against the legacy scrubber port and Pydantic Logfire's.

otel-spawn and the legacy eight-regex port come from `bench_scrub.run()` (its own table goes to
stderr): throughput on its mixed telemetry text (short attribute values and multi-KB stack traces,
median of 5 passes) and recall / false positives on the shared corpus. Logfire's default scrubber
gets the same text and corpus in benchmarks/.peers/logfire, a venv of its own made on first use:
logfire registers pytest plugins (`logfire.testing`, `pytest_logfire`) that would load into
`make test` in the shared .venv, and it caps opentelemetry below 1.46. If that venv cannot be made,
the figures say "not installable" and why. Goal: >= 20 MB/s and >= 5x the legacy scrubber.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_scrub
from benchlib import BENCH_DIR, Row, progress, ratio, verdict
from benchlib import table as render_table

GOAL_MB_S = 20.0
GOAL_RATIO = 5.0
PEERS_DIR = BENCH_DIR / ".peers"
LOGFIRE_VENV = PEERS_DIR / "logfire"
LOGFIRE_REQUIREMENT = "logfire"


def logfire_python() -> tuple[Path | None, str]:
    """(the peer venv's python, "") once logfire is installed there, else (None, why not)."""
    python = LOGFIRE_VENV / "bin" / "python"
    marker = LOGFIRE_VENV / ".installed"
    if marker.exists() and python.exists():
        return python, ""
    progress(f"scrub: installing {LOGFIRE_REQUIREMENT} into {LOGFIRE_VENV.relative_to(BENCH_DIR.parent)}")
    PEERS_DIR.mkdir(exist_ok=True)
    (PEERS_DIR / ".gitignore").write_text("*\n")
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(LOGFIRE_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LOGFIRE_REQUIREMENT],
    )
    for command in steps:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"not installable: {type(exc).__name__}: {exc}"
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            return None, "not installable: " + (lines[-1] if lines else f"exit code {proc.returncode}")
    marker.touch()
    return python, ""


def _logfire(values: list[str], corpus: list[str]) -> dict[str, Any]:
    python, why = logfire_python()
    if python is None:
        return {"status": why}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"values": values, "corpus": corpus}, handle)
    try:
        proc = subprocess.run(
            [str(python), str(BENCH_DIR / "peer_logfire_scrub.py"), handle.name],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        Path(handle.name).unlink()
    if proc.returncode != 0:
        return {"status": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    outputs = dict(zip(corpus, result.pop("corpus_outputs"), strict=True))
    result["corpus"] = bench_scrub.corpus_quality(outputs.__getitem__)
    result["status"] = "ok"
    return result


def run() -> dict[str, object]:
    progress("scrub: bench_scrub.run() (adversarial inputs, throughput, corpus; its table goes to stderr)")
    with contextlib.redirect_stdout(sys.stderr):
        ours = bench_scrub.run()
    shorts, traces = bench_scrub.mixed_telemetry()
    corpus = (
        [json.loads(line)["text"] for line in bench_scrub.CORPUS.read_text().splitlines() if line.strip()]
        if bench_scrub.CORPUS.is_file()
        else []
    )
    progress("scrub: Logfire's default scrubber on the same text")
    return {
        "goal_mb_s": GOAL_MB_S,
        "goal_ratio": GOAL_RATIO,
        "bench_scrub": ours,
        "logfire": _logfire(shorts + traces, corpus),
    }


def _quality(q: dict[str, Any] | None) -> str:
    if q is None:
        return "corpus not found"
    return f"recall {q['recall']:.0%}, false positives {q['false_positive_rate']:.1%}"


def rows(figures: dict[str, Any]) -> list[Row]:
    scrub = figures["bench_scrub"]
    tp = scrub["throughput"]
    ours, legacy = tp["ours_mb_s"], tp["legacy_mb_s"]
    lf = figures["logfire"]
    logfire_speed = f"{lf['mb_s']:.1f} MB/s" if lf["status"] == "ok" else lf["status"]
    out = [
        Row(
            "2",
            f"scrub throughput, mixed telemetry ({tp['mixed_bytes'] / 1e6:.2f} MB)",
            f"{ours:.1f} MB/s",
            f"legacy 8-regex {legacy:.1f} MB/s",
            ratio(ours, legacy),
            f">= {GOAL_MB_S:g} MB/s and >= {GOAL_RATIO:g}x",
            verdict(ours >= GOAL_MB_S and ours / legacy >= GOAL_RATIO),
        ),
        Row(
            "2",
            "scrub corpus (shared/data/scrub-corpus.jsonl)",
            _quality(scrub["corpus_ours"]),
            f"legacy {_quality(scrub['corpus_legacy'])}",
            "-",
            "(context)",
            "-",
        ),
    ]
    if lf["status"] == "ok":
        out.append(
            Row(
                "2",
                f"vs Logfire {lf['version']} default scrubber (same text, corpus)",
                f"{ours:.1f} MB/s; {_quality(scrub['corpus_ours'])}",
                f"{logfire_speed}; {_quality(lf['corpus'])}",
                ratio(ours, lf["mb_s"]),
                "(context)",
                "-",
            )
        )
    else:
        out.append(Row("2", "vs Logfire default scrubber", "-", logfire_speed, "-", "(context)", "-"))
    return out


if __name__ == "__main__":
    print(render_table(rows(run())))
