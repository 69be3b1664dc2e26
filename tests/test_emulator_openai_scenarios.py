"""OpenAI scenarios through the real ``openai`` SDK on the emulator: the four-layer table,
multi-turn growth, parallel cold calls, every stream entry point and the breakpoint cap.

Clients and helpers come from ``test_emulator_openai``: every call goes through a
``CacheTracker`` on the emulator's clock and the tracked ``CallMetrics`` must equal the SDK's
usage. Expected counts are computed from the raw strings (``estimate_text``) and the raw tool
schemas (``estimate_json``); the caching rules are written out by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_json

from . import test_emulator_openai as base
from .scenario import SYSTEM, context, turns
from .test_emulator_openai import MODES, NEW, OLD, QUESTION, Client, ClientFactory, sized, stepped, tokens

APIS = ("chat", "responses")
MARKER = {"mode": "explicit"}  # a prompt_cache_breakpoint with the request's ttl (30m)


clients = base.clients


async def send(client: Client, api: str, mode: str, body: dict[str, Any]) -> tuple[int, int, int | None]:
    """One call of ``api`` in ``mode``; the client checks the tracker agrees with the SDK."""
    if api == "chat":
        return await client.chat(mode, body)
    return await client.respond(mode, body)


def text_part(api: str, text: str, marked: bool) -> dict[str, Any]:
    part = {"type": "text" if api == "chat" else "input_text", "text": text}
    return {**part, "prompt_cache_breakpoint": MARKER} if marked else part


def body_of(api: str, model: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A Chat (``messages``) or Responses (``input``) body; Responses items take the same shape."""
    return {"model": model, "messages" if api == "chat" else "input": messages, **extra}


# -- the four-layer table -----------------------------------------------------------------------

# Tools, system prompt, the user's context, the conversation: a support agent's prompt.
TOOL_NAMES = ("order", "invoice", "shipment")
PARAMETERS = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}


def tools(api: str) -> list[dict[str, Any]]:
    """Chat nests the function under ``function``; Responses tools are flat."""
    out = []
    for name in TOOL_NAMES:
        fn = {
            "name": f"lookup_{name}",
            "description": f"Look up a {name} in the ACME back office. " * 40,
            "parameters": PARAMETERS,
        }
        out.append({"type": "function", "function": fn} if api == "chat" else {"type": "function", **fn})
    return out


def history(api: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Earlier turns, each question in the same one-part shape it was sent in (without its
    breakpoint), so the prefix the previous turn cached is unchanged."""
    out: list[dict[str, Any]] = []
    for question, answer in pairs:
        out += [
            {"role": "user", "content": [text_part(api, question, False)]},
            {"role": "assistant", "content": answer},
        ]
    return out


def four_layers(api: str, model: str, user: str, turn: int) -> dict[str, Any]:
    """Turn ``turn`` (1-based) of ``user``. On GPT-5.6 (``prompt_cache_options.mode``
    ``explicit``) breakpoints mark the system prompt (tools and system), the user's context and
    the newest question; the older model caches the whole prompt implicitly, unmarked."""
    marked = model == NEW
    pairs = turns(user, turn)
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": [text_part(api, SYSTEM, marked), text_part(api, context(user), marked)],
        }
    ]
    messages += history(api, pairs[:-1])
    messages.append({"role": "user", "content": [text_part(api, pairs[-1][0], marked)]})
    extra: dict[str, Any] = {"prompt_cache_options": {"mode": "explicit"}} if marked else {}
    return body_of(api, model, messages, tools=tools(api), **extra)


def T(api: str) -> int:
    return sum(estimate_json(tool) for tool in tools(api))


def M(user: str, turn: int) -> int:
    """Tokens of ``user``'s conversation through question ``turn``."""
    pairs = turns(user, turn)
    return sum(tokens(q, a) for q, a in pairs[:-1]) + tokens(pairs[-1][0])


def prompt(api: str, user: str, turn: int) -> int:
    """Every token of ``user``'s turn ``turn``: tools, system, context, the conversation."""
    return T(api) + tokens(SYSTEM, context(user)) + M(user, turn)


# (user, turn, idle before the call): a new user, their next turn, another user, the same turn
# again once every entry has been idle past its TTL.
TABLE = (("ann", 1, False), ("ann", 2, False), ("bob", 1, False), ("ann", 2, True))
IDLE = {NEW: 30 * 60 + 1, OLD: 10 * 60 + 1}  # GPT-5.6 30m breakpoints; in_memory retention


def expected(api: str, model: str) -> list[tuple[int, int, int | None]]:
    a1, a2, b1 = prompt(api, "ann", 1), prompt(api, "ann", 2), prompt(api, "bob", 1)
    shared = T(api) + tokens(SYSTEM)
    if model == NEW:  # exact reads, reported writes
        return [(a1, 0, a1), (a2, a1, a2 - a1), (b1, shared, b1 - shared), (a2, 0, a2)]
    return [(a1, 0, None), (a2, stepped(a1), None), (b1, stepped(shared), None), (a2, 0, None)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", [NEW, OLD])
@pytest.mark.parametrize("api", APIS)
async def test_four_layer_scenario(
    cache_emulator: CacheEmulator, clients: ClientFactory, api: str, model: str, mode: str
) -> None:
    """A new user's first message writes all four layers; their second reads them; another
    user reads tools and system and writes their own context; after the idle TTL on the shared
    clock nothing is read. GPT-5.6 reports the writes and reads exactly; gpt-4.1 reports no
    writes and reads in 128-token steps."""
    client = clients()
    got = []
    for user, turn, idle in TABLE:
        if idle:
            cache_emulator.advance(IDLE[model])
        got.append(await send(client, api, mode, four_layers(api, model, user, turn)))
    assert got == expected(api, model)
    assert len(client.tracker.calls()) == len(TABLE)
    assert {m.writes_reported for m in client.tracker.calls()} == {model == NEW}


def test_four_layer_figures() -> None:
    """The table's sizes: the tools alone pass the 1024-token minimum, so gpt-4.1's steps
    apply from the first layer on."""
    assert (T("chat"), T("responses"), tokens(SYSTEM), tokens(context("ann"))) == (1868, 1854, 1260, 350)
    assert (M("ann", 1), M("ann", 2), M("bob", 1)) == (9, 24, 9)


# -- multi-turn growth ----------------------------------------------------------------------------

GROWTH_TURNS = 4
# gpt-4.1 implicit; GPT-5.6 with its implicit breakpoint only (before the newest question);
# GPT-5.6 with an explicit breakpoint on the newest question as well.
VARIANTS = ("implicit", "gpt-5.6", "gpt-5.6-marked")


def conversation(api: str, variant: str, turn: int) -> dict[str, Any]:
    pairs = turns("ann", turn)
    messages: list[dict[str, Any]] = [{"role": "system", "content": sized(1200)}]
    messages += history(api, pairs[:-1])
    messages.append({"role": "user", "content": [text_part(api, pairs[-1][0], variant == "gpt-5.6-marked")]})
    return body_of(api, OLD if variant == "implicit" else NEW, messages)


def growth(variant: str, turn: int) -> tuple[int, int, int | None]:
    """(prompt, read, written) of turn ``turn``: what the previous turn cached is read."""
    pairs = turns("ann", turn)
    q = [tokens(question) for question, _ in pairs]
    a = [tokens(answer) for _, answer in pairs]
    n = tokens(sized(1200)) + sum(q) + sum(a[:-1])
    before = n - q[-1] - a[-2] if turn > 1 else 0  # the previous turn's whole prompt
    if variant == "implicit":
        return n, stepped(before), None
    # GPT-5.6, marked or not: the implicit breakpoint ends with the newest question, so the
    # previous turn wrote through its question, and this one reads all of it.
    return (n, 0, n) if turn == 1 else (n, before, a[-2] + q[-1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("api", APIS)
async def test_multi_turn_growth_reads_the_previous_turn(
    clients: ClientFactory, api: str, variant: str, mode: str
) -> None:
    """Each turn reads what the previous turn cached: gpt-4.1 its whole prompt (128-token
    steps); GPT-5.6, whose implicit breakpoint ends with the newest question (with or without
    a marker there), its whole prompt exactly."""
    client = clients()
    got = [await send(client, api, mode, conversation(api, variant, t)) for t in range(1, GROWTH_TURNS + 1)]
    assert got == [growth(variant, t) for t in range(1, GROWTH_TURNS + 1)]
    assert all(read > 0 for _, read, _ in got[1:])


# -- parallel cold calls --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "async_stream"])
@pytest.mark.parametrize("model", [NEW, OLD])
@pytest.mark.parametrize("api", APIS)
async def test_eight_parallel_cold_calls_all_write(
    cache_emulator: CacheEmulator, clients: ClientFactory, api: str, model: str, mode: str
) -> None:
    """With a time-to-first-token knob, 8 parallel cold calls of one prompt all read nothing
    and (GPT-5.6) each reports writing the prompt through the question (where its implicit
    breakpoint ends): an entry is readable only once its response has started. The next call
    reads it."""
    client = clients()
    body = body_of(
        api, model, [{"role": "system", "content": sized(2000)}, {"role": "user", "content": QUESTION}]
    )
    n = tokens(sized(2000), QUESTION)
    cache_emulator.set_knobs(ttft_ms=800)
    results = await asyncio.gather(*(send(client, api, mode, body) for _ in range(8)))
    if model == NEW:
        assert results == [(n, 0, n)] * 8
        assert await send(client, api, mode, body) == (n, n, 0)
    else:
        assert results == [(n, 0, None)] * 8
        assert await send(client, api, mode, body) == (n, stepped(n), None)
    assert len(client.tracker.calls()) == 9


# -- every stream entry point ---------------------------------------------------------------------

INCLUDE_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}


async def streamed(client: Client, entry: str, body: dict[str, Any]) -> Any:
    """The final usage of one streamed call through ``entry``."""
    chat, aio = client.sync.chat.completions, client.aio.chat.completions
    if entry == "chat.create":
        return list(chat.create(**body, stream=True, **INCLUDE_USAGE))[-1].usage
    if entry == "chat.create async":
        return [c async for c in await aio.create(**body, stream=True, **INCLUDE_USAGE)][-1].usage
    if entry == "chat.stream":
        with chat.stream(**body, **INCLUDE_USAGE) as stream:
            return stream.get_final_completion().usage
    if entry == "chat.stream async":
        async with aio.stream(**body, **INCLUDE_USAGE) as astream:
            return (await astream.get_final_completion()).usage
    if entry == "responses.create":
        return list(client.sync.responses.create(**body, stream=True))[-1].response.usage
    if entry == "responses.create async":
        return [e async for e in await client.aio.responses.create(**body, stream=True)][-1].response.usage
    if entry == "responses.stream":
        with client.sync.responses.stream(**body) as rstream:
            return rstream.get_final_response().usage
    async with client.aio.responses.stream(**body) as arstream:
        return (await arstream.get_final_response()).usage


ENTRIES = [f"{api}.{how}{tail}" for api in APIS for how in ("create", "stream") for tail in ("", " async")]


@pytest.mark.parametrize("entry", ENTRIES)
async def test_every_stream_entry_point_is_tracked(clients: ClientFactory, entry: str) -> None:
    """``create(stream=True)``, ``chat.completions.stream()`` and ``responses.stream()``, sync
    and async, all pass through the tracker: a GPT-5.6 prompt writes itself (through the
    implicit breakpoint, which ends with the question) then reads it, and each recorded stream
    call equals the SDK's final usage (Chat asks for usage with
    ``stream_options.include_usage``, which the ``.stream()`` helper does not add)."""
    api = entry.split(".")[0]
    client = clients()
    context = "Customer ann, plan Pro. " * 20
    system = [text_part(api, sized(1500), True), text_part(api, context, False)]
    body = body_of(api, NEW, [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}])
    n = tokens(sized(1500), context, QUESTION)
    got = []
    for _ in range(2):
        usage = await streamed(client, entry, body)
        base.agrees(client.tracker.calls()[-1], usage)
        got.append(base.counts(usage))
    assert got == [(n, 0, n), (n, n, 0)]
    assert [m.stream for m in client.tracker.calls()] == [True, True]


@pytest.mark.parametrize("run", ["sync", "async"])
async def test_chat_stream_helper_without_include_usage_records_unknown(
    clients: ClientFactory, run: str
) -> None:
    """``chat.completions.stream()`` without ``include_usage`` gets no usage from the API: the
    final completion's usage is None and the tracker records the usage as unknown, not zero."""
    client = clients()
    body = base.chat(sized(1200))
    if run == "sync":
        with client.sync.chat.completions.stream(**body) as stream:
            completion = stream.get_final_completion()
    else:
        async with client.aio.chat.completions.stream(**body) as astream:
            completion = await astream.get_final_completion()
    assert completion.usage is None
    assert (completion.choices[0].message.content or "").startswith("Noted")
    m = client.tracker.calls()[-1]
    assert (m.usage_known, m.stream, m.error) == (False, True, None)
