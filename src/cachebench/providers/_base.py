"""What every provider adapter shares: field access over objects *and* plain JSON, the
usage reader that applies a provider's field table, and the adapter shape.

Each module in ``providers/`` exposes the same names (see :class:`Adapter`); provider
differences live in their request/usage tables, not in the tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Prompt, Usage

__all__ = [
    "SENTINELS",
    "TEXT_TYPES",
    "Accumulator",
    "Adapter",
    "Path",
    "ResultShape",
    "Spellings",
    "TtlSplit",
    "UsageTable",
    "as_int",
    "field",
    "fields",
    "get",
    "get_path",
    "has_field",
    "is_record",
    "items",
    "read_usage",
    "text_form",
]

_MISSING = object()
# isinstance(x, Mapping) goes through ABCMeta.__instancecheck__ (a Python-level call) every time;
# this is called ~40 times per tracked call, so decide once per type.
_IS_MAPPING: dict[type, bool] = {dict: True}


def get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` for objects; ``default`` when absent or null."""
    if obj is None:
        return default
    cls = type(obj)
    is_mapping = _IS_MAPPING.get(cls)
    if is_mapping is None:
        is_mapping = _IS_MAPPING[cls] = isinstance(obj, Mapping)
    value = obj.get(name, default) if is_mapping else getattr(obj, name, default)
    return default if value is None else value


def fields(obj: Any) -> Mapping[str, Any]:
    """The fields of a JSON object or an SDK model as a mapping, without copying where possible.

    A dict is returned as is; a pydantic model (every SDK's response types) gives its
    ``__dict__`` (declared fields) merged with ``__pydantic_extra__`` (fields the SDK version
    does not know); anything else is read attribute by attribute on demand.
    """
    if type(obj) is dict:
        return obj
    if obj is None:
        return {}
    own = getattr(obj, "__dict__", None)
    if type(own) is dict and hasattr(type(obj), "__pydantic_fields__"):
        extra = getattr(obj, "__pydantic_extra__", None)
        return {**own, **extra} if extra else own
    return _Attrs(obj)


class _Attrs(Mapping[str, Any]):
    """Attribute access as a read-only mapping (for objects that are neither dicts nor models)."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        value = get(self._obj, name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


TEXT_TYPES = frozenset({"text", "input_text", "output_text"})


def text_form(part: Any) -> Any:
    """A plain text part (``{"type": "text", "text": s}`` and nothing else) as the string ``s``.

    The providers render ``"content": "hi"`` and ``[{"type": "text", "text": "hi"}]`` as the
    same prompt, so both must hash alike; any other part is returned unchanged.
    """
    if type(part) is dict and len(part) == 2 and part.get("type") in TEXT_TYPES:
        text = part.get("text")
        if type(text) is str:
            return text
    return part


# Stainless SDKs' placeholders for "not given", left in request bodies until they are sent.
SENTINELS = frozenset({"Omit", "NotGiven", "Omitted"})


def items(value: Any) -> list[Any]:
    """A request field that may be one item or a list of them (blocks, parts, tools), as a list;
    SDK objects are dumped to plain JSON, null and "not given" are empty."""
    kind = type(value)
    if kind is list:
        listed: list[Any] = value  # callers only read it
        return listed
    if value is None or kind.__name__ in SENTINELS:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, tuple):
        return list(value)
    plain = to_plain(value)
    return plain if isinstance(plain, list) else [plain]


def is_record(value: Any) -> bool:
    """True when ``value`` can carry named fields: a JSON object, an SDK model, a dataclass or
    an object with attributes. A string, a number, a list or a bare ``object()`` where a usage
    object belongs carries no counts: its usage is unknown, never zeros."""
    if value is None:
        return False
    cls = type(value)
    is_mapping = _IS_MAPPING.get(cls)
    if is_mapping is None:
        is_mapping = _IS_MAPPING[cls] = isinstance(value, Mapping)
    if is_mapping or hasattr(cls, "__pydantic_fields__") or hasattr(cls, "__dataclass_fields__"):
        return True
    own = getattr(value, "__dict__", None)
    return isinstance(own, dict) and bool(own)


def has_field(obj: Any, name: str) -> bool:
    """True when ``name`` is present and not null."""
    return get(obj, name, _MISSING) is not _MISSING


def get_path(obj: Any, path: tuple[str, ...], default: Any = None) -> Any:
    for name in path:
        obj = get(obj, name, _MISSING)
        if obj is _MISSING:
            return default
    return obj


def as_int(value: Any) -> int:
    """A token count: ints pass, numeric strings and floats are truncated, anything else is 0.

    Providers send nulls and, in logs, strings; a count is never negative.
    """
    if type(value) is int:  # the common case first: one type check (bool is not int here)
        return value if value > 0 else 0
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value > 0 else 0
    try:
        n = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if n > 0 else 0


# -- usage tables ----------------------------------------------------------------------------

# Nested field names: ("prompt_tokens_details", "cached_tokens") is usage.prompt_tokens_details
# .cached_tokens (or the same keys of a JSON object).
Path = tuple[str, ...]
# One count's spellings: alternative paths, read at the first that is present and not null
# (google-genai's snake_case and the REST camelCase; Converse and Nova InvokeModel names).
Spellings = tuple[Path, ...]


def field(*spellings: str | Path) -> Spellings:
    """A count's :data:`Spellings`: a name is a top-level field, a tuple a nested path."""
    return tuple((s,) if isinstance(s, str) else s for s in spellings)


@dataclass(frozen=True, slots=True)
class TtlSplit:
    """Where a usage object splits its cache writes by TTL, and in which form.

    Either an object with one count per TTL, ``counts`` naming each TTL's field (Anthropic
    ``cache_creation``: ``{"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2048}``),
    or a list of rows, ``row_ttl`` and ``row_tokens`` naming a row's fields (Bedrock
    ``cacheDetails``: ``[{"ttl": "1h", "inputTokens": 1024}, {"ttl": "5m", ...}]``). A split
    with neither is read for its presence only.
    """

    path: Path
    counts: tuple[tuple[str, str], ...] = ()  # (ttl, field name)
    row_ttl: str | None = None
    row_tokens: str | None = None

    def tokens(self, split: Any) -> tuple[int, int]:
        """(all writes, 1 h writes) as the split counts them."""
        if self.row_tokens is not None:
            total = one_hour = 0
            for row in split if isinstance(split, list) else ():
                n = as_int(get(row, self.row_tokens))
                total += n
                if self.row_ttl is not None and get(row, self.row_ttl) == "1h":
                    one_hour += n
            return total, one_hour
        if not self.counts:
            return 0, 0
        f = fields(split)
        total = one_hour = 0
        for ttl, name in self.counts:
            n = as_int(f.get(name))
            total += n
            if ttl == "1h":
                one_hour += n
        return total, one_hour


@dataclass(frozen=True, slots=True)
class UsageTable:
    """Where a provider's usage object keeps each count (:func:`read_usage` applies it).

    ``input_includes_cache``: the provider's input count includes cache reads and writes
    (OpenAI ``prompt_tokens``/``input_tokens``, Gemini ``prompt_token_count``): the uncached
    input is what remains after both. Otherwise it excludes them (Anthropic ``input_tokens``,
    Bedrock ``inputTokens``) and is the uncached input as it is.
    ``billed_as_input`` / ``billed_as_output``: further counts billed at the input / output
    rate, added after that (Gemini's tool-use prompt and thoughts).
    ``cache_write_tokens``: when it is absent or 0, the writes are the ``ttl_split``'s total.
    ``writes_reported``: True or False for every response, or None: when the write count or
    the TTL split is present (a server that does not track writes sends neither).
    """

    input_tokens: Spellings
    input_includes_cache: bool
    cache_read_tokens: Spellings
    cache_write_tokens: Spellings
    output_tokens: Spellings
    billed_as_input: tuple[Spellings, ...] = ()
    billed_as_output: tuple[Spellings, ...] = ()
    ttl_split: TtlSplit | None = None
    writes_reported: bool | None = None

    def names(self) -> tuple[str, ...]:
        """The top-level field names of the counts (the TTL split aside), in table order."""
        counts = (
            self.input_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            *self.billed_as_input,
            *self.billed_as_output,
        )
        return tuple(dict.fromkeys(path[0] for spellings in counts for path in spellings))


def _at(f: Mapping[str, Any], path: Path) -> Any:
    value = f.get(path[0])
    if value is not None and len(path) > 1:
        for name in path[1:]:
            value = fields(value).get(name)
            if value is None:
                return None
    return value


def _lookup(f: Mapping[str, Any], spellings: Spellings) -> Any:
    for path in spellings:
        value = _at(f, path)
        if value is not None:
            return value
    return None


def read_usage(
    table: UsageTable, usage: Any, *, model: str | None = None, diagnostics: dict[str, Any] | None = None
) -> Usage:
    """A provider's usage object (SDK model or JSON) read through its :class:`UsageTable`.

    Missing or null fields are 0. A usage that carries no counts is unknown, never zeros: one
    that is not a record (a string, a number, a list), and a record without any of the
    table's counts (``{}``, or every one of them null).
    """
    if not is_record(usage):
        return UNKNOWN_USAGE
    f = fields(usage)
    raw_write = _lookup(f, table.cache_write_tokens)
    raw_read = _lookup(f, table.cache_read_tokens)
    raw_input = _lookup(f, table.input_tokens)
    raw_output = _lookup(f, table.output_tokens)
    billed_in = [_lookup(f, spellings) for spellings in table.billed_as_input]
    billed_out = [_lookup(f, spellings) for spellings in table.billed_as_output]
    split_spec = table.ttl_split
    split = _at(f, split_spec.path) if split_spec is not None else None
    if all(v is None for v in (raw_write, raw_read, raw_input, raw_output, split, *billed_in, *billed_out)):
        return UNKNOWN_USAGE._replace(model=model, diagnostics=diagnostics)
    write = as_int(raw_write)
    read = as_int(raw_read)
    write_1h = 0
    if split_spec is not None and split is not None:
        split_total, write_1h = split_spec.tokens(split)
        if not write:
            write = split_total
    input_tokens = as_int(raw_input)
    if table.input_includes_cache:
        input_tokens = max(input_tokens - read - write, 0)
    for value in billed_in:
        input_tokens += as_int(value)
    output_tokens = as_int(raw_output)
    for value in billed_out:
        output_tokens += as_int(value)
    reported = table.writes_reported
    if reported is None:
        reported = raw_write is not None or split is not None
    return Usage(
        input_tokens,
        read,
        write,
        min(write_1h, write),
        output_tokens,
        True,
        reported,
        split is not None,
        model,
        diagnostics,
    )


# -- the adapter shape ---------------------------------------------------------------------


class Accumulator(Protocol):
    """Folds a stream's events into one final :class:`Usage` (cumulative, never summed)."""

    def add(self, event: Any) -> None: ...

    def usage(self) -> Usage: ...


@dataclass(frozen=True, slots=True)
class ResultShape:
    """What a call's result is, as an adapter's optional ``inspect_result(result, request)``
    found it (for SDKs whose results the shared path cannot tell apart, boto3's dicts):

    * a stream to observe in place: ``events`` (the object), ``hook`` (``hook(events,
      recorder)`` observes it) and ``accumulator`` (folds its events);
    * a finished response: its ``usage``, or ``error`` when its body could not be read (the
      usage is then unknown and the caller's own read raises the same error).
    """

    usage: Usage = UNKNOWN_USAGE
    error: Exception | None = None
    events: Any = None
    hook: Callable[[Any, Any], Any] | None = None
    accumulator: Accumulator | None = None


class Adapter(Protocol):
    """The names every ``providers/<name>.py`` module defines."""

    NAME: str
    DEFAULT_TTL: str

    def parse_request(self, request: Mapping[str, Any]) -> Prompt: ...

    def prompt_from_parts(self, *, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt: ...

    def request_model(self, request: Mapping[str, Any]) -> str | None: ...

    def normalize_model(self, model: object) -> str | None: ...

    def is_stream_request(self, request: Mapping[str, Any]) -> bool: ...

    def usage(self, response: Any) -> Usage: ...

    def recorded_usage(self, response: Any, request: Mapping[str, Any]) -> Usage: ...

    def new_accumulator(self, request: Mapping[str, Any]) -> Accumulator: ...

    def owns_client(self, client: Any) -> bool: ...

    def owns_response(self, response: Any) -> bool: ...

    def instrument(self, client: Any, hooks: Any) -> list[tuple[Any, str, Any]]: ...

    def min_cacheable(self, model: str | None) -> int: ...

    def read_tolerance(self, model: str | None) -> int: ...

    def read_step(self, model: str | None) -> int: ...
