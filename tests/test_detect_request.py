"""``detect_request`` names the provider of a request body from its shape alone: realistic bodies
of each API (as the SDKs send them, or as apps log them) in a table, and the bodies it must
refuse to guess about."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cachebench.providers import detect_request
from cachebench.types import Provider

LONG = "You answer questions about orders. " * 50
ANTHROPIC, OPENAI, BEDROCK, GEMINI = Provider.ANTHROPIC, Provider.OPENAI, Provider.BEDROCK, Provider.GEMINI

ANTHROPIC_INVOKE_BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 512,
    "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]}],
}

CASES: list[tuple[str, Any, Provider | None]] = [
    # -- Anthropic Messages --------------------------------------------------------------------
    (
        "anthropic: the Quickstart's call",
        {
            "model": "claude-sonnet-5",
            "max_tokens": 512,
            "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Where is my order?"}],
        },
        ANTHROPIC,
    ),
    (
        "anthropic: tools, tool_use and tool_result blocks",
        {
            "model": "claude-opus-5",
            "max_tokens": 1024,
            "tools": [
                {
                    "name": "lookup_order",
                    "description": "Find an order",
                    "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
            "messages": [
                {"role": "user", "content": "Order 42?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": "42"}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"}],
                },
            ],
        },
        ANTHROPIC,
    ),
    (
        "anthropic: automatic caching, no model logged",
        {
            "max_tokens": 256,
            "cache_control": {"type": "ephemeral"},
            "messages": [{"role": "user", "content": "Hello"}],
        },
        ANTHROPIC,
    ),
    (
        "anthropic: a system string and nothing else that tells",
        {"system": LONG, "messages": [{"role": "user", "content": "Hi"}]},
        ANTHROPIC,
    ),
    (
        "anthropic: a Vertex AI body (its anthropic_version is Vertex's)",
        {
            "anthropic_version": "vertex-2023-10-16",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}],
        },
        ANTHROPIC,
    ),
    (
        "anthropic: thinking and stop_sequences",
        {
            "model": "claude-sonnet-5",
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "stop_sequences": ["\n\nHuman:"],
            "messages": [{"role": "user", "content": "Think."}],
        },
        ANTHROPIC,
    ),
    # -- OpenAI Chat Completions -----------------------------------------------------------------
    (
        "openai chat: GPT-5.6 with a system message and an explicit breakpoint",
        {
            "model": "gpt-5.6",
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": LONG, "prompt_cache_breakpoint": {"mode": "explicit"}}
                    ],
                },
                {"role": "user", "content": "Where is my order?"},
            ],
            "prompt_cache_options": {"mode": "implicit", "ttl": "30m"},
        },
        OPENAI,
    ),
    (
        "openai chat: legacy max_tokens (shared with Anthropic) on a gpt-4o call",
        {"model": "gpt-4o", "max_tokens": 300, "messages": [{"role": "user", "content": "Hi"}]},
        OPENAI,
    ),
    (
        "openai chat: a tool round trip",
        {
            "model": "gpt-4.1",
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "user", "content": "Order 42?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
            ],
        },
        OPENAI,
    ),
    (
        "openai chat: an o-series model, user turns only",
        {"model": "o3-mini", "messages": [{"role": "user", "content": "Solve x + 1 = 2"}]},
        OPENAI,
    ),
    (
        "openai chat: an OpenAI-compatible body naming a Claude model (the shape wins)",
        {
            "model": "claude-sonnet-5",
            "messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "Hi"}],
        },
        OPENAI,
    ),
    # -- OpenAI Responses --------------------------------------------------------------------------
    (
        "openai responses: instructions and a string input",
        {"model": "gpt-5.6", "instructions": LONG, "input": "Where is my order?"},
        OPENAI,
    ),
    (
        "openai responses: input items continuing a response",
        {
            "previous_response_id": "resp_123",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "And now?"}]}],
            "max_output_tokens": 200,
        },
        OPENAI,
    ),
    # -- Bedrock -------------------------------------------------------------------------------------
    (
        "bedrock converse: modelId, system with a cache point, inferenceConfig",
        {
            "modelId": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "system": [{"text": LONG}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": "Where is my order?"}]}],
            "inferenceConfig": {"maxTokens": 512},
        },
        BEDROCK,
    ),
    (
        "bedrock converse: saved without its modelId (content items without a type)",
        {
            "system": [{"text": LONG}],
            "messages": [{"role": "user", "content": [{"text": "Hi"}, {"cachePoint": {"type": "default"}}]}],
        },
        BEDROCK,
    ),
    (
        "bedrock converse: toolConfig with a toolSpec",
        {
            "toolConfig": {
                "tools": [
                    {"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}},
                    {"cachePoint": {"type": "default"}},
                ]
            },
            "messages": [{"role": "user", "content": [{"text": "Order 42?"}]}],
        },
        BEDROCK,
    ),
    (
        "bedrock invoke_model: an Anthropic body with Bedrock's anthropic_version",
        ANTHROPIC_INVOKE_BODY,
        BEDROCK,
    ),
    (
        "bedrock invoke_model: boto3's arguments, the body as JSON text",
        {
            "modelId": "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "body": json.dumps(ANTHROPIC_INVOKE_BODY),
            "contentType": "application/json",
        },
        BEDROCK,
    ),
    # -- Gemini ----------------------------------------------------------------------------------------
    (
        "gemini: REST camelCase",
        {
            "systemInstruction": {"parts": [{"text": LONG}]},
            "contents": [{"role": "user", "parts": [{"text": "Where is my order?"}]}],
            "generationConfig": {"maxOutputTokens": 256},
        },
        GEMINI,
    ),
    (
        "gemini: the proto's snake_case",
        {
            "system_instruction": {"parts": [{"text": LONG}]},
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "generation_config": {"max_output_tokens": 256},
        },
        GEMINI,
    ),
    (
        "gemini: contents and function declarations",
        {
            "tools": [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "OBJECT"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "contents": [{"role": "user", "parts": [{"text": "Order 42?"}]}],
        },
        GEMINI,
    ),
    # -- cannot tell -----------------------------------------------------------------------------------
    ("ambiguous: user messages and nothing else", {"messages": [{"role": "user", "content": "Hi"}]}, None),
    ("ambiguous: an empty body", {}, None),
    (
        "ambiguous: an unknown model family",
        {"model": "llama-3.3-70b", "messages": [{"role": "user", "content": "Hi"}]},
        None,
    ),
    (
        "conflict: Anthropic cache_control and an OpenAI system role",
        {
            "cache_control": {"type": "ephemeral"},
            "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}],
        },
        None,
    ),
    ("conflict: Gemini contents and Responses input", {"contents": [], "input": "Hi"}, None),
    ("not an object", ["model", "claude-sonnet-5"], None),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_detect_request(body: Any, expected: Provider | None) -> None:
    """Each body is named for the provider whose API it is written for, and None where the shape
    does not say (or says two things)."""
    assert detect_request(body) is expected


def test_detection_does_not_change_the_body() -> None:
    """Detection only reads: the body is the same object, unchanged, afterwards."""
    body = json.loads(json.dumps(ANTHROPIC_INVOKE_BODY))
    before = json.dumps(body, sort_keys=True)
    assert detect_request(body) is BEDROCK
    assert json.dumps(body, sort_keys=True) == before
