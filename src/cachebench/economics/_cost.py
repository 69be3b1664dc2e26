"""Cost math over :class:`~._rates.Rates`: a request cold, warm and uncached; break-even reads
per write; a multi-turn conversation's table; a monthly projection for a traffic mix; and what
a warmer costs against what it saves.

Traffic is a Poisson process: calls that share a cache entry arrive at ``rate`` per second, and
every read refreshes the entry's TTL ``T`` (Anthropic, Bedrock; OpenAI's and Gemini's idle
lifetime). A call then finds the entry alive when the gap since the call before it is under
``T``: with probability ``1 - exp(-rate T)`` (:func:`live_probability`), so one write is read
``exp(rate T) - 1`` times on average (:func:`reads_per_write`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .. import facts
from .._args import whole_number
from ._rates import Rates

__all__ = [
    "BreakEven",
    "ConversationTurn",
    "Projection",
    "RequestCost",
    "WarmerValue",
    "Workload",
    "break_even",
    "conversation",
    "live_probability",
    "monthly",
    "reads_per_write",
    "request_cost",
    "warmer_value",
]

_MTOK = 1_000_000
_DAY_S = 86_400.0
_MONTH_S = 30 * _DAY_S


def _tokens(name: str, value: object) -> int:
    return whole_number(name, value, 0, "a whole number of tokens >= 0")


def _ttl(ttl: object, rates: Rates | None = None) -> str:
    """``ttl`` checked: a TTL a provider has, and where ``rates`` name a provider with explicit
    breakpoints (Anthropic, Bedrock), one of that provider's own."""
    if not isinstance(ttl, str) or ttl not in facts.TTL_SECONDS:
        raise ValueError(f"ttl must be one of {', '.join(facts.TTL_SECONDS)}, got {ttl!r}")
    provider = rates.provider if rates is not None else None
    own = facts.BREAKPOINT_TTLS.get(provider) if provider in ("anthropic", "bedrock") else None
    if own is not None and ttl not in own:
        raise ValueError(f"ttl {ttl!r} is not one of {provider}'s ({', '.join(own)})")
    return ttl


def _usd(
    rates: Rates, *, uncached: int = 0, read: int = 0, written: int = 0, output: int = 0, ttl: str = "5m"
) -> float:
    """What these tokens cost, in USD."""
    return (
        uncached * rates.input + read * rates.cache_read + written * rates.write(ttl) + output * rates.output
    ) / _MTOK


def live_probability(rate_per_s: float, ttl_s: float) -> float:
    """The chance a call finds an entry alive when calls arrive at ``rate_per_s`` (Poisson) and
    each read refreshes a TTL of ``ttl_s``."""
    if rate_per_s <= 0 or ttl_s <= 0:
        return 0.0
    return -math.expm1(-rate_per_s * ttl_s)


def reads_per_write(rate_per_s: float, ttl_s: float) -> float:
    """How many calls read one write on average (``exp(rate T) - 1``; ``inf`` when the entry never
    expires between calls)."""
    if rate_per_s <= 0 or ttl_s <= 0:
        return 0.0
    x = rate_per_s * ttl_s
    return math.inf if x > 700 else math.expm1(x)


# -- one request ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestCost:
    """One request's cost in USD: ``uncached`` (no caching), ``cold`` (it writes the cached
    part), ``warm`` (it reads it); ``write_premium`` (a write beyond plain input) and
    ``read_saving`` (plain input beyond a read) of the cached part."""

    input_tokens: int
    cached_tokens: int
    output_tokens: int
    ttl: str
    uncached: float
    cold: float
    warm: float

    @property
    def write_premium(self) -> float:
        return self.cold - self.uncached

    @property
    def read_saving(self) -> float:
        return self.uncached - self.warm

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "write_premium": self.write_premium, "read_saving": self.read_saving}


def request_cost(
    rates: Rates, input_tokens: int, cached_tokens: int, output_tokens: int = 0, *, ttl: str = "5m"
) -> RequestCost:
    """A request of ``input_tokens`` (all of its input), of which ``cached_tokens`` are the
    cacheable prefix, and ``output_tokens``: uncached, cold and warm."""
    total = _tokens("input_tokens", input_tokens)
    cached = _tokens("cached_tokens", cached_tokens)
    out = _tokens("output_tokens", output_tokens)
    ttl = _ttl(ttl, rates)
    if cached > total:
        raise ValueError(f"cached_tokens ({cached:,}) cannot exceed input_tokens ({total:,})")
    rest = total - cached
    return RequestCost(
        total,
        cached,
        out,
        ttl,
        uncached=_usd(rates, uncached=total, output=out),
        cold=_usd(rates, uncached=rest, written=cached, output=out, ttl=ttl),
        warm=_usd(rates, uncached=rest, read=cached, output=out),
    )


@dataclass(frozen=True, slots=True)
class BreakEven:
    """When caching ``tokens`` with ``ttl`` pays: a write costs ``write_premium`` USD beyond
    plain input, each read saves ``read_saving``; ``reads`` = premium / saving is how many extra
    requests must read one write before caching has paid (inf when a read saves nothing). With
    ``rate_per_s``, the smallest steady rate at which it pays (reads per write = ``reads``)."""

    tokens: int
    ttl: str
    write_premium: float
    read_saving: float
    reads: float
    rate_per_s: float

    @property
    def calls_per_hour(self) -> float:
        return self.rate_per_s * 3600.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "calls_per_hour": self.calls_per_hour}


def break_even(rates: Rates, tokens: int, *, ttl: str = "5m") -> BreakEven:
    """Break-even reads per write for caching ``tokens`` with ``ttl``, and the call rate (on
    one entry) at which it is reached."""
    tokens = _tokens("tokens", tokens)
    ttl = _ttl(ttl, rates)
    premium = _usd(rates, written=tokens, ttl=ttl) - _usd(rates, uncached=tokens)
    saving = _usd(rates, uncached=tokens) - _usd(rates, read=tokens)
    if saving <= 0:
        return BreakEven(tokens, ttl, premium, saving, math.inf, math.inf)
    reads = max(premium, 0.0) / saving
    # exp(rate T) - 1 = reads  =>  rate = ln(1 + reads) / T
    rate = math.log1p(reads) / facts.ttl_seconds(ttl)
    return BreakEven(tokens, ttl, premium, saving, reads, rate)


# -- a conversation -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    """One turn of :func:`conversation`: its tokens, its cost with and without caching, the
    saving, and the running totals."""

    turn: int
    read_tokens: int
    written_tokens: int
    uncached_tokens: int
    output_tokens: int
    cost: float
    cost_uncached: float
    saving: float
    cumulative_cost: float
    cumulative_uncached: float
    cumulative_saving: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def conversation(
    rates: Rates,
    *,
    turns: int,
    prefix_tokens: int,
    turn_tokens: int,
    output_tokens: int,
    history: bool = False,
    ttl: str = "5m",
) -> list[ConversationTurn]:
    """A conversation of ``turns`` turns, each within the TTL of the one before: a cached
    prefix of ``prefix_tokens``, ``turn_tokens`` of new input and ``output_tokens`` per turn.

    ``history=False``: each turn sends the prefix and its new input (the prefix written on the
    first turn, read on the others). ``history=True``: each turn also sends the conversation so
    far, with a breakpoint at its end: turn ``k`` reads what turn ``k-1`` cached and writes
    turn ``k-1``'s input and output."""
    if isinstance(turns, bool) or not isinstance(turns, int) or turns < 1:
        raise ValueError(f"turns must be a whole number >= 1, got {turns!r}")
    prefix = _tokens("prefix_tokens", prefix_tokens)
    new = _tokens("turn_tokens", turn_tokens)
    out = _tokens("output_tokens", output_tokens)
    ttl = _ttl(ttl, rates)
    rows: list[ConversationTurn] = []
    cached = 0  # what the cache holds after the turn before (an entry through its breakpoint)
    total = total_uncached = 0.0
    for k in range(1, turns + 1):
        through = prefix + ((k - 1) * (new + out) if history else 0)  # the breakpoint's prefix
        read, written = cached, through - cached
        cost = _usd(rates, uncached=new, read=read, written=written, output=out, ttl=ttl)
        plain = _usd(rates, uncached=through + new, output=out)
        total += cost
        total_uncached += plain
        rows.append(
            ConversationTurn(
                k,
                read,
                written,
                new,
                out,
                cost,
                plain,
                plain - cost,
                total,
                total_uncached,
                total_uncached - total,
            )
        )
        cached = through
    return rows


# -- a month of traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """One kind of request in a traffic mix: ``requests_per_day`` of ``input_tokens`` (all of
    the input) with ``cached_tokens`` cacheable and ``output_tokens``; ``hit_rate`` of them read
    the cached part, the rest write it."""

    name: str
    requests_per_day: float
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    hit_rate: float
    ttl: str = "5m"

    def __post_init__(self) -> None:
        if (
            isinstance(self.requests_per_day, bool)
            or not isinstance(self.requests_per_day, (int, float))
            or not math.isfinite(self.requests_per_day)
            or self.requests_per_day < 0
        ):
            raise ValueError(f"requests_per_day must be a number >= 0, got {self.requests_per_day!r}")
        if (
            isinstance(self.hit_rate, bool)
            or not isinstance(self.hit_rate, (int, float))
            or not 0 <= self.hit_rate <= 1
        ):
            raise ValueError(f"hit_rate must be between 0 and 1, got {self.hit_rate!r}")
        _ttl(self.ttl)


@dataclass(frozen=True, slots=True)
class Projection:
    """A traffic mix over ``days``: cost with caching at the workloads' hit rates, without
    caching, and the saving, in all and per workload (``rows``: name, cost, uncached, saving)."""

    days: float
    cost: float
    cost_uncached: float
    rows: tuple[tuple[str, float, float, float], ...]

    @property
    def saving(self) -> float:
        return self.cost_uncached - self.cost

    def as_dict(self) -> dict[str, object]:
        return {
            "days": self.days,
            "cost": self.cost,
            "cost_uncached": self.cost_uncached,
            "saving": self.saving,
            "workloads": [
                {"name": n, "cost": c, "cost_uncached": u, "saving": s} for n, c, u, s in self.rows
            ],
        }


def monthly(rates: Rates, workloads: Workload | Sequence[Workload], *, days: float = 30) -> Projection:
    """The cost of a traffic mix over ``days`` (30: a month)."""
    mix = [workloads] if isinstance(workloads, Workload) else list(workloads)
    if not mix or not all(isinstance(w, Workload) for w in mix):
        raise ValueError("workloads must be one Workload or a non-empty list of them")
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0:
        raise ValueError(f"days must be a number > 0, got {days!r}")
    rows = []
    for w in mix:
        one = request_cost(rates, w.input_tokens, w.cached_tokens, w.output_tokens, ttl=w.ttl)
        n = w.requests_per_day * days
        cost = n * (w.hit_rate * one.warm + (1 - w.hit_rate) * one.cold)
        rows.append((w.name, cost, n * one.uncached, n * one.uncached - cost))
    return Projection(float(days), sum(r[1] for r in rows), sum(r[2] for r in rows), tuple(rows))


# -- a warmer -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarmerValue:
    """A warmer that reads a cached layer of ``tokens`` every ``interval_s`` (so it never
    expires), against the same traffic without it, per month (30 days), in USD.

    ``cost`` is the warmer's own calls; ``saving`` what the traffic no longer pays in writes;
    ``net`` = saving - cost (it pays when positive). ``hit_rate_without`` is the traffic's hit
    rate without the warmer."""

    tokens: int
    ttl: str
    interval_s: float
    calls_per_hour: float
    hit_rate_without: float
    cost: float
    saving: float

    @property
    def net(self) -> float:
        return self.saving - self.cost

    @property
    def pays(self) -> bool:
        return self.net > 0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "net": self.net, "pays": self.pays}


#: What one warm call sends beyond the cached layer (a one-word turn) and gets back.
WARM_INPUT_TOKENS = 8
WARM_OUTPUT_TOKENS = 1


def warmer_value(
    rates: Rates, tokens: int, *, calls_per_hour: float, interval_s: float, ttl: str = "5m"
) -> WarmerValue:
    """Whether a warmer every ``interval_s`` pays for a layer of ``tokens`` read by
    ``calls_per_hour`` calls (Poisson) with ``ttl``. The interval must be under the TTL."""
    tokens = _tokens("tokens", tokens)
    ttl = _ttl(ttl, rates)
    ttl_s = facts.ttl_seconds(ttl)
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not 0 < interval_s < ttl_s:
        raise ValueError(f"interval_s must be between 0 and the TTL ({ttl_s:.0f} s), got {interval_s!r}")
    if isinstance(calls_per_hour, bool) or not isinstance(calls_per_hour, (int, float)) or calls_per_hour < 0:
        raise ValueError(f"calls_per_hour must be a number >= 0, got {calls_per_hour!r}")
    rate = calls_per_hour / 3600.0
    live = live_probability(rate, ttl_s)
    calls = rate * _MONTH_S
    # Without a warmer a call writes the layer when it expired since the call before.
    premium = _usd(rates, written=tokens, ttl=ttl) - _usd(rates, read=tokens)
    saving = calls * (1.0 - live) * premium
    pings = _MONTH_S / interval_s
    ping = _usd(rates, uncached=WARM_INPUT_TOKENS, read=tokens, output=WARM_OUTPUT_TOKENS)
    return WarmerValue(tokens, ttl, float(interval_s), float(calls_per_hour), live, pings * ping, saving)
