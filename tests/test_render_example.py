"""The render example: a second orchestrator, instrumented by its spec alone, run from a CLI and a studio."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import posthog_env
from servers import CaptureServer

import otel_spawn
from examples.render import SPEC_PATH
from otel_spawn._config import resolve
from otel_spawn._spec import load_spec

REPO = Path(__file__).resolve().parent.parent
BEFORE_UPLOAD = [
    "funnel_started",
    "funnel_probed",
    "frames_planned",
    "funnel_transcoded",
    "funnel_frames_rendered",
]
VARYING = ("funnel_id", "trace_id", "elapsed_ms", "step_duration_ms", "os", "arch", "python_version", "is_ci")


@pytest.fixture
def env(capture_server: CaptureServer) -> dict[str, str]:
    """The environment of a render process that sends to the capture server (and is not a test run)."""
    return posthog_env(capture_server.url, "phc_render", PYTHONPATH=str(REPO))


def stored(server: CaptureServer) -> list[dict[str, Any]]:
    """The events as PostHog stores them: one per uuid, in arrival order."""
    return list({e["uuid"]: e for e in server.events}.values())


def steady(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An event's name and the properties that do not vary from run to run."""
    return event["event"], {k: v for k, v in event["properties"].items() if k not in VARYING}


def common(source: str, preset: str) -> dict[str, Any]:
    return {
        "app": "render",
        "app_version": "1.0.0",
        "source": source,
        "$lib": "otel-spawn",
        "$lib_version": otel_spawn.__version__,
        "$process_person_profile": False,
        "$ip": None,
        "$geoip_disable": True,
        "funnel": "render",
        "preset": preset,
    }


def expected_run(source: str, preset: str, width: int, height: int) -> list[tuple[str, dict[str, Any]]]:
    """The events of rendering clip.mov (probe: prores, 2.7 s -> 65 frames at 24 fps)."""
    base = common(source, preset)
    return [
        ("funnel_started", {**base, "step": "started"}),
        ("funnel_probed", {**base, "step": "probed", "codec": "prores", "duration_s": 2.7}),
        ("frames_planned", {**base, "frames": 65, "fps": 24}),
        ("funnel_transcoded", {**base, "step": "transcoded", "width": width, "height": height}),
        ("funnel_frames_rendered", {**base, "step": "frames_rendered", "frames": 65}),
        ("funnel_uploaded", {**base, "step": "uploaded"}),
    ]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.render", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_cli_render_sends_the_specs_events(
    capture_server: CaptureServer, env: dict[str, str], tmp_path: Path
) -> None:
    """`python -m examples.render clip.mov` prints the URL and delivers the funnel with source=cli."""
    result = run_cli("clip.mov", "--preset", "720p", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("https://cdn.example.com/renders/")
    assert capture_server.wait_for_events(6, timeout=10)
    events = stored(capture_server)
    assert [steady(e) for e in events] == expected_run("cli", "720p", 1280, 720)
    assert len({e["properties"]["funnel_id"] for e in events}) == 1
    assert len({e["distinct_id"] for e in events}) == 1


def test_cli_failure_exits_1_and_reports_the_failed_step(
    capture_server: CaptureServer, env: dict[str, str], tmp_path: Path
) -> None:
    """A failing transcode exits 1; the funnel ends with `$exception` and `funnel_failed` at `transcoded`."""
    result = run_cli("clip.mov", "--fail-at", "transcode", env=env, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (
        1,
        "render: transcode failed: encoder exited with status 1",
    )
    assert capture_server.wait_for_events(5, timeout=10)
    events = stored(capture_server)
    assert [e["event"] for e in events] == [*BEFORE_UPLOAD[:3], "$exception", "funnel_failed"]
    assert steady(events[-1]) == (
        "funnel_failed",
        {
            **common("cli", "1080p"),
            "failed_step": "transcoded",
            "last_completed_step": "probed",
            "error_type": "RenderError",
        },
    )


@pytest.fixture
def studio(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The studio in its own process on a free port; its base URL. Stopped with SIGINT (Ctrl-C) afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.render.studio", "--port", "0"],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("render studio on http://127.0.0.1:"), (
        line + proc.stderr.read() if proc.stderr else ""
    )
    yield line.split(" on ", 1)[1].strip()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr


def test_studio_renders_over_http_with_source_studio(capture_server: CaptureServer, studio: str) -> None:
    """The studio page is served; each POST /render is its own funnel, its events carry source=studio."""
    with httpx.Client(base_url=studio, timeout=30) as client:
        page = client.get("/")
        first = client.post("/render", json={"path": "clip.mov", "preset": "480p"})
        second = client.post(
            "/render", data={"path": "clip.mov", "preset": "1080p"}
        )  # the HTML form's encoding
        failed = client.post("/render", json={"path": "clip.mov", "fail_at": "upload"})
        bad = client.post("/render", json={"preset": "480p"})
    assert page.status_code == 200
    assert "<form" in page.text
    assert first.status_code == second.status_code == 200
    assert first.json()["url"].startswith("https://cdn.example.com/renders/")
    assert (failed.status_code, failed.json()) == (500, {"error": "upload failed: 503 from the CDN"})
    assert bad.status_code == 400
    assert capture_server.wait_for_events(6 + 6 + 7, timeout=10)
    by_funnel: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for event in stored(capture_server):
        by_funnel.setdefault(event["properties"]["funnel_id"], []).append(steady(event))
    runs = list(by_funnel.values())
    assert runs[:2] == [expected_run("studio", "480p", 854, 480), expected_run("studio", "1080p", 1920, 1080)]
    assert [name for name, _ in runs[2]] == [*BEFORE_UPLOAD, "$exception", "funnel_failed"]
    assert runs[2][-1][1]["failed_step"] == "uploaded"
    assert len(runs) == 3


@pytest.mark.parametrize(
    "path",
    [
        "examples/render/pipeline.py",
        "otel_spawn/demo/cloud.py",
        "otel_spawn/demo/picker.py",
        "otel_spawn/demo/orchestrate.py",
    ],
)
def test_business_code_imports_nothing_from_otel_spawn(path: str) -> None:
    """The orchestrators' business modules carry no telemetry code: their spec does it all."""
    tree = ast.parse((REPO / path).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.level == 0
            else []
        )
    ]
    assert not [name for name in imported if name.split(".")[0] == "otel_spawn"]


def test_the_render_spec_is_valid_and_names_every_stage() -> None:
    """examples/render/otel-spawn.toml loads cleanly and instruments every stage of the pipeline."""
    spec = load_spec(SPEC_PATH, resolve({}))
    assert spec is not None
    assert [s.step for s in spec.steps] == ["probed", "transcoded", "frames_rendered", "uploaded"]
    assert [e.event for e in spec.events] == ["frames_planned"]
    assert str(spec.root) == "examples.render.pipeline:render"
    assert spec.context_args == ("preset",)
