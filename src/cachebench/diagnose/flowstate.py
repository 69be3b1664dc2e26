"""Per-flow state of the regression detector (:mod:`cachebench.diagnose.regressions`).

A flow's window of recent calls (one :class:`WindowSlot` each: how many layers the call had,
which it read, found new, kept the same value of), the baseline of the calls that left it,
the writes waiting to be read back and the settled ones, and its open incidents. No logic
beyond keeping these up to date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..types import PrefixDiff, Regression
from .thresholds import (
    BASELINE_WEIGHT,
    CHURN_OPEN,
    MAX_LAYERS,
    MIN_SETTLED,
    SETTLED,
    SHARED,
    WINDOW,
)

__all__ = ["FlowState", "Incident", "WindowSlot", "has_layer", "scored_hit"]


def has_layer(layers: int, k: int) -> bool:
    """Whether layer ``k`` is in the set ``layers`` (bit k: layer k)."""
    return bool(layers >> k & 1)


class WindowSlot(NamedTuple):
    """One call in a flow's window. ``read``, ``new`` and ``same`` are sets of layers (bit k:
    layer k, see :func:`has_layer`)."""

    layers: int  # how many of its layers are tracked (its first breakpoints, at most MAX_LAYERS)
    read: int  # the layers it read
    new: int  # the layers it wrote that the tracker had never seen
    same: int  # the layers with the same value as the flow's call before
    explained: bool  # its writes were expected (cold, a change, a twin): no hit-ratio miss


_EMPTY_SLOT = WindowSlot(0, 0, 0, 0, False)


def scored_hit(slot: WindowSlot, hit: tuple[int, int]) -> tuple[int, int]:
    """A call's part in the flow's hit ratio: an expected write (a new user's context, a new
    turn, a changed prompt) is no miss, so only what it read counts."""
    return (hit[0], hit[0]) if slot.explained else hit


@dataclass(slots=True)
class Incident:
    flow: str
    kind: str
    started_at: float
    before: float
    layer: int
    diff: PrefixDiff | None
    details: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    num: int = 0
    den: int = 0
    extra_cost: float = 0.0
    priced: int = 0
    last_at: float = 0.0
    closed_at: float | None = None
    detected_at: float | None = None  # the time of the call that opened it

    def regression(self) -> Regression:
        span = self.last_at - self.started_at
        per_hour = None
        if self.priced and span > 0:
            per_hour = self.extra_cost / self.priced * (self.calls / span) * 3600.0
        return Regression(
            flow=self.flow,
            kind=self.kind,  # type: ignore[arg-type]
            started_at=self.started_at,
            hit_ratio_before=self.before,
            hit_ratio_after=self.num / self.den if self.den else math.nan,
            calls_affected=self.calls,
            extra_cost_per_hour_usd=per_hour,
            diff=self.diff,
            closed_at=self.closed_at,
            details=dict(self.details),
            detected_at=self.detected_at,
        )


class FlowState:
    __slots__ = (
        "base_n",
        "base_read",
        "base_same",
        "churn",
        "cost_base",
        "costs",
        "cum_den",
        "cum_num",
        "drop",
        "good",
        "healthy",
        "hits",
        "last_new",
        "model",
        "n",
        "new_count",
        "pending",
        "pos",
        "read_layers",
        "settled",
        "settled_pos",
        "slots",
        "times",
        "values",
        "win_den",
        "win_num",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.values = [0] * MAX_LAYERS  # last chained hash per layer
        self.good = [0] * MAX_LAYERS  # last value per layer that a call read (0: none yet)
        self.slots = [_EMPTY_SLOT] * WINDOW  # the window's calls
        self.hits = [(0, 0)] * WINDOW  # per window slot: (hit numerator, denominator)
        self.costs: list[float | None] = [None] * WINDOW
        self.times = [0.0] * WINDOW
        self.new_count = [0] * MAX_LAYERS  # window calls new at each layer
        # The first layer's baseline: how often the calls that left the window read it, and
        # with the same value as the call before (-1: none has left yet).
        self.base_read = -1.0
        self.base_same = -1.0
        self.base_n = 0
        self.pos = 0
        self.n = 0
        self.cum_num = self.cum_den = 0
        self.win_num = self.win_den = 0  # the window's hit ratio, as sums
        self.healthy = False
        self.cost_base: float | None = None  # cost per call while healthy (moving average)
        self.churn: Incident | None = None
        self.drop: Incident | None = None
        # Writes of a never-seen layer value, until read back or past their TTL:
        # value -> (layer, deadline). Then settled: (layer, read back?) for the last SETTLED.
        self.pending: dict[int, tuple[int, float]] = {}
        self.settled: list[tuple[int, bool]] = []
        self.settled_pos = 0
        self.read_layers = 0  # the layers some call of this flow read (bit k: layer k)
        self.last_new: list[int] = [0] * MAX_LAYERS  # the last new value per layer (printed in churn)

    def settle(self, layer: int, read_back: bool) -> None:
        if len(self.settled) < SETTLED:
            self.settled.append((layer, read_back))
        else:
            self.settled[self.settled_pos] = (layer, read_back)
            self.settled_pos = (self.settled_pos + 1) % SETTLED

    def churning(self, k: int) -> bool:
        """Most settled writes of layer ``k`` were never read back within their TTL."""
        total = unread = 0
        for layer, read_back in self.settled:
            if layer == k:
                total += 1
                unread += not read_back
        return total >= MIN_SETTLED and unread >= CHURN_OPEN * total

    def first_layer_shared(self) -> bool:
        """The first layer (tools, system) is normally read, with one value (no baseline yet:
        not known to be)."""
        return self.base_read >= SHARED and self.base_same >= SHARED

    def push(self, call: WindowSlot, hit: tuple[int, int], cost: float | None, now: float) -> None:
        """Add one call to the window; the call leaving it joins the baseline. (Layer sets are
        tested inline here, ``layers >> k & 1``, not with :func:`has_layer`: this runs per call.)"""
        f = self
        i = f.pos
        if f.n == WINDOW:  # the call leaving the window
            old = f.slots[i]
            if old.layers:  # it had a first layer: it joins that layer's baseline
                # A running mean for the first calls, then a moving average.
                f.base_n += 1
                w = max(1.0 / f.base_n, BASELINE_WEIGHT)
                r = float(old.read & 1)  # it read layer 0
                sm = float(old.same & 1)  # with the value of the call before
                if f.base_read < 0:
                    f.base_read, f.base_same = r, sm
                else:
                    f.base_read += w * (r - f.base_read)
                    f.base_same += w * (sm - f.base_same)
            for k in range(old.layers):
                f.new_count[k] -= old.new >> k & 1
            gone = scored_hit(old, f.hits[i])
            f.win_num -= gone[0]
            f.win_den -= gone[1]
        for k in range(call.layers):
            f.new_count[k] += call.new >> k & 1
        f.slots[i] = call
        f.hits[i] = hit
        f.costs[i] = cost
        f.times[i] = now
        scored = scored_hit(call, hit)
        f.cum_num += scored[0]
        f.cum_den += scored[1]
        f.win_num += scored[0]
        f.win_den += scored[1]
        f.pos = (i + 1) % WINDOW
        f.n = min(f.n + 1, WINDOW)
