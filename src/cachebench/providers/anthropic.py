"""Anthropic Messages API (also ``AnthropicBedrock``, ``AnthropicVertex`` and Bedrock
``InvokeModel`` with an Anthropic body, which report usage the same way).

Cache order is tools -> system -> messages. A breakpoint is a block with ``cache_control``
(``{"type": "ephemeral", "ttl": "5m" | "1h"}``), or the request's top-level
``cache_control`` (automatic caching: it marks the last cacheable block).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..facts import ANTHROPIC_DEFAULT_TTL, ANTHROPIC_TTLS, anthropic_min_tokens
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Prompt, Usage
from ._base import as_int, fields, get, has_field, is_record, items, text_form

NAME = "anthropic"
MARKER = "cache_control"
DEFAULT_TTL = ANTHROPIC_DEFAULT_TTL

# Usage fields, as data. Source: anthropic-sdk-python src/anthropic/types/usage.py
# (class Usage) and types/cache_creation.py (class CacheCreation). ``input_tokens`` excludes
# cache tokens.
USAGE_FIELDS = {
    "input_tokens": ("input_tokens",),
    "cache_read_tokens": ("cache_read_input_tokens",),
    "cache_write_tokens": ("cache_creation_input_tokens",),
    "cache_write_5m_tokens": ("cache_creation", "ephemeral_5m_input_tokens"),
    "cache_write_1h_tokens": ("cache_creation", "ephemeral_1h_input_tokens"),
    "output_tokens": ("output_tokens",),
}
(_IN,) = USAGE_FIELDS["input_tokens"]
(_READ,) = USAGE_FIELDS["cache_read_tokens"]
(_WRITE,) = USAGE_FIELDS["cache_write_tokens"]
(_SPLIT, _W5M) = USAGE_FIELDS["cache_write_5m_tokens"]
(_SPLIT_1H, _W1H) = USAGE_FIELDS["cache_write_1h_tokens"]
(_OUT,) = USAGE_FIELDS["output_tokens"]
assert _SPLIT == _SPLIT_1H
# Request fields that invalidate the messages part of an entry without being blocks.
SETTINGS_FIELDS = ("tool_choice", "thinking")
_MESSAGES_PATHS = ("/v1/messages",)


def _ttl(marker: Any) -> str | None:
    if marker is None:
        return None
    ttl = get(marker, "ttl")
    return ttl if ttl in ANTHROPIC_TTLS else DEFAULT_TTL


def _strip(block: Any) -> tuple[Any, str | None]:
    """The block without its cache marker, and the marker's TTL (None when unmarked)."""
    if isinstance(block, str):
        return block, None
    if not isinstance(block, dict):
        block = to_plain(block)
        if not isinstance(block, dict):
            return block, None
    marker = block.get(MARKER)
    if marker is None:
        if MARKER in block:
            return {k: v for k, v in block.items() if k != MARKER}, None
        return block, None
    return {k: v for k, v in block.items() if k != MARKER}, _ttl(marker)


def build_prompt(
    *,
    provider: str,
    model: str | None,
    tools: Any,
    system: Any,
    messages: Any,
    automatic: Any = None,
    settings: Any = None,
) -> Prompt:
    """The :class:`Prompt` of an Anthropic-shaped request's parts (also Bedrock's
    ``InvokeModel`` with an Anthropic body)."""
    return _build(provider, model, tools, system, messages, automatic, settings)


def _build(
    provider: str, model: str | None, tools: Any, system: Any, messages: Any, automatic: Any, settings: Any
) -> Prompt:
    # Hot path: one pass, a tuple per block, nothing else built per block.
    pairs: list[tuple[str, Any]] = []
    append = pairs.append
    marks: list[tuple[int, str]] = []
    if tools is not None:
        for tool in tools if type(tools) is list else items(tools):
            if type(tool) is dict and MARKER not in tool:
                append(("tools", tool))
            else:
                payload, ttl = _strip(tool)
                if ttl is not None:
                    marks.append((len(pairs), ttl))
                append(("tools", payload))
    if system is not None:
        for part in system if type(system) is list else items(system):
            if type(part) is dict and MARKER not in part:
                append(("system", text_form(part)))
            else:
                payload, ttl = _strip(part)
                if ttl is not None:
                    marks.append((len(pairs), ttl))
                append(("system", text_form(payload)))
    msgs = messages if type(messages) is list else items(messages)
    # The newest user turn: the trailing run of user messages (tool results are user turns).
    first_turn = 0
    for m_i in range(len(msgs) - 1, -1, -1):
        msg = msgs[m_i]
        role = msg.get("role", "user") if type(msg) is dict else get(msg, "role", "user")
        if role == "assistant":
            first_turn = m_i + 1
            break
    turn_start = -1
    for m_i, msg in enumerate(msgs):
        if type(msg) is dict:
            role = msg.get("role", "user")
            content = msg.get("content")
        else:
            role = get(msg, "role", "user")
            content = get(msg, "content")
        if m_i == first_turn and role != "assistant":
            turn_start = len(pairs)
        if type(content) is str:
            append(("messages", (role, content)))
            continue
        for part in content if type(content) is list else items(content):
            if type(part) is dict and MARKER not in part:
                append(("messages", (role, text_form(part))))
            elif type(part) is str:
                append(("messages", (role, part)))
            else:
                payload, ttl = _strip(part)
                if ttl is not None:
                    marks.append((len(pairs), ttl))
                append(("messages", (role, text_form(payload))))
    if turn_start < 0:
        turn_start = len(pairs)
    if automatic is not None and pairs:
        last = len(pairs) - 1
        if marks and marks[-1][0] == last:
            marks.pop()
        marks.append((last, _ttl(automatic) or DEFAULT_TTL))
    return Prompt(provider, model, pairs, marks, turn_start, False, settings)


def request_settings(request: Mapping[str, Any]) -> Any:
    """The request's ``SETTINGS_FIELDS`` as plain JSON, or None when it has none."""
    for k in SETTINGS_FIELDS:
        if request.get(k) is not None:
            return {k: to_plain(request[k]) for k in SETTINGS_FIELDS if request.get(k) is not None}
    return None


def request_model(request: Mapping[str, Any]) -> str | None:
    model = request.get("model")
    return model if isinstance(model, str) else None


def parse_request(request: Mapping[str, Any]) -> Prompt:
    model = request.get("model")
    return _build(
        NAME,
        model if isinstance(model, str) else None,
        request.get("tools"),
        request.get("system"),
        request.get("messages"),
        request.get(MARKER),
        request_settings(request),
    )


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    return build_prompt(provider=NAME, model=model, tools=tools, system=system, messages=messages)


def is_stream_request(request: Mapping[str, Any]) -> bool:
    return bool(request.get("stream"))


def _diagnostics(response: Any) -> dict[str, Any] | None:
    diag = fields(response).get("diagnostics")
    if diag is None:
        return None
    plain = to_plain(diag)
    return plain if isinstance(plain, dict) and plain else None


def usage_from_fields(usage: Any, *, model: str | None = None, diagnostics: Any = None) -> Usage:
    """Normalise an Anthropic ``usage`` object or dict (exclusive ``input_tokens``).

    ``writes_reported`` is False when the usage carries neither ``cache_creation_input_tokens``
    nor ``cache_creation``: the server reports reads only, so its hit ratio is measured against
    the expected read, as for implicit caching.
    """
    f = fields(usage)
    raw_write = f.get(_WRITE)
    write = as_int(raw_write)
    split = f.get(_SPLIT)
    write_1h = 0
    if split is not None:
        sf = fields(split)
        write_1h = as_int(sf.get(_W1H))
        if not write:
            write = as_int(sf.get(_W5M)) + write_1h
    return Usage(
        as_int(f.get(_IN)),
        as_int(f.get(_READ)),
        write,
        min(write_1h, write),
        as_int(f.get(_OUT)),
        True,
        # Anthropic-compatible servers that do not track writes (llama.cpp's) send no write
        # count at all; a reported 0 and an absent field are different answers.
        raw_write is not None or split is not None,
        split is not None,
        model,
        diagnostics,
    )


def usage(response: Any) -> Usage:
    """A ``Message`` (or its JSON) -> :class:`Usage`; no usage at all -> unknown."""
    f = fields(response)
    u = f.get("usage")
    if not is_record(u):
        return UNKNOWN_USAGE
    model = f.get("model")
    diag = f.get("diagnostics")
    return usage_from_fields(
        u,
        model=model if isinstance(model, str) else None,
        diagnostics=_diagnostics(response) if diag is not None else None,
    )


class StreamAccumulator:
    """Folds Messages SSE events.

    ``message_start.message.usage`` carries input, cache counts and the TTL split;
    ``message_delta.usage`` carries *cumulative* totals that overwrite (never add), and may
    restate input and cache counts. (anthropic-sdk-python:
    ``lib/streaming/_messages.py::accumulate_event``.)
    """

    __slots__ = ("_diag", "_fields", "_model", "_seen", "_split")

    def __init__(self) -> None:
        self._fields: dict[str, int] = {}
        self._split: Any = None
        self._model: str | None = None
        self._seen = False
        self._diag: dict[str, Any] | None = None

    def _take(self, u: Any) -> None:
        # {"input_tokens": 12, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 2048,
        #  "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
        #  "output_tokens": 1}
        if not is_record(u):
            return  # not a usage object ("usage": "x"): it tells nothing
        self._seen = True
        for name in (
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
        ):
            if has_field(u, name):
                self._fields[name] = as_int(get(u, name))
        if has_field(u, "cache_creation"):
            self._split = get(u, "cache_creation")

    def add(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "message_start":
            message = get(event, "message")
            model = get(message, "model")
            if isinstance(model, str):
                self._model = model
            if has_field(message, "usage"):
                self._take(get(message, "usage"))
            self._diag = _diagnostics(message) or self._diag
        elif kind == "message_delta":
            if has_field(event, "usage"):
                self._take(get(event, "usage"))
            self._diag = _diagnostics(get(event, "delta")) or self._diag

    def usage(self) -> Usage:
        if not self._seen:
            return UNKNOWN_USAGE
        fields: dict[str, Any] = dict(self._fields)
        if self._split is not None:
            fields["cache_creation"] = self._split
        return usage_from_fields(fields, model=self._model, diagnostics=self._diag)


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a Message or its JSON, a finished ``MessageStream``, or a list of events."""
    snapshot = getattr(response, "current_message_snapshot", None)
    if snapshot is not None:
        return usage(snapshot)
    if isinstance(response, (list, tuple)):
        acc = StreamAccumulator()
        for event in response:
            acc.add(event)
        return acc.usage()
    return usage(response)


def min_cacheable(model: str | None) -> int:
    """The model's minimum cacheable prefix (``facts``); below it markers are ignored."""
    return anthropic_min_tokens(model)


def read_tolerance(model: str | None) -> int:
    """Reads are exact on Anthropic: any shortfall against a live entry is a miss."""
    return 0


def read_step(model: str | None) -> int:
    """Reads are whole entries, counted exactly (0: no rounding)."""
    return 0


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator()


def owns_client(client: Any) -> bool:
    return type(client).__module__.split(".")[0] == "anthropic"


def owns_response(response: Any) -> bool:
    if type(response).__module__.split(".")[0] == "anthropic":
        return True
    return isinstance(response, Mapping) and response.get("type") == "message"


def _is_messages_call(options: Any) -> bool:
    url = get(options, "url", "")
    method = str(get(options, "method", "post")).lower()
    return method == "post" and isinstance(url, str) and url.rstrip("/").endswith(_MESSAGES_PATHS)


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch the client's ``request`` so every Messages call passes through ``observe``.

    Every resource method and helper (``create``, ``stream()``, ``with_raw_response``) of a
    Stainless client ends in ``client.request(cast_to, options, stream=, stream_cls=)``;
    the request body is ``options.json_data``.
    """
    return stainless_instrument(client, hooks, _is_messages_call)


def stainless_instrument(
    client: Any, hooks: Any, wanted: Callable[[Any], bool]
) -> list[tuple[Any, str, Any]]:
    """Shared by the Stainless SDKs (anthropic, openai): one patch on ``client.request``."""
    original = client.request
    client.request = hooks.stainless(original, wanted)
    return [(client, "request", original)]
