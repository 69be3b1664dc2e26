"""What the provider's cache should serve: the tracker's view of it.

:class:`CacheView` is the tracker's picture of what the provider's cache should hold: one
entry per chained hash that a call wrote or read, with when it was last used, its TTL and
its size in tokens. From it, each call gets an :class:`Expectation`:

* ``tokens``: the longest live entry the provider would find for this call. For explicit
  caching, an entry whose hash equals the call's chained hash at a breakpoint or at any block
  boundary up to ``LOOKBACK`` positions before one (Anthropic's lookback: what lets turn N+1
  read turn N's entry). For implicit caching, the longest shared prefix.
* ``breakpoint_states``: each breakpoint's entry is ``ALIVE``, ``EXPIRED`` or ``NEVER`` seen.

Why a call read less than that is decided in :mod:`cachebench.diagnose.causes`.

Entry sizes are measured from usage (read + write through the last breakpoint; the whole
prompt for implicit caching) and estimated from byte shares only where no call measured
them. Memory is bounded by two generations of entries (an approximate LRU), each entry packed
into one int by :class:`Entry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .facts import LOOKBACK, TTL_SECONDS, ttl_seconds
from .types import PrefixKey, Usage

__all__ = ["ALIVE", "EXPIRED", "NEVER", "CacheView", "Entry", "Expectation"]

# The state of the entry at a chained hash, for one call's time.
ALIVE = 0  # seen written or read within its TTL
EXPIRED = 1  # seen, but longer ago than its TTL
NEVER = 2  # never seen (or dropped from the view)

# The layout of a packed entry, read and written only by Entry.pack and Entry.unpack:
#   ((tokens << 1 | measured) << _TTL_BITS | ttl code) << _MS_BITS | last used in ms
# (2**46 ms is 2,230 years; times are kept to the millisecond).
_MS_BITS = 46
_MS_MASK = (1 << _MS_BITS) - 1
_TTL_BITS = 4
_TTL_MASK = (1 << _TTL_BITS) - 1
_TTL_BY_CODE = tuple(sorted({*TTL_SECONDS.values(), 300.0}))
_TTL_CODE = {t: i for i, t in enumerate(_TTL_BY_CODE)}
_DEFAULT_TTL_CODE = _TTL_CODE[300.0]
_ttl_code = _TTL_CODE.get
assert len(_TTL_BY_CODE) <= 1 << _TTL_BITS


def _ms(t: float) -> int:
    """Seconds since the epoch as an entry's milliseconds."""
    return min(max(round(t * 1000.0), 0), _MS_MASK)


class Entry(NamedTuple):
    """One expected cache entry. The view keeps each packed into a single int (one int object
    per entry instead of an object and its fields); :meth:`pack` and :meth:`unpack` are the
    only code that knows how."""

    last_used_ms: int  # the last call that wrote or read it, in ms since the epoch
    ttl_s: float  # how long it lives after that use
    tokens: int  # its size
    measured: bool  # the size was measured from usage, not estimated from byte shares

    def alive(self, now_ms: float) -> bool:
        return now_ms - self.last_used_ms <= self.ttl_s * 1000.0

    @staticmethod
    def pack(last_used_ms: int, ttl_s: float, tokens: int, measured: bool) -> int:
        """The packed form of the entry with these fields (an unknown TTL packs as 5 min)."""
        # (No max() or bool() calls: this runs for every entry a call writes or reads.)
        size = (tokens << 1 if tokens > 0 else 0) | (1 if measured else 0)
        return (size << _TTL_BITS | _ttl_code(ttl_s, _DEFAULT_TTL_CODE)) << _MS_BITS | last_used_ms

    @staticmethod
    def unpack(packed: int) -> Entry:
        rest = packed >> _MS_BITS
        size = rest >> _TTL_BITS
        # tuple.__new__ skips the generated __new__: this runs for every entry a call looks up.
        return _new_entry(
            Entry, (packed & _MS_MASK, _TTL_BY_CODE[rest & _TTL_MASK], size >> 1, (size & 1) == 1)
        )


_new_entry = tuple.__new__
_pack = Entry.pack
_unpack = Entry.unpack


@dataclass(slots=True)
class Expectation:
    """What the view expected of one call, taken before the call's own usage is known."""

    tokens: int
    matched: tuple[int, ...]  # block positions of the live entries it would read
    breakpoint_states: tuple[int, ...]  # ALIVE | EXPIRED | NEVER, per breakpoint
    best_at: int = -1  # block position of the entry ``tokens`` came from
    measured: bool = True  # its size was measured from usage, not estimated from byte shares


class CacheView:
    """Expected cache contents. Not locked: only the tracker's consumer thread writes it."""

    def __init__(self, max_entries: int) -> None:
        # Two generations instead of an exact LRU (half the memory of an OrderedDict): entries
        # are added to and refreshed into ``_young``; when it holds half the bound, it becomes
        # ``_old`` and the previous old generation is dropped. An entry used within the last
        # max_entries/2 insertions is always kept; at most max_entries are held.
        self._young: dict[int, int] = {}  # chain hash -> Entry.pack()
        self._old: dict[int, int] = {}
        self._half = max(1, max_entries // 2)
        # Counts the view's writes: an expectation taken at the same count and time (for the
        # same key) is still the view's answer.
        self.version = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _load(self, h: int) -> int | None:
        """The packed entry at ``h``, from either generation."""
        packed = self._young.get(h)
        return self._old.get(h) if packed is None else packed

    def _get(self, h: int) -> Entry | None:
        packed = self._load(h)
        return None if packed is None else _unpack(packed)

    def _set(self, h: int, packed: int) -> None:
        """Store a packed entry in the young generation (a read or a write used it)."""
        self.version += 1
        young = self._young
        if h in young:
            young[h] = packed
            return
        self._old.pop(h, None)
        young[h] = packed
        if len(young) >= self._half:
            self._old = young
            self._young = {}

    def state(self, h: int, now: float) -> int:
        """ALIVE, EXPIRED or NEVER for the entry at ``h``: dict lookups only, nothing written,
        so a caller's thread may ask while the consumer (the only writer) updates the view."""
        return self._lookup(h, now * 1000.0)[0]

    def _lookup(self, h: int, now_ms: float) -> tuple[int, Entry | None]:
        """(ALIVE | EXPIRED | NEVER, the entry) at ``h``."""
        packed = self._load(h)
        if packed is None:
            return NEVER, None
        e = _unpack(packed)
        return (ALIVE if e.alive(now_ms) else EXPIRED), e

    def expect(self, key: PrefixKey, implicit: bool, now: float) -> Expectation:
        best = 0
        best_at = -1
        best_measured = True
        matched: list[int] = []
        lookup = self._lookup
        now_ms = now * 1000.0
        found = [lookup(h, now_ms) for h in key.bp_hashes]
        if implicit:
            chain = key.chain
            for q in range(len(chain) - 1, -1, -1):
                state, e = lookup(chain[q], now_ms)
                if e is not None and state == ALIVE:
                    best, best_at, best_measured = e.tokens, q, e.measured
                    matched.append(q)
                    break
        else:
            hash_at = key.hash_at
            for k, p in enumerate(key.breakpoints):
                state, e = found[k]
                q = p
                if state != ALIVE:
                    # Anthropic's lookback: the block boundaries before the breakpoint.
                    for q in range(p - 1, max(-1, p - LOOKBACK - 1), -1):
                        state, e = lookup(hash_at(q), now_ms)
                        if state == ALIVE:
                            break
                if e is not None and state == ALIVE:
                    if e.tokens > best:
                        best, best_at, best_measured = e.tokens, q, e.measured
                    matched.append(q)
        return Expectation(best, tuple(matched), tuple([state for state, _ in found]), best_at, best_measured)

    def _put(self, h: int, now: float, ttl_s: float, tokens: int, measured: bool) -> None:
        now_ms = _ms(now)
        packed = self._load(h)
        if packed is not None:
            old = _unpack(packed)
            if old.alive(now_ms) and old.ttl_s > ttl_s:
                ttl_s = old.ttl_s  # alive: the longer TTL stays
            if old.measured and not measured:
                tokens, measured = old.tokens, True  # an estimate never overwrites a measurement
            now_ms = max(old.last_used_ms, now_ms)
        self._set(h, _pack(now_ms, ttl_s, tokens, measured))

    def observe(
        self,
        key: PrefixKey,
        usage: Usage,
        exp: Expectation,
        implicit: bool,
        now: float,
        default_ttl: str,
        min_tokens: int,
    ) -> None:
        """Record what the provider's cache holds after this call."""
        if not usage.known or not key.breakpoints:
            return
        read = usage.cache_read_tokens
        if implicit:
            self._refresh(key, exp, read, now, -1)
            total = usage.total_input_tokens
            if total < max(min_tokens, 1):
                return
            ttl_s = ttl_seconds(key.ttls[-1] if key.ttls else default_ttl)
            chain = key.chain
            cum = key.cum
            last = len(chain) - 1
            for q in range(last + 1):
                measured = q == last
                tokens = total if measured else total * cum[q] // max(cum[last], 1)
                self._put(chain[q], now, ttl_s, tokens, measured)
            return
        through_last, estimated = _through_last(key, usage)
        if through_last <= 0 or (estimated and through_last < max(min_tokens, 1)):
            return  # nothing was cached (below the minimum, or the provider ignored the marker)
        # (An early return above read nothing, so there was nothing to refresh.) The last
        # breakpoint's entry is written below with the measured size, which refreshes it too.
        self._refresh(key, exp, read, now, key.breakpoints[-1])
        bp_bytes = key.bp_bytes
        last_bytes = max(bp_bytes[-1], 1)
        last_k = len(bp_bytes) - 1
        for k, (h, ttl) in enumerate(zip(key.bp_hashes, key.ttls, strict=True)):
            measured = k == last_k and not estimated
            tokens = through_last if measured else through_last * bp_bytes[k] // last_bytes
            if not measured and tokens < min_tokens:
                continue  # a prefix below the minimum: the provider ignores its marker
            self._put(h, now, ttl_seconds(ttl), tokens, measured)

    def _refresh(self, key: PrefixKey, exp: Expectation, read: int, now: float, skip: int) -> None:
        """Reads refresh the entries they read (but ``skip``, which the caller writes anyway);
        the longest one read is measured by the read."""
        if not read:
            return
        for q in exp.matched:
            if q == skip:
                continue
            h = key.hash_at(q)
            e = self._get(h)
            if e is not None:
                tokens, measured = e.tokens, e.measured
                if q == exp.best_at and not measured:
                    # The provider read the longest entry it found: that measures its size.
                    tokens, measured = read, True
                self._set(h, _pack(max(e.last_used_ms, _ms(now)), e.ttl_s, tokens, measured))


def _through_last(key: PrefixKey, usage: Usage) -> tuple[int, bool]:
    """The tokens through a call's last breakpoint, and whether that is an estimate: its reads
    and writes where the provider reports writes; else (a server that reports reads only) what
    it read, or, reading nothing, the prompt's byte share through the last breakpoint."""
    if usage.writes_reported:
        return usage.cache_read_tokens + usage.cache_write_tokens, False
    if usage.cache_read_tokens > 0:
        return usage.cache_read_tokens, False
    return usage.total_input_tokens * key.bp_bytes[-1] // max(key.total_bytes, 1), True


def cacheable_from(key: PrefixKey, usage: Usage, min_tokens: int) -> int:
    """The first of a call's breakpoints (explicit caching) whose prefix reaches the model's
    minimum, by the call's own measure shared out by bytes (:meth:`CacheView.observe` sizes its
    entries so): the provider ignores the markers before it, and the view keeps no entry for
    them. ``len(key.breakpoints)`` when none does; 0 when the usage is unknown."""
    bps = key.bp_bytes
    if not usage.known or not bps:
        return 0
    through_last, _ = _through_last(key, usage)
    last_bytes = max(bps[-1], 1)
    last_k = len(bps) - 1
    for k, b in enumerate(bps):
        if k == last_k or through_last * b // last_bytes >= min_tokens:
            return k if through_last > 0 else len(bps)
    return len(bps)
