"""Bounded aggregates per prefix, flow, model and (provider, model, flow), and the retained
call history.

Every aggregate is a sum; ratios are computed when asked (ratios of sums, never means of
per-call ratios) and are ``None``, never NaN, when their denominator is 0. Memory is bounded:
prefixes beyond ``max_prefixes`` are dropped least recently seen first, flows likewise, and the
call history keeps ``max_calls``. A prefix remembers the first :data:`MAX_FLOWS_PER_PREFIX`
flows that used it; a flow counts the distinct prefixes it used with :class:`DistinctCount`
(exact up to :data:`DISTINCT_EXACT`, an estimate beyond).

The exporters read one aggregate per (provider, model, flow), a *series*. Their counters must
never go down, so a series is never dropped: the table keeps the first :data:`MAX_SERIES`, and
the calls of any further (model, flow) count under ``(provider, OTHER, OTHER)``.

A call arrives as its :class:`~cachebench.types.CallMetrics`. The history keeps calls packed (token counts
as uint32, floats and bit flags in arrays, shared strings by reference), about a fifth of
the memory of the objects themselves; :class:`CallMetrics` objects are built when it is read.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, get_args

from .providers._base import as_int
from .types import CallMetrics, MissCause

__all__ = [
    "AGGREGATE_KEYS",
    "DISTINCT_EXACT",
    "MAX_FLOWS_PER_PREFIX",
    "MAX_SERIES",
    "OTHER",
    "Agg",
    "DistinctCount",
    "History",
    "Stats",
    "Sums",
]

#: A prefix's ``flows`` lists at most this many flows (the first ones, in first-use order).
MAX_FLOWS_PER_PREFIX = 32
#: A flow's ``distinct_prefixes`` is exact up to this many prefixes, then an estimate.
DISTINCT_EXACT = 64
#: The (provider, model, flow) series kept for the exporters, before new ones count under OTHER.
MAX_SERIES = 1000
#: The model and flow of the series that counts calls beyond :data:`MAX_SERIES`.
OTHER = "(other)"

AGGREGATE_KEYS = (
    "calls",
    "errors",
    "hit_ratio",
    "token_hit_ratio",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "cost_usd",
    "cost_without_cache_usd",
    "cost_saved_usd",
    "avoidable_cost_usd",
    "hit_ratio_if_fixed",
    "unpriced_calls",
    "unknown_usage_calls",
    "holds",
)


class DistinctCount:
    """How many distinct prefixes (their 64-bit hashes) a flow used, in at most
    :data:`DISTINCT_EXACT` hashes (8 bytes each).

    It keeps the smallest ``K`` hashes seen (k minimum values): while no more than ``K``
    distinct hashes were added, the count is exact; beyond, it is ``(K - 1) / u`` where ``u``
    is the ``K``-th smallest hash as a fraction of 2**64, an estimate with a relative standard
    error of about ``1 / sqrt(K - 2)`` (13 % at ``K = 64``). Prefix ids are xxh3-64 hashes,
    uniform enough for it.
    """

    __slots__ = ("_last", "_mins", "_over")

    def __init__(self) -> None:
        self._mins = array("Q")  # the smallest hashes seen, ascending, at most K
        self._over = False  # a distinct hash was left out: the count is an estimate
        self._last = -1  # the hash added last (consecutive calls often share one)

    def add(self, h: int) -> None:
        if h == self._last:
            return
        self._last = h
        mins = self._mins
        if self._over and h > mins[-1]:
            return
        i = bisect_left(mins, h)
        if i < len(mins) and mins[i] == h:
            return
        if len(mins) < DISTINCT_EXACT:
            mins.insert(i, h)
            return
        self._over = True
        if i < DISTINCT_EXACT:
            mins.insert(i, h)
            mins.pop()

    def count(self) -> int:
        mins = self._mins
        if not self._over:
            return len(mins)
        estimate = round((DISTINCT_EXACT - 1) * 2**64 / (mins[-1] + 1))
        return max(estimate, DISTINCT_EXACT + 1)  # more than K were seen, whatever the hashes say


class Agg:
    """Running sums for one group of calls.

    The counters that are usually zero (errors, unknown usage, unpriced calls, holds) live in
    ``rare``, a list made on first use: one is kept per retained prefix, so every slot counts.
    """

    __slots__ = (
        "calls",
        "cost",
        "cost_without",
        "first_seen",
        "flow",
        "flows",
        "hit_den",
        "hit_num",
        "input",
        "last_seen",
        "model",
        "output",
        "prefix_count",
        "rare",
        "read",
        "write",
        "write_1h",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.input = self.read = self.write = self.write_1h = self.output = 0
        self.hit_num = self.hit_den = 0
        self.cost = self.cost_without = 0.0
        self.first_seen = self.last_seen = 0.0
        self.flow: str | None = None  # a prefix's: the flow of its last call
        # A prefix's flows in first-use order, made when a second flow uses it (until then,
        # ``flow`` is the only one); at most MAX_FLOWS_PER_PREFIX.
        self.flows: list[str] | None = None
        self.prefix_count: DistinctCount | None = None  # a flow's: the prefixes it used
        self.model: str | None = None
        # [errors, unknown, unpriced, holds, held_ms, and for avoidable misses: the tokens they
        # did not read, what of those is beyond the hit denominator, and what they cost]
        self.rare: list[float] | None = None

    def _rare(self) -> list[float]:
        if self.rare is None:
            self.rare = [0, 0, 0, 0, 0.0, 0, 0, 0.0]
        return self.rare

    def add(self, m: CallMetrics) -> None:
        """Add one call."""
        self.count(m, _sums(m))

    def count(self, m: CallMetrics, sums: Sums) -> None:
        """Add one call whose sums were already read with :func:`_sums`: the rare counters
        (errors, holds, unknown usage, unpriced) from the call, then the sums."""
        if m.error is not None:
            self._rare()[_R_ERRORS] += 1
        held = m.held_ms
        if held:
            rare = self._rare()
            rare[_R_HOLDS] += 1
            rare[_R_HELD_MS] += held
        if not m.usage_known:
            self._rare()[_R_UNKNOWN] += 1
        elif m.unpriced or m.cost_usd is None:
            self._rare()[_R_UNPRICED] += 1
        avoidable = m.avoidable_tokens
        if avoidable and m.usage_known:
            rare = self._rare()
            den, hit = sums[6], sums[7]
            rare[_R_FIX_NUM] += avoidable
            rare[_R_FIX_DEN] += max(0, hit + avoidable - den)
            if m.avoidable_cost_usd and not m.unpriced and m.cost_usd is not None:
                rare[_R_AVOID_COST] += m.avoidable_cost_usd
        self.bump(*sums)

    def bump(
        self,
        ts: float,
        inp: int,
        read: int,
        write: int,
        write_1h: int,
        out: int,
        den: int,
        hit: int,
        cost: float,
        without: float,
    ) -> None:
        """Add one call's sums (:func:`_sums`); alone, for a call with nothing rare to count
        (no error, no hold, usage known, priced)."""
        self.calls += 1
        if self.first_seen == 0.0 or ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        self.input += inp
        self.read += read
        self.write += write
        self.write_1h += write_1h
        self.output += out
        self.hit_den += den
        self.hit_num += hit
        self.cost += cost
        self.cost_without += without

    def as_dict(self) -> dict[str, Any]:
        errors, unknown, unpriced, holds, _, fix_num, fix_den, avoidable = self.rare or _NO_RARE
        fixed_den = self.hit_den + fix_den
        total_in = self.input + self.read + self.write
        # Calls with known usage that were priced (unknown usage is neither priced nor unpriced).
        no_price = self.calls > 0 and self.calls - unknown - unpriced == 0
        return {
            "calls": self.calls,
            "errors": int(errors),
            "hit_ratio": self.hit_num / self.hit_den if self.hit_den else None,
            "token_hit_ratio": self.read / total_in if total_in else None,
            "input_tokens": self.input,
            "cache_read_tokens": self.read,
            "cache_write_tokens": self.write,
            "cache_write_1h_tokens": self.write_1h,
            "output_tokens": self.output,
            "cost_usd": None if no_price else self.cost,
            "cost_without_cache_usd": None if no_price else self.cost_without,
            "cost_saved_usd": None if no_price else self.cost_without - self.cost,
            "avoidable_cost_usd": None if no_price else float(avoidable),
            "hit_ratio_if_fixed": (self.hit_num + fix_num) / fixed_den if fixed_den else None,
            "unpriced_calls": int(unpriced),
            "unknown_usage_calls": int(unknown),
            "holds": int(holds),
        }

    def note_flow(self, flow: str) -> None:
        """A prefix's: ``flow`` used it (called when it is not the flow of its last call)."""
        last = self.flow
        if last is not None:
            flows = self.flows
            if flows is None:
                flows = self.flows = [last]
            if flow not in flows and len(flows) < MAX_FLOWS_PER_PREFIX:
                flows.append(flow)
        self.flow = flow

    def flow_names(self) -> list[str]:
        """A prefix's flows, in first-use order (a copy)."""
        if self.flows is not None:
            return list(self.flows)
        return [self.flow] if self.flow is not None else []

    def note_prefix(self, prefix_hash: int) -> None:
        """A flow's: it used the prefix ``prefix_hash``."""
        counter = self.prefix_count
        if counter is None:
            counter = self.prefix_count = DistinctCount()
        counter.add(prefix_hash)


_R_ERRORS, _R_UNKNOWN, _R_UNPRICED, _R_HOLDS, _R_HELD_MS, _R_FIX_NUM, _R_FIX_DEN, _R_AVOID_COST = range(8)
_NO_RARE = (0, 0, 0, 0, 0.0, 0, 0, 0.0)

# What one call adds to an aggregate's sums: timestamp, input, read, write, 1h write, output,
# hit denominator and numerator, cost, cost without cache. (An avoidable miss's figures are
# rare: counted by Agg.count.)
Sums = tuple[float, int, int, int, int, int, int, int, float, float]


def _sums(m: CallMetrics) -> Sums:
    """A call's :data:`Sums`, read once for every aggregate the call belongs to. Unknown usage
    adds no tokens; an unpriced call adds no cost."""
    ts = float(m.timestamp)
    if not m.usage_known:
        return (ts, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0)
    read = int(m.cache_read_tokens)
    write = int(m.cache_write_tokens)
    # CallMetrics.cacheable_tokens / hit_tokens, inlined: this runs on every call.
    den = read + write if m.writes_reported else int(m.expected_read_tokens)
    cost = m.cost_usd
    priced = not m.unpriced and cost is not None
    return (
        ts,
        int(m.input_tokens),
        read,
        write,
        int(m.cache_write_1h_tokens),
        int(m.output_tokens),
        den,
        read if read < den else den,
        cost if priced and cost is not None else 0.0,
        float(m.cost_without_cache_usd or 0.0) if priced else 0.0,
    )


class _Bounded:
    """An LRU of aggregates: touching a key moves it to the end; the oldest is dropped."""

    __slots__ = ("_d", "evicted", "limit")

    def __init__(self, limit: int) -> None:
        self._d: OrderedDict[Any, Agg] = OrderedDict()
        self.limit = limit
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._d)

    def items(self) -> Iterator[tuple[Any, Agg]]:
        return iter(self._d.items())

    def values(self) -> Iterator[Agg]:
        return iter(self._d.values())

    def touch(self, key: Any) -> Agg:
        d = self._d
        agg = d.get(key)
        if agg is None:
            agg = d[key] = Agg()
            if len(d) > self.limit:
                d.popitem(last=False)
                self.evicted += 1
        else:
            d.move_to_end(key)
        return agg


# The history keeps a call in packed parts: four references (shared strings, the prefix int,
# the breakpoint ids), six token counts as uint32, six floats, and provider, miss cause and the
# booleans as bits of one uint16. Diagnostics, errors, diffs and avoidable misses are rare: kept
# aside by slot.
_PROVIDERS = ("anthropic", "openai", "bedrock", "gemini")
_PROVIDER_CODE = {p: i for i, p in enumerate(_PROVIDERS)}
_CAUSES: tuple[MissCause | None, ...] = (None, *get_args(MissCause))
_CAUSE_CODE = {c: i for i, c in enumerate(_CAUSES)}
_N_REFS, _N_INTS, _N_FLOATS = 4, 6, 6
_MAX_TOKENS = 2**32 - 1
_COMMON = (None, None, None, None)  # a call's rare part when it has none
_NAN = math.nan
# Kept for breakpoint_ids == (prefix_id,), the common case, so the ids are not stored twice: a
# sentinel object, which ``is`` tells from every tuple.
_ONLY_PREFIX: Any = object()


def _clamp(n: Any) -> int:
    """A count as a uint32: :func:`as_int`, and beyond 2**32 - 1 is 2**32 - 1."""
    n = as_int(n)
    return n if n <= _MAX_TOKENS else _MAX_TOKENS


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return _NAN


class History:
    """The last ``size`` calls in a ring, packed (about 110 bytes a call)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0  # calls ever appended
        self._refs: list[Any] = []
        self._ints = array("I")
        self._floats = array("d")
        self._bits = array("H")
        # slot -> (diagnostics, error, diff, (avoidable tokens, avoidable cost) or None)
        self._rare: dict[int, tuple[Any, Any, Any, tuple[int, float | None] | None]] = {}
        assert self._ints.itemsize == 4 and self._bits.itemsize == 2

    def __len__(self) -> int:
        return min(self.count, self.size)

    def append(self, m: CallMetrics, flow: str | None, model: str | None, pid: int | None) -> None:
        """Append a call; ``flow`` and ``model`` are equal shared strings to keep instead, ``pid``
        the prefix id as an int."""
        bps = m.breakpoint_ids
        if len(bps) == 1 and bps[0] is m.prefix_id:
            bps = _ONLY_PREFIX
        counts = (
            m.input_tokens,
            m.cache_read_tokens,
            m.cache_write_tokens,
            m.cache_write_1h_tokens,
            m.output_tokens,
            m.expected_read_tokens,
        )
        elapsed = m.elapsed_ms
        cost = m.cost_usd
        without = m.cost_without_cache_usd
        saved = m.cost_saved_usd
        floats = (
            _NAN if elapsed is None else elapsed,
            m.timestamp,
            _NAN if cost is None else cost,
            _NAN if without is None else without,
            _NAN if saved is None else saved,
            m.held_ms,
        )
        bits = (
            _PROVIDER_CODE.get(m.provider, 7)
            | _CAUSE_CODE.get(m.miss_cause, 0) << 3
            | (m.unexpected_miss and 1 << 7)
            | (m.usage_known and 1 << 8)
            | (m.writes_reported and 1 << 9)
            | (m.unpriced and 1 << 10)
            | (m.stream and 1 << 11)
            | (m.warm and 1 << 12)
        )
        # Converted before anything is stored, so a value that cannot be stored never leaves
        # the parts of a call out of step with each other.
        try:
            packed_ints = array("I", counts)
        except (OverflowError, TypeError, ValueError):  # garbage: clamped (no call has 4e9 tokens)
            packed_ints = array("I", [_clamp(c) for c in counts])
        try:
            packed_floats = array("d", floats)
        except (OverflowError, TypeError, ValueError):
            packed_floats = array("d", [_as_float(x) for x in floats])
        slot = self.count % self.size
        if self.count < self.size:
            self._refs.extend((model, flow, pid, bps))
            self._ints.extend(packed_ints)
            self._floats.extend(packed_floats)
            self._bits.append(bits)
        else:
            # Full: overwrite the oldest slot in place.
            r = slot * _N_REFS
            self._refs[r : r + _N_REFS] = [model, flow, pid, bps]
            i = slot * _N_INTS
            self._ints[i : i + _N_INTS] = packed_ints
            f = slot * _N_FLOATS
            self._floats[f : f + _N_FLOATS] = packed_floats
            self._bits[slot] = bits
            self._rare.pop(slot, None)
        diag = m.diagnostics
        error = m.error
        diff = m.diff
        avoidable = None
        if m.avoidable_tokens or m.avoidable_cost_usd:
            avoidable = (m.avoidable_tokens, m.avoidable_cost_usd)
        if diag is not None or error is not None or diff is not None or avoidable is not None:
            self._rare[slot] = (diag, error, diff, avoidable)
        self.count += 1

    def _call(self, slot: int) -> CallMetrics:
        model, flow, pid, bps = self._refs[slot * _N_REFS : (slot + 1) * _N_REFS]
        i = slot * _N_INTS
        inp, read, write, write_1h, out, expected = self._ints[i : i + _N_INTS]
        f = slot * _N_FLOATS
        elapsed, ts, cost, without, saved, held = self._floats[f : f + _N_FLOATS]
        bits = self._bits[slot]
        diag, error, diff, avoidable = self._rare.get(slot, _COMMON)
        if avoidable is None:  # nothing avoidable: 0.0 for a priced call, None for an unpriced one
            avoidable = (0, None if math.isnan(cost) else 0.0)
        prefix_id = None if pid is None else format(pid, "016x")
        provider = bits & 7
        return CallMetrics(
            provider=_PROVIDERS[provider] if provider < len(_PROVIDERS) else "unknown",
            model=model,
            flow=flow,
            prefix_id=prefix_id,
            breakpoint_ids=(prefix_id,) if bps is _ONLY_PREFIX and prefix_id is not None else bps,
            input_tokens=inp,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=write_1h,
            output_tokens=out,
            elapsed_ms=None if math.isnan(elapsed) else elapsed,
            timestamp=ts,
            cost_usd=None if math.isnan(cost) else cost,
            cost_without_cache_usd=None if math.isnan(without) else without,
            cost_saved_usd=None if math.isnan(saved) else saved,
            expected_read_tokens=expected,
            unexpected_miss=bool(bits & 1 << 7),
            miss_cause=_CAUSES[bits >> 3 & 15],
            usage_known=bool(bits & 1 << 8),
            held_ms=held,
            diagnostics=diag,
            error=error,
            writes_reported=bool(bits & 1 << 9),
            unpriced=bool(bits & 1 << 10),
            stream=bool(bits & 1 << 11),
            warm=bool(bits & 1 << 12),
            diff=diff,
            avoidable_tokens=avoidable[0],
            avoidable_cost_usd=avoidable[1],
        )

    def _slots(self) -> range | list[int]:
        n = len(self)
        if self.count <= self.size:
            return range(n)
        start = self.count % self.size
        return [(start + k) % self.size for k in range(n)]

    def calls(self) -> Iterator[CallMetrics]:
        """The calls, oldest first."""
        for slot in self._slots():
            yield self._call(slot)

    def calls_since(self, since: float) -> Iterator[CallMetrics]:
        floats = self._floats
        # Replayed logs may arrive out of order, so no early exit on timestamps.
        for slot in self._slots():
            if floats[slot * _N_FLOATS + 1] >= since:
                yield self._call(slot)


class Stats:
    """All aggregates of one tracker. Not locked: only the tracker's consumer thread touches it."""

    def __init__(self, max_prefixes: int, max_calls: int) -> None:
        self.total = Agg()
        self.prefixes = _Bounded(max_prefixes)
        self.flows = _Bounded(max_prefixes)
        self.max_prefixes = max_prefixes
        self.history = History(max_calls)
        self._names: dict[str, str] = {}  # one shared str per model/flow name in the history
        # (provider, model, flow) -> its sums, for the exporters: never evicted (see the top)
        self.series: dict[tuple[str, str | None, str | None], Agg] = {}

    def _name(self, s: str | None) -> str | None:
        if s is None:
            return None
        shared = self._names.get(s)
        if shared is None:
            if len(self._names) >= 4 * self.max_prefixes:
                self._names.clear()
            shared = self._names[s] = s
        return shared

    def add(self, m: CallMetrics, prefix_hash: int | None) -> None:
        """Add one call to every aggregate.

        ``prefix_hash`` is the int form of the call's ``prefix_id``: prefixes are keyed by it
        (an int shared with the cache view, not a string per prefix) and shown as hex.
        """
        flow_name = self._name(m.flow)
        model = self._name(m.model)
        flow = self.flows.touch(flow_name)
        prefix = self.prefixes.touch(prefix_hash) if prefix_hash is not None else None
        series = self.series.get((m.provider, model, flow_name))
        if series is None:
            series = self._new_series(m.provider, model, flow_name)
        sums = _sums(m)
        if (
            m.usage_known
            and m.cost_usd is not None
            and m.error is None
            and not m.held_ms
            and not m.unpriced
            and not m.avoidable_tokens
        ):
            # The common call: nothing rare to count, only its sums to add.
            self.total.bump(*sums)
            flow.bump(*sums)
            series.bump(*sums)
            if prefix is not None:
                prefix.bump(*sums)
        else:
            self.total.count(m, sums)
            flow.count(m, sums)
            series.count(m, sums)
            if prefix is not None:
                prefix.count(m, sums)
        if prefix is not None and prefix_hash is not None:
            if prefix.flow != flow_name and flow_name is not None:
                prefix.note_flow(flow_name)
            prefix.model = model
            flow.note_prefix(prefix_hash)
        self.history.append(m, flow_name, model, prefix_hash)

    def _new_series(self, provider: str, model: str | None, flow: str | None) -> Agg:
        table = self.series
        key = (provider, model, flow) if len(table) < MAX_SERIES else (provider, OTHER, OTHER)
        agg = table.get(key)
        if agg is None:
            agg = table[key] = Agg()
        return agg

    def by_series(self) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
        """``(provider, model, flow, aggregate keys)`` of every series, in first-call order."""
        return [(p, model, flow, agg.as_dict()) for (p, model, flow), agg in self.series.items()]

    def window(self, since: float) -> Agg:
        agg = Agg()
        for m in self.history.calls_since(since):
            agg.add(m)
        return agg

    def calls(self) -> list[CallMetrics]:
        return list(self.history.calls())

    def by_prefix(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per retained prefix, plus ``flow`` (of its last call), ``flows``
        (every flow that used it, in first-use order: the first :data:`MAX_FLOWS_PER_PREFIX`),
        ``model``, ``first_seen`` and ``last_seen``."""
        out: dict[str, dict[str, Any]] = {}
        for pid, agg in self.prefixes.items():
            d = agg.as_dict()
            d.update(
                flow=agg.flow,
                flows=agg.flow_names(),
                model=agg.model,
                first_seen=agg.first_seen,
                last_seen=agg.last_seen,
            )
            out[format(pid, "016x")] = d
        return out

    def by_flow(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per retained flow, plus ``distinct_prefixes``: how many distinct
        prefixes its calls used since the flow entered the table, exact up to
        :data:`DISTINCT_EXACT` and estimated beyond (:class:`DistinctCount`)."""
        out: dict[str, dict[str, Any]] = {}
        for name, agg in self.flows.items():
            d = agg.as_dict()
            counter = agg.prefix_count
            d["distinct_prefixes"] = counter.count() if counter is not None else 0
            out[name] = d
        return out
