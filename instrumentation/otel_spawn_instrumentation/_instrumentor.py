"""`OtelSpawnInstrumentor`: the `opentelemetry_instrumentor` entry point (the stock command's route)."""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_spawn import _config, _gates
from otel_spawn._errors import ConfigError
from otel_spawn._guard import report_internal_error
from otel_spawn._spec import FunnelSpec, load_spec
from otel_spawn_instrumentation._patcher import install, installed_spec, uninstall


class OtelSpawnInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # BaseInstrumentor is untyped
    """Instrument the targets of the funnel spec.

    `instrument()` with no arguments (what `opentelemetry-instrument` calls) uses the spec that
    `configure()` installed, else the config file's `[funnel]` table, when telemetry is on.
    `instrument(spec=...)` takes a FunnelSpec, a `[funnel]` dict or the path of a TOML file.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # it instruments the app's own code, named by the spec, not a library

    def _instrument(self, **kwargs: Any) -> None:
        try:
            spec = _spec_to_install(kwargs.get("spec"))
        except ConfigError as exc:
            print(f"otel-spawn: funnel spec not instrumented: {exc}", file=sys.stderr)
            return
        except Exception as exc:  # never break the stock command's start-up
            report_internal_error("OtelSpawnInstrumentor.instrument", exc)
            return
        if spec is not None:
            install(spec)

    def instrument(self, **kwargs: Any) -> Any:
        if installed_spec() is None:  # removed by another route (otel_spawn._spec.uninstrument): start over
            self._is_instrumented_by_opentelemetry = False
        return super().instrument(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()

    def uninstrument(self, **kwargs: Any) -> None:
        """Remove every wrapper, whichever route (this instrumentor or `configure()`) installed them."""
        uninstall()
        self._is_instrumented_by_opentelemetry = False


def _spec_to_install(explicit: FunnelSpec | Mapping[str, Any] | str | Path | None) -> FunnelSpec | None:
    from otel_spawn._setup import active

    if isinstance(explicit, FunnelSpec):
        return explicit
    telemetry = active()
    if explicit is None and (
        installed_spec() is not None or (telemetry is not None and not telemetry.enabled)
    ):
        return None  # configure() decided already: it instrumented, or telemetry is off
    settings = telemetry.settings if telemetry is not None else _config.resolve({})
    spec = load_spec(explicit, settings)
    if spec is None or telemetry is not None:
        return spec
    return spec if _gates.decide(None, settings.opt_out_env, settings.home).enabled else None
