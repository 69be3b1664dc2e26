"""What-if: a trace replayed through the cache model under strategies side by side
(:func:`simulate`).

A :class:`Strategy` says where the breakpoints go (the trace's own markers, none, or a TTL per
layer), whether every breakpoint's TTL is replaced, whether a warmer keeps each flow's first
layer alive, and whether calls are held while a twin writes their prefix (``miss_aware``, as
:class:`~cachebench.CachePolicy` does). Each strategy replays the whole trace through a cache of
its own and reports hit ratio, cost, saving, and two costs a strategy can remove:

* ``avoidable_cost_usd``: writes of a prefix a twin was already writing (the response that
  writes an entry must start before the entry can be read): what ``miss_aware`` removes;
* ``rewrite_cost_usd``: writes of a prefix the cache held before and let expire: what a longer
  TTL or a warmer removes.

Both are priced beyond reading the same tokens. Cold writes of new content are neither.

Anthropic and Bedrock traces run on :class:`~cachebench.cachemodel.LayerCache` (the cache
model's rules, one layer at a time); OpenAI and Gemini traces on
:class:`~cachebench.cachemodel.CacheModel` itself, one segment per block.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import xxhash

from .. import facts
from ..cachemodel import CacheModel, CacheRequest, CacheRuleError, LayerCache, Segment
from ..cachemodel._layers import _TTL_S, FORGET_AFTER_S
from ._columns import (
    call_column,
    every_shape,
    in_order,
    np,
    previous_time,
    shape_column,
    shape_layers,
    small_counts,
)
from ._compiled import Compiled, Row, Shape, compile_trace
from ._cost import WARM_INPUT_TOKENS, WARM_OUTPUT_TOKENS
from ._trace import Trace, TraceCall

__all__ = ["Simulation", "Strategy", "StrategyResult", "simulate"]

_MTOK = 1_000_000
_FAST = frozenset({"anthropic", "bedrock"})
# The TTLs a breakpoint can have (Anthropic and Bedrock; OpenAI GPT-5.6 and later).
_BREAKPOINT_TTLS = ("5m", "1h", "30m", "12h")
# A strategy's TTL on a provider without it: that provider's TTL of the same rank (short, long),
# so one strategy applies to a trace of several providers.
_EQUIVALENT = {
    ("openai", "5m"): "30m",
    ("openai", "1h"): "12h",
    ("anthropic", "30m"): "5m",
    ("anthropic", "12h"): "1h",
    ("bedrock", "30m"): "5m",
    ("bedrock", "12h"): "1h",
}


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way of caching a trace.

    ``marks``: ``"current"`` (each layer's ``ttl`` in the trace), ``"none"`` (no caching),
    ``"advised"`` (the placement :func:`~._advise.advise` finds for each flow of the trace),
    ``"plan"`` (each call as a plan of the planner marks it: the ``planned`` trace
    :func:`simulate` is given, of the same calls, under its own markers), or
    ``{layer index: ttl}`` (a negative index counts from the last layer; a layer a call does
    not have is skipped). ``ttl`` replaces every breakpoint's TTL. ``warm_every_s``: a warmer
    reads each flow's first layer this often (from the flow's first call to the trace's end).
    ``miss_aware``: a call whose prefix a twin is writing waits for it, up to ``hold_s``."""

    name: str
    marks: str | Mapping[int, str] = "current"
    ttl: str | None = None
    warm_every_s: float | None = None
    miss_aware: bool = False
    hold_s: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a strategy's name must be a non-empty string, got {self.name!r}")
        marks = self.marks
        if isinstance(marks, str):
            if marks not in ("current", "none", "advised", "plan"):
                raise ValueError(
                    f"marks must be 'current', 'none', 'advised', 'plan' or {{layer: ttl}}, got {marks!r}"
                )
        elif isinstance(marks, Mapping):
            for k, v in marks.items():
                if isinstance(k, bool) or not isinstance(k, int):
                    raise ValueError(f"marks: layer indexes must be integers, got {k!r}")
                if not isinstance(v, str) or v not in _BREAKPOINT_TTLS:
                    raise ValueError(
                        f"marks: layer {k}'s ttl must be one of {', '.join(_BREAKPOINT_TTLS)}, got {v!r}"
                    )
            object.__setattr__(self, "marks", dict(marks))
        else:
            raise ValueError(
                f"marks must be 'current', 'none', 'advised', 'plan' or {{layer: ttl}}, got {marks!r}"
            )
        if self.ttl is not None and self.ttl not in _BREAKPOINT_TTLS:
            raise ValueError(f"ttl must be one of {', '.join(_BREAKPOINT_TTLS)} or None, got {self.ttl!r}")
        w = self.warm_every_s
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf):
            raise ValueError(f"warm_every_s must be a number of seconds > 0 or None, got {w!r}")
        h = self.hold_s
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h < math.inf:
            raise ValueError(f"hold_s must be a number of seconds >= 0, got {h!r}")
        if self.marks == "none" and w is not None:
            raise ValueError(
                f"strategy {self.name!r}: a warmer keeps cached prefixes warm, and 'none' caches nothing"
            )

    # -- the usual ones ---------------------------------------------------------------------

    @classmethod
    def none(cls) -> Strategy:
        return cls("none", "none")

    @classmethod
    def current(cls) -> Strategy:
        return cls("current")

    @classmethod
    def parse(cls, spec: str) -> Strategy:
        """A strategy from text: ``none``, ``current``, ``advised``, ``plan``, ``ttl=1h``, ``layers=0:1h,1:5m,-1:5m``,
        ``warm=4m`` (or seconds: ``warm=240``), ``miss_aware``; joined with ``+``
        (``current+warm=4m``). The text is its name."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("a strategy is text such as 'current', 'ttl=1h', 'warm=4m' or 'none'")
        fields: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split("+")):
            name, _, value = part.partition("=")
            name = name.strip().replace("-", "_")
            field_of = {
                "none": "marks",
                "current": "marks",
                "advised": "marks",
                "plan": "marks",
                "layers": "marks",
            }.get(name, {"ttl": "ttl", "warm": "warm_every_s", "miss_aware": "miss_aware"}.get(name))
            if field_of in fields:
                raise ValueError(f"strategy {spec!r}: {part!r} says again what an earlier part said")
            if name in ("none", "current", "advised", "plan") and not value:
                fields["marks"] = name
            elif name == "ttl" and value:
                fields["ttl"] = value.strip()
            elif name == "layers" and value:
                marks = {}
                for item in value.split(","):
                    index, _, ttl = item.partition(":")
                    try:
                        layer = int(index)
                    except ValueError:
                        raise ValueError(f"strategy {spec!r}: {item!r} is not layer:ttl") from None
                    if layer in marks:
                        raise ValueError(f"strategy {spec!r}: layer {layer} is given twice")
                    marks[layer] = ttl.strip() or "5m"
                fields["marks"] = marks
            elif name == "warm" and value:
                fields["warm_every_s"] = _seconds(spec, value.strip())
            elif name == "miss_aware" and not value:
                fields["miss_aware"] = True
            else:
                raise ValueError(
                    f"strategy {spec!r}: {part!r} is not one of none, current, advised, plan, ttl=, layers=, warm=,"
                    " miss_aware"
                )
        return cls(spec.strip(), **fields)


def _seconds(spec: str, text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|min|h)?", text)
    if match is None:
        raise ValueError(f"strategy {spec!r}: {text!r} is not a duration (240, 240s, 4m, 1h)")
    value = float(match.group(1))
    return value * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[match.group(2)]


#: The strategies ``simulate`` compares when given none.
DEFAULT_STRATEGIES = (
    "none",
    "current",
    "advised",
    "ttl=5m",
    "ttl=1h",
    "current+warm=4m",
    "current+miss_aware",
)


# -- results ------------------------------------------------------------------------------------


@dataclass(slots=True)
class StrategyResult:
    """One strategy's replay: tokens, costs in USD (``cost_usd`` includes the warmer's calls,
    ``warm_cost_usd``), and the ratios (None when nothing was cacheable)."""

    strategy: Strategy
    calls: int = 0
    warm_calls: int = 0
    held_calls: int = 0
    input_tokens: int = 0  # uncached
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_without_cache_usd: float = 0.0
    warm_cost_usd: float = 0.0
    avoidable_cost_usd: float = 0.0
    rewrite_cost_usd: float = 0.0

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def cost_saved_usd(self) -> float:
        return self.cost_without_cache_usd - self.cost_usd

    @property
    def hit_ratio(self) -> float | None:
        den = self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / den if den else None

    @property
    def token_hit_ratio(self) -> float | None:
        den = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / den if den else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "calls": self.calls,
            "warm_calls": self.warm_calls,
            "held_calls": self.held_calls,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "hit_ratio": self.hit_ratio,
            "token_hit_ratio": self.token_hit_ratio,
            "cost_usd": self.cost_usd,
            "cost_without_cache_usd": self.cost_without_cache_usd,
            "cost_saved_usd": self.cost_saved_usd,
            "warm_cost_usd": self.warm_cost_usd,
            "avoidable_cost_usd": self.avoidable_cost_usd,
            "rewrite_cost_usd": self.rewrite_cost_usd,
        }


@dataclass(slots=True)
class Simulation:
    """:func:`simulate`'s answer: one :class:`StrategyResult` per strategy, in order."""

    results: list[StrategyResult]
    calls: int
    start: float | None
    end: float | None

    def __getitem__(self, name: str) -> StrategyResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def best(self) -> StrategyResult:
        """The cheapest strategy (the first of equals)."""
        return min(self.results, key=lambda r: r.cost_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "start": self.start,
            "end": self.end,
            "strategies": [r.as_dict() for r in self.results],
            "best": self.best.name if self.results else None,
        }

    def __str__(self) -> str:
        head = ("strategy", "hit ratio", "token hit", "cost", "saved", "avoidable", "rewrites", "warmer")
        rows = [head]
        for r in self.results:
            rows.append(
                (
                    r.name,
                    _pct(r.hit_ratio),
                    _pct(r.token_hit_ratio),
                    _money(r.cost_usd),
                    _money(r.cost_saved_usd),
                    _money(r.avoidable_cost_usd),
                    _money(r.rewrite_cost_usd),
                    _money(r.warm_cost_usd) if r.warm_calls else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        if self.results:
            lines.append(f"{self.calls:,} call{'' if self.calls == 1 else 's'}; cheapest: {self.best.name}")
        return "\n".join(lines)


def _money(value: float) -> str:
    return f"-${-value:,.4f}" if value < 0 else f"${value:,.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _marks(
    family: str,
    n: int,
    ttls: tuple[str | None, ...],
    flow: int,
    strategy: Strategy,
    where: str,
    advised: Mapping[int, Mapping[int, str]] | None = None,
) -> list[tuple[int, str]]:
    """The breakpoints ``strategy`` places on a call of ``family`` with ``n`` layers whose own
    TTLs are ``ttls``, of flow ``flow``: (layer, ttl) in order."""
    marks = strategy.marks
    if marks == "advised":  # advise()'s placement for the call's flow (its own where there is none)
        found = advised.get(flow) if advised is not None else None
        marks = "current" if found is None else found
    if marks == "none" or not n:
        return []
    if marks == "current":
        placed = [(i, t) for i, t in enumerate(ttls) if t is not None]
    else:
        assert isinstance(marks, Mapping)
        chosen: dict[int, str] = {k: ttl for k, ttl in marks.items() if 0 <= k < n}
        for k, ttl in marks.items():  # (a layer counted from the end, where none counted from the start)
            if k < 0 and k + n >= 0 and k + n not in chosen:
                chosen[k + n] = ttl
        placed = sorted(chosen.items())
    if strategy.ttl is not None:
        placed = [(i, strategy.ttl) for i, _ in placed]
    placed = [(i, _EQUIVALENT.get((family, ttl), ttl)) for i, ttl in placed]
    allowed = facts.BREAKPOINT_TTLS.get(family, ())
    limit = facts.MAX_BREAKPOINTS.get(family, 4)
    if family in _FAST:
        for _, ttl in placed:
            if ttl not in allowed:
                raise ValueError(f"strategy {strategy.name!r}: {family} has no ttl {ttl!r} ({where})")
        if len(placed) > limit:
            raise ValueError(
                f"strategy {strategy.name!r} places {len(placed)} breakpoints, {family} allows {limit} ({where})"
            )
        seen_short = False
        for _, ttl in placed:
            if ttl == "1h" and seen_short:
                raise ValueError(f"strategy {strategy.name!r} puts a 1h breakpoint after a 5m one ({where})")
            seen_short = seen_short or ttl == "5m"
    return placed


# -- one strategy ----------------------------------------------------------------------------------


class _ModelCache:
    """OpenAI and Gemini calls through :class:`CacheModel`, one segment per block."""

    def __init__(self) -> None:
        self.model = CacheModel(clock=lambda: 0.0, max_entries=1 << 30)

    def request(self, call: Shape, marks: list[tuple[int, str]], upto: int) -> CacheRequest:
        segments: list[Segment] = []
        by_layer = dict(marks)
        for i in range(upto):
            key = call.keys[i]
            for b in range(call.blocks[i] - 1):
                segments.append(Segment(xxhash.xxh3_128_digest(f"{key}\x00{b}".encode()), 0))
            segments.append(
                Segment(
                    xxhash.xxh3_128_digest(key.encode()),
                    call.cum[i] - (call.cum[i - 1] if i else 0),
                    by_layer.get(i),
                )
            )
        explicit = call.family == "openai" and facts.explicit_caching(call.model)
        if call.family == "openai" and not explicit:
            segments = [Segment(s.digest, s.tokens) for s in segments]  # (markers are ignored)
        return CacheRequest(
            family=call.family,
            model=call.model,
            scope=call.scope,
            segments=tuple(segments),
            overhead_tokens=0,
            explicit=explicit,
        )


def _run(
    compiled: Compiled,
    strategy: Strategy,
    end: float,
    placements: Mapping[int, Mapping[int, str]] | None = None,
) -> StrategyResult:
    result = StrategyResult(strategy)
    layers = LayerCache()
    model_cache: _ModelCache | None = None
    # (when, seq, ticket, in the cache model): a response starts, its entries become readable
    started: list[tuple[float, int, int, bool]] = []
    deferred: list[tuple[float, int, Row, bool]] = []  # held calls and warm calls: (when, seq, call, warm)
    seq = 0
    warm_every = strategy.warm_every_s
    warmer_next: dict[int, float] = {}
    latest_first: dict[int, Row] = {}
    calls = compiled.rows
    n = len(calls)
    k = 0
    marks_memo: dict[tuple[Any, ...], list[tuple[int, str]]] = {}
    advised = placements if strategy.marks == "advised" else None

    def marks_of(call: Shape, flow: int, t: float) -> list[tuple[int, str]]:
        memo = _pattern(call, flow, advised)
        found = marks_memo.get(memo)  # (a trace has few patterns of markers)
        if found is None:
            found = marks_memo[memo] = _marks(
                call.family, len(call.chain), call.ttls, flow, strategy, f"call at {t:.3f}", advised
            )
        return found

    def one(row: Row, t: float, warm: bool, ping: bool = False) -> None:
        """``row`` at ``t``; ``warm``: a warm call (its cost is the warmer's); ``ping``: the
        strategy's warmer reading ``row``'s first layer."""
        nonlocal seq, model_cache
        call = row.shape
        if warm and not ping and strategy.marks == "none":
            return  # (without caching there is nothing to keep warm: a recorded warm call is not sent)
        if ping:
            own = dict(marks_of(call, row.flow, t))  # the first layer's TTL as the strategy marks it
            ttl = own.get(0) or strategy.ttl or call.ttls[0] or _short(call.family)
            marks = [(0, _EQUIVALENT.get((call.family, ttl), ttl))]
            upto, tail, out = 1, WARM_INPUT_TOKENS, WARM_OUTPUT_TOKENS
        else:
            marks = marks_of(call, row.flow, t)
            upto, tail, out = len(call.chain), row.tail, row.out
        cum = call.cum
        total = (cum[upto - 1] if upto else 0) + tail
        if call.family in _FAST:
            if strategy.miss_aware and not warm and marks:
                last = marks[-1][0]
                ready = layers.writing(call.chain[last], t)
                if ready is not None and ready - t <= strategy.hold_s and ready > t:
                    seq += 1
                    heapq.heappush(deferred, (ready, seq, row, False))
                    result.held_calls += 1
                    return
            read, by_ttl, concurrent, rewritten, ticket = layers.begin(
                call.chain, cum, call.pos, marks, call.minimum, t, t + row.ttft
            )
            if ticket is not None:
                ready = t + row.ttft
                if ready <= t:
                    layers.started(ticket, t)
                else:
                    seq += 1
                    heapq.heappush(started, (ready, seq, ticket, False))
        elif strategy.marks == "none":  # (implicit caching cannot be turned off: "what if it were")
            read, by_ttl, concurrent, rewritten = 0, {}, 0, 0
        else:
            if model_cache is None:
                model_cache = _ModelCache()
            try:
                r = model_cache.model.begin(model_cache.request(call, marks, upto), t)
            except CacheRuleError as exc:
                raise ValueError(f"strategy {strategy.name!r}: {exc} (call at {t:.3f})") from None
            read = r.cache_read_tokens
            by_ttl = dict(r.cache_write_by_ttl) if r.writes_reported else {}
            concurrent = rewritten = 0
            ready = t + row.ttft
            if ready <= t:
                model_cache.model.started(r.ticket, t)
            else:
                seq += 1
                heapq.heappush(started, (ready, seq, r.ticket, True))
        rates = call.rates
        written = 0
        write_cost = 0.0
        for ttl, tokens in by_ttl.items():
            written += tokens
            write_cost += tokens * (rates.cache_write_1h if ttl == "1h" else rates.cache_write)
        paid = (
            (total - read - written) * rates.input + read * rates.cache_read + write_cost + out * rates.output
        ) / _MTOK
        result.cost_usd += paid
        if warm:  # (its cost counts; its tokens are not the traffic's)
            result.warm_calls += 1
            result.warm_cost_usd += paid
        else:
            result.calls += 1
            result.input_tokens += total - read - written
            result.cache_read_tokens += read
            result.cache_write_tokens += written
            result.output_tokens += out
            result.cost_without_cache_usd += (total * rates.input + out * rates.output) / _MTOK
        if concurrent or rewritten:
            ttl = marks[-1][1] if marks else "5m"
            extra = (rates.write(ttl) - rates.cache_read) / _MTOK
            result.avoidable_cost_usd += concurrent * extra
            result.rewrite_cost_usd += rewritten * extra

    while True:
        if warm_every is None and not started and not deferred:
            # The common case: nothing pending but the trace's own calls, one after another.
            if k >= n:
                break
            call = calls[k]
            k += 1
            one(call, call.t, call.warm)
            continue
        t_next = calls[k].t if k < n else math.inf
        t_def = deferred[0][0] if deferred else math.inf
        t_start = started[0][0] if started else math.inf
        t_warm = math.inf
        if warm_every is not None and warmer_next:
            t_warm = min(warmer_next.values())
            if t_warm > end:
                t_warm = math.inf
        t = min(t_next, t_def, t_start, t_warm)
        if t == math.inf:
            break
        if t_start == t:
            _, _, ticket, in_model = heapq.heappop(started)
            if in_model:
                assert model_cache is not None
                model_cache.model.started(ticket, t)
            else:
                layers.started(ticket, t)
        elif t_def == t:
            _, _, call, warm = heapq.heappop(deferred)
            one(call, t, warm)
        elif t_warm == t:
            flow = min(warmer_next, key=warmer_next.__getitem__)
            warmer_next[flow] = t + warm_every  # type: ignore[operator]
            one(latest_first[flow], t, True, ping=True)
        else:
            call = calls[k]
            k += 1
            if warm_every is not None and call.shape.chain and not call.warm:
                latest_first[call.flow] = call
                warmer_next.setdefault(call.flow, t + warm_every)
            one(call, t, call.warm)
    return result


def _replay(
    compiled: Compiled,
    strategy: Strategy,
    end: float,
    placements: Mapping[int, Mapping[int, str]] | None = None,
) -> StrategyResult:
    """``strategy`` replayed on ``compiled``: by :func:`_run_columns` where it applies, else
    call by call (:func:`_run`); the two agree (tests replay traces both ways)."""
    found = _run_columns(compiled, strategy, placements)
    return found if found is not None else _run(compiled, strategy, end, placements)


def _run_columns(
    compiled: Compiled,
    strategy: Strategy,
    placements: Mapping[int, Mapping[int, str]] | None = None,
) -> StrategyResult | None:
    """:func:`_run`'s replay computed on the trace's columns with numpy, for the common case
    (None where it does not apply): Anthropic and Bedrock calls whose writes are readable at
    once (no ttft), no warmer and no holding, and breakpoints that each prefix has in every call
    that has the prefix, with one TTL. Then an entry is alive at a call exactly when the
    prefix's previous call was within its TTL (each call that has the prefix refreshes or
    writes it; none is read through the lookback, as every entry a lookback could find is one
    of the call's own breakpoints), and a call's reads and writes follow from its breakpoints'
    states. Sums run in the calls' order, as :func:`_run` adds them."""
    if (
        np is None
        or strategy.warm_every_s is not None
        or strategy.miss_aware
        or not compiled.t
        or not small_counts(compiled)
    ):
        return None
    if not every_shape(compiled, "replayable", lambda x: x.family in _FAST) or any(
        ttft > 0 for ttft in compiled.ttft
    ):
        return None
    t, shape, warm, flow, tail, out = (
        call_column(compiled, name) for name in ("t", "shape", "warm", "flow", "tail", "out")
    )
    if strategy.marks == "none":  # (a recorded warm call is not sent: nothing to keep warm)
        keep = ~warm
        t, shape, warm, flow, tail, out = (column[keep] for column in (t, shape, warm, flow, tail, out))
    advised = placements if strategy.marks == "advised" else None
    # Each kind of call (its shape, and its flow where the marks are the flow's) and its marks,
    # made in the order of the kinds' first calls (so a strategy that cannot be placed is named
    # at the call _run names).
    key = shape * (len(compiled.flows) + 1) + flow if advised is not None else shape
    _, first, kind = np.unique(key, return_index=True, return_inverse=True)
    tables = _kind_tables(compiled, strategy, advised, shape[first], flow[first], t[first], first)
    if tables is None:
        return None  # (a prefix marked in some calls and not in others, or with two TTLs)
    prefix, ttl_s, long_ttl, cum, last_write = tables
    # The calls' breakpoints, one row a call, and each one's previous call with the same prefix.
    h = prefix[kind]
    has = h >= 0
    at = np.broadcast_to(t[:, None], h.shape)[has]
    flat_h = h[has]
    previous = previous_time(flat_h, at)
    expires = previous + ttl_s[kind][has]
    alive_flat = at <= expires  # (NaN: no earlier call, never alive)
    recent_flat = ~alive_flat & (expires >= at - FORGET_AFTER_S)
    alive = np.zeros(h.shape, dtype=bool)
    alive[has] = alive_flat
    recent = np.zeros(h.shape, dtype=bool)
    recent[has] = recent_flat
    c = cum[kind]
    read = np.where(alive, c, 0).max(axis=1)
    before = np.maximum(
        read[:, None], np.concatenate([np.zeros((len(t), 1), dtype=np.int64), c[:, :-1]], axis=1)
    )
    span = np.where(has, np.maximum(c - before, 0), 0)
    longs = long_ttl[kind]
    written_1h = np.where(longs, span, 0).sum(axis=1)
    written = span.sum(axis=1)
    written_5m = written - written_1h
    rewritten = np.where(recent, span, 0).sum(axis=1)

    # Prices, a call at a time.
    def price(name: str) -> Any:
        return shape_column(compiled, name)[shape]

    total = shape_column(compiled, "layer_tokens")[shape] + tail
    p_input, p_read, p_output = price("input"), price("cache_read"), price("output")
    write_cost = written_5m * price("cache_write") + written_1h * price("cache_write_1h")
    paid = ((total - read - written) * p_input + read * p_read + write_cost + out * p_output) / _MTOK
    extra = (last_write[kind] - p_read) / _MTOK
    result = StrategyResult(strategy)
    traffic = ~warm
    result.calls = int(traffic.sum())
    result.warm_calls = len(t) - result.calls
    result.input_tokens = int((total - read - written)[traffic].sum())
    result.cache_read_tokens = int(read[traffic].sum())
    result.cache_write_tokens = int(written[traffic].sum())
    result.output_tokens = int(out[traffic].sum())
    result.cost_usd = in_order(paid)
    result.cost_without_cache_usd = in_order(((total * p_input + out * p_output) / _MTOK)[traffic])
    result.warm_cost_usd = in_order(paid[warm])
    result.rewrite_cost_usd = in_order(rewritten * extra)
    return result


_WIDTH = max(facts.MAX_BREAKPOINTS[f] for f in _FAST)  # breakpoints a call has at most (_marks says so)
_CODES = {"5m": 1, "1h": 2}  # (0: no breakpoint)


def _pattern(x: Shape, flow: int, advised: Mapping[int, Mapping[int, str]] | None) -> tuple[Any, ...]:
    """What :func:`_marks` places a call's breakpoints by: its family, its number of layers,
    their own TTLs, and its flow where the placement is the flow's (advised)."""
    return (x.family, len(x.chain), x.ttls, flow if advised is not None else 0)


def _kind_tables(
    compiled: Compiled,
    strategy: Strategy,
    advised: Mapping[int, Mapping[int, str]] | None,
    shape: Any,
    flow: Any,
    t: Any,
    row: Any,
) -> tuple[Any, Any, Any, Any, Any] | None:
    """For each kind of call (its shape ``shape``, of flow ``flow``, first at ``t`` as call
    ``row``, in the order of ``np.unique``): the prefix id, TTL in seconds, whether 1h, and tokens through each
    of its breakpoints that reach the model's minimum (``_WIDTH`` columns, prefix -1 past the
    last), and the price of a write with the TTL of its last breakpoint as the strategy places
    it (5m for none), what a rewrite costs beyond a read. Kinds
    with one pattern of markers are placed together; None when a prefix has a breakpoint in
    some calls and not in others, or two TTLs."""
    laid = shape_layers(compiled)
    chains, cums, starts, reaches = laid.chains, laid.cums, laid.starts, laid.reaches
    shapes = compiled.shapes
    n_kinds = len(shape)
    prefix = np.full((n_kinds, _WIDTH), -1, dtype=np.int64)
    ttl_s = np.zeros((n_kinds, _WIDTH), dtype=np.float64)
    long_ttl = np.zeros((n_kinds, _WIDTH), dtype=bool)
    cum = np.zeros((n_kinds, _WIDTH), dtype=np.int64)
    last_write = np.zeros(n_kinds, dtype=np.float64)
    patterns: dict[tuple[Any, ...], list[int]] = {}
    for v in np.argsort(row, kind="stable").tolist():  # (patterns in the order of their first calls)
        x = shapes[int(shape[v])]
        patterns.setdefault(_pattern(x, int(flow[v]), advised), []).append(v)
    ids, codes = [], []
    for (family, n, ttls, _), members in patterns.items():
        v0 = members[0]
        marks = _marks(family, n, ttls, int(flow[v0]), strategy, f"call at {t[v0]:.3f}", advised)
        kinds = np.asarray(members, dtype=np.int64)
        base = starts[shape[kinds]]
        reach = reaches[shape[kinds]]  # (the first layer at the model's minimum)
        layers = base[:, None] + np.arange(n)
        ids.append(chains[layers].ravel())
        code = np.zeros((len(kinds), n), dtype=np.int8)
        skipped = np.zeros(len(kinds), dtype=np.int64)  # marks before the minimum
        for i, ttl in marks:
            code[:, i] = np.where(i >= reach, _CODES[ttl], 0)
            skipped += i < reach
        codes.append(code.ravel())
        for m, (i, ttl) in enumerate(marks):
            placed = m >= skipped
            rows, column = kinds[placed], m - skipped[placed]
            prefix[rows, column] = chains[base[placed] + i]
            ttl_s[rows, column] = _TTL_S.get(ttl) or facts.ttl_seconds(ttl)
            long_ttl[rows, column] = ttl == "1h"
            cum[rows, column] = cums[base[placed] + i]
        last_ttl = marks[-1][1] if marks else "5m"
        for v in members:
            last_write[v] = shapes[int(shape[v])].rates.write(last_ttl)
    if not ids:  # (no call: every one was a recorded warm call, not sent without caching)
        return prefix, ttl_s, long_ttl, cum, last_write
    every_id, every_code = np.concatenate(ids), np.concatenate(codes)
    order = np.argsort(every_id, kind="stable")
    sorted_id, sorted_code = every_id[order], every_code[order]
    starts_of = np.flatnonzero(np.concatenate([[True], sorted_id[1:] != sorted_id[:-1]]))
    if sorted_id.size and np.any(
        np.minimum.reduceat(sorted_code, starts_of) != np.maximum.reduceat(sorted_code, starts_of)
    ):
        return None
    return prefix, ttl_s, long_ttl, cum, last_write


def _short(family: str) -> str:
    return facts.BREAKPOINT_TTLS.get(family, ("5m",))[-1] if family in _FAST else "30m"


def simulate(
    trace: Trace | str | Iterable[TraceCall | Mapping[str, Any]],
    strategies: Sequence[Strategy | str] | None = None,
    *,
    model: str | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    ttft_s: float = 0.0,
    advised: Any = None,
    flow: str | None = None,
    planned: Trace | str | Iterable[TraceCall | Mapping[str, Any]] | None = None,
) -> Simulation:
    """Replay ``trace`` (a :class:`~._trace.Trace`, a JSON Lines path, or calls) under each of
    ``strategies`` (:class:`Strategy` objects or their text, :meth:`Strategy.parse`; default
    :data:`DEFAULT_STRATEGIES`). ``model``: for calls that name none; ``prices``: overrides
    as :class:`~cachebench.CacheTracker` takes them; ``ttft_s``: when a call's response
    starts (its entries readable) where the trace does not say (``ttft_ms``); ``advised``: the
    :class:`~._advise.Advice` the ``advised`` strategy replays, when already made for this
    trace (else it is made here); ``flow``: only that flow's calls; ``planned``: the same calls
    as a plan marks them, which a ``plan`` strategy replays
    (:func:`~._requests.trace_from_requests` with ``plans=``)."""
    if isinstance(ttft_s, bool) or not isinstance(ttft_s, (int, float)) or not 0 <= ttft_s < math.inf:
        raise ValueError(f"ttft_s must be a number of seconds >= 0, got {ttft_s!r}")
    if isinstance(strategies, (str, Strategy)):
        raise TypeError("strategies must be a list (of Strategy objects or their text)")
    chosen = [s if isinstance(s, Strategy) else Strategy.parse(s) for s in (strategies or DEFAULT_STRATEGIES)]
    names = [s.name for s in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"two strategies share a name: {names}")
    compiled = _only(compile_trace(trace, model=model, prices=prices, ttft_s=float(ttft_s)), flow)
    compiled_plan = None
    if any(s.marks == "plan" for s in chosen):
        if planned is None:
            raise ValueError(
                "a 'plan' strategy replays the calls as a plan marks them: pass planned= (the same"
                " requests through trace_from_requests(..., plans=plans_for_requests(...)))"
            )
        compiled_plan = _only(compile_trace(planned, model=model, prices=prices, ttft_s=float(ttft_s)), flow)
        flow_names, plan_names = compiled.flow_names, compiled_plan.flow_names
        if compiled_plan.t != compiled.t or [plan_names[f] for f in compiled_plan.flow] != [
            flow_names[f] for f in compiled.flow
        ]:
            raise ValueError(
                "planned must be the same calls as the trace (the same times and flows, in order),"
                f" marked by a plan: it has {len(compiled_plan):,} calls, the trace {len(compiled):,}"
            )
    deepest = max((len(shape.ttls) for shape in compiled.shapes), default=0)
    for s in chosen:
        marks = s.marks
        if (
            isinstance(marks, Mapping)
            and marks
            and compiled.shapes
            and not any(0 <= k < deepest or 0 < -k <= deepest for k in marks)
        ):
            raise ValueError(
                f"strategy {s.name!r}: no call of the trace has layer "
                f"{' or '.join(str(k) for k in marks)} (its calls have at most {deepest} layers,"
                " counted from 0; -1 is the last)"
            )
    placements = None
    if any(s.marks == "advised" for s in chosen):
        from ._advise import Advice, advise_compiled

        advice = advised if isinstance(advised, Advice) else advise_compiled(compiled)
        placements = {compiled.flows[f.flow]: f.placement for f in advice.flows if f.flow in compiled.flows}
    times = compiled.t
    end = times[-1] if times else 0.0
    results = []
    for s in chosen:
        if s.marks == "plan":
            assert compiled_plan is not None
            result = _replay(compiled_plan, replace(s, marks="current"), end)
            result.strategy = s
        else:
            result = _replay(compiled, s, end, placements)
        results.append(result)
    return Simulation(
        results,
        len(times),
        times[0] if times else None,
        times[-1] if times else None,
    )


def _only(compiled: Compiled, flow: str | None) -> Compiled:
    """``compiled``'s calls of ``flow`` (all of them for None)."""
    if flow is None:
        return compiled
    if flow not in compiled.flows:
        raise ValueError(
            f"no call of flow {flow!r} in the trace (its flows: {', '.join(sorted(compiled.flows))})"
        )
    wanted = compiled.flows[flow]
    return compiled.subset(i for i, f in enumerate(compiled.flow) if f == wanted)
