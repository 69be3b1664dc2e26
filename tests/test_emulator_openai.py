"""The emulator's OpenAI Chat Completions and Responses APIs through the real ``openai`` SDK.

The SDK runs against the ``cache_emulator`` fixture's server on loopback. Every client is
instrumented by a ``CacheTracker`` on the emulator's own clock, and the tracked
``CallMetrics`` must equal the usage the SDK returned. Prompt sizes are the emulator's own
token estimate (``cachebench.tokens`` through the shared wire layer); the caching rules are
asserted here by hand: implicit reads from 1024 tokens in 128-token steps before GPT-5.6,
exact reads and reported writes from GPT-5.6 on.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.emulator._wire import segments
from cachebench.providers import openai as adapter
from cachebench.testing import CacheEmulator

OLD = "gpt-4.1"  # implicit caching, writes not reported
NEW = "gpt-5.6"  # explicit breakpoints, writes reported
KEY = "sk-emulator-tests"
MODES = ("sync", "async", "stream", "async_stream")
STEP = adapter.READ_STEP_IMPLICIT
MINIMUM = adapter.DEFAULT_MIN_CACHEABLE


def policy(lines: int, topic: str = "refunds") -> str:
    return "".join(f"Policy {topic} line {i}: answer from the handbook only. " for i in range(lines))


def chat(system: str, question: str = "Where is order 42?", model: str = OLD, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        **extra,
    }


def total(body: dict[str, Any]) -> int:
    """Prompt tokens as the emulator counts them (every block of the prompt)."""
    return sum(s.tokens for s in segments(adapter.parse_request(body)))


def stepped(tokens: int) -> int:
    """An implicit read of a ``tokens``-long cached prefix: 0 below 1024, then 128-token steps."""
    return 0 if tokens < MINIMUM else MINIMUM + (tokens - MINIMUM) // STEP * STEP


@functools.cache
def sized(target: int, below: bool = False) -> str:
    """A system prompt whose chat request is the first size >= ``target`` tokens (or the last
    one below it)."""
    lines = 1
    while total(chat(policy(lines + 1))) < target:
        lines += 1
    return policy(lines if below else lines + 1)


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
    n = total(body)
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
    n = total(body)
    client = clients()
    assert await client.respond(mode, body) == (n, 0, None)
    assert await client.respond(mode, body) == (n, stepped(n), None)


async def test_prompt_just_below_1024_tokens_reads_nothing(clients: ClientFactory) -> None:
    """Below the 1024-token minimum nothing is cached: a repeat reads 0; at 1024 it reads 1024."""
    below = chat(sized(MINIMUM, below=True))
    assert MINIMUM - 40 < total(below) < MINIMUM
    client = clients()
    await client.chat("sync", below)
    assert await client.chat("sync", below) == (total(below), 0, None)
    at = chat(sized(MINIMUM))
    assert MINIMUM <= total(at) < MINIMUM + STEP
    await client.chat("sync", at)
    assert await client.chat("sync", at) == (total(at), MINIMUM, None)


async def test_a_new_question_reads_the_shared_prefix(clients: ClientFactory) -> None:
    """A different last message still reads the cached system prompt, rounded down."""
    system = sized(3000)
    client = clients()
    await client.chat("sync", chat(system, "first question"))
    prompt, read, _ = await client.chat("sync", chat(system, "a second, different question"))
    prefix = total(chat(system, "first question")) - total({"model": OLD, "input": "first question"})
    assert read == stepped(prefix) > 0
    assert prompt - read < STEP + total({"model": OLD, "input": "a second, different question"})


async def test_prompt_cache_key_separates_caches(clients: ClientFactory) -> None:
    """The same prompt under another ``prompt_cache_key`` (or without one) is a cold miss;
    each key keeps its own entry."""
    system = sized(2000)
    client = clients()
    a, b = chat(system, prompt_cache_key="tenant-a"), chat(system, prompt_cache_key="tenant-b")
    await client.chat("sync", a)
    assert (await client.chat("sync", b))[1] == 0
    assert (await client.chat("sync", chat(system)))[1] == 0
    assert (await client.chat("sync", a))[1] == stepped(total(a))
    assert (await client.chat("sync", b))[1] == stepped(total(b))


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
    hit = stepped(total(body))
    await client.chat("sync", body)
    for _ in range(6):
        cache_emulator.advance(540)
        assert (await client.chat("sync", body))[1] == hit
    cache_emulator.advance(540)  # 63 minutes after the write: past the 1 h lifetime
    assert (await client.chat("sync", body))[1] == 0
    cache_emulator.advance(660)
    assert (await client.chat("sync", body))[1] == 0
    long = chat(sized(2000), prompt_cache_retention="24h", prompt_cache_key="long")
    await client.chat("sync", long)
    cache_emulator.advance(660)
    assert (await client.chat("sync", long))[1] == stepped(total(long))


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
    assert chunks[-1]["usage"]["prompt_tokens"] == total(body)
    assert all(c["usage"] is None and c["object"] == "chat.completion.chunk" for c in chunks[:-1])


# -- GPT-5.6+: explicit breakpoints, reported writes ----------------------------------------------


def marked(system: str, context: str, question: str, **extra: Any) -> dict[str, Any]:
    """A GPT-5.6 request: a 12h breakpoint after the system prompt, the user's context as a
    second part (the implicit breakpoint, 30m, falls before the newest user turn)."""
    parts = [
        {"type": "text", "text": system, "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"}},
        {"type": "text", "text": context},
    ]
    return {
        "model": NEW,
        "messages": [
            {"role": "system", "content": parts},
            {"role": "assistant", "content": "How can I help?"},
            {"role": "user", "content": question},
        ],
        **extra,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_gpt_5_6_reports_writes_and_reads_exact_prefixes(clients: ClientFactory, mode: str) -> None:
    """GPT-5.6: the first call writes through the implicit breakpoint and reports it; the next
    reads that prefix exactly (no 128-token rounding); another user's context reads the 12h
    system breakpoint and writes only the rest."""
    system, client = sized(1500), clients()
    first = marked(system, "Customer ann, plan Pro.", "Where is order 42?")
    n = total(first)
    question = total({"model": NEW, "input": "Where is order 42?"})
    prefix = n - question
    assert await client.chat(mode, first) == (n, 0, prefix)
    assert await client.chat(mode, first) == (n, prefix, 0)
    other = marked(system, "Customer bob, plan Free, two open tickets.", "Where is order 42?")
    through_system = segments(adapter.parse_request(other))[0].tokens
    assert await client.chat(mode, other) == (
        total(other),
        through_system,
        total(other) - question - through_system,
    )


async def test_gpt_5_6_responses_split_writes_by_ttl(clients: ClientFactory) -> None:
    """Responses report ``cache_write_tokens_details``: the 12h breakpoint's range and the
    implicit (30m) breakpoint's range."""
    client = clients()
    body = responses(marked(sized(1500), "Customer ann, plan Pro. " * 20, "Where is order 42?"))
    response = client.sync.responses.create(**body)
    details = response.usage.input_tokens_details if response.usage else None
    assert details is not None and details.cache_write_tokens_details is not None
    split = details.cache_write_tokens_details
    assert split.ttl_12h_tokens > 0 and split.ttl_30m_tokens > 0
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
    assert await client.chat("sync", plain) == (total(plain), 0, 0)
    assert await client.chat("sync", plain) == (total(plain), 0, 0)
    body = marked(
        sized(1500), "Customer ann, plan Pro. " * 20, "q", prompt_cache_options={"mode": "explicit"}
    )
    body["messages"][0]["content"][1]["prompt_cache_breakpoint"] = {"mode": "explicit", "ttl": "30m"}
    system, context = (s.tokens for s in segments(adapter.parse_request(body))[:2])
    n = total(body)
    assert await client.chat("sync", body) == (n, 0, system + context)
    assert await client.chat("sync", body) == (n, system + context, 0)
    cache_emulator.advance(31 * 60)
    assert await client.chat("sync", body) == (n, system, context)


# -- errors -------------------------------------------------------------------------------------


def test_malformed_and_incomplete_requests_get_400_error_json(cache_emulator: CacheEmulator) -> None:
    """Malformed JSON, a missing model and missing messages are 400s in OpenAI's error shape."""
    url = cache_emulator.openai_base_url
    with httpx2.Client(headers={"authorization": f"Bearer {KEY}"}) as http:
        bad = http.post(f"{url}/chat/completions", content=b'{"model": ')
        no_model = http.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        no_messages = http.post(f"{url}/chat/completions", json={"model": OLD})
        no_input = http.post(f"{url}/responses", json={"model": OLD})
    for r in (bad, no_model, no_messages, no_input):
        assert r.status_code == 400
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    assert no_model.json()["error"]["message"] == "you must provide a model parameter"
    assert no_messages.json()["error"]["param"] == "messages"
    assert no_input.json()["error"]["code"] == "missing_required_parameter"


async def test_invalid_cache_fields_raise_the_sdks_bad_request_error(clients: ClientFactory) -> None:
    """Bad ``prompt_cache_retention``, ``prompt_cache_options.ttl`` or marker TTLs, and an empty
    ``messages``, raise ``openai.BadRequestError`` naming the parameter."""
    client = clients()
    part = {"type": "text", "text": "q", "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "5m"}}
    bad = [
        chat("x", prompt_cache_retention="forever"),
        chat("x", model=NEW, prompt_cache_options={"ttl": "1h"}),
        {"model": NEW, "messages": [{"role": "user", "content": [part]}]},
        {"model": OLD, "messages": []},
    ]
    params = []
    for body in bad:
        with pytest.raises(openai.BadRequestError) as info:
            client.sync.chat.completions.create(**body)
        params.append(info.value.param)
    assert params == [
        "prompt_cache_retention",
        "prompt_cache_options.ttl",
        "messages[0].content[0].prompt_cache_breakpoint.ttl",
        "messages",
    ]


@pytest.mark.parametrize(
    ("knob", "status", "error"),
    [
        (429, 429, openai.RateLimitError),
        (500, 500, openai.InternalServerError),
        (529, 503, openai.InternalServerError),
    ],
)
async def test_injected_errors_raise_the_sdks_error_and_write_nothing(
    cache_emulator: CacheEmulator, clients: ClientFactory, knob: int, status: int, error: type[Exception]
) -> None:
    """An injected error is the SDK's own exception with OpenAI's status (an overload is a
    503); the failed call writes nothing, so the next one is still cold."""
    client = clients()
    body = chat(sized(1500))
    cache_emulator.set_knobs(error_rate=1.0, error_status=knob)
    with pytest.raises(error) as info:
        client.sync.chat.completions.create(**body)
    assert getattr(info.value, "status_code", None) == status
    with pytest.raises(error):
        await client.aio.responses.create(**responses(body))
    assert client.tracker.calls()[-1].error is not None
    cache_emulator.set_knobs(error_rate=0.0)
    assert (await client.chat("sync", body))[1] == 0
    assert (await client.chat("sync", body))[1] == stepped(total(body))


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


async def test_parallel_cold_calls_all_miss(cache_emulator: CacheEmulator, clients: ClientFactory) -> None:
    """With a time-to-first-token knob, 6 parallel cold calls of one prompt all read nothing (an
    entry is readable only once its response has started); the next call reads it."""
    client = clients()
    body = chat(sized(2000))
    cache_emulator.set_knobs(ttft_ms=200)
    results = await asyncio.gather(*(client.chat("async", body) for _ in range(6)))
    assert results == [(total(body), 0, None)] * 6
    assert await client.chat("async", body) == (total(body), stepped(total(body)), None)
