"""Anthropic Messages on the wire: ``POST /v1/messages`` (JSON and SSE) and
``POST /v1/messages/count_tokens``.

The body builders (:func:`message_body`, :func:`stream_head`, :func:`stream_tail`), :func:`validate`
and the :data:`ROLES` / :data:`TTLS` tables are also what Bedrock uses (InvokeModel takes
Anthropic bodies; Converse has the same roles and cache point TTLs).

Cache diagnostics (:mod:`._diagnostics`) are the Claude API's only: a request with a
``diagnostics`` object gets the response field ``diagnostics`` (on ``message_start.message`` when
streamed) and is remembered under its message id; Bedrock bodies never get it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..facts import ANTHROPIC_TTLS
from . import _diagnostics as diagnostics
from . import _render as render
from ._errors import WireError, WireRoute, json_response
from ._requests import anthropic_usage as usage_body
from ._wire import (
    Call,
    Reply,
    cache_request,
    read_json,
    reply,
    reply_chunks,
    scope_of,
    seed_of,
    stream_response,
)

if TYPE_CHECKING:
    from .app import Emulator

FAMILY = "anthropic"
ROLES = ("user", "assistant")
TTLS = frozenset(ANTHROPIC_TTLS)


# -- requests -------------------------------------------------------------------------------


def _check_marker(marker: Any, where: str) -> None:
    if marker is None:
        return
    where = f"{where}.cache_control" if where else "cache_control"
    if not isinstance(marker, Mapping) or marker.get("type") != "ephemeral":
        raise WireError(400, f"{where}.type: Input should be 'ephemeral'")
    ttl = marker.get("ttl")
    if ttl is not None and ttl not in TTLS:
        raise WireError(400, f"{where}.ttl: Input should be '5m' or '1h'")


def _blocks(value: Any) -> list[Any]:
    if value is None or isinstance(value, str):
        return []
    if isinstance(value, list):
        return value
    raise WireError(400, "content blocks must be a string or a list")


def validate(body: Mapping[str, Any], *, need_model: bool = True, need_max_tokens: bool = True) -> None:
    """Raise a 400 :class:`WireError` where the Messages API would (field names as it says them)."""
    if need_model and (not isinstance(body.get("model"), str) or not body["model"]):
        raise WireError(400, "model: Field required")
    if need_max_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise WireError(400, "max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise WireError(400, "max_tokens: Input should be a non-negative integer")
    messages = body.get("messages")
    if messages is None:
        raise WireError(400, "messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "messages: at least one message is required")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in ROLES:
            raise WireError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in msg:
            raise WireError(400, f"messages.{i}.content: Field required")
        content = msg.get("content")
        final_assistant = i == len(messages) - 1 and msg["role"] == "assistant"
        if content in ([], "") and not final_assistant:
            raise WireError(
                400,
                f"messages.{i}: all messages must have non-empty content except for the optional "
                "final assistant message",
            )
        for j, part in enumerate(_blocks(content)):
            if isinstance(part, Mapping):
                _check_marker(part.get("cache_control"), f"messages.{i}.content.{j}")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise WireError(400, "tools: Input should be a valid list")
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, Mapping):
            raise WireError(400, f"tools.{i}: Input should be a valid dictionary or object")
        _check_marker(tool.get("cache_control"), f"tools.{i}")
    for i, part in enumerate(_blocks(body.get("system"))):
        if isinstance(part, Mapping):
            _check_marker(part.get("cache_control"), f"system.{i}")
    _check_marker(body.get("cache_control"), "")


# -- responses ------------------------------------------------------------------------------


def message_id(call: Call) -> str:
    return f"msg_emu{call.result.ticket:020d}"


NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


def message_body(
    call: Call, answer: Reply, model: str, extra: Mapping[str, Any] = NO_FIELDS
) -> dict[str, Any]:
    """A ``Message``; ``extra`` holds the fields the request asked for (:func:`diagnose`)."""
    return {
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": answer.text}] if answer.text else [],
        "stop_reason": answer.stop,
        "stop_sequence": None,
        "usage": usage_body(call.result, answer.output_tokens),
        **extra,
    }


def stream_head(
    call: Call, answer: Reply, model: str, *, ping: bool = True, extra: Mapping[str, Any] = NO_FIELDS
) -> list[dict[str, Any]]:
    """The events before the text: message_start (input and cache counts, 1 output token so
    far, and ``extra``: the docs put ``diagnostics`` there), content_block_start, ping."""
    start = {**message_body(call, answer, model, extra), "content": [], "stop_reason": None}
    start["usage"] = usage_body(call.result, min(1, answer.output_tokens))
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    if answer.text:
        events.append(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        )
    if ping:
        events.append({"type": "ping"})
    events.extend(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in reply_chunks(answer.text)
    )
    if answer.text:
        events.append({"type": "content_block_stop", "index": 0})
    return events


def stream_tail(call: Call, answer: Reply) -> list[dict[str, Any]]:
    """message_delta with the cumulative usage (input and cache counts restated), message_stop."""
    usage = usage_body(call.result, answer.output_tokens)
    del usage["cache_creation"], usage["service_tier"]
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop, "stop_sequence": None},
            "usage": usage,
        },
        {"type": "message_stop"},
    ]


# -- cache diagnostics ----------------------------------------------------------------------
# The response's ``diagnostics`` (anthropic-sdk-python types/message.py ``diagnostics:
# Optional[Diagnostics]``, types/diagnostics.py, types/cache_miss_*.py):
#   absent: the request has no ``diagnostics`` object
#   null:   ``previous_message_id`` is null (first turn), or no difference was found
#   {"cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": 41850}}
#           (the four ``*_changed`` types carry the count)
#   {"cache_miss_reason": {"type": "previous_message_not_found"}}   (also "unavailable")

NOT_FOUND = "previous_message_not_found"


def diagnostics_request(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request's ``diagnostics`` object, None without one; a 400 for a malformed one
    (anthropic-sdk-python types/diagnostics_param.py: ``previous_message_id: Optional[str]``)."""
    value = body.get("diagnostics")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise WireError(400, "diagnostics: Input should be a valid dictionary or object")
    previous = value.get("previous_message_id")
    if previous is not None and not isinstance(previous, str):
        raise WireError(400, "diagnostics.previous_message_id: Input should be a valid string")
    return value


def miss_reason(verdict: diagnostics.Verdict | None) -> dict[str, Any] | None:
    """``diagnostics`` for a comparison (None: the named message is not known)."""
    if verdict is None:
        return {"cache_miss_reason": {"type": NOT_FOUND}}
    if verdict.reason is None:
        return None
    reason: dict[str, Any] = {"type": verdict.reason}
    if verdict.reason.endswith("_changed"):
        reason["cache_missed_input_tokens"] = verdict.missed_tokens
    return {"cache_miss_reason": reason}


def diagnose(
    emu: Emulator,
    request: Request,
    call: Call,
    body: Mapping[str, Any],
    rendered: render.Rendered,
    asked: Mapping[str, Any] | None,
) -> Mapping[str, Any]:
    """The response fields the request's ``diagnostics`` object (``asked``, from
    :func:`diagnostics_request`) asks for, none without one; the request is then remembered
    under its message id. Called once the response is sure to start."""
    if asked is None:
        return NO_FIELDS
    result = call.result
    current = diagnostics.anthropic(
        body,
        rendered,
        betas=request.headers.get("anthropic-beta"),
        reusable_tokens=result.cache_read_tokens + result.cache_write_tokens,
    )
    scope = call.request.scope
    previous = asked.get("previous_message_id")
    value = None
    if previous is not None:
        named = emu.diagnostics.lookup(scope, previous)
        value = miss_reason(None if named is None else diagnostics.compare(named, current))
    emu.diagnostics.remember(scope, message_id(call), current)
    return {"diagnostics": value}


def _sse(event: Mapping[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


# -- handlers -------------------------------------------------------------------------------


def routes(emu: Emulator) -> list[BaseRoute]:
    async def messages(request: Request) -> Response:
        body = await read_json(request, FAMILY, emu.max_body_bytes)
        validate(body)
        asked = diagnostics_request(body)
        model: str = body["model"]
        stream = bool(body.get("stream"))
        max_tokens: int = body["max_tokens"]
        if stream and max_tokens == 0:
            raise WireError(400, "max_tokens: 0 is not supported with streaming")
        rendered = render.anthropic(body)
        call = Call(emu, cache_request(FAMILY, model, scope_of(request), rendered))
        await call.open()
        extra = diagnose(emu, request, call, body, rendered, asked)
        answer = reply(seed_of(call), max_tokens)
        if not stream:
            await call.finish()
            return json_response(message_body(call, answer, model, extra))
        return stream_response(
            map(_sse, stream_head(call, answer, model, extra=extra)),
            call,
            map(_sse, stream_tail(call, answer)),
            media_type="text/event-stream",
            headers={"request-id": "req_emulator", "cache-control": "no-cache"},
        )

    async def count_tokens(request: Request) -> Response:
        body = await read_json(request, FAMILY, emu.max_body_bytes)
        validate(body, need_max_tokens=False)
        emu.check_model(FAMILY, body["model"])
        req = cache_request(FAMILY, body["model"], scope_of(request), render.anthropic(body), automatic=None)
        return json_response({"input_tokens": sum(s.tokens for s in req.segments) + req.overhead_tokens})

    return [
        WireRoute(FAMILY, "/v1/messages", messages),
        WireRoute(FAMILY, "/v1/messages/count_tokens", count_tokens),
    ]
