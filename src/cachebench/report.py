"""The reports the demo, the CLI and the dashboard share, read from a store.

:func:`report` sums calls per flow, prefix, model, provider or day over a time range;
:func:`compare` sums them on either side of a moment (a deploy); :func:`print_report`,
:func:`print_comparison`, :func:`print_incidents` and :func:`print_calls` show them with rich
(the ``cli`` extra), and :func:`as_json` gives any of them as plain JSON. Times are seconds
since the epoch; :func:`parse_time` reads what a person types (``24h``, ``30d``,
``2026-12-01``, ``2026-12-01T09:30``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from .store import GROUPS, SQLStore, StoredCall, StoredIncident
from .types import _pct, _usd, _utc

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "Comparison",
    "Report",
    "as_json",
    "compare",
    "parse_span",
    "parse_time",
    "print_calls",
    "print_comparison",
    "print_incidents",
    "print_report",
    "report",
    "top",
    "top_comparison",
    "totals",
]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_span(text: str) -> float:
    """Seconds in a span a person types (``90s``, ``15m``, ``48h``, ``7d``, ``2w``); a clear
    :class:`ValueError` otherwise."""
    m = _SPAN.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a span: {text!r} (write a positive number and a unit: 90s, 15m, 48h, 7d, 2w)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_time(text: str, now: float | None = None) -> float:
    """A moment from what a person types: a span back from ``now`` (``90s``, ``15m``, ``24h``,
    ``30d``, ``2w``), an ISO date or time (UTC unless it names its zone), or seconds since
    the epoch. A clear :class:`ValueError` otherwise."""
    now = time.time() if now is None else now
    m = _SPAN.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (write a span back from now such as 24h, 30d, 15m, or a UTC date "
            "or time such as 2026-12-01 or 2026-12-01T09:30)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class Report:
    """Calls summed per ``by`` over ``[since, until)`` (``None``: unbounded), most expensive
    first, and their ``total``. Each row has the aggregate keys of
    :meth:`CacheTracker.aggregate` plus ``first_seen`` and ``last_seen``, keyed by ``by``."""

    by: str
    since: float | None
    until: float | None
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    # False: an edge falls in an hour retention kept only as sums, counted whole on the side
    # of its start (the report then starts or ends on the hour).
    exact: bool = True
    more: int = 0  # rows left out by top()

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "exact": self.exact,
            "more": self.more,
            "rows": self.rows,
            "total": self.total,
        }


@dataclass(frozen=True)
class Comparison:
    """The same report before and after ``at`` (a deploy)."""

    at: float
    before: Report
    after: Report
    keys: list[Any] = field(default_factory=list)  # every key of either side, in a stable order
    example: StoredCall | None = None  # the newest call after ``at`` whose prompt changed

    @property
    def extra_per_call_usd(self) -> float | None:
        """What a call costs more after than before, over the whole traffic (None if either
        side has no priced call)."""
        b, a = self.before.total, self.after.total
        if not b["calls"] or not a["calls"] or b["cost_usd"] is None or a["cost_usd"] is None:
            return None
        return float(a["cost_usd"] / a["calls"] - b["cost_usd"] / b["calls"])

    @property
    def calls_per_day_after(self) -> float | None:
        """The traffic rate after ``at``: its calls over their own span (None under a minute)."""
        a = self.after.total
        first, last = a.get("first_seen"), a.get("last_seen")
        if not first or not last or last - first < 60.0:
            return None
        return float(a["calls"] / (last - first) * 86400.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "before": self.before.as_dict(),
            "after": self.after.as_dict(),
            "extra_per_call_usd": self.extra_per_call_usd,
            "calls_per_day_after": self.calls_per_day_after,
            "example": {"id": self.example.id, **self.example.metrics.as_dict()} if self.example else None,
        }


def report(
    store: SQLStore, by: str = "flow", *, since: float | None = None, until: float | None = None
) -> Report:
    """Calls summed per ``by`` (one of ``flow``, ``prefix``, ``model``, ``provider``, ``day``)."""
    if by not in GROUPS or by == "all":
        raise ValueError(f"by must be one of {', '.join(g for g in GROUPS if g != 'all')}, got {by!r}")
    rows = store.report(by, since=since, until=until)
    total, exact = totals(store, since=since, until=until)
    return Report(by, since, until, rows, total, exact)


def totals(
    store: SQLStore, *, since: float | None = None, until: float | None = None
) -> tuple[dict[str, Any], bool]:
    """Every call's sums over ``[since, until)`` (a report's ``total``), and whether the range
    starts and ends at those seconds (:attr:`Report.exact`)."""
    (total,) = store.report("all", since=since, until=until)
    total.pop("all", None)
    return total, store.exact(since, until)


def top(rep: Report, n: int) -> Report:
    """The report's ``n`` most expensive rows (they come most expensive first); its total is
    still over every row, and ``more`` says how many were left out."""
    return replace(rep, rows=rep.rows[:n], more=max(0, len(rep.rows) - n))


def top_comparison(comp: Comparison, n: int) -> Comparison:
    """The comparison of the ``n`` keys that cost the most before and after together (in the
    same order as before); each side's total still counts every row, and its ``more`` says how
    many of its rows were left out."""
    by = comp.before.by
    cost: dict[Any, float] = {}
    for side in (comp.before, comp.after):
        for r in side.rows:
            cost[r[by]] = cost.get(r[by], 0.0) + float(r["cost_usd"] or 0.0)
    kept = set(sorted(cost, key=lambda k: -cost[k])[:n])

    def keep(side: Report) -> Report:
        rows = [r for r in side.rows if r[by] in kept]
        return replace(side, rows=rows, more=len(side.rows) - len(rows))

    return replace(
        comp, before=keep(comp.before), after=keep(comp.after), keys=[k for k in comp.keys if k in kept]
    )


def compare(
    store: SQLStore, at: float, by: str = "flow", *, since: float | None = None, until: float | None = None
) -> Comparison:
    """The report on either side of ``at``: ``[since, at)`` and ``[at, until)``."""
    before = report(store, by, since=since, until=at)
    after = report(store, by, since=at, until=until)
    keys = sorted(
        {r[by] for r in before.rows} | {r[by] for r in after.rows}, key=lambda k: (k is None, str(k))
    )
    recent = store.calls(since=at, until=until, limit=1000, newest=True)
    changed = [c for c in recent if c.metrics.diff is not None]
    return Comparison(at, before, after, keys, changed[-1] if changed else None)


def as_json(value: Report | Comparison | Sequence[StoredIncident] | Sequence[StoredCall]) -> str:
    """Any report, incidents or calls as JSON (plain values; money in USD)."""
    if isinstance(value, (Report, Comparison)):
        data: Any = value.as_dict()
    else:
        data = [
            {"id": v.id, **v.regression.as_dict()}
            if isinstance(v, StoredIncident)
            else {"id": v.id, **v.metrics.as_dict()}
            for v in value
        ]
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


# -- showing them ------------------------------------------------------------------------------


def _money(x: float | None, row: dict[str, Any] | None = None) -> str:
    """Dollars; without any: "unpriced" where calls lacked a price, "-" where none had a usage
    to price (errors, usage unknown)."""
    if x is not None:
        return _usd(x)
    return "-" if row is not None and not row.get("unpriced_calls") else "unpriced"


def _tokens(x: int | None) -> str:
    return f"{x or 0:,}"


# The report's columns: header, and how a row shows it.
COLUMNS: tuple[tuple[str, Any], ...] = (
    ("calls", lambda r: f"{r['calls']:,}"),
    ("hit", lambda r: _pct(r["hit_ratio"])),
    ("tok hit", lambda r: _pct(r["token_hit_ratio"])),
    ("read", lambda r: _tokens(r["cache_read_tokens"])),
    ("written", lambda r: _tokens(r["cache_write_tokens"])),
    ("uncached", lambda r: _tokens(r["input_tokens"])),
    ("cost", lambda r: _money(r["cost_usd"], r)),
    ("w/o cache", lambda r: _money(r["cost_without_cache_usd"], r)),
    ("saved", lambda r: _money(r["cost_saved_usd"], r)),
    ("avoidable", lambda r: _money(r["avoidable_cost_usd"], r)),
)


def _table(title: str, first: str, caption: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column(first, justify="left", no_wrap=True)
    return table


def _label(key: Any) -> str:
    from rich.markup import escape

    if key is None:
        return "(none)"
    text = str(key)
    if not text.isprintable():  # a newline in a flow's name must not split its row
        text = text.encode("unicode_escape").decode("ascii")
    return escape(text)


def _span(since: float | None, until: float | None) -> str:
    if since is None and until is None:
        return "all stored calls"
    if until is None:
        return f"since {_utc(since or 0.0)}"
    if since is None:
        return f"before {_utc(until)}"
    return f"{_utc(since)} to {_utc(until)}"


_ROUNDED = (
    "Note: an edge of this range falls in an hour whose calls retention keeps only as hourly sums: "
    "that hour counts whole, on the side of its start."
)

_CAPTION = (
    "hit: the hit ratio, read / (read + written), in input tokens; tok hit: read / all input; w/o cache: the "
    "cost had nothing been cached; avoidable: what misses that could have read cost beyond a read"
)


def print_report(console: Console, rep: Report) -> None:
    """The report as a table, with its total."""
    table = _table(f"By {rep.by}, {_span(rep.since, rep.until)}", rep.by, _CAPTION)
    users = rep.by == "prefix"  # a prefix's flows and models, beside its id
    if users:
        table.add_column("flow, model", justify="left", overflow="fold", max_width=40)
    for header, _ in COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rep.rows:
        key = row[rep.by]
        who = [_label(", ".join([*row.get("flows", []), *row.get("models", [])]))] if users else []
        table.add_row(_label(key), *who, *(show(row) for _, show in COLUMNS))
    if rep.more:
        table.add_row(f"... {rep.more:,} more", *([""] if users else []), *[""] * len(COLUMNS))
    if rep.rows:
        table.add_section()
    table.add_row("total", *([""] if users else []), *(show(rep.total) for _, show in COLUMNS))
    console.print(table)
    if not rep.exact:
        console.print(_ROUNDED, soft_wrap=True)


def print_comparison(console: Console, comp: Comparison) -> None:
    """Each key's figures before and after the moment, the change per call and per day, and
    the newest call after it whose prompt changed, explained."""
    from rich.markup import escape

    by = comp.before.by
    table = _table(f"By {by}, before and after {_utc(comp.at)}", by, _CAPTION)
    table.add_column("", justify="left", no_wrap=True, min_width=6)
    for header, _ in COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    before = {r[by]: r for r in comp.before.rows}
    after = {r[by]: r for r in comp.after.rows}
    for key in comp.keys:
        for label, side in (("before", before), ("after", after)):
            row = side.get(key)
            cells = [show(row) for _, show in COLUMNS] if row is not None else ["-"] * len(COLUMNS)
            table.add_row(_label(key), label, *cells, end_section=label == "after")
    console.print(table)
    if not (comp.before.exact and comp.after.exact):
        console.print(_ROUNDED, soft_wrap=True)
    for key in comp.keys:
        b, a = before.get(key), after.get(key)
        if b is None or a is None or not b["calls"] or not a["calls"]:
            continue
        if b["cost_usd"] is None or a["cost_usd"] is None:
            continue
        per_b, per_a = b["cost_usd"] / b["calls"], a["cost_usd"] / a["calls"]
        change = f" ({per_a / per_b:.1f}x)" if per_b > 0 else ""
        console.print(
            escape(
                f"{key}: {_usd(per_b)} -> {_usd(per_a)} per call{change}, "
                f"{_usd((per_a - per_b) * 1000, sign=True)} per 1,000 calls; hit ratio "
                f"{_pct(b['hit_ratio'])} -> {_pct(a['hit_ratio'])}; caching saved "
                f"{_money(b['cost_saved_usd'])} -> {_money(a['cost_saved_usd'])}; avoidable misses cost "
                f"{_money(a['avoidable_cost_usd'])} after."
            ),
            soft_wrap=True,
        )
    extra = comp.extra_per_call_usd
    if extra is not None:
        rate = comp.calls_per_day_after
        per_day = f", {_usd(extra * rate, sign=True)} per day at {rate:,.0f} calls a day" if rate else ""
        console.print(f"[bold]Change: {_usd(extra * 1000, sign=True)} per 1,000 calls{per_day}.[/]")
    if comp.example is not None:
        from .advice import explain

        console.print(
            escape(
                f"A call after {_utc(comp.at)} (id {comp.example.id}), explained: {explain(comp.example.metrics)}"
            ),
            soft_wrap=True,
        )


def print_incidents(console: Console, incidents: Sequence[StoredIncident]) -> None:
    """One paragraph per incident: its id, what, where, when, the damage, why and the fix."""
    from rich.markup import escape

    from .advice import incident_advice

    if not incidents:
        console.print("No incident.")
    for stored in incidents:
        r = stored.regression
        why, fix = incident_advice(r)
        where = str(r.diff) if r.diff is not None else "the prompt did not change"
        cost = (
            f", {_usd(r.extra_cost_per_hour_usd, sign=True)} an hour"
            if r.extra_cost_per_hour_usd is not None
            else ""
        )
        state = "open" if r.open else f"closed {_utc(r.closed_at or 0.0)}"
        detected = f", detected {_utc(r.detected_at)}" if r.detected_at is not None else ""
        console.print(
            f"[bold]{stored.id}[/] "
            + escape(
                f"{r.kind.replace('_', ' ')} in {r.flow}, started {_utc(r.started_at)}"
                f"{detected}: {where}; read {_pct(r.hit_ratio_before)} -> {_pct(r.hit_ratio_after)} of what could be read over "
                f"{r.calls_affected} calls{cost}; {state}. Why: {why}. Fix: {fix}."
            ),
            soft_wrap=True,
            highlight=False,
        )


def print_calls(console: Console, calls: Sequence[StoredCall]) -> None:
    """One line per call, with its id (for ``cachebench explain ID``)."""
    from rich.markup import escape

    for stored in calls:
        console.print(f"[bold]{stored.id}[/] {escape(str(stored.metrics))}", soft_wrap=True, highlight=False)
