"""Prices are exact: the per-call integer arithmetic gives the float nearest the decimal price."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachebench.pricing import PriceTable
from cachebench.types import Usage

MTOK = Decimal(1_000_000)
rate = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
tokens = st.integers(0, 3_000_000)


def reference(usage: Usage, r: dict[str, Decimal]) -> tuple[float, float, float]:
    w1 = usage.cache_write_1h_tokens
    w5 = usage.cache_write_tokens - w1
    total_in = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    actual = (
        usage.input_tokens * r["input"]
        + usage.cache_read_tokens * r["cache_read"]
        + w5 * r["cache_write"]
        + w1 * r["cache_write_1h"]
        + usage.output_tokens * r["output"]
    ) / MTOK
    without = (total_in * r["input"] + usage.output_tokens * r["output"]) / MTOK
    return float(actual), float(without), float(without - actual)


@given(rate, rate, rate, rate, rate, tokens, tokens, tokens, tokens, tokens)
def test_override_prices_are_exact(
    r_in: Decimal, r_out: Decimal, r_read: Decimal, r_w5: Decimal, r_w1: Decimal,
    inp: int, read: int, write: int, write_1h: int, out: int,
) -> None:  # fmt: skip
    rates = {
        "input": r_in,
        "output": r_out,
        "cache_read": r_read,
        "cache_write": r_w5,
        "cache_write_1h": r_w1,
    }
    table = PriceTable({"my-model": {k: str(v) for k, v in rates.items()}})
    usage = Usage(inp, read, write, min(write_1h, write), out)
    cost = table.cost("anthropic", "my-model", usage, 1_760_000_000.0)
    assert (cost.cost_usd, cost.cost_without_cache_usd, cost.cost_saved_usd) == reference(usage, rates)
    assert not cost.unpriced


@given(tokens, tokens, tokens, tokens)
def test_long_context_tier_is_chosen_on_the_inclusive_input(
    inp: int, read: int, write: int, out: int
) -> None:
    """claude-sonnet-4-5 as published: above 200k input tokens (cached ones included) every
    rate doubles (output x1.5)."""
    usage = Usage(inp, read, write, 0, out)
    long = inp + read + write > 200_000
    rates = {
        "input": Decimal(6 if long else 3),
        "output": Decimal("22.5" if long else 15),
        "cache_read": Decimal("0.6" if long else "0.3"),
        "cache_write": Decimal("7.5" if long else "3.75"),
        "cache_write_1h": Decimal(12 if long else 6),
    }
    cost = PriceTable().cost("anthropic", "claude-sonnet-4-5", usage, 1_760_000_000.0)
    assert (cost.cost_usd, cost.cost_without_cache_usd, cost.cost_saved_usd) == reference(usage, rates)


def test_a_missing_cache_rate_leaves_the_call_unpriced() -> None:
    table = PriceTable({"my-model": {"input": 1, "output": 2}})
    priced = table.cost("anthropic", "my-model", Usage(10, 0, 0, 0, 5), 0.0)
    assert priced.cost_usd == 20 / 1_000_000 and priced.unpriced is False
    assert table.cost("anthropic", "my-model", Usage(10, 5, 0, 0, 5), 0.0).unpriced is True
    assert table.cost("anthropic", "my-model", Usage(10, 0, 5, 0, 5), 0.0).unpriced is True


def test_rates_per_token_for_estimates() -> None:
    """``PriceTable.rates`` gives USD per token of each price key (None where the list has no
    such rate) for a priced model, and None for one it does not know, logging nothing."""
    from cachebench.pricing import PRICE_KEYS, PriceTable

    table = PriceTable()
    rates = table.rates("anthropic", "claude-sonnet-4-5", 1_790_000_000.0)
    assert rates is not None and set(rates) == set(PRICE_KEYS)
    assert rates["input"] == pytest.approx(3e-6) and rates["cache_read"] == pytest.approx(0.3e-6)
    assert rates["cache_write"] == pytest.approx(3.75e-6) and rates["cache_write_1h"] == pytest.approx(6e-6)
    assert table.rates("anthropic", "no-such-model", 1_790_000_000.0) is None
    assert table.rates("anthropic", None, 1_790_000_000.0) is None
