"""The demo's report: each flow before and after the deploy, from the tracker's own records.

Every figure comes from :meth:`CacheTracker.calls` (one ``CallMetrics`` per call) split at the
deploy's timestamp, summed the way the tracker sums (ratios of sums, never means of ratios).
:func:`report` checks the two halves against :meth:`CacheTracker.by_flow` before printing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from rich import box
from rich.console import Console
from rich.table import Table

from cachebench import CacheTracker, CallMetrics, explain
from cachebench.advice import incident_advice

DAY_S = 86_400.0


@dataclass(frozen=True)
class Window:
    """One flow's calls on one side of the deploy."""

    calls: Sequence[CallMetrics]

    def total(self, field: str) -> float:
        return sum(getattr(m, field) or 0 for m in self.calls)

    @property
    def hit_ratio(self) -> float | None:
        den = self.total("cacheable_tokens")
        return self.total("hit_tokens") / den if den else None

    @property
    def cost(self) -> float:
        return self.total("cost_usd")

    @property
    def saved(self) -> float:
        return self.total("cost_saved_usd")

    @property
    def per_call(self) -> float:
        return self.cost / len(self.calls) if self.calls else math.nan

    def distinct(self, position: int | None) -> int:
        """Distinct breakpoint ids at one position (0 = the first in cache order), or distinct
        prefix ids (``None``: through the last breakpoint before the newest user turn)."""
        if position is None:
            return len({m.prefix_id for m in self.calls} - {None})
        return len({m.breakpoint_ids[position] for m in self.calls if len(m.breakpoint_ids) > position})

    def causes(self) -> str:
        """The miss causes with the kind of change behind them: ``prefix_changed (timestamp) x34``."""
        counts = Counter(
            f"{m.miss_cause} ({m.diff.value_type or m.diff.kind})" if m.diff is not None else m.miss_cause
            for m in self.calls
            if m.miss_cause
        )
        return ", ".join(f"{cause} x{n}" for cause, n in counts.most_common()) or "none"


def pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.0%}"


def usd(x: float) -> str:
    """Dollars: to the cent from $1, else to a hundredth of a cent (one call costs fractions)."""
    digits = 2 if abs(x) >= 1 else 4
    return f"-${-x:,.{digits}f}" if x < 0 else f"${x:,.{digits}f}"


def signed(x: float) -> str:
    return usd(x) if x < 0 else f"+{usd(x)}"


def clock_time(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, timezone.utc):%H:%M} UTC"


def split(tracker: CacheTracker, deploy_at: float) -> dict[tuple[str, str, str], tuple[Window, Window]]:
    """(flow, provider, model) -> (before, after), in flow order."""
    groups: dict[tuple[str, str, str], list[CallMetrics]] = {}
    for m in tracker.calls():
        groups.setdefault((m.flow, m.provider, m.model or "?"), []).append(m)
    return {
        key: (
            Window([m for m in g if m.timestamp < deploy_at]),
            Window([m for m in g if m.timestamp >= deploy_at]),
        )
        for key, g in sorted(groups.items())
    }


def consistent(tracker: CacheTracker, halves: Mapping[tuple[str, str, str], tuple[Window, Window]]) -> bool:
    """Whether the two halves add up to the tracker's own per-flow totals."""
    totals = tracker.by_flow()
    for (flow, _, _), (before, after) in halves.items():
        t = totals[flow]
        if t["calls"] != len(before.calls) + len(after.calls):
            return False
        for field in ("cache_read_tokens", "cache_write_tokens", "cost_usd", "cost_saved_usd"):
            if not math.isclose(t[field], before.total(field) + after.total(field), rel_tol=1e-9):
                return False
    return True


def report(
    console: Console,
    tracker: CacheTracker,
    deploy_at: float,
    layers: Mapping[str, Sequence[str]],
    wall_s: float,
    detected: Mapping[tuple[str, str, float], float] | None = None,
) -> int:
    """Print the report; ``layers`` names each flow's breakpoints in cache order, ``wall_s`` is
    how long the run took, ``detected`` when each incident, by (flow, kind, started_at), was
    reported to ``on_regression``. Returns 0, or 1 (with a message) when the figures do not add
    up to the tracker's totals."""
    halves = split(tracker, deploy_at)
    if not halves or not consistent(tracker, halves):
        console.print("[red]The before/after split does not add up to tracker.by_flow().[/]")
        return 1
    calls = tracker.calls()
    first, last = min(m.timestamp for m in calls), max(m.timestamp for m in calls)
    per_day = len(calls) / (last - first) * DAY_S

    console.print(
        f"{len(calls)} calls through the real SDK clients on the local emulator, {clock_time(first)} to "
        f"{clock_time(last)} on the simulated clock, in {wall_s:.1f} s."
    )
    console.print(
        "Flows: " + ", ".join(f"{flow} on {provider} {model}" for flow, provider, model in halves) + "."
    )
    table = Table(
        title=f"Before and after the deploy at {clock_time(deploy_at)}",
        title_justify="left",
        caption="hit ratio = read / (read + written), in input tokens; costs in USD from genai-prices",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("flow", "provider", "", "calls", "hit ratio", "read", "written", "uncached"):
        table.add_column(col, justify="left" if col in ("flow", "provider", "") else "right")
    for col in ("cost", "without cache", "saved"):
        table.add_column(col, justify="right")
    for (flow, provider, _), (before, after) in halves.items():
        for label, w in (("before", before), ("after", after)):
            table.add_row(
                flow,
                provider,
                label,
                str(len(w.calls)),
                pct(w.hit_ratio),
                f"{w.total('cache_read_tokens'):,.0f}",
                f"{w.total('cache_write_tokens'):,.0f}",
                f"{w.total('input_tokens'):,.0f}",
                usd(w.cost),
                usd(w.total("cost_without_cache_usd")),
                usd(w.saved),
                end_section=label == "after",
            )
    console.print(table)
    console.print()

    extra_per_call = 0.0  # over the whole traffic mix
    for (flow, provider, _), (before, after) in halves.items():
        extra = after.per_call - before.per_call
        extra_per_call += extra * (len(before.calls) + len(after.calls)) / len(calls)
        console.print(
            f"{flow} ({provider}): {usd(before.per_call)} -> {usd(after.per_call)} per call "
            f"({after.per_call / before.per_call:.1f}x), {signed(extra * 1000)} per 1,000 calls; "
            f"caching saved {usd(before.saved)} -> {usd(after.saved)}."
        )
    console.print(
        f"[bold]Damage: {signed(extra_per_call * 1000)} per 1,000 calls, {signed(extra_per_call * per_day)} per day[/] "
        f"at the simulated traffic rate ({per_day:,.0f} calls a day)."
    )
    flows = tracker.by_flow()
    for flow, _, _ in halves:
        row = flows[flow]
        console.print(
            f"{flow}: avoidable misses cost {usd(row['avoidable_cost_usd'] or 0.0)}; "
            f"hit ratio {pct(row['hit_ratio'])}, {pct(row['hit_ratio_if_fixed'])} had they been read."
        )
    missed = [m for m in calls if m.timestamp >= deploy_at and m.diff is not None]
    if missed:
        console.print(f"A call after the deploy, explained: {explain(missed[-1])}", soft_wrap=True)

    console.print()
    ids = Table(
        title="Distinct ids per cached layer (breakpoint ids) and distinct prefixes (prefix ids)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("flow", "layer, in cache order", "before", "after", "miss causes after (tracker)"):
        ids.add_column(col, justify="right" if col in ("before", "after") else "left")
    for (flow, _, _), (before, after) in halves.items():
        for i, name in enumerate(layers.get(flow, ())):
            b, a = before.distinct(i), after.distinct(i)
            ids.add_row(flow if i == 0 else "", name, str(b), str(a), after.causes() if i == 0 else "")
        ids.add_row("", "prefix", str(before.distinct(None)), str(after.distinct(None)), "", end_section=True)
    console.print(ids)
    regressions(console, tracker, detected or {})
    return 0


def regressions(
    console: Console, tracker: CacheTracker, detected: Mapping[tuple[str, str, float], float]
) -> None:
    """The incidents the tracker raised (``tracker.regressions()``), each with its diff, when
    it started (its first affected call) and when it was detected."""
    found = tracker.regressions()
    if not found:
        console.print("The tracker raised no regression.")
    for r in found:
        where = str(r.diff) if r.diff is not None else "the prompt did not change"
        why, fix = incident_advice(r)
        cost = (
            f", {signed(r.extra_cost_per_hour_usd)} an hour" if r.extra_cost_per_hour_usd is not None else ""
        )
        state = "still open" if r.open else f"closed at {clock_time(r.closed_at or 0.0)}"
        found_at = (
            r.detected_at if r.detected_at is not None else detected.get((r.flow, r.kind, r.started_at))
        )
        when = f"started {clock_time(r.started_at)}"
        if found_at is not None:
            when += f", detected {clock_time(found_at)}"
        console.print(
            f"[bold]Regression:[/] {r.kind.replace('_', ' ')} in {r.flow}, {when}: "
            f"{where}; hit ratio {pct(r.hit_ratio_before)} -> {pct(r.hit_ratio_after)} over "
            f"{r.calls_affected} calls{cost}; {state}. Why: {why}. Fix: {fix}.",
            soft_wrap=True,
        )
