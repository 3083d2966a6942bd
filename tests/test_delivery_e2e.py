"""Fault injection against the capture endpoint on 127.0.0.1: nothing lost, nothing sent twice."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CLI, posthog_env
from servers import AcceptThenDrop, CaptureServer, Status, unused_port

import otel_spawn
from otel_spawn._config import resolve
from otel_spawn._flush import FLUSH_LOCK, flush
from otel_spawn._local import LocalStore
from otel_spawn._posthog import Outgoing, PostHogClient, Verdict
from otel_spawn._spool import SPOOL_DB, SqliteSpool

DEMO_EVENTS = 14  # funnel_started + 6 picker events + 7 steps


@pytest.fixture
def home() -> Path:
    return Path(os.environ["OTEL_SPAWN_HOME"])


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A listening socket that never accepts: connections hang (a black-holed endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def env_for(host: str, home: Path, **extra: str) -> dict[str, str]:
    settings = {"OTEL_SPAWN_HOME": str(home), "OTEL_TRACES_EXPORTER": "posthog,local"}
    return posthog_env(host, "phc_e2e", **{**settings, "OTEL_SPAWN_FLUSHER_SECONDS": "0", **extra})


def demo(*args: str) -> list[str]:
    return [*CLI, "demo", "launch", "--agent", "claude", "--cloud", "gcp", *args]


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=60, check=False)


def spooled(home: Path) -> list[dict[str, Any]]:
    """What the spool holds, read with plain sqlite3 (empty while it is still being created)."""
    with contextlib.closing(sqlite3.connect(home / SPOOL_DB)) as db:
        try:
            return [json.loads(body) for (body,) in db.execute("SELECT body FROM events ORDER BY id")]
        except sqlite3.OperationalError:
            return []


def generated(home: Path) -> list[str]:
    """Every event uuid the runs produced, from the local sink written beside the spool."""
    return [e["uuid"] for e in LocalStore(home).events()]


def events_generated(home: Path) -> list[str]:
    """Event names the run produced so far, in order, from the local sink (empty until it exists)."""
    try:
        return [e["event"] for e in LocalStore(home).events()]
    except sqlite3.Error:
        return []


def wait_until_no_flusher(home: Path) -> None:
    fd = os.open(home / FLUSH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while a detached flusher still runs
    finally:
        os.close(fd)


@pytest.mark.parametrize("endpoint", ["refused", "black_hole"])
def test_unreachable_endpoint_keeps_everything_spooled(
    endpoint: str, home: Path, black_hole: str, capture_server: CaptureServer
) -> None:
    """With the endpoint refusing or black-holed the run exits normally and every event stays spooled."""
    host = f"http://127.0.0.1:{unused_port()}" if endpoint == "refused" else black_hole
    result = run(demo(), env_for(host, home))
    assert result.returncode == 0, result.stderr
    assert sorted(e["uuid"] for e in spooled(home)) == sorted(generated(home))
    assert len(spooled(home)) == DEMO_EVENTS
    # A batch whose bytes were written to a server that never answered keeps its claim until the
    # lease expires (the server may have stored it); pretend that time has passed.
    with contextlib.closing(sqlite3.connect(home / SPOOL_DB)) as db, db:
        db.execute("UPDATE events SET claimed_until = 0 WHERE claimed_until IS NOT NULL")
    flushed = run(
        [*CLI, "flush"],
        env_for(capture_server.url, home, OTEL_SPAWN_APP="spawn"),
    )
    assert flushed.returncode == 0, flushed.stderr
    assert sorted(map(str, capture_server.uuids())) == sorted(generated(home))  # zero lost, zero duplicated
    assert spooled(home) == []


def test_sigkill_after_a_step_loses_nothing(home: Path, capture_server: CaptureServer) -> None:
    """SIGKILL the moment vm_ready completed: every event up to it is kept, and a later flush delivers
    each once (the killed run's journal is folded into the spool by the flush)."""
    dead = f"http://127.0.0.1:{unused_port()}"
    proc = subprocess.Popen(
        demo("--step-delay", "install_completed=30"),
        env=env_for(dead, home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    # The local sink is written on the host's thread after the PostHog exporter's journal append.
    while time.monotonic() < deadline and "funnel_vm_ready" not in events_generated(home):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    names = events_generated(home)
    assert names[-3:] == ["funnel_cloud_authed", "funnel_credentials_ready", "funnel_vm_ready"]
    assert len(names) == 10
    if (home / SPOOL_DB).exists():  # a batch the killed sender had claimed: pretend its lease expired
        with contextlib.closing(sqlite3.connect(home / SPOOL_DB)) as db, db:
            db.execute("UPDATE events SET claimed_until = 0 WHERE claimed_until IS NOT NULL")
    settings = resolve({"app": "spawn", "posthog_host": capture_server.url, "posthog_api_key": "phc_e2e"})
    result = flush(settings, max_seconds=10)
    assert (result.sent, result.remaining) == (10, 0)
    assert [e["event"] for e in capture_server.events] == names
    assert sorted(map(str, capture_server.uuids())) == sorted(generated(home))
    assert list(home.glob("*journal-*")) == []  # folded and removed


def test_four_concurrent_processes_zero_lost_zero_duplicated(
    home: Path, capture_server: CaptureServer
) -> None:
    """Four processes share one spool: every generated uuid arrives exactly once."""
    env = env_for(capture_server.url, home, OTEL_SPAWN_FLUSHER_SECONDS="10")
    procs = [
        subprocess.Popen(demo(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert capture_server.wait_for_events(4 * DEMO_EVENTS, timeout=20)
    wait_until_no_flusher(home)
    sent = generated(home)
    received = Counter(capture_server.uuids())
    assert len(sent) == 4 * DEMO_EVENTS
    assert set(received) == set(sent)  # zero lost
    assert [u for u, n in received.items() if n > 1] == []  # zero duplicated
    assert spooled(home) == []


def posthog(server: CaptureServer, **kwargs: Any) -> None:
    otel_spawn.configure(
        app="spawn",
        exporters="posthog",
        enabled=True,
        posthog_host=server.url,
        posthog_api_key="phc_x",
        **kwargs,
    )


def run_funnel(n_steps: int = 3) -> None:
    with otel_spawn.funnel("spawn", agent="claude"):
        for n in range(n_steps):
            with otel_spawn.step(f"s{n}"):
                pass


def settle(server: CaptureServer, count: int) -> None:
    telemetry = otel_spawn._setup.active()
    assert telemetry is not None
    assert telemetry.force_flush(10_000)
    otel_spawn.shutdown()
    assert server.wait_for_events(count, timeout=10)


def test_a_long_outage_backlog_is_handed_over_at_exit(home: Path, capture_server: CaptureServer) -> None:
    """Endpoint down and more journaled than EXIT_FOLD_BYTES: shutdown leaves the journal (it does not
    fold it on the host's way out); `flush` later folds it and delivers every event once."""
    otel_spawn.configure(
        app="spawn",
        exporters="posthog,local",
        enabled=True,
        posthog_host=f"http://127.0.0.1:{unused_port()}",
        posthog_api_key="phc_x",
    )
    run_funnel(4000)  # ~1 MB of step records: more than EXIT_FOLD_BYTES (256 KiB)
    otel_spawn.shutdown()
    assert len(list(home.glob("journal-*.journal"))) == 1
    assert spooled(home) == []  # refused before any batch was taken: nothing folded either
    settings = resolve({"app": "spawn", "posthog_host": capture_server.url, "posthog_api_key": "phc_x"})
    result = flush(settings, max_seconds=20)
    assert (result.remaining, result.error) == (0, None)
    received = Counter(map(str, capture_server.uuids()))
    assert sorted(received) == sorted(generated(home))  # zero lost
    assert max(received.values()) == 1  # zero duplicated
    assert list(home.glob("*journal-*")) == []


def test_lost_response_resends_identical_uuid_and_timestamp(capture_server: CaptureServer) -> None:
    """When the response is lost the resend is the same event, so PostHog's deduplication absorbs it."""
    capture_server.script(AcceptThenDrop())
    posthog(capture_server)
    run_funnel()
    settle(capture_server, 5)
    events = capture_server.events
    copies: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        copies.setdefault(e["uuid"], []).append(e)
    assert len(copies) == 4
    duplicated = [group for group in copies.values() if len(group) > 1]
    assert duplicated, "the dropped batch must have been resent"
    assert all(all(copy == group[0] for copy in group) for group in duplicated)


def test_retry_after_is_honoured(capture_server: CaptureServer) -> None:
    """503 then 429 with Retry-After: the next attempt waits at least that long, then all arrive."""
    capture_server.script(Status(503), Status(429, retry_after="1"))
    posthog(capture_server)
    run_funnel()
    assert capture_server.wait_for_events(4, timeout=15)
    requests = capture_server.requests
    statuses = [r.status for r in requests]
    assert statuses[:2] == [503, 429]
    assert requests[2].received_monotonic - requests[1].received_monotonic >= 1.0
    otel_spawn.shutdown()


def test_bad_event_is_quarantined_and_the_rest_delivered(home: Path, capture_server: CaptureServer) -> None:
    """A batch refused with 400 is split; only the invalid event is quarantined."""
    spool = SqliteSpool(home)
    good = [{"event": f"e{n}", "distinct_id": "d", "uuid": f"u{n}", "properties": {}} for n in range(5)]
    bad = {"event": "broken", "uuid": "u-bad", "properties": {}}  # no distinct_id: PostHog refuses the batch
    spool.put([*good[:2], bad, *good[2:]])
    spool.close()
    settings = resolve({"posthog_host": capture_server.url, "posthog_api_key": "phc_x"})
    result = flush(settings, max_seconds=10)
    assert result.remaining == 0
    assert sorted(map(str, capture_server.uuids())) == [f"u{n}" for n in range(5)]
    status = SqliteSpool(home).status()
    assert (status.quarantined, status.sent) == (1, 5)


def test_too_large_is_split_and_resent(home: Path) -> None:
    """413 for a big batch: the halves are resent until each fits."""
    with CaptureServer(max_body_bytes=3_000) as server:
        spool = SqliteSpool(home)
        spool.put(
            [
                {"event": "e", "distinct_id": "d", "uuid": f"u{n}", "properties": {"p": "x" * 400}}
                for n in range(20)
            ]
        )
        spool.close()
        result = flush(resolve({"posthog_host": server.url, "posthog_api_key": "phc_x"}), max_seconds=10)
        assert (result.sent, result.remaining) == (20, 0)
        assert 413 in [r.status for r in server.requests]
        assert sorted(map(str, server.uuids())) == sorted(f"u{n}" for n in range(20))


def test_auth_failure_stops_keeps_spool_and_warns_once(home: Path) -> None:
    """401: one request, the events stay spooled, one warning with the fix."""
    with CaptureServer(api_keys={"phc_right"}) as server:
        env = env_for(server.url, home, OTEL_EXPORTER_POSTHOG_API_KEY="phc_wrong")
        result = run(demo(), env)
        assert result.returncode == 0
        assert result.stderr.count("refused the project key") == 1
        assert "OTEL_EXPORTER_POSTHOG_API_KEY" in result.stderr
        assert [r.status for r in server.requests] == [401]
        assert len(spooled(home)) == DEMO_EVENTS


def test_unusable_state_dir_costs_one_warning(capture_server: CaptureServer, tmp_path: Path) -> None:
    """A state directory that cannot be created: the run succeeds, events go out from memory."""
    env = env_for(capture_server.url, Path("/proc/otel-spawn-none/state"), OTEL_TRACES_EXPORTER="posthog")
    result = run(demo(), env)
    assert result.returncode == 0
    assert result.stderr.count("otel-spawn:") <= 2
    assert "anonymous id for this run only" in result.stderr
    assert capture_server.wait_for_events(DEMO_EVENTS, timeout=10)


def test_corrupt_spool_is_recreated_and_run_succeeds(home: Path, capture_server: CaptureServer) -> None:
    """A corrupt spool file is moved aside; the run's events are delivered (in-process or by the flusher)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / SPOOL_DB).write_bytes(b"garbage" * 1000)
    result = run(demo(), env_for(capture_server.url, home, OTEL_SPAWN_FLUSHER_SECONDS="10"))
    assert result.returncode == 0
    assert "moved it to" in result.stderr
    assert capture_server.wait_for_events(DEMO_EVENTS, timeout=15)
    wait_until_no_flusher(home)
    assert len(set(map(str, capture_server.uuids()))) == len(capture_server.uuids()) == DEMO_EVENTS


def test_disable_deletes_unsent_and_status_reports_spool(home: Path) -> None:
    """status shows depth and last error; `disable` deletes the unsent events and says so."""
    dead = f"http://127.0.0.1:{unused_port()}"
    env = env_for(dead, home, OTEL_SPAWN_APP="spawn")
    assert run(demo(), env).returncode == 0
    status = run([*CLI, "status"], env).stdout
    assert f"{DEMO_EVENTS} unsent" in status
    assert "network error" in status
    disabled = run([*CLI, "disable"], env).stdout
    assert f"deleted {DEMO_EVENTS} unsent event(s)" in disabled
    assert spooled(home) == []


def test_abandon_is_scoped_to_one_batch(capture_server: CaptureServer) -> None:
    """An abandoned batch is never written; another batch (an exit-time flush) still goes out."""
    client = PostHogClient(host=capture_server.url, api_key="phc_x")
    doomed = [Outgoing.of({"event": "e", "distinct_id": "d", "uuid": "u-doomed", "properties": {}})]
    later = [Outgoing.of({"event": "e", "distinct_id": "d", "uuid": "u-later", "properties": {}})]
    assert client.abandon(doomed) is True
    assert client.send(doomed).verdict is Verdict.RETRY
    assert client.send(later).verdict is Verdict.OK
    assert client.abandon(later) is False  # its bytes were written: not safe to resend
    assert capture_server.uuids() == ["u-later"]
    client.close()
