"""Per-flow state of the regression detector (:mod:`cachebench.diagnose.regressions`).

A flow's window of recent calls (their hit ratio parts, costs and times, and whether each
call's writes were expected), per layer (:class:`LayerState`) its recent values and what became
of its recent calls and writes, and its open incidents. No logic beyond keeping these up to
date.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..types import PrefixDiff, Regression
from .thresholds import (
    CHURN_CHANGES,
    CHURN_QUIET,
    CHURN_SPAN,
    MAX_LAYERS,
    RATE_MIN_SPAN_S,
    RECENT_VALUES,
    UNREAD_SHARE,
    WINDOW,
)

__all__ = ["FlowState", "Incident", "LayerState", "scored_hit"]


def scored_hit(explained: bool, hit: tuple[int, int]) -> tuple[int, int]:
    """A call's part in the flow's hit ratio: an expected write (a new user's context, a new
    turn, a changed prompt) is no miss, so only what it read counts."""
    return (hit[0], hit[0]) if explained else hit


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
    # Churn: what its calls paid beyond reading what they could have read (each call's
    # avoidable cost), and how many calls were priced so.
    avoidable_cost: float = 0.0
    charged: int = 0
    # The incident's id in a store (``cachebench explain ID``): random, unique across processes.
    uid: str = field(default_factory=lambda: os.urandom(6).hex())

    def regression(self) -> Regression:
        # The calls' rate over at least RATE_MIN_SPAN_S: a burst of calls in a second is not
        # an hour's traffic.
        span = max(self.last_at - self.started_at, RATE_MIN_SPAN_S)
        per_hour = None
        if self.kind == "prefix_churn" and self.charged and span > 0:
            per_hour = self.avoidable_cost / self.charged * (self.calls / span) * 3600.0
        elif self.priced and span > 0:
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


class LayerState:
    """One layer of one flow: its recent values (to find a call's nearest earlier prompt),
    what its recent calls did there (churn), and what became of its writes (unread writes)."""

    __slots__ = ("changes", "outcomes", "read_back", "recent", "unread", "unread_cost", "writes")

    def __init__(self) -> None:
        self.recent: list[int] = []  # distinct values, newest last (at most RECENT_VALUES)
        self.read_back: set[int] = set()  # those of them some call read
        # The last CHURN_SPAN calls that changed the layer (True) or read it (False).
        self.outcomes: list[bool] = []
        # The changes among them: (time, hit numerator, denominator, cost, avoidable cost).
        self.changes: list[tuple[float, int, int, float | None, float | None]] = []
        self.writes = 0  # writes of new values settled (read back, or not within their TTL)
        self.unread = 0  # ... of which never read back
        self.unread_cost = 0.0  # what those writes paid beyond plain input (USD, where priced)

    def seen(self, value: int) -> None:
        """A call had ``value`` here (newest last)."""
        recent = self.recent
        if recent and recent[-1] == value:
            return
        if value in recent:
            recent.remove(value)
        recent.append(value)
        if len(recent) > RECENT_VALUES:
            self.read_back.discard(recent.pop(0))

    def read(self, value: int) -> None:
        self.seen(value)
        self.read_back.add(value)
        self._outcome(False)

    def changed(self, now: float, hit: tuple[int, int], cost: float | None, avoidable: float | None) -> None:
        self._outcome(True)
        self.changes.append((now, hit[0], hit[1], cost, avoidable))
        del self.changes[:-CHURN_SPAN]

    def _outcome(self, changed: bool) -> None:
        self.outcomes.append(changed)
        del self.outcomes[:-CHURN_SPAN]

    def many_values(self) -> bool:
        """The layer takes several values that are each read back (a customer's context): by
        design, not by mistake."""
        return len(self.read_back) >= 2

    def churning(self) -> bool:
        """Most of the layer's recent calls changed it."""
        return sum(self.outcomes) >= CHURN_CHANGES

    def quiet(self) -> bool:
        """Its last calls read it without a change."""
        tail = self.outcomes[-CHURN_QUIET:]
        return len(tail) == CHURN_QUIET and not any(tail)

    def settle(self, read_back: bool, premium: float | None) -> None:
        self.writes += 1
        if not read_back:
            self.unread += 1
            self.unread_cost += premium or 0.0

    def unread_writes(self) -> dict[str, Any] | None:
        """The layer's writes that were never read back, when most were: too sparse a traffic
        for its TTL."""
        if not self.writes or self.unread < UNREAD_SHARE * self.writes:
            return None
        return {
            "writes": self.writes,
            "unread": self.unread,
            "unread_cost_usd": self.unread_cost,
            "advice": "most writes here expire unread (traffic too sparse for the TTL): "
            "drop this breakpoint, or use the 1 h TTL if calls come back within the hour",
        }


class FlowState:
    __slots__ = (
        "churn",
        "cost_base",
        "costs",
        "cum_den",
        "cum_num",
        "drop",
        "explained",
        "good",
        "healthy",
        "hits",
        "layers",
        "model",
        "n",
        "pending",
        "pos",
        "times",
        "values",
        "win_den",
        "win_num",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.values = [0] * MAX_LAYERS  # last chained hash per layer
        self.good = [0] * MAX_LAYERS  # last value per layer that a call read (0: none yet)
        self.layers: list[LayerState | None] = [None] * MAX_LAYERS  # made on first use: layer()
        # The window's calls: whether their writes were expected (cold, a change, a twin: no
        # hit-ratio miss), their (hit numerator, denominator), cost and time.
        self.explained = [False] * WINDOW
        self.hits = [(0, 0)] * WINDOW
        self.costs: list[float | None] = [None] * WINDOW
        self.times = [0.0] * WINDOW
        self.pos = 0
        self.n = 0
        self.cum_num = self.cum_den = 0
        self.win_num = self.win_den = 0  # the window's hit ratio, as sums
        self.healthy = False
        self.cost_base: float | None = None  # cost per call while healthy (moving average)
        self.churn: Incident | None = None
        self.drop: Incident | None = None
        # Writes of a never-seen layer value, until read back or past their TTL:
        # value -> (layer, deadline, what the write paid beyond plain input).
        self.pending: dict[int, tuple[int, float, float | None]] = {}

    def layer(self, k: int) -> LayerState:
        """Layer ``k``'s state (made on first use: most flows use one or two layers)."""
        found = self.layers[k]
        if found is None:
            found = self.layers[k] = LayerState()
        return found

    def settle(self, value: int, read_back: bool) -> None:
        """The write of ``value`` was read back, or its TTL passed without."""
        layer, _, premium = self.pending.pop(value)
        self.layer(layer).settle(read_back, premium)

    def push(self, explained: bool, hit: tuple[int, int], cost: float | None, now: float) -> None:
        """Add one call to the window (the oldest leaves it)."""
        f = self
        i = f.pos
        if f.n == WINDOW:  # the call leaving the window
            gone = scored_hit(f.explained[i], f.hits[i])
            f.win_num -= gone[0]
            f.win_den -= gone[1]
        f.explained[i] = explained
        f.hits[i] = hit
        f.costs[i] = cost
        f.times[i] = now
        scored = scored_hit(explained, hit)
        f.cum_num += scored[0]
        f.cum_den += scored[1]
        f.win_num += scored[0]
        f.win_den += scored[1]
        f.pos = (i + 1) % WINDOW
        f.n = min(f.n + 1, WINDOW)
