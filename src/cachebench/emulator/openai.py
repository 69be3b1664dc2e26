"""OpenAI on the wire: ``POST /v1/chat/completions`` and ``POST /v1/responses``, JSON and SSE.

Field shapes follow openai-python (``types/chat/chat_completion.py``,
``chat_completion_chunk.py``, ``completion_usage.py``, ``types/responses/response.py``,
``response_usage.py``, ``response_stream_event.py``). Usage is inclusive: ``prompt_tokens`` /
``input_tokens`` count cached and written tokens too. Write counts (``cache_write_tokens``) are
sent only for models with explicit caching (GPT-5.6 and later, decided by
:func:`cachebench.providers.openai.explicit_caching` from its ``EXPLICIT_SINCE`` table, the
same rule the tracker applies).

Chat streams end with ``data: [DONE]``; usage comes in a last chunk with ``choices: []`` only
when ``stream_options.include_usage`` is true. Responses streams send ``response.created`` ...
``response.output_text.delta`` ... ``response.completed`` (whose ``response.usage`` holds the
counts), each with a ``sequence_number``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..cachemodel import CacheRequest, CacheResult
from ..providers import openai as provider
from ._wire import (
    Call,
    Reply,
    WireError,
    cache_request,
    endpoint,
    json_response,
    reply,
    reply_chunks,
    scope_of,
)
from .anthropic import seed_of

if TYPE_CHECKING:
    from .app import Emulator

FAMILY = "openai"
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CACHE_MODES = ("implicit", "explicit")
_STOP = {"end_turn": "stop", "max_tokens": "length"}
_SSE_HEADERS = {"cache-control": "no-cache", "x-request-id": "req_emulator"}


# -- requests -------------------------------------------------------------------------------


def _invalid(param: str, message: str, code: str | None = "invalid_value") -> WireError:
    return WireError(400, message, param=param, code=code)


def _missing(param: str) -> WireError:
    return WireError(
        400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _wrong_type(param: str, expected: str) -> WireError:
    return _invalid(param, f"Invalid type for '{param}': expected {expected}.", "invalid_type")


def _one_of(value: Any, allowed: tuple[str, ...], param: str) -> None:
    if value is not None and value not in allowed:
        choices = ", ".join(f"'{a}'" for a in allowed)
        raise _invalid(param, f"Invalid value: {value!r}. Supported values are: {choices}.")


def _check_markers(items: Any, param: str) -> None:
    """``prompt_cache_breakpoint`` markers on content parts: ``{"mode": "explicit", "ttl"?}``."""
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        parts = item.get("content", item.get("output")) if isinstance(item, Mapping) else None
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            marker = part.get(provider.MARKER) if isinstance(part, Mapping) else None
            if marker is None:
                continue
            where = f"{param}[{i}].content[{j}].{provider.MARKER}"
            if not isinstance(marker, Mapping) or marker.get("mode") != "explicit":
                raise _invalid(f"{where}.mode", f"Invalid value for '{where}.mode': expected 'explicit'.")
            _one_of(marker.get("ttl"), provider.EXPLICIT_TTLS, f"{where}.ttl")


def _check_common(body: Mapping[str, Any]) -> str:
    """The checks Chat and Responses share; returns the model."""
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _wrong_type("model", "a non-empty string")
    _one_of(body.get("prompt_cache_retention"), provider.RETENTIONS, "prompt_cache_retention")
    options = body.get("prompt_cache_options")
    if options is not None:
        if not isinstance(options, Mapping):
            raise _wrong_type("prompt_cache_options", "an object")
        _one_of(options.get("mode"), CACHE_MODES, "prompt_cache_options.mode")
        _one_of(options.get("ttl"), provider.EXPLICIT_TTLS, "prompt_cache_options.ttl")
    key = body.get("prompt_cache_key")
    if key is not None and not isinstance(key, str):
        raise _wrong_type("prompt_cache_key", "a string")
    return model


def validate_chat(body: Mapping[str, Any]) -> str:
    """Raise a 400 :class:`WireError` where Chat Completions would; returns the model."""
    if body.get("model") is None:
        # The API says this one in its own words, with no param.
        raise WireError(400, "you must provide a model parameter")
    model = _check_common(body)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array")
    if not messages:
        raise _invalid(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "empty_array",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise _wrong_type(f"messages[{i}]", "an object")
        if msg.get("role") is None:
            raise _missing(f"messages[{i}].role")
        _one_of(msg.get("role"), CHAT_ROLES, f"messages[{i}].role")
    _check_markers(messages, "messages")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise _invalid(
            "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.", None
        )
    return model


def validate_responses(body: Mapping[str, Any]) -> str:
    """Raise a 400 :class:`WireError` where the Responses API would; returns the model."""
    model = _check_common(body)
    given = ("input", "instructions", "prompt", "previous_response_id", "conversation")
    if all(body.get(k) is None for k in given):
        raise _missing("input")
    value = body.get("input")
    if value is not None and not isinstance(value, (str, list)):
        raise _wrong_type("input", "a string or an array")
    _check_markers(value, "input")
    return model


def cache_request_for(body: Mapping[str, Any], model: str, scope: str) -> CacheRequest:
    """The cache model's view of a Chat or Responses body.

    Before GPT-5.6 the whole prompt is cached implicitly (``implicit_end`` None) under the
    request's ``prompt_cache_retention``. From GPT-5.6 the prompt's breakpoints are the
    explicit markers plus, unless ``prompt_cache_options.mode`` is ``explicit``, the implicit
    one :func:`cachebench.providers.openai.build_prompt` places (before the newest turn) with
    ``prompt_cache_options.ttl``.
    """
    prompt = provider.parse_request(body)
    fields: dict[str, Any] = {"routing_key": body.get("prompt_cache_key")}
    if provider.explicit_caching(model):
        options = body.get("prompt_cache_options") or {}
        implicit = options.get("mode", "implicit") == "implicit"
        fields["explicit"] = True
        fields["retention"] = options.get("ttl", provider.EXPLICIT_DEFAULT_TTL)
        fields["implicit_end"] = (prompt.turn_start or len(prompt.blocks)) if implicit else 0
    else:
        fields["markers"] = False
        fields["retention"] = body.get("prompt_cache_retention")
    return cache_request(FAMILY, model, scope, prompt, **fields)


def _max_tokens(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _invalid(
                name, f"Invalid '{name}': integer below minimum value 1.", "integer_below_min_value"
            )
        return value
    return None


# -- usage ----------------------------------------------------------------------------------


def chat_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """Chat ``usage``: inclusive ``prompt_tokens``; ``cache_write_tokens`` only when reported."""
    details: dict[str, Any] = {"cached_tokens": result.cache_read_tokens, "audio_tokens": 0}
    if result.writes_reported:
        details["cache_write_tokens"] = result.cache_write_tokens
    return {
        "prompt_tokens": result.total_input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": result.total_input_tokens + output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def responses_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """Responses ``usage``: inclusive ``input_tokens``; the write count and its TTL split
    (``ttl_30m_tokens``/``ttl_12h_tokens``) only when reported."""
    details: dict[str, Any] = {"cached_tokens": result.cache_read_tokens}
    if result.writes_reported:
        by_ttl = result.cache_write_by_ttl
        details["cache_write_tokens"] = result.cache_write_tokens
        details["cache_write_tokens_details"] = {
            "ttl_30m_tokens": by_ttl.get("30m", 0),
            "ttl_12h_tokens": by_ttl.get("12h", 0),
        }
    return {
        "input_tokens": result.total_input_tokens,
        "input_tokens_details": details,
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": result.total_input_tokens + output_tokens,
    }


# -- chat completions -----------------------------------------------------------------------


def _chat_head(call: Call, model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-emu{call.result.ticket:020d}",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def chat_body(call: Call, answer: Reply, model: str, created: int) -> dict[str, Any]:
    return {
        **_chat_head(call, model, created),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": _STOP[answer.stop],
            }
        ],
        "usage": chat_usage(call.result, answer.output_tokens),
    }


def chat_chunks(
    call: Call, answer: Reply, model: str, created: int, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat completion: the role, the text, the finish reason and,
    with ``include_usage``, a last chunk with ``choices: []`` (the others then carry
    ``usage: null``)."""
    head = {**_chat_head(call, model, created), "object": "chat.completion.chunk"}
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in reply_chunks(answer.text):
        yield chunk({"content": piece})
    yield chunk({}, _STOP[answer.stop])
    if include_usage:
        yield {**head, "choices": [], "usage": chat_usage(call.result, answer.output_tokens)}


# -- responses ------------------------------------------------------------------------------


def _message_item(call: Call, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": f"msg_emu{call.result.ticket:020d}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content if status == "completed" else [],
    }


# Request fields a ``Response`` echoes, with the value it shows when the request omits them.
RESPONSE_ECHO: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "metadata": {},
}


def response_body(
    call: Call, answer: Reply, body: Mapping[str, Any], created: float, *, done: bool = True
) -> dict[str, Any]:
    """A ``Response`` object: complete, or (``done=False``) as ``response.created`` shows it."""
    cut = answer.stop == "max_tokens"
    out: dict[str, Any] = {
        "id": f"resp_emu{call.result.ticket:020d}",
        "object": "response",
        "created_at": created,
        "status": ("incomplete" if cut else "completed") if done else "in_progress",
        "completed_at": created if done else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and cut else None,
        "model": body["model"],
        "output": [_message_item(call, answer.text, "completed")] if done else [],
        "reasoning": {"effort": None, "summary": None},
        "usage": responses_usage(call.result, answer.output_tokens) if done else None,
        "user": None,
        **{k: default if body.get(k) is None else body[k] for k, default in RESPONSE_ECHO.items()},
    }
    if call.request.explicit:
        options = body.get("prompt_cache_options") or {}
        out["prompt_cache_options"] = {
            "mode": options.get("mode", "implicit"),
            "ttl": options.get("ttl", provider.EXPLICIT_DEFAULT_TTL),
        }
    return out


def response_events(
    call: Call, answer: Reply, body: Mapping[str, Any], created: float
) -> Iterator[dict[str, Any]]:
    """The Responses stream events, in the API's order, numbered by ``sequence_number``."""
    pending = response_body(call, answer, body, created, done=False)
    item_id = f"msg_emu{call.result.ticket:020d}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message_item(call, "", "in_progress"),
        },
        {"type": "response.content_part.added", **where, "part": part},
        *(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in reply_chunks(answer.text)
        ),
        {"type": "response.output_text.done", **where, "text": answer.text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": answer.text}},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": _message_item(call, answer.text, "completed"),
        },
    ]
    final = response_body(call, answer, body, created)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": kind, "response": final})
    for n, event in enumerate(events):
        yield {**event, "sequence_number": n}


# -- handlers -------------------------------------------------------------------------------


def _data(event: Mapping[str, Any], named: bool = False) -> bytes:
    head = b"event: " + str(event["type"]).encode() + b"\n" if named else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def _stream(events: list[bytes], call: Call, tail: list[bytes]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for chunk in events:
            yield chunk
        await call.finish()
        for chunk in tail:
            yield chunk

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
            "sent was not valid JSON.)",
        )
    if not isinstance(body, dict):
        raise WireError(400, "Invalid type for the request body: expected an object.", code="invalid_type")
    return body


def routes(emu: Emulator) -> list[BaseRoute]:
    async def chat_completions(request: Request) -> Response:
        body = await _body(request)
        model = validate_chat(body)
        limit = _max_tokens(body, "max_completion_tokens", "max_tokens")
        stream = bool(body.get("stream"))
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, Mapping) and bool(options.get("include_usage"))
        call = Call(emu, cache_request_for(body, model, scope_of(request)))
        await call.open()
        answer = reply(seed_of(call), limit)
        created = int(emu.clock())
        if not stream:
            await call.finish()
            return json_response(chat_body(call, answer, model, created))
        chunks = [_data(c) for c in chat_chunks(call, answer, model, created, include_usage)]
        # The finish-reason chunk and the usage chunk come after the latency knob.
        split = len(chunks) - (2 if include_usage else 1)
        return _stream(chunks[:split], call, [*chunks[split:], b"data: [DONE]\n\n"])

    async def responses(request: Request) -> Response:
        body = await _body(request)
        model = validate_responses(body)
        limit = _max_tokens(body, "max_output_tokens")
        call = Call(emu, cache_request_for(body, model, scope_of(request)))
        await call.open()
        answer = reply(seed_of(call), limit)
        created = float(int(emu.clock()))
        if not body.get("stream"):
            await call.finish()
            return json_response(response_body(call, answer, body, created))
        events = [_data(e, named=True) for e in response_events(call, answer, body, created)]
        return _stream(events[:-1], call, events[-1:])

    routes: list[BaseRoute] = []
    for prefix in ("/v1", "/openai/v1"):
        routes.append(
            Route(f"{prefix}/chat/completions", endpoint(FAMILY, chat_completions), methods=["POST"])
        )
        routes.append(Route(f"{prefix}/responses", endpoint(FAMILY, responses), methods=["POST"]))
    return routes
