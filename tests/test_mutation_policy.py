"""The miss-aware policy and its holds, pinned where ``make mutate`` found them unpinned.

Each test kills mutants of :mod:`cachebench.policy` and of the engine's hold path that survived
the selection ``make mutate`` runs (see ``benchmarks/mutation.md``): the public
:class:`~cachebench.policy.Gate` with an injected clock, or ``CacheTracker.wrap`` around a real
SDK client over ``httpx2.MockTransport``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anthropic
import httpx2
import pytest

from cachebench import CachePolicy, CacheTracker
from cachebench.policy import Gate, Hold
from cachebench.testing import ManualClock

from . import fakes

KEY = 0x5EED


class SteppingClock:
    """A clock the test sets, that moves ``step`` seconds each time it is read."""

    def __init__(self, now: float = 0.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        t = self.now
        self.now += self.step
        return t


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def enter_in_thread(gate: Gate, results: list[Hold]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(gate.enter(KEY)))
    thread.start()
    return thread


def test_miss_aware_defaults_and_the_bounds_it_accepts() -> None:
    """``miss_aware()`` holds up to 2000 ms, once. A delay of 0 or under a millisecond, of an
    hour, and ``max_retries=0`` are valid; anything not a number is refused with
    ``TypeError``, a delay below 0, above an hour, infinite or NaN with ``ValueError``."""
    assert CachePolicy.miss_aware() == CachePolicy("miss_aware", 2000.0, 1)
    assert CachePolicy.miss_aware(delay_ms=0, max_retries=0) == CachePolicy("miss_aware", 0.0, 0)
    assert CachePolicy.miss_aware(delay_ms=0.5).delay_ms == 0.5
    assert CachePolicy.miss_aware(delay_ms=3_600_000).delay_ms == 3_600_000.0
    for bad in ("x", None, True):
        with pytest.raises(TypeError, match="delay_ms"):
            CachePolicy.miss_aware(delay_ms=bad)  # type: ignore[arg-type]
    for bad in (-1, 3_600_001, float("inf"), float("nan"), 1e15):
        with pytest.raises(ValueError, match="delay_ms must be a number of milliseconds from 0 to 3,600,000"):
            CachePolicy.miss_aware(delay_ms=bad)
    with pytest.raises(ValueError, match="max_retries"):
        CachePolicy.miss_aware(max_retries=-1)
    with pytest.raises(TypeError, match="max_retries"):
        CachePolicy.miss_aware(max_retries=1.0)  # type: ignore[arg-type]


def test_nobody_waits_on_a_key_without_a_writer() -> None:
    """``waiting(key)`` is 0 for a key nobody writes."""
    assert Gate(100, 1).waiting(KEY) == 0


def test_held_ms_is_the_gates_clock_time_from_entering_to_proceeding() -> None:
    """``held_ms`` is measured on the gate's clock: a twin released when its writer fails
    becomes the writer, held 500 ms; a twin released when that writer's response starts
    proceeds, held 250 ms."""
    clock = SteppingClock(10.0)
    gate = Gate(5000, 1, clock=clock)
    first = gate.enter(KEY)
    assert first.writer and first.holds == 0 and first.held_ms == 0.0
    results: list[Hold] = []
    thread = enter_in_thread(gate, results)
    wait_until(lambda: gate.waiting(KEY) == 1)
    clock.now = 10.5
    gate.finished(KEY, first)  # failed: the held twin takes over
    thread.join(5)
    [second] = results
    assert (second.held_ms, second.holds, second.writer) == (500.0, 1, True)
    thread = enter_in_thread(gate, results)
    wait_until(lambda: gate.waiting(KEY) == 1)
    clock.now = 10.75
    gate.started(KEY, second)
    thread.join(5)
    third = results[1]
    assert (third.held_ms, third.holds, third.writer) == (250.0, 1, False)
    gate.finished(KEY, second)
    assert gate.in_flight == 0


def test_a_hold_lasts_delay_ms_by_the_gates_clock() -> None:
    """The wait is re-armed while the gate's clock says part of ``delay_ms`` is left, and
    ends once it has passed; a clock that did not move ends it after one wait. Reading a
    clock that moves 62.5 ms per reading, a 125 ms hold ends when it reads 250 ms."""
    for step, held in ((0.0625, 250.0), (0.0, 0.0)):
        clock = SteppingClock(0.0)
        gate = Gate(125, 1, clock=clock)
        writer = gate.enter(KEY)
        clock.step = step
        results: list[Hold] = []
        thread = enter_in_thread(gate, results)
        thread.join(3)
        try:
            assert not thread.is_alive(), "the hold never ended"
            assert [(h.held_ms, h.holds, h.writer) for h in results] == [(held, 1, False)]
        finally:
            gate.finished(KEY, writer)
            thread.join(5)


async def test_an_async_hold_lasts_delay_ms_by_the_gates_clock() -> None:
    """:meth:`Gate.aenter` ends its hold as :meth:`Gate.enter` does."""
    for step, held in ((0.0625, 250.0), (0.0, 0.0)):
        clock = SteppingClock(0.0)
        gate = Gate(125, 1, clock=clock)
        writer = gate.enter(KEY)
        clock.step = step
        task = asyncio.ensure_future(gate.aenter(KEY))
        try:
            done, _ = await asyncio.wait({task}, timeout=3)
            assert done, "the hold never ended"
            hold = task.result()
            assert (hold.held_ms, hold.holds, hold.writer) == (held, 1, False)
        finally:
            gate.finished(KEY, writer)
            await asyncio.wait({task}, timeout=5)


def test_twins_of_an_expired_prefix_are_held_and_counted() -> None:
    """With ``miss_aware``, a call rewriting an expired prefix while a twin writes it waits
    (here until the delay passes, the twin still in flight): it is recorded with its
    ``held_ms``, priced as usual, and counted in ``holds``; the writers were never held."""
    clock = ManualClock()
    handler, in_flight, release = fakes.writer_in_flight(fakes.message(fakes.usage(write=3000)))
    tracker = CacheTracker(
        clock=clock, on_miss_alert=lambda m: None, policy=CachePolicy.miss_aware(delay_ms=50)
    )
    create = tracker.wrap(fakes.client(handler).messages.create, flow="f")
    create(**fakes.request("warm-up"))
    for _ in range(2):
        tracker.flush()
        clock.advance(3600)  # the entry expired: the prefix is cold again
        in_flight.clear()
        release.clear()
        thread = threading.Thread(target=lambda: create(**fakes.request("first twin")))
        thread.start()
        try:
            assert in_flight.wait(10)
            create(**fakes.request("second twin"))
        finally:
            release.set()
            thread.join(10)
    warm, *twins = tracker.calls()
    assert [m.held_ms for m in (warm, twins[1], twins[3])] == [0.0, 0.0, 0.0]
    for held in (twins[0], twins[2]):
        assert 45.0 <= held.held_ms < 5000.0
        assert held.cost_usd is not None and not held.unpriced
    for agg in (tracker.aggregate(), tracker.by_flow()["f"]):
        assert (agg["holds"], agg["unpriced_calls"], agg["errors"]) == (2, 0, 0)


async def test_a_sync_call_inside_a_running_event_loop_is_never_held() -> None:
    """A blocking call made from inside a running event loop is not held (a hold would block
    the loop), even while a twin writes its prefix; it is recorded as usual."""
    handler, in_flight, release = fakes.writer_in_flight(fakes.message(fakes.usage(write=3000)))
    tracker = CacheTracker(
        clock=ManualClock(), on_miss_alert=lambda m: None, policy=CachePolicy.miss_aware(delay_ms=2000)
    )
    create = tracker.wrap(fakes.client(handler).messages.create)
    thread = threading.Thread(target=lambda: create(**fakes.request("first twin")))
    thread.start()
    try:
        assert in_flight.wait(10)
        create(**fakes.request("second twin"))  # from the event loop's thread
    finally:
        release.set()
        thread.join(10)
    second, first = tracker.calls()
    assert (second.held_ms, first.held_ms) == (0.0, 0.0)
    assert (first.miss_cause, second.miss_cause) == ("cold", "concurrent")


async def test_an_async_twin_of_an_expired_prefix_is_held_without_blocking_the_loop() -> None:
    """An async call rewriting an expired prefix while a twin task writes it awaits its hold
    (the event loop runs on: the writer's response arrives meanwhile) and is recorded with its
    ``held_ms`` and counted in ``holds``."""
    first_in_flight = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if b"first twin" in request.content:
            first_in_flight.set()
            await release.wait()
        return httpx2.Response(200, json=fakes.message(fakes.usage(write=3000)))

    client = anthropic.AsyncAnthropic(
        api_key="test-key",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    clock = ManualClock()
    tracker = CacheTracker(
        clock=clock, on_miss_alert=lambda m: None, policy=CachePolicy.miss_aware(delay_ms=50)
    )
    create = tracker.wrap(client.messages.create, flow="f")
    await create(**fakes.request("warm-up"))
    tracker.flush()
    clock.advance(3600)  # the entry expired: the prefix is cold again
    first = asyncio.ensure_future(create(**fakes.request("first twin")))
    await first_in_flight.wait()
    await create(**fakes.request("second twin"))
    release.set()
    await first
    warm, second, writer = tracker.calls()
    assert [m.miss_cause for m in (warm, writer, second)] == ["cold", "ttl_expired", "concurrent"]
    assert (warm.held_ms, writer.held_ms) == (0.0, 0.0)
    assert 45.0 <= second.held_ms < 5000.0
    assert tracker.aggregate()["holds"] == 1
    await client.close()
