"""OpenTelemetry auto-instrumentation of a CLI orchestrator from its declarative funnel spec.

The spec (the `[funnel]` table of otel-spawn.toml; see the README's funnel spec section) names
the call that opens the funnel, the calls that are steps and the calls that are product events;
this package wraps them with wrapt, so the app's code needs no change:

    OTEL_TRACES_EXPORTER=posthog opentelemetry-instrument python -m mycli

`otel_spawn.configure()` instruments from the spec too; both routes share one installation, so
the targets are never wrapped twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_spawn_instrumentation._patcher import install, installed_spec, uninstall

if TYPE_CHECKING:
    from otel_spawn_instrumentation._instrumentor import OtelSpawnInstrumentor

__all__ = ["OtelSpawnInstrumentor", "install", "installed_spec", "uninstall"]


def __getattr__(name: str) -> Any:
    """Import `OtelSpawnInstrumentor` on first use: its base class pulls in opentelemetry-instrumentation
    and `packaging` (~40 ms), which `configure()` does not need."""
    if name == "OtelSpawnInstrumentor":
        from otel_spawn_instrumentation._instrumentor import OtelSpawnInstrumentor

        return OtelSpawnInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
