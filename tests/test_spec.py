"""The funnel spec: where it is read from, and a ConfigError that names the entry and the problem."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import AppFactory

import otel_spawn
from otel_spawn._config import resolve
from otel_spawn._errors import ConfigError
from otel_spawn._spec import EventSpec, FunnelSpec, Source, StepSpec, Target, load_spec, uninstrument

APP = {
    "mycli/picker.py": """
        def choose_agent(requested, *, default="claude"):
            return requested or default

        def traced(func):
            return func

        @traced
        def decorated(anything):
            return anything

        def flexible(first, **options):
            return first
    """,
    "mycli/cloud.py": """
        class Cloud:
            def authenticate(self, token):
                return True

            @classmethod
            def connect(cls, name):
                return cls()
    """,
    "mycli/orchestrate.py": """
        def run(agent, cloud=None):
            return agent
    """,
}
GOOD: dict[str, Any] = {
    "name": "spawn",
    "root": "mycli.orchestrate:run",
    "context_args": ["cloud"],
    "steps": [
        {
            "target": "mycli.cloud:Cloud.authenticate",
            "step": "cloud_authed",
            "properties": {"via": "self.kind"},
        },
        {"target": "mycli.cloud:Cloud.connect", "step": "connected", "context_args": ["name"]},
    ],
    "events": [
        {
            "target": "mycli.picker:choose_agent",
            "event": "agent_selected",
            "properties": {"agent": "return", "fallback": "default"},
            "context": True,
            "only_if": "return",
        }
    ],
}
PARSED = FunnelSpec(
    name="spawn",
    root=Target("mycli.orchestrate", "run"),
    context_args=("cloud",),
    steps=(
        StepSpec(
            Target("mycli.cloud", "Cloud.authenticate"),
            "cloud_authed",
            (),
            (("via", Source("self", ("kind",))),),
        ),
        StepSpec(Target("mycli.cloud", "Cloud.connect"), "connected", ("name",), ()),
    ),
    events=(
        EventSpec(
            Target("mycli.picker", "choose_agent"),
            "agent_selected",
            (("agent", Source("return")), ("fallback", Source("default"))),
            context=True,
            only_if=Source("return"),
        ),
    ),
)
FUNNEL_TOML = """
name = "spawn"
root = "mycli.orchestrate:run"
context_args = ["cloud"]

[[steps]]
target = "mycli.cloud:Cloud.authenticate"
step = "cloud_authed"
properties = { via = "self.kind" }

[[steps]]
target = "mycli.cloud:Cloud.connect"
step = "connected"
context_args = ["name"]

[[events]]
target = "mycli.picker:choose_agent"
event = "agent_selected"
properties = { agent = "return", fallback = "default" }
context = true
only_if = "return"
"""


def as_table(toml: str, prefix: str) -> str:
    """The funnel TOML under `prefix` (e.g. "funnel" -> [funnel], [[funnel.steps]])."""
    out = re.sub(r"^\[\[(\w+)\]\]", rf"[[{prefix}.\1]]", toml.strip(), flags=re.MULTILINE)
    return f"[{prefix}]\n{out}\n"


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppFactory]:
    factory = AppFactory(tmp_path / "apps", monkeypatch)
    factory.write(APP)
    yield factory
    uninstrument()
    otel_spawn.shutdown()
    factory.forget()


def test_a_dict_is_validated_into_the_whole_spec(apps: AppFactory) -> None:
    """A `[funnel]` dict becomes the complete FunnelSpec, without importing (running) the app."""
    assert load_spec(GOOD, resolve({})) == PARSED
    assert not [name for name in sys.modules if name.split(".")[0] == "mycli"]


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("spec.toml", as_table(FUNNEL_TOML, "funnel")),
        ("otel-spawn.toml", 'app = "spawn"\n' + as_table(FUNNEL_TOML, "funnel")),
        ("pyproject.toml", '[project]\nname = "mycli"\n' + as_table(FUNNEL_TOML, "tool.otel-spawn.funnel")),
        ("bare.toml", FUNNEL_TOML),
    ],
)
def test_a_path_names_a_file_holding_the_funnel_table(
    apps: AppFactory, tmp_path: Path, filename: str, text: str
) -> None:
    """A path may hold [funnel], [tool.otel-spawn.funnel] of a pyproject.toml, or be the funnel table."""
    path = tmp_path / "specs" / filename
    path.parent.mkdir()
    path.write_text(text)
    assert load_spec(path, resolve({})) == PARSED
    assert load_spec(str(path), resolve({})) == PARSED


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        ("otel-spawn.toml", 'app = "spawn"\n' + as_table(FUNNEL_TOML, "funnel")),
        ("pyproject.toml", as_table(FUNNEL_TOML, "tool.otel-spawn.funnel")),
    ],
)
def test_without_an_argument_the_config_files_funnel_is_used(
    apps: AppFactory, tmp_path: Path, filename: str, text: str
) -> None:
    """configure()'s config file ([funnel] of otel-spawn.toml or of [tool.otel-spawn]) supplies the spec."""
    (tmp_path / filename).write_text(text)
    spec = load_spec(None, resolve({}))
    assert spec == PARSED
    assert spec is not None
    assert spec.origin == str(tmp_path / filename)


def test_no_spec_anywhere_is_none(apps: AppFactory) -> None:
    """Without an argument and without a [funnel] table there is nothing to instrument."""
    assert load_spec(None, resolve({})) is None


def test_the_config_file_named_by_otel_spawn_config_is_used(
    apps: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SPAWN_CONFIG names the file whose [funnel] table is the spec."""
    path = tmp_path / "elsewhere.toml"
    path.write_text(as_table(FUNNEL_TOML, "funnel"))
    monkeypatch.setenv("OTEL_SPAWN_CONFIG", str(path))
    assert load_spec(None, resolve({})) == PARSED


def with_entry(kind: str, index: int, **changes: Any) -> dict[str, Any]:
    """GOOD with entry `index` of `kind` ("steps"/"events") changed (a None value deletes the key)."""
    entries = [dict(entry) for entry in GOOD[kind]]
    entries[index].update(changes)
    entries[index] = {k: v for k, v in entries[index].items() if v is not None}
    return {**GOOD, kind: entries}


ARG = "in the funnel_spec argument"
STEP1 = f"[[funnel.steps]] #1 (target 'mycli.cloud:Cloud.authenticate') {ARG}"
STEP2 = f"[[funnel.steps]] #2 (target 'mycli.cloud:Cloud.connect') {ARG}"
EVENT1 = f"[[funnel.events]] #1 (target 'mycli.picker:choose_agent') {ARG}"
ROOT = f"[funnel] (root 'mycli.orchestrate:run') {ARG}"
BAD: list[tuple[dict[str, Any], str]] = [
    (
        {**GOOD, "nmae": "x"},
        f"[funnel] {ARG}: unknown key 'nmae'; valid keys are context_args, events, name, root, steps",
    ),
    (
        {k: v for k, v in GOOD.items() if k != "root"},
        "[funnel] in the funnel_spec argument: missing required key 'root'",
    ),
    (
        with_entry("steps", 1, stpe="x"),
        f"{STEP2}: unknown key 'stpe'; valid keys are context_args, properties, step, target",
    ),
    (
        with_entry("steps", 1, step=None),
        "[[funnel.steps]] #2 (target 'mycli.cloud:Cloud.connect') in the funnel_spec argument: "
        "missing required key 'step'",
    ),
    (
        with_entry("steps", 0, target="mycli.cloud.Cloud.auth"),
        "[[funnel.steps]] #1 (target 'mycli.cloud.Cloud.auth') in the funnel_spec argument: target "
        "'mycli.cloud.Cloud.auth' is not 'module:qualname' (e.g. 'mycli.cloud:Cloud.authenticate' or "
        "'mycli.picker:choose_agent')",
    ),
    (
        {**GOOD, "root": "mycli.orchestrate:"},
        "[funnel] in the funnel_spec argument: target 'mycli.orchestrate:' is not 'module:qualname'",
    ),
    (
        with_entry("steps", 0, target="mycli.clouds:Cloud.authenticate"),
        "[[funnel.steps]] #1 (target 'mycli.clouds:Cloud.authenticate') in the funnel_spec argument: module "
        "'mycli.clouds' cannot be found: check the name and that the app is importable from here",
    ),
    (
        {**GOOD, "root": "nosuchapp.main:run"},
        "[funnel] in the funnel_spec argument: module 'nosuchapp.main' cannot be found",
    ),
    (
        with_entry("events", 0, properties={"agent": "agnt"}),
        f"{EVENT1}: property 'agent' source 'agnt': 'agnt' is neither \"return\" nor a parameter of "
        "choose_agent (parameters: requested, default)",
    ),
    (
        with_entry("events", 0, only_if="result"),
        f"{EVENT1}: only_if source 'result': 'result' is neither \"return\" nor a parameter of choose_agent",
    ),
    (
        with_entry("events", 0, properties={"agent": "return["}),
        f"{EVENT1}: property 'agent' is 'return['; expected \"return\" or a parameter name, optionally "
        "followed by .attribute",
    ),
    (
        with_entry("steps", 0, properties={"via": "tokn"}),
        f"{STEP1}: property 'via' source 'tokn': 'tokn' is neither \"return\" nor a parameter of "
        "Cloud.authenticate (parameters: self, token)",
    ),
    (
        with_entry("steps", 1, context_args=["return"]),
        f"{STEP2}: context_args name 'return': 'return' is not a parameter of Cloud.connect "
        "(parameters: cls, name)",
    ),
    (
        {**GOOD, "context_args": ["region"]},
        f"{ROOT}: context_args name 'region': 'region' is not a parameter of run (parameters: agent, cloud)",
    ),
    (
        {**GOOD, "context_args": "cloud"},
        "[funnel] (root 'mycli.orchestrate:run') in the funnel_spec argument: context_args must be a list of "
        "parameter names, got 'cloud'",
    ),
    (
        with_entry("events", 0, context="yes"),
        f"{EVENT1}: context must be true or false, got 'yes'",
    ),
    ({**GOOD, "name": ""}, "[funnel] in the funnel_spec argument: name must be a non-empty string, got ''"),
    (
        {**GOOD, "steps": {"target": "mycli.cloud:Cloud.connect"}},
        "funnel.steps in the funnel_spec argument must be an array of tables: write [[funnel.steps]] entries",
    ),
]


@pytest.mark.parametrize(("table", "message"), BAD)
def test_a_bad_spec_names_the_entry_and_the_problem(
    apps: AppFactory, table: dict[str, Any], message: str
) -> None:
    """Each kind of mistake fails with a ConfigError naming the entry (number, target) and what is wrong."""
    with pytest.raises(otel_spawn.ConfigError) as raised:
        load_spec(table, resolve({}))
    assert str(raised.value).startswith(message)


def test_a_parameter_check_also_works_on_an_imported_module(apps: AppFactory) -> None:
    """When the target's module is already imported, its live signature is checked."""
    importlib.import_module("mycli.picker")
    with pytest.raises(
        otel_spawn.ConfigError, match=r"'agnt' is neither \"return\" nor a parameter of choose_agent"
    ):
        load_spec(with_entry("events", 0, properties={"agent": "agnt"}), resolve({}))


@pytest.mark.parametrize(
    "target", ["mycli.picker:decorated", "mycli.picker:flexible", "mycli.picker:not_yet_defined"]
)
def test_names_that_cannot_be_checked_statically_are_accepted(apps: AppFactory, target: str) -> None:
    """Decorated functions, **kwargs and names not defined by a plain def are left to the run-time check."""
    table = {"name": "x", "root": target, "context_args": ["anything_else"]}
    assert load_spec(table, resolve({})) is not None


def test_validation_runs_no_code_of_the_app(apps: AppFactory, tmp_path: Path) -> None:
    """Finding modules and reading parameters never executes the app's packages (not even their __init__)."""
    marker = tmp_path / "executed"
    apps.write(
        {
            "sideeffect/__init__.py": f"open({str(marker)!r}, 'w').close()\nraise SystemExit('never run')\n",
            "sideeffect/sub/work.py": "def go(n):\n    return n\n",
        }
    )
    spec = load_spec({"name": "x", "root": "sideeffect.sub.work:go", "context_args": ["n"]}, resolve({}))
    assert spec is not None
    assert spec.root == Target("sideeffect.sub.work", "go")
    assert not marker.exists()
    with pytest.raises(otel_spawn.ConfigError, match=r"'m' is not a parameter of go \(parameters: n\)"):
        load_spec({"name": "x", "root": "sideeffect.sub.work:go", "context_args": ["m"]}, resolve({}))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[funnel\nname=", "cannot read funnel spec"),
        ('app = "x"\n', "has no [funnel] table: add one (see the README's funnel spec section)"),
        ("funnel = 3\n", "[funnel] in"),
    ],
)
def test_a_bad_spec_file_is_a_config_error(apps: AppFactory, tmp_path: Path, text: str, message: str) -> None:
    """Unreadable TOML, a file without a funnel table, or a non-table [funnel] fail with the file's path."""
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(otel_spawn.ConfigError) as raised:
        load_spec(path, resolve({}))
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_configure_fails_on_a_bad_spec_even_with_telemetry_off(apps: AppFactory) -> None:
    """A bad spec fails configure() although telemetry is off (here: under pytest): seen in development."""
    with pytest.raises(otel_spawn.ConfigError, match=r"\[\[funnel.steps\]\] #1 .*unknown key 'stpe'"):
        otel_spawn.configure(funnel_spec=with_entry("steps", 0, stpe="x"))


def test_configure_with_a_good_spec_instruments(apps: AppFactory) -> None:
    """configure(funnel_spec=...) with telemetry on wraps the targets; with telemetry off it wraps nothing."""
    orchestrate = importlib.import_module("mycli.orchestrate")
    original = orchestrate.run
    otel_spawn.configure(funnel_spec=GOOD)
    assert orchestrate.run is original
    otel_spawn.configure(funnel_spec=GOOD, enabled=True, exporters="none")
    assert orchestrate.run is not original
    assert orchestrate.run.__wrapped__ is original


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            'lifecycle = "renamed"\nproperties = { id = "vm_id" }',
            r"lifecycle must be one of created, connected",
        ),
        ('lifecycle = "connected"', r"a lifecycle event needs properties.id"),
    ],
)
def test_bad_lifecycle_entries(tmp_path: Path, extra: str, match: str) -> None:
    """A lifecycle event with an unknown action or no id source is refused at configure time."""
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[funnel]\nname = "spawn"\nroot = "otel_spawn.demo.orchestrate:launch"\n'
        f'[[funnel.events]]\ntarget = "otel_spawn.demo.fleet:connect"\nevent = "spawn"\n{extra}\n'
    )
    with pytest.raises(ConfigError, match=match):
        load_spec(spec, resolve({}))
