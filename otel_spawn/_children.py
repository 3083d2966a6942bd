"""Hand the current funnel to child processes: TRACEPARENT/BAGGAGE in the environment of `subprocess.Popen`.

A child Python process that configures otel-spawn continues the funnel (same funnel id, same
distinct id, `elapsed_ms` from the parent's start): see `child_environment`/`inherit_funnel`.

Covered: everything built on `subprocess.Popen` (`run`, `call`, `check_output`, asyncio's
subprocesses). Not covered: `os.system`, `os.exec*`, `os.spawn*`, `os.posix_spawn` and
multiprocessing's spawn/forkserver children; pass `child_environment()` to those by hand.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import Any

from otel_spawn._funnel import child_environment
from otel_spawn._guard import report_internal_error

_lock = threading.Lock()
_original: Callable[..., None] | None = None
_ENV_INDEX = list(inspect.signature(subprocess.Popen.__init__).parameters).index("env") - 1  # minus self


def install_child_propagation() -> None:
    """Wrap `subprocess.Popen.__init__` so children started inside a funnel continue it. Idempotent.

    A plain function wrapper, not wrapt: a run without a funnel spec never imports wrapt (3-5 ms of
    start-up), and one method of one stdlib class needs none of its machinery.
    """
    global _original
    with _lock:
        if _original is not None:
            return
        original = subprocess.Popen.__init__

        @functools.wraps(original)
        def __init__(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
            try:
                extra = child_environment()
                if extra:
                    args, kwargs = _with_environment(args, kwargs, extra)
            except Exception as exc:
                report_internal_error("child process propagation", exc)
            original(self, *args, **kwargs)

        _original = original
        subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]


def uninstall_child_propagation() -> None:
    """Restore the original `subprocess.Popen.__init__` exactly. Idempotent."""
    global _original
    with _lock:
        if _original is not None:
            subprocess.Popen.__init__ = _original  # type: ignore[method-assign]
            _original = None


def _with_environment(
    args: tuple[Any, ...], kwargs: dict[str, Any], extra: dict[str, str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with `extra` merged over its env (a copy of os.environ when it passes none)."""
    positional = len(args) > _ENV_INDEX
    env = args[_ENV_INDEX] if positional else kwargs.get("env")
    merged = _merge(os.environ if env is None else env, extra)
    if positional:
        return (*args[:_ENV_INDEX], merged, *args[_ENV_INDEX + 1 :]), kwargs
    return args, {**kwargs, "env": merged}


def _merge(env: Mapping[Any, Any], extra: dict[str, str]) -> dict[Any, Any]:
    if any(isinstance(key, bytes) for key in env):  # os.environb-style mapping: keep it bytes
        return {**env, **{os.fsencode(k): os.fsencode(v) for k, v in extra.items()}}
    return {**env, **extra}
