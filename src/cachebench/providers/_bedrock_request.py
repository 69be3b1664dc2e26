"""Bedrock requests as a :class:`Prompt`: Converse requests, and InvokeModel bodies (Anthropic
Messages bodies, or Converse-shaped Nova bodies).

Converse cache points are blocks of their own, ``{"cachePoint": {"type": "default", "ttl"?:
"5m" | "1h"}}``, in ``system``, in message ``content`` and in ``toolConfig.tools``: each marks
the block before it (in cache order) as a breakpoint and is itself dropped. Cache order is
tools -> system -> messages. Bedrock responses carry no model id, so the model is the
request's ``modelId`` with any ARN prefix stripped (``arn:...:inference-profile/us.anthropic...``).

The adapter is :mod:`cachebench.providers.bedrock`, which re-exports these names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..facts import BEDROCK_DEFAULT_TTL, BEDROCK_TTLS, bedrock_model_id
from ..fingerprint import to_plain
from ..types import Block, Prompt, Section
from . import _messages_body
from ._base import get, items

NAME = "bedrock"
DEFAULT_TTL = BEDROCK_DEFAULT_TTL
MARKER = "cachePoint"


def normalize_model(model: object) -> str | None:
    """A ``modelId`` without its ARN prefix (``facts``): ``arn:aws:bedrock:...:inference-profile/us.x``
    is ``us.x``; an inference profile's region prefix (``us.``, ``global.``) stays, as it is
    priced differently."""
    return bedrock_model_id(model)


model_id = normalize_model


def request_model(request: Mapping[str, Any]) -> str | None:
    return normalize_model(request.get("modelId"))


def is_stream_request(request: Mapping[str, Any]) -> bool:
    """Always False: streaming is told by the method, not the arguments (see ``bedrock``'s docstring)."""
    return False


def _cache_point(block: Any) -> Any:
    """The ``cachePoint`` marker when ``block`` is one, else None."""
    if isinstance(block, Mapping) and block.get(MARKER) is not None:
        return block[MARKER]
    return None


def _ttl(marker: Any) -> str:
    ttl = get(marker, "ttl")
    return ttl if ttl in BEDROCK_TTLS else DEFAULT_TTL


def converse_prompt(
    *, model: str | None, tools: Any, system: Any, messages: Any, settings: Any = None
) -> Prompt:
    """A Converse-shaped request (also Nova InvokeModel bodies) as a :class:`Prompt`."""
    blocks: list[Block] = []

    def mark(marker: Any) -> None:
        if blocks:  # a cache point before any block marks nothing
            last = blocks[-1]
            blocks[-1] = Block(last.section, last.index, last.payload, _ttl(marker))

    sections: tuple[tuple[Section, list[Any]], ...] = (("tools", items(tools)), ("system", items(system)))
    for section, listed in sections:
        index = 0
        for item in listed:
            marker = _cache_point(item)
            if marker is not None:
                mark(marker)
                continue
            blocks.append(Block(section, index, to_plain(item)))
            index += 1
    msgs = items(messages)
    # The newest user turn: the trailing run of user messages (tool results are user turns).
    last_assistant = max((i for i, m in enumerate(msgs) if get(m, "role") == "assistant"), default=-1)
    turn_start: int | None = None
    index = 0
    for m_i, msg in enumerate(msgs):
        role = get(msg, "role", "user")
        if m_i == last_assistant + 1 and turn_start is None and role != "assistant":
            turn_start = len(blocks)
        for part in items(get(msg, "content")):
            marker = _cache_point(part)
            if marker is not None:
                mark(marker)
                continue
            blocks.append(Block("messages", index, [role, to_plain(part)]))
            index += 1
    if turn_start is None:
        turn_start = len(blocks)
    return Prompt.of_blocks(NAME, model, blocks, turn_start, implicit=False, settings=settings)


def _converse_settings(request: Mapping[str, Any]) -> Any:
    """Fields that invalidate the messages part of a Claude entry: tool choice and thinking."""
    found: dict[str, Any] = {}
    choice = get(request.get("toolConfig"), "toolChoice")
    if choice is not None:
        found["toolChoice"] = to_plain(choice)
    thinking = get(request.get("additionalModelRequestFields"), "thinking")
    if thinking is not None:
        found["thinking"] = to_plain(thinking)
    return found or None


def decode_json(data: Any) -> Any:
    """JSON from bytes or text; anything else passes; undecodable input gives None."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, (bytes, str)):
        try:
            return json.loads(data)
        except ValueError:
            return None
    return data


def _request_body(body: Any) -> Any:
    """``invoke_model(body=...)``: bytes, text or a seekable file, left where it was found."""
    read = getattr(body, "read", None)
    if callable(read) and callable(getattr(body, "seek", None)) and callable(getattr(body, "tell", None)):
        pos = body.tell()
        try:
            data = read()
        finally:
            body.seek(pos)
        return decode_json(data)
    return decode_json(body)


def _is_anthropic_body(body: Mapping[str, Any], model: str | None) -> bool:
    return "anthropic_version" in body or (model is not None and ("anthropic." in model or "claude" in model))


def parse_request(request: Mapping[str, Any]) -> Prompt:
    model = request_model(request)
    source: Any = request  # Converse: the request itself; InvokeModel: its JSON body
    if "body" in request:
        source = _request_body(request.get("body"))
        if not isinstance(source, Mapping):
            return Prompt(NAME, model, [], [], 0)
        if _is_anthropic_body(source, model):
            return _messages_body.build_prompt(
                provider=NAME,
                model=model,
                tools=source.get("tools"),
                system=source.get("system"),
                messages=source.get("messages"),
                settings=_messages_body.request_settings(source),
            )
    return converse_prompt(
        model=model,
        tools=get(source.get("toolConfig"), "tools"),
        system=source.get("system"),
        messages=source.get("messages"),
        settings=_converse_settings(source),
    )


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    """Converse shapes: ``messages``, ``system`` blocks and ``toolConfig.tools``."""
    return converse_prompt(model=normalize_model(model), tools=tools, system=system, messages=messages)
