"""otel-spawn: one instrumentation for CLI orchestrators.

Orchestration steps become OpenTelemetry spans; finished steps become scrubbed PostHog funnel
events; backends are chosen by configuration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_spawn._errors import ConfigError
from otel_spawn._exporters import LocalSpanExporter, PostHogSpanExporter
from otel_spawn._funnel import child_environment, funnel, set_context, step, track
from otel_spawn._scrub_processor import ScrubbingSpanProcessor
from otel_spawn._scrubber import Scrubber, ScrubOptions
from otel_spawn._setup import Telemetry, configure, scrub, shutdown
from otel_spawn._version import __version__

if TYPE_CHECKING:
    from otel_spawn._lifecycle import resource_connected, resource_created, resource_deleted

_LAZY = {"resource_connected", "resource_created", "resource_deleted"}  # from _lifecycle


def __getattr__(name: str) -> Any:
    """The lifecycle API is loaded on first use: most runs never call it (start-up time)."""
    if name in _LAZY:
        from otel_spawn import _lifecycle

        return getattr(_lifecycle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def uninstrument() -> None:
    """Remove every wrapper a funnel spec installed; the original functions are back exactly."""
    from otel_spawn._spec import uninstrument as remove_wrappers

    remove_wrappers()


__all__ = [
    "ConfigError",
    "LocalSpanExporter",
    "PostHogSpanExporter",
    "ScrubOptions",
    "Scrubber",
    "ScrubbingSpanProcessor",
    "Telemetry",
    "__version__",
    "child_environment",
    "configure",
    "funnel",
    "resource_connected",
    "resource_created",
    "resource_deleted",
    "scrub",
    "set_context",
    "shutdown",
    "step",
    "track",
    "uninstrument",
]
