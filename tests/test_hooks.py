"""Opt-in uncaught-exception hooks: `$exception` events, scrubbed, reported once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from helpers import posthog_env
from servers import CaptureServer

SCRIPT = """
import sys, threading
import otel_spawn

otel_spawn.configure(app="hooks", exporters="posthog", enabled=True, capture_exceptions=True)

def worker():
    raise RuntimeError("worker failed for bob@example.com")

thread = threading.Thread(target=worker)
thread.start()
thread.join()

mode = sys.argv[1]
if mode == "in_funnel":
    with otel_spawn.funnel("spawn"):
        with otel_spawn.step("vm_ready"):
            raise ValueError("step failed")
raise ValueError("top level with token ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8")
"""


def run_script(tmp_path: Path, server: CaptureServer, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app_main.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = posthog_env(server.url, "phc_hooks", OTEL_SPAWN_FLUSHER_SECONDS="5")
    return subprocess.run(
        [sys.executable, str(script), mode], env=env, text=True, capture_output=True, timeout=60, check=False
    )


def exceptions(server: CaptureServer) -> list[dict[str, Any]]:
    return [e["properties"]["$exception_list"][0] for e in server.events if e["event"] == "$exception"]


def test_uncaught_exceptions_in_threads_and_main_are_reported_scrubbed(
    tmp_path: Path, capture_server: CaptureServer
) -> None:
    """Both the thread's and the main thread's uncaught exceptions arrive, with scrubbed values."""
    result = run_script(tmp_path, capture_server, "top")
    assert result.returncode == 1
    assert "Traceback" in result.stderr  # the host's own traceback is still printed
    assert capture_server.wait_for_events(2, timeout=10)
    reported = exceptions(capture_server)
    assert [(e["type"], e["mechanism"]["handled"]) for e in reported] == [
        ("RuntimeError", False),
        ("ValueError", False),
    ]
    assert "bob@example.com" not in str(reported)
    assert "ghp_" not in str(reported)
    assert "[REDACTED:" in reported[0]["value"]
    assert "[REDACTED:" in reported[1]["value"]
    frame = reported[1]["stacktrace"]["frames"][-1]
    assert frame["platform"] == "python"
    assert frame["filename"].endswith("app_main.py")
    assert frame["in_app"] is True


def test_exception_that_failed_a_step_is_reported_once(tmp_path: Path, capture_server: CaptureServer) -> None:
    """An exception already reported by its step is not reported again by the hook."""
    result = run_script(tmp_path, capture_server, "in_funnel")
    assert result.returncode == 1
    assert capture_server.wait_for_events(4, timeout=10)
    names = [e["event"] for e in capture_server.events]
    assert names.count("$exception") == 2  # the thread's, and the step's
    assert names.count("funnel_failed") == 1
    values = [e["value"] for e in exceptions(capture_server)]
    assert values.count("step failed") == 1
    step_exception = next(
        e for e in capture_server.events if e["event"] == "$exception" and "step" in e["properties"]
    )
    assert step_exception["properties"]["funnel_id"] is not None
