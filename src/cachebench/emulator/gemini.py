"""Gemini on the wire: ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent`` (``?alt=sse`` as google-genai asks; a JSON array otherwise).

The REST JSON is camelCase (google-genai ``types.GenerateContentResponse`` parses it).
``usageMetadata.promptTokenCount`` includes ``cachedContentTokenCount``, which is sent only
when above 0; writes are never reported. In a stream every chunk carries the running
``usageMetadata`` (the full prompt counts and the candidates tokens so far); the last chunk
has the ``finishReason``, without which google-genai would try to resume the stream.

Caching is implicit (the whole prompt, minimum 2048 tokens on 2.5 and 4096 on 3.x: the
``GEMINI_MIN_TOKENS`` table of :mod:`cachebench.facts`, through :mod:`cachebench.cachemodel`).
Errors are Google's ``{"error": {"code", "message", "status"}}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from ..facts import gemini_model_name
from ..tokens import estimate_text
from ._errors import WireError, WireRoute, json_response
from ._requests import gemini_cache_request as cache_request_for
from ._requests import gemini_usage as usage_metadata
from ._wire import (
    Call,
    Reply,
    read_json,
    reply,
    reply_chunks,
    scope_of,
    seed_of,
    stream_response,
)

if TYPE_CHECKING:
    from .app import Emulator

FAMILY = "gemini"
API_VERSIONS = ("v1beta", "v1alpha", "v1")
METHODS = ("generateContent", "streamGenerateContent")
ROLES = ("user", "model")
_FINISH = {"end_turn": "STOP", "max_tokens": "MAX_TOKENS"}


# -- requests -------------------------------------------------------------------------------


def _bad(message: str) -> WireError:
    # Google lists each violated field as "* <Request>.<path>: <reason>".
    return WireError(400, f"* GenerateContentRequest.{message}\n")


def split_path(rest: str) -> tuple[str, str]:
    """``gemini-2.5-flash:generateContent`` -> (model, method); 404 for anything else."""
    model, sep, method = rest.rpartition(":")
    if not sep or not model or method not in METHODS:
        raise WireError(404, f"Method not found: models/{rest}")
    return model, method


def validate(body: Mapping[str, Any]) -> int | None:
    """Raise a 400 :class:`WireError` where Gemini would; returns ``maxOutputTokens``."""
    contents = body.get("contents")
    if not contents:
        raise _bad("contents: contents is not specified")
    if not isinstance(contents, list):
        raise _bad("contents: Invalid value (expected a list of Content)")
    for i, content in enumerate(contents):
        if not isinstance(content, Mapping):
            raise _bad(f"contents[{i}]: Invalid value (expected a Content object)")
        role = content.get("role")
        if role is not None and role not in ROLES:
            raise WireError(400, "Please use a valid role: user, model.")
        parts = content.get("parts")
        if not parts or not isinstance(parts, list):
            raise _bad(f"contents[{i}].parts: contents.parts must not be empty.")
    config = body.get("generationConfig")
    if config is not None and not isinstance(config, Mapping):
        raise _bad("generation_config: Invalid value (expected a GenerationConfig object)")
    limit = (config or {}).get("maxOutputTokens")
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _bad("generation_config.max_output_tokens: must be a positive integer")
    return limit


# -- responses ------------------------------------------------------------------------------


def _response_id(call: Call) -> str:
    return f"emu{call.result.ticket:020d}"


def response_body(call: Call, answer: Reply, model: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": answer.text}], "role": "model"},
                "finishReason": _FINISH[answer.stop],
                "index": 0,
            }
        ],
        "usageMetadata": usage_metadata(call.result, answer.output_tokens),
        "modelVersion": model,
        "responseId": _response_id(call),
    }


def stream_chunks(call: Call, answer: Reply, model: str) -> Iterator[dict[str, Any]]:
    """One chunk per text piece, each with the running usage; the last has the finish reason."""
    pieces = reply_chunks(answer.text) or [""]
    so_far = ""
    for n, piece in enumerate(pieces):
        so_far += piece
        last = n == len(pieces) - 1
        candidate: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = _FINISH[answer.stop]
        output = answer.output_tokens if last else estimate_text(so_far)
        yield {
            "candidates": [candidate],
            "usageMetadata": usage_metadata(call.result, output),
            "modelVersion": model,
            "responseId": _response_id(call),
        }


# -- handlers -------------------------------------------------------------------------------


def _streamed(chunks: list[bytes], call: Call, *, sse: bool) -> StreamingResponse:
    """SSE events (``?alt=sse``) or one JSON array; the latency knob holds back the last chunk."""
    if sse:
        frames = [b"data: " + chunk + b"\r\n\r\n" for chunk in chunks]
    else:
        frames = [(b",\r\n" if n else b"[") + chunk for n, chunk in enumerate(chunks)]
        frames[-1] += b"]"
    media = "text/event-stream" if sse else "application/json"
    return stream_response(
        frames[:-1], call, frames[-1:], media_type=media, headers={"cache-control": "no-cache"}
    )


def routes(emu: Emulator) -> list[BaseRoute]:
    async def generate(request: Request) -> Response:
        model, method = split_path(request.path_params["rest"])
        model = gemini_model_name(model) or model
        body = await read_json(request, FAMILY, emu.max_body_bytes)
        limit = validate(body)
        call = Call(emu, cache_request_for(body, model, scope_of(request)))
        await call.open()
        answer = reply(seed_of(call), limit)
        if method == "generateContent":
            await call.finish()
            return json_response(response_body(call, answer, model))
        chunks = [orjson.dumps(c) for c in stream_chunks(call, answer, model)]
        return _streamed(chunks, call, sse=request.query_params.get("alt") == "sse")

    return [WireRoute(FAMILY, f"/{v}/models/{{rest:path}}", generate) for v in API_VERSIONS]
