"""Shared by the end-to-end tests: expected static properties and a child process's environment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

import otel_spawn


def static_properties(app: str, app_version: str, *, is_ci: bool, source: str = "cli") -> dict[str, Any]:
    """The properties every product event of a process carries (whole-payload assertions)."""
    return {
        "app": app,
        "app_version": app_version,
        "source": source,
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "python_version": platform.python_version(),
        "is_ci": is_ci,
        "$lib": "otel-spawn",
        "$lib_version": otel_spawn.__version__,
        "$process_person_profile": False,
        "$ip": None,
        "$geoip_disable": True,
    }


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child process, with telemetry allowed (it is not itself under pytest)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["OTEL_SPAWN_ENABLE_IN_TESTS"] = "1"
    env.update(extra)
    return env


CLI = (sys.executable, "-m", "otel_spawn._cli")  # `otel-spawn` as a child process's command


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`otel-spawn ARGS` in a child process."""
    return subprocess.run([*CLI, *args], env=env, text=True, capture_output=True, timeout=60)


def posthog_env(host: str, key: str = "phc_test", **extra: str) -> dict[str, str]:
    """`child_env` with the posthog backend pointed at `host` (`extra` wins)."""
    destination = {"OTEL_EXPORTER_POSTHOG_HOST": host, "OTEL_EXPORTER_POSTHOG_API_KEY": key}
    return child_env(**{"OTEL_TRACES_EXPORTER": "posthog", **destination, **extra})
