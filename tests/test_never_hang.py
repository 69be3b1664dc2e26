"""The caller's process never hangs on cachebench: a stream the caller abandons is finalised by
the garbage collector, which may run at any allocation, on any thread, including the
consumer's in the middle of its analysis or a caller's inside a lock. Those finalizers only
queue the stream's ending (no lock, no wait); the consumer records it in turn."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading

import pytest

from cachebench import CacheTracker

from . import fakes

# The loop a user reported: an instrumented client, every third stream abandoned after its
# first event, ordinary calls between. The collector runs very often (threshold 1), so it
# lands inside the tracker's locked sections many times over; the run must finish and
# record every call.
ABANDONED_STREAMS = textwrap.dedent(
    """
    import gc, json, sys, time
    sys.path.insert(0, {root!r})
    from tests import fakes
    from cachebench import CacheTracker

    handler, _ = fakes.scripted([fakes.usage(read=2000), fakes.usage(write=2000)])
    client = fakes.client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    gc.set_threshold(1, 1, 1)
    n = {n}
    for i in range(n):
        if i % 3 == 0:
            s = client.messages.create(**fakes.request(f"question {{i}}"), stream=True)
            for _ in s:
                break
            del s  # abandoned: a reference cycle that only the collector finalises
        else:
            client.messages.create(**fakes.request(f"question {{i}}"))
    gc.set_threshold(700, 10, 10)
    # The last abandoned streams may be finalised by a collection the consumer thread is
    # running (gc.collect() here then returns at once): their calls are queued after a read
    # made now. Wait, bounded, until the collector has finalised them all.
    deadline = time.monotonic() + 60
    while len(tracker.calls()) < n and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    calls = tracker.calls()
    print(json.dumps({{"calls": len(calls), "errors": tracker.internal_errors}}))
    """
)


def test_a_loop_that_abandons_every_third_stream_finishes_and_records_every_call() -> None:
    """3,000 calls with 1,000 abandoned streams and the collector running at nearly every
    allocation: no deadlock (the run is bounded by a timeout), every call recorded once."""
    import json
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parent.parent)
    script = ABANDONED_STREAMS.format(root=root, n=3000)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"calls": 3000, "errors": 0}


def _abandon_one_stream(client: object) -> None:
    s = client.messages.create(**fakes.request("abandoned"), stream=True)  # type: ignore[attr-defined]
    for _ in s:
        break
    # Returning drops the last reference; the stream sits in a cycle until the collector runs.


def test_calls_with_an_abandoned_stream_pending_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector finalises an abandoned stream while the consumer is inside ``calls()``'s
    read of the history (simulated by collecting there): ``calls()`` returns, and the
    abandoned call is recorded by the next reader."""
    handler, _ = fakes.scripted([fakes.usage(write=2000), fakes.usage(read=2000)])
    client = fakes.client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    client.messages.create(**fakes.request("first"))

    stats = tracker._engine.stats
    real_calls = stats.calls

    def calls_collecting() -> list[object]:
        gc.collect()  # the collector running inside the read, as it may at any allocation
        return real_calls()  # type: ignore[no-any-return]

    gc.disable()
    try:
        _abandon_one_stream(client)
        monkeypatch.setattr(stats, "calls", calls_collecting)
        out: list[object] = []
        reader = threading.Thread(target=lambda: out.append(tracker.calls()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        assert not reader.is_alive(), "calls() deadlocked on the abandoned stream's finalizer"
    finally:
        gc.enable()
    monkeypatch.setattr(stats, "calls", real_calls)
    assert len(out[0]) == 1  # type: ignore[arg-type]
    calls = tracker.calls()  # the next reader sees the queued ending recorded
    assert len(calls) == 2
    assert calls[1].flow == "tests.test_never_hang._abandon_one_stream"
    assert calls[1].usage_known


def test_a_finalizer_inside_a_call_s_own_locked_section_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The collector runs while a call holds the lock in ``CacheView.expect``: the call
    completes, and the abandoned stream is recorded before the next call's own record."""
    handler, _ = fakes.scripted([fakes.usage(write=2000), fakes.usage(read=2000)])
    client = fakes.client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    view = tracker._engine.view
    real_expect = view.expect
    collect_once = [True]

    def expect_collecting(*args: object) -> object:
        if collect_once:
            collect_once.clear()
            gc.collect()
        return real_expect(*args)  # type: ignore[arg-type]

    gc.disable()
    try:
        _abandon_one_stream(client)
        monkeypatch.setattr(view, "expect", expect_collecting)
        worker = threading.Thread(target=lambda: client.messages.create(**fakes.request("next")), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "a call deadlocked on the abandoned stream's finalizer"
    finally:
        gc.enable()
    # The collector ran on the consumer while it worked through the call's start: the stream's
    # ending was queued then, possibly after a read that was already waiting, so the read
    # after that one sees it.
    tracker.flush()
    calls = tracker.calls()
    assert len(calls) == 2
    by_flow = {c.flow.rsplit(".", 1)[-1]: (c.cache_read_tokens, c.cache_write_tokens) for c in calls}
    assert by_flow == {"_abandon_one_stream": (0, 2000), "<lambda>": (2000, 0)}
