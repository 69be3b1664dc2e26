"""Bedrock Runtime on the wire: ``POST /model/{modelId}/converse``, ``/converse-stream``,
``/invoke`` and ``/invoke-with-response-stream`` (Anthropic bodies).

Point boto3 at it with ``boto3.client("bedrock-runtime", endpoint_url=url,
region_name="us-east-1", aws_access_key_id=..., aws_secret_access_key=...)``: any credentials
sign; the access key id is the cache scope (caches are per account on Bedrock). Errors carry
``x-amzn-ErrorType`` (``ValidationException``, ``ThrottlingException``...) and a
``{"message": ...}`` body, which botocore turns into ``client.exceptions.<Type>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from ..facts import BEDROCK_TTLS, bedrock_model_id, nova_min_tokens
from . import _eventstream as es
from . import _render as render
from . import anthropic as anthropic_wire
from ._errors import WireError, WireRoute, json_response
from ._requests import converse_usage as converse_usage
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

FAMILY = "bedrock"
_REQUEST_ID = {"x-amzn-RequestId": "00000000-0000-4000-8000-emulator0000"}


def _model(request: Request) -> str:
    model = bedrock_model_id(request.path_params.get("model_id"))
    if model is None:
        raise WireError(400, "The provided model identifier is invalid.")
    return model


# -- Converse -------------------------------------------------------------------------------


def _check_cache_points(items: Any, where: str) -> None:
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, Mapping) and "cachePoint" in item:
            point = item["cachePoint"]
            if not isinstance(point, Mapping) or point.get("type") != "default":
                raise WireError(400, f"{where}.{i}.cachePoint.type: must be 'default'")
            if point.get("ttl") is not None and point["ttl"] not in BEDROCK_TTLS:
                raise WireError(400, f"{where}.{i}.cachePoint.ttl: must be '5m' or '1h'")


def validate_converse(body: Mapping[str, Any], model: str) -> None:
    """Raise a 400 ``ValidationException`` where Converse would (for ``model``: Nova caches no
    tools, so a cache point among them is refused)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise WireError(
            400,
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or msg.get("role") not in anthropic_wire.ROLES:
            raise WireError(400, f"messages.{i}.role: must be 'user' or 'assistant'")
        if not isinstance(msg.get("content"), list):
            raise WireError(400, f"messages.{i}.content: must be a list of content blocks")
        _check_cache_points(msg["content"], f"messages.{i}.content")
    system = body.get("system")
    if system is not None and not isinstance(system, list):
        raise WireError(400, "system: must be a list of system content blocks")
    _check_cache_points(system, "system")
    tool_config = body.get("toolConfig")
    if isinstance(tool_config, Mapping):
        tools = tool_config.get("tools")
        _check_cache_points(tools, "toolConfig.tools")
        points = (
            [t for t in tools if isinstance(t, Mapping) and "cachePoint" in t]
            if isinstance(tools, list)
            else []
        )
        if points and nova_min_tokens(model):  # Nova caches system and messages, never tools
            raise WireError(
                400, f"toolConfig.tools: cachePoint is not supported for tools with model {model}."
            )
    config = body.get("inferenceConfig")
    if config is not None and not isinstance(config, Mapping):
        raise WireError(400, "inferenceConfig: must be an object")
    max_tokens = (config or {}).get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise WireError(400, "inferenceConfig.maxTokens: must be at least 1")


def _stop(answer: Reply) -> str:
    return "max_tokens" if answer.stop == "max_tokens" else "end_turn"


async def _converse_call(emu: Emulator, request: Request) -> tuple[Call, Reply]:
    body = await read_json(request, FAMILY, emu.max_body_bytes)
    model = _model(request)
    validate_converse(body, model)
    call = Call(emu, cache_request(FAMILY, model, scope_of(request), render.converse(body)))
    await call.open()
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    return call, reply(seed_of(call), max_tokens)


def _converse_events(call: Call, answer: Reply, latency_ms: int) -> tuple[list[bytes], list[bytes]]:
    head = [es.event("messageStart", {"role": "assistant"})]
    head.extend(
        es.event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
        for piece in reply_chunks(answer.text)
    )
    head.append(es.event("contentBlockStop", {"contentBlockIndex": 0}))
    tail = [
        es.event("messageStop", {"stopReason": _stop(answer)}),
        es.event(
            "metadata",
            {
                "usage": converse_usage(call.result, answer.output_tokens),
                "metrics": {"latencyMs": latency_ms},
            },
        ),
    ]
    return head, tail


# -- InvokeModel (Anthropic bodies) ---------------------------------------------------------


def _invocation_metrics(call: Call, answer: Reply) -> dict[str, Any]:
    latency = int(call.knobs.ttft_ms + call.knobs.latency_ms)
    return {
        "inputTokenCount": call.result.input_tokens,
        "outputTokenCount": answer.output_tokens,
        "invocationLatency": latency,
        "firstByteLatency": int(call.knobs.ttft_ms),
        "cacheReadInputTokenCount": call.result.cache_read_tokens,
        "cacheWriteInputTokenCount": call.result.cache_write_tokens,
    }


async def _invoke_call(emu: Emulator, request: Request) -> tuple[Call, Reply, str]:
    body = await read_json(request, FAMILY, emu.max_body_bytes)
    if "anthropic_version" not in body:
        raise WireError(
            400,
            "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.",
        )
    anthropic_wire.validate(body, need_model=False)
    model = _model(request)
    cache_req = cache_request(FAMILY, model, scope_of(request), render.anthropic(body))
    call = Call(emu, cache_req, markers=anthropic_wire.FAMILY)  # the body's markers are cache_control
    await call.open()
    return call, reply(seed_of(call), body["max_tokens"]), model


def _token_headers(call: Call, answer: Reply) -> dict[str, str]:
    return {
        **_REQUEST_ID,
        "X-Amzn-Bedrock-Input-Token-Count": str(call.result.input_tokens),
        "X-Amzn-Bedrock-Output-Token-Count": str(answer.output_tokens),
        "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": str(call.result.cache_read_tokens),
        "X-Amzn-Bedrock-Cache-Write-Input-Token-Count": str(call.result.cache_write_tokens),
    }


# -- routes ---------------------------------------------------------------------------------


def _stream(head: list[bytes], call: Call, tail: list[bytes]) -> StreamingResponse:
    return stream_response(head, call, tail, media_type=es.CONTENT_TYPE, headers=_REQUEST_ID)


def routes(emu: Emulator) -> list[BaseRoute]:
    async def converse(request: Request) -> Response:
        call, answer = await _converse_call(emu, request)
        await call.finish()
        latency = int(call.knobs.ttft_ms + call.knobs.latency_ms)
        return json_response(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": answer.text}]}},
                "stopReason": _stop(answer),
                "usage": converse_usage(call.result, answer.output_tokens),
                "metrics": {"latencyMs": latency},
            },
            headers=_REQUEST_ID,
        )

    async def converse_stream(request: Request) -> Response:
        call, answer = await _converse_call(emu, request)
        head, tail = _converse_events(call, answer, int(call.knobs.ttft_ms + call.knobs.latency_ms))
        return _stream(head, call, tail)

    async def invoke(request: Request) -> Response:
        call, answer, model = await _invoke_call(emu, request)
        await call.finish()
        return json_response(
            anthropic_wire.message_body(call, answer, model), headers=_token_headers(call, answer)
        )

    async def invoke_stream(request: Request) -> Response:
        call, answer, model = await _invoke_call(emu, request)
        head = [es.chunk(e) for e in anthropic_wire.stream_head(call, answer, model, ping=False)]
        tail_events = anthropic_wire.stream_tail(call, answer)
        tail_events[-1] = {
            **tail_events[-1],
            "amazon-bedrock-invocationMetrics": _invocation_metrics(call, answer),
        }
        return _stream(head, call, [es.chunk(e) for e in tail_events])

    base = "/model/{model_id:path}"
    return [
        WireRoute(FAMILY, f"{base}/converse", converse),
        WireRoute(FAMILY, f"{base}/converse-stream", converse_stream),
        WireRoute(FAMILY, f"{base}/invoke", invoke),
        WireRoute(FAMILY, f"{base}/invoke-with-response-stream", invoke_stream),
    ]
