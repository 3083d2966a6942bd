"""The SQLite files of the state directory (local sink, spool, lifecycle store): opened one way."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from otel_spawn._state import ensure_home


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open `path` (created 0600 in a 0700 directory) in WAL mode, with `schema` applied.

    WAL with synchronous=OFF: a committed transaction is in the OS page cache, so it survives the
    process being killed (SIGKILL, os._exit); only an OS crash or power loss could lose the last ones,
    and an fsync per step would cost more than the step itself.
    """
    ensure_home(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, timeout=10.0, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, across processes."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
