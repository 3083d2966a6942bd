"""Getting spooled events out: `otel-spawn flush`, and the detached flusher started at exit.

At exit the host gives its sender a few tens of milliseconds; whatever is still spooled then is
handed to `otel-spawn flush` started as a detached background process, so the user's terminal is
never held. One flusher runs at a time per state directory (a lock file), for a bounded time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from otel_spawn import _constants as c
from otel_spawn._config import Settings
from otel_spawn._delivery import Sender
from otel_spawn._posthog import PostHogClient
from otel_spawn._spool import SqliteSpool

FLUSH_LOCK = "flush.lock"
FLUSHER_SECONDS = 30.0


@dataclass(frozen=True)
class FlushResult:
    sent: int
    remaining: int
    error: str | None = None


@contextlib.contextmanager
def _exclusive(home: Path, wait_until: float) -> Iterator[bool]:
    """True once this process holds the flush lock of `home` (always True where flock is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    fd = os.open(home / FLUSH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= wait_until:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def flush(
    settings: Settings,
    *,
    max_seconds: float,
    progress: Callable[[str], None] | None = None,
    wait_for_other: bool = True,
) -> FlushResult:
    """Send spooled events until none are left, the server refuses, or `max_seconds` pass.

    The destination is the configured one (env or config file), else the one the events were spooled
    for. If another flush runs, wait for it (within `max_seconds`), or leave with `wait_for_other=False`.
    """
    spool = SqliteSpool(settings.home, max_bytes=settings.spool_max_bytes)
    try:
        configured = (settings.posthog.host, settings.posthog.api_key) if settings.posthog.api_key else None
        host, key = configured or spool.destination() or ("", "")
        if not key:
            return FlushResult(0, spool.depth(), f"no PostHog project key known: set {c.ENV_POSTHOG_API_KEY}")
        deadline = time.monotonic() + max_seconds
        with _exclusive(settings.home, deadline if wait_for_other else 0.0) as mine:
            if not mine:
                return FlushResult(0, spool.depth(), "another flush is running")
            sender = Sender(outbox=spool, client=PostHogClient(host=host, api_key=key, timeout=10.0))
            sender.flush(deadline, progress)
            sender.client.close()
            return FlushResult(sender.stats.sent, spool.depth(), sender.stats.last_error)
    finally:
        spool.close()


def spawn_flusher(settings: Settings) -> None:
    """Start `otel-spawn flush` detached from the terminal; the host does not wait for it."""
    env = dict(os.environ)
    env[c.ENV_HOME] = str(settings.home)
    env["PYTHONPATH"] = os.pathsep.join(  # not auto-instrumented itself
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and "auto_instrumentation" not in p
    )
    seconds = env.get(c.ENV_FLUSHER_SECONDS, str(FLUSHER_SECONDS))
    if float(seconds or 0) <= 0:  # 0 turns the exit-time flusher off
        return
    cli = [sys.executable, "-m", "otel_spawn._cli", "flush", "--app", settings.app, "--background"]
    subprocess.Popen(
        [*cli, "--max-seconds", seconds],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
