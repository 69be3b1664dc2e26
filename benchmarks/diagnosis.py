"""cachebench diagnosis benchmark: how fast incidents open, false alarms, agreement with the
provider's own miss reasons, and what the per-call diagnosis costs the consumer.

Run from the repository root (``make bench-diagnosis`` does the same)::

    .venv/bin/python benchmarks/diagnosis.py           # everything, about two minutes on 2 cores
    .venv/bin/python benchmarks/diagnosis.py --quick   # a smoke run (fewer healthy calls)

Every call goes through the real ``anthropic`` SDK to the local emulator (its own renderer
and cache model, one ``ManualClock`` shared with the tracker), so the provider misses exactly
as a provider would. It prints figures with their targets (``ok`` / ``MISSED``) and exits 0;
nothing is asserted on timings.

1. Calls from the first changed call to the incident, for a timestamp that appears mid-run,
   at call gaps of 0.05, 1, 5, 60 and 120 s (target: at most 8 in every cell).
2. False incidents and false ``unexpected_miss`` in healthy multi-tenant multi-turn traffic
   (customers arriving over time, each coming back for a few turns, one deploy) at three
   traffic rates (target: 0).
3. Agreement of the diff's section (or ``model_changed``) with the emulator's Anthropic
   ``diagnostics.cache_miss_reason`` over a set of changes (target: 100%).
4. What the per-call diagnosis costs the consumer: ``FlowDetector.observe`` for a call that
   read its prefix (target: at most 5 us median) and for a call whose 200 KB prefix changed (a
   timestamp; target: at most 1 ms median).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anthropic
from _common import machine_line, verdict

from cachebench import CacheTracker
from cachebench.diagnose import FlowDetector
from cachebench.emulator import Emulator, EmulatorServer
from cachebench.expect import CacheView
from cachebench.fingerprint import key as prefix_key
from cachebench.providers import adapter_for
from cachebench.testing import ManualClock
from cachebench.types import Usage

MODEL = "claude-sonnet-5"
GAPS_S = (0.05, 1.0, 5.0, 60.0, 120.0)
TARGET_CALLS_TO_INCIDENT = 8
TARGET_UNCHANGED_US = 5.0
TARGET_CHANGED_MS = 1.0
POLICY = "\n".join(f"Rule {i}: refunds over ${10 * i} need a manager's approval." for i in range(1, 120))
TOOLS = [
    {
        "name": f"tool_{i}",
        "description": f"Look up the customer's {name} by id. " * 6,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
    for i, name in enumerate(("orders", "refunds", "invoices", "shipments", "tickets"))
]
MARK = {"type": "ephemeral"}


@contextlib.contextmanager
def harness() -> Iterator[tuple[ManualClock, CacheTracker, anthropic.Anthropic]]:
    clock = ManualClock()
    with EmulatorServer(Emulator(clock=clock)) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-bench", max_retries=0)
        tracker = CacheTracker(clock=clock, on_miss_alert=lambda m: None, on_regression=lambda r: None)
        try:
            yield clock, tracker, client
        finally:
            tracker.close()
            client.close()


def request(system: str, context: str | None, turns: Sequence[str], **extra: Any) -> dict[str, Any]:
    """tools + system (layer 1), the customer's context (layer 2), the conversation (layer 3)."""
    messages: list[dict[str, Any]] = []
    if context is not None:
        messages.append(
            {"role": "user", "content": [{"type": "text", "text": context, "cache_control": MARK}]}
        )
        messages.append({"role": "assistant", "content": "Noted."})
    for i, turn in enumerate(turns):
        if i:
            messages.append({"role": "assistant", "content": f"Answer {i}."})
        messages.append({"role": "user", "content": turn})
    return {
        "model": MODEL,
        "max_tokens": 16,
        "tools": TOOLS,
        "system": [{"type": "text", "text": system, "cache_control": MARK}],
        "messages": messages,
        **extra,
    }


# -- 1. calls to the incident ---------------------------------------------------------------------


def calls_to_incident(gap_s: float, before: int = 12, after: int = 20) -> int | None:
    """A healthy flow; then a timestamp (with microseconds) enters the system prompt. How many
    calls, counting the first changed one, until prefix churn is open (None: never)."""
    with harness() as (clock, tracker, client):
        create = tracker.wrap(client.messages.create, flow="support")
        for i in range(before):
            create(**request(POLICY, None, [f"question {i % 3}"]))
            clock.advance(gap_s)
        for n in range(1, after + 1):
            stamp = dt.datetime.fromtimestamp(clock(), dt.timezone.utc).isoformat()
            create(**request(f"Now: {stamp}.\n{POLICY}", None, [f"question {n % 3}"]))
            if tracker.regressions():
                return n
            clock.advance(gap_s)
    return None


def bench_calls_to_incident() -> None:
    print("\n== 1. Calls from the first changed call to the incident (a timestamp appears) ==")
    worst = 0
    for gap in GAPS_S:
        n = calls_to_incident(gap)
        worst = max(worst, n if n is not None else 10**9)
        print(f"call gap {gap:6.2f} s: {'never' if n is None else n} calls")
    print(
        f"worst cell: {worst if worst < 10**9 else 'never'}   "
        f"target <= {TARGET_CALLS_TO_INCIDENT}: {verdict(worst <= TARGET_CALLS_TO_INCIDENT)}"
    )


# -- 2. healthy traffic ---------------------------------------------------------------------------


def healthy(calls: int, gap_s: float, seed: int) -> tuple[int, int, dict[str, int]]:
    """Multi-tenant multi-turn traffic at one call every ``gap_s``: customers arrive over time,
    each comes back for up to 4 turns while others talk, and one deploy changes the system
    prompt once. Returns (incidents, unexpected misses, causes)."""
    rnd = random.Random(seed)
    causes: dict[str, int] = {}
    with harness() as (clock, tracker, client):
        create = tracker.wrap(client.messages.create, flow="support")
        active: list[tuple[str, list[str]]] = []
        next_customer = 0
        system = POLICY
        for i in range(calls):
            if i == calls // 2:
                system = "Policy v2: be brief.\n" + POLICY  # the deploy
            if not active or (len(active) < 12 and rnd.random() < 0.3):
                ctx = (
                    f"Customer {next_customer}: plan {rnd.choice(['Pro', 'Team'])}, {rnd.randint(1, 9)} open tickets. "
                    * 30
                )
                active.append((ctx, []))
                next_customer += 1
            ctx, turns = active[rnd.randrange(len(active))]
            turns.append(f"question {len(turns)} of {ctx[:12]}")
            m = create(**request(system, ctx, turns))
            if len(turns) >= 4:
                active.remove((ctx, turns))
            del m
            clock.advance(gap_s * rnd.uniform(0.5, 1.5))
        calls_seen = tracker.calls()
        for c in calls_seen:
            if c.miss_cause is not None:
                causes[c.miss_cause] = causes.get(c.miss_cause, 0) + 1
        return len(tracker.regressions()), sum(c.unexpected_miss for c in calls_seen), causes


def bench_healthy(calls: int) -> None:
    print(f"\n== 2. Healthy multi-tenant multi-turn traffic, {calls:,} calls per rate ==")
    total_incidents = total_unexpected = 0
    for gap, label in ((0.2, "5 calls/s"), (6.0, "one call every 6 s"), (45.0, "one call every 45 s")):
        started = time.perf_counter()
        incidents, unexpected, causes = healthy(calls, gap, seed=int(gap * 10))
        total_incidents += incidents
        total_unexpected += unexpected
        shown = ", ".join(f"{k} x{v}" for k, v in sorted(causes.items(), key=lambda kv: -kv[1]))
        print(
            f"{label:>20}: {incidents} incidents, {unexpected} unexpected misses "
            f"(causes: {shown}) in {time.perf_counter() - started:.0f} s"
        )
    print(
        f"false incidents {total_incidents}, false unexpected misses {total_unexpected}   "
        f"target 0: {verdict(total_incidents == 0 and total_unexpected == 0)}"
    )


# -- 3. agreement with the provider's reasons ------------------------------------------------------

_SECTION_OF_REASON = {
    "system_changed": "system",
    "tools_changed": "tools",
    "messages_changed": "messages",
}


def changes() -> list[tuple[str, Callable[[int], dict[str, Any]]]]:
    """(name, request for call i): the calls after the first change a diff, each."""
    stamp = "2026-12-07T10:{:02d}:00Z"
    rnd = random.Random(3)
    profile = {"name": "Ada", "plan": "Pro", "since": "2023", "tickets": 3, "city": "Lyon"}

    def shuffled_json(i: int) -> str:
        keys = list(profile)
        random.Random(i).shuffle(keys)
        import json

        return json.dumps({k: profile[k] for k in keys})

    def tools(i: int) -> list[dict[str, Any]]:
        order = list(TOOLS)
        random.Random(100 + i).shuffle(order)
        return order

    del rnd
    return [
        (
            "timestamp in the system prompt",
            lambda i: request(f"Now: {stamp.format(i)}.\n{POLICY}", None, ["q"]),
        ),
        (
            "uuid in the system prompt",
            lambda i: request(f"Trace {uuid.UUID(int=i + 1)}.\n{POLICY}", None, ["q"]),
        ),
        (
            "request id in the customer's context",
            lambda i: request(POLICY, f"Request req_{i:04d}a9f3c. " + "Customer Ada, plan Pro. " * 80, ["q"]),
        ),
        ("re-ordered tools", lambda i: {**request(POLICY, None, ["q"]), "tools": tools(i)}),
        (
            "JSON key order in the customer's context",
            lambda i: request(POLICY, f"Profile: {shuffled_json(i)}. " + "Customer notes. " * 120, ["q"]),
        ),
        (
            "model switch",
            lambda i: {**request(POLICY, None, ["q"]), "model": MODEL if i % 2 else "claude-opus-5"},
        ),
    ]


def bench_agreement() -> None:
    print("\n== 3. Agreement with the emulator's Anthropic cache_miss_reason ==")
    agree = total = 0
    for name, build in changes():
        with harness() as (clock, tracker, client):
            create = tracker.wrap(client.messages.create, flow=name)
            previous: str | None = None
            for i in range(6):
                extra = (
                    {"diagnostics": {"previous_message_id": previous}} if previous else {"diagnostics": {}}
                )
                reply = create(**build(i), extra_body=extra)
                previous = reply.id
                clock.advance(5)
            calls = tracker.calls()
        for m in calls[1:]:
            reason = (m.diagnostics or {}).get("cache_miss_reason") or {}
            kind = reason.get("type")
            if kind is None or m.miss_cause is None:
                continue
            total += 1
            if kind == "model_changed":
                agree += m.miss_cause == "model_changed"
            elif m.diff is not None:
                agree += _SECTION_OF_REASON.get(kind) == m.diff.section
        print(f"{name:>40}: {', '.join(sorted({str(c.miss_cause) for c in calls[1:]}))}")
    share = agree / total if total else 0.0
    print(
        f"agreement: {agree} of {total} misses ({share:.0%})   target 100%: {verdict(total > 0 and agree == total)}"
    )


# -- 4. the consumer's cost -----------------------------------------------------------------------


def bench_cost(iterations: int) -> None:
    print("\n== 4. The per-call diagnosis on the consumer (FlowDetector.observe) ==")
    adapter = adapter_for("anthropic")
    big = POLICY * 32  # about 200 KB
    now = 1_800_000_000.0

    def observe_times(build: Callable[[int], dict[str, Any]], read: bool) -> list[float]:
        view = CacheView(100_000)
        detector = FlowDetector(0.6, False, 10_000, lambda r: None)
        out = []
        for i in range(iterations):
            t = now + i
            prompt = adapter.parse_request(build(i))
            k = prefix_key(prompt)
            exp = view.expect(k, False, t)
            tokens = 50_000
            usage = Usage(
                input_tokens=10,
                cache_read_tokens=tokens if read and i else 0,
                cache_write_tokens=0 if read and i else tokens,
                output_tokens=10,
                model=MODEL,
            )
            start = time.perf_counter_ns()
            detector.observe(
                "bench", MODEL, k, prompt, exp, exp, None if read and i else "cold", (0, 0), 0.01, t
            )
            out.append((time.perf_counter_ns() - start) / 1000)
            view.observe(k, usage, exp, False, t, "5m", 1024)
        return out[1:]

    unchanged = observe_times(lambda i: request(big, None, [f"q{i}"]), read=True)
    changed = observe_times(
        lambda i: request(f"Now: 2026-12-07T10:00:{i % 60:02d}.{i:06d}Z.\n{big}", None, ["q"]), read=False
    )
    size = len(big.encode())
    u = statistics.median(unchanged)
    c = statistics.median(changed) / 1000
    print(
        f"a call that read its prefix:       median {u:8.2f} us   target <= {TARGET_UNCHANGED_US} us: {verdict(u <= TARGET_UNCHANGED_US)}"
    )
    print(
        f"a call whose {size / 1024:.0f} KB prefix changed: median {c:8.3f} ms   "
        f"target <= {TARGET_CHANGED_MS} ms: {verdict(c <= TARGET_CHANGED_MS)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer healthy calls (a smoke run)")
    parser.add_argument("--only", default="incident,healthy,agreement,cost", help="sections, comma-separated")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(machine_line("anthropic", anthropic.__version__))
    started = time.perf_counter()
    if "incident" in only:
        bench_calls_to_incident()
    if "healthy" in only:
        bench_healthy(1_000 if args.quick else 10_000)
    if "agreement" in only:
        bench_agreement()
    if "cost" in only:
        bench_cost(50 if args.quick else 300)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
