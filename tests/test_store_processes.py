"""The store across processes: a process killed mid-stream leaves a consistent database with
every call it acknowledged (SIGTERM) or all but the last flush window (SIGKILL), and four
processes writing one SQLite file or one PostgreSQL database lose nothing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cachebench.store import FLUSH_WINDOW_S, SQLStore, open_store
from cachebench.testing import CacheEmulator

# A process that makes streamed calls through the real Anthropic SDK, wrapped by a tracker
# that writes to the store, and prints "ack N T" (T: time.monotonic(), the same clock in every
# process) after each call's stream is read to its end and closed.
STREAMER = textwrap.dedent(
    """
    import sys, time
    import anthropic
    from cachebench import CacheTracker

    url, db = sys.argv[1], sys.argv[2]
    tracker = CacheTracker(store=db, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    client = anthropic.Anthropic(base_url=url, api_key="sk-crash", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="crash")
    system = [{"type": "text", "text": "You answer questions about tea. " * 300,
               "cache_control": {"type": "ephemeral"}}]
    print("ready", flush=True)
    n = 0
    while True:
        stream = create(model="claude-sonnet-4-5", max_tokens=16, system=system, stream=True,
                        messages=[{"role": "user", "content": f"Question {n}"}])
        for event in stream:
            pass
        n += 1
        print(f"ack {n} {time.monotonic()}", flush=True)
    """
)

# A process that records ``n`` calls of its own flow with known token counts.
RECORDER = textwrap.dedent(
    """
    import sys
    from cachebench import CacheTracker

    db, flow, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tracker = CacheTracker(store=db, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    system = [{"type": "text", "text": f"Flow {flow}. " + "Tea facts. " * 600,
               "cache_control": {"type": "ephemeral"}}]
    for i in range(n):
        read = 0 if i == 0 else 3000 + i
        tracker.record(
            {"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
             "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
             "usage": {"input_tokens": 10 + i, "output_tokens": 3,
                       "cache_read_input_tokens": read,
                       "cache_creation_input_tokens": 3000 if i == 0 else 0}},
            request={"model": "claude-sonnet-4-5", "max_tokens": 8, "system": system,
                     "messages": [{"role": "user", "content": f"q{i}"}]},
            provider="anthropic", flow=flow,
        )
    tracker.close()
    print("done", flush=True)
    """
)


def message(usage: dict[str, int]) -> dict[str, Any]:
    """An Anthropic Messages response body with this usage."""
    return {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


HI = {"model": "claude-sonnet-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def start_streamer(tmp_path: Path, url: str, db: Path) -> subprocess.Popen[str]:
    script = tmp_path / "streamer.py"
    script.write_text(STREAMER)
    return subprocess.Popen(
        [sys.executable, str(script), url, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def acks_until(proc: subprocess.Popen[str], n: int) -> list[tuple[int, float]]:
    """Read the child's lines until ``n`` calls are acknowledged."""
    assert proc.stdout is not None
    acks: list[tuple[int, float]] = []
    deadline = time.monotonic() + 60
    while len(acks) < n:
        line = proc.stdout.readline()
        assert line, f"the child ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline
        if line.startswith("ack "):
            _, count, at = line.split()
            acks.append((int(count), float(at)))
    return acks


def rest(proc: subprocess.Popen[str], acks: list[tuple[int, float]]) -> str:
    """The acks the child printed before it died, and its stderr."""
    out, err = proc.communicate(timeout=60)
    for line in out.splitlines():
        if line.startswith("ack "):
            _, count, at = line.split()
            acks.append((int(count), float(at)))
    return err


def check_consistent(db: Path) -> SQLStore:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    store = open_store(str(db))
    (rolled,) = store.report("all")
    (raw,) = store.report("all", raw=True)
    for key in ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"):
        assert rolled[key] == raw[key], key
    return store


def test_sigterm_mid_stream_keeps_every_acknowledged_call(
    cache_emulator: CacheEmulator, tmp_path: Path
) -> None:
    """SIGTERM arrives while a stream is being read and the last calls wait to be written (the
    database is locked by another process meanwhile): the process still dies of SIGTERM, and
    the database opens, is consistent, and holds every call the process acknowledged (and at
    most the one whose acknowledgement it had not printed yet)."""
    cache_emulator.set_knobs(ttft_ms=15.0)
    db = tmp_path / "term.db"
    proc = start_streamer(tmp_path, cache_emulator.anthropic_base_url, db)
    acks = acks_until(proc, 25)
    # Another process holds the write lock: the child's consumer waits on it with the calls
    # acknowledged since still pending, as under load. SIGTERM must write them anyway.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    acks += acks_until(proc, 10)
    time.sleep(0.007)  # (inside the next call's stream, most runs)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    blocker.execute("COMMIT")
    blocker.close()
    err = rest(proc, acks)
    assert proc.returncode == -signal.SIGTERM, err
    store = check_consistent(db)
    acknowledged = acks[-1][0]
    assert acknowledged <= store.count_calls() <= acknowledged + 1
    assert "Traceback" not in err
    store.close()


def test_sigkill_mid_stream_loses_at_most_the_flush_window(
    cache_emulator: CacheEmulator, tmp_path: Path
) -> None:
    """SIGKILL cannot be caught: the database still opens and is consistent, and holds every
    call acknowledged more than the documented flush window before the kill."""
    cache_emulator.set_knobs(ttft_ms=15.0)
    db = tmp_path / "kill.db"
    proc = start_streamer(tmp_path, cache_emulator.anthropic_base_url, db)
    acks = acks_until(proc, 25)
    time.sleep(FLUSH_WINDOW_S + 0.2)  # (the child goes on acknowledging calls meanwhile)
    killed_at = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    rest(proc, acks)
    assert proc.returncode == -signal.SIGKILL
    store = check_consistent(db)
    stored = store.count_calls()
    safe = sum(1 for _, at in acks if at < killed_at - FLUSH_WINDOW_S)
    assert safe >= 25
    assert safe <= stored <= acks[-1][0] + 1
    # The stored calls are the first ones, in order: nothing in the middle is missing.
    assert [c.id for c in store.calls()] == list(range(1, stored + 1))
    store.close()


def run_recorders(db: str, n: int, flows: list[str]) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER, db, flow, str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flow in flows
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert out.strip() == "done"
        assert err == ""


def check_totals(store: SQLStore, n: int, flows: list[str]) -> None:
    """Every call of every process, with its exact tokens (the recorder's own formula)."""
    rows = {r["flow"]: r for r in store.report("flow")}
    assert rows.keys() == set(flows)
    for flow in flows:
        r = rows[flow]
        assert r["calls"] == n
        assert r["cache_read_tokens"] == sum(3000 + i for i in range(1, n))
        assert r["cache_write_tokens"] == 3000
        assert r["input_tokens"] == sum(10 + i for i in range(n))
        assert r["output_tokens"] == 3 * n
    (total,) = store.report("all", raw=True)
    assert total["calls"] == n * len(flows)
    assert store.count_calls() == n * len(flows)


FLOWS = ["alpha", "beta", "gamma", "delta"]


def test_four_processes_write_one_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    n = 400
    run_recorders(f"sqlite:///{db}", n, FLOWS)
    store = check_consistent(db)
    check_totals(store, n, FLOWS)
    store.close()


def test_four_processes_write_one_postgresql_database(postgres_db: str) -> None:
    n = 300
    run_recorders(postgres_db, n, FLOWS)
    store = open_store(postgres_db)
    try:
        check_totals(store, n, FLOWS)
        (rolled,) = store.report("all")
        (raw,) = store.report("all", raw=True)
        assert {k: rolled[k] for k in ("calls", "cost_usd", "cache_read_tokens")} == {
            k: raw[k] for k in ("calls", "cost_usd", "cache_read_tokens")
        }
    finally:
        store.close()


def test_postgresql_store_answers_like_sqlite(postgres_db: str, tmp_path: Path) -> None:
    """The same calls into SQLite and PostgreSQL: the same reports by every grouping, over
    the same ranges, the same calls and incidents read back."""
    keep = {"keep_calls_s": 3650 * 86400.0}  # (the calls are from September: kept raw)
    stores: list[Any] = [
        open_store(f"sqlite:///{tmp_path / 'same.db'}", **keep),
        open_store(postgres_db, **keep),
    ]
    from cachebench import CacheTracker

    for store in stores:
        tracker = CacheTracker(store=store, on_miss_alert=lambda m: None, on_regression=lambda r: None)
        for i in range(60):
            system = "Tea. " * 900 + (f"Now: 2026-09-21T10:{i:02d}:00Z" if i >= 30 else "")
            tracker.record(
                message(
                    {
                        "input_tokens": 9,
                        "output_tokens": 2,
                        "cache_read_input_tokens": 0 if i in (0,) or i >= 30 else 2500,
                        "cache_creation_input_tokens": 2500 if i in (0,) or i >= 30 else 0,
                    }
                ),
                request={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 8,
                    "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                    "messages": [{"role": "user", "content": f"q{i}"}],
                },
                provider="anthropic",
                flow="chat" if i % 2 else "triage",
                timestamp=1_790_000_000.0 + i * 1000.0,
            )
        tracker.close()
    a, b = stores
    for by in ("flow", "prefix", "model", "provider", "day", "all"):
        for since, until in ((None, None), (1_790_000_000.0 + 5000.5, 1_790_000_000.0 + 40_000.0)):
            ra = a.report(by, since=since, until=until)
            rb = b.report(by, since=since, until=until)
            assert len(ra) == len(rb)
            for x, y in zip(ra, rb, strict=True):
                assert x.keys() == y.keys()
                for k in x:
                    if isinstance(x[k], float):
                        assert y[k] == pytest.approx(x[k]), (by, k)
                    else:
                        assert x[k] == y[k], (by, k)

    def same(xs: list[dict[str, Any]], ys: list[dict[str, Any]], what: Any) -> None:
        assert len(xs) == len(ys), what
        for x, y in zip(xs, ys, strict=True):
            assert x.keys() == y.keys()
            for k in x:
                assert y[k] == (pytest.approx(x[k]) if isinstance(x[k], float) else x[k]), (what, k)

    # The dashboard's queries: series per bucket (raw calls under an hour, the flows' roll-up
    # from an hour), one flow's report, the prefixes per flow.
    for bucket in (60, 900, 3600, 86400):
        for since in (None, 1_790_000_000.0 + 5000.5):
            same(a.series(since=since, bucket_s=bucket), b.series(since=since, bucket_s=bucket), bucket)
    assert sum(r["calls"] for r in a.series(bucket_s=3600)) == 60
    same(a.report("prefix", flow="chat"), b.report("prefix", flow="chat"), "prefix of chat")
    assert a.prefix_counts() == b.prefix_counts() and set(a.prefix_counts()) == {"chat", "triage"}
    assert len(a.calls()) == 60
    assert [c.metrics for c in a.calls()] == [c.metrics for c in b.calls()]
    ia = [i.regression for i in a.incidents()]
    ib = [i.regression for i in b.incidents()]
    assert ia and ia == ib
    for store in stores:
        store.close()


EXITER = textwrap.dedent(
    """
    import sys
    from anthropic.types import Message
    from cachebench import CacheTracker

    db, n = sys.argv[1], int(sys.argv[2])
    tracker = CacheTracker(store=db, provider="anthropic", on_miss_alert=lambda m: None)
    reply = Message.model_validate(
        {"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
         "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
         "usage": {"input_tokens": 4, "output_tokens": 1}})
    create = tracker.wrap(lambda **kwargs: reply)
    for i in range(n):
        create(model="claude-sonnet-4-5", max_tokens=4, messages=[{"role": "user", "content": f"q{i}"}])
    print(len(tracker._engine.writer.rows) + tracker._engine._consumer.queue.qsize() > 0, flush=True)
    """
)


def test_interpreter_exit_writes_what_is_pending(tmp_path: Path) -> None:
    """A script that makes calls and simply ends, with calls still queued or pending (it says
    so), no close(), no flush(): interpreter exit writes every call."""
    db = tmp_path / "exit.db"
    done = subprocess.run(
        [sys.executable, "-c", EXITER, str(db), "3000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == "True"  # (something was left for the exit to write)
    store = open_store(str(db))
    assert store.count_calls() == 3000
    store.close()


def test_a_forked_child_writes_through_a_connection_of_its_own(tmp_path: Path) -> None:
    """A tracker with a store, then fork: the child records through its own connection (the
    parent's is not shared across processes) and both processes' calls are stored."""
    import os

    from cachebench import CacheTracker

    db = tmp_path / "fork.db"
    tracker = CacheTracker(store=db, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    body = message({"input_tokens": 4, "output_tokens": 1})
    request = HI
    tracker.record(body, request=request, provider="anthropic", flow="parent")
    tracker.flush()
    pid = os.fork()
    if pid == 0:  # the child: record, write, leave without running the parent's test teardown
        code = 1
        try:
            for _ in range(3):
                tracker.record(body, request=request, provider="anthropic", flow="child")
            tracker.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tracker.record(body, request=request, provider="anthropic", flow="parent")
    tracker.close()
    store = open_store(str(db))
    assert {r["flow"]: r["calls"] for r in store.report("flow")} == {"parent": 2, "child": 3}
    store.close()


def _child_calls(db: str, n: int) -> None:
    """A multiprocessing child's work: ``n`` calls through the tracker it inherited."""
    tracker = _INHERITED[db]
    for i in range(n):
        tracker.record(
            message({"input_tokens": 4 + i, "output_tokens": 1}),
            request=HI,
            provider="anthropic",
            flow="worker",
        )


_INHERITED: dict[str, Any] = {}


def test_multiprocessing_children_write_their_calls(tmp_path: Path) -> None:
    """Children started by multiprocessing (fork) end with os._exit, not the interpreter's
    exit: each still writes every call it made, its last included."""
    import multiprocessing

    from cachebench import CacheTracker

    db = str(tmp_path / "mp.db")
    _INHERITED[db] = CacheTracker(store=db, on_miss_alert=lambda m: None, on_regression=lambda r: None)
    try:
        ctx = multiprocessing.get_context("fork")
        children = [ctx.Process(target=_child_calls, args=(db, n)) for n in (1, 3, 20)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
            assert child.exitcode == 0
    finally:
        _INHERITED.pop(db).close()
    store = open_store(db)
    assert store.report("flow")[0]["calls"] == 24
    store.close()


def _connect(url: str) -> Any:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        conn.execute("BEGIN")
        return conn
    import psycopg

    return psycopg.connect(url)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_flows_roll_up_follows_whoever_writes_the_hourly_one(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A version 3 database (hourly roll-up only) with hours of two flows and two prefixes each
    is brought to version 4: its flows' roll-up holds the hourly sums without the prefix. Then
    a writer of an older cachebench, which knows only the hourly roll-up, adds to it and
    retention deletes from it: the database's triggers keep the flows' roll-up equal, and the
    reports by flow, read from it, equal the reports by prefix summed."""
    from cachebench.store._rows import HOURLY_KEY, HOURLY_SPAN, HOURLY_SUMS
    from cachebench.store._schema import POSTGRES, SQLITE, STEPS, UPDATES

    url = f"sqlite:///{tmp_path / 'v3.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_db")
    dialect = SQLITE if kind == "sqlite" else POSTGRES
    cols = (*HOURLY_KEY, *HOURLY_SUMS, *HOURLY_SPAN)
    old_writer = dialect.sql(  # (version 3's upsert)
        f"INSERT INTO hourly ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(HOURLY_KEY)}) DO UPDATE SET {', '.join(UPDATES)}"
    )

    def hour_row(hour: int, flow: str, prefix: str, calls: int) -> tuple[Any, ...]:
        sums = [calls] + [0] * 5 + [calls * 10 + i for i in range(len(HOURLY_SUMS) - 6)]
        return (
            1_790_002_800 + hour * 3600,
            "anthropic",
            "claude-sonnet-4-5",
            flow,
            prefix,
            *sums,
            1_790_002_800.0 + hour * 3600 + calls,
            1_790_002_800.0 + hour * 3600 + 60 * calls,
        )

    conn = _connect(url)
    cur = conn.cursor()
    for step in (1, 2, 3):
        for statement in STEPS[step]:
            assert isinstance(statement, str)
            cur.execute(dialect.sql(statement))
    cur.execute(dialect.sql("INSERT INTO meta (key, value) VALUES ('schema_version', '3')"))
    rows = [
        hour_row(h, f, p, 1 + h + len(p)) for h in range(3) for f in ("chat", "triage") for p in ("a", "bb")
    ]
    cur.executemany(old_writer, rows)
    conn.commit()
    conn.close()

    def check(store: SQLStore) -> None:
        by_flow = {r["flow"]: r for r in store.report("flow")}
        by_prefix_flow: dict[str, int] = {}
        for flow in ("chat", "triage"):
            by_prefix_flow[flow] = sum(r["calls"] for r in store.report("prefix", flow=flow))
        assert {f: r["calls"] for f, r in by_flow.items()} == by_prefix_flow
        assert sum(r["calls"] for r in store.series(bucket_s=3600)) == sum(by_prefix_flow.values())
        conn = _connect(url)
        cur = conn.cursor()
        key = "hour, provider, model, flow"
        sums = ", ".join(f"SUM({s})" for s in HOURLY_SUMS)
        cur.execute(f"SELECT {key}, {sums} FROM hourly GROUP BY {key} ORDER BY {key}")
        hourly = [tuple(r) for r in cur.fetchall()]
        cur.execute(f"SELECT {key}, {sums} FROM hourly_flows WHERE calls > 0 GROUP BY {key} ORDER BY {key}")
        flows = [tuple(r) for r in cur.fetchall()]
        conn.close()
        assert hourly == flows

    store = open_store(url)
    assert store.schema_version == 4
    check(store)
    assert store.report("all")[0]["calls"] == sum(r[5] for r in rows)
    store.close()
    conn = _connect(url)  # an older cachebench's writer, and its retention
    cur = conn.cursor()
    cur.executemany(old_writer, [hour_row(1, "chat", "a", 7), hour_row(3, "chat", "ccc", 2)])
    cur.execute(dialect.sql("DELETE FROM hourly WHERE hour = ? AND prefix_id = 'bb'"), (1_790_002_800,))
    conn.commit()
    conn.close()
    store = open_store(url)
    check(store)
    store.close()


def test_a_tracker_writing_to_postgresql_reconnects_when_its_connection_is_cut(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the tracker's connection (as a restart does): the write that finds it
    gone fails (logged and counted, never raised), the connection is dropped, and the next
    write connects again and stores every call still pending. A reader's query that finds its
    connection cut raises, and the next one connects again."""
    import psycopg

    from cachebench import CacheTracker

    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)  # (a store failure is logged, as in use)
    store = open_store(postgres_db)
    tracker = CacheTracker(store=store, on_miss_alert=lambda m: None, on_regression=lambda r: None)

    def record(i: int) -> None:
        tracker.record(
            message({"input_tokens": 9, "output_tokens": 2}),
            request={
                "model": "claude-sonnet-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"q{i}"}],
            },
            provider="anthropic",
            flow="chat",
        )

    def cut() -> None:
        with psycopg.connect(postgres_db, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    for i in range(5):
        record(i)
    tracker.flush()
    reader = open_store(postgres_db)
    assert reader.count_calls() == 5
    cut()
    errors = tracker.internal_errors
    for i in range(5, 8):
        record(i)
    tracker.flush()  # (this write finds the connection gone)
    assert tracker.internal_errors == errors + 1
    for i in range(8, 10):
        record(i)
    tracker.flush()  # (this one connects again, and writes the calls the failed one kept)
    assert tracker.internal_errors == errors + 1
    with pytest.raises(psycopg.OperationalError):
        reader.count_calls()
    assert reader.count_calls() == 10
    tracker.close()
    reader.close()
