"""What a model's tokens cost, for estimates: :class:`Rates` (USD per million tokens).

:meth:`Rates.for_model` reads genai-prices (through :class:`~cachebench.pricing.PriceTable`,
the one module that imports it) on a given date; a rate the price list lacks is filled in from
the provider's rules (:data:`WRITE_MULTIPLES`) and named in :attr:`Rates.filled`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from .. import facts
from ..pricing import PriceTable

__all__ = ["READ_MULTIPLE", "WRITE_MULTIPLES", "Rates", "guess_provider", "when_of"]

#: A cache write's price as a multiple of the input price, per TTL, where the price list has
#: none (Anthropic and Bedrock: 5 m 1.25x, 1 h 2x; OpenAI GPT-5.6 and later: 30 m and 12 h
#: 1.25x; implicit caching, OpenAI before GPT-5.6 and Gemini, writes at the input price).
WRITE_MULTIPLES = {"5m": 1.25, "1h": 2.0, "30m": 1.25, "12h": 1.25}
#: A cache read's price as a multiple of the input price where the price list has none.
READ_MULTIPLE = 0.1
_LONG = frozenset({"1h"})  # TTLs billed at the price list's cache_write_1h
_MTOK = 1_000_000
_PROVIDERS = ("anthropic", "openai", "bedrock", "gemini")
# Bedrock model ids start with the model's vendor, or a cross-region inference profile.
_BEDROCK_PREFIXES = ("anthropic.", "amazon.", "meta.", "us.", "eu.", "apac.", "global.", "arn:aws:")


def guess_provider(model: str) -> str:
    """The provider a model name belongs to ("anthropic" when it names none we know)."""
    name = model.lower()
    if name.startswith(_BEDROCK_PREFIXES):
        return "bedrock"
    if name.startswith(("gpt", "o1", "o3", "o4", "chatgpt", "codex")):
        return "openai"
    if name.startswith(("gemini", "models/gemini")):
        return "gemini"
    return "anthropic"


def when_of(when: float | date | datetime | str | None) -> float:
    """A date as epoch seconds: None is now; a number is epoch seconds; a date is its start
    (UTC); text is ISO 8601."""
    if when is None:
        return time.time()
    if isinstance(when, bool):
        raise ValueError(f"when must be a date, a datetime, ISO text or epoch seconds, got {when!r}")
    if isinstance(when, (int, float)):
        if not math.isfinite(when):
            raise ValueError(f"when must be finite, got {when!r}")
        return float(when)
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"when: {when!r} is not an ISO 8601 date or time") from None
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(when, date):
        return datetime(when.year, when.month, when.day, tzinfo=timezone.utc).timestamp()
    raise ValueError(f"when must be a date, a datetime, ISO text or epoch seconds, got {type(when).__name__}")


def _rate(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a price in USD per million tokens (a number >= 0), got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's prices in USD per million tokens: ``input`` (uncached input), ``output``,
    ``cache_read``, ``cache_write`` (the short TTL: Anthropic's 5 m, OpenAI's 30 m) and
    ``cache_write_1h``. ``filled``: the rates not in the price list, filled in from the
    provider's rules (:data:`WRITE_MULTIPLES`, :data:`READ_MULTIPLE`)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    model: str | None = None
    provider: str | None = None
    filled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))

    @classmethod
    def for_model(
        cls,
        model: str,
        provider: str | None = None,
        *,
        when: float | date | datetime | str | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
    ) -> Rates:
        """``model``'s prices on ``when`` (default now) from genai-prices, or ``prices``
        overrides as :class:`~cachebench.CacheTracker` takes them. ``ValueError`` when
        neither knows the model's input price."""
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a model name, got {model!r}")
        chosen = provider if provider is not None else guess_provider(model)
        if chosen not in _PROVIDERS:
            raise ValueError(f"provider must be anthropic, openai, bedrock or gemini, got {provider!r}")
        found = PriceTable(prices).rates(chosen, model, when_of(when))
        listed = found.get("input") if found is not None else None
        if found is None or listed is None:
            raise ValueError(
                f"no prices for {model!r} ({chosen}) in genai-prices: pass prices="
                "{model: {'input': ..., 'output': ..., ...}} in USD per million tokens"
            )
        return cls._from(listed * _MTOK, found, chosen, model)

    @classmethod
    def relative(cls, provider: str, model: str | None = None) -> Rates:
        """Prices in input-token equivalents (an input token costs 1, so ``input`` is
        1,000,000 a million), the others from the provider's rules: for estimates of a model
        no price list knows."""
        if provider not in _PROVIDERS:
            raise ValueError(f"provider must be anthropic, openai, bedrock or gemini, got {provider!r}")
        return cls._from(float(_MTOK), {}, provider, model)

    @classmethod
    def _from(cls, base: float, found: Mapping[str, float | None], provider: str, model: str | None) -> Rates:
        """``found`` (USD a token, as :meth:`PriceTable.rates` gives them) with ``base`` (the
        input price a million tokens); each rate it lacks from the provider's rules."""
        filled: list[str] = []
        implicit = provider == "gemini" or (provider == "openai" and not facts.explicit_caching(model))

        def pick(name: str, default: float) -> float:
            value = found.get(name)
            if value is None:
                filled.append(name)
                return default
            return value * _MTOK

        short = base if implicit else base * WRITE_MULTIPLES["30m" if provider == "openai" else "5m"]
        long = base if implicit else base * WRITE_MULTIPLES["12h" if provider == "openai" else "1h"]
        return cls(
            input=base,
            output=pick("output", 0.0),
            cache_read=pick("cache_read", base * READ_MULTIPLE),
            cache_write=pick("cache_write", short),
            cache_write_1h=pick("cache_write_1h", long),
            model=model,
            provider=provider,
            filled=tuple(filled),
        )

    def write(self, ttl: str | None = "5m") -> float:
        """USD per million tokens written with ``ttl`` (1 h at ``cache_write_1h``, any other
        at ``cache_write``)."""
        return self.cache_write_1h if ttl in _LONG else self.cache_write

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "cache_write_1h": self.cache_write_1h,
            "filled": list(self.filled),
        }
