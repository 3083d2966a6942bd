"""`configure()`: resolve settings, decide the privacy gates, build the pipeline.

Pipeline: TracerProvider -> ScrubbingSpanProcessor -> one processor per backend. Nothing reaches any
exporter (or the disk) before it has been scrubbed.
"""

from __future__ import annotations

import functools
import os
import platform
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from otel_spawn import _config, _gates, _state
from otel_spawn._children import install_child_propagation
from otel_spawn._errors import ConfigError
from otel_spawn._exporters import ExportOnEnd, LocalSpanExporter, PostHogSpanExporter
from otel_spawn._funnel import inherit_funnel, use_tracer_provider
from otel_spawn._guard import guarded, under_pytest, warn_once
from otel_spawn._local import LocalStore
from otel_spawn._scrub_processor import ScrubbingSpanProcessor
from otel_spawn._scrubber import Scrubber, ScrubOptions, default_scrubber
from otel_spawn._translate import EventContext
from otel_spawn._version import __version__

if TYPE_CHECKING:  # the posthog pipeline is imported by `posthog_exporter`, when it is used
    import httpx

    from otel_spawn._delivery import DeliveryStats

_CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "TF_BUILD", "JENKINS_URL")
_REMOTE = {"posthog", "otlp"}
DEGRADED_EXIT_SECONDS = 0.5  # with no usable disk, how long exit may try to deliver what is in memory


@dataclass
class Telemetry:
    """The handle `configure()` returns: what is on, and a bounded, idempotent shutdown."""

    settings: _config.Settings
    decision: _gates.Decision
    provider: TracerProvider | None = None
    distinct_id: str | None = None
    scrubber: Scrubber = field(default_factory=Scrubber)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enabled(self) -> bool:
        return self.decision.enabled

    @functools.cached_property
    def delivery(self) -> DeliveryStats:
        """Counters of the PostHog sender (all zero without the posthog exporter)."""
        from otel_spawn._delivery import DeliveryStats

        return DeliveryStats()

    def force_flush(self, timeout_millis: int = 5_000) -> bool:
        return self.provider.force_flush(timeout_millis) if self.provider else True

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.provider is not None:
            self.provider.shutdown()


_active: Telemetry | None = None


def active() -> Telemetry | None:
    """The telemetry set up by the last `configure()` call in this process."""
    return _active


def is_ci(environ: dict[str, str] | os._Environ[str]) -> bool:
    return any(environ.get(name, "").lower() not in ("", "0", "false") for name in _CI_VARIABLES)


def static_properties(settings: _config.Settings) -> dict[str, Any]:
    """Properties every event of this process carries."""
    return {
        "app": settings.app,
        "app_version": settings.app_version,
        "source": settings.source,
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "python_version": platform.python_version(),
        "is_ci": is_ci(os.environ),
        "$lib": "otel-spawn",
        "$lib_version": __version__,
        "$process_person_profile": False,
        "$ip": None,
        "$geoip_disable": True,
    }


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    )
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the grpc extra: pip install 'otel-spawn[grpc]', "
                "or use http/protobuf (Jaeger and the Collector accept it on port 4318)"
            ) from exc
        return GrpcExporter()
    if protocol not in ("http/protobuf", ""):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf or grpc"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _show_notice(settings: _config.Settings) -> None:
    if not _REMOTE & set(settings.exporters):
        return
    try:
        if not _state.claim_notice(settings.home):
            return
    except OSError:
        pass  # cannot remember that it was shown: show it again rather than never
    print(
        f"{settings.app}: sends anonymous usage telemetry (which steps ran, how long they took, OS, "
        f"versions); secrets and personal data are scrubbed first. Opt out: {settings.opt_out_env}=0, "
        "DO_NOT_TRACK=1, or `otel-spawn disable`.",
        file=sys.stderr,
    )


def _sampler() -> sampling.Sampler:
    """Every span is recorded: a sampled-out step would be a product event lost (and ALWAYS_ON skips
    the parent-based check on every span). OTEL_TRACES_SAMPLER is therefore not honoured."""
    chosen = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if chosen not in ("", "always_on", "parentbased_always_on"):
        warn_once(
            "sampler",
            "otel-spawn: OTEL_TRACES_SAMPLER=%s ignored: product events need every span (sample in your "
            "collector instead)",
            chosen,
        )
    return sampling.ALWAYS_ON


def posthog_exporter(
    settings: _config.Settings,
    context: EventContext,
    http_client: httpx.Client | None = None,
    stats: DeliveryStats | None = None,
) -> PostHogSpanExporter:
    """The PostHog exporter: events go to the durable spool; a background sender delivers them."""
    # Imported here, not at the top: a run without the posthog exporter never loads them.
    from otel_spawn._delivery import DeliveryStats, Sender
    from otel_spawn._posthog import PostHogClient
    from otel_spawn._spool import SqliteSpool

    key = settings.posthog.api_key
    assert key is not None  # checked by _config.resolve
    client = PostHogClient(host=settings.posthog.host, api_key=key, client=http_client)
    stats = stats or DeliveryStats()
    spool = SqliteSpool(settings.home, max_bytes=settings.spool_max_bytes)
    spool.set_destination(settings.posthog.host, key)
    sender = Sender(outbox=spool, client=client, stats=stats)

    @guarded("posthog exit", None)
    def after_shutdown() -> None:
        spool.hand_over()  # this run's journal into SQLite (if long: left to a flusher or the next run)
        # A batch still in flight keeps its claim: if the server got it, resending now would
        # duplicate it; if not, another sender takes it over when the lease expires.
        if spool.degraded and spool.depth():  # in memory only: this is their last chance (bounded)
            sender.flush(time.monotonic() + DEGRADED_EXIT_SECONDS)
            sender.client.close()
        # Leftovers of a healthy endpoint go to a background flusher; during an outage (this run
        # failed to deliver) they wait in the spool for the next run or `otel-spawn flush`.
        healthy = stats.last_error is None
        if healthy and not spool.degraded and not under_pytest() and spool.pending():
            from otel_spawn._flush import spawn_flusher

            spawn_flusher(settings)
        spool.close()

    if spool.pending():  # left over by an earlier run: send them too (the sender folds, not the host)
        sender.notify()
    return PostHogSpanExporter(context=context, outbox=spool, sender=sender, after_shutdown=after_shutdown)


def _processors(
    telemetry: Telemetry, context: EventContext, http_client: httpx.Client | None
) -> list[SpanProcessor]:
    settings = telemetry.settings
    out: list[SpanProcessor] = []
    for name in settings.exporters:
        if name == "local":
            try:
                store = LocalStore(settings.home)
            except (OSError, sqlite3.Error) as exc:
                warn_once(
                    "local", "otel-spawn: local sink unavailable in %s (%s); skipped", settings.home, exc
                )
                continue
            out.append(ExportOnEnd(LocalSpanExporter(context=context, store=store)))
        elif name == "posthog":
            exporter = posthog_exporter(settings, context, http_client, telemetry.delivery)
            out.append(ExportOnEnd(exporter))
        elif name == "otlp":
            out.append(BatchSpanProcessor(_otlp_exporter()))
        elif name == "console":
            out.append(ExportOnEnd(ConsoleSpanExporter()))
    return out


def configure(
    *,
    app: str | None = None,
    app_version: str | None = None,
    exporters: str | list[str] | None = None,
    enabled: bool | None = None,
    source: str | None = None,
    posthog_host: str | None = None,
    posthog_api_key: str | None = None,
    scrub: ScrubOptions | None = None,
    home: str | Path | None = None,
    funnel_spec: str | Path | dict[str, Any] | None = None,
    capture_exceptions: bool = False,
    http_client: httpx.Client | None = None,
) -> Telemetry:
    """Set up otel-spawn for this process; call once, early. Raises ConfigError on bad settings.

    Each argument overrides its environment variable, which overrides the config file
    (otel-spawn.toml, [tool.otel-spawn] in pyproject.toml, or OTEL_SPAWN_CONFIG). `funnel_spec` is a
    declarative funnel (a [funnel] table, or a TOML file holding one) to auto-instrument.
    `capture_exceptions` also reports uncaught exceptions (sys.excepthook, threading.excepthook).
    """
    global _active
    explicit = {
        "app": app,
        "app_version": app_version,
        "exporters": exporters,
        "source": source,
        "posthog_host": posthog_host,
        "posthog_api_key": posthog_api_key,
        "scrub": scrub,
        "home": home,
    }
    settings = _config.resolve(explicit)
    scrubber = Scrubber(settings.scrub)  # compiles user patterns: a bad one fails here
    spec = None
    if funnel_spec is not None or settings.funnel_spec:  # _spec is imported only for apps that use one
        from otel_spawn._spec import load_spec

        spec = load_spec(funnel_spec, settings)  # a bad funnel spec fails here
    decision = _gates.decide(enabled, settings.opt_out_env, settings.home)
    if _active is not None:
        _active.shutdown()
    telemetry = Telemetry(settings=settings, decision=decision, scrubber=scrubber)
    _active = telemetry
    if not decision.enabled:
        use_tracer_provider(trace.NoOpTracerProvider())
        return telemetry

    try:
        telemetry.distinct_id = _state.distinct_id(settings.home)
    except OSError as exc:
        warn_once(
            "state",
            "otel-spawn: state directory %s unusable (%s); anonymous id for this run only",
            settings.home,
            exc,
        )
        telemetry.distinct_id = str(uuid.uuid4())
    _show_notice(settings)
    context = EventContext(
        distinct_id=telemetry.distinct_id, prefix=settings.event_prefix, static=static_properties(settings)
    )
    resource = Resource.create(
        {"service.name": settings.service_name, "service.version": settings.app_version}
    )
    provider = TracerProvider(resource=resource, sampler=_sampler())
    provider.add_span_processor(
        ScrubbingSpanProcessor(scrubber, _processors(telemetry, context, http_client))
    )
    telemetry.provider = provider
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    use_tracer_provider(provider)
    inherit_funnel(os.environ)  # a child process continues its parent's funnel
    install_child_propagation()  # ... and hands it on to its own children
    if spec is not None:
        from otel_spawn._spec import instrument_spec

        instrument_spec(spec)
    if capture_exceptions:
        from otel_spawn._hooks import install_exception_hooks  # opt-in: imported only when asked for

        install_exception_hooks()
    return telemetry


def shutdown() -> None:
    """Deliver what is pending (bounded) and stop; idempotent."""
    if _active is not None:
        _active.shutdown()


def scrub(text: str) -> str:
    """Scrub `text` with the same rules (and configured options) the span processor uses."""
    return (_active.scrubber if _active is not None else default_scrubber()).scrub(text)
