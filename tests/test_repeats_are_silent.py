"""Retries, FAQ-style repeats and evaluation loops send the same request again: for every
provider, cache mode and model family, the tracker's expected read of a repeat equals what
the emulator serves, and nothing alerts. The tracker's expectation and the emulator's cache
model place their breakpoints from one module of provider facts.

Also: a miss at an entry's expiry, within the clocks' skew and the call's duration, is
``ttl_expired``, never ``provider``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator, ManualClock

POLICY = "".join(
    f"Policy line {i}: answer from the support handbook, politely and exactly. " for i in range(400)
)
QUESTION = "Where is order 4411?"
EPHEMERAL = {"type": "ephemeral"}


OPEN: list[Any] = []  # the clients a test opened, closed after it


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while OPEN:
        OPEN.pop().close()


def _anthropic(emu: CacheEmulator, tracker: CacheTracker, model: str, mode: str) -> Callable[[], Any]:
    client = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
    OPEN.append(client)
    tracker.instrument(client)
    marker: dict[str, Any] = dict(EPHEMERAL, ttl="1h") if mode == "1h" else dict(EPHEMERAL)
    system: Any = [{"type": "text", "text": POLICY, "cache_control": marker}]
    extra: dict[str, Any] = {}
    if mode == "automatic":
        system, extra = POLICY, {"cache_control": EPHEMERAL}
    messages = [{"role": "user", "content": QUESTION}]
    if mode == "stream":

        def streamed() -> None:
            with client.messages.stream(model=model, max_tokens=32, system=system, messages=messages) as s:
                s.get_final_message()

        return streamed
    return lambda: client.messages.create(
        model=model, max_tokens=32, system=system, messages=messages, **extra
    )


def _openai(emu: CacheEmulator, tracker: CacheTracker, model: str, mode: str) -> Callable[[], Any]:
    client = openai.OpenAI(base_url=emu.openai_base_url, api_key="sk-test", max_retries=0)
    OPEN.append(client)
    tracker.instrument(client)
    extra: dict[str, Any] = {}
    if mode.endswith("explicit"):
        extra["prompt_cache_options"] = {"mode": "explicit"}
        system: Any = [{"type": "text", "text": POLICY, "prompt_cache_breakpoint": {"mode": "explicit"}}]
    else:
        system = POLICY
    if mode.startswith("responses"):
        content = [{"type": "input_text", "text": POLICY}]
        if mode.endswith("explicit"):
            content[0]["prompt_cache_breakpoint"] = {"mode": "explicit"}
        return lambda: client.responses.create(
            model=model,
            input=[{"role": "system", "content": content}, {"role": "user", "content": QUESTION}],
            **extra,
        )
    return lambda: client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": QUESTION}],
        **extra,
    )


def _bedrock(emu: CacheEmulator, tracker: CacheTracker, model: str, mode: str) -> Callable[[], Any]:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=emu.bedrock_endpoint_url,
        aws_access_key_id="AKIDREPEATS",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    OPEN.append(client)
    tracker.instrument(client)
    if mode == "invoke":
        body = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 32,
            "system": [{"type": "text", "text": POLICY, "cache_control": EPHEMERAL}],
            "messages": [{"role": "user", "content": QUESTION}],
        }
        return lambda: client.invoke_model(modelId=model, body=json.dumps(body))
    return lambda: client.converse(
        modelId=model,
        system=[{"text": POLICY}, {"cachePoint": {"type": "default"}}],
        messages=[{"role": "user", "content": [{"text": QUESTION}]}],
    )


def _gemini(emu: CacheEmulator, tracker: CacheTracker, model: str, mode: str) -> Callable[[], Any]:
    client = genai.Client(
        api_key="gemini-repeats", http_options=types.HttpOptions(base_url=emu.gemini_base_url)
    )
    OPEN.append(client)
    tracker.instrument(client)
    config = types.GenerateContentConfig(system_instruction=POLICY)
    return lambda: client.models.generate_content(model=model, contents=QUESTION, config=config)


CASES = [
    ("anthropic", "claude-sonnet-5", "5m"),
    ("anthropic", "claude-sonnet-5", "1h"),
    ("anthropic", "claude-sonnet-5", "automatic"),
    ("anthropic", "claude-sonnet-5", "stream"),
    ("anthropic", "claude-haiku-4-5", "5m"),
    ("anthropic", "claude-opus-5", "5m"),
    ("openai", "gpt-4o", "chat"),
    ("openai", "gpt-4.1-mini", "responses"),
    ("openai", "gpt-5", "chat"),
    ("openai", "gpt-5.6", "chat"),
    ("openai", "gpt-5.6", "responses"),
    ("openai", "gpt-5.6", "chat explicit"),
    ("openai", "gpt-5.6", "responses explicit"),
    ("bedrock", "us.anthropic.claude-sonnet-5-v1:0", "converse"),
    ("bedrock", "us.anthropic.claude-sonnet-5-v1:0", "invoke"),
    ("gemini", "gemini-2.5-flash", "implicit"),
    ("gemini", "gemini-3-pro", "implicit"),
]
SENDERS = {"anthropic": _anthropic, "openai": _openai, "bedrock": _bedrock, "gemini": _gemini}


@pytest.mark.parametrize(("provider", "model", "mode"), CASES, ids=[" ".join(c) for c in CASES])
def test_a_repeated_request_expects_what_the_emulator_serves(
    cache_emulator: CacheEmulator, provider: str, model: str, mode: str
) -> None:
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(clock=cache_emulator.clock, on_miss_alert=alerts.append)
    send = SENDERS[provider](cache_emulator, tracker, model, mode)
    for _ in range(4):
        send()
        cache_emulator.advance(5)
    calls = tracker.calls()
    assert len(calls) == 4
    first, repeats = calls[0], calls[1:]
    assert first.cache_read_tokens == 0
    for m in repeats:
        assert m.cache_read_tokens > 0, m
        assert m.expected_read_tokens == m.cache_read_tokens, m
        assert m.unexpected_miss is False, m
        assert m.miss_cause is None, m
    assert alerts == []


def test_a_miss_within_the_clock_margin_of_expiry_is_ttl_expired(cache_emulator: CacheEmulator) -> None:
    """The provider's clock runs 1.5 s ahead of the client's: the entry has expired at the
    provider although, by the client's clock, 299.5 s passed since the last read."""
    client_clock = ManualClock(cache_emulator.clock())
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(clock=client_clock, on_miss_alert=alerts.append)
    send = _anthropic(cache_emulator, tracker, "claude-sonnet-5", "5m")
    send()
    cache_emulator.advance(301)
    client_clock.advance(299.5)
    send()
    first, late = tracker.calls()
    assert (first.cache_write_tokens > 0, late.cache_read_tokens, late.cache_write_tokens > 0) == (
        True,
        0,
        True,
    )
    assert late.miss_cause == "ttl_expired"
    assert late.unexpected_miss is False
    assert alerts == []


def test_a_miss_well_within_the_ttl_is_still_the_provider_s(cache_emulator: CacheEmulator) -> None:
    """The margin is a margin, not a blindfold: an entry evicted 60 s after it was written is
    an unexpected ``provider`` miss."""
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(clock=cache_emulator.clock, on_miss_alert=alerts.append)
    send = _anthropic(cache_emulator, tracker, "claude-sonnet-5", "5m")
    send()
    cache_emulator.advance(60)
    cache_emulator.emulator.reset()  # the provider lost the entry
    send()
    late = tracker.calls()[1]
    assert (late.miss_cause, late.unexpected_miss) == ("provider", True)
    assert len(alerts) == 1
