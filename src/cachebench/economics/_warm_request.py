"""The cheapest request that keeps a prefix cached: a request's cached layers and a trivial
turn, with the least output the provider allows (:func:`warm_request`).

* Anthropic (and Bedrock InvokeModel bodies): everything through the last message that carries
  a ``cache_control`` marker (none when the markers are in ``tools``/``system`` only), then a
  one-character user turn; ``max_tokens: 0`` (no content, only the cache write is charged),
  or 1 where 0 is not allowed (thinking enabled, or ``tool_choice`` forcing a tool).
* OpenAI Chat Completions and Responses: through the last message with a
  ``prompt_cache_breakpoint`` part (GPT-5.6 and later), else every message before the newest
  user turn (implicit caching keeps the prompt before it), then a one-character user turn;
  ``max_completion_tokens: 1`` (Chat) or ``max_output_tokens: 16`` (Responses: its minimum).
* Gemini: every content before the newest user turn, then a one-character user turn;
  ``max_output_tokens: 1``.
* Bedrock Converse: through the last message with a ``cachePoint`` block (none when the
  points are in ``system``/``toolConfig`` only), then a one-character user turn;
  ``inferenceConfig.maxTokens: 1``.

Streaming is turned off. The request given is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..providers import detect_request
from ..types import Provider

__all__ = ["warm_request"]

_TURN = "."


def _has(value: Any, marker: str) -> bool:
    """Whether ``marker`` is a key of ``value`` or of anything inside it."""
    if isinstance(value, Mapping):
        return marker in value or any(_has(v, marker) for v in value.values())
    if isinstance(value, list):
        return any(_has(v, marker) for v in value)
    return False


def _through_last(messages: list[Any], marker: str) -> list[Any] | None:
    """The messages through the last one that carries ``marker``; None when none does."""
    for i in range(len(messages) - 1, -1, -1):
        if _has(messages[i], marker):
            return messages[: i + 1]
    return None


def _before_newest_user(messages: list[Any], role_key: str = "role") -> list[Any]:
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if isinstance(m, Mapping) and m.get(role_key, "user") == "user":
            return messages[:i]
    return messages


def _anthropic(body: dict[str, Any]) -> dict[str, Any]:
    messages = list(body.get("messages") or [])
    kept = _through_last(messages, "cache_control")
    if kept is None:
        if not (_has(body.get("system"), "cache_control") or _has(body.get("tools"), "cache_control")):
            raise ValueError("nothing to warm: the request has no cache_control breakpoint")
        kept = []
    if kept and isinstance(kept[-1], Mapping) and kept[-1].get("role") == "user":
        last = dict(kept[-1])
        content = last.get("content")
        blocks = list(content) if isinstance(content, list) else [{"type": "text", "text": str(content)}]
        last["content"] = [*blocks, {"type": "text", "text": _TURN}]
        kept = [*kept[:-1], last]
    else:
        kept = [*kept, {"role": "user", "content": _TURN}]
    body["messages"] = kept
    body.pop("stream", None)
    body.pop("cache_control", None)  # (automatic caching would mark the trivial turn)
    thinking = body.get("thinking")
    forced = isinstance(body.get("tool_choice"), Mapping) and body["tool_choice"].get("type") in (
        "any",
        "tool",
    )
    enabled = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
    body["max_tokens"] = 1 if (enabled or forced) else 0
    return body


def _openai(body: dict[str, Any]) -> dict[str, Any]:
    for drop in ("stream", "stream_options", "n", "max_tokens"):
        body.pop(drop, None)
    if "input" in body or "instructions" in body:  # Responses
        items = body.get("input")
        items = list(items) if isinstance(items, list) else []
        kept = _through_last(items, "prompt_cache_breakpoint")
        body["input"] = [
            *(kept if kept is not None else _before_newest_user(items)),
            {"role": "user", "content": _TURN},
        ]
        body["max_output_tokens"] = 16
        return body
    messages = list(body.get("messages") or [])
    kept = _through_last(messages, "prompt_cache_breakpoint")
    body["messages"] = [
        *(kept if kept is not None else _before_newest_user(messages)),
        {"role": "user", "content": _TURN},
    ]
    body["max_completion_tokens"] = 1
    return body


def _gemini(body: dict[str, Any]) -> dict[str, Any]:
    contents = body.get("contents")
    contents = list(contents) if isinstance(contents, list) else []
    body["contents"] = [*_before_newest_user(contents), {"role": "user", "parts": [{"text": _TURN}]}]
    config = dict(body.get("config") or {})
    config["max_output_tokens"] = 1
    body["config"] = config
    return body


def _converse(body: dict[str, Any]) -> dict[str, Any]:
    messages = list(body.get("messages") or [])
    kept = _through_last(messages, "cachePoint")
    if kept is None:
        if not (_has(body.get("system"), "cachePoint") or _has(body.get("toolConfig"), "cachePoint")):
            raise ValueError("nothing to warm: the request has no cachePoint")
        kept = []
    if kept and isinstance(kept[-1], Mapping) and kept[-1].get("role") == "user":
        last = dict(kept[-1])
        last["content"] = [*list(last.get("content") or []), {"text": _TURN}]
        kept = [*kept[:-1], last]
    else:
        kept = [*kept, {"role": "user", "content": [{"text": _TURN}]}]
    body["messages"] = kept
    config = dict(body.get("inferenceConfig") or {})
    config["maxTokens"] = 1
    body["inferenceConfig"] = config
    return body


def warm_request(request: Mapping[str, Any], provider: Provider | str | None = None) -> dict[str, Any]:
    """The cheapest request that reads (or writes) ``request``'s cached layers (see the
    module); ``ValueError`` when there is nothing to warm or the provider cannot be told."""
    if not isinstance(request, Mapping):
        raise ValueError(
            f"request must be the call's keyword arguments as a mapping, got {type(request).__name__}"
        )
    chosen = Provider.parse(provider) if provider is not None else detect_request(request)
    if chosen is None:
        raise ValueError("cannot tell which provider the request is for: give provider=")
    body = copy.deepcopy(dict(request))
    if chosen is Provider.ANTHROPIC:
        return _anthropic(body)
    if chosen is Provider.OPENAI:
        return _openai(body)
    if chosen is Provider.GEMINI:
        return _gemini(body)
    if "modelId" in body and "messages" not in body and "body" in body:
        raise ValueError("an InvokeModel request: warm its Anthropic body (provider='anthropic') instead")
    return _converse(body)
