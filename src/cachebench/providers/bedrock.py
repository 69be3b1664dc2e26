"""AWS Bedrock Runtime through boto3: ``converse`` / ``converse_stream``, and ``invoke_model`` /
``invoke_model_with_response_stream`` with an Anthropic body (Nova bodies, which are
Converse-shaped, are read too).

This is the adapter: usage, stream accumulation, what a result is, and the client. Requests
are read in ``_bedrock_request`` (cache points, cache order, the model id); the botocore
objects are hooked in ``_bedrock_stream``; Anthropic bodies are read by ``_messages_body``
(shared with the Anthropic adapter). Their names are re-exported here.

boto3 methods take the same keyword arguments whether they stream or not, so
:func:`is_stream_request` cannot tell; :func:`inspect_result` says when the result holds a
botocore ``EventStream``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, MutableMapping
from typing import Any

from ..facts import bedrock_min_tokens
from ..types import UNKNOWN_USAGE, Usage
from . import _messages_body
from ._base import ResultShape, TtlSplit, UsageTable, field, get, has_field, is_record, read_usage
from ._bedrock_request import DEFAULT_TTL as DEFAULT_TTL
from ._bedrock_request import MARKER as MARKER
from ._bedrock_request import NAME as NAME
from ._bedrock_request import converse_prompt as converse_prompt
from ._bedrock_request import decode_json
from ._bedrock_request import is_stream_request as is_stream_request
from ._bedrock_request import model_id as model_id
from ._bedrock_request import normalize_model as normalize_model
from ._bedrock_request import parse_request as parse_request
from ._bedrock_request import prompt_from_parts as prompt_from_parts
from ._bedrock_request import request_model as request_model
from ._bedrock_stream import failed_body, is_body, is_event_stream, new_body
from ._bedrock_stream import hook_event_stream as hook_event_stream

SERVICE_NAME = "bedrock-runtime"
METHODS = ("converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream")

# Converse usage, as data. Source: botocore data/bedrock-runtime/2023-09-30/service-2.json,
# shape ``TokenUsage`` (``inputTokens`` EXCLUDES cache tokens) and ``CacheDetail``. The
# ``*TokenCount`` spellings are Nova InvokeModel bodies and the
# ``amazon-bedrock-invocationMetrics`` of InvokeModelWithResponseStream's last chunk.
CONVERSE_USAGE = UsageTable(
    input_tokens=field("inputTokens", "inputTokenCount"),
    input_includes_cache=False,
    cache_read_tokens=field("cacheReadInputTokens", "cacheReadInputTokenCount"),
    cache_write_tokens=field("cacheWriteInputTokens", "cacheWriteInputTokenCount"),
    output_tokens=field("outputTokens", "outputTokenCount"),
    # [{"ttl": "1h", "inputTokens": 1024}, {"ttl": "5m", "inputTokens": 2048}]
    ttl_split=TtlSplit(("cacheDetails",), row_ttl="ttl", row_tokens="inputTokens"),
    writes_reported=True,
)
# An Anthropic body (InvokeModel) reports like the Anthropic API: ``_messages_body.USAGE``.
ANTHROPIC_USAGE = _messages_body.USAGE
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"


# -- usage ----------------------------------------------------------------------------------


def _table(u: Any) -> UsageTable:
    """The Anthropic table for a usage carrying any of its counts, else Converse's."""
    if any(has_field(u, k) for k in _messages_body.COUNT_FIELDS):
        return ANTHROPIC_USAGE
    return CONVERSE_USAGE


def _with_model(usage: Usage, model: str | None) -> Usage:
    """The request's model id wins: an Anthropic body names the model without its Bedrock
    region prefix (``global.`` and regional profiles are priced differently)."""
    if model is None or not usage.known or usage.model == model:
        return usage
    return usage._replace(model=model)


def _read_body(container: Any, body: Any) -> Any:
    """Read an InvokeModel response body, put back an equivalent one, return its JSON."""
    data = body.read()
    if isinstance(container, MutableMapping):
        container["body"] = new_body(data)
    return decode_json(data)


def usage(response: Any) -> Usage:
    """A Converse response (boto3 dict or JSON), an InvokeModel response (its ``body`` is read
    and replaced) or an InvokeModel body's JSON -> :class:`Usage`; no usage -> unknown."""
    body = get(response, "body")
    if body is not None and not is_event_stream(body) and not isinstance(body, list):
        response = _read_body(response, body) if is_body(body) else decode_json(body)
    u = get(response, "usage")
    if not is_record(u):
        return UNKNOWN_USAGE
    return read_usage(_table(u), u, model=normalize_model(get(response, "model")))


def _chunk_payload(event: Any) -> Any:
    """The model event inside an InvokeModelWithResponseStream event, decoded.

    Live: ``{"chunk": {"bytes": b'{"type": "message_start", ...}'}}``; logs may hold the bytes
    as text or base64, or the decoded event itself. Converse events pass through.
    """
    chunk = get(event, "chunk")
    if chunk is None:
        return event
    data = get(chunk, "bytes")
    if isinstance(data, str):
        decoded = decode_json(data)
        if decoded is None:
            try:
                decoded = decode_json(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError):
                return None
        return decoded
    return decode_json(data)


class StreamAccumulator:
    """Folds a Bedrock stream's events (cumulative, never summed).

    * ConverseStream: usage comes once, in the ``metadata`` event::

        {"metadata": {"usage": {"inputTokens": 12, "outputTokens": 40, "cacheReadInputTokens": 0,
                                "cacheWriteInputTokens": 2048,
                                "cacheDetails": [{"ttl": "5m", "inputTokens": 2048}]},
                      "metrics": {"latencyMs": 812}}}

    * InvokeModelWithResponseStream: each chunk is one model event; Anthropic bodies stream
      Messages events (folded by ``_messages_body.StreamAccumulator``), Nova bodies stream
      Converse-shaped ones. The last chunk carries ``amazon-bedrock-invocationMetrics``
      (``inputTokenCount``, ``cacheReadInputTokenCount``, ...), used only when the model's own
      events reported no usage.
    """

    __slots__ = ("_anthropic", "_anthropic_seen", "_converse", "_metrics", "_model")

    def __init__(self, model: str | None = None) -> None:
        self._model = model
        self._anthropic = _messages_body.StreamAccumulator()
        self._anthropic_seen = False
        self._converse: Any = None
        self._metrics: Any = None

    def add(self, event: Any) -> None:
        payload = _chunk_payload(event)
        if payload is None:
            return
        kind = get(payload, "type")
        if isinstance(kind, str):
            if kind in ("message_start", "message_delta"):
                self._anthropic_seen = True
            self._anthropic.add(payload)
        else:
            meta = get(payload, "metadata")
            if is_record(get(meta, "usage")):
                self._converse = get(meta, "usage")
        metrics = get(payload, INVOCATION_METRICS)
        if is_record(metrics):
            self._metrics = metrics

    def usage(self) -> Usage:
        if self._anthropic_seen:
            return _with_model(self._anthropic.usage(), self._model)
        if self._converse is not None:
            return read_usage(CONVERSE_USAGE, self._converse, model=self._model)
        if self._metrics is not None:
            return read_usage(CONVERSE_USAGE, self._metrics, model=self._model)
        return UNKNOWN_USAGE


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator(request_model(request))


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a Converse or InvokeModel response (boto3 dict or JSON), a list of stream
    events, or a boto3 stream result (its ``EventStream`` is read to the end)."""
    model = request_model(request)
    events: Any = None
    if isinstance(response, (list, tuple)):
        events = response
    elif isinstance(response, Mapping):
        for name in ("stream", "body"):
            value = response.get(name)
            if isinstance(value, list) or is_event_stream(value):
                events = value
                break
    if events is None:
        return _with_model(usage(response), model)
    acc = StreamAccumulator(model)
    for event in events:
        acc.add(event)
    return acc.usage()


# -- live calls -----------------------------------------------------------------------------


def inspect_result(result: Any, request: Mapping[str, Any]) -> ResultShape | None:
    """What a boto3 result dict is: a stream to hook, or a finished response and its usage.

    ConverseStream's ``stream`` and InvokeModelWithResponseStream's ``body`` are a botocore
    ``EventStream``, hooked in place by the caller of this function. An InvokeModel ``body``
    is read here and replaced by an equivalent one the caller reads in turn; if the read
    fails, a body whose read raises the same error is put back. None for anything else (the
    shared path records it).
    """
    if not isinstance(result, MutableMapping):
        return None
    model = request_model(request)
    for name in ("stream", "body"):
        value = result.get(name)
        if is_event_stream(value):
            return ResultShape(events=value, hook=hook_event_stream, accumulator=StreamAccumulator(model))
    body = result.get("body")
    if body is not None and is_body(body):
        try:
            data = body.read()
        except Exception as exc:
            result["body"] = failed_body(exc)
            return ResultShape(error=exc)
        result["body"] = new_body(data)
        return ResultShape(_with_model(usage(decode_json(data)), model))
    if "usage" in result:
        return ResultShape(_with_model(usage(result), model))
    return None


def owns_client(client: Any) -> bool:
    if not type(client).__module__.startswith("botocore"):
        return False
    service_model = getattr(getattr(client, "meta", None), "service_model", None)
    return getattr(service_model, "service_name", None) == SERVICE_NAME


def _owns_event(event: Any) -> bool:
    return isinstance(event, Mapping) and any(
        k in event for k in ("chunk", "messageStart", "contentBlockDelta", "messageStop", "metadata")
    )


def owns_response(response: Any) -> bool:
    if isinstance(response, (list, tuple)):
        return any(_owns_event(e) for e in response)
    if not isinstance(response, Mapping):
        return False
    if isinstance(response.get("usage"), Mapping) and "inputTokens" in response["usage"]:
        return True
    if "stopReason" in response:  # Converse (Anthropic bodies say "stop_reason")
        return True
    return "ResponseMetadata" in response and any(k in response for k in ("stream", "body", "output"))


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch the client's own ``converse``, ``converse_stream``, ``invoke_model`` and
    ``invoke_model_with_response_stream`` (instance attributes over the class's methods)."""
    patches: list[tuple[Any, str, Any]] = hooks.patch_methods(client, METHODS)
    return patches


def min_cacheable(model: str | None) -> int:
    """Nova's per-checkpoint minimum, Claude's per model (``facts``)."""
    return bedrock_min_tokens(model)


def read_tolerance(model: str | None) -> int:
    """Cache points are explicit and reads exact, as on the Anthropic API."""
    return 0


def read_step(model: str | None) -> int:
    """Reads are whole entries, counted exactly (0: no rounding)."""
    return 0
