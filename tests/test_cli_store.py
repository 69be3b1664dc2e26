"""The commands that read and keep a store, on the demo's store: each through ``main(argv)``
(its output checked against the store's own queries), each once as a real process, and every
error as one line with a non-zero exit."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from rich.console import Console

from cachebench import CacheTracker
from cachebench.cli import main
from cachebench.store import open_store
from cachebench.testing import CacheEmulator

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).parent / "import_cases"
sys.path.insert(0, str(ROOT / "examples"))
import support_agent  # noqa: E402 (the demo: its start, and the deploy 800 s later)

sys.path.remove(str(ROOT / "examples"))
DEPLOY = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(support_agent.START + 800))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's store: 160 calls in two flows, a deploy at 09:13:20 that broke both."""
    db = str(tmp_path_factory.mktemp("demo") / "cachebench-demo.db")
    assert support_agent.main(Console(file=io.StringIO(), width=130), db=db) == 0
    return db


@pytest.fixture
def db(demo_db: str, tmp_path: Path) -> str:
    """A copy of the demo's store, for a test that changes it."""
    copy = tmp_path / "copy.db"
    shutil.copy(demo_db, copy)
    return str(copy)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- report ---------------------------------------------------------------------------------------


def test_report_json_is_the_store_report(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``report --json`` by each grouping is the store's report (and its total the sum of the
    rows); the table names every flow with its call count."""
    store = open_store(demo_db)
    for by in ("flow", "prefix", "model", "provider", "day"):
        code, out, err = run(["report", "--by", by, "--json", "--db", demo_db], capsys)
        assert code == 0 and err == ""
        data = json.loads(out)
        assert data["rows"] == json.loads(json.dumps(store.report(by)))
        assert data["total"]["calls"] == sum(r["calls"] for r in data["rows"]) == 160
    code, out, _ = run(["report", "--db", demo_db], capsys)
    assert code == 0
    for flow in ("support-chat", "ticket-triage"):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(flow)]
        assert line.split()[1] == "80"
    assert "total" in out and "avoidable" in out
    store.close()


def test_report_since_until_and_compare_at(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--since and --until take dates and times; --compare-at splits at the deploy: the two
    sides add up to the whole, and the table and the change line show."""
    code, out, _ = run(["report", "--json", "--db", demo_db, "--until", DEPLOY], capsys)
    before = json.loads(out)["total"]
    code, out, _ = run(["report", "--json", "--db", demo_db, "--since", DEPLOY], capsys)
    after = json.loads(out)["total"]
    assert before["calls"] == after["calls"] == 80
    code, out, _ = run(["report", "--json", "--db", demo_db, "--compare-at", DEPLOY], capsys)
    assert code == 0
    comp = json.loads(out)
    assert comp["before"]["total"] == before and comp["after"]["total"] == after
    assert comp["extra_per_call_usd"] > 0 and comp["example"]["miss_cause"] == "prefix_changed"
    code, out, _ = run(["report", "--db", demo_db, "--compare-at", DEPLOY], capsys)
    assert "before" in out and "after" in out and "Change: +$" in out
    # --top keeps the keys that cost the most over both sides; the totals still count all.
    code, out, _ = run(
        ["report", "--json", "--db", demo_db, "--compare-at", DEPLOY, "--by", "prefix"], capsys
    )
    whole = json.loads(out)
    code, out, _ = run(
        ["report", "--json", "--db", demo_db, "--compare-at", DEPLOY, "--by", "prefix", "--top", "1"], capsys
    )
    one = json.loads(out)
    cost: dict[Any, float] = {}
    for side in ("before", "after"):
        for r in whole[side]["rows"]:
            cost[r["prefix"]] = cost.get(r["prefix"], 0.0) + (r["cost_usd"] or 0.0)
    dearest = max(cost, key=lambda k: cost[k])
    for side in ("before", "after"):
        assert {r["prefix"] for r in one[side]["rows"]} <= {dearest}
        assert one[side]["total"] == whole[side]["total"]
        assert one[side]["more"] == len(whole[side]["rows"]) - len(one[side]["rows"])
    assert len(whole["before"]["rows"]) + len(whole["after"]["rows"]) > 2
    code, out, _ = run(["report", "--json", "--db", demo_db, "--since", "1h"], capsys)
    assert json.loads(out)["total"]["calls"] == 0  # the demo's clock is in the past


# -- regressions and explain ----------------------------------------------------------------------


def test_regressions_and_explain_each_incident(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``regressions`` lists the two incidents with their ids; ``explain ID`` of each gives
    the advice and the diff; --flow and --open filter."""
    code, out, _ = run(["regressions", "--json", "--db", demo_db], capsys)
    incidents = json.loads(out)
    assert code == 0 and {i["flow"] for i in incidents} == {"support-chat", "ticket-triage"}
    assert all(i["kind"] == "prefix_churn" and i["open"] for i in incidents)
    code, out, _ = run(["regressions", "--db", demo_db, "--flow", "support-chat"], capsys)
    assert out.startswith(
        incidents[0]["id"] if incidents[0]["flow"] == "support-chat" else incidents[1]["id"]
    )
    assert len([x for x in out.splitlines() if " prefix churn in " in x]) == 1
    code, out, _ = run(["regressions", "--db", demo_db, "--open", "--since", "1m"], capsys)
    assert out.strip() == "No incident."
    for i in incidents:
        code, out, _ = run(["explain", i["id"], "--db", demo_db], capsys)
        assert code == 0
        assert (
            "timestamp" in out and "diff: system block 0" in out and "kind volatile, value timestamp" in out
        )


def test_explain_a_call(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``explain N`` of the demo's last call: the call's line, why it missed, what it cost, the
    fix; --json has the call's fields and the explanation."""
    store = open_store(demo_db)
    last = store.calls(limit=1, newest=True)[0]
    store.close()
    code, out, _ = run(["explain", str(last.id), "--db", demo_db], capsys)
    assert code == 0 and out.startswith(f"{last.id}: ")
    assert "Missed the cache (prefix_changed" in out and "Fix: move the timestamp" in out
    code, out, _ = run(["explain", str(last.id), "--json", "--db", demo_db], capsys)
    data = json.loads(out)
    assert data["id"] == last.id and data["miss_cause"] == "prefix_changed"
    assert data["explanation"].startswith("Missed the cache")
    code, _, err = run(["explain", "999999", "--db", demo_db], capsys)
    assert code == 1 and err.strip().endswith(f"no call or incident '999999' in {demo_db}")


# -- tail and export ------------------------------------------------------------------------------


def test_tail_without_following(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["tail", "--no-follow", "-n", "3", "--db", demo_db], capsys)
    lines = out.splitlines()
    assert code == 0 and [x.split()[0] for x in lines] == ["158", "159", "160"]
    code, out, _ = run(
        ["tail", "--no-follow", "-n", "2", "--json", "--flow", "support-chat", "--db", demo_db], capsys
    )
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["flow"] for r in rows] == ["support-chat"] * 2 and rows[0]["id"] < rows[1]["id"]


def test_export_csv_and_jsonl(demo_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every stored call, in id order, as JSON Lines (stdout) and CSV (a file); --since cuts."""
    code, out, _ = run(["export", "--format", "jsonl", "--db", demo_db], capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == list(range(1, 161))
    target = tmp_path / "calls.csv"
    code, _, err = run(
        ["export", "--format", "csv", "-o", str(target), "--since", DEPLOY, "--db", demo_db], capsys
    )
    assert code == 0 and err.strip() == f"wrote 80 calls to {target}"
    with target.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 80 and table[0]["id"] == "81"
    assert {r["flow"] for r in table} == {"support-chat", "ticket-triage"}
    assert sum(int(r["cache_write_tokens"]) for r in table) == sum(
        r["cache_write_tokens"] for r in rows if r["id"] > 80
    )
    code, _, err = run(["export", "--format", "xml", "--db", demo_db], capsys)
    assert code == 2 and "csv, jsonl or trace" in err


# -- prune ---------------------------------------------------------------------------------------


def test_prune_deletes_old_calls_and_keeps_the_report(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's calls are from yesterday: ``prune --keep-calls 1h`` deletes them all and
    keeps their hours, so the report over all time is unchanged; a bad span is a usage error."""
    code, before, _ = run(["report", "--json", "--db", db], capsys)
    code, out, _ = run(["prune", "--keep-calls", "1h", "--json", "--db", db], capsys)
    assert code == 0 and json.loads(out) == {"calls": 160, "hours": 0, "incidents": 0}
    assert open_store(db).count_calls() == 0
    code, after, _ = run(["report", "--json", "--db", db], capsys)
    assert json.loads(after)["rows"] == json.loads(before)["rows"]
    # The deploy's hour is now kept only as sums: a comparison at the deploy counts it whole on
    # the side of its start (before), never twice, and says so.
    code, out, _ = run(["report", "--json", "--compare-at", DEPLOY, "--db", db], capsys)
    comp = json.loads(out)
    assert comp["before"]["exact"] is comp["after"]["exact"] is False
    assert comp["before"]["total"]["calls"] + comp["after"]["total"]["calls"] == 160
    code, out, _ = run(["report", "--compare-at", DEPLOY, "--db", db], capsys)
    assert "that hour counts whole, on the side of its start" in out
    code, _, err = run(["prune", "--keep-calls", "soon", "--db", db], capsys)
    assert code == 2 and "not a span" in err


# -- import ---------------------------------------------------------------------------------------


def test_import_each_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Saved-call records and both providers' batch pairs load into a new store, analysed: the
    stored calls' tokens are the responses' usage."""
    cases = [
        ["records.jsonl"],
        ["anthropic_batch_requests.jsonl", "anthropic_batch_results.jsonl"],
        ["openai_chat_batch_input.jsonl", "openai_chat_batch_output.jsonl"],
        ["openai_responses_batch_output.jsonl", "openai_responses_batch_input.jsonl"],
    ]
    for i, files in enumerate(cases):
        db = str(tmp_path / f"import{i}.db")
        code, out, err = run(["import", *(str(CASES / f) for f in files), "--json", "--db", db], capsys)
        assert code == 0, err
        done = json.loads(out)
        store = open_store(db)
        assert done["calls"] == store.count_calls() > 0
        assert all(c.metrics.usage_known for c in store.calls())
        store.close()


def test_import_reports_malformed_lines_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = (CASES / "records.jsonl").read_text().splitlines()
    lines = [good[0], "{not json", '{"request": {}}', *good[1:3], "[1, 2]"]
    saved = tmp_path / "saved.jsonl"
    saved.write_text("\n".join(lines) + "\n")
    db = str(tmp_path / "m.db")
    code, out, _ = run(["import", str(saved), "--db", db], capsys)
    assert code == 0
    assert out.splitlines()[0] == f"imported 3 calls into {db}; skipped 3 lines"
    assert [x.split(":")[1] for x in out.splitlines()[1:]] == ["2", "3", "6"]
    assert open_store(db).count_calls() == 3


def test_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "e.db")
    code, _, err = run(["import", str(tmp_path / "missing.jsonl"), "--db", db], capsys)
    assert code == 1 and err.count("\n") == 1 and "no such file" in err
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"hello": "world"}\n')
    code, _, err = run(["import", str(odd), "--db", db], capsys)
    assert code == 1 and err.count("\n") == 1 and str(odd) in err


def test_imported_and_live_analysis_agree(cache_emulator: CacheEmulator, tmp_path: Path) -> None:
    """Calls through the real Anthropic SDK, tracked live into one store and saved as JSON
    Lines by the application; the saved file imported into another store: the same calls (miss
    causes, diffs, costs), the same incidents and the same reports."""
    live_db = tmp_path / "live.db"
    tracker = CacheTracker(
        clock=cache_emulator.clock, store=live_db, on_miss_alert=lambda m: None, on_regression=lambda r: None
    )
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-agree", max_retries=0
    )
    create = tracker.wrap(client.messages.create, flow="agent")
    saved = tmp_path / "saved.jsonl"
    with saved.open("w") as log:
        for i in range(24):
            stamp = f"Current time: 2026-12-07 10:{i:02d}. " if i >= 12 else ""
            request: dict[str, Any] = {
                "model": "claude-sonnet-5",
                "max_tokens": 32,
                "system": [
                    {
                        "type": "text",
                        "text": stamp + "You help with orders. " * 300,
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
                "messages": [{"role": "user", "content": f"Order {i}?"}],
            }
            at = cache_emulator.clock()
            response = create(**request)
            log.write(
                json.dumps(
                    {"request": request, "response": response.model_dump(), "timestamp": at, "flow": "agent"}
                )
                + "\n"
            )
            cache_emulator.advance(20)
    client.close()
    tracker.close()
    imported_db = tmp_path / "imported.db"
    assert main(["import", str(saved), "--db", str(imported_db)]) == 0
    live, imported = open_store(live_db), open_store(imported_db)
    strip = {"elapsed_ms": None}
    assert [{**c.metrics.as_dict(), **strip} for c in imported.calls()] == [
        {**c.metrics.as_dict(), **strip} for c in live.calls()
    ]
    assert {c.metrics.miss_cause for c in live.calls()} >= {"cold", "prefix_changed"}
    assert [i.regression for i in imported.incidents()] == [i.regression for i in live.incidents()]
    assert len(live.incidents()) == 1
    assert imported.report("flow") == live.report("flow")


# -- errors ---------------------------------------------------------------------------------------


def test_store_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No such database, a schema from a newer cachebench, a file that is not a database: one
    line on stderr, exit code 1, and no database created by a typo."""
    missing = tmp_path / "nope.db"
    for argv in (
        ["report"],
        ["regressions"],
        ["tail", "--no-follow"],
        ["export"],
        ["prune"],
        ["explain", "1"],
    ):
        code, out, err = run([*argv, "--db", str(missing)], capsys)
        assert code == 1 and out == "" and err.count("\n") == 1 and "no such database" in err, argv
    assert not missing.exists()
    newer = tmp_path / "newer.db"
    open_store(str(newer)).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    code, _, err = run(["report", "--db", str(newer)], capsys)
    assert code == 1 and err.count("\n") == 1 and "schema version 7, newer than" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    code, _, err = run(["report", "--db", str(junk)], capsys)
    assert code == 1 and err.count("\n") == 1 and "not a SQLite database" in err


def test_bad_options_are_usage_errors(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, text in (
        (["report", "--by", "color"], "flow, prefix, model, provider or day"),
        (["report", "--since", "yesterday-ish"], "not a time"),
        (["tail", "-n", "-1"], "greater than or equal to 0"),
    ):
        code, _, err = run([*argv, "--db", demo_db], capsys)
        assert code == 2 and text in err, (argv, err)


def test_the_environment_names_the_database(
    demo_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CACHEBENCH_DB", demo_db)
    code, out, _ = run(["report", "--json"], capsys)
    assert code == 0 and json.loads(out)["total"]["calls"] == 160


# -- as real processes ----------------------------------------------------------------------------


def cli(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachebench", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


def test_every_command_as_a_process_on_the_demo_store(db: str, tmp_path: Path) -> None:
    """Each command once as a new process on the demo's store: exit 0, output on stdout,
    nothing on stderr (export -o and import say what they wrote there)."""
    incident = json.loads(cli("regressions", "--json", "--db", db).stdout)[0]["id"]
    saved = tmp_path / "export.jsonl"
    for argv in (
        ["report", "--by", "prefix"],
        ["report", "--compare-at", DEPLOY],
        ["regressions"],
        ["explain", "160"],
        ["explain", incident],
        ["tail", "--no-follow", "-n", "5"],
        ["export", "--format", "csv"],
        ["export", "-o", str(saved)],
        ["import", str(CASES / "records.jsonl")],
        ["prune", "--keep-calls", "400d"],
    ):
        done = cli(*argv, "--db", db)
        assert done.returncode == 0, (argv, done.stderr)
        assert done.stdout or argv[0] == "export", argv
        assert done.stderr == "" or argv[0] == "export", (argv, done.stderr)
    assert len(saved.read_text().splitlines()) == 160
    done = cli("report", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1 and done.stderr.startswith("cachebench: no such database")


def test_tail_follows_new_calls_until_interrupted(db: str) -> None:
    """``tail`` prints the last calls, then each call another process writes (their ids follow
    the last), and ends cleanly on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachebench", "tail", "-n", "1", "--interval", "0.1", "--json", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)  # a line that never comes fails the test, not the run
    watchdog.start()
    first = json.loads(proc.stdout.readline())
    assert first["id"] == 160
    tracker = CacheTracker(store=db, on_miss_alert=lambda m: None)
    for i in range(3):
        tracker.record(
            {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-5",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 5 + i, "output_tokens": 1},
            },
            request={
                "model": "claude-sonnet-5",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}],
            },
            provider="anthropic",
            flow="tailed",
        )
        tracker.flush()
    tracker.close()
    got = [json.loads(proc.stdout.readline()) for _ in range(3)]
    assert [g["id"] for g in got] == [161, 162, 163]
    assert [g["input_tokens"] for g in got] == [5, 6, 7] and {g["flow"] for g in got} == {"tailed"}
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    watchdog.cancel()
    assert proc.returncode == 0 and err == ""


def test_small_mistakes_get_clear_messages(
    demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A range the wrong way round, a folder given as the database, a bad CACHEBENCH_DB, and a
    password in a URL (never printed back)."""
    code, _, err = run(["report", "--since", "10m", "--until", "1h", "--db", demo_db], capsys)
    assert code == 2 and "--since (10m) must be before --until (1h)" in err
    code, _, err = run(["report", "--db", str(tmp_path)], capsys)
    assert code == 1 and "is a directory, not a database file" in err
    monkeypatch.setenv("CACHEBENCH_DB", "mysql://x")
    with pytest.raises(ValueError, match=r"the store CACHEBENCH_DB names: .*unknown scheme 'mysql'"):
        CacheTracker()
    monkeypatch.delenv("CACHEBENCH_DB")
    from cachebench._cli_store import shown

    assert shown("postgresql://cb:hunter2@db.example:5432/x") == "postgresql://cb:***@db.example:5432/x"


def test_a_file_is_not_imported_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Importing the same file again would count its calls twice: refused in one line, unless
    --force; a different file imports as usual."""
    db = str(tmp_path / "twice.db")
    saved = str(CASES / "records.jsonl")
    assert run(["import", saved, "--db", db], capsys)[0] == 0
    first = open_store(db).count_calls()
    code, _, err = run(["import", saved, "--db", db], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "this store imported the same file" in err and "--force" in err
    assert open_store(db).count_calls() == first
    assert run(["import", saved, "--force", "--db", db], capsys)[0] == 0
    assert open_store(db).count_calls() == 2 * first


def test_a_lines_own_flow_and_provider_come_before_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--flow and --provider fill in what a line does not say: a line's own flow and provider
    are kept; a line without a flow, given none, is in ``provider/model``; without --provider a
    line without one is the provider its response's shape tells, and with it (Bedrock
    InvokeModel's responses have Anthropic's shape) the one given. The count a second import
    names is of the calls the first one recorded (not of lines it skipped)."""
    request = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    response = {
        "type": "message",
        "model": "claude-sonnet-4-5",
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }
    chat = {
        "object": "chat.completion",
        "model": "gpt-4o",
        "usage": {"prompt_tokens": 9, "completion_tokens": 2},
    }
    lines = [
        {"request": request, "response": response, "flow": "faq"},
        {"request": request, "response": response},
        {
            "request": {"model": "gpt-4o", "messages": []},
            "response": chat,
            "provider": "openai",
            "flow": "bot",
        },
        {"request": request, "response": {"weird": True}},
    ]
    saved = tmp_path / "saved.jsonl"
    saved.write_text("".join(json.dumps(x) + "\n" for x in lines))
    db = str(tmp_path / "own.db")
    code, out, err = run(["import", str(saved), "--db", db], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == f"imported 3 calls into {db}; skipped 1 line"
    store = open_store(db)
    assert [(c.metrics.flow, c.metrics.provider) for c in store.calls()] == [
        ("faq", "anthropic"),
        ("anthropic/claude-sonnet-4-5", "anthropic"),
        ("bot", "openai"),
    ]
    store.close()
    code, _, err = run(["import", str(saved), "--db", db], capsys)
    assert code == 1 and ", 3 calls; importing it again" in err
    db2 = str(tmp_path / "given.db")
    code, _, err = run(
        ["import", str(saved), "--flow", "imported", "--provider", "bedrock", "--db", db2], capsys
    )
    assert code == 0, err
    store = open_store(db2)
    assert [(c.metrics.flow, c.metrics.provider) for c in store.calls()] == [
        ("faq", "bedrock"),
        ("imported", "bedrock"),
        ("bot", "openai"),
        ("imported", "bedrock"),
    ]
    store.close()


@pytest.mark.parametrize(
    "files",
    [
        ("anthropic_batch_requests.jsonl", "anthropic_batch_results.jsonl"),
        ("openai_chat_batch_input.jsonl", "openai_chat_batch_output.jsonl"),
    ],
)
def test_batch_calls_are_priced_at_the_batch_price(files: tuple[str, str], tmp_path: Path) -> None:
    """A batch API's calls cost half of the same calls made one by one (Anthropic's Message
    Batches and OpenAI's Batch API), cost without cache and saving included."""
    from cachebench.importing import SavedCall, read_saved

    paths = [CASES / f for f in files]
    store = open_store(str(tmp_path / "batch.db"))
    done = store.import_records(paths)
    imported = [c.metrics for c in store.calls()]
    store.close()
    live = CacheTracker(on_miss_alert=lambda m: None, on_regression=lambda r: None)
    one_by_one = []
    for saved in read_saved(paths):
        if isinstance(saved, SavedCall):
            m = live.record(
                saved.response, request=saved.request, provider=saved.provider, timestamp=saved.timestamp
            )
            assert m is not None
            one_by_one.append(m)
    live.close()
    if all(m.timestamp for m in imported):  # (OpenAI's have times of their own: imported in their order)
        one_by_one.sort(key=lambda m: m.timestamp)
    assert done.calls == len(imported) == len(one_by_one) > 0
    for batch, single in zip(imported, one_by_one, strict=True):
        assert single.cost_usd is not None and single.cost_usd > 0
        assert batch.cost_usd == pytest.approx(single.cost_usd / 2, abs=1e-9)
        assert batch.cost_without_cache_usd == pytest.approx(single.cost_without_cache_usd / 2, abs=1e-9)
        assert batch.cost_saved_usd == pytest.approx(single.cost_saved_usd / 2, abs=1e-9)


def test_report_top_keeps_the_most_expensive_rows(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--top N: the N most expensive rows, how many more there were, and the total over all."""
    code, out, _ = run(["report", "--by", "prefix", "--json", "--db", demo_db], capsys)
    every = json.loads(out)
    code, out, _ = run(["report", "--by", "prefix", "--top", "3", "--json", "--db", demo_db], capsys)
    three = json.loads(out)
    assert code == 0 and three["rows"] == every["rows"][:3] and three["more"] == len(every["rows"]) - 3
    assert three["total"] == every["total"] and three["total"]["calls"] == 160
    costs = [r["cost_usd"] for r in every["rows"]]
    assert costs == sorted(costs, reverse=True)
    code, out, _ = run(["report", "--by", "prefix", "--top", "3", "--db", demo_db], capsys)
    assert f"... {len(every['rows']) - 3:,} more" in out


def test_a_read_only_database_is_refused_by_its_writers_and_read_by_its_readers() -> None:
    """A store file its user cannot write (mode 444; when the tests run as root, who may write
    anything, the processes run without that capability, through util-linux's setpriv): a
    tracker is refused at construction with a StoreError, ``import`` and ``prune`` with one line
    and exit 1; ``report`` reads it."""
    import os
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="cachebench-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "ro.db"
        tracker = CacheTracker(store=str(db))
        tracker.record(
            {
                "type": "message",
                "model": "claude-sonnet-4-5",
                "usage": {"input_tokens": 9, "output_tokens": 2},
            },
            provider="anthropic",
            flow="chat",
        )
        tracker.close()
        db.chmod(0o444)
        saved = folder / "saved.jsonl"
        saved.write_text("")
        saved.chmod(0o444)
        caps = "-dac_override,-dac_read_search"
        limited = (
            ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--"] if os.geteuid() == 0 else []
        )
        script = (
            "from cachebench import CacheTracker\n"
            "from cachebench.store import StoreError\n"
            "try:\n"
            f"    CacheTracker(store={str(db)!r})\n"
            "except StoreError as exc:\n"
            "    print(exc)\n"
        )
        env = {**os.environ, "HOME": str(folder)}
        built = subprocess.run(
            [*limited, sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        assert built.returncode == 0, built.stderr
        assert built.stdout.strip() == (
            f"cachebench store sqlite:///{db}: the database cannot be written (read-only file or directory)"
        )
        for argv in (["prune", "--db", str(db)], ["import", "--db", str(db), str(saved)]):
            done = subprocess.run(
                [*limited, sys.executable, "-m", "cachebench", *argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert done.returncode == 1, (argv, done.stderr)
            assert done.stderr == (
                f"cachebench: store sqlite:///{db}: the database cannot be written (read-only file or directory)\n"
            ), argv
        report = subprocess.run(
            [*limited, sys.executable, "-m", "cachebench", "report", "--db", str(db), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert report.returncode == 0, report.stderr
        assert json.loads(report.stdout)["rows"][0]["calls"] == 1
        # A file that may be written in a directory that may not (SQLite makes its -wal there).
        db.chmod(0o644)
        folder.chmod(0o555)
        in_ro_dir = subprocess.run(
            [*limited, sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
        )
        assert in_ro_dir.stdout.strip().endswith(
            "the database cannot be written (read-only file or directory)"
        )
        folder.chmod(0o755)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
