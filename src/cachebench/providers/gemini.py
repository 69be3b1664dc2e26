"""Google Gemini through google-genai: ``client.models.generate_content`` /
``generate_content_stream`` and their ``client.aio.models`` twins.

Gemini caches implicitly (2.5 and newer): there are no markers, so a prompt gets one implicit
breakpoint on the last block before the newest user turn (or on the last block when there is
none). Blocks are in the order tools -> system instruction -> contents; an explicit
``cached_content`` name, when given, comes first.

Request shapes are normalised the way the SDK normalises them (``_transformers.t_contents``):
a string is one user turn, consecutive parts are grouped into one turn (a model turn when
they are function calls), and part keys are camelCased as on the wire, so a ``types.Part``
and its dict spelling fingerprint alike.

``generate_content`` and ``generate_content_stream`` take the same arguments, so
:func:`is_stream_request` cannot tell them apart: the shared path (``_stream``) marks the call
as a stream when the result is a generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..facts import GEMINI_IMPLICIT_TTL, gemini_min_tokens, gemini_model_name
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Block, Prompt, Usage
from ._base import UsageTable, field, get, has_field, is_record, read_usage

NAME = "gemini"
DEFAULT_TTL = GEMINI_IMPLICIT_TTL
METHODS = ("generate_content", "generate_content_stream")

# Usage fields, as data: google-genai's snake_case, then the REST camelCase. Source: google-genai
# types.py, class GenerateContentResponseUsageMetadata; REST ``usageMetadata``.
# ``prompt_token_count`` INCLUDES ``cached_content_token_count``; writes are not reported
# (billed as input); tool-use prompt tokens are billed as input and thoughts as output
# (genai-prices' google extractor maps them the same way).
USAGE = UsageTable(
    input_tokens=field("prompt_token_count", "promptTokenCount"),
    input_includes_cache=True,
    cache_read_tokens=field("cached_content_token_count", "cachedContentTokenCount"),
    cache_write_tokens=(),
    output_tokens=field("candidates_token_count", "candidatesTokenCount"),
    billed_as_input=(field("tool_use_prompt_token_count", "toolUsePromptTokenCount"),),
    billed_as_output=(field("thoughts_token_count", "thoughtsTokenCount"),),
    writes_reported=False,
)
USAGE_METADATA = ("usage_metadata", "usageMetadata")
MODEL_VERSION = ("model_version", "modelVersion")
# Request fields, wherever they sit: ``config`` (SDK) or the top level of a REST body.
SYSTEM_FIELDS = ("system_instruction", "systemInstruction")
TOOLS_FIELDS = ("tools",)
CACHED_CONTENT_FIELDS = ("cached_content", "cachedContent")
# Part members whose own keys are a fixed schema (camelCased too); other members' values
# (function args, responses) are user data and keep their keys.
_FIXED_SCHEMA = frozenset(
    {"inlineData", "fileData", "videoMetadata", "executableCode", "codeExecutionResult"}
)


# -- requests -------------------------------------------------------------------------------


def normalize_model(model: object) -> str | None:
    """A model name without its resource path (``facts``): ``models/gemini-2.5-flash``,
    ``projects/.../models/gemini-2.5-flash`` and ``google/gemini-2.5-flash`` are all
    ``gemini-2.5-flash``."""
    return gemini_model_name(model)


model_name = normalize_model


def request_model(request: Mapping[str, Any]) -> str | None:
    return normalize_model(request.get("model"))


def is_stream_request(request: Mapping[str, Any]) -> bool:
    """Always False: streaming is told by the method, not the arguments (see module docstring)."""
    return False


def _first(obj: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if has_field(obj, name):
            return get(obj, name)
    return None


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _camel_keys(value: Mapping[str, Any]) -> dict[str, Any]:
    return {_camel(str(k)): v for k, v in value.items() if v is not None}


def _opaque(obj: Any) -> Any:
    """An object with no JSON form (a PIL image, an MCP session): its type and, if any, bytes."""
    out: dict[str, Any] = {"$object": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    tobytes = getattr(obj, "tobytes", None)
    if callable(tobytes):
        out["data"] = tobytes()
    return out


def _plain(obj: Any) -> Any:
    try:
        return to_plain(obj)
    except TypeError:
        return _opaque(obj)


def _part(part: Any) -> Any:
    if isinstance(part, str):
        return {"text": part}
    if not isinstance(part, Mapping):
        part = _plain(part)
        if not isinstance(part, Mapping):
            return part
    out = _camel_keys(part)
    for key in _FIXED_SCHEMA.intersection(out):
        if isinstance(out[key], Mapping):
            out[key] = _camel_keys(out[key])
    return out


def _is_content(item: Any) -> bool:
    if isinstance(item, Mapping):
        return not item or "parts" in item or "role" in item
    return hasattr(item, "parts") and hasattr(item, "role")


def _is_call(part: Any) -> bool:
    return isinstance(part, Mapping) and part.get("functionCall") is not None


def _content(item: Any) -> tuple[str, list[Any]]:
    parts = get(item, "parts")
    return str(get(item, "role", "user")), [
        _part(p) for p in (parts if isinstance(parts, (list, tuple)) else [])
    ]


def _turn(parts: list[Any]) -> tuple[str, list[Any]]:
    return ("model" if any(_is_call(p) for p in parts) else "user"), parts


def contents_of(contents: Any) -> list[tuple[str, list[Any]]]:
    """``contents`` as (role, plain parts) turns, grouped as ``t_contents`` groups them."""
    if contents is None:
        return []
    if not isinstance(contents, (list, tuple)):
        return [_content(contents)] if _is_content(contents) else [_turn([_part(contents)])]
    turns: list[tuple[str, list[Any]]] = []
    pending: list[Any] = []
    for item in contents:
        if isinstance(item, (list, tuple)) or _is_content(item):
            if pending:
                turns.append(_turn(pending))
                pending = []
            turns.append(
                ("user", [_part(p) for p in item]) if isinstance(item, (list, tuple)) else _content(item)
            )
            continue
        part = _part(item)
        if pending and _is_call(part) != _is_call(pending[0]):
            turns.append(_turn(pending))
            pending = []
        pending.append(part)
    if pending:
        turns.append(_turn(pending))
    return turns


def _system_parts(system: Any) -> list[Any]:
    if system is None:
        return []
    parts: list[Any] = []
    for item in system if isinstance(system, (list, tuple)) else [system]:
        if _is_content(item):
            parts.extend(_content(item)[1])
        else:
            parts.append(_part(item))
    return parts


def _tool(tool: Any) -> Any:
    if callable(tool) and not isinstance(tool, Mapping) and not hasattr(tool, "model_dump"):
        # A Python function for automatic function calling: the SDK derives its declaration
        # from the signature and docstring.
        try:
            signature = str(inspect.signature(tool))
        except (TypeError, ValueError):
            signature = ""
        name = getattr(tool, "__qualname__", type(tool).__qualname__)
        return {
            "callable": f"{getattr(tool, '__module__', '')}.{name}",
            "signature": signature,
            "doc": inspect.getdoc(tool) or "",
        }
    plain = _plain(tool)
    if not isinstance(plain, Mapping):
        return plain
    out = _camel_keys(plain)
    decls = out.get("functionDeclarations")
    if isinstance(decls, list):
        out["functionDeclarations"] = [_camel_keys(d) if isinstance(d, Mapping) else d for d in decls]
    return out


def build_prompt(
    *, model: str | None, contents: Any, system: Any, tools: Any, cached_content: Any = None
) -> Prompt:
    blocks: list[Block] = []
    if isinstance(cached_content, str) and cached_content:
        blocks.append(Block("system", 0, {"cachedContent": cached_content}))
    for i, tool in enumerate(
        tools if isinstance(tools, (list, tuple)) else ([] if tools is None else [tools])
    ):
        blocks.append(Block("tools", i, _tool(tool)))
    offset = len([b for b in blocks if b.section == "system"])
    for i, part in enumerate(_system_parts(system)):
        blocks.append(Block("system", offset + i, part))
    turns = contents_of(contents)
    # The newest user turn: the trailing run of non-model turns (function responses are user turns).
    last_model = max((i for i, (role, _) in enumerate(turns) if role == "model"), default=-1)
    turn_start = len(blocks)
    index = 0
    for t_i, (role, parts) in enumerate(turns):
        if t_i == last_model + 1:
            turn_start = len(blocks)
        for part in parts:
            blocks.append(Block("messages", index, [role, part]))
            index += 1
    if last_model == len(turns) - 1:
        turn_start = len(blocks)
    if blocks:
        at = turn_start - 1 if turn_start > 0 else len(blocks) - 1
        b = blocks[at]
        blocks[at] = Block(b.section, b.index, b.payload, DEFAULT_TTL)
    return Prompt.of_blocks(NAME, model, blocks, turn_start, implicit=True)


def parse_request(request: Mapping[str, Any]) -> Prompt:
    """SDK keyword arguments (``model``, ``contents``, ``config``) or a REST body, whose
    ``systemInstruction``, ``tools`` and ``cachedContent`` sit at the top level."""
    config = request.get("config")
    source = config if config is not None else request
    return build_prompt(
        model=request_model(request),
        contents=request.get("contents"),
        system=_first(source, SYSTEM_FIELDS),
        tools=_first(source, TOOLS_FIELDS),
        cached_content=_first(source, CACHED_CONTENT_FIELDS),
    )


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    """``messages`` are ``contents``; ``system`` is a ``system_instruction``."""
    return build_prompt(model=normalize_model(model), contents=messages, system=system, tools=tools)


# -- usage ----------------------------------------------------------------------------------


def _metadata(response: Any) -> Any:
    meta = _first(response, USAGE_METADATA)
    return meta if is_record(meta) else None


def usage(response: Any) -> Usage:
    """A ``GenerateContentResponse``, its ``model_dump()`` or its REST JSON -> :class:`Usage`;
    no usage metadata -> unknown."""
    meta = _metadata(response)
    if meta is None:
        return UNKNOWN_USAGE
    return read_usage(USAGE, meta, model=normalize_model(_first(response, MODEL_VERSION)))


class StreamAccumulator:
    """Folds streamed ``GenerateContentResponse`` chunks.

    Every chunk's ``usage_metadata`` is the running total so far (the SDK also sums it across
    automatic-continuation hops, ``_extra_utils.StreamContinuation``): the last one wins,
    chunks are never summed. A chunk without usage leaves it as it was.
    """

    __slots__ = ("_meta", "_model")

    def __init__(self) -> None:
        self._meta: Any = None
        self._model: str | None = None

    def add(self, chunk: Any) -> None:
        meta = _metadata(chunk)
        if meta is not None:
            self._meta = meta
        model = normalize_model(_first(chunk, MODEL_VERSION))
        if model is not None:
            self._model = model

    def usage(self) -> Usage:
        if self._meta is None:
            return UNKNOWN_USAGE
        return read_usage(USAGE, self._meta, model=self._model)


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator()


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a response object, its snake_case or camelCase JSON, or a list of chunks."""
    if isinstance(response, (list, tuple)):
        acc = StreamAccumulator()
        for chunk in response:
            acc.add(chunk)
        return acc.usage()
    return usage(response)


# -- clients -------------------------------------------------------------------------------


def owns_client(client: Any) -> bool:
    return type(client).__module__.startswith("google.genai")


def _owns_body(body: Any) -> bool:
    if type(body).__module__.startswith("google.genai"):
        return True
    keys = (*USAGE_METADATA, *MODEL_VERSION, "candidates", "promptFeedback", "prompt_feedback")
    return isinstance(body, Mapping) and any(k in body for k in keys)


def owns_response(response: Any) -> bool:
    if isinstance(response, (list, tuple)):
        return any(_owns_body(c) for c in response)
    return _owns_body(response)


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch ``client.models`` and ``client.aio.models`` (or a ``Models`` object given directly):
    ``generate_content`` and ``generate_content_stream``, as instance attributes."""
    if hasattr(client, "generate_content"):
        targets = [client]
    else:
        targets = [getattr(client, "models", None), getattr(getattr(client, "aio", None), "models", None)]
    patches: list[tuple[Any, str, Any]] = []
    for obj in targets:
        if obj is None:
            continue
        patches.extend(hooks.patch_methods(obj, METHODS))
    return patches


def min_cacheable(model: str | None) -> int:
    """The model's minimum implicit-cache prefix (``facts``)."""
    return gemini_min_tokens(model)


def read_tolerance(model: str | None) -> int:
    """Implicit caching is best effort and reads in provider-chosen chunks; a shortfall smaller
    than the model's minimum cacheable prefix is not called a miss."""
    return min_cacheable(model)


def read_step(model: str | None) -> int:
    """Implicit reads are counted exactly (0: no rounding)."""
    return 0
