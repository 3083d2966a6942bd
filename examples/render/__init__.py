"""A second orchestrator, instrumented only by its funnel spec: a media render pipeline.

probe -> transcode -> render frames -> upload, started from the command line
(`python -m examples.render clip.mov`) or from a local web studio
(`python -m examples.render.studio`). `pipeline.py` imports nothing from otel_spawn; the entry
points call `otel_spawn.configure(source="cli" | "studio", funnel_spec=SPEC_PATH)`.
"""

from __future__ import annotations

from pathlib import Path

SPEC_PATH = Path(__file__).with_name("otel-spawn.toml")

__all__ = ["SPEC_PATH"]
