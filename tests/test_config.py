"""Settings precedence, config files, privacy gates and the state directory."""

from __future__ import annotations

import os
import stat
import threading
import uuid
from pathlib import Path

import pytest

from otel_spawn import _config, _gates, _state
from otel_spawn._errors import ConfigError


def test_defaults_use_local_sink(tmp_path: Path) -> None:
    """With nothing configured the exporter is `local` and events are prefixed `funnel_`."""
    settings = _config.resolve({}, environ={}, cwd=tmp_path)
    assert settings.exporters == ("local",)
    assert settings.event_prefix == "funnel_"
    assert settings.source == "cli"
    assert settings.posthog.host == "https://us.i.posthog.com"
    assert settings.decided_by["exporters"] == "default"


def test_precedence_argument_env_file_default(tmp_path: Path) -> None:
    """An argument beats the environment, which beats the file, which beats the default."""
    (tmp_path / "otel-spawn.toml").write_text('exporters = "console"\nsource = "file"\napp = "mycli"\n')
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SPAWN_SOURCE": "env"}
    settings = _config.resolve({"source": "arg"}, environ=env, cwd=tmp_path)
    assert settings.source == "arg"
    assert settings.exporters == ("otlp",)
    assert settings.app == "mycli"
    assert settings.decided_by["exporters"] == "env OTEL_TRACES_EXPORTER"
    assert settings.decided_by["app"].startswith("file ")
    assert _config.resolve({}, environ={}, cwd=tmp_path).exporters == ("console",)


def test_pyproject_table_and_named_file(tmp_path: Path) -> None:
    """[tool.otel-spawn] in pyproject.toml is read; OTEL_SPAWN_CONFIG names another file."""
    (tmp_path / "pyproject.toml").write_text('[tool.otel-spawn]\nexporters = ["console", "local"]\n')
    assert _config.resolve({}, environ={}, cwd=tmp_path).exporters == ("console", "local")
    other = tmp_path / "elsewhere.toml"
    other.write_text('exporters = "none"\n')
    assert _config.resolve({}, environ={"OTEL_SPAWN_CONFIG": str(other)}, cwd=tmp_path).exporters == ()


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "posthog,jaeger"},
            r"unknown exporter 'jaeger'.*posthog, otlp, console, local, none",
        ),
        ({"OTEL_TRACES_EXPORTER": "posthog"}, r"needs a project API key.*OTEL_EXPORTER_POSTHOG_API_KEY"),
        (
            {"OTEL_TRACES_EXPORTER": "posthog", "OTEL_EXPORTER_POSTHOG_API_KEY": "phx_abc"},
            r"PERSONAL API key",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "posthog", "OTEL_EXPORTER_POSTHOG_API_KEY": "abc"},
            r"does not start with 'phc_'",
        ),
        ({"OTEL_EXPORTER_POSTHOG_HOST": "eu.posthog.com"}, r"not an http\(s\) URL"),
        ({"OTEL_SPAWN_CONFIG": "/nonexistent/x.toml"}, r"names no readable file"),
    ],
)
def test_bad_settings_fail_with_the_fix(tmp_path: Path, env: dict[str, str], match: str) -> None:
    """Bad values are refused at configure time, naming the value and the valid choices."""
    with pytest.raises(ConfigError, match=match):
        _config.resolve({}, environ=env, cwd=tmp_path)


def test_key_error_never_echoes_the_secret(tmp_path: Path) -> None:
    """The phx_ refusal does not print the personal key."""
    env = {"OTEL_TRACES_EXPORTER": "posthog", "OTEL_EXPORTER_POSTHOG_API_KEY": "phx_s3cr3tvalue123"}
    with pytest.raises(ConfigError) as caught:
        _config.resolve({}, environ=env, cwd=tmp_path)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("exporters = [", r"cannot read config file"),
        ("colour = 1\n", r"unknown key 'colour'.*valid keys are"),
        ("[posthog]\nhostname = 'x'\n", r"unknown key 'hostname' in \[posthog\]"),
        ("[scrub]\nallow = 'x'\n", r"allow .* must be a list of strings"),
        ("exporters = 'otlp,zipkin'\n", r"unknown exporter 'zipkin'"),
    ],
)
def test_malformed_file_fails(tmp_path: Path, content: str, match: str) -> None:
    """A malformed config file fails at configure time with the file and the problem."""
    (tmp_path / "otel-spawn.toml").write_text(content)
    with pytest.raises(ConfigError, match=match):
        _config.resolve({}, environ={}, cwd=tmp_path)


def test_eu_and_self_hosted_hosts(tmp_path: Path) -> None:
    """EU and self-hosted hosts are accepted; a trailing slash is dropped."""
    for host in ("https://eu.i.posthog.com/", "http://127.0.0.1:8000"):
        env = {"OTEL_EXPORTER_POSTHOG_HOST": host}
        assert _config.resolve({}, environ=env, cwd=tmp_path).posthog.host == host.rstrip("/")


def test_opt_out_variable_derives_from_app() -> None:
    """The app's own opt-out variable is <APP>_TELEMETRY."""
    assert _config.opt_out_variable("spawn") == "SPAWN_TELEMETRY"
    assert _config.opt_out_variable("my-cli") == "MY_CLI_TELEMETRY"


@pytest.mark.parametrize(
    ("env", "enabled", "reason"),
    [
        ({"OTEL_SDK_DISABLED": "true", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"}, False, "OTEL_SDK_DISABLED=true"),
        ({"DO_NOT_TRACK": "1", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"}, False, "DO_NOT_TRACK=1"),
        ({"SPAWN_TELEMETRY": "0", "OTEL_SPAWN_ENABLE_IN_TESTS": "1"}, False, "SPAWN_TELEMETRY=0"),
        ({}, False, "running under pytest"),
        ({"OTEL_SPAWN_ENABLE_IN_TESTS": "1"}, True, "default"),
        ({"OTEL_SPAWN_ENABLE_IN_TESTS": "1", "DO_NOT_TRACK": "0"}, True, "default"),
    ],
)
def test_gates(tmp_path: Path, env: dict[str, str], enabled: bool, reason: str) -> None:
    """Each gate turns telemetry off and says so; under pytest it is off unless a test turns it on."""
    decision = _gates.decide(None, "SPAWN_TELEMETRY", tmp_path, environ=env)
    assert decision.enabled is enabled
    assert reason in decision.reason


def test_persisted_choice_and_env_override(tmp_path: Path) -> None:
    """`disable` persists; the app variable still wins over it."""
    _state.write_choice(tmp_path, "disabled")
    env = {"OTEL_SPAWN_ENABLE_IN_TESTS": "1"}
    decision = _gates.decide(None, "SPAWN_TELEMETRY", tmp_path, environ=env)
    assert not decision.enabled
    assert "otel-spawn disable" in decision.reason
    decision = _gates.decide(None, "SPAWN_TELEMETRY", tmp_path, environ={**env, "SPAWN_TELEMETRY": "1"})
    assert decision.enabled
    assert decision.reason == "SPAWN_TELEMETRY=1"


def test_explicit_argument_wins(tmp_path: Path) -> None:
    """configure(enabled=True) is how a test turns telemetry on."""
    assert _gates.decide(True, "X_TELEMETRY", tmp_path, environ={}).enabled


def test_distinct_id_is_persistent_private_and_shared(tmp_path: Path) -> None:
    """The id is a UUID in a 0600 file in a 0700 dir, identical for concurrent first callers."""
    home = tmp_path / "state"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(_state.distinct_id(home))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    uuid.UUID(results[0])
    assert stat.S_IMODE(os.stat(home / "distinct_id").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert _state.distinct_id(home) == results[0]
    assert [p.name for p in home.iterdir()] == ["distinct_id"]


def test_corrupt_id_file_is_replaced(tmp_path: Path) -> None:
    """A garbage id file is replaced by a fresh UUID."""
    (tmp_path / "distinct_id").write_text("not-a-uuid")
    uuid.UUID(_state.distinct_id(tmp_path))


def test_notice_is_claimed_once(tmp_path: Path) -> None:
    """The one-time notice is shown by the first caller only."""
    assert _state.claim_notice(tmp_path) is True
    assert _state.claim_notice(tmp_path) is False
