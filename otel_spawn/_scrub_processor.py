"""A span processor that hands only scrubbed spans to the processors behind it.

The span given to `on_end` is shared with every other processor of the provider and must not be
changed, so when something has to be redacted this builds a new `ReadableSpan` (same context,
parent, kind, times, links, scope; scrubbed name, attributes, events, status description, link
attributes and resource) and passes that on. A clean span is passed on as the same object.
Scrubbed spans carry `otel_spawn.scrubbed = "rule:count,..."` (names and counts, never values).

Errors never reach the host: if scrubbing fails the span is dropped (never forwarded unscrubbed)
with a one-time warning, and each downstream call is guarded on its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status

from otel_spawn._constants import ATTR_SCRUBBED
from otel_spawn._guard import report_internal_error
from otel_spawn._translate import plain_attributes, span_fields

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import Span
    from opentelemetry.util.types import Attributes

    from otel_spawn._scrubber import Scrubber

_SEPARATOR = "\x00"
_RESOURCE_CACHE_SIZE = 64
_KEY_CACHE_SIZE = 4096
_CLEAN_CACHE_SIZE = 4096  # strings known clean (step names, outcomes, ...): skipped by the next check
_CLEAN_MAX_LENGTH = 256


class ScrubbingSpanProcessor(SpanProcessor):
    """Scrub each finished span, then hand it to every `downstream` processor."""

    def __init__(self, scrubber: Scrubber, downstream: Sequence[SpanProcessor]) -> None:
        self._scrubber = scrubber
        self._downstream = tuple(downstream)
        # on_start runs on every span: only the processors that do something there are called
        self._starting = tuple(p for p in self._downstream if type(p).on_start is not SpanProcessor.on_start)
        # id(resource) -> (resource, scrubbed resource, counts); keeping the original alive keeps its id.
        self._resources: dict[int, tuple[Resource, Resource, Counter[str]]] = {}
        self._plain_keys: set[str] = set()  # attribute keys known not to be secret-looking
        self._clean: set[str] = set()  # short strings a check found nothing in
        self._clean_spans: set[tuple[Any, ...]] = set()  # (name, description, *values) of clean spans

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._starting:
            self._each("on_start", lambda p: p.on_start(span, parent_context=parent_context), self._starting)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            scrubbed = self.scrub_span(span)
        except Exception as exc:
            report_internal_error("ScrubbingSpanProcessor.on_end (span dropped)", exc)
            return
        failed = None
        for processor in self._downstream:  # the hot path: no closure, no list unless one fails
            try:
                processor.on_end(scrubbed)
            except Exception as exc:
                failed = [*(failed or []), (f"{type(processor).__name__}.on_end", exc)]
        for where, error in failed or ():
            report_internal_error(where, error)

    def shutdown(self) -> None:
        self._each("shutdown", lambda p: p.shutdown())

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        results: list[bool] = []
        self._each("force_flush", lambda p: results.append(bool(p.force_flush(timeout_millis))))
        return len(results) == len(self._downstream) and all(results)

    def scrub_span(self, span: ReadableSpan) -> ReadableSpan:
        """The span itself when nothing needs redacting, else a scrubbed copy."""
        name, _, attributes, status, _, _, events, links = span_fields(span)
        original_resource = span.resource
        resource, counts = self._scrub_resource(original_resource)
        if resource is original_resource and not self._may_need_scrubbing(
            name, attributes, status.description, events, links
        ):
            return span
        counts = counts.copy()
        name, c = self._scrubber.scrub_text(name)
        counts += c
        new_attributes = self._scrub_attributes(attributes, counts)
        events = [self._scrub_event(e, counts) for e in events]
        links = [self._scrub_link(link, counts) for link in links]
        if status.description:
            description, c = self._scrubber.scrub_text(status.description)
            if c:
                counts += c
                status = Status(status.status_code, description)
        if not counts:
            return span
        out_attributes = dict(new_attributes if new_attributes is not None else attributes)
        out_attributes[ATTR_SCRUBBED] = ",".join(f"{rule}:{n}" for rule, n in sorted(counts.items()))
        return ReadableSpan(
            name=name,
            context=span.context,
            parent=span.parent,
            resource=resource,
            attributes=_bounded(out_attributes, span.dropped_attributes),
            events=_bounded_list(events, span.dropped_events),
            links=_bounded_list(links, span.dropped_links),
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _may_need_scrubbing(
        self,
        name: str,
        attributes: dict[str, Any],
        description: str | None,
        events: Sequence[Event],
        links: Sequence[Link],
    ) -> bool:
        """Cheap check: False when no key is secret-looking and one RE2 pass over all strings is clean.

        A span without events or links whose name, description and attribute values are those of one
        found clean before (the steps of a funnel run repeat theirs) is known clean from one lookup.
        Only spans whose every string was already known clean (short: `_CLEAN_MAX_LENGTH`) are kept."""
        key: tuple[Any, ...] | None = None
        if not events and not links:
            try:
                key = (name, description, *attributes.values())
                if key in self._clean_spans and self._plain_keys.issuperset(attributes):
                    return False
            except TypeError:  # a list value: not hashable
                key = None
        texts = [name]
        if description:
            texts.append(description)
        if self._collect(attributes, texts):
            return True
        for event in events if events else ():  # most spans have none: iterating copies (SDK spans)
            texts.append(event.name)
            if event.attributes and self._collect(plain_attributes(event.attributes), texts):
                return True
        for link in links if links else ():
            if link.attributes and self._collect(plain_attributes(link.attributes), texts):
                return True
        clean = self._clean
        if clean.issuperset(texts):  # the usual case: every string was seen before
            if key is not None:
                if len(self._clean_spans) >= _CLEAN_CACHE_SIZE:
                    self._clean_spans.clear()
                self._clean_spans.add(key)
            return False
        fresh = [text for text in texts if text not in clean]
        if self._scrubber.might_match(_SEPARATOR.join(fresh)):
            return True
        if len(self._clean) + len(fresh) > _CLEAN_CACHE_SIZE:
            self._clean.clear()
        self._clean.update(text for text in fresh if len(text) <= _CLEAN_MAX_LENGTH)
        return False

    def _collect(self, attributes: dict[str, Any], texts: list[str]) -> bool:
        """Append the string values to `texts`; True if a key is secret-looking (needs a full look)."""
        if not self._plain_keys.issuperset(attributes):
            for key in attributes:
                if self._scrubber.key_strength(key):
                    return True
                if len(self._plain_keys) >= _KEY_CACHE_SIZE:
                    self._plain_keys.clear()
                self._plain_keys.add(key)
        for value in attributes.values():
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, (tuple, list)):
                texts.extend(v for v in value if isinstance(v, str))
        return False

    def _scrub_attributes(self, attributes: Mapping[str, Any], counts: Counter[str]) -> dict[str, Any] | None:
        """Scrubbed copy of `attributes`, or None when nothing changed."""
        out: dict[str, Any] | None = None
        for key, value in attributes.items():
            new: str | tuple[Any, ...]
            if key == ATTR_SCRUBBED:
                continue
            if isinstance(value, str):
                new, c = self._scrubber.scrub_value(key, value)
            elif isinstance(value, (tuple, list)) and any(isinstance(v, str) for v in value):
                new, c = self._scrub_sequence(key, value)
            else:
                continue
            if c:
                counts += c
                if out is None:
                    out = dict(attributes)
                out[key] = new
        return out

    def _scrub_sequence(self, key: str, values: Iterable[Any]) -> tuple[tuple[Any, ...], Counter[str]]:
        total: Counter[str] = Counter()
        items: list[Any] = []
        for value in values:
            if isinstance(value, str):
                scrubbed, c = self._scrubber.scrub_value(key, value)
                total += c
                items.append(scrubbed)
            else:
                items.append(value)
        return tuple(items), total

    def _scrub_event(self, event: Event, counts: Counter[str]) -> Event:
        name, c = self._scrubber.scrub_text(event.name)
        attributes = event.attributes or {}
        new_attributes = self._scrub_attributes(attributes, counts)
        if not c and new_attributes is None:
            return event
        counts += c
        dropped = event.dropped_attributes
        return Event(
            name,
            _bounded(new_attributes if new_attributes is not None else attributes, dropped),
            event.timestamp,
        )

    def _scrub_link(self, link: Link, counts: Counter[str]) -> Link:
        new_attributes = self._scrub_attributes(link.attributes or {}, counts)
        if new_attributes is None:
            return link
        return Link(link.context, _bounded(new_attributes, link.dropped_attributes))

    def _scrub_resource(self, resource: Resource) -> tuple[Resource, Counter[str]]:
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1], cached[2]
        counts: Counter[str] = Counter()
        new_attributes = self._scrub_attributes(resource.attributes, counts)
        scrubbed = resource if new_attributes is None else Resource(new_attributes, resource.schema_url)
        if len(self._resources) >= _RESOURCE_CACHE_SIZE:
            self._resources.clear()
        self._resources[id(resource)] = (resource, scrubbed, counts)
        return scrubbed, counts

    def _each(
        self, what: str, call: Callable[[SpanProcessor], object], processors: Sequence[SpanProcessor] = ()
    ) -> None:
        """Call `call(processor)` for every downstream processor (or `processors`); one failing never
        stops the others."""
        errors: list[tuple[str, Exception]] = []
        for processor in processors or self._downstream:
            try:
                call(processor)
            except Exception as exc:
                errors.append((f"{type(processor).__name__}.{what}", exc))
        for where, error in errors:
            report_internal_error(where, error)


def _bounded(attributes: Mapping[str, Any], dropped: int) -> Attributes:
    out = BoundedAttributes(attributes=attributes, immutable=True)
    out.dropped = dropped
    return out


def _bounded_list(items: list[Any], dropped: int) -> BoundedList[Any]:
    out = BoundedList.from_seq(None, items)
    out.dropped = dropped
    return out
