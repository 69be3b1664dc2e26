"""OpenAI on the wire: ``POST /v1/chat/completions`` and ``POST /v1/responses``, JSON and SSE
(also under ``/openai/v1``). This module validates requests and maps them onto the cache
model; the bodies are built in :mod:`._openai_bodies`.

Which models cache explicitly (GPT-5.6 and later: breakpoints, exact reads, reported writes)
is :func:`cachebench.facts.explicit_caching`: the same fact the tracker applies. Older models
cache the whole prompt implicitly, report no writes and read in 128-token steps from 1024
tokens. Bodies are rendered into cache segments by :mod:`._render_openai`.

Responses on GPT-5.6 and later are remembered for cache diagnostics (:mod:`._diagnostics`): a
request naming one in ``prompt_cache_options.comparison_response_id`` gets
``prompt_cache_diagnostics`` (streamed, on the ``response.completed`` event's response).

Chat streams end with ``data: [DONE]``; usage comes in a last chunk with ``choices: []`` only
when ``stream_options.include_usage`` is true. Responses streams send ``response.created`` ...
``response.output_text.delta`` ... ``response.completed`` (whose ``response.usage`` holds the
counts), each with a ``sequence_number``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from .. import facts
from . import _diagnostics as diagnostics
from . import _render_openai as render
from ._errors import WireError, WireRoute, json_response
from ._openai_bodies import chat_body, chat_chunks, response_body, response_events, response_id
from ._render import Rendered
from ._requests import openai_cache_request as cache_request_for
from ._requests import openai_rendered as rendered_body
from ._wire import Call, read_json, reply, scope_of, seed_of, stream_response

if TYPE_CHECKING:
    from .app import Emulator

FAMILY = "openai"
PREFIXES = ("/v1", "/openai/v1")  # the second as Azure-style clients address it
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CACHE_MODES = ("implicit", "explicit")
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
            marker = part.get(render.MARKER) if isinstance(part, Mapping) else None
            if marker is None:
                continue
            where = f"{param}[{i}].content[{j}].{render.MARKER}"
            if not isinstance(marker, Mapping) or marker.get("mode") != "explicit":
                raise _invalid(f"{where}.mode", f"Invalid value for '{where}.mode': expected 'explicit'.")
            _one_of(marker.get("ttl"), facts.OPENAI_EXPLICIT_TTLS, f"{where}.ttl")


def _check_common(body: Mapping[str, Any]) -> str:
    """The checks Chat and Responses share; returns the model."""
    model = body.get("model")
    if model is None:
        raise _missing("model")
    if not isinstance(model, str) or not model:
        raise _wrong_type("model", "a non-empty string")
    _one_of(body.get("prompt_cache_retention"), facts.OPENAI_RETENTIONS, "prompt_cache_retention")
    options = body.get("prompt_cache_options")
    if options is not None:
        if not isinstance(options, Mapping):
            raise _wrong_type("prompt_cache_options", "an object")
        _one_of(options.get("mode"), CACHE_MODES, "prompt_cache_options.mode")
        _one_of(options.get("ttl"), facts.OPENAI_EXPLICIT_TTLS, "prompt_cache_options.ttl")
        comparison = options.get("comparison_response_id")
        if comparison is not None and not isinstance(comparison, str):
            raise _wrong_type("prompt_cache_options.comparison_response_id", "a string")
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


def _max_tokens(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type(name, "an integer")
        if value < 1:
            raise _invalid(
                name, f"Invalid '{name}': integer below minimum value 1.", "integer_below_min_value"
            )
        return value
    return None


# -- cache diagnostics ----------------------------------------------------------------------
# ``prompt_cache_diagnostics`` (openai-python types/responses/response.py):
#   {"type": "cache_hit"}
#   {"type": "cache_miss", "reason": "tools_changed", "cache_missed_tokens": 1280,
#    "comparison_reusable_tokens": 1280}
#   {"type": "comparison_response_not_found"}
#   {"type": "unavailable"}   (here: a model before GPT-5.6, which has no diagnostics)


def diagnostics_body(verdict: diagnostics.Verdict | None) -> dict[str, Any]:
    """``prompt_cache_diagnostics`` for a comparison (None: the named response is not known)."""
    if verdict is None:
        return {"type": "comparison_response_not_found"}
    if verdict.reason is None:
        return {"type": "cache_hit"}
    return {
        "type": "cache_miss",
        "reason": verdict.reason,
        "cache_missed_tokens": verdict.missed_tokens,
        "comparison_reusable_tokens": verdict.reusable_tokens,
    }


def diagnose(emu: Emulator, call: Call, body: Mapping[str, Any], rendered: Rendered) -> dict[str, Any] | None:
    """The response's ``prompt_cache_diagnostics`` (None when the request names no comparison);
    a GPT-5.6+ response is remembered under its id. Called once the response is sure to start."""
    options = body.get("prompt_cache_options")
    named_id = options.get("comparison_response_id") if isinstance(options, Mapping) else None
    # Diagnostics come with the models that cache explicitly (the guide: "GPT-5.6 and later").
    if not facts.explicit_caching(call.request.model):
        return None if named_id is None else {"type": "unavailable"}
    result = call.result
    current = diagnostics.openai(
        body, rendered, reusable_tokens=result.cache_read_tokens + result.cache_write_tokens
    )
    scope = call.request.scope
    out = None
    if named_id is not None:
        named = emu.diagnostics.lookup(scope, named_id)
        out = diagnostics_body(None if named is None else diagnostics.compare(named, current))
    emu.diagnostics.remember(scope, response_id(call), current)
    return out


# -- handlers -------------------------------------------------------------------------------


def _data(event: Mapping[str, Any], named: bool = False) -> bytes:
    head = b"event: " + str(event["type"]).encode() + b"\n" if named else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def _stream(events: list[bytes], call: Call, tail: list[bytes]) -> StreamingResponse:
    return stream_response(events, call, tail, media_type="text/event-stream", headers=_SSE_HEADERS)


def routes(emu: Emulator) -> list[BaseRoute]:
    async def chat_completions(request: Request) -> Response:
        body = await read_json(request, FAMILY, emu.max_body_bytes)
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
        body = await read_json(request, FAMILY, emu.max_body_bytes)
        model = validate_responses(body)
        limit = _max_tokens(body, "max_output_tokens")
        rendered = rendered_body(body)
        call = Call(emu, cache_request_for(body, model, scope_of(request), rendered))
        await call.open()
        found = diagnose(emu, call, body, rendered)
        answer = reply(seed_of(call), limit)
        created = float(int(emu.clock()))
        if not body.get("stream"):
            await call.finish()
            return json_response(response_body(call, answer, body, created, diagnostics=found))
        events = [_data(e, named=True) for e in response_events(call, answer, body, created, found)]
        return _stream(events[:-1], call, events[-1:])

    return [
        *(WireRoute(FAMILY, f"{prefix}/chat/completions", chat_completions) for prefix in PREFIXES),
        *(WireRoute(FAMILY, f"{prefix}/responses", responses) for prefix in PREFIXES),
    ]
