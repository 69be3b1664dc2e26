"""One call and one incident as the store's rows, and back: the only place that knows the
columns.

Money is stored exactly, as integers of :data:`NANO_USD` (a billionth of a dollar: a cache
read of one token at $0.03 per million tokens is 30 of them; a 64-bit column holds $9.2
billion). Sums of those integers are exact, so an hour's roll-up equals the sum of its calls.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import add, itemgetter
from typing import Any

import orjson

from ..stats import Agg, _sums
from ..types import CallMetrics, PrefixDiff, Regression

#: The unit of every money column: this many per US dollar.
NANO_USD = 1_000_000_000
HOUR_S = 3600

# The calls table's columns, in the order :func:`call_row` gives them (``id`` comes first in
# the table, assigned by the database).
CALL_COLUMNS = (
    "ts",
    "provider",
    "model",
    "flow",
    "prefix_id",
    "breakpoint_ids",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "expected_read_tokens",
    "hit_num",
    "hit_den",
    "fix_den",
    "avoidable_tokens",
    "cost_nusd",
    "cost_without_cache_nusd",
    "cost_saved_nusd",
    "avoidable_cost_nusd",
    "elapsed_ms",
    "held_ms",
    "usage_known",
    "writes_reported",
    "unpriced",
    "stream",
    "unexpected_miss",
    "miss_cause",
    "error",
    "diff",
    "diagnostics",
    "warm",  # (schema version 3)
)

# The hourly roll-up's key and its sums (per hour, provider, model, flow and prefix; a missing
# model or prefix is '' so that the key is unique in every database).
HOURLY_KEY = ("hour", "provider", "model", "flow", "prefix_id")
HOURLY_SUMS = (
    "calls",
    "errors",
    "unknown_usage_calls",
    "unpriced_calls",
    "holds",
    "held_ms",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "hit_num",
    "hit_den",
    "fix_num",
    "fix_den",
    "cost_nusd",
    "cost_without_cache_nusd",
    "avoidable_cost_nusd",
)
HOURLY_SPAN = ("first_seen", "last_seen")
# The flows' roll-up (schema version 4): the same sums per hour, provider, model and flow, for
# the reports that do not group by prefix (a few rows an hour where the roll-up above has one
# per prefix).
FLOWS_KEY = ("hour", "provider", "model", "flow")

INCIDENT_COLUMNS = (
    "id",
    "flow",
    "kind",
    "started_at",
    "detected_at",
    "closed_at",
    "calls_affected",
    "hit_ratio_before",
    "hit_ratio_after",
    "extra_cost_per_hour_nusd",
    "diff",
    "details",
)


def to_nano(usd: float | None) -> int | None:
    return None if usd is None else round(usd * NANO_USD)


def to_usd(nano: int | None) -> float | None:
    return None if nano is None else nano / NANO_USD


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def call_row(m: CallMetrics) -> tuple[Any, ...]:
    """A call's row, in :data:`CALL_COLUMNS` order. The hit ratio's numerator and denominator
    and what an avoidable miss adds to the denominator are the aggregates' own figures
    (:func:`cachebench.stats._sums`), so stored and live ratios agree."""
    sums = _sums(m)
    den, hit = sums[6], sums[7]
    avoidable = m.avoidable_tokens if m.usage_known else 0
    diff = m.diff
    return (
        float(m.timestamp),
        m.provider,
        m.model,
        m.flow,
        m.prefix_id,
        " ".join(m.breakpoint_ids),
        m.input_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.cache_write_1h_tokens,
        m.output_tokens,
        m.expected_read_tokens,
        hit,
        den,
        max(0, hit + avoidable - den) if avoidable else 0,
        avoidable,
        to_nano(m.cost_usd),
        to_nano(m.cost_without_cache_usd),
        to_nano(m.cost_saved_usd),
        to_nano(m.avoidable_cost_usd),
        m.elapsed_ms,
        m.held_ms,
        int(m.usage_known),
        int(m.writes_reported),
        int(m.unpriced),
        int(m.stream),
        int(m.unexpected_miss),
        m.miss_cause,
        m.error,
        _json(diff.as_dict()) if diff is not None else None,
        _json(m.diagnostics),
        int(m.warm),
    )


_DIFF_FIELDS = {f.name for f in fields(PrefixDiff)}


def _diff(text: str | None) -> PrefixDiff | None:
    d = _unjson(text)
    if not isinstance(d, dict):
        return None
    return PrefixDiff(**{k: v for k, v in d.items() if k in _DIFF_FIELDS})


def call_metrics(row: dict[str, Any]) -> CallMetrics:
    """The :class:`CallMetrics` a stored row was made from (by column name)."""
    return CallMetrics(
        provider=row["provider"],
        model=row["model"],
        flow=row["flow"],
        prefix_id=row["prefix_id"],
        breakpoint_ids=tuple(row["breakpoint_ids"].split()) if row["breakpoint_ids"] else (),
        input_tokens=row["input_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        cache_write_tokens=row["cache_write_tokens"],
        cache_write_1h_tokens=row["cache_write_1h_tokens"],
        output_tokens=row["output_tokens"],
        elapsed_ms=row["elapsed_ms"],
        timestamp=row["ts"],
        cost_usd=to_usd(row["cost_nusd"]),
        cost_without_cache_usd=to_usd(row["cost_without_cache_nusd"]),
        cost_saved_usd=to_usd(row["cost_saved_nusd"]),
        expected_read_tokens=row["expected_read_tokens"],
        unexpected_miss=bool(row["unexpected_miss"]),
        miss_cause=row["miss_cause"],
        usage_known=bool(row["usage_known"]),
        held_ms=row["held_ms"] or 0.0,
        diagnostics=_unjson(row["diagnostics"]),
        error=row["error"],
        writes_reported=bool(row["writes_reported"]),
        unpriced=bool(row["unpriced"]),
        stream=bool(row["stream"]),
        diff=_diff(row["diff"]),
        avoidable_cost_usd=to_usd(row["avoidable_cost_nusd"]),
        avoidable_tokens=row["avoidable_tokens"],
        warm=bool(row["warm"]),
    )


_C = {name: i for i, name in enumerate(CALL_COLUMNS)}
# Positions read for every call by hourly_rows (named once here, not looked up per call).
_TS, _PROVIDER, _MODEL, _FLOW, _PREFIX = (_C[n] for n in ("ts", "provider", "model", "flow", "prefix_id"))
_TOKENS = tuple(
    _C[n]
    for n in (
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "hit_num",
        "hit_den",
        "avoidable_tokens",
        "fix_den",
    )
)
_MONEY = tuple(_C[n] for n in ("cost_nusd", "cost_without_cache_nusd", "avoidable_cost_nusd"))
_ERROR, _HELD, _KNOWN, _UNPRICED = (_C[n] for n in ("error", "held_ms", "usage_known", "unpriced"))


def hourly_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The calls' sums per hour, provider, model, flow and prefix, sorted by that key (one
    lock order for every writer): rows of ``HOURLY_KEY + HOURLY_SUMS + HOURLY_SPAN``, to be
    added to what the table holds. Tokens count for calls of known usage, money for priced
    calls (the live aggregates' rule, :func:`cachebench.stats._sums`; in SQL,
    :data:`cachebench.store._schema.SUMS_SQL`)."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    cost = _MONEY[0]
    for r in rows:
        ts = r[_TS]
        key = (int(ts // HOUR_S) * HOUR_S, r[_PROVIDER], r[_MODEL] or "", r[_FLOW], r[_PREFIX] or "")
        g = groups.get(key)
        if g is None:
            # calls, errors, unknown, unpriced, holds, held_ms, 9 token sums, 3 money sums, span
            g = groups[key] = [0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ts, ts]
        g[0] += 1
        if r[_ERROR] is not None:
            g[1] += 1
        held = r[_HELD]
        if held:
            g[4] += 1
            g[5] += held
        if not r[_KNOWN]:
            g[2] += 1
        else:
            g[6:15] = map(add, g[6:15], itemgetter(*_TOKENS)(r))
            if r[_UNPRICED] or r[cost] is None:
                g[3] += 1
            else:
                g[15:18] = map(add, g[15:18], (r[i] or 0 for i in _MONEY))
        if ts < g[18]:
            g[18] = ts
        elif ts > g[19]:
            g[19] = ts
    return [(*key, *groups[key]) for key in sorted(groups)]


def summary(sums: dict[str, Any]) -> dict[str, Any]:
    """The aggregate keys (``tracker.aggregate()``'s: hit ratio, token hit ratio, tokens, cost,
    cost without cache, saved, avoidable cost, ...) from summed columns, by the live
    aggregates' own formulas (:meth:`cachebench.stats.Agg.as_dict`)."""
    agg = Agg()
    agg.calls = int(sums.get("calls") or 0)
    agg.input = int(sums.get("input_tokens") or 0)
    agg.read = int(sums.get("cache_read_tokens") or 0)
    agg.write = int(sums.get("cache_write_tokens") or 0)
    agg.write_1h = int(sums.get("cache_write_1h_tokens") or 0)
    agg.output = int(sums.get("output_tokens") or 0)
    agg.hit_num = int(sums.get("hit_num") or 0)
    agg.hit_den = int(sums.get("hit_den") or 0)
    agg.cost = int(sums.get("cost_nusd") or 0) / NANO_USD
    agg.cost_without = int(sums.get("cost_without_cache_nusd") or 0) / NANO_USD
    agg.first_seen = float(sums.get("first_seen") or 0.0)
    agg.last_seen = float(sums.get("last_seen") or 0.0)
    agg.rare = [
        int(sums.get("errors") or 0),
        int(sums.get("unknown_usage_calls") or 0),
        int(sums.get("unpriced_calls") or 0),
        int(sums.get("holds") or 0),
        float(sums.get("held_ms") or 0.0),
        int(sums.get("fix_num") or 0),
        int(sums.get("fix_den") or 0),
        int(sums.get("avoidable_cost_nusd") or 0) / NANO_USD,
    ]
    out = agg.as_dict()
    if out["cost_saved_usd"] is not None:  # from the exact integers, not a float difference
        out["cost_saved_usd"] = (
            int(sums.get("cost_without_cache_nusd") or 0) - int(sums.get("cost_nusd") or 0)
        ) / NANO_USD
    out["first_seen"] = agg.first_seen or None
    out["last_seen"] = agg.last_seen or None
    return out


def incident_row(incident_id: str, r: Regression) -> tuple[Any, ...]:
    """An incident's row, in :data:`INCIDENT_COLUMNS` order (kept whole: never rolled up)."""
    return (
        incident_id,
        r.flow,
        r.kind,
        r.started_at,
        r.detected_at,
        r.closed_at,
        r.calls_affected,
        r.hit_ratio_before,
        r.hit_ratio_after,
        to_nano(r.extra_cost_per_hour_usd),
        _json(r.diff.as_dict()) if r.diff is not None else None,
        _json(r.details),
    )


@dataclass(frozen=True)
class StoredIncident:
    """An incident as the store keeps it: its id (for ``cachebench explain ID``) and itself."""

    id: str
    regression: Regression


@dataclass(frozen=True)
class StoredCall:
    """A call as the store keeps it: its id (for ``cachebench explain ID``) and its metrics."""

    id: int
    metrics: CallMetrics


def incident(row: dict[str, Any]) -> StoredIncident:
    return StoredIncident(
        id=row["id"],
        regression=Regression(
            flow=row["flow"],
            kind=row["kind"],
            started_at=row["started_at"],
            hit_ratio_before=row["hit_ratio_before"],
            hit_ratio_after=row["hit_ratio_after"],
            calls_affected=row["calls_affected"],
            extra_cost_per_hour_usd=to_usd(row["extra_cost_per_hour_nusd"]),
            diff=_diff(row["diff"]),
            closed_at=row["closed_at"],
            details=_unjson(row["details"]) or {},
            detected_at=row["detected_at"],
        ),
    )
