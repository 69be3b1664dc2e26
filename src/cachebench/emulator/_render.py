"""The emulator's own request renderer: a provider request body as the cache segments the
provider would key its cache by, written from the providers' documented request shapes (never
through the tracker's adapters, so a parsing bug on one side shows up as a disagreement).

Each block becomes one :class:`~cachebench.cachemodel.Segment`:

* its bytes: ``[where, block]`` as compact JSON in the body's own key order (``where`` is the
  section or the message's role), with the cache marker removed. Providers cache what they
  render, so a re-ordered tool schema or ``tool_use`` input is another prefix. Plain text is
  rendered alike whatever its spelling: a string content and one text block are the same
  prompt (``{"type": "text", "text": ...}``, the Messages API's own form);
* its tokens: :func:`cachebench.tokens.estimate_block` of the block without its marker;
* its marker's TTL, and its kind (``tool_use`` / ``tool_result``: a run of them is one lookback
  position).

Cache order (PROVIDER_FACTS "Anthropic caching rules", "Bedrock"): tools -> system ->
messages. Request settings that invalidate the messages part (Anthropic ``tool_choice`` and
``thinking``; Converse ``toolConfig.toolChoice`` and ``additionalModelRequestFields.thinking``)
are rendered into the first message segment. OpenAI and Gemini bodies are rendered in
:mod:`._render_openai` and :mod:`._render_gemini` with the builder defined here.

The wire modules validate a body before it is rendered; the renderer still never raises on an
odd shape (a block that is not an object renders as the JSON value it is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from .. import facts
from ..cachemodel import Segment
from ..tokens import estimate_block

__all__ = ["MEMO", "Builder", "Rendered", "SegmentMemo", "anthropic", "converse"]

TOOL_USE = "tool_use"
TOOL_RESULT = "tool_result"
TEXT = "text"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A request as the provider's cache sees it.

    ``turn_start`` is the first segment of the newest user (or tool) turn, ``len(segments)``
    when there is none; ``automatic`` the ttl of Anthropic's top-level ``cache_control``;
    ``wheres`` each segment's section or role (``"tools"``, ``"system"``, ``"user"``, ...), the
    sections cache diagnostics compare (:mod:`._diagnostics`)."""

    segments: tuple[Segment, ...]
    turn_start: int
    automatic: str | None = None
    wheres: tuple[str, ...] = ()


def _bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # not JSON (a body is, but a caller may hand anything): still a block
        return repr(value).encode()


# Types a JSON body holds and nothing else: an SDK object, a date or a subclass of str / int /
# dict / list is rejected (TypeError), so two blocks with the same bytes are the same values.
_PLAIN = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


class SegmentMemo:
    """The segments of blocks rendered lately, by their rendered bytes: tools and system prompts
    repeat in every request, and their token estimate is the costly part of a segment.

    Bounded (emptied when it holds ``max_bytes`` of blocks or ``max_blocks`` blocks). Shared by
    the emulator's threads: plain dict reads and writes, each atomic under the GIL; a race can
    only lose an entry or miscount the size (until the next emptying), never give a wrong one."""

    __slots__ = ("_segments", "_size", "max_blocks", "max_bytes")

    def __init__(self, *, max_bytes: int = 32 * 2**20, max_blocks: int = 2**16) -> None:
        self._segments: dict[bytes, Segment] = {}
        self._size = 0
        self.max_bytes = max_bytes
        self.max_blocks = max_blocks

    def __len__(self) -> int:
        return len(self._segments)

    def get(self, data: bytes) -> Segment | None:
        return self._segments.get(data)

    def put(self, data: bytes, segment: Segment) -> None:
        if len(data) > self.max_bytes:
            return
        if self._size + len(data) > self.max_bytes or len(self._segments) >= self.max_blocks:
            self._segments.clear()
            self._size = 0
        self._segments[data] = segment
        self._size += len(data)

    def clear(self) -> None:
        self._segments.clear()
        self._size = 0


#: The renderer's memo (one per process).
MEMO = SegmentMemo()


def _segment(rendered: list[Any], block: Any, ttl: str | None, kind: str, tokens: int) -> Segment:
    """The segment of ``rendered`` (``[where, block]``, with the settings if any): from the memo
    when its bytes were rendered lately (JSON values only) and its tokens are the estimate."""
    if tokens < 0:
        try:
            data = orjson.dumps(rendered, option=_PLAIN)
        except TypeError:
            pass
        else:
            seen = MEMO.get(data)
            if seen is None:
                seen = Segment(xxhash.xxh3_64_digest(data), estimate_block(block), ttl, kind)
                MEMO.put(data, seen)
            elif seen.ttl != ttl or seen.kind != kind:
                seen = Segment(seen.digest, seen.tokens, ttl, kind)
            return seen
        tokens = estimate_block(block)
    return Segment(xxhash.xxh3_64_digest(_bytes(rendered)), tokens, ttl, kind)


class Builder:
    """Segments in cache order: :meth:`add` a block, :meth:`mark` the last one a breakpoint."""

    def __init__(self, *, settings: Any = None, settings_before: frozenset[str] = frozenset()) -> None:
        self._segments: list[Segment] = []
        self._wheres: list[str] = []
        # Rendered into the first segment whose ``where`` is not in ``settings_before``.
        self._settings = settings
        self._settings_before = settings_before
        self.turn_start = -1

    def __len__(self) -> int:
        return len(self._segments)

    def add(
        self, where: str, block: Any, *, ttl: str | None = None, kind: str = TEXT, tokens: int = -1
    ) -> None:
        """One block; ``tokens`` defaults to the estimate of ``block``."""
        rendered: list[Any] = [where, block]
        if self._settings is not None and where not in self._settings_before:
            rendered.append({"settings": self._settings})
            self._settings = None
        self._segments.append(_segment(rendered, block, ttl, kind, tokens))
        self._wheres.append(where)

    def mark(self, ttl: str) -> None:
        """The last block is a breakpoint with ``ttl`` (a marker before any block marks nothing)."""
        if self._segments:
            last = self._segments[-1]
            self._segments[-1] = Segment(last.digest, last.tokens, ttl, last.kind)

    def start_turn(self) -> None:
        """The newest turn starts with the next block."""
        self.turn_start = len(self._segments)

    def done(self, automatic: str | None = None) -> Rendered:
        n = len(self._segments)
        start = n if self.turn_start < 0 else self.turn_start
        return Rendered(tuple(self._segments), start, automatic, tuple(self._wheres))


def listed(value: Any) -> list[Any]:
    """A field that holds blocks: a list as is, one block as a list of one, absent as empty."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def newest_turn(roles: list[str], turn_roles: tuple[str, ...]) -> int:
    """Index of the first message of the trailing run whose roles are ``turn_roles``
    (``len(roles)`` when the last message is not one)."""
    start = len(roles)
    while start > 0 and roles[start - 1] in turn_roles:
        start -= 1
    return start


# -- Anthropic Messages (also Bedrock InvokeModel with an Anthropic body) ---------------------
# anthropic-sdk-python types/message_create_params.py: tools (ToolUnionParam), system
# (str | TextBlockParam[]), messages (MessageParam: role, content str | ContentBlockParam[]),
# cache_control (top level), tool_choice, thinking. A block's marker is its cache_control.

_ANTHROPIC_MARKER = "cache_control"
_ANTHROPIC_SETTINGS = ("tool_choice", "thinking")


def _anthropic_ttl(marker: Any) -> str | None:
    if not isinstance(marker, Mapping):
        return None
    ttl = marker.get("ttl")
    return ttl if isinstance(ttl, str) else facts.ANTHROPIC_DEFAULT_TTL


def _anthropic_kind(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if not isinstance(kind, str):
        return TEXT
    # tool_use, server_tool_use, mcp_tool_use; tool_result, web_search_tool_result, ...
    if kind == TOOL_USE or kind.endswith("_tool_use"):
        return TOOL_USE
    if kind == TOOL_RESULT or kind.endswith("_tool_result"):
        return TOOL_RESULT
    return kind


def _anthropic_block(b: Builder, where: str, block: Any) -> None:
    if isinstance(block, str):
        b.add(where, {"type": "text", "text": block})
        return
    if type(block) is not dict and not isinstance(block, Mapping):
        b.add(where, block)
        return
    ttl = None
    rest = block
    if _ANTHROPIC_MARKER in block:
        ttl = _anthropic_ttl(block[_ANTHROPIC_MARKER])
        rest = {k: v for k, v in block.items() if k != _ANTHROPIC_MARKER}
    elif type(block) is not dict:
        rest = dict(block.items())
    if rest.get("type") == "text":
        # A text block is its text: the order its two keys were written in renders nothing.
        rest = {"type": "text", "text": rest.get("text"), **rest}
    b.add(where, rest, ttl=ttl, kind=_anthropic_kind(rest))


def anthropic(body: Mapping[str, Any]) -> Rendered:
    """A Messages body: tools, then system, then every message's content blocks."""
    found = {k: body[k] for k in _ANTHROPIC_SETTINGS if body.get(k) is not None}
    b = Builder(settings=found or None, settings_before=frozenset({"tools", "system"}))
    for tool in listed(body.get("tools")):
        _anthropic_block(b, "tools", tool)
    for block in listed(body.get("system")):
        _anthropic_block(b, "system", block)
    messages = [m for m in listed(body.get("messages")) if isinstance(m, Mapping)]
    first = newest_turn([str(m.get("role")) for m in messages], ("user",))
    for i, message in enumerate(messages):
        if i == first:
            b.start_turn()
        role = str(message.get("role", "user"))
        for block in listed(message.get("content")):
            _anthropic_block(b, role, block)
    return b.done(_anthropic_ttl(body.get(_ANTHROPIC_MARKER)))


# -- Bedrock Converse --------------------------------------------------------------------------
# botocore data/bedrock-runtime/2023-09-30/service-2.json: ConverseRequest toolConfig.tools
# (Tool: toolSpec | cachePoint), system (SystemContentBlock: text | guardContent | cachePoint),
# messages (Message: role, content ContentBlock[]: text | image | document | toolUse |
# toolResult | reasoningContent | cachePoint). A cachePoint is a block of its own that marks the
# block before it.

_CACHE_POINT = "cachePoint"
_CONVERSE_KINDS = {"toolUse": TOOL_USE, "toolResult": TOOL_RESULT}


def _converse_block(b: Builder, where: str, block: Any) -> None:
    if isinstance(block, Mapping) and block.get(_CACHE_POINT) is not None:
        point = block[_CACHE_POINT]
        ttl = point.get("ttl") if isinstance(point, Mapping) else None
        b.mark(ttl if isinstance(ttl, str) else facts.BEDROCK_DEFAULT_TTL)
        return
    kind = TEXT
    if isinstance(block, Mapping):
        kind = next((k for name, k in _CONVERSE_KINDS.items() if name in block), TEXT)
    b.add(where, block, kind=kind)


def converse(body: Mapping[str, Any]) -> Rendered:
    """A Converse body: toolConfig.tools, then system, then every message's content blocks."""
    tool_config = body.get("toolConfig")
    tool_config = tool_config if isinstance(tool_config, Mapping) else {}
    extra = body.get("additionalModelRequestFields")
    found: dict[str, Any] = {}
    if tool_config.get("toolChoice") is not None:
        found["toolChoice"] = tool_config["toolChoice"]
    if isinstance(extra, Mapping) and extra.get("thinking") is not None:
        found["thinking"] = extra["thinking"]
    b = Builder(settings=found or None, settings_before=frozenset({"tools", "system"}))
    for tool in listed(tool_config.get("tools")):
        _converse_block(b, "tools", tool)
    for block in listed(body.get("system")):
        _converse_block(b, "system", block)
    messages = [m for m in listed(body.get("messages")) if isinstance(m, Mapping)]
    first = newest_turn([str(m.get("role")) for m in messages], ("user",))
    for i, message in enumerate(messages):
        if i == first:
            b.start_turn()
        role = str(message.get("role", "user"))
        for block in listed(message.get("content")):
            _converse_block(b, role, block)
    return b.done()
