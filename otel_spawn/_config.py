"""Settings: explicit argument > environment variable > config file > default, resolved here only."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_spawn import _constants as c
from otel_spawn._errors import ConfigError
from otel_spawn._scrubber import ScrubOptions

EXPORTERS = ("posthog", "otlp", "console", "local", "none")
DEFAULT_EXPORTERS = ("local",)
DEFAULT_SPOOL_BYTES = 10 * 1024 * 1024
_TOP_KEYS = {
    "app",
    "app_version",
    "exporters",
    "source",
    "event_prefix",
    "service_name",
    "home",
    "opt_out_env",
    "spool_max_bytes",
    "posthog",
    "scrub",
    "funnel",
}
_POSTHOG_KEYS = {"host", "api_key"}
_SCRUB_KEYS = {"extra_patterns", "extra_secret_keys", "allow", "exempt_keys"}


@dataclass(frozen=True)
class PostHogOptions:
    """Where product events go. `api_key` must be a public project key (`phc_…`)."""

    host: str = c.DEFAULT_POSTHOG_HOST
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.host):
            raise ConfigError(
                f"PostHog host {self.host!r} is not an http(s) URL: set {c.ENV_POSTHOG_HOST} to e.g. "
                "https://us.i.posthog.com, https://eu.i.posthog.com or your self-hosted base URL"
            )
        if self.api_key is None:
            return
        if self.api_key.startswith("phx_"):
            raise ConfigError(
                "the PostHog key starts with 'phx_': that is a PERSONAL API key, a secret that must never be "
                f"sent with events. Set {c.ENV_POSTHOG_API_KEY} to the project API key (starts with 'phc_', "
                "Project settings > Project API key) and revoke the personal key if it was shared"
            )
        if not self.api_key.startswith("phc_"):
            raise ConfigError(
                f"the PostHog key does not start with 'phc_': set {c.ENV_POSTHOG_API_KEY} to the project "
                "API key from Project settings > Project API key"
            )


@dataclass(frozen=True)
class Settings:
    """Everything `configure()` needs, fully resolved."""

    app: str
    app_version: str
    exporters: tuple[str, ...]
    source: str
    event_prefix: str
    service_name: str
    home: Path
    opt_out_env: str
    spool_max_bytes: int
    posthog: PostHogOptions
    scrub: ScrubOptions
    config_file: Path | None = None
    funnel_spec: Mapping[str, Any] = field(default_factory=dict)
    decided_by: Mapping[str, str] = field(
        default_factory=dict
    )  # setting -> "argument" | "env" | "file" | "default"


def parse_exporters(value: str | Sequence[str], origin: str) -> tuple[str, ...]:
    """`"posthog, otlp"` or `["posthog", "otlp"]` -> ("posthog", "otlp"); unknown names are refused."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(item).strip().lower() for item in items if str(item).strip()))
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"unknown exporter {', '.join(map(repr, unknown))} in {origin}: choose a comma list of "
            f"{', '.join(EXPORTERS)}"
        )
    if "none" in names:
        return ()
    return names or DEFAULT_EXPORTERS


def default_home(app: str) -> Path:
    """The platform's per-user state directory for `app`."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "otel-spawn" / app


def opt_out_variable(app: str) -> str:
    """The app's own opt-out variable: `spawn` -> `SPAWN_TELEMETRY`."""
    return re.sub(r"[^A-Z0-9]+", "_", app.upper()).strip("_") + "_TELEMETRY"


def find_config_file(environ: Mapping[str, str], cwd: Path) -> tuple[Path | None, dict[str, Any]]:
    """The settings table: OTEL_SPAWN_CONFIG, ./otel-spawn.toml or [tool.otel-spawn] of ./pyproject.toml."""
    named = environ.get(c.ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{c.ENV_CONFIG}={named!r} names no readable file: fix the path or unset it")
        data = _load_toml(path)
        return path, data.get("tool", {}).get(
            c.PYPROJECT_TABLE, data
        ) if path.name == "pyproject.toml" else data
    local = cwd / c.CONFIG_FILE
    if local.is_file():
        return local, _load_toml(local)
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        table = _load_toml(pyproject).get("tool", {}).get(c.PYPROJECT_TABLE)
        if isinstance(table, dict):
            return pyproject, table
    return None, {}


def _load_toml(path: Path) -> dict[str, Any]:
    # Imported here: most runs have no config file, and tomllib costs ~3 ms of start-up.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}; fix the TOML or remove the file") from exc


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown key {', '.join(map(repr, unknown))} in {where}: "
            f"valid keys are {', '.join(sorted(allowed))}"
        )


def _table(data: Mapping[str, Any], key: str, allowed: set[str], origin: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{key}] in {origin} must be a table, got {type(table).__name__}")
    _check_keys(table, allowed, f"[{key}] of {origin}")
    return table


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def scrub_options_from_file(table: Mapping[str, Any], origin: str) -> ScrubOptions:
    """[scrub] table -> ScrubOptions (patterns are compiled, and checked, by the Scrubber)."""
    patterns = table.get("extra_patterns", {})
    if not isinstance(patterns, dict) or not all(isinstance(v, str) for v in patterns.values()):
        raise ConfigError(f'[scrub] extra_patterns in {origin} must be a table of name = "regex"')
    return ScrubOptions(
        extra_patterns=dict(patterns),
        extra_secret_keys=_str_list(
            table.get("extra_secret_keys", []), f"[scrub] extra_secret_keys in {origin}"
        ),
        allow=_str_list(table.get("allow", []), f"[scrub] allow in {origin}"),
        exempt_keys=_str_list(table.get("exempt_keys", []), f"[scrub] exempt_keys in {origin}"),
    )


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise ConfigError(f"spool_max_bytes must be a positive whole number of bytes, got {value!r}")
    return number


def resolve(
    explicit: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve every setting once: explicit argument > environment > config file > default."""
    env = os.environ if environ is None else environ
    config_path, data = find_config_file(env, cwd or Path.cwd())
    origin = str(config_path)
    _check_keys(data, _TOP_KEYS, origin)
    decided: dict[str, str] = {}

    def pick(name: str, env_name: str | None, default: Any, file_value: Any = None) -> Any:
        if explicit.get(name) is not None:
            decided[name] = "argument"
            return explicit[name]
        if env_name and env.get(env_name):
            decided[name] = f"env {env_name}"
            return env[env_name]
        if file_value is None:
            file_value = data.get(name)
        if file_value is not None:
            decided[name] = f"file {origin}"
            return file_value
        decided[name] = "default"
        return default

    app = str(pick("app", c.ENV_APP, env.get(c.ENV_SERVICE_NAME) or "otel-spawn"))
    exporters_raw = pick("exporters", c.ENV_TRACES_EXPORTER, DEFAULT_EXPORTERS)
    exporters = parse_exporters(exporters_raw, f"the exporters setting ({decided['exporters']})")
    home = pick("home", c.ENV_HOME, None)
    posthog_file = _table(data, "posthog", _POSTHOG_KEYS, origin)
    posthog = PostHogOptions(
        host=str(
            pick("posthog_host", c.ENV_POSTHOG_HOST, c.DEFAULT_POSTHOG_HOST, posthog_file.get("host"))
        ).rstrip("/"),
        api_key=pick("posthog_api_key", c.ENV_POSTHOG_API_KEY, None, posthog_file.get("api_key")),
    )
    if "posthog" in exporters and not posthog.api_key:
        raise ConfigError(
            f"the posthog exporter needs a project API key: set {c.ENV_POSTHOG_API_KEY}=phc_... "
            "(or [posthog] api_key in otel-spawn.toml), or drop posthog from the exporters"
        )

    scrub_file = _table(data, "scrub", _SCRUB_KEYS, origin)
    scrub = explicit.get("scrub") or scrub_options_from_file(scrub_file, origin)
    funnel_spec = data.get("funnel", {})
    if not isinstance(funnel_spec, dict):
        raise ConfigError(f"[funnel] in {origin} must be a table")

    return Settings(
        app=app,
        app_version=str(pick("app_version", None, "0")),
        exporters=exporters,
        source=str(pick("source", c.ENV_SOURCE, "cli")),
        event_prefix=str(pick("event_prefix", c.ENV_EVENT_PREFIX, "funnel_")),
        service_name=str(pick("service_name", c.ENV_SERVICE_NAME, app)),
        home=Path(home).expanduser() if home else default_home(app),
        opt_out_env=str(pick("opt_out_env", None, opt_out_variable(app))),
        spool_max_bytes=_positive_int(pick("spool_max_bytes", c.ENV_SPOOL_MAX_BYTES, DEFAULT_SPOOL_BYTES)),
        posthog=posthog,
        scrub=scrub,
        config_file=config_path,
        funnel_spec=funnel_spec,
        decided_by=decided,
    )
