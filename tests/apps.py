"""Throw-away app packages for instrumentation tests, and in-memory capture of the events they produce.

`AppFactory.write({"mycli/picker.py": "..."})` writes modules under a temporary directory that is
on sys.path; `cleanup()` forgets every module of those packages so the next test imports afresh.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_spawn._funnel import use_tracer_provider
from otel_spawn._translate import EventContext, translate

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import pytest

DISTINCT_ID = "test-distinct-id"


class AppFactory:
    """Writes packages under `root` (on sys.path if given `monkeypatch`) and forgets them afterwards."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.root = root
        self._packages: set[str] = set()
        root.mkdir(parents=True, exist_ok=True)
        if monkeypatch is not None:
            monkeypatch.syspath_prepend(str(root))

    def write(self, files: Mapping[str, str]) -> None:
        """Write `{"pkg/mod.py": source}` (dedented); directories without __init__.py get an empty one."""
        for name, source in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            self._packages.add(name.split("/")[0].removesuffix(".py"))
            parent = path.parent
            while parent != self.root:
                (parent / "__init__.py").touch(exist_ok=True)
                parent = parent.parent
        importlib.invalidate_caches()
        self.forget()

    def forget(self) -> None:
        """Drop the written packages from sys.modules (the next import runs them again)."""
        for name in list(sys.modules):
            if name.split(".")[0] in self._packages:
                del sys.modules[name]


class Captured:
    """A real SDK provider whose finished spans are kept in memory and translated to product events."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def __enter__(self) -> Captured:
        use_tracer_provider(self.provider)
        return self

    def __exit__(self, *exc_info: object) -> None:
        use_tracer_provider(None)
        self.provider.shutdown()

    def events(self) -> list[dict[str, Any]]:
        """The product events of every finished span, in the order the spans ended."""
        ctx = EventContext(distinct_id=DISTINCT_ID, static={"app": "test"})
        return [event for span in self.exporter.get_finished_spans() for event in translate(span, ctx)]

    def names(self) -> list[str]:
        return [event["event"] for event in self.events()]

    def properties(self, *, drop: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
        """(event, properties) pairs without the properties that vary per run (ids, times) or `drop`."""
        varying = {"funnel_id", "trace_id", "elapsed_ms", "step_duration_ms", "app", *drop}
        return [
            (event["event"], {k: v for k, v in event["properties"].items() if k not in varying})
            for event in self.events()
        ]
