"""Expected versus actual cache reads, per call.

:class:`CacheView` is the tracker's picture of what the provider's cache should hold: one
entry per chained hash that a call wrote or read, with when it was last used, its TTL and
its size in tokens. From it, each call gets

* ``expected_read_tokens``: the longest live entry the provider would find for this call.
  For explicit caching, an entry whose hash equals the call's chained hash at a breakpoint
  or at any block boundary up to ``LOOKBACK`` positions before one (Anthropic's lookback:
  what lets turn N+1 read turn N's entry). For implicit caching, the longest shared prefix.
* ``unexpected_miss``: it read less than that (beyond the provider's rounding).
* ``miss_cause`` for the part through the last breakpoint that it did not read.

Entry sizes are measured from usage (read + write through the last breakpoint; the whole
prompt for implicit caching) and estimated from byte shares only where no call measured
them. Memory is bounded by two generations of entries (an approximate LRU), each entry packed
into one int.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._cachefacts import _TTL_SECONDS, LOOKBACK, ttl_seconds
from .types import MissCause, PrefixKey, Usage

__all__ = ["LOOKBACK", "CacheView", "Expectation", "ttl_seconds"]


class _Entry:
    """One expected cache entry, unpacked. The view stores it packed into a single int
    (``pack``): one int object per entry instead of an object and its fields."""

    __slots__ = ("last_used", "measured", "tokens", "ttl_s")

    def __init__(self, last_used: float, ttl_s: float, tokens: int, measured: bool) -> None:
        self.last_used = last_used
        self.ttl_s = ttl_s
        self.tokens = tokens
        self.measured = measured

    # packed = ((tokens * 2 + measured) * 16 + ttl code) * 2**46 + last_used in ms (2**46 ms is
    # 2,230 years; times are kept to the millisecond)
    @staticmethod
    def unpack(v: int) -> _Entry:
        ms = v & _MS_MASK
        rest = v >> 46
        return _Entry(ms / 1000.0, _TTL_BY_CODE[rest & 15], rest >> 5, bool(rest >> 4 & 1))

    def pack(self) -> int:
        return _pack(self.tokens, self.measured, self.ttl_s, _ms(self.last_used))


def _ms(t: float) -> int:
    return min(max(round(t * 1000.0), 0), _MS_MASK)


def _pack(tokens: int, measured: bool, ttl_s: float, ms: int) -> int:
    code = _TTL_CODE.get(ttl_s, _DEFAULT_TTL_CODE)
    return ((max(tokens, 0) * 2 + bool(measured)) * 16 + code) << 46 | ms


_MS_MASK = (1 << 46) - 1
_TTL_BY_CODE = tuple(sorted({*_TTL_SECONDS.values(), 300.0}))
_TTL_CODE = {t: i for i, t in enumerate(_TTL_BY_CODE)}
_DEFAULT_TTL_CODE = _TTL_CODE[300.0]
_TTL_MS_BY_CODE = tuple(t * 1000.0 for t in _TTL_BY_CODE)
assert len(_TTL_BY_CODE) <= 16


ALIVE, EXPIRED, NEVER = 0, 1, 2


@dataclass(slots=True)
class Expectation:
    """What the view expected of one call, taken before the call's own usage is known."""

    tokens: int
    matched: tuple[int, ...]
    breakpoint_states: tuple[int, ...]
    best_at: int = -1  # block position of the entry ``tokens`` came from
    measured: bool = True  # its size was measured from usage, not estimated from byte shares


class CacheView:
    """Expected cache contents. Not locked: the tracker holds its lock around calls."""

    def __init__(self, max_entries: int) -> None:
        # Two generations instead of an exact LRU (half the memory of an OrderedDict): entries
        # are added to and refreshed into ``_young``; when it holds half the bound, it becomes
        # ``_old`` and the previous old generation is dropped. An entry used within the last
        # max_entries/2 insertions is always kept; at most max_entries are held.
        self._young: dict[int, int] = {}  # chain hash -> packed _Entry
        self._old: dict[int, int] = {}
        self._half = max(1, max_entries // 2)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _load(self, h: int) -> int | None:
        """The packed entry at ``h``, from either generation."""
        v = self._young.get(h)
        return self._old.get(h) if v is None else v

    def _store(self, h: int, packed: int) -> None:
        """Store an entry in the young generation (a read or a write used it)."""
        young = self._young
        if h in young:
            young[h] = packed
            return
        self._old.pop(h, None)
        young[h] = packed
        if len(young) >= self._half:
            self._old = young
            self._young = {}

    def _get(self, h: int) -> _Entry | None:
        v = self._load(h)
        return None if v is None else _Entry.unpack(v)

    def _touch(self, h: int, e: _Entry) -> None:
        self._store(h, e.pack())

    def _state(self, h: int, now: float) -> tuple[int, int]:
        """(ALIVE | EXPIRED | NEVER, packed fields) of the entry at ``h``: ``fields >> 1`` is
        its size in tokens, ``fields & 1`` whether that size was measured."""
        v = self._load(h)
        if v is None:
            return NEVER, 0
        rest = v >> 46
        if now * 1000.0 - (v & _MS_MASK) <= _TTL_MS_BY_CODE[rest & 15]:
            return ALIVE, rest >> 4
        return EXPIRED, rest >> 4

    def expect(self, key: PrefixKey, implicit: bool, now: float) -> Expectation:
        best = 0
        best_at = -1
        best_fields = 1
        matched: list[int] = []
        state = self._state
        bps = key.breakpoints
        states = [state(h, now) for h in key.bp_hashes]
        if implicit:
            chain = key.chain
            for q in range(len(chain) - 1, -1, -1):
                alive, f = state(chain[q], now)
                if alive == ALIVE:
                    best, best_at, best_fields = f >> 1, q, f
                    matched.append(q)
                    break
        else:
            hash_at = key.hash_at
            for k, p in enumerate(bps):
                alive, f = states[k]
                q = p
                if alive != ALIVE:
                    # Anthropic's lookback: the block boundaries before the breakpoint.
                    for q in range(p - 1, max(-1, p - LOOKBACK - 1), -1):
                        alive, f = state(hash_at(q), now)
                        if alive == ALIVE:
                            break
                if alive == ALIVE:
                    if f >> 1 > best:
                        best, best_at, best_fields = f >> 1, q, f
                    matched.append(q)
        return Expectation(
            best, tuple(matched), tuple([s[0] for s in states]), best_at, bool(best_fields & 1)
        )

    def _put(self, h: int, now: float, ttl_s: float, tokens: int, measured: bool) -> None:
        v = self._load(h)
        now_ms = _ms(now)
        if v is not None:
            # Merge with the packed entry without unpacking it: this runs on every cached call.
            rest = v >> 46
            ms = v & _MS_MASK
            old_ttl = _TTL_BY_CODE[rest & 15]
            if now_ms - ms <= old_ttl * 1000.0 and old_ttl > ttl_s:
                ttl_s = old_ttl  # alive: the longer TTL stays
            if rest >> 4 & 1 and not measured:
                tokens, measured = rest >> 5, True  # an estimate never overwrites a measurement
            now_ms = max(ms, now_ms)
        self._store(h, _pack(tokens, measured, ttl_s, now_ms))

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
        bp_bytes = key.bp_bytes
        last_bytes = max(bp_bytes[-1], 1)
        estimated = False
        if usage.writes_reported:
            through_last = usage.cache_read_tokens + usage.cache_write_tokens
            if through_last <= 0:
                return  # nothing was cached (below the minimum, or the provider ignored the marker)
        else:
            # Marked breakpoints on a server that reports reads but not writes (an
            # Anthropic-compatible server): assume it cached what it was asked to, sized by
            # the prompt's byte share through the last breakpoint.
            through_last = usage.cache_read_tokens
            if through_last <= 0:
                through_last = usage.total_input_tokens * bp_bytes[-1] // max(key.total_bytes, 1)
                estimated = True
                if through_last < max(min_tokens, 1):
                    return
        # (An early return above read nothing, so there was nothing to refresh.) The last
        # breakpoint's entry is written below with the measured size, which refreshes it too.
        self._refresh(key, exp, read, now, key.breakpoints[-1])
        last_k = len(bp_bytes) - 1
        for k, (h, ttl) in enumerate(zip(key.bp_hashes, key.ttls, strict=True)):
            measured = k == last_k and not estimated
            tokens = through_last if measured else through_last * bp_bytes[k] // last_bytes
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
                e.last_used = max(e.last_used, now)
                if q == exp.best_at and not e.measured:
                    # The provider read the longest entry it found: that measures its size.
                    e.tokens = read
                    e.measured = True
                self._touch(h, e)

    @staticmethod
    def cause(
        key: PrefixKey, usage: Usage, exp: Expectation, implicit: bool, tolerance: int, min_tokens: int = 0
    ) -> tuple[bool, MissCause | None]:
        """(unexpected_miss, miss_cause) for a finished call; ``min_tokens`` is the model's
        minimum cacheable prefix (implicit caching stores nothing shorter)."""
        if not usage.known or key.prefix_id is None or not key.breakpoints:
            return False, None
        read = usage.cache_read_tokens
        # An estimated size (a byte share) may be off either way: only a shortfall of more than
        # half is a miss then. A measured size is exact up to the provider's rounding.
        if read + tolerance < exp.tokens and (exp.measured or 2 * read < exp.tokens):
            return True, "provider"
        if implicit or not usage.writes_reported:
            if exp.tokens == 0 and read == 0:
                total = usage.total_input_tokens
                if implicit and 0 < total < min_tokens:
                    return False, "below_minimum"
                states = exp.breakpoint_states
                if states and states[-1] == EXPIRED:
                    return False, "ttl_expired"
                return False, "cold" if total else None
            return False, None
        if read + usage.cache_write_tokens == 0:
            return False, "below_minimum"
        if usage.cache_write_tokens == 0:
            return False, None
        for state in exp.breakpoint_states:
            if state == NEVER:
                return False, "cold"
            if state == EXPIRED:
                return False, "ttl_expired"
        return False, "provider"
