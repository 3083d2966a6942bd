"""The funnel API: `funnel`, `step`, `set_context`, `track`.

A funnel is a root span; a step is a child span marked with `otel_spawn.kind = "step"`. The funnel's
state (name, start, context, progress) travels in the OpenTelemetry context, so it follows threads
and tasks exactly as span parentage does. A step or event span starts with a snapshot of that state
(taken again at its end if `set_context` changed it meanwhile), which makes the span
self-contained: the exporter translates it without looking anything up.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_spawn import _constants as c
from otel_spawn._guard import warn_once
from otel_spawn._version import __version__

F = TypeVar("F", bound=Callable[..., Any])

_FUNNEL_KEY = otel_context.create_key("otel_spawn.funnel")
_TRACER_NAME = "otel_spawn"
_STEPS_CACHED = 256  # step names whose attributes a funnel run keeps built
_tracer_obj: trace.Tracer = trace.get_tracer(_TRACER_NAME, __version__)


def use_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Route the funnel API's spans to `provider` (set by `configure()`; None = the global one)."""
    global _tracer_obj
    _tracer_obj = trace.get_tracer(_TRACER_NAME, __version__, tracer_provider=provider)


def tracer() -> trace.Tracer:
    return _tracer_obj


@dataclass
class FunnelState:
    """What the steps of one funnel run share."""

    name: str
    start_ns: int
    root: Span
    context: dict[str, AttributeValue] = field(default_factory=dict)
    last_completed: str | None = None
    failed_step: str | None = None
    interrupted_at: str | None = None
    active_steps: list[str] = field(default_factory=list)
    inherited: bool = False  # continued from a parent process
    context_changes: int = 0  # bumped by set_context: a step that saw a change re-stamps at its end
    _attributes: tuple[int, dict[str, AttributeValue]] | None = None  # (context_changes, attributes)
    _steps: dict[str, dict[str, AttributeValue]] = field(default_factory=dict)  # see step_attributes

    def attributes(self) -> dict[str, AttributeValue]:
        """The funnel's identity and current context, as span attributes (do not modify: shared)."""
        if self._attributes is None or self._attributes[0] != self.context_changes:
            out: dict[str, AttributeValue] = {c.ATTR_FUNNEL: self.name, c.ATTR_FUNNEL_START: self.start_ns}
            for key, value in self.context.items():
                out[c.CONTEXT_PREFIX + key] = value
            self._attributes = (self.context_changes, out)
            self._steps = {}
        return self._attributes[1]

    def step_attributes(self, name: str) -> dict[str, AttributeValue]:
        """A step's attributes when it has no properties (do not modify: shared by its spans, built
        once per name and context: the SDK copies what a span starts with)."""
        self.attributes()  # first: a context change empties the cache
        cached = self._steps.get(name)
        if cached is None:
            if len(self._steps) >= _STEPS_CACHED:
                self._steps.clear()
            cached = self._steps[name] = _step_attributes(c.KIND_STEP, name, self, {})
        return cached

    def stamp(self, span: Span) -> None:
        span.set_attributes(self.attributes())


_REPORTED = "__otel_spawn_reported__"


def mark_reported(exc: BaseException) -> None:
    """Remember that `exc` was recorded on a step or funnel span (so hooks do not report it again)."""
    with suppress(AttributeError, TypeError):
        setattr(exc, _REPORTED, True)


def was_reported(exc: BaseException) -> bool:
    return bool(getattr(exc, _REPORTED, False))


def current_funnel() -> FunnelState | None:
    """The funnel this code runs in, if any."""
    state = otel_context.get_current().get(_FUNNEL_KEY)
    return state if isinstance(state, FunnelState) else None


def _attribute(key: str, value: object) -> AttributeValue | None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return cast(AttributeValue, list(value))
    warn_once(f"attr:{key}", "otel-spawn: %r is a %s; sending str(value)", key, type(value).__name__)
    return str(value)


def _event_span(kind: str, name: str, state: FunnelState | None, properties: Mapping[str, object]) -> None:
    """A zero-length marker span: delivered the moment it happens, not when its parent ends."""
    now = time.time_ns()
    attributes = _step_attributes(kind, name, state, properties)
    tracer().start_span(name, start_time=now, attributes=attributes).end(end_time=now)


def _step_attributes(
    kind: str, name: str, state: FunnelState | None, properties: Mapping[str, object]
) -> dict[str, AttributeValue]:
    """A step's or event's attributes, set when its span starts (one call instead of one per key)."""
    out: dict[str, AttributeValue] = {c.ATTR_KIND: kind, c.ATTR_STEP: name}
    if state is not None:
        out.update(state.attributes())
    for key, value in properties.items():
        attr = _attribute(key, value)
        if attr is not None:
            out[c.PROPERTY_PREFIX + key] = attr
    return out


@contextmanager
def funnel(name: str, /, **context: object) -> Iterator[Span]:
    """Open a funnel run (the root span). Keyword arguments become funnel context.

    Delivers `<prefix>started` at once. On exit: an exception makes `<prefix>failed`, a
    KeyboardInterrupt or non-zero SystemExit makes `<prefix>abandoned`; the exception propagates unchanged.
    """
    parent = current_funnel()
    if (
        parent is not None and parent.inherited and parent.name == name
    ):  # a child process joins its parent's run
        for key, value in context.items():
            set_context(key, value)
        yield trace.get_current_span()
        return
    start = time.time_ns()
    span = tracer().start_span(name, start_time=start, attributes={c.ATTR_KIND: c.KIND_FUNNEL})
    state = FunnelState(name=name, start_ns=start, root=span)
    for key, value in context.items():
        attr = _attribute(key, value)
        if attr is not None:
            state.context[key] = attr
    state.stamp(span)
    ctx = otel_context.set_value(_FUNNEL_KEY, state, trace.set_span_in_context(span))
    token = otel_context.attach(ctx)
    try:
        _event_span(c.KIND_STEP, "started", state, {})
        yield span
    except BaseException as exc:
        _finish_funnel(state, exc)
        raise
    else:
        _finish_funnel(state, None)
    finally:
        otel_context.detach(token)


def _is_abandon(exc: BaseException) -> bool:
    if isinstance(exc, SystemExit):
        return exc.code not in (None, 0)
    return isinstance(exc, (KeyboardInterrupt, GeneratorExit)) or not isinstance(exc, Exception)


def _finish_funnel(state: FunnelState, exc: BaseException | None) -> None:
    span = state.root
    if exc is None or (isinstance(exc, SystemExit) and not _is_abandon(exc)):
        outcome = "completed"
    elif _is_abandon(exc):
        outcome = "abandoned"
        span.set_attribute(c.ATTR_FAILED_STEP, state.interrupted_at or "")
    else:
        outcome = "failed"
        span.set_attribute(c.ATTR_FAILED_STEP, state.failed_step or "")
        if state.failed_step is None:  # raised outside any step: the funnel span reports it
            span.record_exception(exc)
        mark_reported(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.set_attributes({**state.attributes(), c.ATTR_OUTCOME: outcome})
    if state.last_completed is not None:
        span.set_attribute(c.ATTR_LAST_STEP, state.last_completed)
    span.end()


class step:
    """Mark one funnel step: a decorator (sync or async functions) or a (async) context manager.

    `properties` are product properties sent with the step's event; every other attribute the
    app sets on the span stays in the traces only.
    """

    def __init__(self, name: str, /, *, properties: Mapping[str, object] | None = None) -> None:
        self.name = name
        self.properties = dict(properties or {})
        self._stack: list[tuple[Span, object, FunnelState | None, int]] = []

    def __call__(self, func: F) -> F:
        name, properties = self.name, self.properties
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with step(name, properties=properties):
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with step(name, properties=properties):
                return func(*args, **kwargs)

        return cast(F, run)

    def __enter__(self) -> Span:
        state = current_funnel()
        if state is None:
            warn_once(f"step:{self.name}", "otel-spawn: step %r ran outside a funnel: traced only", self.name)
            span = tracer().start_span(self.name)
        else:
            state.active_steps.append(self.name)
            if self.properties:
                attributes = _step_attributes(c.KIND_STEP, self.name, state, self.properties)
            else:
                attributes = state.step_attributes(self.name)
            span = tracer().start_span(self.name, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        self._stack.append((span, token, state, state.context_changes if state else 0))
        return span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span, token, state, context_changes = self._stack.pop()
        otel_context.detach(token)  # type: ignore[arg-type]
        if state is not None:
            state.active_steps.pop()
            if exc is None:
                state.last_completed = self.name
            elif _is_abandon(exc) or isinstance(exc, SystemExit):
                state.interrupted_at = state.interrupted_at or self.name
            else:
                state.failed_step = state.failed_step or self.name
            if state.context_changes != context_changes:  # set_context ran during the step
                state.stamp(span)
        if exc is not None:  # no outcome attribute means "completed"
            if isinstance(exc, Exception):
                span.record_exception(exc)
                if state is not None:  # the step's `$exception` reports it
                    mark_reported(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(c.ATTR_OUTCOME, type(exc).__name__)
        span.end()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def set_context(key: str, value: object) -> None:
    """Add funnel context (e.g. the agent the user picked): sent with every later event of the funnel."""
    state = current_funnel()
    attr = _attribute(key, value)
    if state is None or attr is None:
        return
    state.context[key] = attr
    state.context_changes += 1
    state.root.set_attribute(c.CONTEXT_PREFIX + key, attr)


def track(event: str, /, **properties: object) -> None:
    """Record a product event: a span event on the current span, delivered at once.

    Inside a funnel it carries the funnel's context and timing; outside one (e.g. `spawn_deleted` from
    a later command) it carries only its own properties.
    """
    clean = {key: attr for key, value in properties.items() if (attr := _attribute(key, value)) is not None}
    trace.get_current_span().add_event(event, clean)
    _event_span(c.KIND_EVENT, event, current_funnel(), clean)


# --- child processes: the OpenTelemetry "environment variables as carriers" convention ----------------
_BAGGAGE_FUNNEL = "otel_spawn.funnel"
_BAGGAGE_START = "otel_spawn.start_ns"
_BAGGAGE_LAST = "otel_spawn.last_step"
_BAGGAGE_CONTEXT = "otel_spawn.context."


def child_environment() -> dict[str, str]:
    """TRACEPARENT/BAGGAGE for a child process started now, so it continues this funnel ({} if none)."""
    state = current_funnel()
    if state is None:
        return {}
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    if "traceparent" not in carrier:  # telemetry off (no valid span): a child could not continue it anyway
        return {}
    entries = {_BAGGAGE_FUNNEL: state.name, _BAGGAGE_START: str(state.start_ns)}
    if state.last_completed is not None:
        entries[_BAGGAGE_LAST] = state.last_completed
    for key, value in state.context.items():
        entries[_BAGGAGE_CONTEXT + key] = json.dumps(value)
    baggage = ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in entries.items())
    env = {"BAGGAGE": baggage, "TRACEPARENT": carrier["traceparent"]}
    if carrier.get("tracestate"):
        env["TRACESTATE"] = carrier["tracestate"]
    return env


def inherit_funnel(environ: Mapping[str, str]) -> bool:
    """In a child process: continue the parent's funnel found in TRACEPARENT/BAGGAGE. True if found.

    The parent's span context becomes this process's base context, so every span here is part of
    the same trace (same funnel id) and `elapsed_ms` counts from the parent's funnel start.
    """
    existing = current_funnel()
    if existing is not None and existing.inherited:
        return True
    entries = dict(
        (unquote(k), unquote(v))
        for k, _, v in (item.strip().partition("=") for item in environ.get("BAGGAGE", "").split(","))
        if k
    )
    traceparent = environ.get("TRACEPARENT")
    if _BAGGAGE_FUNNEL not in entries or not traceparent or not entries.get(_BAGGAGE_START, "").isdigit():
        return False
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent, "tracestate": environ.get("TRACESTATE", "")}
    ctx = TraceContextTextMapPropagator().extract(carrier)
    span = trace.get_current_span(ctx)
    if not span.get_span_context().is_valid:
        return False
    state = FunnelState(
        name=entries[_BAGGAGE_FUNNEL], start_ns=int(entries[_BAGGAGE_START]), root=span, inherited=True
    )
    state.last_completed = entries.get(_BAGGAGE_LAST)
    for key, value in entries.items():
        if key.startswith(_BAGGAGE_CONTEXT):
            try:
                state.context[key[len(_BAGGAGE_CONTEXT) :]] = json.loads(value)
            except ValueError:
                continue
    otel_context.attach(otel_context.set_value(_FUNNEL_KEY, state, ctx))
    return True
