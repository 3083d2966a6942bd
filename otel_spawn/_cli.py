"""The `otel-spawn` command: status, opt-out, scrubbing, local events, and the bundled demo."""

from __future__ import annotations

import argparse
import json
import os
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
        **_spool_report(settings),
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


def _spool_report(settings: _config.Settings) -> dict[str, Any]:
    from otel_spawn._spool import SPOOL_DB, SqliteSpool

    if not (settings.home / SPOOL_DB).exists():
        return {"spool": "empty (no events spooled yet)"}
    spool = SqliteSpool(settings.home)
    try:
        status = spool.status()
    finally:
        spool.close()
    age = status.oldest_age_seconds
    return {
        "spool_depth": f"{status.depth} unsent ({status.bytes} bytes, cap {settings.spool_max_bytes})",
        "oldest_unsent": "-" if age is None else f"{age:.0f} s ago",
        "sent": status.sent,
        "evicted": status.evicted,
        "quarantined": status.quarantined,
        "last_error": status.last_error or "none",
    }


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
    if choice == "disabled":
        from otel_spawn._spool import SPOOL_DB, SqliteSpool

        if (settings.home / SPOOL_DB).exists():
            spool = SqliteSpool(settings.home)
            print(f"deleted {spool.clear()} unsent event(s)")
            spool.close()
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from otel_spawn._flush import flush
    from otel_spawn._spool import SPOOL_DB

    settings = _settings(args)
    if not (settings.home / SPOOL_DB).exists():
        if not args.background:
            print("nothing to flush")
        return 0

    def progress(line: str) -> None:
        if not args.background:
            print(f"flush: {line}", file=sys.stderr)

    result = flush(
        settings, max_seconds=args.max_seconds, progress=progress, wait_for_other=not args.background
    )
    if not args.background:
        print(
            f"sent {result.sent} event(s), {result.remaining} left"
            + (f" ({result.error})" if result.error else "")
        )
    return 0 if result.remaining == 0 else 1


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
        shown = ("agent", "cloud", "ref", "spawn_id", "connect_count", "lifetime_hours")
        context = " ".join(f"{k}={props[k]}" for k in shown if props.get(k) is not None)
        step = props.get("failed_step") or props.get("at_step") or ""
        elapsed = f"{props['elapsed_ms']:>6} ms" if "elapsed_ms" in props else " " * 9
        print(
            f"{event['timestamp'][11:23]}  {(props.get('funnel_id') or '-')[:8]:<8}  {event['event']:<28} "
            f"{elapsed}  {step:<20} {context}"
        )
    return 0


def cmd_funnel(args: argparse.Namespace) -> int:
    from pathlib import Path

    from otel_spawn import _report, _report_render

    settings = _settings(args)
    progress = _report.Progress(sys.stderr)
    problems = _report.Problems()
    if args.events:
        try:
            events = _report.read_events_file(args.events, problems=problems, progress=progress)
        except OSError as exc:
            print(f"otel-spawn: cannot read {args.events}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        from otel_spawn._local import LOCAL_DB, LocalStore

        if not (settings.home / LOCAL_DB).exists():
            print(f"no local events yet in {settings.home}", file=sys.stderr)
            return 0
        events = _report.counted(LocalStore(settings.home).events(), progress)
    report = _report.funnel_report(
        events,
        steps=[s.strip() for s in args.steps.split(",") if s.strip()] if args.steps is not None else None,
        window_days=args.window_days,
        breakdown=args.breakdown,
        prefix=settings.event_prefix if args.prefix is None else args.prefix,
        by=args.by,
    )
    progress.finish()
    for line in problems.lines(args.events or ""):
        print(line, file=sys.stderr)
    if args.html:
        try:
            Path(args.html).write_text(_report_render.render_html(report), encoding="utf-8")
        except OSError as exc:
            print(f"otel-spawn: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(_report_render.render_json(report), indent=2))
    else:
        print(_report_render.render_text(report), end="")
    return 0


def _demo_telemetry() -> None:
    """What the demo app does at start-up: one configure() call; a bad setting costs a warning."""
    import otel_spawn
    from otel_spawn.demo import SPEC_PATH

    try:  # the demo's business code imports nothing from otel-spawn: the spec instruments it
        otel_spawn.configure(app=DEMO_APP, app_version=otel_spawn.__version__, funnel_spec=SPEC_PATH)
    except ConfigError as exc:
        print(f"spawn: telemetry off: {exc}", file=sys.stderr)


def cmd_demo_vm(args: argparse.Namespace) -> int:
    """`demo list`, `demo connect ID`, `demo delete ID [--fail]`."""
    import otel_spawn
    from otel_spawn.demo import fleet
    from otel_spawn.demo.cloud import SpawnError

    if args.demo == "list":
        for vm in fleet.list_vms():
            print(f"{vm.id}  {vm.agent:<8} {vm.cloud:<13} {vm.ip}")
        return 0
    _demo_telemetry()
    try:
        if args.demo == "connect":
            vm = fleet.connect(args.vm_id)
            print(f"spawn: connected to {vm.id} ({vm.agent} on {vm.cloud})")
        else:
            vm = fleet.delete(args.vm_id, fail=args.fail)
            print(f"spawn: deleted {vm.id}")
    except SpawnError as exc:
        print(f"spawn: {exc}", file=sys.stderr)
        return 1
    finally:
        otel_spawn.shutdown()
    return 0


def cmd_demo_launch(args: argparse.Namespace) -> int:
    import otel_spawn
    from otel_spawn.demo import orchestrate
    from otel_spawn.demo.cloud import SpawnError

    _demo_telemetry()
    delays = {}
    for item in args.step_delay:
        step, _, seconds = item.partition("=")
        delays[step] = float(seconds)
    try:
        vm = orchestrate.launch(
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

    flush = with_app(sub.add_parser("flush", help="send the spooled events now"))
    flush.add_argument("--max-seconds", type=float, default=60.0, help="give up after this long (default 60)")
    flush.add_argument(
        "--background", action="store_true", help="quiet; leave at once if another flush runs (used at exit)"
    )
    flush.set_defaults(func=cmd_flush)

    scrub = sub.add_parser("scrub", help="scrub secrets and personal data from stdin")
    scrub.add_argument("--whole", action="store_true", help="scrub all of stdin as one text (PEM blocks)")
    scrub.add_argument("--explain", action="store_true", help="list which rules fired where, on stderr")
    scrub.set_defaults(func=cmd_scrub)

    events = with_app(sub.add_parser("events", help="print the product events in the local sink"))
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=cmd_events)

    funnel = with_app(sub.add_parser("funnel", help="funnel report of the local events or a PostHog export"))
    funnel.add_argument("--events", metavar="FILE", help="PostHog events as JSON lines (default: local sink)")
    funnel.add_argument("--steps", metavar="E1,E2", help="ordered steps (default: funnel_* events seen)")
    funnel.add_argument("--window-days", type=float, default=14.0, metavar="DAYS", help="window (14)")
    funnel.add_argument("--breakdown", metavar="PROPERTY", help="split by agent, cloud, source, ref, ...")
    funnel.add_argument(
        "--by", default="distinct_id", metavar="KEY", help="distinct_id (persons) or funnel_id (runs)"
    )
    funnel.add_argument("--prefix", help="prefix of step events (default: the configured event_prefix)")
    funnel.add_argument("--json", action="store_true", help="machine-readable (schema otel-spawn.funnel/1)")
    funnel.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page with charts")
    funnel.set_defaults(func=cmd_funnel)

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
    demo.add_parser("list", help="the demo VMs").set_defaults(func=cmd_demo_vm)
    connect = demo.add_parser("connect", help="reconnect to a demo VM (sends spawn_connected)")
    connect.add_argument("vm_id", metavar="ID")
    connect.set_defaults(func=cmd_demo_vm)
    delete = demo.add_parser("delete", help="delete a demo VM (sends spawn_deleted)")
    delete.add_argument("vm_id", metavar="ID")
    delete.add_argument("--fail", action="store_true", help="simulate the provider refusing: nothing is sent")
    delete.set_defaults(func=cmd_demo_vm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"otel-spawn: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `otel-spawn events | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
