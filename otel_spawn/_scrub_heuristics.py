"""How a value or a key looks: the heuristics the scrubber's rules share.

Values: placeholders (`xxxx`, `${TOKEN}`, `your-key-here`), trivial values (`true`, `8080`, `API_KEY`),
random-looking tokens and long random base64 blobs, told apart from words, identifiers, paths and
digests by character classes, their switches and the Shannon entropy. Keys: `classify_key` grades
an attribute or variable name (`api_key` STRONG, `cache.key` WEAK, `keyboard` not secret).
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections import Counter
from collections.abc import Callable


def lazy_regex(pattern: str) -> Callable[[], re.Pattern[str]]:
    """A getter of `re.compile(pattern)` that compiles on its first call, then returns the same object.

    A finder runs only on texts in which its rule's RE2 trigger fired, so a process that never meets
    a secret never compiles its patterns (compiling them all at import was most of the scrubber's
    start-up cost). Two threads may both compile on a first call; either result is the same.
    """
    return functools.cache(lambda: re.compile(pattern))


# ------------------------------------------------------------------------------ value heuristics

_PLACEHOLDER_MARKS = ("...", "…", "***", "###", "<", ">", "${", "{{")  # never in a token's alphabet
# Stand-in words count in a short value, or anywhere at a word edge: a long random token contains
# `your` or `xxxx` by chance now and then, `your-api-key-here` or `IOSFODNN7EXAMPLE` by design.
_PLACEHOLDER_WORDS = (
    "xxxx|example|your|placeholder|changeme|change_me|change-me|dummy|sample|redacted|insert|replace|fake"
    "|123456|234567|345678|456789|abcdef|bcdefg|qwerty"
)
_PLACEHOLDER_WORD = lazy_regex(_PLACEHOLDER_WORDS)
_PLACEHOLDER_EDGE = lazy_regex(f"(?<![a-z0-9])(?:{_PLACEHOLDER_WORDS})|(?:{_PLACEHOLDER_WORDS})(?![a-z0-9])")
_TRIVIAL = frozenset((
    "true", "false", "null", "none", "nil", "undefined", "yes", "no", "on", "off", "required",
    "optional", "missing", "invalid", "expired", "empty", "set", "unset", "provided", "hidden",
    "masked", "present", "absent", "n/a", "na",
))  # fmt: skip
_ENV_NAME = lazy_regex(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_SAME_CHAR_RUN = lazy_regex(r"(.)\1{7}")
_CLASS_OF = {
    c: "d" if chr(c).isdigit() else "u" if chr(c).isupper() else "l" if chr(c).islower() else "o"
    for c in range(128)
}


def _classes(text: str) -> str:
    """`text` with ASCII digits as `d`, upper-case letters `u`, lower-case letters `l`, the rest `o`."""
    return text.translate(_CLASS_OF)


def switch_ratio(text: str) -> float:
    """Share of neighbouring characters that change class (digit / upper / lower / other).

    Random tokens switch on about 60% of neighbours; identifiers, paths and words on under 40%.
    """
    classes = _classes(text)
    return sum(map(operator.ne, classes, classes[1:])) / (len(text) - 1) if len(text) > 1 else 0.0


def shannon_entropy(text: str) -> float:
    """Bits per character of the character distribution of `text`."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values()) if n else 0.0


def is_placeholder(value: str) -> bool:
    """True for stand-ins: `xxxx`, `your-key-here`, `${X}`, `$X`, `%X%`, `****`, `abcdef123456`."""
    low = value.lower()
    if any(mark in low for mark in _PLACEHOLDER_MARKS):
        return True
    if low.startswith("$") or (low.startswith("%") and low.endswith("%")):
        return True
    if len(set(low)) <= 4 or _SAME_CHAR_RUN().search(low) is not None:
        return True
    return (_PLACEHOLDER_WORD if len(low) <= 40 else _PLACEHOLDER_EDGE)().search(low) is not None


def is_trivial_value(value: str) -> bool:
    """True for values that cannot be a credential: booleans, short numbers, env var names."""
    v = value.strip()
    if len(v) < 4 or v.lower() in _TRIVIAL or v.startswith("[REDACTED") or (v.isdigit() and len(v) < 8):
        return True
    return _ENV_NAME().fullmatch(v) is not None or is_placeholder(v)


def looks_random(value: str, min_len: int = 12) -> bool:
    """True when `value` looks machine-generated (a token), not a word, name, path or number."""
    v = value.strip()
    if len(v) < min_len or is_placeholder(v):
        return False
    classes = _classes(v)
    if ("d" in classes) + ("u" in classes) + ("l" in classes) < 2 or ("d" not in classes and len(v) < 20):
        return False
    return switch_ratio(v) >= 0.35 and len(set(v)) >= 0.4 * min(len(v), 40)


_HEX_OR_UUID = lazy_regex(r"[0-9a-fA-F-]+")
_DIGEST_PREFIX = lazy_regex(r"(?i:sha-?(?:1|224|256|384|512)|md5)[-_]")
_PUBLIC_PREFIXES = ("phc_", "pk_live_", "pk_test_")
_LONG_SEGMENT = lazy_regex(r"[^/]{8,}")


def _wordy(segment: str) -> bool:
    """A path segment that is a word, an identifier or a hex id."""
    return _HEX_OR_UUID().fullmatch(segment) is not None or switch_ratio(segment) < 0.35


def is_random_blob(token: str) -> bool:
    """True for a long unkeyed base64/base64url run of random data (not a path, id or digest)."""
    body = token.rstrip("=")
    if _DIGEST_PREFIX().match(body) or body.startswith(_PUBLIC_PREFIXES) or _HEX_OR_UUID().fullmatch(body):
        return False
    if len(body) > 4096:  # megabytes of one run: no path, no identifier; judge by variety only
        return len(set(body)) >= 16
    if "/" in body:  # judge a path by its non-word segments: `blob/<git sha>/x.py` is no blob
        body = "".join(segment for segment in _LONG_SEGMENT().findall(body) if not _wordy(segment))
        if len(body) < 32:
            return False
    if len(set(body)) <= 4 or _SAME_CHAR_RUN().search(body) is not None:
        return False  # `xxxx...`, `AAAA...`: a stand-in (words are no sign: long random runs contain some)
    return switch_ratio(body) >= 0.45 and shannon_entropy(body) >= 4.2


# ------------------------------------------------------------------------------ secret-looking keys

STRONG, WEAK, NOT_SECRET = 2, 1, 0
_KEY_WORDS = lazy_regex(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_STRONG_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "credential", "credentials")
_STRONG_WORDS = frozenset(("pass", "pwd", "jwt"))
_WEAK_WORDS = frozenset(("auth", "authorization", "session", "sessionid", "sid", "cookie", "key", "pat"))
_KEY_QUALIFIERS = frozenset((
    "api", "access", "secret", "private", "auth", "client", "account", "master", "signing", "app",
    "encryption", "license", "service", "deploy", "admin", "personal", "session", "storage",
    "subscription", "webhook", "pass", "x",
))  # fmt: skip


def classify_key(key: str, extra: frozenset[str] = frozenset()) -> int:
    """STRONG for `api_key`, `db.password`, `x-auth-token`, `_authToken`; WEAK for `*_key`; else 0."""
    low = key.lower()
    if low in extra or low.rsplit(".", 1)[-1] in extra:
        return STRONG
    words = [w.lower() for w in _KEY_WORDS().findall(key)]
    if not words or low in ("pwd", "oldpwd"):  # the shell's working directories
        return NOT_SECRET
    last, prev = words[-1], words[-2] if len(words) > 1 else ""
    if last in _STRONG_WORDS or last.endswith(_STRONG_SUFFIXES):
        return STRONG
    if last == "key":
        return STRONG if prev in _KEY_QUALIFIERS else WEAK
    if last.endswith("key") and last[:-3] in _KEY_QUALIFIERS:
        return STRONG
    return WEAK if last in _WEAK_WORDS else NOT_SECRET


def keyed_value_is_secret(strength: int, value: str) -> bool:
    """Under a STRONG key any non-trivial value is secret; under a WEAK one a random-looking one."""
    if strength == STRONG:
        return not is_trivial_value(value)
    return strength == WEAK and looks_random(value)
