"""The PostHog client and the sender's handling of every server answer (httpx.MockTransport)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from servers import unused_port

from otel_spawn._delivery import Backoff, MemoryOutbox, Sender
from otel_spawn._posthog import Outgoing, PostHogClient, Verdict, classify, encode_batch, parse_retry_after


def event(name: str, n: int = 0) -> dict[str, Any]:
    return {"event": name, "distinct_id": "d", "uuid": f"u-{name}-{n}", "timestamp": "t", "properties": {}}


def decode(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(gzip.decompress(request.content))
    return body


def make_sender(
    handler: Callable[[httpx.Request], httpx.Response], batch_size: int = 100
) -> tuple[Sender, MemoryOutbox, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = PostHogClient(
        host="https://eu.i.posthog.com",
        api_key="phc_x",
        client=httpx.Client(transport=httpx.MockTransport(record)),
    )
    outbox = MemoryOutbox()
    sender = Sender(outbox=outbox, client=client, batch_size=batch_size, backoff=Backoff(base=0.0))
    return sender, outbox, seen


def test_batch_body_is_gzip_deterministic_without_sent_at() -> None:
    """The body is gzip JSON with api_key and batch, no sent_at, identical bytes for identical events."""
    events = [event("a"), event("b")]
    body = encode_batch("phc_x", [Outgoing.of(e) for e in events])
    assert body == encode_batch("phc_x", [Outgoing.of(dict(e)) for e in events])
    assert json.loads(gzip.decompress(body)) == {"api_key": "phc_x", "batch": events}


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.OK),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (400, Verdict.BAD_REQUEST),
        (413, Verdict.TOO_LARGE),
        (401, Verdict.AUTH),
        (403, Verdict.AUTH),
        (404, Verdict.REJECTED),
        (422, Verdict.REJECTED),
    ],
)
def test_status_classification(status: int, verdict: Verdict) -> None:
    """Each status code maps to what the sender must do with the batch."""
    assert classify(status).verdict is verdict


def test_retry_after_parsing() -> None:
    """Retry-After accepts seconds and HTTP dates; garbage is ignored."""
    assert parse_retry_after("7") == 7.0
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after(later)
    assert parsed is not None
    assert 25 <= parsed <= 31
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    """Delays grow with attempts, stay under the cap, and are never shorter than Retry-After."""
    backoff = Backoff(base=1.0, cap=8.0)
    assert 0.5 <= backoff.delay(0) <= 1.0
    assert 4.0 <= backoff.delay(3) <= 8.0
    assert backoff.delay(10) <= 8.0
    assert backoff.delay(0, retry_after=20.0) == 20.0


def test_client_posts_gzip_to_batch_endpoint() -> None:
    """The request goes to <host>/batch/ with gzip encoding."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(200, json={"status": 1}))
    outbox.put([event("a")])
    assert sender.drain(deadline=time.monotonic() + 5)
    [request] = seen
    assert str(request.url) == "https://eu.i.posthog.com/batch/"
    assert request.headers["content-encoding"] == "gzip"
    assert decode(request)["batch"] == [event("a")]
    assert sender.stats.sent == 1


def test_network_error_then_success_resends_identical_bytes() -> None:
    """A retry after a network error or 503 resends byte-identical events (same uuid, same timestamp)."""
    answers: list[Any] = [httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    sender, outbox, seen = make_sender(handler)
    outbox.put([event("a"), event("b")])
    for _ in range(3):
        sender.drain(deadline=time.monotonic() + 5)
    assert len(seen) == 3
    assert seen[0].content == seen[1].content == seen[2].content
    assert sender.stats.sent == 2
    assert sender.stats.retries == 2
    assert outbox.depth() == 0


def test_retry_after_delays_the_next_attempt() -> None:
    """After a 429 with Retry-After the sender waits at least that long before trying again."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(429, headers={"Retry-After": "30"}))
    outbox.put([event("a")])
    assert not sender.drain(deadline=time.monotonic() + 5)
    assert not sender.drain(deadline=time.monotonic() + 5)
    assert len(seen) == 1  # the second drain respected Retry-After
    assert outbox.depth() == 1


def test_bad_request_is_split_to_quarantine_only_the_offender() -> None:
    """A 400 batch is split until the invalid event is found; the rest is delivered."""

    def handler(request: httpx.Request) -> httpx.Response:
        batch = decode(request)["batch"]
        return httpx.Response(400 if any(e["event"] == "bad" for e in batch) else 200)

    sender, outbox, seen = make_sender(handler)
    good = [event("ok", n) for n in range(7)]
    outbox.put([*good[:3], event("bad"), *good[3:]])
    assert sender.drain(deadline=time.monotonic() + 5)
    assert sender.stats.sent == 7
    assert sender.stats.quarantined == 1
    assert [e for e, _ in outbox.quarantined] == [Outgoing.of(event("bad"))]
    assert [len(decode(r)["batch"]) for r in seen] == [8, 4, 2, 2, 1, 1, 4]


def test_too_large_is_split_and_resent() -> None:
    """A 413 batch is split and each half resent."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413 if len(decode(request)["batch"]) > 2 else 200)

    sender, outbox, _ = make_sender(handler)
    outbox.put([event("a", n) for n in range(8)])
    assert sender.drain(deadline=time.monotonic() + 5)
    assert sender.stats.sent == 8
    assert sender.stats.quarantined == 0


def test_auth_failure_stops_sending_and_keeps_events(caplog: pytest.LogCaptureFixture) -> None:
    """401 stops sending for this process, keeps the events and warns with the fix."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(401))
    outbox.put([event("a"), event("b")])
    assert not sender.drain(deadline=time.monotonic() + 5)
    assert not sender.drain(deadline=time.monotonic() + 5)
    assert len(seen) == 1
    assert outbox.depth() == 2
    assert sender.stats.auth_failed
    assert "OTEL_EXPORTER_POSTHOG_API_KEY" in caplog.text


def test_other_client_errors_are_counted_not_retried() -> None:
    """A 422 is logged and counted, never retried."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(422))
    outbox.put([event("a")])
    assert sender.drain(deadline=time.monotonic() + 5)
    assert sender.drain(deadline=time.monotonic() + 5)
    assert len(seen) == 1
    assert sender.stats.quarantined == 1
    assert sender.stats.last_error is not None
    assert "422" in sender.stats.last_error


def test_batches_respect_a_byte_cap() -> None:
    """A batch stops before max_batch_bytes (an oversized event still goes, alone); order is kept."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(200))
    sender.max_batch_bytes = 2 * len(Outgoing.of(event("a", 0)).body) + 1
    outbox.put([event("a", n) for n in range(5)])
    outbox.put([{**event("big", 0), "properties": {"pad": "x" * 1000}}, event("a", 5)])
    assert sender.drain(deadline=time.monotonic() + 5)
    assert [len(decode(r)["batch"]) for r in seen] == [2, 2, 1, 1, 1]
    assert [e["uuid"] for r in seen for e in decode(r)["batch"]][:6] == [f"u-a-{n}" for n in range(5)] + [
        "u-big-0"
    ]


def test_batches_respect_batch_size() -> None:
    """Events go out in batches of at most batch_size, oldest first."""
    sender, outbox, seen = make_sender(lambda r: httpx.Response(200), batch_size=3)
    outbox.put([event("a", n) for n in range(7)])
    assert sender.drain(deadline=time.monotonic() + 5)
    assert [len(decode(r)["batch"]) for r in seen] == [3, 3, 1]
    assert [e["uuid"] for r in seen for e in decode(r)["batch"]] == [f"u-a-{n}" for n in range(7)]


def test_memory_outbox_evicts_oldest_and_counts() -> None:
    """A full in-memory outbox drops the oldest events and counts them."""
    outbox = MemoryOutbox(capacity=3)
    outbox.put([event("a", n) for n in range(5)])
    assert [e.uuid for e in outbox.take(10)] == ["u-a-2", "u-a-3", "u-a-4"]
    assert outbox.stats.evicted == 2


def test_client_sends_again_after_close() -> None:
    """close() releases the connections; a later send opens a new client instead of failing."""
    client = PostHogClient(host="http://127.0.0.1:9", api_key="phc_x", timeout=0.5)
    client.close()
    assert (
        client.send([Outgoing.of(event("a"))]).verdict is Verdict.RETRY
    )  # refused: a network error, not a crash
    client.close()
    assert client.send([Outgoing.of(event("a"))]).verdict is Verdict.RETRY
    client.close()


def test_an_unreachable_endpoint_is_retried_without_loading_httpx_or_taking_a_batch() -> None:
    """Before its first request the sender has the client open a plain TCP connection: refused, it
    backs off with the socket error, and neither took a batch nor made an httpx client (105-135 ms
    of CPU beside the host)."""
    client = PostHogClient(host=f"http://127.0.0.1:{unused_port()}", api_key="phc_x", timeout=0.5)
    outbox = MemoryOutbox()
    outbox.put([event("a")])
    sender = Sender(outbox=outbox, client=client)
    assert not sender.drain(deadline=None)
    assert "ConnectionRefusedError" in str(sender.stats.last_error)
    assert (sender.stats.retries, sender.retry_in() > 0) == (1, True)
    assert client._client is None
    assert [e.uuid for e in outbox.take(10)] == ["u-a-0"]  # never taken


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_where_the_system_may_set_a_proxy_there_is_no_direct_check(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    """On macOS and Windows httpx also reads the system's proxy settings: a refused direct connection
    proves nothing there, so the request is left to httpx."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = PostHogClient(host=f"http://127.0.0.1:{unused_port()}", api_key="phc_x", timeout=0.5)
    assert client.unreachable() is not None  # on this machine (Linux): the refused port is seen
    monkeypatch.setattr("otel_spawn._posthog.sys.platform", platform)
    assert client.unreachable() is None
    client.close()


def test_with_a_proxy_configured_httpx_finds_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy (HTTP_PROXY & co.) is httpx's business: no direct TCP check that would bypass it."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{unused_port()}")  # a dead proxy
    client = PostHogClient(host=f"http://127.0.0.1:{unused_port()}", api_key="phc_x", timeout=0.5)
    assert client.unreachable() is None
    outcome = client.send([Outgoing.of(event("a"))])
    assert outcome.verdict is Verdict.RETRY
    assert outcome.detail.startswith("ProxyError") or outcome.detail.startswith("ConnectError")
    assert client._client is not None  # the request went through httpx (to the proxy)
    client.close()
