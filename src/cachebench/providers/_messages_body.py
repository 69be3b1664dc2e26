"""The Anthropic Messages body: what the Anthropic API, ``AnthropicBedrock``/``AnthropicVertex``
and Bedrock ``InvokeModel`` with an Anthropic body share. Its prompt (blocks in cache order,
breakpoints, settings), its usage fields as data, and its stream's usage.

Cache order is tools -> system -> messages. A breakpoint is a block with ``cache_control``
(``{"type": "ephemeral", "ttl": "5m" | "1h"}``), or the request's top-level
``cache_control`` (automatic caching: it marks the last cacheable block).

Read by the adapters :mod:`cachebench.providers.anthropic` and
:mod:`cachebench.providers.bedrock`; neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import ANTHROPIC_DEFAULT_TTL, ANTHROPIC_TTLS
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Prompt, Usage
from ._base import (
    TEXT_TYPES,
    TtlSplit,
    UsageTable,
    as_int,
    field,
    fields,
    get,
    has_field,
    is_record,
    items,
    read_usage,
    text_form,
)

__all__ = [
    "COUNT_FIELDS",
    "DEFAULT_TTL",
    "MARKER",
    "SETTINGS_FIELDS",
    "USAGE",
    "StreamAccumulator",
    "build",
    "build_prompt",
    "diagnostics",
    "request_settings",
]

MARKER = "cache_control"
DEFAULT_TTL = ANTHROPIC_DEFAULT_TTL
# Request fields that invalidate the messages part of an entry without being blocks.
SETTINGS_FIELDS = ("tool_choice", "thinking")
_SPLIT = "cache_creation"  # the TTL split of the cache writes

# Usage fields, as data. Source: anthropic-sdk-python src/anthropic/types/usage.py
# (class Usage) and types/cache_creation.py (class CacheCreation). ``input_tokens`` EXCLUDES
# cache tokens. Anthropic-compatible servers that do not track writes (llama.cpp's) send
# neither the write count nor its split: a reported 0 and an absent field are different
# answers, so writes count as reported only when one of them is present.
USAGE = UsageTable(
    input_tokens=field("input_tokens"),
    input_includes_cache=False,
    cache_read_tokens=field("cache_read_input_tokens"),
    cache_write_tokens=field("cache_creation_input_tokens"),
    output_tokens=field("output_tokens"),
    ttl_split=TtlSplit(
        (_SPLIT,),
        counts=(("5m", "ephemeral_5m_input_tokens"), ("1h", "ephemeral_1h_input_tokens")),
    ),
    writes_reported=None,
)
# The usage counts' field names: a body carrying any of them reports like the Anthropic API.
COUNT_FIELDS = USAGE.names()


def _ttl(marker: Any) -> str | None:
    if marker is None:
        return None
    ttl = marker.get("ttl") if type(marker) is dict else get(marker, "ttl")
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
    stripped = block.copy()
    del stripped[MARKER]
    return stripped, _ttl(marker)


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
    return build(provider, model, tools, system, messages, automatic, settings)


def build(
    provider: str, model: str | None, tools: Any, system: Any, messages: Any, automatic: Any, settings: Any
) -> Prompt:
    """:func:`build_prompt` with positional arguments: the caller's hot path.

    One pass, a tuple per block, nothing else built per block. A plain text part
    (:func:`text_form`) is recognised inline, where most parts are."""
    pairs: list[tuple[str, Any]] = []
    append = pairs.append
    marks: list[tuple[int, str]] = []
    text_types = TEXT_TYPES
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
                if (
                    len(part) == 2
                    and part.get("type") in text_types
                    and type(text := part.get("text")) is str
                ):
                    append(("system", text))
                else:
                    append(("system", part))
            else:
                payload, ttl = _strip(part)
                if ttl is not None:
                    marks.append((len(pairs), ttl))
                append(("system", text_form(payload)))
    # The newest user turn: the trailing run of user messages (tool results are user turns).
    turn_start = -1
    for msg in messages if type(messages) is list else items(messages):
        if type(msg) is dict:
            role = msg.get("role", "user")
            content = msg.get("content")
        else:
            role = get(msg, "role", "user")
            content = get(msg, "content")
        if role == "assistant":
            turn_start = -1
        elif turn_start < 0:
            turn_start = len(pairs)
        if type(content) is str:
            append(("messages", (role, content)))
            continue
        for part in content if type(content) is list else items(content):
            if type(part) is dict and MARKER not in part:
                if (
                    len(part) == 2
                    and part.get("type") in text_types
                    and type(text := part.get("text")) is str
                ):
                    append(("messages", (role, text)))
                else:
                    append(("messages", (role, part)))
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


def diagnostics(message: Any) -> dict[str, Any] | None:
    """The message's ``diagnostics`` (``cache_miss_reason``, ...) as plain JSON, if any."""
    diag = fields(message).get("diagnostics")
    if diag is None:
        return None
    plain = to_plain(diag)
    return plain if isinstance(plain, dict) and plain else None


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
        for name in COUNT_FIELDS:
            if has_field(u, name):
                self._fields[name] = as_int(get(u, name))
        if has_field(u, _SPLIT):
            self._split = get(u, _SPLIT)

    def add(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "message_start":
            message = get(event, "message")
            model = get(message, "model")
            if isinstance(model, str):
                self._model = model
            if has_field(message, "usage"):
                self._take(get(message, "usage"))
            self._diag = diagnostics(message) or self._diag
        elif kind == "message_delta":
            if has_field(event, "usage"):
                self._take(get(event, "usage"))
            self._diag = diagnostics(get(event, "delta")) or self._diag

    def usage(self) -> Usage:
        if not self._seen:
            return UNKNOWN_USAGE
        counts: dict[str, Any] = dict(self._fields)
        if self._split is not None:
            counts[_SPLIT] = self._split
        return read_usage(USAGE, counts, model=self._model, diagnostics=self._diag)
