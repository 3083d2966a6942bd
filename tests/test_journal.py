"""The spool's journal: step records written at once, folded into SQLite once, even across a crash."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
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
    return [json.loads(e.body)["event"] for e in spool.take(100)]


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
    assert journal.read_bytes().count(b"\n") == 3  # the header and two records
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


def test_an_unreadable_line_is_skipped_with_a_warning(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A torn line (a full disk cut a write short) costs that record only."""
    spool = SqliteSpool(home)
    spool.put_records([record(1)], CTX)
    assert spool._journal is not None
    assert spool._journal.fd is not None
    os.write(spool._journal.fd, b'{"t": 1, "s"\n')
    spool.put_records([record(2)], CTX)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        spool.ingest()
    assert names(spool) == ["funnel_step_1", "funnel_step_2"]
    assert "unreadable journal record" in caplog.text
    spool.close()


def test_a_journal_that_cannot_be_written_falls_back_to_sqlite(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing journal write costs a warning: the events go to SQLite directly from then on."""
    spool = SqliteSpool(home)

    def fail(self: _journal.Journal, data: bytes, header: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_journal.Journal, "append", fail)
    with caplog.at_level(logging.WARNING, logger="otel_spawn"):
        spool.put_records([record(1)], CTX)
        spool.put_records([record(2)], CTX)
    assert caplog.text.count("cannot write the spool journal") == 1
    assert stored(home) == 2
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
