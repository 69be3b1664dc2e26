"""The embedded store: what a tracker writes is what it measured, the hourly roll-up equals the
raw calls, the schema migrates, retention deletes only what it should, and every mistake is
one clear error at construction or one logged, counted error on the consumer with nothing
lost."""

from __future__ import annotations

import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import anthropic
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.store import SCHEMA_VERSION, SQLiteStore, StoreError, open_store
from cachebench.store._schema import SQLITE, STEPS
from cachebench.testing import CacheEmulator, ManualClock

MODEL = "claude-sonnet-4-5"
T0 = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC

SUMMED = (
    "calls",
    "errors",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "unpriced_calls",
    "unknown_usage_calls",
    "holds",
)
MONEY = ("cost_usd", "cost_without_cache_usd", "cost_saved_usd", "avoidable_cost_usd")
RATIOS = ("hit_ratio", "token_hit_ratio", "hit_ratio_if_fixed")


def request(system: str, question: str = "Where is my order?") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 32,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
    }


def response(read: int, written: int, uncached: int = 12, output: int = 7) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "It ships today."}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": uncached,
            "output_tokens": output,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        },
    }


SYSTEM = "You are the support agent of a shop that sells tea. " * 200


def record_calls(
    tracker: CacheTracker, n: int, *, start: float = T0, gap: float = 600.0, flow: str = "chat"
) -> list[CallMetrics]:
    """``n`` calls of one flow, ``gap`` seconds apart: a cold write, then reads, with a changed
    system prompt every fifth call (a miss of its own)."""
    out = []
    for i in range(n):
        changed = i % 5 == 4
        system = SYSTEM + (f" Version {i}." if changed else "")
        m = tracker.record(
            response(0 if i == 0 or changed else 2400, 2400 if i == 0 or changed else 0, uncached=10 + i),
            request=request(system),
            provider="anthropic",
            timestamp=start + i * gap,
            flow=flow,
        )
        assert m is not None
        out.append(m)
    return out


def python_sums(calls: list[CallMetrics], lo: float = -math.inf, hi: float = math.inf) -> dict[str, Any]:
    """The report's figures summed in Python from the calls themselves: the oracle."""
    chosen = [m for m in calls if lo <= m.timestamp < hi]
    den = sum(m.cacheable_tokens for m in chosen)
    hit = sum(m.hit_tokens for m in chosen)
    return {
        "calls": len(chosen),
        "input_tokens": sum(m.input_tokens for m in chosen),
        "cache_read_tokens": sum(m.cache_read_tokens for m in chosen),
        "cache_write_tokens": sum(m.cache_write_tokens for m in chosen),
        "output_tokens": sum(m.output_tokens for m in chosen),
        "cost_usd": sum(m.cost_usd or 0.0 for m in chosen),
        "cost_without_cache_usd": sum(m.cost_without_cache_usd or 0.0 for m in chosen),
        "avoidable_cost_usd": sum(m.avoidable_cost_usd or 0.0 for m in chosen),
        "hit_ratio": hit / den if den else None,
    }


def assert_same(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if isinstance(value, float) or key in MONEY or key in RATIOS:
            if value is None:
                assert row[key] is None, key
            else:
                assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert row[key] == value, key


# -- what is written is what was measured -------------------------------------------------------


def test_calls_through_the_sdk_are_stored_as_measured(cache_emulator: CacheEmulator, tmp_path: Path) -> None:
    """Calls through the real Anthropic SDK on the emulator: every stored call equals the
    tracker's own CallMetrics (money to the nano-dollar), and the store's report per flow
    equals tracker.by_flow()."""
    db = tmp_path / "calls.db"
    tracker = CacheTracker(clock=cache_emulator.clock, store=f"sqlite:///{db}")
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-store", max_retries=0
    )
    create = tracker.wrap(client.messages.create, flow="support")
    for i in range(6):
        create(**request(SYSTEM, f"Question {i}"))
        cache_emulator.advance(30)
    with client.messages.stream(**request(SYSTEM, "And a stream?")) as stream:
        stream.until_done()
    client.close()
    tracker.flush()
    live = tracker.calls()
    stored = tracker.store.calls()  # type: ignore[union-attr]
    assert [s.id for s in stored] == list(range(1, len(live) + 1))
    assert len(stored) == len(live) == 6  # (the stream through the bare client is not tracked)
    for s, m in zip(stored, live, strict=True):
        got = s.metrics
        for name in MONEY:
            assert getattr(got, name) == pytest.approx(getattr(m, name), abs=1e-9)
        assert {k: v for k, v in got.as_dict().items() if k not in MONEY} == {
            k: v for k, v in m.as_dict().items() if k not in MONEY
        }
    (row,) = tracker.store.report("flow")  # type: ignore[union-attr]
    live_row = tracker.by_flow()["support"]
    assert row["flow"] == "support"
    assert_same(row, {k: live_row[k] for k in (*SUMMED, *MONEY, *RATIOS)})
    tracker.close()


def test_the_hourly_roll_up_equals_the_raw_calls_over_any_range(tmp_path: Path) -> None:
    """Calls every 10 minutes over 30 hours in two flows: the report over whole and partial
    hours (roll-up plus raw edges) equals the sums over the raw calls and the sums computed in
    Python from the CallMetrics, for every range tried; per day too."""
    tracker = CacheTracker(
        store=tmp_path / "r.db", on_miss_alert=lambda m: None, on_regression=lambda r: None
    )
    calls = record_calls(tracker, 180, flow="chat") + record_calls(
        tracker, 90, start=T0 + 7, gap=1200.0, flow="triage"
    )
    tracker.flush()
    store = tracker.store
    assert store is not None
    ranges = [
        (None, None),
        (T0 + 1800, None),
        (None, T0 + 5 * 3600 + 17),
        (T0 + 3 * 3600 + 5, T0 + 20 * 3600 + 1234),
        (T0 + 100, T0 + 900),  # inside one hour
    ]
    for lo, hi in ranges:
        rows = {r["flow"]: r for r in store.report("flow", since=lo, until=hi)}
        raw = {r["flow"]: r for r in store.report("flow", since=lo, until=hi, raw=True)}
        assert rows.keys() == raw.keys()
        for flow, row in rows.items():
            assert_same(row, {k: raw[flow][k] for k in (*SUMMED, *MONEY, *RATIOS)})
            mine = [m for m in calls if m.flow == flow]
            assert_same(
                row, python_sums(mine, -math.inf if lo is None else lo, math.inf if hi is None else hi)
            )
    for r in store.report("prefix"):  # each prefix with the flows and models that used it
        users = [m for m in calls if m.prefix_id == r["prefix"]]
        assert r["calls"] == len(users)
        assert r["flows"] == sorted({m.flow for m in users}) and r["models"] == [MODEL]
    days = store.report("day")
    assert sum(d["calls"] for d in days) == len(calls)
    assert [d["day"] for d in sorted(days, key=lambda d: d["day"])] == ["2026-09-21", "2026-09-22"]
    tracker.close()


def roll_ups(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The hourly roll-up summed per hour, provider, model and flow, and the flows' roll-up."""
    conn = sqlite3.connect(db)
    sums = "SUM(calls), SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nusd)"
    key = "hour, provider, model, flow"
    hourly = conn.execute(
        f"SELECT {key}, {sums}, MIN(first_seen), MAX(last_seen) FROM hourly GROUP BY {key} ORDER BY {key}"
    ).fetchall()
    flows = conn.execute(
        f"SELECT {key}, {sums}, MIN(first_seen), MAX(last_seen) FROM hourly_flows GROUP BY {key} ORDER BY {key}"
    ).fetchall()
    conn.close()
    return hourly, flows


def test_the_flows_roll_up_is_the_hourly_one_without_prefixes(tmp_path: Path) -> None:
    """Calls of two flows and several prefixes over 30 hours: the flows' roll-up holds the
    hourly roll-up's sums per hour, provider, model and flow, after every batch and after a
    bounded retention pass (both lose the same oldest hours)."""
    store = SQLiteStore(tmp_path / "f.db", keep_calls_s=86400, keep_hours_s=20 * 3600)
    tracker = CacheTracker(store=store, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    record_calls(tracker, 90, flow="chat")
    tracker.flush()
    record_calls(tracker, 60, start=T0 + 7, gap=1800.0, flow="triage")
    tracker.flush()
    hourly, flows = roll_ups(tmp_path / "f.db")
    assert hourly == flows and len(flows) > 30
    assert sum(r[4] for r in flows) == 150
    store.prune(T0 + 31 * 3600, limit=3)
    hourly, flows = roll_ups(tmp_path / "f.db")
    assert hourly == flows and min(r[0] for r in flows) == T0 // 3600 * 3600 + 3 * 3600
    store.prune(T0 + 31 * 3600)
    assert roll_ups(tmp_path / "f.db")[0] == roll_ups(tmp_path / "f.db")[1]
    tracker.close()


def test_money_is_stored_as_exact_integers(tmp_path: Path) -> None:
    """The money columns are integers of a nano-dollar, and an hour's roll-up is exactly the
    sum of its calls' integers (no float rounding between them)."""
    tracker = CacheTracker(
        store=tmp_path / "m.db", on_miss_alert=lambda m: None, on_regression=lambda r: None
    )
    record_calls(tracker, 40, gap=60.0)
    tracker.close()
    conn = sqlite3.connect(tmp_path / "m.db")
    types = {t for (t,) in conn.execute("SELECT DISTINCT typeof(cost_nusd) FROM calls")}
    assert types == {"integer"}
    per_hour_raw = dict(
        conn.execute(
            "SELECT CAST(ts / 3600 AS INTEGER) * 3600, SUM(cost_nusd) FROM calls GROUP BY 1"
        ).fetchall()
    )
    per_hour = dict(conn.execute("SELECT hour, SUM(cost_nusd) FROM hourly GROUP BY hour").fetchall())
    assert per_hour == per_hour_raw
    assert len(per_hour) == 1 or len(per_hour) == 2


def test_no_prompt_text_is_stored_unless_captured(tmp_path: Path) -> None:
    """Without capture_text the database holds no byte of the prompts (a marker in the
    changed system prompt is absent from the file); with it, only the diff's short redacted
    excerpts are kept."""
    marker = "ZEBRA-7731-SECRET-SAUCE"

    def run(db: Path, capture: bool) -> bytes:
        tracker = CacheTracker(
            store=db, capture_text=capture, on_miss_alert=lambda m: None, on_regression=lambda r: None
        )
        for i in range(6):
            tracker.record(
                response(0 if i % 2 else 2400, 2400 if i % 2 else 0),
                request=request(f"{marker} {i} " + SYSTEM, f"{marker} question"),
                provider="anthropic",
                timestamp=T0 + i * 60,
                flow="chat",
            )
        tracker.close()
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return db.read_bytes()

    assert marker.encode() not in run(tmp_path / "plain.db", capture=False)
    captured = run(tmp_path / "captured.db", capture=True)
    conn = sqlite3.connect(tmp_path / "captured.db")
    diffs = [d for (d,) in conn.execute("SELECT diff FROM calls WHERE diff IS NOT NULL")]
    assert diffs and all('"before"' in d for d in diffs)
    assert len(captured) > 0


# -- the schema ---------------------------------------------------------------------------------


def test_a_first_version_database_migrates_to_the_current_one(tmp_path: Path) -> None:
    """A database made with version 1's statements (calls and incidents, no roll-up) is
    brought to the current version on opening: the calls stay, and the roll-up made from them
    gives the same report as the raw calls."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    for statement in STEPS[1]:
        conn.execute(SQLITE.sql(statement))
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    cols = "ts, provider, model, flow, prefix_id, breakpoint_ids, input_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, output_tokens, expected_read_tokens, hit_num, hit_den, fix_den, avoidable_tokens, cost_nusd, cost_without_cache_nusd, cost_saved_nusd, avoidable_cost_nusd, elapsed_ms, held_ms, usage_known, writes_reported, unpriced, stream, unexpected_miss"
    rows = [
        (
            T0 + i * 1500,
            "anthropic",
            MODEL,
            "chat" if i % 3 else "triage",
            "ab" * 8,
            "ab" * 8,
            10,
            2000 * (i % 2),
            2000 * (1 - i % 2),
            0,
            5,
            0,
            2000 * (i % 2),
            2000,
            0,
            0,
            1000 + i,
            5000,
            4000 - i,
            0,
            10.0,
            0.0,
            1,
            1,
            0,
            0,
            0,
        )
        for i in range(20)
    ]
    conn.executemany(f"INSERT INTO calls ({cols}) VALUES ({', '.join('?' * 27)})", rows)
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    assert store.schema_version == SCHEMA_VERSION == 4
    assert store.count_calls() == 20
    # version 3's column: the calls stored before it were no warm calls
    check = sqlite3.connect(db)
    assert check.execute("SELECT COUNT(*), SUM(warm) FROM calls").fetchone() == (20, 0)
    check.close()
    by_flow = {r["flow"]: r for r in store.report("flow")}
    raw = {r["flow"]: r for r in store.report("flow", raw=True)}
    assert by_flow.keys() == {"chat", "triage"}
    for flow in by_flow:
        assert_same(by_flow[flow], {k: raw[flow][k] for k in (*SUMMED, *MONEY, *RATIOS)})
    assert by_flow["chat"]["cost_usd"] == pytest.approx(sum(1000 + i for i in range(20) if i % 3) / 1e9)
    store.close()


def test_a_database_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer cachebench: one clear error naming both versions, at
    construction; the file is left as it was."""
    db = tmp_path / "new.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match=r"schema version 99, newer than this cachebench's 4: upgrade"):
        CacheTracker(store=f"sqlite:///{db}")
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mysql://localhost/x", "unknown scheme 'mysql'"),
        ("sqlite://relative.db", "write sqlite:///relative.db or sqlite:////absolute.db"),
        ("sqlite:////no/such/directory/x.db", "the directory /no/such/directory does not exist"),
    ],
)
def test_bad_store_urls_are_clear_errors(target: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        CacheTracker(store=target)


def test_a_store_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="store must be None, a URL"):
        CacheTracker(store=42)


def test_a_corrupt_file_or_a_foreign_database_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all " * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        CacheTracker(store=junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"other tables \(invoices\), not a cachebench store"):
        CacheTracker(store=other)
    conn = sqlite3.connect(other)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # left as it was
    conn.close()


def test_a_read_only_database_is_refused_at_construction() -> None:
    """A process that may not write the file (here: an unprivileged user, the file and its
    directory owned by another) gets one clear error when it builds the tracker."""
    folder = Path(tempfile.mkdtemp(prefix="cachebench-ro-"))
    db = folder / "ro.db"
    SQLiteStore(db).close()
    os.chmod(folder, 0o755)
    os.chmod(db, 0o444)
    script = textwrap.dedent(
        f"""
        import os, sys
        from cachebench import CacheTracker
        from cachebench.store import StoreError
        import cachebench.store.sqlite, cachebench.redact, cachebench.engine
        if os.getuid() == 0:  # (everything imported first: the unprivileged user cannot read them)
            os.setgid(65534); os.setuid(65534)
        try:
            CacheTracker(store={str(db)!r})
        except StoreError as e:
            print(e)
            sys.exit(3)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 3, done.stderr
    assert "cannot be written" in done.stdout or "cannot open" in done.stdout


def test_the_environment_names_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CACHEBENCH_DB is the store of a tracker built without store=."""
    monkeypatch.setenv("CACHEBENCH_DB", str(tmp_path / "env.db"))
    tracker = CacheTracker(on_miss_alert=lambda m: None)
    assert tracker.store is not None
    record_calls(tracker, 3)
    tracker.close()
    assert open_store(str(tmp_path / "env.db")).count_calls() == 3


# -- retention ----------------------------------------------------------------------------------


def test_retention_deletes_old_raw_calls_and_keeps_their_hours(tmp_path: Path) -> None:
    """Raw calls older than keep_calls_s go; their hourly roll-up stays (the report over all
    time is unchanged); hours and closed incidents older than keep_hours_s go; a bounded pass
    deletes at most its limit."""
    store = SQLiteStore(tmp_path / "p.db", keep_calls_s=2 * 86400, keep_hours_s=10 * 86400)
    tracker = CacheTracker(store=store, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    calls = record_calls(tracker, 150, gap=3 * 3600.0)  # 150 calls over 18.6 days
    tracker.flush()
    before = store.report("all")[0]
    now = T0 + 149 * 3 * 3600.0 + 1
    first = store.prune(now, limit=10)
    assert first.calls == 10
    store.prune(now)
    kept = store.calls()
    assert kept and all(c.metrics.timestamp >= now - 2 * 86400 for c in kept)
    assert len(kept) == sum(1 for m in calls if m.timestamp >= now - 2 * 86400)
    # Everything younger than 10 days is still reported, from the roll-up; where an edge falls
    # in an hour kept only as sums, the hour counts on the side of its start, and the store
    # says the range is not exact.
    since = now - 9 * 86400 + 1800
    recent = store.report("all", since=since)[0]
    assert_same(recent, python_sums(calls, math.ceil(since / 3600) * 3600))
    assert not store.exact(since=since) and store.exact(since=now - 86400)
    older = store.report("all", until=since)[0]
    assert older["calls"] + recent["calls"] == store.report("all")[0]["calls"]  # no hour twice
    assert store.report("all")[0]["calls"] < before["calls"]
    oldest_hour = min(r["first_seen"] for r in store.report("day"))
    assert oldest_hour >= math.floor((now - 10 * 86400) / 3600) * 3600
    tracker.close()


def test_retention_runs_on_the_consumer(tmp_path: Path) -> None:
    """The tracker's consumer runs a bounded retention pass as it writes, on the tracker's
    clock: calls a week old when a new one arrives are deleted without any command."""
    clock = ManualClock(T0)
    store = SQLiteStore(tmp_path / "c.db", keep_calls_s=86400)
    tracker = CacheTracker(store=store, clock=clock, on_miss_alert=lambda m: None)
    record_calls(tracker, 5, start=T0, gap=60)
    tracker.flush()
    assert store.count_calls() == 5
    clock.advance(3 * 86400)
    record_calls(tracker, 1, start=clock())
    tracker.flush()
    assert [c.metrics.timestamp for c in store.calls()] == [clock()]
    assert store.report("all")[0]["calls"] == 6
    tracker.close()


# -- the consumer never loses acknowledged calls ---------------------------------------------------


def test_a_locked_database_delays_the_calls_and_loses_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock longer than the store waits: the consumer logs one
    error per failed batch and keeps the calls; the caller never waits; once the lock is
    released, the next write stores them all."""
    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)  # the errors are logged, as in production
    db = tmp_path / "l.db"
    store = SQLiteStore(db, busy_timeout_s=0.05)
    tracker = CacheTracker(store=store, on_miss_alert=lambda m: None)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        calls = record_calls(tracker, 8, gap=10)
        tracker.flush()
    assert any("internal error in store" in r.getMessage() for r in caplog.records)
    blocker.execute("COMMIT")
    blocker.close()
    tracker.flush()
    assert store.count_calls() == 8
    assert store.report("all")[0]["cache_read_tokens"] == sum(m.cache_read_tokens for m in calls)
    tracker.close()


def test_an_incident_is_stored_as_it_opens_grows_and_closes(tmp_path: Path) -> None:
    """A stamped system prompt opens prefix churn; the store holds it open with its calls as
    they grow; removing the stamp closes it, and the stored incident is the tracker's own."""
    store = SQLiteStore(tmp_path / "i.db", keep_calls_s=3650 * 86400.0)
    tracker = CacheTracker(store=store, on_miss_alert=lambda m: None, on_regression=lambda r: None)

    def call(i: int, system: str, read: int, written: int) -> None:
        tracker.record(
            response(read, written),
            request=request(system),
            provider="anthropic",
            timestamp=T0 + i * 30,
            flow="chat",
        )

    for i in range(8):
        call(i, SYSTEM, 0 if i == 0 else 2400, 2400 if i == 0 else 0)
    for i in range(8, 14):
        call(i, f"Now: 2026-09-21T10:{i:02d}:00Z. " + SYSTEM, 0, 2400)
    tracker.flush()
    (opened,) = store.incidents()
    assert opened.regression.open and opened.regression.kind == "prefix_churn"
    first_calls = opened.regression.calls_affected
    call(14, "Now: 2026-09-21T10:14:00Z. " + SYSTEM, 0, 2400)
    tracker.flush()
    assert store.incident(opened.id).regression.calls_affected == first_calls + 1  # type: ignore[union-attr]
    for i in range(15, 30):
        call(i, SYSTEM, 2400, 0)
    tracker.flush()
    (stored,) = store.incidents()
    (live,) = tracker.regressions()
    assert not live.open
    kept = stored.regression.as_dict()
    assert kept.pop("extra_cost_per_hour_usd") == pytest.approx(live.extra_cost_per_hour_usd, abs=1e-9)
    assert kept == {k: v for k, v in live.as_dict().items() if k != "extra_cost_per_hour_usd"}
    tracker.close()
