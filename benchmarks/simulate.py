"""The what-if simulator's figures (issue 15): replay speed for a 4-layer strategy, and a
1,000,000-call trace read from its file and simulated.

    python benchmarks/simulate.py            (make bench-simulate)
    python benchmarks/simulate.py --quick    (a tenth of the calls; not the target's figure)

1. ``simulate``'s replay of 200,000 calls of a support agent with 4 cached layers each (tools,
   system prompt 1h, the customer's context 5m, the customer's session 5m) under the trace's own
   markers: calls per second of the replay itself (the trace read and compiled before the
   clock starts), median of 3 runs. Target: at least 200,000 calls per second. Both replays are
   measured: on the trace's columns with numpy (what ``simulate`` runs on such a trace) and call
   by call (what it runs without numpy, or on a trace the columns cannot replay exactly).
2. The same kind of trace, 1,000,000 calls, written as JSON Lines: read and compiled once
   (``compile_trace``), ``advise`` on it, and ``simulate`` of the current and the advised
   strategies: from the file to the tables. Target: under 10 s.
3. No target: a less regular trace of 300,000 calls the same way: three flows on three models,
   each call's input and output tokens its own, and a session layer on a third of the calls
   whose key is new to each session (about 100,000 distinct layer lists), so calls differ in
   length and advice replays its placements.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _common import machine_line, verdict

from cachebench.economics import Strategy, Trace, advise, simulate
from cachebench.economics._compiled import compile_trace
from cachebench.economics._simulate import _run, _run_columns

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z (a fixed day: the same prices every run)
MODEL = "claude-opus-4-5"
TARGET_RATE = 200_000
TARGET_TRACE_S = 10.0


def support_calls(n: int, seed: int = 15) -> list[dict[str, Any]]:
    """``n`` calls about 2 a second from 500 customers, each in one of 3 sessions."""
    rnd = random.Random(seed)
    t = START
    out = []
    for _ in range(n):
        t += rnd.expovariate(2.0)
        customer = rnd.randrange(500)
        session = rnd.randrange(3)
        out.append(
            {
                "timestamp": round(t, 3),
                "flow": "support",
                "user": f"c{customer}",
                "model": MODEL,
                "layers": [
                    {"key": "tools@v4", "tokens": 3_000},
                    {"key": "system@v4", "tokens": 2_500, "ttl": "1h"},
                    {"key": f"customer/{customer}", "tokens": 1_200, "ttl": "5m"},
                    {
                        "key": f"customer/{customer}/session/{session}",
                        "tokens": 600,
                        "blocks": 4,
                        "ttl": "5m",
                    },
                ],
                "input_tokens": 120,
                "output_tokens": 300,
            }
        )
    return out


def replay_figure(n: int) -> None:
    print(f"\n== 1. replay of {n:,} calls, 4 layers, the trace's own markers ==")
    compiled = compile_trace(Trace(support_calls(n)))
    strategy = Strategy.current()
    end = compiled.t[-1]
    for name, replay in (
        ("on columns", lambda: _run_columns(compiled, strategy)),
        ("call by call", lambda: _run(compiled, strategy, end)),
    ):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = replay()
            times.append(time.perf_counter() - t0)
        assert result is not None
        rate = n / statistics.median(times)
        print(
            f"{name}: hit ratio {result.hit_ratio:.1%}, cost ${result.cost_usd:,.2f},"
            f" saved ${result.cost_saved_usd:,.2f}; {rate:,.0f} calls/s (median of 3)"
            f"   target >= {TARGET_RATE:,}: {verdict(rate >= TARGET_RATE)}"
        )


def trace_figure(tmp: Path, n: int) -> None:
    print(f"\n== 2. a {n:,}-call trace file: advice, then the current and the advised strategies ==")
    path = tmp / "trace.jsonl"
    with open(path, "wb") as f:
        for call in support_calls(n, seed=16):
            f.write(orjson.dumps(call) + b"\n")
    print(f"file: {path.stat().st_size / 2**20:,.0f} MB")
    t0 = time.perf_counter()
    compiled = compile_trace(path)
    t1 = time.perf_counter()
    advice = advise(compiled)
    t2 = time.perf_counter()
    sim = simulate(compiled, ["current", "advised"], advised=advice)
    t3 = time.perf_counter()
    print(advice)
    print(sim)
    total = t3 - t0
    print(
        f"read and compiled {t1 - t0:.1f} s, advice {t2 - t1:.1f} s, two strategies {t3 - t2:.1f} s:"
        f" {total:.1f} s in all   target < {TARGET_TRACE_S:.0f} s: "
        f"{verdict(total < TARGET_TRACE_S) if n >= 1_000_000 else 'n/a (--quick)'}"
    )


def varied_calls(n: int, seed: int = 17) -> list[dict[str, Any]]:
    """``n`` calls of three flows, one model each: a shared system prompt (1h), a customer's
    context (5m) and, on a third of the calls, a session's (5m; about 3 calls a session)."""
    rnd = random.Random(seed)
    flows = [
        ("billing", "claude-opus-4-5", 4_200),
        ("search", "claude-sonnet-4-5", 2_100),
        ("triage", "claude-haiku-4-5", 5_000),
    ]
    t = START
    out = []
    for i in range(n):
        t += rnd.expovariate(1.5)
        name, model, system = flows[rnd.randrange(3)]
        customer = rnd.randrange(2_000)
        layers = [
            {"key": f"{name}-system@v1", "tokens": system, "ttl": "1h"},
            {"key": f"{name}/c-{customer}", "tokens": 800 + customer % 700, "ttl": "5m"},
        ]
        if rnd.random() < 0.35:
            layers.append(
                {"key": f"{name}/c-{customer}/s-{i // 3}", "tokens": 300 + (i // 3) % 400, "ttl": "5m"}
            )
        out.append(
            {
                "timestamp": round(t, 3),
                "flow": name,
                "model": model,
                "layers": layers,
                "input_tokens": rnd.randrange(20, 800),
                "output_tokens": rnd.randrange(50, 1_500),
            }
        )
    return out


def varied_figure(tmp: Path, n: int) -> None:
    print(
        f"\n== 3. a {n:,}-call trace of varied calls: advice, then the current and the advised strategies =="
    )
    path = tmp / "varied.jsonl"
    with open(path, "wb") as f:
        for call in varied_calls(n):
            f.write(orjson.dumps(call) + b"\n")
    t0 = time.perf_counter()
    compiled = compile_trace(path)
    t1 = time.perf_counter()
    advice = advise(compiled)
    t2 = time.perf_counter()
    simulate(compiled, ["current", "advised"], advised=advice)
    t3 = time.perf_counter()
    print(
        f"{len(compiled.shapes):,} distinct layer lists; read and compiled {t1 - t0:.1f} s, advice {t2 - t1:.1f} s,"
        f" two strategies {t3 - t2:.1f} s: {t3 - t0:.1f} s in all (no target)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls")
    args = parser.parse_args()
    print(machine_line("orjson", orjson.__version__))
    scale = 10 if args.quick else 1
    replay_figure(200_000 // scale)
    with tempfile.TemporaryDirectory() as tmp:
        trace_figure(Path(tmp), 1_000_000 // scale)
        varied_figure(Path(tmp), 300_000 // scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
