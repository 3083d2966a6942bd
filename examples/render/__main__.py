"""`python -m examples.render PATH [--preset P] [--fail-at STAGE]`: render one file from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import otel_spawn
from examples.render import SPEC_PATH, pipeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render", description=__doc__)
    parser.add_argument("path", help="the media file to render")
    parser.add_argument("--preset", default="1080p", choices=sorted(pipeline.PRESETS))
    parser.add_argument("--fail-at", choices=pipeline.STAGES, help="simulate a failure at this stage")
    args = parser.parse_args(argv)
    try:
        otel_spawn.configure(app="render", app_version="1.0.0", source="cli", funnel_spec=SPEC_PATH)
    except otel_spawn.ConfigError as exc:
        print(f"render: telemetry off: {exc}", file=sys.stderr)
    try:
        url = pipeline.render(args.path, args.preset, fail_at=args.fail_at)
    except pipeline.RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    finally:
        otel_spawn.shutdown()
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
