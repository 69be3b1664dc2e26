"""Provider prompt-cache semantics as a pure, deterministic state machine.

A :class:`CacheModel` holds what a provider's cache would hold and answers, for one request
(a :class:`CacheRequest`: the prompt as :class:`Segment` blocks in cache order), how many
tokens it reads, writes and pays as plain input (a :class:`CacheResult`). No I/O, no asyncio,
one lock, the clock injected: the emulator is built on it.

Protocol: :meth:`CacheModel.begin` when the request arrives (validates, computes the counts,
refreshes what it read, records its new entries as *pending*); :meth:`CacheModel.started`
when the response starts (the entries become readable, so parallel cold calls all write);
:meth:`CacheModel.abort` when it fails first. :meth:`CacheModel.handle` does both at once.

Entries are keyed by the chained hash of the segment digests, seeded with (family, model,
scope, routing key): caches never cross API keys, models or providers. An entry is alive
while ``now <= expires``; reads push ``expires`` to ``now + ttl`` (capped by a hard deadline
for OpenAI in-memory retention). Memory is bounded by an LRU over ``max_entries`` entries.

Rules per family (from the providers' caching guides; the numbers are in
:mod:`cachebench.facts`, the logic that applies them in :mod:`._rules`):

* ``anthropic``, ``bedrock`` (Claude): breakpoints are segments with a ttl, plus the last
  segment for top-level automatic caching (Anthropic API only). More than 4, an unknown ttl
  or a 1h breakpoint after a 5m one raise :class:`CacheRuleError`. Each breakpoint whose
  prefix reaches the model's minimum finds the longest live entry at itself or at a block
  boundary up to 20 positions before it (a run of tool_use/tool_result blocks is one
  position). Read = the longest such hit; writes = from that hit to the last breakpoint,
  each range billed at the ttl of the breakpoint that covers it; entries are created at
  every qualifying breakpoint.
* ``openai`` (before GPT-5.6): the whole prompt through ``implicit_end`` is cached, with
  entries at every segment boundary; a read counts from 1024 tokens and is rounded down to
  1024 + 128k; writes are free and not reported. In-memory retention: 10 min idle, 1 h at
  most; ``24h``: 24 h.
* ``openai`` with ``explicit=True`` (GPT-5.6+): breakpoints from ttl ``30m`` / ``12h`` plus an
  implicit one at ``implicit_end``; reads at any earlier boundary, exact; at most 4 entries
  written per request (the longest), a breakpoint inside what was read getting one when it has
  none (as the tracker expects); writes reported.
* ``gemini``: implicit, like OpenAI without rounding; minimum 2048 (2.5) / 4096 (3.x); an
  implicit entry lives 5 min idle (Google does not document it; our assumption); writes not
  reported.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson
import xxhash

from ..facts import LOOKBACK, OPENAI_MAX_WRITES, OPENAI_READ_STEP, ttl_seconds
from ._rules import (
    FOREVER,
    CacheRuleError,
    breakpoints,
    check_knobs,
    implicit_ttl,
    lookback_positions,
    min_tokens,
)

__all__ = [
    "MAX_MISS_GENERATORS",
    "CacheModel",
    "CacheRequest",
    "CacheResult",
    "CacheRuleError",
    "Knobs",
    "Segment",
]

# ``miss_rate`` draws: generators kept for this many API keys at most (about 3 KB each).
MAX_MISS_GENERATORS = 1024


@dataclass(frozen=True, slots=True)
class Segment:
    """One block of the prompt, in cache order."""

    digest: bytes  # order-sensitive hash of the block's rendered bytes
    tokens: int
    ttl: str | None = None  # a breakpoint here: "5m" | "1h" (Anthropic/Bedrock), "30m" | "12h" (OpenAI)
    kind: str = ""  # "tool_use" / "tool_result" runs count as one lookback position


@dataclass(frozen=True, slots=True)
class CacheRequest:
    family: str  # "anthropic" | "bedrock" | "openai" | "gemini"
    model: str
    scope: str  # API key / account: caches never cross scopes
    segments: tuple[Segment, ...]
    overhead_tokens: int = 0  # always uncached input
    automatic: str | None = None  # Anthropic top-level cache_control ttl
    implicit_end: int | None = None  # leading segments eligible for implicit caching (None: all)
    routing_key: str | None = None  # OpenAI prompt_cache_key
    retention: str | None = None  # OpenAI "in_memory" | "24h"; explicit mode: "30m" | "12h"
    explicit: bool = False  # OpenAI GPT-5.6+ semantics


@dataclass(frozen=True, slots=True)
class CacheResult:
    input_tokens: int  # uncached input, incl. overhead_tokens
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int  # the part of the writes with ttl "1h"
    cache_write_by_ttl: Mapping[str, int]
    total_input_tokens: int  # input + read + write
    writes_reported: bool  # False: the wire must not emit write fields
    ticket: int


@dataclass
class Knobs:
    """Fault and latency knobs, all off by default. The emulator applies latency and errors;
    the model applies misses, from an RNG seeded by ``seed`` and the scope. Out-of-range
    values raise ``ValueError`` when built (``_rules.check_knobs``)."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 529
    miss_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_knobs(self)


class _Entry:
    __slots__ = ("deadline", "expires", "tokens", "ttl_s")

    def __init__(self, tokens: int, ttl_s: float, expires: float, deadline: float) -> None:
        self.tokens = tokens
        self.ttl_s = ttl_s
        self.expires = expires
        self.deadline = deadline


@dataclass(slots=True)
class _Plan:
    chain: list[bytes]
    cum: list[int]  # prefix tokens through each segment
    breakpoints: list[tuple[int, str]] = field(default_factory=list)  # (segment index, ttl)
    implicit_ttl: tuple[float, float] = (0.0, 0.0)  # (idle TTL, longest lifetime) in seconds


class CacheModel:
    """One provider-side cache for every family, model and scope. Thread-safe."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        knobs: Knobs | None = None,
        max_entries: int = 100_000,
        min_tokens: Mapping[str, int] | None = None,
    ) -> None:
        self._clock = clock
        self.knobs = knobs if knobs is not None else Knobs()
        self._max = max(1, max_entries)
        self._min_override = dict(min_tokens or {})
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: OrderedDict[int, list[tuple[bytes, _Entry]]] = OrderedDict()
        self._scope_knobs: dict[str, Knobs] = {}
        # One miss generator per API key (scope), seeded "{seed}/{scope}", the most recently
        # used MAX_MISS_GENERATORS kept: an evicted key's sequence starts again from its seed.
        self._rngs: OrderedDict[str, random.Random] = OrderedDict()
        self._ticket = 0

    # -- knobs ---------------------------------------------------------------------------------

    def set_knobs(self, knobs: Knobs, *, scope: str | None = None) -> None:
        """Replace the default knobs (``scope=None``) or one scope's override; reseeds misses."""
        with self._lock:
            if scope is None:
                self.knobs = knobs
            else:
                self._scope_knobs[scope] = knobs
            self._rngs.clear()

    def knobs_for(self, scope: str) -> Knobs:
        return self._scope_knobs.get(scope, self.knobs)

    def min_tokens(self, family: str, model: str) -> int:
        """Minimum cacheable prefix: the ``min_tokens`` override by model name, then by family
        name, then the facts' per-model tables, then the family's assumption for unknown models."""
        override = self._min_override.get(model, self._min_override.get(family))
        if override is not None:
            return override
        return min_tokens(family, model)

    # -- protocol ------------------------------------------------------------------------------

    def begin(self, request: CacheRequest, now: float | None = None) -> CacheResult:
        """Validate ``request``, count its reads and writes, refresh what it read and record its
        new entries as pending (readable after :meth:`started`). Raises :class:`CacheRuleError`."""
        t = self._clock() if now is None else now
        family = request.family
        minimum = self.min_tokens(family, request.model)
        implicit = family == "gemini" or (family == "openai" and not request.explicit)
        plan = self._plan(request, implicit)
        with self._lock:
            miss = self._draw_miss(request.scope)
            if implicit:
                read, by_ttl, new = self._implicit(request, plan, minimum, t, miss)
            else:
                read, by_ttl, new = self._explicit(request, plan, minimum, t, miss)
            self._ticket += 1
            ticket = self._ticket
            if new:
                self._pending[ticket] = new
                if len(self._pending) > self._max:
                    self._pending.popitem(last=False)
        write = sum(by_ttl.values())
        total = (plan.cum[-1] if plan.cum else 0) + request.overhead_tokens
        return CacheResult(
            input_tokens=total - read - write,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=by_ttl.get("1h", 0),
            cache_write_by_ttl=by_ttl,
            total_input_tokens=total,
            writes_reported=not implicit,
            ticket=ticket,
        )

    def started(self, ticket: int, now: float | None = None) -> None:
        """The writing response has started: its pending entries become readable."""
        with self._lock:
            new = self._pending.pop(ticket, None)
            if not new:
                return
            t = self._clock() if now is None else now
            for key, entry in new:
                if entry.expires >= t:
                    self._put(key, entry, t)

    def abort(self, ticket: int) -> None:
        """The response failed before it started: its pending entries are dropped."""
        with self._lock:
            self._pending.pop(ticket, None)

    def handle(self, request: CacheRequest, now: float | None = None) -> CacheResult:
        """:meth:`begin` and :meth:`started` at once."""
        t = self._clock() if now is None else now
        result = self.begin(request, t)
        self.started(result.ticket, t)
        return result

    def reset(self) -> None:
        """Forget every entry, pending write and miss RNG (knobs stay)."""
        with self._lock:
            self._entries.clear()
            self._pending.clear()
            self._rngs.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals -----------------------------------------------------------------------------

    def _plan(self, request: CacheRequest, implicit: bool) -> _Plan:
        routing = request.routing_key if request.family == "openai" else None
        seed = orjson.dumps([request.family, request.model, request.scope, routing])
        h = xxhash.xxh3_128_digest(seed)
        chain: list[bytes] = []
        cum: list[int] = []
        run = 0
        digest = xxhash.xxh3_128_digest
        for seg in request.segments:
            h = digest(h + seg.digest)
            chain.append(h)
            run += seg.tokens
            cum.append(run)
        plan = _Plan(chain, cum)
        if implicit:
            plan.implicit_ttl = implicit_ttl(request)
        else:
            plan.breakpoints = breakpoints(request)
        return plan

    def _draw_miss(self, scope: str) -> bool:
        rate = self.knobs_for(scope).miss_rate
        if rate <= 0.0:
            return False
        rngs = self._rngs
        rng = rngs.get(scope)
        if rng is None:
            rng = rngs[scope] = random.Random(f"{self.knobs_for(scope).seed}/{scope}")
            if len(rngs) > MAX_MISS_GENERATORS:
                rngs.popitem(last=False)  # the least recently drawing key restarts its sequence
        else:
            rngs.move_to_end(scope)
        return rng.random() < rate

    def _live(self, key: bytes, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now > entry.expires:
            del self._entries[key]
            return None
        return entry

    def _refresh(self, key: bytes, entry: _Entry, now: float) -> None:
        entry.expires = max(entry.expires, min(now + entry.ttl_s, entry.deadline))
        self._entries.move_to_end(key)

    def _put(self, key: bytes, entry: _Entry, now: float) -> None:
        old = self._live(key, now)
        if old is not None:
            old.ttl_s = max(old.ttl_s, entry.ttl_s)
            old.expires = max(old.expires, entry.expires)
            old.deadline = max(old.deadline, entry.deadline)
            self._entries.move_to_end(key)
            return
        self._entries[key] = entry
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def _explicit(
        self, request: CacheRequest, plan: _Plan, minimum: int, now: float, miss: bool
    ) -> tuple[int, dict[str, int], list[tuple[bytes, _Entry]]]:
        """Anthropic, Bedrock and OpenAI GPT-5.6+ breakpoints."""
        chain, cum = plan.chain, plan.cum
        qualifying = [(i, ttl) for i, ttl in plan.breakpoints if cum[i] >= minimum]
        if not qualifying:
            return 0, {}, []
        read = 0
        if not miss:
            if request.family == "openai":
                found = self._scan(chain, cum, qualifying[-1][0], -1, now)
                read = max(read, found)
            else:
                positions = lookback_positions(request.segments)
                for i, _ in qualifying:
                    read = max(read, self._scan(chain, cum, i, positions[i] - LOOKBACK, now, positions))
        writes = [(i, ttl) for i, ttl in qualifying if cum[i] > read]
        if request.family == "openai":
            # At most 4 entries a request, the longest; like Anthropic's, a breakpoint inside
            # what was read gets an entry when it has none (no tokens are billed for it).
            writes = writes[-OPENAI_MAX_WRITES:]
            created = [
                (i, ttl) for i, ttl in qualifying if cum[i] > read or self._live(chain[i], now) is None
            ][-OPENAI_MAX_WRITES:]
        else:
            created = [
                (i, ttl) for i, ttl in qualifying if cum[i] > read or self._live(chain[i], now) is None
            ]
        by_ttl: dict[str, int] = {}
        start = read
        for i, ttl in writes:
            if cum[i] > start:
                by_ttl[ttl] = by_ttl.get(ttl, 0) + cum[i] - start
                start = cum[i]
        new = []
        for i, ttl in created:
            ttl_s = ttl_seconds(ttl)
            new.append((chain[i], _Entry(cum[i], ttl_s, now + ttl_s, FOREVER)))
        return read, by_ttl, new

    def _scan(
        self,
        chain: list[bytes],
        cum: list[int],
        start: int,
        floor: int,
        now: float,
        positions: list[int] | None = None,
    ) -> int:
        """Tokens of the longest live entry at boundary ``start`` or before it, refreshed;
        ``floor`` bounds the search by lookback position (or by index when no positions)."""
        j = start
        while j >= 0 and (positions[j] if positions is not None else j) >= floor:
            entry = self._live(chain[j], now)
            if entry is not None:
                self._refresh(chain[j], entry, now)
                return cum[j]
            j -= 1
        return 0

    def _implicit(
        self, request: CacheRequest, plan: _Plan, minimum: int, now: float, miss: bool
    ) -> tuple[int, dict[str, int], list[tuple[bytes, _Entry]]]:
        """OpenAI before GPT-5.6 and Gemini: the whole eligible prompt, every boundary."""
        chain, cum = plan.chain, plan.cum
        n = len(chain)
        end = n if request.implicit_end is None else max(0, min(request.implicit_end, n))
        ttl_s, deadline_s = plan.implicit_ttl
        hit = -1
        j = end - 1
        while not miss and j >= 0 and cum[j] >= minimum:
            entry = self._live(chain[j], now)
            if entry is not None:
                hit = j
                break
            j -= 1
        read = 0
        if hit >= 0:
            # a read keeps the whole prefix warm: its shorter entries are refreshed too
            for k in range(hit, -1, -1):
                if cum[k] < minimum:
                    break
                entry = self._live(chain[k], now)
                if entry is not None:
                    self._refresh(chain[k], entry, now)
            read = cum[hit]
            if request.family == "openai":  # implicit OpenAI: the rules before GPT-5.6
                read = minimum + (read - minimum) // OPENAI_READ_STEP * OPENAI_READ_STEP
        new = [
            (chain[k], _Entry(cum[k], ttl_s, now + ttl_s, now + deadline_s))
            for k in range(hit + 1, end)
            if cum[k] >= minimum
        ]
        return read, {}, new
