"""Behaviours mutation testing found unpinned: each test kills a mutant that survived the suite.

Every test goes through the public API only (``CacheTracker`` around a real SDK client over
``httpx2.MockTransport``, or ``record()`` of recorded-shape bodies, with an injected clock), so
it keeps pinning the behaviour wherever the call path's modules live.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench.testing import ManualClock

from . import fakes


def test_a_call_going_out_while_its_twin_rewrites_an_expired_prefix_is_concurrent() -> None:
    """Two calls rewrite a prefix whose entry expired; the second goes out while the first is
    still waiting for its response. The first is ``ttl_expired``; the second wrote only because
    its twin's write had not landed yet, so it is ``concurrent`` (an expected write, like a
    twin of a cold prefix), not a second ``ttl_expired``."""
    handler, first_in_flight, release_first = fakes.writer_in_flight(fakes.message(fakes.usage(write=3000)))

    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    create = tracker.wrap(fakes.client(handler).messages.create)
    create(**fakes.request("warm-up"))
    clock.advance(3600)  # far past the 5 minute TTL and the clocks' margin

    errors: list[BaseException] = []

    def first() -> None:
        try:
            create(**fakes.request("first twin"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_in_flight.wait(10)
        create(**fakes.request("second twin"))  # answered at once, while the first is in flight
    finally:
        release_first.set()
        thread.join(10)
    assert errors == []
    warm, second, first_twin = tracker.calls()  # in the order they finished
    assert (warm.miss_cause, warm.unexpected_miss) == ("cold", False)
    assert (first_twin.miss_cause, first_twin.unexpected_miss) == ("ttl_expired", False)
    assert (second.miss_cause, second.unexpected_miss, second.expected_read_tokens) == (
        "concurrent",
        False,
        0,
    )


def test_reading_more_than_expected_never_lifts_an_aggregate_hit_ratio_above_one() -> None:
    """Where the provider reports no writes, a call's hit ratio is measured against what it was
    expected to read. A call that reads more (the provider had cached more than this tracker
    saw written) is a full hit, never more: the aggregates, per flow and per prefix, add
    ``hit_tokens`` (capped at ``cacheable_tokens``), so their ratio stays at most 1."""
    system = "You are a careful support agent for Acme. " * 120

    def request(*users: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, *({"role": "user", "content": u} for u in users)]
        return {"model": "gpt-4.1", "messages": messages}

    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    cold = tracker.record(fakes.chat_completion(1500, 0), request=request("q1"), provider="openai", flow="f")
    clock.advance(10)
    more = tracker.record(
        fakes.chat_completion(3000, 2944),
        request=request("q1", "q2 " * 300, "q3"),
        provider="openai",
        flow="f",
    )
    assert cold is not None and more is not None
    assert not more.writes_reported
    assert more.cache_read_tokens > more.expected_read_tokens > 0  # the premise: it read more
    assert (more.hit_tokens, more.cacheable_tokens, more.hit_ratio) == (
        more.expected_read_tokens,
        more.expected_read_tokens,
        1.0,
    )
    assert tracker.aggregate()["hit_ratio"] == 1.0
    assert tracker.by_flow()["f"]["hit_ratio"] == 1.0
    assert [row["hit_ratio"] for row in tracker.by_prefix().values()] == [1.0]


def test_a_long_ttl_entry_read_by_a_shorter_ttl_call_keeps_its_long_ttl() -> None:
    """A 1 h entry read by a call that marks the same prefix 5 m stays a 1 h entry: ten minutes
    later it is still expected, so reading it is no miss and writing it again is the
    provider's unexpected miss, not ``ttl_expired``."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)

    def call(user: str, ttl: str | None, **usage: int) -> CallMetrics:
        m = tracker.record(
            fakes.message(fakes.usage(**usage)), request=fakes.request(user, ttl=ttl), provider="anthropic"
        )
        assert m is not None
        return m

    assert call("q1", "1h", write=3000, write_1h=3000).miss_cause == "cold"
    clock.advance(60)
    refreshed = call("q2", None, read=3000)  # a 5 m marker on the same bytes
    assert (refreshed.expected_read_tokens, refreshed.miss_cause) == (3000, None)
    clock.advance(600)  # past the 5 m TTL of the read, well within the entry's 1 h
    read = call("q3", None, read=3000)
    assert (read.expected_read_tokens, read.unexpected_miss, read.miss_cause) == (3000, False, None)
    clock.advance(60)
    lost = call("q4", None, write=3000)
    assert (lost.expected_read_tokens, lost.unexpected_miss, lost.miss_cause) == (3000, True, "provider")


def layered_request(ttls: list[str | None]) -> dict[str, Any]:
    """System blocks each with a breakpoint of the given TTL (None: the 5 m default)."""
    blocks = [
        {"type": "text", "text": f"layer {i} " * 400, "cache_control": {"type": "ephemeral"}}
        for i in range(len(ttls))
    ]
    for block, ttl in zip(blocks, ttls, strict=True):
        if ttl is not None:
            block["cache_control"]["ttl"] = ttl
    return fakes.request() | {"system": blocks}


@pytest.mark.parametrize(
    ("ttls", "written_1h"),
    [
        (["1h", "5m"], 0),
        (["1h", None], 0),
        (["5m", "5m"], 0),
        (["1h", "1h"], 3000),
        (["1h"], 3000),
    ],
)
def test_without_a_ttl_split_only_all_1h_markers_make_the_writes_1h(
    ttls: list[str | None], written_1h: int
) -> None:
    """A response without the 5 m / 1 h split of its writes: the writes are taken as 1 h only
    when every breakpoint of the request asks for 1 h. With a 5 m breakpoint among them, which
    part went where is unknown, and nothing is priced at the 1 h rate."""
    no_split = fakes.usage(write=3000, split=False)

    def run(request: dict[str, Any]) -> CallMetrics:
        handler, _ = fakes.scripted([no_split])
        tracker = CacheTracker()
        tracker.wrap(fakes.client(handler).messages.create)(**request)
        (m,) = tracker.calls()
        return m

    m = run(layered_request(ttls))
    assert (m.cache_write_tokens, m.cache_write_1h_tokens) == (3000, written_1h)
    all_5m = run(layered_request([None] * len(ttls)))
    assert all_5m.cache_write_1h_tokens == 0
    if written_1h:
        assert m.cost_usd is not None and all_5m.cost_usd is not None
        assert m.cost_usd > all_5m.cost_usd
    else:
        assert m.cost_usd == all_5m.cost_usd


def test_a_window_hit_ratio_exactly_at_the_threshold_is_no_drop() -> None:
    """The hit-ratio drop opens when the window's ratio falls *below* ``miss_alert_threshold``:
    a window of 16 calls with 12 full reads and 4 misses sits exactly at 0.75 and opens nothing;
    the fifth miss (11/16) opens the drop."""
    clock = ManualClock()
    opened: list[Regression] = []
    tracker = fakes.quiet_tracker(clock, miss_alert_threshold=0.75, on_regression=opened.append)

    def call(read: int, write: int) -> CallMetrics:
        clock.advance(10)
        m = tracker.record(
            fakes.message(fakes.usage(read=read, write=write)),
            request=fakes.request(),
            provider="anthropic",
            flow="f",
        )
        assert m is not None
        return m

    assert call(0, 3000).miss_cause == "cold"
    for _ in range(15):
        call(3000, 0)
    for _ in range(4):
        assert call(0, 3000).miss_cause == "provider"
    assert opened == [] and tracker.by_flow()["f"]["regression"] is None
    call(0, 3000)
    assert [(r.kind, r.calls_affected) for r in opened] == [("hit_ratio_drop", 5)]
    assert tracker.by_flow()["f"]["regression"] is not None
