"""Real HTTP servers on 127.0.0.1 for wire-level tests: a PostHog capture endpoint and an OTLP receiver.

Both record what they receive and can be scripted to misbehave, one behaviour per request:
`Status(503, retry_after="2")`, `AcceptThenDrop()`, `Hang(seconds)` and `Reset()`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

HOST = "127.0.0.1"
MiB = 1024 * 1024
CAPTURE_PATHS = frozenset({"/batch/", "/batch", "/capture/", "/capture"})
OTLP_TRACES_PATH = "/v1/traces"


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- scripted behaviours -------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Answer with this status (and `Retry-After` if given) without processing the body."""

    code: int
    retry_after: str | int | None = None


@dataclass(frozen=True)
class AcceptThenDrop:
    """Process and store the request, then close the connection without any response."""


@dataclass(frozen=True)
class Hang:
    """Read the request, store nothing, answer nothing for `seconds` (or until close()), then hang up."""

    seconds: float = 10.0


@dataclass(frozen=True)
class Reset:
    """Close the connection with a TCP reset before reading the body."""


Behaviour: TypeAlias = "Status | AcceptThenDrop | Hang | Reset"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived. `status` is None when no response was sent."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body_size: int  # raw bytes on the wire
    body: Any  # decoded body (JSON value or ExportTraceServiceRequest); None if not decodable
    status: int | None
    behaviour: str  # "ok", "status", "accept_then_drop", "hang" or "reset"
    received_at: float  # time.time()
    received_monotonic: float  # time.monotonic()


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    decoded: Any = None  # the request body, decoded, for RecordedRequest.body
    items: tuple[Any, ...] = ()  # what to store: accepted events or received spans


def _json_reply(status: int, payload: object, decoded: Any = None, items: tuple[Any, ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), decoded=decoded, items=items)


# --- shared server machinery ---------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: _BaseServer

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skips HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = HOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # connection trouble is expected in these tests
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30.0  # backstop for idle keep-alive connections
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        self.server.owner._untrack(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        headers = {name.lower(): value for name, value in self.headers.items()}
        if path not in owner.paths:
            self._send(_json_reply(404, {"error": f"unknown path {path}"}))
            return
        behaviour = owner._next_behaviour()
        if isinstance(behaviour, Reset):
            owner._record(path, headers, b"", None, None, "reset")
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        raw = self._read_body(headers)
        reply = owner._process(headers, raw)  # no side effects: _record stores reply.items
        if isinstance(behaviour, Status):
            owner._record(path, headers, raw, reply.decoded, behaviour.code, "status")
            extra = {} if behaviour.retry_after is None else {"Retry-After": str(behaviour.retry_after)}
            self._send(_json_reply(behaviour.code, {"error": "injected"}), extra)
        elif isinstance(behaviour, Hang):
            owner._record(path, headers, raw, reply.decoded, None, "hang")
            owner._stopping.wait(behaviour.seconds)
            self.close_connection = True
        elif isinstance(behaviour, AcceptThenDrop):
            owner._record(path, headers, raw, reply.decoded, None, "accept_then_drop", reply.items)
            self.close_connection = True
        else:
            owner._record(path, headers, raw, reply.decoded, reply.status, "ok", reply.items)
            self._send(reply)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(headers.get("content-length", "0")))

    def _send(self, reply: _Reply, extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


_S = TypeVar("_S", bound="_BaseServer")


class _BaseServer:
    paths: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._items: list[Any] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd = _HttpServer((HOST, 0), _Handler)
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    def script(self, *behaviours: Behaviour | int) -> None:
        """Queue behaviours for the next requests, one each (an int means `Status(int)`); then "ok"."""
        with self._cond:
            self._script.extend(Status(b) if isinstance(b, int) else b for b in behaviours)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """True once at least `n` requests were recorded, False after `timeout` seconds."""
        return self._wait(lambda: len(self._requests) >= n, timeout)

    def clear(self) -> None:
        """Forget everything recorded so far (the script is kept)."""
        with self._cond:
            self._requests.clear()
            self._items.clear()

    def close(self) -> None:
        """Stop at once: wake hanging handlers, hang up keep-alive connections, wait (bounded). Idempotent."""
        with self._cond:
            if self._stopping.is_set():
                return
            self._stopping.set()
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        if not self._wait(lambda: not self._connections, timeout=5.0):  # daemon handler threads: not joined
            raise RuntimeError(f"{len(self._connections)} request handler(s) still running after close()")

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # hooks for subclasses and the handler

    def _process(self, headers: dict[str, str], raw: bytes) -> _Reply:
        raise NotImplementedError

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _next_behaviour(self) -> Behaviour | None:
        with self._cond:
            return self._script.popleft() if self._script else None

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        body: Any,
        status: int | None,
        behaviour: str,
        items: tuple[Any, ...] = (),
    ) -> None:
        request = RecordedRequest(
            path, headers, len(raw), body, status, behaviour, time.time(), time.monotonic()
        )
        with self._cond:  # the request and what it stored become visible together
            self._requests.append(request)
            self._items.extend(items)
            self._cond.notify_all()

    def _track(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.add(conn)
            if self._stopping.is_set():
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _untrack(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.discard(conn)
            self._cond.notify_all()


def _gunzip_if_needed(headers: dict[str, str], raw: bytes) -> bytes:
    if headers.get("content-encoding", "").lower() == "gzip" or raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return raw


# --- PostHog capture -----------------------------------------------------------------------------


class CaptureServer(_BaseServer):
    """A PostHog capture endpoint (`POST /batch/`) that validates like PostHog and records accepted events.

    `api_keys`: if given, only these project keys are accepted (others get 401).
    """

    paths = CAPTURE_PATHS

    def __init__(
        self,
        *,
        api_keys: Collection[str] | None = None,
        max_body_bytes: int = 20 * MiB,
        max_event_bytes: int = 1_000_000,
    ) -> None:
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        super().__init__()

    @property
    def events(self) -> list[dict[str, Any]]:
        """Accepted events, in arrival order."""
        with self._cond:
            return list(self._items)

    def uuids(self) -> list[str | None]:
        """The `uuid` of every accepted event, in order."""
        return [event.get("uuid") for event in self.events]

    def wait_for_events(self, n: int, timeout: float = 5.0) -> bool:
        """True once at least `n` events were accepted, False after `timeout` seconds."""
        return self._wait(lambda: len(self._items) >= n, timeout)

    def _process(self, headers: dict[str, str], raw: bytes) -> _Reply:
        try:
            data = _gunzip_if_needed(headers, raw)
        except (OSError, EOFError):
            return _json_reply(400, {"error": "invalid gzip"})
        if len(data) > self.max_body_bytes:  # the limit applies to the decompressed body too
            return _json_reply(413, {"error": "payload too large"})
        try:
            body = json.loads(data)
        except ValueError:
            return _json_reply(400, {"error": "invalid JSON"})
        status, payload, accepted = self._validate(body)
        return _json_reply(status, payload, decoded=body, items=accepted)

    def _validate(self, body: Any) -> tuple[int, dict[str, str], tuple[Any, ...]]:
        """(status, response payload, events to store) for a decoded body, as PostHog would decide."""
        if not isinstance(body, dict):
            return 400, {"error": "body must be a JSON object"}, ()
        key = body.get("api_key")
        if not isinstance(key, str) or not key.startswith("phc_") or len(key) == len("phc_"):
            return 401, {"error": "missing or invalid project API key"}, ()
        if self.api_keys is not None and key not in self.api_keys:
            return 401, {"error": "unknown project API key"}, ()
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return 400, {"error": "batch must be a non-empty list"}, ()
        for index, event in enumerate(batch):
            problem = _event_problem(event)
            if problem:
                return 400, {"error": f"batch[{index}]: {problem}"}, ()
        for index, event in enumerate(batch):
            if len(json.dumps(event, separators=(",", ":")).encode()) > self.max_event_bytes:
                return 413, {"error": f"batch[{index}]: event too large"}, tuple(batch[:index])
        return 200, {"status": "Ok"}, tuple(batch)


def _event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "event must be an object"
    name = event.get("event")
    if not isinstance(name, str) or not name:
        return "missing event name"
    properties = event.get("properties", {})
    if not isinstance(properties, dict):
        return "properties must be an object"
    distinct_id = event.get("distinct_id", properties.get("distinct_id"))
    if isinstance(distinct_id, bool) or not isinstance(distinct_id, (str, int, float)) or distinct_id == "":
        return "missing distinct_id"
    return None


# --- OTLP/HTTP traces ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span decoded from OTLP protobuf; ids are lower-case hex, kind and status names are short."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" or "UNSPECIFIED"
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: str  # "UNSET", "OK" or "ERROR"
    status_message: str
    links: list[ReceivedLink]
    resource: dict[str, Any]
    scope_name: str


def any_value(value: AnyValue) -> Any:
    """Convert an OTLP AnyValue to a Python value (arrays to lists, key-value lists to dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attributes}


def _span_records(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=attributes_dict(span.attributes),
                        events=[(e.name, attributes_dict(e.attributes)) for e in span.events],
                        status_code=SpanStatus.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        status_message=span.status.message,
                        links=[
                            ReceivedLink(
                                link.trace_id.hex(), link.span_id.hex(), attributes_dict(link.attributes)
                            )
                            for link in span.links
                        ],
                        resource=resource,
                        scope_name=scope_spans.scope.name,
                    )
                )
    return spans


class OtlpReceiver(_BaseServer):
    """An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf, optionally gzip) that decodes spans."""

    paths = frozenset({OTLP_TRACES_PATH})

    @property
    def traces_url(self) -> str:
        return self.url + OTLP_TRACES_PATH

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Received spans, in arrival order."""
        with self._cond:
            return list(self._items)

    def span(self, name: str) -> ReceivedSpan:
        """The one received span called `name` (AssertionError if there are none or several)."""
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, f"expected one span named {name!r}, got {len(found)}"
        return found[0]

    def wait_for_spans(self, n: int, timeout: float = 5.0) -> bool:
        """True once at least `n` spans were received, False after `timeout` seconds."""
        return self._wait(lambda: len(self._items) >= n, timeout)

    def _process(self, headers: dict[str, str], raw: bytes) -> _Reply:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-protobuf":
            return _json_reply(415, {"error": "only application/x-protobuf is supported"})
        try:
            request = ExportTraceServiceRequest.FromString(_gunzip_if_needed(headers, raw))
        except Exception:  # protobuf's DecodeError, gzip errors
            return _json_reply(400, {"error": "invalid protobuf or gzip"})
        ok = ExportTraceServiceResponse().SerializeToString()
        return _Reply(200, ok, "application/x-protobuf", decoded=request, items=tuple(_span_records(request)))
