"""What every provider adapter shares: field access over objects *and* plain JSON, and the
adapter shape.

Each module in ``providers/`` exposes the same names (see :class:`Adapter`); provider
differences live in their request/usage tables, not in the tracker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..fingerprint import to_plain
from ..types import Prompt, Usage

__all__ = [
    "SENTINELS",
    "Accumulator",
    "Adapter",
    "as_int",
    "fields",
    "get",
    "get_path",
    "has_field",
    "is_record",
    "items",
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


_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})


def text_form(part: Any) -> Any:
    """A plain text part (``{"type": "text", "text": s}`` and nothing else) as the string ``s``.

    The providers render ``"content": "hi"`` and ``[{"type": "text", "text": "hi"}]`` as the
    same prompt, so both must hash alike; any other part is returned unchanged.
    """
    if type(part) is dict and len(part) == 2 and part.get("type") in _TEXT_TYPES:
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


class Accumulator(Protocol):
    """Folds a stream's events into one final :class:`Usage` (cumulative, never summed)."""

    def add(self, event: Any) -> None: ...

    def usage(self) -> Usage: ...


class Adapter(Protocol):
    """The functions every ``providers/<name>.py`` module defines."""

    NAME: str

    def parse_request(self, request: Mapping[str, Any]) -> Prompt: ...

    def prompt_from_parts(self, *, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt: ...

    def usage(self, response: Any) -> Usage: ...

    def new_accumulator(self, request: Mapping[str, Any]) -> Accumulator: ...

    def request_model(self, request: Mapping[str, Any]) -> str | None: ...

    def is_stream_request(self, request: Mapping[str, Any]) -> bool: ...

    def owns_client(self, client: Any) -> bool: ...

    def owns_response(self, response: Any) -> bool: ...

    def min_cacheable(self, model: str | None) -> int: ...

    def read_tolerance(self, model: str | None) -> int: ...

    def read_step(self, model: str | None) -> int: ...

    def recorded_usage(self, response: Any, request: Mapping[str, Any]) -> Usage: ...

    def instrument(self, client: Any, hooks: Any) -> list[tuple[Any, str, Any]]: ...
