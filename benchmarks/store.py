"""The store's figures (issue 13): ingest rate, the caller's overhead with a store, a report over
a million stored calls, and the consumer's memory while a million calls go through it.

    python benchmarks/store.py            (make bench-store)
    python benchmarks/store.py --quick    (a tenth of the calls; the figures are not the targets')

1. The caller's overhead with a SQLite store and without one, measured the same way as
   benchmarks/overhead.py's section 1 (paired bare/wrapped calls, in batches), alternating
   the two trackers in rounds so both see the same machine.
2. The consumer's rate with and without a store (calls queued while it is held, then timed
   until everything is recorded, written to disk included).
3. Sustained ingest into SQLite: the store writer's whole work (a call's row, its batch, the
   hourly roll-up and the transaction) for 1,000,000 calls over 30 days, 20 flows, 400
   prefixes and 4 models, in the consumer's batches; the rate of each tenth is printed.
4. ``cachebench report --by flow --since 30d`` over those 1,000,000 calls: the library call,
   the command in-process (``main(argv)``), and the command as a new process.
5. The resident memory of a process whose tracker writes 1,000,000 calls to SQLite, sampled
   every 100,000 calls.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from _common import machine_line, verdict
from overhead import BATCH, measure_consumer, message, quantile, request_15kb, time_in_batches

import cachebench
from cachebench import CacheTracker
from cachebench.cli import main as cli_main
from cachebench.report import report
from cachebench.store import BATCH_CALLS, SQLiteStore, StoreWriter
from cachebench.types import CallMetrics, PrefixDiff

TARGET_INGEST = 50_000  # calls/s into SQLite
TARGET_REPORT_S = 1.0
DAY_S = 86_400.0
USAGE = {
    "input_tokens": 60,
    "cache_read_input_tokens": 3900,
    "cache_creation_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 180,
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def caller_overhead(tmp: Path, iterations: int) -> None:
    print("\n== 1. The caller's overhead, with and without a store ==")
    request = request_15kb()
    response = message(USAGE)

    def create(**kwargs: Any) -> Any:
        return response

    trackers = {
        "no store": CacheTracker(provider="anthropic"),
        "sqlite": CacheTracker(provider="anthropic", store=tmp / "overhead.db"),
    }
    diffs: dict[str, list[int]] = {name: [] for name in trackers}
    wrapped = {name: t.wrap(create) for name, t in trackers.items()}
    for name in trackers:
        for _ in range(2000):
            wrapped[name](**request)
        trackers[name].flush()
    rounds = 10
    for _ in range(rounds):
        for name, tracker in trackers.items():
            w = wrapped[name]
            batches = time_in_batches(
                lambda: create(**request), lambda _, w=w: w(**request), iterations // rounds, tracker
            )
            diffs[name] += [b - a for ta, tb in batches for a, b in zip(ta[1:], tb[1:], strict=True)]
    for name, d in diffs.items():
        print(
            f"{name:9}  caller's overhead median {statistics.median(d) / 1000:6.2f} us   "
            f"p99 {quantile(d, 0.99) / 1000:6.2f} us   ({len(d):,} paired calls in batches of {BATCH})"
        )
    stored = trackers["sqlite"].store
    assert stored is not None and stored.count_calls() == len(trackers["sqlite"].calls())
    change = statistics.median(diffs["sqlite"]) - statistics.median(diffs["no store"])
    print(f"difference of the medians (sqlite - no store): {change / 1000:+.2f} us")
    for t in trackers.values():
        t.close()


def consumer_rates(tmp: Path, iterations: int) -> None:
    print("\n== 2. The consumer's rate, with and without a store ==")
    request = request_15kb()
    response = message(USAGE)
    for name, store in (("no store", None), ("sqlite", tmp / "consumer.db")):
        tracker = CacheTracker(provider="anthropic", store=store)
        elapsed, n = measure_consumer(tracker, request, response, iterations)
        if tracker.store is not None:
            assert tracker.store.count_calls() == 1000 + n
        print(f"{name:9}  {n / elapsed:9,.0f} calls/s analysed and recorded ({n:,} queued calls)")
        tracker.close()


def synthetic_calls(n: int, start: float, span: float, seed: int = 7) -> list[CallMetrics]:
    """``n`` calls evenly over ``span`` seconds from ``start``: 20 flows, 400 prefixes, 4
    models, a miss with a diff every 20th call."""
    rnd = random.Random(seed)
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "gpt-5.6", "gemini-2.5-pro"]
    diff = PrefixDiff("system", 0, 1, 17, 36, "volatile", value_type="timestamp")
    out = []
    step = span / n
    for i in range(n):
        flow = f"flow-{i % 20:02d}"
        prefix = f"{(i * 7919) % 400:016x}"
        miss = i % 20 == 0
        read = 0 if miss else 3900 + rnd.randrange(200)
        write = 3900 if miss else 0
        out.append(
            CallMetrics(
                provider="anthropic" if i % 4 < 2 else ("openai" if i % 4 == 2 else "gemini"),
                model=models[i % 4],
                flow=flow,
                prefix_id=prefix,
                breakpoint_ids=(prefix,),
                input_tokens=60,
                cache_read_tokens=read,
                cache_write_tokens=write,
                cache_write_1h_tokens=0,
                output_tokens=180,
                elapsed_ms=812.0,
                timestamp=start + i * step,
                cost_usd=0.0041 if miss else 0.0039,
                cost_without_cache_usd=0.0146,
                cost_saved_usd=0.0105,
                expected_read_tokens=3900,
                unexpected_miss=miss,
                miss_cause="prefix_changed" if miss else None,
                diff=diff if miss else None,
                avoidable_cost_usd=0.0012 if miss else 0.0,
                avoidable_tokens=3900 if miss else 0,
            )
        )
    return out


def ingest(db: Path, n: int, now: float) -> None:
    print("\n== 3. Sustained ingest into SQLite ==")
    store = SQLiteStore(db, keep_calls_s=31 * DAY_S)  # (retention must not delete the million)
    writer = StoreWriter(store, lambda: now)
    tenth = n // 10
    rates = []
    total = 0.0
    span = 29.9 * DAY_S / 10  # (each tenth covers its own three days of the last 30)
    for part in range(10):
        calls = synthetic_calls(tenth, now - 29.9 * DAY_S + part * span, span, seed=part)
        gc.collect()
        t0 = time.perf_counter()
        for m in calls:
            if writer.add(m):
                writer.write((), False)
        writer.write((), True)
        dt = time.perf_counter() - t0
        total += dt
        rates.append(tenth / dt)
    rate = n / total
    print("per tenth (calls/s): " + ", ".join(f"{r:,.0f}" for r in rates))
    print(
        f"{n:,} calls in {total:.1f} s: {rate:,.0f} calls/s in batches of {BATCH_CALLS:,}   "
        f"target >= {TARGET_INGEST:,}: {verdict(rate >= TARGET_INGEST)}"
    )
    print(f"database: {db.stat().st_size / 2**20:,.0f} MB, {store.count_calls():,} calls")
    store.close()


def report_time(db: Path, now: float) -> None:
    print("\n== 4. The report by flow over the last 30 days ==")
    store = SQLiteStore(db)
    lib = []
    for _ in range(5):
        t0 = time.perf_counter()
        rep = report(store, "flow", since=now - 30 * DAY_S)
        lib.append(time.perf_counter() - t0)
    assert rep.total["calls"] == store.count_calls(), (rep.total["calls"], store.count_calls())
    store.close()
    argv = ["report", "--by", "flow", "--since", "30d", "--db", str(db)]
    inproc = []
    for _ in range(5):
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()) as out:
            code = cli_main(argv)
        inproc.append(time.perf_counter() - t0)
        assert code == 0 and "flow-19" in out.getvalue()
    sub = []
    for _ in range(3):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "cachebench", *argv], capture_output=True, text=True, check=True
        )
        sub.append(time.perf_counter() - t0)
        assert "flow-19" in done.stdout
    best = statistics.median(inproc)
    print(f"library report():                  median {statistics.median(lib) * 1000:7.1f} ms")
    print(
        f"cachebench report (main(argv)):    median {best * 1000:7.1f} ms   "
        f"target < {TARGET_REPORT_S:.0f} s: {verdict(best < TARGET_REPORT_S)}"
    )
    print(
        f"cachebench report (new process):   median {statistics.median(sub) * 1000:7.1f} ms "
        "(the interpreter's start and imports included)"
    )


def memory(tmp: Path, n: int) -> None:
    print("\n== 5. Memory while a tracker writes calls to SQLite ==")
    request = request_15kb()
    response = message(USAGE)
    tracker = CacheTracker(provider="anthropic", store=tmp / "memory.db")
    wrapped = tracker.wrap(lambda **kwargs: response)
    samples = []
    step = n // 10
    for i in range(1, n + 1):
        wrapped(**request)
        if i % 5000 == 0:
            tracker.flush()
        if i % step == 0:
            gc.collect()
            samples.append(rss_mb())
    store = tracker.store
    assert store is not None and store.count_calls() == n
    tracker.close()
    print(f"resident MB every {step:,} calls: " + ", ".join(f"{s:.0f}" for s in samples))
    later = samples[2:]
    print(
        f"from {2 * step:,} to {n:,} calls (the in-memory history full from 100,000): "
        f"{later[0]:.0f} -> {later[-1]:.0f} MB ({later[-1] - later[0]:+.1f} MB)   "
        f"flat (within 5 MB): {verdict(abs(later[-1] - later[0]) <= 5.0)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    import sqlite3

    print(machine_line("sqlite", sqlite3.sqlite_version))
    print(f"cachebench {cachebench.__version__}")
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="cachebench-bench-") as folder:
        tmp = Path(folder)
        caller_overhead(tmp, 20_000 // scale)
        consumer_rates(tmp, 9_000 // scale)
        db = tmp / "million.db"
        ingest(db, 1_000_000 // scale, now)
        report_time(db, now)
        memory(tmp, 1_000_000 // scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
