"""A simulated spawn-like CLI: pick an agent and a cloud, provision a VM, install, hand off.

Its business code imports nothing from otel_spawn: the funnel (root, steps, picker events) is
declared in `otel-spawn.toml` next to it, and `otel_spawn.configure(funnel_spec=SPEC_PATH)`
instruments it.
"""

from __future__ import annotations

from pathlib import Path

SPEC_PATH = Path(__file__).with_name("otel-spawn.toml")

__all__ = ["SPEC_PATH"]
