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
    ],
)
def test_bad_input_gets_a_clear_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_rates_for_implicit_caching_fill_free_writes() -> None:
    rates = Rates.for_model("gpt-5", "openai", when="2026-06-01")
    assert rates.cache_write == rates.input and "cache_write" in rates.filled
    custom = Rates.for_model("my-model", "anthropic", prices={"my-model": {"input": 2.0, "output": 8.0}})
    assert custom.cache_write == 2.5 and custom.cache_read == pytest.approx(0.2)
    assert set(custom.filled) == {"cache_read", "cache_write", "cache_write_1h"}
