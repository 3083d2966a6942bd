"""The `local` sink: product events and spans in SQLite under the state directory. No server, no key."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from otel_spawn import _sqlite

if TYPE_CHECKING:  # a type only: the local sink does not load the PostHog client
    from otel_spawn._posthog import Event

LOCAL_DB = "local.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    uuid TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    properties TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (timestamp);
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    start_ns INTEGER,
    end_ns INTEGER,
    status TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
"""


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A JSON-ready summary of a finished span."""
    ctx = span.context
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else "",
        "span_id": f"{ctx.span_id:016x}" if ctx else "",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()},
        "events": [
            {"name": e.name, "timestamp": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    }


class LocalStore:
    """SQLite file (mode 0600) holding events and spans; safe across threads and processes."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCAL_DB
        self._lock = threading.Lock()
        self._db = _sqlite.connect(self.path, _SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _sqlite.transaction(self._db) as db:
            yield db

    def write(self, events: Sequence[Event], spans: Sequence[ReadableSpan] = ()) -> None:
        """Store events (a uuid is stored once) and spans, in one transaction."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)",
                [
                    (e["uuid"], e["event"], e["distinct_id"], e["timestamp"], json.dumps(e["properties"]))
                    for e in events
                ],
            )
            db.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r["trace_id"],
                        r["span_id"],
                        r["parent_id"],
                        r["name"],
                        r["start_ns"],
                        r["end_ns"],
                        r["status"],
                        json.dumps(r["attributes"], default=str),
                        json.dumps(r["events"], default=str),
                    )
                    for r in map(span_record, spans)
                ],
            )

    def events(self) -> list[Event]:
        """Every stored event, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uuid, event, distinct_id, timestamp, properties FROM events ORDER BY timestamp, rowid"
            ).fetchall()
        return [
            {"uuid": u, "event": e, "distinct_id": d, "timestamp": t, "properties": json.loads(p)}
            for u, e, d, t, p in rows
        ]

    def spans(self) -> list[dict[str, Any]]:
        """Every stored span, by start time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT trace_id, span_id, parent_id, name, start_ns, end_ns, status, attributes, events "
                "FROM spans ORDER BY start_ns"
            ).fetchall()
        keys = (
            "trace_id",
            "span_id",
            "parent_id",
            "name",
            "start_ns",
            "end_ns",
            "status",
            "attributes",
            "events",
        )
        out = [dict(zip(keys, row, strict=True)) for row in rows]
        for record in out:
            record["attributes"] = json.loads(record["attributes"])
            record["events"] = json.loads(record["events"])
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
