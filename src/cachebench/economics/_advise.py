"""Advice from traffic: per flow and layer, cache it or not, 5 m or 1 h, and whether warming
pays (:func:`advise`).

It reads a trace (a :class:`~._trace.Trace`, a path, calls), a live
:class:`~cachebench.CacheTracker` or a store (their recorded calls, as
:func:`~._observed.trace_from_calls` turns them into a trace), so the advice is about real
traffic. Per flow, in one pass over its calls:

* for each layer depth and TTL, whether each call finds the layer's entry alive: the gap since
  the last call with the same prefix through that layer is within the TTL (every call that
  marks a layer refreshes its entry, and a deeper entry is alive only when the shallower one
  is, as the TTLs never grow with depth: the providers' rule);
* the calls grouped by what they found and their sizes, and every placement of breakpoints
  on the layers (none, 5 m or 1 h each; at most the provider's number) priced on the groups:
  the cheapest is the advice; the current cost is the calls' own markers replayed by
  :func:`~._simulate.simulate`'s layer cache;
* a warmer on the first layer (when all the flow's calls share it) and keep-alive pings for
  each deeper layer whose values expire between calls (each value pinged every
  ``warm_every_s`` for up to an hour after its last call): their cost against the writes they
  save.

Money is per 30 days at the trace's rate (its cost over its span, scaled). The breakpoint
minimums, the 20-block lookback and concurrent writes are the simulator's to model:
:func:`~._simulate.simulate` replays the advised placement exactly.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from .. import facts
from ._columns import (
    call_column,
    in_order,
    np,
    one_key,
    previous_time,
    shape_column,
    shape_layers,
    small_counts,
)
from ._compiled import Compiled, Row, Shape, compile_trace
from ._cost import WARM_INPUT_TOKENS, WARM_OUTPUT_TOKENS
from ._observed import trace_from_calls
from ._rates import Rates
from ._trace import Trace

__all__ = ["Advice", "FlowAdvice", "LayerAdvice", "WarmingAdvice", "advise"]

_MONTH_S = 30 * 86_400.0
_MTOK = 1_000_000
KEEP_ALIVE_IDLE_S = 3600.0
MIN_SPAN_S = 60.0  # a flow's calls must span at least this to project a month from them  # how long keep-alive pings go on after a layer's last call
_TTLS = ("5m", "1h")
_DEAD = (False, False)
_HOUR = (False, True)
_BOTH = (True, True)


@dataclass(frozen=True, slots=True)
class LayerAdvice:
    """One layer of a flow: its size, how many values it took, how often a call finds it alive
    (``live_5m``, ``live_1h``: shares of the flow's calls that have the layer), its breakpoint
    now (the most common) and the advised one (None: no breakpoint)."""

    layer: int
    tokens: int
    values: int
    calls: int
    live_5m: float
    live_1h: float
    current: str | None
    advised: str | None
    below_minimum: bool = False  # the prefix through it is under the model's minimum: never cached

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WarmingAdvice:
    """A warmer (``kind``: ``"global warmer"`` on a layer every call shares, or
    ``"keep-alive"`` on each value of a deeper layer) every ``every_s``: its monthly cost, the
    writes it saves a month, and whether it ``pays`` (on top of the advised placement)."""

    layer: int
    kind: str
    every_s: float
    monthly_cost: float
    monthly_saving: float

    @property
    def net(self) -> float:
        return self.monthly_saving - self.monthly_cost

    @property
    def pays(self) -> bool:
        return self.net > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "net": self.net, "pays": self.pays}


@dataclass(frozen=True, slots=True)
class FlowAdvice:
    """One flow's advice; money per 30 days at the trace's rate."""

    flow: str
    model: str
    calls: int
    span_s: float
    layers: tuple[LayerAdvice, ...]
    warming: tuple[WarmingAdvice, ...]
    monthly_cost_uncached: float
    monthly_cost_current: float
    monthly_cost_advised: float
    advised_last: str | None = None  # a breakpoint on each call's last layer, past the layers listed
    current_last: str | None = None  # the breakpoint most calls have on their last layer now

    @property
    def monthly_saving(self) -> float:
        """What the advised placement saves a month against the current one."""
        return self.monthly_cost_current - self.monthly_cost_advised

    @property
    def strategy(self) -> str:
        """The advised placement as a :meth:`~._simulate.Strategy.parse` text."""
        marks = [f"{x.layer}:{x.advised}" for x in self.layers if x.advised is not None]
        if self.advised_last is not None:
            marks.append(f"-1:{self.advised_last}")
        return "layers=" + ",".join(marks) if marks else "none"

    @property
    def placement(self) -> dict[int, str]:
        """The advised placement as ``Strategy`` marks (-1: each call's last layer)."""
        marks = {x.layer: x.advised for x in self.layers if x.advised is not None}
        if self.advised_last is not None:
            marks[-1] = self.advised_last
        return marks

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "model": self.model,
            "calls": self.calls,
            "span_s": self.span_s,
            "layers": [x.as_dict() for x in self.layers],
            "warming": [w.as_dict() for w in self.warming],
            "monthly_cost_uncached": self.monthly_cost_uncached,
            "monthly_cost_current": self.monthly_cost_current,
            "monthly_cost_advised": self.monthly_cost_advised,
            "advised_last": self.advised_last,
            "current_last": self.current_last,
            "monthly_saving": self.monthly_saving,
            "strategy": self.strategy,
        }


@dataclass(frozen=True, slots=True)
class Advice:
    """:func:`advise`'s answer: one :class:`FlowAdvice` per flow (the costliest first)."""

    flows: tuple[FlowAdvice, ...]
    skipped: tuple[str, ...] = field(default=())  # flows that could not be advised, and why

    def __getitem__(self, flow: str) -> FlowAdvice:
        for f in self.flows:
            if f.flow == flow:
                return f
        raise KeyError(flow)

    def as_dict(self) -> dict[str, Any]:
        return {"flows": [f.as_dict() for f in self.flows], "skipped": list(self.skipped)}

    def __str__(self) -> str:
        lines: list[str] = []
        for f in self.flows:
            lines.append(
                f"flow {f.flow} ({f.model}): {f.calls:,} calls over {_span(f.span_s)}; a month at this rate:"
                f" ${f.monthly_cost_current:,.2f} now, ${f.monthly_cost_advised:,.2f} advised"
                f" (saves ${f.monthly_saving:,.2f}; ${f.monthly_cost_uncached:,.2f} without caching)"
            )
            if f.span_s < 3600:
                lines.append(
                    f"  note: {_span(f.span_s)} of traffic: a month at this rate is an extrapolation of it"
                )
            for x in f.layers:
                change = "keep" if x.advised == x.current else "change"
                below = (
                    f" (the prefix through it is under {f.model}'s minimum: never cached)"
                    if x.below_minimum
                    else ""
                )
                lines.append(
                    f"  layer {x.layer}: {x.tokens:,} tokens, {x.values:,} value{'s' if x.values != 1 else ''};"
                    f" alive for {x.live_5m:.0%} of calls at 5m, {x.live_1h:.0%} at 1h;"
                    f" breakpoint now {x.current or 'none'}, advised {x.advised or 'none'} ({change}){below}"
                )
            if f.current_last is not None or f.advised_last is not None:
                lines.append(
                    f"  each call's last layer: breakpoint now {f.current_last or 'none'},"
                    f" advised {f.advised_last or 'as the layers above'}"
                )
            for w in f.warming:
                verdict = "pays" if w.pays else "does not pay"
                lines.append(
                    f"  {w.kind} on layer {w.layer} every {w.every_s:g} s: ${w.monthly_cost:,.2f} a month for"
                    f" ${w.monthly_saving:,.2f} of writes saved: {verdict}"
                )
            lines.append(f"  simulate it: --flow {f.flow} --strategy current --strategy '{f.strategy}'")
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        return "\n".join(lines) if lines else "no flow with cached layers to advise on"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} seconds"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.1f} minutes"


# -- one flow ---------------------------------------------------------------------------------------


#: Layers placed one by one; a flow with more (a conversation's turns) gets a breakpoint on each
#: call's last layer as one more choice.
POSITIONAL_LAYERS = 4


def _placements(depth: int, limit: int) -> list[tuple[tuple[str | None, ...], str | None]]:
    """Every placement: a TTL (None: no breakpoint) for each of the first layers (all of them when
    there are at most :data:`POSITIONAL_LAYERS` + 1; else that many, and a TTL for each call's last
    layer), with TTLs that never grow with depth and at most ``limit`` breakpoints."""
    positional = depth if depth <= POSITIONAL_LAYERS + 1 else POSITIONAL_LAYERS
    lasts: tuple[str | None, ...] = (None,) if positional == depth else (None, *_TTLS)
    out = []
    for combo in itertools.product((None, *_TTLS), repeat=positional):
        for last in lasts:
            marked = [t for t in (*combo, last) if t is not None]
            if len(marked) > limit:
                continue
            if any(a == "5m" and b == "1h" for a, b in itertools.pairwise(marked)):
                continue
            out.append((combo, last))
    return out


def _with_last(marks: dict[int, str], last_ttl: str, limit: int) -> dict[int, str] | None:
    """``marks`` with room for one more breakpoint, ``last_ttl``, after them: the deepest ones
    dropped while there are too many or one of them is shorter-lived than ``last_ttl``."""
    kept = dict(sorted(marks.items()))
    while kept and (len(kept) + 1 > limit or (last_ttl == "1h" and "5m" in kept.values())):
        kept.pop(max(kept))
    return kept if len(kept) + 1 <= limit else None


def _resolve(placement: tuple[tuple[str | None, ...], str | None], n: int) -> tuple[str | None, ...]:
    """A placement's TTL on each of a call's ``n`` layers (the last one's where it has none)."""
    combo, last = placement
    ttls = list(combo[:n]) + [None] * max(0, n - len(combo))
    if last is not None and n and ttls[n - 1] is None:
        ttls[n - 1] = last
    return tuple(ttls)


def _cost(
    rates: Rates,
    sizes: tuple[int, ...],
    alive: tuple[tuple[bool, bool], ...],
    ttls: tuple[str | None, ...],
    first: int,
) -> float:
    """What calls' layers cost in USD with breakpoints ``ttls`` on them, given whether each
    layer's entry is alive under 5m and 1h; ``sizes``: each layer's tokens, summed over the
    calls (the cost is linear in them); ``first``: the first layer whose prefix reaches the
    model's minimum (a breakpoint before it is never cached). The rest of their input and their
    output cost the same under every placement (:attr:`_Traffic.rest`)."""
    marks = [(k, t) for k, t in enumerate(ttls[: len(sizes)]) if t is not None and k >= first]
    top = -1  # the deepest layer read
    for k, t in reversed(marks):
        if alive[k][0 if t == "5m" else 1]:
            top = k
            break
    read = sum(sizes[: top + 1])
    written = 0.0
    start = top
    for k, t in marks:
        if k > start:
            written += sum(sizes[start + 1 : k + 1]) * rates.write(t)
            start = k
    paid_tokens = sum(sizes[top + 1 : start + 1])
    return ((sum(sizes) - read - paid_tokens) * rates.input + read * rates.cache_read + written) / _MTOK


class _Traffic(NamedTuple):
    """A flow's calls in one pass: per layer, how many values it took and their sizes (in the
    order first seen), its gaps over 5m and 1h, those within the keep-alive idle time, and the
    keep-alive pings they take; the calls grouped by what they found (in the order first seen):
    (layers, the first layer at the model's minimum, alive per layer, ttls, rates) -> [calls,
    each layer's tokens summed over them]; and what the calls' input after their layers and
    their output cost in USD (``rest``: the same under every placement), added up in the
    calls' order."""

    values: list[int]
    tokens: list[Counter[int]]
    over: list[list[int]]
    kept: list[list[int]]
    pings: list[float]
    groups: dict[tuple[Any, ...], list[int]]
    rest: float


def _traffic_rows(rows: list[Row], warm_every_s: float, depth: int) -> _Traffic:
    """:class:`_Traffic` a call at a time (the reference :func:`_traffic_columns` agrees with)."""
    ttl_5m, ttl_1h = facts.ttl_seconds("5m"), facts.ttl_seconds("1h")
    last: dict[int, float] = {}  # prefix id -> its latest call (ids are unique across depths)
    groups: dict[tuple[Any, ...], list[int]] = {}
    rest = 0.0
    values = [0] * depth
    tokens: list[Counter[int]] = [Counter() for _ in range(depth)]  # per layer: its values' sizes
    idle = KEEP_ALIVE_IDLE_S
    over = [[0, 0] for _ in range(depth)]
    kept = [[0, 0] for _ in range(depth)]
    pings = [0.0] * depth
    for r in rows:
        t = r.t
        x = r.shape
        alive = []
        for k, h in enumerate(x.chain):
            seen = last.get(h)
            last[h] = t
            if seen is None:
                alive.append(_DEAD)
                values[k] += 1
                c = x.cum[k]
                tokens[k][c - x.cum[k - 1] if k else c] += 1
            else:
                gap = t - seen
                if gap <= ttl_5m:
                    alive.append(_BOTH)
                else:
                    o = over[k]
                    if gap <= ttl_1h:
                        alive.append(_HOUR)
                        o[0] += 1
                        if gap <= idle:
                            kept[k][0] += 1
                    else:
                        alive.append(_DEAD)
                        o[0] += 1
                        o[1] += 1
                        if gap <= idle:
                            kept[k][0] += 1
                            kept[k][1] += 1
                pings[k] += (gap if gap < idle else idle) // warm_every_s
        sizes = [c - (x.cum[k - 1] if k else 0) for k, c in enumerate(x.cum)]
        found = groups.setdefault(
            (len(x.cum), x.reach, tuple(alive), x.ttls, x.rates), [0] * (1 + len(sizes))
        )
        found[0] += 1
        for k, size in enumerate(sizes):
            found[k + 1] += size
        rest += (r.tail * x.rates.input + r.out * x.rates.output) / _MTOK
    return _Traffic(values, tokens, over, kept, pings, groups, rest)


_STATES = (_DEAD, _HOUR, _BOTH)


def _traffic_columns(compiled: Compiled, warm_every_s: float, depth: int) -> _Traffic | None:
    """:class:`_Traffic` on the flow's columns with numpy (None without numpy, for more layers
    than a call's states fit in 64 bits, or for token counts past the 64-bit sums): each (call,
    layer) with the previous call of the same prefix, found by one stable sort of the prefix
    ids. Every call has a layer (advise_compiled leaves out the others): a call's states are
    summed from its first (call, layer) on."""
    if np is None or depth > 31 or not small_counts(compiled):
        return None
    shapes = compiled.shapes
    used = list(dict.fromkeys(compiled.shape))  # the flow's shapes, in the order of their first calls
    laid = shape_layers(compiled)
    sizes = laid.sizes
    shape = call_column(compiled, "shape")
    t = call_column(compiled, "t")
    n = len(t)
    per_call = laid.lengths[shape]
    call_start = np.cumsum(per_call) - per_call
    call = np.repeat(np.arange(n), per_call)
    layer = np.arange(len(call)) - call_start[call]
    where = laid.starts[shape[call]] + layer
    h = laid.chains[where]
    at = t[call]
    previous = previous_time(h, at)
    new = np.isnan(previous)
    gap = at - previous
    ttl_5m, ttl_1h = facts.ttl_seconds("5m"), facts.ttl_seconds("1h")
    idle = KEEP_ALIVE_IDLE_S
    seen = ~new
    over_5m = seen & (gap > ttl_5m)
    over_1h = seen & (gap > ttl_1h)
    within = gap <= idle

    def per_layer(mask: Any) -> list[int]:
        return [int(x) for x in np.bincount(layer[mask], minlength=depth)]

    values = per_layer(new)
    tokens: list[Counter[int]] = []
    for k in range(depth):
        found = sizes[where[new & (layer == k)]]
        kinds, first, counts = np.unique(found, return_index=True, return_counts=True)
        tokens.append(Counter({int(kinds[i]): int(counts[i]) for i in np.argsort(first, kind="stable")}))
    over = [list(x) for x in zip(per_layer(over_5m), per_layer(over_1h), strict=True)]
    kept = [list(x) for x in zip(per_layer(over_5m & within), per_layer(over_1h & within), strict=True)]
    ping = np.floor_divide(np.minimum(gap, idle), warm_every_s)
    pings = [float(x) for x in np.bincount(layer[seen], weights=ping[seen], minlength=depth)]
    state = np.where(new | over_1h, 0, np.where(over_5m, 1, 2)).astype(np.int64)
    code = np.add.reduceat(state << (2 * layer), call_start) if n else np.zeros(0, dtype=np.int64)
    # The calls grouped as _traffic_rows groups them: shapes alike in what the groups hold share a
    # class, and the groups come in the order of their first calls.
    classes: dict[tuple[Any, ...], int] = {}
    by_class: dict[int, Shape] = {}  # each class's first shape
    of_shape = np.full(len(shapes), -1, dtype=np.int64)  # (the flow's shapes' classes)
    for s in used:
        x = shapes[s]
        c = of_shape[s] = classes.setdefault((len(x.cum), x.reach, x.ttls, x.rates), len(classes))
        by_class.setdefault(c, x)
    columns = [of_shape[shape], code]
    _, first, group, counts = np.unique(
        one_key(columns), return_index=True, return_inverse=True, return_counts=True
    )
    summed = np.zeros((len(first), depth), dtype=np.int64)
    np.add.at(summed, (group[call], layer), sizes[where])
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in np.argsort(first, kind="stable").tolist():
        at_call = int(first[i])
        c, packed = (int(column[at_call]) for column in columns)
        x = by_class[c]
        layers_of = len(x.cum)
        alive = tuple(_STATES[(packed >> (2 * k)) & 3] for k in range(layers_of))
        groups[(layers_of, x.reach, alive, x.ttls, x.rates)] = [
            int(counts[i]),
            *summed[i, :layers_of].tolist(),
        ]
    p_input = shape_column(compiled, "input")[shape]
    p_output = shape_column(compiled, "output")[shape]
    tail = call_column(compiled, "tail")
    out = call_column(compiled, "out")
    rest = in_order((tail * p_input + out * p_output) / _MTOK)
    return _Traffic(values, tokens, over, kept, pings, groups, rest)


def _flow_advice(name: str, compiled: Compiled, warm_every_s: float) -> FlowAdvice:
    shapes = compiled.shapes
    used = list(dict.fromkeys(compiled.shape))  # the flow's shapes, in the order of their first calls
    calls_of = Counter(compiled.shape)
    first = shapes[used[0]]
    rates, minimum = first.rates, first.minimum
    limit = facts.MAX_BREAKPOINTS.get(first.family, 4)
    depth = max(len(shapes[s].chain) for s in used)
    traffic = _traffic_columns(compiled, warm_every_s, depth) or _traffic_rows(
        compiled.rows, warm_every_s, depth
    )
    values, tokens, over, kept, pings, groups, rest = traffic
    idle = KEEP_ALIVE_IDLE_S
    having = [0] * depth
    live = [[0, 0] for _ in range(depth)]
    current: list[Counter[str | None]] = [Counter() for _ in range(depth)]
    for (layers, _, alive, ttls, _), (n, *_) in groups.items():
        for k in range(layers):
            having[k] += n
            live[k][0] += alive[k][0] * n
            live[k][1] += alive[k][1] * n
            current[k][ttls[k]] += n
    span = max(compiled.t[-1] - compiled.t[0], 1.0)
    scale = _MONTH_S / span

    def month(placement: Any) -> float:
        layers = sum(
            _cost(group_rates, tuple(sizes), alive, _resolve(placement, n_layers), reach)
            for (n_layers, reach, alive, _, group_rates), (_, *sizes) in groups.items()
        )
        return scale * (layers + rest)

    uncached = month(((), None))
    # Calls of one length and one marking, whose writes are readable at once: the gaps price every
    # placement exactly (an entry lives as the gaps between the calls that mark it say, and none
    # is read through the lookback), the last-layer ones and the current one too.
    varying = any(len(shapes[s].chain) != depth for s in used)
    uniform = (
        not varying
        and all(shapes[s].ttls == first.ttls for s in used)
        and all(ttft <= 0 for ttft in compiled.ttft)
    )
    # The first layers placed one by one, priced on the groups (exact as above for placements
    # that mark a layer in every call that has it). Of equal costs, the fewest breakpoints.
    best_key = (math.inf, 0)
    best: tuple[tuple[str | None, ...], str | None] = ((), None)
    for combo, last_ttl in _placements(depth, limit):
        if last_ttl is None or uniform:
            key = (round(month((combo, last_ttl)), 9), sum(t is not None for t in (*combo, last_ttl)))
            if key < best_key:
                best_key, best = key, (combo, last_ttl)
    best_combo, best_last = best
    best_marks: dict[int, str] = {k: ttl for k, ttl in enumerate(best_combo) if ttl is not None}
    advised = month(best)
    # Otherwise, a breakpoint on each call's last layer (a conversation's newest turn) is read by
    # the next call through the provider's lookback, which the gaps do not show: those placements,
    # and the current and the chosen ones, are replayed through the layer cache, exactly (the
    # calls' own markers vary from call to call, and twins sent together write alike).
    from ._simulate import Strategy, _replay

    end = compiled.t[-1]

    def replay(marks: dict[int, str]) -> float:
        strategy = Strategy("advised", marks) if marks else Strategy.none()
        return scale * _replay(compiled, strategy, end).cost_usd

    if uniform:
        now = month((first.ttls, None))
        if now < advised - 1e-9:  # (its own marking, past the layers placed one by one, is cheaper)
            best_marks = {k: ttl for k, ttl in enumerate(first.ttls) if ttl is not None}
            best_combo, best_last, advised = first.ttls, None, now
    else:
        now = scale * _replay(compiled, Strategy.current(), end).cost_usd
        advised = replay(best_marks)
        if varying:
            for last_ttl in _TTLS:
                marks = _with_last(best_marks, last_ttl, limit)
                if marks is None:
                    continue
                cost = replay({**marks, -1: last_ttl})
                if cost < advised - 1e-9:
                    advised, best_last, best_marks = cost, last_ttl, marks
            # Of equal costs, the fewest breakpoints: the ones placed one by one are dropped,
            # deepest first, while the replay costs no more.
            if best_last is not None:
                for k in sorted(best_marks, reverse=True):
                    fewer = {j: t for j, t in best_marks.items() if j != k}
                    if replay({**fewer, -1: best_last}) <= advised + 1e-9:
                        best_marks = fewer
    best_combo = tuple(best_marks.get(k) for k in range(len(best_combo)))
    layers = tuple(
        LayerAdvice(
            k,
            tokens[k].most_common(1)[0][0],
            values[k],
            having[k],
            live[k][0] / having[k],
            live[k][1] / having[k],
            current[k].most_common(1)[0][0],
            best_combo[k] if k < len(best_combo) else None,
            sum(tokens[j].most_common(1)[0][0] for j in range(k + 1)) < minimum,
        )
        for k in range(depth)
    )
    warming = []
    ping_unit = (WARM_INPUT_TOKENS * rates.input + WARM_OUTPUT_TOKENS * rates.output) / _MTOK
    for k, x in enumerate(layers):
        ttl = x.advised or "5m"
        t = facts.ttl_seconds(ttl)
        cum_k = sum(layers[j].tokens for j in range(k + 1))
        if warm_every_s >= t or x.below_minimum:
            continue  # (a warmer cannot keep alive what the provider does not cache)
        ping = ping_unit + cum_k * rates.cache_read / _MTOK
        premium = cum_k * (rates.write(ttl) - rates.cache_read) / _MTOK
        which = 1 if ttl == "1h" else 0
        if k == 0 and x.values == 1:
            cost = _MONTH_S / warm_every_s * ping
            saving = scale * over[k][which] * premium
            warming.append(WarmingAdvice(k, "global warmer", warm_every_s, cost, saving))
        elif k > 0 and kept[k][which]:  # (a layer whose values never expire between calls: nothing to keep)
            pinged = pings[k] + x.values * (idle // warm_every_s)
            warming.append(
                WarmingAdvice(
                    k, "keep-alive", warm_every_s, scale * pinged * ping, scale * kept[k][which] * premium
                )
            )
    models: Counter[str] = Counter()
    last_ttls: Counter[str | None] = Counter()
    for s in used:  # (counted in the order of the calls, as most_common breaks ties by it)
        models[shapes[s].model] += calls_of[s]
        last_ttls[shapes[s].ttls[-1]] += calls_of[s]
    last_now = last_ttls.most_common(1)[0][0] if varying else None
    return FlowAdvice(
        name,
        ", ".join(m for m, _ in models.most_common()),
        len(compiled),
        span,
        layers,
        tuple(warming),
        uncached,
        now,
        advised,
        best_last,
        last_now,
    )


def _compiled_of(
    source: Any, model: str | None, prices: Mapping[str, Mapping[str, float]] | None, ttft_s: float = 0.0
) -> Compiled:
    from ..store._sql import SQLStore
    from ..tracker import CacheTracker

    if isinstance(source, Compiled):
        return source
    if isinstance(source, str) and "://" in source:
        from ..store import open_store

        store = open_store(source)
        try:
            return _compiled_of(store, model, prices, ttft_s)
        finally:
            store.close()
    left_out: Counter[str] = Counter()
    if isinstance(source, CacheTracker):
        trace = trace_from_calls(source.calls(), left_out)
    elif isinstance(source, SQLStore):
        trace = trace_from_calls((c.metrics for c in source.iter_calls()), left_out)
    elif isinstance(source, (str, os.PathLike, Trace, Iterable)):
        return compile_trace(source, model=model, prices=prices, ttft_s=ttft_s, unpriced_ok=True)
    else:
        raise ValueError(
            "advise() reads a trace (a path, a Trace, calls), a CacheTracker, a store or a store URL;"
            f" got {type(source).__name__}"
        )
    compiled = compile_trace(trace, model=model, prices=prices, ttft_s=ttft_s, unpriced_ok=True)
    compiled.skipped.extend(
        f"{flow}: {n} call{'s' if n != 1 else ''} of a provider that reports no cache writes"
        " (OpenAI before GPT-5.6, Gemini): their layers cannot be measured"
        for flow, n in left_out.items()
    )
    return compiled


def advise(
    source: Any,
    *,
    model: str | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    warm_every_s: float = 240.0,
    ttft_s: float = 0.0,
) -> Advice:
    """Advice per flow and layer from ``source``'s traffic (see the module). ``model``: for
    trace calls that name none; ``prices``: overrides as :class:`~cachebench.CacheTracker`
    takes them; ``warm_every_s``: the warmers' interval; ``ttft_s``: when a response starts
    (its writes readable) where the trace does not say, for the current cost's replay."""
    if isinstance(warm_every_s, bool) or not isinstance(warm_every_s, (int, float)) or not warm_every_s > 0:
        raise ValueError(f"warm_every_s must be a number of seconds > 0, got {warm_every_s!r}")
    if isinstance(ttft_s, bool) or not isinstance(ttft_s, (int, float)) or not 0 <= ttft_s < math.inf:
        raise ValueError(f"ttft_s must be a number of seconds >= 0, got {ttft_s!r}")
    return advise_compiled(_compiled_of(source, model, prices, float(ttft_s)), float(warm_every_s))


def advise_compiled(compiled: Compiled, warm_every_s: float = 240.0) -> Advice:
    """:func:`advise` on a compiled trace (what ``simulate``'s ``advised`` strategy uses)."""
    by_flow: dict[int, list[int]] = defaultdict(list)
    shapes = compiled.shapes
    for i, (s, flow, warm) in enumerate(zip(compiled.shape, compiled.flow, compiled.warm, strict=True)):
        if shapes[s].chain and not warm:
            by_flow[flow].append(i)
    names = compiled.flow_names
    flows, skipped = [], list(compiled.skipped)
    for flow_id, indexes in by_flow.items():
        name = names[flow_id]
        calls = compiled if len(indexes) == len(compiled) else compiled.subset(indexes)
        families = [shapes[s].family for s in dict.fromkeys(calls.shape)]
        provider = next((f for f in families if f not in ("anthropic", "bedrock")), families[0])
        if provider not in ("anthropic", "bedrock"):
            skipped.append(
                f"{name}: advice places Anthropic and Bedrock breakpoints, not {provider} ones; simulate() replays it"
            )
            continue
        span = calls.t[-1] - calls.t[0]
        if len(calls) < 2 or span < MIN_SPAN_S:
            skipped.append(
                f"{name}: {len(calls)} call{'s' if len(calls) != 1 else ''} over"
                f" {span:.0f} s: too little traffic to project a month from"
            )
            continue
        flows.append(_flow_advice(name, calls, warm_every_s))
    flows.sort(key=lambda f: -f.monthly_cost_current)
    return Advice(tuple(flows), tuple(skipped))
