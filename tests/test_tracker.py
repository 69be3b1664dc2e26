"""CacheTracker's contract: configuration errors, aggregates, bounds, expected hits and causes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from cachebench import CachePolicy, CacheTracker, CallMetrics, Provider

from . import fakes

AGG_KEYS = {
    "calls",
    "errors",
    "hit_ratio",
    "token_hit_ratio",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "cost_usd",
    "cost_without_cache_usd",
    "cost_saved_usd",
    "avoidable_cost_usd",
    "hit_ratio_if_fixed",
    "unpriced_calls",
    "unknown_usage_calls",
    "holds",
}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def body(
    read: int = 0, write: int = 0, *, input: int = 10, output: int = 5, write_1h: int = 0
) -> dict[str, Any]:
    return fakes.message(fakes.usage(input=input, read=read, write=write, write_1h=write_1h, output=output))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"provider": "azure"}, ValueError, "unknown provider 'azure'"),
        ({"miss_alert_threshold": 1.5}, ValueError, "miss_alert_threshold"),
        ({"provider": 1}, TypeError, "a provider is a name or a Provider member"),
        ({"miss_alert_threshold": "high"}, TypeError, "miss_alert_threshold"),
        ({"miss_alert_threshold": "0.5"}, TypeError, "miss_alert_threshold"),
        ({"max_calls": "a"}, TypeError, "max_calls"),
        ({"max_prefixes": 2.5}, TypeError, "max_prefixes"),
        ({"capture_text": "yes"}, TypeError, "capture_text must be True or False"),
        ({"on_miss_alert": 3}, TypeError, "on_miss_alert must be callable"),
        ({"on_regression": "x"}, TypeError, "on_regression must be callable"),
        ({"policy": "miss_aware"}, TypeError, "CachePolicy"),
        ({"max_prefixes": 0}, ValueError, "max_prefixes"),
        ({"max_calls": -1}, ValueError, "max_calls"),
        ({"prices": {"m": {"input": -1}}}, ValueError, r"prices\['m'\]\['input'\]"),
        ({"prices": {"m": {"inptu": 1}}}, ValueError, "unknown rate"),
        ({"store": "mysql://x"}, ValueError, "store"),
        ({"clock": 5}, TypeError, "clock"),
    ],
)
def test_configuration_mistakes_raise_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    """Every bad constructor argument raises at construction with a message naming it."""
    with pytest.raises(error, match=match):
        CacheTracker(**kwargs)


def test_provider_accepts_enum_and_string() -> None:
    """``provider=`` takes the enum or its string, any case."""
    assert CacheTracker(provider=Provider.OPENAI).provider is Provider.OPENAI
    assert CacheTracker(provider="Anthropic").provider is Provider.ANTHROPIC


def test_miss_aware_policy_constructs_and_is_accepted() -> None:
    """``CachePolicy.miss_aware(delay_ms=..., max_retries=...)`` builds and the tracker takes it."""
    policy = CachePolicy.miss_aware(delay_ms=1500, max_retries=2)
    assert (policy.kind, policy.delay_ms, policy.max_retries) == ("miss_aware", 1500.0, 2)
    assert CacheTracker(policy=policy).policy is policy
    with pytest.raises(ValueError, match="delay_ms"):
        CachePolicy.miss_aware(delay_ms=-1)
    with pytest.raises(TypeError, match="max_retries"):
        CachePolicy.miss_aware(max_retries=1.5)  # type: ignore[arg-type]


def test_wrap_rejects_what_it_cannot_observe() -> None:
    """``wrap`` of a non-callable, or of a function with no detectable provider, says what to do."""
    tracker = CacheTracker()
    with pytest.raises(TypeError, match="callable"):
        tracker.wrap(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass provider="):
        tracker.wrap(lambda **kw: None)
    with pytest.raises(ValueError, match="flow"):
        tracker.wrap(lambda **kw: None, flow="", provider="anthropic")
    with pytest.raises(TypeError, match="flow must be a non-empty string"):
        tracker.wrap(lambda **kw: None, flow=123, provider="anthropic")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flow must be a non-empty string"):
        tracker.instrument(object(), flow=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="which provider this client belongs to"):
        tracker.instrument(None)
    with pytest.raises(ValueError, match="which provider this response belongs to"):
        tracker.record(None)
    with pytest.raises(ValueError, match="which provider this SDK method belongs to"):
        tracker.wrap(lambda **kw: None)


def test_aggregate_by_prefix_and_by_flow_keys() -> None:
    """The read API returns exactly the documented keys."""
    tracker = CacheTracker(clock=Clock())
    tracker.record(body(write=3000), request=fakes.request(), provider="anthropic", flow="a")
    assert set(tracker.aggregate()) == AGG_KEYS
    (prefix,) = tracker.by_prefix().values()
    assert set(prefix) == AGG_KEYS | {"flow", "flows", "model", "first_seen", "last_seen"}
    assert prefix["flow"] == "a" and prefix["flows"] == ["a"] and prefix["model"] == fakes.MODEL
    assert set(tracker.by_flow()["a"]) == AGG_KEYS | {"distinct_prefixes", "regression", "unread_writes"}


def test_empty_tracker_aggregates() -> None:
    """No calls: counts are 0 and ratios are None (nothing was cacheable), never NaN or an error."""
    agg = CacheTracker().aggregate()
    assert agg["calls"] == 0
    assert agg["hit_ratio"] is None and agg["token_hit_ratio"] is None
    assert agg["cost_usd"] == 0.0


def test_hit_ratio_is_a_ratio_of_sums() -> None:
    """Aggregate hit ratio = sum(read) / sum(read + write), not a mean of per-call ratios."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=1000), request=fakes.request(), provider="anthropic")
    tracker.record(body(read=1000, write=0), request=fakes.request(), provider="anthropic")
    tracker.record(body(read=100, write=8900), request=fakes.request("x", ttl="1h"), provider="anthropic")
    agg = tracker.aggregate()
    assert agg["hit_ratio"] == pytest.approx(1100 / 11000)
    assert agg["token_hit_ratio"] == pytest.approx(1100 / (11000 + 30))


def test_window_aggregates_use_call_timestamps() -> None:
    """``aggregate(window_s=)`` counts only calls inside the window of the injected clock."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=1000), request=fakes.request(), provider="anthropic")
    clock.now += 600
    tracker.record(body(read=1000), request=fakes.request(), provider="anthropic")
    assert tracker.aggregate(window_s=60)["calls"] == 1
    assert tracker.aggregate(window_s=3600)["calls"] == 2
    with pytest.raises(ValueError, match="window_s"):
        tracker.aggregate(window_s=0)


def test_prefix_table_is_bounded_lru() -> None:
    """Beyond ``max_prefixes`` the least recently seen prefix is dropped; history keeps the last
    ``max_calls`` calls (five calls here, so the bound is exceeded) while the aggregates count all."""
    tracker = CacheTracker(max_prefixes=3, max_calls=4, clock=Clock())
    ids = []
    for i in range(4):
        m = tracker.record(
            body(write=2000),
            request=fakes.request(ttl=None, **{"system": f"s{i}" * 10})
            | {"system": [{"type": "text", "text": f"system {i}", "cache_control": {"type": "ephemeral"}}]},
            provider="anthropic",
        )
        assert m is not None
        ids.append(m.prefix_id)
        if i == 1:  # touch the first prefix again so the second becomes the oldest
            tracker.record(
                body(read=2000),
                request=fakes.request()
                | {"system": [{"type": "text", "text": "system 0", "cache_control": {"type": "ephemeral"}}]},
                provider="anthropic",
            )
    assert set(tracker.by_prefix()) == {ids[0], ids[2], ids[3]}
    # The first call is gone from the history; the second stays although its prefix was dropped.
    assert [m.prefix_id for m in tracker.calls()] == [ids[1], ids[0], ids[2], ids[3]]
    assert tracker.aggregate()["calls"] == 5


def test_cold_write_is_expected_and_never_alerts() -> None:
    """The first call of a new prefix writes: cause ``cold``, not unexpected, no alert."""
    fired: list[CallMetrics] = []
    tracker = CacheTracker(on_miss_alert=fired.append, clock=Clock())
    m = tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.miss_cause, m.unexpected_miss, m.expected_read_tokens) == ("cold", False, 0)
    assert fired == []


def test_second_call_within_ttl_expects_a_read() -> None:
    """A repeat within 5 minutes expects to read what the first wrote; reading it is no miss."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=3000), request=fakes.request("a"), provider="anthropic")
    clock.now += 200
    m = tracker.record(body(read=3000), request=fakes.request("b"), provider="anthropic")
    assert m is not None
    assert m.expected_read_tokens == 3000
    assert (m.unexpected_miss, m.miss_cause) == (False, None)
    assert m.hit_ratio == 1.0


def test_provider_miss_within_ttl_is_unexpected_and_alerts(caplog: pytest.LogCaptureFixture) -> None:
    """Identical bytes within the TTL that still miss: ``provider`` cause, default alert logs."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    clock.now += 10
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        m = tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.unexpected_miss, m.miss_cause, m.expected_read_tokens) == (True, "provider", 3000)
    assert "unexpected cache miss" in caplog.text


def test_ttl_expiry_is_not_unexpected() -> None:
    """After more than 5 idle minutes a 5m entry is gone: ``ttl_expired``, no alert."""
    clock = Clock()
    fired: list[CallMetrics] = []
    tracker = CacheTracker(on_miss_alert=fired.append, clock=clock)
    tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    clock.now += 301
    m = tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.unexpected_miss, m.miss_cause, m.expected_read_tokens) == (False, "ttl_expired", 0)
    assert fired == []


def test_one_hour_ttl_survives_a_five_minute_gap() -> None:
    """A 1h breakpoint is still expected after 6 idle minutes."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=3000, write_1h=3000), request=fakes.request(ttl="1h"), provider="anthropic")
    clock.now += 360
    m = tracker.record(body(read=3000), request=fakes.request(ttl="1h"), provider="anthropic")
    assert m is not None
    assert (m.expected_read_tokens, m.unexpected_miss) == (3000, False)


def test_reads_refresh_the_ttl() -> None:
    """Every read refreshes the entry: reads 4 minutes apart keep it alive for 12 minutes."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    tracker.record(body(write=3000), request=fakes.request(), provider="anthropic")
    for _ in range(3):
        clock.now += 240
        m = tracker.record(body(read=3000), request=fakes.request(), provider="anthropic")
        assert m is not None and m.expected_read_tokens == 3000


def test_below_minimum_prefix() -> None:
    """A marked prefix shorter than the model's minimum: both counters 0, cause ``below_minimum``."""
    tracker = CacheTracker(clock=Clock())
    m = tracker.record(body(input=300), request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.miss_cause, m.unexpected_miss, m.hit_ratio) == ("below_minimum", False, None)


def test_multi_turn_reads_previous_turns_entry() -> None:
    """Turn 2 (marker moved to its last block) is expected to read turn 1's entry via lookback."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)
    marker = {"type": "ephemeral"}
    turn1 = {
        "model": fakes.MODEL,
        "system": [{"type": "text", "text": "S" * 500, "cache_control": marker}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q1", "cache_control": marker}]}],
    }
    tracker.record(body(write=2500), request=turn1, provider="anthropic")
    turn2 = {
        "model": fakes.MODEL,
        "system": [{"type": "text", "text": "S" * 500, "cache_control": marker}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q1"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
            {"role": "user", "content": [{"type": "text", "text": "q2", "cache_control": marker}]},
        ],
    }
    clock.now += 30
    m = tracker.record(body(read=2500, write=40), request=turn2, provider="anthropic")
    assert m is not None
    assert m.expected_read_tokens == 2500
    assert (m.unexpected_miss, m.miss_cause) == (False, "cold")  # the new turn is a healthy cold write


def test_unknown_model_costs_none_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A model missing from the price data: tokens recorded, costs None, one warning per model."""
    tracker = CacheTracker(clock=Clock(), on_miss_alert=lambda m: None)  # alert lines name the model too
    req = fakes.request() | {"model": "claude-imaginary-9"}
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        for _ in range(3):
            m = tracker.record(
                fakes.message(fakes.usage(write=2000), model="claude-imaginary-9"),
                request=req,
                provider="anthropic",
            )
            assert m is not None and m.cost_usd is None and m.cache_write_tokens == 2000 and m.unpriced
    assert caplog.text.count("claude-imaginary-9") == 1
    agg = tracker.aggregate()
    assert agg["unpriced_calls"] == 3 and agg["cost_usd"] is None
    assert agg["cache_write_tokens"] == 6000


def test_price_overrides_win_and_missing_cache_rates_are_unpriced() -> None:
    """User prices take precedence; a call using a cache rate the prices lack is unpriced, not $0."""
    tracker = CacheTracker(
        prices={
            fakes.MODEL: {"input": 1, "output": 2, "cache_read": 0.1, "cache_write": 1.25},
            "house-model": {"input": 1, "output": 2},
        }
    )
    m = tracker.record(
        body(read=1000, write=0, input=1000, output=1000), request=fakes.request(), provider="anthropic"
    )
    assert m is not None and m.cost_usd == pytest.approx((1000 * 1 + 1000 * 0.1 + 1000 * 2) / 1e6)
    req = fakes.request() | {"model": "house-model"}
    plain = tracker.record(
        fakes.message(fakes.usage(input=100, output=10), model="house-model"),
        request=req,
        provider="anthropic",
    )
    assert plain is not None and plain.cost_usd == pytest.approx((100 + 20) / 1e6)
    cached = tracker.record(
        fakes.message(fakes.usage(read=500), model="house-model"), request=req, provider="anthropic"
    )
    assert cached is not None and cached.cost_usd is None and cached.unpriced


def test_prices_follow_the_calls_own_timestamp() -> None:
    """``record(timestamp=)`` prices and places a replayed call at its own time."""
    tracker = CacheTracker(clock=Clock(2_000_000_000.0))
    m = tracker.record(
        body(write=100),
        request=fakes.request(),
        provider="anthropic",
        timestamp=1_750_000_000.0,
        elapsed_ms=812.0,
    )
    assert m is not None
    assert m.timestamp == 1_750_000_000.0 and m.elapsed_ms == 812.0
    # claude-sonnet-4-6 as published: a long-context tier (input x2, output x1.5 above 200k
    # input tokens) until 2026-03-13, one flat rate from then on. The replayed call from 2025
    # pays the tier; the same call made now (2033 on the tracker's clock) does not.
    long_call = fakes.message(fakes.usage(input=250_000, output=1000), model="claude-sonnet-4-6")
    req = fakes.request() | {"model": "claude-sonnet-4-6"}
    then = tracker.record(long_call, request=req, provider="anthropic", timestamp=1_750_000_000.0)
    now = tracker.record(long_call, request=req, provider="anthropic")
    assert then is not None and then.cost_usd == pytest.approx((250_000 * 6 + 1000 * 22.5) / 1e6)
    assert now is not None and now.cost_usd == pytest.approx((250_000 * 3 + 1000 * 15) / 1e6)
    with pytest.raises(ValueError, match="timestamp"):
        tracker.record(body(), request=fakes.request(), provider="anthropic", timestamp=float("nan"))
    with pytest.raises(TypeError, match="request"):
        tracker.record(body(), request=[1], provider="anthropic")  # type: ignore[arg-type]
    for elapsed in ("x", -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="elapsed_ms must be a duration"):
            tracker.record(body(), provider="anthropic", elapsed_ms=elapsed)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flow must be a non-empty string"):
        tracker.record(body(), provider="anthropic", flow=7)  # type: ignore[arg-type]


def test_record_detects_provider_from_the_response() -> None:
    """Without ``provider=``, ``record`` recognises an Anthropic body; an unknown shape says what to pass."""
    tracker = CacheTracker()
    m = tracker.record(body(write=10), request=fakes.request())
    assert m is not None and m.provider == "anthropic"
    with pytest.raises(ValueError, match="pass provider="):
        tracker.record({"something": "else"})


def test_record_accepts_stream_events_and_final_stream_state() -> None:
    """``record`` takes a list of stream events (cumulative, never summed)."""
    events = [data for _, data in fakes.sse_events(fakes.usage(input=3, read=900, write=100, output=50))]
    tracker = CacheTracker()
    m = tracker.record(events, request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.output_tokens) == (3, 900, 100, 50)


def test_uncacheable_request_has_no_prefix() -> None:
    """No breakpoint on an explicit-caching provider: ``prefix_id`` None, nothing expected."""
    tracker = CacheTracker()
    req = {"model": fakes.MODEL, "system": "plain", "messages": [{"role": "user", "content": "hi"}]}
    m = tracker.record(body(), request=req, provider="anthropic")
    assert m is not None
    assert m.prefix_id is None and m.breakpoint_ids == () and m.miss_cause is None
    assert tracker.by_prefix() == {}


def test_history_ring_returns_exactly_what_record_returned() -> None:
    """The call history keeps the last ``max_calls`` calls, oldest first, field for field equal to
    what ``record()`` returned: None costs, errors, several breakpoint ids and float fields survive
    the compact storage, also after the ring wraps around."""
    tracker = CacheTracker(max_calls=4, clock=Clock())
    returned: list[CallMetrics] = []
    for i in range(7):
        request = fakes.request() | {
            "system": [
                {
                    "type": "text",
                    "text": f"tenant {i % 3}",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                },
                {"type": "text", "text": "policy " * 40, "cache_control": {"type": "ephemeral"}},
            ]
        }
        if i == 5:  # among the calls the ring still holds at the end
            request["model"] = "a-model-nobody-prices"
        u = fakes.usage(input=10, read=0 if i % 2 else 2000, write=2000 if i % 2 else 0, output=5)
        resp = fakes.message(u, model=request["model"])
        m = tracker.record(
            resp, request=request, provider="anthropic", elapsed_ms=None if i == 3 else 12.5 * i
        )
        assert m is not None
        returned.append(m)
    assert returned[5].cost_usd is None and returned[5].cost_saved_usd is None
    assert returned[3].elapsed_ms is None
    assert len(returned[0].breakpoint_ids) == 2
    assert tracker.calls() == returned[-4:]
    assert tracker.aggregate()["calls"] == 7


@pytest.mark.parametrize("garbage", [-5, 2**40, 1.5, "many", None])
def test_history_keeps_every_row_whole_whatever_a_count_holds(garbage: Any) -> None:
    """The packed history stores a call's parts together: a count it cannot store as is
    (negative, beyond uint32, not an int) is clamped, and neither that call nor the calls around
    it get another call's model, flow or times, while the ring fills or after it wraps."""
    import dataclasses

    from cachebench.stats import History

    def call(i: int, count: Any) -> CallMetrics:
        m = fakes.usage(input=10, read=2000, output=5)
        tracker = CacheTracker(clock=Clock(float(i)))
        got = tracker.record(fakes.message(m), request=fakes.request(), provider="anthropic")
        assert got is not None
        return dataclasses.replace(got, model=f"m{i}", flow=f"f{i}", input_tokens=count)

    history = History(3)
    calls = [call(i, garbage if i in (1, 4) else 10) for i in range(6)]
    for i, c in enumerate(calls):
        history.append(c, f"f{i}", f"m{i}", i)
        kept = list(history.calls())
        assert [(x.model, x.flow, x.timestamp) for x in kept] == [
            (f"m{j}", f"f{j}", float(j)) for j in range(max(0, i - 2), i + 1)
        ]
    stored = [x.input_tokens for x in history.calls()]
    expected = {-5: 0, 2**40: 2**32 - 1, 1.5: 1, "many": 0, None: 0}[garbage]
    assert stored == [10, expected, 10]


def test_clock_and_alert_callbacks_can_be_replaced_after_construction() -> None:
    """``tracker.clock`` and ``tracker.on_miss_alert`` reassigned on a live tracker take effect
    from the next call; a clock that is not callable is refused."""
    tracker = CacheTracker(provider="anthropic", clock=Clock(100.0))
    create = tracker.wrap(lambda **kw: fakes.message(fakes.usage(input=10, write=2000)))
    create(**fakes.request())
    later = Clock(200.0)
    tracker.clock = later
    assert tracker.clock is later
    alerts: list[CallMetrics] = []
    tracker.on_miss_alert = alerts.append
    create(**fakes.request())  # writes the live prefix again: an unexpected miss
    assert [m.timestamp for m in tracker.calls()] == [100.0, 200.0]
    assert [m.timestamp for m in alerts] == [200.0]
    with pytest.raises(TypeError, match="clock"):
        tracker.clock = 5  # type: ignore[assignment]


def test_a_tracker_nobody_holds_is_freed_at_once() -> None:
    """The tracker and its core form no reference cycle: dropping the last reference frees
    the tracker (and the calls it holds) without waiting for the cycle collector."""
    import gc
    import weakref

    tracker = CacheTracker(provider="anthropic")
    tracker.record(fakes.message(fakes.usage(input=10, write=2000)), request=fakes.request())
    gone = weakref.ref(tracker)
    gc.disable()
    try:
        del tracker
        assert gone() is None
    finally:
        gc.enable()


def test_history_clamps_absurd_counts_and_aggregates_keep_them() -> None:
    """A garbage count beyond uint32 is kept in the history as 2**32 - 1 (while the ring fills
    and after it wraps), never losing the row or the rows beside it; the aggregates add the
    exact value."""
    tracker = CacheTracker(max_calls=3, clock=Clock())
    huge = 5_000_000_000
    for i in range(5):
        u = fakes.usage(input=huge if i in (1, 4) else 10, read=2000, write=0, output=5)
        assert tracker.record(fakes.message(u), request=fakes.request(), provider="anthropic")
        if i == 2:  # the ring is full, not wrapped yet
            assert [m.input_tokens for m in tracker.calls()] == [10, 2**32 - 1, 10]
    kept = [m.input_tokens for m in tracker.calls()]
    assert kept == [10, 10, 2**32 - 1]
    assert tracker.aggregate()["input_tokens"] == 2 * huge + 3 * 10
    assert [m.cache_read_tokens for m in tracker.calls()] == [2000] * 3


def test_anthropic_compatible_server_that_reports_reads_only() -> None:
    """A server that sends ``cache_read_input_tokens`` but no write count at all (llama.cpp's
    Anthropic endpoint) is measured like implicit caching: the cold call is ``cold`` with no hit
    ratio (not a 100% hit, not ``below_minimum``), the repeat is expected to read what it read,
    and a later call that reads nothing within the TTL is an unexpected miss. A reported 0 write
    count is a different answer and keeps write-based hit ratios."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)

    def reads_only(read: int) -> dict[str, Any]:
        return fakes.message(
            {"input_tokens": 3000 - read + 10, "cache_read_input_tokens": read, "output_tokens": 5}
        )

    cold = tracker.record(reads_only(0), request=fakes.request(), provider="anthropic")
    assert cold is not None
    assert (cold.writes_reported, cold.miss_cause, cold.unexpected_miss) == (False, "cold", False)
    assert cold.hit_ratio is None
    clock.now += 10
    hit = tracker.record(reads_only(2900), request=fakes.request(), provider="anthropic")
    assert hit is not None
    assert hit.expected_read_tokens > 0 and not hit.unexpected_miss
    # Against the byte-share estimate; the read then measures it.
    assert hit.hit_ratio is not None and 0.95 < hit.hit_ratio <= 1.0
    clock.now += 10
    lost = tracker.record(reads_only(0), request=fakes.request(), provider="anthropic")
    assert lost is not None
    assert (lost.unexpected_miss, lost.miss_cause, lost.expected_read_tokens) == (True, "provider", 2900)
    assert lost.hit_ratio == 0.0
    zero = tracker.record(body(write=0, read=0), request=fakes.request("new question"), provider="anthropic")
    assert zero is not None and zero.writes_reported


def test_estimated_entry_sizes_tolerate_error_until_a_read_measures_them() -> None:
    """A breakpoint before the last one gets its size from the byte share of a write, an
    estimate: a later call reading that layer a little under the estimate is no miss, and its
    read measures the entry exactly, so from then on a shortfall is an unexpected miss."""
    clock = Clock()
    tracker = CacheTracker(clock=clock)

    def req(tenant: str) -> dict[str, Any]:
        return fakes.request() | {
            "system": [
                {"type": "text", "text": "shared policy " * 300, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": f"tenant {tenant} " * 100, "cache_control": {"type": "ephemeral"}},
            ]
        }

    first = tracker.record(body(write=4000), request=req("a"), provider="anthropic")
    assert first is not None and first.miss_cause == "cold"
    clock.now += 5
    other = tracker.record(body(read=2500, write=700), request=req("b"), provider="anthropic")
    assert other is not None
    assert other.expected_read_tokens > 2500  # the byte-share estimate of the shared layer
    assert not other.unexpected_miss and other.miss_cause == "cold"
    clock.now += 5
    short = tracker.record(body(read=2000, write=1200), request=req("c"), provider="anthropic")
    assert short is not None
    assert short.expected_read_tokens == 2500 and short.unexpected_miss


def test_settings_are_live_or_read_only_never_silently_ignored() -> None:
    """What may change on a live tracker changes (provider, clock, callbacks); what is fixed at
    construction refuses an assignment instead of ignoring it."""
    from cachebench import CachePolicy

    policy = CachePolicy.miss_aware()
    tracker = CacheTracker(
        provider="anthropic", policy=policy, miss_alert_threshold=0.4, max_prefixes=7, max_calls=9
    )
    for name, value, constructed in (
        ("miss_alert_threshold", 0.9, 0.4),
        ("policy", None, policy),
        ("capture_text", True, False),
        ("max_prefixes", 5, 7),
        ("max_calls", 5, 9),
    ):
        with pytest.raises(AttributeError):
            setattr(tracker, name, value)
        assert getattr(tracker, name) == constructed, name
    tracker.provider = "openai"
    assert tracker.provider is Provider.OPENAI
    with pytest.raises(ValueError):
        tracker.provider = "nobody"
    tracker.provider = None
    assert tracker.provider is None


def test_calls_after_close_are_counted_and_logged_and_new_wrappers_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After ``close()``: a wrapper made before still returns the SDK's result, unrecorded; so
    does ``record()``; both are counted in ``dropped_calls`` and logged once. ``wrap()`` and
    ``instrument()`` raise: a wrapper of a closed tracker would record nothing."""
    handler, _ = fakes.scripted([fakes.usage(input=12, output=4)])
    client = fakes.client(handler)
    tracker = CacheTracker()
    create = tracker.wrap(client.messages.create)
    create(**fakes.request())
    tracker.close()
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        assert create(**fakes.request()).usage.output_tokens == 4
        assert tracker.record(fakes.message(fakes.usage(input=1)), provider="anthropic") is None
        assert create(**fakes.request()).usage.output_tokens == 4
    assert tracker.dropped_calls == 3
    assert len(tracker.calls()) == 1
    closed = [r for r in caplog.records if "after the tracker was closed" in r.getMessage()]
    assert len(closed) == 1
    with pytest.raises(RuntimeError, match=r"wrap\(\) on a closed CacheTracker"):
        tracker.wrap(client.messages.create)
    with pytest.raises(RuntimeError, match=r"instrument\(\) on a closed CacheTracker"):
        tracker.instrument(client)
