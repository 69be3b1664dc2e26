"""Gemini ``generateContent`` bodies as cache segments (see :mod:`._render`).

Cache order (PROVIDER_FACTS "Gemini"; implicit caching keys the prompt's prefix): an explicit
``cachedContent`` name, ``tools``, ``systemInstruction``, then ``contents``. The REST body
(``GenerateContentRequest``: ``contents`` [``Content``: role, parts], ``systemInstruction``
``Content``, ``tools`` [``Tool``: ``functionDeclarations`` ...], ``cachedContent``) is
lowerCamelCase as google-genai sends it; Google's JSON parser also takes the proto's
snake_case names, so both spellings render alike. Keys of the part members whose schema is
fixed (``inlineData``, ``fileData`` ...) are field names too; function ``args`` and
``response`` values are the caller's data and keep their keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tokens import estimate_json
from ._render import TEXT, TOOL_RESULT, TOOL_USE, Builder, Rendered, listed, newest_turn

__all__ = ["gemini"]

_FIXED_SCHEMA = frozenset(
    {"inlineData", "fileData", "videoMetadata", "executableCode", "codeExecutionResult"}
)
_KINDS = {"functionCall": TOOL_USE, "functionResponse": TOOL_RESULT}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _fields(value: Mapping[str, Any]) -> dict[str, Any]:
    return {_camel(str(k)): v for k, v in value.items() if v is not None}


def _field(body: Mapping[str, Any], name: str) -> Any:
    """A field in either spelling (``systemInstruction`` / ``system_instruction``)."""
    value = body.get(name)
    if value is None:
        value = body.get("".join("_" + c.lower() if c.isupper() else c for c in name))
    return value


def _part(part: Any) -> Any:
    if isinstance(part, str):
        return {"text": part}
    if not isinstance(part, Mapping):
        return part
    out = _fields(part)
    for key in _FIXED_SCHEMA.intersection(out):
        if isinstance(out[key], Mapping):
            out[key] = _fields(out[key])
    return out


def _tool(tool: Any) -> Any:
    if not isinstance(tool, Mapping):
        return tool
    out = _fields(tool)
    declarations = out.get("functionDeclarations")
    if isinstance(declarations, list):
        out["functionDeclarations"] = [_fields(d) if isinstance(d, Mapping) else d for d in declarations]
    return out


def _parts(content: Any) -> list[Any]:
    if isinstance(content, Mapping):
        return listed(content.get("parts"))
    return listed(content)


def gemini(body: Mapping[str, Any]) -> Rendered:
    """A ``generateContent`` body: cachedContent, tools, systemInstruction, then contents."""
    b = Builder()
    cached = _field(body, "cachedContent")
    if isinstance(cached, str) and cached:
        b.add("cachedContent", cached, tokens=estimate_json({"cachedContent": cached}))
    for tool in listed(body.get("tools")):
        b.add("tools", _tool(tool))
    for part in _parts(_field(body, "systemInstruction")):
        b.add("system", _part(part))
    contents = [c for c in listed(body.get("contents")) if isinstance(c, Mapping)]
    roles = [str(c.get("role") or "user") for c in contents]
    first = newest_turn(roles, ("user",))
    for i, (role, content) in enumerate(zip(roles, contents, strict=True)):
        if i == first:
            b.start_turn()
        for part in _parts(content):
            rendered = _part(part)
            kind = TEXT
            if isinstance(rendered, Mapping):
                kind = next((k for name, k in _KINDS.items() if name in rendered), TEXT)
            b.add(role, rendered, kind=kind)
    return b.done()
