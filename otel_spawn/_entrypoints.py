"""Entry points for the stock `opentelemetry-instrument` command.

- `opentelemetry_configurator` `otel_spawn`: runs `otel_spawn.configure()`, which reads
  OTEL_TRACES_EXPORTER itself and puts the scrubbing processor in front of every backend.
- `opentelemetry_traces_exporter` `posthog` / `local`: for a different configurator (for example
  opentelemetry-distro's). Those construct exporters with no arguments and know nothing of scrubbing,
  so these exporters scrub each span themselves before translating it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_spawn import _config, _gates, _state
from otel_spawn._errors import ConfigError
from otel_spawn._exporters import LocalSpanExporter
from otel_spawn._guard import guarded
from otel_spawn._scrub_processor import ScrubbingSpanProcessor
from otel_spawn._scrubber import Scrubber
from otel_spawn._translate import EventContext


class Configurator:
    """`opentelemetry-instrument` calls `configure()`; a bad setting costs one warning, not the program."""

    def configure(self, **kwargs: Any) -> None:
        from otel_spawn._setup import configure

        try:
            configure()
        except ConfigError as exc:
            print(f"otel-spawn: telemetry off: {exc}", file=sys.stderr)


class _ScrubbedExporter(SpanExporter):
    """Scrub, then hand each span to `inner` (built from the settings with no arguments)."""

    def __init__(self, inner: SpanExporter, scrubber: Scrubber) -> None:
        self._inner = inner
        self._processor = ScrubbingSpanProcessor(scrubber, [SimpleSpanProcessor(inner)])

    @guarded("scrubbed exporter", SpanExportResult.FAILURE)
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self._processor.on_end(span)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._processor.force_flush(timeout_millis)


def _context(settings: _config.Settings) -> EventContext:
    from otel_spawn._setup import static_properties

    return EventContext(
        distinct_id=_state.distinct_id(settings.home),
        prefix=settings.event_prefix,
        static=static_properties(settings),
    )


class _Off(SpanExporter):
    """What a gated-off entry point exports to: nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _build(name: str) -> SpanExporter:
    from otel_spawn._local import LocalStore
    from otel_spawn._setup import posthog_exporter

    settings = _config.resolve({"exporters": name})
    if not _gates.decide(None, settings.opt_out_env, settings.home).enabled:
        return _Off()
    context = _context(settings)
    inner: SpanExporter
    if name == "posthog":
        inner = posthog_exporter(settings, context)
    else:
        inner = LocalSpanExporter(context=context, store=LocalStore(settings.home))
    return _ScrubbedExporter(inner, Scrubber(settings.scrub))


def PostHogEntryPointExporter() -> SpanExporter:
    """`OTEL_TRACES_EXPORTER=posthog` under a foreign configurator."""
    return _build("posthog")


def LocalEntryPointExporter() -> SpanExporter:
    """`OTEL_TRACES_EXPORTER=local` under a foreign configurator."""
    return _build("local")
