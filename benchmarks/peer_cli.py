"""The peers' side of the exit benchmark: a tiny CLI that emits the demo's 14 events, then exits.

`python benchmarks/peer_cli.py posthog` sends them with the official PostHog SDK (`posthog.Posthog`,
every setting as shipped: queue 10,000, flush_at 100, flush_interval 5 s, 3 retries, 15 s request
timeout, no gzip), then calls `shutdown()` as PostHog's docs ask of a short-lived script;
`posthog-atexit` leaves the exit to the SDK's own atexit handler instead (a bounded 1 s attempt).
Host and key: PEER_POSTHOG_HOST, PEER_POSTHOG_KEY.

`python benchmarks/peer_cli.py otlp` records them as 14 spans with the stock OpenTelemetry SDK, a
BatchSpanProcessor and opentelemetry-exporter-otlp-proto-http (endpoint from the standard
OTEL_EXPORTER_OTLP_ENDPOINT; every other setting default), then calls `TracerProvider.shutdown()`.

PEER_TELEMETRY=0 is the "telemetry off" run: the same imports and objects, but PostHog is built
with `disabled=True` and the tracer provider gets no span processor.
"""

from __future__ import annotations

import os
import sys
import uuid

STEPS = (
    "cloud_authed",
    "credentials_ready",
    "vm_ready",
    "install_completed",
    "configure_completed",
    "prelaunch_completed",
    "handoff",
)
PICKER = ("spawn_launched", "agent_selected", "cloud_selected", "preflight_passed", "name_entered")
EVENTS = ("funnel_started", *PICKER, "picker_completed", *(f"funnel_{step}" for step in STEPS))
assert len(EVENTS) == 14  # what `otel-spawn demo launch` delivers
MODES = ("posthog", "posthog-atexit", "otlp")


def run_posthog(on: bool, explicit_shutdown: bool = True) -> None:
    import posthog

    client = posthog.Posthog(
        os.environ.get("PEER_POSTHOG_KEY", "phc_bench"),
        host=os.environ.get("PEER_POSTHOG_HOST", "http://127.0.0.1:9"),
        disabled=not on,
    )
    distinct_id = str(uuid.uuid4())
    try:
        for index, name in enumerate(EVENTS):
            client.capture(
                name,
                distinct_id=distinct_id,
                properties={
                    "agent": "claude",
                    "cloud": "hetzner",
                    "index": index,
                    "$process_person_profile": False,
                },
            )
    finally:
        if explicit_shutdown:
            client.shutdown()


def run_otlp(on: bool) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "peer-cli"}))
    if on:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("peer-cli")
    try:
        with tracer.start_as_current_span(EVENTS[0], attributes={"agent": "claude", "cloud": "hetzner"}):
            for name in EVENTS[1:]:
                with tracer.start_as_current_span(name):
                    pass
    finally:
        provider.shutdown()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in MODES:
        print(f"usage: peer_cli.py {'|'.join(MODES)}", file=sys.stderr)
        return 2
    on = os.environ.get("PEER_TELEMETRY", "1") != "0"
    if argv[0] == "otlp":
        run_otlp(on)
    else:
        run_posthog(on, explicit_shutdown=argv[0] == "posthog")
    print(f"peer-cli: {len(EVENTS)} events handed to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
