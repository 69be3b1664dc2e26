"""``make demo``: the multi-tenant support agent on the local emulator (examples/support_agent.py).

The demo is run as CI runs it (a subprocess of this interpreter, from the repository root) and
once in-process through its importable ``main(console)``, where this suite's warnings-as-errors
filter also covers the SDKs. Its report is parsed back into figures: per flow, the calls before
the deploy must read the cache far better than the calls after it, and the damage must be a
positive amount.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cachebench.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "support_agent.py"
FLOWS = {"support-chat": "anthropic", "ticket-triage": "openai"}
MONEY = r"-?\$[\d,]+\.\d+"
ROW = re.compile(
    rf"^\s*(?P<flow>[a-z-]+)\s+(?P<window>before|after)\s+(?P<calls>\d+)\s+"
    rf"(?P<hit>\d+)%\s+(?P<token_hit>\d+)%\s+(?P<read>[\d,]+)\s+(?P<written>[\d,]+)\s+(?P<uncached>[\d,]+)\s+"
    rf"(?P<cost>{MONEY})\s+(?P<without>{MONEY})\s+(?P<saved>{MONEY})\s+(?P<avoidable>{MONEY})\s*$",
    re.MULTILINE,
)
DAMAGE = re.compile(rf"Change: \+(?P<per_1000>{MONEY}) per 1,000 calls, \+(?P<per_day>{MONEY}) per day")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def money(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def figures(output: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(flow, "before" | "after") -> the row's figures, from the report's main table."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for m in ROW.finditer(ANSI.sub("", output)):
        rows[m["flow"], m["window"]] = {
            "calls": int(m["calls"]),
            "hit": int(m["hit"]) / 100,
            "read": int(m["read"].replace(",", "")),
            "written": int(m["written"].replace(",", "")),
            "cost": money(m["cost"]),
            "without": money(m["without"]),
            "saved": money(m["saved"]),
            "avoidable": money(m["avoidable"]),
        }
    return rows


def check_report(output: str) -> None:
    """The before/after figures every run must show (see the module docstring)."""
    rows = figures(output)
    assert set(rows) == {(flow, w) for flow in FLOWS for w in ("before", "after")}, output
    for flow in FLOWS:
        before, after = rows[flow, "before"], rows[flow, "after"]
        assert before["calls"] == after["calls"] > 0
        assert before["hit"] >= 0.6
        assert after["hit"] <= before["hit"] - 0.3, (flow, before, after)
        assert after["written"] > before["written"]
        assert after["saved"] < before["saved"]
        assert after["cost"] > before["cost"]
        assert after["avoidable"] > before["avoidable"] == 0
        assert before["saved"] == pytest.approx(before["without"] - before["cost"], abs=2e-6)
    text = ANSI.sub("", output)
    damage = DAMAGE.search(text)
    assert damage is not None, output
    assert money(damage["per_1000"]) > 0
    assert money(damage["per_day"]) > money(damage["per_1000"])
    # The tracker's own account, read back from the store: one prefix-churn incident per
    # flow, naming the system prompt, each with its id.
    lines = [line for line in text.splitlines() if re.match(r"^[0-9a-f]{12} prefix churn in ", line)]
    assert len(lines) == 2, output
    for flow in FLOWS:
        (line,) = [x for x in lines if f" prefix churn in {flow}, started " in x]
        assert re.match(r"^[0-9a-f]{12} prefix churn in ", line)
        assert ", detected " in line  # both times, labelled
        assert "system block 0, bytes " in line and ": a timestamp changed;" in line
        assert "; open. Why: a timestamp in the cached prefix" in line
        assert "Fix: move the timestamp after the last cache breakpoint" in line
    explained = [line for line in text.splitlines() if line.startswith("A call after ")]
    assert len(explained) == 1 and "(prefix_changed (system block 0, bytes " in explained[0], output
    for flow in FLOWS:
        (line,) = [x for x in text.splitlines() if x.startswith(f"{flow}: $")]
        assert money(line.split("avoidable misses cost ")[1].split(" after")[0]) > 0
    # It ends with the commands to run next, on its store.
    assert re.search(
        r"report --db \S*cachebench-demo\.db --compare-at \d{4}-\d\d-\d\dT09:13:20$", text, re.MULTILINE
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], float]:
    """``make demo``'s command, in a folder of its own (where it writes cachebench-demo.db)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=tmp_path_factory.mktemp("demo"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, time.monotonic() - start


def test_demo_script_exits_cleanly_within_a_minute(
    demo_run: tuple[subprocess.CompletedProcess[str], float],
) -> None:
    """The script exits 0 in well under a minute, with nothing on stderr (no traceback, no
    warning, no log line from cachebench's guard or from the emulator)."""
    done, seconds = demo_run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr == ""
    assert seconds < 45


def test_demo_script_reports_the_deploy_damage(
    demo_run: tuple[subprocess.CompletedProcess[str], float],
) -> None:
    """Both flows appear before and after the deploy: after it, the hit ratio is at least 30
    points lower, more is written, caching saves less and each call costs more; the damage per
    1,000 calls and per day is positive, and the tracker raised one prefix-churn incident per flow
    whose diff names the system prompt's first block."""
    done, _ = demo_run
    check_report(done.stdout)


def test_demo_main_in_process_is_deterministic(
    demo_run: tuple[subprocess.CompletedProcess[str], float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``main(console, db)`` returns 0 under warnings-as-errors and prints, on a 130-column
    console, the same tables as the script: the manual clock makes every figure reproducible.
    Its store holds every call, by provider as the flows were made (Claude for the chat, GPT for
    the triage), and a second run starts the store anew."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    demo = importlib.import_module(SCRIPT.stem)
    db = str(tmp_path / "demo.db")
    for _ in range(2):
        out = io.StringIO()
        assert demo.main(Console(file=out, width=130, color_system=None), db=db) == 0
    check_report(out.getvalue().replace(db, "cachebench-demo.db"))
    assert figures(out.getvalue()) == figures(demo_run[0].stdout)
    store = open_store(db)
    by_provider = {r["provider"]: r["calls"] for r in store.report("provider")}
    by_flow = {r["flow"]: r["calls"] for r in store.report("flow")}
    assert by_provider == {FLOWS[f]: n for f, n in by_flow.items()}
    assert sum(by_flow.values()) == store.count_calls() == 160
    store.close()
