"""cachebench overhead benchmark: per-call cost, fingerprint throughput, retained memory.

Run from the repository root (``make bench`` does the same)::

    .venv/bin/python benchmarks/overhead.py            # everything, about 2 minutes on 2 cores
    .venv/bin/python benchmarks/overhead.py --no-seed  # skip the side-by-side with cachebench 0.1.0
    .venv/bin/python benchmarks/overhead.py --quick    # a smoke run (10x fewer iterations and calls)

It prints figures with their targets (``ok`` / ``MISSED``) and exits 0; no timing is asserted.
What each figure means: ``benchmarks/README.md``.

The tracker runs with its guard strict (``CACHEBENCH_STRICT=1``) so an internal error raises
here instead of being swallowed, which would make the tracker look faster than it is. The
script also checks that the timed calls were recorded correctly; only a broken tracker makes
it exit non-zero.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ["CACHEBENCH_STRICT"] = "1"  # read at tracker construction: internal errors raise here

import anthropic
import orjson
from _common import machine_line, verdict
from anthropic.types import Message

from cachebench import CacheTracker
from cachebench._flow import default_flow
from cachebench.diagnose import FlowDetector, miss_cause
from cachebench.engine import QUEUE_LIMIT
from cachebench.fingerprint import key as prefix_key
from cachebench.providers import adapter_for
from cachebench.stats import Stats
from cachebench.types import CallMetrics

HERE = Path(__file__).resolve().parent
SEED_VENV = HERE / ".seed-venv"
SEED_SPEC = "cachebench==0.1.0"
MODEL = "claude-sonnet-4-5"

TARGET_CALLER_US = 15.0
TARGET_CALLER_P99_US = 40.0
TARGET_CALLER_VS_SEED = 2.5
TARGET_CONSUMER_RATE = 20_000
BATCH = 100  # timed calls between two flushes (see bench_overhead)
TARGET_GBPS = 2.0
TARGET_VS_SEED = 6.0
TARGET_MEMORY_MB = 64.0
TARGET_DETECTOR_US = 5.0
FLOWS = 10_000

ADAPTER = adapter_for("anthropic")
_rnd = random.Random(20_26)
_WORDS = [
    "".join(_rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rnd.randint(2, 10)))
    for _ in range(3000)
]


# -- helpers -------------------------------------------------------------------------------


def text(n_bytes: int, rnd: random.Random) -> str:
    """Deterministic prose-like ASCII text of about ``n_bytes`` bytes."""
    out: list[str] = []
    size = 0
    while size < n_bytes:
        w = rnd.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_each(fn: Callable[[], Any], iterations: int, warmup: int) -> list[int]:
    """Per-iteration wall times in ns, gc disabled during the timed loop."""
    for _ in range(warmup):
        fn()
    return time_pairs(fn, _ignore, iterations)[0]


def _ignore(_: Any) -> None:
    return None


def time_pairs(
    first: Callable[[], Any], second: Callable[[Any], Any], iterations: int, *, collect: bool = True
) -> tuple[list[int], list[int]]:
    """Wall times in ns of ``x = first()`` and ``second(x)``, back to back, gc disabled (and
    a full collection first, unless ``collect`` is False: a collection walks the whole heap,
    so the calls right after it run on cold caches)."""
    a = [0] * iterations
    b = [0] * iterations
    clock = time.perf_counter_ns
    if collect:
        gc.collect()
    gc.disable()
    try:
        for i in range(iterations):
            t0 = clock()
            x = first()
            t1 = clock()
            second(x)
            t2 = clock()
            a[i] = t1 - t0
            b[i] = t2 - t1
    finally:
        gc.enable()
    return a, b


def message(usage: dict[str, Any]) -> Message:
    return Message.model_validate(
        {
            "id": "msg_01bench",
            "type": "message",
            "role": "assistant",
            "model": f"{MODEL}-20250929",
            "content": [{"type": "text", "text": "Sure, here is the summary you asked for."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


# -- 1. per-call overhead ------------------------------------------------------------------


def request_15kb() -> dict[str, Any]:
    """A typical agent request: tools, a cached system prompt, a short conversation (~15 KB)."""
    rnd = random.Random(15)
    tools = [
        {
            "name": f"tool_{i}",
            "description": text(600, rnd),
            "input_schema": {
                "type": "object",
                "properties": {
                    f"arg_{j}": {"type": "string", "description": text(80, rnd)} for j in range(4)
                },
                "required": ["arg_0"],
            },
        }
        for i in range(6)
    ]
    system = [
        {"type": "text", "text": text(2500, rnd)},
        {"type": "text", "text": text(3500, rnd), "cache_control": {"type": "ephemeral"}},
    ]
    messages: list[dict[str, Any]] = []
    for i in range(6):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [{"type": "text", "text": text(500, rnd)}]})
    messages.append({"role": "user", "content": "And what about the second invoice?"})
    return {"model": MODEL, "max_tokens": 1024, "tools": tools, "system": system, "messages": messages}


def bench_overhead(iterations: int, with_seed: bool) -> None:
    print("\n== 1. Tracker overhead per call ==")
    request = request_15kb()
    size = len(orjson.dumps(request))
    # Steady state of a healthy flow: the cached prefix is read.
    usage = {
        "input_tokens": 60,
        "cache_read_input_tokens": 3900,
        "cache_creation_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 180,
    }
    response = message(usage)
    # The seed first, then ours right after it, so both see the same machine.
    seed = run_seed_calls(request, usage, iterations) if with_seed else None

    def create(**kwargs: Any) -> Message:
        return response

    tracker = CacheTracker(provider="anthropic")
    wrapped = tracker.wrap(create)

    def raw_call() -> Any:
        return create(**request)

    def wrapped_call() -> Any:
        return wrapped(**request)

    for _ in range(2000):
        raw_call()
        wrapped_call()
    tracker.flush()
    # Paired samples: the bare call and the wrapped call back to back, so drift cancels. In
    # batches of BATCH calls, with the consumer catching up between batches (untimed): a real
    # SDK call waits on the network, and the consumer works meanwhile; a loop that never waits
    # would time the consumer's turns on the interpreter lock, not the caller's work.
    batches = time_in_batches(raw_call, lambda _: wrapped_call(), iterations, tracker)
    first = [b[0] - a[0] for a, b in batches]  # right after the caller's thread waited
    raw = [t for a, _ in batches for t in a[1:]]
    diff = [w - r for a, b in batches for r, w in zip(a[1:], b[1:], strict=True)]
    control = after_a_wait(lambda: prefix_key(ADAPTER.parse_request(request)), len(first))

    last = tracker.calls()[-1]
    assert tracker.internal_errors == 0, tracker.internal_errors
    assert last.prefix_id is not None and last.cache_read_tokens == 3900 and last.cost_usd is not None, last
    assert last.expected_read_tokens == 3900 and not last.unexpected_miss, last

    med = statistics.median(diff) / 1000
    p99 = quantile(diff, 0.99) / 1000
    print(
        f"request: {size / 1024:.1f} KB ({len(request['tools'])} tools, {len(request['system'])} system "
        f"blocks, the last with cache_control, {len(request['messages'])} messages); "
        f"{len(diff):,} paired calls in batches of {BATCH}"
    )
    print(f"bare fn call (baseline):       median {statistics.median(raw) / 1000:7.2f} us")
    print(
        f"caller's overhead:             median {med:7.2f} us   p99 {p99:7.2f} us   "
        f"(targets median <= {TARGET_CALLER_US:.0f} us: {verdict(med <= TARGET_CALLER_US)}, "
        f"p99 <= {TARGET_CALLER_P99_US:.0f} us: {verdict(p99 <= TARGET_CALLER_P99_US)})"
    )
    print(
        f"  the first call after a wait:  median {statistics.median(first) / 1000:7.2f} us "
        f"({len(first)} calls, one a batch, not in the figures above); parse + fingerprint alone, "
        f"without a tracker, after the same wait: median {statistics.median(control) / 1000:7.2f} us"
    )
    if seed is not None:
        seed_us = seed["median_ns"] / 1000
        ratio = seed_us / med
        print(
            f"seed cachebench {seed['version']} wrap() overhead: median {seed_us:7.2f} us "
            f"(its own venv, subprocess; the same request and response)"
        )
        print(
            f"ratio seed/ours: {ratio:.1f}x less per call   "
            f"target >= {TARGET_CALLER_VS_SEED}x: {verdict(ratio >= TARGET_CALLER_VS_SEED)}"
        )
    elif not with_seed:
        print("seed: skipped (--no-seed)")
    in_situ(tracker, request, response, iterations)
    consumer_rate(request, response, iterations)
    breakdown(tracker, request, response, med, iterations)


def time_in_batches(
    first: Callable[[], Any], second: Callable[[Any], Any], iterations: int, tracker: CacheTracker
) -> list[tuple[list[int], list[int]]]:
    """:func:`time_pairs` in batches of ``BATCH`` until ``iterations`` pairs are timed, the
    tracker's consumer catching up between batches (``flush()``, untimed); gc off throughout."""
    batches: list[tuple[list[int], list[int]]] = []
    gc.collect()
    gc.disable()
    try:
        while len(batches) * BATCH < iterations:
            batches.append(time_pairs(first, second, BATCH, collect=False))
            tracker.flush()
    finally:
        gc.enable()
    return batches


def after_a_wait(fn: Callable[[], Any], n: int) -> list[int]:
    """Times of ``fn()`` right after the thread slept a millisecond, as the first call of a batch
    runs right after a flush: a thread that waited resumes on cold caches whatever it runs."""
    for _ in range(100):
        fn()
    samples = []
    for _ in range(n):
        time.sleep(0.001)
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return samples


def in_situ(tracker: CacheTracker, request: dict[str, Any], response: Message, iterations: int) -> None:
    """The caller's two halves, timed back to back as the wrapper runs them: ``begin`` (flow
    name, parse, fingerprint, queue the start) and ``observe`` (queue the end)."""
    engine = tracker._engine
    batches = time_in_batches(
        lambda: engine.begin(ADAPTER, request, None),
        lambda ctx: engine.observe(response, ctx),
        iterations,
        tracker,
    )
    before = [t for a, _ in batches for t in a[1:]]  # as above: without each batch's first call
    after = [t for _, b in batches for t in b[1:]]
    print(
        f"in situ (medians): before the SDK call (begin) {statistics.median(before) / 1000:6.2f} us, "
        f"after it (observe) {statistics.median(after) / 1000:6.2f} us"
    )


def measure_consumer(
    tracker: CacheTracker, request: dict[str, Any], response: Message, iterations: int
) -> tuple[float, int]:
    """Seconds the tracker's consumer takes for ``n`` calls queued while it is held, timed from
    its release until everything is recorded (with a store: committed), and ``n``."""
    wrapped = tracker.wrap(lambda **kwargs: response)
    for _ in range(1000):
        wrapped(**request)
    tracker.flush()
    n = min(iterations, (QUEUE_LIMIT - 10) // 2)  # each call is two queued items
    release = threading.Event()
    tracker._engine.submit(release.wait)
    for _ in range(n):
        wrapped(**request)
    gc.collect()
    t0 = time.perf_counter()
    release.set()
    tracker.flush()
    elapsed = time.perf_counter() - t0
    assert len(tracker.calls()) == 1000 + n and tracker.dropped_calls == 0
    return elapsed, n


def consumer_rate(request: dict[str, Any], response: Message, iterations: int) -> None:
    """Calls per second the consumer analyses (the caller only waits meanwhile)."""
    elapsed, n = measure_consumer(CacheTracker(provider="anthropic"), request, response, iterations)
    rate = n / elapsed
    print(
        f"consumer: {rate:,.0f} calls/s ({elapsed / n * 1e6:.1f} us a call, {n:,} queued calls)   "
        f"target >= {TARGET_CONSUMER_RATE:,}: {verdict(rate >= TARGET_CONSUMER_RATE)}"
    )


def breakdown(
    tracker: CacheTracker, request: dict[str, Any], response: Message, total_us: float, iterations: int
) -> None:
    """Time the pieces of one call separately (internal APIs; medians, gc disabled)."""
    adapter = ADAPTER
    prompt = adapter.parse_request(request)
    pkey = prefix_key(prompt)
    usage = adapter.usage(response)
    now = time.time()
    engine = tracker._engine
    view = engine.view
    exp = view.expect(pkey, False, now)
    cost = engine.prices.cost("anthropic", usage.model, usage, now)
    assert cost.cost_usd is not None
    stats = Stats(10_000, 100_000)

    def build_metrics() -> CallMetrics:
        return CallMetrics(
            provider="anthropic", model=usage.model, flow="bench", prefix_id=pkey.prefix_id,
            breakpoint_ids=pkey.breakpoint_ids, input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens, output_tokens=usage.output_tokens,
            elapsed_ms=1.0, timestamp=now, cost_usd=cost.cost_usd,
            cost_without_cache_usd=cost.cost_without_cache_usd, cost_saved_usd=cost.cost_saved_usd,
            expected_read_tokens=exp.tokens, unexpected_miss=False, miss_cause=None, usage_known=True,
            held_ms=0.0, diagnostics=None, error=None, writes_reported=True, unpriced=False, stream=False,
        )  # fmt: skip

    metrics = build_metrics()

    def expect_cause_observe() -> None:
        e = view.expect(pkey, False, now)
        miss_cause(
            view, pkey, usage, e, implicit=False, tolerance=0, min_tokens=0,
            concurrent=False, timestamp=now, elapsed_ms=1.0,
        )  # fmt: skip
        view.observe(pkey, usage, e, False, now, "5m", 1024)

    detector = FlowDetector(0.6, False, 10_000, lambda r: None)
    hit = (usage.cache_read_tokens, usage.cache_read_tokens)

    def regressions() -> None:
        # A steady flow: the call reads its prefix; the detector updates its window and baselines.
        detector.observe("bench", usage.model, pkey, prompt, exp, exp, None, hit, cost.cost_usd, now)

    caller: list[tuple[str, Callable[[], Any]]] = [
        ("flow name (frame lookup)", lambda: default_flow()),
        ("parse_request", lambda: adapter.parse_request(request)),
        ("fingerprint key", lambda: prefix_key(prompt)),
    ]
    consumer: list[tuple[str, Callable[[], Any]]] = [
        ("usage from response", lambda: adapter.usage(response)),
        ("pricing", lambda: engine.prices.cost("anthropic", usage.model, usage, now)),
        ("expect / cause / observe", expect_cause_observe),
        ("CallMetrics construction", build_metrics),
        ("stats.add (record)", lambda: stats.add(metrics, pkey.prefix_hash)),
        ("regression detector", regressions),
    ]
    n = max(2000, iterations // 2)
    print("breakdown (median of each piece timed alone in a hot loop, us):")
    for title, pieces in (("on the caller's thread", caller), ("on the consumer", consumer)):
        print(f"  {title}:")
        accounted = 0.0
        for name, fn in pieces:
            us = statistics.median(time_each(fn, n, 500)) / 1000
            accounted += us
            target = ""
            if fn is regressions:
                target = f"   (target <= {TARGET_DETECTOR_US:.0f} us: {verdict(us <= TARGET_DETECTOR_US)})"
            print(f"    {name:<30} {us:7.2f}{target}")
        print(f"    {'sum of pieces':<30} {accounted:7.2f}")
        if pieces is caller:
            print(f"    {'rest: queueing, wrapper (see README)':<30} {total_us - accounted:7.2f}")


SEED_CALLS_SCRIPT = textwrap.dedent(
    """
    import gc, json, statistics, sys, time
    import cachebench
    from anthropic.types import Message
    with open(sys.argv[1], "rb") as f:
        data = json.load(f)
    request, response = data["request"], Message.model_validate(data["response"])
    n = int(sys.argv[2])

    def create(**kwargs):
        return response

    tracker = cachebench.CacheTracker(on_miss_alert=lambda m: None)
    wrapped = tracker.wrap(create)
    for _ in range(2000):
        create(**request)
        wrapped(**request)
    diff = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    for _ in range(n):
        t0 = clock()
        create(**request)
        t1 = clock()
        wrapped(**request)
        t2 = clock()
        diff.append((t2 - t1) - (t1 - t0))
    gc.enable()
    print(json.dumps({"version": cachebench.__version__, "median_ns": statistics.median(diff),
                      "iterations": n}))
    """
)


def run_seed_calls(request: dict[str, Any], usage: dict[str, Any], iterations: int) -> dict[str, Any] | None:
    """Time cachebench 0.1.0's ``wrap()`` around the same call in its own venv; None if impossible."""
    response = message(usage).model_dump(mode="json")
    return run_in_seed(SEED_CALLS_SCRIPT, {"request": request, "response": response}, iterations)


# -- 2. fingerprint throughput -------------------------------------------------------------


def request_2mb() -> dict[str, Any]:
    """A long conversation (~2 MB of text) with a cached system prompt and conversation prefix."""
    rnd = random.Random(2)
    messages: list[dict[str, Any]] = []
    for i in range(400):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [{"type": "text", "text": text(5000, rnd)}]})
    messages[-2]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    tools = [
        {
            "name": f"tool_{i}",
            "description": text(400, rnd),
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        }
        for i in range(3)
    ]
    system = [{"type": "text", "text": text(4000, rnd), "cache_control": {"type": "ephemeral"}}]
    return {"model": MODEL, "max_tokens": 1024, "tools": tools, "system": system, "messages": messages}


SEED_SCRIPT = textwrap.dedent(
    """
    import gc, json, statistics, sys, time
    import cachebench
    with open(sys.argv[1], "rb") as f:
        parts = json.load(f)
    n = int(sys.argv[2])
    for _ in range(3):
        cachebench.fingerprint(messages=parts["messages"], system=parts["system"], tools=parts["tools"])
    samples = []
    gc.disable()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        cachebench.fingerprint(messages=parts["messages"], system=parts["system"], tools=parts["tools"])
        samples.append(time.perf_counter_ns() - t0)
    gc.enable()
    print(json.dumps({"version": cachebench.__version__, "median_ns": statistics.median(samples),
                      "best_ns": min(samples), "iterations": n}))
    """
)


def seed_python() -> Path | None:
    """The seed venv's python, created with ``python -m venv`` + pip on first use; None if impossible."""
    py = SEED_VENV / "bin" / "python"

    def installed() -> bool:
        if not py.exists():
            return False
        probe = subprocess.run(
            [str(py), "-I", "-c", "import anthropic, cachebench; print(cachebench.__version__)"],
            capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir(),
        )  # fmt: skip
        return probe.returncode == 0 and probe.stdout.strip() == "0.1.0"

    if installed():
        return py
    print(f"creating the seed venv {SEED_VENV.relative_to(HERE.parent)} and installing {SEED_SPEC} ...")
    try:
        SEED_VENV.mkdir(parents=True, exist_ok=True)
        # The venv ignores itself, so it never shows up in git status whatever the root .gitignore says.
        (SEED_VENV / ".gitignore").write_text("*\n")
        subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True, timeout=120,
                       capture_output=True)  # fmt: skip
        (SEED_VENV / ".gitignore").write_text("*\n")
        subprocess.run(
            # The same anthropic SDK as ours: the seed's calls return the same response objects.
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", SEED_SPEC,
             f"anthropic=={anthropic.__version__}"],
            check=True, timeout=180, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        print(f"SEED UNAVAILABLE: could not create the seed venv ({str(detail).strip()[-300:]})")
        return None
    return py if installed() else None


def run_seed(parts: dict[str, Any], iterations: int) -> dict[str, Any] | None:
    """Time cachebench 0.1.0's ``fingerprint()`` on ``parts`` in its own venv; None if impossible."""
    return run_in_seed(SEED_SCRIPT, parts, iterations)


def run_in_seed(script: str, data: Any, iterations: int) -> dict[str, Any] | None:
    """Run ``script`` in the seed's venv with ``data`` (as a JSON file) and ``iterations``; the
    JSON object it prints last, or None when the seed cannot run (said why)."""
    py = seed_python()
    if py is None:
        print("seed: NOT MEASURED (no seed venv; is the package registry reachable?); continuing")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_bytes(orjson.dumps(data))
        # -I: isolated mode, so the seed subprocess can never import this checkout's cachebench.
        run = subprocess.run(
            [str(py), "-I", "-c", script, str(data_file), str(iterations)],
            capture_output=True, text=True, timeout=600, cwd=tmp,
        )  # fmt: skip
    if run.returncode != 0:
        print(f"seed: NOT MEASURED, the run failed ({run.stderr.strip()[-300:]}); continuing")
        return None
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def bench_fingerprint(iterations: int, with_seed: bool) -> None:
    print("\n== 2. Fingerprint throughput on a ~2 MB prompt ==")
    request = request_2mb()
    parts = {"messages": request["messages"], "system": request["system"], "tools": request["tools"]}
    # One denominator for both: the prompt's compact JSON size (tools + system + messages).
    size = len(orjson.dumps(parts))
    print(f"prompt: {size / 1e6:.2f} MB compact JSON, {len(request['messages'])} messages")
    # The seed first, then ours right after it, so both see the same machine.
    seed = run_seed(parts, max(10, iterations // 2)) if with_seed else None

    def ours() -> Any:
        return prefix_key(ADAPTER.parse_request(request))

    assert ours().prefix_id is not None
    samples = time_each(ours, iterations, 5)
    ours_gbps = size / statistics.median(samples)
    ours_best = size / min(samples)
    prompt = ADAPTER.parse_request(request)
    key_gbps = size / statistics.median(time_each(lambda: prefix_key(prompt), iterations, 5))
    print(
        f"ours  key(parse_request(req)):  {ours_gbps:5.2f} GB/s median, {ours_best:5.2f} best   "
        f"target >= {TARGET_GBPS:.0f} GB/s: {verdict(ours_gbps >= TARGET_GBPS)}"
    )
    print(f"      of which key() alone:     {key_gbps:5.2f} GB/s median")
    if not with_seed:
        print("seed: skipped (--no-seed)")
        return
    if seed is None:
        return
    seed_gbps = size / seed["median_ns"]
    seed_best = size / seed["best_ns"]
    print(
        f"seed  cachebench {seed['version']} fingerprint(): {seed_gbps:5.2f} GB/s median, "
        f"{seed_best:5.2f} best (its own venv, subprocess)"
    )
    ratio = ours_gbps / seed_gbps
    print(
        f"ratio ours/seed: {ratio:.1f}x median, {ours_best / seed_best:.1f}x best   "
        f"target >= {TARGET_VS_SEED:.0f}x: {verdict(ratio >= TARGET_VS_SEED)}"
    )


# -- 3. retained memory --------------------------------------------------------------------


def record_request(i: int) -> dict[str, Any]:
    """A small request whose cached system prompt is unique to ``i`` (a distinct prefix)."""
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": [
            {
                "type": "text",
                "text": f"You are the assistant of tenant {i:07d}. Answer briefly and cite the policy.",
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "messages": [{"role": "user", "content": "What is my plan?"}],
    }


def retained_mb(base: int) -> float:
    gc.collect()
    return (tracemalloc.get_traced_memory()[0] - base) / 2**20


def feed(tracker: CacheTracker, response: Message, start: int, stop: int, t0: float) -> None:
    record = tracker.record
    for i in range(start, stop):
        record(response, request=record_request(i), provider="anthropic", elapsed_ms=900.0,
               timestamp=t0 + i * 0.01, flow="tenants")  # fmt: skip


def memory_response() -> Message:
    # Each call writes its own prefix: the worst case for the prefix table and the cache view.
    return message(
        {
            "input_tokens": 8,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 2100,
            "output_tokens": 40,
        }
    )


def bench_flows(calls_per_flow: int) -> None:
    """Regression detection across 10,000 flows: memory held, and flat beyond the flow bound."""
    print(f"\n== 4. Regression detection across {FLOWS:,} flows (tracemalloc, after gc) ==")
    response = message(
        {
            "input_tokens": 8,
            "cache_read_input_tokens": 2100,
            "cache_creation_input_tokens": 0,
            "output_tokens": 40,
        }
    )
    t0 = time.time() - 86_400.0
    warm = CacheTracker(provider="anthropic")
    warm.record(response, request=record_request(0), provider="anthropic", timestamp=t0, flow="warm")
    results: list[float] = []
    for n_flows in (FLOWS, 2 * FLOWS):
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracker = CacheTracker(provider="anthropic")  # max_prefixes=10_000 bounds flows too
            record = tracker.record
            i = 0
            for _ in range(calls_per_flow):
                for f in range(n_flows):
                    # Each flow has its own prefix and reads it: a steady multi-flow workload.
                    record(response, request=record_request(f), provider="anthropic", elapsed_ms=900.0,
                           timestamp=t0 + i * 0.01, flow=f"flow-{f}")  # fmt: skip
                    i += 1
            mb = retained_mb(base)
        finally:
            tracemalloc.stop()
        assert tracker.internal_errors == 0
        results.append(mb)
        flows_held = len(tracker._engine.detector._flows)
        print(
            f"{n_flows:,} flows x {calls_per_flow} calls: {mb:6.1f} MB retained (whole tracker), "
            f"{flows_held:,} flows in the detector, {len(tracker._engine.detector._prints):,} layer prints   "
            f"target < {TARGET_MEMORY_MB:.0f} MB: {verdict(mb < TARGET_MEMORY_MB)}"
        )
        del tracker
    print(f"  twice the flows (beyond the 10,000 bound): {results[1] - results[0]:+.1f} MB")


def memory_stream(n_stream: int) -> None:
    """Child process: an endless stream of new prefixes; one JSON line per checkpoint."""
    response = memory_response()
    t0 = time.time() - 86_400.0
    feed(CacheTracker(provider="anthropic"), response, 0, 50, t0)  # warm imports and price memo
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracker = CacheTracker(provider="anthropic", max_prefixes=10_000)
    step = n_stream // 3
    for k in range(3):
        feed(tracker, response, k * step, (k + 1) * step, t0)
        row = {
            "calls_fed": (k + 1) * step,
            "mb": retained_mb(base),
            "calls": len(tracker.calls()),
            "prefixes": len(tracker._engine.stats.prefixes),
            "view": len(tracker._engine.view),
            "errors": tracker.internal_errors,
        }
        print(json.dumps(row), flush=True)
    tracemalloc.stop()


def bench_memory(n_all: int, n_stream: int) -> None:
    print("\n== 3. Retained memory (tracemalloc, after gc) ==")
    # tracemalloc slows every allocation ~10x, so the bounded-stream run goes to a second process
    # and runs alongside the first measurement (each process traces only its own tracker).
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--memory-stream", str(n_stream)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    response = memory_response()
    t0 = time.time() - 86_400.0
    feed(CacheTracker(provider="anthropic"), response, 0, 50, t0)  # warm imports and price memo
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracker = CacheTracker(provider="anthropic", max_prefixes=100_000)
        feed(tracker, response, 0, n_all, t0)
        mb = retained_mb(base)
    finally:
        tracemalloc.stop()
    assert tracker.internal_errors == 0, tracker.internal_errors
    print(
        f"{n_all:,} distinct prefixes (max_prefixes=100_000, max_calls=100_000): {mb:6.1f} MB retained "
        f"= {mb * 2**20 / n_all:,.0f} B/call   target < {TARGET_MEMORY_MB:.0f} MB: "
        f"{verdict(mb < TARGET_MEMORY_MB)}"
    )
    print(
        f"  held: {len(tracker.calls()):,} calls, {len(tracker._engine.stats.prefixes):,} prefixes, "
        f"{len(tracker._engine.view):,} cache-view entries"
    )
    del tracker
    out, err = child.communicate(timeout=600)
    print(f"endless new prefixes (max_prefixes=10_000, max_calls=100_000), {n_stream:,} calls:")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or len(rows) != 3:
        print(f"  the stream run failed (exit {child.returncode}): {err.strip()[-500:]}")
        return
    for row in rows:
        print(
            f"  after {row['calls_fed']:>9,} calls: {row['mb']:6.1f} MB   ({row['calls']:,} calls, "
            f"{row['prefixes']:,} prefixes, {row['view']:,} cache-view entries, "
            f"{row['errors']} internal errors)"
        )
    growth = rows[-1]["mb"] - rows[0]["mb"]
    print(f"  growth from the first to the last checkpoint: {growth:+.1f} MB")


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-seed", action="store_true", help="skip the side-by-side with cachebench 0.1.0")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and calls (a smoke run)")
    parser.add_argument(
        "--only",
        default="overhead,fingerprint,memory,flows",
        help="comma-separated sections to run (default: all)",
    )
    parser.add_argument("--memory-stream", type=int, default=0, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.memory_stream:
        memory_stream(args.memory_stream)
        return 0
    scale = 10 if args.quick else 1
    started = time.perf_counter()
    print(machine_line("anthropic", anthropic.__version__))
    sections = set(args.only.split(","))
    if "overhead" in sections:
        bench_overhead(20_000 // scale, with_seed=not args.no_seed)
    if "fingerprint" in sections:
        bench_fingerprint(100 // scale if not args.quick else 20, with_seed=not args.no_seed)
    if "memory" in sections:
        bench_memory(100_000 // scale, 300_000 // scale)
    if "flows" in sections:
        bench_flows(2 if args.quick else 5)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
