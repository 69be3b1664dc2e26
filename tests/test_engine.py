"""One consumer does the analysis: the caller's thread only queues, readers wait for what was
queued before them, callbacks run on the consumer and never hold up the caller, a full queue
pushes back (and counts what it must drop), interpreter exit and ``close()`` drain, and a forked
child gets a consumer of its own. Every test drives a real SDK client (over a mock transport)."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench import engine as engine_module
from cachebench.expect import ALIVE, NEVER
from cachebench.testing import ManualClock

from . import fakes

ROOT = str(pathlib.Path(__file__).resolve().parents[1])


def misses(n: int) -> tuple[Any, list[dict[str, Any]]]:
    """A handler whose first answer writes the prefix and every later one writes it again:
    from the second call on, every call is an unexpected miss (an alert each)."""
    return fakes.scripted([fakes.usage(write=2000)] * n)


def test_a_read_after_a_call_sees_the_call_and_the_alerts_it_raised() -> None:
    alerts: list[CallMetrics] = []
    handler, _ = misses(2)
    tracker = CacheTracker(on_miss_alert=alerts.append, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    for _ in range(2):
        create(**fakes.request())
    assert len(tracker.calls()) == 2
    assert [m.unexpected_miss for m in alerts] == [True]  # the read waited for the callback too


def test_a_slow_callback_holds_up_nothing_of_the_caller() -> None:
    """The alert callback blocks until the test lets it go; meanwhile the call that raised it
    has returned and more calls go through."""
    release = threading.Event()
    entered = threading.Event()
    returned = threading.Event()

    def blocking_alert(m: CallMetrics) -> None:
        entered.set()
        release.wait(5)
        returned.set()

    handler, _ = misses(5)
    tracker = CacheTracker(on_miss_alert=blocking_alert, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    try:
        for _ in range(5):  # the 2nd call's alert blocks the consumer; the caller goes on
            create(**fakes.request())
        assert entered.wait(10)
        assert not returned.is_set()  # every call returned while the callback was blocked
    finally:
        release.set()
    assert len(tracker.calls()) == 5


def test_a_reader_called_from_a_callback_answers_at_once() -> None:
    """Callbacks run on the consumer: a reader there answers without waiting on itself, and
    sees the call whose alert is running."""
    seen: list[tuple[int, int]] = []
    tracker: CacheTracker

    def alert(m: CallMetrics) -> None:
        seen.append((len(tracker.calls()), tracker.aggregate()["calls"]))
        tracker.flush()  # a no-op there, not a wait on itself

    def on_regression(r: Regression) -> None:
        tracker.regressions()

    handler, _ = misses(3)
    tracker = CacheTracker(on_miss_alert=alert, on_regression=on_regression, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    for _ in range(3):
        create(**fakes.request())
    tracker.flush()
    assert seen == [(2, 2), (3, 3)]


def test_a_tracked_call_made_from_a_callback_is_recorded() -> None:
    """A callback that itself calls a tracked client (paging through an LLM, say) is recorded
    like any other call, without deadlocking the consumer."""
    handler, _ = misses(3)
    client = fakes.client(handler)
    tracker = CacheTracker(clock=ManualClock())
    tracker.instrument(client)
    paged: list[str] = []

    def alert(m: CallMetrics) -> None:
        if not paged:
            paged.append(m.flow)
            client.messages.create(**fakes.request("summarise this miss"))

    tracker.on_miss_alert = alert
    client.messages.create(**fakes.request())
    client.messages.create(**fakes.request())
    calls = tracker.calls()
    assert len(calls) == 3 and len(paged) == 1


def test_a_full_queue_pushes_back_then_drops_and_counts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the consumer stuck in a callback, a caller waits for room (at most ROOM_WAIT_S),
    then calls are dropped: not recorded, logged and counted, and from then on dropped at once
    (no caller waits again) until the queue has drained to half. A dropped call queues
    nothing, so the queue holds no request or response of it. The caller's call is never
    lost or raised into, and once the callback returns, everything queued is recorded."""
    monkeypatch.setattr(engine_module, "QUEUE_LIMIT", 4)
    monkeypatch.setattr(engine_module, "ROOM_WAIT_S", 0.05)
    release = threading.Event()

    def stuck(m: CallMetrics) -> None:
        release.wait(30)

    handler, _ = misses(40)
    tracker = CacheTracker(on_miss_alert=stuck, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    queued = tracker._engine._consumer.queue
    try:
        for _ in range(20):
            assert create(**fakes.request()).usage.cache_creation_input_tokens == 2000
            assert queued.qsize() <= 4 + 1  # the limit, and the END of a call that found room
        assert tracker.dropped_calls > 0
        assert "not recorded" in caplog.text
        # Shedding: no caller waits for room again, however long ROOM_WAIT_S is now.
        monkeypatch.setattr(engine_module, "ROOM_WAIT_S", 600.0)
        more = threading.Thread(target=lambda: [create(**fakes.request()) for _ in range(20)])
        more.start()
        more.join(30)
        assert not more.is_alive(), "a caller waited for room while the queue was being shed"
    finally:
        release.set()
    calls = tracker.calls()
    assert len(calls) + tracker.dropped_calls == 40
    assert tracker.aggregate()["calls"] == len(calls)


async def test_an_event_loop_never_waits_for_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an event loop's thread a full queue drops the call at once: waiting there would
    stall every other task of the loop."""
    monkeypatch.setattr(engine_module, "QUEUE_LIMIT", 4)
    monkeypatch.setattr(engine_module, "ROOM_WAIT_S", 600.0)
    release = threading.Event()
    handler, _ = misses(30)
    tracker = CacheTracker(on_miss_alert=lambda m: release.wait(30), clock=ManualClock())
    create = tracker.wrap(fakes.async_client(handler).messages.create)
    try:
        for _ in range(30):
            await asyncio.wait_for(create(**fakes.request()), timeout=30)
        assert tracker.dropped_calls > 0
    finally:
        release.set()
    assert len(tracker.calls()) + tracker.dropped_calls == 30


def test_back_pressure_waits_for_room_rather_than_dropping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that is merely slow (each alert takes a few ms) makes callers wait for room;
    nothing is dropped."""
    monkeypatch.setattr(engine_module, "QUEUE_LIMIT", 4)
    handler, _ = misses(40)
    tracker = CacheTracker(on_miss_alert=lambda m: time.sleep(0.002), clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    for _ in range(40):
        create(**fakes.request())
    assert tracker.dropped_calls == 0
    assert len(tracker.calls()) == 40


def test_close_drains_and_the_tracker_stays_readable() -> None:
    alerts: list[CallMetrics] = []
    handler, _ = misses(3)
    tracker = CacheTracker(on_miss_alert=alerts.append, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    for _ in range(3):
        create(**fakes.request())
    tracker.close()
    assert len(alerts) == 2
    tracker.close()
    assert len(tracker.calls()) == 3


def test_a_read_waits_for_the_calls_of_every_thread() -> None:
    """Calls from 8 threads, then a read from the main thread: it sees every one of them."""
    handler, _ = fakes.scripted([fakes.usage(read=2000)] * 400)
    tracker = CacheTracker(clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)

    def work() -> None:
        for i in range(50):
            create(**fakes.request(f"question {i}"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.aggregate()["calls"] == 400
    assert tracker.aggregate()["cache_read_tokens"] == 400 * 2000


EXIT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from tests import fakes
    from cachebench import CacheTracker

    out = open({path!r}, "a")

    def alert(m):
        time.sleep(0.01)  # a slow callback: the queue is still busy when the script ends
        out.write(json.dumps(m.as_dict()) + "\\n")
        out.flush()

    handler, _ = fakes.scripted([fakes.usage(write=2000)] * 20)
    tracker = CacheTracker(on_miss_alert=alert)
    create = tracker.wrap(fakes.client(handler).messages.create)
    for _ in range(20):
        create(**fakes.request())
    # no flush, no close: interpreter exit drains the queue
    """
)


def test_interpreter_exit_drains_what_is_queued(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "alerts.jsonl"
    script = EXIT_SCRIPT.format(root=ROOT, path=str(path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = path.read_text().splitlines()
    assert len(lines) == 19  # every call after the first is an unexpected miss
    assert all(json.loads(line)["unexpected_miss"] for line in lines)


FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {root!r})
    from tests import fakes
    from cachebench import CacheTracker

    handler, _ = fakes.scripted([fakes.usage(write=2000)] + [fakes.usage(read=2000)] * 10)
    tracker = CacheTracker()
    create = tracker.wrap(fakes.client(handler).messages.create)
    create(**fakes.request())
    tracker.flush()  # the parent's consumer is running when it forks
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        create(**fakes.request())  # the child's own consumer records it
        got = {{"child_calls": len(tracker.calls())}}
        os.write(w, json.dumps(got).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    child = json.loads(os.read(r, 1000))
    create(**fakes.request())
    print(json.dumps(dict(child, parent_calls=len(tracker.calls()), status=status)))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_forked_child_records_with_a_consumer_of_its_own() -> None:
    script = FORK_SCRIPT.format(root=ROOT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "child_calls": 2,
        "parent_calls": 2,
        "status": 0,
    }


def test_a_tracker_nobody_holds_stops_its_consumer() -> None:
    """A tracker that goes out of use (and its wrappers with it) takes its consumer thread
    with it: a thousand short-lived trackers leave no thousand threads behind."""
    import gc

    before = threading.active_count()
    handler, _ = fakes.scripted([fakes.usage(read=2000)] * 50)
    client = fakes.client(handler)
    for _ in range(50):
        tracker = CacheTracker()
        tracker.wrap(client.messages.create)(**fakes.request())
        assert len(tracker.calls()) == 1
        del tracker
    gc.collect()
    deadline = time.monotonic() + 10
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before + 1


def test_streams_end_on_the_consumer_when_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    """An abandoned stream's finalizer only queues its ending; the next read records it."""
    import gc

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = fakes.sse_bytes(fakes.sse_events(fakes.usage(write=2000)))
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    tracker = CacheTracker(clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    stream = create(**fakes.request(), stream=True)
    for _ in stream:
        break
    del stream
    gc.collect()
    (m,) = tracker.calls()
    assert m.stream and m.cache_write_tokens == 2000


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests import fakes
    from cachebench import CacheTracker

    handler, _ = fakes.scripted([fakes.usage(write=2000)] * 3)
    tracker = CacheTracker()
    create = tracker.wrap(fakes.client(handler).messages.create)

    class ClosesAtTeardown:
        def __del__(self):
            print("closing in __del__:", len(tracker.calls()), flush=True)
            tracker.close()
            print("closed", flush=True)

    keeper = ClosesAtTeardown()  # a module global: collected while the interpreter finishes
    for _ in range(3):
        create(**fakes.request())
    """
)


def test_a_read_while_the_interpreter_finishes_returns() -> None:
    """A reader in a ``__del__`` that runs during interpreter teardown, when the consumer
    thread is frozen and no thread may start: it answers from its own thread, and the
    process exits."""
    script = SHUTDOWN_SCRIPT.format(root=ROOT)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "closing in __del__: 3" in done.stdout and "closed" in done.stdout


def test_close_undoes_instrument_and_stops_the_consumer() -> None:
    """A tracker per request on one shared client (``with CacheTracker() as t:
    t.instrument(client)``): each one's patch is gone at its end and its thread with it, so
    the client does not pile up wrappers and the process does not pile up threads; what each
    recorded stays readable."""
    handler, _ = fakes.scripted([fakes.usage(read=2000)] * 60)
    client = fakes.client(handler)
    original = client.request
    threads_before = threading.active_count()
    trackers: list[CacheTracker] = []
    for i in range(30):
        with CacheTracker(clock=ManualClock()) as tracker:
            tracker.instrument(client)
            client.messages.create(**fakes.request(f"question {i}"))
        trackers.append(tracker)
        assert client.request == original
    assert threading.active_count() <= threads_before + 1
    assert all(len(t.calls()) == 1 for t in trackers)
    client.messages.create(**fakes.request("after"))  # recorded by nobody
    assert all(len(t.calls()) == 1 for t in trackers)


def test_uninstrument_under_another_patch_turns_its_own_off() -> None:
    """Two trackers instrument one client; the first is undone while the second's patch sits
    on top of it: the second keeps recording, the first records nothing more."""
    handler, _ = fakes.scripted([fakes.usage(read=2000)] * 10)
    client = fakes.client(handler)
    first, second = CacheTracker(clock=ManualClock()), CacheTracker(clock=ManualClock())
    first.instrument(client)
    second.instrument(client)
    client.messages.create(**fakes.request("both"))
    first.uninstrument(client)
    client.messages.create(**fakes.request("second only"))
    assert len(first.calls()) == 1 and len(second.calls()) == 2
    second.uninstrument(client)
    client.messages.create(**fakes.request("neither"))
    assert len(first.calls()) == 1 and len(second.calls()) == 2


def test_a_strict_error_of_a_call_made_from_a_callback_is_raised_by_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracked call made from a callback runs its analysis right there, on the consumer: a
    strict guard's error in it is not the callback's error; the next read raises it."""
    from cachebench.pricing import PriceTable

    handler, _ = misses(3)
    client = fakes.client(handler)
    tracker = CacheTracker(clock=ManualClock())
    tracker.instrument(client)
    nested: list[bool] = []

    def alert(m: CallMetrics) -> None:
        if not nested:
            nested.append(True)
            monkeypatch.setattr(PriceTable, "cost", _exploding)
            client.messages.create(**fakes.request("from the callback"))

    tracker.on_miss_alert = alert
    client.messages.create(**fakes.request())
    client.messages.create(**fakes.request())
    with pytest.raises(RuntimeError, match="pricing bug"):
        tracker.flush()
    assert tracker._engine.guard.by_stage.get("on_miss_alert", 0) == 0


def _exploding(*args: Any) -> Any:
    raise RuntimeError("pricing bug")


def test_a_callback_raising_system_exit_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)

    def leave(m: CallMetrics) -> None:
        raise SystemExit(3)

    handler, _ = misses(2)
    tracker = CacheTracker(on_miss_alert=leave, clock=ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    create(**fakes.request())
    create(**fakes.request())
    assert len(tracker.calls()) == 2  # no SystemExit here
    assert "SystemExit" in caplog.text
    assert tracker.internal_errors == 1


def test_a_streaming_response_manager_never_entered_leaves_nothing_in_flight() -> None:
    """``with_streaming_response.create`` under a policy, the manager dropped unentered: no
    request was sent, and once the manager is collected no hold or in-flight write is left,
    so the next call of that prefix neither waits nor counts as ``concurrent``."""
    import gc

    from cachebench import CachePolicy

    handler, _ = fakes.scripted([fakes.usage(write=2000), fakes.usage(write=2000)])
    client = fakes.client(handler)
    tracker = CacheTracker(clock=ManualClock(), policy=CachePolicy.miss_aware(delay_ms=5000))
    manager = tracker.wrap(client.messages.with_streaming_response.create)(**fakes.request())
    del manager
    gc.collect()
    tracker.flush()
    engine = tracker._engine
    assert engine.gate is not None and engine.gate.in_flight == 0
    assert engine.read(lambda: not engine.inflight)
    tracker.wrap(client.messages.create)(**fakes.request())
    last = tracker.calls()[-1]
    assert last.held_ms == 0.0 and last.miss_cause == "cold"


def test_a_policy_holds_no_one_behind_a_call_that_only_reads_while_the_consumer_lags() -> None:
    """The consumer is stuck in a callback, so its cache view does not know yet that a prefix
    was just written. With ``miss_aware``, the next calls of that prefix read what was written:
    none of them becomes the prefix's writer, so none holds another."""
    from cachebench import CachePolicy

    release_callback = threading.Event()
    b_in_flight = threading.Event()
    release_b = threading.Event()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if b"stall" in request.content:
            return httpx2.Response(200, json=fakes.message(fakes.usage(write=2000)))
        if b"call b" in request.content:
            b_in_flight.set()
            release_b.wait(10)
        usage = fakes.usage(write=2000) if b"call a" in request.content else fakes.usage(read=2000)
        return httpx2.Response(200, json=fakes.message(usage))

    def stuck(m: CallMetrics) -> None:
        release_callback.wait(30)

    tracker = CacheTracker(
        clock=ManualClock(), on_miss_alert=stuck, policy=CachePolicy.miss_aware(delay_ms=5000)
    )
    create = tracker.wrap(fakes.client(handler).messages.create)
    stall = {
        **fakes.request("stall"),
        "system": [{"type": "text", "text": "other " * 400, "cache_control": {"type": "ephemeral"}}],
    }
    create(**stall)
    create(**stall)  # wrote its live prefix again: an alert, and the consumer is stuck in it
    try:
        create(**fakes.request("call a"))  # writes the prefix; the consumer does not see it yet
        b = threading.Thread(target=lambda: create(**fakes.request("call b")))
        b.start()
        assert b_in_flight.wait(10)
        threading.Timer(0.3, release_b.set).start()
        create(**fakes.request("call c"))  # with b taken for a writer, this would wait for it
        b.join(10)
    finally:
        release_b.set()
        release_callback.set()
    held = {c.flow: c.held_ms for c in tracker.calls()}
    assert all(ms == 0.0 for ms in held.values()), held


def test_a_call_is_diagnosed_with_what_its_twin_wrote_while_it_was_out() -> None:
    """Two streams of one cold prompt go out together; the first one's END writes the prefix
    before the second one's END. The second call's diagnosis sees the cache as it is when it
    finishes (its prefix alive: the twin wrote it), not as it was when it went out, also after
    the view was written before they went out (another prompt's call); a call with no write in
    between is diagnosed with the expectation taken at its start."""
    usages = [
        fakes.usage(write=1500),
        fakes.usage(write=2000),
        fakes.usage(read=2000),
        fakes.usage(read=2000),
    ]
    handler, _ = fakes.scripted(usages)
    tracker = CacheTracker(clock=ManualClock())
    engine = tracker._engine
    seen: list[tuple[int, ...]] = []
    observe = engine.detector.observe

    def spy(flow: str, model: Any, key: Any, prompt: Any, exp: Any, done: Any, *rest: Any) -> Any:
        seen.append(done.breakpoint_states)
        return observe(flow, model, key, prompt, exp, done, *rest)

    engine.detector.observe = spy  # type: ignore[method-assign]
    create = tracker.wrap(fakes.client(handler).messages.create)
    other = [
        {"type": "text", "text": "Another agent's prompt. " * 80, "cache_control": {"type": "ephemeral"}}
    ]
    create(**fakes.request(system=other))
    first = create(**fakes.request(), stream=True)
    second = create(**fakes.request(), stream=True)
    for _ in first:
        pass
    for _ in second:
        pass
    create(**fakes.request())
    tracker.calls()
    assert seen == [(NEVER,), (NEVER,), (ALIVE,), (ALIVE,)]
    assert [m.cache_read_tokens for m in tracker.calls()] == [0, 0, 2000, 2000]
