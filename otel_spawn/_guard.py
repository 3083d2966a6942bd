"""Telemetry must never break the host: every processor, exporter and hook runs under `guarded`.

In production an internal error is logged once per call site and swallowed; under pytest it is
re-raised so that bugs are seen (the pattern pydantic/logfire uses).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger("otel_spawn")

P = ParamSpec("P")
R = TypeVar("R")

_warned: set[str] = set()


def under_pytest() -> bool:
    """True inside a pytest run, and in processes that a running test started."""
    return "pytest" in sys.modules or "PYTEST_CURRENT_TEST" in os.environ


def _reraise() -> bool:
    return "pytest" in sys.modules and os.environ.get("OTEL_SPAWN_SWALLOW_ERRORS") != "1"


def warn_once(key: str, message: str, *args: object) -> None:
    """Log `message` as a one-line warning the first time `key` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)


def report_internal_error(where: str, exc: BaseException) -> None:
    """Log an internal error once per place (re-raise under pytest)."""
    if _reraise():
        raise exc
    warn_once(where, "otel-spawn: internal error in %s ignored: %s: %s", where, type(exc).__name__, exc)


def guarded(where: str, default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a telemetry callback so an exception costs the host nothing but a warning."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                report_internal_error(where, exc)
                return default

        return wrapper

    return decorate
