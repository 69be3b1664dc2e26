"""Frozen value types shared by every module.

Nothing here does I/O or imports a provider SDK. The words are the README's: a *prompt* is a
sequence of *blocks* in cache order; a *breakpoint* is a block marked cacheable; a *prefix*
is everything from the start of the prompt through a breakpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Literal, NamedTuple

__all__ = [
    "Block",
    "CallMetrics",
    "ChangeKind",
    "Cost",
    "MissCause",
    "PrefixDiff",
    "PrefixKey",
    "Prompt",
    "Provider",
    "Regression",
    "Section",
    "Usage",
    "ValueType",
]

Section = Literal["tools", "system", "messages"]
MissCause = Literal[
    "cold",
    "ttl_expired",
    "below_minimum",
    "concurrent",
    "prefix_changed",
    "serialization_changed",
    "model_changed",
    "provider",
]
ChangeKind = Literal["content", "volatile", "reordered", "serialization"]
ValueType = Literal["timestamp", "date", "uuid", "hex_id", "number"]


class Provider(str, Enum):
    """The providers cachebench understands. Accepts its plain string value anywhere."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    BEDROCK = "bedrock"
    GEMINI = "gemini"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: Provider | str) -> Provider:
        """Return the member for ``value``; a ``ValueError`` naming the valid choices for an
        unknown name, a ``TypeError`` for what is not a name."""
        if isinstance(value, Provider):
            return value
        choices = ", ".join(repr(p.value) for p in cls)
        if not isinstance(value, str):
            raise TypeError(f"a provider is a name or a Provider member ({choices}), got {value!r}")
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown provider {value!r}: expected one of {choices} or a Provider member"
            ) from None


class Block(NamedTuple):
    """One cacheable unit of a prompt, in the provider's cache order.

    ``payload`` is the plain-JSON form of the block with its cache marker removed; it lives
    only while the call is fingerprinted and is never stored. ``ttl`` is set when the block
    carries a breakpoint: ``"5m"``/``"1h"`` for explicit markers, or the provider's retention
    for an implicit breakpoint.
    """

    section: Section
    index: int  # type: ignore[assignment]  # shadows tuple.index; Block is never used as a sequence
    payload: Any
    ttl: str | None = None


class Prompt(NamedTuple):
    """A request as the provider's cache sees it.

    ``pairs`` are the blocks in cache order as ``(section, payload)``: what is hashed, with
    the cache markers already removed. ``marks`` are the breakpoints as ``(position, ttl)``
    in order. ``turn_start`` is the position of the first block of the newest user turn
    (``len(pairs)`` when there is none); that turn never enters the ``prefix_id``.
    ``settings`` are request fields that invalidate the messages part of a cache entry
    without being a block (Anthropic ``tool_choice`` and ``thinking``); they are hashed
    just before the first message block.
    """

    provider: str
    model: str | None
    pairs: list[tuple[str, Any]]
    marks: list[tuple[int, str]]
    turn_start: int
    implicit: bool = False
    settings: Any = None

    @classmethod
    def of_blocks(
        cls,
        provider: str,
        model: str | None,
        blocks: Sequence[Block],
        turn_start: int,
        implicit: bool = False,
        settings: Any = None,
    ) -> Prompt:
        pairs: list[tuple[str, Any]] = [(b.section, b.payload) for b in blocks]
        marks = [(i, b.ttl) for i, b in enumerate(blocks) if b.ttl is not None]
        return cls(provider, model, pairs, marks, turn_start, implicit, settings)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The blocks with their index within their section and their breakpoint's TTL."""
        ttl = dict(self.marks)
        seen: dict[str, int] = {}
        out = []
        for i, (section, payload) in enumerate(self.pairs):
            n = seen.get(section, 0)
            seen[section] = n + 1
            out.append(Block(section, n, payload, ttl.get(i)))  # type: ignore[arg-type]
        return tuple(out)

    @property
    def breakpoints(self) -> tuple[int, ...]:
        return tuple([p for p, _ in self.marks])


class PrefixKey:
    """What fingerprinting learned about one prompt; no prompt text. Treat it as immutable.

    ``chain[i]`` is the hash of the prompt's canonical bytes through block ``i`` (bound to
    provider and model), the value a provider-side cache entry ending after block ``i``
    would be keyed by; ``cum[i]`` is how many canonical bytes that is. ``prefix_hash`` is the
    int whose 16-hex form is ``prefix_id``.

    Fingerprinting hashes the prompt a breakpoint at a time, so only the values at the
    breakpoints (``bp_hashes``, ``bp_bytes``) and at ``prefix_end`` are known at first; the
    per-block ``chain``, ``cum``, ``sizes`` and ``total_bytes`` are computed the first time
    they are asked for (:meth:`hash_at` asks only when the position is not known).
    """

    __slots__ = (
        "_fill",
        "_full",
        "_points",
        "_total",
        "bp_bytes",
        "bp_hashes",
        "breakpoint_ids",
        "breakpoints",
        "n_blocks",
        "prefix_end",
        "prefix_hash",
        "prefix_id",
        "ttls",
        "turn_start",
    )

    def __init__(
        self,
        prefix_id: str | None,
        prefix_hash: int | None,
        breakpoint_ids: tuple[str, ...],
        breakpoints: tuple[int, ...],
        ttls: tuple[str, ...],
        bp_hashes: tuple[int, ...],
        bp_bytes: tuple[int, ...],
        total_bytes: int,
        n_blocks: int,
        prefix_end: int,
        turn_start: int,
        points: dict[int, int] | None = None,
        fill: Callable[[], tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
        full: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    ) -> None:
        self.prefix_id = prefix_id
        self.prefix_hash = prefix_hash
        self.breakpoint_ids = breakpoint_ids
        self.breakpoints = breakpoints
        self.ttls = ttls
        self.bp_hashes = bp_hashes
        self.bp_bytes = bp_bytes
        self._total = total_bytes  # -1: not serialised yet (past the last breakpoint)
        self.n_blocks = n_blocks
        self.prefix_end = prefix_end
        self.turn_start = turn_start
        self._points = points  # block position -> chain value, where known without ``_full``
        self._fill = fill  # computes (chain, cum); dropped once used
        self._full = full

    def _materialize(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        full = self._full
        if full is None:
            fill = self._fill
            full = fill() if fill is not None else ((), ())
            self._full = full
            self._fill = None
        return full

    @property
    def chain(self) -> tuple[int, ...]:
        return self._materialize()[0]

    @property
    def cum(self) -> tuple[int, ...]:
        """Canonical bytes through each block."""
        return self._materialize()[1]

    @property
    def sizes(self) -> tuple[int, ...]:
        """Canonical bytes of each block."""
        cum = self.cum
        return tuple(c - p for c, p in zip(cum, (0, *cum[:-1]), strict=True))

    def hash_at(self, i: int) -> int:
        """``chain[i]``, without computing the whole chain when ``i`` is a known position."""
        full = self._full
        if full is None:
            points = self._points
            if points is not None:
                h = points.get(i)
                if h is not None:
                    return h
            full = self._materialize()
        return full[0][i]

    @property
    def total_bytes(self) -> int:
        """Canonical bytes of the whole prompt."""
        if self._total < 0:
            cum = self.cum
            self._total = cum[-1] if cum else 0
        return self._total

    @property
    def materialized(self) -> bool:
        return self._full is not None

    def _id(self) -> tuple[Any, ...]:
        return (self.prefix_id, self.breakpoint_ids, self.breakpoints, self.ttls, self.chain, self.cum,
                self.prefix_end, self.turn_start)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrefixKey):
            return NotImplemented
        return self._id() == other._id()

    def __hash__(self) -> int:
        return hash((self.prefix_hash, self.breakpoint_ids, self.n_blocks))

    def __repr__(self) -> str:
        return (
            f"PrefixKey(prefix_id={self.prefix_id!r}, breakpoint_ids={self.breakpoint_ids!r}, "
            f"breakpoints={self.breakpoints!r}, ttls={self.ttls!r}, n_blocks={self.n_blocks}, "
            f"total_bytes={self.total_bytes}, prefix_end={self.prefix_end}, turn_start={self.turn_start})"
        )


class Usage(NamedTuple):
    """Token counts normalised across providers (an immutable named tuple).

    ``input_tokens`` is uncached input only (billed at the base rate). ``cache_write_tokens``
    counts every write; ``cache_write_1h_tokens`` is the part of it written with a 1 h TTL.
    ``writes_reported`` says whether the provider reports cache writes at all (Anthropic,
    Bedrock and OpenAI GPT-5.6+ do; older OpenAI models and Gemini do not).
    ``known`` is False when the response carried no usage (an OpenAI stream without
    ``include_usage``): the counts are then unknown, not zero.
    """

    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    known: bool = True
    writes_reported: bool = True
    ttl_split_reported: bool = False
    model: str | None = None
    diagnostics: dict[str, Any] | None = None

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens


UNKNOWN_USAGE = Usage(known=False, writes_reported=False)


class Cost(NamedTuple):
    """Money for one call, in USD (an immutable named tuple). ``None`` everywhere when the
    model is not priced.

    ``unpriced`` is True when the model is unknown or its price list lacks a rate the call
    needs (cache tokens are never charged at $0 by omission).
    """

    cost_usd: float | None
    cost_without_cache_usd: float | None
    cost_saved_usd: float | None
    unpriced: bool = False


UNPRICED = Cost(None, None, None, True)


@dataclass(frozen=True, slots=True)
class CallMetrics:
    """Everything cachebench recorded about one call.

    Token fields follow :class:`Usage`. ``expected_read_tokens`` is what the call should have
    read given the cache entries the tracker saw written or read within their TTL;
    ``unexpected_miss`` is True when it read less. ``miss_cause`` names why the part of the
    prefix through the last breakpoint that was not read was not read (``None`` when all was
    read or nothing was cacheable). ``diff`` says where the prompt differs from the flow's
    nearest earlier one (for ``prefix_changed`` and ``serialization_changed``).
    ``avoidable_tokens`` are what the call did not read only because of an avoidable miss (a
    volatile value, a re-ordering, a re-serialisation, churn, a concurrent twin, the
    provider), and ``avoidable_cost_usd`` what that cost beyond reading them (0.0 when
    nothing was avoidable, ``None`` when the call is unpriced). ``warm``: a call a
    :class:`~cachebench.economics.CacheWarmer` made to keep a prefix cached.
    """

    provider: str
    model: str | None
    flow: str
    prefix_id: str | None
    breakpoint_ids: tuple[str, ...]
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    elapsed_ms: float | None
    timestamp: float
    cost_usd: float | None
    cost_without_cache_usd: float | None
    cost_saved_usd: float | None
    expected_read_tokens: int = 0
    unexpected_miss: bool = False
    miss_cause: MissCause | None = None
    usage_known: bool = True
    held_ms: float = 0.0
    diagnostics: dict[str, Any] | None = None
    error: str | None = None
    writes_reported: bool = True
    unpriced: bool = False
    stream: bool = False
    diff: PrefixDiff | None = None
    avoidable_cost_usd: float | None = 0.0
    avoidable_tokens: int = 0
    warm: bool = False

    @property
    def cache_creation_tokens(self) -> int:
        """Alias of ``cache_write_tokens`` in Anthropic's own words."""
        return self.cache_write_tokens

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def cacheable_tokens(self) -> int:
        """The denominator of :attr:`hit_ratio`.

        Where the provider reports writes: what was read plus what was written. Where it
        does not: the tokens the call was expected to read (a cold first call expects
        nothing and so is not a miss).
        """
        if not self.usage_known:
            return 0
        if self.writes_reported:
            return self.cache_read_tokens + self.cache_write_tokens
        return self.expected_read_tokens

    @property
    def hit_tokens(self) -> int:
        """The numerator of :attr:`hit_ratio` (reads beyond the expectation count as a full hit)."""
        return min(self.cache_read_tokens, self.cacheable_tokens)

    @property
    def hit_ratio(self) -> float | None:
        """``hit_tokens / cacheable_tokens``; ``None`` when nothing was cacheable or the usage
        is unknown (never NaN)."""
        den = self.cacheable_tokens
        return self.hit_tokens / den if den else None

    @property
    def token_hit_ratio(self) -> float | None:
        """Cache reads over all input tokens; ``None`` when there were none or the usage is
        unknown (never NaN)."""
        total = self.total_input_tokens
        return self.cache_read_tokens / total if self.usage_known and total else None

    def as_dict(self) -> dict[str, Any]:
        """Every field by name, plus ``hit_ratio`` and ``token_hit_ratio``: plain JSON values
        (lists, no NaN or infinity: those are ``None``), so ``json.dumps(m.as_dict(),
        allow_nan=False)`` works."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "diff"}
        out["diff"] = self.diff.as_dict() if self.diff is not None else None
        out["hit_ratio"] = self.hit_ratio
        out["token_hit_ratio"] = self.token_hit_ratio
        return out

    def __str__(self) -> str:
        """One line: which call, when, its prefix, the tokens, the hit ratio, the money, and
        the miss if there was one."""
        parts = [
            f"{self.provider} {self.model or '(model unknown)'} call in flow {self.flow!r} "
            f"at {_utc(self.timestamp)}, "
            + (f"prefix {self.prefix_id}" if self.prefix_id is not None else "no cache breakpoint")
        ]
        if self.error is not None:
            parts.append(f"failed: {self.error}")
        if self.usage_known:
            expected = f" (expected {self.expected_read_tokens:,})" if self.expected_read_tokens else ""
            parts.append(
                f"read {self.cache_read_tokens:,}{expected}, wrote {self.cache_write_tokens:,}, "
                f"uncached {self.input_tokens:,} input tokens, {self.output_tokens:,} output"
            )
            parts.append(f"hit ratio {_pct(self.hit_ratio)}")
        else:
            parts.append("usage not reported")
        if self.cost_usd is None:
            parts.append("unpriced" if self.unpriced or self.usage_known else "cost unknown")
        else:
            saved = f", saved {_usd(self.cost_saved_usd)}" if self.cost_saved_usd is not None else ""
            parts.append(f"cost {_usd(self.cost_usd)}{saved}")
        if self.elapsed_ms is not None and math.isfinite(self.elapsed_ms):
            parts.append(f"{self.elapsed_ms:,.0f} ms")
        if self.held_ms:
            parts.append(f"held {self.held_ms:,.0f} ms")
        if self.miss_cause is not None:
            from .advice import explain  # (imports this module)

            parts.append(("unexpected miss. " if self.unexpected_miss else "") + explain(self))
        elif self.unexpected_miss:
            parts.append("unexpected miss (cause unknown)")
        return _one_line("; ".join(parts))


@dataclass(frozen=True, slots=True)
class PrefixDiff:
    """Where two prefixes first differ, located from block digests (no prompt text).

    ``byte_start``/``byte_end`` are offsets inside the block's canonical bytes (the value's
    own bytes for a volatile value). ``kind``: ``volatile`` (only a value such as a timestamp
    or an id changed; ``value_type`` names it), ``reordered`` (the same blocks in another
    order), ``serialization`` (the same content rendered differently: key order, JSON inside
    the text, whitespace) or ``content``. ``before``/``after`` are short redacted excerpts,
    present only with ``capture_text=True``.
    """

    section: str
    block_index: int
    position: int
    byte_start: int
    byte_end: int
    kind: ChangeKind = "content"
    before: str | None = None
    after: str | None = None
    value_type: ValueType | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (plain JSON values)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def __str__(self) -> str:
        what = {
            "volatile": f"a {(self.value_type or 'volatile value').replace('_', ' ')} changed",
            "reordered": "blocks re-ordered",
            "serialization": "re-serialised (same content)",
        }.get(self.kind, "content changed")
        return f"{self.section} block {self.block_index}, bytes {self.byte_start}-{self.byte_end}: {what}"


@dataclass(frozen=True, slots=True)
class Regression:
    """One incident on one flow: a hit-ratio drop or prefix churn.

    ``started_at`` is when the first affected call was made, ``detected_at`` when the tracker
    opened the incident (``None`` where it was not recorded), ``closed_at`` when the flow
    recovered (``None`` while open). Hit ratios the incident has no calls for are ``None``,
    never NaN. ``details``: for prefix churn, ``layer`` (the changed layer's index) and, where
    the two prompts' prints were at hand, ``blocks``: the changed layer's blocks ``before`` and
    ``after``, each ``[section, index in its section, position in the prompt, bytes]`` (no
    text; at most 64 a side, then ``["...", blocks left out, -1, their bytes]``); ``evicted``
    when its flow was no longer watched.
    """

    flow: str
    kind: Literal["hit_ratio_drop", "prefix_churn"]
    started_at: float
    hit_ratio_before: float | None
    hit_ratio_after: float | None
    calls_affected: int
    extra_cost_per_hour_usd: float | None
    diff: PrefixDiff | None = None
    closed_at: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    detected_at: float | None = None

    def __post_init__(self) -> None:
        # A ratio over no calls arrives as NaN (0/0): it is shown as None.
        for name in ("hit_ratio_before", "hit_ratio_after", "extra_cost_per_hour_usd"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                object.__setattr__(self, name, None)

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (``diff`` as its own dict), plus ``open``: plain JSON values,
        so ``json.dumps(r.as_dict(), allow_nan=False)`` works."""
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "diff"}
        out["diff"] = self.diff.as_dict() if self.diff is not None else None
        out["open"] = self.open
        return out

    def __str__(self) -> str:
        """One line: what, where, when it started and when it was detected, the damage, and
        whether it is open."""
        from .advice import incident_advice  # (imports this module)

        why, fix = incident_advice(self)
        if self.diff is not None:
            where = f": {self.diff}"
        elif self.kind == "hit_ratio_drop":
            where = ": the prompt did not change"
        else:
            where = ": changed block not located"
        detected = _utc(self.detected_at) if self.detected_at is not None else "(time not recorded)"
        extra = self.extra_cost_per_hour_usd
        cost = f"{_usd(extra, sign=True)} an hour" if extra is not None else "extra cost unpriced"
        if self.open:
            state = "open"
        else:
            state = f"closed {_utc(self.closed_at or 0.0)}"
            if self.details.get("evicted"):
                state += " (flow no longer tracked)"
        return _one_line(
            f"{self.kind.replace('_', ' ')} in flow {self.flow!r}{where}; "
            f"started {_utc(self.started_at)}, detected {detected}; "
            f"read {_pct(self.hit_ratio_before)} -> {_pct(self.hit_ratio_after)} of what could be read "
            f"over {self.calls_affected:,} calls, {cost}; {state}. Why: {why}. Fix: {fix}."
        )


# -- plain output ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: tuples as lists, NaN and infinities as ``None``, anything
    else that JSON cannot hold as its ``str``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _utc(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts!r} (not a time)"


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.0%}"


def _usd(x: float, *, sign: bool = False) -> str:
    """Dollars: to the cent from $1, else to a millionth (one call costs fractions of a cent)."""
    if not math.isfinite(x):
        return "n/a"
    size = abs(x)
    digits = 2 if size >= 1 else 6
    if round(size, digits) == 0:
        return "$0.00"  # no sign on what rounds to nothing
    text = f"${size:,.{digits}f}"
    return f"-{text}" if x < 0 else f"+{text}" if sign else text


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
