"""`make demo`: a short tour of the bundled spawn demo on the local sink (no server, no key).

Runs a few launches (one failing, one interrupted) with a throw-away state directory, then prints
the product events that were recorded and where the spans are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HOME = Path(__file__).resolve().parent.parent / ".demo-home"
LAUNCHES: list[tuple[str, list[str]]] = [
    ("a successful launch", ["--agent", "claude", "--cloud", "hetzner", "--ref", "readme"]),
    ("a second one", ["--agent", "codex", "--cloud", "gcp", "--ref", "hn"]),
    (
        "one that fails at vm_ready",
        ["--agent", "claude", "--cloud", "aws", "--fail-at", "vm_ready", "--fail-message", "quota exceeded"],
    ),
    (
        "one interrupted during install",
        ["--agent", "gemini", "--cloud", "hetzner", "--interrupt-at", "install_completed"],
    ),
]


def otel_spawn(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_SPAWN_HOME": str(HOME), "OTEL_TRACES_EXPORTER": "local"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, "-m", "otel_spawn._cli", *args], env=env, text=True, capture_output=True, check=False
    )


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    print(f"otel-spawn demo: state directory {HOME} (local backend, nothing leaves this machine)\n")
    for title, args in LAUNCHES:
        result = otel_spawn("demo", "launch", *args)
        last = (result.stdout + result.stderr).strip().splitlines()[-1:]
        print(
            f"$ otel-spawn demo launch {' '.join(args)}\n"
            f"  -> exit {result.returncode}: {' '.join(last)}  ({title})"
        )
    print("\nProduct events recorded (time, funnel, event, elapsed, step, context):")
    events = otel_spawn("events", "--limit", "200")
    print(events.stdout or events.stderr)
    print(f"Spans and events are in {HOME / 'local.sqlite3'}.")
    print(f"Again by hand: OTEL_SPAWN_HOME={HOME} .venv/bin/otel-spawn events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
