"""Cost of a call: actual, without cache, and saved. The only module that imports genai-prices.

Rates come from genai-prices (USD per million tokens), looked up once per (provider,
model) and kept; the per-call work is a handful of exact integer multiplications. Prices are
resolved for the call's own timestamp (genai-prices keeps dated price changes) and tiers are
chosen on the *inclusive* input count (long-context tiers count cached tokens too).

A model genai-prices does not know gets ``None`` costs and one warning on the ``cachebench``
logger; a model whose price list lacks a rate the call needs (say, cache writes) is
``unpriced`` rather than charged $0 for those tokens. User overrides win over the data.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ._guard import logger
from .facts import BATCH_PRICE_FACTOR
from .types import UNPRICED, Cost, Usage

__all__ = ["PRICE_KEYS", "PriceTable", "has_price", "validate_overrides"]

PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")

# cachebench provider -> genai-prices provider id.
_GENAI_PROVIDER = {"anthropic": "anthropic", "openai": "openai", "bedrock": "aws", "gemini": "google"}


def has_price(provider: str, model: str) -> bool:
    """Whether the price data knows ``model`` for ``provider`` (no memo: callers bound their
    own lookups)."""
    from genai_prices import data_snapshot

    try:
        data_snapshot.get_snapshot().find_provider_model(
            model, None, _GENAI_PROVIDER.get(provider, provider), None
        )
    except LookupError:
        return False
    return True


# genai-prices ModelPrice attribute for each of our rate names.
_GENAI_ATTR = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}
_MTOK = Decimal(1_000_000)

Rate = Any  # Decimal | genai_prices.types.TieredPrices | None


def validate_overrides(prices: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Decimal]]:
    """Check user price overrides at construction; raise ``ValueError`` naming the bad entry."""
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise ValueError(
            f"prices must be a mapping of model -> {{rate: USD per MTok}}, got {type(prices).__name__}"
        )
    out: dict[str, dict[str, Decimal]] = {}
    for model, rates in prices.items():
        if not isinstance(model, str) or not model:
            raise ValueError(f"prices: model names must be non-empty strings, got {model!r}")
        if not isinstance(rates, Mapping):
            raise ValueError(f"prices[{model!r}] must be a mapping of rate name -> USD per MTok")
        unknown = set(rates) - set(PRICE_KEYS)
        if unknown:
            raise ValueError(
                f"prices[{model!r}] has unknown rate(s) {sorted(unknown)}; allowed: {', '.join(PRICE_KEYS)}"
            )
        clean: dict[str, Decimal] = {}
        for name, value in rates.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
                raise ValueError(
                    f"prices[{model!r}][{name!r}] must be a number (USD per MTok), got {value!r}"
                )
            try:
                dec = Decimal(str(value))
            except ArithmeticError:
                raise ValueError(f"prices[{model!r}][{name!r}] is not a number: {value!r}") from None
            if not dec.is_finite() or dec < 0:
                raise ValueError(f"prices[{model!r}][{name!r}] must be a finite number >= 0, got {value!r}")
            clean[name] = dec
        out[model] = clean
    return out


def _tiered(rate: Rate, total_input: int) -> Decimal | None:
    """Resolve a genai-prices rate for this call: plain Decimal, or the tier the input falls in."""
    if rate is None or isinstance(rate, Decimal):
        return rate
    price: Decimal = rate.base
    for tier in reversed(rate.tiers):
        if total_input > tier.start:
            price = tier.price
            break
    return price


# Per-call rates: (input, output, cache_read, cache_write, cache_write_1h, denominator), each
# rate an exact int (USD per MTok times 10**k, k the most decimals any rate of the set has;
# None when the price list lacks it) and the denominator 10**k * 10**6. A call's cost is a
# sum of int products divided once by the denominator: Python's int / int is correctly
# rounded, so it is the float nearest the exact price, as exact decimal arithmetic gives.
IntRates = tuple[int | None, int | None, int | None, int | None, int | None, int]


def _int_rates(rates: Mapping[str, Decimal | None]) -> IntRates:
    values = [rates.get(name) for name in PRICE_KEYS]
    places = max((max(0, -int(v.as_tuple().exponent)) for v in values if v is not None), default=0)
    scale = 10**places
    out = [None if v is None else int(v * scale) for v in values]
    return (out[0], out[1], out[2], out[3], out[4], scale * 1_000_000)


class _Model:
    """What one (provider, model) resolves to; built once, then read per call."""

    __slots__ = ("below", "fixed", "flat", "info", "overrides")

    def __init__(self, info: Any, overrides: dict[str, Decimal]) -> None:
        self.info = info
        self.overrides = overrides
        # When the model has one unconditional price set, resolve the attributes once, and
        # the int rates of calls below every tier boundary (``below`` input tokens).
        self.fixed: dict[str, Rate] | None = None
        self.flat: IntRates | None = None
        self.below = -1
        if info is not None and not isinstance(info.prices, list):
            self.fixed = self._rates(info.prices)
        elif info is None:
            self.fixed = self._rates(None)
        if self.fixed is not None:
            starts = [
                t.start
                for r in self.fixed.values()
                if r is not None and not isinstance(r, Decimal)
                for t in r.tiers
            ]
            self.below = min(starts, default=1 << 62)
            self.flat = _int_rates({k: _tiered(r, 0) for k, r in self.fixed.items()})

    def _rates(self, model_price: Any) -> dict[str, Rate]:
        rates: dict[str, Rate] = {}
        for name in PRICE_KEYS:
            if name in self.overrides:
                rates[name] = self.overrides[name]
            elif model_price is not None:
                rates[name] = getattr(model_price, _GENAI_ATTR[name], None)
            else:
                rates[name] = None
        return rates

    def rates_at(self, timestamp: float) -> dict[str, Rate]:
        if self.fixed is not None:
            return self.fixed
        when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        return self._rates(self.info.get_prices(when))

    def int_rates(self, timestamp: float, total_input: int) -> IntRates:
        """The call's rates: its date's price set, the tier its inclusive input falls in."""
        if total_input <= self.below and self.flat is not None:
            return self.flat
        rates = self.rates_at(timestamp)
        return _int_rates({k: _tiered(r, total_input) for k, r in rates.items()})


class PriceTable:
    """Prices calls. Thread-safe; memoises one lookup per (provider, model)."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._overrides = validate_overrides(overrides)
        self._models: dict[tuple[str, str], _Model | None] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def _lookup(self, provider: str, model: str) -> _Model | None:
        memo_key = (provider, model)
        try:
            return self._models[memo_key]
        except KeyError:
            pass
        overrides = self._overrides.get(model, {})
        info = None
        try:
            from genai_prices import data_snapshot

            _, info = data_snapshot.get_snapshot().find_provider_model(
                model, None, _GENAI_PROVIDER.get(provider, provider), None
            )
        except LookupError:
            info = None
        entry = _Model(info, overrides) if (info is not None or overrides) else None
        with self._lock:
            self._models[memo_key] = entry
        return entry

    def _warn_once(self, provider: str, model: str, why: str) -> None:
        k = (provider, model)
        if k in self._warned:
            return
        with self._lock:
            if k in self._warned:
                return
            self._warned.add(k)
        logger.warning(
            "cachebench: %s model %r is %s; its costs are recorded as None "
            "(pass prices={...} to CacheTracker to price it)",
            provider,
            model,
            why,
        )

    def cost(
        self, provider: str, model: str | None, usage: Usage, timestamp: float, batch: bool = False
    ) -> Cost:
        """Price one call. Unknown usage or an unpriced model gives ``None`` costs. ``batch``: a
        call sent through the provider's batch API, at its batch price
        (:data:`cachebench.facts.BATCH_PRICE_FACTOR`)."""
        if not usage.known:
            return Cost(None, None, None, False)
        if not model:
            return UNPRICED
        entry = self._lookup(provider, model)
        if entry is None:
            self._warn_once(provider, model, "not in the price data")
            return UNPRICED
        inp = usage.input_tokens
        read = usage.cache_read_tokens
        write = usage.cache_write_tokens
        total_in = inp + read + write
        r_in, r_out, r_read, r_w5, r_w1, den = entry.int_rates(timestamp, total_in)
        if r_in is None or r_out is None:
            self._warn_once(provider, model, "missing input or output prices")
            return UNPRICED
        write_1h = usage.cache_write_1h_tokens
        write_5m = write - write_1h
        actual = inp * r_in + usage.output_tokens * r_out
        if read:
            if r_read is None:
                return self._no_cache_rate(provider, model)
            actual += read * r_read
        if write_5m:
            if r_w5 is None:
                return self._no_cache_rate(provider, model)
            actual += write_5m * r_w5
        if write_1h:
            if r_w1 is None:
                return self._no_cache_rate(provider, model)
            actual += write_1h * r_w1
        without = total_in * r_in + usage.output_tokens * r_out
        if batch and provider in BATCH_PRICE_FACTOR:
            share = Fraction(BATCH_PRICE_FACTOR[provider])  # exact: the rates are integers
            actual, without, den = (
                actual * share.numerator,
                without * share.numerator,
                den * share.denominator,
            )
        return Cost(actual / den, without / den, (without - actual) / den, False)

    def rates(self, provider: str, model: str | None, timestamp: float) -> dict[str, float | None] | None:
        """USD per token of each of :data:`PRICE_KEYS` for a short call at ``timestamp`` (None
        for a rate the price list lacks), or None when the model is not priced. Logs nothing:
        for estimates (the planner's), not for recorded calls."""
        entry = self._lookup(provider, model) if model else None
        if entry is None:
            return None
        *ints, den = entry.int_rates(timestamp, 0)
        if ints[0] is None:
            return None
        return {name: (None if v is None else v / den) for name, v in zip(PRICE_KEYS, ints, strict=True)}

    def _no_cache_rate(self, provider: str, model: str) -> Cost:
        self._warn_once(provider, model, "missing cache prices for the tokens it used")
        return UNPRICED
