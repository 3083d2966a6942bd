"""Per-process state (threads, locks, open files, connections) must not cross a fork.

Objects registered here get `_after_fork()` called in a child process forked after they were
registered (multiprocessing's default on Linux), so the child starts its own threads and files
instead of using the parent's, which would deadlock or corrupt them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_registered: list[weakref.ref[ForkAware]] = []
_lock = threading.Lock()


def reset_after_fork(obj: ForkAware) -> None:
    """Have `obj._after_fork()` run in any child forked from now on (while `obj` is alive)."""
    with _lock:
        _registered[:] = [ref for ref in _registered if ref() is not None]
        _registered.append(weakref.ref(obj))


def _in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent may have held it at fork time
    for ref in list(_registered):
        obj = ref()
        if obj is not None:
            with contextlib.suppress(Exception):  # one failing object must not stop the others
                obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
