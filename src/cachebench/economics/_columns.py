"""numpy for the column paths of :func:`~._simulate.simulate` and :func:`~._advise.advise`
(``np`` is None without the ``simulate`` extra: then they run call by call, the reference the
column paths are tested against)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

try:
    import numpy as np
except ImportError:  # pragma: no cover (the test environment has numpy; test_simulate hides it)
    np = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._compiled import Compiled, Shape

__all__ = [
    "call_column",
    "every_shape",
    "in_order",
    "np",
    "one_key",
    "previous_time",
    "shape_column",
    "small_counts",
]

# Tokens in a call beyond which (no real call has them) the column paths leave a trace to the
# reference, whose Python integers do not overflow.
_MAX_COUNT = 1 << 32


def small_counts(compiled: Compiled) -> bool:
    """Whether every call's tokens fit the column paths' 64-bit sums."""
    return (
        max(compiled.tail, default=0) < _MAX_COUNT
        and max(compiled.out, default=0) < _MAX_COUNT
        and every_shape(compiled, "small", lambda x: x.layer_tokens < _MAX_COUNT)
    )


def every_shape(compiled: Compiled, name: str, test: Callable[[Shape], bool]) -> bool:
    """Whether ``test`` holds for every shape the calls use (each of the trace's shapes tested
    once, as ``name``: one flow's calls are not judged by another's)."""
    flags = compiled.derived.get(name)
    if flags is None:
        flags = compiled.derived[name] = np.asarray([test(x) for x in compiled.shapes], dtype=bool)
    used = compiled.arrays.get("used shapes")
    if used is None:
        used = compiled.arrays["used shapes"] = np.unique(np.asarray(compiled.shape, dtype=np.int64))
    return bool(flags[used].all())


_TYPES = {"t": "float64", "shape": "int64", "flow": "int64", "tail": "int64", "out": "int64", "warm": "bool"}


def call_column(compiled: Compiled, name: str) -> Any:
    """A column of the calls (``t``, ``shape``, ``flow``, ``tail``, ``out``, ``warm``) as an
    array, made once for these calls."""
    found = compiled.arrays.get(name)
    if found is None:
        found = compiled.arrays[name] = np.asarray(getattr(compiled, name), dtype=_TYPES[name])
        found.flags.writeable = False  # (shared by every replay of these calls)
    return found


def shape_column(compiled: Compiled, name: str) -> Any:
    """A field of every shape as an array, made once for a compiled trace and its subsets:
    ``layer_tokens`` (saturated: see :func:`shape_layers`), or a price of its
    :class:`~._rates.Rates` by name (``input``, ...)."""
    found = compiled.derived.get(name)
    if found is None:
        shapes = compiled.shapes
        if name == "layer_tokens":
            found = np.asarray([min(x.layer_tokens, _MAX_COUNT) for x in shapes], dtype=np.int64)
        else:
            found = np.asarray([getattr(x.rates, name) for x in shapes], dtype=np.float64)
        found.flags.writeable = False  # (shared by every replay of the trace)
        compiled.derived[name] = found
    return found


class ShapeLayers(NamedTuple):
    """Every shape's layers, one array each (a shape's from ``starts[shape]``, ``lengths[shape]``
    long): prefix ids, cumulative tokens and each layer's own tokens; and the first layer whose
    prefix reaches the shape's model's minimum."""

    chains: Any
    cums: Any
    sizes: Any
    starts: Any
    lengths: Any
    reaches: Any


def shape_layers(compiled: Compiled) -> ShapeLayers:
    """:class:`ShapeLayers`, made once for a compiled trace and its subsets. Token counts are
    saturated at the column paths' bound: a shape over it is never one the paths replay
    (:func:`small_counts` judges the shapes a replay's calls use), and another flow's may be."""
    found = compiled.derived.get("layers")
    if found is None:
        shapes = compiled.shapes
        lengths = np.asarray([len(x.chain) for x in shapes], dtype=np.int64)
        chains = np.asarray([h for x in shapes for h in x.chain], dtype=np.int64)
        cums = np.asarray([min(c, _MAX_COUNT) for x in shapes for c in x.cum], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        sizes = cums.copy()
        sizes[1:] -= cums[:-1]
        first = starts[lengths > 0]
        sizes[first] = cums[first]  # (a shape's first layer: its own cumulative tokens)
        reaches = np.asarray([x.reach for x in shapes], dtype=np.int64)
        found = compiled.derived["layers"] = ShapeLayers(chains, cums, sizes, starts, lengths, reaches)
    return found


def previous_time(h: Any, at: Any) -> Any:
    """For each of ``at`` (times, in order), the time of the one before it with the same ``h``
    (NaN for the first): a stable sort of ``h``, by radix when the ids fit in 16 bits."""
    if len(h) and int(h.min()) >= 0 and int(h.max()) < 1 << 16:
        h = h.astype(np.uint16)
    order = np.argsort(h, kind="stable")  # (a prefix's calls stay in time order)
    sorted_h = h[order]
    same = sorted_h[1:] == sorted_h[:-1]
    previous = np.full(len(h), np.nan)
    previous[order[1:][same]] = at[order[:-1][same]]
    return previous


def one_key(columns: list[Any]) -> Any:
    """One int64 per row, equal exactly where all of ``columns`` (int64) are."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    size = 1
    for column in columns:
        values, index = np.unique(column, return_inverse=True)
        if size * len(values) >= 1 << 62:  # (renumbered before it could overflow)
            kept, key = np.unique(key, return_inverse=True)
            size = len(kept)
        key = key * len(values) + index
        size *= len(values)
    return key


def in_order(values: Any) -> float:
    """The sum of ``values`` added one after another from 0.0, as a loop adds them."""
    return float(np.add.accumulate(values)[-1]) + 0.0 if len(values) else 0.0
