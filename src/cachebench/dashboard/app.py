"""The Streamlit app ``cachebench dashboard`` serves (``streamlit run`` this file; the ``dashboard``
extra). Four pages: Overview, Flows, Incidents and What-if, chosen in the sidebar or with
``?page=`` in the address (``?page=flows&flow=NAME`` opens a flow).

The database is ``--db`` after the script's ``--`` (``streamlit run app.py -- --db PATH``), else
``CACHEBENCH_DB``, else ``./cachebench.db``. Everything shown is read through the store's query
API (:mod:`cachebench.dashboard.data`); nothing is written.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from cachebench.dashboard import data
from cachebench.economics import DEFAULT_STRATEGIES
from cachebench.store import DEFAULT_PATH, ENV
from cachebench.types import _usd, _utc

PAGES = ("Overview", "Flows", "Incidents", "What-if")
TIME_AXIS = alt.Axis(format="%m-%d %H:%M", labelAngle=0)
# How the tables show a report's figures.
FIGURE_COLUMNS: dict[str, Any] = {
    "hit_ratio": st.column_config.NumberColumn("hit ratio", format="percent"),
    "token_hit_ratio": st.column_config.NumberColumn("token hit ratio", format="percent"),
    "cost_usd": st.column_config.NumberColumn("cost", format="$%.6f"),
    "cost_saved_usd": st.column_config.NumberColumn("saved", format="$%.6f"),
    "avoidable_cost_usd": st.column_config.NumberColumn("avoidable", format="$%.6f"),
}
SECTION_COLORS = {"tools": "#6c8ebf", "system": "#82b366", "messages": "#d6b656", "...": "#bbbbbb"}


def database() -> str:
    """``--db`` after the script's ``--``, else ``CACHEBENCH_DB`` (how ``cachebench dashboard``
    passes it: no password on a command line), else ``./cachebench.db``."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg[len("--db=") :]
    return os.environ.get(ENV) or DEFAULT_PATH


def shown(target: str) -> str:
    """The database as the page names it: a URL's password hidden."""
    if "://" not in target:
        return target
    from cachebench.store.postgres import _without_password

    return _without_password(target)


def text(value: object) -> str:
    """``value`` as literal Markdown (a flow's name may hold ``*``, ``_`` or ``$``)."""
    out = str(value)
    for mark in "\\`*_[]$<>|~":
        out = out.replace(mark, "\\" + mark)
    return out


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def usd(x: float | None) -> str:
    """Money on a card: to the cent from $1 (as the report prints it), else to a hundredth of a
    cent (the report's millionths do not fit a card)."""
    if x is None:
        return "unpriced"
    return _usd(x) if abs(x) >= 1 else f"${x:,.4f}"


def utc(ts: float | None) -> str:
    return "-" if ts is None else _utc(ts)


@st.cache_resource(show_spinner=False)
def open_store(target: str) -> Any:
    return data.open_database(target)


def key_row(title: str, total: dict[str, Any]) -> None:
    st.markdown(f"**{title}**" + ("" if total.get("exact", True) else " (edge hours counted whole)"))
    cols = st.columns(6)
    cols[0].metric("Calls", f"{total['calls']:,}")
    cols[1].metric("Hit ratio", pct(total.get("hit_ratio")))
    cols[2].metric("Token hit ratio", pct(total.get("token_hit_ratio")))
    cols[3].metric("Cost", usd(total.get("cost_usd")) if total["calls"] else "$0.00")
    cols[4].metric("Cost saved", usd(total.get("cost_saved_usd")) if total["calls"] else "$0.00")
    cols[5].metric("Avoidable cost", usd(total.get("avoidable_cost_usd")) if total["calls"] else "$0.00")


def empty_state(target: str) -> None:
    st.info(
        "No calls recorded yet. Point a tracker at this database, make a few calls, and reload this page."
    )
    store = shown(target) if "://" in target else f"sqlite:///{target}"
    st.code(
        "import anthropic\n\nfrom cachebench import CacheTracker\n\n"
        f"tracker = CacheTracker(store={store!r})\n"
        "client = tracker.instrument(anthropic.Anthropic())",
        language="python",
    )


def overview(store: Any, chosen: data.Window, now: float, figures: dict[str, dict[str, Any]]) -> None:
    st.header("Overview")
    for title, total in figures.items():
        key_row(title, total)
    latest = figures[chosen.label].get("last_seen")
    if not figures["today"]["calls"] and latest:
        st.caption(f"No call today (UTC): the latest in the range was at {utc(latest)}.")
    total = figures[chosen.label]
    if not total["calls"]:
        st.caption("No call in this range.")
        return
    bucket, rows = data.series(store, chosen, total)
    names = list(data.METRICS.keys())
    metric = (
        st.selectbox("Chart", names, format_func=lambda k: data.METRICS[k], key="chart_metric") or names[0]
    )
    # (times as epoch milliseconds on a UTC scale: the browser's own time zone plays no part)
    points = [{"time": r["t"] * 1000.0, "flow": r["flow"], "value": r[metric]} for r in rows]
    gaps = [{"time": r["t"] * 1000.0, "flow": r["flow"], "value": None} for r in data.breaks(rows, bucket)]
    frame = pd.DataFrame(sorted(points + gaps, key=lambda p: (p["flow"], p["time"])))
    step = {60: "minute", 300: "5 minutes", 3600: "hour", 86400: "day"}.get(bucket, f"{bucket} s")
    whole = f" (whole {step}s: the first may start before the range)" if bucket >= 3600 else ""
    st.caption(f"Per {step} and flow{whole}; red rules: where incidents started.")
    line = (
        alt.Chart(frame)
        .mark_line(point=True, invalid="break-paths-filter-domains")  # (no line across buckets without calls)
        .encode(
            x=alt.X("time:T", title="time (UTC)", scale=alt.Scale(type="utc"), axis=TIME_AXIS),
            y=alt.Y("value:Q", title=data.METRICS[metric]),
            color=alt.Color("flow:N", scale=alt.Scale(scheme="category10")),
            tooltip=[
                "flow",
                alt.Tooltip("time:T", title="time (UTC)", format="%Y-%m-%d %H:%M", formatType="utc"),
                alt.Tooltip("value:Q", title=data.METRICS[metric]),
            ],
        )
    )
    drawn_from = min((r["t"] for r in rows), default=now)
    at_time: dict[float, list[str]] = {}  # (incidents that started together: one rule, named together)
    for i in data.incidents(store, chosen):
        r = i.regression
        if r.started_at >= drawn_from:  # (a marker outside the lines would stretch the axis)
            at_time.setdefault(r.started_at, []).append(f"{r.kind.replace('_', ' ')} in {r.flow}")
    started = [{"time": t * 1000.0, "incident": "; ".join(names)} for t, names in sorted(at_time.items())]
    chart: Any = line
    if started:
        rules = (
            alt.Chart(pd.DataFrame(started))
            .mark_rule(color="red", strokeDash=[4, 3])
            .encode(
                x=alt.X("time:T", scale=alt.Scale(type="utc")),
                tooltip=[
                    "incident",
                    alt.Tooltip(
                        "time:T", title="started (UTC)", format="%Y-%m-%d %H:%M:%S", formatType="utc"
                    ),
                ],
            )
        )
        chart = alt.layer(line, rules)
    st.altair_chart(chart, width="stretch")


def flows_page(store: Any, chosen: data.Window) -> None:
    st.header("Flows")
    rows = data.flows(store, chosen)
    if not rows:
        st.caption("No call in this range.")
        return
    table = pd.DataFrame([r.as_dict() for r in rows])
    table["incidents"] = [
        ", ".join(f"{k.replace('_', ' ')} ({i})" for i, k in found) for found in table["incidents"]
    ]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "hit_ratio": st.column_config.NumberColumn("hit ratio", format="percent"),
            "token_hit_ratio": st.column_config.NumberColumn("token hit ratio", format="percent"),
            "prefixes": st.column_config.NumberColumn("distinct prefixes"),
            "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
            "cost_saved_usd": st.column_config.NumberColumn("saved", format="$%.4f"),
            "avoidable_cost_usd": st.column_config.NumberColumn("avoidable", format="$%.4f"),
            "incidents": st.column_config.TextColumn("open incidents"),
        },
    )
    names = [r.flow for r in rows]
    wanted = st.query_params.get("flow") or None
    flow = st.selectbox("Flow", names, index=names.index(wanted) if wanted in names else 0, key="flow")
    if flow is None:
        return
    if wanted is not None and wanted not in names:
        st.warning(f"No flow named {text(wanted)} has calls in this range.")
    if wanted != flow:
        st.query_params["flow"] = flow
    calls = data.flow_calls(store, flow, chosen)
    st.subheader(f"{text(flow)}: layers")
    if not calls:
        st.caption(
            "No raw call of this flow in the range: raw calls are kept for a while only (7 days by "
            "default), their sums for 400 days."
        )
        return
    st.caption(
        f"Over its {len(calls):,} newest calls in the range: how many values each layer took, and "
        "how many calls read it, wrote it or sent it uncached; unknown: calls whose layer size "
        "no call measured (a layer that was written but never read back through it)."
    )
    layers = data.flow_layers([c.metrics for c in calls])
    if layers:
        st.dataframe(pd.DataFrame([x.as_dict() for x in layers]), hide_index=True, width="stretch")
    else:
        st.caption("Its calls had no breakpoint.")
    st.subheader(f"{text(flow)}: prefixes")
    prefixes = data.flow_prefixes(store, flow, chosen)
    if prefixes:
        cols = [
            "prefix",
            "calls",
            "hit_ratio",
            "cost_usd",
            "cost_saved_usd",
            "avoidable_cost_usd",
            "first_seen",
            "last_seen",
        ]
        frame = pd.DataFrame([{c: p.get(c) for c in cols} for p in prefixes])
        frame["first_seen"] = [utc(t) for t in frame["first_seen"]]
        frame["last_seen"] = [utc(t) for t in frame["last_seen"]]
        st.dataframe(frame, hide_index=True, width="stretch", column_config=FIGURE_COLUMNS)
    st.subheader(f"{text(flow)}: latest calls")
    latest = data.explained(calls[-20:])
    for c in latest:
        c["time"] = utc(c["time"])
    st.dataframe(
        pd.DataFrame(latest),
        hide_index=True,
        width="stretch",
        column_config={**FIGURE_COLUMNS, "explanation": st.column_config.TextColumn(width="large")},
    )


def strips_chart(view: data.IncidentView) -> Any:
    """The changed layer's blocks before and after, as two strips of bytes; the changed block
    outlined and its changed byte range marked."""
    assert view.blocks is not None
    diff = view.diff or {}
    marks = []
    changed_bytes: dict[str, Any] | None = None
    # The changed block: the new prompt's at the diff's position; a block that was removed is
    # the old prompt's.
    in_after = any(b[2] == diff.get("position") for b in view.blocks.get("after", []))
    changed_side = "after" if in_after else "before"
    for side in ("before", "after"):
        x = 0
        for section, index, position, size in view.blocks.get(side, []):
            changed = position == diff.get("position")  # (outlined on both sides where both have it)
            marks.append(
                {
                    "side": side,
                    "start": x,
                    "end": x + max(int(size), 1),
                    "section": section,
                    "block": f"{section} block {index} (position {position}), {size:,} bytes",
                    "changed": changed,
                }
            )
            if changed and side == changed_side:
                lo, hi = int(diff.get("byte_start") or 0), int(diff.get("byte_end") or 0)
                changed_bytes = {
                    "side": side,
                    "start": x + lo,
                    "end": x + max(hi, lo + 1),
                    "what": "changed bytes",
                }
            x += max(int(size), 1)
    frame = pd.DataFrame(marks)
    sections = sorted(set(frame["section"]))
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("start:Q", title="bytes into the changed layer"),
            x2="end:Q",
            y=alt.Y("side:N", sort=["before", "after"], title=None),
            color=alt.Color(
                "section:N",
                scale=alt.Scale(domain=sections, range=[SECTION_COLORS.get(s, "#999999") for s in sections]),
            ),
            stroke=alt.condition("datum.changed", alt.value("black"), alt.value("white")),
            strokeWidth=alt.condition("datum.changed", alt.value(2), alt.value(0.5)),
            tooltip=["block", "side"],
        )
    )
    layers: list[Any] = [bars]
    if changed_bytes is not None:
        layers.append(
            alt.Chart(pd.DataFrame([changed_bytes]))
            .mark_rule(color="red", strokeWidth=6)
            .encode(x="start:Q", x2="end:Q", y=alt.Y("side:N", sort=["before", "after"]), tooltip=["what"])
        )
    return alt.layer(*layers).properties(height=alt.Step(34))


def incidents_page(store: Any, chosen: data.Window) -> None:
    st.header("Incidents")
    views = data.incidents(store, chosen)
    if not views:
        st.success("No incident in this range.")
        return
    for v in views:
        r = v.regression
        state = "open" if r.open else "closed"
        with st.container(border=True):
            st.markdown(f"**{r.kind.replace('_', ' ')} in {text(r.flow)}** ({state}) `{v.id}`")
            st.write(v.explanation)
            cols = st.columns(4)
            cols[0].metric("Cost per hour", usd(r.extra_cost_per_hour_usd))
            cols[1].metric("Calls", f"{r.calls_affected:,}")
            cols[2].metric("Read before", pct(r.hit_ratio_before))
            cols[3].metric("Read after", pct(r.hit_ratio_after))
            st.caption(
                f"Started {utc(r.started_at)}; detected {utc(r.detected_at)}; ended "
                f"{utc(r.closed_at) if r.closed_at else 'not yet'}. Read before and after: the share of "
                "what its calls could have read from the cache that they did read."
            )
            st.markdown(f"**Why:** {v.why}. **Fix:** {v.fix}.")
            d = v.diff
            if d is not None:
                what = d["value_type"] or d["kind"]
                st.caption(
                    f"Changed: {d['section']} block {d['block_index']} (position {d['position']}), "
                    f"bytes {d['byte_start']}-{d['byte_end']}: {what}."
                )
                if v.blocks:
                    st.altair_chart(strips_chart(v), width="stretch")
                if d.get("before") or d.get("after"):
                    left, right = st.columns(2)
                    left.markdown("Before (redacted excerpt)")
                    left.code(d.get("before") or "", language=None)
                    right.markdown("After (redacted excerpt)")
                    right.code(d.get("after") or "", language=None)


def what_if_page(store: Any, chosen: data.Window) -> None:
    st.header("What-if")
    st.caption(
        "A flow's stored calls replayed through the cache model under other strategies "
        "(cachebench.simulate): their hit ratio and cost side by side."
    )
    names = data.flow_names(store, chosen)
    if not names:
        st.caption("No call in this range.")
        return
    flow = st.selectbox("Flow", names, key="whatif_flow")
    if flow is None:
        return
    picked = st.multiselect(
        "Strategies", list(DEFAULT_STRATEGIES), default=["none", "current", "ttl=1h"], key="whatif_strategies"
    )
    extra = st.text_input("Another strategy (for example layers=0:1h,-1:5m)", key="whatif_extra")
    if st.button("Simulate", key="whatif_run"):
        strategies = [*picked, *([extra.strip()] if extra.strip() else [])]
        st.session_state.pop("whatif_result", None)
        if not strategies:
            st.warning("Pick at least one strategy.")
            return
        try:
            result = data.what_if(store, flow, strategies, chosen)
        except ValueError as exc:
            st.error(str(exc))
            return
        st.session_state["whatif_result"] = (flow, result)  # (shown again on the next rerun)
    kept = st.session_state.get("whatif_result")
    if kept is not None:
        shown_flow, result = kept
        st.caption(
            f"Replayed: {text(shown_flow)}, {result.calls:,} calls. Concurrent writes: what calls "
            "paid to write an entry a parallel call was already writing; warmer: a warmer's own calls."
        )
        table = pd.DataFrame(
            [
                {
                    "strategy": r.name,
                    "hit ratio": r.hit_ratio,
                    "token hit ratio": r.token_hit_ratio,
                    "cost": r.cost_usd,
                    "saved": r.cost_saved_usd,
                    "concurrent writes": r.avoidable_cost_usd,
                    "warmer": r.warm_cost_usd,
                }
                for r in result.results
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "hit ratio": st.column_config.NumberColumn(format="percent"),
                "token hit ratio": st.column_config.NumberColumn(format="percent"),
                "cost": st.column_config.NumberColumn(format="$%.4f"),
                "saved": st.column_config.NumberColumn(format="$%.4f"),
                "concurrent writes": st.column_config.NumberColumn(format="$%.4f"),
                "warmer": st.column_config.NumberColumn(format="$%.4f"),
            },
        )
        st.altair_chart(
            alt.Chart(table)
            .mark_bar()
            .encode(x=alt.X("cost:Q", title="cost (USD)"), y=alt.Y("strategy:N", sort=None)),
            width="stretch",
        )


def main() -> None:
    st.set_page_config(page_title="cachebench", layout="wide")
    target = database()
    try:
        store = open_store(target)
    except data.DashboardError as exc:
        st.title("cachebench")
        st.error(f"Cannot open the database: {exc}")
        st.stop()
    try:
        pages(store, target)
    except Exception as exc:  # (the database went away, a server restarted: say so, reconnect next time)
        open_store.clear()
        st.error(f"Cannot read the database {shown(target)}: {exc}. Reload the page to try again.")


def pages(store: Any, target: str) -> None:
    wanted = st.query_params.get("page", "overview").lower()
    names = [p.lower() for p in PAGES]
    page = st.sidebar.radio("Page", PAGES, index=names.index(wanted) if wanted in names else 0, key="page")
    if wanted not in names:
        st.warning(f"No page named {text(wanted)}: the pages are {', '.join(names)}.")
    if page.lower() != wanted:
        st.query_params["page"] = page.lower()
    labels = [label for label, _ in data.RANGES]
    label = st.sidebar.selectbox("Range", labels, key="range")
    now = time.time()
    chosen = data.window(label, now)
    st.sidebar.caption(f"Database: {text(shown(target))}")
    (everything,) = store.report("all")
    if not everything["calls"] and not store.incidents():
        st.title("cachebench")
        empty_state(target)
        return
    st.sidebar.caption(f"Latest call: {utc(everything.get('last_seen'))}")
    if page == "Overview":
        overview(store, chosen, now, data.key_figures(store, now, chosen))
    elif page == "Flows":
        flows_page(store, chosen)
    elif page == "Incidents":
        incidents_page(store, chosen)
    else:
        what_if_page(store, chosen)


main()
