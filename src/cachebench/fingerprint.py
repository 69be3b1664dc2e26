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


def _walk(
    pairs: list[tuple[str, Any]], seed: int, settings: Any, settings_at: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The per-block chain and cumulative byte counts: each block serialised on its own (one
    ``orjson.dumps`` each, as :func:`_sorted_bytes` makes them) and fed to one hash."""
    h = _Hasher(seed=seed)
    digest = h.intdigest
    update = h.update
    try:
        blocks = [orjson.dumps(pair, default=_default, option=_SORTED_STR_KEYS) for pair in pairs]
    except TypeError:  # a non-string key somewhere: block by block, as _sorted_bytes retries
        blocks = [_sorted_bytes(pair) for pair in pairs]
    chain: list[int] = []
    cum: list[int] = []
    total = 0
    for i, data in enumerate(blocks):
        if i == settings_at:
            update(_settings_bytes(settings))
        update(data)
        update(b",")
        total += len(data) + 1
        chain.append(digest())
        cum.append(total)
    return tuple(chain), tuple(cum)


def _feed(h: Any, run: list[tuple[str, Any]]) -> int:
    """Hash a run of blocks into ``h`` with one serialisation; return the stream bytes added.

    ``orjson.dumps`` of a list is ``[`` + the blocks joined by commas + ``]``: without the
    brackets and with a trailing comma, it is exactly the blocks' part of the stream."""
    data = _sorted_bytes(run)
    h.update(memoryview(data)[1:-1])
    h.update(b",")
    return len(data) - 1


def key(prompt: Prompt) -> PrefixKey:
    """Fingerprint a prompt: hashes through each breakpoint, breakpoint ids and ``prefix_id``.

    The canonical byte stream of a prompt is, block after block, ``[section, payload]`` as
    compact JSON with sorted keys followed by a comma (request settings are inserted before
    the first message block); ``chain[i]`` is the xxh3-64 of the stream through block ``i``,
    seeded by provider and model. A streaming hash does not depend on how its input is
    split, so the stream is serialised one run of blocks at a time (one ``orjson.dumps`` of
    a list is the run's blocks joined by commas) and hashed at the breakpoints only; the
    per-block chain is computed when something asks for a position in between.
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
    if len(marks) == 1 and not implicit and marks[0][0] < turn_start and not 0 <= settings_at <= marks[0][0]:
        # The common case, kept short: one breakpoint before the newest turn, no settings in
        # its prefix. One serialisation, one hash; the same values as the general path below.
        bp, ttl = marks[0]
        data = _sorted_bytes(pairs[: bp + 1])
        h = _Hasher(memoryview(data)[1:-1], seed)
        h.update(b",")
        value = h.intdigest()
        prefix_id = format(value, "016x")
        return PrefixKey(
            prefix_id,
            value,
            (prefix_id,),
            (bp,),
            (ttl,),
            (value,),
            (len(data) - 1,),
            -1,
            n,
            bp,
            turn_start,
            {bp: value},
            functools.partial(_walk, pairs, seed, settings, settings_at),
            None,
        )
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
    if implicit:
        full = _walk(pairs, seed, settings, settings_at)
        chain, cum = full
        bp_hashes = tuple([chain[b] for b in bps])
        bp_bytes = tuple([cum[b] for b in bps])
        end_hash = chain[prefix_end] if prefix_end >= 0 else None
        total = cum[-1] if cum else 0
        points = None
        fill = None
    else:
        # Only the stream through the last breakpoint is serialised: what follows (the newest
        # turn, an uncached conversation) is hashed only if a position there is asked for.
        full = None
        total = -1
        cuts = bps if prefix_end < 0 or prefix_end in bps else sorted({*bps, prefix_end})
        h = _Hasher(seed=seed)
        points = {}
        sizes_at: dict[int, int] = {}
        start = size = 0
        for cut in cuts:
            if start <= settings_at <= cut:
                if settings_at > start:
                    size += _feed(h, pairs[start:settings_at])
                h.update(_settings_bytes(settings))
                start = settings_at
            size += _feed(h, pairs[start : cut + 1])
            points[cut] = h.intdigest()
            sizes_at[cut] = size
            start = cut + 1
        if len(bps) == 1:
            bp_hashes = (points[bps[0]],)
            bp_bytes = (sizes_at[bps[0]],)
        else:
            bp_hashes = tuple([points[b] for b in bps])
            bp_bytes = tuple([sizes_at[b] for b in bps])
        end_hash = points[prefix_end] if prefix_end >= 0 else None

        def fill() -> tuple[tuple[int, ...], tuple[int, ...]]:
            return _walk(pairs, seed, settings, settings_at)

    if not bps:
        return PrefixKey(None, None, (), (), (), (), (), total, n, -1, turn_start, points, fill, full)
    # One string per breakpoint, and prefix_id shares it: both are kept per call in the history.
    ids = (format(bp_hashes[0], "016x"),) if len(bp_hashes) == 1 else tuple([hex_id(h) for h in bp_hashes])
    if end_hash is None:
        end_hash = _digest(b"", seed)  # the empty stream: every breakpoint is in the newest turn
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
        points,
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
