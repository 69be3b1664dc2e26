"""Offline explain's fast paths: large files replayed in two processes (the reading process of
``cachebench.planner._replay_process``) give the report one process gives, and the renderer's
memo of repeated blocks gives the segments rendering them again gives.

The inputs are generated: a support agent's requests in each provider's shape, with flows,
scopes, bad lines and refused requests among them; the expected values are the one-process
report of the same input (the reference the suite pins elsewhere), compared whole.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cachebench.cachemodel import Segment
from cachebench.emulator import _render as render
from cachebench.emulator import _render_gemini as render_gemini
from cachebench.emulator import _render_openai as render_openai
from cachebench.planner import _replay_process
from cachebench.planner.offline import OfflineReport, explain_requests
from cachebench.tokens import estimate_block

T0 = 1_790_000_000
POLICY = " ".join(f"Rule {i}: refunds over ${10 * i} need a lead's approval." for i in range(1, 120))
TOOLS = [
    {
        "name": f"lookup_{k}",
        "description": f"Looks up record kind {k}. " * 8,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    for k in range(3)
]


def body(rnd: random.Random, i: int, customer: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request in one of the providers' shapes, and its wrapper's fields."""
    context = f"Customer c-{customer:02d} has {customer * 3} open orders."
    stamp = f" Now: 2026-09-22T10:{i % 60:02d}:{i % 7:02d}Z." if i % 5 == 0 else ""
    question = f"Where is order {rnd.randrange(10_000)}?"
    shape = i % 4
    if shape == 0:
        return {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "tools": TOOLS,
            "system": [
                {"type": "text", "text": POLICY + stamp, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": context, "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [{"role": "user", "content": question}],
        }, {"flow": "support", "scope": f"team-{customer % 3}"}
    if shape == 1:
        return {
            "model": "gpt-5.6",
            "tools": [{"type": "function", "function": t} for t in TOOLS],
            "messages": [
                {"role": "system", "content": POLICY + stamp},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": context}, {"type": "text", "text": question}],
                },
            ],
        }, {"flow": "triage"}
    if shape == 2:
        return {
            "modelId": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "system": [{"text": POLICY + stamp}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": question}]}],
        }, {}
    return {
        "systemInstruction": {"parts": [{"text": POLICY + stamp}]},
        "contents": [{"role": "user", "parts": [{"text": context + " " + question}]}],
    }, {"model": "gemini-2.5-flash", "flow": "search"}


def lines(n: int, *, seed: int = 5, shuffled: bool = False) -> list[str]:
    """``n`` lines a few seconds apart, every 97th one bad in its own way (not JSON, no shape,
    refused, no model); ``shuffled``: some requests come before their time."""
    rnd = random.Random(seed)
    out: list[str] = []
    refused = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": f"p{k}", "cache_control": {"type": "ephemeral"}}],
            }
            for k in range(5)
        ],
    }
    bad = [
        '{"request": ',
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"request": refused, "timestamp": T0}),
        json.dumps({"request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}),
    ]
    for i in range(n):
        if i % 97 == 50:
            out.append(bad[(i // 97) % len(bad)])
            continue
        request, wrapper = body(rnd, i, rnd.randrange(12))
        at = T0 + 3 * i + (rnd.choice((-40, 0, 0, 0)) if shuffled else 0)
        out.append(json.dumps({"request": request, "timestamp": at, **wrapper}))
    return out


def write(path: Path, text_lines: list[str]) -> str:
    data = ("\n".join(text_lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def explained(monkeypatch: pytest.MonkeyPatch, requests: Any, *, processes: int) -> OfflineReport:
    """The report of ``requests`` in one process, or in two (checking the child ran)."""
    started: list[_replay_process.ReplayProcess | None] = []
    start = _replay_process.ReplayProcess.start

    def spy(job: _replay_process.Job) -> _replay_process.ReplayProcess | None:
        started.append(start(job))
        return started[-1]

    monkeypatch.setattr(_replay_process.ReplayProcess, "start", staticmethod(spy))
    monkeypatch.setattr(_replay_process, "MIN_BYTES", 0 if processes == 2 else 1 << 62)
    report = explain_requests(requests)
    assert (len(started), all(p is not None for p in started)) == ((1, True) if processes == 2 else (0, True))
    for p in started:
        assert p is not None and p.returncode == 0
    return report


def same_reports(a: OfflineReport, b: OfflineReport) -> None:
    assert a.as_json(all_rows=True) == b.as_json(all_rows=True)
    assert [(r.source, r.line, r.unread_tokens, r.metrics) for r in a.rows] == [
        (r.source, r.line, r.unread_tokens, r.metrics) for r in b.rows
    ]
    assert a.skipped == b.skipped


# -- two processes -----------------------------------------------------------------------------------


def test_two_processes_give_the_report_one_process_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of 2,000 requests in time order (four providers' shapes, flows, scopes, bad and
    refused lines) gives, replayed in two processes, the report one process gives: every row
    with its metrics, diff and unread tokens, in the same order, and the same skipped lines."""
    path = write(tmp_path / "requests.jsonl", lines(2_000))
    one = explained(monkeypatch, path, processes=1)
    two = explained(monkeypatch, path, processes=2)
    same_reports(one, two)
    assert (len(one.rows), len(one.skipped)) == (1_979, 21)
    assert {r.miss_cause for r in one.rows} >= {None, "cold", "prefix_changed"}


def test_files_out_of_time_order_are_read_again_in_two_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several files (one gzip) whose requests are not in time order are replayed in time order
    through a new cache model, the lines read again at their offsets: the same report in two
    processes as in one, the skipped lines in input order (file by file)."""
    paths = [
        write(tmp_path / "a.jsonl.gz", lines(700, seed=1, shuffled=True)),
        write(tmp_path / "b.jsonl", lines(700, seed=2, shuffled=True)),
    ]
    one = explained(monkeypatch, paths, processes=1)
    two = explained(monkeypatch, paths, processes=2)
    same_reports(one, two)
    assert [s.source for s in one.skipped] == [paths[0]] * 7 + [paths[1]] * 7
    assert [r.metrics.timestamp for r in one.rows] == sorted(r.metrics.timestamp for r in one.rows)


def test_small_inputs_and_objects_stay_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``MIN_BYTES`` (a gzip file counted by the size its trailer gives), and for request
    objects whatever their number, no process is started."""
    text = lines(300)
    plain = write(tmp_path / "small.jsonl", text)
    packed = write(tmp_path / "small.jsonl.gz", text)
    assert (
        _replay_process.input_bytes([packed])
        == _replay_process.input_bytes([plain])
        == os.path.getsize(plain)
    )
    assert _replay_process.input_bytes([plain, str(tmp_path / "missing.jsonl")]) == 0
    assert os.path.getsize(plain) < _replay_process.MIN_BYTES

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(_replay_process.subprocess, "Popen", no_process)
    assert len(explain_requests(plain).rows) == len(explain_requests(packed).rows) == 300 - 3
    assert len(explain_requests([json.loads(x) for x in text[:40]]).rows) == 40


def test_an_error_in_the_reading_process_is_raised_as_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be read at all (a gzip stream damaged in its first line), after a
    file of good lines, raises in two processes what it raises in one: the same exception type
    and message (an OSError), with the child's traceback as a note. A gzip file damaged after
    its first lines gives the same report in both: those lines, then one skipped line."""
    good = write(tmp_path / "good.jsonl", lines(400))
    data = gzip.compress(("\n".join(lines(400)) + "\n").encode())
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(data[:12] + b"\x00" * 64 + data[76:])
    errors = []
    for processes in (1, 2):
        with pytest.raises(OSError) as raised:
            explained(monkeypatch, [good, str(broken)], processes=processes)
        errors.append(raised.value)
    assert str(broken) in str(errors[0])
    assert (type(errors[1]), str(errors[1])) == (type(errors[0]), str(errors[0]))
    assert any("reading process" in note for note in getattr(errors[1], "__notes__", []))
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(data[: len(data) // 2] + b"\x00" * 64 + data[len(data) // 2 + 64 :])
    one, two = (explained(monkeypatch, str(damaged), processes=n) for n in (1, 2))
    same_reports(one, two)
    assert 0 < len(one.rows) < 400
    last = one.skipped[-1]  # (before it, lines the damaged bytes garbled, if any)
    assert last.reason.startswith(f"the file cannot be read past line {last.line - 1} (")


def test_a_reading_process_that_dies_is_a_clear_error(tmp_path: Path) -> None:
    """A child that ends without a word (killed) raises RuntimeError naming its exit code."""
    path = write(tmp_path / "requests.jsonl", lines(400))
    process = _replay_process.ReplayProcess.start(_replay_process.Job([path], None, None, float(T0), 1.0))
    assert process is not None
    try:
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"ended without a word \(exit code -9\)"):
            for _ in process.phase():
                pass
    finally:
        process.close()
    assert process.returncode == -9


def test_an_interrupt_stops_the_reading_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt while the engine records (KeyboardInterrupt on the consumer) is raised to
    the caller, and the child has ended when ``explain_requests`` returns."""
    from cachebench.planner import offline

    path = write(tmp_path / "requests.jsonl", lines(2_000))
    started: list[_replay_process.ReplayProcess] = []
    start = _replay_process.ReplayProcess.start

    def spy(job: _replay_process.Job) -> _replay_process.ReplayProcess | None:
        process = start(job)
        assert process is not None
        started.append(process)
        return process

    replayed = offline._Session.replayed
    calls = []

    def interrupted(self: Any, item: Any) -> None:
        calls.append(1)
        if len(calls) == 100:
            raise KeyboardInterrupt
        replayed(self, item)

    monkeypatch.setattr(_replay_process.ReplayProcess, "start", staticmethod(spy))
    monkeypatch.setattr(_replay_process, "MIN_BYTES", 0)
    monkeypatch.setattr(offline._Session, "replayed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        explain_requests(path)
    assert len(calls) == 100 and started[0].returncode is not None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to one process")
def test_ctrl_c_stops_both_processes(tmp_path: Path) -> None:
    """SIGINT to a process replaying in two (as Ctrl-C sends it), while it replays: it ends with
    KeyboardInterrupt within seconds, and its reading process has ended too (it ignores SIGINT:
    the parent stops it)."""
    path = write(tmp_path / "requests.jsonl", lines(3_000))
    code = textwrap.dedent(
        f"""
        from cachebench.planner import _replay_process, explain_requests
        _replay_process.MIN_BYTES = 0
        start = _replay_process.ReplayProcess.start
        def spy(job):
            process = start(job)
            print(process.pid, flush=True)
            return process
        _replay_process.ReplayProcess.start = staticmethod(spy)
        while True:  # (until interrupted, however fast one replay is)
            explain_requests({path!r})
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    children = [int(proc.stdout.readline())]
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    children += [int(pid) for pid in out.split()]
    assert proc.returncode != 0 and err.rstrip().endswith("KeyboardInterrupt")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # (a zombie has ended)
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


# -- the renderer's memo -------------------------------------------------------------------------------


def rendered_bodies() -> list[render.Rendered]:
    rnd = random.Random(3)
    out = []
    for i in range(60):
        request, _ = body(rnd, i, i % 5)
        shape = i % 4
        if shape == 0:
            # The same text marked 5m, 1h and not at all; a tool_use / tool_result turn.
            request["messages"] = [
                {"role": "user", "content": [{"type": "text", "text": POLICY}]},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "lookup_0", "input": {"id": "7"}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": POLICY}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
                    ],
                },
                *request["messages"],
            ]
            if i % 8 == 0:
                request["tool_choice"] = {"type": "auto"}  # rendered into the first message
            out.append(render.anthropic(request))
        elif shape == 1:
            out.append(render_openai.chat(request))
            out.append(render_openai.responses({"model": "gpt-5.6", "instructions": POLICY, "input": "hi"}))
        elif shape == 2:
            out.append(render.converse(request))
        else:
            out.append(render_gemini.gemini(request))
    return out


def test_the_memo_gives_the_segments_rendering_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies of every wire family rendered with an empty memo, again from the memo, and with
    no memo at all, give the same segments, sections and turns: a block met again under another
    ttl or kind gets its own ttl and kind, and the settings rendered into the first message are
    part of the bytes the memo is keyed by."""
    render.MEMO.clear()
    first = rendered_bodies()
    again = rendered_bodies()
    monkeypatch.setattr(render.MEMO, "max_bytes", 0)
    render.MEMO.clear()
    without = rendered_bodies()
    assert len(render.MEMO) == 0
    assert first == again == without
    segments = [s for r in first for s in r.segments]
    assert {s.ttl for s in segments} >= {None, "5m", "1h"} and {s.kind for s in segments} >= {
        "text",
        "tool_use",
        "tool_result",
    }


@dataclasses.dataclass
class TextObject:
    type: str
    text: str


def test_values_that_are_not_json_never_share_an_entry() -> None:
    """A block that is no plain JSON value (an SDK object) renders to the same bytes as the dict
    it dumps as, but its estimate is its own: it is never taken from, nor put in, the memo."""
    render.MEMO.clear()
    plain = {"type": "text", "text": "hello there"}
    obj = TextObject("text", "hello there")
    assert estimate_block(plain) != estimate_block(obj)
    b = render.Builder()
    b.add("user", plain)
    b.add("user", obj)
    b.add("user", plain)
    a, o, again = b.done().segments
    assert a.digest == o.digest == again.digest
    assert (a.tokens, o.tokens, again.tokens) == (
        estimate_block(plain),
        estimate_block(obj),
        estimate_block(plain),
    )
    assert len(render.MEMO) == 1


def test_the_memo_is_bounded() -> None:
    """The memo is emptied when it would hold more than ``max_blocks`` blocks or ``max_bytes``
    bytes of them; a block larger than ``max_bytes`` is never kept."""
    memo = render.SegmentMemo(max_bytes=100, max_blocks=3)
    seg = Segment(b"d" * 8, 1)
    for k in range(10):
        memo.put(b"%d" % k, seg)
        assert 1 <= len(memo) <= 3
    memo.put(b"x" * 101, seg)
    assert memo.get(b"x" * 101) is None
    memo.clear()
    for k in range(3):
        memo.put(bytes([k]) * 40, seg)
    assert len(memo) == 1 and memo.get(bytes([2]) * 40) is seg  # (the third would pass 100 bytes)


def test_the_memo_is_shared_by_threads() -> None:
    """Several threads rendering at once (the emulator's server) through one small memo that
    keeps emptying get the segments one thread gets."""
    render.MEMO.clear()
    expected = rendered_bodies()
    small = render.SegmentMemo(max_bytes=20_000, max_blocks=16)
    results: list[list[render.Rendered]] = []
    original = render.MEMO
    render.MEMO = small
    try:
        threads = [threading.Thread(target=lambda: results.append(rendered_bodies())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        render.MEMO = original
    assert results == [expected] * 4
