"""Auto-instrumentation from a funnel spec: wrapping, exact restoration, guarding, the stock command."""

from __future__ import annotations

import importlib
import inspect
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import AppFactory, Captured
from helpers import posthog_env, static_properties
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from otel_spawn_instrumentation import OtelSpawnInstrumentor, installed_spec
from otel_spawn_instrumentation._arguments import argument_getter
from servers import CaptureServer

import otel_spawn
from otel_spawn import _guard, _setup
from otel_spawn._config import resolve
from otel_spawn._spec import FunnelSpec, instrument_spec, load_spec, parse_spec, uninstrument

APP = {
    "mycli/picker.py": """
        def choose_agent(requested, *, default="claude"):
            return requested or default

        def preflight(agent):
            return agent != "broken"
    """,
    "mycli/cloud.py": """
        import asyncio

        class CloudError(RuntimeError):
            pass

        UNAUTHORIZED = CloudError("401 from the cloud API")

        class Cloud:
            region = "eu"

            def __init__(self, name):
                self.name = name

            def authenticate(self, token):
                if token == "bad":
                    raise UNAUTHORIZED
                if token == "interrupt":
                    raise KeyboardInterrupt
                return True

            @classmethod
            def connect(cls, name):
                return cls(name)

            @staticmethod
            def sizes(region):
                return ["cx22", "cx32"]

            async def provision(self, size):
                await asyncio.sleep(0)
                return {"ip": "10.0.0.7", "size": size}

        class Hetzner(Cloud):
            pass
    """,
    "mycli/orchestrate.py": """
        import asyncio
        from mycli.picker import choose_agent, preflight
        from mycli.cloud import Cloud

        def run(agent, cloud="hetzner", token="ok"):
            chosen = choose_agent(agent)
            preflight(chosen)
            c = Cloud.connect(cloud)
            c.sizes(c.region)
            c.authenticate(token)
            return asyncio.run(c.provision("cx22"))
    """,
}
SPEC: dict[str, Any] = {
    "name": "spawn",
    "root": "mycli.orchestrate:run",
    "context_args": ["cloud"],
    "events": [
        {
            "target": "mycli.picker:choose_agent",
            "event": "agent_selected",
            "properties": {"agent": "return"},
            "context": True,
        },
        {"target": "mycli.picker:preflight", "event": "preflight_passed", "only_if": "return"},
    ],
    "steps": [
        {"target": "mycli.cloud:Cloud.connect", "step": "connected", "properties": {"via": "cls.__name__"}},
        {
            "target": "mycli.cloud:Cloud.sizes",
            "step": "sizes_listed",
            "properties": {"sizes": "return"},
            "context_args": ["region"],
        },
        {
            "target": "mycli.cloud:Cloud.authenticate",
            "step": "cloud_authed",
            "properties": {"provider": "self.name"},
        },
        {
            "target": "mycli.cloud:Cloud.provision",
            "step": "vm_ready",
            "properties": {"size": "size", "ip": "return.ip"},
        },
    ],
}
CONTEXT = {"funnel": "spawn", "cloud": "hetzner"}
EXPECTED = [
    ("funnel_started", {**CONTEXT, "step": "started"}),
    ("agent_selected", {**CONTEXT, "agent": "claude"}),
    ("preflight_passed", {**CONTEXT, "agent": "claude"}),
    ("funnel_connected", {**CONTEXT, "agent": "claude", "step": "connected", "via": "Cloud"}),
    (
        "funnel_sizes_listed",
        {**CONTEXT, "agent": "claude", "region": "eu", "step": "sizes_listed", "sizes": ["cx22", "cx32"]},
    ),
    (
        "funnel_cloud_authed",
        {**CONTEXT, "agent": "claude", "region": "eu", "step": "cloud_authed", "provider": "hetzner"},
    ),
    (
        "funnel_vm_ready",
        {**CONTEXT, "agent": "claude", "region": "eu", "step": "vm_ready", "size": "cx22", "ip": "10.0.0.7"},
    ),
]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_guard, "_warned", set())


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppFactory]:
    factory = AppFactory(tmp_path / "apps", monkeypatch)
    yield factory
    uninstrument()
    otel_spawn.shutdown()
    factory.forget()


@pytest.fixture
def captured() -> Iterator[Captured]:
    with Captured() as capture:
        yield capture


def spec(table: dict[str, Any] | None = None) -> FunnelSpec:
    return parse_spec(table or SPEC, "the test")


def test_modules_imported_after_instrumentation_are_wrapped(apps: AppFactory, captured: Captured) -> None:
    """Targets in modules imported after instrumenting (and their `from x import f` users) are wrapped."""
    apps.write(APP)
    instrument_spec(spec())
    orchestrate = importlib.import_module("mycli.orchestrate")
    assert orchestrate.run("claude") == {"ip": "10.0.0.7", "size": "cx22"}
    assert captured.properties() == EXPECTED


def test_modules_imported_before_instrumentation_are_wrapped(apps: AppFactory, captured: Captured) -> None:
    """Modules already imported are patched at once; a later `from mycli.picker import f` gets the wrapper."""
    apps.write(APP)
    picker = importlib.import_module("mycli.picker")
    cloud = importlib.import_module("mycli.cloud")
    choose, connect = picker.choose_agent, vars(cloud.Cloud)["connect"]
    instrument_spec(spec())
    assert picker.choose_agent is not choose
    assert picker.choose_agent.__wrapped__ is choose
    assert vars(cloud.Cloud)["connect"] is not connect
    assert vars(cloud.Cloud)["connect"].__wrapped__ is connect
    orchestrate = importlib.import_module("mycli.orchestrate")
    assert orchestrate.choose_agent is picker.choose_agent
    orchestrate.run("claude")
    assert captured.properties() == EXPECTED


def test_a_reference_taken_before_instrumentation_stays_the_original(
    apps: AppFactory, captured: Captured
) -> None:
    """The documented limit: a name bound by `from x import f` before instrumenting is not wrapped."""
    apps.write(APP)
    orchestrate = importlib.import_module("mycli.orchestrate")
    original = orchestrate.choose_agent
    instrument_spec(spec())
    assert orchestrate.choose_agent is original
    assert importlib.import_module("mycli.picker").choose_agent is not original
    orchestrate.run("claude")
    assert "agent_selected" not in captured.names()
    assert "funnel_vm_ready" in captured.names()


def test_uninstrument_restores_every_original_exactly(apps: AppFactory) -> None:
    """After uninstrument, functions, methods, class/static method objects, inherited slots are originals."""
    apps.write(APP)
    picker = importlib.import_module("mycli.picker")
    cloud = importlib.import_module("mycli.cloud")
    names = ("connect", "sizes", "authenticate", "provision")
    before = {name: vars(cloud.Cloud)[name] for name in names}
    functions = (picker.choose_agent, picker.preflight)
    table = {
        **SPEC,
        "steps": [*SPEC["steps"], {"target": "mycli.cloud:Hetzner.authenticate", "step": "hetzner_authed"}],
    }
    instrument_spec(spec(table))
    assert all(vars(cloud.Cloud)[name] is not before[name] for name in names)
    assert "authenticate" in vars(cloud.Hetzner)  # the subclass target shadows the inherited method
    uninstrument()
    assert all(vars(cloud.Cloud)[name] is before[name] for name in names)
    assert isinstance(vars(cloud.Cloud)["connect"], classmethod)
    assert isinstance(vars(cloud.Cloud)["sizes"], staticmethod)
    assert cloud.Cloud.sizes is before["sizes"].__func__
    assert picker.choose_agent is functions[0]
    assert picker.preflight is functions[1]
    assert "authenticate" not in vars(cloud.Hetzner)
    assert installed_spec() is None


def test_uninstrument_leaves_a_wrapper_that_was_replaced_or_wrapped_over(
    apps: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Something set over our wrapper after instrumenting stays (and is reported); the rest is restored."""
    monkeypatch.setenv("OTEL_SPAWN_SWALLOW_ERRORS", "1")  # the production path: warn, carry on
    apps.write(APP)
    picker = importlib.import_module("mycli.picker")
    original_preflight = picker.preflight
    instrument_spec(spec())
    ours = picker.choose_agent

    def theirs(*args: Any, **kwargs: Any) -> Any:
        return ours(*args, **kwargs)

    setattr(picker, "choose_agent", theirs)  # noqa: B010 (the module is written by the test)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        uninstrument()
    assert picker.choose_agent is theirs
    assert picker.preflight is original_preflight
    assert installed_spec() is None
    assert any("mycli.picker:choose_agent" in r.getMessage() for r in caplog.records)


def test_install_is_idempotent_and_a_new_spec_replaces_the_old(apps: AppFactory) -> None:
    """Instrumenting twice with one spec wraps once; a different spec first undoes the old one."""
    apps.write(APP)
    picker = importlib.import_module("mycli.picker")
    original_choose, original_preflight = picker.choose_agent, picker.preflight
    instrument_spec(spec())
    wrapper = picker.choose_agent
    instrument_spec(spec())
    assert picker.choose_agent is wrapper
    assert picker.choose_agent.__wrapped__ is original_choose
    other = {"name": "other", "root": "mycli.picker:preflight"}
    instrument_spec(spec(other))
    assert picker.choose_agent is original_choose
    assert picker.preflight is not original_preflight
    assert picker.preflight.__wrapped__ is original_preflight


def test_missing_target_is_one_warning_and_the_rest_is_instrumented(
    apps: AppFactory, captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """A qualname the module lacks at run time costs one one-line warning; every other target still works."""
    apps.write(APP)
    table = {
        **SPEC,
        "steps": [{"target": "mycli.cloud:Cloud.teleport", "step": "teleported"}, *SPEC["steps"]],
    }
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        instrument_spec(spec(table))
        importlib.import_module("mycli.orchestrate").run("claude")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "otel-spawn: funnel spec target 'mycli.cloud:Cloud.teleport' not found: module mycli.cloud has no "
        "Cloud.teleport; not instrumented"
    ]
    assert captured.properties() == EXPECTED


def test_configuring_inside_the_target_module_warns_how_to_fix_it(
    apps: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A module that configures otel-spawn before defining its root is told to configure before import."""
    apps.write(
        {
            "early/cli.py": """
                import otel_spawn

                spec = {"name": "x", "root": "early.cli:main"}
                otel_spawn.configure(enabled=True, exporters="none", funnel_spec=spec)

                def main():
                    return 1
            """
        }
    )
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        module = importlib.import_module("early.cli")
    assert not hasattr(module.main, "__wrapped__")
    assert [r.getMessage() for r in caplog.records] == [
        "otel-spawn: funnel spec target 'early.cli:main' not found: module early.cli has no main; not "
        "instrumented (the module was still being imported: configure otel-spawn before importing it)"
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("class Thing:\n    pass\n", "is a class: name a method instead"),
        ("Thing = 42\n", "is a int, not a function or method"),
        ("def Thing():\n    yield 1\n", "is a generator function"),
    ],
)
def test_unsupported_targets_warn_and_stay_untouched(
    apps: AppFactory, caplog: pytest.LogCaptureFixture, source: str, problem: str
) -> None:
    """A target that is not a function or method is left as it is, with a warning saying why."""
    apps.write({"odd/things.py": source})
    module = importlib.import_module("odd.things")
    original = module.Thing
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        instrument_spec(spec({"name": "x", "root": "odd.things:Thing"}))
    assert module.Thing is original
    assert [problem in r.getMessage() for r in caplog.records] == [True]


def test_host_exception_propagates_unchanged_and_fails_the_funnel(
    apps: AppFactory, captured: Captured
) -> None:
    """The app's own exception object comes out of the wrapped call; the funnel reports the failed step."""
    apps.write(APP)
    instrument_spec(spec())
    orchestrate = importlib.import_module("mycli.orchestrate")
    with pytest.raises(RuntimeError) as raised:
        orchestrate.run("claude", token="bad")
    assert raised.value is importlib.import_module("mycli.cloud").UNAUTHORIZED
    events = captured.events()
    assert [e["event"] for e in events][-3:] == ["funnel_sizes_listed", "$exception", "funnel_failed"]
    failed = events[-1]["properties"]
    assert (failed["failed_step"], failed["last_completed_step"], failed["error_type"]) == (
        "cloud_authed",
        "sizes_listed",
        "CloudError",
    )
    assert events[-2]["properties"]["$exception_list"][0]["value"] == "401 from the cloud API"


def test_keyboard_interrupt_abandons_the_funnel(apps: AppFactory, captured: Captured) -> None:
    """KeyboardInterrupt inside a step propagates and the funnel is abandoned at that step."""
    apps.write(APP)
    instrument_spec(spec())
    with pytest.raises(KeyboardInterrupt):
        importlib.import_module("mycli.orchestrate").run("claude", token="interrupt")
    assert captured.properties(drop=("agent", "region"))[-1] == (
        "funnel_abandoned",
        {**CONTEXT, "at_step": "cloud_authed", "last_completed_step": "sizes_listed"},
    )


def test_preflight_false_sends_no_event(apps: AppFactory, captured: Captured) -> None:
    """An event with `only_if = "return"` is not sent when the call returns a falsy value."""
    apps.write(APP)
    instrument_spec(spec())
    importlib.import_module("mycli.orchestrate").run("broken")
    names = captured.names()
    assert "agent_selected" in names
    assert "preflight_passed" not in names


def test_unreadable_property_is_skipped_with_a_warning(
    apps: AppFactory, captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """A property whose attribute path fails on a call is left out (one warning); the event is still sent."""
    apps.write(APP)
    table = {
        **SPEC,
        "events": [
            {
                "target": "mycli.picker:choose_agent",
                "event": "agent_selected",
                "properties": {"n": "return.nope"},
            }
        ],
    }
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        instrument_spec(spec(table))
        importlib.import_module("mycli.orchestrate").run("claude")
    assert ("agent_selected", {**CONTEXT}) in captured.properties()
    assert [r.getMessage() for r in caplog.records] == [
        "otel-spawn: funnel spec target 'mycli.picker:choose_agent': 'n' not sent "
        "(AttributeError: 'str' object has no attribute 'nope')"
    ]


def test_async_root_and_async_event(apps: AppFactory, captured: Captured) -> None:
    """An async root opens the funnel for the awaited time; an async event fires after its await."""
    apps.write(
        {
            "aapp/main.py": """
                import asyncio

                async def fetch(n):
                    await asyncio.sleep(0)
                    return n * 2

                async def main(n):
                    return await fetch(n) + 1
            """
        }
    )
    instrument_spec(
        spec(
            {
                "name": "job",
                "root": "aapp.main:main",
                "context_args": ["n"],
                "events": [
                    {"target": "aapp.main:fetch", "event": "fetched", "properties": {"value": "return"}}
                ],
            }
        )
    )
    import asyncio

    assert asyncio.run(importlib.import_module("aapp.main").main(20)) == 41
    assert captured.properties() == [
        ("funnel_started", {"funnel": "job", "n": 20, "step": "started"}),
        ("fetched", {"funnel": "job", "n": 20, "value": 40}),
    ]
    root = [s for s in captured.exporter.get_finished_spans() if s.name == "job"]
    assert len(root) == 1
    assert root[0].parent is None


def _every_kind(a: int, /, b: int, *rest: int, c: int, d: int = 4, **extra: int) -> None:
    """A signature with every kind of parameter."""


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1, 2), {"c": 3}), ((1,), {"b": 2, "c": 3, "d": 5}), ((1, 2, 7, 8), {"c": 3, "e": 9})],
)
def test_argument_getters_agree_with_signature_bind(args: tuple[int, ...], kwargs: dict[str, int]) -> None:
    """The constant-time argument readers return what `Signature.bind` binds, for every kind of parameter."""
    signature = inspect.signature(_every_kind)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    expected = {**{k: v for k, v in bound.arguments.items() if k != "extra"}, **bound.arguments["extra"]}
    getters = {name: argument_getter(signature, name, bound_first=False) for name in [*expected, "zzz"]}
    assert {name: get(None, args, kwargs) for name, get in getters.items() if get is not None} == {
        **expected,
        "zzz": None,  # **extra: a name the call did not pass reads as None
    }
    method = inspect.signature(Captured.events)  # (self): `self` is wrapt's `instance`
    get_self = argument_getter(method, "self", bound_first=True)
    assert get_self is not None
    assert get_self("the instance", (), {}) == "the instance"


def test_async_step_failure_propagates_and_fails_the_funnel(apps: AppFactory, captured: Captured) -> None:
    """An awaited step that raises passes the app's exception through and the async funnel reports it."""
    apps.write(
        {
            "aapp/jobs.py": """
                import asyncio

                class Quota(Exception):
                    pass

                async def provision(size):
                    await asyncio.sleep(0)
                    raise Quota(f"no {size} left")

                async def main():
                    await provision("cx22")
            """
        }
    )
    instrument_spec(
        spec(
            {
                "name": "job",
                "root": "aapp.jobs:main",
                "steps": [{"target": "aapp.jobs:provision", "step": "vm_ready", "context_args": ["size"]}],
            }
        )
    )
    import asyncio

    jobs = importlib.import_module("aapp.jobs")
    with pytest.raises(jobs.Quota, match="no cx22 left"):
        asyncio.run(jobs.main())
    events = captured.events()
    assert [e["event"] for e in events] == ["funnel_started", "$exception", "funnel_failed"]
    assert events[-1]["properties"]["failed_step"] == "vm_ready"
    assert events[-1]["properties"]["size"] == "cx22"  # context set as the step started


class _BrokenProcessor(SpanProcessor):
    """A span processor with a bug in one hook (the SDK does not guard processors: it raises into callers)."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def on_start(self, span: Span, parent_context: object = None) -> None:
        if self.hook == "on_start":
            raise RuntimeError("processor bug")

    def on_end(self, span: ReadableSpan) -> None:
        if self.hook == "on_end":
            raise RuntimeError("processor bug")


@pytest.mark.parametrize("hook", ["on_start", "on_end"])
@pytest.mark.parametrize("token", ["ok", "bad"])
def test_wrapper_errors_never_break_the_host(
    apps: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, token: str, hook: str
) -> None:
    """With telemetry failing in every wrapper, the host still returns its value or raises its own error."""
    monkeypatch.setenv("OTEL_SPAWN_SWALLOW_ERRORS", "1")  # production behaviour: log, don't re-raise
    apps.write(APP)
    with Captured() as capture, caplog.at_level(logging.WARNING, logger="otel_spawn"):
        capture.provider.add_span_processor(_BrokenProcessor(hook))
        instrument_spec(spec())
        orchestrate = importlib.import_module("mycli.orchestrate")
        if token == "ok":
            assert orchestrate.run("claude", token=token) == {"ip": "10.0.0.7", "size": "cx22"}
        else:
            with pytest.raises(RuntimeError) as raised:
                orchestrate.run("claude", token=token)
            assert raised.value is importlib.import_module("mycli.cloud").UNAUTHORIZED
    internal = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert internal[0] == (
        "otel-spawn: internal error in funnel spec target 'mycli.orchestrate:run' ignored: "
        "RuntimeError: processor bug"
    )
    assert all(m.endswith("ignored: RuntimeError: processor bug") for m in internal)
    assert any("'mycli.cloud:Cloud.authenticate'" in m for m in internal)


def test_instrumentor_uses_the_config_file_and_shares_configures_installation(
    apps: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`instrument()` without arguments finds the spec in otel-spawn.toml; configure() never wraps twice."""
    monkeypatch.setenv("OTEL_SPAWN_ENABLE_IN_TESTS", "1")
    monkeypatch.setattr(_setup, "_active", None)  # as under the stock command: no configure() yet
    apps.write(APP)
    (tmp_path / "otel-spawn.toml").write_text(
        'app = "mycli"\nexporters = "none"\n[funnel]\nname = "spawn"\nroot = "mycli.orchestrate:run"\n'
        '[[funnel.events]]\ntarget = "mycli.picker:choose_agent"\nevent = "agent_selected"\n'
    )
    picker = importlib.import_module("mycli.picker")
    original = picker.choose_agent
    OtelSpawnInstrumentor().instrument()
    assert installed_spec() == load_spec(None, resolve({}))
    wrapper = picker.choose_agent
    assert wrapper.__wrapped__ is original
    otel_spawn.configure()  # the configurator of the stock command, or the app itself
    OtelSpawnInstrumentor().instrument()  # warns "already instrumented" in the base class, changes nothing
    assert picker.choose_agent is wrapper
    OtelSpawnInstrumentor().uninstrument()
    assert picker.choose_agent is original
    otel_spawn.configure()  # configure() alone instruments from the file as well ...
    assert picker.choose_agent.__wrapped__ is original
    OtelSpawnInstrumentor().instrument()  # ... and the stock loader's call after it adds no second wrapper
    assert picker.choose_agent.__wrapped__ is original


@pytest.mark.parametrize("configured", [True, False])
def test_instrumentor_does_nothing_when_telemetry_is_off(
    apps: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, configured: bool
) -> None:
    """With telemetry off (here: under pytest) the instrumentor wraps nothing, with or without configure()."""
    apps.write(APP)
    (tmp_path / "otel-spawn.toml").write_text('[funnel]\nname = "spawn"\nroot = "mycli.orchestrate:run"\n')
    if configured:
        assert not otel_spawn.configure().enabled
    else:
        monkeypatch.setattr(_setup, "_active", None)
    orchestrate = importlib.import_module("mycli.orchestrate")
    original = orchestrate.run
    OtelSpawnInstrumentor().instrument()
    assert installed_spec() is None
    assert orchestrate.run is original


STOCK_APP = {
    "mycli/__main__.py": """
        import sys
        from mycli.orchestrate import run

        print(run(sys.argv[1] if len(sys.argv) > 1 else None))
    """,
    **{name: source for name, source in APP.items() if name != "mycli/orchestrate.py"},
    "mycli/orchestrate.py": """
        import asyncio
        from mycli.picker import choose_agent, preflight
        from mycli.cloud import Cloud

        def run(agent, cloud="hetzner", token="ok"):
            chosen = choose_agent(agent)
            preflight(chosen)
            c = Cloud.connect(cloud)
            c.sizes(c.region)
            c.authenticate(token)
            return asyncio.run(c.provision("cx22"))["ip"]
    """,
}
STOCK_TOML = """
app = "mycli"
app_version = "2.0.0"

[funnel]
name = "spawn"
root = "mycli.orchestrate:run"
context_args = ["cloud"]

[[funnel.events]]
target = "mycli.picker:choose_agent"
event = "agent_selected"
properties = { agent = "return" }
context = true

[[funnel.events]]
target = "mycli.picker:preflight"
event = "preflight_passed"
only_if = "return"

[[funnel.steps]]
target = "mycli.cloud:Cloud.connect"
step = "connected"
properties = { via = "cls.__name__" }

[[funnel.steps]]
target = "mycli.cloud:Cloud.sizes"
step = "sizes_listed"
properties = { sizes = "return" }
context_args = ["region"]

[[funnel.steps]]
target = "mycli.cloud:Cloud.authenticate"
step = "cloud_authed"
properties = { provider = "self.name" }

[[funnel.steps]]
target = "mycli.cloud:Cloud.provision"
step = "vm_ready"
properties = { size = "size", ip = "return.ip" }
"""


def test_stock_command_instruments_an_unchanged_app(capture_server: CaptureServer, tmp_path: Path) -> None:
    """`opentelemetry-instrument python -m mycli` with only otel-spawn.toml delivers the spec's events."""
    project = tmp_path / "project"
    AppFactory(project).write(STOCK_APP)  # not on this process's sys.path: the app runs in a child
    (project / "otel-spawn.toml").write_text(STOCK_TOML)
    env = posthog_env(capture_server.url, "phc_stock")
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(command), sys.executable, "-m", "mycli", "codex"],
        cwd=project,
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "10.0.0.7\n"), result.stderr
    assert capture_server.wait_for_events(7, timeout=10)
    events = capture_server.events
    assert [e["event"] for e in events] == [name for name, _ in EXPECTED]
    assert len({e["distinct_id"] for e in events}) == 1
    uuid.UUID(events[0]["distinct_id"])
    funnel_id = events[0]["properties"]["funnel_id"]
    vm_ready = events[-1]
    assert set(vm_ready) == {"event", "distinct_id", "timestamp", "uuid", "properties"}
    props = vm_ready["properties"]
    assert props == {
        **static_properties("mycli", "2.0.0", is_ci=props["is_ci"]),
        "funnel": "spawn",
        "funnel_id": funnel_id,
        "trace_id": funnel_id,
        "elapsed_ms": props["elapsed_ms"],
        "step": "vm_ready",
        "step_duration_ms": props["step_duration_ms"],
        "cloud": "hetzner",
        "agent": "codex",
        "region": "eu",
        "size": "cx22",
        "ip": "[REDACTED:ipv4]",  # the scrubber runs on spec properties like on any other
    }
    assert all(e["properties"]["funnel_id"] == funnel_id for e in events)
    assert "Attempting to instrument" not in result.stderr
