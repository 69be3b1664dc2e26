"""The miss-aware hold engine: one writer per cold prefix, twins held until it starts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from cachebench.policy import CachePolicy, Gate, Hold

KEY = 0x5EED
LONG_MS = 5000.0  # a delay no test waits out: being released before it proves the release


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


async def await_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def start_threads(gate: Gate, n: int, results: list[Hold], key: int = KEY) -> list[threading.Thread]:
    barrier = threading.Barrier(n)

    def call() -> None:
        barrier.wait()
        results.append(gate.enter(key))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=LONG_MS / 1000 / 2)
    assert not any(t.is_alive() for t in threads)


def test_policy_gate() -> None:
    """Only miss_aware has a hold engine, a new one per call, carrying the policy's settings."""
    assert CachePolicy().gate() is None
    policy = CachePolicy.miss_aware(delay_ms=250, max_retries=3)
    gate = policy.gate()
    assert isinstance(gate, Gate)
    assert gate is not policy.gate()
    assert (gate._delay_s, gate._max_retries) == (0.25, 3)


def test_threads_one_writer_others_released_when_it_starts() -> None:
    """8 threads on one cold key: one writes, 7 hold until started(), well before delay_ms."""
    gate = Gate(LONG_MS, max_retries=1)
    results: list[Hold] = []
    threads = start_threads(gate, 8, results)
    wait_until(lambda: len(results) == 1 and gate.waiting(KEY) == 7)
    (writer,) = results
    assert writer.writer
    assert (writer.holds, writer.held_ms) == (0, 0.0)
    assert gate.in_flight == 1

    gate.started(KEY, writer)
    join(threads)
    held = results[1:]
    assert [h.writer for h in held] == [False] * 7
    assert [h.holds for h in held] == [1] * 7
    assert all(0 < h.held_ms < LONG_MS for h in held)
    assert gate.waiting(KEY) == 0
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


async def test_tasks_one_writer_others_released_loop_responsive() -> None:
    """8 tasks on one cold key: one writes, 7 hold on futures while another task keeps ticking."""
    gate = Gate(LONG_MS, max_retries=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    calls = [asyncio.create_task(gate.aenter(KEY)) for _ in range(8)]
    await await_until(lambda: gate.waiting(KEY) == 7)
    (writer,) = [c.result() for c in calls if c.done()]
    assert writer.writer
    before = ticks
    await asyncio.sleep(0.01)
    assert ticks > before  # the loop runs while 7 calls hold

    gate.started(KEY, writer)
    held = [h for h in await asyncio.wait_for(asyncio.gather(*calls), LONG_MS / 1000 / 2) if h is not writer]
    ticking.cancel()
    assert [(h.writer, h.holds) for h in held] == [(False, 1)] * 7
    assert all(0 < h.held_ms < LONG_MS for h in held)
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


@pytest.mark.parametrize("writer_side", ["thread", "task"])
async def test_threads_and_tasks_share_one_gate(writer_side: str) -> None:
    """A thread writer releases held tasks and a task writer releases held threads."""
    gate = Gate(LONG_MS, max_retries=1)
    if writer_side == "thread":
        writer = await asyncio.to_thread(gate.enter, KEY)
    else:
        writer = await gate.aenter(KEY)
    assert writer.writer
    results: list[Hold] = []
    threads = start_threads(gate, 4, results)
    tasks = [asyncio.create_task(gate.aenter(KEY)) for _ in range(4)]
    await await_until(lambda: gate.waiting(KEY) == 8)

    if writer_side == "thread":
        await asyncio.to_thread(gate.started, KEY, writer)
    else:
        gate.started(KEY, writer)
    held = [*await asyncio.wait_for(asyncio.gather(*tasks), LONG_MS / 1000 / 2)]
    await asyncio.to_thread(join, threads)
    held += results
    assert [(h.writer, h.holds) for h in held] == [(False, 1)] * 8
    assert all(h.held_ms < LONG_MS for h in held)
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


def test_delay_shorter_than_start_threads_proceed_without_writing() -> None:
    """A writer that has not started by delay_ms: each hold times out and the call proceeds.

    With its holds used up and the writer still in flight, a call proceeds as a reader,
    not as a second writer: the writer stays the one whose start would release others.
    """
    gate = Gate(50, max_retries=1)
    results: list[Hold] = []
    threads = start_threads(gate, 8, results)
    join(threads)
    (writer,) = [h for h in results if h.writer]
    held = [h for h in results if not h.writer]
    assert [h.holds for h in held] == [1] * 7
    assert all(h.held_ms >= 50 for h in held)
    assert (gate.in_flight, gate.waiting(KEY)) == (1, 0)
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


async def test_delay_shorter_than_start_tasks_proceed_without_writing() -> None:
    """The same timeout for asyncio tasks, each held up to max_retries times."""
    gate = Gate(20, max_retries=2)
    holds = await asyncio.gather(*(gate.aenter(KEY) for _ in range(8)))
    (writer,) = [h for h in holds if h.writer]
    held = [h for h in holds if not h.writer]
    assert [h.holds for h in held] == [2] * 7
    assert all(h.held_ms >= 40 for h in held)
    assert (gate.in_flight, gate.waiting(KEY)) == (1, 0)
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


def test_a_writer_that_started_and_finished_at_once_releases_everyone_as_readers() -> None:
    """A non-streaming writer starts and finishes together (its whole response at once): with
    holds left (max_retries=3), each released thread and task still proceeds as a reader, and
    none becomes a writer of the entry that is now readable (none holds on another)."""
    gate = Gate(LONG_MS, max_retries=3)
    first = gate.enter(KEY)
    results: list[Hold] = []
    threads = start_threads(gate, 4, results)
    wait_until(lambda: gate.waiting(KEY) == 4)
    gate.started(KEY, first)
    gate.finished(KEY, first)
    join(threads)
    assert [(h.writer, h.holds) for h in results] == [(False, 1)] * 4
    assert gate.in_flight == 0


async def test_tasks_released_by_a_writer_that_started_and_finished_are_readers() -> None:
    gate = Gate(LONG_MS, max_retries=3)
    first = await gate.aenter(KEY)
    tasks = [asyncio.create_task(gate.aenter(KEY)) for _ in range(4)]
    await await_until(lambda: gate.waiting(KEY) == 4)
    gate.started(KEY, first)
    gate.finished(KEY, first)
    holds = await asyncio.wait_for(asyncio.gather(*tasks), LONG_MS / 1000 / 2)
    assert [(h.writer, h.holds) for h in holds] == [(False, 1)] * 4
    assert gate.in_flight == 0


def test_failed_writer_releases_waiters_and_one_takes_over() -> None:
    """A writer that ends without starting releases its waiters; the first becomes the writer.

    The others, with a hold left, hold again on the new writer until it starts.
    """
    gate = Gate(LONG_MS, max_retries=2)
    first = gate.enter(KEY)
    results: list[Hold] = []
    threads = start_threads(gate, 4, results)
    wait_until(lambda: gate.waiting(KEY) == 4)

    gate.finished(KEY, first)  # failed: started() never called
    wait_until(lambda: len(results) == 1 and gate.waiting(KEY) == 3)
    (second,) = results
    assert (second.writer, second.holds) == (True, 1)
    assert 0 < second.held_ms < LONG_MS

    gate.started(KEY, second)
    join(threads)
    assert [(h.writer, h.holds) for h in results[1:]] == [(False, 2)] * 3
    gate.finished(KEY, second)
    gate.finished(KEY, first)  # a stale finish does not touch the new writer's entry
    assert gate.in_flight == 0


async def test_failed_writer_without_holds_left_waiters_read() -> None:
    """With max_retries=1 the waiters of a failed writer: one writes, the rest proceed unheld again."""
    gate = Gate(LONG_MS, max_retries=1)
    first = await gate.aenter(KEY)
    tasks = [asyncio.create_task(gate.aenter(KEY)) for _ in range(4)]
    await await_until(lambda: gate.waiting(KEY) == 4)
    gate.finished(KEY, first)
    holds = await asyncio.wait_for(asyncio.gather(*tasks), LONG_MS / 1000 / 2)
    assert sorted((h.writer, h.holds) for h in holds) == [(False, 1)] * 3 + [(True, 1)]
    for h in holds:
        gate.finished(KEY, h)
    assert gate.in_flight == 0


async def test_max_retries_zero_and_key_none_never_hold() -> None:
    """max_retries=0 makes the gate inert; key None (nothing cold) never holds nor writes."""
    inert = Gate(LONG_MS, max_retries=0)
    assert [inert.enter(KEY), await inert.aenter(KEY)] == [Hold(), Hold()]
    assert inert.in_flight == 0

    gate = Gate(LONG_MS, max_retries=1)
    writer = gate.enter(KEY)
    assert [gate.enter(None), await gate.aenter(None)] == [Hold(), Hold()]
    gate.started(None, writer)
    gate.finished(None, writer)
    assert gate.in_flight == 1
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


def test_started_entry_is_readable_finished_entry_is_gone() -> None:
    """After started() newcomers proceed unheld as readers; after finished() the next call writes.

    started() and finished() act only for the writer's own Hold and are idempotent.
    """
    gate = Gate(LONG_MS, max_retries=1)
    writer = gate.enter(KEY)
    other = gate.enter(KEY + 1)
    assert other.writer  # keys are independent
    gate.started(KEY, writer)
    gate.started(KEY, writer)
    reader = gate.enter(KEY)
    assert reader == Hold()
    gate.finished(KEY, reader)
    assert gate.in_flight == 2
    gate.finished(KEY, writer)
    gate.finished(KEY, writer)
    gate.finished(KEY + 1, other)
    assert gate.in_flight == 0
    assert gate.enter(KEY).writer


async def test_cancelled_task_leaves_no_waiter() -> None:
    """A held task that is cancelled unregisters its future; the writer's release finds none."""
    gate = Gate(LONG_MS, max_retries=1)
    writer = await gate.aenter(KEY)
    task = asyncio.create_task(gate.aenter(KEY))
    await await_until(lambda: gate.waiting(KEY) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.waiting(KEY) == 0
    assert gate._flights[KEY].futures == []
    gate.finished(KEY, writer)
    assert gate.in_flight == 0


def test_many_keys_leave_nothing_behind() -> None:
    """Memory is bounded by calls in flight: after 16 threads over 4 keys finish, the gate is empty."""
    gate = Gate(LONG_MS, max_retries=1)
    results: list[Hold] = []
    keys = [k % 4 for k in range(16)]
    barrier = threading.Barrier(len(keys))

    def call(key: int) -> None:
        barrier.wait()
        hold = gate.enter(key)
        results.append(hold)
        gate.started(key, hold)
        gate.finished(key, hold)

    threads = [threading.Thread(target=call, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    join(threads)
    assert len(results) == 16
    assert sum(h.writer for h in results) >= 4
    assert gate.in_flight == 0
