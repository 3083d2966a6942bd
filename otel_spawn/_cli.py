"""The `otel-spawn` command: status, opt-out, scrubbing, local events, and the bundled demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from otel_spawn import _config, _gates, _state
from otel_spawn._errors import ConfigError

DEMO_APP = "spawn"
DEMO_STEPS = (
    "cloud_authed",
    "credentials_ready",
    "vm_ready",
    "install_completed",
    "configure_completed",
    "prelaunch_completed",
    "handoff",
)


def _settings(args: argparse.Namespace) -> _config.Settings:
    settings = _config.resolve({"app": args.app})
    if settings.decided_by.get("app") == "default":
        settings = _config.resolve({"app": DEMO_APP})
    return settings


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    decision = _gates.decide(None, settings.opt_out_env, settings.home)
    report: dict[str, Any] = {
        "app": settings.app,
        "telemetry": "on" if decision.enabled else "off",
        "decided_by": decision.reason,
        "backends": list(settings.exporters) or ["none"],
        "backends_from": settings.decided_by.get("exporters"),
        "state_dir": str(settings.home),
        "config_file": str(settings.config_file) if settings.config_file else None,
        "posthog_host": settings.posthog.host if "posthog" in settings.exporters else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        for key, value in report.items():
            if value is not None:
                print(
                    f"{key.replace('_', ' '):<{width}}  "
                    f"{', '.join(value) if isinstance(value, list) else value}"
                )
    return 0


def cmd_choice(args: argparse.Namespace) -> int:
    settings = _settings(args)
    choice = "enabled" if args.command == "enable" else "disabled"
    path = _state.write_choice(settings.home, choice)
    written = _state.read_choice(settings.home)
    if written != choice:  # never claim success without having written it
        print(f"otel-spawn: could not save the choice in {path}", file=sys.stderr)
        return 1
    decision = _gates.decide(None, settings.opt_out_env, settings.home)
    print(f"telemetry {choice} for {settings.app} (saved in {path}); now {decision}")
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    from otel_spawn._scrubber import Scrubber

    scrubber = Scrubber(_config.resolve({}).scrub)
    chunks = [sys.stdin.read()] if args.whole else sys.stdin
    for number, chunk in enumerate(chunks, start=1):
        if args.explain:
            for finding in scrubber.explain(chunk):
                where = (
                    f"{number}:{finding.start}-{finding.end}"
                    if not args.whole
                    else f"{finding.start}-{finding.end}"
                )
                print(f"{where}\t{finding.rule}", file=sys.stderr)
        sys.stdout.write(scrubber.scrub(chunk))
    sys.stdout.flush()
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from otel_spawn._local import LOCAL_DB, LocalStore

    settings = _settings(args)
    if not (settings.home / LOCAL_DB).exists():
        print(f"no local events yet in {settings.home}", file=sys.stderr)
        return 0
    events = LocalStore(settings.home).events()[-args.limit :]
    for event in events:
        props = event["properties"]
        if args.json:
            print(json.dumps(event))
            continue
        context = " ".join(f"{k}={props[k]}" for k in ("agent", "cloud", "ref") if props.get(k))
        step = props.get("failed_step") or props.get("at_step") or ""
        print(
            f"{event['timestamp'][11:23]}  {props.get('funnel_id', '')[:8]}  {event['event']:<28} "
            f"{props.get('elapsed_ms', ''):>6} ms  {step:<20} {context}"
        )
    return 0


def cmd_demo_launch(args: argparse.Namespace) -> int:
    import otel_spawn
    from otel_spawn.demo.cloud import SpawnError
    from otel_spawn.demo.orchestrate import launch

    try:
        otel_spawn.configure(app=DEMO_APP, app_version=otel_spawn.__version__)
    except ConfigError as exc:
        print(f"spawn: telemetry off: {exc}", file=sys.stderr)
    delays = {}
    for item in args.step_delay:
        step, _, seconds = item.partition("=")
        delays[step] = float(seconds)
    try:
        vm = launch(
            agent=args.agent,
            cloud_name=args.cloud,
            name=args.name,
            ref=args.ref,
            fail_at=args.fail_at,
            fail_message=args.fail_message,
            interrupt_at=args.interrupt_at,
            delays=delays,
        )
    except SpawnError as exc:
        print(f"spawn: launch failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spawn: interrupted", file=sys.stderr)
        return 130
    finally:
        otel_spawn.shutdown()
    print(f"spawn: {vm.agent} is running on {vm.cloud} ({vm.id})")
    return 0


def _step_delay(value: str) -> str:
    step, sep, seconds = value.partition("=")
    try:
        ok = bool(sep) and step in DEMO_STEPS and float(seconds) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected STEP=SECONDS with STEP one of {', '.join(DEMO_STEPS)}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-spawn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_app(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--app", help=f"the app whose state to use (default: config file, else {DEMO_APP!r})")
        return p

    status = with_app(sub.add_parser("status", help="is telemetry on, and which setting decided it"))
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    for name, text in (("enable", "turn telemetry on"), ("disable", "turn telemetry off (persisted)")):
        with_app(sub.add_parser(name, help=text)).set_defaults(func=cmd_choice)

    scrub = sub.add_parser("scrub", help="scrub secrets and personal data from stdin")
    scrub.add_argument("--whole", action="store_true", help="scrub all of stdin as one text (PEM blocks)")
    scrub.add_argument("--explain", action="store_true", help="list which rules fired where, on stderr")
    scrub.set_defaults(func=cmd_scrub)

    events = with_app(sub.add_parser("events", help="print the product events in the local sink"))
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=cmd_events)

    demo = sub.add_parser("demo", help="the bundled, simulated spawn CLI").add_subparsers(
        dest="demo", required=True
    )
    launch = demo.add_parser("launch", help="run one simulated launch (under 2 s)")
    launch.add_argument("--agent")
    launch.add_argument("--cloud")
    launch.add_argument("--name")
    launch.add_argument("--ref", help="install-channel attribution, sent as funnel context")
    launch.add_argument("--fail-at", choices=DEMO_STEPS, metavar="STEP")
    launch.add_argument("--fail-message", metavar="TEXT")
    launch.add_argument("--interrupt-at", choices=DEMO_STEPS, metavar="STEP")
    launch.add_argument("--step-delay", action="append", default=[], type=_step_delay, metavar="STEP=SECONDS")
    launch.set_defaults(func=cmd_demo_launch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"otel-spawn: configuration error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
