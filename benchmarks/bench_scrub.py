"""Scrubber benchmark: adversarial inputs, mixed telemetry throughput, per-span overhead, and the
legacy spawn scrubber side by side (speed, and recall / false positives on the shared corpus).

Run `python benchmarks/bench_scrub.py` for a table; `run()` returns the figures as a dict.
Goals: every 1 MB pathological input under 0.2 s; >= 20 MB/s on mixed telemetry; < 10 us added per
typical step span. All times are medians over repeats.
"""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_spawn._scrub_processor import ScrubbingSpanProcessor
from otel_spawn._scrubber import Scrubber

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling legacy port, however we are loaded
import legacy_scrubber

MB = 1_000_000
LEGACY_ADVERSARIAL_SIZES = (10_000, 20_000)  # the legacy ReDoS patterns cannot take 1 MB
CORPUS = Path(
    os.environ.get("OTEL_SPAWN_SCRUB_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "scrub-corpus.jsonl"
)


def median_seconds(func: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------ inputs


def adversarial(size: int) -> dict[str, str]:
    """Inputs that make backtracking patterns explode (each about `size` characters)."""
    rnd = random.Random(1)
    unit = {
        "a": "a",
        "dashes": "-",
        "base64 run": None,
        "a40= chain": "a" * 40 + "=",
        "@ only": "@",
        "a@": "a@",
        "http://+colons": None,
        "sk-": "sk-",
        "eyJ": "eyJ",
        "plus": "+",
        "slash": "/",
        "digits": "7",
        "1.": "1.",
        "a:": "a:",
        "key=": "key=",
        "Bearer ": "Bearer ",
        "Cookie a=b;": None,
        "BEGIN PEM": "-----BEGIN RSA PRIVATE KEY-----",
        "/home/": "/home/",
        "word chars": "abc_",
        "a://x": "a://x",
        "::": "::",
    }
    out = {}
    for name, piece in unit.items():
        if piece is not None:
            out[name] = piece * (size // len(piece))
    out["base64 run"] = "".join(rnd.choice(string.ascii_letters + string.digits + "+/") for _ in range(size))
    out["http://+colons"] = "http://" + ":" * size
    rich = "sk-or-v1-ghp_AKIAaws@:.0123456789abcdefABCDEFxyzXYZ/\\ \"'=+eyJ_BEGIN PRIVATE KEYhomeUsers:AA"
    out["trigger-rich noise"] = "".join(rnd.choice(rich) for _ in range(size))
    out["Cookie a=b;"] = "Cookie: " + "a=b; " * (size // 5)
    return out


def finding_dense(size: int) -> dict[str, str]:
    """Valid findings every few bytes: linear, but every finding costs Python work."""
    rnd = random.Random(2)
    tokens = (
        "".join(rnd.choices(string.ascii_letters + string.digits + "+/", k=40)) for _ in range(size // 41)
    )
    return {
        "emails x@y.zz": "x@y.zz " * (size // 7),
        "ipv4 10.20.30.40": "10.20.30.40 " * (size // 12),
        "home C:\\Users\\x": "C:\\Users\\x\\ " * (size // 12),
        "random base64 tokens": " ".join(tokens),
    }


def mixed_telemetry(seed: int = 7) -> tuple[list[str], list[str]]:
    """(short attribute values, multi-KB Python stack traces): mostly clean, a few secrets."""
    rnd = random.Random(seed)
    short_pool = [
        "claude", "codex", "hetzner", "digitalocean", "provision_server", "install_agent", "fsn1", "cx22",
        "anthropic/claude-sonnet-4.5", "openai/gpt-5-mini", "1.4.2", "v22.11.0", "200", "linux", "x86_64",
        "https://openrouter.ai/api/v1/chat/completions", "/opt/spawn/bin/spawn", "interactive", "true",
        "HTTP/1.1 429 Too Many Requests", "ssh-keygen -t ed25519 -f ~/.ssh/spawn_ed25519", "us-east-1",
    ]  # fmt: skip
    shorts: list[str] = []
    for i in range(4000):
        kind = i % 10
        if kind == 0:
            shorts.append(f"{rnd.getrandbits(128):032x}"[:8] + "-" + str(rnd.randint(1000, 9999)))
        elif kind == 1:
            shorts.append(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + rnd.randint(0, 10**7))))
        elif kind == 2 and rnd.random() < 0.2:
            shorts.append(f"dev{rnd.randint(1, 99)}@example.com")
        else:
            shorts.append(rnd.choice(short_pool))
    traces = [_trace(rnd) for _ in range(300)]
    return shorts, traces


_MODULES = (
    "httpx/_client.py", "anyio/_backends/_asyncio.py", "spawn/orchestrate.py", "subprocess.py",
    "opentelemetry/sdk/trace/__init__.py", "asyncio/base_events.py",
)  # fmt: skip
_CODE = (
    "return self._send_single_request(request)", "raise exc from None", "result = fn(*args, **kwargs)",
    "response = await self._pool.handle_async_request(req)",
    "self._process = subprocess.Popen(args, env=env)",
)  # fmt: skip


def _trace(rnd: random.Random) -> str:
    bases = ["/usr/lib/python3.12", "/opt/spawn/.venv/lib/python3.12/site-packages", "/srv/app/src"]
    if rnd.random() < 0.25:
        bases.append(f"/home/dev{rnd.randint(1, 50)}/spawn/src")
    frames = []
    for _ in range(rnd.randint(15, 40)):
        module, code = rnd.choice(_MODULES), rnd.choice(_CODE)
        frames.append(
            f'  File "{rnd.choice(bases)}/{module}", line {rnd.randint(10, 2000)}, in run\n    {code}\n'
        )
    tail = "httpx.ConnectError: [Errno 111] Connection refused (attempt 3 of 5, elapsed 12.5s)\n"
    return "Traceback (most recent call last):\n" + "".join(frames) + tail


# ------------------------------------------------------------------------------ measurements


def _timed(scrub: Callable[[str], str], inputs: dict[str, str]) -> dict[str, float]:
    return {name: median_seconds(functools.partial(scrub, text), 3) for name, text in inputs.items()}


def measure_adversarial(scrubber: Scrubber) -> dict[str, Any]:
    small, large = (_timed(legacy_scrubber.scrub, adversarial(n)) for n in LEGACY_ADVERSARIAL_SIZES)
    return {
        "ours_1mb_s": _timed(scrubber.scrub, adversarial(MB)),
        "finding_dense_1mb_s": _timed(scrubber.scrub, finding_dense(MB)),
        "legacy_small_large_s": {name: (small[name], large[name]) for name in small},
        "legacy_sizes": LEGACY_ADVERSARIAL_SIZES,
    }


def measure_throughput(scrubber: Scrubber) -> dict[str, float]:
    shorts, traces = mixed_telemetry()
    values = shorts + traces
    total = sum(len(v) for v in values)

    def ours() -> None:
        for v in values:
            scrubber.scrub_text(v)

    def legacy() -> None:
        for v in values:
            legacy_scrubber.scrub(v)

    t_ours, t_legacy = median_seconds(ours), median_seconds(legacy)
    t_traces = median_seconds(lambda: [scrubber.scrub_text(t) for t in traces])
    t_shorts = median_seconds(lambda: [scrubber.scrub_text(s) for s in shorts])
    return {
        "mixed_bytes": total,
        "ours_mb_s": total / t_ours / MB,
        "legacy_mb_s": total / t_legacy / MB,
        "speedup_vs_legacy": t_legacy / t_ours,
        "traces_mb_s": sum(map(len, traces)) / t_traces / MB,
        "short_value_us": t_shorts / len(shorts) * 1e6,
    }


class _Sink(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        pass


def measure_span_overhead(scrubber: Scrubber, n: int = 20_000) -> dict[str, float]:
    """on_end of ScrubbingSpanProcessor in front of a bare downstream, minus the bare downstream."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "spawn", "service.version": "1.4.2"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes: dict[str, str | int | bool] = {
        "otel_spawn.kind": "step", "otel_spawn.step": "provision_server", "agent": "claude",
        "cloud": "hetzner", "region": "fsn1", "server_type": "cx22", "attempt": 1, "dry_run": False,
        "spawn_version": "1.4.2", "os": "linux",
    }  # fmt: skip
    with provider.get_tracer("bench").start_as_current_span("spawn.step provision", attributes=attributes):
        pass
    (span,) = exporter.get_finished_spans()
    sink = _Sink()
    processor = ScrubbingSpanProcessor(scrubber, [sink])

    def loop(on_end: Callable[[ReadableSpan], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                on_end(span)

        return run

    bare = median_seconds(loop(sink.on_end), 7) / n * 1e6
    scrubbed = median_seconds(loop(processor.on_end), 7) / n * 1e6
    return {"bare_us": bare, "scrubbing_us": scrubbed, "overhead_us": scrubbed - bare}


def corpus_quality(scrub: Callable[[str], str]) -> dict[str, float] | None:
    """Recall (secret lines fully cleaned) and false positives (negatives changed, must_remain lost)."""
    if not CORPUS.is_file():
        return None
    lines = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    secrets = [d for d in lines if d["secret"]]
    cleaned = changed = destroyed = 0
    for d in lines:
        out = scrub(d["text"])
        lost = any(s not in out for s in d["must_remain"])
        if d["secret"]:
            cleaned += all(s not in out for s in d["must_not_remain"])
            destroyed += lost
        else:
            changed += out != d["text"]
    negatives = len(lines) - len(secrets)
    return {
        "lines": len(lines),
        "recall": cleaned / len(secrets),
        "negatives_changed": changed,
        "must_remain_destroyed": destroyed,
        "false_positive_rate": (changed + destroyed) / len(lines),
        "negatives": negatives,
    }


def run() -> dict[str, object]:
    """Measure everything, print a table, and return the figures."""
    scrubber = Scrubber()
    figures: dict[str, object] = {
        "adversarial": measure_adversarial(scrubber),
        "throughput": measure_throughput(scrubber),
        "span": measure_span_overhead(scrubber),
        "corpus_ours": corpus_quality(scrubber.scrub),
        "corpus_legacy": corpus_quality(legacy_scrubber.scrub),
    }
    _print(figures)
    return figures


def _print(figures: dict[str, Any]) -> None:
    adv = figures["adversarial"]
    print(f"{'adversarial input (1 MB)':34} {'otel-spawn':>12}   legacy at 10 KB / 20 KB")
    for name, seconds in adv["ours_1mb_s"].items():
        small, large = adv["legacy_small_large_s"][name]
        flag = "" if seconds < 0.2 else "  (over 0.2 s)"
        print(f"  {name:32} {seconds * 1000:9.1f} ms   {small * 1000:8.1f} / {large * 1000:8.1f} ms{flag}")
    print("finding-dense input (1 MB, linear, not pathological)")
    for name, seconds in adv["finding_dense_1mb_s"].items():
        print(f"  {name:32} {seconds * 1000:9.1f} ms")
    tp = figures["throughput"]
    print(
        f"mixed telemetry ({tp['mixed_bytes'] / MB:.2f} MB): {tp['ours_mb_s']:.1f} MB/s "
        f"(legacy {tp['legacy_mb_s']:.1f} MB/s, x{tp['speedup_vs_legacy']:.2f}); stack traces "
        f"{tp['traces_mb_s']:.1f} MB/s; short values {tp['short_value_us']:.2f} us each"
    )
    sp = figures["span"]
    print(
        f"step span, 10 clean attributes: +{sp['overhead_us']:.2f} us "
        f"(bare {sp['bare_us']:.2f} us, with scrubbing {sp['scrubbing_us']:.2f} us)"
    )
    for who in ("ours", "legacy"):
        q = figures[f"corpus_{who}"]
        if q is None:
            print(f"corpus ({who}): not found at {CORPUS}")
            continue
        print(
            f"corpus ({who:6}): recall {q['recall']:.1%}, false positives {q['false_positive_rate']:.1%} "
            f"({q['negatives_changed']}/{q['negatives']} negatives changed, "
            f"{q['must_remain_destroyed']} lines lost context)"
        )


if __name__ == "__main__":
    run()
