"""A faithful Python port of the eight-regex scrubber of the OpenRouter "spawn" CLI (TypeScript).

Source: `SENSITIVE_PATTERNS` and `scrub()` in `packages/cli/src/shared/telemetry.ts` of
OpenRouterTeam/spawn, in its early version (found through the code search index of this project;
later versions cap the base64 pattern at `{40,100}`). This is the version with the ReDoS pattern
`[A-Za-z0-9+/]{40,}={0,2}\\b`. The patterns are copied unchanged and applied in the same order with
the same replacements; `re.ASCII` gives `\\b` and `\\d` their JavaScript (ASCII) meaning, and the `gi`
flags of the Bearer pattern become `re.IGNORECASE`.

Kept only to compare against in benchmarks/bench_scrub.py. Do not run it on large untrusted input:
`[A-Za-z0-9+/]{40,}={0,2}\\b` backtracks quadratically on a long run of `+` or `/`, and the e-mail
pattern `[a-zA-Z0-9._%+-]+@` does the same on a long run of word characters without an `@`.
"""

from __future__ import annotations

import re

SENSITIVE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # API keys: sk-or-v1-..., sk-ant-..., sk-..., key-...
    (re.compile(r"\b(sk-or-v1-|sk-ant-api03-|sk-|key-)[A-Za-z0-9_-]{10,}\b", re.ASCII), "[REDACTED_KEY]"),
    # GitHub tokens: ghp_..., gho_..., github_pat_...
    (
        re.compile(r"\b(ghp_|gho_|ghu_|ghs_|ghr_|github_pat_)[A-Za-z0-9_]{10,}\b", re.ASCII),
        "[REDACTED_GITHUB_TOKEN]",
    ),
    # Bearer tokens in headers
    (re.compile(r"Bearer\s+[A-Za-z0-9_.\-/+=]{10,}", re.IGNORECASE), "Bearer [REDACTED]"),
    # Email addresses
    (re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}"), "[REDACTED_EMAIL]"),
    # IP addresses (IPv4)
    (re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", re.ASCII), "[REDACTED_IP]"),
    # Hetzner/DO/cloud API tokens (64-char hex or similar)
    (re.compile(r"\b[A-Za-z0-9]{60,}\b", re.ASCII), "[REDACTED_TOKEN]"),
    # Base64-encoded blobs that might contain secrets (40+ chars)
    (re.compile(r"[A-Za-z0-9+/]{40,}={0,2}\b", re.ASCII), "[REDACTED_B64]"),
    # Home directory paths - replace with ~
    (re.compile(r"\/(?:home|Users)\/[a-zA-Z0-9._-]+"), "~/[USER]"),
)


def scrub(text: str) -> str:
    """Scrub sensitive data from a string before sending to telemetry (as the spawn CLI did)."""
    result = text
    for pattern, replacement in SENSITIVE_PATTERNS:
        result = pattern.sub(replacement, result)
    return result
