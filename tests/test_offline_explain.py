"""Offline explain: saved request bodies (no usage) in each provider's shape, replayed in time
order through the cache model and the tracker's diagnosis (``explain_requests``), and
``cachebench explain FILE`` as a process.

Expected values are written down from each scenario: token counts by the emulator's documented
estimate (ASCII text: ``ceil(chars / 4)``), byte ranges inside a block's canonical bytes (the
JSON ``[section, payload]``, so a system text starts after ``["system","``), prices pinned where
a cost is checked.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anthropic as anthropic_sdk
import pytest

from cachebench import CacheTracker
from cachebench.planner.offline import UNDATED_START, OfflineReport, explain_requests
from cachebench.testing import CacheEmulator

T0 = 1_790_000_000  # 2026-09-21T13:33:20Z
POLICY = "\n".join(f"Rule {i}: refunds over ${10 * i} need approval from a lead." for i in range(1, 200))
INTRO = "You are a support agent."
CLOCK = " Current time: "
STAMP_LEN = len("2026-09-22T10:00:00Z")
# Pinned prices (USD per million tokens): a write pays 3.75, a read 0.3.
PRICES = {
    "claude-sonnet-5": {
        "input": 3.0,
        "output": 15.0,
        "cache_read": 0.3,
        "cache_write": 3.75,
        "cache_write_1h": 6.0,
    }
}


def tokens(text: str) -> int:
    """The emulator's estimate of ASCII text: 4 characters a token, rounded up."""
    return math.ceil(len(text) / 4)


def system_text(i: int, deployed: bool) -> str:
    """The system prompt; after the deploy it carries the time of the request."""
    head = INTRO + CLOCK + f"2026-09-22T10:{i:02d}:00Z" if deployed else INTRO
    return head + "\n" + POLICY


SYSTEM_BEFORE = tokens(system_text(0, False))
SYSTEM_AFTER = tokens(system_text(0, True))
QUESTION = tokens("Where is order 1?")


def anthropic(i: int, deployed: bool) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 512,
        "system": [
            {"type": "text", "text": system_text(i, deployed), "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": f"Where is order {i}?"}],
    }


def openai(i: int, deployed: bool) -> dict[str, Any]:
    marked = {
        "type": "text",
        "text": system_text(i, deployed),
        "prompt_cache_breakpoint": {"mode": "explicit"},
    }
    return {
        "model": "gpt-5.6",
        "prompt_cache_options": {"mode": "explicit"},
        "messages": [
            {"role": "system", "content": [marked]},
            {"role": "user", "content": f"Where is order {i}?"},
        ],
    }


def converse(i: int, deployed: bool) -> dict[str, Any]:
    return {
        "modelId": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "system": [{"text": system_text(i, deployed)}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": f"Where is order {i}?"}]}],
        "inferenceConfig": {"maxTokens": 512},
    }


def gemini(i: int, deployed: bool) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": system_text(i, deployed)}]},
        "contents": [{"role": "user", "parts": [{"text": f"Where is order {i}?"}]}],
    }


def churning_deploy(body: Any, **wrapper: Any) -> list[dict[str, Any]]:
    """Six requests a minute apart (within every TTL); from the third on, the system prompt
    carries the current time."""
    return [
        {"request": body(i, i >= 2), "timestamp": T0 + 60 * i, "flow": "support", **wrapper} for i in range(6)
    ]


def write_jsonl(path: Path, lines: list[Any]) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


# -- a churning deploy, in each provider's shape ----------------------------------------------------


def test_a_churning_deploy_on_anthropic_names_the_timestamp_and_prices_it(tmp_path: Path) -> None:
    """A JSONL of Anthropic requests whose system prompt carries the time after a deploy: the
    first request writes, the second reads, the deploy itself is a one-off content change (not
    avoidable); every later request is ``prefix_changed`` at the timestamp (system block 0, the
    20 bytes after ``["system","`` and the text before the time), and all it wrote could have
    been read: avoidable, priced at a write's rate minus a read's."""
    path = write_jsonl(tmp_path / "requests.jsonl", churning_deploy(anthropic))
    report = explain_requests(path, prices=PRICES)
    rows = report.rows
    assert [(r.line, r.read, r.written, r.uncached) for r in rows] == [
        (1, 0, SYSTEM_BEFORE, QUESTION),
        (2, SYSTEM_BEFORE, 0, QUESTION),
        *((n, 0, SYSTEM_AFTER, QUESTION) for n in range(3, 7)),
    ]
    assert [r.miss_cause for r in rows] == ["cold", None, *["prefix_changed"] * 4]
    assert rows[2].diff is not None and rows[2].diff.kind == "content" and rows[2].avoidable_tokens == 0
    start = len('["system","') + len(INTRO + CLOCK)
    for r in rows[3:]:
        d = r.diff
        assert d is not None
        assert (d.section, d.block_index, d.byte_start, d.byte_end) == ("system", 0, start, start + STAMP_LEN)
        assert (d.kind, d.value_type) == ("volatile", "timestamp")
        assert r.avoidable_tokens == SYSTEM_AFTER
        assert r.avoidable_cost_usd == pytest.approx(SYSTEM_AFTER * (3.75 - 0.3) / 1e6)
        assert r.flow == "support" and r.provider == "anthropic" and r.model == "claude-sonnet-5"
        assert "timestamp" in r.explanation and "Fix: move the timestamp" in r.explanation
    by_cause = {c.cause: c for c in report.causes}
    assert list(by_cause) == ["prefix_changed", "cold"]  # most avoidable cost first
    changed = by_cause["prefix_changed"]
    assert (changed.calls, changed.avoidable_calls, changed.avoidable_tokens) == (4, 3, 3 * SYSTEM_AFTER)
    assert changed.unread_tokens == 4 * SYSTEM_AFTER
    assert changed.avoidable_cost_usd == pytest.approx(3 * SYSTEM_AFTER * 3.45 / 1e6)
    assert (by_cause["cold"].calls, by_cause["cold"].avoidable_tokens) == (1, 0)
    assert [r.line for r in report.misses] == [4, 5, 6]
    assert report.skipped == []


@pytest.mark.parametrize(
    ("body", "wrapper", "provider", "before", "after"),
    [
        # OpenAI GPT-5.6, explicit mode: the breakpoint on the system part; its canonical block is
        # [section, [role, text]].
        (openai, {}, "openai", '["system",["system","', "written"),
        # Bedrock Converse: a cache point after the system text; the block is {"text": ...}.
        (converse, {}, "bedrock", '["system",{"text":"', "written"),
        # Gemini 2.5: implicit caching, writes not reported; the model comes from the wrapper.
        (gemini, {"model": "gemini-2.5-flash"}, "gemini", '["system",{"text":"', "implicit"),
    ],
    ids=["openai", "bedrock-converse", "gemini"],
)
def test_a_churning_deploy_in_each_providers_shape(
    tmp_path: Path, body: Any, wrapper: dict[str, str], provider: str, before: str, after: str
) -> None:
    """The same deploy in OpenAI, Bedrock Converse and Gemini shapes, detected from the bodies:
    the requests after the deploy's first are ``prefix_changed`` at the timestamp in system
    block 0, and what they could have read is counted: all they wrote where writes are reported;
    on Gemini (no writes reported) the system prompt's tokens, estimated from byte shares."""
    path = write_jsonl(tmp_path / "requests.jsonl", churning_deploy(body, **wrapper))
    rows = explain_requests(path).rows
    assert [r.provider for r in rows] == [provider] * 6
    assert rows[1].read == SYSTEM_BEFORE  # the second request reads what the first wrote
    # Not read by the first: what it wrote; Gemini caches the whole prompt, question included.
    assert rows[0].unread_tokens == (SYSTEM_BEFORE if after == "written" else SYSTEM_BEFORE + QUESTION)
    assert [r.miss_cause for r in rows[2:]] == ["prefix_changed"] * 4
    start = len(before) + len(INTRO + CLOCK)
    for r in rows[3:]:
        d = r.diff
        assert d is not None
        assert (d.section, d.block_index, d.byte_start, d.byte_end) == ("system", 0, start, start + STAMP_LEN)
        assert (d.kind, d.value_type) == ("volatile", "timestamp")
        assert r.read == 0
        if after == "written":
            assert r.written == r.avoidable_tokens == SYSTEM_AFTER
        else:
            assert r.written == 0 and r.uncached == SYSTEM_AFTER + QUESTION
            assert abs(r.avoidable_tokens - SYSTEM_AFTER) <= SYSTEM_AFTER // 100
        assert r.avoidable_cost_usd is not None and r.avoidable_cost_usd > 0


# -- other causes -------------------------------------------------------------------------------------


def tools(order: str) -> list[dict[str, Any]]:
    """Three tools in the given order, the last one marked."""
    made = [
        {"name": n, "description": f"{n} orders. " * 300, "input_schema": {"type": "object"}} for n in order
    ]
    made[-1] = {**made[-1], "cache_control": {"type": "ephemeral"}}
    return made


def test_reordered_tools_are_named_and_avoidable() -> None:
    """The same tools sent in another order: ``prefix_changed`` with kind ``reordered`` at tools
    block 0, and everything the request wrote could have been read."""
    orders = ["abc", "abc", "bac"]
    bodies = [
        {
            "model": "claude-sonnet-5",
            "max_tokens": 64,
            "tools": tools(o),
            "messages": [{"role": "user", "content": "hi"}],
        }
        for o in orders
    ]
    rows = explain_requests([{"request": b, "timestamp": T0 + 60 * i} for i, b in enumerate(bodies)]).rows
    assert [r.miss_cause for r in rows] == ["cold", None, "prefix_changed"]
    d = rows[2].diff
    assert d is not None and (d.section, d.block_index, d.kind) == ("tools", 0, "reordered")
    assert rows[2].avoidable_tokens == rows[2].written > 0
    assert "sort the tools" in rows[2].explanation


def test_a_gap_longer_than_the_ttl_is_legitimate() -> None:
    """Requests at 0, 60 and 120 s read; one 400 s after the last (past the 5-minute TTL) is
    ``ttl_expired``: it writes again, and nothing of it is avoidable."""
    times = [0, 60, 120, 520]
    report = explain_requests(
        [{"request": anthropic(0, False), "timestamp": T0 + t} for t in times], prices=PRICES
    )
    rows = report.rows
    assert [(r.read, r.written, r.miss_cause) for r in rows] == [
        (0, SYSTEM_BEFORE, "cold"),
        (SYSTEM_BEFORE, 0, None),
        (SYSTEM_BEFORE, 0, None),
        (0, SYSTEM_BEFORE, "ttl_expired"),
    ]
    assert (rows[3].avoidable_tokens, rows[3].avoidable_cost_usd) == (0, 0.0)
    expired = next(c for c in report.causes if c.cause == "ttl_expired")
    assert (expired.calls, expired.unread_tokens, expired.avoidable_calls) == (1, SYSTEM_BEFORE, 0)
    assert report.misses == []


# -- input: order, time, shapes, bad lines ------------------------------------------------------------


def test_requests_are_replayed_in_time_order(tmp_path: Path) -> None:
    """Lines given newest first are replayed oldest first (the rows come in time order, each
    with its own line), with the same outcome as the input in order: as objects, as a file and
    as a gzip file (read again at the lines' offsets)."""
    lines = churning_deploy(anthropic)
    forward = [r.metrics for r in explain_requests(lines, prices=PRICES).rows]
    backward = explain_requests(lines[::-1], prices=PRICES)
    assert [r.line for r in backward.rows] == [6, 5, 4, 3, 2, 1]
    assert [r.metrics for r in backward.rows] == forward
    path = write_jsonl(tmp_path / "backward.jsonl", ["", *lines[::-1]])  # (a blank first line)
    packed = tmp_path / "backward.jsonl.gz"
    packed.write_bytes(gzip.compress(Path(path).read_bytes()))
    for source in (path, str(packed)):
        rows = explain_requests(source, prices=PRICES).rows
        assert [r.line for r in rows] == [7, 6, 5, 4, 3, 2]
        assert [r.metrics for r in rows] == forward


def test_requests_without_a_timestamp_are_spaced_by_the_interval() -> None:
    """Bare bodies (no wrapper): the first at ``start`` (default :data:`UNDATED_START`), each
    next one ``interval_s`` later; a 400 s interval puts every request past the 5-minute TTL."""
    bodies = [anthropic(0, False)] * 3
    rows = explain_requests(bodies).rows
    assert [r.metrics.timestamp for r in rows] == [UNDATED_START, UNDATED_START + 1, UNDATED_START + 2]
    assert [r.miss_cause for r in rows] == ["cold", None, None]
    rows = explain_requests(bodies, interval_s=400, start="2026-09-22T00:00:00Z").rows
    assert rows[0].metrics.timestamp == 1_790_035_200.0
    assert [r.miss_cause for r in rows] == ["cold", "ttl_expired", "ttl_expired"]


def test_bodies_as_json_text_and_a_single_body_are_requests_not_paths() -> None:
    """JSON text (a str or bytes that holds an object) is a body, in a list or alone, and so is
    one dict: each replays as the dict itself does."""
    body = anthropic(0, False)
    text = json.dumps(body)
    expected = [(r.metrics.cache_write_tokens, r.miss_cause) for r in explain_requests([body, body]).rows]
    for given in ([text, text], [text.encode(), body]):
        rows = explain_requests(given).rows
        assert [(r.metrics.cache_write_tokens, r.miss_cause) for r in rows] == expected
    for one in (body, text, "  " + text, text.encode()):
        report = explain_requests(one)
        assert not report.skipped
        assert [(r.metrics.cache_write_tokens, r.miss_cause) for r in report.rows] == expected[:1]


def test_the_arguments_name_provider_model_and_flow_where_lines_do_not() -> None:
    """A Gemini body names no model: ``model=`` gives it; ``flow=`` names the flow of requests
    whose wrapper names none (else ``provider/model``); JSON text lines are read too."""
    body = gemini(0, False)
    report = explain_requests(
        [json.dumps(body), {"request": body, "flow": "search"}], model="gemini-2.5-flash"
    )
    assert [(r.provider, r.model, r.flow) for r in report.rows] == [
        ("gemini", "gemini-2.5-flash", "gemini/gemini-2.5-flash"),
        ("gemini", "gemini-2.5-flash", "search"),
    ]
    named = explain_requests([body], model="gemini-2.5-flash", flow="search")
    assert named.rows[0].flow == "search"
    with pytest.raises(ValueError, match="unknown provider"):
        explain_requests([body], provider="cohere")
    with pytest.raises(ValueError, match="interval_s"):
        explain_requests([body], interval_s=-1)


def test_bad_lines_are_skipped_with_their_line_and_the_rest_is_explained(tmp_path: Path) -> None:
    """Bad JSON, a line that is not an object, a body of no known shape, a Gemini body without a
    model, a bad timestamp and a request the provider would refuse (five breakpoints) are each
    skipped with its file, line and reason; a blank line is no line; the good lines around
    them are explained (the last reads what the first wrote)."""
    refused = anthropic(0, False)
    refused["messages"] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"part {k}", "cache_control": {"type": "ephemeral"}}],
        }
        for k in range(4)
    ]
    path = write_jsonl(
        tmp_path / "requests.jsonl",
        [
            {"request": anthropic(0, False), "timestamp": T0},
            '{"request": ',
            '"just a string"',
            {"messages": [{"role": "user", "content": "hi"}]},
            {"request": gemini(0, False), "timestamp": T0 + 10},
            {"request": anthropic(0, False), "timestamp": "yesterday"},
            {"request": refused, "timestamp": T0 + 20},
            "",
            {"request": anthropic(1, False), "timestamp": T0 + 60},
        ],
    )
    report = explain_requests(path)
    assert [(s.line, s.source) for s in report.skipped] == [(n, path) for n in range(2, 8)]
    reasons = [s.reason for s in report.skipped]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1] == "not a JSON object but a string"
    assert reasons[2].startswith("cannot tell which provider")
    assert reasons[3].startswith("no model")
    assert reasons[4] == "timestamp 'yesterday' is not an ISO-8601 date and time"
    assert reasons[5].startswith("the provider would refuse it") and "cache_control" in reasons[5]
    assert str(report.skipped[0]).startswith(f"{path}:2: not valid JSON")
    assert [(r.line, r.read, r.written) for r in report.rows] == [
        (1, 0, SYSTEM_BEFORE),
        (9, SYSTEM_BEFORE, 0),
    ]


def test_a_gzip_file_and_several_files(tmp_path: Path) -> None:
    """A gzip-compressed JSONL reads as the plain one; several files are one replay in time
    order (the second file's request reads what the first file's wrote)."""
    lines = churning_deploy(anthropic)
    plain = write_jsonl(tmp_path / "a.jsonl", lines)
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(Path(plain).read_bytes()))
    assert [r.metrics for r in explain_requests(str(packed)).rows] == [
        r.metrics for r in explain_requests(plain).rows
    ]
    first = write_jsonl(tmp_path / "first.jsonl", lines[:1])
    second = write_jsonl(tmp_path / "second.jsonl", lines[1:2])
    rows = explain_requests([second, first]).rows
    assert [(r.source, r.read) for r in rows] == [(first, 0), (second, SYSTEM_BEFORE)]
    with pytest.raises(OSError):
        explain_requests(str(tmp_path / "missing.jsonl"))


def test_the_report_as_json_is_deterministic() -> None:
    """The same input gives the same JSON, byte for byte: the totals, the causes, the skipped
    lines and the rows with an avoidable miss (every row with ``all_rows``)."""
    lines = churning_deploy(anthropic)
    a, b = explain_requests(lines, prices=PRICES), explain_requests(lines, prices=PRICES)
    assert isinstance(a, OfflineReport)
    assert a.as_json() == b.as_json() and a.as_json(all_rows=True) == b.as_json(all_rows=True)
    data = json.loads(a.as_json())
    assert data["total"]["requests"] == 6 and data["total"]["avoidable_tokens"] == 3 * SYSTEM_AFTER
    assert [r["line"] for r in data["rows"]] == [4, 5, 6]
    assert data["rows"][0]["diff"]["value_type"] == "timestamp"
    assert len(json.loads(a.as_json(all_rows=True))["rows"]) == 6


def test_the_replay_needs_no_server_packages() -> None:
    """The core package runs offline explain with only its own dependencies: with starlette and
    uvicorn unimportable, the emulator's renderers still import and a request is explained."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from cachebench.planner import explain_requests\n"
        f"rows = explain_requests([{anthropic(0, False)!r}]).rows\n"
        "assert [r.miss_cause for r in rows] == ['cold']\n"
        "assert not any(m.startswith(('starlette', 'uvicorn')) for m in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_a_json_file_of_one_body_or_a_list_of_them(tmp_path: Path) -> None:
    """A .json file holding a list of requests (bodies or wrappers) is replayed as the JSON
    Lines file of the same requests is, every request on line 1; an entry that is no request is
    skipped with its index in the list; a pretty-printed .json file of one body is one request;
    a JSON Lines file under another name (.log) is read line by line."""
    lines = churning_deploy(anthropic)
    expected = explain_requests(write_jsonl(tmp_path / "requests.jsonl", lines)).rows
    listed = tmp_path / "requests.json"
    listed.write_text(json.dumps([*lines[:3], "not a request", *lines[3:]], indent=2))
    report = explain_requests(str(listed))
    assert [r.metrics for r in report.rows] == [r.metrics for r in expected]
    assert {(r.source, r.line) for r in report.rows} == {(str(listed), 1)}
    assert [str(s) for s in report.skipped] == [f"{listed}:1: request 3: not a JSON object but a string"]
    assert json.loads(report.as_json())["skipped"] == [
        {"source": str(listed), "line": 1, "index": 3, "reason": "not a JSON object but a string"}
    ]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(anthropic(0, False), indent=2))
    assert [(r.line, r.miss_cause) for r in explain_requests(str(one)).rows] == [(1, "cold")]
    log = Path(write_jsonl(tmp_path / "requests.log", lines))
    assert [(r.line, r.metrics) for r in explain_requests(str(log)).rows] == [
        (r.line, r.metrics) for r in expected
    ]


def test_a_file_that_cannot_be_read_at_all_raises(tmp_path: Path) -> None:
    """A JSON document that is not JSON, or a gzip stream cut short, is an OSError naming the
    file and why (not a skipped line)."""
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"model": "x"},\n oops]\n')
    with pytest.raises(
        OSError, match="^" + re.escape(f"{broken}: not valid JSON: ") + ".* at line 3, column 2$"
    ):
        explain_requests(str(broken))
    packed = gzip.compress(json.dumps([anthropic(0, False)] * 3).encode())
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(OSError, match=re.escape(str(cut))):
        explain_requests(str(cut))


def test_a_json_lines_file_cut_short_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    """A gzip JSON Lines file cut off mid-stream: every whole line before the cut is explained
    (as the same lines uncut are), and the rest is one skipped line saying where reading
    stopped; the command lists it and exits 0."""
    lines = [
        {"timestamp": 1_767_225_600 + 10 * i, "request": anthropic(0, False) | {"max_tokens": 10 + i}}
        for i in range(300)
    ]
    packed = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    report = explain_requests(str(cut))
    n = len(report.rows)
    assert 0 < n < 300
    whole = explain_requests(lines[:n])
    assert [r.metrics for r in report.rows] == [r.metrics for r in whole.rows]
    (skipped,) = report.skipped
    assert (skipped.source, skipped.line) == (str(cut), n + 1)
    assert skipped.reason.startswith(f"the file cannot be read past line {n} (")
    done = cli(str(cut))
    assert done.returncode == 0, done.stderr
    assert f"{cut}:{n + 1}: the file cannot be read past line {n}" in done.stdout


# -- the command line, as a process ---------------------------------------------------------------


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachebench", "explain", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CACHEBENCH_STRICT": "1", "PYTHONWARNINGS": "error", **(env or {})},
    )


def test_cli_explains_a_file(tmp_path: Path) -> None:
    """``cachebench explain requests.jsonl``: exit 0 with misses; a table per cause, one line per
    avoidable miss naming its place, kind and value, tokens and fix; skipped lines with their
    line; nothing on stderr; no store written (``CACHEBENCH_DB`` is not used)."""
    path = write_jsonl(tmp_path / "requests.jsonl", [*churning_deploy(anthropic), "{oops"])
    db = tmp_path / "never.db"
    done = cli(path, env={"CACHEBENCH_DB": str(db)})
    assert (done.returncode, done.stderr) == (0, "")
    out = done.stdout
    assert "Replayed 6 requests" in out and "1 line skipped" in out
    assert "Miss causes" in out and "prefix_changed" in out and "cold" in out
    start = len('["system","') + len(INTRO + CLOCK)
    place = f"prefix_changed at system block 0, bytes {start}-{start + STAMP_LEN} (volatile timestamp)"
    for n in (4, 5, 6):
        line = next(x for x in out.splitlines() if x.startswith(f"{path}:{n} "))
        assert (
            place in line
            and f"wrote {SYSTEM_AFTER:,}" in line
            and f"avoidable {SYSTEM_AFTER:,} tokens" in line
        )
        assert "Fix: move the timestamp" in line
    assert f"{path}:3 " not in out  # the deploy's one-off change is not avoidable
    assert f"{path}:7: not valid JSON" in out
    assert not db.exists()
    every = cli(path, "--all")
    assert every.returncode == 0 and all(f"{path}:{n} " in every.stdout for n in range(1, 7))


def test_cli_gives_each_request_the_fix_explain_gives_it(tmp_path: Path) -> None:
    """GPT-5.6 without a breakpoint of its own: each new question is a cold write of the
    system prompt, and the fix on its line is the one ``explain()`` names (a breakpoint), not
    "none needed"."""
    from cachebench import explain

    system = "You are the support agent of a bicycle shop. Answer briefly and politely. " * 120
    lines = [
        {
            "provider": "openai",
            "timestamp": 1_767_225_600 + 30 * i,
            "request": {
                "model": "gpt-5.6",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Question {i}"},
                ],
            },
        }
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "gpt.jsonl", lines)
    rows = explain_requests(path).rows
    assert [r.miss_cause for r in rows] == ["cold"] * 3
    fix = explain(rows[1].metrics).split(" Fix: ")[1]
    assert fix.startswith("put a prompt_cache_breakpoint")
    done = cli(path, "--all")
    assert done.returncode == 0, done.stderr
    for n in (1, 2, 3):
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"{path}:{n} "))
        assert line.endswith(f"Fix: {fix}")


def test_cli_json(tmp_path: Path) -> None:
    """``--json`` prints the report as JSON: totals, causes, skipped lines, avoidable rows."""
    path = write_jsonl(tmp_path / "requests.jsonl", churning_deploy(converse))
    done = cli(path, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    data = json.loads(done.stdout)
    assert data["total"]["requests"] == 6 and data["skipped"] == []
    assert data["causes"][0]["cause"] == "prefix_changed" and data["causes"][0]["avoidable_calls"] == 3
    assert [(r["line"], r["provider"], r["diff"]["kind"]) for r in data["rows"]] == [
        (n, "bedrock", "volatile") for n in (4, 5, 6)
    ]


def test_cli_errors(tmp_path: Path) -> None:
    """A missing request file: one line, exit 1. A bad option: a usage error, exit 2 (a negative
    interval, an unknown provider, a file option given with a call id)."""
    done = cli(str(tmp_path / "missing.jsonl"))
    assert done.returncode == 1 and done.stderr == f"cachebench: no such file: {tmp_path / 'missing.jsonl'}\n"
    path = write_jsonl(tmp_path / "requests.jsonl", churning_deploy(anthropic))
    for argv in ([path, "--interval", "-1"], [path, "--provider", "cohere"], ["42", "--all"]):
        done = cli(*argv)
        assert done.returncode == 2 and "Usage:" in done.stderr, argv
    done = cli(path, "--start", "soon")
    assert done.returncode == 2
    assert "Invalid value for --start: timestamp 'soon' is not an ISO-8601 date and time" in done.stderr


def test_cli_explains_a_json_list_of_bodies(tmp_path: Path) -> None:
    """``cachebench explain list.json`` where the file is a JSON array of request bodies (as
    ``lint`` and ``plan`` accept): exit 0, the same report as the JSON Lines file of the same
    requests but for the lines (every request on line 1)."""
    lines = churning_deploy(anthropic)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(lines))
    done = cli(str(listed), "--json")
    assert (done.returncode, done.stderr) == (0, "")
    expected = json.loads(cli(write_jsonl(tmp_path / "list.jsonl", lines), "--json").stdout)
    data = json.loads(done.stdout)
    assert data["total"] == expected["total"] and data["causes"] == expected["causes"]
    assert [r["line"] for r in data["rows"]] == [1, 1, 1]
    for row in expected["rows"]:
        row.update(source=str(listed), line=1)
    assert data["rows"] == expected["rows"]
    text = cli(str(listed))
    assert text.returncode == 0 and f"Replayed 6 requests from {listed}." in text.stdout


def test_cli_says_when_nothing_was_replayed(tmp_path: Path) -> None:
    """Nothing replayed is an input problem: an empty file says it holds no request, a file
    whose lines were all skipped says so with the first 3 reasons (and how many more); both
    exit 1 with nothing on stdout. With --json the report is printed and the exit code is 1
    too."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = cli(str(empty))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"cachebench: nothing to explain: no request in {empty}\n"

    bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops", "[1]", '"text"', "42"])
    done = cli(bad)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        f"cachebench: nothing to explain: all 4 lines were skipped ({bad}):",
        f"  {bad}:1: not valid JSON: unexpected character, expected a string key at column 2",
        f"  {bad}:2: not a JSON object but an array",
        f"  {bad}:3: not a JSON object but a string",
        "  ... and 1 more (--json lists them all)",
    ]
    as_json = cli(bad, "--json")
    assert as_json.returncode == 1 and as_json.stderr == done.stderr
    data = json.loads(as_json.stdout)
    assert (data["total"]["requests"], data["total"]["skipped"]) == (0, 4)

    one = write_jsonl(tmp_path / "one.jsonl", ["[1]"])
    assert cli(one).stderr == (
        f"cachebench: nothing to explain: the only line was skipped ({one}):\n"
        f"  {one}:1: not a JSON object but an array\n"
    )


def test_cli_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    """Every count is grammatical: one replayed request and one skipped line are 'Replayed 1
    request from ..., 1 line skipped.' (exit 0: a request was replayed); one avoidable miss
    is 'avoidable misses: 1 request, N tokens'; skipped entries of a JSON list are requests."""
    path = write_jsonl(tmp_path / "one.jsonl", [anthropic(0, False), "{oops"])
    done = cli(path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[:2] == [
        f"Replayed 1 request from {path}, 1 line skipped.",
        f"Read 0 tokens from the cache, wrote {SYSTEM_BEFORE:,}, {QUESTION:,} uncached; no avoidable miss.",
    ]
    assert "Skipped lines (1)" in done.stdout
    four = write_jsonl(tmp_path / "four.jsonl", churning_deploy(anthropic)[:4])
    out = cli(four).stdout
    assert f"avoidable misses: 1 request, {SYSTEM_AFTER:,} tokens, " in out
    assert "Requests with an avoidable miss (1)" in out
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([anthropic(0, False), 1, 2]))
    out = cli(str(listed)).stdout
    assert f"Replayed 1 request from {listed}, 2 requests skipped." in out and "Skipped requests (2)" in out


def test_a_refused_entry_of_a_json_list_is_named_by_its_index(tmp_path: Path) -> None:
    """In a JSON file holding a list of bodies, an entry the replay refuses (its provider
    cannot be told) is skipped as ``file:1: request 1: ...``, its index in the list."""
    path = tmp_path / "list.json"
    good = {
        "model": "claude-sonnet-5",
        "max_tokens": 5,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    path.write_text(json.dumps([good, {"hello": "there"}]))
    report = explain_requests(str(path))
    assert report.total()["requests"] == 1
    (skipped,) = report.skipped
    assert (skipped.line, skipped.index) == (1, 1)
    assert str(skipped).startswith(f"{path}:1: request 1: cannot tell which provider")


def _tiny_first_breakpoint_requests(n: int, start: float) -> list[dict[str, Any]]:
    """A system prompt whose first breakpoint marks a few tokens (far below the minimum: the
    provider ignores it) and whose second, after a fresh uuid, marks the policy."""
    policy = "Follow the refund policy carefully and answer briefly. " * 150
    rnd = random.Random(5)
    return [
        {
            "timestamp": start + 60 * i,
            "request": {
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "system": [
                    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "text",
                        "text": f"Request id: {uuid.UUID(int=rnd.getrandbits(128), version=4)}. {policy}",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
                "messages": [{"role": "user", "content": "Hi"}],
            },
        }
        for i in range(n)
    ]


def test_a_breakpoint_below_the_minimum_is_no_cache_entry(cache_emulator: CacheEmulator) -> None:
    """The provider ignores a breakpoint below the model's minimum: the tracker expects no read
    of it, so a uuid after it is named where it is (live, through the SDK on the emulator, and
    offline), not blamed on the provider."""
    wrappers = _tiny_first_breakpoint_requests(4, cache_emulator.clock())
    tracker = CacheTracker(clock=cache_emulator.clock)
    client = anthropic_sdk.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-tiny", max_retries=0
    )
    tracker.instrument(client)
    for w in wrappers:
        cache_emulator.advance(w["timestamp"] - cache_emulator.clock())
        client.messages.create(**w["request"])
    tracker.flush()
    offline = explain_requests(wrappers)
    for calls in (tracker.calls(), [row.metrics for row in offline.rows]):
        assert [m.miss_cause for m in calls] == ["cold", "prefix_changed", "prefix_changed", "prefix_changed"]
        assert not any(m.unexpected_miss for m in calls)
        for m in calls[1:]:
            assert m.expected_read_tokens == 0 and m.cache_read_tokens == 0
            assert m.diff is not None
            assert (m.diff.section, m.diff.block_index, m.diff.kind, m.diff.value_type) == (
                "system",
                1,
                "volatile",
                "uuid",
            )
    tracker.close()


def test_a_change_inside_a_layer_below_the_minimum_is_still_named() -> None:
    """The layer below the minimum is no cache entry, but a change in it changes every later
    layer: a timestamp in the tiny first block is named there (avoidable), and a model switch
    is a model change, as without the tiny breakpoint."""
    policy = "Follow the refund policy carefully and answer briefly. " * 150

    def body(model: str, first: str) -> dict[str, Any]:
        return {
            "model": model,
            "max_tokens": 100,
            "system": [
                {"type": "text", "text": first, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": policy, "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [{"role": "user", "content": "Hi"}],
        }

    stamped = [
        {
            "timestamp": 1_790_000_000 + 60 * i,
            "request": body("claude-sonnet-4-5", f"Now: 2026-09-21T13:{i:02d}:00Z. Be brief."),
        }
        for i in range(4)
    ]
    rows = explain_requests(stamped).rows
    assert [r.miss_cause for r in rows] == ["cold", "prefix_changed", "prefix_changed", "prefix_changed"]
    for r in rows[1:]:
        d = r.metrics.diff
        assert d is not None and (d.section, d.block_index, d.kind, d.value_type) == (
            "system",
            0,
            "volatile",
            "timestamp",
        )
        assert r.metrics.avoidable_cost_usd
    # An entry that expired behind the tiny block is an expiry (the tiny block, never an entry,
    # is not a cold layer).
    spaced = [
        {
            "timestamp": 1_790_000_000 + 600 * i,
            "flow": "support",
            "request": body("claude-sonnet-4-5", "Be brief."),
        }
        for i in range(2)
    ]
    assert [r.miss_cause for r in explain_requests(spaced).rows] == ["cold", "ttl_expired"]
    models = ["claude-sonnet-4-5"] * 3 + ["claude-opus-4-1"]  # (the same 1,024-token minimum)
    switched = [
        {"timestamp": 1_790_000_000 + 60 * i, "flow": "support", "request": body(model, "Be brief.")}
        for i, model in enumerate(models)
    ]
    assert [r.miss_cause for r in explain_requests(switched).rows] == ["cold", None, None, "model_changed"]
