"""Where a cache marker can go in a request, and a copy of the request with markers set.

The providers' marker syntaxes (PROVIDER_FACTS; the adapters in :mod:`cachebench.providers`
read the same ones):

* Anthropic, and Bedrock ``InvokeModel`` with an Anthropic body: ``"cache_control":
  {"type": "ephemeral", "ttl"?: "1h"}`` on a tool, a system part or a message part. A string
  ``system`` or message ``content`` becomes one text part to carry it (the same prompt: the
  adapters and the provider render both spellings alike). The top-level ``cache_control``
  (automatic caching) is dropped: the plan places every breakpoint itself.
* Bedrock Converse: a ``{"cachePoint": {"type": "default", "ttl"?: "1h"}}`` item inserted
  after the tool, system part or message part it marks.
* OpenAI GPT-5.6+ (Chat Completions and Responses): ``"prompt_cache_breakpoint": {"mode":
  "explicit", "ttl"?: "12h"}`` on a content part; tools, instructions and request settings
  cannot carry one.
* Gemini, and OpenAI before GPT-5.6: implicit caching only; nothing can be marked.

:func:`slots` walks a request's blocks in the order the adapter's ``parse_request`` emits them
(one slot per :class:`~cachebench.types.Prompt` pair), so a plan's positions are the prompt's
positions; ``tests/test_plan.py`` checks the two walks agree on every provider's shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..facts import ANTHROPIC_DEFAULT_TTL, OPENAI_EXPLICIT_DEFAULT_TTL
from ..fingerprint import ordered
from ..providers._bedrock_request import decode_json

__all__ = ["Slot", "plain_copy", "set_breakpoints", "slots"]

ANTHROPIC_MARKER = "cache_control"
CONVERSE_MARKER = "cachePoint"
OPENAI_MARKER = "prompt_cache_breakpoint"


@dataclass(slots=True)
class Slot:
    """One block of a request: the list or object holding it and how a marker is set on it.

    ``how``: ``"key"`` (set the marker key on the block, a JSON object), ``"wrap"`` (the block is
    a string: replace it by a text part carrying the marker), ``"after"`` (insert a cache point
    item after it) or ``""`` (this block cannot carry a marker)."""

    holder: Any  # a list (index ``at``) or a dict (key ``at``)
    at: Any
    how: str
    text_type: str = "text"


def plain_copy(request: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``request`` as plain JSON (SDK objects dumped, keys in their order)."""
    plain = dict(request)
    body = plain.get("body")
    if isinstance(body, (bytes, bytearray)):  # an InvokeModel body: JSON text, kept as text
        plain["body"] = bytes(body).decode("utf-8", "replace")
    copied = orjson.loads(ordered(plain))
    if not isinstance(copied, dict):  # pragma: no cover - a mapping always dumps to an object
        raise TypeError("a request must be a JSON object")
    return copied


def _listed(holder: Any, key: str) -> list[Any]:
    value = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def _text_slot(holder: Any, at: Any, text_type: str = "text") -> Slot:
    value = holder[at]
    if isinstance(value, str):
        return Slot(holder, at, "wrap", text_type)
    if isinstance(value, dict):
        return Slot(holder, at, "key", text_type)
    return Slot(holder, at, "")


def _messages_slots(body: dict[str, Any]) -> list[Slot]:
    """The Anthropic Messages body (``_messages_body.build``): tools, system, message parts."""
    out: list[Slot] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        out += [_text_slot(tools, i) for i in range(len(tools))]
    system = body.get("system")
    if isinstance(system, list):
        out += [_text_slot(system, i) for i in range(len(system))]
    elif system is not None:
        out.append(_text_slot(body, "system"))
    for msg in _listed(body, "messages"):
        if not isinstance(msg, dict):
            out.append(Slot(None, None, ""))
            continue
        content = msg.get("content")
        if isinstance(content, list):
            out += [_text_slot(content, i) for i in range(len(content))]
        elif content is not None:
            out.append(_text_slot(msg, "content"))
    return out


def _converse_slots(body: dict[str, Any]) -> list[Slot]:
    """Bedrock Converse (``_bedrock_request.converse_prompt``): cache point items skipped."""
    out: list[Slot] = []
    config = body.get("toolConfig")
    lists = [_listed(config, "tools") if isinstance(config, dict) else [], _listed(body, "system")]
    lists += [_listed(msg, "content") if isinstance(msg, dict) else [] for msg in _listed(body, "messages")]
    for listed in lists:
        for i, item in enumerate(listed):
            if isinstance(item, dict) and item.get(CONVERSE_MARKER) is not None:
                continue
            out.append(Slot(listed, i, "after"))
    return out


def _openai_slots(body: dict[str, Any]) -> list[Slot]:
    """OpenAI Chat Completions and Responses (``_openai_request.parse_request``)."""
    from ..providers._openai_request import _settings, is_responses_request

    out: list[Slot] = []
    if _settings(body):
        out.append(Slot(None, None, ""))
    responses = is_responses_request(body)
    tools = _listed(body, "tools") + ([] if responses else _listed(body, "functions"))
    out += [Slot(None, None, "")] * len(tools)
    if responses:
        system = (1 if body.get("prompt") is not None else 0) + len(_listed(body, "instructions"))
        out += [Slot(None, None, "")] * system
        if body.get("previous_response_id") is not None or body.get("conversation") is not None:
            out.append(Slot(None, None, ""))
        conversation = body.get("input")
        if isinstance(conversation, str):
            body["input"] = conversation = [{"role": "user", "content": conversation}]
    else:
        conversation = body.get("messages")
    for item in conversation if isinstance(conversation, list) else []:
        out += _openai_item_slots(item, responses)
    return out


def _openai_item_slots(item: Any, responses: bool) -> list[Slot]:
    if not isinstance(item, dict):
        return [Slot(None, None, "")]
    role = item.get("role")
    if isinstance(role, str):
        key = "content"
        skip = (
            {"role", "content", "type", "id", "status"}
            if item.get("type", "message") == "message"
            else {"role", "content"}
        )
    elif isinstance(item.get("output"), list):
        key, skip = "output", {"output"}
    else:
        key, skip = "", set()
    out: list[Slot] = []
    if any(k not in skip and v is not None for k, v in item.items()):
        out.append(Slot(None, None, ""))  # the item's other fields: one block of their own
    content = item.get(key) if key else None
    text_type = ("output_text" if role == "assistant" else "input_text") if responses else "text"
    if isinstance(content, list):
        out += [_text_slot(content, i, text_type) for i in range(len(content))]
    elif isinstance(content, str):
        out.append(_text_slot(item, key, text_type))
    elif content is not None:
        out.append(Slot(None, None, ""))
    if not out:
        out.append(Slot(None, None, ""))
    return out


def _walk(provider: str, body: dict[str, Any]) -> list[Slot]:
    if provider == "anthropic":
        return _messages_slots(body)
    if provider == "bedrock":
        if isinstance(body.get("body"), (str, bytes, bytearray)):
            inner = decode_json(body["body"])
            return _messages_slots(inner) if isinstance(inner, dict) else []
        return _converse_slots(body)
    if provider == "openai":
        return _openai_slots(body)
    return []  # gemini: implicit only


def slots(request: Mapping[str, Any], provider: str) -> list[Slot]:
    """The request's blocks in the adapter's order, on a plain copy of ``request``."""
    return _walk(provider, plain_copy(request))


def _marker(provider: str, ttl: str) -> dict[str, Any]:
    if provider == "openai":
        return (
            {"mode": "explicit"} if ttl == OPENAI_EXPLICIT_DEFAULT_TTL else {"mode": "explicit", "ttl": ttl}
        )
    if provider == "bedrock":
        return {"type": "default"} if ttl == ANTHROPIC_DEFAULT_TTL else {"type": "default", "ttl": ttl}
    return {"type": "ephemeral"} if ttl == ANTHROPIC_DEFAULT_TTL else {"type": "ephemeral", "ttl": ttl}


def _strip_markers(provider: str, body: dict[str, Any]) -> None:
    """Remove every cache marker the request carries (the plan's replace them)."""
    key = OPENAI_MARKER if provider == "openai" else ANTHROPIC_MARKER
    if provider != "openai":
        body.pop(ANTHROPIC_MARKER, None)

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            value.pop(key, None)
            for v in value.values():
                clean(v)
        elif isinstance(value, list):
            value[:] = [v for v in value if not (isinstance(v, dict) and v.get(CONVERSE_MARKER) is not None)]
            for v in value:
                clean(v)
        return value

    for field in ("tools", "system", "messages", "input", "toolConfig"):
        if field in body:
            clean(body[field])


def set_breakpoints(request: Mapping[str, Any], provider: str, marks: Mapping[int, str]) -> dict[str, Any]:
    """A copy of ``request`` whose only breakpoints are ``marks`` (block position -> TTL).

    Raises ``ValueError`` for a position the request does not have or that cannot carry a
    marker; never changes ``request`` itself."""
    body = plain_copy(request)
    inner_key = None
    target = body
    if provider == "bedrock" and isinstance(body.get("body"), (str, bytes, bytearray)):
        decoded = decode_json(body["body"])
        if not isinstance(decoded, dict):
            raise ValueError("the InvokeModel body is not a JSON object")
        inner_key, target = "body", decoded
        provider_walk = "anthropic"
    else:
        provider_walk = provider
    _strip_markers(provider_walk, target)
    found = _walk(provider_walk, target)
    inserts: list[tuple[list[Any], int, dict[str, Any]]] = []
    for position, ttl in sorted(marks.items()):
        if not 0 <= position < len(found) or found[position].how == "":
            raise ValueError(f"block {position} of this {provider} request cannot carry a cache marker")
        slot = found[position]
        marker = _marker("anthropic" if inner_key is not None else provider, ttl)
        key = OPENAI_MARKER if provider == "openai" else ANTHROPIC_MARKER
        if slot.how == "after":
            inserts.append((slot.holder, slot.at, {CONVERSE_MARKER: marker}))
        elif slot.how == "wrap":
            part = {"type": slot.text_type, "text": slot.holder[slot.at], key: marker}
            slot.holder[slot.at] = part if isinstance(slot.holder, list) else [part]
        else:
            slot.holder[slot.at][key] = marker
    for holder, at, item in sorted(inserts, key=lambda x: (id(x[0]), -x[1])):
        holder.insert(at + 1, item)
    if inner_key is not None:
        original = request[inner_key]
        data = orjson.dumps(target)
        body[inner_key] = data.decode() if isinstance(original, str) else data
    return body
