"""Each call's diagnosis in its flow, and the flow's incidents: prefix churn and hit-ratio drops.

The detector sees every finished call after :func:`~cachebench.diagnose.causes.miss_cause`
has given it a cause, with what the cache view held when the call went out and what it holds
as the call finishes (a twin that finished first may already have written the same layer). A
prompt's *layers* are its breakpoints in cache order (tools+system, a customer's context, the
conversation...). Per flow and layer it keeps (:mod:`cachebench.diagnose.flowstate`) the
recent values' prints (:mod:`cachebench.diagnose.prints`: digests, no text), so a call whose
layer is new is compared at once with the flow's nearest earlier prompt there: the cause's
last step (:func:`~cachebench.diagnose.causes.refine_cause`), the call's diff (place, kind,
value type) and whether the miss was avoidable.

*Prefix churn* opens at a layer when ``CHURN_CHANGES`` of its last ``CHURN_SPAN`` calls
changed it (``prefix_changed`` or ``serialization_changed`` there): a timestamp, a request id,
a re-ordered tool list, keys in a random order; at any traffic rate, since nothing waits for a
TTL. A deploy changes a layer once and later calls read it; new customers, new turns and
expiries are not changes. Churn closes after ``CHURN_QUIET`` calls in a row read the layer.

A *hit-ratio drop* opens when the window's hit ratio (expected writes excluded: new users'
layers, new turns, prompt changes, concurrent twins) falls below the tracker's
``miss_alert_threshold`` after having been at or above it, and closes ``DROP_CLOSE`` above
it (no flapping). Churn, which already explains the misses, suppresses it.

Writes of a new value are followed until a later call reads them back or their TTL (at most
``SETTLE_S``) passes; a layer whose writes mostly expire unread (traffic too sparse for its
TTL) is reported as *unread writes* (:meth:`FlowDetector.unread_writes`), not as churn.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from ..expect import ALIVE, NEVER, Expectation
from ..facts import ttl_seconds
from ..types import MissCause, PrefixDiff, PrefixKey, Prompt, Regression
from .causes import avoidable, refine_cause
from .flowstate import FlowState, Incident, scored_hit
from .prints import Change, LayerPrint, Printer, block_bytes, compare, nearest, print_size
from .thresholds import (
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

__all__ = ["STRIP_BLOCKS", "Diagnosis", "FlowDetector", "strip"]

_HEALTHY = (None, "cold", "concurrent", "ttl_expired")  # causes of calls that set the flow's normal cost


class Diagnosis(NamedTuple):
    """A call's diagnosis in its flow: the refined cause, where its prompt differs from the
    flow's nearest earlier one (for ``prefix_changed`` and ``serialization_changed``), and
    whether the miss was avoidable."""

    cause: MissCause | None
    diff: PrefixDiff | None
    avoidable_tokens: int = 0
    avoidable_cost: float | None = None  # None: nothing avoidable, or unpriced


#: Blocks an incident's strips keep on each side (a layer of more is cut, and says so).
STRIP_BLOCKS = 64


def strip(layer: LayerPrint) -> list[list[Any]]:
    """A layer's blocks as an incident keeps them, no text: ``[section, index in its section,
    position in the prompt, bytes]`` each, at most :data:`STRIP_BLOCKS` (then a last entry
    ``["...", blocks left out, -1, their bytes]``)."""
    out: list[list[Any]] = [[b.section, b.index, b.position, b.features.size] for b in layer[:STRIP_BLOCKS]]
    rest = layer[STRIP_BLOCKS:]
    if rest:
        out.append(["...", len(rest), -1, sum(b.features.size for b in rest)])
    return out


class FlowDetector:
    """Diagnoses and incidents of every flow of one tracker (run on its consumer: no lock)."""

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
        self._printer = Printer(capture_text)
        self._prints: OrderedDict[int, LayerPrint] = OrderedDict()
        self._print_bytes = 0
        self._compared: tuple[LayerPrint, LayerPrint] | None = None  # the last pair compared
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

    def unread_writes(self, flow: str) -> dict[int, dict[str, Any]]:
        """Per layer of ``flow``: its writes that mostly expired unread (see the module)."""
        f = self._flows.get(flow)
        if f is None:
            return {}
        found = {k: layer.unread_writes() for k, layer in enumerate(f.layers) if layer is not None}
        return {k: v for k, v in found.items() if v is not None}

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

    def _print(self, value: int, prompt: Prompt | None, key: PrefixKey, layer: int) -> LayerPrint | None:
        """The print of ``layer`` (whose chained hash is ``value``), made the first time the
        value is seen; None when it is too large or the prompt is not at hand."""
        prints = self._prints
        made = prints.get(value)
        if made is not None:
            prints.move_to_end(value)
            return made
        if prompt is None:
            return None
        bps = key.breakpoints
        start = bps[layer - 1] + 1 if layer else 0
        if key.bp_bytes[layer] - (key.bp_bytes[layer - 1] if layer else 0) > MAX_PRINT_BYTES:
            return None
        made = prints[value] = self._printer.layer(prompt, start, bps[layer] + 1)
        self._print_bytes += print_size(made)
        while len(prints) > MAX_PRINTS or (self._print_bytes > PRINTS_BUDGET and len(prints) > 1):
            _, dropped = prints.popitem(last=False)
            self._print_bytes -= print_size(dropped)
        return made

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
        premium: Callable[[], float | None] | None = None,
        price: Callable[[int], tuple[int, float | None]] | None = None,
        first_layer: int = 0,
    ) -> Diagnosis:
        """Update the flow with one finished call; return its diagnosis (the cause refined by
        :func:`~cachebench.diagnose.causes.refine_cause`).

        ``exp`` is what the cache view expected when the call went out, ``done`` what it
        holds as the call finishes (a twin that finished first may have written the same
        layer: then it is not new). ``premium()`` gives what the call's writes paid beyond plain
        input (asked for a write the unread-writes report follows). ``price(layer)`` gives an avoidable miss's tokens
        and cost, given the layer its change is in (-1: no change). ``first_layer``: the first
        layer whose prefix reaches the model's minimum (the layers before it are no cache
        entries, :func:`~cachebench.expect.cacheable_from`): a miss is placed before it only in
        a layer whose value is not the flow's last one there (its content changed)."""
        f = self._flow(flow, now)
        self._compared = None  # (set by this call's comparison, if it makes one)
        bps = key.breakpoints
        states = done.breakpoint_states
        chain = key.bp_hashes
        hash_at = key.hash_at
        pending = f.pending
        while pending:  # writes past their TTL without a read: settled as never read back
            oldest = next(iter(pending))
            if pending[oldest][1] >= now:
                break
            f.settle(oldest, False)
        for q in done.matched:  # reads, incl. the lookback's, read back what they hit
            if pending and hash_at(q) in pending:
                f.settle(hash_at(q), True)
        n_layers = min(len(bps), MAX_LAYERS)
        first_new = -1  # the first layer this call wrote that the tracker had never seen
        first_cold = -1
        for k in range(n_layers):
            v = chain[k]
            if states[k] == ALIVE:
                if pending and v in pending:
                    f.settle(v, True)
                f.layer(k).read(v)
                if f.good[k] != v:
                    f.good[k] = v
                    self._print(v, prompt, key, k)
                elif v in self._prints:
                    self._prints.move_to_end(v)
            elif k >= first_layer or f.values[k] != v:
                # (a layer below the minimum is no cache entry: it is where a miss is only when
                # its content changed, which changes every later layer's value too)
                if first_cold < 0:
                    first_cold = k
                if states[k] == NEVER and first_new < 0:
                    first_new = k
        change: Change | None = None
        at = -1  # the layer the change is in
        if cause == "cold" and 0 <= first_new == first_cold:
            change = self._nearest_change(f, key, prompt, first_new)
            at = first_new
        elif cause == "provider" and prompt is not None:
            at, change = self._rendering_change(key, prompt, exp)
        if first_new >= 0 and prompt is not None:
            for k in range(first_new, n_layers):  # the new values: printed for later calls
                if states[k] == NEVER:
                    self._print(chain[k], prompt, key, k)
                    f.layer(k).seen(chain[k])
        if cause is not None:
            cause = refine_cause(
                cause,
                model_switched=first_cold == 0 and f.model is not None and model != f.model,
                change=change,
                shared_layer=at == 0 and not f.layer(0).many_values(),
                newest_turn=change is not None and change.diff.position >= key.turn_start,
            )
        changed = cause in ("prefix_changed", "serialization_changed") and change is not None and at >= 0
        churning = changed and (f.layer(at).churning() or (f.churn is not None and f.churn.layer == at))
        tokens, waste = 0, None
        if price is not None and avoidable(cause, change if changed else None, churning):
            tokens, waste = price(at if changed else -1)
        if changed and change is not None and (change.avoidable_kind or cause == "serialization_changed"):
            # A change that recurs unless the prompt is built differently: what churn counts.
            # (A one-off edit of other content is a deploy, or a tenant's own prompt.)
            f.layer(at).changed(now, hit, cost, waste)
        if f.churn is not None and waste:
            f.churn.avoidable_cost += waste
            f.churn.charged += 1
        if first_new >= 0 and cause == "cold":
            # A new value the flow never had (a customer's context): is it ever read back?
            v = chain[first_new]
            if v not in pending:
                deadline = now + min(ttl_seconds(key.ttls[first_new]), SETTLE_S)
                pending[v] = (first_new, deadline, premium() if premium is not None else None)
                if len(pending) > MAX_PENDING:
                    del pending[next(iter(pending))]
        for k in range(n_layers):
            f.values[k] = chain[k]
        f.model = model
        # Expected writes (new users, a one-off prompt change) are not hit-ratio misses.
        explained = cause in ("cold", "concurrent", "prefix_changed", "model_changed")
        f.push(explained, hit, cost, now)
        self._incidents(
            flow, f, at if changed else -1, change, hit, cost if cause in _HEALTHY else None, cost, now
        )
        diff = change.diff if changed and change is not None else None
        return Diagnosis(cause, diff, tokens, waste)

    def _nearest_change(self, f: FlowState, key: PrefixKey, prompt: Prompt | None, k: int) -> Change | None:
        """How layer ``k`` differs from the flow's nearest earlier value of it (the most
        alike of its recent ones), or None when there is none to compare with."""
        now_value = key.bp_hashes[k]
        new = self._print(now_value, prompt, key, k)
        if new is None:
            return None
        extended = self._extended(now_value, key, k, len(new))
        if extended is not None:
            # The layer is an earlier value of it with blocks added (the next turn of a
            # conversation): that value is the nearest (all of it equal, in order), found by
            # its hash even when other sessions' turns came in between.
            return self._compare(extended, new, prompt)
        earlier = [
            p for p in (self._prints.get(u) for u in reversed(f.layer(k).recent) if u != now_value) if p
        ]
        if not earlier:
            return None
        return self._compare(nearest(earlier, new), new, prompt)

    def _compare(self, old: LayerPrint, new: LayerPrint, prompt: Prompt | None) -> Change | None:
        """:func:`~.prints.compare`, the two prints kept as the call's compared pair (an
        incident this call opens draws them)."""
        self._compared = (old, new)
        return compare(old, new, block_bytes(prompt))

    def _extended(self, now_value: int, key: PrefixKey, k: int, blocks: int) -> LayerPrint | None:
        """The print of the longest earlier value of layer ``k`` that this call's layer starts
        with (this call's chained hash at a block inside the layer is that value), or None."""
        bps = key.breakpoints
        start = bps[k - 1] + 1 if k else 0
        prints = self._prints
        chain = key.chain
        for p in range(bps[k] - 1, start - 1, -1):
            value = chain[p]
            found = prints.get(value) if value != now_value else None
            if found is not None and len(found) == p - start + 1 < blocks:
                return found
        return None

    def _rendering_change(
        self, key: PrefixKey, prompt: Prompt, exp: Expectation
    ) -> tuple[int, Change | None]:
        """For an unexpected miss on identical content: the first layer the call should have
        read whose rendering (the caller's key order) differs from the one that wrote it."""
        for k, (p, h) in enumerate(zip(key.breakpoints[:MAX_LAYERS], key.bp_hashes, strict=False)):
            if p > exp.best_at:
                break
            seen = self._prints.get(h)
            if seen is None:
                continue
            bps = key.breakpoints
            now = self._printer.layer(prompt, bps[k - 1] + 1 if k else 0, p + 1)
            change = self._compare(seen, now, prompt)
            if change is not None and change.diff.kind == "serialization":
                return k, change
        return -1, None

    def _incidents(
        self,
        name: str,
        f: FlowState,
        changed_at: int,
        change: Change | None,
        hit: tuple[int, int],
        healthy_cost: float | None,
        cost: float | None,
        now: float,
    ) -> None:
        """Account the call to the flow's open incidents; open or close them."""
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
        # Prefix churn: most of a layer's recent calls changed it.
        if f.churn is None:
            if changed_at >= 0 and change is not None and f.layer(changed_at).churning():
                diff, pair = self._incident_diff(f, changed_at, change)
                f.churn = self._open_churn(name, f, changed_at, diff, pair, now)
        elif f.layer(f.churn.layer).quiet():
            f.churn = self._close(f.churn, now)
        # Hit-ratio drop.
        if not math.isnan(ratio) and f.n >= MIN_CALLS:
            if ratio >= self.threshold:
                f.healthy = True
                if f.drop is not None and ratio >= min(1.0, self.threshold + DROP_CLOSE):
                    f.drop = self._close(f.drop, now)
            elif f.healthy and f.drop is None and f.churn is None:
                f.drop = self._open_drop(name, f, now)
        if f.churn is None and f.drop is None and healthy_cost is not None:
            c = healthy_cost
            w = COST_BASE_WEIGHT
            f.cost_base = c if f.cost_base is None else (1.0 - w) * f.cost_base + w * c

    def _incident_diff(
        self, f: FlowState, layer: int, change: Change
    ) -> tuple[PrefixDiff, tuple[LayerPrint, LayerPrint] | None]:
        """The diff churn opens with, and the two prints it is between: the change against the
        last value of the layer a call read, when that is the same kind of change (a
        re-ordering is told against the last order read); else the change against the call's
        nearest earlier prompt (a volatile value against the previous one, which holds the same
        value in another form)."""
        good = self._prints.get(f.good[layer]) if f.good[layer] else None
        new = self._prints.get(f.values[layer])
        if good is not None and new is not None:
            against_good = compare(good, new)
            if against_good is not None and against_good.diff.kind == change.diff.kind:
                return against_good.diff, (good, new)
        return change.diff, self._compared

    def _open_churn(
        self,
        name: str,
        f: FlowState,
        layer: int,
        diff: PrefixDiff,
        pair: tuple[LayerPrint, LayerPrint] | None,
        now: float,
    ) -> Incident:
        """Open churn at ``layer``, its recent changes counting as its first calls; its details
        hold the changed layer's blocks on either side (:func:`strip`)."""
        changes = f.layer(layer).changes
        incident = self._open(
            name,
            f,
            "prefix_churn",
            layer,
            diff,
            started=min((t for t, *_ in changes), default=now),
            hits=[(num, den) for _, num, den, _, _ in changes],
            costs=[cost for *_, cost, _ in changes],
            now=now,
            announce=False,
        )
        if pair is not None:
            incident.details["blocks"] = {"before": strip(pair[0]), "after": strip(pair[1])}
        wasted = [w for *_, w in changes if w]  # what its calls paid beyond reading the prefix
        incident.avoidable_cost = sum(wasted)
        incident.charged = len(wasted)
        self.on_open(incident.regression())
        return incident

    def _open_drop(self, name: str, f: FlowState, now: float) -> Incident:
        """Open a hit-ratio drop, the window's calls that missed what they could read counting
        as its first calls."""
        bad = [i for i in range(f.n) if f.hits[i][0] < f.hits[i][1] and not f.explained[i]]
        return self._open(
            name,
            f,
            "hit_ratio_drop",
            -1,
            None,
            started=min((f.times[i] for i in bad), default=now),
            hits=[f.hits[i] for i in bad],
            costs=[f.costs[i] for i in bad],
            now=now,
        )

    def _open(
        self,
        name: str,
        f: FlowState,
        kind: str,
        layer: int,
        diff: PrefixDiff | None,
        *,
        started: float,
        hits: list[tuple[int, int]],
        costs: list[float | None],
        now: float,
        announce: bool = True,
    ) -> Incident:
        extra = 0.0
        priced = 0
        base = f.cost_base
        for c in costs:
            if c is not None and base is not None:
                extra += c - base
                priced += 1
        # The flow's hit ratio before: every call before the incident's first one (the window's
        # earlier calls included, so a short history still has one).
        scored = [scored_hit(f.explained[i], f.hits[i]) for i in range(f.n) if f.times[i] >= started]
        before_den = f.cum_den - sum(h[1] for h in scored)
        before = (f.cum_num - sum(h[0] for h in scored)) / before_den if before_den > 0 else math.nan
        details: dict[str, Any] = {"layer": layer} if layer >= 0 else {}
        incident = Incident(
            name,
            kind,
            started,
            before,
            layer,
            diff,
            details,
            len(hits),
            sum(h[0] for h in hits),
            sum(h[1] for h in hits),
            extra,
            priced,
            last_at=now,
            detected_at=now,
        )
        self.incidents.append(incident)
        if len(self.incidents) > MAX_INCIDENTS:
            del self.incidents[0]
        if announce:
            self.on_open(incident.regression())
        return incident

    @staticmethod
    def _close(incident: Incident, now: float) -> None:
        incident.closed_at = now
        return None
