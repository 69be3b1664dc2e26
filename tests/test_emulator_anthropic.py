"""The emulator's Anthropic Messages API through the real ``anthropic`` SDK on loopback.

Every call is also wrapped in a ``CacheTracker`` on the emulator's own clock, and the tracked
``CallMetrics`` must equal the usage the SDK returned. Token counts are computed here from
``cachebench.tokens``, the same estimate the emulator counts with.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_block

from .scenario import SYSTEM, context, turns

MODEL = "claude-sonnet-5"  # minimum cacheable prefix: 1024 tokens
KEY = "sk-emulator-tests"
MODES = ("sync", "async", "stream", "async_stream")

# The four layers of a support agent's prompt: tools, system, per-user context, conversation.
TOOLS = [
    {
        "name": f"lookup_{name}",
        "description": f"Look up a {name} in the ACME back office. " * 40,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
    for name in ("order", "invoice", "shipment")
]


def cc(ttl: str) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def four_layers(user: str, turn: int, *, shared_ttl: str = "5m") -> dict[str, Any]:
    """Turn ``turn`` (1-based) of ``user``: breakpoints on the last tool, the system prompt
    (both ``shared_ttl``), the user's context and the newest question (both 5m)."""
    pairs = turns(user, turn)
    messages: list[dict[str, Any]] = []
    for question, answer in pairs[:-1]:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append(
        {"role": "user", "content": [{"type": "text", "text": pairs[-1][0], "cache_control": cc("5m")}]}
    )
    return {
        "model": MODEL,
        "max_tokens": 64,
        "tools": [*TOOLS[:-1], {**TOOLS[-1], "cache_control": cc(shared_ttl)}],
        "system": [
            {"type": "text", "text": SYSTEM, "cache_control": cc(shared_ttl)},
            {"type": "text", "text": context(user), "cache_control": cc("5m")},
        ],
        "messages": messages,
    }


T = sum(estimate_block(t) for t in TOOLS)
S = estimate_block(SYSTEM)


def C(user: str) -> int:
    return estimate_block(context(user))


def M(user: str, turn: int) -> int:
    """Tokens of ``user``'s conversation through question ``turn``."""
    pairs = turns(user, turn)
    return sum(estimate_block(q) + estimate_block(a) for q, a in pairs[:-1]) + estimate_block(pairs[-1][0])


def as_json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def counts(usage: Any) -> tuple[int, int, int, int]:
    """(uncached input, read, write, 1h write) of an SDK ``Usage``."""
    split = usage.cache_creation
    return (
        usage.input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        split.ephemeral_1h_input_tokens if split is not None else 0,
    )


def tracked(m: CallMetrics) -> tuple[int, int, int, int]:
    return (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.cache_write_1h_tokens)


class Agent:
    """The SDK clients of one test, wrapped by one tracker on the emulator's clock."""

    def __init__(self, emu: CacheEmulator, key: str = KEY) -> None:
        self.sync = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key=key, max_retries=0)
        self.aio = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key=key, max_retries=0)
        self.tracker = CacheTracker(clock=emu.clock)

    async def send(self, mode: str, request: dict[str, Any]) -> tuple[int, int, int, int]:
        """One call in ``mode``; asserts the tracker recorded what the SDK returned."""
        t = self.tracker
        if mode == "sync":
            message = t.wrap(self.sync.messages.create)(**request)
        elif mode == "async":
            message = await t.wrap(self.aio.messages.create)(**request)
        elif mode == "stream":
            with t.wrap(self.sync.messages.stream)(**request) as stream:
                message = stream.get_final_message()
        else:
            async with t.wrap(self.aio.messages.stream)(**request) as astream:
                message = await astream.get_final_message()
        assert message.model == request["model"]
        got = counts(message.usage)
        last = t.calls()[-1]
        assert tracked(last) == got
        assert last.output_tokens == message.usage.output_tokens > 0
        return got


AgentFactory = Callable[..., Agent]


@pytest.fixture
async def agents(cache_emulator: CacheEmulator) -> AsyncIterator[AgentFactory]:
    """``agents(key=KEY)`` builds an :class:`Agent`; its clients are closed after the test."""
    made: list[Agent] = []

    def make(key: str = KEY) -> Agent:
        made.append(Agent(cache_emulator, key))
        return made[-1]

    yield make
    for agent in made:
        agent.sync.close()
        await agent.aio.close()


@pytest.mark.parametrize("mode", MODES)
async def test_four_layer_scenario(cache_emulator: CacheEmulator, agents: AgentFactory, mode: str) -> None:
    """A new user writes all four layers; their next turn reads them; another user reads tools
    and system and writes their own context; after 5 idle minutes everything is written again."""
    agent = agents()
    a1 = T + S + C("ann") + M("ann", 1)
    assert await agent.send(mode, four_layers("ann", 1)) == (0, 0, a1, 0)
    a2 = T + S + C("ann") + M("ann", 2)
    assert await agent.send(mode, four_layers("ann", 2)) == (0, a1, a2 - a1, 0)
    assert await agent.send(mode, four_layers("bob", 1)) == (0, T + S, C("bob") + M("bob", 1), 0)
    cache_emulator.advance(301)
    assert await agent.send(mode, four_layers("ann", 2)) == (0, 0, a2, 0)
    assert len(agent.tracker.calls()) == 4


@pytest.mark.parametrize("mode", MODES)
async def test_one_hour_breakpoint_survives_five_idle_minutes(
    cache_emulator: CacheEmulator, agents: AgentFactory, mode: str
) -> None:
    """With 1h breakpoints on tools and system, a 5-minute idle gap loses only the 5m layers;
    the writes report their TTL split."""
    agent = agents()
    first = await agent.send(mode, four_layers("ann", 1, shared_ttl="1h"))
    assert first == (0, 0, T + S + C("ann") + M("ann", 1), T + S)
    cache_emulator.advance(301)
    assert await agent.send(mode, four_layers("ann", 1, shared_ttl="1h")) == (
        0,
        T + S,
        C("ann") + M("ann", 1),
        0,
    )
    cache_emulator.advance(3601)
    assert await agent.send(mode, four_layers("ann", 1, shared_ttl="1h")) == first


def system_only(text: str, question: str = "Where is order 42?") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": text, "cache_control": cc("5m")}],
        "messages": [{"role": "user", "content": question}],
    }


@pytest.mark.parametrize(("repeats", "cached"), [(500, False), (520, True)])
async def test_below_minimum_prefix_caches_nothing(
    cache_emulator: CacheEmulator, agents: AgentFactory, repeats: int, cached: bool
) -> None:
    """A breakpoint whose prefix is under the model's 1024-token minimum is ignored: both cache
    counters stay 0 on every call; just above it the prefix is written, then read."""
    text = "policy: " * repeats  # 2 tokens each
    prefix = estimate_block(text)
    assert (prefix >= 1024) is cached
    question = estimate_block("Where is order 42?")
    agent = agents()
    first = await agent.send("sync", system_only(text))
    second = await agent.send("sync", system_only(text))
    if cached:
        assert (first, second) == ((question, 0, prefix, 0), (question, prefix, 0, 0))
    else:
        assert first == second == (prefix + question, 0, 0, 0)


def long_thread(blocks_after: int, *, tools: bool = False) -> dict[str, Any]:
    """System (uncached), a first question with a breakpoint, then ``blocks_after`` more
    blocks with a breakpoint only on the last. ``tools``: the middle blocks are one run of
    tool_use and tool_result blocks."""
    first = {
        "role": "user",
        "content": [{"type": "text", "text": "Start the audit.", "cache_control": cc("5m")}],
    }
    if blocks_after == 0:
        return {"model": MODEL, "max_tokens": 64, "system": SYSTEM, "messages": [first]}
    first["content"] = "Start the audit."
    if tools:
        n = (blocks_after - 1) // 2
        uses = [
            {"type": "tool_use", "id": f"t{i}", "name": "lookup_order", "input": {"id": str(i)}}
            for i in range(n)
        ]
        results = [
            {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"order {i} ok"} for i in range(n)
        ]
        middle = [{"role": "assistant", "content": uses}, {"role": "user", "content": results}]
        last_blocks = 1
    else:
        middle = [{"role": "assistant", "content": "Auditing."}]
        last_blocks = blocks_after - 1
    texts: list[dict[str, Any]] = [{"type": "text", "text": f"Step {i} done."} for i in range(last_blocks)]
    texts[-1] = {**texts[-1], "cache_control": cc("5m")}
    if tools:
        middle[-1]["content"] = [*middle[-1]["content"], *texts]
        return {"model": MODEL, "max_tokens": 64, "system": SYSTEM, "messages": [first, *middle]}
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": SYSTEM,
        "messages": [first, *middle, {"role": "user", "content": texts}],
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("blocks_after", "tools", "reads"), [(20, False, True), (21, False, False), (41, True, True)]
)
async def test_lookback_finds_entries_at_most_20_positions_back(
    cache_emulator: CacheEmulator,
    agents: AgentFactory,
    blocks_after: int,
    tools: bool,
    reads: bool,
    mode: str,
) -> None:
    """A breakpoint reads an earlier entry up to 20 block positions before it (20 blocks later:
    read; 21: miss); a run of tool_use/tool_result blocks counts as one position."""
    agent = agents()
    prefix = S + estimate_block("Start the audit.")
    assert await agent.send(mode, long_thread(0)) == (0, 0, prefix, 0)
    request = long_thread(blocks_after, tools=tools)
    total = agent.sync.messages.count_tokens(
        model=MODEL, system=request["system"], messages=request["messages"]
    )
    got = await agent.send(mode, request)
    assert got == ((0, prefix, total.input_tokens - prefix, 0) if reads else (0, 0, total.input_tokens, 0))


async def test_fifth_breakpoint_is_the_sdks_bad_request_error(
    cache_emulator: CacheEmulator, agents: AgentFactory
) -> None:
    """Five cache_control blocks: 400 invalid_request_error, raised by the SDK as
    ``anthropic.BadRequestError``; the tracker records the failed call."""
    agent = agents()
    request = {
        "model": MODEL,
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": f"Part {i}. " + SYSTEM, "cache_control": cc("5m")} for i in range(5)
        ],
        "messages": [{"role": "user", "content": "hi"}],
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        agent.tracker.wrap(agent.sync.messages.create)(**request)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert info.value.body["error"]["message"] == (  # type: ignore[index]
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )
    (failed,) = agent.tracker.calls()
    assert failed.error is not None and failed.error.startswith("BadRequestError")
    assert not failed.usage_known
    with pytest.raises(anthropic.BadRequestError):
        await agent.aio.messages.create(**request)


async def test_parallel_cold_calls_all_write(cache_emulator: CacheEmulator, agents: AgentFactory) -> None:
    """Eight concurrent calls on a cold prefix, each taking 200 ms to start: none can read
    another's entry (it is readable only once its response started), so all eight write;
    the next call reads."""
    cache_emulator.set_knobs(ttft_ms=800)
    agent = agents()
    request = four_layers("ann", 1)
    full = T + S + C("ann") + M("ann", 1)
    results = await asyncio.gather(*(agent.send("async", request) for _ in range(8)))
    assert results == [(0, 0, full, 0)] * 8
    assert await agent.send("async", request) == (0, full, 0, 0)
    assert [tracked(m) for m in agent.tracker.calls()] == [*results, (0, full, 0, 0)]


async def test_multi_turn_growth_reads_the_previous_turn(
    cache_emulator: CacheEmulator, agents: AgentFactory
) -> None:
    """Each turn of a growing conversation reads exactly the previous turn's prompt and
    writes only what it adds."""
    agent = agents()
    previous = 0
    for turn in range(1, 7):
        now = T + S + C("cy") + M("cy", turn)
        assert await agent.send("stream" if turn % 2 else "sync", four_layers("cy", turn)) == (
            0,
            previous,
            now - previous,
            0,
        )
        previous = now
        cache_emulator.advance(60)


async def test_caches_are_scoped_by_api_key(cache_emulator: CacheEmulator, agents: AgentFactory) -> None:
    """Another API key (workspace) shares nothing, even for the same prompt."""
    request = four_layers("ann", 1)
    full = T + S + C("ann") + M("ann", 1)
    assert await agents().send("sync", request) == (0, 0, full, 0)
    assert await agents(key="sk-other").send("sync", request) == (0, 0, full, 0)


async def test_automatic_caching_and_count_tokens(
    cache_emulator: CacheEmulator, agents: AgentFactory
) -> None:
    """Top-level ``cache_control`` caches the whole prompt; ``count_tokens`` gives the same total
    and touches no cache."""
    agent = agents()
    request = {**system_only(SYSTEM), "system": SYSTEM, "cache_control": cc("1h")}
    total = agent.sync.messages.count_tokens(
        model=MODEL, system=SYSTEM, messages=request["messages"]
    ).input_tokens
    assert total == S + estimate_block("Where is order 42?")
    assert await agent.send("sync", request) == (0, 0, total, total)
    assert await agent.send("async", request) == (0, total, 0, 0)


async def test_injected_overload_raises_the_sdks_error_and_writes_nothing(
    cache_emulator: CacheEmulator,
    agents: AgentFactory,
) -> None:
    """error_rate=1 with 529: the SDK raises ``OverloadedError`` (an ``InternalServerError``)
    with Anthropic's error body, and the failed call's writes never become readable; 429
    gives ``RateLimitError``."""
    agent = agents()
    request = system_only(SYSTEM)
    cache_emulator.set_knobs(error_rate=1.0, error_status=529)
    with pytest.raises(anthropic.InternalServerError) as info:
        agent.tracker.wrap(agent.sync.messages.create)(**request)
    assert isinstance(info.value, anthropic.OverloadedError)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": info.value.body["error"]["message"]},
    }  # type: ignore[index]
    cache_emulator.set_knobs(error_status=429)
    with pytest.raises(anthropic.RateLimitError):
        await agent.aio.messages.create(**request)
    cache_emulator.set_knobs(error_rate=0.0)
    question = estimate_block("Where is order 42?")
    assert await agent.send("sync", request) == (question, 0, S, 0)


def test_malformed_and_incomplete_requests_get_400_error_json(cache_emulator: CacheEmulator) -> None:
    """Malformed JSON, a missing model or max_tokens: 400 with Anthropic's error shape, never
    a 500 or a traceback; an unknown route is a 404 in the same shape."""
    url = f"{cache_emulator.url}/v1/messages"
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    good = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(headers=headers) as http:
        cases = {
            b"{not json": "not valid JSON",
            b"": "empty",
            b"[1, 2]": "JSON object",
            as_json({k: v for k, v in good.items() if k != "model"}): "model: Field required",
            as_json({k: v for k, v in good.items() if k != "max_tokens"}): "max_tokens: Field required",
            as_json({**good, "messages": [{"role": "robot", "content": "x"}]}): "role",
        }
        for body, needle in cases.items():
            r = http.post(url, content=body)
            assert r.status_code == 400, body
            err = r.json()
            assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
            assert needle in err["error"]["message"]
        r = http.post(f"{cache_emulator.url}/v1/messages/nowhere", content=b"{}")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert http.post(url, content=as_json(good)).status_code == 200


def test_sse_event_sequence_and_cumulative_usage(cache_emulator: CacheEmulator) -> None:
    """The raw stream: message_start (with cache counts and the TTL split), content_block_start,
    ping, text deltas, content_block_stop, message_delta (cumulative usage), message_stop."""
    with anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key=KEY, max_retries=0
    ) as client:
        events = list(client.messages.create(**four_layers("ann", 1, shared_ttl="1h"), stream=True))
    raw = httpx2.post(
        f"{cache_emulator.url}/v1/messages",
        headers={"x-api-key": KEY},
        content=as_json({**four_layers("ann", 1, shared_ttl="1h"), "stream": True}),
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    names = [line[len("event: ") :] for line in raw.text.splitlines() if line.startswith("event: ")]
    deltas = ["content_block_delta"] * (len(names) - 6)
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert deltas and [e.type for e in events] == [n for n in names if n != "ping"]
    start = events[0].message.usage  # type: ignore[union-attr]
    assert counts(start) == (0, 0, T + S + C("ann") + M("ann", 1), T + S)
    delta = events[-2].usage  # type: ignore[union-attr]
    assert delta.cache_creation_input_tokens == T + S + C("ann") + M("ann", 1)
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text and delta.output_tokens == estimate_block(text)


async def test_five_minute_entry_is_read_at_300_seconds_and_gone_at_301(
    cache_emulator: CacheEmulator, agents: AgentFactory
) -> None:
    """An entry is alive while ``now <= expires``: ``advance(300)`` after a 5m write still
    reads it (and refreshes it); ``advance(301)`` after that read finds nothing."""
    agent = agents()
    request = system_only(SYSTEM)
    question = estimate_block("Where is order 42?")
    assert await agent.send("sync", request) == (question, 0, S, 0)
    cache_emulator.advance(300)
    assert await agent.send("sync", request) == (question, S, 0, 0)
    cache_emulator.advance(301)
    assert await agent.send("sync", request) == (question, 0, S, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_one_output_token_is_a_cut_word_not_an_empty_reply(
    cache_emulator: CacheEmulator, agents: AgentFactory, mode: str
) -> None:
    """``max_tokens=1`` answers with one token of text (the first word cut short) and
    ``stop_reason`` max_tokens, in every mode: the stream has its content block events."""
    agent = agents()
    request = {**system_only(SYSTEM), "max_tokens": 1}
    await agent.send(mode, request)  # asserts output_tokens > 0 and the tracker agrees
    message = agent.sync.messages.create(**request)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 1
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text and estimate_block(message.content[0].text) == 1  # type: ignore[union-attr]
    events = [e.type for e in agent.sync.messages.create(**request, stream=True)]
    assert events[:2] == ["message_start", "content_block_start"] and "content_block_delta" in events


def _error_pattern(client: anthropic.Anthropic, n: int = 24) -> list[bool]:
    """Which of ``n`` calls failed with the injected 500."""
    out = []
    for _ in range(n):
        try:
            client.messages.create(**system_only("Short system prompt."))
            out.append(False)
        except anthropic.InternalServerError:
            out.append(True)
    return out


@pytest.mark.parametrize("seed", [None, 7])
async def test_injected_errors_repeat_for_a_seed_and_without_one(
    cache_emulator: CacheEmulator, agents: AgentFactory, seed: int | None
) -> None:
    """``error_rate=0.5`` fails calls in a pattern fixed by the seed, ``None`` included (as
    misses are): after a reset the same knobs fail the same calls; another seed differs."""
    client = agents().sync
    patterns = []
    for _ in range(2):
        cache_emulator.reset()
        cache_emulator.set_knobs(error_rate=0.5, error_status=500, seed=seed)
        patterns.append(_error_pattern(client))
    assert patterns[0] == patterns[1]
    assert 3 < patterns[0].count(True) < 21
    cache_emulator.set_knobs(seed=12345)
    assert _error_pattern(client) != patterns[0]


async def test_miss_rate_knob_through_the_sdk(cache_emulator: CacheEmulator, agents: AgentFactory) -> None:
    """``miss_rate=1`` makes every call a miss that writes again (isolated misses); per-scope
    knobs touch only that API key; ``miss_rate=0.5`` with a seed misses in a repeatable pattern."""
    agent, other = agents(), agents(key="sk-steady")
    request = system_only(SYSTEM)
    question = estimate_block("Where is order 42?")
    await agent.send("sync", request)
    await other.send("sync", request)
    cache_emulator.set_knobs(miss_rate=1.0, scope=KEY)
    assert await agent.send("async", request) == (question, 0, S, 0)
    assert await agent.send("stream", request) == (question, 0, S, 0)
    assert await other.send("sync", request) == (question, S, 0, 0)
    patterns = []
    for _ in range(2):
        cache_emulator.set_knobs(miss_rate=0.5, seed=3, scope=KEY)  # reseeds the scope's misses
        patterns.append([(await agent.send("sync", request))[1] == 0 for _ in range(20)])
    assert patterns[0] == patterns[1] and 2 < patterns[0].count(True) < 18


async def test_latency_knobs_through_the_sdk(cache_emulator: CacheEmulator, agents: AgentFactory) -> None:
    """``latency_ms`` delays the end of each response and ``ttft_ms`` its first byte: a call
    takes at least their sum; in a stream the first event comes before the latency."""
    agent = agents()
    request = system_only(SYSTEM)
    cache_emulator.set_knobs(latency_ms=300)
    started = time.perf_counter()
    await agent.send("sync", request)
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    with agent.sync.messages.stream(**request) as stream:
        first = next(iter(stream))
        first_at = time.perf_counter() - started
        stream.get_final_message()
    assert first.type == "message_start" and first_at < 0.3 <= time.perf_counter() - started
    cache_emulator.set_knobs(latency_ms=0, ttft_ms=200)
    started = time.perf_counter()
    await agent.send("async", request)
    assert time.perf_counter() - started >= 0.2


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"tools": ["lookup_order"]}, "tools.0: Input should be a valid dictionary"),
        ({"tools": [TOOLS[0], 7]}, "tools.1: Input should be a valid dictionary"),
        (
            {"messages": [{"role": "user", "content": []}]},
            "messages.0: all messages must have non-empty content",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": []},
                    {"role": "user", "content": "x"},
                ]
            },
            "messages.1: all messages must have non-empty content",
        ),
    ],
)
def test_non_object_tools_and_empty_contents_are_bad_requests(
    agents: AgentFactory, change: dict[str, Any], needle: str
) -> None:
    """A tools entry that is not an object, or a message with an empty content list (other
    than a final assistant prefill), is a 400 ``invalid_request_error``: the SDK's
    ``BadRequestError``."""
    with pytest.raises(anthropic.BadRequestError) as info:
        agents().sync.messages.create(**{**system_only(SYSTEM), **change})
    assert needle in info.value.body["error"]["message"]  # type: ignore[index]


async def test_empty_final_assistant_prefill_is_accepted(agents: AgentFactory) -> None:
    """An empty final assistant message (a prefill) is still a valid request."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]
    message = agents().sync.messages.create(**{**system_only(SYSTEM), "messages": messages})
    assert message.content
