"""The durable spool: product events kept from the moment their step completes until PostHog acks them.

When a step ends its scrubbed span record is appended to this process's journal (see _journal.py:
one copy into its memory map, survives SIGKILL). The sender thread translates the records into
events: while the endpoint keeps up it sends them straight from the journal and only moves the
journal's offset once PostHog acknowledged them; otherwise (a retry, exit, an outage once half the
cap waits) it folds them into SQLite, offset and events in one transaction. Where flock is missing
(Windows) or the journal cannot be written, events go straight into SQLite.

Several processes of one app share the spool. A sender *claims* a batch (a lease of LEASE_SECONDS)
so no two processes send the same events at once; it deletes only what PostHog acknowledged. A
process that dies mid-send leaves its claim to expire and the events are sent again, with the same
uuid and timestamp, which PostHog deduplicates. The file is 0600 in the 0700 state directory, and
what is in it was scrubbed before it was written.

Disk trouble never reaches the host: a corrupt file is moved aside and recreated; a read-only or
full disk turns the spool into an in-memory outbox for the rest of the process, with one warning.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from otel_spawn import _journal, _sqlite
from otel_spawn._config import DEFAULT_SPOOL_BYTES
from otel_spawn._delivery import MemoryOutbox
from otel_spawn._fork import reset_after_fork
from otel_spawn._guard import warn_once
from otel_spawn._posthog import Event, Outgoing
from otel_spawn._spool_journal import JournalFolding
from otel_spawn._translate import EventContext, SpanEntry, SpanRecord, translate_entries

SPOOL_DB = "spool.sqlite3"
LEASE_SECONDS = 30.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL
);
CREATE TABLE IF NOT EXISTS quarantine (uuid TEXT PRIMARY KEY, body TEXT NOT NULL, reason TEXT, at REAL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO counters VALUES ('sent', 0), ('evicted', 0), ('quarantined', 0);
"""
_INSERT = "INSERT OR IGNORE INTO events (uuid, body, size, created, claimed_by, claimed_until) VALUES "
_ROWS_PER_INSERT = 500  # 6 parameters a row: well under SQLite's 32,766
# Separators for rows packed into one text (group_concat): JSON text never holds raw control characters.
_SEP_FIELD, _SEP_ROW = "\x01", "\x02"


@dataclass(frozen=True)
class SpoolStatus:
    depth: int
    bytes: int
    oldest_age_seconds: float | None
    sent: int
    evicted: int
    quarantined: int
    last_error: str | None
    last_error_at: float | None


class SqliteSpool(JournalFolding):
    """A durable, multi-process `Outbox`; falls back to memory when the disk fails."""

    def __init__(
        self, home: Path, *, max_bytes: int = DEFAULT_SPOOL_BYTES, lease: float = LEASE_SECONDS
    ) -> None:
        self.path = home / SPOOL_DB
        self.max_bytes = max_bytes
        self.lease = lease
        self.owner = _new_owner()
        self._bytes_estimate = max_bytes  # so the first put measures what earlier runs left
        self._lock = threading.Lock()
        self._memory = MemoryOutbox()
        self._db: sqlite3.Connection | None = None
        self._journal = _journal.Journal(home, self.owner) if _journal.AVAILABLE else None
        self._header: tuple[EventContext, bytes] | None = None
        self._contexts: dict[str, EventContext] = {}  # journal name -> its header
        self._orphan_scan_due = 0.0  # monotonic time of the next look for dead processes' journals
        self._inherited_db: sqlite3.Connection | None = None  # a forked child's copy of the parent's
        self._direct: tuple[str, int, list[Outgoing]] | None = None  # (journal, end, events) in flight
        try:
            self._db = _open(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._degrade("open", exc)
        reset_after_fork(self)

    @property
    def degraded(self) -> bool:
        """True when events are kept in memory only (the disk failed)."""
        return self._db is None

    # --- the Outbox protocol -----------------------------------------------------------------

    def put_records(self, entries: Sequence[SpanEntry | SpanRecord], context: EventContext) -> None:
        """On the host's thread: journal the records (one append), or store their events directly."""
        journal = self._journal
        if journal is not None and journal.appending and self._db is not None:
            try:
                journal.append(list(map(_journal.encode, entries)), self._header_of(context))
                if journal.size - journal.offset > self.max_bytes:  # the sender cannot keep up: help
                    self.ingest(orphans=False)
                return
            except OSError as exc:  # what the journal holds is still folded; new records skip it
                warn_once(
                    "journal", "otel-spawn: cannot write the spool journal (%s); writing SQLite directly", exc
                )
                journal.appending = False
        self.put(translate_entries(entries, context))

    def put(self, events: Sequence[Event]) -> None:
        try:  # one commit per put; a re-exported event (same uuid) is stored once
            with self._transaction() as db:
                self._insert(db, [Outgoing.of(event) for event in events])
        except _Degraded:
            self._memory.put(events)
        except sqlite3.Error as exc:
            self._degrade("write", exc)
            self._memory.put(events)

    def pending(self) -> bool:
        """Cheap (for the host's thread): is anything spooled or journaled, by any process?"""
        if self._memory.depth() or _journal.pending(self.path.parent):
            return True
        try:
            with self._read() as db:
                return db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None
        except (_Degraded, sqlite3.Error):
            return False

    def take(self, limit: int) -> list[Outgoing]:
        """The oldest unsent events, claimed: from memory, then SQLite; when both are empty, straight
        from this process's journal (not stored in SQLite unless their delivery fails: ~12 us of
        SQLite work less per event while the endpoint keeps up)."""
        self.ingest(own=False)  # dead processes' journals, when due
        taken = self._memory.take(limit)
        if len(taken) >= limit:
            return taken
        now = time.time()
        try:
            with self._transaction() as db:
                db.execute(
                    "UPDATE events SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM events"
                    " WHERE claimed_until IS NULL OR claimed_until < ? ORDER BY id LIMIT ?)",
                    (self.owner, now + self.lease, now, limit - len(taken)),
                )
                (packed,) = db.execute(
                    "SELECT group_concat(uuid || ? || body, ?) FROM (SELECT uuid, body"
                    " FROM events WHERE claimed_by = ? AND claimed_until = ? ORDER BY id)",
                    (_SEP_FIELD, _SEP_ROW, self.owner, now + self.lease),
                ).fetchone()
        except (_Degraded, sqlite3.Error):
            return taken
        taken += [Outgoing(*row.split(_SEP_FIELD, 1)) for row in packed.split(_SEP_ROW)] if packed else []
        return taken or self._take_direct(limit)

    def ack(self, events: Sequence[Outgoing]) -> None:
        if not self._settle_direct(events):
            self._settle(events, "sent")

    def release(self, events: Sequence[Outgoing]) -> None:
        self._settle_direct(None)
        uuids = [e.uuid for e in events]
        with contextlib.suppress(_Degraded, sqlite3.Error), self._transaction() as db:
            db.execute(
                "UPDATE events SET claimed_by = NULL, claimed_until = NULL"
                f" WHERE claimed_by = ? AND uuid IN ({','.join('?' * len(uuids))})",
                [self.owner, *uuids],
            )
        spooled = self._uuids_in_db(events)
        self._memory.release([e for e in events if e.uuid not in spooled])

    def quarantine(self, events: Sequence[Outgoing], reason: str) -> None:
        self._settle_direct(None)
        with contextlib.suppress(_Degraded, sqlite3.Error), self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?)",
                [(e.uuid, e.body, reason, time.time()) for e in events],
            )
        self._settle(events, "quarantined")
        self.note_error(reason)

    def depth(self) -> int:
        self.ingest()
        try:
            with self._read() as db:
                return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0]) + self._memory.depth()
        except (_Degraded, sqlite3.Error):
            return self._memory.depth()

    # --- bookkeeping -----------------------------------------------------------------------------

    def destination(self) -> tuple[str, str] | None:
        """The PostHog host and project key the spooled events are for (so a flusher needs no config)."""
        try:
            with self._read() as db:
                meta = dict(
                    db.execute("SELECT key, value FROM meta WHERE key IN ('host', 'api_key')").fetchall()
                )
        except (_Degraded, sqlite3.Error):
            return None
        return (meta["host"], meta["api_key"]) if "host" in meta and "api_key" in meta else None

    def set_destination(self, host: str, api_key: str) -> None:
        if self.destination() == (host, api_key):
            return
        with contextlib.suppress(_Degraded, sqlite3.Error), self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [("host", host), ("api_key", api_key)]
            )

    def note_error(self, message: str) -> None:
        with contextlib.suppress(_Degraded, sqlite3.Error), self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("last_error", message), ("last_error_at", str(time.time()))],
            )

    def clear(self) -> int:
        """Delete every unsent event (opt-out); returns how many."""
        self.ingest()
        dropped = self._memory.depth()
        self._memory.take(dropped)
        try:
            with self._transaction() as db:
                dropped += db.execute("DELETE FROM events").rowcount
        except (_Degraded, sqlite3.Error):
            pass
        return dropped

    def status(self) -> SpoolStatus:
        self.ingest()
        with self._read() as db:
            depth, oldest, size = db.execute(
                "SELECT COUNT(*), MIN(created), COALESCE(SUM(size), 0) FROM events"
            ).fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return SpoolStatus(
            depth=int(depth) + self._memory.depth(),
            bytes=int(size),
            oldest_age_seconds=None if oldest is None else max(0.0, time.time() - float(oldest)),
            sent=int(counters.get("sent", 0)),
            evicted=int(counters.get("evicted", 0)) + self._memory.stats.evicted,
            quarantined=int(counters.get("quarantined", 0)),
            last_error=meta.get("last_error"),
            last_error_at=float(meta["last_error_at"]) if meta.get("last_error_at") else None,
        )

    def close(self) -> None:
        """Fold and remove this process's journal (if it cannot be, a later process folds it)."""
        self.ingest(orphans=False)  # others' are left to the sender or flusher of a later process
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._retire(self._db, self._journal.detach(force=True) if self._journal else None)
                self._db.close()
                self._db = None

    def _after_fork(self) -> None:
        """In a forked child: a lock and a connection of its own (the parent's lock may have been held
        at fork, and an SQLite connection must not be used across fork: it is kept, never touched)."""
        self._lock = threading.Lock()
        self._inherited_db = self._db
        self.owner = _new_owner()
        if self._db is not None:
            try:
                self._db = _open(self.path)
            except (sqlite3.Error, OSError) as exc:
                self._db = None
                self._degrade("open", exc)

    # --- internals -------------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, events: Sequence[Outgoing], claimed: bool = False) -> None:
        """Store events (inside a transaction), evicting the oldest when past the size cap; `claimed`:
        as a batch this process is sending."""
        now = time.time()
        owner, until = (self.owner, now + self.lease) if claimed else (None, None)
        # Many rows per statement: sqlite3 hands the GIL back at every step (each row of an
        # executemany), which, while the host's thread runs, costs both threads a switch per row.
        for start in range(0, len(events), _ROWS_PER_INSERT):
            chunk = events[start : start + _ROWS_PER_INSERT]
            params = [p for e in chunk for p in (e.uuid, e.body, len(e.body), now, owner, until)]
            db.execute(_INSERT + ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)), params)
        self._bytes_estimate += sum(len(e.body) for e in events)
        if self._bytes_estimate > self.max_bytes:
            self._evict(db)

    def _settle(self, events: Sequence[Outgoing], counter: str) -> None:
        """Delete delivered (or quarantined) events and count them."""
        try:
            with self._transaction() as db:
                uuids = [e.uuid for e in events]
                db.execute(f"DELETE FROM events WHERE uuid IN ({','.join('?' * len(uuids))})", uuids)
                db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (len(events), counter))
        except (_Degraded, sqlite3.Error):
            pass

    def _evict(self, db: sqlite3.Connection) -> None:
        """Oldest-first eviction to the size cap, counted. Run only when this process's running
        estimate passes the cap; the exact sum is taken then, and eviction leaves 10% of headroom
        so that the sum is not needed again at every put."""
        total = int(db.execute("SELECT COALESCE(SUM(size), 0) FROM events").fetchone()[0])
        target = self.max_bytes if total <= self.max_bytes else self.max_bytes * 9 // 10
        self._bytes_estimate = total
        if total <= target:
            return
        # The newest id to evict: the first whose running total (oldest first) frees enough. One
        # statement, one row: a row-by-row read would hand the GIL back and forth once per row.
        (cutoff, freed) = db.execute(
            "SELECT id, running FROM (SELECT id, SUM(size) OVER (ORDER BY id) AS running FROM events)"
            " WHERE running >= ? ORDER BY id LIMIT 1",
            (total - target,),
        ).fetchone()
        evicted = db.execute("DELETE FROM events WHERE id <= ?", (cutoff,)).rowcount
        db.execute("UPDATE counters SET value = value + ? WHERE name = 'evicted'", (evicted,))
        self._bytes_estimate = total - int(freed)

    def _uuids_in_db(self, events: Sequence[Outgoing]) -> set[str]:
        try:
            with self._read() as db:
                marks = ",".join("?" * len(events))
                (packed,) = db.execute(
                    f"SELECT group_concat(uuid, ?) FROM events WHERE uuid IN ({marks})",
                    [_SEP_ROW, *(e.uuid for e in events)],
                ).fetchone()
                return set(packed.split(_SEP_ROW)) if packed else set()
        except (_Degraded, sqlite3.Error):
            return set()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise _Degraded
            yield self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise _Degraded
            with _sqlite.transaction(self._db) as db:
                yield db

    def _degrade(self, what: str, exc: BaseException) -> None:
        warn_once(
            "spool-degraded",
            "otel-spawn: cannot %s the event spool %s (%s); keeping events in memory for this run",
            what,
            self.path,
            exc,
        )
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None


def _new_owner() -> str:
    """Who holds a claim: this process, and this spool of it."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


class _Degraded(Exception):
    """The spool is running from memory."""


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) the spool; a corrupt file is moved aside and recreated."""
    for attempt in range(2):
        try:
            return _sqlite.connect(path, _SCHEMA)
        except sqlite3.DatabaseError as exc:
            if attempt or ("not a database" not in str(exc) and "malformed" not in str(exc)):
                raise
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{path}{suffix}")
            warn_once("spool-corrupt", "otel-spawn: the event spool was corrupt; moved it to %s", aside)
    raise sqlite3.DatabaseError("unreachable")
