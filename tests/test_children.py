"""Child processes continue the parent's funnel: TRACEPARENT/BAGGAGE in the environment of Popen."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from apps import Captured
from helpers import posthog_env, static_properties
from opentelemetry import trace
from servers import CaptureServer

import otel_spawn
from otel_spawn._children import install_child_propagation, uninstall_child_propagation

SHOW_ENV = (
    "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('TRACEPARENT', 'BAGGAGE', 'KEEP')}))"
)


@pytest.fixture
def propagation() -> Iterator[None]:
    install_child_propagation()
    yield
    uninstall_child_propagation()


def child_env(**popen: Any) -> dict[str, str | None]:
    """What a child Python process sees of TRACEPARENT, BAGGAGE and KEEP."""
    out = subprocess.run(
        [sys.executable, "-c", SHOW_ENV], capture_output=True, text=True, check=True, **popen
    )
    seen: dict[str, str | None] = json.loads(out.stdout)
    return seen


def traceparent_of_current_span() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


@pytest.mark.parametrize(
    "env",
    [
        None,  # a copy of os.environ gets the funnel
        {"KEEP": "explicit"},  # the caller's own env keeps its keys and gets the funnel
        {b"KEEP": b"explicit"},  # a bytes environment stays bytes
    ],
)
def test_a_child_started_in_a_step_gets_the_funnel(
    propagation: None, monkeypatch: pytest.MonkeyPatch, env: Mapping[Any, Any] | None
) -> None:
    """Inside a step, a child's environment carries the step's traceparent and the funnel's baggage."""
    monkeypatch.setenv("KEEP", "inherited")
    with Captured(), otel_spawn.funnel("deploy", region="eu"), otel_spawn.step("spawned"):
        expected = traceparent_of_current_span()
        seen = child_env(env=env)
    assert seen["TRACEPARENT"] == expected
    assert seen["BAGGAGE"] is not None
    assert "otel_spawn.funnel=deploy" in seen["BAGGAGE"].split(",")
    assert "otel_spawn.context.region=%22eu%22" in seen["BAGGAGE"].split(",")
    assert seen["KEEP"] == ("inherited" if env is None else "explicit")


def test_an_env_passed_positionally_gets_the_funnel(propagation: None) -> None:
    """`env` given as Popen's 11th positional argument is merged too."""
    with Captured(), otel_spawn.funnel("deploy"):
        expected = traceparent_of_current_span()
        command = [sys.executable, "-c", SHOW_ENV]
        env = {"KEEP": "positional"}
        with subprocess.Popen(
            command, -1, None, None, subprocess.PIPE, None, None, True, False, None, env
        ) as proc:
            stdout, _ = proc.communicate()
    assert json.loads(stdout) == {
        "TRACEPARENT": expected,
        "BAGGAGE": json.loads(stdout)["BAGGAGE"],
        "KEEP": "positional",
    }


def test_outside_a_funnel_the_environment_is_untouched(
    propagation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No funnel, no change: the child sees exactly the parent's environment."""
    monkeypatch.setenv("KEEP", "inherited")
    with Captured():
        assert child_env() == {"TRACEPARENT": None, "BAGGAGE": None, "KEEP": "inherited"}


def test_with_telemetry_off_nothing_is_handed_on(propagation: None) -> None:
    """With telemetry off the funnel has no trace: no funnel context (personal choices) leaks to children."""
    assert not otel_spawn.configure().enabled  # under pytest: off, and a no-op tracer
    with otel_spawn.funnel("deploy", agent="claude"), otel_spawn.step("spawned"):
        assert child_env() == {"TRACEPARENT": None, "BAGGAGE": None, "KEEP": None}
    otel_spawn.shutdown()


def test_install_is_idempotent_and_uninstall_restores_popen_init() -> None:
    """Installing twice wraps once; uninstalling restores the original `Popen.__init__` (twice: harmless)."""
    uninstall_child_propagation()
    original = vars(subprocess.Popen)["__init__"]
    install_child_propagation()
    install_child_propagation()
    assert vars(subprocess.Popen)["__init__"] is not original
    assert vars(subprocess.Popen)["__init__"].__wrapped__ is original
    uninstall_child_propagation()
    uninstall_child_propagation()
    assert vars(subprocess.Popen)["__init__"] is original


PARENT = """
    import subprocess, sys, time
    import otel_spawn

    otel_spawn.configure(app="kids", app_version="1.0.0")
    with otel_spawn.funnel("deploy", region="eu"):
        with otel_spawn.step("parent_ready"):
            time.sleep(0.02)
        with otel_spawn.step("child_ran"):
            subprocess.run([sys.executable, sys.argv[1]], check=True)
    otel_spawn.shutdown()
"""
CHILD = """
    import time
    import otel_spawn

    otel_spawn.configure(app="kids", app_version="1.0.0")
    with otel_spawn.step("child_work"):
        time.sleep(0.01)
    otel_spawn.track("artifact_built", kind="wheel")
    otel_spawn.shutdown()
"""


def test_a_child_process_continues_the_parents_funnel(capture_server: CaptureServer, tmp_path: Path) -> None:
    """The child's events carry the parent's funnel id and distinct id, and elapsed_ms from its start."""
    (tmp_path / "parent.py").write_text(textwrap.dedent(PARENT))
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    env = posthog_env(capture_server.url, "phc_children")
    result = subprocess.run(
        [sys.executable, "parent.py", "child.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert capture_server.wait_for_events(5, timeout=10)
    # Two processes share one spool, so an event may be delivered twice with the same uuid and timestamp;
    # PostHog stores it once. Count what PostHog would store.
    stored = list({e["uuid"]: e for e in capture_server.events}.values())
    events = {e["event"]: e for e in stored}
    assert sorted(e["event"] for e in stored) == sorted(
        ["funnel_started", "funnel_parent_ready", "funnel_child_work", "artifact_built", "funnel_child_ran"]
    )
    funnel_id = events["funnel_started"]["properties"]["funnel_id"]
    assert {e["properties"]["funnel_id"] for e in events.values()} == {funnel_id}
    assert len({e["distinct_id"] for e in events.values()}) == 1
    elapsed = {name: e["properties"]["elapsed_ms"] for name, e in events.items()}
    assert elapsed["funnel_parent_ready"] < elapsed["funnel_child_work"] <= elapsed["funnel_child_ran"]
    child = events["funnel_child_work"]["properties"]
    assert child == {
        **static_properties("kids", "1.0.0", is_ci=child["is_ci"]),
        "funnel": "deploy",
        "funnel_id": funnel_id,
        "trace_id": funnel_id,
        "region": "eu",  # funnel context, handed over in BAGGAGE
        "elapsed_ms": elapsed["funnel_child_work"],
        "step": "child_work",
        "step_duration_ms": child["step_duration_ms"],
    }
    artifact = events["artifact_built"]["properties"]
    assert (artifact["kind"], artifact["region"], artifact["funnel"]) == ("wheel", "eu", "deploy")
