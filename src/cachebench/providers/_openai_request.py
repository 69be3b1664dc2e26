"""OpenAI requests as a :class:`Prompt`: Chat Completions messages and Responses input, the
settings that invalidate a cache entry, and the breakpoints the provider would use.

Cache order is tools -> system/instructions -> conversation. Models before GPT-5.6 cache
implicitly (one implicit breakpoint: the end of the conversation before the newest user
turn; retention ``in_memory`` or ``24h``). GPT-5.6 and later take explicit
``prompt_cache_breakpoint`` markers on content parts (TTL ``30m``/``12h``); with
``prompt_cache_options.mode`` implicit (the default) they also keep the implicit breakpoint.

The adapter is :mod:`cachebench.providers.openai`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import (
    OPENAI_DEFAULT_RETENTION,
    OPENAI_EXPLICIT_DEFAULT_TTL,
    OPENAI_EXPLICIT_TTLS,
    OPENAI_RETENTIONS,
    explicit_caching,
    openai_default_retention,
    openai_implicit_end,
)
from ..fingerprint import to_plain
from ..types import Block, Prompt, Section
from ._base import SENTINELS, get, items, text_form

NAME = "openai"
MARKER = "prompt_cache_breakpoint"
# Implicit retention before GPT-5.6 when the request names none (detect.ttl_seconds: 600 s).
DEFAULT_TTL = OPENAI_DEFAULT_RETENTION
# GPT-5.6+: ``prompt_cache_options.ttl`` default, and the TTLs a breakpoint may carry.
EXPLICIT_DEFAULT_TTL = OPENAI_EXPLICIT_DEFAULT_TTL
EXPLICIT_TTLS = OPENAI_EXPLICIT_TTLS
RETENTIONS = OPENAI_RETENTIONS

# Request fields that invalidate a cache entry without being content (the reasons
# ``prompt_cache_diagnostics`` names: text format, reasoning effort, verbosity,
# prompt_cache_key, service tier). They are rendered into the start of the prompt (or, for
# prompt_cache_key, route it), so they form a leading ``["settings", {...}]`` block rather than
# ``Prompt.settings`` (which is hashed only before the conversation). Name -> path.
SETTINGS_FIELDS = {
    "response_format": ("response_format",),
    "text_format": ("text", "format"),
    "reasoning_effort": ("reasoning_effort",),
    "reasoning": ("reasoning", "effort"),
    "verbosity": ("verbosity",),
    "text_verbosity": ("text", "verbosity"),
    "prompt_cache_key": ("prompt_cache_key",),
    "service_tier": ("service_tier",),
}


def _field(request: Any, name: str) -> Any:
    """A request field, None when absent, null or a Stainless ``omit``/``NOT_GIVEN`` sentinel."""
    value = get(request, name)
    if value is None or type(value).__name__ in SENTINELS:
        return None
    return value


def _plain_dict(value: Any) -> Any:
    if isinstance(value, (dict, str)) or value is None:
        return value
    return to_plain(value)


def _strip(part: Any) -> tuple[Any, Any]:
    """A content part without its cache marker, and the marker (None when unmarked)."""
    part = _plain_dict(part)
    if not isinstance(part, dict) or MARKER not in part:
        return part, None
    return {k: v for k, v in part.items() if k != MARKER}, part[MARKER]


def _marker_ttl(marker: Any, default: str) -> str:
    ttl = get(marker, "ttl")
    return ttl if ttl in EXPLICIT_TTLS else default


def normalize_model(model: object) -> str | None:
    """The model name as the API and the price tables spell it (no normalisation fact applies:
    an Azure deployment name is the caller's own)."""
    return model if isinstance(model, str) else None


def request_model(request: Mapping[str, Any]) -> str | None:
    return normalize_model(_field(request, "model"))


def is_stream_request(request: Mapping[str, Any]) -> bool:
    return bool(_field(request, "stream"))


def _settings(request: Mapping[str, Any]) -> Any:
    found: dict[str, Any] = {}
    for name, path in SETTINGS_FIELDS.items():
        value: Any = request
        for step in path:
            value = _field(value, step)
            if value is None:
                break
        if value is not None:
            found[name] = to_plain(value)
    return found or None


_SYSTEM_ROLES = ("system", "developer")
_TURN_ROLES = ("user", "tool", "function")


def _item_role(item: Any) -> str:
    """The role of a Chat message or a Responses input item (items without one are the model's
    own output, e.g. ``function_call``, ``reasoning``; ``*_output`` items are tool results)."""
    role = get(item, "role")
    if isinstance(role, str):
        return role
    kind = get(item, "type")
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"
    return "assistant"


def _item_blocks(item: Any) -> tuple[str, list[tuple[Any, Any]]]:
    """``(role, [(payload, marker), ...])`` for one message or input item, in render order."""
    if isinstance(item, str):
        return "user", [(["user", item], None)]
    item = _plain_dict(item)
    if not isinstance(item, dict):
        return "user", [(["user", item], None)]
    role = _item_role(item)
    out: list[tuple[Any, Any]] = []
    if "role" in item:
        parts_key = "content"
    elif isinstance(item.get("output"), list):
        parts_key = "output"  # a tool result given as content parts (which may carry markers)
    else:
        parts_key = ""
    skip: tuple[str, ...] = ("role", parts_key)
    if "role" in item and item.get("type", "message") == "message":
        # A message given back as an output item (type/id/status) renders like the plain form.
        skip = ("role", parts_key, "type", "id", "status")
    extras = {k: v for k, v in item.items() if k not in skip and v is not None}
    if extras:
        out.append(([role, extras], None))
    content = item.get(parts_key) if parts_key else None
    if isinstance(content, str):
        out.append(([role, content], None))
    elif content is not None:
        for part in items(content):
            payload, marker = _strip(part)
            out.append(([role, text_form(payload)], marker))
    if not out:
        out.append(([role, None], None))
    return role, out


def _conversation(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return items(value)


def build_prompt(
    *,
    model: str | None,
    tools: Any,
    system: Any,
    conversation: Any,
    context: Any = None,
    retention: Any = None,
    cache_options: Any = None,
    settings: Any = None,
) -> Prompt:
    """Blocks in cache order and the breakpoints the provider would use.

    ``system`` is instructions (Responses) or a system prompt given apart from the
    conversation; ``context`` is server-side state the conversation continues
    (``previous_response_id``, ``conversation``); ``conversation`` holds Chat messages or
    Responses input items.
    """
    blocks: list[Block] = []
    markers: list[Any] = []
    counters = {"tools": 0, "system": 0, "messages": 0}

    def add(section: Section, payload: Any, marker: Any = None) -> None:
        blocks.append(Block(section, counters[section], payload))
        markers.append(marker)
        counters[section] += 1

    if settings:
        # Rendered into (or routing) the start of the prompt: a change invalidates everything.
        add("system", ["settings", settings])
    for tool in items(tools):
        add("tools", _plain_dict(tool))
    for part in items(system):
        payload, marker = _strip(part)
        add("system", ["system", text_form(payload)], marker)
    if context:
        add("messages", ["context", context])
    # The newest turn: the trailing run of user/tool messages (system messages and the
    # model's own output end it).
    spans: list[tuple[str, int]] = []
    for item in _conversation(conversation):
        role, parts = _item_blocks(item)
        spans.append((role, len(blocks)))
        section: Section = "system" if role in _SYSTEM_ROLES else "messages"
        for payload, marker in parts:
            add(section, payload, marker)
    turn_start = len(blocks)
    for role, start in reversed(spans):
        if role not in _TURN_ROLES:
            break
        turn_start = start

    explicit_model = explicit_caching(model)
    if explicit_model:
        request_ttl = get(cache_options, "ttl")
        ttl = request_ttl if request_ttl in EXPLICIT_TTLS else EXPLICIT_DEFAULT_TTL
        implicit_mode = get(cache_options, "mode", "implicit") != "explicit"
    else:
        ttl = retention if retention in RETENTIONS else openai_default_retention(model)
        implicit_mode = True
    marked = explicit_model and any(m is not None for m in markers)
    if marked:
        for i, marker in enumerate(markers):
            if marker is not None:
                b = blocks[i]
                blocks[i] = Block(b.section, b.index, b.payload, _marker_ttl(marker, ttl))
    if implicit_mode and blocks:
        at = openai_implicit_end(model, turn_start, len(blocks)) - 1
        if blocks[at].ttl is None:
            b = blocks[at]
            blocks[at] = Block(b.section, b.index, b.payload, ttl)
    # Before GPT-5.6 the provider matches the longest cached prefix (implicit); from 5.6 on,
    # entries match at breakpoints only, the implicit one included.
    implicit = implicit_mode and not marked and not explicit_model
    return Prompt.of_blocks(NAME, model, blocks, turn_start, implicit=implicit)


def _context(request: Mapping[str, Any]) -> Any:
    found: dict[str, Any] = {}
    previous = _field(request, "previous_response_id")
    if previous is not None:
        found["previous_response_id"] = previous
    conversation = _field(request, "conversation")
    if conversation is not None:
        found["conversation"] = to_plain(conversation)
    return found or None


def is_responses_request(request: Mapping[str, Any]) -> bool:
    """Responses requests have ``input``/``instructions``; Chat requests have ``messages``."""
    if _field(request, "messages") is not None:
        return False
    return any(
        _field(request, k) is not None
        for k in ("input", "instructions", "previous_response_id", "conversation", "prompt")
    )


def parse_request(request: Mapping[str, Any]) -> Prompt:
    model = request_model(request)
    common: dict[str, Any] = {
        "model": model,
        "retention": _field(request, "prompt_cache_retention"),
        "cache_options": _field(request, "prompt_cache_options"),
        "settings": _settings(request),
    }
    if is_responses_request(request):
        system: list[Any] = []
        template = _field(request, "prompt")
        if template is not None:
            system.append({"prompt": to_plain(template)})
        system.extend(items(_field(request, "instructions")))
        return build_prompt(
            tools=_field(request, "tools"),
            system=system,
            conversation=_field(request, "input"),
            context=_context(request),
            **common,
        )
    tools = items(_field(request, "tools")) + items(_field(request, "functions"))
    return build_prompt(tools=tools, system=None, conversation=_field(request, "messages"), **common)


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    """``fingerprint()``: ``system`` is a system prompt (text, content parts, or system
    messages) and ``messages`` Chat messages or Responses input; a system prompt gives the same
    blocks as the equivalent ``{"role": "system"}`` message at the start of ``messages``."""
    conversation = _conversation(messages)
    sys_items = items(system)
    if sys_items and all(isinstance(_plain_dict(s), dict) and "role" in _plain_dict(s) for s in sys_items):
        conversation = sys_items + conversation
    elif system is not None:
        conversation = [{"role": "system", "content": system}, *conversation]
    return build_prompt(model=model, tools=tools, system=None, conversation=conversation)
