"""End to end: secrets and personal data given to the demo reach no backend and no file."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from helpers import CLI, child_env
from servers import CaptureServer, OtlpReceiver

OPENROUTER_KEY = "sk-or-v1-" + secrets.token_hex(32)
GITHUB_TOKEN = "ghp_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
EMAIL = "alice.liddell@example.org"
USER = "alice-wonder"
SENSITIVE = [OPENROUTER_KEY, GITHUB_TOKEN, EMAIL, USER, OPENROUTER_KEY[9:25], GITHUB_TOKEN[4:20]]


def run_demo(home: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = child_env(
        OTEL_SPAWN_HOME=str(home), OPENROUTER_API_KEY=OPENROUTER_KEY, HOME=f"/home/{USER}", **env_extra
    )
    message = f"auth failed with token {GITHUB_TOKEN} reading /home/{USER}/.config/spawn/hetzner.json"
    return subprocess.run(
        [
            *CLI,
            "demo",
            "launch",
            "--agent",
            "claude",
            "--cloud",
            "hetzner",
            "--ref",
            EMAIL,
            "--fail-at",
            "install_completed",
            "--fail-message",
            message,
        ],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def leaks(text: str) -> list[str]:
    return [value for value in SENSITIVE if value in text]


def test_no_backend_and_no_file_receives_a_secret(
    tmp_path: Path, capture_server: CaptureServer, otlp_receiver: OtlpReceiver
) -> None:
    """posthog, otlp, console and local all get scrubbed data only, though the run carried all of it."""
    home = tmp_path / "state"
    result = run_demo(
        home,
        {
            "OTEL_TRACES_EXPORTER": "posthog,otlp,console,local",
            "OTEL_EXPORTER_POSTHOG_HOST": capture_server.url,
            "OTEL_EXPORTER_POSTHOG_API_KEY": "phc_e2e",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{otlp_receiver.url}/v1/traces",
        },
    )
    assert result.returncode == 1, result.stderr
    assert GITHUB_TOKEN in result.stderr  # the host's own error output is the host's business

    posthog = str([request.body for request in capture_server.requests])
    otlp = str(otlp_receiver.spans)
    files = {p.name: p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()}
    assert leaks(posthog) == []
    assert leaks(otlp) == []
    assert leaks(result.stdout) == []
    assert {name: leaks(text) for name, text in files.items()} == {name: [] for name in files}

    # The data did travel: each backend got the scrubbed versions, not nothing.
    assert "funnel_failed" in posthog
    assert "$exception" in posthog
    assert "[REDACTED:" in posthog  # the exception message, scrubbed
    assert "[REDACTED:" in otlp
    assert "/.config/spawn/hetzner.json" in otlp
    assert '"spawn.env"' in result.stdout
    assert "[REDACTED:" in result.stdout
    assert any("[REDACTED:" in text for text in files.values())
    ref = next(e["properties"]["ref"] for e in capture_server.events if e["event"] == "funnel_started")
    assert ref.startswith("[REDACTED:")
