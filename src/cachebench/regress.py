"""Regressions per flow: prefix churn and hit-ratio drops, each with the diff that explains it.

The detector sees every finished call after the cache view has explained it. A prompt's
*layers* are its breakpoints in cache order (tools+system, a user's context, the
conversation...). Per flow and layer it keeps, over a window of the last ``WINDOW`` calls
and as a baseline of the calls before that window (a moving average of the calls leaving
it):

* how often the layer was *read* (its entry alive), how often it was *new* (never seen), and
  how often it had the *same* value as the flow's previous call. A layer that is normally
  read with one value is the flow's shared layer (tools and system prompt; also a single
  user's context). A layer whose values differ call to call (each customer's context, the
  moving conversation) is not;
* *prefix churn* opens when a layer that the baseline shows read and shared becomes new in
  most of the window's calls (a timestamp, a request id, a re-ordered tool list), and closes
  when at most a quarter of the window is new there again. New customers writing their own
  context never churn the shared layer; a deploy that changes the prompt once is one
  ``prefix_changed`` miss, then reads;
* a *hit-ratio drop* opens when the window's hit ratio (cold writes excluded: they are
  expected) falls below the tracker's ``miss_alert_threshold`` after having been at or
  above it, and closes when it is back. Churn, which already explains the misses,
  suppresses it.

Each incident carries a :class:`~cachebench.types.PrefixDiff` between the last value of the
layer that a call read and the new one, located from per-block chunk digests taken when a
layer value is first read (no prompt text, unless ``capture_text=True``, which keeps the
layer's bytes for short, redacted excerpts).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .detect import ALIVE, NEVER, Expectation
from .fingerprint import BlockPrint, diff_layers, layer_print, order_digests
from .types import MissCause, PrefixDiff, PrefixKey, Prompt, Regression, Usage

__all__ = ["FlowDetector"]

WINDOW = 16  # calls per flow in the churn and hit-ratio windows
MIN_CALLS = 12  # a window judges nothing before this many calls
CHURN_OPEN = 0.75  # share of the window new at a shared layer that opens churn
CHURN_CLOSE = 0.25  # ... and at or below which it closes
SHARED = 0.75  # baseline read and same-value rates that make a layer shared
BASELINE_WEIGHT = 0.05  # of each call leaving the window in the baseline (about 20 calls)
MAX_LAYERS = 8  # breakpoints beyond this are not tracked per layer
MAX_PRINTS = 512  # layer prints kept tracker-wide (least recently used dropped)
MAX_PRINT_BYTES = 1 << 18  # layers larger than this are not printed (their diff is block-level)
MAX_INCIDENTS = 1000
_HEALTHY = (None, "cold", "concurrent", "ttl_expired")  # causes of calls that set the flow's normal cost
_EXPLAINED = 32  # bit of a window slot's mask: the call's writes were expected (cold, a change)


def _scored(mask: int, hit: tuple[int, int]) -> tuple[int, int]:
    """A call's part in the flow's hit ratio: an expected write (a new user's context, a new
    turn, a changed prompt) is no miss, so only what it read counts."""
    return (hit[0], hit[0]) if mask >> _EXPLAINED & 1 else hit


@dataclass(slots=True)
class _Incident:
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
        )


class _Flow:
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
        "masks",
        "model",
        "n",
        "new_count",
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
        # Per window slot: bit masks over layers, (present, read, new, same) packed 8 bits each.
        self.masks = [0] * WINDOW
        self.hits = [(0, 0)] * WINDOW  # per window slot: (hit numerator, denominator)
        self.costs: list[float | None] = [None] * WINDOW
        self.times = [0.0] * WINDOW
        self.new_count = [0] * MAX_LAYERS  # window calls new at each layer
        self.base_read = [-1.0] * MAX_LAYERS  # baseline rates (-1: no call has left the window)
        self.base_same = [-1.0] * MAX_LAYERS
        self.base_n = [0] * MAX_LAYERS
        self.pos = 0
        self.n = 0
        self.cum_num = self.cum_den = 0
        self.win_num = self.win_den = 0  # the window's hit ratio, as sums
        self.healthy = False
        self.cost_base: float | None = None  # cost per call while healthy (moving average)
        self.churn: _Incident | None = None
        self.drop: _Incident | None = None

    def shared(self, k: int) -> bool:
        """Layer ``k`` is normally read, with one value (no baseline yet: not known to be)."""
        return self.base_read[k] >= SHARED and self.base_same[k] >= SHARED


class FlowDetector:
    """Regressions of every flow of one tracker. Not locked: the tracker holds its lock."""

    def __init__(
        self,
        threshold: float,
        capture_text: bool,
        max_flows: int,
        on_open: Callable[[Regression], None],
    ) -> None:
        self.threshold = threshold
        self.capture_text = capture_text
        self.max_flows = max_flows
        self.on_open = on_open
        self._flows: OrderedDict[str, _Flow] = OrderedDict()
        self._prints: OrderedDict[int, tuple[BlockPrint, ...]] = OrderedDict()
        self.incidents: list[_Incident] = []

    # -- reading ------------------------------------------------------------------------------

    def regressions(self) -> list[Regression]:
        return [i.regression() for i in self.incidents]

    def open_for(self, flow: str) -> Regression | None:
        f = self._flows.get(flow)
        if f is None:
            return None
        incident = f.churn or f.drop
        return incident.regression() if incident is not None else None

    # -- one call -------------------------------------------------------------------------------

    def _flow(self, name: str) -> _Flow:
        f = self._flows.get(name)
        if f is None:
            f = self._flows[name] = _Flow()
            if len(self._flows) > self.max_flows:
                self._flows.popitem(last=False)
        else:
            self._flows.move_to_end(name)
        return f

    def _print(self, value: int, prompt: Prompt | None, key: PrefixKey, layer: int) -> None:
        """Print a layer the first time its value is seen (a write, or a warm start)."""
        prints = self._prints
        if value in prints:
            prints.move_to_end(value)
            return
        if prompt is None:
            return
        bps = key.breakpoints
        start = bps[layer - 1] + 1 if layer else 0
        if sum(key.sizes[start : bps[layer] + 1]) > MAX_PRINT_BYTES:
            return
        prints[value] = layer_print(prompt, start, bps[layer] + 1, keep_text=self.capture_text)
        if len(prints) > MAX_PRINTS:
            prints.popitem(last=False)

    def observe(
        self,
        flow: str,
        model: str | None,
        key: PrefixKey,
        prompt: Prompt | None,
        exp: Expectation,
        usage: Usage,
        cause: MissCause | None,
        hit: tuple[int, int],
        cost: float | None,
        now: float,
    ) -> MissCause | None:
        """Update the flow with one finished call; return its miss cause, refined."""
        f = self._flow(flow)
        bps = key.breakpoints
        states = exp.breakpoint_states
        chain = key.chain
        n_layers = min(len(bps), MAX_LAYERS)
        first_new = -1  # the first layer this call wrote that the tracker had never seen
        first_cold = -1
        read = new = same = 0
        for k in range(n_layers):
            v = chain[bps[k]]
            if f.values[k] == v:
                same |= 1 << k
            if states[k] == ALIVE:
                read |= 1 << k
                if f.good[k] != v:
                    f.good[k] = v
                    self._print(v, prompt, key, k)
                elif self._prints.get(v) is not None:
                    self._prints.move_to_end(v)
            else:
                if first_cold < 0:
                    first_cold = k
                if states[k] == NEVER:
                    new |= 1 << k
                    if first_new < 0:
                        first_new = k
        # Refine the cause with what the flow knows.
        if first_cold >= 0 and cause in ("cold", "ttl_expired", "provider"):
            if f.model is not None and model != f.model and first_cold == 0:
                cause = "model_changed"
            elif first_new >= 0 and cause == "cold" and not same >> first_new & 1 and f.shared(first_new):
                cause = "prefix_changed"
        if cause == "provider" and prompt is not None:
            cause = self._serialization(key, prompt, exp) or cause
        for k in range(n_layers):
            f.values[k] = chain[bps[k]]
        f.model = model
        present = (1 << n_layers) - 1
        # Expected writes (new users, a one-off prompt change) are not hit-ratio misses.
        explained = cause in ("cold", "concurrent", "prefix_changed", "model_changed")
        self._window(
            f, present | read << 8 | new << 16 | same << 24 | explained << _EXPLAINED, hit, cost, now
        )
        self._incidents(flow, f, key, prompt, first_new, hit, cost if cause in _HEALTHY else None, cost, now)
        return cause

    def _serialization(self, key: PrefixKey, prompt: Prompt, exp: Expectation) -> MissCause | None:
        """An unexpected miss on identical content: did the caller's key order change?"""
        if exp.best_at < 0:
            return None
        now_order = order_digests(prompt)
        for p in key.breakpoints[:MAX_LAYERS]:
            if p > exp.best_at:
                break
            seen = self._prints.get(key.chain[p])
            if seen and any(
                b.order_digest != now_order[b.position] for b in seen if b.position < len(now_order)
            ):
                return "serialization_changed"
        return None

    @staticmethod
    def _window(f: _Flow, masks: int, hit: tuple[int, int], cost: float | None, now: float) -> None:
        slot = f.pos
        old = f.masks[slot]
        if f.n == WINDOW:  # the call leaving the window joins the baseline
            for k in range(MAX_LAYERS):
                if not old >> k & 1:
                    break
                # A running mean for the first calls, then a moving average.
                f.base_n[k] += 1
                w = max(1.0 / f.base_n[k], BASELINE_WEIGHT)
                r = float(old >> (8 + k) & 1)
                sm = float(old >> (24 + k) & 1)
                if f.base_read[k] < 0:
                    f.base_read[k], f.base_same[k] = r, sm
                else:
                    f.base_read[k] += w * (r - f.base_read[k])
                    f.base_same[k] += w * (sm - f.base_same[k])
                f.new_count[k] -= old >> (16 + k) & 1
        for k in range(MAX_LAYERS):
            if not masks >> k & 1:
                break
            f.new_count[k] += masks >> (16 + k) & 1
        if f.n == WINDOW:
            gone = _scored(old, f.hits[slot])
            f.win_num -= gone[0]
            f.win_den -= gone[1]
        f.masks[slot] = masks
        f.hits[slot] = hit
        f.costs[slot] = cost
        f.times[slot] = now
        scored = _scored(masks, hit)
        f.cum_num += scored[0]
        f.cum_den += scored[1]
        f.win_num += scored[0]
        f.win_den += scored[1]
        f.pos = (slot + 1) % WINDOW
        f.n = min(f.n + 1, WINDOW)

    def _incidents(
        self,
        name: str,
        f: _Flow,
        key: PrefixKey,
        prompt: Prompt | None,
        first_new: int,
        hit: tuple[int, int],
        healthy_cost: float | None,
        cost: float | None,
        now: float,
    ) -> None:
        ratio = f.win_num / f.win_den if f.win_den else math.nan
        for incident in (f.churn, f.drop):
            if incident is not None:
                incident.calls += 1
                incident.num += hit[0]
                incident.den += hit[1]
                incident.last_at = now
                if cost is not None and f.cost_base is not None:
                    incident.extra_cost += cost - f.cost_base
                    incident.priced += 1
        full = f.n >= MIN_CALLS
        # Prefix churn: a shared layer that keeps being new.
        if f.churn is None:
            if full and first_new >= 0 and f.new_count[first_new] >= CHURN_OPEN * f.n and f.shared(first_new):
                f.churn = self._open(name, f, "prefix_churn", key, prompt, first_new, now)
        elif f.new_count[f.churn.layer] <= CHURN_CLOSE * f.n:
            f.churn = self._close(f.churn, now)
        # Hit-ratio drop.
        if not math.isnan(ratio) and full:
            if ratio >= self.threshold:
                f.healthy = True
                if f.drop is not None:
                    f.drop = self._close(f.drop, now)
            elif f.healthy and f.drop is None and f.churn is None:
                f.drop = self._open(name, f, "hit_ratio_drop", key, prompt, -1, now)
        if f.churn is None and f.drop is None and healthy_cost is not None:
            c = healthy_cost
            f.cost_base = c if f.cost_base is None else 0.9 * f.cost_base + 0.1 * c

    def _open(
        self,
        name: str,
        f: _Flow,
        kind: str,
        key: PrefixKey,
        prompt: Prompt | None,
        layer: int,
        now: float,
    ) -> _Incident:
        """Open an incident, counting the window's calls that show it as its first calls."""
        if layer >= 0:  # churn: the window's calls new at the layer
            bad = [i for i in range(f.n) if f.masks[i] >> (16 + layer) & 1]
        else:  # a drop: the window's calls that missed part of what they could read
            bad = [i for i in range(f.n) if f.hits[i][0] < f.hits[i][1] and not f.masks[i] >> _EXPLAINED & 1]
        num = sum(f.hits[i][0] for i in bad)
        den = sum(f.hits[i][1] for i in bad)
        extra = 0.0
        priced = 0
        base = f.cost_base
        for i in bad:
            c = f.costs[i]
            if c is not None and base is not None:
                extra += c - base
                priced += 1
        started = min((f.times[i] for i in bad), default=now)
        scored = [_scored(f.masks[i], f.hits[i]) for i in range(f.n)]
        w_num = sum(h[0] for h in scored)
        w_den = sum(h[1] for h in scored)
        before_den = f.cum_den - w_den
        before = (f.cum_num - w_num) / before_den if before_den > 0 else math.nan
        diff = self._diff(f, key, prompt, layer) if layer >= 0 else None
        details: dict[str, Any] = {"layer": layer} if layer >= 0 else {}
        incident = _Incident(
            name, kind, started, before, layer, diff, details, len(bad), num, den, extra, priced, last_at=now
        )
        self.incidents.append(incident)
        if len(self.incidents) > MAX_INCIDENTS:
            del self.incidents[0]
        self.on_open(incident.regression())
        return incident

    def _diff(self, f: _Flow, key: PrefixKey, prompt: Prompt | None, layer: int) -> PrefixDiff | None:
        """The diff between the last value of ``layer`` a call read and this call's."""
        old = self._prints.get(f.good[layer]) if f.good[layer] else None
        if old is None or prompt is None:
            return None
        self._print(key.chain[key.breakpoints[layer]], prompt, key, layer)
        new = self._prints.get(key.chain[key.breakpoints[layer]])
        return diff_layers(old, new) if new is not None else None

    @staticmethod
    def _close(incident: _Incident, now: float) -> None:
        incident.closed_at = now
        return None
