"""cachebench emulator benchmark: requests per second (4k-token prompt), latency (100k tokens).

Run from the repository root (``make bench-emulator`` does the same)::

    .venv/bin/python benchmarks/emulator.py            # both sections, about 20 seconds on 2 cores
    .venv/bin/python benchmarks/emulator.py --quick    # a smoke run (10x fewer requests)

The emulator runs as ``python -m cachebench.cli emulate --port 0`` in a subprocess, and this
process drives it over HTTP keep-alive with ``httpx2`` (the HTTP client the SDKs use), so the
client never shares an interpreter or a GIL with the server. It prints figures with their
targets (``ok`` / ``MISSED``) and exits 0; no timing is asserted. It exits non-zero only when
the emulator is broken (an error status, or no cache read in the steady state). What each
figure means: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2
import orjson
from _common import machine_line, verdict

from cachebench.tokens import estimate_text

HERE = Path(__file__).resolve().parent
MODEL = "claude-sonnet-5"  # minimum cacheable prefix: 1024 tokens
KEY = "sk-emulator-bench"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}

TARGET_RPS = 300.0
TARGET_P50_MS = 20.0
PROMPT_4K = 4_000
PROMPT_100K = 100_000
VARIANTS = 64  # distinct last user turns per prompt, pre-serialized

WORDS = (
    "cache", "prefix", "token", "system", "prompt", "model", "request", "response", "stream", "usage",
    "read", "write", "breakpoint", "agent", "tool", "schema", "policy", "customer", "order", "invoice",
)  # fmt: skip


def text_of(tokens: int, rnd: random.Random) -> str:
    """English-like ASCII text of exactly ``tokens`` tokens by ``estimate_text``."""
    chars = tokens * 4
    out: list[str] = []
    size = 0
    while size < chars:
        word = rnd.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    text = " ".join(out)[:chars]
    assert estimate_text(text) == tokens, (estimate_text(text), tokens)
    return text


def cc() -> dict[str, str]:
    return {"type": "ephemeral"}


def request_4k(question: str) -> dict[str, Any]:
    """A cached system prompt and a short, uncached user turn: ~4,000 tokens in all."""
    system = text_of(PROMPT_4K - estimate_text(question), random.Random(4))
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": [{"type": "text", "text": system, "cache_control": cc()}],
        "messages": [{"role": "user", "content": question}],
    }


def request_100k(question: str) -> dict[str, Any]:
    """A long agent conversation: a cached 2,000-token system prompt, 196 turns of 500 tokens
    (a breakpoint on the last assistant turn, so the whole conversation is read back) and a
    short new user turn: ~100,000 tokens in 198 blocks."""
    rnd = random.Random(100)
    messages: list[dict[str, Any]] = []
    for i in range(196):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [{"type": "text", "text": text_of(500, rnd)}]})
    messages[-1]["content"][-1]["cache_control"] = cc()
    messages.append({"role": "user", "content": question})
    system = text_of(2_000 - estimate_text(question), rnd)
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": [{"type": "text", "text": system, "cache_control": cc()}],
        "messages": messages,
    }


def question(i: int) -> str:
    """The new user turn of variant ``i`` (the same length, so the same token count, for every ``i``)."""
    return f"Customer {i:04d} asks about order {i * 7:05d}: where is it and when does it ship?"


def bodies(build: Any) -> list[bytes]:
    """``VARIANTS`` pre-serialized requests sharing the cached prefix, differing in the last turn."""
    return [orjson.dumps(build(question(i))) for i in range(VARIANTS)]


# -- the server ----------------------------------------------------------------------------


class Server:
    """``cachebench emulate --port 0`` in a subprocess; :attr:`url` is the URL it announces."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cachebench.cli", "emulate", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # "cachebench emulator on http://127.0.0.1:PORT"
        if not first.startswith("cachebench emulator on "):
            self.stop()
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            raise RuntimeError(f"the emulator did not start: {first!r} {err[-500:]!r}")
        self.url = first.split(" on ", 1)[1].strip()
        # The rest of stdout and stderr is drained in the background so neither pipe fills.
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                threading.Thread(target=pipe.read, daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx2.get(f"{self.url}/_emulator/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator did not answer /_emulator/health")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def post(client: httpx2.Client, path: str, body: bytes) -> dict[str, Any]:
    response = client.post(path, content=body, headers=HEADERS)
    if response.status_code != 200:
        raise SystemExit(f"BROKEN: {path} answered {response.status_code}: {response.text[:300]}")
    result: dict[str, Any] = response.json()
    return result


def show_prompt(client: httpx2.Client, body: bytes, label: str, nominal: int) -> None:
    """The prompt's size: local estimate, the emulator's count_tokens, bytes and blocks."""
    request = orjson.loads(body)
    local = sum(estimate_text(b["text"]) for b in request["system"])
    for m in request["messages"]:
        content = m["content"]
        local += (
            estimate_text(content)
            if isinstance(content, str)
            else sum(estimate_text(b["text"]) for b in content)
        )
    count = {k: request[k] for k in ("model", "system", "messages")}
    counted = post(client, "/v1/messages/count_tokens", orjson.dumps(count))["input_tokens"]
    print(
        f"{label} prompt: {counted:,} tokens by count_tokens ({local:,} by tokens.estimate_text of the "
        f"texts; nominal {nominal:,}), {len(body) / 1e3:,.0f} KB JSON, "
        f"{1 + len(request['messages'])} blocks"
    )


def show_usage(usage: dict[str, Any], label: str) -> None:
    print(
        f"  usage of one {label} request in the steady state: input_tokens={usage['input_tokens']:,} "
        f"cache_read_input_tokens={usage['cache_read_input_tokens']:,} "
        f"cache_creation_input_tokens={usage['cache_creation_input_tokens']:,} "
        f"output_tokens={usage['output_tokens']}"
    )
    if usage["cache_read_input_tokens"] <= 0:
        raise SystemExit(f"BROKEN: no cache read in the steady state of the {label} prompt")


def new_client(url: str, connections: int) -> httpx2.Client:
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.Client(base_url=url, limits=limits, timeout=30)


# -- 1. throughput -------------------------------------------------------------------------


def bench_throughput(server: Server, requests: int, clients: int) -> None:
    print(f"\n== 1. Throughput, {PROMPT_4K:,}-token prompt, non-streaming, {clients} concurrent clients ==")
    payloads = bodies(request_4k)
    with new_client(server.url, clients) as client:
        show_prompt(client, payloads[0], "4k", PROMPT_4K)
        first = post(client, "/v1/messages", payloads[0])["usage"]
        print(
            f"  usage of the first request (cold): cache_creation_input_tokens="
            f"{first['cache_creation_input_tokens']:,} cache_read_input_tokens={first['cache_read_input_tokens']:,}"
        )
        errors: list[str] = []

        def worker(start: int, n: int, barrier: threading.Barrier | None) -> None:
            if barrier is not None:
                barrier.wait()
            for i in range(start, start + n):
                response = client.post("/v1/messages", content=payloads[i % VARIANTS], headers=HEADERS)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    return

        def run(n: int) -> tuple[float, float, float]:
            """``n`` requests over ``clients`` threads: (wall s, client CPU s, server CPU s)."""
            per = n // clients
            barrier = threading.Barrier(clients + 1)
            threads = [threading.Thread(target=worker, args=(k * per, per, barrier)) for k in range(clients)]
            for t in threads:
                t.start()
            cpu0, srv0 = time.process_time(), server.cpu_seconds()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            if errors:
                raise SystemExit(f"BROKEN: the emulator answered {errors[0]}")
            return wall, time.process_time() - cpu0, server.cpu_seconds() - srv0

        run(max(clients * 10, requests // 10))  # warm-up: connections, caches, code paths
        show_usage(post(client, "/v1/messages", payloads[1])["usage"], "4k")
        n = requests - requests % clients
        rates = []
        for _ in range(3):
            wall, client_cpu, server_cpu = run(n)
            rates.append(n / wall)
        rps = statistics.median(rates)
    print(
        f"{n:,} requests x 3 runs: {rps:,.0f} req/s median (runs: {', '.join(f'{r:,.0f}' for r in rates)})   "
        f"target >= {TARGET_RPS:.0f} req/s: {verdict(rps >= TARGET_RPS)}"
    )
    print(
        f"  CPU per request in the last run: server {server_cpu / n * 1e3:.2f} ms, "
        f"client {client_cpu / n * 1e3:.2f} ms (wall {wall / n * 1e3:.2f} ms per request); "
        f"the server alone on one core would serve about {n / server_cpu:,.0f} req/s"
    )


# -- 2. latency ----------------------------------------------------------------------------


def bench_latency(server: Server, requests: int) -> None:
    print(f"\n== 2. Latency, {PROMPT_100K:,}-token prompt, sequential, one keep-alive connection ==")
    payloads = bodies(request_100k)
    with new_client(server.url, 1) as client:
        show_prompt(client, payloads[0], "100k", PROMPT_100K)
        first = post(client, "/v1/messages", payloads[0])["usage"]
        print(
            f"  usage of the first request (cold): cache_creation_input_tokens="
            f"{first['cache_creation_input_tokens']:,} cache_read_input_tokens={first['cache_read_input_tokens']:,}"
        )
        for i in range(max(5, requests // 10)):  # warm-up
            post(client, "/v1/messages", payloads[i % VARIANTS])
        show_usage(post(client, "/v1/messages", payloads[1])["usage"], "100k")
        samples: list[float] = []
        srv0 = server.cpu_seconds()
        for i in range(requests):
            t0 = time.perf_counter()
            response = client.post("/v1/messages", content=payloads[i % VARIANTS], headers=HEADERS)
            samples.append((time.perf_counter() - t0) * 1e3)
            if response.status_code != 200:
                raise SystemExit(
                    f"BROKEN: the emulator answered {response.status_code}: {response.text[:200]}"
                )
        server_cpu = server.cpu_seconds() - srv0
    samples.sort()
    p50 = statistics.median(samples)
    p90 = samples[int(0.9 * (len(samples) - 1))]
    print(
        f"{requests:,} requests: p50 {p50:.2f} ms, p90 {p90:.2f} ms, min {samples[0]:.2f} ms, "
        f"max {samples[-1]:.2f} ms   target p50 < {TARGET_P50_MS:.0f} ms: {verdict(p50 < TARGET_P50_MS)}"
    )
    print(f"  server CPU per request: {server_cpu / requests * 1e3:.2f} ms")


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10x fewer requests (a smoke run)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--only", default="throughput,latency", help="comma-separated sections to run")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    started = time.perf_counter()
    print(machine_line("httpx2", httpx2.__version__))
    sections = set(args.only.split(","))
    server = Server()
    try:
        print(
            f"emulator: `python -m cachebench.cli emulate --port 0` (pid {server.proc.pid}) on {server.url}"
        )
        if "throughput" in sections:
            bench_throughput(server, 6_000 // scale, args.clients)
        if "latency" in sections:
            bench_latency(server, 1_000 // scale)
    finally:
        server.stop()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
