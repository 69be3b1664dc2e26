"""Aggregates and the call history, pinned where ``make mutate`` found them unpinned.

Each test kills mutants of :mod:`cachebench.stats` that survived the selection ``make mutate``
runs (see ``benchmarks/mutation.md``), through the public API only: ``record()`` of
recorded-shape bodies, or ``CacheTracker.wrap`` around a real SDK client over
``httpx2.MockTransport``, with a :class:`~cachebench.testing.ManualClock`.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import ManualClock

from . import fakes

UNPRICED_MODEL = "claude-nonexistent-1"  # not in the price data: its calls are unpriced


def unknown_usage() -> dict[str, Any]:
    body = fakes.message(fakes.usage())
    body["usage"] = "x"
    return body


def uncached_request() -> dict[str, Any]:
    """A request without a cache marker: no prefix."""
    return fakes.request() | {"system": "You are brief."}


def record(
    tracker: CacheTracker, body: dict[str, Any], request: dict[str, Any], **kwargs: Any
) -> CallMetrics:
    provider = "openai" if "choices" in body else "anthropic"
    m = tracker.record(body, request=request, provider=provider, **kwargs)
    assert m is not None
    return m


def test_the_history_gives_back_every_call_as_it_was_recorded() -> None:
    """``calls()`` rebuilds each call from the packed history: the same ``CallMetrics`` that
    ``record()`` returned, for a priced cached call, an unpriced one, a call whose provider
    reports no writes, one with unknown usage and one without a prefix; the provider's
    diagnostics are kept. A recorded call is never a stream."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    openai_request = {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "Answer from the catalogue. " * 300}],
    }
    diagnosed = fakes.message(fakes.usage(write=3000)) | {"diagnostics": {"cache_miss_reason": "new prefix"}}
    returned = []
    for body, request in [
        (diagnosed, fakes.request()),
        (fakes.message(fakes.usage(read=3000), model=UNPRICED_MODEL), fakes.request()),
        (fakes.chat_completion(2000, 0), openai_request),
        (unknown_usage(), fakes.request("q2")),
        (fakes.message(fakes.usage()), uncached_request()),
    ]:
        clock.advance(10)
        returned.append(record(tracker, body, request, elapsed_ms=125.0))
    assert tracker.calls() == returned
    priced, unpriced, no_writes, unknown, uncached = returned
    assert not any(m.stream for m in returned)
    assert (priced.unpriced, priced.usage_known, priced.writes_reported) == (False, True, True)
    assert priced.cost_usd is not None and priced.cost_without_cache_usd is not None
    assert (unpriced.unpriced, unpriced.cost_usd, unpriced.cost_without_cache_usd) == (True, None, None)
    assert unpriced.cost_saved_usd is None
    assert (no_writes.writes_reported, no_writes.usage_known) == (False, True)
    assert priced.diagnostics == {"cache_miss_reason": "new prefix"}
    assert unknown.usage_known is False
    assert (uncached.prefix_id, uncached.breakpoint_ids) == (None, ())


def test_a_flow_without_a_cached_prefix_used_no_distinct_prefix() -> None:
    """``distinct_prefixes`` of a flow whose calls marked nothing is 0."""
    tracker = fakes.quiet_tracker(ManualClock())
    record(tracker, fakes.message(fakes.usage()), uncached_request(), flow="plain")
    assert tracker.by_flow()["plain"]["distinct_prefixes"] == 0


def test_a_prefix_row_carries_the_times_of_its_first_and_last_call() -> None:
    """``by_prefix()``'s ``first_seen`` and ``last_seen`` are the timestamps of the prefix's
    first and last call."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    start = clock()
    for i in range(3):
        record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request(f"q{i}"), flow="f")
        clock.advance(10)
    [row] = tracker.by_prefix().values()
    assert (row["first_seen"], row["last_seen"]) == (start, start + 20)


def test_a_window_includes_a_call_exactly_its_length_ago() -> None:
    """``aggregate(window_s=w)`` covers the calls of the last ``w`` seconds, a call exactly
    ``w`` seconds old included."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request())
    clock.advance(60)
    assert tracker.aggregate(window_s=60)["calls"] == 1
    assert tracker.aggregate(window_s=59.5)["calls"] == 0


def test_beyond_64_prefixes_a_flow_estimates_its_distinct_prefixes_from_the_64th_smallest_id() -> None:
    """A flow's ``distinct_prefixes`` is exact up to 64 prefixes; beyond, it is the k-minimum-
    values estimate ``(64 - 1) / u`` with ``u`` the 64th smallest prefix id (as a fraction of
    2**64), and never less than 65."""
    tracker = fakes.quiet_tracker(ManualClock())
    ids: list[int] = []
    for i in range(90):
        request = fakes.request() | {
            "system": [
                {"type": "text", "text": f"Tenant {i}. " * 300, "cache_control": {"type": "ephemeral"}}
            ]
        }
        m = record(tracker, fakes.message(fakes.usage(write=3000)), request, flow="tenants")
        assert m.prefix_id is not None
        ids.append(int(m.prefix_id, 16))
        if i == 63:
            assert tracker.by_flow()["tenants"]["distinct_prefixes"] == 64
    kth = sorted(ids)[63]
    expected = max(round(63 * 2**64 / (kth + 1)), 65)
    assert tracker.by_flow()["tenants"]["distinct_prefixes"] == expected


def failing_client() -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(500, json={"type": "error", "error": {"type": "api_error", "message": "down"}})

    return fakes.client(handler)


def test_aggregates_count_errors_unknown_usage_and_unpriced_calls_and_price_only_the_rest() -> None:
    """Per flow: ``errors`` counts failed calls, ``unknown_usage_calls`` and
    ``unpriced_calls`` their kind; the costs sum the priced calls only, and are None when no
    call was priced (a flow of one unpriced call, or of one unknown and one unpriced). A flow
    with nothing rare counts zero of each."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    create = tracker.wrap(failing_client().messages.create, flow="failing")
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            create(**fakes.request())
    priced = record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request(), flow="mixed")
    clock.advance(10)
    record(
        tracker, fakes.message(fakes.usage(read=3000), model=UNPRICED_MODEL), fakes.request(), flow="mixed"
    )
    record(tracker, fakes.message(fakes.usage(write=3000), model=UNPRICED_MODEL), fakes.request(), flow="one")
    record(tracker, unknown_usage(), fakes.request(), flow="none")
    record(
        tracker, fakes.message(fakes.usage(write=3000), model=UNPRICED_MODEL), fakes.request(), flow="none"
    )
    clean = record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request("other"), flow="clean")
    flows = tracker.by_flow()
    rare = ("errors", "unknown_usage_calls", "unpriced_calls", "holds")
    assert [flows["failing"][k] for k in rare] == [2, 2, 0, 0]
    assert [flows["mixed"][k] for k in rare] == [0, 0, 1, 0]
    assert [flows["one"][k] for k in rare] == [0, 0, 1, 0]
    assert [flows["none"][k] for k in rare] == [0, 1, 1, 0]
    assert [flows["clean"][k] for k in rare] == [0, 0, 0, 0]
    assert priced.cost_usd is not None and priced.cost_without_cache_usd is not None
    assert (flows["mixed"]["cost_usd"], flows["mixed"]["cost_without_cache_usd"]) == (
        priced.cost_usd,
        priced.cost_without_cache_usd,
    )
    assert flows["mixed"]["cost_saved_usd"] == priced.cost_without_cache_usd - priced.cost_usd
    assert clean.cost_saved_usd is not None
    assert flows["clean"]["cost_saved_usd"] == pytest.approx(clean.cost_saved_usd)
    for flow in ("one", "none", "failing"):
        assert (
            flows[flow]["cost_usd"],
            flows[flow]["cost_without_cache_usd"],
            flows[flow]["cost_saved_usd"],
        ) == (
            None,
            None,
            None,
        ), flow
    total = tracker.aggregate()
    assert [total[k] for k in rare] == [2, 3, 3, 0]
