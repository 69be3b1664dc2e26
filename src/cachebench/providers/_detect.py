"""Which provider a request body is for, from its shape alone (:func:`detect_request`).

The clues are data, in three tiers, each read only when the one before decides nothing:

1. *shape*: fields and block forms one API has and the others reject (a ``system`` role in
   ``messages`` is Chat Completions; ``{"text": ...}`` content items without a ``type`` are
   Converse; ``contents`` is Gemini). Clues for two shapes at once: ambiguous, None.
2. *model*: the ``model`` field's family (``claude-*``, ``gpt-*`` / ``o3``, ``gemini-*``).
3. *weak*: fields several APIs share but one uses most (``max_tokens``).

An Anthropic Messages body is the Anthropic API's, unless it carries Bedrock InvokeModel's
``anthropic_version`` (``"bedrock-2023-05-31"``: the Anthropic API takes its version as a
header) or comes as boto3's ``invoke_model`` arguments (``modelId`` and ``body``): then it is
Bedrock's. Shapes from the SDKs: anthropic ``types/message_create_params.py``; openai
``types/chat/completion_create_params.py`` and ``types/responses/response_create_params.py``;
botocore ``data/bedrock-runtime/2023-09-30/service-2.json`` (``ConverseRequest``); the Gemini
REST ``GenerateContentRequest`` (camelCase, and the proto's snake_case names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..types import Provider

__all__ = ["detect_request"]

# Shapes: the three providers' own, and the Anthropic Messages body (Anthropic's or, with
# InvokeModel's marks, Bedrock's).
MESSAGES = "messages"
SHAPES = {
    MESSAGES: Provider.ANTHROPIC,
    "openai": Provider.OPENAI,
    "bedrock": Provider.BEDROCK,
    "gemini": Provider.GEMINI,
}

# -- tier 1: top-level fields only one API takes ----------------------------------------------
_OWN_FIELDS: dict[str, str] = {
    # Gemini GenerateContentRequest, both spellings
    **dict.fromkeys(
        (
            "contents",
            "systemInstruction",
            "system_instruction",
            "generationConfig",
            "generation_config",
            "safetySettings",
            "safety_settings",
            "cachedContent",
            "cached_content",
        ),
        "gemini",
    ),
    # Bedrock ConverseRequest
    **dict.fromkeys(
        (
            "modelId",
            "inferenceConfig",
            "additionalModelRequestFields",
            "additionalModelResponseFieldPaths",
            "guardrailConfig",
            "promptVariables",
            "performanceConfig",
        ),
        "bedrock",
    ),
    # OpenAI Chat Completions and Responses
    **dict.fromkeys(
        (
            "input",
            "instructions",
            "previous_response_id",
            "max_output_tokens",
            "max_completion_tokens",
            "response_format",
            "stream_options",
            "reasoning_effort",
            "functions",
            "function_call",
            "logprobs",
            "top_logprobs",
            "logit_bias",
            "frequency_penalty",
            "presence_penalty",
            "prompt_cache_key",
            "prompt_cache_retention",
            "prompt_cache_options",
            "parallel_tool_calls",
            "store",
            "user",
            "seed",
            "reasoning",
            "truncation",
            "include",
            "conversation",
        ),
        "openai",
    ),
    # Anthropic Messages (also the body of a Bedrock InvokeModel call)
    **dict.fromkeys(
        ("cache_control", "stop_sequences", "thinking", "top_k", "anthropic_beta", "anthropic_version"),
        MESSAGES,
    ),
}
# Chat message roles Anthropic, Converse and Gemini reject.
_OPENAI_ROLES = frozenset({"system", "developer", "tool", "function"})
_OPENAI_MESSAGE_FIELDS = frozenset({"tool_calls", "tool_call_id", "function_call", "refusal", "audio"})
_OPENAI_PART_TYPES = frozenset(
    {"image_url", "input_audio", "input_text", "input_image", "input_file", "refusal"}
)
_ANTHROPIC_BLOCK_TYPES = frozenset(
    {
        "tool_use",
        "tool_result",
        "image",
        "document",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "search_result",
        "container_upload",
    }
)
# Converse ContentBlock / SystemContentBlock members: a one-key object with no "type".
_CONVERSE_MEMBERS = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "toolUse",
        "toolResult",
        "guardContent",
        "cachePoint",
        "reasoningContent",
        "citationsContent",
    }
)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is_object(value: Any) -> bool:
    return type(value) is dict or isinstance(value, Mapping)  # (JSON objects are dicts: no ABC check)


def _block_shape(block: Any) -> str | None:
    """The shape a content block (or a system block) belongs to, if it tells."""
    if not _is_object(block):
        return None
    if "prompt_cache_breakpoint" in block:
        return "openai"
    kind = block.get("type")
    if kind is None:
        return "bedrock" if block.keys() and block.keys() <= _CONVERSE_MEMBERS else None
    if "cache_control" in block or kind in _ANTHROPIC_BLOCK_TYPES:
        return MESSAGES
    if kind in _OPENAI_PART_TYPES:
        return "openai"
    return None


def _message_clues(request: Mapping[str, Any], found: set[str]) -> None:
    for message in _listed(request.get("messages")):
        if not _is_object(message):
            continue
        if message.get("role") in _OPENAI_ROLES or not _OPENAI_MESSAGE_FIELDS.isdisjoint(message):
            found.add("openai")
        content = message.get("content")
        if type(content) is list:
            for block in content:
                shape = _block_shape(block)
                if shape is not None:
                    found.add(shape)


def _system_clues(request: Mapping[str, Any], found: set[str]) -> None:
    system = request.get("system")
    if isinstance(system, str):
        found.add(MESSAGES)  # a top-level system string: only the Messages API has one
    for block in _listed(system):
        shape = _block_shape(block)
        if shape is not None:
            found.add(shape)


def _tool_clues(request: Mapping[str, Any], found: set[str]) -> None:
    for tool in _listed(request.get("tools")):
        if not _is_object(tool):
            continue
        if "input_schema" in tool or "cache_control" in tool:
            found.add(MESSAGES)
        elif "function" in tool or (tool.get("type") == "function" and "parameters" in tool):
            found.add("openai")
        elif any(k in tool for k in ("functionDeclarations", "function_declarations", "googleSearch")):
            found.add("gemini")
    config = request.get("toolConfig")
    if isinstance(config, Mapping) and "tools" in config:
        found.add("bedrock")  # Converse's toolConfig holds the tools; Gemini's only their mode


_SHAPE_CLUES: tuple[Callable[[Mapping[str, Any], set[str]], None], ...] = (
    _message_clues,
    _system_clues,
    _tool_clues,
)

# -- tier 2: model families (a prefix of the model name, lower case) -----------------------------
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("claude", MESSAGES),
    ("gpt-", "openai"),
    ("gpt4", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("codex", "openai"),
    ("gemini", "gemini"),
    ("models/gemini", "gemini"),
    ("gemma", "gemini"),
)

# -- tier 3: fields several APIs take, one most often ------------------------------------------
_WEAK_FIELDS: dict[str, str] = {"max_tokens": MESSAGES}


def _invoke_model(request: Mapping[str, Any]) -> bool:
    """A Bedrock InvokeModel call: its Anthropic body (``anthropic_version`` ``bedrock-...``;
    Vertex AI's bodies say ``vertex-2023-10-16`` and are the Anthropic adapter's), or boto3's
    arguments around it."""
    version = request.get("anthropic_version")
    if isinstance(version, str) and version.startswith("bedrock"):
        return True
    return "modelId" in request and "body" in request


def detect_request(request: Mapping[str, Any]) -> Provider | None:
    """Which provider's request body ``request`` is, from its shape alone; None when it cannot
    tell (no clue, or clues for two providers)."""
    if not isinstance(request, Mapping):
        return None
    own = _OWN_FIELDS
    found = {own[key] for key in request if key in own}
    for clues in _SHAPE_CLUES:
        clues(request, found)
    if _invoke_model(request):
        # An InvokeModel body is an Anthropic Messages body: its clues are Bedrock's.
        found.discard(MESSAGES)
        found.add("bedrock")
    if len(found) == 1:
        return SHAPES[found.pop()]
    if found:
        return None
    model = request.get("model")
    if isinstance(model, str):
        name = model.strip().lower()
        for prefix, shape in _MODEL_PREFIXES:
            if name.startswith(prefix):
                return SHAPES[shape]
    weak = {shape for key, shape in _WEAK_FIELDS.items() if key in request}
    return SHAPES[weak.pop()] if len(weak) == 1 else None
