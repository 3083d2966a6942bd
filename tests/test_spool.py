"""The durable SQLite spool: claims across processes, bounds, quarantine and disk trouble."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from otel_spawn._posthog import Outgoing
from otel_spawn._spool import SPOOL_DB, SqliteSpool


def event(n: int, size: int = 0) -> dict[str, Any]:
    return {
        "event": "funnel_x",
        "distinct_id": "d",
        "uuid": f"uuid-{n}",
        "timestamp": "2026-11-22T00:00:00+00:00",
        "properties": {"pad": "x" * size},
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_put_take_ack_round_trip_and_private_file(home: Path) -> None:
    """Events come back oldest first, ack deletes them, and the file is 0600 in a 0700 directory."""
    spool = SqliteSpool(home)
    spool.put([event(1), event(2)])
    spool.put([event(3)])
    batch = spool.take(10)
    assert [e.uuid for e in batch] == ["uuid-1", "uuid-2", "uuid-3"]
    assert json.loads(batch[0].body) == event(1)
    spool.ack(batch[:2])
    assert spool.depth() == 1
    assert spool.status().sent == 2
    assert stat.S_IMODE(os.stat(home / SPOOL_DB).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    spool.close()


def test_same_uuid_is_stored_once(home: Path) -> None:
    """Exporting the same span twice spools its event once."""
    spool = SqliteSpool(home)
    spool.put([event(1)])
    spool.put([event(1)])
    assert spool.depth() == 1
    assert spool.status().bytes == len(json.dumps(event(1), separators=(",", ":")))


def test_a_claim_keeps_other_processes_away_until_released(home: Path) -> None:
    """Two senders never hold the same event; a release (or an expired lease) hands it on."""
    first, second = SqliteSpool(home), SqliteSpool(home)
    first.put([event(1), event(2)])
    assert len(first.take(10)) == 2
    assert second.take(10) == []
    first.release([Outgoing.of(event(1))])
    assert [e.uuid for e in second.take(10)] == ["uuid-1"]
    first.release([Outgoing.of(event(2))])
    assert [e.uuid for e in second.take(10)] == ["uuid-2"]


def test_expired_lease_is_taken_over(home: Path) -> None:
    """A sender that died mid-send loses its claim when the lease expires; the event is sent again."""
    dead = SqliteSpool(home, lease=-1.0)
    dead.put([event(1)])
    assert len(dead.take(10)) == 1
    survivor = SqliteSpool(home)
    assert [e.uuid for e in survivor.take(10)] == ["uuid-1"]


def test_size_cap_evicts_oldest_and_counts(home: Path) -> None:
    """Over the cap the oldest events go first (down to 90% of the cap), and the eviction is counted."""
    one = len(json.dumps(event(0, 100), separators=(",", ":")))
    spool = SqliteSpool(home, max_bytes=one * 3)
    spool.put([event(n, 100) for n in range(3)])
    assert spool.status().evicted == 0  # at the cap, not over it
    spool.put([event(n, 100) for n in range(3, 5)])
    assert [e.uuid for e in spool.take(10)] == ["uuid-3", "uuid-4"]
    status = spool.status()
    assert status.evicted == 3
    assert status.bytes <= one * 3 * 9 // 10


def test_quarantine_keeps_the_event_for_inspection(home: Path) -> None:
    """A refused event leaves the queue, is counted, and stays readable in the quarantine table."""
    spool = SqliteSpool(home)
    spool.put([event(1), event(2)])
    spool.quarantine([Outgoing.of(event(1))], "HTTP 400: bad")
    assert spool.depth() == 1
    status = spool.status()
    assert status.quarantined == 1
    assert status.last_error == "HTTP 400: bad"
    spool.close()
    import sqlite3

    with sqlite3.connect(home / SPOOL_DB) as db:
        assert db.execute("SELECT uuid, reason FROM quarantine").fetchall() == [("uuid-1", "HTTP 400: bad")]


def test_status_reports_depth_and_oldest_age(home: Path) -> None:
    """Status gives depth and the age of the oldest unsent event."""
    spool = SqliteSpool(home)
    assert spool.status().oldest_age_seconds is None
    spool.put([event(1)])
    status = spool.status()
    assert status.depth == 1
    assert status.oldest_age_seconds is not None
    assert 0 <= status.oldest_age_seconds < 60


def test_clear_deletes_unsent_events(home: Path) -> None:
    """Opting out deletes every unsent event."""
    spool = SqliteSpool(home)
    spool.put([event(n) for n in range(4)])
    assert spool.clear() == 4
    assert spool.depth() == 0
    assert spool.status().bytes == 0


def test_corrupt_file_is_moved_aside_and_recreated(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt spool is moved aside, a new one works, and one warning says where the old one went."""
    home.mkdir(parents=True)
    (home / SPOOL_DB).write_bytes(b"this is not a database" * 100)
    spool = SqliteSpool(home)
    spool.put([event(1)])
    assert spool.depth() == 1
    assert not spool.degraded
    aside = [p.name for p in home.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert "moved it to" in caplog.text


def test_unusable_directory_falls_back_to_memory(caplog: pytest.LogCaptureFixture) -> None:
    """A state directory that cannot be created: events are kept in memory, with one warning."""
    spool = SqliteSpool(Path("/proc/otel-spawn-cannot-exist/state"))
    assert spool.degraded
    spool.put([event(1), event(2)])
    assert spool.depth() == 2
    batch = spool.take(1)
    spool.release(batch)
    assert [e.uuid for e in spool.take(5)] == ["uuid-1", "uuid-2"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping events in memory" in warnings[0].getMessage()


def test_full_disk_falls_back_to_memory(home: Path) -> None:
    """When the database cannot grow (disk full) new events go to memory; nothing raises."""
    spool = SqliteSpool(home)
    spool.put([event(1)])
    assert spool._db is not None
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")
    spool.put([event(2, 50_000)])
    assert spool.degraded
    assert [e.uuid for e in spool.take(5)] == ["uuid-2"]
