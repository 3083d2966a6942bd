"""The finders of personal data for the scrubber's built-in rules (`_scrub_rules.builtin_rules`).

Emails, IPv4 and IPv6 addresses, the user name in home directory paths, and payment card numbers.
The conventions of `_scrub_rules` hold: each finder yields `(start, end)` spans of the sensitive part
only, with linear-time `re` patterns, and is called only on texts in which its RE2 trigger matched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING

from otel_spawn._scrub_heuristics import lazy_regex

if TYPE_CHECKING:
    from otel_spawn._scrub_rules import Span


_AT_DOMAIN = lazy_regex(r"@(?P<d>[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){1,8})")
_LOCAL_REVERSED = lazy_regex(r"[A-Za-z0-9._%+-]{1,64}")
_FILE_TLDS = frozenset(
    ("png", "jpg", "jpeg", "gif", "svg", "webp", "js", "ts", "json", "yaml", "yml", "toml")
)
_URL_AUTHORITY = lazy_regex(r"://[^\s/?#@]*$")


def find_email(text: str) -> Iterator[Span]:
    """`jane.doe+x@mail.example.com`; not `git@host:repo`, `pkg@1.2.3`, `icon@2x.png`, URL userinfo."""
    in_url = "://" in text
    for m in _AT_DOMAIN().finditer(text):
        at = m.start()
        rev = _LOCAL_REVERSED().match(text[at - 1 : at - 65 if at > 64 else None : -1]) if at else None
        if rev is None:
            continue
        start = at - rev.end()
        while text[start] == ".":
            start += 1
        domain = m.group("d").rstrip("-")
        tld = domain[domain.rfind(".") + 1 :]
        if start == at or not tld.isalpha() or not 2 <= len(tld) <= 24 or tld.lower() in _FILE_TLDS:
            continue
        if (at - start <= 3 and text[start:at].lower() in ("git", "hg")) or (
            in_url and _URL_AUTHORITY().search(text, max(0, start - 300), start)
        ):
            continue
        yield start, at + 1 + len(domain)


_IPV4 = lazy_regex(r"\d(?<![0-9.]\d)(?<![vV]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![0-9]|\.[0-9])")
_VALID_IPV4 = lazy_regex(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
# From a colon; a bare `::`/`::1` (also `a::b` code paths) is rejected inside the regex already.
_IPV6_TAIL = lazy_regex(
    r":(?:(?<=[0-9A-Fa-f]:)|(?<![0-9A-Fa-f:]:)(?=:)(?!:1?(?![0-9A-Fa-f:.])))[0-9A-Fa-f:.]{1,44}"
)
_HEX_REVERSED = lazy_regex(r"[0-9A-Fa-f]{1,4}")
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = lazy_regex(
    f"(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    f"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    f"|{_H}:(?::{_H}){{1,6}}|:(?::{_H}){{1,7}}"
)


def find_ipv4(text: str) -> Iterator[Span]:
    """IPv4 addresses, private ones too; not loopback 127/8, 0.0.0.0, netmasks or versions (`v1.2.3.4`,
    `3.5.0.1`: four single digits)."""
    for m in _IPV4().finditer(text):
        address = m.group()
        real = len(address) > 7 and _VALID_IPV4().fullmatch(address) is not None  # `1.2.3.4`: a version
        if real and not address.startswith(("127.", "0.", "255.255.255.")):
            yield m.span()


def _is_public_ipv6(cand: str) -> bool:
    """A valid IPv6 address other than loopback `::1` and unspecified `::`."""
    if "." in cand:  # embedded IPv4: rare, let `ipaddress` decide
        try:
            addr = ipaddress.IPv6Address(cand)
        except ValueError:
            return False
        return not (addr.is_loopback or addr.is_unspecified)
    head, _, last = cand.rpartition(":")
    specific = bool(head.strip("0:")) or last.lstrip("0") not in ("", "1")
    return _IPV6().fullmatch(cand) is not None and specific


def find_ipv6(text: str) -> Iterator[Span]:
    """IPv6 addresses; not `::1`, `::`, times (`12:34:56`), MACs or `Type::member` code paths."""
    for m in _IPV6_TAIL().finditer(text):
        rev = _HEX_REVERSED().match(text[max(0, m.start() - 4) : m.start()][::-1])
        start = m.start() - (rev.end() if rev else 0)
        cand = text[start : m.end()].rstrip(".")
        if cand.endswith(":") and not cand.endswith("::"):
            cand = cand[:-1]
        colons, end = cand.count(":"), start + len(cand)
        if colons > 7 or (colons < 6 and "::" not in cand) or not any(c.isdigit() for c in cand):
            continue
        if len([g for g in cand.split(":") if g]) < 3:
            continue  # `a[1::2]` slices, `fe80::1`: not a person's address
        if start and (text[start - 1].isalnum() or text[start - 1] in "_.:"):
            continue
        if (end == len(text) or not (text[end].isalnum() or text[end] == "_")) and _is_public_ipv6(cand):
            yield start, end


_HOME_UNIX = lazy_regex(r"/(?:home|Users)/([^/\s\"'\\:<>|*?$%{}\[\]`]{1,64})")
_URL_PATH = lazy_regex(r"://[^\s/]+[^\s]*$")  # `https://host/home/feed` is a web route
_HOME_WINDOWS = lazy_regex(
    r":(?<=[A-Za-z]:)(?:\\{1,2}|/)(?i:users)(?:\\{1,2}|/)"  # C:\Users\, C:\\Users\\ (escaped), C:/Users/
    r"([^\\/\s\"'<>|:*?$%{}\[\]]{1,64}(?:(?: [^\\/\s\"'<>|:*?]{1,64}){1,2}(?=\\))?)"
)
_NOT_USERS = frozenset(("shared", "public", "default", "guest", "all", "user", "username", "you", ".", ".."))


def find_home_user(text: str) -> Iterator[Span]:
    """The user name in `/home/<u>`, `/Users/<u>`, `C:\\Users\\<u>`; `/root` is a role, not a person."""
    in_url = "://" in text
    for regex in (_HOME_UNIX, _HOME_WINDOWS):
        for m in regex().finditer(text):
            if m.group(1).lower() in _NOT_USERS:
                continue
            if not (in_url and _URL_PATH().search(text, max(0, m.start() - 300), m.start())):
                yield m.span(1)


_CARD = lazy_regex(
    r"\d(?<![0-9.]\d)(?:\d{12,18}|\d{3}(?:[ -]\d{3,6}){2,4})(?![0-9]|[.,][0-9]|[eE][+-]?[0-9])"
)
_CARD_BRANDS = lazy_regex(r"4|5[1-5]|2[2-7]|3[0-9]|6(?:011|4[4-9]|5|2)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def find_payment_card(text: str) -> Iterator[Span]:
    """13-19 digit card numbers (spaces/dashes allowed) with a card-brand prefix and a valid Luhn sum."""
    for m in _CARD().finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        brand = 13 <= len(digits) <= 19 and _CARD_BRANDS().match(digits) is not None
        if brand and len(set(digits)) > 1 and _luhn_ok(digits):
            yield m.span()
