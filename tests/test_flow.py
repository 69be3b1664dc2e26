"""Flows: names given by ``wrap(flow=)``, ``with cachebench.flow()``, a decorator, or the caller,
inherited by asyncio tasks and by work run in a copy of the context; carried into plain threads
and thread pools only after ``flow.carry_into_threads()``, and never by patching the standard
library unasked."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import cachebench
from cachebench import CacheTracker, _flow

from . import fakes


def _tracked() -> tuple[CacheTracker, Any]:
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    tracker = CacheTracker()
    return tracker, tracker.wrap(fakes.client(handler).messages.create)


def _flows(tracker: CacheTracker) -> list[str]:
    return [m.flow for m in tracker.calls()]


def _support_call(create: Any) -> None:
    create(**fakes.request())


THREAD_START = threading.Thread.start
POOL_SUBMIT = ThreadPoolExecutor.submit


def _stdlib_untouched() -> bool:
    return threading.Thread.start is THREAD_START and ThreadPoolExecutor.submit is POOL_SUBMIT


@pytest.fixture
def carrying() -> Iterator[None]:
    """``flow.carry_into_threads()`` for one test, undone after it."""
    cachebench.flow.carry_into_threads()
    try:
        yield
    finally:
        cachebench.flow.stop_carrying_into_threads()
    assert _stdlib_untouched()


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


async def test_entering_a_flow_patches_nothing() -> None:
    """A ``with flow()`` block, a decorated function and a decorated coroutine function leave
    ``threading.Thread.start`` and ``ThreadPoolExecutor.submit`` as the standard library has
    them: flows never patch the process unasked."""

    @cachebench.flow("decorated")
    def handle() -> str | None:
        return _flow.current_flow()

    @cachebench.flow("decorated-async")
    async def ahandle() -> str | None:
        return _flow.current_flow()

    with cachebench.flow("block"):
        assert _flow.current_flow() == "block"
        assert _stdlib_untouched()
    assert (handle(), await ahandle()) == ("decorated", "decorated-async")
    assert _stdlib_untouched()


def test_a_thread_run_in_a_copy_of_the_context_sees_the_flow_a_plain_one_does_not() -> None:
    """Without the opt-in, a thread whose target runs in ``contextvars.copy_context()`` taken
    inside the block records under the flow, also after the block has ended; a plain thread
    started in the same block starts from an empty context and gets the default name."""
    tracker, create = _tracked()
    gate = threading.Event()

    def call() -> None:
        gate.wait(5)
        create(**fakes.request())

    with cachebench.flow("support"):
        copied = threading.Thread(target=contextvars.copy_context().run, args=(call,))
        copied.start()
    copied_flows = _flows(tracker)
    gate.set()
    copied.join()
    with cachebench.flow("support"):
        plain = threading.Thread(target=create, kwargs=fakes.request())
        plain.start()
    plain.join()
    assert copied_flows == []
    flows = _flows(tracker)
    assert flows[0] == "support"
    assert flows[1] != "support" and not flows[1].startswith("cachebench")


def test_threads_started_inside_a_flow_carry_it_and_others_do_not(carrying: None) -> None:
    """After ``flow.carry_into_threads()``, a plain thread started inside ``with flow()``
    records under that flow, also after the block has ended; a thread started outside any
    flow gets the default name."""
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


def test_pool_tasks_carry_the_submitters_flow_not_the_pool_threads(carrying: None) -> None:
    """After ``flow.carry_into_threads()``, ``ThreadPoolExecutor`` tasks run under the flow they
    were submitted in: a pool whose threads were started inside one flow still runs later
    tasks under the submitter's flow (or none)."""
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


def test_without_the_opt_in_pool_tasks_get_the_default_name() -> None:
    """A task submitted to a plain ``ThreadPoolExecutor`` inside a flow runs in the pool
    thread's own (empty) context: the flow is not carried until the user opts in."""
    tracker, create = _tracked()
    with ThreadPoolExecutor(max_workers=1) as pool, cachebench.flow("burst"):
        pool.submit(create, **fakes.request()).result()
    assert _flows(tracker)[0] != "burst"


def test_carry_into_threads_is_idempotent_and_undone_by_stop() -> None:
    """Opting in twice installs one replacement of each function; one
    ``stop_carrying_into_threads()`` puts the standard library's own functions back, and a
    second one (or one without an opt-in) changes nothing."""
    cachebench.flow.stop_carrying_into_threads()
    assert _stdlib_untouched()
    try:
        cachebench.flow.carry_into_threads()
        start, submit = threading.Thread.start, ThreadPoolExecutor.submit
        assert start is not THREAD_START and submit is not POOL_SUBMIT
        assert (start.__wrapped__, submit.__wrapped__) == (THREAD_START, POOL_SUBMIT)  # type: ignore[attr-defined]
        cachebench.flow.carry_into_threads()
        assert (threading.Thread.start, ThreadPoolExecutor.submit) == (start, submit)
    finally:
        cachebench.flow.stop_carrying_into_threads()
    assert _stdlib_untouched()
    cachebench.flow.stop_carrying_into_threads()
    assert _stdlib_untouched()


def test_stop_refuses_to_remove_a_patch_installed_on_top(monkeypatch: pytest.MonkeyPatch) -> None:
    """If something replaced ``Thread.start`` after the opt-in, undoing the opt-in would remove
    that replacement too: ``stop_carrying_into_threads()`` raises and changes nothing."""
    cachebench.flow.carry_into_threads()
    try:
        ours = threading.Thread.start

        def theirs(self: threading.Thread) -> None:
            ours(self)

        with monkeypatch.context() as m:
            m.setattr(threading.Thread, "start", theirs)
            with pytest.raises(RuntimeError, match="replaced again"):
                cachebench.flow.stop_carrying_into_threads()
            assert threading.Thread.start is theirs
    finally:
        cachebench.flow.stop_carrying_into_threads()
    assert _stdlib_untouched()


async def test_asyncio_tasks_and_copied_contexts_inherit_the_flow() -> None:
    """Without the opt-in, tasks created inside a flow inherit it, and so do
    ``asyncio.to_thread`` calls and ``run_in_executor(None, copy_context().run, fn)``; a bare
    ``run_in_executor(None, fn)`` gets the default name."""
    tracker, create = _tracked()
    loop = asyncio.get_running_loop()

    async def in_task() -> None:
        await asyncio.to_thread(create, **fakes.request())

    def call() -> None:
        create(**fakes.request())

    with cachebench.flow("async-flow"):
        task = asyncio.create_task(in_task())
        copied = loop.run_in_executor(None, contextvars.copy_context().run, call)
    await asyncio.gather(task, copied)
    with cachebench.flow("async-flow"):
        await loop.run_in_executor(None, call)
    assert _flows(tracker)[:2] == ["async-flow", "async-flow"]
    assert _flows(tracker)[2] != "async-flow"
    assert _stdlib_untouched()


async def _triage(create: Any) -> None:
    await create(**fakes.request())


async def test_sdk_calls_gathered_as_tasks_are_named_after_the_function_that_made_them() -> None:
    """An async Stainless method called in ``asyncio.gather`` runs in a task the event loop
    starts, where no frame of the caller is left. The SDK's method is a plain function that
    returns a coroutine, so the wrapper names the flow when the call is made: after the
    function that made it, not after whoever started the event loop."""
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    tracker = CacheTracker()
    create = tracker.wrap(fakes.async_client(handler).messages.create)

    async def fan_out() -> None:
        await asyncio.gather(create(**fakes.request()), create(**fakes.request()))

    await fan_out()
    await asyncio.gather(asyncio.create_task(_triage(create)))
    assert _flows(tracker) == [f"{__name__}.fan_out", f"{__name__}.fan_out", f"{__name__}._triage"]


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
    with pytest.raises(TypeError, match="flow name"):
        cachebench.flow(123)  # type: ignore[arg-type]


SUPPORT = cachebench.flow("support")


def test_one_flow_object_nested_inside_itself() -> None:
    """Entering the same flow object inside itself (a block or a decorated function) keeps the
    name, and each exit restores what was current before the matching enter."""
    tracker, create = _tracked()

    @SUPPORT
    def handle() -> None:
        create(**fakes.request())

    with SUPPORT:
        with SUPPORT:
            create(**fakes.request())
            handle()
        create(**fakes.request())
    create(**fakes.request())
    flows = _flows(tracker)
    assert flows[:3] == ["support"] * 3
    assert flows[3] == f"{__name__}.{test_one_flow_object_nested_inside_itself.__name__}"


async def test_one_flow_object_shared_by_concurrent_asyncio_tasks() -> None:
    """Fifty tasks entering (and re-entering) one module-level flow object, their blocks
    interleaved at every await, all record under it, and each task leaves its own block with
    its previous name restored: the enter/exit bookkeeping is per context, not per object."""
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    tracker = CacheTracker()
    acreate = tracker.wrap(fakes.async_client(handler).messages.create)

    async def handle(i: int) -> None:
        with SUPPORT:
            await asyncio.sleep(0)
            with SUPPORT:
                await acreate(**fakes.request(f"q{i}"))
            await asyncio.sleep(0)
        await acreate(**fakes.request(f"after {i}"))

    await asyncio.gather(*(handle(i) for i in range(50)))
    flows = _flows(tracker)
    assert len(flows) == 100
    assert flows.count("support") == 50
    assert {f for f in flows if f != "support"} == {f"{__name__}.handle"}


def test_one_flow_object_shared_by_threads() -> None:
    """Eight threads inside one flow object's block at the same time, leaving it in an order
    other than the one they entered in, all record under it and raise nothing."""
    tracker, create = _tracked()
    inside = threading.Barrier(8)
    errors: list[BaseException] = []

    def handle(i: int) -> None:
        try:
            with SUPPORT:
                inside.wait(5)
                create(**fakes.request(f"q{i}"))
                inside.wait(5)
            create(**fakes.request(f"after {i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=handle, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    flows = _flows(tracker)
    assert flows.count("support") == 8
    assert {f for f in flows if f != "support"} == {f"{__name__}.handle"}


_PLUMBING_LOOKALIKES = {
    "openai_bot/__init__.py": "",
    "openai_bot/handlers.py": "def answer(create, request):\n    return create(**request)\n",
    "anthropic_tools.py": "def lookup(create, request):\n    return create(**request)\n",
    "httpx_retry.py": "def retry(create, request):\n    return create(**request)\n",
    "cachebench_app.py": "def serve(create, request):\n    return create(**request)\n",
}


def test_user_modules_named_like_an_sdk_are_callers_not_plumbing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module is skipped only when it is one of the SDK/cachebench packages or inside one:
    ``openai_bot.handlers`` or ``anthropic_tools`` are the user's code and name the flow."""
    for rel, source in _PLUMBING_LOOKALIKES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["openai_bot.handlers", "anthropic_tools", "httpx_retry", "cachebench_app"]
    tracker, create = _tracked()
    try:
        handlers, tools, retry, app = (importlib.import_module(name) for name in names)
        handlers.answer(create, fakes.request())
        tools.lookup(create, fakes.request())
        retry.retry(create, fakes.request())
        app.serve(create, fakes.request())
    finally:
        for name in [*names, "openai_bot"]:
            sys.modules.pop(name, None)
    assert _flows(tracker) == [
        "openai_bot.handlers.answer",
        "anthropic_tools.lookup",
        "httpx_retry.retry",
        "cachebench_app.serve",
    ]
