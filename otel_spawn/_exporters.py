"""Span exporters for product events: thin shells around `translate` and a destination."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_spawn._guard import guarded
from otel_spawn._translate import EventContext, span_entry, translate

if TYPE_CHECKING:  # not imported at start-up: a run without the posthog exporter never loads them
    from otel_spawn._delivery import Outbox, Sender
    from otel_spawn._local import LocalStore
    from otel_spawn._posthog import Event


class ExportOnEnd(SpanProcessor):
    """Export each span as it ends, on the ending thread (the exporters here are cheap and guarded).

    Like the SDK's SimpleSpanProcessor without its per-span metrics and context switch (~10 us of a
    step), and with a force_flush that reaches the exporter (the SDK's returns True at once).
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self.span_exporter = exporter

    def on_end(self, span: ReadableSpan) -> None:
        self.span_exporter.export((span,))

    def shutdown(self) -> None:
        self.span_exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.span_exporter.force_flush(timeout_millis)


def translate_all(spans: Sequence[ReadableSpan], ctx: EventContext) -> list[Event]:
    return [event for span in spans for event in translate(span, ctx)]


class PostHogSpanExporter(SpanExporter):
    """Hands the records of finished funnel spans to the outbox; a sender translates and delivers.

    `export` runs on the host's thread and only writes to the outbox (the spool: one journal append;
    it folds the journal itself only when more than the spool's cap waits unsent). At shutdown the
    sender gets `exit_timeout` seconds; then `after_shutdown` runs (the spool hands leftovers to a
    background flusher).
    """

    def __init__(
        self,
        *,
        context: EventContext,
        outbox: Outbox,
        sender: Sender,
        exit_timeout: float = 0.05,
        after_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.context = context
        self.outbox = outbox
        self.sender = sender
        self.exit_timeout = exit_timeout
        self.after_shutdown = after_shutdown

    @guarded("posthog exporter", SpanExportResult.FAILURE)
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        entries = [entry for span in spans if (entry := span_entry(span)) is not None]
        if entries:
            self.outbox.put_records(entries, self.context)
            self.sender.notify()
        return SpanExportResult.SUCCESS

    @guarded("posthog exporter shutdown", None)
    def shutdown(self) -> None:
        self.sender.shutdown(self.exit_timeout)
        if self.after_shutdown is not None:
            self.after_shutdown()

    @guarded("posthog exporter flush", False)
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.sender.flush(time.monotonic() + timeout_millis / 1000)


class LocalSpanExporter(SpanExporter):
    """Writes product events and spans to the local SQLite sink."""

    def __init__(self, *, context: EventContext, store: LocalStore) -> None:
        self.context = context
        self.store = store

    @guarded("local exporter", SpanExportResult.FAILURE)
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.store.write(translate_all(spans, self.context), spans)
        return SpanExportResult.SUCCESS

    @guarded("local exporter shutdown", None)
    def shutdown(self) -> None:
        self.store.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
