"""The scrubbing engine: find secrets and personal data in text and replace them with markers.

`Scrubber.scrub_text` replaces only the sensitive part of a text with `[REDACTED:<rule>]` (never any
part of the secret) and returns how often each rule fired. Clean text costs one RE2 `Set` pass (a
DFA over all rule triggers at once, linear time; texts of 40+ characters also get an RE2 search for
a long run, which stops at the first) and comes back as the same object; only rules whose trigger
fired run their finders.
Scrubbing is idempotent: markers are never scrubbed again. User patterns run on RE2 only.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from otel_spawn._errors import ConfigError
from otel_spawn._scrub_heuristics import classify_key, keyed_value_is_secret, lazy_regex
from otel_spawn._scrub_rules import Rule, builtin_rules

if TYPE_CHECKING:  # imported where used: loading RE2 is a start-up cost, and a process may never scrub
    import re2

SECRET_ATTRIBUTE_RULE = "secret_attribute"
_MARKER = lazy_regex(r"\[REDACTED(?::[A-Za-z0-9_.-]{1,64})?\]")
_RULE_NAME = lazy_regex(r"[A-Za-z0-9_.-]{1,64}")
_RE2_MAX_MEM = 64 << 20
_CLEAN_CACHE_SIZE = 4096
_CLEAN_CACHE_MAX_LEN = 256


def _no_counts() -> Counter[str]:
    """An empty Counter without Counter.__init__ (1 us of the 2 us a clean short value cost)."""
    return Counter.__new__(Counter)


@dataclass(frozen=True)
class Finding:
    """One redacted region: the rule that named it and its span in the ORIGINAL text."""

    rule: str
    start: int
    end: int


@dataclass(frozen=True)
class ScrubOptions:
    """What to scrub beyond the built-in rules, and what to leave alone.

    - `extra_patterns`: rule name -> RE2 pattern (linear time: no backreferences or look-around).
      A group named `secret` limits the redaction to that group; otherwise the whole match goes.
    - `extra_secret_keys`: attribute/variable names whose values are always secret (case-insensitive).
    - `allow`: values to keep although a rule matched them; an entry `re:<pattern>` is an RE2
      pattern that must match the whole value, any other entry is an exact value.
    - `exempt_keys`: span attribute keys whose values are never scrubbed.
    """

    extra_patterns: Mapping[str, str] = field(default_factory=dict)
    extra_secret_keys: Collection[str] = ()
    allow: Collection[str] = ()
    exempt_keys: Collection[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.extra_patterns, Mapping):
            raise ConfigError("ScrubOptions.extra_patterns must be a mapping of rule name -> pattern")
        object.__setattr__(self, "extra_patterns", MappingProxyType(dict(self.extra_patterns)))
        for name in ("extra_secret_keys", "allow", "exempt_keys"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(
                    f"ScrubOptions.{name} must be a collection of strings: ({value!r},), not {value!r}"
                )
            if not all(isinstance(v, str) and v for v in value):
                raise ConfigError(
                    f"ScrubOptions.{name} must hold non-empty strings only, got {list(value)!r}"
                )
            object.__setattr__(self, name, tuple(value))


def _re2_options() -> re2.Options:
    import re2

    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False
    return options


def _compile_user(what: str, pattern: str) -> re2._Regexp:
    import re2

    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{what}: the pattern must be a non-empty string, got {pattern!r}")
    try:
        regex = re2.compile(pattern, _re2_options())
    except re2.error as exc:
        raise ConfigError(
            f"{what}: pattern {pattern!r} does not compile with RE2 ({exc}); RE2 has no backreferences "
            "or look-around, rewrite the pattern without them"
        ) from None
    if regex.fullmatch("") is not None:
        raise ConfigError(f"{what}: pattern {pattern!r} matches the empty string; make it match something")
    return regex


def _trigger_set(triggers: list[str]) -> re2.Set:
    """One DFA over all `triggers` (an RE2 `Set`): which of them match, in a single linear pass."""
    import re2

    trigger_set = re2.Set.SearchSet(_re2_options())
    for trigger in triggers:
        trigger_set.Add(trigger)
    trigger_set.Compile()
    return trigger_set


def _user_rule(name: str, pattern: str) -> Rule:
    regex = _compile_user(f"ScrubOptions.extra_patterns[{name!r}]", pattern)
    group = regex.groupindex.get("secret", 0)  # the re2 wrapper takes group numbers only

    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in regex.finditer(text):
            yield m.span(group)

    return Rule(name, pattern, find, min_length=1)  # its own DFA: a user pattern cannot slow the shared one


def _user_rules(patterns: Mapping[str, str], extra_keys: frozenset[str]) -> tuple[Rule, ...]:
    """The rules for `ScrubOptions.extra_patterns`, each name and pattern checked (a ConfigError)."""
    if not patterns:
        return ()
    known = {r.name for r in builtin_rules(extra_keys)} | {SECRET_ATTRIBUTE_RULE}
    rules = []
    for name, pattern in patterns.items():
        if not isinstance(name, str) or not _RULE_NAME().fullmatch(name) or name in known:
            raise ConfigError(
                f"ScrubOptions.extra_patterns: rule name {name!r} must be new and made of letters, "
                "digits, '_', '.', '-' (at most 64 characters)"
            )
        known.add(name)
        rules.append(_user_rule(name, pattern))
    return tuple(rules)


@dataclass(frozen=True)
class _Engine:
    """All rules and their compiled triggers: what a scrub needs beyond the options."""

    rules: tuple[Rule, ...]
    names: tuple[str, ...]
    prefilter: re2.Set  # one DFA over the triggers of the `shared` rules
    shared: tuple[int, ...]  # index in the shared Set -> rule index
    alone: tuple[tuple[int, re2._Regexp, int], ...]  # (min_length, own trigger, rule index)

    @classmethod
    def build(cls, rules: tuple[Rule, ...]) -> _Engine:
        import re2

        shared = tuple(i for i, r in enumerate(rules) if not r.min_length)
        alone = tuple(
            (r.min_length, re2.compile(r.trigger, _re2_options()), i)
            for i, r in enumerate(rules)
            if r.min_length
        )
        prefilter = _trigger_set([rules[i].trigger for i in shared])
        return cls(rules, tuple(r.name for r in rules), prefilter, shared, alone)


class Scrubber:
    """Finds and redacts secrets and personal data; immutable and thread-safe once built.

    The constructor checks the options (a bad user pattern raises ConfigError here); the built-in
    rules and the RE2 prefilter are built on first use, so a process that never scrubs pays nothing.
    """

    def __init__(self, options: ScrubOptions | None = None) -> None:
        self.options = opts = options or ScrubOptions()
        self._extra_keys = frozenset(k.lower() for k in opts.extra_secret_keys)
        self._user_rules = _user_rules(opts.extra_patterns, self._extra_keys)
        self._allow_exact = frozenset(a for a in opts.allow if not a.startswith("re:"))
        self._allow_res = tuple(
            _compile_user(f"ScrubOptions.allow[{a!r}]", a[3:]) for a in opts.allow if a.startswith("re:")
        )
        self._exempt = frozenset(opts.exempt_keys)
        self._clean: set[str] = set()  # short texts known to be clean
        self._key_strength: dict[str, int] = {}

    @functools.cached_property
    def _engine(self) -> _Engine:
        """Built on first use; threads that race to build it each get an equal, immutable engine."""
        return _Engine.build(builtin_rules(self._extra_keys) + self._user_rules)

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Names of all rules, built-in first, in the order that names merged regions."""
        return self._engine.names

    def might_match(self, text: str) -> bool:
        """Cheap conservative check (DFA passes): False means `scrub_text` returns `text` as is."""
        return bool(self._hits(text))

    def _hits(self, text: str) -> list[int]:
        """Indices of the rules whose trigger matches somewhere in `text`."""
        if not text:
            return []
        engine = self._engine
        data = text.encode("utf-8", "replace")  # once for all passes; a lone surrogate becomes `?`
        found = engine.prefilter.Match(data)
        hits = [engine.shared[i] for i in found] if found else []
        for min_length, trigger, index in engine.alone:
            if len(text) >= min_length and trigger.search(data) is not None:  # stops at the first match
                hits.append(index)
        return hits

    def key_strength(self, key: str) -> int:
        """How secret-looking an attribute key is: STRONG, WEAK or 0 (0 also for exempt keys)."""
        strength = self._key_strength.get(key)
        if strength is None:
            strength = 0 if key in self._exempt else classify_key(key, self._extra_keys)
            if len(self._key_strength) > 4096:
                self._key_strength.clear()
            self._key_strength[key] = strength
        return strength

    def explain(self, text: str) -> list[Finding]:
        """The regions `scrub_text` would redact, merged, in order, with the rule naming each."""
        names = self._engine.names
        return [Finding(names[i], s, e) for s, e, i in self._regions(text)]

    def scrub_text(self, text: str) -> tuple[str, Counter[str]]:
        """Redact `text`; returns it with rule -> count (the same object and no counts when clean).

        Short values known to be clean are remembered (telemetry repeats its step names, agents,
        versions): a bounded set of clean strings only, so no secret is ever kept.
        """
        if text in self._clean:
            return text, _no_counts()
        regions = self._regions(text)
        if not regions:
            if len(text) <= _CLEAN_CACHE_MAX_LEN:
                if len(self._clean) >= _CLEAN_CACHE_SIZE:
                    self._clean.clear()
                self._clean.add(text)
            return text, _no_counts()
        names = self._engine.names
        parts: list[str] = []
        pos = 0
        for start, end, index in regions:
            parts += (text[pos:start], "[REDACTED:", names[index], "]")
            pos = end
        parts.append(text[pos:])
        return "".join(parts), Counter(names[i] for _, _, i in regions)

    def scrub(self, text: str) -> str:
        """Redact `text` (see `scrub_text`)."""
        return self.scrub_text(text)[0]

    def scrub_value(self, key: str, value: str) -> tuple[str, Counter[str]]:
        """Redact an attribute value, knowing its key: exempt keys stay, secret-looking keys go whole.

        Under a strong key (`api_key`, `db.password`, `x-auth-token`) any non-trivial value is a
        secret; under a weak one (`*.key`, `session`) only a random-looking value is.
        """
        if key in self._exempt:
            return value, _no_counts()
        strength = self.key_strength(key)
        scrubbed, counts = self.scrub_text(value)
        whole = strength and "[REDACTED" not in value and keyed_value_is_secret(strength, value)
        if whole and not self._is_allowed(value) and not _MARKER().fullmatch(scrubbed.strip()):
            return f"[REDACTED:{SECRET_ATTRIBUTE_RULE}]", Counter({SECRET_ATTRIBUTE_RULE: 1})
        return scrubbed, counts

    def _is_allowed(self, value: str) -> bool:
        if value in self._allow_exact:
            return True
        return any(r.fullmatch(value) is not None for r in self._allow_res)

    def _regions(self, text: str) -> list[tuple[int, int, int]]:
        """Merged (start, end, rule index) regions; overlapping spans merge under the first rule."""
        rules = self._engine.rules
        spans: list[tuple[int, int, int]] = []
        for index in self._hits(text):
            spans.extend([(s, e, index) for s, e in rules[index].find(text) if s < e])
        if spans and (self._allow_exact or self._allow_res):
            spans = [sp for sp in spans if not self._is_allowed(text[sp[0] : sp[1]])]
        if spans and "[REDACTED" in text:
            spans = _outside_markers(text, spans)
        if len(spans) < 2:
            return spans
        spans.sort()
        if all(a[1] <= b[0] for a, b in itertools.pairwise(spans)):
            return spans
        merged = [spans[0]]
        for span in spans[1:]:
            start, end, best = merged[-1]
            if span[0] < end:
                merged[-1] = (start, max(end, span[1]), min(best, span[2]))
            else:
                merged.append(span)
        return merged


def _outside_markers(text: str, spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Drop spans that touch an existing `[REDACTED...]` marker (keeps scrubbing idempotent)."""
    markers = [m.span() for m in _MARKER().finditer(text)]
    if not markers:
        return spans
    starts = [s for s, _ in markers]
    kept = []
    for sp in spans:
        i = bisect.bisect_left(starts, sp[1]) - 1
        if i < 0 or markers[i][1] <= sp[0]:
            kept.append(sp)
    return kept


@functools.cache
def default_scrubber() -> Scrubber:
    """The shared scrubber with default options (built on first use)."""
    return Scrubber()
