"""The dashboard (``cachebench dashboard``): the store's series and per-flow queries it reads,
what each page shows (Streamlit's AppTest) on the demo's store, an empty store and a store with
an open incident, the clear messages for a missing or newer database, and the command itself.
The browser test is in ``test_dashboard_browser.py``."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from streamlit.testing.v1 import AppTest

import cachebench
from cachebench.dashboard import APP, command
from cachebench.dashboard import data as board
from cachebench.store import SCHEMA_VERSION, SQLiteStore
from cachebench.testing import CacheEmulator

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "support_agent.py"
MODEL = "claude-sonnet-4-5"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachebench", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's store, as ``make demo`` writes it."""
    folder = tmp_path_factory.mktemp("demo")
    path = str(folder / "demo.db")
    done = subprocess.run(
        [sys.executable, str(DEMO), "--db", path], cwd=folder, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path


@pytest.fixture
def empty_db(tmp_path: Path) -> str:
    path = str(tmp_path / "empty.db")
    store = SQLiteStore(path)
    assert store.schema_version == SCHEMA_VERSION  # (opening it writes the schema)
    store.close()
    return path


def churn_request(now: float, question: str) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    return {
        "model": MODEL,
        "max_tokens": 64,
        "tools": [
            {
                "name": "lookup_order",
                "description": "Find an order. " * 40,
                "input_schema": {"type": "object"},
            },
            {"name": "refund", "description": "Refund an order. " * 40, "input_schema": {"type": "object"}},
        ],
        "system": [
            {
                "type": "text",
                "text": f"Current time: {stamp}. " + "Answer briefly and cite the policy. " * 150,
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [{"role": "user", "content": question}],
    }


@pytest.fixture
def incident_db(tmp_path: Path, cache_emulator: CacheEmulator) -> str:
    """A store whose flow has an open prefix-churn incident: a deploy put the time into the
    system prompt; text captured (redacted excerpts). Made with the real SDK and the emulator."""
    path = str(tmp_path / "incident.db")
    tracker = cachebench.CacheTracker(
        store=f"sqlite:///{path}", capture_text=True, clock=cache_emulator.clock
    )
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-dash", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="support")
    for i in range(14):
        create(**churn_request(cache_emulator.clock(), f"Question {i}: where is my order?"))
        cache_emulator.advance(20)
    assert tracker.regressions() and tracker.regressions()[0].open
    tracker.close()
    client.close()
    return path


def app(db: str, page: str, *, error: bool = False, **params: str) -> AppTest:
    """The page run once; without ``error`` it must show no error (the app shows a failed
    query as an error on the page, not as an exception)."""
    os.environ["CACHEBENCH_DB"] = db
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["page"] = page
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if not error:
        assert not at.error, [e.value for e in at.error]
    return at


@pytest.fixture(autouse=True)
def _keep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHEBENCH_DB", "")  # (app() sets it; the first value comes back after)


def metrics(at: AppTest) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in at.metric]


# -- the store's queries ---------------------------------------------------------------------------


def test_series_sums_every_bucket_and_flow_as_the_raw_calls_do(demo_db: str) -> None:
    """Per minute (raw calls) and per hour (the roll-up), each bucket's calls, tokens and cost
    per flow are those of the stored calls made in it, summed here from each call."""
    store = board.open_database(demo_db)
    calls = [c.metrics for c in store.iter_calls()]
    for bucket in (60, 300, 3600, 86400):
        expected: dict[tuple[float, str], list[Any]] = defaultdict(lambda: [0, 0, 0.0])
        for m in calls:
            e = expected[(m.timestamp // bucket * bucket, m.flow)]
            e[0] += 1
            e[1] += m.cache_read_tokens
            e[2] += m.cost_usd or 0.0
        rows = store.series(bucket_s=bucket)
        got = {(r["t"], r["flow"]): [r["calls"], r["cache_read_tokens"], r["cost_usd"]] for r in rows}
        assert got.keys() == expected.keys()
        for key, (n, read, cost) in expected.items():
            assert got[key][:2] == [n, read]
            assert got[key][2] == pytest.approx(cost, abs=1e-9)
        assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    one = store.series(bucket_s=60, flow="support-chat")
    assert {r["flow"] for r in one} == {"support-chat"}
    with pytest.raises(ValueError, match="multiple of 3600 or divide it"):
        store.series(bucket_s=7000)
    with pytest.raises(ValueError, match="positive whole number"):
        store.series(bucket_s=0)
    store.close()


def test_a_flows_prefixes_and_report_are_its_own_calls(demo_db: str) -> None:
    store = board.open_database(demo_db)
    calls = [c.metrics for c in store.iter_calls()]
    counts = store.prefix_counts()
    for flow in {m.flow for m in calls}:
        mine = [m for m in calls if m.flow == flow]
        assert counts[flow] == len({m.prefix_id for m in mine if m.prefix_id})
        rows = store.report("prefix", flow=flow)
        assert sum(r["calls"] for r in rows) == len(mine)
        assert {r["prefix"] for r in rows} == {m.prefix_id for m in mine}
    store.close()


# -- what the pages read ---------------------------------------------------------------------------


def test_the_key_figures_are_cachebench_reports_totals(demo_db: str) -> None:
    report = orjson.loads(cli("report", "--db", demo_db, "--json").stdout)["total"]
    store = board.open_database(demo_db)
    chosen = board.window("all stored calls", time.time())
    figures = board.key_figures(store, time.time(), chosen)
    total = figures["all stored calls"]
    for key in ("calls", "hit_ratio", "token_hit_ratio", "cost_usd", "cost_saved_usd", "avoidable_cost_usd"):
        assert total[key] == pytest.approx(report[key]), key
    last = report["last_seen"]
    then = board.key_figures(store, last + 1, board.window("last hour", last + 1))
    calls_in_hour = len(list(store.calls(since=last // 3600 * 3600)))
    assert then["this hour"]["calls"] == calls_in_hour
    assert then["last hour"]["calls"] == len(list(store.calls(since=last + 1 - 3600)))
    store.close()


def test_the_flows_table_has_each_flows_figures_and_open_incident(demo_db: str) -> None:
    report = orjson.loads(cli("report", "--db", demo_db, "--json").stdout)["rows"]
    incidents = orjson.loads(cli("regressions", "--db", demo_db, "--json").stdout)
    store = board.open_database(demo_db)
    rows = board.flows(store, board.window("all stored calls", time.time()))
    assert [r.flow for r in rows] == [r["flow"] for r in report]
    for row, expected in zip(rows, report, strict=True):
        assert row.calls == expected["calls"]
        assert row.avoidable_cost_usd == pytest.approx(expected["avoidable_cost_usd"])
        open_ones = [(i["id"], i["kind"]) for i in incidents if i["flow"] == row.flow and i["open"]]
        assert list(row.incidents) == open_ones
    store.close()


def test_a_flows_layers_count_each_call_once_per_layer(demo_db: str) -> None:
    store = board.open_database(demo_db)
    chosen = board.window("all stored calls", time.time())
    calls = [c.metrics for c in board.flow_calls(store, "support-chat", chosen)]
    layers = board.flow_layers(calls)
    assert [x.layer for x in layers] == list(range(len(layers)))
    for x in layers:
        having = [m for m in calls if len(m.breakpoint_ids) > x.layer]
        assert x.calls == len(having)
        assert x.read + x.written + x.uncached + x.unknown == x.calls
        assert x.values == len({m.breakpoint_ids[x.layer] for m in having})
    # The tools+system layer: written by the first burst and every call after the deploy.
    assert layers[0].written > 0 and layers[0].read > 0
    store.close()


def test_an_incident_keeps_the_changed_layers_blocks_on_either_side(incident_db: str) -> None:
    """The detector keeps, with a churn incident, the blocks of the changed layer before and
    after (section, index, position, bytes; no text): the changed block is the diff's."""
    store = board.open_database(incident_db)
    (view,) = board.incidents(store)
    assert view.regression.open and view.regression.kind == "prefix_churn"
    assert view.diff is not None and view.diff["kind"] == "volatile"
    assert view.blocks is not None
    before, after = view.blocks["before"], view.blocks["after"]
    assert [b[:3] for b in before] == [b[:3] for b in after]  # the same blocks, one changed
    sections = [b[0] for b in after]
    assert sections == ["tools", "tools", "system"]
    changed = [b for b in after if b[2] == view.diff["position"]]
    assert changed and changed[0][0] == "system"
    assert 0 <= view.diff["byte_start"] < view.diff["byte_end"] <= changed[0][3]
    assert view.diff["before"] and view.diff["after"]  # captured: redacted excerpts
    store.close()


def test_a_missing_or_newer_database_is_a_clear_error(tmp_path: Path, empty_db: str) -> None:
    with pytest.raises(board.DashboardError, match="no such database"):
        board.open_database(str(tmp_path / "nope.db"))
    con = sqlite3.connect(empty_db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(board.DashboardError, match="newer than this cachebench"):
        board.open_database(empty_db)
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("hello")
    with pytest.raises(board.DashboardError):
        board.open_database(str(not_a_db))


# -- the pages (AppTest) ---------------------------------------------------------------------------


def test_the_overview_of_the_demos_store(demo_db: str) -> None:
    report = orjson.loads(cli("report", "--db", demo_db, "--json").stdout)["total"]
    at = app(demo_db, "overview")
    assert [h.value for h in at.header] == ["Overview"]
    shown = metrics(at)
    assert len(shown) == 18  # six figures for this hour, today and the range
    rng = dict(shown[12:])
    assert rng["Calls"] == f"{report['calls']:,}"
    assert rng["Hit ratio"] == f"{report['hit_ratio']:.1%}"
    assert rng["Token hit ratio"] == f"{report['token_hit_ratio']:.1%}"
    (chart,) = at.get("vega_lite_chart")  # the time series per flow, incidents marked
    spec = orjson.loads(chart.proto.spec)
    rules = [layer for layer in spec["layer"] if layer["mark"]["type"] == "rule"]
    assert len(rules) == 1
    import pyarrow as pa

    tables = [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]
    names = [
        name for t in tables if "incident" in t.column_names for name in t.column("incident").to_pylist()
    ]
    assert names == ["prefix churn in ticket-triage; prefix churn in support-chat"] or names == [
        "prefix churn in support-chat; prefix churn in ticket-triage"
    ]  # (both incidents started together: one rule names both)
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "utc"
    assert all(
        t.get("formatType") == "utc"
        for t in spec["layer"][0]["encoding"]["tooltip"]
        if t["type"] == "temporal"
    )
    assert at.selectbox(key="chart_metric").value == "cost_usd"
    at.selectbox(key="chart_metric").set_value("hit_ratio").run()
    assert not at.exception


def test_the_flows_page_and_a_flows_own_page(demo_db: str) -> None:
    at = app(demo_db, "flows", flow="ticket-triage")
    table = at.dataframe[0].value
    assert set(table["flow"]) == {"support-chat", "ticket-triage"}
    assert {"hit_ratio", "prefixes", "cost_saved_usd", "avoidable_cost_usd", "incidents"} <= set(
        table.columns
    )
    assert all(table["incidents"].str.startswith("prefix churn"))
    assert at.selectbox(key="flow").value == "ticket-triage"
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["ticket-triage: layers", "ticket-triage: prefixes", "ticket-triage: latest calls"]
    latest = at.dataframe[3].value
    assert len(latest) == 20 and latest["explanation"].str.len().min() > 20
    at.selectbox(key="flow").set_value("support-chat").run()
    assert at.subheader[0].value == "support-chat: layers"


def test_the_incidents_page_explains_and_draws_each_incident(demo_db: str, incident_db: str) -> None:
    at = app(demo_db, "incidents")
    text = " ".join(m.value for m in at.markdown)
    assert text.count("prefix churn in") == 2 and "(open)" in text
    assert "Why:" in text and "Fix:" in text
    assert ("Cost per hour", "$3.03") in metrics(at)
    at = app(incident_db, "incidents")
    captions = " ".join(c.value for c in at.caption)
    assert "Changed: system block 0" in captions and "timestamp" in captions
    assert len(at.get("vega_lite_chart")) == 1  # the block strips
    assert len(at.code) == 2  # the redacted excerpts, before and after


def test_the_what_if_page_replays_a_flow(demo_db: str) -> None:
    at = app(demo_db, "what-if")
    at.selectbox(key="whatif_flow").set_value("support-chat")
    at.multiselect(key="whatif_strategies").set_value(["none", "current"])
    at.text_input(key="whatif_extra").set_value("ttl=1h")
    at.button(key="whatif_run").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["strategy"]) == ["none", "current", "ttl=1h"]
    store = board.open_database(demo_db)
    expected = board.what_if(
        store, "support-chat", ["none", "current", "ttl=1h"], board.window("all stored calls", 0)
    )
    assert list(table["cost"]) == pytest.approx([r.cost_usd for r in expected.results])
    store.close()
    at.text_input(key="whatif_extra").set_value("ttl=2d")
    at.button(key="whatif_run").click().run()
    assert at.error and "ttl" in at.error[0].value


def test_an_empty_store_gets_a_friendly_page(empty_db: str) -> None:
    for page in ("overview", "flows", "incidents", "what-if"):
        at = app(empty_db, page)
        assert at.info and "No calls recorded yet" in at.info[0].value
        assert not at.error


def test_a_missing_or_newer_database_is_said_on_the_page(tmp_path: Path, empty_db: str) -> None:
    at = app(str(tmp_path / "nope.db"), "overview", error=True)
    assert at.error and "no such database" in at.error[0].value
    con = sqlite3.connect(empty_db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    at = app(empty_db, "overview", error=True)
    assert at.error and "schema version 99" in at.error[0].value


# -- the command -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_command_refuses_a_missing_database(tmp_path: Path) -> None:
    done = cli("dashboard", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1 and "no such database" in done.stderr


def test_the_command_serves_the_app_on_loopback(demo_db: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachebench", "dashboard", "--db", demo_db, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in out


def test_the_command_line_listens_on_loopback_only() -> None:
    line = command(8600)
    assert line[line.index("--server.address") + 1] == "127.0.0.1"
    assert line[line.index("--server.port") + 1] == "8600"
    assert "--db" not in line  # (the database goes in the environment: no password in `ps`)
    with pytest.raises(ValueError, match="port"):
        command(70000)


# -- edges -----------------------------------------------------------------------------------------


def test_a_long_layers_strip_is_cut_and_says_what_it_left_out() -> None:
    from cachebench.diagnose.prints import BlockPrint, Features
    from cachebench.diagnose.regressions import STRIP_BLOCKS, strip

    def block(i: int) -> BlockPrint:
        return BlockPrint("tools", i, 3 + i, Features(100 + i, i, i, 64, b"", b"", i, i))

    layer = tuple(block(i) for i in range(STRIP_BLOCKS + 6))
    out = strip(layer)
    assert len(out) == STRIP_BLOCKS + 1
    assert out[0] == ["tools", 0, 3, 100]
    assert out[-1] == ["...", 6, -1, sum(100 + i for i in range(STRIP_BLOCKS, STRIP_BLOCKS + 6))]
    assert strip(layer[:3]) == [["tools", i, 3 + i, 100 + i] for i in range(3)]


def record(
    tracker: cachebench.CacheTracker, flow: str, at: float, read: int, written: int, system: str
) -> None:
    tracker.record(
        {
            "type": "message",
            "model": MODEL,
            "usage": {
                "input_tokens": 9,
                "output_tokens": 2,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": written,
            },
        },
        request={
            "model": MODEL,
            "max_tokens": 8,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}],
        },
        provider="anthropic",
        flow=flow,
        timestamp=at,
    )


def test_a_chart_of_calls_retention_dropped_is_drawn_by_the_hour(tmp_path: Path) -> None:
    """Calls over the last 90 minutes whose raw rows retention has deleted but for the newest:
    the minute series would miss them, so the chart is drawn from the roll-up, by the hour."""
    path = tmp_path / "pruned.db"
    now = time.time()
    tracker = cachebench.CacheTracker(store=f"sqlite:///{path}", on_miss_alert=lambda m: None)
    for i in range(10):
        record(
            tracker, "chat", now - 5400 + i * 600, 0 if i == 0 else 3000, 3000 if i == 0 else 0, "Tea. " * 900
        )
    tracker.close()
    store = SQLiteStore(path, keep_calls_s=1200)
    store.prune(now)
    store.close()
    store = board.open_database(str(path))
    chosen = board.window("all stored calls", now)
    total = board.key_figures(store, now, chosen)[chosen.label]
    assert total["calls"] == 10
    bucket, rows = board.series(store, chosen, total)
    assert bucket == 3600 and sum(r["calls"] for r in rows) == 10
    store.close()


def test_a_flows_line_breaks_where_it_had_no_call(tmp_path: Path) -> None:
    """Calls at minutes 0, 1, 2 and 9 of one flow and every minute of another: the first flow's
    line stops after minute 2 and starts again at minute 9 (it is not drawn across the minutes
    without a call), and the second flow's runs on."""
    import pyarrow as pa

    path = tmp_path / "gaps.db"
    now = time.time()
    start = now - now % 60 - 1200
    tracker = cachebench.CacheTracker(store=f"sqlite:///{path}", on_miss_alert=lambda m: None)
    for minute in (0, 1, 2, 9):
        record(tracker, "sparse", start + 60 * minute + 1, 3000, 0, "Tea. " * 900)
    for minute in range(10):
        record(tracker, "steady", start + 60 * minute + 2, 3000, 0, "Tea. " * 900)
    tracker.close()
    assert board.breaks([{"t": start + 60 * m, "flow": "sparse"} for m in (9, 0, 2, 1)], 60) == [
        {"t": start + 180, "flow": "sparse"}
    ]
    at = app(str(path), "overview")
    (chart,) = at.get("vega_lite_chart")
    spec = orjson.loads(chart.proto.spec)
    line = spec["layer"][0] if "layer" in spec else spec
    assert line["mark"]["invalid"] == "break-paths-filter-domains"
    (table,) = [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]
    rows = table.to_pylist()
    empty = [(r["flow"], round((r["time"] / 1000.0 - start) / 60)) for r in rows if r["value"] is None]
    assert empty == [("sparse", 3)]
    assert sorted(round((r["time"] / 1000.0 - start) / 60) for r in rows if r["flow"] == "sparse") == [
        0,
        1,
        2,
        3,
        9,
    ]


def test_odd_flow_names_and_two_open_incidents_of_one_flow(tmp_path: Path) -> None:
    """A flow named with Markdown's marks shows as written; a flow with two open incidents
    lists both."""
    from cachebench.store._rows import incident_row
    from cachebench.types import Regression

    path = tmp_path / "odd.db"
    tracker = cachebench.CacheTracker(store=f"sqlite:///{path}", on_miss_alert=lambda m: None)
    name = "agent *v2* _beta_ $5"
    for i in range(4):
        record(
            tracker,
            name,
            1_790_000_000.0 + 60 * i,
            0 if i == 0 else 3000,
            3000 if i == 0 else 0,
            "Tea. " * 900,
        )
    tracker.close()
    store = SQLiteStore(path)
    store.write(
        (),
        [
            incident_row("a1", Regression(name, "prefix_churn", 1_790_000_000.0, 1.0, 0.0, 3, 0.5)),
            incident_row("b2", Regression(name, "hit_ratio_drop", 1_790_000_100.0, 1.0, 0.2, 3, 0.1)),
        ],
    )
    store.close()
    at = app(str(path), "flows")
    assert list(at.dataframe[0].value["incidents"]) == ["prefix churn (a1), hit ratio drop (b2)"]
    assert at.subheader[0].value == r"agent \*v2\* \_beta\_ \$5: layers"
    at = app(str(path), "incidents")
    assert r"in agent \*v2\* \_beta\_ \$5" in " ".join(m.value for m in at.markdown)


def test_an_older_database_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """The dashboard only reads: a database of an older schema is not upgraded (an older
    cachebench may still be writing it), and the message says how to upgrade it."""
    from cachebench.store._schema import SQLITE, STEPS

    path = tmp_path / "v3.db"
    con = sqlite3.connect(path)
    for step in (1, 2, 3):
        for statement in STEPS[step]:
            assert isinstance(statement, str)
            con.execute(SQLITE.sql(statement))
    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')")
    con.commit()
    con.close()
    with pytest.raises(board.DashboardError, match=r"schema version 3, older than .* does not change it"):
        board.open_database(str(path))
    at = app(str(path), "overview", error=True)
    assert at.error and "older than" in at.error[0].value
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta").fetchall() == [("3",)]
    assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'hourly_flows'").fetchall()
    con.close()
    done = cli("dashboard", "--db", str(path))
    assert done.returncode == 1 and "older than" in done.stderr


def test_the_command_says_when_its_port_is_taken(demo_db: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("dashboard", "--db", demo_db, "--port", str(port))
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


def test_a_database_that_fails_while_served_is_said_on_the_page(demo_db: str, tmp_path: Path) -> None:
    """A query that fails (here: a table gone under the running dashboard) is an error on the
    page, not a traceback; the next run opens the database again."""
    import shutil

    copy = tmp_path / "copy.db"
    shutil.copy(demo_db, copy)
    app(str(copy), "overview")
    con = sqlite3.connect(copy)
    con.execute("ALTER TABLE hourly_flows RENAME TO elsewhere")
    con.commit()
    at = app(str(copy), "overview", error=True)
    assert at.error and "Cannot read the database" in at.error[0].value and "Reload" in at.error[0].value
    con.execute("ALTER TABLE elsewhere RENAME TO hourly_flows")
    con.commit()
    con.close()
    app(str(copy), "overview")  # (reconnected: no error)


def test_a_page_that_is_not_there_is_said(demo_db: str) -> None:
    at = app(demo_db, "bogus")
    assert at.warning and "No page named bogus" in at.warning[0].value
    assert [h.value for h in at.header] == ["Overview"]


def only_incident(path: Path, kind: str) -> board.IncidentView:
    """The store's one incident, of ``kind``, with its diff and the changed layer's strips."""
    store = board.open_database(str(path))
    try:
        (view,) = board.incidents(store)
    finally:
        store.close()
    assert view.diff is not None and view.diff["kind"] == kind and view.blocks is not None
    return view


def test_every_page_of_a_store_with_an_open_incident(incident_db: str) -> None:
    at = app(incident_db, "overview")
    assert dict(metrics(at)[12:])["Calls"] == "14"
    at = app(incident_db, "flows")
    assert at.dataframe[0].value["incidents"].iloc[0].startswith("prefix churn (")
    at = app(incident_db, "incidents")
    assert "(open)" in " ".join(m.value for m in at.markdown)
    at = app(incident_db, "what-if")
    at.button(key="whatif_run").click().run()
    assert not at.exception and not at.error
    assert list(at.dataframe[0].value["strategy"]) == ["none", "current", "ttl=1h"]


def test_an_incidents_strips_are_the_earlier_prompt_before_and_the_new_one_after(
    tmp_path: Path, cache_emulator: CacheEmulator
) -> None:
    """The changed layer holds the time (which churns) and then a note that grows by a word a
    call: the strip after is the newer prompt's (its note longer than the one before), and the
    changed block is the time's, in both."""
    path = tmp_path / "grow.db"
    tracker = cachebench.CacheTracker(store=f"sqlite:///{path}", clock=cache_emulator.clock)
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-grow", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="support")
    for i in range(14):
        request = churn_request(cache_emulator.clock(), f"Question {i}?")
        del request["system"][0]["cache_control"]
        note = {"type": "text", "text": "Note:" + " more" * (i + 1), "cache_control": {"type": "ephemeral"}}
        request["system"].append(note)
        create(**request)
        cache_emulator.advance(20)
    tracker.close()
    client.close()
    view = only_incident(path, "volatile")
    before, after = view.blocks["before"], view.blocks["after"]
    assert [b[0] for b in after] == ["tools", "tools", "system", "system"]
    assert before[2][2] == after[2][2] == view.diff["position"]  # the time's block, in both
    assert after[3][3] > before[3][3]  # the note: the newer prompt's is longer


def test_a_reordering_is_drawn_against_the_last_order_read(
    tmp_path: Path, cache_emulator: CacheEmulator
) -> None:
    """Tools read in one order for a while, then sent in a new order every call: the churn is
    told against the last order read, so the strip before is that order and the one after the
    new call's (the tools told apart by their sizes)."""
    import itertools

    path = tmp_path / "order.db"
    tracker = cachebench.CacheTracker(store=f"sqlite:///{path}", clock=cache_emulator.clock)
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-order", max_retries=0
    )
    create = tracker.wrap(client.messages.create, flow="support")
    tools = [
        {
            "name": f"tool_{n}",
            "description": "Does a thing. " * (20 + 10 * n),
            "input_schema": {"type": "object"},
        }
        for n in range(4)
    ]
    orders = list(itertools.permutations(range(4)))
    for i in range(18):
        order = orders[0] if i < 4 else orders[i - 3]  # (4 calls in one order, then a new one each call)
        request = churn_request(0.0, f"Question {i}?")
        request["system"][0]["text"] = "Answer briefly and cite the policy. " * 150
        request["tools"] = [tools[n] for n in order]
        create(**request)
        cache_emulator.advance(20)
    tracker.close()
    client.close()
    view = only_incident(path, "reordered")
    before = [b[3] for b in view.blocks["before"] if b[0] == "tools"]
    after = [b[3] for b in view.blocks["after"] if b[0] == "tools"]
    assert before == sorted(before)  # the order read: tool_0 .. tool_3, shortest first
    assert after != before and sorted(after) == before
