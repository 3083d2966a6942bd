"""Goal 5: start-up cost, as wall time of a fresh interpreter, against bare Python and the peers.

Each command is a new `python -c ...` (this venv's interpreter), run REPEATS times interleaved, in an
empty working directory, with a clean environment and a fresh temp OTEL_SPAWN_HOME; the figure is
the median wall time minus that of `python -c pass`. otel-spawn: `import otel_spawn;
otel_spawn.configure()` (defaults: the local SQLite sink). Also shown: the same with
exporters=posthog (the spool, the httpx client), `import posthog`, and the bare OpenTelemetry SDK
(`import opentelemetry.sdk.trace` + a TracerProvider set as the global one). Goal: <= 150 ms added.

Bytecode: every command reads compiled modules from a cache the warm-up run fills (as an installed
package does: pip compiles on install), even when this shell sets PYTHONDONTWRITEBYTECODE; without
that, an editable install compiles otel_spawn's source on every run while the peers, installed
wheels, do not. That case is shown for context: otel-spawn with its own modules uncached.
`-X importtime` then lists the slowest imports of the otel-spawn command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import API_KEY, Row, clean_env, median, progress, ratio, verdict
from benchlib import table as render_table

REPEATS = 15
GOAL_MS = 150.0
COMMANDS = {
    "bare python": "pass",
    "otel-spawn": "import otel_spawn; otel_spawn.configure()",
    "otel-spawn, posthog": (
        "import otel_spawn; otel_spawn.configure(exporters='posthog', "
        f"posthog_host='http://127.0.0.1:9', posthog_api_key='{API_KEY}')"
    ),
    "posthog": "import posthog",
    "opentelemetry sdk": (
        "from opentelemetry import trace; from opentelemetry.sdk.trace import TracerProvider; "
        "trace.set_tracer_provider(TracerProvider())"
    ),
}
UNCACHED = "otel-spawn, own modules uncached"


def _env(bytecode: Path, **overrides: str) -> dict[str, str]:
    """A clean environment whose interpreter reads (and writes) compiled modules under `bytecode`."""
    return clean_env(PYTHONPYCACHEPREFIX=str(bytecode), **overrides)


def _uncached_env(cwd: Path) -> dict[str, str]:
    """Like `_env`, but otel_spawn's own modules are compiled from source on every run."""
    bytecode = cwd / "bytecode-uncached"
    if not bytecode.exists():  # cache all the command imports, then drop otel_spawn's modules
        _time(COMMANDS["otel-spawn"], cwd, _env(bytecode))
        for path in bytecode.rglob("*.pyc"):
            if "otel_spawn" in path.parts:
                path.unlink()
    return _env(bytecode, PYTHONDONTWRITEBYTECODE="1")


def _time(code: str, cwd: Path, env: dict[str, str] | None = None) -> float:
    home = tempfile.mkdtemp(prefix="home-", dir=cwd)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        env={**(env or _env(cwd / "bytecode")), "OTEL_SPAWN_HOME": home},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def _slowest_imports(cwd: Path, top: int = 8) -> list[tuple[str, float]]:
    """The costliest imports of the otel-spawn command: the largest disjoint subtrees of the import
    tree (`-X importtime`, cumulative ms) that are not otel_spawn's own modules."""
    home = tempfile.mkdtemp(prefix="home-", dir=cwd)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", COMMANDS["otel-spawn"]],
        env=_env(cwd / "bytecode", OTEL_SPAWN_HOME=home),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    nodes: list[tuple[int, str, float]] = []  # (depth, module, cumulative ms), children before parents
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)$", line)
        if match:
            nodes.append(((len(match.group(2)) - 1) // 2, match.group(3), int(match.group(1)) / 1000))
    ancestors: list[set[int]] = [set() for _ in nodes]
    stack: list[int] = []
    for index in reversed(range(len(nodes))):  # parents come first in reverse order
        while stack and nodes[stack[-1]][0] >= nodes[index][0]:
            stack.pop()
        if stack:
            ancestors[index] = {stack[-1], *ancestors[stack[-1]]}
        stack.append(index)
    chosen: list[int] = []
    for index in sorted(range(len(nodes)), key=lambda i: -nodes[i][2]):
        if nodes[index][1].startswith("otel_spawn") or any(c in ancestors[index] for c in chosen):
            continue
        chosen.append(index)
        if len(chosen) == top:
            break
    return [(nodes[i][1], nodes[i][2]) for i in chosen]


def run(repeats: int = REPEATS) -> dict[str, object]:
    progress(f"startup: {len(COMMANDS) + 1} commands x {repeats} runs")
    cwd = Path(tempfile.mkdtemp(prefix="otel-spawn-bench-startup-"))
    samples: dict[str, list[float]] = {name: [] for name in [*COMMANDS, UNCACHED]}
    uncached = _uncached_env(cwd)
    for code in COMMANDS.values():  # warm the file cache and fill the bytecode cache
        _time(code, cwd)
    for _ in range(repeats):
        for name, code in COMMANDS.items():
            samples[name].append(_time(code, cwd))
        samples[UNCACHED].append(_time(COMMANDS["otel-spawn"], cwd, uncached))
    medians = {name: median(values) * 1000 for name, values in samples.items()}
    bare = medians["bare python"]
    slowest = _slowest_imports(cwd)
    shutil.rmtree(cwd, ignore_errors=True)
    return {
        "repeats": repeats,
        "goal_ms": GOAL_MS,
        "median_ms": medians,
        "added_ms": {name: ms - bare for name, ms in medians.items() if name != "bare python"},
        "samples_ms": {name: [v * 1000 for v in values] for name, values in samples.items()},
        "commands": COMMANDS,
        "slowest_imports_ms": slowest,
    }


def rows(figures: dict[str, Any]) -> list[Row]:
    added = figures["added_ms"]
    ours = added["otel-spawn"]
    peers = (
        f"`import posthog` +{added['posthog']:.0f} ms; bare OTel SDK +{added['opentelemetry sdk']:.0f} ms "
        f"(bare python {figures['median_ms']['bare python']:.0f} ms)"
    )
    return [
        Row(
            "5",
            "start-up, `import otel_spawn; configure()`",
            f"{ours:+.0f} ms",
            peers,
            ratio(ours, added["opentelemetry sdk"]) + " vs OTel SDK",
            f"<= +{GOAL_MS:g} ms",
            verdict(ours <= GOAL_MS),
        ),
        Row(
            "5",
            "start-up, configure(exporters='posthog')",
            f"{added['otel-spawn, posthog']:+.0f} ms",
            "(context)",
            "-",
            "-",
            "-",
        ),
        Row(
            "5",
            "start-up, otel_spawn compiled from source each run",
            f"{added[UNCACHED]:+.0f} ms",
            "(context: an editable install under PYTHONDONTWRITEBYTECODE=1)",
            "-",
            "-",
            "-",
        ),
    ]


if __name__ == "__main__":
    result = run()
    print(render_table(rows(result)))
    print("slowest imports of the otel-spawn command:", result["slowest_imports_ms"])
