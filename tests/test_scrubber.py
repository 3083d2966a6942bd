"""The scrubbing engine on fresh examples: random tokens of each format, look-alikes, options."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import string
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pytest
import re2

from otel_spawn._errors import ConfigError
from otel_spawn._scrub_rules import builtin_rules
from otel_spawn._scrubber import Finding, Scrubber, ScrubOptions, default_scrubber

RNG = random.Random(20260513)
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def luhn_card(prefix: str, length: int) -> str:
    body = prefix + rand(string.digits, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (1 if i % 2 else 2)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def jwt() -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(
        json.dumps({"sub": rand(string.digits, 8), "iat": RNG.randint(10**9, 2 * 10**9)}).encode()
    )
    return f"{header}.{payload}.{b64url(RNG.randbytes(32))}"


def pem(escaped: bool) -> tuple[str, str]:
    body = base64.b64encode(RNG.randbytes(300)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    nl = "\\n" if escaped else "\n"
    return f"-----BEGIN EC PRIVATE KEY-----{nl}{nl.join(lines)}{nl}-----END EC PRIVATE KEY-----", lines[1]


class Case(NamedTuple):
    id: str
    text: str
    secret: str
    rule: str
    keep: str


def _cases() -> list[Case]:
    user = rand(string.ascii_lowercase, 7)
    pw = rand(ALNUM, 14)
    pem_text, pem_line = pem(escaped=False)
    pem_json, pem_json_line = pem(escaped=True)
    card = luhn_card("4", 16)
    amex = luhn_card("37", 15)
    amex_text = f"{amex[:4]}-{amex[4:10]}-{amex[10:]}"
    basic = base64.b64encode(f"deploy:{pw}".encode()).decode()
    ipv6 = "2001:db8:" + ":".join(rand(HEX, 4) for _ in range(3)) + "::" + rand(HEX, 3)
    tokens = {
        "openrouter_key": "sk-or-v1-" + rand(HEX, 64),
        "anthropic_key": "sk-ant-api03-" + rand(B64URL, 93) + "AA",
        "openai_key": "sk-proj-" + rand(B64URL, 74) + "T3BlbkFJ" + rand(B64URL, 74),
        "github_token": "ghp_" + rand(ALNUM, 36),
        "gitlab_token": "glpat-" + rand(B64URL, 20),
        "aws_access_key": "AKIA" + rand(UPPER_DIGITS, 16),
        "google_api_key": "AIza" + rand(B64URL, 35),
        "slack_token": f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(ALNUM, 24)}",
        "stripe_key": "sk_live_" + rand(ALNUM, 99),
        "huggingface_token": "hf_" + rand(ALNUM, 34),
        "npm_token": "npm_" + rand(ALNUM, 36),
        "digitalocean_token": "dop_v1_" + rand(HEX, 64),
        "posthog_personal_key": "phx_" + rand(ALNUM, 43),
        "tailscale_key": f"tskey-auth-{rand(ALNUM, 12)}-{rand(ALNUM, 30)}",
        "sendgrid_key": f"SG.{rand(B64URL, 22)}.{rand(B64URL, 43)}",
        "telegram_bot_token": f"{rand(string.digits, 10)}:AA{rand(B64URL, 33)}",
        "jwt": jwt(),
    }
    cases = [
        Case(rule, f"request failed with {tok} (retrying)", tok, rule, "(retrying)")
        for rule, tok in tokens.items()
    ]
    more = [
        Case("openai_legacy", "key sk-{s} for codex", "sk-{s}", "openai_key", "for codex"),
        Case("openai_svcacct", "OPENAI_API_KEY=sk-svcacct-{s}", "sk-svcacct-{s}", "openai_key", "OPENAI_API"),
        Case("github_pat", "gh auth --with-token github_pat_{s}", "github_pat_{s}", "github_token", "gh"),
        Case("aws_temporary", "creds ASIA{u} from IMDS", "ASIA{u}", "aws_access_key", "from IMDS"),
        Case("aws_secret", "AWS secret {b} loaded", "{b}", "aws_secret_key", "loaded"),
        Case("stripe_restricted", "rk_test_{s} in use", "rk_test_{s}", "stripe_key", "in use"),
        Case("slack_webhook", "POST https://hooks.slack.com/services/T{u}/B{u}/{s} 200", "T{u}/B{u}/{s}",
             "slack_webhook", "https://hooks.slack.com/services/"),
        Case("bearer", "Authorization: Bearer {t}", "{t}", "auth_header", "Authorization: Bearer "),
        Case("bearer_repr", "{{'Authorization': 'Bearer {t}', 'X-Title': 'x'}}", "{t}", "auth_header",
             "'X-Title'"),
        Case("basic", f"Authorization: Basic {basic}", basic, "auth_header", "Authorization: Basic "),
        Case("bare_bearer", "sent Bearer {t} upstream", "{t}", "auth_header", "upstream"),
        Case("userinfo", f"postgres://app:{pw}@db.example.net:5432/app", f"app:{pw}", "url_userinfo",
             "@db.example.net:5432/app"),
        Case("userinfo_no_user", f"redis://:{pw}@cache.internal:6379/0", f":{pw}", "url_userinfo", ":6379/0"),
        Case("env_assignment", "DEPLOY_API_KEY={s} ./deploy.sh", "{s}", "keyed_secret", "./deploy.sh"),
        Case("env_export", 'export SERVICE_TOKEN="{s}"', "{s}", "keyed_secret", 'export SERVICE_TOKEN="'),
        Case("cli_flag_equals", "tool --password={s} -v", "{s}", "keyed_secret", "-v"),
        Case("cli_flag_space", "tool --api-key {s} --region eu", "{s}", "keyed_secret", "--region eu"),
        Case("json_field", '{{"client_secret": "{s}", "plan": "pro"}}', "{s}", "keyed_secret", '"plan"'),
        Case("json_escaped", '"{{\\"password\\": \\"{s}\\"}}"', "{s}", "keyed_secret", '\\"password\\"'),
        Case("query_pair", "https://api.example.com/v1?token={s}&page=2", "{s}", "keyed_secret", "&page=2"),
        Case("yaml_pair", "db:\n  password: {s}\n  port: 5432", "{s}", "keyed_secret", "port: 5432"),
        Case("cookie", "Cookie: sid={s}; theme=light", "{s}", "cookie", "theme=light"),
        Case("set_cookie", "Set-Cookie: session={s}; Path=/; HttpOnly", "{s}", "cookie", "Path=/; HttpOnly"),
        Case("unkeyed_blob", "payload {b64} len=60", "{b64}", "high_entropy", "len=60"),
        Case("blob_in_url", "GET https://files.example.com/d/{b64u}", "{b64u}", "high_entropy",
             "https://files.example.com/d/"),
        Case("pem", f"wrote:\n{pem_text}\ndone", pem_line, "private_key", "done"),
        Case("pem_in_json", f'{{"key": "{pem_json}"}}', pem_json_line, "private_key", '{"key": "'),
        Case("email", "invite sent to {w}.{w}+ci@mail.{w}.io now", "{w}.{w}+ci@mail.{w}.io", "email", "now"),
        Case("ipv4", "server up at 203.0.{n}.{n}:8080", "203.0.{n}.{n}", "ipv4", ":8080"),
        Case("ipv4_private", "ssh root@10.{n}.{n}.{n} -p 22", "10.{n}.{n}.{n}", "ipv4", "ssh root@"),
        Case("ipv6", f"connected to [{ipv6}]:22", ipv6, "ipv6", "]:22"),
        Case("home_linux", f"open('/home/{user}/.config/app.json')", user, "home_user", "/.config/app.json"),
        Case("home_macos", f'File "/Users/{user}/code/cli.py", line 8', user, "home_user", '/cli.py", line'),
        Case("home_windows", f"C:\\Users\\{user}\\AppData\\x.json", user, "home_user", "\\AppData\\x.json"),
        Case("home_windows_escaped", f'"C:\\\\Users\\\\{user}\\\\x"', user, "home_user", "\\\\x"),
        Case("card_spaces", "card " + " ".join(card[i : i + 4] for i in range(0, 16, 4)) + " declined",
             " ".join(card[i : i + 4] for i in range(0, 16, 4)), "payment_card", "declined"),
        Case("card_dashes_amex", f"amex {amex_text} ok", amex_text, "payment_card", "ok"),
        Case("card_plain", f"pan={card};", card, "payment_card", "pan="),
    ]  # fmt: skip
    for case in more:
        fill = {
            "s": rand(ALNUM, 32),
            "u": rand(UPPER_DIGITS, 16),
            "t": rand(B64URL + ".~", 40),
            "b": rand(ALNUM, 38) + "+/",
            "b64": base64.b64encode(RNG.randbytes(45)).decode(),
            "b64u": b64url(RNG.randbytes(33)),
            "w": rand(string.ascii_lowercase, 6),
            "n": str(RNG.randint(1, 254)),
        }
        text, secret = case.text, case.secret
        for key, value in fill.items():  # one value per placeholder, shared by text and secret
            text = text.replace("{" + key + "}", value)
            secret = secret.replace("{" + key + "}", value)
        cases.append(case._replace(text=text.replace("{{", "{").replace("}}", "}"), secret=secret))
    return cases


CASES = _cases()
NEGATIVES = {
    "uuid": str(uuid.UUID(int=RNG.getrandbits(128), version=4)),
    "git_sha": hashlib.sha1(RNG.randbytes(16)).hexdigest(),
    "git_log": f"commit {hashlib.sha1(RNG.randbytes(16)).hexdigest()} (HEAD -> main)",
    "sha256_hex": "sha256:" + hashlib.sha256(RNG.randbytes(16)).hexdigest(),
    "sha512_hex": hashlib.sha512(RNG.randbytes(16)).hexdigest(),
    "sri_digest": "sha512-" + base64.b64encode(hashlib.sha512(RNG.randbytes(16)).digest()).decode(),
    "sri_digest_256": "integrity sha256-"
    + base64.b64encode(hashlib.sha256(RNG.randbytes(8)).digest()).decode(),
    "trace_ids": f"trace_id={RNG.getrandbits(128):032x} span_id={RNG.getrandbits(64):016x}",
    "versions": "spawn 2.14.3, node v20.11.1, Chrome/125.0.6422.142",
    "timestamps": "2025-11-02T17:04:55.981Z 2025-11-02 17:04:55+01:00 12:30:45",
    "epoch": "ts=1762102295981 ns=1762102295981223344",
    "paths": "/usr/local/lib/python3.11/site-packages/opentelemetry/sdk/trace/export/__init__.py",
    "long_path": "services/orchestrator/internal/provisioning/hetzner/servers/create_server_request",
    "tilde": "~/.ssh/id_ed25519.pub",
    "root_home": "/root/.cache/spawn/agents.json",
    "home_no_user": "df: /home: 97% used",
    "git_remote": "git@gitlab.com:acme/platform.git",
    "camel": "KubernetesPodLifecycleEventHandlerRegistryFactoryV2",
    "snake_const": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT_CERTIFICATE",
    "dotted": "opentelemetry.instrumentation.httpx.HTTPXClientInstrumentor",
    "rust": "std::collections::HashMap::with_capacity",
    "phc_key": "phc_" + rand(ALNUM, 43),
    "stripe_publishable": "pk_live_" + rand(ALNUM, 99),
    "loopback": "http://127.0.0.1:4318 and http://[::1]:4318 and 0.0.0.0:80 and [::]:80",
    "localhost": "http://localhost:4318/v1/traces",
    "mac_address": "ether 3c:22:fb:0a:19:7e",
    "placeholders": "OPENROUTER_API_KEY=sk-or-v1-xxxxxxxxxxxxxxxx token=<YOUR_API_KEY> key=${OPENAI_API_KEY}",
    "placeholders_2": "export GITHUB_TOKEN=$TOKEN password=changeme api_key=your-api-key-here secret=****",
    "placeholders_3": "sk-... AKIAXXXXXXXXXXXXXXXX ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "markers": "api_key=[REDACTED:openrouter_key] email [REDACTED] at [REDACTED:email]",
    "prose": "the key is rotated; password reset sent; Bearer auth required; token expired",
    "counts": "max_tokens=4096 prompt_tokens=12 cache_key=user-42 auth_method=oauth",
    "npm_scoped": "npm i @openrouter/sdk@1.2.3 && open https://registry.npmjs.org/@scope/pkg",
    "retina_asset": "static/icon@2x.png",
    "short_numbers": "order 4111111 of 12345678901",
    "epoch_not_card": "duration_ns=1234567890123456",
    "k8s": "spawn-claude-fsn1-7f9c6d8b5-x2k4p",
    "b64_short": base64.b64encode(b"hello there").decode(),
    "code_lines": "    token = get_token(session)\n    password: str | None = None\n    auth_token=self.tok,",
    "kwargs": "connect(password=password, token=token)",
    "python_slices": "values[::2] + data[1::2] + rows[-2::-1]",
    "url_routes": "GET https://api.example.com/home/feed and /api/users/42",
    "four_part_version": "__version__ = '3.5.0.1'",
    "float": "MAX = 3.4028235677973366e38",
    "record_digest": "pkg/mod.py,sha256=" + b64url(hashlib.sha256(RNG.randbytes(8)).digest()) + ",5893",
    "digest_header": "Digest: sha-256="
    + base64.b64encode(hashlib.sha256(RNG.randbytes(8)).digest()).decode(),
    "github_blob_url": f"https://github.com/org/repo/blob/{hashlib.sha1(RNG.randbytes(8)).hexdigest()}/src/main.py#L10",
}


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_secret_is_replaced_by_its_rule_marker(scrubber: Scrubber, case: Case) -> None:
    """Each rule replaces a freshly generated secret with its marker and keeps the context."""
    out, counts = scrubber.scrub_text(case.text)
    assert case.secret not in out
    assert f"[REDACTED:{case.rule}]" in out
    assert case.keep in out
    assert counts[case.rule] >= 1


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_part_of_a_secret_is_echoed(scrubber: Scrubber, case: Case) -> None:
    """No 6-character piece of a secret survives, and scrubbing again changes nothing."""
    out = scrubber.scrub(case.text)
    visible = re.sub(r"\[REDACTED:[a-z_]+\]", "[]", out)
    secret = case.secret
    pieces = {secret[i : i + 6] for i in range(len(secret) - 5)} - {p for p in _pieces(case.text, secret)}
    assert not [p for p in pieces if p in visible]
    assert scrubber.scrub(out) == out


def _pieces(text: str, secret: str) -> set[str]:
    """6-character pieces that also occur in the text outside the secret (context, not a leak)."""
    rest = text.replace(secret, "\0")
    return {secret[i : i + 6] for i in range(len(secret) - 5) if secret[i : i + 6] in rest}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_explain_points_at_the_secret_in_the_original_text(scrubber: Scrubber, case: Case) -> None:
    """`explain` reports positions in the original text that cover the secret."""
    findings = scrubber.explain(case.text)
    covering = [f for f in findings if f.start <= case.text.index(case.secret) < f.end]
    assert covering
    assert covering[0].rule == case.rule
    assert case.secret in case.text[covering[0].start : covering[0].end]


@pytest.mark.parametrize("text", NEGATIVES.values(), ids=NEGATIVES.keys())
def test_look_alikes_are_left_byte_identical(scrubber: Scrubber, text: str) -> None:
    """Hashes, ids, versions, paths, public keys, placeholders and markers are never changed."""
    out, counts = scrubber.scrub_text(text)
    assert (out, counts) == (text, Counter())


def test_clean_text_comes_back_as_the_same_object(scrubber: Scrubber) -> None:
    """The fast path returns the very same string and an empty counter."""
    text = "spawn claude hetzner --region fsn1"
    out, counts = scrubber.scrub_text(text)
    assert out is text
    assert counts == Counter()
    assert scrubber.might_match(text) is False
    assert scrubber.scrub_text("") == ("", Counter())


def test_counter_reports_rule_names_and_counts(scrubber: Scrubber) -> None:
    """The counter says which rules fired how often, and the text keeps everything else."""
    key = "sk-or-v1-" + rand(HEX, 64)
    text = f"a@example.org and b@example.org used {key}; /home/{rand(string.ascii_lowercase, 5)}/x"
    out, counts = scrubber.scrub_text(text)
    assert counts == Counter({"email": 2, "openrouter_key": 1, "home_user": 1})
    assert out == (
        "[REDACTED:email] and [REDACTED:email] used [REDACTED:openrouter_key]; /home/[REDACTED:home_user]/x"
    )


def test_overlapping_findings_merge_under_the_most_specific_rule(scrubber: Scrubber) -> None:
    """A token inside a keyed value is one region named after the token rule."""
    token = "ghp_" + rand(ALNUM, 36)
    assert scrubber.explain(f"GITHUB_TOKEN={token}") == [Finding("github_token", 13, 13 + len(token))]


def test_masked_key_keeps_no_visible_prefix(scrubber: Scrubber) -> None:
    """A truncated key (`sk-or-v1-0a9f...6835`) is redacted including its masked tail."""
    out = scrubber.scrub(f"invalid api key sk-or-v1-{rand(HEX, 11)}...{rand(HEX, 4)} for request")
    assert out == "invalid api key [REDACTED:openrouter_key] for request"


@pytest.mark.parametrize(
    ("prefix", "rule"),
    [("", "high_entropy"), ("sk-ant-api03-", "anthropic_key"), ("API_TOKEN=", "keyed_secret")],
)
def test_secrets_longer_than_any_pattern_bound_go_whole(scrubber: Scrubber, prefix: str, rule: str) -> None:
    """A 20 000-character secret is redacted to its end, not cut where a pattern's repeat bound stops."""
    blob = b64url(RNG.randbytes(15_000))
    out = scrubber.scrub(f"{prefix}{blob} end")
    assert out.endswith(f"[REDACTED:{rule}] end")
    assert blob[-8:] not in out


def test_blob_after_a_long_name_and_equals_is_judged_alone(scrubber: Scrubber) -> None:
    """`<40+ character name>=<blob>`: `=` ends a base64 run, so the blob goes and the name stays."""
    blob = b64url(RNG.randbytes(45))
    name = "opentelemetry_instrumentation_requests_enabled_flag"
    assert scrubber.scrub(f"{name}={blob} done") == f"{name}=[REDACTED:high_entropy] done"


def test_lone_surrogates_are_scrubbed_not_an_error(scrubber: Scrubber) -> None:
    """Text decoded with `surrogateescape` (a file name with undecodable bytes) is scrubbed as usual."""
    blob = b64url(RNG.randbytes(45))
    out = scrubber.scrub(f"/home/jane/caf\udce9.txt \udce9{blob}")
    assert out == "/home/[REDACTED:home_user]/caf\udce9.txt \udce9[REDACTED:high_entropy]"


def test_private_key_cut_short_is_still_redacted(scrubber: Scrubber) -> None:
    """A PEM block without its END line (a truncated log) is redacted up to the end of its body."""
    body = base64.b64encode(RNG.randbytes(120)).decode()
    out = scrubber.scrub(f"-----BEGIN RSA PRIVATE KEY-----\n{body[:64]}\n{body[64:]}")
    assert out == "[REDACTED:private_key]"


def test_default_scrubber_is_shared() -> None:
    """`default_scrubber()` builds one scrubber and reuses it."""
    assert default_scrubber() is default_scrubber()
    assert default_scrubber().scrub("mail me: x@example.com") == "mail me: [REDACTED:email]"


def test_first_use_from_many_threads_at_once_scrubs_alike() -> None:
    """A new scrubber builds its rules on first use; threads racing to that first use all scrub right."""
    scrubber = Scrubber(ScrubOptions(extra_patterns={"ticket": r"TICKET-\d{4}"}))
    text = "mail x@example.com about TICKET-1234"
    start = threading.Barrier(8)

    def first_scrub() -> str:
        start.wait()
        return scrubber.scrub(text)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: first_scrub(), range(8)))
    assert results == ["mail [REDACTED:email] about [REDACTED:ticket]"] * 8


# --------------------------------------------------------------------------- key-aware values


@pytest.mark.parametrize("key", ["api_key", "db.password", "x-auth-token", "OPENAI_API_KEY", "clientSecret"])
def test_value_under_a_secret_key_is_redacted_whole(scrubber: Scrubber, key: str) -> None:
    """A non-trivial value under a secret-looking key goes entirely, whatever its shape."""
    value = rand(ALNUM, 10) + " " + rand(ALNUM, 6)
    assert scrubber.scrub_value(key, value) == ("[REDACTED:secret_attribute]", Counter(secret_attribute=1))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api_key", "changeme"),
        ("api_key", "<YOUR_API_KEY>"),
        ("token", "[REDACTED:openrouter_key]"),
        ("password", "null"),
        ("max_tokens", "4096"),
        ("cache.key", "user-123"),
        ("auth_method", "oauth"),
        ("messaging.kafka.message.key", "order-8812"),
    ],
)
def test_trivial_values_and_plain_keys_are_kept(scrubber: Scrubber, key: str, value: str) -> None:
    """Placeholders, markers, numbers and plain values under ordinary keys stay as they are."""
    assert scrubber.scrub_value(key, value) == (value, Counter())


def test_random_value_under_a_weak_key_is_redacted(scrubber: Scrubber) -> None:
    """Under a `*.key` name only a random-looking value is a secret."""
    assert scrubber.scrub_value("cache.key", rand(ALNUM, 24))[0] == "[REDACTED:secret_attribute]"


def test_value_already_one_marker_keeps_its_rule_name(scrubber: Scrubber) -> None:
    """A token value under a secret key keeps the token rule's name."""
    token = "sk-or-v1-" + rand(HEX, 64)
    assert scrubber.scrub_value("api_key", token) == ("[REDACTED:openrouter_key]", Counter(openrouter_key=1))


def test_exempt_keys_are_never_scrubbed() -> None:
    """A key listed in `exempt_keys` passes its value through, even a secret one."""
    scrubber = Scrubber(ScrubOptions(exempt_keys=["user.email", "api_key"]))
    assert scrubber.scrub_value("user.email", "a@example.com") == ("a@example.com", Counter())
    assert scrubber.scrub_value("api_key", "x" + rand(ALNUM, 30))[1] == Counter()
    assert scrubber.scrub_value("other", "a@example.com")[0] == "[REDACTED:email]"


def test_extra_secret_keys_are_secret_in_attributes_and_text() -> None:
    """`extra_secret_keys` makes a custom name secret as an attribute key and in `NAME=value` text."""
    scrubber = Scrubber(ScrubOptions(extra_secret_keys=["HCLOUD", "Vault.Ref"]))
    value = rand(ALNUM, 20)
    assert scrubber.scrub_value("hcloud", value)[0] == "[REDACTED:secret_attribute]"
    assert scrubber.scrub_value("app.vault.ref", value)[0] == value  # the whole name or its last part
    assert scrubber.scrub_value("vault.ref", value)[0] == "[REDACTED:secret_attribute]"
    assert scrubber.scrub(f"HCLOUD={value} run") == "HCLOUD=[REDACTED:keyed_secret] run"


# --------------------------------------------------------------------------- options


def test_user_patterns_run_with_re2_and_a_secret_group() -> None:
    """Extra patterns redact the whole match, or only the group named `secret`."""
    options = ScrubOptions(
        extra_patterns={"ticket": r"TICKET-\d{6}", "corp_host": r"host=(?P<secret>[a-z]+\.corp)"}
    )
    scrubber = Scrubber(options)
    out, counts = scrubber.scrub_text("see TICKET-123456 on host=build.corp now")
    assert out == "see [REDACTED:ticket] on host=[REDACTED:corp_host] now"
    assert counts == Counter(ticket=1, corp_host=1)
    assert scrubber.rule_names[-2:] == ("ticket", "corp_host")


def test_a_catastrophic_user_pattern_stays_linear() -> None:
    """`(a+)+$`, exponential under backtracking, finishes at once with RE2 on a long input."""
    scrubber = Scrubber(ScrubOptions(extra_patterns={"aaa": r"(a+)+$"}))
    assert scrubber.scrub("a" * 100_000 + "!") == "a" * 100_000 + "!"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ScrubOptions(extra_patterns={"backref": r"(a)\1"}), "backref"),
        (ScrubOptions(extra_patterns={"lookahead": r"sk-(?=live)"}), "look-around"),
        (ScrubOptions(extra_patterns={"broken": r"(unclosed"}), "broken"),
        (ScrubOptions(extra_patterns={"empty": r"x*"}), "matches the empty string"),
        (ScrubOptions(extra_patterns={"email": r"foo"}), "must be new"),
        (ScrubOptions(extra_patterns={"bad name!": r"foo"}), "bad name!"),
        (ScrubOptions(allow=["re:(?<=x)y"]), "ScrubOptions.allow"),
    ],
)
def test_bad_user_patterns_fail_at_construction(options: ScrubOptions, message: str) -> None:
    """A user pattern RE2 cannot run (or a bad rule name) is a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Scrubber(options)


def test_options_reject_a_single_string_where_a_collection_is_expected() -> None:
    """`allow="x"` would allow each character, `""` would match anywhere: both are refused with a hint."""
    with pytest.raises(ConfigError, match="collection of strings"):
        ScrubOptions(allow="jane@example.com")
    with pytest.raises(ConfigError, match="non-empty strings"):
        ScrubOptions(extra_secret_keys=["hcloud", ""])
    with pytest.raises(ConfigError, match="mapping"):
        ScrubOptions(extra_patterns=[("a", "b")])  # type: ignore[arg-type]


def test_allow_list_keeps_exact_values_and_regex_matches() -> None:
    """Allowed values survive; the same kind of value elsewhere is still redacted."""
    scrubber = Scrubber(ScrubOptions(allow=["bot@example.com", r"re:[a-z]+@acme\.dev"]))
    out = scrubber.scrub("bot@example.com ops@acme.dev jane@example.com")
    assert out == "bot@example.com ops@acme.dev [REDACTED:email]"


# --------------------------------------------------------------------------- invariants

ALL_TEXTS = [c.text for c in CASES] + list(NEGATIVES.values())


def test_every_finding_is_announced_by_its_rule_trigger() -> None:
    """A finder reports only where its RE2 trigger matches (the prefilter never hides a finding)."""
    for rule in builtin_rules(frozenset({"hcloud"})):
        trigger = re2.compile(rule.trigger)
        for text in ALL_TEXTS:
            if list(rule.find(text)):
                assert trigger.search(text) is not None, (rule.name, text)


def test_the_prefilter_hides_no_finding(scrubber: Scrubber) -> None:
    """Running every finder on every text (no RE2 prefilter) finds nothing that `explain` missed."""
    noise = "sk-or-v1-ghp_AKIA@:.0123456789abcdefxyzXYZ/\\ \"'=-_+eyJ"
    texts = [
        *ALL_TEXTS,
        *(rand(noise, size) + " " + CASES[size % len(CASES)].text for size in (50, 5_000, 100_000)),
    ]
    for text in texts:
        found = scrubber.explain(text)
        for rule in builtin_rules():
            for start, end in rule.find(text):
                assert any(f.start <= start and end <= f.end for f in found), (rule.name, text[start:end])


ADVERSARIAL = {
    "a": "a" * 250_000,
    "dashes": "-" * 250_000,
    "base64": rand(ALNUM + "+/", 250_000),
    "ats": "@" * 250_000,
    "a_at": "a@" * 125_000,
    "url_colons": "http://" + ":" * 250_000,
    "sk": "sk-" * 80_000,
    "jwt_heads": "eyJ" * 80_000,
    "jwt_segments": ("eyJ" + "a" * 50 + ".") * 5_000,
    "slashes": "/" * 250_000,
    "pluses": "+" * 250_000,
    "digits": "7" * 250_000,
    "digit_dots": "1." * 125_000,
    "hex_colons": "a:" * 125_000,
    "keys": "key=" * 60_000,
    "bearer": "Bearer " * 35_000,
    "cookie": "Cookie: " + "a=b; " * 50_000,
    "begin_pem": "-----BEGIN RSA PRIVATE KEY-----" * 8_000,
    "users": "C:\\Users\\" * 25_000,
    "home": "/home/" * 40_000,
    "cards": "4111 " * 50_000,
    "userinfo": "a://x" * 50_000 + "@",
    "b64_equals_chain": ("a" * 40 + "=") * 6_000,
    "random_equals_chain": "=".join(rand(ALNUM, 40) for _ in range(6_000)),
    "trigger_rich_noise": rand(
        "sk-or-v1-ghp_AKIAaws@:.0123456789abcdefXYZ/\\ \"'=+eyJ_BEGIN PRIVATE KEYhome:AA", 250_000
    ),
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_pathological_inputs_complete(scrubber: Scrubber, text: str) -> None:
    """Inputs built to make backtracking regexes explode are scrubbed (timing lives in benchmarks)."""
    out = scrubber.scrub(text)
    assert scrubber.scrub(out) == out
