"""Canonical bytes, chained hashes per breakpoint, and per-block digests.

A provider's cache is keyed by the bytes it renders from the start of the prompt up to a
breakpoint. We mirror that with a hash chain over the canonical bytes of the blocks in cache
order: ``chain[i]`` is the xxh3-64 of block ``i`` seeded with ``chain[i-1]``
(``PrefixKey.chain``), and the first seed is bound to provider and model because caches are
model-scoped.

Canonical bytes of a block: ``orjson.dumps([section, payload])`` with sorted keys and
compact separators, after the adapter removed the cache marker and SDK objects were
dumped to plain JSON. JSON values are self-delimiting, so concatenating them is
unambiguous. What the diagnosis keeps of a block (digests that do not depend on earlier
blocks, in sorted and in the caller's own key order, :func:`ordered`) is computed only where a
difference is explained, in :mod:`cachebench.diagnose.prints`.

The public :func:`fingerprint` lives here, and the module itself is callable: its class is a
``types.ModuleType`` subclass whose ``__call__`` calls :func:`fingerprint`. So
``import cachebench.fingerprint`` gives this module (``cachebench.fingerprint.key`` and the
rest), while ``cachebench.fingerprint(...)`` and ``from cachebench import fingerprint`` then
``fingerprint(...)`` give a prefix id; ``from cachebench.fingerprint import fingerprint`` is
the plain function.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import orjson
import xxhash

from .redact import redact
from .types import PrefixKey, Prompt

__all__ = [
    "canonical",
    "fingerprint",
    "hex_id",
    "key",
    "ordered",
    "redact",
    "to_plain",
]

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_ORDERED = orjson.OPT_NON_STR_KEYS
# OPT_NON_STR_KEYS sends every dict through orjson's slower general path (about a quarter
# slower on request bodies), and JSON bodies have string keys: serialise without it first. For
# string keys both give the same bytes; a dict with another key type raises, and is retried.
_SORTED_STR_KEYS = orjson.OPT_SORT_KEYS


def _sorted_bytes(value: Any) -> bytes:
    """Compact JSON with sorted keys: the canonical bytes."""
    try:
        return orjson.dumps(value, default=_default, option=_SORTED_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a non-string key (or a value nothing can dump)
        return orjson.dumps(value, default=_default, option=_SORTED)


_xxh64 = xxhash.xxh3_64
_Hasher = xxhash.xxh3_64
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
    return _sorted_bytes(value)


def hex_id(value: int) -> str:
    return format(value, "016x")


_SEEDS: dict[tuple[str, str | None], int] = {}


def _seed(provider: str, model: str | None) -> int:
    seed = _SEEDS.get((provider, model))
    if seed is None:
        seed = _xxh64(f"{provider}\x00{model or ''}\x00".encode()).intdigest()
        if len(_SEEDS) < 4096:  # bounded: model names come from requests
            _SEEDS[(provider, model)] = seed
    return seed


def _settings_bytes(settings: Any) -> bytes:
    return canonical(["settings", settings]) + b","


def _block_bytes(pairs: Sequence[tuple[str, Any]]) -> list[bytes]:
    """The canonical bytes of each block (one ``orjson.dumps`` each: the common case without
    a non-string key, then block by block as :func:`_sorted_bytes` does)."""
    try:
        return [orjson.dumps(pair, default=_default, option=_SORTED_STR_KEYS) for pair in pairs]
    except TypeError:
        return [_sorted_bytes(pair) for pair in pairs]


def _hash_blocks(
    h: Any,
    pairs: Sequence[tuple[str, Any]],
    start: int,
    settings: Any,
    settings_at: int,
    chain: list[int],
    cum: list[int],
) -> None:
    """Feed blocks ``start..`` of ``pairs`` (a slice of the prompt's blocks from ``start``) into
    ``h``, appending each block's chain value and the stream's byte count through it."""
    digest = h.intdigest
    update = h.update
    total = cum[-1] if cum else 0
    for i, data in enumerate(_block_bytes(pairs), start):
        if i == settings_at:
            update(_settings_bytes(settings))
        update(data)
        update(b",")
        total += len(data) + 1
        chain.append(digest())
        cum.append(total)


def _rest(
    h: Any,
    pairs: list[tuple[str, Any]],
    settings: Any,
    settings_at: int,
    chain: list[int],
    cum: list[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The whole (chain, cum): the blocks after those already hashed into ``h`` (which, like
    the lists, is copied: two threads asking at once each get the same answer)."""
    start = len(chain)
    chain, cum = list(chain), list(cum)
    _hash_blocks(h.copy(), pairs[start:], start, settings, settings_at, chain, cum)
    return tuple(chain), tuple(cum)


def key(prompt: Prompt) -> PrefixKey:
    """Fingerprint a prompt: hashes through each breakpoint, breakpoint ids and ``prefix_id``.

    The canonical byte stream of a prompt is, block after block, ``[section, payload]`` as
    compact JSON with sorted keys followed by a comma (request settings are inserted before
    the first message block); ``chain[i]`` is the xxh3-64 of the stream through block ``i``,
    seeded by provider and model. The blocks through the last breakpoint are serialised and
    hashed one by one (the per-block chain comes with the breakpoints' hashes); what follows
    (the newest turn, an uncached conversation) only when something asks for a position there.
    """
    provider, model, pairs, marks, turn_start, implicit, settings = prompt
    n = len(pairs)
    seed = _SEEDS.get((provider, model)) or _seed(provider, model)
    if turn_start > n:
        turn_start = n
    settings_at = -1
    if settings is not None:
        for i, pair in enumerate(pairs):
            if pair[0] == "messages":
                settings_at = i
                break
    if len(marks) == 1:
        bps: tuple[int, ...] = (marks[0][0],)
        ttls: tuple[str, ...] = (marks[0][1],)
    else:
        bps = tuple([p for p, _ in marks])
        ttls = tuple([t for _, t in marks])
    prefix_end = -1
    if bps:
        prefix_end = turn_start - 1
        for b in reversed(bps):
            if b < turn_start:
                prefix_end = b
                break
    # Hashed now: every block of an implicit prompt, else the blocks through the last cut.
    last = n - 1 if implicit else max(max(bps, default=-1), prefix_end)
    h = _Hasher(seed=seed)
    chain: list[int] = []
    cum: list[int] = []
    if last >= 0:
        _hash_blocks(h, pairs[: last + 1], 0, settings, settings_at, chain, cum)
    full = None
    fill = None
    total = -1
    if last == n - 1:
        full = (tuple(chain), tuple(cum))
        total = cum[-1] if cum else 0
    else:
        fill = functools.partial(_rest, h, pairs, settings, settings_at, chain, cum)
    if not bps:
        return PrefixKey(None, None, (), (), (), (), (), total, n, -1, turn_start, chain, fill, full)
    if len(bps) == 1:
        bp = bps[0]
        bp_hashes: tuple[int, ...] = (chain[bp],)
        bp_bytes: tuple[int, ...] = (cum[bp],)
        # One string per breakpoint, and prefix_id shares it: both are kept per call in the history.
        ids: tuple[str, ...] = (format(bp_hashes[0], "016x"),)
    else:
        bp_hashes = tuple([chain[b] for b in bps])
        bp_bytes = tuple([cum[b] for b in bps])
        ids = tuple([hex_id(v) for v in bp_hashes])
    # (-1: every breakpoint is in the newest turn; the prefix is the empty stream)
    end_hash = chain[prefix_end] if prefix_end >= 0 else _digest(b"", seed)
    prefix_id = ids[bps.index(prefix_end)] if prefix_end in bps else hex_id(end_hash)
    return PrefixKey(
        prefix_id,
        end_hash,
        ids,
        bps,
        ttls,
        bp_hashes,
        bp_bytes,
        total,
        n,
        prefix_end,
        turn_start,
        chain,
        fill,
        full,
    )


def ordered(value: Any) -> bytes:
    """Compact JSON in the caller's own key order (SDK objects dumped): the bytes a provider
    that renders the request as given would cache."""
    return orjson.dumps(value, default=_default, option=_ORDERED)


# -- the public function -------------------------------------------------------------------


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
    # Imported here: every adapter imports this module (``to_plain``).
    from .providers import adapter_for

    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a model name (str) or None, got {type(model).__name__}")
    adapter = adapter_for(provider)
    return key(
        adapter.prompt_from_parts(messages=messages, system=system, tools=tools, model=model)
    ).prefix_id


class _CallableModule(types.ModuleType):
    """This module's class: calling the module calls :func:`fingerprint`.

    The package exports the module under the name users call (``cachebench.fingerprint``), so
    the submodule stays reachable as ``cachebench.fingerprint`` instead of being shadowed by a
    function of the same name."""

    def __call__(
        self,
        messages: Any = None,
        system: Any = None,
        tools: Any = None,
        *,
        provider: str = "anthropic",
        model: str | None = None,
    ) -> str | None:
        return fingerprint(messages, system, tools, provider=provider, model=model)


sys.modules[__name__].__class__ = _CallableModule
