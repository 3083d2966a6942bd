"""Read a named argument of a call in constant time: its position is worked out once, from the signature.

Getters take what a wrapt wrapper receives, `(instance, args, kwargs)`, plus the call's result:
wrapt passes a method's `self` (or a classmethod's `cls`) as `instance`, not in `args`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from otel_spawn._guard import warn_once
from otel_spawn._spec import RETURN, Source

MISSING: Any = object()  # what a getter returns when its attribute path does not resolve
ArgGetter = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
ValueGetter = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], Any]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def argument_getter(signature: inspect.Signature, name: str, *, bound_first: bool) -> ArgGetter | None:
    """A getter for parameter `name` (its default when the call omits it); None if there is no such parameter.

    `bound_first`: the first parameter is `self`/`cls`, which wrapt passes as `instance`.
    """
    params = list(signature.parameters.values())
    if bound_first and params and params[0].kind in _POSITIONAL:
        if params[0].name == name:
            return _instance
        params = params[1:]
    position = 0
    for param in params:
        if param.name == name and param.kind is not inspect.Parameter.VAR_KEYWORD:
            return _getter(param, position)
        if param.kind in _POSITIONAL:
            position += 1
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return lambda instance, args, kwargs: kwargs.get(name)
    return None


def _instance(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return instance


def _getter(param: inspect.Parameter, index: int) -> ArgGetter:
    name = param.name
    default = None if param.default is inspect.Parameter.empty else param.default
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return lambda instance, args, kwargs: args[index:]
    if param.kind is inspect.Parameter.KEYWORD_ONLY:
        return lambda instance, args, kwargs: kwargs.get(name, default)
    if param.kind is inspect.Parameter.POSITIONAL_ONLY:
        return lambda instance, args, kwargs: args[index] if len(args) > index else default
    return lambda instance, args, kwargs: args[index] if len(args) > index else kwargs.get(name, default)


def value_getter(
    source: Source, signature: inspect.Signature | None, *, bound_first: bool, label: str
) -> ValueGetter | None:
    """A getter for `source` ("return" or a parameter, then `.attribute` steps); None: no such parameter.

    A getter with an attribute path returns MISSING (and warns once, naming `label`) when the path
    does not resolve on a call; one without cannot fail.
    """
    base: ValueGetter
    if source.name == RETURN:
        base = result_of
    else:
        arg = (
            argument_getter(signature, source.name, bound_first=bound_first)
            if signature is not None
            else None
        )
        if arg is None:
            return None
        base = lambda instance, args, kwargs, result: arg(instance, args, kwargs)  # noqa: E731
    if not source.path:
        return base
    path = source.path

    def get(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
        try:
            return follow(base(instance, args, kwargs, result), path)
        except Exception as exc:  # the spec names something this call's value does not have
            warn_once(label, "otel-spawn: %s not sent (%s: %s)", label, type(exc).__name__, exc)
            return MISSING

    return get


def result_of(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
    """The getter of `"return"` (wrappers test for it by identity and skip the call)."""
    return result


def follow(value: Any, path: tuple[str, ...]) -> Any:
    """`value.a.b` (or `value["a"]["b"]` for mappings)."""
    for part in path:
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    return value


def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None
