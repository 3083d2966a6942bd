"""Pydantic Logfire's default scrubber on the scrub benchmark's inputs; run in its own venv.

`python peer_logfire_scrub.py INPUT.json` (INPUT: {"values": [...], "corpus": [...]}) prints one JSON
line: throughput on `values` (median of REPEATS passes) and the scrubbed text of every `corpus` line.

Logfire scrubs span attributes: a key that matches its patterns (password, secret, auth, api key,
session, cookie, credential, ...) has its value replaced, and a string value in which a pattern
matches is replaced whole by "[Scrubbed due to '<match>']". Each text here is scrubbed as the value of
a neutral attribute (`value`) with the default `ScrubbingOptions()`, which is what a text value in
a span gets. This script imports only logfire and the standard library (no otel_spawn).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPEATS = 5


def main(path: str) -> None:
    from importlib.metadata import version

    # the scrubber that `ScrubbingOptions()` configures; logfire is installed in the peer venv only
    from logfire._internal.scrubbing import Scrubber  # type: ignore[import-not-found,unused-ignore]

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    values: list[str] = data["values"]
    scrubber = Scrubber(None)

    def scrub(text: str) -> str:
        result: Any = scrubber.scrub_value(("attributes", "value"), text)[0]
        return result if isinstance(result, str) else json.dumps(result)

    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for value in values:
            scrub(value)
        times.append(time.perf_counter() - start)
    total = sum(len(v) for v in values)
    print(
        json.dumps(
            {
                "version": version("logfire"),
                "mb_s": total / statistics.median(times) / 1_000_000,
                "corpus_outputs": [scrub(text) for text in data["corpus"]],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
