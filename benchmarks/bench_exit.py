"""Goal 4: how much later a CLI exits when the PostHog endpoint is unreachable, and what it loses.

otel-spawn: `python -m otel_spawn._cli demo launch` with every step delay 0 (14 events: funnel_started,
6 picker events, 7 steps), exporters=posthog, a fresh OTEL_SPAWN_HOME per run and the default
OTEL_SPAWN_FLUSHER_SECONDS, so the detached flusher is spawned at exit as in production. It is not
counted: the wall time is the CLI's, and the flusher (found by its OTEL_SPAWN_HOME) is stopped by pid
right after, before the next run. Baseline: the same run with SPAWN_TELEMETRY=0. Also run, for
context: the endpoint up (the fast capture endpoint), which shows what telemetry adds to a run when
all is well (mostly `configure()`: see bench_startup.py), so "vs up" is what the dead endpoint adds.

Peers (benchmarks/peer_cli.py, the same 14 events, then exit): the official PostHog SDK with
`shutdown()` as its docs ask, the same without it (its atexit handler), and the stock OTLP exporter
(opentelemetry-exporter-otlp-proto-http + BatchSpanProcessor, `provider.shutdown()`); each against
its own telemetry-off run.

Endpoints: `refused` (an unused port), `black hole` (a listening socket that never accepts: the kernel
completes the handshake, the request is written, no answer ever comes) and `SYN black hole` (a
listening socket with backlog 0 whose accept queue is already full: Linux drops further SYNs, so
connect() itself hangs, as with a firewall that drops packets).

Lost events: what neither reached a server nor was persisted. No server answers here, so for the
SDKs, which keep events in memory only, every event is lost; for otel-spawn the events still in the
durable spool after the run are kept (the next run or `otel-spawn flush` sends them).

The peers' runs against a dead endpoint take tens of seconds (request timeouts): they are started
STAGGER seconds apart and overlap while they wait, so the whole part stays short; each one's wall time
is its own. otel-spawn's and every telemetry-off run are sequential. Figures are medians.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import API_KEY, BENCH_DIR, HOST, Row, clean_env, median, progress, unused_port, verdict
from benchlib import table as render_table
from capture_fast import ServerProcess

from otel_spawn._cli import DEMO_STEPS

REPEATS = 10  # otel-spawn runs per endpoint, and telemetry-off runs
PEER_REPEATS = 3  # peer runs per endpoint (each takes seconds to a minute)
PEER_OFF_REPEATS = 5  # peer runs with telemetry off
STAGGER = 0.5
PEER_TIMEOUT = 150.0
EVENTS = 14
GOAL_MS = 100.0
ENDPOINTS = ("refused", "black hole", "SYN black hole")
PEERS = ("posthog", "posthog-atexit", "otlp")
PEER_LABELS = {
    "posthog": "posthog SDK, shutdown()",
    "posthog-atexit": "posthog SDK, atexit only",
    "otlp": "OTLP exporter + BSP",
}


class Endpoint:
    """A dead PostHog/OTLP endpoint on 127.0.0.1; `url` points at it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._sockets: list[socket.socket] = []
        if kind == "refused":
            self.url = f"http://{HOST}:{unused_port()}"
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        self._sockets.append(listener)
        if kind == "black hole":
            listener.listen(1024)  # handshakes complete in the kernel; nothing is ever accepted or read
        else:  # SYN black hole: backlog 0 and one queued connection fill the accept queue
            listener.listen(0)
            filler = socket.create_connection(listener.getsockname(), timeout=1.0)
            self._sockets.append(filler)
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.3)
            try:
                probe.connect(listener.getsockname())
                raise RuntimeError("the accept queue did not fill: no SYN black hole on this kernel")
            except TimeoutError:
                pass  # the SYN was dropped: connect() hangs
            finally:
                probe.close()
        self.url = f"http://{HOST}:{listener.getsockname()[1]}"

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@contextlib.contextmanager
def endpoints() -> Iterator[dict[str, Endpoint]]:
    opened = {kind: Endpoint(kind) for kind in ENDPOINTS}
    try:
        yield opened
    finally:
        for endpoint in opened.values():
            endpoint.close()


# ------------------------------------------------------------------------------ otel-spawn runs


def _demo_command() -> list[str]:
    delays = [arg for step in DEMO_STEPS for arg in ("--step-delay", f"{step}=0")]
    return [
        sys.executable,
        "-m",
        "otel_spawn._cli",
        "demo",
        "launch",
        "--agent",
        "claude",
        "--cloud",
        "hetzner",
        "--name",
        "bench",
        *delays,
    ]


def _flushers(home: Path) -> list[int]:
    """Pids of processes started with OTEL_SPAWN_HOME=home (the detached flusher of that run)."""
    marker = f"OTEL_SPAWN_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found.append(int(entry.name))
    return found


def _stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _spooled(home: Path) -> int:
    from otel_spawn._spool import SPOOL_DB, SqliteSpool

    if not (home / SPOOL_DB).exists():
        return 0
    spool = SqliteSpool(home)
    try:
        return spool.depth()
    finally:
        spool.close()


def _ours_once(
    root: Path, url: str, *, on: bool = True, server: ServerProcess | None = None
) -> dict[str, Any]:
    """One demo run against `url`; `on=False` is the SPAWN_TELEMETRY=0 run."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=root))
    env = clean_env(
        OTEL_SPAWN_HOME=str(home),
        OTEL_TRACES_EXPORTER="posthog",
        OTEL_EXPORTER_POSTHOG_HOST=url,
        OTEL_EXPORTER_POSTHOG_API_KEY=API_KEY,
    )
    if not on:
        env["SPAWN_TELEMETRY"] = "0"
    before = server.count() if server is not None else 0
    start = time.perf_counter()
    proc = subprocess.run(
        _demo_command(), env=env, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"demo launch exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    flushers = _flushers(home)
    _stop(flushers)
    received = server.count() - before if server is not None else 0
    return {"wall_s": wall, "flushers": len(flushers), "spooled": _spooled(home), "received": received}


# ------------------------------------------------------------------------------ peer runs


def _peer_env(peer: str, url: str, on: bool) -> dict[str, str]:
    return clean_env(
        PEER_POSTHOG_HOST=url,
        PEER_POSTHOG_KEY=API_KEY,
        OTEL_EXPORTER_OTLP_ENDPOINT=url,
        PEER_TELEMETRY="1" if on else "0",
    )


def _peer_once(peer: str, url: str, on: bool, root: Path, out: dict[str, Any]) -> None:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "peer_cli.py"), peer],
        env=_peer_env(peer, url, on),
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        code = proc.wait(PEER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    out.update(wall_s=time.perf_counter() - start, exit_code=code, timed_out=code is None)


def _peers_concurrently(
    jobs: list[tuple[str, str, str]], root: Path
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Start (peer, endpoint kind, url) jobs STAGGER s apart, each timed on its own thread."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    threads = []
    for index, (peer, kind, url) in enumerate(jobs):
        record: dict[str, Any] = {}
        results.setdefault((peer, kind), []).append(record)
        thread = threading.Thread(target=_peer_once, args=(peer, url, True, root, record), daemon=True)
        thread.start()
        threads.append(thread)
        if index + 1 < len(jobs):
            time.sleep(STAGGER)
    for done, thread in enumerate(threads, start=1):
        thread.join()
        if done % 6 == 0:
            progress(f"exit: {done}/{len(threads)} peer runs finished")
    return results


# ------------------------------------------------------------------------------ the benchmark


def _ours(root: Path, dead: dict[str, Endpoint], repeats: int) -> dict[str, Any]:
    progress(f"exit: otel-spawn demo, {repeats} runs each: telemetry off, endpoint up, 3 dead endpoints")
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "up": [], **{kind: [] for kind in ENDPOINTS}}
    with ServerProcess() as server:
        for repeat in range(repeats):  # round robin: drift hits every case alike
            runs["off"].append(_ours_once(root, dead["refused"].url, on=False))
            runs["up"].append(_ours_once(root, server.url, server=server))
            for kind, endpoint in dead.items():
                runs[kind].append(_ours_once(root, endpoint.url))
            if repeat % 5 == 4:
                progress(f"exit: otel-spawn {repeat + 1}/{repeats}")
    return _summarise(runs)


def _peers(root: Path, dead: dict[str, Endpoint], repeats: int, off_repeats: int) -> dict[str, Any]:
    progress(f"exit: peers with telemetry off, {off_repeats} runs each")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {peer: {"off": []} for peer in PEERS}
    for _ in range(off_repeats):
        for peer in PEERS:
            record: dict[str, Any] = {}
            _peer_once(peer, dead["refused"].url, False, root, record)
            runs[peer]["off"].append(record)
    jobs = [(peer, kind, dead[kind].url) for _ in range(repeats) for peer in PEERS for kind in ENDPOINTS]
    progress(
        f"exit: {len(jobs)} peer runs against dead endpoints, started {STAGGER:g} s apart "
        f"(the SDKs wait out their timeouts: about {len(jobs) * STAGGER + 70:.0f} s)"
    )
    for (peer, kind), records in _peers_concurrently(jobs, root).items():
        runs[peer][kind] = records
    return {peer: _summarise(runs[peer]) for peer in PEERS}


def run(
    repeats: int = REPEATS, peer_repeats: int = PEER_REPEATS, peer_off_repeats: int = PEER_OFF_REPEATS
) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="otel-spawn-bench-exit-"))
    figures: dict[str, Any] = {
        "events_per_run": EVENTS,
        "repeats": repeats,
        "peer_repeats": peer_repeats,
        "peer_off_repeats": peer_off_repeats,
        "goal_ms": GOAL_MS,
        "syn_black_hole": "listen(0) with a full accept queue: the kernel drops SYNs",
    }
    try:
        with endpoints() as dead:
            figures["otel-spawn"] = _ours(root, dead, repeats)
            figures.update(_peers(root, dead, peer_repeats, peer_off_repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def _summarise(cases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    off = median(r["wall_s"] for r in cases["off"])
    out: dict[str, Any] = {"off_s": off, "runs": cases}
    for kind in ("up", *ENDPOINTS):
        records = cases.get(kind, [])
        if not records:
            continue
        wall = median(r["wall_s"] for r in records)
        kept = [r.get("spooled", 0) + r.get("received", 0) for r in records]
        out[kind] = {
            "wall_s": wall,
            "added_ms": (wall - off) * 1000,
            "timed_out": sum(bool(r.get("timed_out")) for r in records),
            "received_median": median(r.get("received", 0) for r in records),
            "persisted_median": median(r.get("spooled", 0) for r in records),
            "lost_median": median(EVENTS - k for k in kept),
            "lost_max": max(EVENTS - k for k in kept),
            "flushers_spawned": sum(r.get("flushers", 0) for r in records),
        }
    if "up" in out:
        for kind in ENDPOINTS:
            out[kind]["added_vs_up_ms"] = (out[kind]["wall_s"] - out["up"]["wall_s"]) * 1000
    return out


def rows(figures: dict[str, Any]) -> list[Row]:
    ours = figures["otel-spawn"]
    up = ours["up"]
    out = [
        Row(
            "4",
            f"run time added, endpoint up (delivered of {EVENTS})",
            f"{up['added_ms']:+.0f} ms, delivered {up['received_median']:.0f}",
            f"telemetry off {ours['off_s'] * 1000:.0f} ms",
            "-",
            "(context)",
            "-",
        )
    ]
    for kind in ENDPOINTS:
        f = ours[kind]
        peer_parts = []
        for peer in PEERS:
            p = figures[peer][kind]
            slow = f"{p['added_ms'] / 1000:.1f} s" + (" (killed)" if p["timed_out"] else "")
            peer_parts.append(f"{PEER_LABELS[peer]} +{slow}, lost {p['lost_max']:.0f}")
        out.append(
            Row(
                "4",
                f"exit delay, endpoint {kind} (lost of {EVENTS})",
                f"{f['added_ms']:+.0f} ms ({f['added_vs_up_ms']:+.0f} vs up), lost {f['lost_max']:.0f}",
                "; ".join(peer_parts),
                f"{f['added_ms'] / figures['posthog'][kind]['added_ms']:.3f}x vs posthog"
                if figures["posthog"][kind]["added_ms"] > 0
                else "-",
                f"<= +{GOAL_MS:g} ms",
                verdict(f["added_ms"] <= GOAL_MS),
            )
        )
    return out


if __name__ == "__main__":
    result = run()
    print(render_table(rows(result)))
    print(f"telemetry off: otel-spawn {result['otel-spawn']['off_s'] * 1000:.0f} ms", end="")  # type: ignore[index]
    for peer in PEERS:
        print(f", {peer} {result[peer]['off_s'] * 1000:.0f} ms", end="")  # type: ignore[index]
    print()
