"""Translate one finished span into PostHog product events. Pure: no I/O, no clock, no globals.

Only spans the funnel API marked (`otel_spawn.kind`) produce events; every other span is a trace
span only. The event uuid is derived from the span, so exporting a span twice never counts twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import Attributes

from otel_spawn import _constants as c
from otel_spawn._posthog import Event

_UUID_NAMESPACE = uuid.UUID("6f1b1b5e-2c1f-4d0e-9a53-0e1f5a7c9d21")
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]*)", line (?P<line>\d+), in (?P<func>.*)$', re.MULTILINE)
_NOT_APP = ("site-packages", "dist-packages", "/lib/python", "\\lib\\", "<frozen", "<string>")


@dataclass(frozen=True)
class EventContext:
    """What every event of this process shares: who, and the static properties."""

    distinct_id: str
    prefix: str = "funnel_"
    static: Mapping[str, Any] = field(default_factory=dict)


def event_uuid(trace_id: int, span_id: int, event: str) -> str:
    """A stable uuid for (span, event): a re-export resends the identical uuid."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{trace_id:032x}-{span_id:016x}-{event}"))


def iso_timestamp(ns: int) -> str:
    """Epoch nanoseconds -> ISO-8601 UTC with microseconds."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000).isoformat()


def _ms(ns: int) -> int:
    return round(ns / 1_000_000)


def _strip(attrs: Attributes, prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: _plain(v) for k, v in (attrs or {}).items() if k.startswith(prefix)}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


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


def _exception_event(span: ReadableSpan) -> Mapping[str, Any] | None:
    for event in span.events:
        if event.name == "exception":
            return event.attributes or {}
    return None


def translate(span: ReadableSpan, ctx: EventContext) -> list[Event]:
    """The product events one finished span stands for (often none)."""
    attrs = span.attributes or {}
    kind = attrs.get(c.ATTR_KIND)
    start_ns = attrs.get(c.ATTR_FUNNEL_START)
    in_funnel = isinstance(start_ns, int)
    if (
        kind is None
        or span.context is None
        or span.end_time is None
        or not (in_funnel or kind in (c.KIND_EVENT, c.KIND_ERROR))
    ):
        return []
    end = span.end_time
    common: dict[str, Any] = {
        **ctx.static,
        **_strip(attrs, c.CONTEXT_PREFIX),
        "funnel": attrs.get(c.ATTR_FUNNEL),
        "funnel_id": f"{span.context.trace_id:032x}" if in_funnel else None,
        "trace_id": f"{span.context.trace_id:032x}",
    }
    if isinstance(start_ns, int):
        common["elapsed_ms"] = max(0, _ms(end - start_ns))
    if isinstance(attrs.get(c.ATTR_SOURCE), str):
        common["source"] = attrs[c.ATTR_SOURCE]
    last = attrs.get(c.ATTR_LAST_STEP)
    outcome = attrs.get(c.ATTR_OUTCOME)
    step = str(attrs.get(c.ATTR_STEP, span.name))
    out: list[tuple[str, dict[str, Any]]] = []

    if kind == c.KIND_EVENT:
        out.append((step, _strip(attrs, c.PROPERTY_PREFIX)))
    elif kind == c.KIND_STEP:
        exc = _exception_event(span)
        if outcome in (None, "completed"):
            props = {"step": step, "step_duration_ms": _ms(end - (span.start_time or end))}
            out.append((f"{ctx.prefix}{step}", {**props, **_strip(attrs, c.PROPERTY_PREFIX)}))
        elif exc is not None:
            out.append(("$exception", {"step": step, **_exception_props(exc)}))
    elif kind == c.KIND_ERROR and (exc := _exception_event(span)) is not None:
        out.append(("$exception", _exception_props(exc)))
    elif kind == c.KIND_FUNNEL and outcome == "failed":
        exc = _exception_event(span)
        if exc is not None:  # raised outside any step
            out.append(("$exception", _exception_props(exc)))
        failed = attrs.get(c.ATTR_FAILED_STEP) or None
        error_type = str(exc.get("exception.type", "")) if exc else _error_type(span)
        props = {"failed_step": failed, "last_completed_step": last, "error_type": error_type}
        out.append((f"{ctx.prefix}failed", props))
    elif kind == c.KIND_FUNNEL and outcome == "abandoned":
        at_step = attrs.get(c.ATTR_FAILED_STEP) or None
        out.append((f"{ctx.prefix}abandoned", {"at_step": at_step, "last_completed_step": last}))

    return [
        {
            "event": name,
            "distinct_id": ctx.distinct_id,
            "timestamp": iso_timestamp(end),
            "uuid": event_uuid(span.context.trace_id, span.context.span_id, name),
            "properties": {**common, **props},
        }
        for name, props in out
    ]


def _exception_props(exc: Mapping[str, Any]) -> dict[str, Any]:
    return exception_properties(
        str(exc.get("exception.type", "Exception")),
        str(exc.get("exception.message", "")),
        str(exc.get("exception.stacktrace", "")),
    )


def _error_type(span: ReadableSpan) -> str:
    description = span.status.description or ""
    return description.split(":", 1)[0] if ":" in description else "Exception"
