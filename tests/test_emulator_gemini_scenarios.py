"""Gemini scenarios through google-genai on the emulator: the four-layer table, multi-turn
growth and parallel cold calls, sync, async and streamed.

Clients and helpers come from ``test_emulator_gemini``: every call goes through a
``CacheTracker`` on the emulator's clock and the tracked ``CallMetrics`` must equal the SDK's
``usage_metadata``. Gemini caches the whole prompt implicitly (from 2048 tokens on 2.5),
reads exactly, reports no writes and forgets an entry after 5 idle minutes. Expected counts are
computed from the raw strings (``estimate_text``) and the tool's wire JSON (``estimate_json``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.genai import types

from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_json

from . import test_emulator_gemini as base
from .scenario import SYSTEM, context, turns
from .test_emulator_gemini import FLASH, MODES, QUESTION, ClientFactory, request, sized, tokens

clients = base.clients

# -- the four-layer table -----------------------------------------------------------------------

# Tools, system instruction, the user's context, the conversation: a support agent's prompt.
DECLARATIONS = [
    {
        "name": f"lookup_{name}",
        "description": f"Look up a {name} in the ACME back office. " * 40,
        "parameters": {"type": "OBJECT", "properties": {"id": {"type": "STRING"}}, "required": ["id"]},
    }
    for name in ("order", "invoice", "shipment")
]
# The tool as google-genai sends it (camelCase REST JSON): its tokens are this JSON's.
T = estimate_json({"functionDeclarations": DECLARATIONS})


def contents(user: str, turn: int) -> list[types.Content]:
    """``user``'s conversation through question ``turn`` (1-based), answers as model turns."""
    out: list[types.Content] = []
    for question, answer in turns(user, turn)[:-1]:
        out += [
            types.Content(role="user", parts=[types.Part(text=question)]),
            types.Content(role="model", parts=[types.Part(text=answer)]),
        ]
    out.append(types.Content(role="user", parts=[types.Part(text=turns(user, turn)[-1][0])]))
    return out


def four_layers(user: str, turn: int) -> dict[str, Any]:
    """Turn ``turn`` of ``user``: tools, then a system instruction of the shared prompt and the
    user's context, then the conversation."""
    system = types.Content(parts=[types.Part(text=SYSTEM), types.Part(text=context(user))])
    config = types.GenerateContentConfig(
        system_instruction=system, tools=[types.Tool.model_validate({"function_declarations": DECLARATIONS})]
    )
    return {"model": FLASH, "contents": contents(user, turn), "config": config}


def M(user: str, turn: int) -> int:
    """Tokens of ``user``'s conversation through question ``turn``."""
    pairs = turns(user, turn)
    return sum(tokens(q, a) for q, a in pairs[:-1]) + tokens(pairs[-1][0])


def prompt(user: str, turn: int) -> int:
    return T + tokens(SYSTEM, context(user)) + M(user, turn)


def test_four_layer_figures() -> None:
    """The table's sizes: tools and system together pass gemini-2.5's 2048-token minimum."""
    assert (T, tokens(SYSTEM), tokens(context("ann"))) == (1845, 1260, 350)
    assert (M("ann", 1), M("ann", 2), M("bob", 1)) == (9, 24, 9)


@pytest.mark.parametrize("mode", MODES)
async def test_four_layer_scenario(cache_emulator: CacheEmulator, clients: ClientFactory, mode: str) -> None:
    """A new user's first message reads nothing (``cached_content_token_count`` None); their
    second reads all of the first, exactly; another user reads tools and system only; after 5
    idle minutes on the shared clock nothing is read. No write is ever reported."""
    client = clients()
    got = [
        await client.send(mode, four_layers("ann", 1)),
        await client.send(mode, four_layers("ann", 2)),
        await client.send(mode, four_layers("bob", 1)),
    ]
    cache_emulator.advance(301)
    got.append(await client.send(mode, four_layers("ann", 2)))
    assert got == [
        (prompt("ann", 1), None),
        (prompt("ann", 2), prompt("ann", 1)),
        (prompt("bob", 1), T + tokens(SYSTEM)),
        (prompt("ann", 2), None),
    ]
    assert len(client.tracker.calls()) == 4


# -- multi-turn growth ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_multi_turn_growth_reads_the_previous_turn(clients: ClientFactory, mode: str) -> None:
    """Each turn of a conversation reads the whole previous turn's prompt, exactly."""
    client = clients()
    system = sized(2500)
    got = []
    for turn in range(1, 5):
        kwargs = {
            "model": FLASH,
            "contents": contents("ann", turn),
            "config": types.GenerateContentConfig(system_instruction=system),
        }
        got.append(await client.send(mode, kwargs))
    sizes = [tokens(system) + M("ann", turn) for turn in range(1, 5)]
    assert got == [(sizes[0], None), *((n, before) for n, before in zip(sizes[1:], sizes, strict=False))]


# -- parallel cold calls --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "async_stream"])
async def test_eight_parallel_cold_calls_all_miss(
    cache_emulator: CacheEmulator, clients: ClientFactory, mode: str
) -> None:
    """With a time-to-first-token knob, 8 parallel cold calls of one prompt all read nothing (an
    entry is readable only once its response has started); the next call reads it."""
    client = clients()
    kwargs = request(sized(3000))
    n = tokens(sized(3000), QUESTION)
    cache_emulator.set_knobs(ttft_ms=800)
    results = await asyncio.gather(*(client.send(mode, kwargs) for _ in range(8)))
    assert results == [(n, None)] * 8
    assert await client.send(mode, kwargs) == (n, n)
    assert len(client.tracker.calls()) == 9
