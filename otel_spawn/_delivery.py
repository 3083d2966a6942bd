"""Delivery: an outbox of product events and a background sender that drains it to PostHog.

The exporter only `put`s events into an `Outbox` (cheap, on the host's thread); the `Sender`
thread takes batches, sends them, and `ack`s only what PostHog acknowledged. `MemoryOutbox` is the
in-process implementation; a durable spool implements the same protocol.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from otel_spawn._fork import reset_after_fork
from otel_spawn._guard import logger, warn_once
from otel_spawn._posthog import Event, Outcome, Outgoing, PostHogClient, Verdict
from otel_spawn._translate import EventContext, SpanEntry, SpanRecord, translate_entries


class Outbox(Protocol):
    def put_records(  # on the host's thread
        self, entries: Sequence[SpanEntry | SpanRecord], context: EventContext
    ) -> None: ...
    def ingest(  # fold what put_records wrote
        self, orphans: bool = True, own: bool = True, lazy: bool = False
    ) -> None: ...
    def put(self, events: Sequence[Event]) -> None: ...
    def take(self, limit: int) -> list[Outgoing]: ...  # claim the oldest unsent events
    def ack(self, events: Sequence[Outgoing]) -> None: ...  # delivered: forget them
    def release(self, events: Sequence[Outgoing]) -> None: ...  # not delivered: offer again later
    def quarantine(self, events: Sequence[Outgoing], reason: str) -> None: ...  # refused by the server
    def depth(self) -> int: ...
    def note_error(self, message: str) -> None: ...  # the last delivery error, for `otel-spawn status`


@dataclass
class DeliveryStats:
    sent: int = 0
    retries: int = 0
    quarantined: int = 0
    evicted: int = 0
    last_error: str | None = None
    auth_failed: bool = False


class MemoryOutbox:
    """A bounded in-memory outbox: when full, the oldest event is evicted (and counted)."""

    def __init__(self, *, capacity: int = 10_000, stats: DeliveryStats | None = None) -> None:
        self._queue: deque[Outgoing] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self.stats = stats or DeliveryStats()
        self.quarantined: list[tuple[Outgoing, str]] = []

    def put_records(self, entries: Sequence[SpanEntry | SpanRecord], context: EventContext) -> None:
        self.put(translate_entries(entries, context))

    def ingest(self, orphans: bool = True, own: bool = True, lazy: bool = False) -> None:
        pass

    def put(self, events: Sequence[Event]) -> None:
        encoded = [Outgoing.of(event) for event in events]
        with self._lock:
            self._queue.extend(encoded)
            while len(self._queue) > self._capacity:
                self._queue.popleft()
                self.stats.evicted += 1

    def take(self, limit: int) -> list[Outgoing]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]

    def ack(self, events: Sequence[Outgoing]) -> None:
        pass

    def release(self, events: Sequence[Outgoing]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(events))

    def quarantine(self, events: Sequence[Outgoing], reason: str) -> None:
        self.quarantined.extend((event, reason) for event in events)

    def depth(self) -> int:
        return len(self._queue)

    def note_error(self, message: str) -> None:
        self.stats.last_error = message


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff; a server's Retry-After is honoured when longer."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        wait: float = min(self.cap, self.base * 2.0**attempt) * random.uniform(0.5, 1.0)
        return max(wait, min(retry_after or 0.0, 300.0))


@dataclass
class Sender:
    """Drains an outbox to PostHog in batches on one background thread."""

    outbox: Outbox
    client: PostHogClient
    batch_size: int = 1000
    max_batch_bytes: int = 4 << 20  # PostHog takes up to 20 MiB per request
    interval: float = 0.2
    linger: float = 0.02  # after a wake-up, let a few more events join the batch (not when stopping)
    start_delay: float = 0.25  # a run shorter than this never sets up HTTP in-process (see _run)
    backoff: Backoff = field(default_factory=Backoff)
    stats: DeliveryStats = field(default_factory=DeliveryStats)

    def __post_init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one delivery loop at a time
        self._thread: threading.Thread | None = None
        self._notified = False  # a wake-up is pending: further notify() calls cost nothing
        self._attempt = 0
        self._not_before = 0.0
        self._in_flight: list[Outgoing] = []
        self._flight = threading.Lock()  # taking a batch vs. shutdown() deciding what is in flight
        self._closed = False
        reset_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: no sender thread yet (the parent's did not survive the fork)."""
        self._wake, self._stop, self._lock = threading.Event(), threading.Event(), threading.Lock()
        self._thread, self._notified, self._in_flight = None, False, []
        self._flight, self._closed = threading.Lock(), False

    def notify(self) -> None:
        """Events are waiting: start the thread if needed and wake it (once per round, not per event)."""
        if self._notified:
            return
        self._notified = True
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="otel-spawn-sender", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        # A CLI run that ends within `start_delay` leaves its events to the exit-time flusher rather
        # than importing httpx and loading CA certificates (~100 ms of CPU) just before it exits.
        self._stop.wait(self.start_delay)
        idle = False
        while not self._stop.is_set():
            self._wake.wait(None if idle else max(self.interval, self._not_before - time.monotonic()))
            self._stop.wait(self.linger)
            self._wake.clear()
            self._notified = False  # after clear(): a notify() from now on sets the event again
            try:
                idle = self.drain(deadline=None) or self.stats.auth_failed
            except Exception as exc:  # never let the thread die silently
                warn_once("sender", "otel-spawn: sender error: %s: %s", type(exc).__name__, exc)
        self.client.close()

    def drain(self, deadline: float | None) -> bool:
        """Send until the outbox is empty, the server says wait, or the deadline passes. True if empty."""
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            return False
        try:
            if self._send_all(deadline):
                return True
            self.outbox.ingest(lazy=True)  # not sending for now (an outage): fold once the backlog is large
            return False
        finally:
            self._lock.release()

    def _send_all(self, deadline: float | None) -> bool:
        self.outbox.ingest(own=False)  # dead processes' journals (when due), before any batch is taken
        if not self.stats.auth_failed and time.monotonic() >= self._not_before:
            timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
            unreachable = self.client.unreachable(timeout)  # before a batch is taken and encoded
            if unreachable is not None:
                self._back_off(Outcome(Verdict.RETRY, None, None, unreachable))
                return False
        while not self.stats.auth_failed and time.monotonic() >= self._not_before:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._flight:  # after shutdown() the thread takes nothing more (see there)
                if self._stopped():
                    return False
                batch = self._within_bytes(self.outbox.take(self.batch_size))
                self._in_flight = batch
            if batch and self._stopped():  # shutdown() came while taking it: send nothing now
                self.outbox.release(batch)
                self._in_flight = []
                return False
            if not batch:
                return True
            if not self._deliver(batch, deadline):
                return False
        return False

    def _stopped(self) -> bool:
        """True on the sender thread once shutdown() has decided what is in flight."""
        return self._closed and threading.current_thread() is self._thread

    def _within_bytes(self, batch: list[Outgoing]) -> list[Outgoing]:
        """The head of `batch` that fits max_batch_bytes (at least one event); the rest goes back."""
        total = 0
        for n, event in enumerate(batch):
            total += len(event.body)
            if total > self.max_batch_bytes and n:
                self.outbox.release(batch[n:])
                return batch[:n]
        return batch

    def _deliver(self, batch: list[Outgoing], deadline: float | None) -> bool:
        timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
        self._in_flight = batch  # until the answer is settled in the outbox
        try:
            outcome = self.client.send(batch, timeout=timeout)
            if outcome.verdict is Verdict.OK:
                self.outbox.ack(batch)
        finally:
            self._in_flight = []
        if outcome.verdict is Verdict.OK:
            self.stats.sent += len(batch)
            self._attempt = 0
            return True
        if outcome.verdict is Verdict.RETRY:
            self.outbox.release(batch)
            self._back_off(outcome)
            return False
        self._note_error(outcome)
        if outcome.verdict is Verdict.AUTH:
            self.outbox.release(batch)
            self.stats.auth_failed = True
            warn_once(
                "auth",
                "otel-spawn: PostHog refused the project key (%s); events are kept, not sent. "
                "Fix OTEL_EXPORTER_POSTHOG_API_KEY (a phc_ project key of this host's project)",
                outcome.status,
            )
            return False
        if outcome.verdict in (Verdict.BAD_REQUEST, Verdict.TOO_LARGE) and len(batch) > 1:
            half = len(batch) // 2  # find the offending events; deliver the rest
            return self._deliver(batch[:half], deadline) and self._deliver(batch[half:], deadline)
        self.outbox.quarantine(batch, _describe(outcome))
        self.stats.quarantined += len(batch)
        logger.warning("otel-spawn: PostHog refused %d event(s): %s", len(batch), _describe(outcome))
        return True

    def _note_error(self, outcome: Outcome) -> None:
        self.stats.last_error = _describe(outcome)
        self.outbox.note_error(self.stats.last_error)

    def _back_off(self, outcome: Outcome) -> None:
        """A failure worth retrying: note it and wait (jittered, growing) before the next attempt."""
        self._note_error(outcome)
        self.stats.retries += 1
        self._not_before = time.monotonic() + self.backoff.delay(self._attempt, outcome.retry_after)
        self._attempt += 1

    def retry_in(self) -> float:
        """Seconds until the server lets us try again (0 if now)."""
        return max(0.0, self._not_before - time.monotonic())

    def flush(self, deadline: float, progress: Callable[[str], None] | None = None) -> bool:
        """Drain, waiting out backoff, until the outbox is empty (True) or the deadline passes."""
        while not self.drain(deadline):
            if progress is not None:
                progress(f"sent {self.stats.sent}, {self.outbox.depth()} left ({self.stats.last_error})")
            wait = max(0.01, self.retry_in())
            if self.stats.auth_failed or time.monotonic() + wait >= deadline:
                return False
            time.sleep(wait)
        return True

    def shutdown(self, timeout: float) -> bool:
        """Stop; wait up to 2 x `timeout` only for a request already written. True if the thread ended.

        No request is started with a shortened timeout here: a healthy server that answers late
        would store a batch we then count as failed and resend (a duplicate). What is left stays in
        the outbox for a later sender.
        """
        if self._stop.is_set():
            return False
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(0.005)
        self._closed = True  # from here on the thread starts no request: the host may close the outbox
        if self._flight.acquire(timeout=0.005):  # a batch being taken now is released by the thread
            in_flight = self._in_flight
            self._flight.release()
        else:
            in_flight = []
        if not self._thread.is_alive() or not in_flight:  # idle, backing off, or still setting up
            return not self._thread.is_alive()
        if self.client.abandon(in_flight):  # it never reached the server, and now never will
            self.outbox.release(in_flight)
            return False
        self._thread.join(2 * timeout)  # written: waiting for the answer (and its ack) saves a resend
        return not self._thread.is_alive()


def _describe(outcome: Outcome) -> str:
    status = f"HTTP {outcome.status}" if outcome.status else "network error"
    return f"{status}: {outcome.detail}" if outcome.detail else status
