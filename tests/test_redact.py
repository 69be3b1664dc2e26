"""Redaction of the before/after excerpts a prefix diff carries with ``capture_text=True``.

Two corpora pin what the detector (detect-secrets' plugins, see ``cachebench.redact``) does:
``SECRETS``, secret forms that must all be hidden, and ``ORDINARY``, prompt text that must come
back unchanged, both as plain text and JSON-escaped as excerpts see it. ``KNOWN_LIMITS`` pins
the documented misses and over-redactions, so a change to them shows. The excerpt tests build
real prompts with the Anthropic adapter and diff their layer prints; the last one runs a
tracker over the emulator. Random-looking keys are drawn from a seeded generator, so no
key-like literal sits in the repository.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import string
import subprocess
import sys
import time
from typing import Any

import anthropic
import pytest

import cachebench.redact as redact_module
from cachebench import CacheTracker, Regression
from cachebench.diagnose.prints import Printer, compare
from cachebench.fingerprint import canonical
from cachebench.providers.anthropic import parse_request
from cachebench.redact import excerpt, redact, require_redactor
from cachebench.testing import CacheEmulator
from cachebench.types import PrefixDiff

MODEL = "claude-sonnet-5"
NOTES = "Customer 42, plan Pro, prefers email. "
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
_rng = random.Random(20261122)


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def pem(kind: str, lines: int = 6) -> str:
    body = "\n".join(rand(64, B64) for _ in range(lines))
    return f"-----BEGIN {kind} PRIVATE KEY-----\n{body}\n-----END {kind} PRIVATE KEY-----"


JWT = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': '1234567890', 'exp': 1798761600})}.{rand(43, URLSAFE)}"
RSA_KEY = pem("RSA")

# (text, secret): the secret must not show in any form once ``text`` is redacted.
SECRETS: dict[str, tuple[str, str]] = {
    # The issue's five, each in the sentence it came in.
    "env_db_pass": ("DB_PASS=SuperSecret123", "SuperSecret123"),
    "url_credentials": ("postgres://admin:S3cretPassw0rd@host", "S3cretPassw0rd"),
    "said_in_prose": ("The admin password is Tr0ub4dor&3", "Tr0ub4dor&3"),
    "pwd_colon": ("pwd: Zq9!xY7#kL", "Zq9!xY7#kL"),
    "password_colon_short": ("password: abc", "abc"),
    # Provider keys, in their formats.
    "aws_access_key_id": (f"key id AKIA{rand(16, string.ascii_uppercase + string.digits)} in env", "AKIA"),
    "aws_secret_access_key": (f"aws_secret_access_key = {(s := rand(40, B64))}", s),
    "aws_secret_bare": (f"creds AKIAIOSFODNN7EXAMPLE {(s := rand(40, B64))} (rotated)", s),
    "openai_project": (f"use sk-proj-{(s := rand(20) + 'T3BlbkFJ' + rand(20))} please", s),
    "openai_long": (f"OPENAI_API_KEY=sk-proj-{(s := rand(156, URLSAFE))}", s),
    "anthropic": (f"Billing key sk-ant-api03-{(s := rand(93, URLSAFE))}AA ref 7.", s),
    # Keys known by their prefix even when their body is far from random.
    "anthropic_repetitive": ("Now 09:42. Key: sk-ant-api03-" + (s := "Zx9" * 31) + "AA done", s),
    "anthropic_admin": ("admin sk-ant-admin01-" + (s := "Q7wE" * 20) + " rotated", s),
    "openai_project_repetitive": ("Key: sk-proj-" + (s := "Q7wE" * 30) + " end", s),
    "openai_service_account": (f"svc sk-svcacct-{(s := 'aB3' * 20)} ok", s),
    "google_api_key_repetitive": ("maps AIza" + (s := "SyAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaA") + " quota", s),
    "github_classic": (f"token ghp_{(s := rand(36))} for CI", s),
    "github_fine_grained": (f"github_pat_{(s := rand(22) + '_' + rand(59))}", s),
    "gitlab": (f"clone with glpat-{(s := rand(20, URLSAFE))}", s),
    "slack_bot": (f"SLACK xoxb-{rand(12, string.digits)}-{rand(13, string.digits)}-{(s := rand(24))}", s),
    "stripe_live": (f"stripe sk_live_{(s := rand(24))} charge", s),
    "google_api_key": (f"maps key AIza{(s := rand(35, URLSAFE))} quota", s),
    "artifactory": (f"artifactory token AKC{(s := rand(70))} next", s),
    "sendgrid": (f"SG.{rand(22, URLSAFE)}.{(s := rand(43, URLSAFE))}", s),
    "npm_token": (f"//registry.npmjs.org/:_authToken=npm_{(s := rand(36))}", s),
    "pypi_token": (f"password = pypi-AgEIcHlwaS5vcmc{(s := rand(80, URLSAFE))}", s),
    "azure_storage": (
        f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={(s := rand(86, B64))}==",
        s,
    ),
    "jwt": (f"session {JWT} expires soon", JWT.split(".")[2]),
    "jwt_claims": (f"session {JWT} expires soon", JWT.split(".")[1]),
    "rsa_private_key": (f"Deploy key:\n{RSA_KEY}\nthanks", RSA_KEY.split("\n")[3]),
    "openssh_private_key": (f"{(k := pem('OPENSSH'))} end", k.split("\n")[1]),
    "bearer_random": (f"Authorization: Bearer {(s := rand(40, URLSAFE))}", s),
    "bearer_hex": (f"curl -H 'Authorization: Bearer {(s := rand(32, '0123456789abcdef'))}'", s),
    "bearer_dotted": ("Authorization: Bearer abc.def-ghi_jkl~mno", "abc.def-ghi_jkl~mno"),
    "basic_auth_header": ("authorization: Basic YWRtaW46aHVudGVyMg==", "YWRtaW46aHVudGVyMg"),
    "mongodb_url": (f"mongodb+srv://app:{(s := rand(16))}@cluster0.example.net/orders", s),
    "https_url_token": (f"git remote add origin https://deploy:{(s := rand(30))}@git.example.com/a.git", s),
    "amqp_url": ("BROKER=amqp://guest:guestpass9@rabbit:5672/", "guestpass9"),
    # Named values, in config, code and JSON.
    "json_api_key": ('{"region": "eu-west-1", "api_key": "hunter2-Zq8vX3kP"}', "hunter2-Zq8vX3kP"),
    "json_password_spaces": ('{"password": "correct horse battery staple"}', "horse battery"),
    "quoted_client_secret": ('client_secret="Qm9vb3N0ZXJz Kx7 pass phrase"', "Qm9vb3N0ZXJz"),
    "password_suffix": ("DB_PASSWORD_PROD=Tr0ub4dor&3xyzzy", "Tr0ub4dor&3xyzzy"),
    "yaml_password": ("database:\n  user: app\n  password: hunter2\n  port: 5432", "hunter2"),
    "env_file": ("DB_HOST=db.internal\nDB_PASS=Pa55w0rdProd\nDB_PORT=5432", "Pa55w0rdProd"),
    "django_secret": ("SECRET_KEY = 'django-insecure-7f&x!q9@m2#v'", "7f&x!q9@m2#v"),
    "python_password_literal": ('connect(host="db", password="Wint3r!2026")', "Wint3r!2026"),
    "private_key_value": ("private_key: Zx81Kq0sPlm7", "Zx81Kq0sPlm7"),
    "passwd_cli": ("mysql -u root --passwd=R00tPw!x -e 'select 1'", "R00tPw!x"),
    "password_compare_literal": ('if password == "letmein42":', "letmein42"),
    "said_was": ("her old password was Zq9!xY7#kL2 until March", "Zq9!xY7#kL2"),
    "two_on_a_line": ("password=Alpha111 api_key=Beta222x", "Beta222x"),
    "longer_when_lower_cased": ("İzmir office: DB_PASS=Qw3rty!9x", "Qw3rty!9x"),
}

# Prompt text from support agents, coding agents and tool-using flows: none of it is a secret.
TOOL_SCHEMA = {
    "name": "reset_password",
    "description": "Send the customer a password reset link. Never ask for the current password.",
    "input_schema": {
        "type": "object",
        "properties": {
            "customer_id": {"type": "string", "description": "The customer's id, e.g. cus_NffrFeUfNV2Hib."},
            "password": {"type": "string", "description": "Left empty: we never set passwords."},
            "api_key": {"type": "string", "format": "password"},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
            "token": {"type": "string"},
        },
        "required": ["customer_id"],
    },
}
ORDINARY: list[str] = [
    "You are ACME's support agent. Answer briefly, cite the policy section, never guess.",
    "Refunds: items returned within 30 days get a full refund of $1,299.00 or less; see §4.2.",
    "Never ask the customer for their password. If they forgot it, send a reset link instead.",
    "API keys are managed in the dashboard under Settings > API keys; rotate them every 90 days.",
    "The secret to good support is listening. Passwords must be at least 12 characters long.",
    "The password is required. Your password was reset. The token expired.",
    "Order #A-10023-77 shipped on 2026-11-22T09:15:00Z via UPS, tracking 1Z999AA10123456784.",
    "Request f47ac10b-58cc-4372-a567-0e02b2c3d479 at 2026-01-31 23:59:59.123456+00:00 took 812 ms.",
    "Customer ids: 7f9c2ba4-e88f-11ee-8c90-0242ac120002, 550e8400-e29b-41d4-a716-446655440000.",
    "Call +1 (415) 555-0134 or write to support@acme.example; office at 10.0.12.7, port 8443.",
    "Invoice INV-2026-000123 for 3 x SKU-88412-BLK, total 147.50 EUR, due 2026-12-01.",
    "Unix time 1798761600, epoch ms 1798761600123, version 3.11.7, build 20261122.4",
    "commit 0123456789abcdef0123456789abcdef01234567 fixed the cache key (PR #4521).",
    "See https://docs.acme.example/api/v2/orders/list?page=3&per_page=50#pagination for paging.",
    "The log is at /var/log/acme/support-bot/2026-11-22/requests.jsonl on host web-03.",
    json.dumps(TOOL_SCHEMA),
    json.dumps({"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather"}),
    json.dumps({"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 C"}),
    json.dumps({"role": "tool", "tool_call_id": "call_abc123XYZ456def789GHI0", "content": "ok"}),
    json.dumps({"id": "call_Qx7Lm2Vt9Rb4Nc8Wz1Kp5Hs3", "type": "function", "function": {"name": "lookup"}}),
    json.dumps({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "model": MODEL, "stop_reason": "end_turn"}),
    "import os\nclient = anthropic.Anthropic(api_key=os.environ['ANTHROPIC_API_KEY'])",
    "def login(username: str, password: str) -> bool:\n    return check(password) == stored",
    "def connect(password: Optional[str] = None, api_key: str | None = None): ...",
    "self.password = password\nself.api_key = api_key\nclient = Client(api_key=api_key)",
    "if (password == null) { throw new Error('missing password'); }",
    "if password == stored_hash:\n    return True\nwhile pwd != expected_pwd: retry()",
    "const apiKey = process.env.API_KEY;\nconst secret = config.secretKey;",
    "SECRET_KEY = settings.SECRET_KEY\npassword = getpass.getpass('Password: ')",
    "password: ${DB_PASSWORD}\napi_key: {{ vault_api_key }}\nsecret: <your-secret-here>",
    "SELECT id, email, created_at FROM customers WHERE plan = 'pro' AND last_login > NOW() - INTERVAL '30 days';",
    "| ticket | status | age |\n|---|---|---|\n| T-1042 | open | 3d |\n| T-1043 | closed | 9h |",
    "Colors #ff8800 and #0a0a0a, sizes 12px/1.5rem, z-index 9999.",
    "getUserProfileByEmailAndPhoneNumberForAccountRecovery handles the lookup.",
    "Steps: 1) open Settings 2) choose Security 3) click Change password 4) confirm by email.",
    "Ticket: customer says the password reset email never arrived; check spam, resend once.",
]

# Documented limits (see cachebench.redact), pinned so a change to them shows.
KNOWN_LIMITS: dict[str, tuple[str, str]] = {
    # A keyword then ":" hides the next word, even in prose.
    "prose_after_colon": (
        "Forgot your password: click the link",
        "Forgot your password: [REDACTED] the link",
    ),
    # Names outside detect-secrets' keyword list, with values neither random nor of a known format.
    "token_name": ("refresh_token: 9f8e7d6c5b4a3210zz", "refresh_token: 9f8e7d6c5b4a3210zz"),
    "header_name": ("x-api-key: abcdef123", "x-api-key: abcdef123"),
    "xml_element": ("<password>hunter2</password>", "<password>hunter2</password>"),
    # A URL with a password and no user name.
    "url_without_user": ("redis://:s3cr3tR3dis@cache:6379/0", "redis://:s3cr3tR3dis@cache:6379/0"),
    # A quoted hex string random enough is taken for a key.
    "quoted_commit_hash": ('{"sha": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}', '{"sha": "[REDACTED]"}'),
}


def _pieces(secret: str) -> set[str]:
    """Every 8-character piece of ``secret`` (the whole of a shorter one)."""
    return {secret[i : i + 8] for i in range(max(1, len(secret) - 7))}


def _leaks(secret: str, shown: str) -> list[str]:
    return sorted(p for p in _pieces(secret) if p in shown)


def _escaped(text: str) -> str:
    """``text`` as an excerpt sees it: inside a block's canonical bytes, JSON-escaped."""
    return canonical(("system", {"text": text, "type": "text"})).decode()


@pytest.mark.parametrize(("text", "secret"), SECRETS.values(), ids=SECRETS.keys())
def test_every_secret_form_is_redacted_plain_and_escaped(text: str, secret: str) -> None:
    """Each secret of the corpus is replaced, whether the text is plain or JSON-escaped inside a
    block's canonical bytes (where quotes carry backslashes and new lines are ``\\n``)."""
    for form in (text, _escaped(text)):
        shown = redact(form)
        assert _leaks(secret, shown) == [] and "[REDACTED]" in shown, shown


def test_ordinary_text_is_left_alone() -> None:
    """The false positives over the ordinary corpus, plain and escaped: none."""
    changed = [(text, redact(text)) for text in ORDINARY if redact(text) != text]
    changed += [
        (text, redact(_escaped(text))) for text in ORDINARY if redact(_escaped(text)) != _escaped(text)
    ]
    assert changed == []


@pytest.mark.parametrize(("text", "expected"), KNOWN_LIMITS.values(), ids=KNOWN_LIMITS.keys())
def test_known_limits(text: str, expected: str) -> None:
    """What the module docstring owns up to: misses and over-redactions, as they are today."""
    assert redact(text) == expected


def test_names_are_kept_and_values_end_where_the_prose_goes_on() -> None:
    """The name of a ``name=value`` pair stays; an unquoted value ends at the first space, a
    quoted one at its quote; JSON escapes in the excerpt are kept around the replacement."""
    cases = {
        "Customer 42. api_key=sk-live-999999999999 Request stable.": (
            "Customer 42. api_key=[REDACTED] Request stable."
        ),
        '"password": "correct horse battery"': '"password": "[REDACTED]"',
        'cfg {\\"api_key\\": \\"hunter2-Zq8vX3kP\\"} end': 'cfg {\\"api_key\\": \\"[REDACTED]\\"} end',
        "DB_HOST=db\\nDB_PASS=SuperSecret123\\nDB_PORT=5432": "DB_HOST=db\\nDB_PASS=[REDACTED]\\nDB_PORT=5432",
        "postgres://admin:S3cretPassw0rd@host/db": "postgres[REDACTED]host/db",
        "The admin password is Tr0ub4dor&3.": "The admin password is [REDACTED].",
        f"session {JWT} expires": "session [REDACTED] expires",
        f"artifactory token AKC{rand(70)} next": "artifactory token [REDACTED] next",
        "-----BEGIN RSA PRIVATE KEY-----\\nMIIEo\\n-----END RSA PRIVATE KEY----- ok": "[REDACTED] ok",
    }
    assert {text: redact(text) for text in cases} == cases


def test_a_private_key_without_its_end_line_is_redacted_to_the_end() -> None:
    """A key pasted without its END line (or a PuTTY key, which has none) hides everything
    after its BEGIN line, not just the base64 lines the entropy test would catch."""
    text = f"key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\nNzaC1r\nsee you {NOTES}"
    assert redact(text) == "key:\n[REDACTED]"


# -- excerpts ------------------------------------------------------------------------------------
def _request(system: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Where is my order?"}],
    }
    if tools is not None:
        request["tools"] = tools
    return request


def _diff(old: dict[str, Any], new: dict[str, Any], section: str | None = None) -> PrefixDiff:
    """Diff of the two prompts' blocks (of ``section`` only, when given)."""
    a, b = parse_request(old), parse_request(new)

    def stop(prompt: Any) -> int:
        return sum(1 for block in prompt.blocks if section is None or block.section == section)

    printer = Printer(keep_text=True)
    change = compare(printer.layer(a, 0, stop(a)), printer.layer(b, 0, stop(b)))
    assert change is not None
    return change.diff


def _system_diff(text: str) -> PrefixDiff:
    """Diff of two system prompts holding ``text``, differing only in the request id at ``RID``."""
    diff = _diff(_request(text.replace("RID", "req-0001")), _request(text.replace("RID", "req-0002")))
    assert diff.section == "system" and diff.kind == "content"
    assert diff.before is not None and "req-0001" in diff.before
    assert diff.after is not None and "req-0002" in diff.after
    return diff


def _assert_hidden(secret: str, *shown: str | None) -> None:
    text = "\n".join(s or "" for s in shown)
    assert _leaks(secret, text) == []
    assert "[REDACTED]" in text


@pytest.mark.parametrize(("text", "secret"), SECRETS.values(), ids=SECRETS.keys())
def test_every_secret_form_is_hidden_in_excerpts(text: str, secret: str) -> None:
    """The same corpus inside a system prompt, just before a changed request id: the excerpts
    around the change show the id but no piece of the secret."""
    diff = _system_diff(NOTES * 6 + f"{text}\nRequest RID. " + NOTES * 20)
    _assert_hidden(secret, diff.before, diff.after)


def test_a_key_cut_by_the_excerpt_edge_is_redacted_whole() -> None:
    """An API key ending just before the change, longer than the context kept before it: the
    excerpt's edge falls inside the key, yet no part of it shows, because the text around the
    excerpt is redacted before the excerpt is cut."""
    key = "sk-ant-api03-" + "Qx7Lm2Vt9Rb4Nc8Wz1Kp5Hs3Jd6Fg0Ty" * 3 + "AAQ"
    diff = _system_diff(NOTES * 6 + f"Billing key {key} ref RID. " + NOTES * 20)
    _assert_hidden(key, diff.before, diff.after)


def test_a_secret_cut_by_the_scanned_window_is_not_shown() -> None:
    """Only a window around the excerpt is scanned. When the secrets in it shrink to
    ``[REDACTED]``, the excerpt's context reaches back towards the window's edge, where a secret
    may be cut too short to be found: the window then widens, and that secret's tail stays
    hidden whatever the distance (swept here over window sizes up to ~3000 characters)."""
    for filler in range(300, 3000, 37):
        cut = rand(100, URLSAFE)
        text = "plain words " * 20 + f"{cut} {rand(filler, URLSAFE)} CHANGE here " + "tail " * 40
        start = text.index("CHANGE")
        shown = excerpt(text, start, start + 6, context=80, limit=300)
        assert "CHANGE" in shown and _leaks(cut, shown) == [], (filler, shown)


def test_positions_map_through_replacements() -> None:
    """Replacements longer and shorter than their secrets before the change leave the excerpt
    centred on the change; a cut that would split a replacement leaves it out."""
    text = f"sk-ant-api03-{rand(93, URLSAFE)} x password: abc y CHANGED z " + "after " * 20
    start = text.index("CHANGED")

    def around(context: int) -> str:
        return excerpt(text, start, start + len("CHANGED"), context=context, limit=300)

    assert around(20) == "sword: [REDACTED] y CHANGED z after after after"
    assert around(30).startswith(" x password: [REDACTED] y CHANGED")
    assert around(100).startswith("[REDACTED] x password: [REDACTED] y CHANGED")
    key = f"sk-ant-api03-{rand(93, URLSAFE)}"
    after = f"x CHANGED y {key} z"
    assert excerpt(after, 2, 9, context=5, limit=300) == "x CHANGED y "


def test_a_change_inside_a_secret_shows_its_whole_replacement() -> None:
    """A key that differs between the two prompts (rotated): the range falls inside it, and the
    excerpt holds the whole replacement with context either side."""
    key = f"sk-ant-api03-{rand(93, URLSAFE)}"
    text = f"alpha beta {key} gamma delta"
    start = text.index(key) + 40
    assert excerpt(text, start, start + 5, context=6, limit=300) == " beta [REDACTED] gamma"


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Look up {name} records for the current customer. " * 40,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }


def test_excerpts_are_capped_when_the_range_is_the_whole_block() -> None:
    """Swapped tools are re-ordered blocks, and an added tool is new from its first byte: the
    excerpts are cut to about 300 characters, starting at the change."""
    swapped = _diff(
        _request(NOTES, [_tool("orders"), _tool("refunds")]),
        _request(NOTES, [_tool("refunds"), _tool("orders")]),
    )
    assert swapped.section == "tools" and swapped.kind == "reordered"
    assert swapped.byte_start == 0 and swapped.byte_end > 2000
    assert swapped.before is not None and swapped.before.startswith('["tools",{"description":"Look up orders')
    assert swapped.after is not None and swapped.after.startswith('["tools",{"description":"Look up refunds')
    assert 250 <= len(swapped.before) <= 300 and 250 <= len(swapped.after) <= 300
    added = _diff(
        _request(NOTES, [_tool("orders")]), _request(NOTES, [_tool("orders"), _tool("refunds")]), "tools"
    )
    assert added.kind == "content" and added.after is not None and len(added.after) <= 300


def test_small_changes_keep_about_80_characters_of_context_each_side() -> None:
    """A one-character change deep in a long block: the excerpt holds the changed chunk and at
    most 80 characters either side of it, not the whole block."""
    diff = _system_diff(NOTES * 30 + "Request RID. " + NOTES * 30)
    assert diff.after is not None
    assert len(diff.after) <= (diff.byte_end - diff.byte_start) + 2 * 80
    assert len(diff.after) < len(NOTES * 60) // 4


def test_an_excerpt_of_a_large_block_scans_a_window_not_the_block() -> None:
    """A change in the middle of a 1 MB block: the excerpt takes milliseconds (scanning the whole
    block takes seconds), so a diagnosis does not stall the call that triggered it."""
    text = (NOTES * 40 + "\n") * 700
    start = len(text) // 2
    excerpt(text, start, start + 10, context=80, limit=300)  # the detector is built once
    began = time.perf_counter()
    excerpt(text, start, start + 10, context=80, limit=300)
    assert time.perf_counter() - began < 0.5


# -- the extra --------------------------------------------------------------------------------------
def test_importing_cachebench_does_not_import_the_detector() -> None:
    """The core package stays light: detect-secrets loads only when an excerpt is redacted."""
    code = "import sys, cachebench, cachebench.fingerprint; print('detect_secrets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_require_redactor_names_the_extra_when_the_detector_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without detect-secrets, ``require_redactor`` raises ImportError telling what to install."""
    require_redactor()  # installed here: no error
    for name in [m for m in sys.modules if m == "detect_secrets" or m.startswith("detect_secrets.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "detect_secrets", None)
    redact_module._detector.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[redact\]' in a clone of cachebench"):
            require_redactor()
    finally:
        redact_module._detector.cache_clear()


# -- through a tracker ----------------------------------------------------------------------------
def test_a_tracker_with_capture_text_shows_the_change_and_hides_the_issues_secrets(
    cache_emulator: CacheEmulator,
) -> None:
    """A user context carrying the five secret forms of the issue and a request id that changes
    on every call churns its layer; the regression's excerpts show the changed id and none of
    the secrets."""
    opened: list[Regression] = []
    tracker = CacheTracker(clock=cache_emulator.clock, on_regression=opened.append, capture_text=True)
    five = [
        SECRETS[k]
        for k in ("env_db_pass", "url_credentials", "said_in_prose", "pwd_colon", "password_colon_short")
    ]

    def context(request_id: str) -> str:
        lines = "\n".join(text for text, _ in five)
        return f"Customer 42, plan Pro.\n{lines}\nRequest {request_id}. " + "Prefers email. " * 90

    with contextlib.closing(
        anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-redact", max_retries=0)
    ) as client:
        create = tracker.wrap(client.messages.create, flow="assistant")
        for i in range(46):
            request_id = "stable" if i < 16 else f"req-{i:04d}"
            create(
                model=MODEL,
                max_tokens=32,
                system=[
                    {
                        "type": "text",
                        "text": "You are ACME's agent. " * 200,
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": context(request_id),
                                "cache_control": {"type": "ephemeral"},
                            },
                            {"type": "text", "text": f"q{i % 2}"},
                        ],
                    }
                ],
            )
            cache_emulator.advance(20)
    (churn,) = opened
    diff = churn.diff
    assert diff is not None and (diff.section, diff.block_index) == ("messages", 0)
    assert diff.before is not None and "Request req-" in diff.before  # the previous call's id
    assert diff.after is not None and "Request req-" in diff.after
    for _, secret in five:
        assert _leaks(secret, diff.before + diff.after) == [], secret
    assert diff.before.count("[REDACTED]") == len(five)
