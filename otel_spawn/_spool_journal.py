"""How the spool uses this process's journal, and the journals of processes that died (see _journal.py).

`SqliteSpool` mixes this in. Folding translates journal entries into events and stores them in
SQLite with the journal's offset in the same transaction, so no entry is stored twice, even by a
process that takes over the journal of one that died. While the endpoint keeps up, the sender takes
batches straight from the journal (`_take_direct`) and only moves the offset once PostHog
acknowledged them (`_settle_direct`); any other outcome stores the batch first (`_materialize`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from otel_spawn import _journal, _sqlite
from otel_spawn._guard import warn_once
from otel_spawn._journal import Journal
from otel_spawn._posthog import Outgoing
from otel_spawn._translate import EventContext, as_record, encode_record

JOURNAL_KEY = "journal:"  # meta key prefix: how many bytes of a journal file are folded in or sent
ORPHAN_SCAN_SECONDS = 30.0  # how often a running process looks for journals of processes that died
EXIT_FOLD_BYTES = 256 << 10  # folded at exit (~1,100 steps, ~15 ms); a longer backlog is handed over


class JournalFolding:
    """The journal side of `SqliteSpool` (whose attributes and `_insert` these methods use)."""

    path: Path
    owner: str
    lease: float
    max_bytes: int
    _lock: threading.Lock
    _db: sqlite3.Connection | None
    _journal: Journal | None
    _header: tuple[EventContext, bytes] | None
    _contexts: dict[str, EventContext]  # journal name -> its header
    _orphan_scan_due: float  # monotonic time of the next look for dead processes' journals
    _direct: tuple[str, int, list[Outgoing]] | None  # (journal, end, events) taken, not yet settled

    def _insert(self, db: sqlite3.Connection, events: Sequence[Outgoing], claimed: bool = False) -> None:
        raise NotImplementedError

    def ingest(self, orphans: bool = True, own: bool = True, lazy: bool = False) -> None:
        """Fold journals into SQLite: this process's new entries (unless `own` is False; if `lazy`,
        only once half the size cap waits in the journal), and (every ORPHAN_SCAN_SECONDS, unless
        `orphans` is False) those of processes that died or exited without folding (forked workers).

        `lazy` is for an outage: the journal is as durable as SQLite, and a fold running beside a busy
        host costs it through the GIL, so short outages never fold before exit (see `hand_over`)."""
        journal = self._journal if own else None
        if lazy and journal is not None and journal.size - journal.offset < self.max_bytes // 2:
            journal = None
        scan = orphans and time.monotonic() >= self._orphan_scan_due
        if (journal is None or journal.fd is None) and not scan:
            return
        with self._lock:
            db = self._db
            if db is None:
                return
            fd = journal.fd if journal is not None else None
            if journal is not None and fd is not None:
                try:
                    self._materialize(db)  # a batch read straight from the journal, before folding past it
                    full = journal.detach()  # new steps go to a new file while this one is folded
                    if full is None:
                        self._fold(db, journal.name, fd, journal)
                    self._retire(db, full)
                except Exception as exc:  # retried at the next round
                    self._cannot_fold(exc)
            if scan:
                self._orphan_scan_due = time.monotonic() + ORPHAN_SCAN_SECONDS
                self._fold_orphans(db)

    def hand_over(self, fold_limit: int = EXIT_FOLD_BYTES) -> None:
        """At exit: fold this process's journal if at most `fold_limit` bytes of it wait; else leave
        it, unlocked, to the exit-time flusher or the next run (the host does not wait for the fold)."""
        journal = self._journal
        if journal is None or journal.fd is None or journal.size - journal.offset <= fold_limit:
            self.ingest(orphans=False)
            return
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._materialize(self._db)  # the batch in flight keeps its claim
            left = journal.detach(force=True)
        if left is not None:
            os.close(left[0])  # drops the lock: from now on it is an orphan

    def _fold_orphans(self, db: sqlite3.Connection) -> None:
        home = self.path.parent
        try:
            for name, fd in _journal.orphans(home):
                try:
                    self._retire(db, (fd, name), close=False)
                except (sqlite3.Error, OSError) as exc:  # the disk or database: the next scan retries
                    self._cannot_fold(exc)
                except Exception as exc:  # its content: it would fail the same way every time
                    _journal.set_aside(home, name)
                    warn_once(
                        "journal-unreadable", "otel-spawn: set aside unreadable journal %s (%s)", name, exc
                    )
        except OSError as exc:
            self._cannot_fold(exc)

    def _cannot_fold(self, exc: Exception) -> None:
        warn_once("fold", "otel-spawn: cannot fold the spool journal into %s (%s)", self.path, exc)

    def _retire(self, db: sqlite3.Connection, journal: tuple[int, str] | None, close: bool = True) -> None:
        """Fold the rest of a journal nobody appends to any more, then remove it (file, then offset:
        no crash in between can fold an entry twice)."""
        if journal is None:
            return
        fd, name = journal
        try:
            self._fold(db, name, fd, None)
            os.unlink(self.path.parent / name)
            self._contexts.pop(name, None)
            db.execute("DELETE FROM meta WHERE key = ?", (JOURNAL_KEY + name,))
        finally:
            if close:
                os.close(fd)

    def _take_direct(self, limit: int) -> list[Outgoing]:
        """Up to `limit` records' events from this process's journal, without storing them: the
        batch in flight is remembered and settled by `ack` (the journal offset moves past it) or,
        on any other outcome, stored in SQLite first (`_materialize`)."""
        journal = self._journal
        if journal is None or journal.fd is None or self._direct is not None:
            return []
        with self._lock:
            db, fd = self._db, journal.fd
            if db is None or fd is None or self._direct is not None:
                return []
            frames, end = _journal.new_frames(fd, journal.offset, limit, journal.size)
            if not frames:
                return []
            events = self._events(journal.name, fd, frames, journal.offset)
            self._direct = (journal.name, end, events)
            return events

    def _settle_direct(self, events: Sequence[Outgoing] | None) -> bool:
        """`events` acknowledged: if they are the batch taken straight from the journal, move the
        journal's offset past it (True). Anything else first stores that batch in SQLite, claimed."""
        with self._lock:
            db, direct, journal = self._db, self._direct, self._journal
            if db is None or direct is None:
                return False
            if events is not direct[2] or journal is None or journal.name != direct[0]:
                with contextlib.suppress(Exception):
                    self._materialize(db)
                return False
            self._direct = None
            try:
                with _sqlite.transaction(db):
                    _record_offset(db, direct[0], direct[1])
                    db.execute("UPDATE counters SET value = value + ? WHERE name = 'sent'", (len(events),))
                journal.offset = direct[1]
                # Rotate once all of it is sent (what is left is folded into SQLite, ~12 us a record,
                # and then sent from there, slower than from the journal); past 8 MiB sent once at
                # most 1 MiB is left; past 64 MiB sent whatever is left (a backlog that never ends).
                left, rotate = journal.size - journal.offset, _journal.ROTATE_BYTES
                if journal.offset >= rotate and (
                    not left
                    or (journal.offset >= 8 * rotate and left <= rotate)
                    or journal.offset >= 64 * rotate
                ):
                    self._retire(db, journal.detach(force=True))
            except Exception as exc:  # not recorded as sent: folded (and sent again) later
                self._cannot_fold(exc)
            return True

    def _materialize(self, db: sqlite3.Connection) -> None:
        """Store the batch taken straight from the journal (claimed by this process, as if taken from
        SQLite) and move the journal's offset past it, in one transaction. The lock is held."""
        if self._direct is None:
            return
        name, end, events = self._direct
        self._direct = None
        with _sqlite.transaction(db):
            self._insert(db, events, claimed=True)
            _record_offset(db, name, end)
        if self._journal is not None and self._journal.name == name:
            self._journal.offset = end

    def _events(self, name: str, fd: int, frames: list[bytes], offset: int) -> list[Outgoing]:
        """The events of journal entries read at `offset` (at 0 the first entry is the header)."""
        context = self._context_of(name, fd)
        events: list[Outgoing] = []
        for payload in frames[1:] if offset == 0 else frames:
            try:
                events.extend(encode_record(as_record(_journal.decode(payload)), context))
            except Exception as exc:  # damaged, or of another shape (another version?): skip it
                warn_once("journal-line", "otel-spawn: skipped an unreadable journal record (%s)", exc)
        return events

    def _header_of(self, context: EventContext) -> bytes:
        if self._header is None or self._header[0] is not context:
            fields = {
                "distinct_id": context.distinct_id,
                "prefix": context.prefix,
                "static": dict(context.static),
            }
            self._header = (context, _journal.frame(_journal.encode(fields)))
        return self._header[1]

    def _context_of(self, name: str, fd: int) -> EventContext:
        context = self._contexts.get(name)
        if context is None:
            fields = _journal.decode(_journal.header(fd))
            context = EventContext(str(fields["distinct_id"]), str(fields["prefix"]), dict(fields["static"]))
            self._contexts[name] = context
        return context

    def _fold(self, db: sqlite3.Connection, name: str, fd: int, own: Journal | None = None) -> None:
        """Translate and store the entries of journal `name` not folded yet: after `own.offset`
        for this process's journal, else after the offset recorded in the spool. Each chunk commits
        with its offset, so no entry is stored twice, even by a process that takes over the journal."""
        if own is not None:
            offset = own.offset
        else:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (JOURNAL_KEY + name,)).fetchone()
            offset = int(row[0]) if row else 0
        # What is there now (entries appended meanwhile wait for next time); this process's own
        # journal is read up to the size its appends recorded (the file is allocated further).
        size = own.size if own is not None else os.fstat(fd).st_size
        while offset < size:
            frames, end = _journal.new_frames(fd, offset, size=size)
            if not frames:
                return
            events = self._events(name, fd, frames, offset)
            with _sqlite.transaction(db):
                self._insert(db, events)
                _record_offset(db, name, end)
            offset = end
            if own is not None:
                own.offset = end  # at once: a failure in the next chunk must not fold this one again


def _record_offset(db: sqlite3.Connection, name: str, offset: int) -> None:
    """How far journal `name` is folded or sent (inside the transaction that got it there)."""
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (JOURNAL_KEY + name, str(offset)))
