"""Bounded aggregates per prefix, flow and model, and the retained call history.

Every aggregate is a sum; ratios are computed when asked (ratios of sums, never means of
per-call ratios). Memory is bounded: prefixes beyond ``max_prefixes`` are dropped least
recently seen first, flows and models likewise, and the call history keeps ``max_calls``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any

from .types import CallMetrics

__all__ = ["AGGREGATE_KEYS", "Agg", "Stats"]

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
    "unpriced_calls",
    "unknown_usage_calls",
    "holds",
)


class Agg:
    """Running sums for one group of calls."""

    __slots__ = (
        "calls",
        "cost",
        "cost_without",
        "errors",
        "first_seen",
        "flow",
        "held_ms",
        "hit_den",
        "hit_num",
        "holds",
        "input",
        "last_seen",
        "model",
        "output",
        "priced",
        "read",
        "unknown",
        "unpriced",
        "write",
        "write_1h",
    )

    def __init__(self) -> None:
        self.calls = self.errors = self.unknown = self.unpriced = self.priced = self.holds = 0
        self.input = self.read = self.write = self.write_1h = self.output = 0
        self.hit_num = self.hit_den = 0
        self.cost = self.cost_without = 0.0
        self.held_ms = 0.0
        self.first_seen = self.last_seen = 0.0
        self.flow: str | None = None
        self.model: str | None = None

    def add(self, m: CallMetrics) -> None:
        self.calls += 1
        if self.first_seen == 0.0 or m.timestamp < self.first_seen:
            self.first_seen = m.timestamp
        if m.timestamp > self.last_seen:
            self.last_seen = m.timestamp
        if m.error is not None:
            self.errors += 1
        if m.held_ms:
            self.holds += 1
            self.held_ms += m.held_ms
        if not m.usage_known:
            self.unknown += 1
            return
        self.input += m.input_tokens
        self.read += m.cache_read_tokens
        self.write += m.cache_write_tokens
        self.write_1h += m.cache_write_1h_tokens
        self.output += m.output_tokens
        den = m.cacheable_tokens
        self.hit_den += den
        self.hit_num += m.cache_read_tokens if m.cache_read_tokens < den else den
        if m.unpriced or m.cost_usd is None:
            self.unpriced += 1
        else:
            self.priced += 1
            self.cost += m.cost_usd
            self.cost_without += m.cost_without_cache_usd or 0.0

    def as_dict(self) -> dict[str, Any]:
        total_in = self.input + self.read + self.write
        no_price = self.calls > 0 and self.priced == 0
        return {
            "calls": self.calls,
            "errors": self.errors,
            "hit_ratio": self.hit_num / self.hit_den if self.hit_den else math.nan,
            "token_hit_ratio": self.read / total_in if total_in else math.nan,
            "input_tokens": self.input,
            "cache_read_tokens": self.read,
            "cache_write_tokens": self.write,
            "cache_write_1h_tokens": self.write_1h,
            "output_tokens": self.output,
            "cost_usd": None if no_price else self.cost,
            "cost_without_cache_usd": None if no_price else self.cost_without,
            "cost_saved_usd": None if no_price else self.cost_without - self.cost,
            "unpriced_calls": self.unpriced,
            "unknown_usage_calls": self.unknown,
            "holds": self.holds,
        }


class _Bounded(OrderedDict[str, Agg]):
    """An LRU of aggregates: touching a key moves it to the end; the oldest is dropped."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.evicted = 0

    def touch(self, key: str) -> Agg:
        agg = self.get(key)
        if agg is None:
            agg = Agg()
            self[key] = agg
            if len(self) > self.limit:
                self.popitem(last=False)
                self.evicted += 1
        else:
            self.move_to_end(key)
        return agg


class Stats:
    """All aggregates of one tracker. Not locked: the tracker holds its lock around ``add``."""

    def __init__(self, max_prefixes: int, max_calls: int) -> None:
        self.total = Agg()
        self.prefixes = _Bounded(max_prefixes)
        self.flows = _Bounded(max_prefixes)
        self.models = _Bounded(max_prefixes)
        # flow -> distinct prefix ids seen in it (bounded like the prefix table)
        self.flow_prefixes: dict[str, OrderedDict[str, None]] = {}
        self.max_prefixes = max_prefixes
        self.history: deque[CallMetrics] = deque(maxlen=max_calls)

    def add(self, m: CallMetrics) -> None:
        self.total.add(m)
        self.history.append(m)
        flow = self.flows.touch(m.flow)
        flow.add(m)
        if m.model:
            self.models.touch(m.model).add(m)
        if m.prefix_id is not None:
            agg = self.prefixes.touch(m.prefix_id)
            agg.add(m)
            agg.flow = m.flow
            agg.model = m.model
            seen = self.flow_prefixes.get(m.flow)
            if seen is None:
                seen = self.flow_prefixes[m.flow] = OrderedDict()
                if len(self.flow_prefixes) > self.flows.limit:
                    self.flow_prefixes.pop(next(iter(self.flow_prefixes)))
            if m.prefix_id in seen:
                seen.move_to_end(m.prefix_id)
            else:
                seen[m.prefix_id] = None
                if len(seen) > self.max_prefixes:
                    seen.popitem(last=False)

    def window(self, since: float) -> Agg:
        agg = Agg()
        # Replayed logs may arrive out of order, so no early exit on timestamps.
        for m in self.history:
            if m.timestamp >= since:
                agg.add(m)
        return agg

    def by_prefix(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for pid, agg in self.prefixes.items():
            d = agg.as_dict()
            d.update(flow=agg.flow, model=agg.model, first_seen=agg.first_seen, last_seen=agg.last_seen)
            out[pid] = d
        return out

    def by_flow(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, agg in self.flows.items():
            d = agg.as_dict()
            d["distinct_prefixes"] = len(self.flow_prefixes.get(name, ()))
            out[name] = d
        return out
