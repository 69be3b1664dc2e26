"""Regressions per flow: prefix churn and hit-ratio drops, each with the diff that explains it.

The detector sees every finished call after :func:`~cachebench.diagnose.causes.miss_cause`
has given it a cause (which :meth:`FlowDetector.observe` refines, the cause's last step), with
what the cache view held when the call went out and what it holds as the call finishes (a twin that
finished first may already have written the same layer). A prompt's *layers* are its
breakpoints in cache order (tools+system, a user's context, the conversation...). Per flow it
keeps (:mod:`cachebench.diagnose.flowstate`):

* over a window of the last ``WINDOW`` calls, which layers each call read, found new (never
  seen) or kept from the call before; for the first layer also a baseline of the calls that
  left the window (read, and with the same value, in most: the flow's shared prompt);
* every write of a never-seen layer value, until a later call reads it back or
  ``SETTLE_S`` (or its shorter TTL) passes: then it is *settled*, read back or not.

*Prefix churn* opens at a layer when most of the window's calls are new there and most of
its settled writes were never read back: a timestamp, a request id, a re-ordered tool list.
The first layer (tools, system prompt) may churn from the flow's first call; a later one
only once the flow has read it. New customers' contexts are read back by their next turns,
and a deploy that changes the prompt once is one ``prefix_changed`` write that later calls
read, so neither churns. Churn closes when at most a quarter of the window is new there.

A *hit-ratio drop* opens when the window's hit ratio (expected writes excluded: new users'
layers, new turns, prompt changes, concurrent twins) falls below the tracker's
``miss_alert_threshold`` after having been at or above it, and closes ``DROP_CLOSE`` above
it (no flapping). Churn, which already explains the misses, suppresses it.

Each churn incident carries a :class:`~cachebench.types.PrefixDiff` between the last value of
the layer a call read (or, if none ever was, the previous new one) and the new one, located
from per-block chunk digests taken when a value is first read or while a layer churns (no
prompt text unless ``capture_text=True``, which keeps the layer's bytes for short, redacted
excerpts). A drop has no diff when the prompt did not change.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..expect import ALIVE, NEVER, Expectation
from ..facts import ttl_seconds
from ..fingerprint import BlockPrint, diff_layers, layer_print, order_digests
from ..types import MissCause, PrefixDiff, PrefixKey, Prompt, Regression
from .causes import refine_cause
from .flowstate import FlowState, Incident, WindowSlot, has_layer, scored_hit
from .thresholds import (
    CHURN_ACTIVE,
    CHURN_CLOSE,
    COST_BASE_WEIGHT,
    DROP_CLOSE,
    MAX_INCIDENTS,
    MAX_LAYERS,
    MAX_PENDING,
    MAX_PRINT_BYTES,
    MAX_PRINTS,
    MIN_CALLS,
    PRINTS_BUDGET,
    SETTLE_S,
)

__all__ = ["FlowDetector"]

_HEALTHY = (None, "cold", "concurrent", "ttl_expired")  # causes of calls that set the flow's normal cost


def _print_size(prints: tuple[BlockPrint, ...]) -> int:
    """Rough bytes a layer print holds: its chunk digests and any kept text."""
    return sum(100 + 36 * (len(b.head) + len(b.tail)) + (len(b.text) if b.text else 0) for b in prints)


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
        self._flows: OrderedDict[str, FlowState] = OrderedDict()
        self._prints: OrderedDict[int, tuple[BlockPrint, ...]] = OrderedDict()
        self._print_bytes = 0
        self.incidents: list[Incident] = []

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

    def _flow(self, name: str, now: float) -> FlowState:
        f = self._flows.get(name)
        if f is None:
            f = self._flows[name] = FlowState()
            if len(self._flows) > self.max_flows:
                _, gone = self._flows.popitem(last=False)
                for incident in (gone.churn, gone.drop):
                    if incident is not None:  # no longer watched: closed, and said so
                        incident.details["evicted"] = True
                        self._close(incident, now)
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
        if key.bp_bytes[layer] - (key.bp_bytes[layer - 1] if layer else 0) > MAX_PRINT_BYTES:
            return
        made = prints[value] = layer_print(prompt, start, bps[layer] + 1, keep_text=self.capture_text)
        self._print_bytes += _print_size(made)
        while len(prints) > MAX_PRINTS or (self._print_bytes > PRINTS_BUDGET and len(prints) > 1):
            _, dropped = prints.popitem(last=False)
            self._print_bytes -= _print_size(dropped)

    def observe(
        self,
        flow: str,
        model: str | None,
        key: PrefixKey,
        prompt: Prompt | None,
        exp: Expectation,
        done: Expectation,
        cause: MissCause | None,
        hit: tuple[int, int],
        cost: float | None,
        now: float,
    ) -> MissCause | None:
        """Update the flow with one finished call; return its miss cause, refined
        (:func:`~cachebench.diagnose.causes.refine_cause`).

        ``exp`` is what the cache view expected when the call went out, ``done`` what it
        holds as the call finishes (a twin that finished first may have written the same
        layer: then it is not new)."""
        f = self._flow(flow, now)
        bps = key.breakpoints
        states = done.breakpoint_states
        chain = key.bp_hashes
        hash_at = key.hash_at
        pending = f.pending
        while pending:  # writes past their TTL without a read: settled as never read back
            oldest = next(iter(pending))
            layer, deadline = pending[oldest]
            if deadline >= now:
                break
            del pending[oldest]
            f.settle(layer, False)
        for q in done.matched:  # reads, incl. the lookback's, read back what they hit
            if pending and hash_at(q) in pending:
                f.settle(pending.pop(hash_at(q))[0], True)
        n_layers = min(len(bps), MAX_LAYERS)
        first_new = -1  # the first layer this call wrote that the tracker had never seen
        first_cold = -1
        read = new = same = 0
        for k in range(n_layers):
            v = chain[k]
            if f.values[k] == v:
                same |= 1 << k
            if states[k] == ALIVE:
                read |= 1 << k
                if pending and v in pending:
                    f.settle(pending.pop(v)[0], True)
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
        if cause is not None:
            # The cause's second and last step (diagnose.causes): what the flow knows.
            cause = refine_cause(
                cause,
                model_switched=first_cold == 0 and f.model is not None and model != f.model,
                layer_changed=(
                    first_new >= 0
                    and not has_layer(same, first_new)
                    # The first layer (tools, system) is one prompt for the whole flow; later
                    # layers (a customer's context) differ by design, so only churn makes their
                    # writes changes.
                    and (
                        (first_new == 0 and f.first_layer_shared())
                        or (f.churn is not None and f.churn.layer == first_new)
                    )
                ),
                reordered=lambda: prompt is not None and self._serialization(key, prompt, exp),
            )
        churn_like = False
        if first_new >= 0:
            v = chain[first_new]
            if v not in pending:
                pending[v] = (first_new, now + min(ttl_seconds(key.ttls[first_new]), SETTLE_S))
                if len(pending) > MAX_PENDING:
                    del pending[next(iter(pending))]
            if f.n >= MIN_CALLS and f.new_count[first_new] >= CHURN_ACTIVE * f.n:
                # Looks like churn: print this value so an incident can show what changes.
                self._print(v, prompt, key, first_new)
                churn_like = True
        f.read_layers |= read
        for k in range(n_layers):
            f.values[k] = chain[k]
        f.model = model
        # Expected writes (new users, a one-off prompt change) are not hit-ratio misses.
        explained = cause in ("cold", "concurrent", "prefix_changed", "model_changed")
        f.push(WindowSlot(n_layers, read, new, same, explained), hit, cost, now)
        self._incidents(flow, f, key, prompt, first_new, hit, cost if cause in _HEALTHY else None, cost, now)
        if churn_like:
            f.last_new[first_new] = chain[first_new]
        return cause

    def _serialization(self, key: PrefixKey, prompt: Prompt, exp: Expectation) -> bool:
        """An unexpected miss on identical content: did the caller's key order change?"""
        if exp.best_at < 0:
            return False
        now_order = order_digests(prompt)
        for p, h in zip(key.breakpoints[:MAX_LAYERS], key.bp_hashes, strict=False):
            if p > exp.best_at:
                break
            seen = self._prints.get(h)
            if seen and any(
                b.order_digest != now_order[b.position] for b in seen if b.position < len(now_order)
            ):
                return True
        return False

    def _incidents(
        self,
        name: str,
        f: FlowState,
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
        # Prefix churn: a layer keeps being new and what it writes is never read back. The
        # first layer (tools, system) may churn from the flow's first call; a later one only
        # once the flow has read it (new customers' contexts are read back, or never were).
        if f.churn is None:
            if (
                full
                and first_new >= 0
                and f.new_count[first_new] >= CHURN_ACTIVE * f.n
                and (first_new == 0 or has_layer(f.read_layers, first_new))
                and f.churning(first_new)
            ):
                f.churn = self._open(name, f, "prefix_churn", key, prompt, first_new, now)
        elif f.new_count[f.churn.layer] <= CHURN_CLOSE * f.n:
            f.churn = self._close(f.churn, now)
        # Hit-ratio drop.
        if not math.isnan(ratio) and full:
            if ratio >= self.threshold:
                f.healthy = True
                if f.drop is not None and ratio >= min(1.0, self.threshold + DROP_CLOSE):
                    f.drop = self._close(f.drop, now)
            elif f.healthy and f.drop is None and f.churn is None:
                f.drop = self._open(name, f, "hit_ratio_drop", key, prompt, -1, now)
        if f.churn is None and f.drop is None and healthy_cost is not None:
            c = healthy_cost
            w = COST_BASE_WEIGHT
            f.cost_base = c if f.cost_base is None else (1.0 - w) * f.cost_base + w * c

    def _open(
        self,
        name: str,
        f: FlowState,
        kind: str,
        key: PrefixKey,
        prompt: Prompt | None,
        layer: int,
        now: float,
    ) -> Incident:
        """Open an incident, counting the window's calls that show it as its first calls."""
        slots = f.slots
        if layer >= 0:  # churn: the window's calls new at the layer
            bad = [i for i in range(f.n) if has_layer(slots[i].new, layer)]
        else:  # a drop: the window's calls that missed part of what they could read
            bad = [i for i in range(f.n) if f.hits[i][0] < f.hits[i][1] and not slots[i].explained]
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
        scored = [scored_hit(slots[i], f.hits[i]) for i in range(f.n)]
        w_num = sum(h[0] for h in scored)
        w_den = sum(h[1] for h in scored)
        before_den = f.cum_den - w_den
        before = (f.cum_num - w_num) / before_den if before_den > 0 else math.nan
        diff = self._diff(f, key, prompt, layer) if layer >= 0 else None
        details: dict[str, Any] = {"layer": layer} if layer >= 0 else {}
        incident = Incident(
            name,
            kind,
            started,
            before,
            layer,
            diff,
            details,
            len(bad),
            num,
            den,
            extra,
            priced,
            last_at=now,
            detected_at=now,
        )
        self.incidents.append(incident)
        if len(self.incidents) > MAX_INCIDENTS:
            del self.incidents[0]
        self.on_open(incident.regression())
        return incident

    def _diff(self, f: FlowState, key: PrefixKey, prompt: Prompt | None, layer: int) -> PrefixDiff | None:
        """The diff between the last value of ``layer`` a call read (or, when none was ever
        read, the previous new one) and this call's."""
        now_value = key.bp_hashes[layer]
        base = f.good[layer] or (f.last_new[layer] if f.last_new[layer] != now_value else 0)
        old = self._prints.get(base) if base else None
        if old is None or prompt is None:
            return None
        self._print(now_value, prompt, key, layer)
        new = self._prints.get(now_value)
        return diff_layers(old, new) if new is not None else None

    @staticmethod
    def _close(incident: Incident, now: float) -> None:
        incident.closed_at = now
        return None
