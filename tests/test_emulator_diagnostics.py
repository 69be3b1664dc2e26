"""Cache diagnostics on the emulator, through the real ``anthropic`` and ``openai`` SDKs.

Anthropic Messages: a request naming an earlier message in ``diagnostics.previous_message_id``
gets ``diagnostics.cache_miss_reason`` naming the first difference in cache order (model, tools,
system, other prompt settings, messages), or ``diagnostics: null`` when there is none; only
requests carrying the ``diagnostics`` object are remembered. OpenAI Responses (GPT-5.6 and later):
``prompt_cache_options.comparison_response_id`` gives ``prompt_cache_diagnostics`` (``cache_hit``,
``cache_miss`` with a reason, ``comparison_response_not_found``, ``unavailable``). Streamed, the
field rides on ``message_start.message`` / ``response.completed``'s response.

The token counts a difference carries are the named request's reusable tokens (what it read
or wrote) that the new one cannot reuse: all of them when the model or routing changed, else
those past the blocks both share. Counts are computed with ``cachebench.tokens``, the estimate
the emulator counts with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import (
    CacheMissMessagesChanged,
    CacheMissModelChanged,
    CacheMissPreviousMessageNotFound,
    CacheMissSystemChanged,
    CacheMissToolsChanged,
    CacheMissUnavailable,
)

from cachebench.emulator._diagnostics import Check, DiagnosticsStore, Fingerprint
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_block, estimate_text

from .scenario import SYSTEM

KEY = "sk-diagnostics-tests"
OTHER_KEY = "sk-diagnostics-other-workspace"
MODES = ("sync", "async", "stream", "async_stream")

# -- Anthropic ----------------------------------------------------------------------------------

CLAUDE = "claude-sonnet-5"  # 1024-token minimum: the prompt below is above it
OTHER_CLAUDE = "claude-opus-5"
TOOLS = [
    {
        "name": f"lookup_{name}",
        "description": f"Look up a {name} in the ACME back office. " * 20,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    for name in ("order", "invoice")
]
SYSTEM_BLOCKS = [{"type": "text", "text": SYSTEM}]
T = sum(estimate_block(t) for t in TOOLS)
S = estimate_block(SYSTEM_BLOCKS[0])
MISS_TYPES = {
    "model_changed": CacheMissModelChanged,
    "tools_changed": CacheMissToolsChanged,
    "system_changed": CacheMissSystemChanged,
    "messages_changed": CacheMissMessagesChanged,
    "unavailable": CacheMissUnavailable,
}


def conversation(*texts: str) -> list[dict[str, Any]]:
    """Messages alternating user / assistant, starting with the user."""
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]


FIRST = conversation("Where is order 42?")
NEXT = conversation("Where is order 42?", "It ships on Monday.", "And order 43?")


def claude(previous: str | None, **changes: Any) -> dict[str, Any]:
    """A request with automatic caching (the whole prompt is its cacheable prefix) that opts in
    to diagnostics naming ``previous``."""
    body: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 32,
        "cache_control": {"type": "ephemeral"},
        "tools": TOOLS,
        "system": SYSTEM_BLOCKS,
        "messages": FIRST,
        "diagnostics": {"previous_message_id": previous},
    }
    return {**body, **changes}


class Claude:
    """Sync and async clients of one API key."""

    def __init__(self, emu: CacheEmulator, key: str = KEY) -> None:
        self.sync = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key=key, max_retries=0)
        self.aio = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key=key, max_retries=0)

    async def send(self, mode: str, body: dict[str, Any]) -> anthropic.types.Message:
        if mode == "sync":
            return self.sync.messages.create(**body)
        if mode == "async":
            return await self.aio.messages.create(**body)
        if mode == "stream":
            with self.sync.messages.stream(**body) as stream:
                return stream.get_final_message()
        async with self.aio.messages.stream(**body) as astream:
            return await astream.get_final_message()

    def wire(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response body as sent."""
        raw = self.sync.messages.with_raw_response.create(**body)
        out: dict[str, Any] = raw.http_response.json()
        return out

    async def close(self) -> None:
        self.sync.close()
        await self.aio.close()


@pytest.fixture
async def claudes(cache_emulator: CacheEmulator) -> AsyncIterator[Callable[..., Claude]]:
    made: list[Claude] = []

    def make(key: str = KEY) -> Claude:
        made.append(Claude(cache_emulator, key))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def reusable(message: anthropic.types.Message) -> int:
    """What a message's request read or wrote: the prefix a later request could reuse."""
    u = message.usage
    return (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)


@dataclass(frozen=True)
class Change:
    """The second request of a pair: ``changes`` to the first; the reason it gets, and the
    tokens it misses as a function of the first request's reusable tokens (None: no count)."""

    name: str
    changes: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    missed: Callable[[int], int] | None = None


CLAUDE_CHANGES = [
    Change("identical repeat"),
    Change("appended turn", {"messages": NEXT}),
    Change(
        "system prompt",
        {"system": [{"type": "text", "text": SYSTEM + " Today is Tuesday."}]},
        "system_changed",
        lambda r: r - T,
    ),
    Change("tools reordered", {"tools": TOOLS[::-1]}, "tools_changed", lambda r: r),
    Change(
        "earlier message edited",
        {"messages": conversation("Where is order 24?", "It ships on Monday.", "And order 43?")},
        "messages_changed",
        lambda r: r - T - S,
    ),
    Change(
        "history truncated",
        {"messages": conversation("And order 43?")},
        "messages_changed",
        lambda r: r - T - S,
    ),
    Change("model switch", {"model": OTHER_CLAUDE}, "model_changed", lambda r: r),
    Change("tool_choice", {"tool_choice": {"type": "any"}}, "unavailable"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", CLAUDE_CHANGES, ids=lambda c: c.name)
async def test_claude_names_the_first_difference(
    claudes: Callable[..., Claude], mode: str, change: Change
) -> None:
    """Each change to a request gets its documented reason and, for the ``*_changed`` types, the
    first request's reusable tokens past the divergence; an identical repeat or an appended
    turn gets ``diagnostics: null``. Alike in every call mode."""
    client = claudes()
    first = await client.send(mode, claude(None))
    assert first.diagnostics is None
    r1 = reusable(first)
    assert r1 == T + S + estimate_block(FIRST[0]["content"]) >= 1024
    second = await client.send(mode, claude(first.id, **change.changes))
    if change.reason is None:
        assert second.diagnostics is None
        return
    assert second.diagnostics is not None
    reason = second.diagnostics.cache_miss_reason
    assert isinstance(reason, MISS_TYPES[change.reason])
    assert reason.type == change.reason
    if change.missed is None:
        assert reason.to_dict() == {"type": change.reason}
    else:
        assert reason.to_dict() == {"type": change.reason, "cache_missed_input_tokens": change.missed(r1)}
        assert 0 < change.missed(r1) <= r1


async def test_claude_wire_fields(claudes: Callable[..., Claude]) -> None:
    """``diagnostics`` is absent without the request object (the body is what it always was),
    ``null`` on a first turn, and the reason object on a difference, after ``usage``."""
    client = claudes()
    plain = {k: v for k, v in claude(None).items() if k != "diagnostics"}
    without = client.wire(plain)
    assert list(without) == [
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    ]
    first = client.wire(claude(None))
    assert list(first)[-2:] == ["usage", "diagnostics"]
    assert first["diagnostics"] is None
    assert {k: v for k, v in first.items() if k not in ("id", "diagnostics")} == {
        k: v for k, v in without.items() if k != "id"
    } | {"usage": first["usage"]}
    changed = client.wire(claude(first["id"], system="Another prompt."))
    assert changed["diagnostics"] == {
        "cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": reusable_of(first) - T}
    }
    assert first["id"] != without["id"] != changed["id"]


def reusable_of(body: dict[str, Any]) -> int:
    usage = body["usage"]
    return int(usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"])


async def test_claude_stream_puts_diagnostics_on_message_start(claudes: Callable[..., Claude]) -> None:
    """Streamed, ``diagnostics`` comes on ``message_start.message`` (where the docs put it) and
    not on ``message_delta``, whose SDK type has no such field."""
    client = claudes()
    first = client.sync.messages.create(**claude(None))
    events = list(client.sync.messages.create(**claude(first.id, tools=TOOLS[:1]), stream=True))
    start = next(e for e in events if e.type == "message_start")
    assert start.message.diagnostics is not None
    assert start.message.diagnostics.cache_miss_reason == CacheMissToolsChanged(
        type="tools_changed", cache_missed_input_tokens=reusable(first) - estimate_block(TOOLS[0])
    )
    delta = next(e for e in events if e.type == "message_delta")
    assert "diagnostics" not in delta.to_dict()


@pytest.mark.parametrize("mode", MODES)
async def test_claude_previous_message_not_found(
    cache_emulator: CacheEmulator, claudes: Callable[..., Claude], mode: str
) -> None:
    """An unknown id, an id from another API key, an id whose request had no ``diagnostics``
    object (nothing is stored for it) and an id from before a reset are all not found."""
    client, other = claudes(), claudes(OTHER_KEY)
    not_found = CacheMissPreviousMessageNotFound(type="previous_message_not_found")
    first = await client.send(mode, claude(None))
    silent = await client.send(mode, {k: v for k, v in claude(None).items() if k != "diagnostics"})
    for sender, named in ((client, "msg_unknown"), (other, first.id), (client, silent.id)):
        answer = await sender.send(mode, claude(named))
        assert answer.diagnostics is not None
        assert answer.diagnostics.cache_miss_reason == not_found
    cache_emulator.reset()
    after = await client.send(mode, claude(first.id))
    assert after.diagnostics is not None and after.diagnostics.cache_miss_reason == not_found


async def test_claude_diagnostics_compare_structure_not_cache_state(
    cache_emulator: CacheEmulator, claudes: Callable[..., Claude]
) -> None:
    """After the entry expired, a repeat reads nothing yet reports no difference (the docs'
    "null with zero reads: the entry was no longer available")."""
    client = claudes()
    first = client.sync.messages.create(**claude(None))
    cache_emulator.advance(301)
    again = client.sync.messages.create(**claude(first.id))
    assert again.diagnostics is None
    assert again.usage.cache_read_input_tokens == 0
    assert again.usage.cache_creation_input_tokens == reusable(first)


async def test_claude_beta_header_set_is_a_prompt_setting(claudes: Callable[..., Claude]) -> None:
    """Another set of ``anthropic-beta`` headers with the same model, tools and system is
    ``unavailable``; the same set in another order is no difference."""
    client = claudes()
    first = client.sync.beta.messages.create(**claude(None), betas=["a-2026-01-01", "b-2026-01-01"])
    same = client.sync.beta.messages.create(**claude(first.id), betas=["b-2026-01-01", "a-2026-01-01"])
    assert same.diagnostics is None
    other = client.sync.beta.messages.create(**claude(first.id), betas=["a-2026-01-01"])
    assert other.diagnostics is not None and other.diagnostics.cache_miss_reason is not None
    assert other.diagnostics.cache_miss_reason.type == "unavailable"


@pytest.mark.parametrize(
    ("diagnostics", "message"),
    [
        ("msg_1", "diagnostics: Input should be a valid dictionary or object"),
        ({"previous_message_id": 7}, "diagnostics.previous_message_id: Input should be a valid string"),
    ],
)
async def test_claude_malformed_diagnostics_is_a_400(
    claudes: Callable[..., Claude], diagnostics: Any, message: str
) -> None:
    """A malformed ``diagnostics`` object is refused before anything is cached."""
    client = claudes()
    with pytest.raises(anthropic.BadRequestError) as e:
        client.sync.messages.create(**{**claude(None), "diagnostics": diagnostics})
    assert e.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


# -- OpenAI Responses ---------------------------------------------------------------------------

GPT = "gpt-5.6"  # diagnostics from GPT-5.6
OLD_GPT = "gpt-4.1"
FUNCTIONS = [{"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}]
F = sum(estimate_block(t) for t in FUNCTIONS)
ASK = "Reply with exactly OK."


def gpt(comparison: str | None = None, **changes: Any) -> dict[str, Any]:
    """A Responses request; ``comparison`` names the response to compare with."""
    body: dict[str, Any] = {"model": GPT, "instructions": SYSTEM, "tools": FUNCTIONS, "input": ASK}
    if comparison is not None:
        body["prompt_cache_options"] = {"comparison_response_id": comparison}
    return {**body, **changes}


class Gpt:
    """Sync and async clients of one API key."""

    def __init__(self, emu: CacheEmulator, key: str = KEY) -> None:
        self.sync = openai.OpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0)
        self.aio = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0)

    async def send(self, mode: str, body: dict[str, Any]) -> Any:
        """The response: in the stream modes, the ``response.completed`` event's (raw events),
        and the SDK stream helper's final response."""
        if mode == "sync":
            return self.sync.responses.create(**body)
        if mode == "async":
            return await self.aio.responses.create(**body)
        if mode == "stream":
            events = list(self.sync.responses.create(**body, stream=True))
            assert all(getattr(e.response, "prompt_cache_diagnostics", None) is None for e in events[:2])
            assert events[-1].type == "response.completed"
            return events[-1].response
        async with self.aio.responses.stream(**body) as stream:
            return await stream.get_final_response()

    async def close(self) -> None:
        self.sync.close()
        await self.aio.close()


@pytest.fixture
async def gpts(cache_emulator: CacheEmulator) -> AsyncIterator[Callable[..., Gpt]]:
    made: list[Gpt] = []

    def make(key: str = KEY) -> Gpt:
        made.append(Gpt(cache_emulator, key))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def reusable_response(response: Any) -> int:
    """``cached_tokens + cache_write_tokens``: the guide's ``comparison_reusable_tokens``."""
    d = response.usage.input_tokens_details
    return int(d.cached_tokens + (d.cache_write_tokens or 0))


GPT_CHANGES = [
    Change("identical repeat"),
    Change(
        "appended turn",
        {
            "input": [
                {"role": "user", "content": ASK},
                {"role": "assistant", "content": "OK"},
                {"role": "user", "content": "Again."},
            ]
        },
    ),
    Change("model switch", {"model": "gpt-5.7"}, "model_changed", lambda r: r),
    Change("prompt cache key", {"prompt_cache_key": "session-2"}, "prompt_cache_key_changed", lambda r: r),
    Change("service tier", {"service_tier": "flex"}, "service_tier_changed", lambda r: r),
    Change("tool renamed", {"tools": [{**FUNCTIONS[0], "name": "get_date"}]}, "tools_changed", lambda r: r),
    Change("text format", {"text": {"format": {"type": "json_object"}}}, "text_format_changed", lambda r: r),
    Change("reasoning effort", {"reasoning": {"effort": "low"}}, "reasoning_effort_changed", lambda r: r),
    Change("verbosity", {"text": {"verbosity": "low"}}, "verbosity_changed", lambda r: r),
    Change("instructions", {"instructions": SYSTEM + " Today is Tuesday."}, "input_changed", lambda r: r - F),
    Change(
        "compaction",
        {"input": [{"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque"}, ASK]},
        "context_compacted",
        lambda r: r - F - estimate_text(SYSTEM),
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("change", GPT_CHANGES, ids=lambda c: c.name)
async def test_gpt_names_the_first_difference(
    cache_emulator: CacheEmulator, gpts: Callable[..., Gpt], mode: str, change: Change
) -> None:
    """Against the response it names, a request gets ``cache_hit`` when the named response's
    reusable prefix starts it, else ``cache_miss`` with the guide's reason, the tokens missed
    and the named response's ``cached_tokens + cache_write_tokens``. Alike in every call mode;
    the comparison id is echoed in ``prompt_cache_options``."""
    cache_emulator.any_model = True  # gpt-5.7 is not priced yet
    client = gpts()
    first = await client.send(mode, gpt())
    assert first.prompt_cache_diagnostics is None
    r1 = reusable_response(first)
    assert r1 == first.usage.input_tokens >= 1024
    second = await client.send(mode, gpt(first.id, **change.changes))
    assert second.prompt_cache_options.comparison_response_id == first.id
    diagnostics = second.prompt_cache_diagnostics
    if change.reason is None:
        assert diagnostics.to_dict() == {"type": "cache_hit"}
        return
    assert change.missed is not None
    assert diagnostics.to_dict() == {
        "type": "cache_miss",
        "reason": change.reason,
        "cache_missed_tokens": change.missed(r1),
        "comparison_reusable_tokens": r1,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_gpt_not_found_and_unavailable(gpts: Callable[..., Gpt], mode: str) -> None:
    """An unknown id or one from another API key is ``comparison_response_not_found``; a model
    before GPT-5.6 has no diagnostics (``unavailable``) and its responses are not remembered."""
    client, other = gpts(), gpts(OTHER_KEY)
    first = await client.send(mode, gpt())
    for sender, named in ((client, "resp_unknown"), (other, first.id)):
        answer = await sender.send(mode, gpt(named))
        assert answer.prompt_cache_diagnostics.to_dict() == {"type": "comparison_response_not_found"}
    old = await client.send(mode, gpt(first.id, model=OLD_GPT))
    assert old.prompt_cache_diagnostics.to_dict() == {"type": "unavailable"}
    assert old.prompt_cache_options is None
    named_old = await client.send(mode, gpt(old.id))
    assert named_old.prompt_cache_diagnostics.to_dict() == {"type": "comparison_response_not_found"}


def test_gpt_compares_only_the_named_responses_reusable_prefix(gpts: Callable[..., Gpt]) -> None:
    """With one explicit breakpoint on the first message, the named response's reusable prefix
    ends there: a change after it is still a ``cache_hit``, a change before it is not."""
    client = gpts()
    marked = {"type": "input_text", "text": ASK, "prompt_cache_breakpoint": {"mode": "explicit"}}

    def body(first: str, second: str, named: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"mode": "explicit"}
        if named is not None:
            options["comparison_response_id"] = named
        items = [
            {"role": "user", "content": [{**marked, "text": first}]},
            {"role": "user", "content": second},
        ]
        return gpt(input=items, prompt_cache_options=options)

    first = client.sync.responses.create(**body(ASK, "Then say bye."))
    r1 = reusable_response(first)
    assert r1 == F + estimate_text(SYSTEM) + estimate_text(ASK) < first.usage.input_tokens
    later = client.sync.responses.create(**body(ASK, "Then say hello.", first.id))
    assert later.prompt_cache_diagnostics.to_dict() == {"type": "cache_hit"}
    earlier = client.sync.responses.create(**body("Reply with exactly NO.", "Then say bye.", first.id))
    assert earlier.prompt_cache_diagnostics.to_dict() == {
        "type": "cache_miss",
        "reason": "input_changed",
        "cache_missed_tokens": estimate_text(ASK),
        "comparison_reusable_tokens": r1,
    }


def test_gpt_wire_without_comparison_is_unchanged(
    cache_emulator: CacheEmulator, gpts: Callable[..., Gpt]
) -> None:
    """Without ``comparison_response_id`` there is no ``prompt_cache_diagnostics`` key and
    ``prompt_cache_options`` is the applied mode and ttl only; the streamed response carries
    the field on its last event only."""
    client = gpts()
    raw = client.sync.responses.with_raw_response.create(**gpt()).http_response.json()
    assert "prompt_cache_diagnostics" not in raw
    assert raw["prompt_cache_options"] == {"mode": "implicit", "ttl": "30m"}
    events = list(client.sync.responses.create(**gpt(raw["id"]), stream=True))
    assert [e.type for e in events if "prompt_cache_diagnostics" in e.to_dict().get("response", {})] == [
        "response.completed"
    ]


def test_gpt_comparison_id_must_be_a_string(gpts: Callable[..., Gpt]) -> None:
    """A comparison id that is not a string is the API's ``invalid_type`` 400 on its path."""
    client = gpts()
    with pytest.raises(openai.BadRequestError) as e:
        client.sync.responses.create(**{**gpt(), "prompt_cache_options": {"comparison_response_id": 5}})
    assert (e.value.param, e.value.code) == ("prompt_cache_options.comparison_response_id", "invalid_type")


# -- the store ----------------------------------------------------------------------------------


def _fingerprint(n: int) -> Fingerprint:
    return Fingerprint((Check("model_changed", bytes([n])),), b"", (), n, 0, "messages_changed")


def test_store_forgets_the_least_recently_used() -> None:
    """The store keeps ``max_records`` fingerprints; a lookup counts as a use."""
    store = DiagnosticsStore(max_records=2)
    store.remember("k", "a", _fingerprint(1))
    store.remember("k", "b", _fingerprint(2))
    assert store.lookup("k", "a") is not None
    store.remember("k", "c", _fingerprint(3))
    assert (store.lookup("k", "a"), store.lookup("k", "b")) == (_fingerprint(1), None)
    assert store.lookup("other", "a") is None
    assert len(store) == 2
    store.clear()
    assert len(store) == 0
