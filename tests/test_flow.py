"""Flows: names given by ``wrap(flow=)``, ``with cachebench.flow()``, a decorator, or the caller,
carried into asyncio tasks, threads and thread pools started inside the block."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import cachebench
from cachebench import CacheTracker

from . import fakes


def _tracked() -> tuple[CacheTracker, Any]:
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    tracker = CacheTracker()
    return tracker, tracker.wrap(fakes.client(handler).messages.create)


def _flows(tracker: CacheTracker) -> list[str]:
    return [m.flow for m in tracker.calls()]


def _support_call(create: Any) -> None:
    create(**fakes.request())


def test_default_flow_is_the_callers_module_and_function() -> None:
    """Without a name, the flow is the caller's ``module.function``, whatever line it is on."""
    tracker, create = _tracked()
    _support_call(create)
    create(**fakes.request())
    assert _flows(tracker) == [
        f"{__name__}._support_call",
        f"{__name__}.{test_default_flow_is_the_callers_module_and_function.__name__}",
    ]


def test_wrap_flow_wins_over_the_context() -> None:
    """A flow given to ``wrap`` names every call through that wrapper, even inside another flow."""
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    tracker = CacheTracker()
    create = tracker.wrap(fakes.client(handler).messages.create, flow="fixed")
    with cachebench.flow("outer"):
        create(**fakes.request())
    assert _flows(tracker) == ["fixed"]


def test_threads_started_inside_a_flow_carry_it_and_others_do_not() -> None:
    """A thread started inside ``with flow()`` records under that flow, also after the block has
    ended; a thread started outside any flow gets the default name."""
    tracker, create = _tracked()
    gate = threading.Event()
    with cachebench.flow("support"):
        inside = threading.Thread(target=lambda: (gate.wait(5), create(**fakes.request())))
        inside.start()
    outside = threading.Thread(target=create, kwargs=fakes.request())
    outside.start()
    outside.join()
    gate.set()
    inside.join()
    flows = _flows(tracker)
    assert flows[1] == "support"
    assert flows[0] != "support" and not flows[0].startswith("cachebench")


def test_pool_tasks_carry_the_submitters_flow_not_the_pool_threads() -> None:
    """``ThreadPoolExecutor`` tasks run under the flow they were submitted in: a pool whose threads
    were started inside one flow still runs later tasks under the submitter's flow (or none)."""
    tracker, create = _tracked()
    with ThreadPoolExecutor(max_workers=2) as pool:
        with cachebench.flow("burst"):
            list(pool.map(lambda _: create(**fakes.request()), range(4)))
        with cachebench.flow("later"):
            pool.submit(create, **fakes.request()).result()
        pool.submit(create, **fakes.request()).result()
    flows = _flows(tracker)
    assert flows[:5] == ["burst"] * 4 + ["later"]
    assert flows[5] not in ("burst", "later")


async def test_asyncio_tasks_and_executor_calls_inherit_the_flow() -> None:
    """Tasks created inside a flow inherit it; so do ``run_in_executor`` and ``to_thread`` calls."""
    tracker, create = _tracked()
    loop = asyncio.get_running_loop()

    async def in_task() -> None:
        await asyncio.to_thread(create, **fakes.request())

    with cachebench.flow("async-flow"):
        task = asyncio.create_task(in_task())
        fut = loop.run_in_executor(None, lambda: create(**fakes.request()))
    await asyncio.gather(task, fut)
    assert _flows(tracker) == ["async-flow", "async-flow"]


def test_decorator_and_nesting() -> None:
    """``@flow`` names the calls of a function; nested blocks restore the outer name on exit."""
    tracker, create = _tracked()

    @cachebench.flow("decorated")
    def handle() -> None:
        create(**fakes.request())

    with cachebench.flow("outer"):
        handle()
        with cachebench.flow("inner"):
            create(**fakes.request())
        create(**fakes.request())
    assert _flows(tracker) == ["decorated", "inner", "outer"]
    with pytest.raises(ValueError, match="flow name"):
        cachebench.flow(" ")
