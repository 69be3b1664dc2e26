"""Per-flow state of the regression detector (:mod:`cachebench.regress`).

A flow's window of recent calls (bit masks per layer: present, read, new, same value as the
previous call), the baseline of the calls that left it, the writes waiting to be read back
and the settled ones, and its open incidents. No logic beyond keeping these up to date.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .types import PrefixDiff, Regression

WINDOW = 16  # calls per flow in the churn and hit-ratio windows
CHURN_OPEN = 0.75  # share of a layer's settled writes never read back that opens churn
SETTLED = 16  # writes per flow whose fate (read back, or not within their TTL) is remembered
MIN_SETTLED = 8  # a layer's churn is judged from at least this many settled writes
SHARED = 0.75  # baseline read and same-value rates that make a layer shared
BASELINE_WEIGHT = 0.05  # of each call leaving the window in the baseline (about 20 calls)
MAX_LAYERS = 8  # breakpoints beyond this are not tracked per layer
EXPLAINED = 32  # bit of a window slot's mask: the call's writes were expected (cold, a change)


def scored_hit(mask: int, hit: tuple[int, int]) -> tuple[int, int]:
    """A call's part in the flow's hit ratio: an expected write (a new user's context, a new
    turn, a changed prompt) is no miss, so only what it read counts."""
    return (hit[0], hit[0]) if mask >> EXPLAINED & 1 else hit


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
        "masks",
        "model",
        "n",
        "new_count",
        "pending",
        "pos",
        "read_layers",
        "settled",
        "settled_pos",
        "times",
        "values",
        "win_den",
        "win_num",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.values = [0] * MAX_LAYERS  # last chained hash per layer
        self.good = [0] * MAX_LAYERS  # last value per layer that a call read (0: none yet)
        # Per window slot: bit masks over layers, (present, read, new, same) packed 8 bits each.
        self.masks = [0] * WINDOW
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
        self.read_layers = 0  # bit k: some call of this flow read layer k
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

    def push(self, masks: int, hit: tuple[int, int], cost: float | None, now: float) -> None:
        """Add one call to the window; the call leaving it joins the baseline."""
        f = self
        slot = f.pos
        old = f.masks[slot]
        if f.n == WINDOW:  # the call leaving the window
            if old & 1:  # it had a first layer: it joins that layer's baseline
                # A running mean for the first calls, then a moving average.
                f.base_n += 1
                w = max(1.0 / f.base_n, BASELINE_WEIGHT)
                r = float(old >> 8 & 1)
                sm = float(old >> 24 & 1)
                if f.base_read < 0:
                    f.base_read, f.base_same = r, sm
                else:
                    f.base_read += w * (r - f.base_read)
                    f.base_same += w * (sm - f.base_same)
            for k in range(MAX_LAYERS):
                if not old >> k & 1:
                    break
                f.new_count[k] -= old >> (16 + k) & 1
        for k in range(MAX_LAYERS):
            if not masks >> k & 1:
                break
            f.new_count[k] += masks >> (16 + k) & 1
        if f.n == WINDOW:
            gone = scored_hit(old, f.hits[slot])
            f.win_num -= gone[0]
            f.win_den -= gone[1]
        f.masks[slot] = masks
        f.hits[slot] = hit
        f.costs[slot] = cost
        f.times[slot] = now
        scored = scored_hit(masks, hit)
        f.cum_num += scored[0]
        f.cum_den += scored[1]
        f.win_num += scored[0]
        f.win_den += scored[1]
        f.pos = (slot + 1) % WINDOW
        f.n = min(f.n + 1, WINDOW)
