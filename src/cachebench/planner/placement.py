"""Breakpoint plans: where a flow's prompt changes hands (shared by all, by a user, by a
session), and the breakpoints that save the most there.

:func:`plan` reads one or more sample requests of a flow. It finds the *layers* of one
sample (the one with the longest conversation, the first of equals): runs of blocks shared by the same samples (a prefix ends at the first block that
differs, so the share can only fall along the prompt), plus the conversation before the
newest turn and the whole prompt. Candidate breakpoints are the last markable block of each
layer. Every placement of at most the provider's number of breakpoints over the candidates,
each with each TTL the provider offers, is scored and the best kept:

* without ``traffic``, the samples are the traffic: they are replayed, in order, a second
  apart, through :class:`cachebench.cachemodel.CacheModel` (the emulator's cache) with the
  breakpoints set, and the score is what they save. The plan says, per sample, what it would
  read and write; the emulator serves the applied requests the same.
* with :class:`Traffic`, each breakpoint's entry is read by the calls that share its prefix:
  ``calls_per_hour`` for a layer all samples share, divided by ``users`` for one that only
  some share, and the next turn of a session (``turns_per_session``) for the conversation
  (and, for a conversation that other samples start the same way, their calls too).
  Arrivals are taken as Poisson: an entry with TTL ``T`` hit at rate ``λ`` is found live with
  probability ``1 - exp(-λT)`` and read ``exp(λT) - 1`` times per write. The score is the
  expected saving per hour.

Money uses the model's prices when genai-prices knows them, else the usual multiples of the
input price (cache reads 0.1x, 5-minute and 30-minute writes 1.25x, 1-hour writes 2x); the
plan says which. :func:`apply` sets a plan's markers on a request (a new request; the input
is never changed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from .. import facts
from ..cachemodel import CacheModel, CacheRequest, Segment
from ..economics._cost import live_probability
from ..economics._rates import Rates
from ..fingerprint import ordered
from ..types import Provider
from ._markers import set_breakpoints
from ._view import RequestView, max_breakpoints, view

__all__ = ["Layer", "Plan", "PlannedBreakpoint", "Traffic", "apply", "evaluate", "plan"]

_SAMPLE_SPACING_S = 1.0
_PLAN_TIME = 1_800_000_000.0  # an arbitrary fixed instant: plans never depend on the clock


@dataclass(frozen=True, slots=True)
class Traffic:
    """How a flow is called: ``calls_per_hour`` in all; ``users`` among whom the calls are
    spread (a layer only some samples share is one user's); ``turns_per_session`` of a
    conversation (each turn reads what the previous one wrote)."""

    calls_per_hour: float
    users: int | None = None
    turns_per_session: float | None = None

    def __post_init__(self) -> None:
        if not (
            isinstance(self.calls_per_hour, (int, float))
            and math.isfinite(self.calls_per_hour)
            and self.calls_per_hour > 0
        ):
            raise ValueError(f"calls_per_hour must be a positive number, got {self.calls_per_hour!r}")
        if self.users is not None and (not isinstance(self.users, int) or self.users < 1):
            raise ValueError(f"users must be a positive whole number or None, got {self.users!r}")
        if self.turns_per_session is not None and not (
            isinstance(self.turns_per_session, (int, float)) and self.turns_per_session >= 1
        ):
            raise ValueError(f"turns_per_session must be 1 or more, or None, got {self.turns_per_session!r}")


@dataclass(frozen=True, slots=True)
class Layer:
    """A run of blocks ``[start, end]`` of the sample the plan is laid out on (the one with
    the longest conversation), shared by ``shared_by`` samples."""

    start: int
    end: int
    tokens: int  # of the layer itself
    shared_by: int
    samples: int
    kind: str  # "shared" (all samples) | "partly shared" | "unique" | "conversation" | "newest turn"


@dataclass(frozen=True, slots=True)
class PlannedBreakpoint:
    """One breakpoint: where (``section`` and ``index`` within it, or ``section="turn"`` for
    the last block before the newest user turn), its TTL, and why."""

    section: str
    index: int
    ttl: str
    position: int  # in the sample the plan is laid out on (the longest conversation)
    tokens: int  # prefix tokens through it, in that sample
    shared_by: int  # samples sharing the prefix through it
    reads_per_write: float
    why: str

    def __str__(self) -> str:
        where = {
            "turn": "the end of the conversation before the newest turn",
            "last": "the last block (the newest turn)",
        }.get(self.section, f"{self.section} block {self.index}")
        return f"{where} ({self.ttl}): {self.why}"


@dataclass(frozen=True)
class Plan:
    """Where to put a flow's breakpoints, what that saves, and why. :meth:`apply` sets them."""

    provider: str
    model: str | None
    breakpoints: tuple[PlannedBreakpoint, ...]
    layers: tuple[Layer, ...]
    saving: float  # per call (no traffic) or per hour (traffic), in ``unit``
    unit: str  # "USD" or "input-token equivalents"
    per_hour: bool
    reads: tuple[int, ...] = ()  # without traffic: what each sample reads, in order
    writes: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def apply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return apply(request, self)

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain JSON (breakpoints and layers as dicts; an unbounded reads-per-write
        as ``None``)."""
        out = asdict(self)
        for bp in out["breakpoints"]:
            if not math.isfinite(bp["reads_per_write"]):
                bp["reads_per_write"] = None
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def __str__(self) -> str:
        rate = "an hour" if self.per_hour else "a call"
        amount = (
            f"${self.saving:,.6f}" if self.unit == "USD" else f"{self.saving:,.0f} input-token equivalents"
        )
        head = f"{self.provider} {self.model}: "
        if self.breakpoints:
            head += f"{len(self.breakpoints)} breakpoint(s), saves {amount} {rate}"
        else:
            head += "no breakpoint to place"
        lines = [head]
        lines += [f"  - {bp}" for bp in self.breakpoints]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- anchors ----------------------------------------------------------------------------------


def _anchor(v: RequestView, p: int) -> tuple[str, int]:
    """Where block ``p`` is, in words that hold for every request of the flow: a block of the
    tools or system (or a leading message) by its index, the conversation's end before the
    newest turn as ``("turn", -1)``, the newest turn's last block as ``("last", -1)``."""
    b = v.blocks[p]
    if b.section == "messages" and p == v.turn_start - 1:
        return "turn", -1
    if p == len(v.blocks) - 1 and p >= v.turn_start:
        return "last", -1
    return b.section, b.index


def _resolve(v: RequestView, section: str, index: int) -> int | None:
    if section == "turn":
        p = v.turn_start - 1
        return p if p >= 0 and v.blocks[p].section == "messages" else None
    if section == "last":
        return len(v.blocks) - 1 if v.blocks else None
    for b in v.blocks:
        if b.section == section and b.index == index:
            return b.position
    return None


def _marks_for(v: RequestView, anchors: Sequence[tuple[str, int, str]]) -> dict[int, str]:
    """The anchors' positions in ``v`` with their TTLs; where anchors land in another order than
    the plan's, a later breakpoint never gets a longer TTL than an earlier one (the provider
    refuses that)."""
    found: dict[int, str] = {}
    for section, index, ttl in anchors:
        p = _resolve(v, section, index)
        if p is not None and v.blocks[p].markable:
            found.setdefault(p, ttl)
    order = facts.BREAKPOINT_TTLS.get(v.provider, ())  # longest first
    marks: dict[int, str] = {}
    floor = 0
    for p in sorted(found):
        rank = max(order.index(found[p]) if found[p] in order else 0, floor)
        floor = rank
        marks[p] = order[rank] if order else found[p]
    return marks


# -- layers -----------------------------------------------------------------------------------


def _representative(views: Sequence[RequestView]) -> RequestView:
    """The sample the plan is laid out on: the one with the longest conversation before its
    newest turn (the last turn of a session shows every layer), the first of equals."""
    return max(views, key=lambda v: v.turn_start)


def _layers(views: Sequence[RequestView]) -> list[Layer]:
    first = _representative(views)
    chains = [v.key().chain for v in views]
    mine = first.key().chain
    n = len(first.blocks)
    if not n:
        return []  # (nothing to cache: no layer)
    shared = [sum(1 for c in chains if p < len(c) and c[p] == mine[p]) for p in range(n)]
    cuts = {p for p in range(n - 1) if shared[p] != shared[p + 1]}
    if first.turn_start > 0:
        cuts.add(first.turn_start - 1)
    cuts.add(n - 1)
    out = []
    start = 0
    for end in sorted(cuts):
        tokens = first.cum_tokens[end] - (first.cum_tokens[start - 1] if start else 0)
        if start >= first.turn_start:
            kind = "newest turn"
        elif shared[end] == len(views):
            kind = "shared"
        elif shared[end] > 1:
            kind = "partly shared"
        elif first.blocks[end].section == "messages":
            kind = "conversation"
        else:
            kind = "unique"
        out.append(Layer(start, end, tokens, shared[end], len(views), kind))
        start = end + 1
    return out


def _candidates(first: RequestView, layers: Sequence[Layer], conversation_start: int) -> list[int]:
    """The last markable block of each layer. Inside the conversation (from the earliest
    newest turn among the samples on), only the end before the newest turn and the last block:
    a message index there would fit the samples and miss the next turn."""
    out = []
    for layer in layers:
        for p in range(layer.end, layer.start - 1, -1):
            if first.blocks[p].markable:
                if p < conversation_start or _anchor(first, p)[0] in ("turn", "last"):
                    out.append(p)
                break
    for p in (first.turn_start - 1, len(first.blocks) - 1):
        if p >= 0 and first.blocks[p].markable and p not in out and _anchor(first, p)[0] in ("turn", "last"):
            out.append(p)
    return sorted(out)


# -- scoring ----------------------------------------------------------------------------------


class _Prices:
    """What input tokens cost for the plan's model, from :class:`~cachebench.economics.Rates`:
    USD from genai-prices where it has them (a TTL whose write price it lacks, such as OpenAI's
    12 h, at the provider's usual multiple of the input price), else input-token equivalents
    (:meth:`~cachebench.economics.Rates.relative`). One unit per plan."""

    def __init__(self, provider: str, model: str | None) -> None:
        rates = None
        if model:
            try:
                rates = Rates.for_model(model, provider, when=_PLAN_TIME)
            except ValueError:
                rates = None
        self.priced = rates is not None
        self.rates = rates if rates is not None else Rates.relative(provider, model)

    def cost(self, uncached: float, read: float, writes: Mapping[str, float]) -> float:
        r = self.rates
        return (
            uncached * r.input + read * r.cache_read + sum(r.write(t) * n for t, n in writes.items())
        ) / 1_000_000


def _segments(v: RequestView, marks: Mapping[int, str]) -> tuple[Segment, ...]:
    return tuple(
        Segment(
            xxhash.xxh3_128_digest(ordered([b.section, b.payload])),
            b.tokens,
            marks.get(b.position),
            b.kind if b.kind in facts.LOOKBACK_RUN_KINDS else "",
        )
        for b in v.blocks
    )


def _replay(
    views: Sequence[RequestView], anchors: Sequence[tuple[str, int, str]], prices: _Prices
) -> tuple[float, list[int], list[int]]:
    """Replay the samples with these breakpoints: the total saving, and each sample's reads
    and writes."""
    model = CacheModel(clock=lambda: _PLAN_TIME)
    saving = 0.0
    reads, writes = [], []
    for i, v in enumerate(views):
        marks = _marks_for(v, anchors)
        request = CacheRequest(
            family=v.provider,
            model=v.model or "",
            scope="plan",
            segments=_segments(v, marks),
            implicit_end=facts.openai_implicit_end(v.model, v.turn_start, len(v.blocks))
            if v.provider == "openai"
            else None,
            explicit=v.provider == "openai" and facts.explicit_caching(v.model),
        )
        result = model.handle(request, now=_PLAN_TIME + i * _SAMPLE_SPACING_S)
        total = result.total_input_tokens
        by_ttl = dict(result.cache_write_by_ttl) if result.writes_reported else {}
        paid = prices.cost(result.input_tokens, result.cache_read_tokens, by_ttl)
        saving += prices.cost(total, 0, {}) - paid
        reads.append(result.cache_read_tokens)
        writes.append(result.cache_write_tokens)
    return saving, reads, writes


def _expected(
    first: RequestView,
    layers: Sequence[Layer],
    placed: Sequence[tuple[int, str]],
    traffic: Traffic,
    prices: _Prices,
) -> tuple[float, list[float]]:
    """Expected saving per hour of these breakpoints (positions in the first sample), and each
    one's reads per write."""
    rate_s = traffic.calls_per_hour / 3600.0
    layer_of = {p: layer for layer in layers for p in range(layer.start, layer.end + 1)}
    live: list[float] = []
    per_write: list[float] = []
    for p, ttl in placed:
        layer = layer_of[p]
        share = layer.shared_by / layer.samples
        if share < 1 and traffic.users:
            share = 1.0 / traffic.users
        shared = live_probability(rate_s * share, facts.ttl_seconds(ttl))  # (the economics' traffic model)
        if layer.kind in ("conversation", "newest turn") or _anchor(first, p)[0] == "turn":
            turns = traffic.turns_per_session or 1.0
            q = (turns - 1.0) / turns  # the session's next turn reads it
            if layer.shared_by > 1:  # and the calls of others that start the same (a user's history)
                q = 1.0 - (1.0 - q) * (1.0 - shared)
        else:
            q = shared
        if first.cum_tokens[p] < first.minimum:
            q = 0.0
        q = min([q, *live])  # a deeper prefix is never found live more often than a shallower one
        live.append(q)
        per_write.append(q / (1.0 - q) if q < 1.0 else math.inf)
    qualifying = [(p, ttl) for p, ttl in placed if first.cum_tokens[p] >= first.minimum]
    if not qualifying:
        return 0.0, per_write
    read = 0.0
    for j, (p, _) in enumerate(placed):
        deeper = live[j + 1] if j + 1 < len(live) else 0.0
        read += (live[j] - deeper) * first.cum_tokens[p]
    writes: dict[str, float] = {}
    start = read
    for p, ttl in qualifying:
        span = max(0.0, first.cum_tokens[p] - start)
        writes[ttl] = writes.get(ttl, 0.0) + span
        start = max(start, first.cum_tokens[p])
    last = first.cum_tokens[qualifying[-1][0]]
    saving = prices.cost(last, 0, {}) - prices.cost(0, read, writes)  # per call
    return saving * traffic.calls_per_hour, per_write


def _score(
    views: Sequence[RequestView],
    layers: Sequence[Layer],
    prices: _Prices,
    placed: Sequence[tuple[int, str]],
    traffic: Traffic | None,
) -> float:
    rep = _representative(views)
    if traffic is not None:
        return _expected(rep, layers, placed, traffic, prices)[0]
    anchors = [(*_anchor(rep, p), ttl) for p, ttl in placed]
    return _replay(views, anchors, prices)[0] / len(views)


def evaluate(
    requests: Sequence[Mapping[str, Any]],
    breakpoints: Sequence[tuple[int, str]],
    traffic: Traffic | None = None,
    *,
    provider: Provider | str | None = None,
    model: str | None = None,
) -> float:
    """The saving of breakpoints at these positions (``(position, ttl)``) of the request
    :func:`plan` lays its plan out on (the one with the longest conversation, the first of equals),
    scored as :func:`plan` scores them: what a brute-force search checks a plan against."""
    views = [view(r, provider, model) for r in requests]
    return _score(
        views, _layers(views), _Prices(views[0].provider, views[0].model), sorted(breakpoints), traffic
    )


# -- the search -------------------------------------------------------------------------------


def _ttl_choices(provider: str, k: int) -> list[tuple[str, ...]]:
    """TTL assignments for ``k`` breakpoints, longer TTLs first (a 1h after a 5m is refused)."""
    ttls = facts.BREAKPOINT_TTLS[provider]  # longest first
    return [c for c in itertools.product(ttls, repeat=k) if list(c) == sorted(c, key=ttls.index)]


def plan(
    requests: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    traffic: Traffic | None = None,
    *,
    provider: Provider | str | None = None,
    model: str | None = None,
) -> Plan:
    """Where to put a flow's breakpoints, from sample requests (and how it is called).

    ``requests``: one request body or several of one flow (of different users, sessions or
    turns; in the order they would be sent). ``traffic``: a :class:`Traffic` to score expected
    savings per hour instead of replaying the samples. Raises ``ValueError`` for no requests,
    requests of different providers or models, or a request whose provider cannot be told.
    """
    samples = [requests] if isinstance(requests, Mapping) else list(requests)
    if not samples:
        raise ValueError("plan() needs at least one sample request")
    views = [view(r, provider, model) for r in samples]
    first = _representative(views)
    if len({(v.provider, v.model) for v in views}) != 1:
        raise ValueError("plan() takes samples of one flow: the requests name different providers or models")
    if first.model is None:
        raise ValueError("the requests name no model (Gemini bodies do not): pass model=")
    layers = _layers(views)
    prices = _Prices(first.provider, first.model)
    unit = "USD" if prices.priced else "input-token equivalents"
    limit = max_breakpoints(first.provider)
    notes: list[str] = []
    if not prices.priced:
        notes.append(f"{first.model or 'the model'} is not priced: savings are in input-token equivalents")
    candidates = _candidates(first, layers, min(v.turn_start for v in views))
    if first.provider == "gemini" or (first.provider == "openai" and not facts.explicit_caching(first.model)):
        notes.append(
            "this model caches implicitly: no markers to place. Keep the shared layers first and "
            "the per-user and per-call content last"
            + (
                "; send one prompt_cache_key per flow so calls reach the same cache"
                if first.provider == "openai"
                else ""
            )
        )
        candidates, limit = [], 0
    best: tuple[float, tuple[tuple[int, str], ...]] = (0.0, ())
    for k in range(1, min(limit, len(candidates)) + 1):
        for positions in itertools.combinations(candidates, k):
            for ttls in _ttl_choices(first.provider, k):
                placed = tuple(zip(positions, ttls, strict=True))
                score = _score(views, layers, prices, placed, traffic)
                if score > best[0] + 1e-12:
                    best = (score, placed)
    saving, placed = best
    per_write: list[float] = []
    reads: list[int] = []
    writes: list[int] = []
    if traffic is not None:
        per_write = _expected(first, layers, list(placed), traffic, prices)[1]
    else:
        anchors = [(*_anchor(first, p), ttl) for p, ttl in placed]
        _, reads, writes = _replay(views, anchors, prices)
        per_write = _reads_per_write(views, anchors, reads)
    layer_of = {p: layer for layer in layers for p in range(layer.start, layer.end + 1)}
    planned = []
    for j, (p, ttl) in enumerate(placed):
        layer = layer_of[p]
        section, index = _anchor(first, p)
        rpw = per_write[j] if j < len(per_write) else 0.0
        planned.append(
            PlannedBreakpoint(
                section,
                index,
                ttl,
                p,
                first.cum_tokens[p],
                layer.shared_by,
                rpw,
                _why(layer, first.cum_tokens[p], rpw, traffic),
            )
        )
    if not placed and limit:
        notes.append("no breakpoint saves money on these samples")
    return Plan(
        first.provider,
        first.model,
        tuple(planned),
        tuple(layers),
        saving,
        unit,
        traffic is not None,
        tuple(reads),
        tuple(writes),
        tuple(notes),
    )


def _reads_per_write(
    views: Sequence[RequestView], anchors: Sequence[tuple[str, int, str]], reads: Sequence[int]
) -> list[float]:
    """Per breakpoint, in the replay: how often an entry it made was read, over how many it
    made. A read is the entry whose prefix ends where the read ends (found through the lookback
    too: the next turn reads the entry the previous turn's last block made)."""
    owner: dict[int, int] = {}  # a prefix's hash -> the breakpoint whose entry it is
    made = [0] * len(anchors)
    read_back = [0] * len(anchors)
    for v, read in zip(views, reads, strict=True):
        chain = v.key().chain
        if read:
            ends = [q for q, tokens in enumerate(v.cum_tokens) if tokens == read]
            j = owner.get(chain[ends[-1]]) if ends else None
            if j is not None:
                read_back[j] += 1
        marks = _marks_for(v, anchors)
        for j, (section, index, _) in enumerate(anchors):
            q = _resolve(v, section, index)
            if q is not None and q in marks and chain[q] not in owner:
                owner[chain[q]] = j
                made[j] += 1
    return [r / m if m else 0.0 for m, r in zip(made, read_back, strict=True)]


def _why(layer: Layer, tokens: int, reads_per_write: float, traffic: Traffic | None) -> str:
    who = {
        "shared": f"shared by all {layer.samples} samples",
        "partly shared": f"shared by {layer.shared_by} of {layer.samples} samples",
        "unique": "one sample's own",
        "conversation": "the conversation so far",
        "newest turn": "the newest turn",
    }[layer.kind]
    rpw = (
        "over 1,000 expected reads per write"
        if reads_per_write > 1000
        else (
            f"{reads_per_write:.1f} expected reads per write"
            if traffic
            else f"{reads_per_write:.1f} reads per write"
        )
    )
    return f"{tokens:,} tokens through it, {who}; {rpw}"


def apply(request: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    """A copy of ``request`` with the plan's breakpoints as its only cache markers, in the
    provider's own syntax. Breakpoints whose block the request lacks are left out; ``request``
    is never changed. Raises ``ValueError`` for a request of another provider than the plan's."""
    v = view(request, plan.provider, plan.model)
    if v.provider != plan.provider:
        raise ValueError(f"this plan is for {plan.provider} requests, not {v.provider}")
    if not plan.breakpoints and (
        plan.provider == "gemini" or not v.blocks or not any(b.markable for b in v.blocks)
    ):
        return set_breakpoints(request, v.provider, {})
    marks = _marks_for(v, [(bp.section, bp.index, bp.ttl) for bp in plan.breakpoints])
    return set_breakpoints(request, v.provider, marks)
