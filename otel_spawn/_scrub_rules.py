"""The built-in detection rules of the scrubber (the heuristics they share are in `_scrub_heuristics`,
the finders of personal data in `_scrub_personal`).

A rule has a name (shown in `[REDACTED:<name>]` and in the `otel_spawn.scrubbed` counts), a trigger
and a finder:

- `trigger` is an RE2 pattern that matches somewhere in every text in which the finder can report
  something (a superset). The engine runs the triggers at once in one RE2 `Set` pass (a DFA: linear
  time) and calls only the finders whose trigger fired, so clean text costs one pass.
- `find(text)` yields `(start, end)` spans of the sensitive part only (keys, header words and the
  rest of a path stay). Finders use Python `re` with linear-time patterns: every repeat is bounded,
  a left boundary is a look-behind placed after a literal or first character (so `re` keeps its fast
  scan and never restarts inside a run), and anything fuzzy is decided in Python. The patterns are
  compiled on first use (`lazy_regex`): a process whose texts never fire a trigger never compiles them.

Rules are listed most specific first; where spans of several rules overlap the engine merges them
and names the region after the first rule in this order.

Left alone on purpose: `/root` (a role, not a person), `phc_` and `pk_` keys (public by design),
UUIDs, hex digests, trace/span ids, versions, timestamps, loopback and unspecified addresses, and
placeholders (`sk-or-v1-xxxx`, `<YOUR_KEY>`, `${TOKEN}`, `$TOKEN`, `changeme`, `****`).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from otel_spawn._scrub_heuristics import (
    classify_key,
    is_placeholder,
    is_random_blob,
    is_trivial_value,
    keyed_value_is_secret,
    lazy_regex,
    looks_random,
)
from otel_spawn._scrub_personal import (
    find_email,
    find_home_user,
    find_ipv4,
    find_ipv6,
    find_payment_card,
)

Span = tuple[int, int]


@dataclass(frozen=True)
class Rule:
    """One detector: `find` may report spans only in texts where `trigger` (RE2) matches.

    `min_length > 0` gives the trigger its own RE2 search (stopping at the first match), run only on
    texts at least that long: a long counted repeat (`[...]{40}`) would multiply the states of the
    shared DFA on adversarial text.
    """

    name: str
    trigger: str
    find: Callable[[str], Iterator[Span]]
    min_length: int = 0


# ------------------------------------------------------------------------------ token formats


def _left_ok(text: str, start: int) -> bool:
    return start == 0 or not text[start - 1].isalnum()


_TOKEN_RUN = lazy_regex(r"[A-Za-z0-9_-]{1,4096}")


def _run_end(text: str, pos: int, run: Callable[[], re.Pattern[str]] = _TOKEN_RUN) -> int:
    """Where the run of `run()` characters going on at `pos` ends: a secret longer than its pattern's
    bound is redacted whole, not cut at the bound."""
    pattern = run()
    while (m := pattern.match(text, pos)) is not None:
        pos = m.end()
    return pos


_T = "[A-Za-z0-9_-]"  # base64url token characters
_A = "[A-Za-z0-9]"
_MASKED_TAIL = lazy_regex(r"\.{2,3}|…")
# (name, prefix, body): a token is prefix + body, not preceded by a letter or digit, and reported
# unless its body is a placeholder. `sk-or-v1-0a9f3a...6835` (a masked key) goes with its tail.
_TOKENS = (
    ("anthropic_key", "sk-ant-", f"{_T}{{16,400}}"),
    ("openrouter_key", "sk-or-v1-", f"{_A}{{8,128}}(?:(?:\\.{{2,3}}|…){_A}{{1,8}})?"),
    ("github_token", "gh[pousr]_", f"{_A}{{20,255}}"),
    ("github_token", "github_pat_", "[A-Za-z0-9_]{20,255}"),
    ("gitlab_token", "gl(?:pat|oas|dt|rt|cbt|ptt|ft|imt|agent|soat|ffct)-", f"{_T}{{20,255}}"),
    ("aws_access_key", "A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA|3T[A-Z0-9])", f"[A-Z0-9]{{16}}(?!{_A})"),
    ("google_api_key", "AIza", f"{_T}{{30,60}}"),
    ("slack_token", "x(?:ox[a-z]|app)-", "[A-Za-z0-9-]{10,250}"),
    ("slack_webhook", "hooks\\.slack\\.com/(?:services|workflows|triggers)/", "[A-Za-z0-9_/-]{8,256}"),
    ("stripe_key", "(?:[sr]k_(?:live|test)|whsec)_", f"{_A}{{10,255}}"),
    ("huggingface_token", "hf_", f"{_A}{{30,64}}"),
    ("npm_token", "npm_", f"{_A}{{30,64}}"),
    ("digitalocean_token", "do[opr]_v1_", f"{_A}{{32,80}}"),
    ("posthog_personal_key", "phx_", f"{_A}{{20,80}}"),
    ("tailscale_key", "tskey-[a-z]{2,10}-", "[A-Za-z0-9-]{10,200}"),
    ("sendgrid_key", "SG\\.", f"{_T}{{16,32}}\\.{_T}{{20,64}}"),
)  # fmt: skip
_KEEP_PREFIX = frozenset(("slack_webhook",))  # redact the body only: the prefix is a public URL
_PATH_RUN = lazy_regex(r"[A-Za-z0-9_/-]{1,4096}")


def token_rule(name: str, prefix: str, body: str) -> Rule:
    """Rule for a token with a fixed prefix; its trigger is the pattern with open upper bounds."""
    regex = lazy_regex(f"{prefix}(?P<b>{body})")
    group = "b" if name in _KEEP_PREFIX else 0
    run = _PATH_RUN if name in _KEEP_PREFIX else _TOKEN_RUN
    trigger = re.sub(r"\(\?!.*?\)", "", re.sub(r"\{(\d+),\d+\}", r"{\1,}", prefix + body))

    def find(text: str) -> Iterator[Span]:
        covered = 0
        for m in regex().finditer(text):
            body = _MASKED_TAIL().split(m.group("b"))[0]
            if m.start() >= covered and _left_ok(text, m.start()) and not is_placeholder(body):
                covered = _run_end(text, m.end(), run)
                yield m.start(group), covered

    return Rule(name, trigger, find)


_JWT = lazy_regex(f"eyJ(?<!{_T}eyJ){_T}{{4,8192}}\\.{_T}{{4,16384}}\\.{_T}{{0,8192}}")
_OPENAI = lazy_regex(f"sk-(?!ant-|or-){_T}{{20,400}}")
_TELEGRAM = lazy_regex(r":AA[A-Za-z0-9_-]{30,40}")
_DIGITS_REVERSED = lazy_regex(r"[0-9]{6,12}")


def find_jwt(text: str) -> Iterator[Span]:
    """JSON Web Tokens: three base64url segments, the first starting `eyJ`."""
    for m in _JWT().finditer(text):
        if not is_placeholder(m.group()):
            yield m.start(), _run_end(text, m.end())


def find_openai(text: str) -> Iterator[Span]:
    """OpenAI keys (`sk-proj-`, `sk-svcacct-`, `sk-admin-`, legacy) and other random `sk-` keys."""
    covered = 0
    for m in _OPENAI().finditer(text):
        if m.start() >= covered and _left_ok(text, m.start()) and looks_random(m.group()[3:], 20):
            covered = _run_end(text, m.end())
            yield m.start(), covered


def find_telegram(text: str) -> Iterator[Span]:
    """Telegram bot tokens `<6-12 digits>:AA<30-40 characters>`."""
    for m in _TELEGRAM().finditer(text):
        rev = _DIGITS_REVERSED().match(text[max(0, m.start() - 12) : m.start()][::-1])
        if rev is not None and _left_ok(text, m.start() - rev.end()):
            yield m.start() - rev.end(), m.end()


_PEM_BEGIN = lazy_regex(r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = lazy_regex(r"-----END (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")
_PEM_BODY = lazy_regex(r"[A-Za-z0-9+/=\s\\:,-]{0,16384}")


def find_private_key(text: str) -> Iterator[Span]:
    """Whole PEM private key blocks (also with `\\n` escapes); a block cut short runs to its body's end."""
    pos, end = 0, _PEM_END().search(text)  # END is searched again only once passed: linear time
    while (begin := _PEM_BEGIN().search(text, pos)) is not None:
        if end is not None and end.start() < begin.end():
            end = _PEM_END().search(text, begin.end())
        if end is not None and end.start() - begin.end() <= 16384:
            pos = end.end()
        else:
            body = _PEM_BODY().match(text, begin.end())
            pos = body.end() if body else begin.end()
        yield begin.start(), pos


# ------------------------------------------------------------------------------ credentials by structure

_AUTH = lazy_regex(  # starts with a character class (fast scan), then `(?i)authorization|bearer|basic`
    r"[AaBb](?i:(?<=a)(?P<hdr>uthorization)\\?[\"']?[ \t]{0,3}[:=][ \t]{0,3}\\?[\"']?"
    r"(?:(?:bearer|basic|token|bot|apikey|key)[ \t]{1,3})?|(?<=b)(?:earer|asic)[ \t]{1,3})"
    r"(?P<s>[A-Za-z0-9._~+/=-]{4,8192})"
)
_USERINFO = lazy_regex(r"://([^\s/?#@\[\]\"'<>]{1,256})@")
_CREDENTIAL_RUN = lazy_regex(r"[A-Za-z0-9._~+/=-]{1,4096}")


def find_auth_header(text: str) -> Iterator[Span]:
    """The credential after `Authorization:` (any scheme) or a token-like one after `Bearer`/`Basic`."""
    for m in _AUTH().finditer(text):
        cred = m.group("s")
        if not cred.isalpha() and not is_placeholder(cred) and (m.group("hdr") or looks_random(cred, 16)):
            yield m.start("s"), _run_end(text, m.end(), _CREDENTIAL_RUN)


def find_url_userinfo(text: str) -> Iterator[Span]:
    """`user:password` (or a bare token) in `scheme://user:password@host`; a plain user name stays."""
    for m in _USERINFO().finditer(text):
        user, _, password = m.group(1).partition(":")
        if (password and not is_placeholder(password)) or looks_random(user, 16):
            yield m.span(1)


_KEYED_WORDS = (
    "password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "credentials", "credential",
    "key", "auth", "sessionid", "session", "sid", "jwt", "pat",
)  # fmt: skip
_KEYED_TAIL = (
    r"(?P<q>\\?[\"'])?(?:(?P<sep>[ \t]{0,3}(?:=>|[:=])[ \t]{0,3})|(?P<ws>[ \t]{1,3}))"
    r"(?P<v>\\?\"[^\"\\\r\n]{1,1024}\\?\"|\\?'[^'\\\r\n]{1,1024}\\?'|[^\s\"'`&;,<>(){}\[\]\\]{1,1024})"
)
_KEY_NAME_REVERSED = lazy_regex(r"[A-Za-z0-9_.-]{0,64}")
_BARE_RUN = lazy_regex(r"[^\s\"'`&;,<>(){}\[\]\\]{1,4096}")
_WORD = lazy_regex(r"[A-Za-z_]+")
_ATTRIBUTE = lazy_regex(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _is_code(text: str, key: str, value: str, end: int, loose: bool) -> bool:
    """A bare value that is code or prose: `token = get_token()`, `password: str`, `key=self.key`."""
    if end < len(text) and text[end] in "([":
        return True
    return _ATTRIBUTE().fullmatch(value) is not None or (loose and _WORD().fullmatch(value) is not None)


def _first_letter_alternation(words: list[str]) -> str:
    """`(?i)word1|word2|...` written to start with a character class, which `re` scans for fast:
    `[Pp](?i:(?<=p)(?:assword|ass))` instead of an ignore-case alternation tried at every position."""
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0].lower(), []).append(re.escape(word[1:]))
    first = "".join(re.escape(c) + re.escape(c.upper()) for c in groups)
    rest = "|".join(f"(?<={re.escape(c)})(?:{'|'.join(rests)})" for c, rests in groups.items())
    return f"[{first}](?i:{rest})"


def make_keyed_finder(extra_keys: frozenset[str]) -> tuple[str, Callable[[str], Iterator[Span]]]:
    """Trigger and finder for `KEY=value`, `--key value`, `"key": "value"` and `?key=value&`."""
    words = sorted({*_KEYED_WORDS, *extra_keys}, key=len, reverse=True)
    regex = lazy_regex(f"(?P<w>{_first_letter_alternation(words)}){_KEYED_TAIL}")
    any_word = "(?:" + "|".join(map(re.escape, words)) + ")"
    trigger = f"(?i){any_word}\\\\?[\"']?[ \\t]{{0,3}}(?:[:=]|=>)|(?i)-[A-Za-z0-9_.-]*{any_word}[ \\t]"

    def find(text: str) -> Iterator[Span]:
        covered = 0
        for m in regex().finditer(text):
            if m.start() < covered:
                continue
            rev = _KEY_NAME_REVERSED().match(text[max(0, m.start() - 64) : m.start()][::-1])
            key_start = m.start() - (rev.end() if rev else 0)
            key = text[key_start : m.end("w")]
            if m.group("ws") is not None and (not key.startswith("-") or m.group("q")):
                continue  # `--flag value` only: `api key sk-...` is prose
            if text.endswith("//", 0, key_start):
                continue  # `scheme://user:password@` is url_userinfo's
            v_start, v_end = m.span("v")
            if text[v_start] in "\\\"'":
                v_start += 2 if text[v_start] == "\\" else 1
                v_end -= 2 if text[v_end - 2] == "\\" else 1
            else:
                v_end = covered = _run_end(text, v_end, _BARE_RUN)  # judged once, whatever its length
                while v_end > v_start and text[v_end - 1] in ".:":
                    v_end -= 1  # sentence punctuation
                if _is_code(text, key, text[v_start:v_end], v_end, m.group("sep") != "="):
                    continue
            value = text[v_start:v_end]
            if value.startswith("--") or value.lower() == key.lstrip("-").lower():
                continue  # `--token --verbose`, `password=password`
            if keyed_value_is_secret(classify_key(key, extra_keys), value):
                yield v_start, v_end

    return trigger, find


_COOKIE = lazy_regex(
    r"[SsCc](?<![A-Za-z0-9-].)(?i:(?<=s)et-cookie|(?<=c)ookie)"  # `(?i)(set-)?cookie`, scanned for fast
    r"\\?[\"']?[ \t]{0,3}:[ \t]{0,3}\\?[\"']?([^\r\n\"']{1,8192})"
)
_COOKIE_PAIR = lazy_regex(r"([^=;,\s]{1,256})=([^;,\s]{8,4096})")
_COOKIE_ATTRS = frozenset(("path", "domain", "expires", "max-age", "samesite", "priority", "version"))
_PLAIN_WORDS = lazy_regex(r"[a-z]+(?:[-_][a-z]+)*")


def find_cookie(text: str) -> Iterator[Span]:
    """Cookie values in `Cookie:`/`Set-Cookie:` headers; names, attributes and plain words stay."""
    for m in _COOKIE().finditer(text):
        for pair in _COOKIE_PAIR().finditer(text, m.start(1), m.end(1)):
            name, value = pair.group(1), pair.group(2)
            plain = _PLAIN_WORDS().fullmatch(value) is not None
            if name.lower() not in _COOKIE_ATTRS and not plain and not is_trivial_value(value):
                yield pair.span(2)


_B64_ALPHABET = string.ascii_letters + string.digits + "+/_-"
# A text becomes one byte per character (non-ASCII as `?`), then `#` for a base64(url) character and a
# space for any other: `bytes.find` spots runs of 40+ in C, far faster than a regex scan in `re`.
_B64_MASK = bytes(ord("#") if chr(i) in _B64_ALPHABET else ord(" ") for i in range(256))
_RUN_40 = b"#" * 40
_B64_REST = lazy_regex(r"[A-Za-z0-9+/_-]{1,4096}={0,2}")
_DIGEST_BEFORE = lazy_regex(
    r"(?i:sha-?(?:1|224|256|384|512)|md5|digest|checksum)[\"']?[ \t]{0,3}[-:=][ \t]{0,3}[\"']?$"
)
_PATH_WORDS = lazy_regex(r"/?(?:[a-z0-9_-]{0,32}/){1,64}")
_AWS_SECRET = lazy_regex(r"[^A-Za-z0-9+/=]([A-Za-z0-9+/]{40})(?![A-Za-z0-9+/=])")
_AWS_CONTEXT = lazy_regex(r"(?i)aws|secret")


def find_high_entropy(text: str) -> Iterator[Span]:
    """Unkeyed runs of 40+ random base64(url) characters; not paths, identifiers or digests.

    In a path or URL (`/api/v1/<blob>`, `slack.com/services/<blob>`) leading lowercase segments stay.
    A run found random goes with its `=` padding and anything joined on by `=` (`<blob>==<more>`).
    Each character is judged in one run at most: linear time.
    """
    mask = text.encode("ascii", "replace").translate(_B64_MASK)
    pos = 0
    while (start := mask.find(_RUN_40, pos)) >= 0:
        end = mask.find(b" ", start + 40)
        end = pos = len(text) if end < 0 else end
        if text[start] == "/" or text[start - 1 : start] in (".", ":"):
            words = _PATH_WORDS().match(text, start, end)
            start = words.end() if words is not None and words.end() < end else start
        if end - start < 40 or not is_random_blob(text[start:end]):
            continue
        if _DIGEST_BEFORE().search(text, max(0, start - 24), start) is None:  # `sha256=<base64 digest>`
            padding = 2 if text.startswith("==", end) else 1 if text.startswith("=", end) else 0
            pos = _run_end(text, end + padding, _B64_REST)
            yield start, pos


def find_aws_secret(text: str) -> Iterator[Span]:
    """40-character AWS secret access keys within 100 characters after `aws` or `secret`."""
    for m in _AWS_SECRET().finditer(text):
        if _AWS_CONTEXT().search(text, max(0, m.start(1) - 100), m.start(1)) and looks_random(m.group(1), 40):
            yield m.span(1)


@functools.lru_cache(maxsize=8)
def builtin_rules(extra_secret_keys: frozenset[str] = frozenset()) -> tuple[Rule, ...]:
    """All built-in rules, most specific first (the order names merged regions); immutable, shared."""
    keyed_trigger, find_keyed = make_keyed_finder(extra_secret_keys)
    return (
        Rule("private_key", r"BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY", find_private_key),
        Rule("jwt", f"eyJ{_T}{{4,}}\\.{_T}{{4,}}\\.", find_jwt),
        *(token_rule(*token) for token in _TOKENS[:2]),
        Rule("openai_key", f"sk-{_T}{{20,}}", find_openai),
        *(token_rule(*token) for token in _TOKENS[2:]),
        Rule("telegram_bot_token", r"[0-9]{6}:AA[A-Za-z0-9_-]{30}", find_telegram),
        Rule("auth_header", r"(?i)authorization|bearer|basic", find_auth_header),
        Rule("url_userinfo", r"://[^\s/?#@]{1,256}@", find_url_userinfo),
        Rule("cookie", r"(?i)cookie", find_cookie),
        Rule("keyed_secret", keyed_trigger, find_keyed),
        Rule("aws_secret_key", r"(?i)aws|secret", find_aws_secret),
        Rule("high_entropy", r"[A-Za-z0-9+/_-]{40}", find_high_entropy, min_length=40),
        Rule("email", r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9-]", find_email),
        Rule("ipv4", r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", find_ipv4),
        Rule("ipv6", r"::|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){5}:[0-9A-Fa-f]", find_ipv6),
        Rule("home_user", r"/home/[^/\s]|/Users/|(?i)[/\\]users[/\\]", find_home_user),
        Rule("payment_card", r"\d{4}[ -]?\d{3}", find_payment_card),
    )
