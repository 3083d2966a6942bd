"""`make demo`: a short tour of the bundled demo CLI on the local sink (no server, no key).

Runs a few launches (one failing, one interrupted), reconnects to and deletes a VM, then prints the
events of one run and the funnel as PostHog would count it. Uses a throw-away state directory.
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
    ("a third one", ["--agent", "claude", "--cloud", "aws", "--ref", "hn"]),
    (
        "one that fails",
        ["--agent", "claude", "--cloud", "aws", "--fail-at", "vm_ready", "--fail-message", "quota"],
    ),
    ("one interrupted", ["--agent", "gemini", "--cloud", "hetzner", "--interrupt-at", "install_completed"]),
]


def otel_spawn(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_SPAWN_HOME": str(HOME / "state"), "SPAWN_DEMO_HOME": str(HOME / "cloud")}
    env["OTEL_TRACES_EXPORTER"] = "local"
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, "-m", "otel_spawn._cli", *args], env=env, text=True, capture_output=True, check=False
    )


def show(*args: str, note: str = "") -> subprocess.CompletedProcess[str]:
    result = otel_spawn(*args)
    last = (result.stdout + result.stderr).strip().splitlines()[-1:]
    print(f"$ otel-spawn {' '.join(args)}\n  -> exit {result.returncode}: {' '.join(last)}{note}")
    return result


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    print(f"otel-spawn demo: state in {HOME} (local backend: nothing leaves this machine)\n")
    for title, args in LAUNCHES:
        show("demo", "launch", *args, note=f"  ({title})")
    vm_id = otel_spawn("demo", "list").stdout.split()[0]
    show("demo", "connect", vm_id)
    show("demo", "delete", vm_id, "--fail", note="  (a failed delete sends nothing)")
    show("demo", "delete", vm_id)

    events = otel_spawn("events", "--limit", "200").stdout.splitlines()
    print("\nEvents of the failed run and the lifecycle (time, funnel, event, elapsed, step, context):")
    failed = next(line.split()[1] for line in events if "funnel_failed" in line)
    print("\n".join(line for line in events if line.split()[1] in (failed, "-")))
    print("\nThe funnel, one row per step, counting runs (`otel-spawn funnel --by funnel_id`):")
    print(otel_spawn("funnel", "--by", "funnel_id").stdout)
    print(f"All events: OTEL_SPAWN_HOME={HOME / 'state'} .venv/bin/otel-spawn events")
    print("Traces in Jaeger, the HTML funnel, the PostHog backend: see README.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
