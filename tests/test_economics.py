"""Economics: the figures of a cost write-up, derived from the prices (none typed in), and the
closed forms checked against brute-force replays through the cache model."""

from __future__ import annotations

import math
import random

import pytest

from cachebench.cachemodel import CacheModel, CacheRequest, Segment
from cachebench.economics import (
    Rates,
    Workload,
    break_even,
    conversation,
    monthly,
    request_cost,
    warmer_value,
)

# The Opus-class prices of the issue, USD per million tokens.
INPUT, WRITE_5M, WRITE_1H, READ, OUTPUT = 5.0, 6.25, 10.0, 0.50, 25.0
OPUS = Rates(input=INPUT, output=OUTPUT, cache_read=READ, cache_write=WRITE_5M, cache_write_1h=WRITE_1H)
# The same rates, named as Anthropic's: only Anthropic's TTLs are priced.
CLAUDE = Rates(
    input=INPUT,
    output=OUTPUT,
    cache_read=READ,
    cache_write=WRITE_5M,
    cache_write_1h=WRITE_1H,
    provider="anthropic",
)
M = 1_000_000


def usd(tokens: float, per_mtok: float) -> float:
    return tokens * per_mtok / M


def test_genai_prices_has_the_opus_class_prices() -> None:
    rates = Rates.for_model("claude-opus-4-5", when="2026-06-01")
    assert (rates.input, rates.cache_write, rates.cache_write_1h, rates.cache_read, rates.output) == (
        INPUT,
        WRITE_5M,
        WRITE_1H,
        READ,
        OUTPUT,
    )
    assert rates.provider == "anthropic" and rates.filled == ()


def test_a_request_cold_warm_and_uncached() -> None:
    cost = request_cost(OPUS, 3_000, 2_500, 800)
    # derived: uncached = all input at the input price; cold = the cached part at the write
    # price; warm = the cached part at the read price; output alike in all three
    rest = 3_000 - 2_500
    assert cost.uncached == pytest.approx(usd(3_000, INPUT) + usd(800, OUTPUT))
    assert cost.cold == pytest.approx(usd(rest, INPUT) + usd(2_500, WRITE_5M) + usd(800, OUTPUT))
    assert cost.warm == pytest.approx(usd(rest, INPUT) + usd(2_500, READ) + usd(800, OUTPUT))
    # the write-up's figures
    assert round(cost.uncached, 6) == 0.035
    assert round(cost.cold, 6) == 0.038125
    assert round(cost.warm, 6) == 0.02375


def test_break_even_reads_per_write() -> None:
    found = break_even(OPUS, 2_500)
    premium = usd(2_500, WRITE_5M - INPUT)
    saving = usd(2_500, INPUT - READ)
    assert found.write_premium == pytest.approx(premium) and round(found.write_premium, 6) == 0.003125
    assert found.read_saving == pytest.approx(saving) and round(found.read_saving, 5) == 0.01125
    assert found.reads == pytest.approx(premium / saving)
    assert round(found.reads, 2) == 0.28
    # the 1h TTL costs more to write: more reads to break even
    assert break_even(OPUS, 2_500, ttl="1h").reads == pytest.approx(usd(2_500, WRITE_1H - INPUT) / saving)


def test_a_month_at_a_70_percent_hit_rate() -> None:
    projection = monthly(OPUS, Workload("agent", 10_000, 3_000, 2_500, 800, 0.70))
    one = request_cost(OPUS, 3_000, 2_500, 800)
    assert projection.cost == pytest.approx(30 * 10_000 * (0.7 * one.warm + 0.3 * one.cold))
    assert round(projection.cost, 2) == 8_418.75
    assert projection.cost_uncached == pytest.approx(30 * 10_000 * one.uncached)
    assert projection.saving == pytest.approx(projection.cost_uncached - projection.cost)


def test_a_mix_adds_up_its_workloads() -> None:
    a = Workload("chat", 10_000, 3_000, 2_500, 800, 0.7)
    b = Workload("batch", 500, 40_000, 38_000, 2_000, 0.95, ttl="1h")
    both = monthly(OPUS, [a, b], days=7)
    assert both.cost == pytest.approx(monthly(OPUS, a, days=7).cost + monthly(OPUS, b, days=7).cost)
    assert [r[0] for r in both.rows] == ["chat", "batch"]


def test_the_five_turn_table_second_turn_saving_is_the_read_saving() -> None:
    table = conversation(OPUS, turns=5, prefix_tokens=2_500, turn_tokens=500, output_tokens=800)
    first, second = table[0], table[1]
    assert first.written_tokens == 2_500 and first.read_tokens == 0
    assert second.read_tokens == 2_500 and second.written_tokens == 0
    assert second.saving == pytest.approx(usd(2_500, INPUT - READ))
    assert round(second.saving, 5) == 0.01125
    assert round(second.saving, 5) != 0.00875  # what the write-up printed
    assert table[-1].cumulative_saving == pytest.approx(sum(t.saving for t in table))
    assert table[-1].cumulative_cost == pytest.approx(first.cost + 4 * second.cost)


def _segment(name: str, tokens: int, ttl: str | None = None) -> Segment:
    return Segment(name.encode().ljust(16, b"\0"), tokens, ttl)


def test_a_growing_conversation_matches_a_replay_through_the_cache_model() -> None:
    """Each turn sends the prefix and the conversation so far with a breakpoint at its end."""
    turns, prefix, new, out = 6, 4_200, 350, 700
    table = conversation(
        OPUS, turns=turns, prefix_tokens=prefix, turn_tokens=new, output_tokens=out, history=True
    )
    cache = CacheModel()
    for k in range(1, turns + 1):
        segments = [_segment("prefix", prefix, "5m")]
        for j in range(1, k):
            segments += [_segment(f"user{j}", new), _segment(f"assistant{j}", out)]
        if k > 1:
            last = segments[-1]
            segments[-1] = Segment(last.digest, last.tokens, "5m")
        segments.append(_segment(f"user{k}", new))
        got = cache.handle(
            CacheRequest("anthropic", "claude-opus-4-5", "s", tuple(segments)), now=100.0 + 30 * k
        )
        row = table[k - 1]
        assert (got.cache_read_tokens, got.cache_write_tokens, got.input_tokens) == (
            row.read_tokens,
            row.written_tokens,
            row.uncached_tokens,
        ), k


def _poisson_replay(rate_per_s: float, tokens: int, calls: int, seed: int) -> tuple[float, float]:
    """Calls on one cached prefix, at Poisson times, through the cache model: what they cost
    cached and uncached (input only)."""
    rnd = random.Random(seed)
    cache = CacheModel()
    t = 1_000.0
    paid = plain = 0.0
    request = CacheRequest("anthropic", "claude-opus-4-5", "s", (_segment("layer", tokens, "5m"),))
    for _ in range(calls):
        t += rnd.expovariate(rate_per_s)
        got = cache.handle(request, now=t)
        paid += (
            usd(got.cache_read_tokens, READ)
            + usd(got.cache_write_tokens, WRITE_5M)
            + usd(got.input_tokens, INPUT)
        )
        plain += usd(tokens, INPUT)
    return paid, plain


def test_break_even_rate_against_a_replay_through_the_cache_model() -> None:
    """At the break-even rate caching costs what no caching costs; at twice it, less; at half,
    more."""
    found = break_even(OPUS, 5_000)
    paid, plain = _poisson_replay(found.rate_per_s, 5_000, 40_000, seed=3)
    assert paid == pytest.approx(plain, rel=0.02)
    paid, plain = _poisson_replay(found.rate_per_s * 2, 5_000, 20_000, seed=4)
    assert paid < plain * 0.97
    paid, plain = _poisson_replay(found.rate_per_s / 2, 5_000, 20_000, seed=5)
    assert paid > plain * 1.03


def test_a_monthly_projection_against_a_replay_through_the_cache_model() -> None:
    """Requests of which 70% find their prefix written (a customer's second call within the
    TTL) and 30% write it (a new customer), replayed: the projection's cost per day."""
    rnd = random.Random(11)
    cache = CacheModel()
    t, paid, customers = 10_000.0, 0.0, 0
    n = 2_000
    pattern = [i % 10 < 3 for i in range(n)]  # 30% new customers, spread evenly
    rnd.shuffle(pattern)
    pattern[0] = True
    for new_customer in pattern:
        t += 1.0
        if new_customer:
            customers += 1
        request = CacheRequest(
            "anthropic",
            "claude-opus-4-5",
            "s",
            (_segment(f"customer{customers}", 4_500, "5m"), _segment(f"question{t}", 500)),
        )
        got = cache.handle(request, now=t)
        paid += (
            usd(got.input_tokens, INPUT)
            + usd(got.cache_read_tokens, READ)
            + usd(got.cache_write_tokens, WRITE_5M)
            + usd(800, OUTPUT)
        )
    projected = monthly(OPUS, Workload("replay", n, 5_000, 4_500, 800, 0.7), days=1)
    assert projected.cost == pytest.approx(paid)


def test_a_warmer_pays_for_sparse_traffic_and_not_for_dense() -> None:
    sparse = warmer_value(OPUS, 20_000, calls_per_hour=6, interval_s=270)
    assert sparse.hit_rate_without == pytest.approx(1 - math.exp(-6 / 3600 * 300))
    assert sparse.pays
    dense = warmer_value(OPUS, 20_000, calls_per_hour=600, interval_s=270)
    assert not dense.pays  # the traffic keeps it warm itself
    none = warmer_value(OPUS, 20_000, calls_per_hour=0, interval_s=270)
    assert none.saving == 0 and not none.pays


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: request_cost(OPUS, 100, 200), "cannot exceed"),
        (lambda: request_cost(OPUS, -1, 0), "whole number"),
        (lambda: request_cost(OPUS, 100, 10, ttl="2h"), "ttl must be one of"),
        (lambda: Workload("x", 10, 100, 10, 1, 1.5), "hit_rate"),
        (lambda: monthly(OPUS, []), "non-empty"),
        (lambda: warmer_value(OPUS, 100, calls_per_hour=1, interval_s=600), "interval_s"),
        (lambda: Rates(input=-1, output=1, cache_read=1, cache_write=1, cache_write_1h=1), "input must be"),
        (lambda: Rates.for_model("no-such-model-xyz"), "no prices"),
        (lambda: Rates.for_model("claude-opus-4-5", when="yesterday"), "ISO 8601"),
        (lambda: conversation(OPUS, turns=0, prefix_tokens=1, turn_tokens=1, output_tokens=1), "turns"),
        (lambda: request_cost(CLAUDE, 100, 10, ttl="24h"), r"ttl '24h' is not one of anthropic's \(1h, 5m\)"),
        (lambda: break_even(CLAUDE, 2500, ttl="30m"), r"ttl '30m' is not one of anthropic's"),
        (lambda: monthly(CLAUDE, Workload("x", 10, 100, 10, 1, 0.5, ttl="12h")), "not one of anthropic's"),
        (
            lambda: warmer_value(CLAUDE, 100, calls_per_hour=1, interval_s=60, ttl="in_memory"),
            "not one of anthropic's",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_a_token_count_that_is_not_a_whole_number_is_a_type_error() -> None:
    for bad in ("1000", 10.0, None, True):
        with pytest.raises(TypeError, match="input_tokens must be a whole number of tokens"):
            request_cost(OPUS, bad, 0)  # type: ignore[arg-type]


def test_rates_for_implicit_caching_fill_free_writes() -> None:
    rates = Rates.for_model("gpt-5", "openai", when="2026-06-01")
    assert rates.cache_write == rates.input and "cache_write" in rates.filled
    custom = Rates.for_model("my-model", "anthropic", prices={"my-model": {"input": 2.0, "output": 8.0}})
    assert custom.cache_write == 2.5 and custom.cache_read == pytest.approx(0.2)
    assert set(custom.filled) == {"cache_read", "cache_write", "cache_write_1h"}


def test_a_one_hour_cache_is_priced_at_the_one_hour_write() -> None:
    cost = request_cost(OPUS, 3_000, 2_500, 800, ttl="1h")
    assert cost.cold == pytest.approx(usd(500, INPUT) + usd(2_500, WRITE_1H) + usd(800, OUTPUT))
    assert request_cost(OPUS, 2_500, 2_500).uncached == pytest.approx(usd(2_500, INPUT))  # all of it cached
    table = conversation(
        OPUS, turns=3, prefix_tokens=4_000, turn_tokens=200, output_tokens=100, history=True, ttl="1h"
    )
    assert table[1].written_tokens == 300 and table[1].read_tokens == 4_000
    assert table[1].cost == pytest.approx(
        usd(200, INPUT) + usd(4_000, READ) + usd(300, WRITE_1H) + usd(100, OUTPUT)
    )
    assert len(conversation(OPUS, turns=1, prefix_tokens=1, turn_tokens=1, output_tokens=1)) == 1
    hour = break_even(OPUS, 2_500, ttl="1h")
    assert hour.rate_per_s == pytest.approx(math.log1p(hour.reads) / 3600)
    assert hour.calls_per_hour == pytest.approx(hour.rate_per_s * 3600)


def test_when_a_read_saves_nothing_caching_never_breaks_even() -> None:
    flat = Rates(input=1.0, output=1.0, cache_read=1.0, cache_write=1.25, cache_write_1h=2.0)
    found = break_even(flat, 1_000)
    assert (found.tokens, found.ttl, found.reads, found.rate_per_s) == (1_000, "5m", math.inf, math.inf)
    assert found.write_premium == pytest.approx(usd(1_000, 0.25)) and found.read_saving == 0
    assert found.as_dict()["calls_per_hour"] == math.inf


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: request_cost(OPUS, -1, 0), "input_tokens"),
        (lambda: request_cost(OPUS, 10, -1), "cached_tokens"),
        (lambda: request_cost(OPUS, 10, 1, -1), "output_tokens"),
        (lambda: break_even(OPUS, -5), "tokens"),
        (
            lambda: conversation(OPUS, turns=2, prefix_tokens=-1, turn_tokens=1, output_tokens=1),
            "prefix_tokens",
        ),
        (
            lambda: conversation(OPUS, turns=2, prefix_tokens=1, turn_tokens=-1, output_tokens=1),
            "turn_tokens",
        ),
        (
            lambda: conversation(OPUS, turns=2, prefix_tokens=1, turn_tokens=1, output_tokens=-1),
            "output_tokens",
        ),
        (lambda: monthly(OPUS, Workload("x", 1, 10, 1, 1, 0.5), days=0), "days"),
        (lambda: monthly(OPUS, ["not a workload"]), "workloads"),  # type: ignore[list-item]
        (lambda: Workload("x", -1, 10, 1, 1, 0.5), "requests_per_day"),
        (lambda: Workload("x", math.inf, 10, 1, 1, 0.5), "requests_per_day"),
        (lambda: Workload("x", 1, 10, 1, 1, "half"), "hit_rate"),  # type: ignore[arg-type]
        (lambda: conversation(OPUS, turns=True, prefix_tokens=1, turn_tokens=1, output_tokens=1), "turns"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_argument_is_named(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        call()  # type: ignore[operator]


def test_the_edges_of_the_traffic_model_and_a_month() -> None:
    from cachebench.economics import live_probability, reads_per_write

    assert live_probability(0.0, 300) == 0 and live_probability(1.0, 0) == 0
    assert reads_per_write(0.0, 300) == 0 and reads_per_write(1.0, 0) == 0
    assert reads_per_write(1 / 300, 300) == pytest.approx(math.e - 1)
    assert live_probability(1 / 300, 300) == pytest.approx(1 - 1 / math.e)
    assert reads_per_write(10.0, 3600) == math.inf
    for hit_rate in (0, 1):
        w = Workload("edge", 0, 1_000, 1_000, 0, hit_rate)
        assert monthly(OPUS, w).cost == 0
    all_warm = monthly(OPUS, Workload("warm", 100, 1_000, 1_000, 0, 1.0), days=1)
    assert all_warm.cost == pytest.approx(100 * usd(1_000, READ))
    assert all_warm.as_dict()["workloads"][0]["saving"] == pytest.approx(all_warm.saving)


def test_a_warmers_month_is_its_pings_against_the_writes_it_saves() -> None:
    value = warmer_value(OPUS, 10_000, calls_per_hour=3, interval_s=3000, ttl="1h")
    live = 1 - math.exp(-3 / 3600 * 3600)
    calls = 3 / 3600 * 30 * 86_400
    assert value.hit_rate_without == pytest.approx(live)
    assert value.saving == pytest.approx(calls * (1 - live) * usd(10_000, WRITE_1H - READ))
    ping = usd(10_000, READ) + usd(8, INPUT) + usd(1, OUTPUT)
    assert value.cost == pytest.approx(30 * 86_400 / 3000 * ping)
    assert value.as_dict()["net"] == pytest.approx(value.saving - value.cost)
    assert (value.tokens, value.ttl, value.interval_s, value.calls_per_hour) == (10_000, "1h", 3000.0, 3.0)
