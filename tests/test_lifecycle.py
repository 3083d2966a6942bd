"""Lifecycle of created resources: atomic connect counts, lifetimes, and the events they send."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from helpers import posthog_env, run_cli
from servers import CaptureServer

import otel_spawn
from otel_spawn._lifecycle import RESOURCES_DB, ResourceStore

T0 = 1_790_000_000.0  # 2026-09-21


@pytest.fixture
def store(tmp_path: Path) -> ResourceStore:
    return ResourceStore(tmp_path / "state")


def test_connect_counts_and_reports(store: ResourceStore) -> None:
    """Each connect increments the count and returns the event properties."""
    store.created("spawn", "vm-1", {"agent": "claude", "cloud": "gcp"}, now=T0)
    first = store.connected("spawn", "vm-1", now=T0 + 60)
    second = store.connected("spawn", "vm-1", now=T0 + 120)
    assert first == {
        "spawn_id": "vm-1",
        "agent": "claude",
        "cloud": "gcp",
        "connect_count": 1,
        "date": "2026-09-21",
    }
    assert second is not None
    assert second["connect_count"] == 2
    [listed] = store.list("spawn")
    assert (listed["connect_count"], listed["last_connected_at"]) == (2, T0 + 120)


def test_delete_reports_lifetime_rounded_and_forgets(store: ResourceStore) -> None:
    """Deleting reports lifetime_hours to two decimals and the connect count, then the record is gone."""
    store.created("spawn", "vm-1", {"agent": "codex", "cloud": "aws"}, now=T0)
    store.connected("spawn", "vm-1", now=T0 + 10)
    props = store.deleted("spawn", "vm-1", now=T0 + 3 * 3600 + 37)
    assert props == {
        "spawn_id": "vm-1",
        "agent": "codex",
        "cloud": "aws",
        "lifetime_hours": 3.01,
        "connect_count": 1,
        "date": "2026-09-21",
    }
    assert store.list("spawn") == []
    assert store.deleted("spawn", "vm-1") is None


def test_clock_going_backwards_clamps_lifetime_at_zero(store: ResourceStore) -> None:
    """A deletion 'before' the creation reports lifetime 0, not a negative number."""
    store.created("spawn", "vm-1", {}, now=T0)
    props = store.deleted("spawn", "vm-1", now=T0 - 500)
    assert props is not None
    assert props["lifetime_hours"] == 0.0


def test_missing_record_gives_nothing(store: ResourceStore) -> None:
    """Connecting or deleting an unknown resource returns None and raises nothing."""
    assert store.connected("spawn", "nope") is None
    assert store.deleted("spawn", "nope") is None


@pytest.mark.parametrize("garbage", ["'many'", "-3", "2.5", "NULL"])
def test_malformed_count_reads_as_zero(store: ResourceStore, garbage: str) -> None:
    """A stored count that is not a non-negative integer reads as 0."""
    store.created("spawn", "vm-1", {}, now=T0)
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute(f"UPDATE resources SET connect_count = {garbage}")
    props = store.connected("spawn", "vm-1")
    assert props is not None
    assert props["connect_count"] == 1


def _connect_many(path: str, times: int) -> None:
    store = ResourceStore(Path(path))
    for _ in range(times):
        store.connected("spawn", "vm-1")


def test_concurrent_connects_are_atomic(store: ResourceStore) -> None:
    """Four processes connecting 25 times each leave a count of exactly 100."""
    store.created("spawn", "vm-1", {}, now=T0)
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_connect_many, args=(str(store.home), 25)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    [listed] = store.list("spawn")
    assert listed["connect_count"] == 100


def test_file_is_private(store: ResourceStore) -> None:
    """The store is 0600."""
    store.created("spawn", "vm-1", {})
    assert (store.home / RESOURCES_DB).stat().st_mode & 0o777 == 0o600


@pytest.fixture
def telemetry(capture_server: CaptureServer) -> Iterator[CaptureServer]:
    otel_spawn.configure(
        app="spawn",
        exporters="posthog",
        enabled=True,
        posthog_host=capture_server.url,
        posthog_api_key="phc_l",
    )
    yield capture_server
    otel_spawn.shutdown()


def test_public_api_sends_connected_and_deleted(telemetry: CaptureServer) -> None:
    """resource_connected/deleted send `spawn_connected`/`spawn_deleted`; unknown ids send nothing."""
    otel_spawn.resource_created("spawn", "vm-9", agent="claude", cloud="hetzner")
    otel_spawn.resource_connected("spawn", "vm-9")
    otel_spawn.resource_connected("spawn", "unknown")
    otel_spawn.resource_deleted("spawn", "vm-9")
    otel_spawn.resource_deleted("spawn", "vm-9")
    assert telemetry.wait_for_events(2, timeout=10)
    otel_spawn.shutdown()
    events = {e["event"]: e["properties"] for e in telemetry.events}
    assert sorted(events) == ["spawn_connected", "spawn_deleted"]
    assert events["spawn_connected"]["connect_count"] == 1
    assert events["spawn_connected"]["spawn_id"] == "vm-9"
    assert events["spawn_deleted"]["lifetime_hours"] == 0.0
    assert events["spawn_deleted"]["agent"] == "claude"
    assert "elapsed_ms" not in events["spawn_deleted"]  # outside a funnel


def test_demo_lifecycle_commands_send_events(tmp_path: Path, capture_server: CaptureServer) -> None:
    """demo connect/delete send spawn_connected/spawn_deleted; unknown ids and failed deletes send nothing."""
    env = posthog_env(
        capture_server.url, "phc_lc", SPAWN_DEMO_HOME=str(tmp_path / "cloud"), OTEL_SPAWN_FLUSHER_SECONDS="5"
    )
    assert run_cli("demo", "launch", "--agent", "codex", "--cloud", "aws", env=env).returncode == 0
    [vm_id] = [line.split()[0] for line in run_cli("demo", "list", env=env).stdout.splitlines()]
    assert run_cli("demo", "connect", vm_id, env=env).returncode == 0
    assert run_cli("demo", "connect", vm_id, env=env).returncode == 0
    assert run_cli("demo", "connect", "gcp-00000000", env=env).returncode == 1
    assert run_cli("demo", "delete", vm_id, "--fail", env=env).returncode == 1
    assert run_cli("demo", "delete", vm_id, env=env).returncode == 0
    assert run_cli("demo", "delete", vm_id, env=env).returncode == 1
    assert capture_server.wait_for_events(14 + 3, timeout=15)
    lifecycle = [
        e for e in capture_server.events if e["event"].startswith("spawn_") and "spawn_id" in e["properties"]
    ]
    assert [(e["event"], e["properties"]["connect_count"]) for e in lifecycle] == [
        ("spawn_connected", 1),
        ("spawn_connected", 2),
        ("spawn_deleted", 2),
    ]
    deleted = lifecycle[-1]["properties"]
    assert (deleted["spawn_id"], deleted["agent"], deleted["cloud"]) == (vm_id, "codex", "aws")
    assert 0 <= deleted["lifetime_hours"] < 1
    assert run_cli("demo", "list", env=env).stdout == ""
