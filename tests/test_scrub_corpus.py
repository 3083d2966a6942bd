"""Every line of the shared scrub corpus: secrets gone, context kept, negatives byte-identical.

The corpus is `shared/data/scrub-corpus.jsonl` next to the repository (override the path with
OTEL_SPAWN_SCRUB_CORPUS). The rules are not fitted to it: tests/test_scrubber.py uses fresh examples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from otel_spawn._scrubber import Scrubber

CORPUS = Path(
    os.environ.get("OTEL_SPAWN_SCRUB_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "scrub-corpus.jsonl"
)
if not CORPUS.is_file():
    pytest.skip(f"scrub corpus not found at {CORPUS} (set OTEL_SPAWN_SCRUB_CORPUS)", allow_module_level=True)

LINES: list[dict[str, Any]] = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
SCRUBBER = Scrubber()


@pytest.mark.parametrize("line", LINES, ids=[line["category"] for line in LINES])
def test_corpus_line(line: dict[str, Any]) -> None:
    """A secret line loses its must_not_remain pieces, keeps its must_remain ones; a negative is unchanged."""
    text: str = line["text"]
    out = SCRUBBER.scrub(text)
    if line["secret"]:
        assert [s for s in line["must_not_remain"] if s in out] == []
    else:
        assert out == text
    assert [s for s in line["must_remain"] if s not in out] == []
    assert SCRUBBER.scrub(out) == out
