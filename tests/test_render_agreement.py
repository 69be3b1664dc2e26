"""The tracker and the emulator read a request independently: the tracker through its adapters
(``cachebench.providers``), the emulator through its own renderer (``cachebench.emulator``'s
``_render*`` modules, written from the providers' request shapes). For request shapes the two
could read differently, a table of call sequences sent through the real SDKs checks both
sides at once: every call after the first expects exactly the read the emulator serves, with
no unexpected miss and no alert, and the read is the one the provider gives (a hit where the
provider renders the two shapes alike, a miss where it does not).

A parsing bug on either side shows as a disagreement here: a shape the tracker reads as the
same prompt but the emulator renders differently is an unexpected ``provider`` miss; the
reverse is a read the tracker did not expect.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator

POLICY = "".join(
    f"Policy line {i}: answer from the support handbook, politely and exactly. " for i in range(300)
)
QUESTION = "Where is order 4411?"
EPHEMERAL = {"type": "ephemeral"}
SONNET = "claude-sonnet-5"
BEDROCK_SONNET = "us.anthropic.claude-sonnet-5-v1:0"
HIT, MISS, COLD = "hit", "miss", "cold"


def _png(width: int, height: int) -> str:
    """A valid PNG header of the given size, base64 (the estimator reads its IHDR)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return base64.b64encode(data).decode()


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png(800, 600)}}


@dataclass(frozen=True)
class Case:
    """Calls sent in order through one SDK client; ``reads[i]`` is what call ``i`` reads."""

    name: str
    api: str  # messages | invoke | converse | chat | responses | gemini
    model: str
    calls: list[dict[str, Any]]
    reads: list[str] = field(default_factory=list)
    known_disagreement: str = ""  # why the tracker reads this shape otherwise (a strict xfail)


# -- Anthropic Messages (and InvokeModel with the same bodies) --------------------------------


def _messages(*contents: Any, **extra: Any) -> dict[str, Any]:
    """Alternating user/assistant messages with these contents."""
    roles = ("user", "assistant")
    return {
        "max_tokens": 16,
        "messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)],
        **extra,
    }


def _marked(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": EPHEMERAL}]


def _text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _tool_run(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    uses = [
        {"type": "tool_use", "id": f"t{i}", "name": "lookup_order", "input": {"id": str(i)}} for i in range(n)
    ]
    results = [{"type": "tool_result", "tool_use_id": f"t{i}", "content": f"order {i} ok"} for i in range(n)]
    return uses, results


_USES, _RESULTS = _tool_run(12)
# PROVIDER_FACTS "Lookback": a run of consecutive tool_use or tool_result blocks counts as one
# position. The emulator counts so; the tracker's CacheView.expect (expect.py) counts every
# block, so it expects no read (or a shorter one) where the provider reads the earlier turn.
_RUNS_DISAGREE = "expect.CacheView.expect counts each tool block as a lookback position"
_SYSTEM = [{"type": "text", "text": POLICY, "cache_control": EPHEMERAL}]
_TOOLS = [
    {
        "name": "lookup_order",
        "description": "Look up an order.",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
]

ANTHROPIC_CASES = [
    Case(
        "string content and one text block are one prompt (automatic caching)",
        "messages",
        SONNET,
        [
            _messages(QUESTION, system=POLICY, cache_control=EPHEMERAL),
            _messages(_text(QUESTION), system=POLICY, cache_control=EPHEMERAL),
            _messages([{"text": QUESTION, "type": "text"}], system=_text(POLICY), cache_control=EPHEMERAL),
        ],
        [COLD, HIT, HIT],
    ),
    Case(
        "earlier turns as strings or text blocks, marker on the newest block",
        "messages",
        SONNET,
        [
            _messages("First question?", "First answer.", _marked(QUESTION), system=POLICY),
            _messages(_text("First question?"), _text("First answer."), _marked(QUESTION), system=POLICY),
        ],
        [COLD, HIT],
    ),
    Case(
        "a tool_use / tool_result run is one lookback position",
        "messages",
        SONNET,
        [
            _messages(QUESTION, system=POLICY, tools=_TOOLS, cache_control=EPHEMERAL),
            # 24 tool blocks after the entry: 2 lookback positions, not 25
            _messages(
                QUESTION,
                _USES,
                [*_RESULTS, *_text("Anything else?")],
                system=POLICY,
                tools=_TOOLS,
                cache_control=EPHEMERAL,
            ),
        ],
        [COLD, HIT],
        _RUNS_DISAGREE,
    ),
    Case(
        "an image block, then the same image and a new question",
        "messages",
        SONNET,
        [
            _messages([IMAGE, {"type": "text", "text": QUESTION}], system=POLICY, cache_control=EPHEMERAL),
            _messages([IMAGE, {"type": "text", "text": QUESTION}], system=POLICY, cache_control=EPHEMERAL),
        ],
        [COLD, HIT],
    ),
    Case(
        "tool_choice changes the messages part, not the system breakpoint",
        "messages",
        SONNET,
        [
            _messages(QUESTION, system=_SYSTEM, tools=_TOOLS),
            _messages(QUESTION, system=_SYSTEM, tools=_TOOLS, tool_choice={"type": "auto"}),
        ],
        [COLD, HIT],
    ),
    Case(
        "a changed tool schema misses from the start",
        "messages",
        SONNET,
        [
            _messages(QUESTION, system=_SYSTEM, tools=_TOOLS),
            _messages(QUESTION, system=_SYSTEM, tools=[{**_TOOLS[0], "description": "Find an order."}]),
        ],
        [COLD, MISS],
    ),
    Case(
        "InvokeModel: earlier turns as strings or text blocks",
        "invoke",
        BEDROCK_SONNET,
        [
            _messages("First question?", "First answer.", _marked(QUESTION), system=_SYSTEM),
            _messages(_text("First question?"), _text("First answer."), _marked(QUESTION), system=_SYSTEM),
        ],
        [COLD, HIT],
    ),
]


# -- Bedrock Converse ---------------------------------------------------------------------------

POINT = {"cachePoint": {"type": "default"}}
_SPEC = {
    "toolSpec": {
        "name": "lookup_order",
        "description": "Look up an order.",
        "inputSchema": {"json": {"type": "object", "properties": {"id": {"type": "string"}}}},
    }
}


def _converse(*contents: list[Any], system: list[Any], tools: list[Any] | None = None) -> dict[str, Any]:
    roles = ("user", "assistant")
    out: dict[str, Any] = {
        "system": system,
        "messages": [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)],
    }
    if tools is not None:
        out["toolConfig"] = {"tools": tools}
    return out


_TOOL_USES = [
    {"toolUse": {"toolUseId": f"t{i}", "name": "lookup_order", "input": {"id": str(i)}}} for i in range(12)
]
_TOOL_RESULTS = [
    {"toolResult": {"toolUseId": f"t{i}", "content": [{"text": f"order {i} ok"}]}} for i in range(12)
]

CONVERSE_CASES = [
    Case(
        "a cache point after the system prompt, then one after the newest turn too",
        "converse",
        BEDROCK_SONNET,
        [
            _converse([{"text": QUESTION}], system=[{"text": POLICY}, POINT]),
            _converse([{"text": QUESTION}, POINT], system=[{"text": POLICY}, POINT]),
            _converse([{"text": QUESTION}, POINT], system=[{"text": POLICY}, POINT]),
        ],
        [COLD, HIT, HIT],
    ),
    Case(
        "a cache point among the tools, and tool runs in the conversation",
        "converse",
        BEDROCK_SONNET,
        [
            _converse([{"text": QUESTION}, POINT], system=[{"text": POLICY}], tools=[_SPEC, POINT]),
            # 24 tool blocks after the entry: 2 lookback positions, not 25
            _converse(
                [{"text": QUESTION}],
                _TOOL_USES,
                [*_TOOL_RESULTS, {"text": "Anything else?"}, POINT],
                system=[{"text": POLICY}],
                tools=[_SPEC, POINT],
            ),
        ],
        [COLD, HIT],
        _RUNS_DISAGREE,
    ),
]


# -- OpenAI -------------------------------------------------------------------------------------

_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup_order", "arguments": '{"id": "4411"}'},
}
_FUNCTION = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    },
}

OPENAI_CASES = [
    Case(
        "Chat: string content and text parts are one prompt (implicit, before GPT-5.6)",
        "chat",
        "gpt-4.1",
        [
            {"messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": QUESTION}]},
            {
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": POLICY}]},
                    {"role": "user", "content": [{"text": QUESTION, "type": "text"}]},
                ]
            },
        ],
        [COLD, HIT],
    ),
    Case(
        "Chat: tool calls and a tool message given as a string or as parts (GPT-5.6)",
        "chat",
        "gpt-5.6",
        [
            {
                "tools": [_FUNCTION],
                "messages": [
                    {"role": "system", "content": POLICY},
                    {"role": "user", "content": QUESTION},
                    {"role": "assistant", "tool_calls": [_CALL]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "Order 4411 ships today."},
                ],
            },
            {
                "tools": [_FUNCTION],
                "messages": [
                    {"role": "system", "content": POLICY},
                    {"role": "user", "content": QUESTION},
                    {"role": "assistant", "tool_calls": [_CALL]},
                    {
                        "role": "tool",
                        "tool_call_id": "call_1",
                        "content": [{"type": "text", "text": "Order 4411 ships today."}],
                    },
                ],
            },
        ],
        [COLD, HIT],
    ),
    Case(
        "Responses: input as a string, a message, and a message item with input_text parts",
        "responses",
        "gpt-5.6",
        [
            {"instructions": POLICY, "input": QUESTION},
            {"instructions": POLICY, "input": [{"role": "user", "content": QUESTION}]},
            {
                "instructions": POLICY,
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
                ],
            },
        ],
        [COLD, HIT, HIT],
    ),
    Case(
        "Responses: function_call and function_call_output items (before GPT-5.6)",
        "responses",
        "gpt-4.1",
        [
            {
                "input": [
                    {"role": "system", "content": POLICY},
                    {"role": "user", "content": QUESTION},
                    {
                        "type": "function_call",
                        "call_id": "c1",
                        "name": "lookup_order",
                        "arguments": '{"id":"1"}',
                    },
                    {"type": "function_call_output", "call_id": "c1", "output": "Order 4411 ships today."},
                ]
            },
        ]
        * 2,
        [COLD, HIT],
    ),
]


# -- Gemini -------------------------------------------------------------------------------------

_DECLARATION = types.FunctionDeclaration(
    name="lookup_order",
    description="Look up an order.",
    parameters=types.Schema(type=types.Type.OBJECT, properties={"id": types.Schema(type=types.Type.STRING)}),
)

GEMINI_CASES = [
    Case(
        "contents and system_instruction as strings, then as Content objects",
        "gemini",
        "gemini-2.5-flash",
        [
            {"contents": QUESTION, "config": types.GenerateContentConfig(system_instruction=POLICY)},
            {
                "contents": [types.Content(role="user", parts=[types.Part(text=QUESTION)])],
                "config": types.GenerateContentConfig(
                    system_instruction=types.Content(parts=[types.Part(text=POLICY)])
                ),
            },
        ],
        [COLD, HIT],
    ),
    Case(
        "tools, then a function call and its response in the contents",
        "gemini",
        "gemini-3-pro",
        [
            {
                "contents": [
                    types.Content(role="user", parts=[types.Part(text=QUESTION)]),
                    types.Content(
                        role="model",
                        parts=[
                            types.Part(
                                function_call=types.FunctionCall(name="lookup_order", args={"id": "4411"})
                            )
                        ],
                    ),
                    types.Content(
                        role="user",
                        parts=[
                            types.Part(
                                function_response=types.FunctionResponse(
                                    name="lookup_order", response={"status": "ships today"}
                                )
                            )
                        ],
                    ),
                ],
                "config": types.GenerateContentConfig(
                    system_instruction=POLICY + POLICY,
                    tools=[types.Tool(function_declarations=[_DECLARATION])],
                    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
                ),
            }
        ]
        * 2,
        [COLD, HIT],
    ),
]

CASES = [*ANTHROPIC_CASES, *CONVERSE_CASES, *OPENAI_CASES, *GEMINI_CASES]


# -- senders ------------------------------------------------------------------------------------

OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while OPEN:
        OPEN.pop().close()


def _sender(emu: CacheEmulator, tracker: CacheTracker, case: Case) -> Callable[[dict[str, Any]], Any]:
    model = case.model
    if case.api == "messages":
        ac = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="sk-ant-agree", max_retries=0)
        OPEN.append(ac)
        tracker.instrument(ac)
        return lambda kwargs: ac.messages.create(model=model, **kwargs)
    if case.api in ("chat", "responses"):
        oc = openai.OpenAI(base_url=emu.openai_base_url, api_key="sk-agree", max_retries=0)
        OPEN.append(oc)
        tracker.instrument(oc)
        if case.api == "chat":
            return lambda kwargs: oc.chat.completions.create(model=model, **kwargs)
        return lambda kwargs: oc.responses.create(model=model, **kwargs)
    if case.api in ("converse", "invoke"):
        bc = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=emu.bedrock_endpoint_url,
            aws_access_key_id="AKIDAGREEMENT",
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        OPEN.append(bc)
        tracker.instrument(bc)
        if case.api == "converse":
            return lambda kwargs: bc.converse(modelId=model, **kwargs)
        return lambda kwargs: bc.invoke_model(
            modelId=model, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", **kwargs})
        )
    gc = genai.Client(api_key="gemini-agree", http_options=types.HttpOptions(base_url=emu.gemini_base_url))
    OPEN.append(gc)
    tracker.instrument(gc)
    return lambda kwargs: gc.models.generate_content(model=model, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.api}: {c.name}" for c in CASES])
def test_tracker_expects_what_the_emulator_serves(cache_emulator: CacheEmulator, case: Case) -> None:
    """The emulator serves the provider's reads (``case.reads``), and each call after the
    first expects exactly that read, without an unexpected miss or an alert. A known
    disagreement is pinned as one: the case fails once the tracker is fixed, to be moved into
    the agreeing cases."""
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(clock=cache_emulator.clock, on_miss_alert=alerts.append)
    send = _sender(cache_emulator, tracker, case)
    for kwargs in case.calls:
        send(kwargs)
        cache_emulator.advance(5)
    calls = tracker.calls()
    assert len(calls) == len(case.calls)
    assert all(m.usage_known for m in calls)
    assert calls[0].cache_read_tokens == 0
    assert [COLD] + [HIT if m.cache_read_tokens > 0 else MISS for m in calls[1:]] == case.reads
    agree = [m.expected_read_tokens == m.cache_read_tokens and not m.unexpected_miss for m in calls[1:]]
    if case.known_disagreement:
        assert not all(agree), f"fixed ({case.known_disagreement}): move the case to the agreeing ones"
        return
    for m in calls[1:]:
        assert m.expected_read_tokens == m.cache_read_tokens, m
        assert m.unexpected_miss is False, m
    assert alerts == []
