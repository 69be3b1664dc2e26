"""The emulator's OpenAI Chat Completions and Responses APIs through the real ``openai`` SDK.

The SDK runs against the ``cache_emulator`` fixture's server on loopback. Every client is
instrumented by a ``CacheTracker`` on the emulator's own clock, and the tracked
``CallMetrics`` must equal the usage the SDK returned. Expected token counts are computed here
from the raw strings with ``cachebench.tokens.estimate_text`` (a text part or string content is
its text's tokens; roles add nothing), never through the emulator's parser; the caching rules
are written out by hand: implicit reads from 1024 tokens in 128-token steps before GPT-5.6,
exact reads and reported writes from GPT-5.6 on. The four-layer table, multi-turn growth,
parallel cold calls, the stream helpers and the breakpoint cap are in
``test_emulator_openai_scenarios.py``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_text

OLD = "gpt-4.1"  # implicit caching, writes not reported
NEW = "gpt-5.6"  # explicit breakpoints, writes reported
KEY = "sk-emulator-tests"
MODES = ("sync", "async", "stream", "async_stream")
STEP = 128  # before GPT-5.6, hits come in 128-token steps
MINIMUM = 1024  # automatic caching from 1024 prompt tokens
QUESTION = "Where is order 42?"


def policy(lines: int, topic: str = "refunds") -> str:
    return "".join(f"Policy {topic} line {i}: answer from the handbook only. " for i in range(lines))


def chat(system: str, question: str = QUESTION, model: str = OLD, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    }


def tokens(*texts: str) -> int:
    """Prompt tokens of these text blocks, from the raw strings."""
    return sum(estimate_text(t) for t in texts)


def stepped(tokens: int) -> int:
    """An implicit read of a ``tokens``-long cached prefix: 0 below 1024, then 128-token steps."""
    return 0 if tokens < MINIMUM else MINIMUM + (tokens - MINIMUM) // STEP * STEP


@functools.cache
def sized(target: int, below: bool = False, topic: str = "refunds") -> str:
    """A system prompt that, with :data:`QUESTION`, is the first prompt of at least ``target``
    tokens (or the last one below it)."""
    lines = 1
    while tokens(policy(lines + 1, topic), QUESTION) < target:
        lines += 1
    return policy(lines if below else lines + 1, topic)


def counts(usage: Any) -> tuple[int, int, int | None]:
    """(inclusive prompt tokens, cached, written or None) of a Chat or Responses usage."""
    if hasattr(usage, "prompt_tokens"):
        d = usage.prompt_tokens_details
        return usage.prompt_tokens, d.cached_tokens, d.cache_write_tokens
    d = usage.input_tokens_details
    return usage.input_tokens, d.cached_tokens, d.cache_write_tokens


def agrees(m: CallMetrics, usage: Any) -> None:
    prompt, read, write = counts(usage)
    assert m.usage_known
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens) == (
        prompt - read - (write or 0),
        read,
        write or 0,
    )
    assert m.writes_reported == (write is not None)
    out = usage.completion_tokens if hasattr(usage, "completion_tokens") else usage.output_tokens
    assert m.output_tokens == out > 0


class Client:
    """Sync and async SDK clients of one API key, instrumented by one tracker."""

    def __init__(self, emu: CacheEmulator, key: str = KEY) -> None:
        self.tracker = CacheTracker(clock=emu.clock)
        self.sync = openai.OpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0)
        self.aio = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=key, max_retries=0)
        self.tracker.instrument(self.sync)
        self.tracker.instrument(self.aio)

    async def chat(self, mode: str, body: dict[str, Any]) -> tuple[int, int, int | None]:
        """One Chat call in ``mode`` (streams ask for usage); checks the tracker agrees."""
        if mode == "sync":
            usage = self.sync.chat.completions.create(**body).usage
        elif mode == "async":
            usage = (await self.aio.chat.completions.create(**body)).usage
        elif mode == "stream":
            chunks = list(
                self.sync.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
            )
            assert chunks[-1].choices == []
            assert all(c.usage is None for c in chunks[:-1])
            usage = chunks[-1].usage
        else:
            stream = await self.aio.chat.completions.create(
                **body, stream=True, stream_options={"include_usage": True}
            )
            usage = [c async for c in stream][-1].usage
        assert usage is not None
        agrees(self.tracker.calls()[-1], usage)
        assert self.tracker.calls()[-1].stream == mode.endswith("stream")
        return counts(usage)

    async def respond(self, mode: str, body: dict[str, Any]) -> tuple[int, int, int | None]:
        """One Responses call in ``mode``; checks the tracker agrees."""
        if mode == "sync":
            response = self.sync.responses.create(**body)
        elif mode == "async":
            response = await self.aio.responses.create(**body)
        elif mode == "stream":
            with self.sync.responses.stream(**body) as stream:
                response = stream.get_final_response()
        else:
            events = [e async for e in await self.aio.responses.create(**body, stream=True)]
            assert [e.sequence_number for e in events] == list(range(len(events)))
            assert events[0].type == "response.created"
            assert events[-1].type == "response.completed"
            response = events[-1].response
        assert response.output_text.startswith("Noted")
        assert response.usage is not None
        agrees(self.tracker.calls()[-1], response.usage)
        return counts(response.usage)


ClientFactory = Callable[..., Client]


@pytest.fixture
async def clients(cache_emulator: CacheEmulator) -> AsyncIterator[ClientFactory]:
    """``clients(key=KEY)`` builds a :class:`Client`; closed after the test."""
    made: list[Client] = []

    def make(key: str = KEY) -> Client:
        made.append(Client(cache_emulator, key))
        return made[-1]

    yield make
    for c in made:
        c.sync.close()
        await c.aio.close()


def responses(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat body as a Responses body: the messages as input items, text parts as
    ``input_text``."""

    def item(message: dict[str, Any]) -> dict[str, Any]:
        content = message["content"]
        if isinstance(content, list):
            content = [{**part, "type": "input_text"} for part in content]
        return {**message, "content": content}

    out = {k: v for k, v in body.items() if k != "messages"}
    return {**out, "input": [item(m) for m in body["messages"]]}


# -- implicit caching (before GPT-5.6) ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_repeated_prompt_reads_in_128_token_steps(clients: ClientFactory, mode: str) -> None:
    """A ~1,500-token prompt reads nothing cold, then its length rounded down to 1024 + 128k;
    writes are not reported (``cache_write_tokens`` absent)."""
    body = chat(sized(1500))
    n = tokens(sized(1500), QUESTION)
    assert 1500 <= n < 1600
    client = clients()
    assert await client.chat(mode, body) == (n, 0, None)
    assert await client.chat(mode, body) == (n, stepped(n), None)
    assert stepped(n) == 1408


@pytest.mark.parametrize("mode", MODES)
async def test_responses_api_reads_the_same_cache(clients: ClientFactory, mode: str) -> None:
    """The Responses API reports ``input_tokens_details.cached_tokens`` with the same rules;
    no write count before GPT-5.6."""
    body = responses(chat(sized(2000)))
    n = tokens(sized(2000), QUESTION)
    client = clients()
    assert await client.respond(mode, body) == (n, 0, None)
    assert await client.respond(mode, body) == (n, stepped(n), None)


async def test_prompt_just_below_1024_tokens_reads_nothing(clients: ClientFactory) -> None:
    """Below the 1024-token minimum nothing is cached: a repeat reads 0; at 1024 it reads 1024."""
    below, at = tokens(sized(MINIMUM, below=True), QUESTION), tokens(sized(MINIMUM), QUESTION)
    assert MINIMUM - 40 < below < MINIMUM <= at < MINIMUM + STEP
    client = clients()
    await client.chat("sync", chat(sized(MINIMUM, below=True)))
    assert await client.chat("sync", chat(sized(MINIMUM, below=True))) == (below, 0, None)
    await client.chat("sync", chat(sized(MINIMUM)))
    assert await client.chat("sync", chat(sized(MINIMUM))) == (at, MINIMUM, None)


async def test_a_new_question_reads_the_shared_prefix(clients: ClientFactory) -> None:
    """A different last message still reads the cached system prompt, rounded down."""
    system = sized(3000)
    client = clients()
    await client.chat("sync", chat(system, "first question"))
    second = "a second, different question"
    assert await client.chat("sync", chat(system, second)) == (
        tokens(system, second),
        stepped(tokens(system)),
        None,
    )
    assert stepped(tokens(system)) > 0


async def test_prompt_cache_key_separates_caches(clients: ClientFactory) -> None:
    """The same prompt under another ``prompt_cache_key`` (or without one) is a cold miss;
    each key keeps its own entry."""
    system = sized(2000)
    client = clients()
    a, b = chat(system, prompt_cache_key="tenant-a"), chat(system, prompt_cache_key="tenant-b")
    await client.chat("sync", a)
    assert (await client.chat("sync", b))[1] == 0
    assert (await client.chat("sync", chat(system)))[1] == 0
    hit_a, hit_b = (await client.chat("sync", a))[1], (await client.chat("sync", b))[1]
    assert hit_a == hit_b == stepped(tokens(system, QUESTION)) > 0


async def test_routing_fields_add_no_prompt_tokens(clients: ClientFactory) -> None:
    """``prompt_cache_key`` and ``service_tier`` only route the request: they are not rendered
    into the prompt, so ``prompt_tokens`` is the messages' tokens with or without them."""
    client = clients()
    plain = chat(sized(1200))
    n = tokens(sized(1200), QUESTION)
    assert (await client.chat("sync", plain))[0] == n
    assert (await client.chat("sync", {**plain, "prompt_cache_key": "tenant-" + "a" * 40}))[0] == n
    assert (await client.chat("sync", {**plain, "service_tier": "default"}))[0] == n


async def test_caches_are_scoped_by_api_key(clients: ClientFactory) -> None:
    """Another API key never reads this key's entries."""
    body = chat(sized(2000))
    await clients().chat("sync", body)
    assert (await clients("sk-other-team").chat("sync", body))[1] == 0


async def test_in_memory_retention_expires_after_10_idle_minutes(
    cache_emulator: CacheEmulator, clients: ClientFactory
) -> None:
    """``in_memory`` entries survive 9 idle minutes (each read refreshes them) but not 11, and
    never live past an hour; ``24h`` ones survive both."""
    client = clients()
    body = chat(sized(2000), prompt_cache_retention="in_memory")
    hit = stepped(tokens(sized(2000), QUESTION))
    await client.chat("sync", body)
    for _ in range(6):
        cache_emulator.advance(540)
        assert (await client.chat("sync", body))[1] == hit
    cache_emulator.advance(540)  # 63 minutes after the write: past the 1 h lifetime
    assert (await client.chat("sync", body))[1] == 0
    cache_emulator.advance(660)
    assert (await client.chat("sync", body))[1] == 0
    long = chat(sized(2000, topic="returns"), prompt_cache_retention="24h")
    await client.chat("sync", long)
    cache_emulator.advance(660)
    assert (await client.chat("sync", long))[1] == stepped(tokens(sized(2000, topic="returns"), QUESTION))


async def test_stream_without_include_usage_has_no_usage(clients: ClientFactory) -> None:
    """A stream without ``stream_options.include_usage`` carries no usage in any chunk; the
    tracker records the usage as unknown, not zero."""
    client = clients()
    chunks = list(client.sync.chat.completions.create(**chat(sized(1200)), stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("Noted")
    m = client.tracker.calls()[-1]
    assert (m.usage_known, m.stream) == (False, True)


def test_stream_wire_ends_with_done_and_a_usage_chunk(cache_emulator: CacheEmulator) -> None:
    """On the wire: ``data:`` chunks, the usage chunk with ``choices: []`` last, then
    ``data: [DONE]``; chunks before it carry ``usage: null``."""
    body = {**chat(sized(1200)), "stream": True, "stream_options": {"include_usage": True}}
    raw = httpx2.post(
        f"{cache_emulator.openai_base_url}/chat/completions",
        content=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in raw.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == tokens(sized(1200), QUESTION)
    assert all(c["usage"] is None and c["object"] == "chat.completion.chunk" for c in chunks[:-1])


# -- GPT-5.6+: explicit breakpoints, reported writes ----------------------------------------------


GREETING = "How can I help?"


def marked(system: str, context: str, question: str, **extra: Any) -> dict[str, Any]:
    """A GPT-5.6 request: a 12h breakpoint after the system prompt, the user's context as a
    second part, then a greeting and the question (the implicit breakpoint, 30m, ends with the
    question)."""
    parts = [
        {"type": "text", "text": system, "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"}},
        {"type": "text", "text": context},
    ]
    return {
        "model": NEW,
        "messages": [
            {"role": "system", "content": parts},
            {"role": "assistant", "content": GREETING},
            {"role": "user", "content": question},
        ],
        **extra,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_gpt_5_6_reports_writes_and_reads_exact_prefixes(clients: ClientFactory, mode: str) -> None:
    """GPT-5.6: the first call writes through the implicit breakpoint (the question) and
    reports it; the repeat reads all of it exactly (no 128-token rounding); another user's
    context reads the 12h system breakpoint and writes only the rest."""
    system, client = sized(1500), clients()
    ann, bob = "Customer ann, plan Pro.", "Customer bob, plan Free, two open tickets."
    n = tokens(system, ann, GREETING, QUESTION)
    assert await client.chat(mode, marked(system, ann, QUESTION)) == (n, 0, n)
    assert await client.chat(mode, marked(system, ann, QUESTION)) == (n, n, 0)
    assert await client.chat(mode, marked(system, bob, QUESTION)) == (
        tokens(system, bob, GREETING, QUESTION),
        tokens(system),
        tokens(bob, GREETING, QUESTION),
    )


async def test_gpt_5_6_responses_split_writes_by_ttl(clients: ClientFactory) -> None:
    """Responses report ``cache_write_tokens_details``: the 12h breakpoint's range and the
    implicit (30m) breakpoint's range."""
    client = clients()
    context = "Customer ann, plan Pro. " * 20
    body = responses(marked(sized(1500), context, QUESTION))
    response = client.sync.responses.create(**body)
    details = response.usage.input_tokens_details if response.usage else None
    assert details is not None and details.cache_write_tokens_details is not None
    split = details.cache_write_tokens_details
    assert (split.ttl_12h_tokens, split.ttl_30m_tokens) == (
        tokens(sized(1500)),
        tokens(context, GREETING, QUESTION),
    )
    assert split.ttl_12h_tokens + split.ttl_30m_tokens == details.cache_write_tokens
    assert response.prompt_cache_options is not None and response.prompt_cache_options.ttl == "30m"
    agrees(client.tracker.calls()[-1], response.usage)


async def test_gpt_5_6_explicit_mode_caches_only_marked_prefixes(
    cache_emulator: CacheEmulator, clients: ClientFactory
) -> None:
    """``prompt_cache_options.mode="explicit"`` drops the implicit breakpoint: without markers
    nothing is written or read; after 31 idle minutes a 30m breakpoint is gone and a 12h one
    still reads."""
    client = clients()
    plain = chat(sized(1500), model=NEW, prompt_cache_options={"mode": "explicit"})
    assert await client.chat("sync", plain) == (tokens(sized(1500), QUESTION), 0, 0)
    assert await client.chat("sync", plain) == (tokens(sized(1500), QUESTION), 0, 0)
    text = "Customer ann, plan Pro. " * 20
    body = marked(sized(1500), text, "q", prompt_cache_options={"mode": "explicit"})
    body["messages"][0]["content"][1]["prompt_cache_breakpoint"] = {"mode": "explicit", "ttl": "30m"}
    system, context = tokens(sized(1500)), tokens(text)
    n = tokens(sized(1500), text, GREETING, "q")
    assert await client.chat("sync", body) == (n, 0, system + context)
    assert await client.chat("sync", body) == (n, system + context, 0)
    cache_emulator.advance(31 * 60)
    assert await client.chat("sync", body) == (n, system, context)


async def test_max_tokens_cuts_the_reply(clients: ClientFactory) -> None:
    """``max_completion_tokens`` / ``max_output_tokens`` cut the text: finish_reason ``length``,
    Responses status ``incomplete``."""
    client = clients()
    completion = client.sync.chat.completions.create(**chat("x"), max_completion_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens <= 3
    response = client.sync.responses.create(**responses(chat("x")), max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
