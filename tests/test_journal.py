"""The spool's journal: step records written at once, folded into SQLite once, even across a crash."""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import os
import random
import signal
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, cast

import pytest
from servers import unused_port

from otel_spawn import _journal, _translate
from otel_spawn._delivery import Sender
from otel_spawn._posthog import Outgoing, PostHogClient, encode_json
from otel_spawn._spool import SPOOL_DB, SqliteSpool
from otel_spawn._translate import RECORD_FIELDS, EventContext, SpanRecord, encode_record, translate_record

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
    journal._unmap()  # the map holds the file (and its lock) open too
    spool._journal = None  # the dead process writes nothing more


def framed(value: Any) -> bytes:
    """`value` as one journal entry."""
    return _journal.frame(_journal.encode(value))


def inject(spool: SqliteSpool, payload: bytes) -> None:
    """Append an entry of any payload to a spool's journal (damage, for the tests)."""
    journal = spool._journal
    assert journal is not None
    assert journal.fd is not None
    journal.append([payload], b"")


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
    assert spool._journal is not None
    assert end == spool._journal.size  # the file may be allocated further: zeros end the entries
    assert journal.stat().st_size == (_journal.MAP_FIRST if _journal.MAPPING else end)
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
    inject(spool, b"\xff\xfe\xfd")
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
    monkeypatch.setattr(_journal, "MAPPING", False)  # pwrite(2), as where the file cannot be mapped
    spool = SqliteSpool(home)
    spool.put_records([record(1)], CTX)
    real_pwrite = os.pwrite

    def disk_full(fd: int, data: bytes, offset: int) -> int:
        return real_pwrite(fd, data[:10], offset)  # a short write, as on a full disk

    monkeypatch.setattr(os, "pwrite", disk_full)
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


@pytest.mark.skipif(not _journal.MAPPING, reason="the journal is mapped only where posix_fallocate is")
@pytest.mark.parametrize("failure", ["allocation", "free space"])
def test_a_journal_that_cannot_be_mapped_further_goes_on_with_pwrite(
    home: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The map grows by allocating ahead; when allocation fails (a full disk) or free space runs low,
    the journal goes on with pwrite(2) after the last entry: every record is folded once."""
    spool = SqliteSpool(home)
    spool.put_records([record(0)], CTX)
    journal = spool._journal
    assert journal is not None
    assert journal._map is not None
    if failure == "allocation":

        def enospc(fd: int, offset: int, length: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", enospc)
    else:
        monkeypatch.setattr(_journal, "MAP_FREE_MARGIN", 1 << 62)
    n = 1
    while journal._map is not None:  # until the next allocation was needed
        spool.put_records([record(n)], CTX)
        n += 1
    spool.put_records([record(n)], CTX)
    assert journal.mapping is False
    assert names(spool) == [f"funnel_step_{i}" for i in range(n + 1)]
    spool.close()
    assert journals(home) == []


def test_an_entry_whose_length_was_not_written_ends_the_journal(home: Path) -> None:
    """Killed between an entry's bytes and its length (written last): the entry, and anything after,
    is not there; the entries before it are folded by the next process, once."""
    dead = SqliteSpool(home)
    dead.put_records([record(1), record(2)], CTX)
    journal = dead._journal
    assert journal is not None
    assert journal.fd is not None
    frame = framed(record(3))
    os.pwrite(journal.fd, b"\0" * 4 + frame[4:], journal.size)  # the bytes, not the length
    crash(dead)
    later = SqliteSpool(home)
    assert names(later) == ["funnel_step_1", "funnel_step_2"]
    later.close()
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
    for n, damage in enumerate([b"", _journal.encode({"t": 1, "a": []}), b""]):
        dead = SqliteSpool(home)
        dead.put_records([record(n)], CTX)
        if damage:
            inject(dead, damage)
        crash(dead)
    bad_header = home / f"{_journal.PREFIX}foreign-1{_journal.SUFFIX}"
    bad_header.write_bytes(framed({"not": "a header"}) + framed({"t": 1}))
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
        path.write_bytes(framed({}))
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


CONTEXTS = [  # static properties the records' keys may collide with, and a quote to escape
    CTX,
    EventContext(distinct_id="d-2", static={}),
    EventContext(distinct_id='d "3"', prefix="", static={"source": "cli", "step": "s", "is_ci": False}),
]


def journaled(r: SpanRecord) -> SpanRecord:
    """A fresh copy of `r`, as the journal hands records to `encode_record` (marshal)."""
    return cast(SpanRecord, _journal.decode(marshal.dumps(r)))


def assert_encodes_as_translated(r: SpanRecord, ctx: EventContext) -> list[tuple[str, str]]:
    """`encode_record` gives the uuids and the JSON of `translate_record`'s events, key order too."""
    expected = [(event["uuid"], encode_json(event)) for event in translate_record(r, ctx)]
    assert [(e.uuid, e.body) for e in encode_record(journaled(r), ctx)] == expected
    return expected


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"otel_spawn.context.agent": "claude", "otel_spawn.property.size": ["cx22", "cx32"]},
        {"otel_spawn.context.app": "overrides the static property"},
        {"otel_spawn.kind": "funnel", "otel_spawn.funnel.outcome": "failed"},
        {"otel_spawn.kind": "funnel", "otel_spawn.funnel.outcome": "abandoned"},
        {"otel_spawn.kind": "event"},
        {"otel_spawn.context.agent": "claude", "otel_spawn.context.n": 2, "otel_spawn.property.ok": True},
        {"otel_spawn.property.app": "a property over a static one"},
        {"otel_spawn.property.source": "over a static one in one context, not in the others"},
        {"otel_spawn.context.k": 1, "otel_spawn.property.k": 2},
        {
            "otel_spawn.context.funnel": "x",
            "otel_spawn.context.elapsed_ms": "x",
            "otel_spawn.context.step": "x",
        },
        {"otel_spawn.property.step": "x", "otel_spawn.property.step_duration_ms": 0},
        {"otel_spawn.property.trace_id": "x", "otel_spawn.property.elapsed_ms": -1},
        {"otel_spawn.source": "ci"},
        {"otel_spawn.funnel.outcome": "completed"},
        {"otel_spawn.step": None},
        {"otel_spawn.funnel.start_ns": 1_795_000_000_900_000_000},  # after the step: elapsed_ms 0
        {"otel_spawn.property.f": 1.5, "otel_spawn.property.z": -0.0, "otel_spawn.property.none": None},
        {"otel_spawn.property.big": 2**70, "otel_spawn.property.t": (1, True, 1.0), "vm.ip": "203.0.113.9"},
        {"otel_spawn.property.nan": float("nan"), "otel_spawn.property.inf": float("-inf")},
        {"otel_spawn.property.q": 'a "quote", a \\ and\na line', 'otel_spawn.property."elapsed_ms":0': "é ☃"},
    ],
)
def test_encode_record_is_the_json_of_translate_record(attributes: dict[str, Any]) -> None:
    """The fast encoding is byte for byte the plain encoding: for a record seen the first time, the
    second (its step prepared), the third (served from the cache) and one of other s, b and e."""
    for ctx in CONTEXTS:
        assert assert_encodes_as_translated(record(7, **attributes), ctx)
        assert_encodes_as_translated(record(7, **attributes), ctx)
        assert_encodes_as_translated(record(7, **attributes), ctx)
        other = {**record(7, **attributes), "s": 2**64 - 1, "b": None, "e": 1_796_000_000_000_000_001}
        assert_encodes_as_translated(other, ctx)


def counting_preparations(monkeypatch: pytest.MonkeyPatch) -> list[_translate._StepJson | None]:
    """What `encode_record` prepares for the steps it caches, from now on."""
    prepared: list[_translate._StepJson | None] = []
    prepare = _translate._step_json

    def counted(r: SpanRecord, ctx: EventContext) -> _translate._StepJson | None:
        prepared.append(prepare(r, ctx))
        return prepared[-1]

    monkeypatch.setattr(_translate, "_step_json", counted)
    return prepared


def test_encode_record_prepares_a_step_once_and_never_serves_it_for_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records that differ only in s, b and e share one prepared step. Any other difference makes
    another, down to values that compare equal but encode differently (1, True, 1.0; 0.0, -0.0)."""
    prepared = counting_preparations(monkeypatch)
    ctx = EventContext(distinct_id="d-1", static={"app": "spawn"})
    base = record(
        1, **{"otel_spawn.context.agent": "claude", "otel_spawn.property.n": 1, "otel_spawn.property.z": 0.0}
    )
    for n in range(5):
        assert_encodes_as_translated({**base, "s": n, "b": base["b"] + n, "e": base["e"] + 7 * n}, ctx)
    assert len(prepared) == 1  # at the second record; the next three were served from the cache
    expected = assert_encodes_as_translated(base, ctx)
    changes: list[dict[str, Any]] = [
        *({"otel_spawn.property.n": value} for value in (True, 1.0, 2, "1", [1], (1,), None)),
        {"otel_spawn.property.z": -0.0},
        {"otel_spawn.context.agent": "codex"},
        {"otel_spawn.context.cloud": "hetzner"},
        {"otel_spawn.step": "step_2"},
        {"otel_spawn.funnel.start_ns": base["a"]["otel_spawn.funnel.start_ns"] - 10_000_000},
        {"otel_spawn.funnel.outcome": "Interrupted"},
    ]
    others = [{**base, "t": 0xDEF}, *({**base, "a": {**base["a"], **change}} for change in changes)]
    for other in others:
        for _ in range(3):  # the general path, then prepared, then from the cache
            assert assert_encodes_as_translated(other, ctx) != expected
    assert len(prepared) == 1 + len(others)
    renamed = assert_encodes_as_translated({**base, "n": "renamed"}, ctx)  # the step attribute names it
    assert renamed == expected
    assert len(prepared) == 1 + len(others)


def test_encode_record_of_a_value_marshal_cannot_write() -> None:
    """Never in a record read back from the journal; the general path encodes it."""

    class Text(str):
        pass

    r = record(1, **{"otel_spawn.property.text": Text("subclassed")})
    for _ in range(3):
        expected = [(event["uuid"], encode_json(event)) for event in translate_record(r, CTX)]
        assert [(e.uuid, e.body) for e in encode_record(r, CTX)] == expected


def test_encode_record_of_many_varied_records_in_any_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of a few traces, steps, contexts, properties, kinds and times, each again and again
    in random order, through a cache small enough to start afresh often: as translated, always."""
    monkeypatch.setattr(_translate, "_STEPS_CACHED", 8)
    general = 0  # records the general path encoded; the others were served from the cache
    encode_parts = _translate._encode_parts

    def counted(r: SpanRecord, ctx: EventContext) -> list[Outgoing]:
        nonlocal general
        general += 1
        return encode_parts(r, ctx)

    monkeypatch.setattr(_translate, "_encode_parts", counted)
    rng = random.Random(7)
    contexts: list[dict[str, Any]] = [
        {},
        {"otel_spawn.context.agent": "claude"},
        {"otel_spawn.context.agent": "codex", "otel_spawn.context.n": 2},
    ]
    properties: list[dict[str, Any]] = [
        {},
        {"otel_spawn.property.size": "cx22", "otel_spawn.property.retries": 2},
        *({"otel_spawn.property.v": value} for value in (True, 1, 1.0, 0.0, -0.0, ["a", 1], ("a", 1), None)),
        {"otel_spawn.property.app": "x"},
        {"otel_spawn.property.funnel": "x"},
        {"otel_spawn.context.step": "x"},
    ]
    kinds: list[dict[str, Any]] = [
        *[{}] * 12,
        {"otel_spawn.funnel.outcome": "completed"},
        {"otel_spawn.funnel.outcome": "RuntimeError"},
        {"otel_spawn.funnel.start_ns": None},
        {"otel_spawn.kind": "event"},
        {"otel_spawn.kind": "funnel", "otel_spawn.funnel.outcome": "failed"},
        {"otel_spawn.kind": "funnel", "otel_spawn.funnel.outcome": "abandoned"},
    ]
    exception = {"exception.type": "RuntimeError", "exception.message": "boom", "exception.stacktrace": ""}
    shapes = []
    for _ in range(60):
        shape = record(0, **rng.choice(contexts), **rng.choice(properties), **rng.choice(kinds))
        shape["t"], shape["n"] = rng.choice([0xABC, 0xDEF, 2**128 - 1]), rng.choice(["boot", "ssh"])
        shape["a"]["otel_spawn.step"] = shape["n"]
        if rng.random() < 0.1:
            del shape["a"]["otel_spawn.step"]  # the span's name names the step
        shape["x"] = exception if rng.random() < 0.5 else None
        shapes.append(shape)
    for i in range(600):  # mostly a few shapes at a time, as the records of a run come
        shape = shapes[(i // 20 + rng.randrange(3)) % 60] if rng.random() < 0.9 else rng.choice(shapes)
        start = 1_795_000_000_000_000_000 + rng.randrange(-(10**9), 10**10)
        r = {**shape, "s": rng.getrandbits(64), "b": start, "e": start + rng.randrange(10**10)}
        for ctx in CONTEXTS:
            assert_encodes_as_translated(r, ctx)
            assert len(ctx._step_cache) <= 8
    assert 3 * 600 - general > 3 * 600 / 4


def test_entries_are_read_whole_across_chunk_boundaries(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries split by a chunk boundary, an entry bigger than a chunk, and a cut-off last entry."""
    monkeypatch.setattr(_journal, "READ_CHUNK", 64)
    path = home / "j"
    home.mkdir(parents=True)
    entries = [{"n": n, "pad": "x" * (10 if n % 3 else 200)} for n in range(10)]
    path.write_bytes(b"".join(framed(e) for e in entries) + framed({"cut": 1})[:-2])
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
    assert offset == path.stat().st_size - len(framed({"cut": 1})) + 2


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
        assert journal.size - journal.offset <= 2000 + len(framed(record(n)))
    assert stored(home) > 0  # folded (the oldest then evicted to the 2,000-byte cap, and counted)
    assert spool.status().evicted + len(names(spool)) == 40
    spool.close()


def backlog(spool: SqliteSpool) -> int:
    journal = spool._journal
    assert journal is not None
    return journal.size - journal.offset


def test_during_an_outage_the_sender_folds_only_a_large_backlog(home: Path) -> None:
    """While PostHog cannot be reached the sender leaves the journal alone (it is as durable as SQLite,
    and a fold beside a busy host costs it) until half the size cap waits; then it folds all of it."""
    spool = SqliteSpool(home, max_bytes=20_000)
    client = PostHogClient(host=f"http://127.0.0.1:{unused_port()}", api_key="phc_x")
    sender = Sender(outbox=spool, client=client)
    spool.put_records([record(0)], CTX)
    assert not sender.drain(deadline=None)  # refused: nothing taken, nothing folded
    assert "Connection refused" in str(sender.stats.last_error)
    assert stored(home) == 0
    n = 1
    while backlog(spool) + len(framed(record(n))) < 10_000:
        spool.put_records([record(n)], CTX)
        n += 1
    assert not sender.drain(deadline=None)  # backing off: nothing sent, nothing folded
    assert stored(home) == 0
    spool.put_records([record(n)], CTX)  # now half the cap waits
    assert not sender.drain(deadline=None)
    assert (stored(home), backlog(spool)) == (n + 1, 0)
    spool.ingest(lazy=True)  # orphans are still folded when due, whatever the backlog
    spool.close()


def test_at_exit_a_long_backlog_is_handed_over_not_folded(home: Path) -> None:
    """hand_over folds a short backlog; a longer one is left unlocked for the flusher or the next run
    (the batch in flight is stored first, keeping its claim), and every event is delivered once."""
    short = SqliteSpool(home)
    short.put_records([record(1)], CTX)
    short.hand_over(fold_limit=10_000)
    assert stored(home) == 1
    short.ack(short.take(10))
    short.close()
    assert journals(home) == []

    spool = SqliteSpool(home)
    spool.put_records([record(n) for n in range(2, 5)], CTX)
    in_flight = spool.take(100)  # straight from the journal
    spool.put_records([record(n) for n in range(5, 40)], CTX)
    spool.hand_over(fold_limit=100)
    assert stored(home) == 3  # only the batch in flight, still claimed by this process
    (left,) = journals(home)
    spool.close()
    assert journals(home) == [left]  # close() leaves it too
    later = SqliteSpool(home)
    assert names(later) == [f"funnel_step_{n}" for n in range(5, 40)]
    assert journals(home) == []
    assert later.take(10) == []  # the batch in flight stays claimed by its sender until the lease ends
    assert [json.loads(e.body)["event"] for e in in_flight] == [f"funnel_step_{n}" for n in range(2, 5)]
    later.close()


@pytest.mark.parametrize("records", [300, 1000])
def test_a_journal_sent_straight_rotates_without_folding_a_long_backlog(
    home: Path, monkeypatch: pytest.MonkeyPatch, records: int
) -> None:
    """Sent straight from the journal, the file is rotated once fully sent, or past 8 x ROTATE_BYTES
    sent once at most ROTATE_BYTES is left (folded into SQLite), or past 64 x whatever is left; a
    long backlog is never folded before that (folding, then sending from SQLite, costs more)."""
    rotate = 2000
    monkeypatch.setattr(_journal, "ROTATE_BYTES", rotate)
    spool = SqliteSpool(home, max_bytes=1 << 30)
    spool.put_records([record(n) for n in range(records)], CTX)
    journal = spool._journal
    assert journal is not None
    first = journal.name
    uuids: list[str] = []
    folded_at: tuple[int, int] | None = None  # (bytes sent, bytes left) when the backlog was folded
    while batch := spool.take(10):
        direct = spool._direct is not None
        sent, left = journal.offset, journal.size - journal.offset
        spool.ack(batch)
        uuids += [e.uuid for e in batch]
        if direct and folded_at is None and stored(home):
            folded_at = (journal.offset if journal.name == first else sent, left)
    assert len(uuids) == len(set(uuids)) == records
    assert folded_at is not None
    sent, left = folded_at
    if records == 300:  # ~75 KB: the backlog shrinks under ROTATE_BYTES before 64 x
        assert sent >= 8 * rotate
        assert left <= rotate + 300
    else:  # ~250 KB: rotated at 64 x with a long backlog left
        assert 64 * rotate <= sent < 64 * rotate + 3000
        assert left > rotate
    assert first not in [p.name for p in journals(home)]
    spool.close()


def test_entries_as_tuples_and_records_as_dicts_fold_alike(home: Path) -> None:
    """The host journals a record as a tuple (`RECORD_FIELDS`); a journal from before holds dicts.
    Both fold into the same events; an entry of another shape costs only itself."""
    spool = SqliteSpool(home)
    one, two = record(1), record(2)
    spool.put_records([tuple(one[key] for key in RECORD_FIELDS), two], CTX)
    inject(spool, _journal.encode((1, 2, 3)))
    spool.put_records([tuple(record(3)[key] for key in RECORD_FIELDS)], CTX)
    spool.ingest()
    assert names(spool) == ["funnel_step_1", "funnel_step_2", "funnel_step_3"]
    spool.close()
