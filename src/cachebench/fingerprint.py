"""Canonical bytes, chained hashes per breakpoint, and per-block digests.

A provider's cache is keyed by the bytes it renders from the start of the prompt up to a
breakpoint. We mirror that with one streaming xxh3-64 hash over the canonical bytes of the
blocks in cache order, read off after every block (``PrefixKey.chain``). The hash is seeded
with provider and model because caches are model-scoped.

Canonical bytes of a block: ``orjson.dumps([section, payload])`` with sorted keys and
compact separators, after the adapter removed the cache marker and SDK objects were
dumped to plain JSON. JSON values are self-delimiting, so concatenating them is
unambiguous. A second, order-sensitive digest per block keeps the caller's own key order:
providers cache the bytes they render, so a re-ordered tool schema misses although the
sorted digest (and ``prefix_id``) is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import orjson
import xxhash

from .types import Block, PrefixKey, Prompt

__all__ = ["canonical", "fingerprint", "hex_id", "key", "to_plain"]

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_ORDERED = orjson.OPT_NON_STR_KEYS
_xxh64 = xxhash.xxh3_64
_digest = xxhash.xxh3_64_intdigest


def _default(obj: Any) -> Any:
    """orjson fallback: SDK objects to plain JSON, bytes to a digest (never to base64 text)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        # pydantic models (anthropic, openai, google-genai types): the JSON the SDK would send.
        try:
            return dump(mode="json", exclude_none=True, by_alias=True)
        except TypeError:
            return dump()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$bytes": format(_digest(bytes(obj)), "016x"), "len": len(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, Sequence):
        return list(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"cannot fingerprint an object of type {type(obj).__name__}")


def to_plain(value: Any) -> Any:
    """Return ``value`` as plain JSON types (dicts, lists, str, numbers), SDK objects dumped."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if type(value) is dict:
        return value
    if type(value) is list:
        return value
    return orjson.loads(orjson.dumps(value, default=_default, option=_ORDERED))


def canonical(value: Any) -> bytes:
    """The canonical bytes of a value: sorted keys, compact, SDK objects dumped."""
    return orjson.dumps(value, default=_default, option=_SORTED)


def hex_id(value: int) -> str:
    return format(value, "016x")


def _seed(provider: str, model: str | None) -> Any:
    h = _xxh64()
    h.update(f"{provider}\x00{model or ''}\x00".encode())
    return h


def key(prompt: Prompt) -> PrefixKey:
    """Fingerprint a prompt: chained hashes, breakpoint ids, ``prefix_id`` and digests."""
    h = _seed(prompt.provider, prompt.model)
    empty = h.intdigest()
    n = len(prompt.blocks)
    chain = [0] * n
    digests = [0] * n
    order_digests = [0] * n
    sizes = [0] * n
    sections: list[str] = [""] * n
    settings_pending = prompt.settings is not None
    breakpoints: list[int] = []
    ttls: list[str] = []
    blk: Block
    for i, blk in enumerate(prompt.blocks):
        if settings_pending and blk.section == "messages":
            h.update(canonical(["settings", prompt.settings]))
            settings_pending = False
        item = [blk.section, blk.payload]
        data = orjson.dumps(item, default=_default, option=_SORTED)
        h.update(data)
        chain[i] = h.intdigest()
        digests[i] = _digest(data)
        ordered = orjson.dumps(item, default=_default, option=_ORDERED)
        order_digests[i] = digests[i] if ordered == data else _digest(ordered)
        sizes[i] = len(data)
        sections[i] = blk.section
        if blk.ttl is not None:
            breakpoints.append(i)
            ttls.append(blk.ttl)
    turn_start = min(prompt.turn_start, n)
    # One string per breakpoint, and prefix_id shares it: both are kept per call in the history.
    ids = {b: hex_id(chain[b]) for b in breakpoints}
    if breakpoints:
        before_turn = [b for b in breakpoints if b < turn_start]
        prefix_end = before_turn[-1] if before_turn else turn_start - 1
        prefix_id: str | None = ids.get(prefix_end) or hex_id(chain[prefix_end] if prefix_end >= 0 else empty)
    else:
        prefix_end = -1
        prefix_id = None
    return PrefixKey(
        prefix_id=prefix_id,
        breakpoint_ids=tuple(ids.values()),
        breakpoints=tuple(breakpoints),
        ttls=tuple(ttls),
        sections=tuple(sections),
        digests=tuple(digests),
        order_digests=tuple(order_digests),
        sizes=tuple(sizes),
        chain=tuple(chain),
        prefix_end=prefix_end,
        turn_start=turn_start,
    )


def fingerprint(
    messages: Any = None,
    system: Any = None,
    tools: Any = None,
    *,
    provider: str = "anthropic",
    model: str | None = None,
) -> str | None:
    """The ``prefix_id`` a request with these parts would get, or ``None`` if uncacheable.

    ``messages``, ``system`` and ``tools`` take the provider's own request shapes (dicts or
    SDK objects). Key order, SDK-object-vs-dict and where the cache markers sit do not
    change the result; the newest user turn never enters it; any other change does.
    """
    from .providers import adapter_for

    adapter = adapter_for(provider)
    return key(
        adapter.prompt_from_parts(messages=messages, system=system, tools=tools, model=model)
    ).prefix_id
