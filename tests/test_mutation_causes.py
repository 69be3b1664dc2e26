"""Miss causes and entry lifetimes, pinned where ``make mutate`` found them unpinned.

Each test kills mutants of :mod:`cachebench.diagnose.causes` and :mod:`cachebench.expect` that
survived the selection ``make mutate`` runs (see ``benchmarks/mutation.md``), through the public
API only: ``record()`` of recorded-shape bodies, or ``CacheTracker.wrap`` around a real SDK
client over ``httpx2.MockTransport``, with a :class:`~cachebench.testing.ManualClock`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench.testing import ManualClock

from . import fakes

OTHER_MODEL = "claude-opus-4-8"
MARK = {"type": "ephemeral"}


class Flow:
    """``record()`` of Messages bodies in one flow, ``step`` seconds apart."""

    def __init__(self, tracker: CacheTracker, clock: ManualClock, step: float = 10.0) -> None:
        self.tracker = tracker
        self.clock = clock
        self.step = step

    def __call__(
        self, request: dict[str, Any], *, elapsed_ms: float | None = None, **usage: int
    ) -> CallMetrics:
        self.clock.advance(self.step)
        model = request.get("model", fakes.MODEL)
        m = self.tracker.record(
            fakes.message(fakes.usage(**usage), model=model),
            request=request,
            provider="anthropic",
            flow="f",
            elapsed_ms=elapsed_ms,
        )
        assert m is not None
        return m


def test_a_change_of_the_flows_shared_system_prompt_is_prefix_changed() -> None:
    """Once a flow's system prompt is its shared first layer (read by the calls that left the
    window), a call writing a changed system prompt is ``prefix_changed``, an expected write."""
    clock = ManualClock()
    call = Flow(fakes.quiet_tracker(clock), clock)
    assert call(fakes.request("q"), write=3000).miss_cause == "cold"
    for i in range(20):
        call(fakes.request(f"q{i}"), read=3000)
    changed = fakes.request("z") | {
        "system": [{"type": "text", "text": "Changed. " + fakes.SYSTEM_TEXT, "cache_control": MARK}]
    }
    m = call(changed, write=3000)
    assert (m.miss_cause, m.unexpected_miss) == ("prefix_changed", False)


def test_a_call_after_the_flow_switched_model_is_model_changed_whatever_the_view_said() -> None:
    """Caches are per model. A call whose first layer was not served and whose flow's previous
    call used another model is ``model_changed``, whether the view had its prefix as never seen
    (``cold``) or expired (``ttl_expired``)."""
    clock = ManualClock()
    call = Flow(fakes.quiet_tracker(clock), clock)
    a = fakes.request("q")
    b = a | {"model": OTHER_MODEL}
    assert call(a, write=3000).miss_cause == "cold"
    assert call(b, write=3000).miss_cause == "model_changed"  # the view: cold
    clock.advance(3600)
    assert call(a, write=3000).miss_cause == "model_changed"  # the view: expired


def test_tools_reserialised_in_another_key_order_are_serialization_changed() -> None:
    """The same tools with their keys in another order keep the prefix id, but the provider
    caches the bytes it was sent: the expected read is missed, an unexpected miss named
    ``serialization_changed``."""
    clock = ManualClock()
    call = Flow(fakes.quiet_tracker(clock), clock)
    tools = [
        {
            "name": f"lookup_{name}",
            "description": f"Look up a {name} by its id. " * 40,
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
        }
        for name in ("order", "invoice", "refund")
    ]

    def request(user: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
        return fakes.request(user) | {"tools": [*tools[:-1], {**tools[-1], "cache_control": MARK}]}

    first = call(request("q0", tools), write=3000)
    assert call(request("q1", tools), read=3000).miss_cause is None
    reordered = [{k: t[k] for k in reversed(list(t))} for t in tools]
    m = call(request("q2", reordered), write=3000)
    assert m.prefix_id == first.prefix_id
    assert (m.expected_read_tokens, m.unexpected_miss, m.miss_cause) == (3000, True, "serialization_changed")


def test_a_cold_prefix_written_while_its_twin_writes_it_is_concurrent() -> None:
    """Two calls write a never-seen prefix; the second goes out while the first waits for its
    response. The first is ``cold``; the second wrote only because its twin's write had not
    landed, so it is ``concurrent``."""
    handler, first_in_flight, release_first = fakes.writer_in_flight(fakes.message(fakes.usage(write=3000)))

    tracker = fakes.quiet_tracker(ManualClock())
    create = tracker.wrap(fakes.client(handler).messages.create)
    thread = threading.Thread(target=lambda: create(**fakes.request("first twin")))
    thread.start()
    try:
        assert first_in_flight.wait(10)
        create(**fakes.request("second twin"))
    finally:
        release_first.set()
        thread.join(10)
    second, first = tracker.calls()  # in the order they finished
    assert (first.miss_cause, second.miss_cause) == ("cold", "concurrent")
    assert not first.unexpected_miss and not second.unexpected_miss


def test_an_entry_is_expected_up_to_and_including_the_end_of_its_ttl() -> None:
    """A 5 minute entry is expected by a call exactly 300 s after its last use, and not by one
    300.2 s after."""
    for after, expected in ((300.0, 3000), (300.2, 0)):
        clock = ManualClock()
        call = Flow(fakes.quiet_tracker(clock), clock, step=0.0)
        call(fakes.request("q0"), write=3000)
        clock.advance(after)
        assert call(fakes.request("q1"), read=expected).expected_read_tokens == expected, after


def test_a_shortfall_is_ttl_expired_when_the_entry_expired_by_the_end_of_the_clocks_margin_and_the_call() -> (
    None
):
    """A call that was expected to read an entry alive at its start but wrote it again is the
    provider's unexpected miss only if the entry was still alive at the call's time plus the
    clocks' margin (2 s) plus its duration; expired by then, the miss is ``ttl_expired``."""
    cases = [
        # (seconds after the write, the call's duration, expected cause)
        (298.0, None, (True, "provider")),  # alive at exactly the end of the margin
        (298.0, 1.0, (False, "ttl_expired")),  # 1 ms later: expired
        (278.01, 20_000.0, (False, "ttl_expired")),  # expired 10 ms before the call ended
        (277.99, 20_000.0, (True, "provider")),  # alive 10 ms after the call ended
    ]
    for after, elapsed_ms, cause in cases:
        clock = ManualClock()
        call = Flow(fakes.quiet_tracker(clock), clock, step=0.0)
        call(fakes.request("q0"), write=3000)
        clock.advance(after)
        m = call(fakes.request("q1"), write=3000, elapsed_ms=elapsed_ms)
        assert m.expected_read_tokens == 3000, after
        assert (m.unexpected_miss, m.miss_cause) == cause, (after, elapsed_ms)


def test_an_on_regression_callback_that_raises_is_logged_by_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising ``on_regression`` callback never reaches the caller: the error is logged,
    naming the callback."""

    def broken(regression: Regression) -> None:
        raise RuntimeError("dashboard down")

    clock = ManualClock()
    tracker = CacheTracker(
        clock=clock, on_miss_alert=lambda m: None, on_regression=broken, miss_alert_threshold=0.75
    )
    call = Flow(tracker, clock)
    call(fakes.request(), write=3000)
    for _ in range(15):
        call(fakes.request(), read=3000)
    with caplog.at_level(logging.ERROR, logger="cachebench"):
        for _ in range(5):
            call(fakes.request(), write=3000)
        tracker.flush()
    assert [r.kind for r in tracker.regressions()] == ["hit_ratio_drop"]
    assert any("the on_regression callback raised" in r.getMessage() for r in caplog.records)


# -- what an avoidable miss cost ---------------------------------------------------------------

# USD per million tokens: a write costs 0.75 more than plain input, 3.45 more than a read.
AVOIDABLE_PRICES = {
    fakes.MODEL: {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75, "cache_write_1h": 6.0}
}


def stamped(second: int) -> dict[str, Any]:
    text = f"Now: 2026-12-07T10:00:{second:02d}Z. " + fakes.SYSTEM_TEXT
    return fakes.request(system=[{"type": "text", "text": text, "cache_control": MARK}])


def test_a_changed_timestamp_costs_its_writes_beyond_reads_and_a_cold_write_nothing() -> None:
    """The flow's first call is cold: nothing avoidable, $0. The next one changed a timestamp
    in its only layer: all 3,000 tokens it wrote it could have read, and that cost it
    3,000 x (3.75 - 0.30) / 1e6 beyond the reads. Unpriced, the cost is unknown (None)."""
    clock = ManualClock()
    f = Flow(fakes.quiet_tracker(clock, prices=AVOIDABLE_PRICES), clock)
    cold = f(stamped(1), write=3000)
    assert (cold.miss_cause, cold.avoidable_tokens, cold.avoidable_cost_usd) == ("cold", 0, 0.0)
    changed = f(stamped(2), write=3000)
    assert changed.miss_cause == "prefix_changed" and changed.diff is not None
    assert changed.avoidable_tokens == 3000
    assert changed.avoidable_cost_usd == pytest.approx(3000 * (3.75 - 0.3) / 1e6)
    agg = f.tracker.aggregate()
    assert agg["avoidable_cost_usd"] == pytest.approx(3000 * (3.75 - 0.3) / 1e6)
    assert agg["hit_ratio"] == 0.0 and agg["hit_ratio_if_fixed"] == pytest.approx(3000 / 6000)
    unpriced = Flow(fakes.quiet_tracker(clock), clock)  # a model no price list knows
    unpriced({**stamped(1), "model": "acme-unlisted-1"}, write=3000)
    m = unpriced({**stamped(2), "model": "acme-unlisted-1"}, write=3000)
    assert (m.miss_cause, m.avoidable_tokens, m.avoidable_cost_usd) == ("prefix_changed", 3000, None)


def test_a_provider_miss_could_have_read_what_it_wrote_and_the_shortfall_comes_from_writes_first() -> None:
    """The same prefix within its TTL read 1,000 of 3,000 tokens and wrote 2,000: the 2,000 are
    avoidable (a read instead of a write). Writing only 500 of the shortfall, the other 1,500
    came as plain input: 500 x 3.45 + 1,500 x 2.70 per million."""
    clock = ManualClock()
    f = Flow(fakes.quiet_tracker(clock, prices=AVOIDABLE_PRICES), clock)
    f(fakes.request(), write=3000)
    m = f(fakes.request(), read=1000, write=2000)
    assert (m.miss_cause, m.avoidable_tokens) == ("provider", 2000)
    assert m.avoidable_cost_usd == pytest.approx(2000 * (3.75 - 0.3) / 1e6)
    m = f(fakes.request(), input=1510, read=1000, write=500)
    assert (m.miss_cause, m.avoidable_tokens) == ("provider", 500)
    assert m.avoidable_cost_usd == pytest.approx(500 * (3.75 - 0.3) / 1e6)


def test_a_write_that_expires_unread_reports_what_it_paid_beyond_plain_input() -> None:
    """A prefix written once and never read within its TTL: the layer's unread writes say one
    write, unread, that paid 3,000 x (3.75 - 3.00) / 1e6 beyond plain input."""
    clock = ManualClock()
    f = Flow(fakes.quiet_tracker(clock, prices=AVOIDABLE_PRICES), clock, step=400.0)
    f(fakes.request(), write=3000)
    f(fakes.request(), write=3000)  # 400 s later: expired, written again
    unread = f.tracker.by_flow()["f"]["unread_writes"]
    assert set(unread) == {"0"}
    assert (unread["0"]["writes"], unread["0"]["unread"]) == (1, 1)
    assert unread["0"]["unread_cost_usd"] == pytest.approx(3000 * (3.75 - 3.0) / 1e6)
