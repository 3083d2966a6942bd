"""Shared fixtures: real servers on 127.0.0.1 and an environment isolated from the developer's machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from servers import CaptureServer, OtlpReceiver

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Variables that would change what otel-spawn or the OpenTelemetry SDK does, or where they send data.
_ISOLATED_ENV = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_POSTHOG_HOST",
    "OTEL_EXPORTER_POSTHOG_API_KEY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "DO_NOT_TRACK",
    "OTEL_SPAWN_CONFIG",
    "SPAWN_TELEMETRY",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "TRACEPARENT",
    "TRACESTATE",
    "BAGGAGE",
    # A proxy would capture requests meant for the servers on 127.0.0.1.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets a fresh OTEL_SPAWN_HOME, a clean environment and a cwd without config files."""
    home = tmp_path / "otel-spawn-home"
    home.mkdir()
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_SPAWN_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    """A PostHog-compatible capture endpoint on 127.0.0.1, closed after the test."""
    with CaptureServer() as server:
        yield server


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP trace receiver on 127.0.0.1, closed after the test."""
    with OtlpReceiver() as receiver:
        yield receiver
