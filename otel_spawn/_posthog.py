"""PostHog capture over httpx: one `POST /batch/` and what its answer means. No retry loop here.

The body has no `sent_at`: PostHog shifts an event's timestamp by (server now - sent_at), so a
resend with a fresh `sent_at` could change the stored timestamp and defeat deduplication. Without
it a resend of the same events is byte-identical (gzip mtime is pinned to 0).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from otel_spawn._fork import reset_after_fork
from otel_spawn._version import __version__

if TYPE_CHECKING:
    import httpx

Event = dict[
    str, Any
]  # one PostHog event as sent in a batch: event, distinct_id, timestamp, uuid, properties

encode_json = json.JSONEncoder(separators=(",", ":")).encode  # compact; one encoder, not one per call


class Outgoing(NamedTuple):
    """An event on its way out: encoded once, when it is spooled, and sent as these exact bytes."""

    uuid: str
    body: str  # the event's JSON

    @classmethod
    def of(cls, event: Event) -> Outgoing:
        return cls(event["uuid"], encode_json(event))


class Verdict(Enum):
    OK = "ok"
    RETRY = "retry"  # network error, 5xx, 408, 429: try again later, same bytes
    BAD_REQUEST = "bad_request"  # 400: some event of the batch is invalid
    TOO_LARGE = "too_large"  # 413: split and resend
    AUTH = "auth"  # 401/403: the key is wrong; stop sending
    REJECTED = "rejected"  # any other 4xx: never retried


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: int | None = None
    retry_after: float | None = None
    detail: str = ""


def encode_batch(api_key: str, events: Sequence[Outgoing]) -> bytes:
    """The gzip body of `POST /batch/`: deterministic, so a resend is byte-identical. Level 1: a
    third of level 6's CPU time for a body ~10% larger (JSON events compress ~16x either way)."""
    import gzip  # here: only the sender thread needs it

    body = f'{{"api_key":{encode_json(api_key)},"batch":[{",".join([e.body for e in events])}]}}'
    return gzip.compress(body.encode("utf-8"), compresslevel=1, mtime=0)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(status: int, retry_after: str | None = None, detail: str = "") -> Outcome:
    """What a status code from the capture endpoint means for the batch."""
    if 200 <= status < 300:
        return Outcome(Verdict.OK, status)
    if status >= 500 or status in (408, 429):
        return Outcome(Verdict.RETRY, status, parse_retry_after(retry_after), detail)
    verdict = {400: Verdict.BAD_REQUEST, 413: Verdict.TOO_LARGE, 401: Verdict.AUTH, 403: Verdict.AUTH}.get(
        status, Verdict.REJECTED
    )
    return Outcome(verdict, status, None, detail)


def _proxy_configured() -> bool:
    """Whether httpx may route requests through a proxy. It asks `urllib.request.getproxies()`: on
    Linux that reads these variables only; on macOS and Windows it also reads the system's proxy
    settings, which only that lookup sees (and importing urllib.request loads ssl): assume one there."""
    if sys.platform in ("darwin", "win32"):
        return True
    return any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") and v for k, v in os.environ.items())


class PostHogClient:
    """Sends one batch and classifies the answer; never raises.

    The httpx client (and with it the import of httpx and an SSL context: 105-135 ms of CPU, most of
    it holding the GIL) is made on the first send, on the sender thread, not in `configure()`. Until
    then the sender first asks `unreachable()`, which opens a plain TCP connection: an endpoint that
    is down or a machine that is offline is retried later without loading httpx beside a busy host
    (nor taking and encoding a batch).
    """

    def __init__(
        self,
        *,
        host: str,
        api_key: str,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = host.rstrip("/") + "/batch/"
        self.api_key = api_key
        self.timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._started: object = None  # the batch whose request has begun writing
        self._abandoned: object = None  # the batch that must not be written any more
        self._lock = threading.Lock()
        reset_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child: connections of its own (the parent's are dropped, never closed here)."""
        self._lock = threading.Lock()
        if self._owns_client:
            self._client = None

    def _trace(self, batch: object, name: str, info: dict[str, Any]) -> None:
        if ".send_request_headers.started" in name:
            with self._lock:
                if self._abandoned is batch:
                    import httpx

                    raise httpx.TransportError("abandoned at exit before sending")
                self._started = batch

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 3.0))
                self._client = httpx.Client(timeout=timeout, verify=self.url.startswith("https:"))
            return self._client

    def unreachable(self, timeout: float | None = None) -> str | None:
        """Before httpx is loaded: why no TCP connection to the endpoint opens, or None if one does
        (None once the httpx client exists, or if a proxy is configured: only httpx knows the way)."""
        if self._client is not None or not self._owns_client or _proxy_configured():
            return None
        import socket
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(self.url)
            address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
            socket.create_connection(address, timeout=min(timeout or self.timeout, 3.0)).close()
        except (OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def abandon(self, batch: Sequence[Outgoing]) -> bool:
        """Forbid `batch` from being written; True if no byte of it was (so it is safe to resend).

        Scoped to that batch: a later send (an exit-time flush) is not affected.
        """
        with self._lock:
            if self._started is batch:
                return False
            self._abandoned = batch
            return True

    def send(self, events: Sequence[Outgoing], timeout: float | None = None) -> Outcome:
        """POST one batch; `timeout` (seconds) caps this request, else the client's timeout applies."""
        import httpx

        body = encode_batch(self.api_key, events)
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"otel-spawn/{__version__}",
        }
        try:
            response = self._http().post(
                self.url,
                content=body,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
                extensions={"trace": functools.partial(self._trace, events)},
            )
        except httpx.HTTPError as exc:
            return Outcome(Verdict.RETRY, None, None, f"{type(exc).__name__}: {exc}")
        return classify(response.status_code, response.headers.get("Retry-After"), response.text[:200])

    def close(self) -> None:
        """Close the connections; a later send opens new ones (exit may still flush after a close)."""
        with self._lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None
