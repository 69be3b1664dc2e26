"""Redaction of the before/after excerpts a prefix diff carries with ``capture_text=True``.

Excerpts are cut from a block's canonical bytes, so prompt text arrives JSON-escaped; every
test builds real prompts with the Anthropic adapter, diffs their layer prints, and checks that
no 8-character piece of the secret survives while ``[REDACTED]`` marks where it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from cachebench.fingerprint import diff_layers, layer_print, redact
from cachebench.providers.anthropic import parse_request
from cachebench.types import PrefixDiff

MODEL = "claude-sonnet-5"
NOTES = "Customer 42, plan Pro, prefers email. "


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

    diff = diff_layers(layer_print(a, 0, stop(a), keep_text=True), layer_print(b, 0, stop(b), keep_text=True))
    assert diff is not None
    return diff


def _system_diff(text: str) -> PrefixDiff:
    """Diff of two system prompts holding ``text``, differing only in the request id at ``RID``."""
    diff = _diff(_request(text.replace("RID", "req-0001")), _request(text.replace("RID", "req-0002")))
    assert diff.section == "system" and diff.kind == "content"
    assert diff.before is not None and "req-0001" in diff.before
    assert diff.after is not None and "req-0002" in diff.after
    return diff


def _assert_hidden(secret: str, *shown: str | None) -> None:
    text = "\n".join(s or "" for s in shown)
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    assert sorted(p for p in pieces if p in text) == []
    assert "[REDACTED]" in text


def test_a_key_cut_by_the_excerpt_edge_is_redacted_whole() -> None:
    """An API key ending just before the change, longer than the context kept before it: the
    excerpt's edge falls inside the key, yet no part of it shows, because the block is
    redacted before the excerpt is cut."""
    key = "sk-ant-api03-" + "Qx7Lm2Vt9Rb4Nc8Wz1Kp5Hs3Jd6Fg0Ty" * 3 + "AAQ"
    diff = _system_diff(NOTES * 6 + f"Billing key {key} ref RID. " + NOTES * 20)
    _assert_hidden(key, diff.before, diff.after)


def test_json_inside_prompt_text_is_redacted_despite_escaped_quotes() -> None:
    """JSON in prompt text reaches the excerpt as ``{\\"api_key\\": \\"...\\"}``; the value
    is still found by its key name and replaced, the name kept."""
    secret = "hunter2-Zq8vX3kPwLm"
    config = '{"region": "eu-west-1", "api_key": "' + secret + '"}'
    diff = _system_diff(NOTES * 6 + f"Config: {config} Request RID. " + NOTES * 20)
    _assert_hidden(secret, diff.before, diff.after)
    assert diff.after is not None and 'api_key\\": \\"[REDACTED]' in diff.after


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("DB_PASSWORD_PROD=Tr0ub4dor&3xyzzy", "Tr0ub4dor&3xyzzy"),
        ("refresh_token_v2: 9f8e7d6c5b4a3210zz", "9f8e7d6c5b4a3210zz"),
        ('client_secret_value="Qm9vb3N0ZXJz Kx7 pass phrase"', "Qm9vb3N0ZXJz Kx7 pass phrase"),
        ("key pair AKIAIOSFODNN7EXAMPLE Je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", "Je7MtGbClwBF/2Zp9Utk"),
    ],
    ids=["aws_secret_access_key", "password_suffix", "token_suffix", "secret_quoted", "bare_aws_secret"],
)
def test_secret_names_and_aws_secret_keys_are_redacted(line: str, secret: str) -> None:
    """Names that contain secret/token/password (``aws_secret_access_key``, ``DB_PASSWORD_PROD``,
    ``refresh_token_v2``), quoted values with spaces, and a bare AWS secret access key."""
    diff = _system_diff(NOTES * 6 + f"Env: {line}\nRequest RID. " + NOTES * 20)
    _assert_hidden(secret, diff.before, diff.after)


def test_private_key_blocks_are_redacted_whole() -> None:
    """A PEM private key pasted into a prompt is replaced from BEGIN to END."""
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    pem = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n{body[::-1]}\n-----END OPENSSH PRIVATE KEY-----"
    diff = _system_diff(NOTES * 6 + f"Deploy key:\n{pem}\nRequest RID. " + NOTES * 20)
    _assert_hidden(body[::-1], diff.before, diff.after)
    _assert_hidden(body, diff.before, diff.after)


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Look up {name} records for the current customer. " * 40,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }


def test_excerpts_are_capped_when_the_range_is_the_whole_block() -> None:
    """Swapped tools change every byte of the block (and an added tool is new from its first
    byte): the excerpt is cut to about 300 characters, starting at the change."""
    swapped = _diff(
        _request(NOTES, [_tool("orders"), _tool("refunds")]),
        _request(NOTES, [_tool("refunds"), _tool("orders")]),
    )
    assert swapped.section == "tools" and swapped.kind == "content"
    assert swapped.byte_start == 0 and swapped.byte_end > 2000
    assert swapped.before is not None and swapped.before.startswith('["tools",{"description":"Look up orders')
    assert swapped.after is not None and swapped.after.startswith('["tools",{"description":"Look up refunds')
    assert 250 <= len(swapped.before) <= 300 and 250 <= len(swapped.after) <= 300
    added = _diff(
        _request(NOTES, [_tool("orders")]), _request(NOTES, [_tool("orders"), _tool("refunds")]), "tools"
    )
    assert added.kind == "added" and added.after is not None and len(added.after) <= 300


def test_small_changes_keep_about_80_characters_of_context_each_side() -> None:
    """A one-character change deep in a long block: the excerpt holds the changed chunk and at
    most 80 characters either side of it, not the whole block."""
    diff = _system_diff(NOTES * 30 + "Request RID. " + NOTES * 30)
    assert diff.after is not None
    assert len(diff.after) <= (diff.byte_end - diff.byte_start) + 2 * 80
    assert len(diff.after) < len(NOTES * 60) // 4


def test_redact_on_plain_text() -> None:
    """``redact`` alone, on plain and JSON-escaped text: secrets go, names and ordinary
    numbers, digests and prose stay."""
    cases = {
        "use sk-live-0123456789abcdefABCDEF please": "use [REDACTED] please",
        "Authorization: Bearer abc.def-ghi_jkl~mno": "Authorization: [REDACTED]",
        'cfg {\\"api_key\\": \\"hunter2-Zq8vX3kP\\"}': 'cfg {\\"api_key\\": \\"[REDACTED]\\"}',
        "x-api-key: abcdef123": "x-api-key: [REDACTED]",
        '"password": "correct horse battery"': '"password": "[REDACTED]"',
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEo\n-----END RSA PRIVATE KEY----- ok": "[REDACTED] ok",
        '"max_tokens":1024,"token":{"type":"string"}': '"max_tokens":1024,"token":{"type":"string"}',
        "commit 0123456789abcdef0123456789abcdef01234567": "commit 0123456789abcdef0123456789abcdef01234567",
        "The secret: is out there": "The secret: is out there",
    }
    assert {text: redact(text) for text in cases} == cases
