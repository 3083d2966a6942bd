"""The test servers behave like the real backends they stand in for, and misbehave on cue."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, StatusCode
from servers import (
    AcceptThenDrop,
    CaptureServer,
    Hang,
    OtlpReceiver,
    Reset,
    Status,
    any_value,
    unused_port,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "phc_test_project_key"


def event(
    name: str = "spawn_started", distinct_id: str | None = "user-1", **properties: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"event": name, "properties": properties, "uuid": f"uuid-{name}"}
    if distinct_id is not None:
        payload["distinct_id"] = distinct_id
    return payload


def post(
    server: CaptureServer,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/batch/",
    timeout: float = 5.0,
) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=headers or {}, timeout=timeout)


def raw_batch_request() -> bytes:
    """A keep-alive HTTP/1.1 request with a valid one-event batch, for tests that need a raw socket."""
    body = json.dumps({"api_key": KEY, "batch": [event()]}).encode()
    return b"POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# --- CaptureServer: validation -------------------------------------------------------------------


def test_valid_batch_is_stored_and_recorded(capture_server: CaptureServer) -> None:
    """A valid batch gets 200 {"status": "Ok"}; its events and the request are recorded as sent."""
    body = {"api_key": KEY, "batch": [event("a"), event("b", step=2)], "sent_at": "2025-01-01T00:00:00Z"}
    response = post(capture_server, body, headers={"Content-Type": "application/json"})

    assert (response.status_code, response.json()) == (200, {"status": "Ok"})
    assert capture_server.events == body["batch"]
    assert capture_server.uuids() == ["uuid-a", "uuid-b"]
    [request] = capture_server.requests
    assert (request.path, request.status, request.behaviour, request.body) == ("/batch/", 200, "ok", body)
    assert request.body_size == len(json.dumps(body).encode())
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/batch", "/capture/"])
def test_other_capture_paths_are_accepted(capture_server: CaptureServer, path: str) -> None:
    """`/batch` and `/capture/` accept batches like `/batch/`."""
    assert post(capture_server, {"api_key": KEY, "batch": [event()]}, path=path).status_code == 200
    assert capture_server.events == [event()]


def test_unknown_path_is_404(capture_server: CaptureServer) -> None:
    """A POST to a path PostHog does not serve gets 404 and stores nothing."""
    assert post(capture_server, {"api_key": KEY, "batch": [event()]}, path="/e/").status_code == 404
    assert capture_server.events == []


@pytest.mark.parametrize("encoding_header", [True, False], ids=["content-encoding", "magic-bytes"])
def test_gzip_body_is_accepted(capture_server: CaptureServer, encoding_header: bool) -> None:
    """A gzip body is decoded whether announced by Content-Encoding or recognised by its magic bytes."""
    body = {"api_key": KEY, "batch": [event()]}
    headers = {"Content-Encoding": "gzip"} if encoding_header else {}
    response = post(capture_server, content=gzip.compress(json.dumps(body).encode()), headers=headers)

    assert response.status_code == 200
    assert capture_server.events == [event()]
    assert capture_server.requests[0].body == body


def test_chunked_body_is_accepted(capture_server: CaptureServer) -> None:
    """A chunked body (no Content-Length) is reassembled and accepted."""
    content = json.dumps({"api_key": KEY, "batch": [event()]}).encode()
    response = httpx.post(capture_server.url + "/batch/", content=iter([content[:10], content[10:]]))

    assert response.status_code == 200
    assert capture_server.events == [event()]
    assert capture_server.requests[0].headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize(
    "bad_event",
    [
        event(distinct_id=None),
        event(distinct_id=""),
        {"event": "x", "distinct_id": None},
        {"event": "x", "distinct_id": True},
        {"distinct_id": "user-1"},
        {"event": "", "distinct_id": "user-1"},
        {"event": 7, "distinct_id": "user-1"},
        {"event": "x", "distinct_id": "user-1", "properties": []},
        "not an event",
    ],
)
def test_one_invalid_event_fails_the_whole_batch(capture_server: CaptureServer, bad_event: Any) -> None:
    """One event without a name or distinct_id makes the whole batch 400 and nothing of it is stored."""
    response = post(capture_server, {"api_key": KEY, "batch": [event("first"), bad_event, event("last")]})

    assert response.status_code == 400
    assert capture_server.events == []
    assert capture_server.requests[0].status == 400


@pytest.mark.parametrize("distinct_id", ["user-1", 42])
def test_distinct_id_inside_properties_is_accepted(
    capture_server: CaptureServer, distinct_id: object
) -> None:
    """A distinct_id given only in `properties` (string or number) is as good as a top-level one."""
    only_in_properties = {"event": "x", "properties": {"distinct_id": distinct_id}}
    response = post(capture_server, {"api_key": KEY, "batch": [only_in_properties]})

    assert response.status_code == 200
    assert capture_server.events == [only_in_properties]


@pytest.mark.parametrize("api_key", [None, "", "phc_", "phx_personal_secret", "not_a_key", 123], ids=repr)
def test_missing_or_invalid_api_key_is_401(capture_server: CaptureServer, api_key: object) -> None:
    """A missing key, a non-`phc_` key (personal `phx_` keys included) or a bare prefix gets 401."""
    body: dict[str, Any] = {"batch": [event()]}
    if api_key is not None:
        body["api_key"] = api_key
    assert post(capture_server, body).status_code == 401
    assert capture_server.events == []


def test_key_outside_the_accepted_set_is_401() -> None:
    """With accepted keys configured, another well-formed `phc_` key gets 401 and a listed one 200."""
    with CaptureServer(api_keys={KEY}) as server:
        assert post(server, {"api_key": "phc_other_project", "batch": [event()]}).status_code == 401
        assert post(server, {"api_key": KEY, "batch": [event()]}).status_code == 200
        assert server.events == [event()]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {}),
        (b"[]", {}),
        (json.dumps({"api_key": KEY, "batch": {"event": "x"}}).encode(), {}),
        (json.dumps({"api_key": KEY, "batch": []}).encode(), {}),
        (json.dumps({"api_key": KEY}).encode(), {}),
        (b"\x1f\x8b not really gzip", {}),
        (b"{}", {"Content-Encoding": "gzip"}),
    ],
    ids=["invalid-json", "array", "batch-object", "batch-empty", "batch-missing", "bad-gzip", "fake-gzip"],
)
def test_malformed_body_is_400(
    capture_server: CaptureServer, content: bytes, headers: dict[str, str]
) -> None:
    """Undecodable bodies, non-object bodies and a missing, empty or non-list batch get 400."""
    assert post(capture_server, content=content, headers=headers).status_code == 400
    assert capture_server.events == []


def test_big_event_is_413_after_storing_earlier_events() -> None:
    """An event over the per-event limit gets 413; events before it in the batch are already stored."""
    with CaptureServer(max_event_bytes=1000) as server:
        small, big = event("small"), event("big", blob="x" * 1000)
        response = post(server, {"api_key": KEY, "batch": [small, big, event("after")]})

        assert response.status_code == 413
        assert server.events == [small]


def test_body_over_the_default_20_mib_limit_is_413(capture_server: CaptureServer) -> None:
    """A body one byte over 20 MiB gets 413 and stores nothing."""
    prefix = json.dumps({"api_key": KEY, "batch": [event()], "pad": ""}).encode()[:-2]
    content = prefix + b"x" * (20 * 1024 * 1024 + 1 - len(prefix) - 2) + b'"}'
    assert len(content) == 20 * 1024 * 1024 + 1

    assert post(capture_server, content=content, timeout=30.0).status_code == 413
    assert capture_server.events == []


def test_gzip_body_that_inflates_over_the_limit_is_413() -> None:
    """The body limit also applies after decompression, so a small gzip bomb gets 413."""
    with CaptureServer(max_body_bytes=10_000) as server:
        body = {"api_key": KEY, "batch": [event(blob="x" * 20_000)]}
        content = gzip.compress(json.dumps(body).encode())
        assert len(content) < 10_000

        assert post(server, content=content, headers={"Content-Encoding": "gzip"}).status_code == 413
        assert server.events == []


# --- CaptureServer: scripted faults --------------------------------------------------------------


@pytest.mark.parametrize("code", [500, 503, 429, 408, 401, 403, 400])
def test_scripted_status_is_returned_with_retry_after(capture_server: CaptureServer, code: int) -> None:
    """A scripted status answers one request with that code and Retry-After, storing nothing; then "ok"."""
    capture_server.script(Status(code, retry_after=3))
    body = {"api_key": KEY, "batch": [event()]}

    failed = post(capture_server, body)
    assert (failed.status_code, failed.headers.get("Retry-After")) == (code, "3")
    assert capture_server.events == []
    assert post(capture_server, body).status_code == 200
    assert capture_server.events == [event()]
    assert [(r.status, r.behaviour, r.body) for r in capture_server.requests] == [
        (code, "status", body),
        (200, "ok", body),
    ]


def test_script_is_consumed_in_order_and_accepts_ints(capture_server: CaptureServer) -> None:
    """Behaviours are consumed one per request in order; an int means that status with no Retry-After."""
    capture_server.script(503, Status(429, retry_after="1"))
    body = {"api_key": KEY, "batch": [event()]}

    first, second, third = post(capture_server, body), post(capture_server, body), post(capture_server, body)
    assert [first.status_code, second.status_code, third.status_code] == [503, 429, 200]
    assert "Retry-After" not in first.headers
    assert second.headers["Retry-After"] == "1"


def test_accept_then_drop_stores_but_the_client_sees_a_transport_error(capture_server: CaptureServer) -> None:
    """AcceptThenDrop stores the events and closes the connection without a response (a lost answer)."""
    capture_server.script(AcceptThenDrop())
    with pytest.raises(httpx.TransportError):
        post(capture_server, {"api_key": KEY, "batch": [event()]})

    assert capture_server.events == [event()]
    [request] = capture_server.requests
    assert (request.status, request.behaviour) == (None, "accept_then_drop")


def test_hang_times_the_client_out_and_stores_nothing(capture_server: CaptureServer) -> None:
    """Hang reads the request and never answers, so a client read timeout fires; nothing is stored."""
    capture_server.script(Hang(seconds=60))
    with pytest.raises(httpx.ReadTimeout):
        post(capture_server, {"api_key": KEY, "batch": [event()]}, timeout=0.2)

    assert capture_server.events == []
    assert capture_server.requests[0].behaviour == "hang"


def test_hang_ends_by_itself_after_its_bound(capture_server: CaptureServer) -> None:
    """A short Hang hangs up without a response once its seconds are over."""
    capture_server.script(Hang(seconds=0.1))
    with pytest.raises(httpx.RemoteProtocolError):
        post(capture_server, {"api_key": KEY, "batch": [event()]}, timeout=30.0)


def test_close_releases_a_hang_in_progress() -> None:
    """close() returns promptly during a long Hang, and the waiting client gets a transport error."""
    with CaptureServer() as server:  # the with-exit's second close() is a no-op
        server.script(Hang(seconds=600))
        errors: list[Exception] = []

        def client() -> None:
            try:
                post(server, {"api_key": KEY, "batch": [event()]}, timeout=600)
            except httpx.TransportError as exc:
                errors.append(exc)

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        assert server.wait_for_requests(1, timeout=5)
        closer = threading.Thread(target=server.close, daemon=True)
        closer.start()
        closer.join(timeout=10)
        thread.join(timeout=10)

        assert not closer.is_alive()
        assert not thread.is_alive()
        assert len(errors) == 1


def test_close_hangs_up_idle_keep_alive_connections(capture_server: CaptureServer) -> None:
    """close() returns although a client holds an idle keep-alive connection, and hangs that connection up."""
    with socket.create_connection(("127.0.0.1", capture_server.port), timeout=5) as sock:
        sock.sendall(raw_batch_request())
        response = b""
        while not response.endswith(b'{"status": "Ok"}'):  # the whole response; the timeout bounds it
            response += sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200")
        capture_server.close()
        assert sock.recv(1) == b""  # EOF from the server, not a 5 s TimeoutError


def test_reset_gives_a_transport_error_and_stores_nothing(capture_server: CaptureServer) -> None:
    """Reset drops the connection before reading the body: a transport error, and nothing is stored."""
    capture_server.script(Reset())
    with pytest.raises(httpx.TransportError):
        post(capture_server, {"api_key": KEY, "batch": [event()]})

    assert capture_server.events == []
    assert [r.behaviour for r in capture_server.requests] == ["reset"]


def test_reset_is_a_tcp_reset_not_a_clean_close(capture_server: CaptureServer) -> None:
    """Reset aborts the connection with RST, so a reading client gets ECONNRESET rather than EOF."""
    capture_server.script(Reset())
    with socket.create_connection(("127.0.0.1", capture_server.port), timeout=5) as sock:
        sock.sendall(raw_batch_request())
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_unused_port_refuses_connections() -> None:
    """Nothing listens on unused_port(), so connecting fails with ConnectError."""
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{unused_port()}/batch/", json={}, timeout=5)


def test_closed_server_refuses_connections_and_close_is_idempotent() -> None:
    """After close() (twice is fine) the server's port refuses connections."""
    with CaptureServer() as server:
        url = server.url
    server.close()
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "/batch/", json={}, timeout=5)


# --- CaptureServer: helpers ----------------------------------------------------------------------


def test_wait_for_events_is_bounded(capture_server: CaptureServer) -> None:
    """wait_for_events is True once enough events arrived and False when its timeout passes first."""
    assert not capture_server.wait_for_events(1, timeout=0.05)
    post(capture_server, {"api_key": KEY, "batch": [event("a"), event("b")]})
    assert capture_server.wait_for_events(2, timeout=5)
    assert not capture_server.wait_for_events(3, timeout=0.05)


def test_clear_forgets_events_and_requests(capture_server: CaptureServer) -> None:
    """clear() empties the recorded events and requests; later ones are recorded again."""
    post(capture_server, {"api_key": KEY, "batch": [event("a")]})
    capture_server.clear()
    assert (capture_server.events, capture_server.requests) == ([], [])

    post(capture_server, {"api_key": KEY, "batch": [event("b")]})
    assert capture_server.uuids() == ["uuid-b"]


# --- OtlpReceiver --------------------------------------------------------------------------------


def export_with_real_sdk(
    receiver: OtlpReceiver, compression: Compression = Compression.NoCompression
) -> None:
    """Emit a parent span with a child (attributes, event, error status, link) through the real exporter."""
    exporter = OTLPSpanExporter(endpoint=receiver.traces_url, compression=compression, timeout=5)
    provider = TracerProvider(resource=Resource.create({"service.name": "spawn-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otel_spawn.tests")
    try:
        with tracer.start_as_current_span("orchestrate", attributes={"spawn.agents": 3}) as parent:
            linked = parent.get_span_context()
            with tracer.start_as_current_span(
                "agent.run", links=[Link(linked, {"link.kind": "follows"})]
            ) as child:
                child.set_attribute("agent.name", "planner")
                child.set_attribute("agent.ratio", 0.5)
                child.set_attribute("agent.ok", False)
                child.set_attribute("agent.tags", ["a", "b"])
                child.add_event("tool.call", {"tool.name": "grep", "tool.args": [1, 2]})
                child.set_status(StatusCode.ERROR, "boom")
    finally:
        provider.shutdown()


def test_otlp_receiver_decodes_spans_from_the_real_exporter(otlp_receiver: OtlpReceiver) -> None:
    """Spans from the real OTLPSpanExporter keep names, parentage, attributes, events, links, resource."""
    export_with_real_sdk(otlp_receiver)
    assert otlp_receiver.wait_for_spans(2, timeout=5)

    parent, child = otlp_receiver.span("orchestrate"), otlp_receiver.span("agent.run")
    assert (len(parent.trace_id), len(parent.span_id)) == (32, 16)
    assert (parent.parent_span_id, child.parent_span_id) == ("", parent.span_id)
    assert child.trace_id == parent.trace_id
    assert (parent.kind, parent.attributes) == ("INTERNAL", {"spawn.agents": 3})
    assert child.attributes == {
        "agent.name": "planner",
        "agent.ratio": 0.5,
        "agent.ok": False,
        "agent.tags": ["a", "b"],
    }
    assert child.events == [("tool.call", {"tool.name": "grep", "tool.args": [1, 2]})]
    assert (child.status_code, child.status_message, parent.status_code) == ("ERROR", "boom", "UNSET")
    assert [(link.span_id, link.attributes) for link in child.links] == [
        (parent.span_id, {"link.kind": "follows"})
    ]
    assert parent.resource["service.name"] == "spawn-test"
    assert parent.scope_name == "otel_spawn.tests"
    assert 0 < child.start_time_unix_nano <= child.end_time_unix_nano
    assert {r.headers["content-type"] for r in otlp_receiver.requests} == {"application/x-protobuf"}


def test_otlp_receiver_accepts_gzip(otlp_receiver: OtlpReceiver) -> None:
    """Gzip-compressed exports are decoded too."""
    export_with_real_sdk(otlp_receiver, Compression.Gzip)
    assert otlp_receiver.wait_for_spans(2, timeout=5)

    assert {r.headers.get("content-encoding") for r in otlp_receiver.requests} == {"gzip"}
    assert sorted(s.name for s in otlp_receiver.spans) == ["agent.run", "orchestrate"]


def test_otlp_receiver_rejects_json_with_415(otlp_receiver: OtlpReceiver) -> None:
    """OTLP/JSON is not supported: 415, and no spans are recorded."""
    response = httpx.post(otlp_receiver.traces_url, json={"resourceSpans": []})
    assert response.status_code == 415
    assert otlp_receiver.spans == []


def test_otlp_receiver_rejects_undecodable_protobuf_with_400(otlp_receiver: OtlpReceiver) -> None:
    """A protobuf body that does not parse gets 400."""
    headers = {"Content-Type": "application/x-protobuf"}
    response = httpx.post(otlp_receiver.traces_url, content=b"\xff\xff\xff\xff", headers=headers)
    assert response.status_code == 400


def test_otlp_receiver_can_be_scripted(otlp_receiver: OtlpReceiver) -> None:
    """The receiver takes the same fault script as the capture server."""
    otlp_receiver.script(Status(503, retry_after="2"))
    response = httpx.post(
        otlp_receiver.traces_url, content=b"", headers={"Content-Type": "application/x-protobuf"}
    )
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")


def test_any_value_converts_every_kind() -> None:
    """AnyValue scalars, bytes, arrays and key-value lists become plain Python values."""
    nested = KeyValueList(values=[KeyValue(key="k", value=AnyValue(int_value=1))])
    array = ArrayValue(values=[AnyValue(string_value="s"), AnyValue(kvlist_value=nested)])
    assert any_value(AnyValue(array_value=array)) == ["s", {"k": 1}]
    assert any_value(AnyValue(bytes_value=b"\x00")) == b"\x00"
    assert any_value(AnyValue(double_value=1.5)) == 1.5
    assert any_value(AnyValue(bool_value=True)) is True
    assert any_value(AnyValue()) is None


# --- conftest isolation --------------------------------------------------------------------------

POLLUTING = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_POSTHOG_API_KEY",
    "TRACEPARENT",
    "DO_NOT_TRACK",
    "HTTP_PROXY",
)


@pytest.fixture(scope="class")
def _polluted_environment() -> Iterator[None]:
    """Set variables before the function-scoped isolation runs, as a developer's shell might."""
    with pytest.MonkeyPatch.context() as mp:
        for name in POLLUTING:
            mp.setenv(name, "polluted")
        yield


@pytest.mark.usefixtures("_polluted_environment")
class TestIsolatedHome:
    def test_environment_is_cleaned(self) -> None:
        """Telemetry, context and proxy variables from the outer environment are removed for the test."""
        assert [name for name in POLLUTING if name in os.environ] == []

    def test_home_and_cwd_are_fresh(self, tmp_path: Path) -> None:
        """OTEL_SPAWN_HOME is an empty directory under tmp_path, and the cwd is tmp_path."""
        home = Path(os.environ["OTEL_SPAWN_HOME"])
        assert home.parent == tmp_path
        assert list(home.iterdir()) == []
        assert Path.cwd() == tmp_path
