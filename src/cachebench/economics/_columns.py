"""numpy for the column paths of :func:`~._simulate.simulate` and :func:`~._advise.advise`
(``np`` is None without the ``simulate`` extra: then they run call by call, the reference the
column paths are tested against)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import numpy as np
except ImportError:  # pragma: no cover (the test environment has numpy; test_simulate hides it)
    np = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._compiled import Compiled

__all__ = ["in_order", "np", "one_key", "previous_time", "small_counts"]

# Tokens in a call beyond which (no real call has them) the column paths leave a trace to the
# reference, whose Python integers do not overflow.
_MAX_COUNT = 1 << 32


def small_counts(compiled: Compiled) -> bool:
    """Whether every call's tokens fit the column paths' 64-bit sums."""
    return (
        max(compiled.tail, default=0) < _MAX_COUNT
        and max(compiled.out, default=0) < _MAX_COUNT
        and all(x.layer_tokens < _MAX_COUNT for x in compiled.shapes)
    )


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
