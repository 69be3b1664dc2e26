"""``CachePolicy.miss_aware`` through the real ``anthropic`` SDK on the emulator.

The emulator makes a new cache entry readable only once the writing response starts (after
its time-to-first-token knob), as the provider does, so parallel calls with the same cold
prefix all pay the write unless the tracker holds the twins until the first one starts.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import pytest

from cachebench import CachePolicy, CacheTracker
from cachebench.testing import CacheEmulator

MODEL = "claude-sonnet-5"
SYSTEM = "You are ACME's support agent. Answer briefly, cite the policy section, never guess. " * 60
PARALLEL = 8


def request(i: int, system: str = SYSTEM) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": f"Question {i}?"}],
    }


def nothing_in_flight(tracker: CacheTracker) -> bool:
    """No call is held by the policy's gate or counted as writing a cold prefix: the gate's
    flights and the engine's in-flight writers (read on its consumer) are both empty."""
    engine = tracker._engine
    return engine.gate is not None and engine.gate.in_flight == 0 and engine.read(lambda: not engine.inflight)


def tracker_for(emu: CacheEmulator, policy: CachePolicy | None) -> CacheTracker:
    return CacheTracker(clock=emu.clock, policy=policy)


def run_threads(emu: CacheEmulator, tracker: CacheTracker, *, stream: bool = False) -> list[tuple[int, int]]:
    client = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="sk-policy", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="burst")

    def one(i: int) -> tuple[int, int]:
        if stream:
            with create(**request(i), stream=True) as events:
                usage = None
                for event in events:
                    if event.type == "message_start":
                        usage = event.message.usage
            assert usage is not None
        else:
            usage = create(**request(i)).usage
        return usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(one, range(PARALLEL)))
    finally:
        client.close()


async def run_tasks(emu: CacheEmulator, tracker: CacheTracker) -> list[tuple[int, int]]:
    client = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key="sk-policy", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="burst")

    async def one(i: int) -> tuple[int, int]:
        usage = (await create(**request(i))).usage
        return usage.cache_read_input_tokens or 0, usage.cache_creation_input_tokens or 0

    try:
        return await asyncio.gather(*(one(i) for i in range(PARALLEL)))
    finally:
        await client.close()


def writers(results: list[tuple[int, int]]) -> int:
    return sum(1 for read, write in results if write and not read)


def readers(results: list[tuple[int, int]]) -> int:
    return sum(1 for read, write in results if read and not write)


def test_without_a_policy_eight_parallel_cold_calls_all_write(cache_emulator: CacheEmulator) -> None:
    """The baseline: 8 parallel calls with one cold prefix each pay the write. The first is
    ``cold``; the 7 that went out while it was still writing are ``concurrent`` (what
    ``miss_aware`` avoids); none is an unexpected miss."""
    cache_emulator.set_knobs(ttft_ms=800)
    tracker = tracker_for(cache_emulator, None)
    results = run_threads(cache_emulator, tracker)
    assert writers(results) == PARALLEL
    assert tracker.aggregate()["holds"] == 0
    causes = Counter(m.miss_cause for m in tracker.calls())
    assert causes == {"cold": 1, "concurrent": PARALLEL - 1}
    assert not any(m.unexpected_miss for m in tracker.calls())


@pytest.mark.parametrize("stream", [False, True], ids=["response", "stream"])
def test_miss_aware_threads_one_writes_seven_read(cache_emulator: CacheEmulator, stream: bool) -> None:
    """With ``miss_aware`` the first call writes; the 7 twins wait until its response starts
    (the full response, or the first stream event) and then read. Each held call records its
    wait; ``aggregate()["holds"]`` counts them."""
    cache_emulator.set_knobs(ttft_ms=800)
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=5000, max_retries=1))
    results = run_threads(cache_emulator, tracker, stream=stream)
    assert (writers(results), readers(results)) == (1, PARALLEL - 1), results
    calls = tracker.calls()
    held = [m for m in calls if m.held_ms > 0]
    assert len(held) == PARALLEL - 1
    assert all(m.cache_read_tokens > 0 and m.cache_write_tokens == 0 for m in held)
    assert all(100 <= m.held_ms < 5000 for m in held)
    assert tracker.aggregate()["holds"] == PARALLEL - 1
    assert nothing_in_flight(tracker)


async def test_miss_aware_asyncio_one_writes_seven_read(cache_emulator: CacheEmulator) -> None:
    """The same with 8 asyncio tasks: the twins wait without blocking the event loop (a ticker
    task keeps running while they are held)."""
    cache_emulator.set_knobs(ttft_ms=800)
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=5000, max_retries=1))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    try:
        results = await run_tasks(cache_emulator, tracker)
    finally:
        tick_task.cancel()
    assert (writers(results), readers(results)) == (1, PARALLEL - 1), results
    assert tracker.aggregate()["holds"] == PARALLEL - 1
    assert ticks >= 10  # the loop kept running during the ~800 ms of holds


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_holds_shorter_than_the_first_response_time_out_and_proceed(
    cache_emulator: CacheEmulator, mode: str
) -> None:
    """With ``delay_ms`` shorter than the writer's time to first token, the twins' holds time
    out: they go ahead and write, each having waited about ``delay_ms``. Nothing is re-sent."""
    cache_emulator.set_knobs(ttft_ms=1500)
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=50, max_retries=1))
    if mode == "threads":
        results = run_threads(cache_emulator, tracker)
    else:
        results = asyncio.run(run_tasks(cache_emulator, tracker))
    assert writers(results) == PARALLEL
    held = [m for m in tracker.calls() if m.held_ms > 0]
    assert len(held) == PARALLEL - 1
    assert {m.miss_cause for m in held} == {"concurrent"}
    assert all(50 <= m.held_ms < 1500 for m in held)
    assert tracker.aggregate()["calls"] == PARALLEL


def test_a_warm_prefix_is_never_held(cache_emulator: CacheEmulator) -> None:
    """Once the prefix is cached, parallel calls read it at once: nothing is cold, no hold."""
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=5000, max_retries=1))
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-policy", max_retries=0
    )
    tracker.wrap(client.messages.create)(**request(-1))
    client.close()
    cache_emulator.set_knobs(ttft_ms=100)
    results = run_threads(cache_emulator, tracker)
    assert readers(results) == PARALLEL
    assert tracker.aggregate()["holds"] == 0


def test_record_never_holds_and_leaves_nothing_in_flight(cache_emulator: CacheEmulator) -> None:
    """``record()`` of a call that already happened is never held and never registered as a
    writer in flight: the next live call on the same cold prefix goes out at once."""
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=2000, max_retries=1))
    cold = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "ok"}],
        "usage": {
            "input_tokens": 5,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    tracker.record(cold, request=request(0, system="Another prompt. " * 200), provider="anthropic")
    assert nothing_in_flight(tracker)
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-policy", max_retries=0
    )
    tracker.wrap(client.messages.create)(**request(1, system="Another prompt. " * 200))
    client.close()
    assert tracker.calls()[-1].held_ms == 0.0
    assert nothing_in_flight(tracker)


def test_a_stream_never_read_releases_its_twins_and_is_recorded_when_dropped(
    cache_emulator: CacheEmulator,
) -> None:
    """A writer whose stream the caller never reads still releases its twins (the provider
    started answering when the headers arrived), and the call is recorded, with unknown usage,
    when the stream object is dropped: nothing stays in flight."""
    tracker = tracker_for(cache_emulator, CachePolicy.miss_aware(delay_ms=5000, max_retries=1))
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-policy", max_retries=0
    )
    create = tracker.wrap(client.messages.create, flow="unread")
    stream = create(**request(0), stream=True)  # never iterated
    twin = create(**request(1))
    assert twin.usage.cache_read_input_tokens > 0  # the writer's entry was readable
    assert tracker.calls()[-1].held_ms < 4000  # released by the headers, not by the 5 s delay
    stream.response.close()  # give the socket back (the stream itself is never read or closed)
    client.close()
    del stream
    with warnings.catch_warnings():
        # A full collection also frees clients other tests left open; their sockets' warnings
        # are theirs, not this test's.
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(3):  # the SDK's stream sits in reference cycles: collect until it is gone
            gc.collect()
            if len(tracker.calls()) == 2:
                break
    calls = tracker.calls()
    assert len(calls) == 2 and {m.usage_known for m in calls} == {True, False}
    assert nothing_in_flight(tracker)
