"""The wrapt wrappers: a root call opens the funnel, a step call is a step, an event call is tracked.

They use otel_spawn's public API (`funnel`, `step`, `set_context`, `track`), so a spec behaves
exactly like the same instrumentation written by hand. Telemetry is guarded: an internal error
costs a one-time warning and the host call still runs; the host's own exceptions and return
values pass through unchanged. The synchronous paths are written out flat: each helper call
would cost about 0.1 us on every call of the host function.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any

from otel_spawn import (
    funnel,
    resource_connected,
    resource_created,
    resource_deleted,
    set_context,
    step,
    track,
)
from otel_spawn._constants import PROPERTY_PREFIX
from otel_spawn._funnel import _attribute
from otel_spawn._guard import report_internal_error
from otel_spawn_instrumentation._arguments import MISSING, ArgGetter, ValueGetter, result_of

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
Named = tuple[tuple[str, ArgGetter], ...]
Values = tuple[tuple[str, ValueGetter], ...]


def _exit(manager: AbstractContextManager[Any], exc: BaseException | None, where: str) -> None:
    """Leave the funnel/step context manager; report its own errors, never the host's exception."""
    try:
        if exc is None:
            manager.__exit__(None, None, None)
        else:
            manager.__exit__(type(exc), exc, exc.__traceback__)
    except Exception as err:
        if err is not exc:
            report_internal_error(where, err)


def root_wrapper(name: str, context: Named, *, is_async: bool, where: str) -> Wrapper:
    """Calling the root opens funnel `name`; `context` arguments become funnel context."""

    def enter(
        instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AbstractContextManager[Any] | None:
        try:
            manager = funnel(name, **{key: get(instance, args, kwargs) for key, get in context})
            manager.__enter__()
        except Exception as exc:
            report_internal_error(where, exc)
            return None
        return manager

    if is_async:

        def wrapper_async(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Coroutine[Any, Any, Any]:
            async def run() -> Any:
                manager = enter(instance, args, kwargs)
                if manager is None:
                    return await wrapped(*args, **kwargs)
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    _exit(manager, exc, where)
                    raise
                _exit(manager, None, where)
                return result

            return run()

        return wrapper_async

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        manager = enter(instance, args, kwargs)  # once per funnel run: not worth flattening
        if manager is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _exit(manager, exc, where)
            raise
        _exit(manager, None, where)
        return result

    return wrapper


def _set_end_values(
    span: Any, values: Values, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> None:
    for key, get in values:
        value = get(instance, args, kwargs, result)
        attribute = None if value is MISSING else _attribute(key, value)
        if attribute is not None:
            span.set_attribute(PROPERTY_PREFIX + key, attribute)


def step_wrapper(
    name: str, context: Named, start_values: Values, end_values: Values, *, is_async: bool, where: str
) -> Wrapper:
    """Step `name`; `start_values` are read as the call starts, `end_values` (from the result) as it ends."""

    def begin(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
        try:
            properties = None
            if start_values:
                properties = {
                    k: v for k, g in start_values if (v := g(instance, args, kwargs, None)) is not MISSING
                }
            manager = step(name, properties=properties)
            span = manager.__enter__()
        except Exception as exc:
            report_internal_error(where, exc)
            return None
        try:
            for key, get in context:
                set_context(key, get(instance, args, kwargs))
        except Exception as exc:
            report_internal_error(where, exc)
        return manager, span

    if is_async:

        def wrapper_async(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Coroutine[Any, Any, Any]:
            async def run() -> Any:
                started = begin(instance, args, kwargs)
                if started is None:
                    return await wrapped(*args, **kwargs)
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    _exit(started[0], exc, where)
                    raise
                try:
                    _set_end_values(started[1], end_values, instance, args, kwargs, result)
                except Exception as exc:
                    report_internal_error(where, exc)
                _exit(started[0], None, where)
                return result

            return run()

        return wrapper_async

    if not context and not start_values and not end_values:  # the common case

        def plain(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                manager = step(name)
                manager.__enter__()
            except Exception as exc:
                report_internal_error(where, exc)
                return wrapped(*args, **kwargs)
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                _exit(manager, exc, where)
                raise
            try:
                manager.__exit__(None, None, None)
            except Exception as exc:
                report_internal_error(where, exc)
            return result

        return plain

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            properties = None
            if start_values:
                properties = {
                    k: v for k, g in start_values if (v := g(instance, args, kwargs, None)) is not MISSING
                }
            manager = step(name, properties=properties)
            span = manager.__enter__()
        except Exception as exc:
            report_internal_error(where, exc)
            return wrapped(*args, **kwargs)
        if context:
            try:
                for key, get in context:
                    set_context(key, get(instance, args, kwargs))
            except Exception as exc:
                report_internal_error(where, exc)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _exit(manager, exc, where)
            raise
        try:
            if end_values:
                _set_end_values(span, end_values, instance, args, kwargs, result)
            manager.__exit__(None, None, None)
        except Exception as exc:
            report_internal_error(where, exc)
        return result

    return wrapper


def _send(name: str, properties: dict[str, Any], *, context: bool, lifecycle: str | None) -> None:
    """Track event `name`, or (with `lifecycle`) update resource `properties["id"]` of kind `name`."""
    if context:
        for key, value in properties.items():
            set_context(key, value)
    if lifecycle is None:
        track(name, **properties)
    elif "id" in properties:
        resource_id = str(properties.pop("id"))
        if lifecycle == "created":
            resource_created(name, resource_id, **properties)
        else:
            (resource_connected if lifecycle == "connected" else resource_deleted)(name, resource_id)


def event_wrapper(
    name: str,
    values: Values,
    *,
    context: bool,
    condition: ValueGetter | None,
    is_async: bool,
    where: str,
    lifecycle: str | None = None,
) -> Wrapper:
    """A successful return of the call tracks event `name` (only when `condition` is truthy, if given).

    With `lifecycle`, `name` is a resource kind and the call creates, connects or deletes resource
    `properties["id"]` in the lifecycle store, which sends `<kind>_connected` / `<kind>_deleted`.
    """

    def emit(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        try:
            if condition is not None:
                passed = condition(instance, args, kwargs, result)
                if passed is MISSING or not passed:
                    return
            properties = {k: v for k, g in values if (v := g(instance, args, kwargs, result)) is not MISSING}
            _send(name, properties, context=context, lifecycle=lifecycle)
        except Exception as exc:
            report_internal_error(where, exc)

    if is_async:

        def wrapper_async(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Coroutine[Any, Any, Any]:
            async def run() -> Any:
                result = await wrapped(*args, **kwargs)
                emit(instance, args, kwargs, result)
                return result

            return run()

        return wrapper_async

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            if condition is not None:
                passed = result if condition is result_of else condition(instance, args, kwargs, result)
                if passed is MISSING or not passed:
                    return result
            properties = {}
            for key, get in values:  # a plain loop: a comprehension costs a frame per call (3.11)
                value = result if get is result_of else get(instance, args, kwargs, result)
                if value is not MISSING:
                    properties[key] = value
            _send(name, properties, context=context, lifecycle=lifecycle)
        except Exception as exc:
            report_internal_error(where, exc)
        return result

    return wrapper
