"""Translate one finished span into PostHog product events. Pure: no I/O, no clock, no globals.

Only spans the funnel API marked (`otel_spawn.kind`) produce events; every other span is a trace
span only. The event uuid is derived from the span, so exporting a span twice never counts twice.

Translation works on a `SpanRecord`: the few plain fields of a span it reads. The durable spool
journals records (cheap on the host's thread) and translates them later, on the sender's thread
or in whichever process picks up a killed run's journal, with the same result.
"""

from __future__ import annotations

import functools
import marshal
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, Status, StatusCode
from opentelemetry.util.types import Attributes

from otel_spawn import _constants as c
from otel_spawn._posthog import Event, Outgoing, encode_json

_UUID_NAMESPACE = uuid.UUID("6f1b1b5e-2c1f-4d0e-9a53-0e1f5a7c9d21")
_NAMESPACE_BYTES = _UUID_NAMESPACE.bytes
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<func>.*)$', re.MULTILINE)
_NOT_APP = ("site-packages", "dist-packages", "/lib/python", "\\lib\\", "<frozen", "<string>")


@dataclass(frozen=True)
class EventContext:
    """What every event of this process shares: who, and the static properties."""

    distinct_id: str
    prefix: str = "funnel_"
    static: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def _encoded(self) -> tuple[frozenset[str], str, str]:
        """The static keys, the static properties as JSON members, and the distinct_id as JSON."""
        return frozenset(self.static), encode_json(dict(self.static))[1:-1], encode_json(self.distinct_id)

    @cached_property
    def _step_cache(self) -> dict[bytes, _StepJson]:
        """`encode_record`'s completed steps, for events of this context only."""
        return {}


def event_uuid(trace_id: int, span_id: int, event: str) -> str:
    """A stable uuid for (span, event): a re-export resends the identical uuid."""
    return _uuid5(_NAMESPACE_BYTES + f"{trace_id:032x}-{span_id:016x}-{event}".encode())


def _uuid5(namespace_and_name: bytes) -> str:
    """`str(uuid.uuid5(namespace, name))`, computed without building UUID objects (it runs per event):
    the SHA-1's first 32 hex digits, two of them replaced by the version (5) and the variant."""
    h = _sha1()(namespace_and_name).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}  # RFC 4122: 0b10xx


@functools.cache
def _sha1() -> Callable[[bytes], Any]:
    """hashlib.sha1, imported on first use: hashlib loads OpenSSL (~3 ms of start-up) and only the
    sender thread needs it."""
    import hashlib

    return hashlib.sha1


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted, and its text


def iso_timestamp(ns: int) -> str:
    """Epoch nanoseconds -> ISO-8601 UTC with microseconds (as `datetime.isoformat()` writes it)."""
    global _second
    seconds, rest = divmod(ns, 1_000_000_000)
    if _second[0] != seconds:
        _second = (seconds, datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()[:19])
    micro = rest // 1000
    return f"{_second[1]}.{micro:06d}+00:00" if micro else f"{_second[1]}+00:00"


def _ms(ns: int) -> int:
    return round(ns / 1_000_000)


def _app_attributes(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The funnel context and the product properties among a span's attributes (prefixes removed)."""
    context: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in attrs.items():
        if key.startswith(c.CONTEXT_PREFIX):
            context[key[len(c.CONTEXT_PREFIX) :]] = list(value) if isinstance(value, tuple) else value
        elif key.startswith(c.PROPERTY_PREFIX):
            properties[key[len(c.PROPERTY_PREFIX) :]] = list(value) if isinstance(value, tuple) else value
    return context, properties


def exception_frames(stacktrace: str) -> list[dict[str, Any]]:
    """Frames of a formatted Python traceback, oldest first, in PostHog's raw-frame format."""
    return [
        {
            "platform": "python",
            "filename": m["file"],
            "abs_path": m["file"],
            "lineno": int(m["line"]),
            "function": m["func"].strip(),
            "in_app": not any(marker in m["file"] for marker in _NOT_APP),
        }
        for m in _FRAME.finditer(stacktrace)
    ]


def exception_properties(
    exc_type: str, message: str, stacktrace: str, *, handled: bool = False
) -> dict[str, Any]:
    """PostHog error-tracking properties (`$exception_list`, `$exception_level`)."""
    return {
        "$exception_list": [
            {
                "type": exc_type,
                "value": message,
                "mechanism": {"handled": handled, "type": "generic", "synthetic": False},
                "stacktrace": {"type": "raw", "frames": exception_frames(stacktrace)},
            }
        ],
        "$exception_level": "error",
    }


# A finished span as translation sees it, JSON-ready: t trace id, s span id, n name, b/e start/end
# (epoch ns), a attributes, x the `exception` event's attributes (or None), d the status description.
SpanRecord = dict[str, Any]
# The same values as a tuple, in this order: how the host's thread hands a record to the journal
# (marshal encodes a tuple in ~60% of the instructions a dict takes, at every step's end).
RECORD_FIELDS = ("t", "s", "n", "b", "e", "a", "x", "d")
SpanEntry = tuple[int, int, str, int | None, int, dict[str, Any], dict[str, Any] | None, str | None]


def plain_attributes(attributes: Attributes) -> dict[str, Any]:
    """A span's (or event's, link's) attributes as a plain dict, cheaply: reading the SDK's
    BoundedAttributes item by item calls a Python method per item; its `copy()` (which a
    MappingProxyType's `copy()` calls) copies the dict underneath."""
    if type(attributes) is BoundedAttributes or isinstance(attributes, MappingProxyType):  # a span's
        copy = attributes.copy()
        if type(copy) is dict:
            return copy
    return dict(attributes or {})


SpanFields = tuple[
    str,
    SpanContext | None,
    dict[str, Any],
    Status,
    int | None,
    int | None,
    Sequence[SpanEvent],
    Sequence[Link],
]


def span_fields(span: ReadableSpan) -> SpanFields:
    """A finished span's name, context, attributes (a plain copy), status, start, end, events and links.

    On the host's thread at every step's end, twice (the scrub check, then the record). The SDK's
    own ReadableSpan is read from the fields behind its properties: each property read is a Python
    call (events and links even copy), and they were most of what reading a span cost. Any other
    class (a subclass may override a property), or fields the SDK renamed, go through the properties."""
    if type(span) is ReadableSpan:
        try:
            attributes = plain_attributes(span._attributes)
            start, end, events, links = span._start_time, span._end_time, span._events, span._links
            return span._name, span._context, attributes, span._status, start, end, events, links
        except AttributeError:
            pass
    attributes = plain_attributes(span.attributes)
    start, end, events, links = span.start_time, span.end_time, span.events, span.links
    return span.name, span.context, attributes, span.status, start, end, events, links


def span_entry(span: ReadableSpan) -> SpanEntry | None:
    """The record of a span the funnel API marked, as a tuple (`RECORD_FIELDS`), or None for a
    trace-only span."""
    name, context, attributes, status, start, end, events, _ = span_fields(span)
    if c.ATTR_KIND not in attributes or context is None or end is None:
        return None
    exception = description = None  # a status has a description only with ERROR
    if status.status_code is StatusCode.ERROR:  # the funnel API records exceptions on failed spans only
        description = status.description
        for event in events:
            if event.name == "exception":
                exception = plain_attributes(event.attributes)
                break
    return (context.trace_id, context.span_id, name, start, end, attributes, exception, description)


def as_record(entry: SpanEntry | SpanRecord) -> SpanRecord:
    """A record from its entry (journals written before entries were tuples hold the record itself)."""
    return entry if isinstance(entry, dict) else dict(zip(RECORD_FIELDS, entry, strict=True))


def span_record(span: ReadableSpan) -> SpanRecord | None:
    """The record of a span the funnel API marked, or None for a trace-only span."""
    entry = span_entry(span)
    return None if entry is None else as_record(entry)


def translate(span: ReadableSpan, ctx: EventContext) -> list[Event]:
    """The product events one finished span stands for (often none)."""
    record = span_record(span)
    return [] if record is None else translate_record(record, ctx)


def translate_record(record: SpanRecord, ctx: EventContext) -> list[Event]:
    """The product events of one span record (often none)."""
    return [
        {
            "event": name,
            "distinct_id": ctx.distinct_id,
            "timestamp": timestamp,
            "uuid": uid,
            "properties": {**ctx.static, **properties},
        }
        for name, timestamp, uid, properties in _parts(record, ctx)
    ]


def translate_entries(entries: Sequence[SpanEntry | SpanRecord], ctx: EventContext) -> list[Event]:
    """The product events of records in their entry form (or as records)."""
    return [event for entry in entries for event in translate_record(as_record(entry), ctx)]


def encode_record(record: SpanRecord, ctx: EventContext) -> list[Outgoing]:
    """`translate_record`, encoded: the same JSON text as `encode_json(event)`.

    The static properties are encoded once per context. Most records are completed steps whose
    attributes repeat from record to record of a funnel run: for those the context caches the JSON
    text of the event around what the record's s, b and e decide (uuid, timestamp, elapsed_ms,
    step_duration_ms), from the second record of the same trace id and attributes on. The key is
    their marshal bytes in format 0 (no references, no interning flags: equal values, equal bytes),
    and equal bytes mean equal values of equal types, so a hit is exact where `==` is not
    (1 == 1.0 == True, 0.0 == -0.0). At most `_STEPS_CACHED` keys, then the cache starts afresh; it
    holds nothing the records do not. Any other record takes the general path."""
    attrs: dict[str, Any] = record["a"]
    if attrs.get(c.ATTR_KIND) != c.KIND_STEP:
        return _encode_parts(record, ctx)
    try:
        key = marshal.dumps((record["t"], attrs), 0)
    except ValueError:  # a value marshal cannot write (none in a record read back from the journal)
        return _encode_parts(record, ctx)
    cache = ctx._step_cache
    step = cache.get(key)
    if step is None:  # the key's first record: the general path (a one-off costs no more than that)
        if len(cache) >= _STEPS_CACHED:
            cache.clear()
        cache[key] = _ONCE
        return _encode_parts(record, ctx)
    if step is _ONCE:  # its second: worth preparing the rest
        step = cache[key] = _step_json(record, ctx) or _GENERAL
    if step is _GENERAL:
        return _encode_parts(record, ctx)
    uuid_head, uuid_tail, start_ns, head, to_elapsed, to_duration, tail = step
    end: int = record["e"]
    uid = _uuid5(b"%b%016x%b" % (uuid_head, record["s"], uuid_tail))
    elapsed, duration = max(0, _ms(end - start_ns)), _ms(end - (record["b"] or end))
    body = f'{head}{iso_timestamp(end)}","uuid":"{uid}{to_elapsed}{elapsed}{to_duration}{duration}{tail}'
    return [Outgoing(uid, body)]


_STEPS_CACHED = 256  # a few funnel runs' steps (an entry: 1-2 KB)


class _StepJson(NamedTuple):
    """A completed step's event, but for what the record's s, b and e decide."""

    uuid_head: bytes  # what the uuid hashes before the span id: namespace and trace id,
    uuid_tail: bytes  # ... and after it: the event's name
    start_ns: int  # the funnel's start
    head: str  # the JSON up to the timestamp,
    to_elapsed: str  # from the uuid to elapsed_ms,
    to_duration: str  # from there to step_duration_ms,
    tail: str  # and the rest


_ONCE = _StepJson(b"", b"", 0, "", "", "", "")  # in the cache (compared by identity): a key seen once,
_GENERAL = _StepJson(b"", b"", 0, "", "", "", "")  # ... a key whose records take the general path


def _step_json(record: SpanRecord, ctx: EventContext) -> _StepJson | None:
    """What `_parts` and `encode_record` make of a step record, as `_StepJson`; None unless it is a
    completed step's with no key twice among the static properties, its context, the keys `_parts`
    adds and its properties (the merges there decide which value wins, and where)."""
    attrs: Mapping[str, Any] = record["a"]
    start_ns = attrs.get(c.ATTR_FUNNEL_START)
    if not isinstance(start_ns, int) or c.ATTR_STEP not in attrs:  # (else `n` names it: not in the key)
        return None
    if attrs.get(c.ATTR_OUTCOME) not in (None, "completed"):
        return None
    context, properties = _app_attributes(attrs)
    source = {"source": attrs[c.ATTR_SOURCE]} if isinstance(attrs.get(c.ATTR_SOURCE), str) else {}
    keys = [*ctx.static, *context, "funnel", "funnel_id", "trace_id", "elapsed_ms", *source]
    keys += ["step", "step_duration_ms", *properties]
    if len(set(keys)) != len(keys):
        return None
    static_json, distinct_id = ctx._encoded[1:]
    trace_id = f"{record['t']:032x}"
    step = str(attrs[c.ATTR_STEP])
    name = f"{ctx.prefix}{step}"
    common = {**context, "funnel": attrs.get(c.ATTR_FUNNEL), "funnel_id": trace_id, "trace_id": trace_id}
    static = f"{static_json}," if static_json else ""
    return _StepJson(
        uuid_head=_NAMESPACE_BYTES + f"{trace_id}-".encode(),
        uuid_tail=f"-{name}".encode(),
        start_ns=start_ns,
        head=f'{{"event":{encode_json(name)},"distinct_id":{distinct_id},"timestamp":"',
        to_elapsed=f'","properties":{{{static}{encode_json(common)[1:-1]},"elapsed_ms":',
        to_duration=f'{_members(source)},"step":{encode_json(step)},"step_duration_ms":',
        tail=f"{_members(properties)}}}}}",
    )


def _members(properties: dict[str, Any]) -> str:
    """`properties` as JSON object members, each after a comma."""
    return f",{encode_json(properties)[1:-1]}" if properties else ""


def _encode_parts(record: SpanRecord, ctx: EventContext) -> list[Outgoing]:
    """`encode_record`'s general path: any record's events, from `_parts`."""
    static_keys, static_json, distinct_id = ctx._encoded
    out = []
    for name, timestamp, uid, properties in _parts(record, ctx):
        if not static_keys.isdisjoint(properties):  # a property overrides a static one: merge first
            event = {"event": name, "distinct_id": ctx.distinct_id, "timestamp": timestamp, "uuid": uid}
            out.append(Outgoing(uid, encode_json({**event, "properties": {**ctx.static, **properties}})))
            continue
        members = encode_json(properties)[1:-1]
        joined = f"{static_json},{members}" if static_json and members else static_json or members
        out.append(
            Outgoing(
                uid,
                f'{{"event":{encode_json(name)},"distinct_id":{distinct_id},"timestamp":"{timestamp}",'
                f'"uuid":"{uid}","properties":{{{joined}}}}}',
            )
        )
    return out


def _parts(record: SpanRecord, ctx: EventContext) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(event name, timestamp, uuid, properties other than the static ones) of each event."""
    attrs: Mapping[str, Any] = record["a"]
    kind = attrs.get(c.ATTR_KIND)
    start_ns = attrs.get(c.ATTR_FUNNEL_START)
    in_funnel = isinstance(start_ns, int)
    if kind is None or not (in_funnel or kind in (c.KIND_EVENT, c.KIND_ERROR)):
        return []
    end: int = record["e"]
    trace_id = f"{record['t']:032x}"
    context, properties = _app_attributes(attrs)
    common: dict[str, Any] = {
        **context,
        "funnel": attrs.get(c.ATTR_FUNNEL),
        "funnel_id": trace_id if in_funnel else None,
        "trace_id": trace_id,
    }
    if isinstance(start_ns, int):
        common["elapsed_ms"] = max(0, _ms(end - start_ns))
    if isinstance(attrs.get(c.ATTR_SOURCE), str):
        common["source"] = attrs[c.ATTR_SOURCE]
    last = attrs.get(c.ATTR_LAST_STEP)
    outcome = attrs.get(c.ATTR_OUTCOME)
    step = str(attrs.get(c.ATTR_STEP, record["n"]))
    exc: Mapping[str, Any] | None = record["x"]
    out: list[tuple[str, dict[str, Any]]] = []

    if kind == c.KIND_EVENT:
        out.append((step, properties))
    elif kind == c.KIND_STEP:
        if outcome in (None, "completed"):
            props = {"step": step, "step_duration_ms": _ms(end - (record["b"] or end))}
            out.append((f"{ctx.prefix}{step}", {**props, **properties}))
        elif exc is not None:
            out.append(("$exception", {"step": step, **_exception_props(exc)}))
    elif kind == c.KIND_ERROR and exc is not None:
        out.append(("$exception", _exception_props(exc)))
    elif kind == c.KIND_FUNNEL and outcome == "failed":
        if exc is not None:  # raised outside any step
            out.append(("$exception", _exception_props(exc)))
        failed = attrs.get(c.ATTR_FAILED_STEP) or None
        error_type = str(exc.get("exception.type", "")) if exc else _error_type(record["d"])
        props = {"failed_step": failed, "last_completed_step": last, "error_type": error_type}
        out.append((f"{ctx.prefix}failed", props))
    elif kind == c.KIND_FUNNEL and outcome == "abandoned":
        at_step = attrs.get(c.ATTR_FAILED_STEP) or None
        out.append((f"{ctx.prefix}abandoned", {"at_step": at_step, "last_completed_step": last}))

    timestamp = iso_timestamp(end)
    return [
        (name, timestamp, event_uuid(record["t"], record["s"], name), {**common, **props})
        for name, props in out
    ]


def _exception_props(exc: Mapping[str, Any]) -> dict[str, Any]:
    return exception_properties(
        str(exc.get("exception.type", "Exception")),
        str(exc.get("exception.message", "")),
        str(exc.get("exception.stacktrace", "")),
    )


def _error_type(description: str | None) -> str:
    description = description or ""
    return description.split(":", 1)[0] if ":" in description else "Exception"
