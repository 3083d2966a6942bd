"""Lifecycle of what a CLI creates (the demo: VMs): created, connected, deleted.

A small SQLite store in the state directory remembers each resource (kind, id, attributes, when it
was created, how often it was connected). Connecting and deleting emit `<kind>_connected` and
`<kind>_deleted` product events. The store never raises into the host: a missing record emits
nothing, and a malformed stored count reads as 0.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otel_spawn import _sqlite
from otel_spawn._guard import guarded, warn_once

RESOURCES_DB = "resources.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at REAL NOT NULL,
    connect_count,
    last_connected_at REAL,
    PRIMARY KEY (kind, id)
);
"""


def _count(value: object) -> int:
    """A stored connect count; anything malformed reads as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _date(now: float) -> str:
    return datetime.fromtimestamp(now, tz=timezone.utc).date().isoformat()


class ResourceStore:
    """The resources a CLI created, in `<state dir>/resources.sqlite3` (0600), safe across processes."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / RESOURCES_DB

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer at a time across processes: increments are atomic."""
        with closing(_sqlite.connect(self.path, _SCHEMA)) as db, _sqlite.transaction(db):
            yield db

    def created(
        self, kind: str, resource_id: str, attributes: Mapping[str, Any], now: float | None = None
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, 0, NULL)",
                (
                    kind,
                    resource_id,
                    json.dumps(dict(attributes), default=str),
                    time.time() if now is None else now,
                ),
            )

    def connected(self, kind: str, resource_id: str, now: float | None = None) -> dict[str, Any] | None:
        """Count one more connection; the event properties, or None if the resource is unknown."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "SELECT attributes, connect_count FROM resources WHERE kind = ? AND id = ?",
                (kind, resource_id),
            ).fetchone()
            if row is None:
                return None
            count = _count(row[1]) + 1
            db.execute(
                "UPDATE resources SET connect_count = ?, last_connected_at = ? WHERE kind = ? AND id = ?",
                (count, now, kind, resource_id),
            )
        return {f"{kind}_id": resource_id, **_attributes(row[0]), "connect_count": count, "date": _date(now)}

    def deleted(self, kind: str, resource_id: str, now: float | None = None) -> dict[str, Any] | None:
        """Forget the resource; the event properties, or None if it is unknown."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "SELECT attributes, created_at, connect_count FROM resources WHERE kind = ? AND id = ?",
                (kind, resource_id),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM resources WHERE kind = ? AND id = ?", (kind, resource_id))
        lifetime = max(0.0, round((now - float(row[1])) / 3600, 2))  # clocks can go backwards
        return {
            f"{kind}_id": resource_id,
            **_attributes(row[0]),
            "lifetime_hours": lifetime,
            "connect_count": _count(row[2]),
            "date": _date(now),
        }

    def list(self, kind: str) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, attributes, created_at, connect_count, last_connected_at FROM resources "
                "WHERE kind = ? ORDER BY created_at",
                (kind,),
            ).fetchall()
        return [
            {
                "id": rid,
                **_attributes(attrs),
                "created_at": created,
                "connect_count": _count(count),
                "last_connected_at": last,
            }
            for rid, attrs, created, count, last in rows
        ]


def _attributes(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _update(action: str, kind: str, resource_id: str, attributes: dict[str, Any]) -> None:
    """Apply `action` to the store of the configured app and send its event; disk trouble is one warning."""
    from otel_spawn._funnel import track
    from otel_spawn._setup import active

    telemetry = active()
    if telemetry is None or not telemetry.enabled:
        return
    store = ResourceStore(telemetry.settings.home)
    try:
        if action == "created":
            store.created(kind, resource_id, attributes)
            return
        props = (
            store.connected(kind, resource_id) if action == "connected" else store.deleted(kind, resource_id)
        )
    except (OSError, sqlite3.Error) as exc:
        warn_once("state", "otel-spawn: state directory %s unusable (%s)", store.home, exc)
        return
    if props is not None:
        track(f"{kind}_{action}", **props)


@guarded("resource_created", None)
def resource_created(kind: str, resource_id: str, **attributes: Any) -> None:
    """Remember a resource the CLI created (e.g. `resource_created("spawn", vm.id, agent=..., cloud=...)`)."""
    _update("created", kind, resource_id, attributes)


@guarded("resource_connected", None)
def resource_connected(kind: str, resource_id: str) -> None:
    """Count a connection and send `<kind>_connected`; nothing for an unknown resource."""
    _update("connected", kind, resource_id, {})


@guarded("resource_deleted", None)
def resource_deleted(kind: str, resource_id: str) -> None:
    """Forget a resource and send `<kind>_deleted` with its lifetime; nothing for an unknown resource."""
    _update("deleted", kind, resource_id, {})
