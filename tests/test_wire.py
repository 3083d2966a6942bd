"""End to end on the wire: demo events at a PostHog-compatible endpoint, spans at an OTLP receiver."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_cli, static_properties
from servers import CaptureServer, OtlpReceiver

import otel_spawn
from otel_spawn._spec import uninstrument
from otel_spawn.demo import SPEC_PATH, orchestrate
from otel_spawn.demo.cloud import SpawnError

STEPS = [
    "funnel_started",
    "spawn_launched",
    "agent_selected",
    "cloud_selected",
    "preflight_passed",
    "name_entered",
    "picker_completed",
    "funnel_cloud_authed",
    "funnel_credentials_ready",
    "funnel_vm_ready",
    "funnel_install_completed",
    "funnel_configure_completed",
    "funnel_prelaunch_completed",
    "funnel_handoff",
]
FAST = {
    step: 0.0 for step in ("cloud_authed", "credentials_ready", "install_completed", "configure_completed")
}


@pytest.fixture
def state_home() -> Path:
    return Path(os.environ["OTEL_SPAWN_HOME"])


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    otel_spawn.shutdown()
    uninstrument()


def finish() -> None:
    """Deliver everything now (a test cannot wait for the exit-time flusher), then shut down."""
    telemetry = otel_spawn._setup.active()
    assert telemetry is not None
    assert telemetry.force_flush(10_000)
    otel_spawn.shutdown()


def run_demo(**kwargs: Any) -> None:
    # Through the module attribute: the spec's wrapper is installed there by configure().
    orchestrate.launch(
        agent="claude", cloud_name="hetzner", name="box", ref="hn", delays=dict(FAST), **kwargs
    )


def posthog(server: CaptureServer, **kwargs: Any) -> otel_spawn.Telemetry:
    return otel_spawn.configure(
        app="spawn",
        app_version="9.9.9",
        exporters="posthog",
        posthog_host=server.url,
        posthog_api_key="phc_testproject",
        funnel_spec=SPEC_PATH,
        **kwargs,
    )


def test_demo_events_arrive_in_order_with_whole_payload(capture_server: CaptureServer) -> None:
    """A demo launch delivers every funnel event, in order, with the documented envelope and properties."""
    telemetry = posthog(capture_server, enabled=True)
    run_demo()
    finish()
    events = capture_server.events
    assert [e["event"] for e in events] == STEPS
    vm_ready = next(e for e in events if e["event"] == "funnel_vm_ready")
    props = vm_ready["properties"]
    assert set(vm_ready) == {"event", "distinct_id", "timestamp", "uuid", "properties"}
    assert vm_ready["distinct_id"] == telemetry.distinct_id
    assert datetime.fromisoformat(vm_ready["timestamp"]).tzinfo is not None
    uuid.UUID(vm_ready["uuid"])
    assert props == {
        **static_properties("spawn", "9.9.9", is_ci=props["is_ci"]),
        "agent": "claude",
        "cloud": "hetzner",
        "ref": "hn",
        "funnel": "spawn",
        "funnel_id": events[0]["properties"]["funnel_id"],
        "trace_id": events[0]["properties"]["funnel_id"],
        "elapsed_ms": props["elapsed_ms"],
        "step": "vm_ready",
        "step_duration_ms": props["step_duration_ms"],
    }
    assert isinstance(props["is_ci"], bool)
    assert props["step_duration_ms"] >= 100  # the demo's vm_ready takes 0.15 s
    blob = str(events)
    assert "ssh" not in blob
    assert "public_ip" not in blob


def test_elapsed_ms_is_consistent_and_uuids_unique(capture_server: CaptureServer) -> None:
    """elapsed_ms never decreases, ends near the sum of step durations, and every uuid is unique."""
    posthog(capture_server, enabled=True)
    run_demo()
    finish()
    steps = [e for e in capture_server.events if e["event"].startswith("funnel_")]
    elapsed = [e["properties"]["elapsed_ms"] for e in steps]
    assert elapsed == sorted(elapsed)
    durations = sum(e["properties"].get("step_duration_ms", 0) for e in steps)
    assert durations - len(steps) <= elapsed[-1] <= durations + 100
    uuids = capture_server.uuids()
    assert len(uuids) == len(set(uuids)) == len(STEPS)


def test_distinct_id_is_stable_across_runs(capture_server: CaptureServer) -> None:
    """Two runs of the app send the same anonymous distinct_id and different funnel ids."""
    for _ in range(2):
        posthog(capture_server, enabled=True)
        run_demo()
        finish()
    events = capture_server.events
    assert len({e["distinct_id"] for e in events}) == 1
    assert len({e["properties"]["funnel_id"] for e in events}) == 2


def test_failure_sends_exception_and_funnel_failed(capture_server: CaptureServer) -> None:
    """A failed step reaches PostHog as `$exception` and `funnel_failed` after the completed steps."""
    posthog(capture_server, enabled=True)
    with pytest.raises(SpawnError):
        run_demo(fail_at="vm_ready", fail_message="quota exceeded")
    finish()
    names = [e["event"] for e in capture_server.events]
    assert names[-4:] == ["funnel_cloud_authed", "funnel_credentials_ready", "$exception", "funnel_failed"]
    failed = capture_server.events[-1]["properties"]
    assert (failed["failed_step"], failed["last_completed_step"], failed["error_type"]) == (
        "vm_ready",
        "credentials_ready",
        "SpawnError",
    )
    exception = capture_server.events[-2]["properties"]["$exception_list"][0]
    assert exception["value"] == "quota exceeded"
    assert any(f["in_app"] and f["filename"].endswith("cloud.py") for f in exception["stacktrace"]["frames"])


@pytest.mark.parametrize(
    "env",
    [
        {"DO_NOT_TRACK": "1", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"},
        {"SPAWN_TELEMETRY": "0", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"},
        {},  # under pytest, off unless a test turns it on
    ],
)
def test_every_opt_out_sends_nothing_and_writes_nothing(
    capture_server: CaptureServer, monkeypatch: pytest.MonkeyPatch, state_home: Path, env: dict[str, str]
) -> None:
    """Under each opt-out no request is made and nothing is written to the state directory."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    telemetry = posthog(capture_server)
    assert not telemetry.enabled
    run_demo()
    finish()
    assert capture_server.requests == []
    assert list(state_home.iterdir()) == []


def test_otlp_receives_the_trace(otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `otlp` spans reach an OTLP/HTTP receiver with service.name, parentage and funnel attributes."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.url}/v1/traces")
    otel_spawn.configure(app="spawn", exporters="otlp", enabled=True, funnel_spec=SPEC_PATH)
    run_demo()
    finish()
    spans = {s.name: s for s in otlp_receiver.spans}
    root = spans["spawn"]
    assert root.parent_span_id == ""
    assert root.resource["service.name"] == "spawn"
    assert spans["vm_ready"].parent_span_id == root.span_id
    assert spans["vm_ready"].trace_id == root.trace_id
    assert spans["vm_ready"].attributes["otel_spawn.context.agent"] == "claude"
    assert spans["vm_ready"].attributes["otel_spawn.step"] == "vm_ready"
    assert ("agent_selected", {"agent": "claude"}) in root.events


def test_posthog_and_otlp_together(
    capture_server: CaptureServer, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`OTEL_TRACES_EXPORTER=posthog,otlp` feeds both backends from one run."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "posthog,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.url}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_POSTHOG_HOST", capture_server.url)
    monkeypatch.setenv("OTEL_EXPORTER_POSTHOG_API_KEY", "phc_env")
    otel_spawn.configure(app="spawn", enabled=True, funnel_spec=SPEC_PATH)
    run_demo()
    finish()
    assert [e["event"] for e in capture_server.events] == STEPS
    assert {s.name for s in otlp_receiver.spans} >= {"spawn", "vm_ready", "handoff"}
    trace_ids = {s.trace_id for s in otlp_receiver.spans}
    assert trace_ids == {capture_server.events[0]["properties"]["funnel_id"]}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=child_env(**env))


def test_cli_demo_exit_codes_and_notice(capture_server: CaptureServer) -> None:
    """The demo CLI exits 0/1/130, shows the notice once, and its events reach the endpoint."""
    env = {
        "OTEL_SPAWN_ENABLE_IN_TESTS": "1",
        "OTEL_TRACES_EXPORTER": "posthog",
        "OTEL_EXPORTER_POSTHOG_HOST": capture_server.url,
        "OTEL_EXPORTER_POSTHOG_API_KEY": "phc_cli",
    }
    ok = cli("demo", "launch", "--agent", "claude", "--cloud", "gcp", env=env)
    failed = cli("demo", "launch", "--fail-at", "vm_ready", env=env)
    interrupted = cli("demo", "launch", "--interrupt-at", "install_completed", env=env)
    assert (ok.returncode, failed.returncode, interrupted.returncode) == (0, 1, 130)
    assert "Opt out: SPAWN_TELEMETRY=0" in ok.stderr
    assert "Opt out" not in failed.stderr + interrupted.stderr
    names = [e["event"] for e in capture_server.events]
    assert names.count("funnel_started") == 3
    assert names.count("funnel_handoff") == 1
    assert names.count("funnel_failed") == 1
    assert names.count("funnel_abandoned") == 1


def test_cli_opt_out_makes_no_request(capture_server: CaptureServer, state_home: Path) -> None:
    """SPAWN_TELEMETRY=0 on the demo CLI: zero requests, nothing written."""
    env = {
        "OTEL_SPAWN_ENABLE_IN_TESTS": "1",
        "SPAWN_TELEMETRY": "0",
        "OTEL_TRACES_EXPORTER": "posthog",
        "OTEL_EXPORTER_POSTHOG_HOST": capture_server.url,
        "OTEL_EXPORTER_POSTHOG_API_KEY": "phc_cli",
    }
    assert cli("demo", "launch", env=env).returncode == 0
    assert capture_server.requests == []
    assert list(state_home.iterdir()) == []


def test_cli_status_says_which_setting_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """`otel-spawn status` reports on/off and the deciding setting; `disable` persists."""
    env = {"OTEL_SPAWN_ENABLE_IN_TESTS": "1"}
    assert re.search(r"telemetry\s+on\ndecided by\s+default", cli("status", env=env).stdout)
    assert cli("disable", env=env).returncode == 0
    assert re.search(r"telemetry\s+off\ndecided by\s+`otel-spawn disable`", cli("status", env=env).stdout)
    enabled_by_env = cli("status", env={**env, "SPAWN_TELEMETRY": "1"}).stdout
    assert re.search(r"telemetry\s+on\ndecided by\s+SPAWN_TELEMETRY=1", enabled_by_env)


def test_a_sampler_setting_never_loses_product_events(
    capture_server: CaptureServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """OTEL_TRACES_SAMPLER=always_off (or a ratio) would drop steps, so their events: it is ignored,
    with one warning."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        posthog(capture_server, enabled=True)
    run_demo()
    finish()
    assert [e["event"] for e in capture_server.events] == STEPS
    assert "OTEL_TRACES_SAMPLER=always_off ignored" in caplog.text
