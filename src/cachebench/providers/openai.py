"""OpenAI Chat Completions and Responses APIs (also ``AzureOpenAI`` and ``AsyncOpenAI``).

Cache order is tools -> system/instructions -> conversation. Models before GPT-5.6 cache
implicitly (one implicit breakpoint: the end of the conversation before the newest user
turn; retention ``in_memory`` or ``24h``; hits in 128-token steps; writes free and not
reported). GPT-5.6 and later take explicit ``prompt_cache_breakpoint`` markers on content
parts (TTL ``30m``/``12h``) and report writes; with ``prompt_cache_options.mode`` implicit
(the default) they also keep the implicit breakpoint.

Usage is *inclusive*: Chat ``prompt_tokens`` and Responses ``input_tokens`` count cached
and written tokens too; the uncached part is what is left after both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from .._cachefacts import OPENAI_DEFAULT_MIN, OPENAI_READ_STEP, RETENTION_24H_SINCE, openai_min_tokens
from .._cachefacts import explicit_caching as explicit_caching
from .._cachefacts import model_version as model_version
from .._guard import logger
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Block, Prompt, Section, Usage
from ._base import as_int, get, get_path, has_field, text_form
from .anthropic import stainless_instrument

NAME = "openai"
MARKER = "prompt_cache_breakpoint"
# Implicit retention before GPT-5.6 when the request names none (detect.ttl_seconds: 600 s).
DEFAULT_TTL = "in_memory"
# GPT-5.6+: ``prompt_cache_options.ttl`` default, and the TTLs a breakpoint may carry.
EXPLICIT_DEFAULT_TTL = "30m"
EXPLICIT_TTLS = ("30m", "12h")
RETENTIONS = ("in_memory", "24h")

# Usage fields, as data. Sources: openai-python src/openai/types/completion_usage.py
# (CompletionUsage, PromptTokensDetails) and types/responses/response_usage.py (ResponseUsage,
# InputTokensDetails). The total input counts include cache reads and writes.
CHAT_USAGE_FIELDS = {
    "total_input_tokens": ("prompt_tokens",),
    "cache_read_tokens": ("prompt_tokens_details", "cached_tokens"),
    "cache_write_tokens": ("prompt_tokens_details", "cache_write_tokens"),
    "cache_write_ttl_split": ("prompt_tokens_details", "cache_write_tokens_details"),
    "output_tokens": ("completion_tokens",),
}
RESPONSES_USAGE_FIELDS = {
    "total_input_tokens": ("input_tokens",),
    "cache_read_tokens": ("input_tokens_details", "cached_tokens"),
    "cache_write_tokens": ("input_tokens_details", "cache_write_tokens"),
    "cache_write_ttl_split": ("input_tokens_details", "cache_write_tokens_details"),
    "output_tokens": ("output_tokens",),
}
# Fields that tell a Chat-shaped usage object from a Responses-shaped one.
_CHAT_USAGE_MARKS = ("prompt_tokens", "prompt_tokens_details", "completion_tokens")
_OBJECTS = ("chat.completion", "chat.completion.chunk", "text_completion", "response")

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
_SENTINELS = frozenset({"Omit", "NotGiven", "Omitted"})
_CACHED_PATHS = ("/chat/completions", "/responses")

# Model generations and minimums are data in ``_cachefacts`` (shared with the cache model);
# these names stay importable from here.
READ_STEP_IMPLICIT = OPENAI_READ_STEP
DEFAULT_MIN_CACHEABLE = OPENAI_DEFAULT_MIN
min_cacheable = openai_min_tokens


def read_tolerance(model: str | None) -> int:
    """Before GPT-5.6 hits are rounded down to 128-token steps; from 5.6 on they are exact."""
    return 0 if explicit_caching(model) else READ_STEP_IMPLICIT


# -- requests ----------------------------------------------------------------------------------


def _field(request: Any, name: str) -> Any:
    """A request field, None when absent, null or a Stainless ``omit``/``NOT_GIVEN`` sentinel."""
    value = get(request, name)
    if value is None or type(value).__name__ in _SENTINELS:
        return None
    return value


def _items(value: Any) -> list[Any]:
    if value is None or type(value).__name__ in _SENTINELS:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    plain = to_plain(value)
    return plain if isinstance(plain, list) else [plain]


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


def request_model(request: Mapping[str, Any]) -> str | None:
    model = _field(request, "model")
    return model if isinstance(model, str) else None


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
        for part in _items(content):
            payload, marker = _strip(part)
            out.append(([role, text_form(payload)], marker))
    if not out:
        out.append(([role, None], None))
    return role, out


def _conversation(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return _items(value)


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
    for tool in _items(tools):
        add("tools", _plain_dict(tool))
    for part in _items(system):
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
        ttl = retention if retention in RETENTIONS else _default_retention(model)
        implicit_mode = True
    marked = explicit_model and any(m is not None for m in markers)
    if marked:
        for i, marker in enumerate(markers):
            if marker is not None:
                b = blocks[i]
                blocks[i] = Block(b.section, b.index, b.payload, _marker_ttl(marker, ttl))
    if implicit_mode and blocks:
        # The implicit breakpoint: the end of the conversation before the newest turn (the
        # whole prompt when there is nothing before it).
        at = turn_start - 1 if turn_start > 0 else len(blocks) - 1
        if blocks[at].ttl is None:
            b = blocks[at]
            blocks[at] = Block(b.section, b.index, b.payload, ttl)
    return Prompt(NAME, model, tuple(blocks), turn_start, implicit=not marked and implicit_mode)


def _default_retention(model: str | None) -> str:
    version = model_version(model)
    return "24h" if version is not None and version >= RETENTION_24H_SINCE else DEFAULT_TTL


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
        system.extend(_items(_field(request, "instructions")))
        return build_prompt(
            tools=_field(request, "tools"),
            system=system,
            conversation=_field(request, "input"),
            context=_context(request),
            **common,
        )
    tools = _items(_field(request, "tools")) + _items(_field(request, "functions"))
    return build_prompt(tools=tools, system=None, conversation=_field(request, "messages"), **common)


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    """``fingerprint()``: ``system`` is a system prompt (text, content parts, or system
    messages) and ``messages`` Chat messages or Responses input; a system prompt gives the same
    blocks as the equivalent ``{"role": "system"}`` message at the start of ``messages``."""
    conversation = _conversation(messages)
    sys_items = _items(system)
    if sys_items and all(isinstance(_plain_dict(s), dict) and "role" in _plain_dict(s) for s in sys_items):
        conversation = sys_items + conversation
    elif system is not None:
        conversation = [{"role": "system", "content": system}, *conversation]
    return build_prompt(model=model, tools=tools, system=None, conversation=conversation)


# -- usage ---------------------------------------------------------------------------------


def _diagnostics(response: Any) -> dict[str, Any] | None:
    diag = get(response, "prompt_cache_diagnostics")
    if diag is None:
        return None
    plain = to_plain(diag)
    return {"prompt_cache_diagnostics": plain} if plain else None


def _is_chat_usage(u: Any, kind: Any) -> bool:
    if any(has_field(u, name) for name in _CHAT_USAGE_MARKS):
        return True
    if has_field(u, "input_tokens") or has_field(u, "input_tokens_details"):
        return False
    return bool(kind != "response")


def usage_from_fields(
    u: Any, *, model: str | None = None, kind: Any = None, diagnostics: dict[str, Any] | None = None
) -> Usage:
    """Normalise a Chat ``usage`` or a Responses ``usage`` (object or dict; inclusive input)."""
    fields = CHAT_USAGE_FIELDS if _is_chat_usage(u, kind) else RESPONSES_USAGE_FIELDS
    total = as_int(get_path(u, fields["total_input_tokens"]))
    read = as_int(get_path(u, fields["cache_read_tokens"]))
    write_field = get_path(u, fields["cache_write_tokens"])
    write = as_int(write_field)
    # Models before GPT-5.6 report no writes; a 0 they may send still means "not reported".
    writes_reported = write_field is not None and (write > 0 or model is None or explicit_caching(model))
    return Usage(
        input_tokens=max(total - read - write, 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=0,  # OpenAI's TTLs are 30m and 12h; none is priced as a 1 h write
        output_tokens=as_int(get_path(u, fields["output_tokens"])),
        known=True,
        writes_reported=writes_reported,
        ttl_split_reported=get_path(u, fields["cache_write_ttl_split"]) is not None,
        model=model,
        diagnostics=diagnostics,
    )


def _usage_obj(response: Any) -> Any:
    u = get(response, "usage")
    if u is None or isinstance(u, (str, int, float, bool, list)):
        return None
    return u


def usage(response: Any) -> Usage:
    """A ``ChatCompletion`` or ``Response`` (or their JSON) -> :class:`Usage`; no usage -> unknown."""
    u = _usage_obj(response)
    if u is None:
        return UNKNOWN_USAGE
    model = get(response, "model")
    return usage_from_fields(
        u,
        model=model if isinstance(model, str) else None,
        kind=get(response, "object"),
        diagnostics=_diagnostics(response),
    )


class StreamFailed(Exception):
    """A Responses stream that ended in an ``error`` or ``response.failed`` event.

    The SDK yields those events instead of raising, so the call looks successful to the
    caller; :meth:`StreamAccumulator.error` reports it so the call can count as an error.
    """


def _failure(kind: str, err: Any) -> StreamFailed:
    code = get(err, "code") or get(err, "type") or kind
    message = get(err, "message") or ""
    return StreamFailed(f"{code}: {message}" if message else str(code))


class StreamAccumulator:
    """Folds Chat chunks or Responses stream events into the final :class:`Usage`.

    Chat: usage only in the last chunk (``choices: []``), and only when the request set
    ``stream_options={"include_usage": True}``; without it the usage is unknown, never 0.
    Responses: ``response.usage`` of the ``response.completed`` event (``response.incomplete``
    and ``response.failed`` carry it too).
    """

    __slots__ = ("_diag", "_error", "_kind", "_model", "_usage")

    def __init__(self) -> None:
        self._usage: Any = None
        self._kind: Any = None
        self._model: str | None = None
        self._diag: dict[str, Any] | None = None
        self._error: StreamFailed | None = None

    def add(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "error":
            self._error = _failure(kind, event)
            return
        if isinstance(kind, str) and kind.startswith("response."):
            response = get(event, "response")
            if response is None:
                return
            if kind == "response.failed":
                self._error = _failure(kind, get(response, "error"))
            self._take(response, "response")
            return
        self._take(event, get(event, "object"))

    def error(self) -> StreamFailed | None:
        """The failure a Responses stream reported in-band (None when it did not)."""
        return self._error

    def _take(self, source: Any, kind: Any) -> None:
        model = get(source, "model")
        if isinstance(model, str) and model:
            self._model = model
        u = _usage_obj(source)
        if u is not None:
            self._usage = u
            self._kind = kind
        self._diag = _diagnostics(source) or self._diag

    def usage(self) -> Usage:
        if self._usage is None:
            return UNKNOWN_USAGE
        return usage_from_fields(self._usage, model=self._model, kind=self._kind, diagnostics=self._diag)


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator()


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a ``ChatCompletion``/``Response`` or its JSON, a list of stream chunks or
    events, or a finished ``chat.completions.stream()``/``responses.stream()`` helper."""
    if isinstance(response, (list, tuple)):
        acc = StreamAccumulator()
        for event in response:
            acc.add(event)
        return acc.usage()
    state = getattr(response, "_state", None)
    if state is not None and not isinstance(response, Mapping):
        completed = getattr(state, "_completed_response", None)  # ResponseStream
        if completed is not None:
            return usage(completed)
        try:
            snapshot = getattr(response, "current_completion_snapshot", None)  # ChatCompletionStream
        except Exception:
            snapshot = None  # not started
        if snapshot is not None:
            return usage(snapshot)
    return usage(response)


# -- clients -------------------------------------------------------------------------------


def owns_client(client: Any) -> bool:
    return type(client).__module__.split(".")[0] == "openai"


def owns_response(response: Any) -> bool:
    if type(response).__module__.split(".")[0] == "openai":
        return True
    if isinstance(response, Mapping):
        kind = response.get("type")
        return response.get("object") in _OBJECTS or (isinstance(kind, str) and kind.startswith("response."))
    if isinstance(response, (list, tuple)) and response:
        return owns_response(response[0])
    return False


def _is_cacheable_call(options: Any) -> bool:
    url = get(options, "url", "")
    method = str(get(options, "method", "post")).lower()
    if method != "post" or not isinstance(url, str):
        return False
    return url.split("?", 1)[0].rstrip("/").endswith(_CACHED_PATHS)


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch the client's ``request`` so every Chat Completions and Responses call is observed.

    ``create`` (sync, async, ``stream=True``), ``chat.completions.stream()``,
    ``responses.stream()``, ``parse()``, ``with_raw_response`` and ``with_streaming_response``
    all end in ``client.request(cast_to, options, stream=, stream_cls=)`` with a relative
    ``options.url`` (``AzureOpenAI`` adds its ``/deployments/...`` prefix later). Clients made
    from it with ``copy()``/``with_options()`` (a new instance each) are instrumented too.
    """
    patches = stainless_instrument(client, hooks, _is_cacheable_call)
    for name in ("copy", "with_options"):
        original = getattr(client, name, None)
        if callable(original):
            setattr(client, name, _instrumenting_copy(original, hooks))
            patches.append((client, name, original))
    return patches


def _instrumenting_copy(original: Callable[..., Any], hooks: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original(*args, **kwargs)
        try:
            stainless_instrument(new, hooks, _is_cacheable_call)
        except Exception as exc:  # never break the caller's with_options()
            logger.warning("cachebench: could not instrument a copied client: %r", exc)
        return new

    return copy
