"""One tracker shared by many threads and asyncio tasks keeps exact totals."""

from __future__ import annotations

import asyncio
import threading

from cachebench import CacheTracker

from . import fakes

USAGE = fakes.usage(input=7, read=1000, write=3, write_1h=0, output=11)


def test_32_threads_give_exact_totals() -> None:
    """32 threads x 40 calls (plain and streamed) through one tracker: every token counted once."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker()
    create = tracker.wrap(client.messages.create, flow="threads")
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(40):
                if i % 2:
                    for _ in create(**fakes.request(f"user {n}"), stream=True):
                        pass
                else:
                    create(**fakes.request(f"user {n}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    calls = 32 * 40
    agg = tracker.aggregate()
    assert agg["calls"] == calls
    assert agg["input_tokens"] == 7 * calls
    assert agg["cache_read_tokens"] == 1000 * calls
    assert agg["cache_write_tokens"] == 3 * calls
    assert agg["output_tokens"] == 11 * calls
    assert len(tracker.calls()) == calls
    assert tracker.by_flow()["threads"]["calls"] == calls


async def test_2000_async_tasks_give_exact_totals() -> None:
    """2,000 concurrent asyncio tasks through one tracker: exact totals, per flow too."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.async_client(handler)
    tracker = CacheTracker()
    create = tracker.wrap(client.messages.create)

    async def one(i: int) -> None:
        flow = f"flow-{i % 4}"
        from cachebench import flow as flow_scope

        with flow_scope(flow):
            if i % 3 == 0:
                stream = await create(**fakes.request(f"u{i}"), stream=True)
                async for _ in stream:
                    pass
            else:
                await create(**fakes.request(f"u{i}"))

    await asyncio.gather(*(one(i) for i in range(2000)))
    agg = tracker.aggregate()
    assert agg["calls"] == 2000
    assert agg["cache_read_tokens"] == 1000 * 2000
    assert agg["output_tokens"] == 11 * 2000
    flows = tracker.by_flow()
    assert sorted(flows) == ["flow-0", "flow-1", "flow-2", "flow-3"]
    assert sum(f["calls"] for f in flows.values()) == 2000
    assert flows["flow-0"]["calls"] == 500
