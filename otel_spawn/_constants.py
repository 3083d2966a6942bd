"""Attribute keys and environment variable names, each defined once."""

from __future__ import annotations

# --- span attributes written by the funnel API and read by the translator -------------------
ATTR_PREFIX = "otel_spawn."
ATTR_KIND = "otel_spawn.kind"  # "funnel" | "step" | "event"
ATTR_FUNNEL = "otel_spawn.funnel.name"
ATTR_FUNNEL_START = "otel_spawn.funnel.start_ns"  # the funnel's start, epoch ns
ATTR_STEP = "otel_spawn.step"  # step or tracked-event name
ATTR_LAST_STEP = "otel_spawn.funnel.last_completed_step"
ATTR_FAILED_STEP = "otel_spawn.funnel.failed_step"
ATTR_OUTCOME = "otel_spawn.funnel.outcome"  # on the funnel span: "completed" | "failed" | "abandoned"
ATTR_SOURCE = "otel_spawn.source"
CONTEXT_PREFIX = "otel_spawn.context."  # funnel context, copied onto every product event
PROPERTY_PREFIX = "otel_spawn.property."  # app-chosen product properties of one step/event
ATTR_SCRUBBED = "otel_spawn.scrubbed"

KIND_FUNNEL = "funnel"
KIND_STEP = "step"
KIND_EVENT = "event"
KIND_ERROR = "error"  # an uncaught exception reported by the opt-in hooks

# --- environment variables ---------------------------------------------------------------------
ENV_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_SDK_DISABLED = "OTEL_SDK_DISABLED"
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_DO_NOT_TRACK = "DO_NOT_TRACK"
ENV_POSTHOG_HOST = "OTEL_EXPORTER_POSTHOG_HOST"
ENV_POSTHOG_API_KEY = "OTEL_EXPORTER_POSTHOG_API_KEY"
ENV_APP = "OTEL_SPAWN_APP"
ENV_HOME = "OTEL_SPAWN_HOME"
ENV_CONFIG = "OTEL_SPAWN_CONFIG"
ENV_SOURCE = "OTEL_SPAWN_SOURCE"
ENV_EVENT_PREFIX = "OTEL_SPAWN_EVENT_PREFIX"
ENV_ENABLE_IN_TESTS = "OTEL_SPAWN_ENABLE_IN_TESTS"
ENV_SPOOL_MAX_BYTES = "OTEL_SPAWN_SPOOL_MAX_BYTES"
ENV_FLUSHER_SECONDS = "OTEL_SPAWN_FLUSHER_SECONDS"

CONFIG_FILE = "otel-spawn.toml"
PYPROJECT_TABLE = "otel-spawn"  # [tool.otel-spawn]

DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"
