"""The declarative funnel spec: the `[funnel]` table that names an app's root, steps and events.

`load_spec` reads and fully validates it (raising ConfigError that names the entry and the
problem); `instrument_spec` hands it to the wrapt instrumentation in `otel_spawn_instrumentation`.
The schema is documented in the README's funnel spec section.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otel_spawn import _constants as c
from otel_spawn._config import Settings
from otel_spawn._errors import ConfigError
from otel_spawn._targets import Parameters, find_module, live_parameters, static_parameters

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RETURN = "return"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")
_SOURCE = re.compile(rf"^({_IDENT})((?:\.{_IDENT})*)$")
_FUNNEL_KEYS = {"name", "root", "context_args", "steps", "events"}
_STEP_KEYS = {"target", "step", "context_args", "properties"}
_EVENT_KEYS = {"target", "event", "properties", "context", "only_if", "lifecycle"}
LIFECYCLE = ("created", "connected", "deleted")


@dataclass(frozen=True)
class Target:
    """`module:qualname`: a function, or a method/classmethod/staticmethod of a class."""

    module: str
    qualname: str

    def __str__(self) -> str:
        return f"{self.module}:{self.qualname}"


@dataclass(frozen=True)
class Source:
    """Where a value comes from: `"return"` or a parameter name, then optional `.attribute` steps."""

    name: str
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.name, *self.path))


@dataclass(frozen=True)
class StepSpec:
    """A call that is one funnel step: its duration is the step."""

    target: Target
    step: str
    context_args: tuple[str, ...] = ()
    properties: tuple[tuple[str, Source], ...] = ()


@dataclass(frozen=True)
class EventSpec:
    """A call whose successful return is a product event."""

    target: Target
    event: str
    properties: tuple[tuple[str, Source], ...] = ()
    context: bool = False  # the properties also become funnel context
    only_if: Source | None = None  # sent only when this value is truthy
    lifecycle: str | None = None  # "created" | "connected" | "deleted": `event` is the resource kind


@dataclass(frozen=True)
class FunnelSpec:
    """A validated `[funnel]` table."""

    name: str
    root: Target
    context_args: tuple[str, ...] = ()
    steps: tuple[StepSpec, ...] = ()
    events: tuple[EventSpec, ...] = ()
    origin: str = field(default="", compare=False)  # where it was read from, for messages


def load_spec(explicit: str | Path | Mapping[str, Any] | None, settings: Settings) -> FunnelSpec | None:
    """The funnel spec to instrument, validated; None when there is none. Raises ConfigError.

    `explicit` (the `funnel_spec` argument of `configure()`) is a `[funnel]` table as a dict, or a path
    to a TOML file holding a `[funnel]` table (or `[tool.otel-spawn.funnel]` in a pyproject.toml, or
    whose top level is the funnel table itself). Without it, the config file's `[funnel]` is used.
    """
    if explicit is None:
        if not settings.funnel_spec:
            return None
        return parse_spec(settings.funnel_spec, str(settings.config_file or "the config file"))
    if isinstance(explicit, Mapping):
        return parse_spec(explicit, "the funnel_spec argument")
    path = Path(explicit).expanduser()
    return parse_spec(_table_from_file(path), str(path))


def _table_from_file(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read funnel spec {path}: {exc}; fix the path or the TOML") from exc
    tool = data.get("tool", {})
    if isinstance(tool, dict) and isinstance(tool.get(c.PYPROJECT_TABLE), dict):
        data = tool[c.PYPROJECT_TABLE]
    if "funnel" in data:
        table = data["funnel"]
        if not isinstance(table, dict):
            raise ConfigError(f"[funnel] in {path} must be a table, got {type(table).__name__}")
        return table
    if "root" in data:
        return data
    raise ConfigError(
        f"funnel spec {path} has no [funnel] table: add one (see the README's funnel spec section)"
    )


def parse_spec(table: Mapping[str, Any], origin: str) -> FunnelSpec:
    """Validate a `[funnel]` table (from `origin`, for messages) into a FunnelSpec."""
    where = f"[funnel] in {origin}"
    _check_keys(table, _FUNNEL_KEYS, {"name", "root"}, where)
    name = _name(table, "name", where)
    modules = _Modules()
    root = _target(table["root"], where, modules)
    where = f"[funnel] (root '{root}') in {origin}"
    context_args = _names(table.get("context_args", []), "context_args", where)
    sources = [("context_args name", Source(n)) for n in context_args]
    _check_sources(root, sources, where, modules, allow_return=False)
    steps = tuple(
        _step(entry, f"[[funnel.steps]] #{number}", origin, modules)
        for number, entry in enumerate(_entries(table, "steps", origin), start=1)
    )
    events = tuple(
        _event(entry, f"[[funnel.events]] #{number}", origin, modules)
        for number, entry in enumerate(_entries(table, "events", origin), start=1)
    )
    return FunnelSpec(name, root, context_args, steps, events, origin=origin)


def _entries(table: Mapping[str, Any], key: str, origin: str) -> list[Mapping[str, Any]]:
    entries = table.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(
            f"funnel.{key} in {origin} must be an array of tables: write [[funnel.{key}]] entries"
        )
    return entries


def _label(entry: Mapping[str, Any], title: str, origin: str) -> str:
    target = entry.get("target")
    return f"{title} (target {target!r}) in {origin}" if isinstance(target, str) else f"{title} in {origin}"


def _step(entry: Mapping[str, Any], title: str, origin: str, modules: _Modules) -> StepSpec:
    where = _label(entry, title, origin)
    _check_keys(entry, _STEP_KEYS, {"target", "step"}, where)
    target = _target(entry["target"], where, modules)
    context_args = _names(entry.get("context_args", []), "context_args", where)
    properties = _properties(entry.get("properties", {}), where)
    _check_sources(
        target, [("context_args name", Source(n)) for n in context_args], where, modules, allow_return=False
    )
    _check_sources(
        target, [(f"property {k!r} source", s) for k, s in properties], where, modules, allow_return=True
    )
    return StepSpec(target, _name(entry, "step", where), context_args, properties)


def _event(entry: Mapping[str, Any], title: str, origin: str, modules: _Modules) -> EventSpec:
    where = _label(entry, title, origin)
    _check_keys(entry, _EVENT_KEYS, {"target", "event"}, where)
    target = _target(entry["target"], where, modules)
    properties = _properties(entry.get("properties", {}), where)
    context = entry.get("context", False)
    if not isinstance(context, bool):
        raise ConfigError(f"{where}: context must be true or false, got {context!r}")
    only_if = entry.get("only_if")
    condition = None if only_if is None else _source(only_if, "only_if", where)
    lifecycle = entry.get("lifecycle")
    if lifecycle is not None and lifecycle not in LIFECYCLE:
        raise ConfigError(f"{where}: lifecycle must be one of {', '.join(LIFECYCLE)}, got {lifecycle!r}")
    if lifecycle is not None and "id" not in dict(properties):
        raise ConfigError(
            f'{where}: a lifecycle event needs properties.id (e.g. id = "return.id" or "vm_id")'
        )
    sources = [(f"property {k!r} source", s) for k, s in properties]
    if condition is not None:
        sources.append(("only_if source", condition))
    _check_sources(target, sources, where, modules, allow_return=True)
    return EventSpec(target, _name(entry, "event", where), properties, context, condition, lifecycle)


def _check_keys(table: Mapping[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(table))
    if missing:
        raise ConfigError(f"{where}: missing required key {', '.join(map(repr, missing))}")


def _name(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and re.fullmatch(_IDENT, v) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of parameter names, got {value!r}")
    return tuple(value)


def _source(value: Any, what: str, where: str) -> Source:
    match = _SOURCE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f'{where}: {what} is {value!r}; expected "return" or a parameter name, optionally followed '
            'by .attribute (e.g. "return.codec" or "plan.agent")'
        )
    return Source(match[1], tuple(p for p in match[2].split(".") if p))


def _properties(value: Any, where: str) -> tuple[tuple[str, Source], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: properties must be a table of name = "source", got {value!r}')
    return tuple((str(key), _source(source, f"property {key!r}", where)) for key, source in value.items())


def _target(value: Any, where: str, modules: _Modules) -> Target:
    match = _TARGET.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{where}: target {value!r} is not 'module:qualname' (e.g. 'mycli.cloud:Cloud.authenticate' "
            "or 'mycli.picker:choose_agent')"
        )
    target = Target(match[1], match[2])
    try:
        found = modules.find(target.module)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if found is None:
        raise ConfigError(
            f"{where}: module {target.module!r} cannot be found: check the name and that the app is "
            "importable from here (sys.path, the current directory, an installed package)"
        )
    return target


def _check_sources(
    target: Target,
    sources: list[tuple[str, Source]],
    where: str,
    modules: _Modules,
    *,
    allow_return: bool,
) -> None:
    """Refuse a source that is neither "return" nor a parameter, when the target can be inspected."""
    if not sources:
        return
    params = _parameters(target, modules)
    if params is None:
        return
    for what, source in sources:
        if (source.name == RETURN and allow_return) or params.accepts(source.name):
            continue
        expected = 'neither "return" nor a parameter' if allow_return else "not a parameter"
        raise ConfigError(
            f"{where}: {what} {str(source)!r}: {source.name!r} is {expected} of {target.qualname} "
            f"(parameters: {', '.join(params.names) or 'none'})"
        )


def _parameters(target: Target, modules: _Modules) -> Parameters | None:
    if target.module in sys.modules:
        return live_parameters(target.module, target.qualname)
    spec = modules.find(target.module)
    return static_parameters(spec, target.qualname) if spec is not None else None


class _Modules:
    """Module lookups of one parse: a spec names the same few modules many times."""

    def __init__(self) -> None:
        self._found: dict[str, ModuleSpec | None] = {}

    def find(self, name: str) -> ModuleSpec | None:
        if name not in self._found:
            self._found[name] = find_module(name)
        return self._found[name]


def instrument_spec(spec: FunnelSpec) -> None:
    """Wrap the spec's targets now, or when their module is imported. Idempotent; a new spec replaces it."""
    from otel_spawn_instrumentation import install  # imports otel_spawn: loaded on first use

    install(spec)


def uninstrument() -> None:
    """Remove every wrapper: each attribute is the original object again."""
    from otel_spawn_instrumentation import uninstall

    uninstall()
