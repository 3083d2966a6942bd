"""Install and remove the spec's wrappers with wrapt.

Each target module gets a post-import hook: it is patched the moment it is imported, or at once if
it already is, so code that later does `from mycli.picker import choose_agent` gets the wrapper.
(Code that took a reference before instrumentation keeps the original: instrument early.)
`uninstall` restores every attribute to its original object; hooks of a removed installation that
fire later do nothing.

wrapt 1.x, not 2: wrapt 2 imports asyncio and importlib.metadata when it is imported (25-45 ms more
of every run's start-up, measured by `make bench`), and its `unwrap_object` is the only part of it
this needs that 1.x lacks: `_unpatch` below does that.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import wrapt
from wrapt.__wrapt__ import _FunctionWrapperBase

from otel_spawn._guard import report_internal_error, warn_once
from otel_spawn._spec import EventSpec, FunnelSpec, Source, StepSpec, Target
from otel_spawn_instrumentation._arguments import (
    ArgGetter,
    ValueGetter,
    argument_getter,
    signature_of,
    value_getter,
)
from otel_spawn_instrumentation._wrappers import Wrapper, event_wrapper, root_wrapper, step_wrapper


class _ModuleFunctionWrapper(wrapt.FunctionWrapper):  # type: ignore[misc]  # wrapt 1 is untyped
    """A FunctionWrapper for a module-level function, made with binding "staticmethod".

    With the default binding ("function") a call through wrapt's C extension first works out
    whether it is an unbound method call: 1,163 ns per call of a one-line function here, against
    178 ns with "staticmethod" (56 ns unwrapped). A module function is never bound, so that work is
    useless. Calls, descriptor binding (the function copied into a class still binds `self`),
    introspection and `uninstall` behave exactly as with a plain FunctionWrapper.
    """

    def __init__(self, wrapped: Any, wrapper: Any) -> None:
        _FunctionWrapperBase.__init__(self, wrapped, None, wrapper, None, "staticmethod")


@dataclass(frozen=True)
class _Root:
    target: Target
    name: str
    context_args: tuple[str, ...]


_Entry = _Root | StepSpec | EventSpec


@dataclass(eq=False)
class _Installation:
    spec: FunnelSpec
    active: bool = True
    patches: list[_Patch] = field(default_factory=list)  # what uninstall() removes, newest first


@dataclass(frozen=True)
class _Patch:
    """One installed wrapper: `parent.attribute` is `wrapper`, and was `own` (`_MISSING`: inherited)."""

    parent: Any  # a module or a class
    attribute: str
    own: Any
    wrapper: Any
    where: str


_lock = threading.RLock()
_current: _Installation | None = None


def installed_spec() -> FunnelSpec | None:
    """The spec whose wrappers are installed (or pending import), if any."""
    return _current.spec if _current is not None else None


def install(spec: FunnelSpec) -> None:
    """Wrap every target of `spec` now, or when its module is imported. Idempotent; a new spec replaces it."""
    global _current
    with _lock:
        if _current is not None and _current.spec == spec:
            return
        uninstall()
        installation = _Installation(spec)
        _current = installation
        by_module: dict[str, list[_Entry]] = {}
        # Inner wrappers first: the root goes on last, so a root that is also a step opens the funnel first.
        wrapped: tuple[_Entry, ...] = (
            *spec.steps,
            *spec.events,
            _Root(spec.root, spec.name, spec.context_args),
        )
        for entry in wrapped:
            by_module.setdefault(entry.target.module, []).append(entry)
        for module_name, entries in by_module.items():
            # A module in sys.modules that is still initialising is patched at once, half-executed:
            # names defined after this point are missing. Say so in the warning.
            loading = getattr(getattr(sys.modules.get(module_name), "__spec__", None), "_initializing", False)
            hook = functools.partial(_patch_module, installation, entries, loading is True)
            wrapt.register_post_import_hook(hook, module_name)


def uninstall() -> None:
    """Remove every wrapper: each patched attribute is its original object again."""
    global _current
    with _lock:
        installation, _current = _current, None
        if installation is None:
            return
        installation.active = False
        for patch in reversed(installation.patches):
            try:
                _unpatch(patch)
            except Exception as exc:
                report_internal_error(f"uninstrumenting {patch.where}", exc)
        installation.patches.clear()


_MISSING = object()


def _unpatch(patch: _Patch) -> None:
    """Put back what `parent.attribute` was (delete it if it was inherited), unless it is gone."""
    current = vars(patch.parent).get(patch.attribute, _MISSING)
    if current is _MISSING:
        return
    if current is not patch.wrapper:
        raise RuntimeError("replaced or wrapped again after instrumentation: left as it is")
    if patch.own is _MISSING:
        delattr(patch.parent, patch.attribute)
    else:
        setattr(patch.parent, patch.attribute, patch.own)


def _patch_module(
    installation: _Installation, entries: list[_Entry], loading: bool, module: ModuleType
) -> None:
    with _lock:
        if not installation.active:
            return
        for entry in entries:
            try:
                _patch(installation, module, entry, loading)
            except Exception as exc:
                report_internal_error(f"instrumenting {entry.target}", exc)


def _patch(installation: _Installation, module: ModuleType, entry: _Entry, loading: bool) -> None:
    target = entry.target
    try:
        parent, attribute, original = wrapt.resolve_path(module, target.qualname)
    except AttributeError:
        hint = (
            " (the module was still being imported: configure otel-spawn before importing it)"
            if loading
            else ""
        )
        warn_once(
            f"spec-missing:{target}",
            "otel-spawn: funnel spec target '%s' not found: module %s has no %s; not instrumented%s",
            target,
            module.__name__,
            target.qualname,
            hint,
        )
        return
    func = original.__func__ if isinstance(original, (classmethod, staticmethod)) else original
    problem = _unsupported(func)
    if problem:
        warn_once(
            f"spec-kind:{target}", "otel-spawn: funnel spec target '%s' %s; not instrumented", target, problem
        )
        return
    bound_first = inspect.isclass(parent) and not isinstance(original, staticmethod)
    wrapper = _wrapper(entry, func, bound_first=bound_first)
    own = vars(parent).get(attribute, _MISSING)
    if inspect.ismodule(parent) and inspect.isfunction(original):
        handle = wrapt.wrap_object(module, target.qualname, _ModuleFunctionWrapper, (wrapper,))
    else:
        handle = wrapt.wrap_function_wrapper(module, target.qualname, wrapper)
    installation.patches.append(_Patch(parent, attribute, own, handle, str(target)))


def _unsupported(func: Any) -> str | None:
    if inspect.isclass(func):
        return "is a class: name a method instead (e.g. Cloud.__init__ or Cloud.run)"
    if not callable(func):
        return f"is a {type(func).__name__}, not a function or method"
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        return "is a generator function: its call only creates the generator, so it cannot be a step or event"
    return None


def _never(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> bool:
    return False


def _wrapper(entry: _Entry, func: Any, *, bound_first: bool) -> Wrapper:
    where = f"funnel spec target '{entry.target}'"
    is_async = inspect.iscoroutinefunction(func)
    signature = signature_of(func)

    def named(names: tuple[str, ...]) -> tuple[tuple[str, ArgGetter], ...]:
        out = []
        for name in names:
            getter = (
                argument_getter(signature, name, bound_first=bound_first) if signature is not None else None
            )
            if getter is None:
                warn_once(f"{where}:{name}", "otel-spawn: %s: %r is not a parameter; not sent", where, name)
            else:
                out.append((name, getter))
        return tuple(out)

    def values(sources: tuple[tuple[str, Source], ...]) -> tuple[tuple[str, ValueGetter], ...]:
        out = []
        for key, source in sources:
            getter = value_getter(source, signature, bound_first=bound_first, label=f"{where}: {key!r}")
            if getter is None:
                warn_once(
                    f"{where}:{key}",
                    "otel-spawn: %s: %r comes from %r, not a parameter; not sent",
                    where,
                    key,
                    str(source),
                )
            else:
                out.append((key, getter))
        return tuple(out)

    if isinstance(entry, _Root):
        return root_wrapper(entry.name, named(entry.context_args), is_async=is_async, where=where)
    if isinstance(entry, StepSpec):
        start = tuple((k, s) for k, s in entry.properties if s.name != "return")
        end = tuple((k, s) for k, s in entry.properties if s.name == "return")
        return step_wrapper(
            entry.step, named(entry.context_args), values(start), values(end), is_async=is_async, where=where
        )
    condition = None
    if entry.only_if is not None:
        found = values((("only_if", entry.only_if),))
        condition = found[0][1] if found else _never  # an unreadable condition never sends
    return event_wrapper(
        entry.event,
        values(entry.properties),
        context=entry.context,
        condition=condition,
        lifecycle=entry.lifecycle,
        is_async=is_async,
        where=where,
    )
