"""``cachebench plan`` as a subprocess: the plan of a file of sample requests, as text and
JSON, with a traffic description, and the samples written back with the markers set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

POLICY = "You are the support agent of a bicycle shop. Answer briefly and politely. " * 60


def samples(tmp_path: Path) -> Path:
    path = tmp_path / "samples.jsonl"
    lines = []
    for customer in ("Ann", "Bob"):
        for question in ("Where is my order?", "Can I return it?"):
            body = {
                "model": "claude-sonnet-5",
                "max_tokens": 64,
                "system": [
                    {"type": "text", "text": POLICY},
                    {"type": "text", "text": f"Customer {customer}. " * 300},
                ],
                "messages": [{"role": "user", "content": question}],
            }
            lines.append(json.dumps(body))
    path.write_text("\n".join(lines) + "\n")
    return path


def cachebench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachebench", *args], capture_output=True, text=True, timeout=120
    )


def test_plan_prints_the_breakpoints_and_layers(tmp_path: Path) -> None:
    """Four samples of two customers: a breakpoint after the shared policy and one after each
    customer's block, with the layers under them."""
    run = cachebench("plan", str(samples(tmp_path)))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("anthropic claude-sonnet-5: 2 breakpoint(s), saves $")
    assert lines[1].startswith("  - system block 0 (5m): ") and "shared by all 4 samples" in lines[1]
    assert lines[2].startswith("  - system block 1 (5m): ") and "shared by 2 of 4 samples" in lines[2]
    assert [line.split(":")[0] for line in lines[3:]] == [
        "  layer blocks 0-0",
        "  layer blocks 1-1",
        "  layer blocks 2-2",
    ]


def test_plan_with_traffic_as_json_and_applied(tmp_path: Path) -> None:
    """At 3 calls an hour over 200 customers only the policy is marked, with a 1-hour TTL; the
    JSON is the plan's ``as_dict``; ``--apply`` writes each sample with that one marker."""
    out = tmp_path / "marked.jsonl"
    run = cachebench(
        "plan",
        str(samples(tmp_path)),
        "--calls-per-hour",
        "3",
        "--users",
        "200",
        "--json",
        "--apply",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["per_hour"] is True and plan["unit"] == "USD"
    assert [(b["section"], b["index"], b["ttl"]) for b in plan["breakpoints"]] == [("system", 0, "1h")]
    marked = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(marked) == 4
    for body in marked:
        assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert "cache_control" not in body["system"][1]


def test_plan_errors(tmp_path: Path) -> None:
    """A missing file and traffic options without a rate are usage errors (exit 2) with a
    message naming the problem."""
    run = cachebench("plan", str(tmp_path / "nope.jsonl"))
    assert run.returncode == 2 and "nope.jsonl: cannot be read" in run.stderr
    run = cachebench("plan", str(samples(tmp_path)), "--users", "3")
    assert run.returncode == 2 and "--calls-per-hour" in run.stderr


def test_apply_to_standard_output_keeps_the_plan_apart(tmp_path: Path) -> None:
    """``--apply -`` writes only the marked requests to standard output (one JSON object a
    line) and the plan to standard error, so the output can be piped into ``lint``."""
    run = cachebench("plan", str(samples(tmp_path)), "--apply", "-")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["model"] == "claude-sonnet-5" for line in lines)
    assert run.stderr.startswith("anthropic claude-sonnet-5: 2 breakpoint(s)")
