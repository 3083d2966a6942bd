"""Opt-in hooks that report uncaught exceptions (main thread and other threads) as `$exception`.

An exception that already ended a step or a funnel was reported there and is not reported again.
The previous hooks always run afterwards, so the host's own output is unchanged.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

from opentelemetry.trace import Status, StatusCode

from otel_spawn import _constants as c
from otel_spawn._funnel import current_funnel, tracer, was_reported
from otel_spawn._guard import guarded

_installed = False


@guarded("exception hook", None)
def report(exc: BaseException) -> None:
    """Record `exc` as a zero-length error span: the exporters turn it into `$exception`."""
    if not isinstance(exc, Exception) or was_reported(exc):
        return
    span = tracer().start_span(f"uncaught {type(exc).__name__}", attributes={c.ATTR_KIND: c.KIND_ERROR})
    state = current_funnel()
    if state is not None:
        state.stamp(span)
    span.record_exception(exc, escaped=True)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.end()


def install_exception_hooks() -> None:
    """Report uncaught exceptions through `sys.excepthook` and `threading.excepthook`. Idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def sys_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        report(exc)
        previous_sys(kind, exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            report(args.exc_value)
        previous_thread(args)

    sys.excepthook = sys_hook
    threading.excepthook = thread_hook
