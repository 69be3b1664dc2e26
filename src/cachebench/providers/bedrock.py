"""AWS Bedrock Runtime through boto3: ``converse`` / ``converse_stream``, and ``invoke_model`` /
``invoke_model_with_response_stream`` with an Anthropic body (Nova bodies, which are
Converse-shaped, are read too).

Converse cache points are blocks of their own, ``{"cachePoint": {"type": "default", "ttl"?:
"5m" | "1h"}}``, in ``system``, in message ``content`` and in ``toolConfig.tools``: each marks
the block before it (in cache order) as a breakpoint and is itself dropped. Cache order is
tools -> system -> messages. Bedrock responses carry no model id, so the model is the
request's ``modelId`` with any ARN prefix stripped (``arn:...:inference-profile/us.anthropic...``).

boto3 methods take the same keyword arguments whether they stream or not, so
:func:`is_stream_request` cannot tell; :func:`observe_result` marks the call as a stream when
the result holds a botocore ``EventStream``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from .._cachefacts import anthropic_min_tokens, nova_min_tokens
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Block, Prompt, Section, Usage
from . import anthropic
from ._base import as_int, get, has_field
from ._stream import Recorder

if TYPE_CHECKING:
    from .._call import CallContext

NAME = "bedrock"
DEFAULT_TTL = "5m"
MARKER = "cachePoint"
SERVICE_NAME = "bedrock-runtime"
METHODS = ("converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream")

# Converse usage, as data. Source: botocore data/bedrock-runtime/2023-09-30/service-2.json,
# shape ``TokenUsage`` (``inputTokens`` excludes cache tokens) and ``CacheDetail``. The
# ``*TokenCount`` spellings are Nova InvokeModel bodies and the
# ``amazon-bedrock-invocationMetrics`` of InvokeModelWithResponseStream's last chunk.
USAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("inputTokens", "inputTokenCount"),
    "cache_read_tokens": ("cacheReadInputTokens", "cacheReadInputTokenCount"),
    "cache_write_tokens": ("cacheWriteInputTokens", "cacheWriteInputTokenCount"),
    "output_tokens": ("outputTokens", "outputTokenCount"),
}
CACHE_DETAILS = "cacheDetails"  # [{"ttl": "1h", "inputTokens": 1024}, {"ttl": "5m", ...}]
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
# Anthropic usage keys: a body carrying any of them reports like the Anthropic API.
_ANTHROPIC_USAGE_KEYS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
)
# Minimum tokens per cache checkpoint for non-Claude models (varies; PROVIDER_FACTS "Bedrock").
# Claude models use the Anthropic table.


# -- requests -------------------------------------------------------------------------------


def model_id(value: Any) -> str | None:
    """``modelId`` without an ARN prefix: ``arn:aws:bedrock:...:inference-profile/us.x`` -> ``us.x``."""
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("arn:"):
        return value.rsplit("/", 1)[-1] or None
    return value


def request_model(request: Mapping[str, Any]) -> str | None:
    return model_id(request.get("modelId"))


def is_stream_request(request: Mapping[str, Any]) -> bool:
    """Always False: streaming is told by the method, not the arguments (see module docstring)."""
    return False


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _cache_point(block: Any) -> Any:
    """The ``cachePoint`` marker when ``block`` is one, else None."""
    if isinstance(block, Mapping) and block.get(MARKER) is not None:
        return block[MARKER]
    return None


def _ttl(marker: Any) -> str:
    ttl = get(marker, "ttl")
    return ttl if ttl in ("5m", "1h") else DEFAULT_TTL


def converse_prompt(
    *, model: str | None, tools: Any, system: Any, messages: Any, settings: Any = None
) -> Prompt:
    """A Converse-shaped request (also Nova InvokeModel bodies) as a :class:`Prompt`."""
    blocks: list[Block] = []

    def mark(marker: Any) -> None:
        if blocks:  # a cache point before any block marks nothing
            last = blocks[-1]
            blocks[-1] = Block(last.section, last.index, last.payload, _ttl(marker))

    sections: tuple[tuple[Section, list[Any]], ...] = (("tools", _items(tools)), ("system", _items(system)))
    for section, items in sections:
        index = 0
        for item in items:
            marker = _cache_point(item)
            if marker is not None:
                mark(marker)
                continue
            blocks.append(Block(section, index, to_plain(item)))
            index += 1
    msgs = _items(messages)
    # The newest user turn: the trailing run of user messages (tool results are user turns).
    last_assistant = max((i for i, m in enumerate(msgs) if get(m, "role") == "assistant"), default=-1)
    turn_start: int | None = None
    index = 0
    for m_i, msg in enumerate(msgs):
        role = get(msg, "role", "user")
        if m_i == last_assistant + 1 and turn_start is None and role != "assistant":
            turn_start = len(blocks)
        for part in _items(get(msg, "content")):
            marker = _cache_point(part)
            if marker is not None:
                mark(marker)
                continue
            blocks.append(Block("messages", index, [role, to_plain(part)]))
            index += 1
    if turn_start is None:
        turn_start = len(blocks)
    return Prompt(NAME, model, tuple(blocks), turn_start, implicit=False, settings=settings)


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


def _decode_json(data: Any) -> Any:
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
        return _decode_json(data)
    return _decode_json(body)


def _is_anthropic_body(body: Mapping[str, Any], model: str | None) -> bool:
    return "anthropic_version" in body or (model is not None and ("anthropic." in model or "claude" in model))


def parse_request(request: Mapping[str, Any]) -> Prompt:
    model = request_model(request)
    if "body" not in request:
        return converse_prompt(
            model=model,
            tools=get(request.get("toolConfig"), "tools"),
            system=request.get("system"),
            messages=request.get("messages"),
            settings=_converse_settings(request),
        )
    body = _request_body(request.get("body"))
    if not isinstance(body, Mapping):
        return Prompt(NAME, model, (), 0)
    if _is_anthropic_body(body, model):
        settings = {k: to_plain(body[k]) for k in anthropic.SETTINGS_FIELDS if body.get(k) is not None}
        return anthropic.build_prompt(
            provider=NAME,
            model=model,
            tools=body.get("tools"),
            system=body.get("system"),
            messages=body.get("messages"),
            settings=settings or None,
        )
    return converse_prompt(
        model=model,
        tools=get(body.get("toolConfig"), "tools"),
        system=body.get("system"),
        messages=body.get("messages"),
        settings=_converse_settings(body),
    )


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    """Converse shapes: ``messages``, ``system`` blocks and ``toolConfig.tools``."""
    return converse_prompt(model=model_id(model), tools=tools, system=system, messages=messages)


# -- usage ----------------------------------------------------------------------------------


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if has_field(obj, name):
            return get(obj, name)
    return None


def converse_usage(u: Any, *, model: str | None = None) -> Usage:
    """Normalise a Converse ``TokenUsage`` (exclusive ``inputTokens``; TTL split in ``cacheDetails``)."""
    details = get(u, CACHE_DETAILS)
    rows = details if isinstance(details, list) else []
    write = as_int(_first(u, USAGE_FIELDS["cache_write_tokens"]))
    if not write:
        write = sum(as_int(get(d, "inputTokens")) for d in rows)
    write_1h = sum(as_int(get(d, "inputTokens")) for d in rows if get(d, "ttl") == "1h")
    return Usage(
        input_tokens=as_int(_first(u, USAGE_FIELDS["input_tokens"])),
        cache_read_tokens=as_int(_first(u, USAGE_FIELDS["cache_read_tokens"])),
        cache_write_tokens=write,
        cache_write_1h_tokens=min(write_1h, write),
        output_tokens=as_int(_first(u, USAGE_FIELDS["output_tokens"])),
        known=True,
        writes_reported=True,
        ttl_split_reported=details is not None,
        model=model,
    )


def _usage_of(u: Any, model: str | None) -> Usage:
    if any(has_field(u, k) for k in _ANTHROPIC_USAGE_KEYS):
        return anthropic.usage_from_fields(u, model=model)
    return converse_usage(u, model=model)


def _with_model(usage: Usage, model: str | None) -> Usage:
    """The request's model id wins: an Anthropic body names the model without its Bedrock
    region prefix (``global.`` and regional profiles are priced differently)."""
    if model is None or not usage.known or usage.model == model:
        return usage
    return dataclasses.replace(usage, model=model)


def _is_event_stream(obj: Any) -> bool:
    """A botocore ``EventStream`` (or a test double of one), told by the parts we hook."""
    return hasattr(obj, "_event_generator") and hasattr(obj, "_parse_event")


def _is_body(obj: Any) -> bool:
    return callable(getattr(obj, "read", None)) and not _is_event_stream(obj)


def _new_body(data: bytes) -> Any:
    """A ``StreamingBody`` over bytes already read: the caller reads identical content."""
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


class _FailedRead:
    """Stands in for a body whose read failed: the caller's own read raises the same error."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def readable(self) -> bool:
        return True

    def read(self, amt: int | None = None) -> bytes:
        raise self._error

    def close(self) -> None:
        return None


def _read_body(container: Any, body: Any) -> Any:
    """Read an InvokeModel response body, put back an equivalent one, return its JSON."""
    data = body.read()
    if isinstance(container, MutableMapping):
        container["body"] = _new_body(data)
    return _decode_json(data)


def usage(response: Any) -> Usage:
    """A Converse response (boto3 dict or JSON), an InvokeModel response (its ``body`` is read
    and replaced) or an InvokeModel body's JSON -> :class:`Usage`; no usage -> unknown."""
    body = get(response, "body")
    if body is not None and not _is_event_stream(body) and not isinstance(body, list):
        response = _read_body(response, body) if _is_body(body) else _decode_json(body)
    u = get(response, "usage")
    if not isinstance(u, Mapping) and (u is None or isinstance(u, (str, int, float, bool, list))):
        return UNKNOWN_USAGE
    model = get(response, "model")
    return _usage_of(u, model_id(model))


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
        decoded = _decode_json(data)
        if decoded is None:
            try:
                decoded = _decode_json(base64.b64decode(data, validate=True))
            except (binascii.Error, ValueError):
                return None
        return decoded
    return _decode_json(data)


class StreamAccumulator:
    """Folds a Bedrock stream's events (cumulative, never summed).

    * ConverseStream: usage comes once, in the ``metadata`` event::

        {"metadata": {"usage": {"inputTokens": 12, "outputTokens": 40, "cacheReadInputTokens": 0,
                                "cacheWriteInputTokens": 2048,
                                "cacheDetails": [{"ttl": "5m", "inputTokens": 2048}]},
                      "metrics": {"latencyMs": 812}}}

    * InvokeModelWithResponseStream: each chunk is one model event; Anthropic bodies stream
      Messages events (folded by :class:`anthropic.StreamAccumulator`), Nova bodies stream
      Converse-shaped ones. The last chunk carries ``amazon-bedrock-invocationMetrics``
      (``inputTokenCount``, ``cacheReadInputTokenCount``, ...), used only when the model's own
      events reported no usage.
    """

    __slots__ = ("_anthropic", "_anthropic_seen", "_converse", "_metrics", "_model")

    def __init__(self, model: str | None = None) -> None:
        self._model = model
        self._anthropic = anthropic.StreamAccumulator()
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
            if has_field(meta, "usage"):
                self._converse = get(meta, "usage")
        metrics = get(payload, INVOCATION_METRICS)
        if metrics is not None:
            self._metrics = metrics

    def usage(self) -> Usage:
        if self._anthropic_seen:
            return _with_model(self._anthropic.usage(), self._model)
        if self._converse is not None:
            return converse_usage(self._converse, model=self._model)
        if self._metrics is not None:
            return converse_usage(self._metrics, model=self._model)
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
            if isinstance(value, list) or _is_event_stream(value):
                events = value
                break
    if events is None:
        return _with_model(usage(response), model)
    acc = StreamAccumulator(model)
    for event in events:
        acc.add(event)
    return acc.usage()


# -- live calls -----------------------------------------------------------------------------


def hook_event_stream(stream: Any, rec: Recorder) -> Any:
    """Observe a botocore ``EventStream`` in place; the caller iterates the same object.

    ``EventStream.__iter__`` pulls raw messages from ``_event_generator`` and parses each with
    ``_parse_event`` (which raises ``EventStreamError`` for an exception event). We replace
    both instance attributes: the parser feeds each parsed event to the recorder, and the
    raw generator finalises the call when it is exhausted, fails, or is closed (``break``
    and garbage collection close it); ``close()`` finalises too. :class:`Recorder` makes
    that exactly once.
    """
    raw_events: Iterator[Any] = stream._event_generator
    parse = stream._parse_event
    close = stream.close

    def parse_event(message: Any) -> Any:
        try:
            event = parse(message)
        except Exception as exc:
            rec.end(exc)
            raise
        if event:
            rec.item(event)
        return event

    def until_end() -> Iterator[Any]:
        error: BaseException | None = None
        try:
            yield from raw_events
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            rec.end(error)

    def close_stream() -> None:
        try:
            close()
        finally:
            rec.end()

    stream._event_generator = until_end()
    stream._parse_event = parse_event
    stream.close = close_stream
    return stream


def observe_result(result: Any, call: CallContext) -> Any:
    """boto3 result dicts: hook a stream, or read and replace an InvokeModel body.

    Returns ``NotImplemented`` for anything else (the shared path records it).
    """
    if not isinstance(result, MutableMapping):
        return NotImplemented
    model = request_model(call.request)
    for name in ("stream", "body"):
        value = result.get(name)
        if _is_event_stream(value):
            call.stream = True
            call.observing = True
            hook_event_stream(value, Recorder(call, StreamAccumulator(model)))
            return result
    body = result.get("body")
    if body is not None and _is_body(body):
        call.response_started()
        try:
            data = body.read()
        except Exception as exc:
            from botocore.response import StreamingBody

            result["body"] = StreamingBody(_FailedRead(exc), None)
            call.finish(UNKNOWN_USAGE, exc)
            return result
        result["body"] = _new_body(data)
        call.finish(_with_model(usage(_decode_json(data)), model), None)
        return result
    if "usage" in result:
        call.response_started()
        call.finish(_with_model(usage(result), model), None)
        return result
    return NotImplemented


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
    """Nova's per-checkpoint minimum, Claude's per model (``_cachefacts``)."""
    if not model:
        return 0
    return nova_min_tokens(model) or (anthropic_min_tokens(model) if "claude" in model else 0)


def read_tolerance(model: str | None) -> int:
    """Cache points are explicit and reads exact, as on the Anthropic API."""
    return 0
