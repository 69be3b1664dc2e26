"""What the dashboard shows, read from a store through its query API (no Streamlit here).

Every figure is summed by the database: the key figures and the per-flow table from the
hourly roll-up (:meth:`~cachebench.store.SQLStore.report`, the same sums ``cachebench report``
prints), the charts from :meth:`~cachebench.store.SQLStore.series`; raw calls are read only
for one flow's latest calls and layers, and for a what-if replay. Times are seconds since the
epoch, UTC.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..advice import explain, incident_advice
from ..report import totals
from ..store import SQLStore, StoredCall, StoreError, open_store, sqlite_path
from ..types import CallMetrics, Regression

__all__ = [
    "METRICS",
    "RANGES",
    "DashboardError",
    "FlowRow",
    "IncidentView",
    "LayerRow",
    "Window",
    "breaks",
    "bucket_for",
    "explained",
    "flow_calls",
    "flow_layers",
    "flow_names",
    "flow_prefixes",
    "flows",
    "incidents",
    "key_figures",
    "open_database",
    "series",
    "what_if",
    "window",
]

HOUR_S = 3600.0
DAY_S = 86400.0
#: A flow's page reads at most this many of its newest calls (layers and the latest calls).
FLOW_CALLS = 2000

#: The figures a chart can show: (the column of a series row, its label).
METRICS: dict[str, str] = {
    "cost_usd": "cost (USD)",
    "cost_saved_usd": "cost saved (USD)",
    "avoidable_cost_usd": "avoidable cost (USD)",
    "hit_ratio": "hit ratio",
    "token_hit_ratio": "token hit ratio",
    "calls": "calls",
}


class DashboardError(Exception):
    """The database cannot be shown: missing, of a newer schema, not a database. The message
    says what to do."""


def open_database(target: str) -> SQLStore:
    """The store ``target`` names (a SQLite path, ``sqlite:///`` or ``postgresql://`` URL); a
    :class:`DashboardError` with what to do when it is missing or cannot be read."""
    if not isinstance(target, str) or not target.strip():
        raise DashboardError("no database given: pass --db PATH (or set CACHEBENCH_DB)")
    try:
        path = sqlite_path(target)
    except StoreError as exc:
        raise DashboardError(str(exc).removeprefix("cachebench ")) from None
    if path is not None and not os.path.exists(path):
        raise DashboardError(
            f"no such database: {path}. Record calls with CacheTracker(store='sqlite:///{path}') "
            "or `cachebench import`, then start the dashboard with --db pointing at it."
        )
    try:
        store = open_store(target, upgrade=False)  # (only read: an older or newer schema is refused)
        store.schema_version  # noqa: B018 (opens it)
    except StoreError as exc:
        raise DashboardError(str(exc).removeprefix("cachebench ")) from None
    return store


@dataclass(frozen=True)
class Window:
    """The range the dashboard shows: ``[since, until)``, ``None`` for unbounded; ``label``
    names it."""

    label: str
    since: float | None
    until: float | None


#: The ranges a person picks from, as (label, seconds back from now; None: every stored call).
RANGES: tuple[tuple[str, float | None], ...] = (
    ("all stored calls", None),
    ("last hour", HOUR_S),
    ("last 24 hours", DAY_S),
    ("last 7 days", 7 * DAY_S),
    ("last 30 days", 30 * DAY_S),
)


def window(label: str, now: float) -> Window:
    """The :data:`RANGES` entry ``label`` as of ``now``."""
    for name, back in RANGES:
        if name == label:
            return Window(name, None if back is None else now - back, None)
    raise ValueError(f"unknown range {label!r}; one of: {', '.join(n for n, _ in RANGES)}")


def key_figures(store: SQLStore, now: float, chosen: Window) -> dict[str, dict[str, Any]]:
    """The totals of this hour, today (UTC) and the chosen range: ``cachebench report``'s total
    (:func:`cachebench.report.totals`: calls, hit ratio, token hit ratio, cost, saved,
    avoidable...), summed in the store, with ``exact`` (False: a range that starts inside an
    hour whose raw calls retention dropped counts that hour whole)."""
    hour = math.floor(now / HOUR_S) * HOUR_S
    day = math.floor(now / DAY_S) * DAY_S
    out = {}
    for name, since, until in (
        ("this hour", hour, None),
        ("today", day, None),
        (chosen.label, chosen.since, chosen.until),
    ):
        total, exact = totals(store, since=since, until=until)
        out[name] = {**total, "exact": exact}
    return out


def bucket_for(first: float | None, last: float | None) -> int:
    """A chart's bucket for data spanning ``first..last``: minutes for up to 2 hours, 5 minutes
    up to 12 hours, hours up to 14 days, days beyond (about 100-300 points at most)."""
    if first is None or last is None:
        return int(HOUR_S)
    span = max(last - first, 0.0)
    if span <= 2 * HOUR_S:
        return 60
    if span <= 12 * HOUR_S:
        return 300
    if span <= 14 * DAY_S:
        return int(HOUR_S)
    return int(DAY_S)


def series(store: SQLStore, chosen: Window, total: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The chart's rows per bucket and flow over the range (``total``: the range's key figures,
    whose first and last call set the bucket), and the bucket in seconds. Buckets of an hour
    and more are whole (the first may start before the range); buckets under an hour come from
    the raw calls, which retention keeps for a while only: where they no longer hold every call
    of the range, it is drawn by the hour."""
    first, last = total.get("first_seen"), total.get("last_seen")
    bucket = bucket_for(first, last)
    if bucket < HOUR_S:
        rows = store.series(since=chosen.since, until=chosen.until, bucket_s=bucket)
        if sum(r["calls"] for r in rows) == total["calls"]:
            return bucket, rows
        bucket = int(HOUR_S)
    return bucket, store.series(since=chosen.since, until=chosen.until, bucket_s=bucket)


def breaks(rows: Sequence[dict[str, Any]], bucket: int) -> list[dict[str, Any]]:
    """Where a flow's line must break: the bucket after each of its buckets that the next one
    does not follow (a flow with no call in between), as ``{"t", "flow"}`` rows to chart with
    no value."""
    times: dict[str, list[float]] = {}
    for r in rows:
        times.setdefault(r["flow"], []).append(r["t"])
    out = []
    for flow, ts in times.items():
        ts.sort()
        out += [{"t": a + bucket, "flow": flow} for a, b in itertools.pairwise(ts) if b - a > bucket]
    return out


@dataclass(frozen=True)
class FlowRow:
    """A flow's row in the flows table."""

    flow: str
    calls: int
    hit_ratio: float | None
    token_hit_ratio: float | None
    prefixes: int
    cost_usd: float | None
    cost_saved_usd: float | None
    avoidable_cost_usd: float | None
    incidents: tuple[tuple[str, str], ...]  # its open incidents: (id, kind), oldest first

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def flow_names(store: SQLStore, chosen: Window) -> list[str]:
    """The flows with calls in the range, most expensive first (their names only: no prefix
    count, no incident)."""
    return [r["flow"] for r in store.report("flow", since=chosen.since, until=chosen.until)]


def flows(store: SQLStore, chosen: Window) -> list[FlowRow]:
    """Every flow with calls in the range, most expensive first (``cachebench report``'s
    rows), with how many distinct prefixes it used and its open incident."""
    rows = store.report("flow", since=chosen.since, until=chosen.until)
    prefixes = store.prefix_counts(since=chosen.since, until=chosen.until)
    open_now: dict[str, list[tuple[str, str]]] = {}
    for stored in store.incidents(open_only=True):  # (oldest first)
        open_now.setdefault(stored.regression.flow, []).append((stored.id, stored.regression.kind))
    out = []
    for r in rows:
        out.append(
            FlowRow(
                r["flow"],
                r["calls"],
                r["hit_ratio"],
                r["token_hit_ratio"],
                prefixes.get(r["flow"], 0),
                r["cost_usd"],
                r["cost_saved_usd"],
                r["avoidable_cost_usd"],
                tuple(open_now.get(r["flow"], ())),
            )
        )
    return out


def flow_calls(store: SQLStore, flow: str, chosen: Window, limit: int = FLOW_CALLS) -> list[StoredCall]:
    """The flow's ``limit`` newest raw calls in the range, oldest first."""
    return store.calls(since=chosen.since, until=chosen.until, flow=flow, limit=limit, newest=True)


@dataclass(frozen=True)
class LayerRow:
    """One layer of a flow (its breakpoints at one depth) over its newest calls: how many
    values it took, and how many calls read it, wrote it, or sent it uncached. ``unknown``:
    calls whose layer size no call measured (see
    :func:`~cachebench.economics.trace_from_calls`)."""

    layer: int
    calls: int
    values: int
    read: int
    written: int
    uncached: int
    unknown: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def flow_layers(calls: Sequence[CallMetrics]) -> list[LayerRow]:
    """Per layer: its values (distinct breakpoint ids at that depth) and, where the layer's
    size is known, whether each call read it, wrote it or sent it uncached: the size of the
    prefix through a breakpoint is measured from what calls read and wrote
    (:func:`~cachebench.economics.trace_from_calls`), and a call read the layer when it read
    at least that many tokens."""
    from ..economics import trace_from_calls

    end: dict[str, int] = {}
    for call in trace_from_calls(calls):
        total = 0
        for layer in call.layers:
            total += layer.tokens
            end[layer.key] = total
    depth = max((len(m.breakpoint_ids) for m in calls), default=0)
    rows = [LayerRow(k, 0, 0, 0, 0, 0, 0) for k in range(depth)]
    values: list[set[str]] = [set() for _ in range(depth)]
    counts = [dict.fromkeys(("calls", "read", "written", "uncached", "unknown"), 0) for _ in range(depth)]
    for m in calls:
        if m.error is not None or not m.usage_known:
            continue
        for k, key in enumerate(m.breakpoint_ids):
            c = counts[k]
            c["calls"] += 1
            values[k].add(key)
            size = end.get(key)
            if size is None:
                c["unknown"] += 1
            elif m.cache_read_tokens >= size:
                c["read"] += 1
            elif m.cache_read_tokens + m.cache_write_tokens >= size:
                c["written"] += 1
            else:
                c["uncached"] += 1
    return [
        LayerRow(row.layer, values=len(values[row.layer]), **counts[row.layer])
        for row in rows
        if counts[row.layer]["calls"]
    ]


def flow_prefixes(store: SQLStore, flow: str, chosen: Window) -> list[dict[str, Any]]:
    """The flow's prefixes in the range with their figures (its own calls only), most
    expensive first."""
    return store.report("prefix", since=chosen.since, until=chosen.until, flow=flow)


def explained(calls: Sequence[StoredCall]) -> list[dict[str, Any]]:
    """Calls newest first, each with its explanation (:func:`cachebench.explain`)."""
    out = []
    for c in reversed(calls):
        m = c.metrics
        out.append(
            {
                "id": c.id,
                "time": m.timestamp,
                "cause": m.miss_cause,
                "read": m.cache_read_tokens,
                "written": m.cache_write_tokens,
                "uncached": m.input_tokens,
                "cost_usd": m.cost_usd,
                "avoidable_cost_usd": m.avoidable_cost_usd,
                "explanation": explain(m),
            }
        )
    return out


@dataclass(frozen=True)
class IncidentView:
    """An incident as its page shows it: the stored incident, explained."""

    id: str
    regression: Regression
    explanation: str  # cachebench.explain's sentences
    why: str
    fix: str

    @property
    def diff(self) -> dict[str, Any] | None:
        return self.regression.diff.as_dict() if self.regression.diff is not None else None

    @property
    def blocks(self) -> dict[str, list[list[Any]]] | None:
        """The changed layer's blocks ``before`` and ``after`` (see
        :class:`~cachebench.types.Regression`), where the incident keeps them."""
        found = self.regression.details.get("blocks")
        return found if isinstance(found, dict) else None


def incidents(store: SQLStore, chosen: Window | None = None) -> list[IncidentView]:
    """The incidents (open ones first, then newest first) that were open at some time in the
    range, explained."""
    out = []
    for s in store.incidents():
        r = s.regression
        if chosen is not None:
            if chosen.until is not None and r.started_at >= chosen.until:
                continue
            if chosen.since is not None and r.closed_at is not None and r.closed_at < chosen.since:
                continue
        why, fix = incident_advice(r)
        out.append(IncidentView(s.id, r, explain(r), why, fix))
    out.sort(key=lambda v: (not v.regression.open, -v.regression.started_at))
    return out


def what_if(store: SQLStore, flow: str, strategies: Sequence[str], chosen: Window) -> Any:
    """The flow's stored calls in the range replayed under ``strategies``
    (:func:`cachebench.simulate`): a :class:`~cachebench.economics.Simulation`. A
    ``ValueError`` says why when it cannot (a strategy that does not parse, no call whose
    layers were measured)."""
    from ..economics import simulate, trace_from_calls

    calls = (c.metrics for c in store.iter_calls(since=chosen.since, until=chosen.until, flow=flow))
    trace = trace_from_calls(calls)
    if not len(trace):
        raise ValueError(
            f"no stored call of {flow!r} in the range can be replayed: raw calls are kept for a while "
            "only (7 days by default), and calls without breakpoints, failed calls and calls of "
            "providers that report no cache writes are left out"
        )
    return simulate(trace, list(strategies), flow=flow)
