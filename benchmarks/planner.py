"""The planner's figures (issue 14): lint of a 200,000-token request, offline explain of 100,000
saved requests, the volatile-value detector's false and true positives, and plan() time.

    python benchmarks/planner.py            (make bench-planner)
    python benchmarks/planner.py --quick    (a tenth of the saved requests; not the target's figure)

1. ``cachebench.lint`` of one Anthropic agent request of about 200,000 tokens: 24 tools, a
   system prompt of about 20,000 tokens of prose (1h breakpoint), and a conversation of tool
   calls and their JSON results with a breakpoint on the last assistant turn. Median of 9 runs.
2. ``cachebench.planner.explain_requests(path)`` over 100,000 saved requests (JSON Lines
   wrappers with a timestamp and a flow) of a multi-tenant support agent: shared tools and
   system prompt, each customer's context as its own cached layer, conversations of 1-4 turns,
   about 4.6 requests a second; halfway, a deploy puts the current time into the system prompt.
3. ``find_volatile`` over ``tests/corpus/ordinary_text.jsonl.gz`` (static prose: every block it
   flags is a false positive), per 10,000 blocks; then the same blocks with one volatile
   sentence inserted at a sentence boundary: the share where a hit covers the inserted value.
4. ``cachebench.plan`` of 20 sample requests (4 customers x 5 questions, one agent flow).
   Median of 5 runs.
"""

from __future__ import annotations

import argparse
import calendar
import gzip
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from _common import machine_line, verdict

import cachebench
from cachebench.planner import explain_requests, find_volatile, lint, plan
from cachebench.tokens import estimate_json

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus" / "ordinary_text.jsonl.gz"
MODEL = "claude-sonnet-4-5"
NOW = 1_796_644_800.0  # 2026-12-07T12:00:00Z: the requests' "now" (a fixed day: the same figures every run)
TARGET_LINT_MS = 50.0
TARGET_EXPLAIN_S = 10.0
CACHE_5M = {"type": "ephemeral"}
CACHE_1H = {"type": "ephemeral", "ttl": "1h"}
_SENTENCE_END = re.compile(r"[.!?] ")

_VOCABULARY = (
    "order customer refund shipment account invoice policy support agent request answer question "
    "return warranty delivery address payment card balance subscription plan upgrade product item "
    "store warehouse carrier tracking status escalate manager confirm verify identity document "
    "always never only before after within when unless because therefore however instead also "
    "the a an of to in on for with by from at as is are be must should may can will not "
    "clear brief polite exact friendly careful complete correct current previous next other"
)
WORDS = _VOCABULARY.split()


def prose(rnd: random.Random, words: int) -> str:
    """Sentences of 8-20 words, now and then a quantity (days, dollars, items): policy text."""
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        n = rnd.randint(8, 20)
        sentence = [rnd.choice(WORDS) for _ in range(n)]
        if rnd.random() < 0.25:
            sentence.insert(
                rnd.randrange(n), rnd.choice(("within 30 days", "over $50", "3 items", "48 hours"))
            )
        out.append(" ".join(sentence).capitalize() + ".")
    return " ".join(out)


# -- 1. lint of a 200,000-token request -------------------------------------------------------------


def tool(rnd: random.Random, i: int) -> dict[str, Any]:
    props = {
        f"field_{j}": {"type": rnd.choice(("string", "integer", "boolean")), "description": prose(rnd, 14)}
        for j in range(rnd.randint(3, 6))
    }
    return {
        "name": f"tool_{i:02d}",
        "description": prose(rnd, rnd.randint(60, 120)),
        "input_schema": {"type": "object", "properties": props, "required": sorted(props)[:2]},
    }


def tool_result(rnd: random.Random, turn: int) -> str:
    """A lookup's JSON result: records with ids, amounts, states and dates (of past orders)."""
    records = [
        {
            "order_id": f"A-{10000 + turn * 37 + k}",
            "status": rnd.choice(("shipped", "delivered", "returned", "processing")),
            "total": f"{rnd.randint(5, 900)}.{rnd.randint(0, 99):02d}",
            "items": [{"sku": f"SKU-{rnd.randint(1000, 9999)}", "qty": rnd.randint(1, 4)} for _ in range(3)],
            "placed_on": f"2026-{rnd.randint(1, 11):02d}-{rnd.randint(1, 28):02d}",
            "note": prose(rnd, 25),
        }
        for k in range(6)
    ]
    return orjson.dumps({"records": records, "count": len(records)}).decode()


def agent_request(tokens: int = 200_000, seed: int = 14) -> dict[str, Any]:
    """An Anthropic agent request of about ``tokens`` tokens (cachebench's own estimate)."""
    rnd = random.Random(seed)
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 2048,
        "tools": [tool(rnd, i) for i in range(24)],
        "system": [{"type": "text", "text": prose(rnd, 14_000), "cache_control": CACHE_1H}],
        "messages": [],
    }
    messages = body["messages"]
    used = estimate_json(body)
    turn = 0
    while used < tokens - 200:
        turn += 1
        call_id = f"toolu_{turn:04d}"
        pair = [
            {"role": "user", "content": prose(rnd, 30)},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": prose(rnd, 40)},
                    {
                        "type": "tool_use",
                        "id": call_id,
                        "name": f"tool_{turn % 24:02d}",
                        "input": {"field_0": "x"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call_id, "content": tool_result(rnd, turn)}
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": prose(rnd, 60)}]},
        ]
        messages += pair
        used += estimate_json(pair)
    messages[-1]["content"][-1]["cache_control"] = CACHE_5M
    messages.append({"role": "user", "content": "And the refund for the last one?"})
    return body


def prose_request(tokens: int = 200_000) -> dict[str, Any]:
    """A request whose system prompt is ``tokens`` tokens of the shipped corpus's ordinary text,
    a block a paragraph, all of it in the cached prefix: every block is scanned for values."""
    parts: list[dict[str, Any]] = []
    used = 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            text = orjson.loads(line)["text"]
            parts.append({"type": "text", "text": text})
            used += estimate_json(text)
            if used >= tokens:
                break
    parts[-1]["cache_control"] = CACHE_1H
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": parts,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def lint_figure() -> None:
    print("\n== 1. lint of a 200,000-token request ==")
    for label, request in (
        ("agent (tools, a long system prompt, a conversation of tool calls)", agent_request()),
        ("a system prompt of ordinary text, a block a paragraph, all cached", prose_request()),
    ):
        size = len(orjson.dumps(request))
        tokens = estimate_json(request)
        found = lint(request, now=NOW)
        times = []
        for _ in range(9):
            t0 = time.perf_counter()
            lint(request, now=NOW)
            times.append((time.perf_counter() - t0) * 1000)
        median = statistics.median(times)
        blocks = (
            len(request.get("tools", []))
            + len(request["system"])
            + sum(1 if isinstance(m["content"], str) else len(m["content"]) for m in request["messages"])
        )
        print(f"{label}: about {tokens:,} tokens, {size / 1024:,.0f} KB of JSON, {blocks:,} blocks")
        print(
            "  findings: "
            + (", ".join(f"{c} x{n}" for c, n in sorted(Counter(f.code for f in found).items())) or "none")
        )
        print(
            f"  lint: median {median:.1f} ms (min {min(times):.1f}, max {max(times):.1f}; 9 runs)   "
            f"target < {TARGET_LINT_MS:.0f} ms: {verdict(median < TARGET_LINT_MS)}"
        )


# -- 2. offline explain of 100,000 saved requests ---------------------------------------------------


def support_requests(n: int, seed: int = 7) -> list[tuple[float, dict[str, Any]]]:
    """``n`` requests of a support agent in time order: conversations of 1-4 turns from 60
    customers, starting about every 0.5 s and 30-90 s between turns; from the middle request
    on, the system prompt starts with the request's own time (the deploy)."""
    rnd = random.Random(seed)
    tools = [tool(rnd, i) for i in range(4)]
    policy = prose(rnd, 950)
    contexts = [f"Customer c-{c:03d}. " + prose(rnd, 110) for c in range(60)]
    start = NOW - 6 * 3600.0
    pending: list[
        tuple[float, int, int, int, list[dict[str, Any]]]
    ] = []  # (at, session, customer, turns left, history)
    out: list[tuple[float, dict[str, Any]]] = []
    session = 0
    clock = start
    deploy_at: float | None = None
    while len(out) < n:
        if not pending or pending[0][0] > clock:
            session += 1
            pending.append((clock, session, rnd.randrange(60), rnd.randint(1, 4), []))
            pending.sort()
            clock += rnd.expovariate(1 / 0.55)
            continue
        at, sid, customer, left, history = pending.pop(0)
        if deploy_at is None and len(out) >= n // 2:
            deploy_at = at
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
        system_text = (f"Current time: {stamp}. " if deploy_at is not None else "") + policy
        question = {"role": "user", "content": prose(rnd, 20)}
        messages = [*history, question]
        if history:  # the breakpoint on the last assistant turn
            last = dict(messages[-2])
            last["content"] = [{"type": "text", "text": last["content"], "cache_control": CACHE_5M}]
            messages[-2] = last
        body = {
            "model": MODEL,
            "max_tokens": 1024,
            "tools": tools,
            "system": [
                {"type": "text", "text": system_text, "cache_control": CACHE_1H},
                {"type": "text", "text": contexts[customer], "cache_control": CACHE_5M},
            ],
            "messages": messages,
        }
        out.append((at, body))
        if left > 1:
            answer = {"role": "assistant", "content": prose(rnd, 45)}
            pending.append((at + rnd.uniform(30, 90), sid, customer, left - 1, [*history, question, answer]))
            pending.sort()
    return out


def explain_figure(tmp: Path, n: int) -> None:
    print(f"\n== 2. offline explain of {n:,} saved requests ==")
    path = tmp / "requests.jsonl"
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for at, body in support_requests(n):
            f.write(orjson.dumps({"request": body, "timestamp": at, "flow": "support"}) + b"\n")
    print(f"file: {path.stat().st_size / 2**20:,.0f} MB, written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    report = explain_requests(str(path))
    elapsed = time.perf_counter() - t0
    total = report.total()
    assert total["requests"] == n and not report.skipped, (total, report.skipped[:3])
    causes = ", ".join(f"{c.cause} {c.calls:,}" for c in report.causes) if report.causes else "none"
    print(
        f"replayed {total['requests']:,} requests: read {total['read']:,}, written {total['written']:,}, "
        f"uncached {total['uncached']:,} tokens; avoidable {total['avoidable_calls']:,} calls"
    )
    print(f"miss causes: {causes}")
    print(
        f"explain_requests: {elapsed:.1f} s ({n / elapsed:,.0f} requests/s)   "
        f"target < {TARGET_EXPLAIN_S:.0f} s: {verdict(elapsed < TARGET_EXPLAIN_S) if n >= 100_000 else 'n/a (--quick)'}"
    )


# -- 3. the volatile-value detector ---------------------------------------------------------------


def inserted_value(rnd: random.Random) -> tuple[str, str, str]:
    """A kind of value that changes per request, a sentence holding one, and the value."""
    t = time.gmtime(NOW - rnd.uniform(0, 3 * 86400))
    iso, spaced = time.strftime("%Y-%m-%dT%H:%M:%SZ", t), time.strftime("%Y-%m-%d %H:%M:%S", t)
    day, epoch = time.strftime("%B %d, %Y", t), str(calendar.timegm(t))
    request_id, trace_id = f"req_{rnd.getrandbits(48):012x}", f"trace-{rnd.getrandbits(40):010x}"
    h = f"{rnd.getrandbits(128):032x}"
    uuid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
    attempt = str(rnd.randint(2, 9))
    return rnd.choice(
        [
            ("ISO time after a cue", f"Current time: {iso}.", iso),
            ("date and time", f"Generated at {spaced} UTC.", spaced),
            ("request id", f"Request ID: {request_id}.", request_id),
            ("UUID", f"Session {uuid} is active.", uuid),
            ("trace id", f"Trace id: {trace_id}.", trace_id),
            ("epoch seconds", f"Timestamp: {epoch}.", epoch),
            ("date after 'as of'", f"As of {day}, the policy below applies.", day),
            ("counter", f"This is attempt {attempt} of the task.", attempt),
        ]
    )


def detector_figure() -> None:
    print("\n== 3. the volatile-value detector ==")
    if not CORPUS.exists():
        print(f"no corpus at {CORPUS.relative_to(ROOT)}: skipped")
        return
    with gzip.open(CORPUS, "rb") as f:
        blocks = [orjson.loads(line)["text"] for line in f if line.strip()]
    t0 = time.perf_counter()
    flagged = [text for text in blocks if find_volatile(text, now=NOW)]
    scan = time.perf_counter() - t0
    size = sum(len(t) for t in blocks)
    per_10k = len(flagged) * 10_000 / len(blocks)
    print(
        f"{len(blocks):,} blocks of ordinary prose ({size / 2**20:.1f} MB); flagged {len(flagged):,}: "
        f"{per_10k:.1f} false positives per 10,000 blocks (scan {scan * 1000:.0f} ms, "
        f"{size / 2**20 / scan:.1f} MB/s)"
    )
    rnd = random.Random(3)
    found = 0
    missed: Counter[str] = Counter()
    for text in blocks:
        kind, sentence, value = inserted_value(rnd)
        cut = rnd.choice([0, *(m.end() for m in _SENTENCE_END.finditer(text))])
        mixed = text[:cut] + sentence + " " + text[cut:]
        lo = cut + sentence.index(value)
        hi = lo + len(value)
        if any(v.start < hi and lo < v.end for v in find_volatile(mixed, now=NOW)):
            found += 1
        else:
            missed[kind] += 1
    print(
        f"the same blocks, one volatile sentence each: {found:,} of {len(blocks):,} found "
        f"({100 * found / len(blocks):.1f}% true positives)"
    )
    if missed:
        print("missed, by kind: " + ", ".join(f"{k} {n}" for k, n in missed.most_common()))


# -- 4. plan() --------------------------------------------------------------------------------------


def plan_figure() -> None:
    print("\n== 4. plan() of 20 samples ==")
    rnd = random.Random(20)
    tools = [tool(rnd, i) for i in range(6)]
    policy = prose(rnd, 1500)
    samples = []
    for c in range(4):
        context = f"Customer c-{c:03d}. " + prose(rnd, 200)
        history: list[dict[str, Any]] = []
        for _ in range(5):
            question = {"role": "user", "content": prose(rnd, 20)}
            samples.append(
                {
                    "model": MODEL,
                    "max_tokens": 1024,
                    "tools": tools,
                    "system": [{"type": "text", "text": policy}, {"type": "text", "text": context}],
                    "messages": [*history, question],
                }
            )
            history = [*history, question, {"role": "assistant", "content": prose(rnd, 40)}]
    times = []
    result = plan(samples)
    for _ in range(5):
        t0 = time.perf_counter()
        plan(samples)
        times.append((time.perf_counter() - t0) * 1000)
    print(str(result))
    print(f"reads per sample: {', '.join(f'{r:,}' for r in result.reads)}")
    print(
        f"plan(): median {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f}; 5 runs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the saved requests")
    args = parser.parse_args()
    print(machine_line("orjson", orjson.__version__))
    print(f"cachebench {cachebench.__version__}")
    lint_figure()
    with tempfile.TemporaryDirectory(prefix="cachebench-bench-") as folder:
        explain_figure(Path(folder), 10_000 if args.quick else 100_000)
    detector_figure()
    plan_figure()
    return 0


if __name__ == "__main__":
    sys.exit(main())
