"""OpenAI Chat Completions and Responses bodies as cache segments (see :mod:`._render`).

Cache order (PROVIDER_FACTS "OpenAI caching rules"): the settings that are rendered into the
start of the prompt, tools, instructions / system, then the conversation. Shapes from
openai-python: ``types/chat/completion_create_params.py`` (``messages``: role, content str |
parts, ``tool_calls``, ``tool_call_id``; ``tools``, legacy ``functions``;
``response_format``, ``reasoning_effort``, ``verbosity``) and
``types/responses/response_create_params.py`` (``input``: str | items, ``instructions``,
``prompt``, ``previous_response_id``, ``conversation``, ``text.format``, ``text.verbosity``,
``reasoning.effort``). A content part's marker is its ``prompt_cache_breakpoint``
(``{"mode": "explicit", "ttl"?}``, GPT-5.6+; earlier models ignore it).

Text parts (``text``, ``input_text``, ``output_text``) and string contents render as
``{"text": ...}``: the model is shown the text, not how the request spelled it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import facts
from ..tokens import estimate_json, estimate_text
from ._render import TEXT, TOOL_RESULT, TOOL_USE, Builder, Rendered, listed, newest_turn

__all__ = ["chat", "is_responses", "responses"]

MARKER = "prompt_cache_breakpoint"
_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})
# Request fields rendered into the start of the prompt (they invalidate everything after them),
# by path; service_tier only routes the request (another pool: a miss) and adds no tokens. The
# cache key's prompt_cache_key routes too: it is the cache model's routing key, not a block.
_CHAT_SETTINGS = (("response_format",), ("reasoning_effort",), ("verbosity",))
_RESPONSES_SETTINGS = (("text", "format"), ("text", "verbosity"), ("reasoning", "effort"))
_ROUTING = (("service_tier",),)
_TURN_ROLES = ("user", "tool", "function")
# Items the model produced or answered: function calls and their outputs (Responses), tool
# messages (Chat).
_ITEM_KINDS = {
    "function_call": TOOL_USE,
    "custom_tool_call": TOOL_USE,
    "function_call_output": TOOL_RESULT,
    "custom_tool_call_output": TOOL_RESULT,
}


def _path(body: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for step in path:
        value = value.get(step) if isinstance(value, Mapping) else None
    return value


def _settings(b: Builder, body: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    rendered = {".".join(p): v for p in paths if (v := _path(body, p)) is not None}
    routing = {".".join(p): v for p in _ROUTING if (v := _path(body, p)) is not None}
    if rendered or routing:
        b.add("settings", {**rendered, **routing}, tokens=estimate_json(rendered) if rendered else 0)


def _ttl(marker: Any, default: str) -> str:
    ttl = marker.get("ttl") if isinstance(marker, Mapping) else None
    return ttl if isinstance(ttl, str) else default


def _part(b: Builder, role: str, part: Any, marks: str | None) -> None:
    """One content part; ``marks`` is the ttl a marker without its own takes, or None when
    this model ignores markers."""
    if isinstance(part, str):
        b.add(role, {"text": part}, tokens=estimate_text(part))
        return
    if not isinstance(part, Mapping):
        b.add(role, part)
        return
    marker = part.get(MARKER)
    ttl = _ttl(marker, marks) if marker is not None and marks is not None else None
    rest = {k: v for k, v in part.items() if k != MARKER}
    text = rest.get("text")
    if rest.get("type") in _TEXT_TYPES and isinstance(text, str):
        others = {k: v for k, v in rest.items() if k not in ("type", "text")}
        b.add(role, {"text": text, **others}, ttl=ttl, tokens=estimate_text(text))
        return
    b.add(role, rest, ttl=ttl)


def _item(b: Builder, item: Any, marks: str | None) -> str:
    """One Chat message or Responses input item; returns its role."""
    if isinstance(item, str):
        b.add("user", {"text": item}, tokens=estimate_text(item))
        return "user"
    if not isinstance(item, Mapping):
        b.add("user", item)
        return "user"
    role = item.get("role")
    kind = item.get("type")
    if isinstance(role, str):
        parts_key = "content"
        # A message given back as an output item (type/id/status) renders like the plain form.
        skip = (
            {"role", "content", "type", "id", "status"} if kind in (None, "message") else {"role", "content"}
        )
        where = role
    else:
        # Function calls, their outputs, reasoning: items the model made or answered.
        where = "tool" if isinstance(kind, str) and kind.endswith("_output") else "assistant"
        parts_key = "output" if isinstance(item.get("output"), list) else ""
        skip = {parts_key}
    extras = {k: v for k, v in item.items() if k not in skip and v is not None}
    if where in ("tool", "function"):
        item_kind = TOOL_RESULT
    elif isinstance(kind, str) and kind in _ITEM_KINDS:
        item_kind = _ITEM_KINDS[kind]
    else:
        item_kind = TOOL_USE if "tool_calls" in extras or "function_call" in extras else TEXT
    if extras:
        b.add(where, extras, kind=item_kind)
    content = item.get(parts_key) if parts_key else None
    if isinstance(content, str):
        b.add(where, {"text": content}, tokens=estimate_text(content))
    elif isinstance(content, list):
        for part in content:
            _part(b, where, part, marks)
    elif not extras:
        b.add(where, None, tokens=0)
    return where


def _conversation(b: Builder, items: list[Any], marks: str | None) -> None:
    roles: list[str] = []
    starts: list[int] = []
    for item in items:
        starts.append(len(b))
        roles.append(_item(b, item, marks))
    first = newest_turn(roles, _TURN_ROLES)
    b.turn_start = starts[first] if first < len(starts) else len(b)


def _marks(body: Mapping[str, Any]) -> str | None:
    """The ttl a marker without its own takes (``prompt_cache_options.ttl``), or None for a
    model that takes no markers."""
    if not facts.explicit_caching(body.get("model") if isinstance(body.get("model"), str) else None):
        return None
    options = body.get("prompt_cache_options")
    ttl = options.get("ttl") if isinstance(options, Mapping) else None
    return ttl if isinstance(ttl, str) else facts.OPENAI_EXPLICIT_DEFAULT_TTL


def chat(body: Mapping[str, Any]) -> Rendered:
    """A Chat Completions body: settings, tools (and legacy functions), then the messages."""
    b = Builder()
    _settings(b, body, _CHAT_SETTINGS)
    for tool in [*listed(body.get("tools")), *listed(body.get("functions"))]:
        b.add("tools", tool)
    _conversation(b, listed(body.get("messages")), _marks(body))
    return b.done()


def is_responses(body: Mapping[str, Any]) -> bool:
    """Responses bodies have ``input``/``instructions``; Chat bodies have ``messages``."""
    if body.get("messages") is not None:
        return False
    keys = ("input", "instructions", "previous_response_id", "conversation", "prompt")
    return any(body.get(k) is not None for k in keys)


def responses(body: Mapping[str, Any]) -> Rendered:
    """A Responses body: settings, tools, the prompt template and instructions, the
    conversation it continues (``previous_response_id`` / ``conversation``), then ``input``."""
    marks = _marks(body)
    b = Builder()
    _settings(b, body, _RESPONSES_SETTINGS)
    for tool in listed(body.get("tools")):
        b.add("tools", tool)
    if body.get("prompt") is not None:
        b.add("system", {"prompt": body["prompt"]})
    for part in listed(body.get("instructions")):
        if isinstance(part, Mapping) and "role" in part:
            _item(b, part, marks)
        else:
            _part(b, "system", part, marks)
    context = {k: body[k] for k in ("previous_response_id", "conversation") if body.get(k) is not None}
    if context:
        b.add("context", context)
    value = body.get("input")
    _conversation(b, [value] if isinstance(value, str) else listed(value), marks)
    return b.done()
