"""The spool's journal: step records written at once, folded into SQLite once, even across a crash."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import stat
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from otel_spawn import _journal
from otel_spawn._posthog import encode_json
from otel_spawn._spool import SPOOL_DB, SqliteSpool
from otel_spawn._translate import EventContext, SpanRecord, encode_record, translate_record

CTX = EventContext(distinct_id="d-1", prefix="funnel_", static={"app": "spawn", "$ip": None})


def record(n: int, **attributes: Any) -> SpanRecord:
    """The record of a completed step span of one funnel (span id n)."""
    attrs = {
        "otel_spawn.kind": "step",
        "otel_spawn.step": f"step_{n}",
        "otel_spawn.funnel.name": "spawn",
        "otel_spawn.funnel.start_ns": 1_795_000_000_000_000_000,
        **attributes,
    }
    start = 1_795_000_000_000_000_000 + n * 1_000_000
    return {
        "t": 0xABC,
        "s": n,
        "n": f"step_{n}",
        "b": start,
        "e": start + 500_000,
        "a": attrs,
        "x": None,
        "d": None,
    }


def journals(home: Path) -> list[Path]:
    return sorted(home.glob(f"*{_journal.PREFIX}*"))


def stored(home: Path) -> int:
    """Events in the SQLite spool, read with plain sqlite3 (without folding anything)."""
    with contextlib.closing(sqlite3.connect(home / SPOOL_DB)) as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def names(spool: SqliteSpool) -> list[str]:
    """Every event the spool hands out (SQLite first, then straight from the journal), acknowledged."""
    out = []
    while batch := spool.take(100):
        out += [json.loads(e.body)["event"] for e in batch]
        spool.ack(batch)
    return out


def crash(spool: SqliteSpool) -> None:
    """What SIGKILL leaves: the journal file and its lock released, nothing folded or removed."""
    journal = spool._journal
    assert journal is not None
    assert journal.fd is not None
    os.close(journal.fd)
    journal.fd = None
    spool._journal = None  # the dead process writes nothing more


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "state"


pytestmark = pytest.mark.skipif(not _journal.AVAILABLE, reason="the journal needs flock (POSIX)")


def test_records_are_journaled_at_once_and_folded_by_the_sender(home: Path) -> None:
    """put_records writes the journal (0600), not SQLite; ingest translates it into the spool once."""
    spool = SqliteSpool(home)
    spool.put_records([record(1), record(2)], CTX)
    (journal,) = journals(home)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    fd = os.open(journal, os.O_RDONLY)
    entries, end = _journal.new_frames(fd, 0)
    os.close(fd)
    assert len(entries) == 3  # the header and two records
    assert end == journal.stat().st_size
    assert stored(home) == 0
    spool.ingest()
    spool.ingest()  # nothing new: nothing stored twice
    assert names(spool) == ["funnel_step_1", "funnel_step_2"]
    spool.close()
    assert journals(home) == []  # folded and removed at close


def test_a_crashed_process_journal_is_folded_by_the_next_once(home: Path) -> None:
    """After a crash the next spool folds only what was not folded yet: nothing lost, nothing twice."""
    first = SqliteSpool(home)
    first.put_records([record(1), record(2)], CTX)
    first.ingest()
    first.ack(first.take(10))  # delivered and deleted: folding them again would send them twice
    first.put_records([record(3)], CTX)
    crash(first)
    second = SqliteSpool(home)
    assert names(second) == ["funnel_step_3"]
    assert journals(home) == []
    second.close()
    first.close()


def test_a_live_process_journal_is_left_to_its_owner(home: Path) -> None:
    """Another process's journal is folded only by that process while it lives (it holds the lock)."""
    owner = SqliteSpool(home)
    owner.put_records([record(1)], CTX)
    other = SqliteSpool(home)
    assert other.depth() == 0
    owner.close()
    assert names(other) == ["funnel_step_1"]
    other.close()


def test_the_journal_rotates_without_losing_a_record(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once folded past ROTATE_BYTES the file is replaced by a new one; every record arrives once."""
    monkeypatch.setattr(_journal, "ROTATE_BYTES", 1)
    spool = SqliteSpool(home)
    seen: set[str] = set()
    for n in range(5):
        spool.put_records([record(n)], CTX)
        seen.update(p.name for p in journals(home))
        spool.ingest()
        assert journals(home) == []  # folded and rotated away
    assert len(seen) == 5
    assert names(spool) == [f"funnel_step_{n}" for n in range(5)]
    spool.close()


def test_an_unreadable_entry_is_skipped_with_a_warning(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged entry costs that record only; the entries after it are folded."""
    spool = SqliteSpool(home)
    spool.put_records([record(1)], CTX)
    assert spool._journal is not None
    assert spool._journal.fd is not None
    os.write(spool._journal.fd, struct.pack("<I", 3) + b"\xff\xfe\xfd")
    spool.put_records([record(2)], CTX)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        spool.ingest()
    assert names(spool) == ["funnel_step_1", "funnel_step_2"]
    assert "unreadable journal record" in caplog.text
    spool.close()


def test_a_journal_that_cannot_be_written_falls_back_to_sqlite(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing journal write costs a warning: the events go to SQLite directly from then on, what
    the journal already held is still folded, and a partial write is cut off (nothing twice)."""
    spool = SqliteSpool(home)
    spool.put_records([record(1)], CTX)
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        return real_write(fd, data[:10])  # a short write, as on a full disk

    monkeypatch.setattr(os, "write", disk_full)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        spool.put_records([record(2)], CTX)
        spool.put_records([record(3)], CTX)
    monkeypatch.undo()
    assert caplog.text.count("cannot write the spool journal") == 1
    assert stored(home) == 2  # 2 and 3, straight into SQLite
    assert sorted(names(spool)) == ["funnel_step_1", "funnel_step_2", "funnel_step_3"]
    assert "unreadable" not in caplog.text  # the cut-off line was removed, not skipped
    spool.close()
    assert journals(home) == []


def test_a_fold_that_fails_half_way_never_stores_a_line_twice(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks commit one by one; after a failure the next fold starts after the last committed one."""
    monkeypatch.setattr(_journal, "READ_CHUNK", 600)  # a few records per chunk
    spool = SqliteSpool(home)
    spool.put_records([record(n) for n in range(12)], CTX)
    real_insert = SqliteSpool._insert
    calls = []

    def fail_second(self: SqliteSpool, db: sqlite3.Connection, events: Any) -> None:
        calls.append(len(events))
        if len(calls) == 2:
            raise sqlite3.OperationalError("database is locked")
        real_insert(self, db, events)

    monkeypatch.setattr(SqliteSpool, "_insert", fail_second)
    spool.ingest()
    first = spool.take(100)
    spool.ack(first)  # delivered: folding these lines again would send them twice
    spool.ingest()
    rest = spool.take(100)
    assert len(calls) > 2
    assert sorted(e.uuid for e in first + rest) == sorted({e.uuid for e in first + rest})
    assert len(first) + len(rest) == 12
    spool.close()


def test_an_unreadable_orphan_is_set_aside_and_the_others_still_folded(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead process's journal of another shape (another version, a damaged file) never raises into
    the host and never blocks the journals after it: it is renamed aside, once."""
    for n, damage in enumerate([b"", _journal.frame({"t": 1, "a": []}), b""]):
        dead = SqliteSpool(home)
        dead.put_records([record(n)], CTX)
        if damage:
            assert dead._journal is not None
            assert dead._journal.fd is not None
            os.write(dead._journal.fd, damage)
        crash(dead)
    bad_header = home / f"{_journal.PREFIX}foreign-1{_journal.SUFFIX}"
    bad_header.write_bytes(_journal.frame({"not": "a header"}) + _journal.frame({"t": 1}))
    spool = SqliteSpool(home)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        assert sorted(names(spool)) == ["funnel_step_0", "funnel_step_1", "funnel_step_2"]
    assert journals(home) == [home / f"{bad_header.name}.unreadable"]
    assert "set aside unreadable journal" in caplog.text
    spool.close()


def test_a_young_temporary_is_left_alone_an_old_one_removed(home: Path) -> None:
    """A hidden temporary may be a journal another process is creating: only stale ones are removed."""
    spool = SqliteSpool(home)
    young = home / f".{_journal.PREFIX}other-1{_journal.SUFFIX}"
    old = home / f".{_journal.PREFIX}other-2{_journal.SUFFIX}"
    for path in (young, old):
        path.write_bytes(_journal.frame({}))
    stale = os.stat(old).st_mtime - 2 * _journal.TEMPORARY_GRACE_SECONDS
    os.utime(old, (stale, stale))
    spool.ingest()
    assert journals(home) == [young]
    spool.close()


def test_a_child_forked_while_the_spool_was_busy_does_not_hang(home: Path) -> None:
    """Fork while another thread holds the spool's lock: the child has a lock (and sender) of its own."""
    from otel_spawn._delivery import Sender
    from otel_spawn._posthog import PostHogClient

    spool = SqliteSpool(home)
    sender = Sender(outbox=spool, client=PostHogClient(host="http://127.0.0.1:9", api_key="phc_x"))
    with spool._lock:
        pid = os.fork()
        if pid == 0:  # the child: no pytest machinery from here on
            code = 1
            try:
                spool.put_records([record(1)], CTX)
                spool.close()
                code = 0 if sender._thread is None and stored(home) == 1 else 2
            finally:
                os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid, "the child hung"
    assert os.waitstatus_to_exitcode(done[1]) == 0
    spool.close()


def test_configure_leaves_a_dead_run_journal_to_the_sender(home: Path) -> None:
    """configure() only notes that something is pending; folding is the sender's work, off the host."""
    dead = SqliteSpool(home)
    dead.put_records([record(1)], CTX)
    crash(dead)
    spool = SqliteSpool(home)
    assert spool.pending()
    assert len(journals(home)) == 1  # pending() folded nothing
    spool.close()


def test_a_forked_child_writes_a_journal_of_its_own(home: Path) -> None:
    """After fork the child's records go to its own file, so the parent never folds them twice."""
    spool = SqliteSpool(home)
    spool.put_records([record(1)], CTX)
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        try:
            spool.put_records([record(2)], CTX)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(journals(home)) == 2
    spool.close()  # folds its own and, the child being gone, the child's
    again = SqliteSpool(home)
    assert sorted(names(again)) == ["funnel_step_1", "funnel_step_2"]
    again.close()
    assert journals(home) == []


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"otel_spawn.context.agent": "claude", "otel_spawn.property.size": ["cx22", "cx32"]},
        {"otel_spawn.context.app": "overrides the static property"},
        {"otel_spawn.kind": "funnel", "otel_spawn.funnel.outcome": "failed"},
    ],
)
def test_encode_record_is_the_json_of_translate_record(attributes: dict[str, Any]) -> None:
    """The fast encoding (static properties encoded once) is byte for byte the plain encoding."""
    for ctx in (CTX, EventContext(distinct_id="d-2", static={})):
        events = translate_record(record(7, **attributes), ctx)
        assert events
        assert [(e.uuid, e.body) for e in encode_record(record(7, **attributes), ctx)] == [
            (event["uuid"], encode_json(event)) for event in events
        ]


def test_entries_are_read_whole_across_chunk_boundaries(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries split by a chunk boundary, an entry bigger than a chunk, and a cut-off last entry."""
    monkeypatch.setattr(_journal, "READ_CHUNK", 64)
    path = home / "j"
    home.mkdir(parents=True)
    entries = [{"n": n, "pad": "x" * (10 if n % 3 else 200)} for n in range(10)]
    path.write_bytes(b"".join(_journal.frame(e) for e in entries) + _journal.frame({"cut": 1})[:-2])
    fd = os.open(path, os.O_RDONLY)
    seen: list[Any] = []
    offset = 0
    while True:
        frames, offset = _journal.new_frames(fd, offset)
        if not frames:
            break
        seen.extend(_journal.decode(f) for f in frames)
    os.close(fd)
    assert seen == entries
    assert offset == path.stat().st_size - len(_journal.frame({"cut": 1})) + 2


def test_a_healthy_endpoint_gets_events_straight_from_the_journal(home: Path) -> None:
    """With nothing older in SQLite, a batch is read from the journal; acknowledged, it never touches
    SQLite, and a later crash does not make anyone send it again."""
    spool = SqliteSpool(home)
    spool.put_records([record(1), record(2)], CTX)
    batch = spool.take(100)
    assert [json.loads(e.body)["event"] for e in batch] == ["funnel_step_1", "funnel_step_2"]
    assert stored(home) == 0
    spool.ack(batch)
    assert spool.status().sent == 2
    spool.put_records([record(3)], CTX)
    crash(spool)
    later = SqliteSpool(home)
    assert names(later) == ["funnel_step_3"]
    later.close()
    spool.close()


def test_a_journal_batch_not_acknowledged_is_stored_and_sent_once(home: Path) -> None:
    """Released (a retry), or overtaken by a fold while in flight: the batch goes into SQLite, claimed
    while in flight, and is handed out again only after a release; nothing is stored twice."""
    spool = SqliteSpool(home)
    spool.put_records([record(1), record(2)], CTX)
    first = spool.take(100)
    spool.release(first)  # e.g. HTTP 503
    assert stored(home) == 2
    again = spool.take(100)
    assert [e.uuid for e in again] == [e.uuid for e in first]
    spool.ack(again)
    spool.put_records([record(3)], CTX)
    in_flight = spool.take(100)
    spool.ingest()  # e.g. exit while the request is out: stored, still claimed by this process
    other = SqliteSpool(home)
    assert other.take(100) == []
    spool.ack(in_flight)
    assert stored(home) == 0
    assert spool.status().sent == 3
    other.close()
    spool.close()


def test_the_host_folds_when_the_sender_falls_far_behind(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the spool's cap of unsent journal the host's thread folds it itself: the journal stays
    bounded even if the sender never runs."""
    spool = SqliteSpool(home, max_bytes=2000)
    for n in range(40):
        spool.put_records([record(n)], CTX)
        journal = spool._journal
        assert journal is not None
        assert journal.size - journal.offset <= 2000 + len(_journal.frame(record(n)))
    assert stored(home) > 0  # folded (the oldest then evicted to the 2,000-byte cap, and counted)
    assert spool.status().evicted + len(names(spool)) == 40
    spool.close()
