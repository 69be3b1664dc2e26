"""The cache model's Anthropic and Bedrock rules, one cached layer at a time: what
:func:`cachebench.economics.simulate` replays traces with.

A trace names each layer's content by a key and its size in tokens (no text, no blocks), so a
prefix is the run of layer ids through it (:class:`LayerCache` takes them interned as ints) and
every breakpoint sits at the end of a layer. The rules are :meth:`CacheModel._explicit`'s for
those families, step for step: each breakpoint whose prefix reaches the model's minimum finds
the longest live entry at itself or at a layer end up to :data:`~cachebench.facts.LOOKBACK`
blocks before it and refreshes it; the read is the longest found; writes run from the read to
the last breakpoint, each span at the TTL of the breakpoint that ends it; every qualifying
breakpoint not read gets an entry, readable once the response starts (:meth:`started`). A test
replays random traces through both and compares every count.

Beyond the counts, :meth:`begin` says how many written tokens a twin was already writing
(``concurrent``) and how many re-wrote an entry the cache held before and let expire
(``rewritten``); expired entries are remembered for :data:`FORGET_AFTER_S` for that.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..facts import LOOKBACK, TTL_SECONDS, ttl_seconds

__all__ = ["FORGET_AFTER_S", "LayerCache"]

#: How long an expired entry is remembered (to tell a re-write from a cold write).
FORGET_AFTER_S = 86_400.0
_TTL_S = dict(TTL_SECONDS)
_SWEEP_EVERY = 1 << 16  # entries added between sweeps of the forgotten ones


class LayerCache:
    """Entries keyed by a prefix's id (an int): ``[expires, ttl_s]``."""

    __slots__ = ("_added", "_inflight", "_pending", "_ticket", "entries")

    def __init__(self) -> None:
        self.entries: dict[int, list[float]] = {}
        self._pending: dict[int, list[tuple[int, float, float]]] = {}
        self._inflight: dict[int, float] = {}  # prefix id -> when the response writing it starts
        self._ticket = 0
        self._added = 0

    def begin(
        self,
        chain: Sequence[int],
        cum: Sequence[int],
        pos: Sequence[int],
        marks: Sequence[tuple[int, str]],
        minimum: int,
        now: float,
        ready_at: float | None = None,
    ) -> tuple[int, dict[str, int], int, int, int | None]:
        """One request whose layers' ids, cumulative tokens and last block positions are
        ``chain``, ``cum``, ``pos``, with breakpoints ``marks`` ((layer, ttl), in order):
        (read, written tokens by TTL, concurrent, rewritten, ticket for :meth:`started` or None
        when it creates no entry). ``ready_at``: when its response starts, for :meth:`writing`."""
        entries = self.entries
        qualifying = [(i, ttl) for i, ttl in marks if cum[i] >= minimum]
        if not qualifying:
            return 0, {}, 0, 0, None
        read = 0
        dead = []  # the qualifying breakpoints whose own entry is not alive: they get one
        for i, ttl in qualifying:
            e = entries.get(chain[i])
            if e is not None and now <= e[0]:  # (the common case: its own entry)
                refreshed = now + e[1]
                if refreshed > e[0]:
                    e[0] = refreshed
                if cum[i] > read:
                    read = cum[i]
                continue
            dead.append((i, ttl))
            floor = pos[i] - LOOKBACK
            j = i - 1
            while j >= 0 and pos[j] >= floor:
                e = entries.get(chain[j])
                if e is not None and now <= e[0]:
                    refreshed = now + e[1]
                    if refreshed > e[0]:
                        e[0] = refreshed
                    if cum[j] > read:
                        read = cum[j]
                    break
                j -= 1
        if not dead:  # every breakpoint read its own entry: nothing written
            return read, {}, 0, 0, None
        by_ttl: dict[str, int] = {}
        concurrent = rewritten = 0
        start = read
        inflight = self._inflight
        for i, ttl in qualifying:
            c = cum[i]
            if c > start:
                span = c - start
                by_ttl[ttl] = by_ttl.get(ttl, 0) + span
                start = c
                h = chain[i]
                if h in inflight:
                    concurrent += span
                else:
                    gone = entries.get(h)  # (expired: alive ones were read)
                    if gone is not None and gone[0] >= now - FORGET_AFTER_S:
                        rewritten += span
        # An alive breakpoint's prefix is within what was read: only the dead ones get an entry.
        new = []
        for i, ttl in dead:
            ttl_s = _TTL_S.get(ttl) or ttl_seconds(ttl)
            new.append((chain[i], ttl_s, now + ttl_s))
        if not new:
            return read, by_ttl, concurrent, rewritten, None
        self._ticket += 1
        self._pending[self._ticket] = new
        if ready_at is not None:
            for h, _, _ in new:
                if h not in inflight:
                    inflight[h] = ready_at
        return read, by_ttl, concurrent, rewritten, self._ticket

    def started(self, ticket: int, now: float) -> None:
        """The response of ``ticket``'s request started: its entries become readable."""
        new = self._pending.pop(ticket, None)
        if not new:
            return
        entries = self.entries
        inflight = self._inflight
        for h, ttl_s, expires in new:
            inflight.pop(h, None)
            if expires < now:
                continue
            e = entries.get(h)
            if e is not None and now <= e[0]:
                if ttl_s > e[1]:
                    e[1] = ttl_s
                if expires > e[0]:
                    e[0] = expires
            else:
                entries[h] = [expires, ttl_s]
                self._added += 1
        if self._added >= _SWEEP_EVERY:
            self._added = 0
            forget = now - FORGET_AFTER_S
            for h in [h for h, e in entries.items() if e[0] < forget]:
                del entries[h]

    def writing(self, h: int, now: float) -> float | None:
        """When the response writing prefix ``h`` starts, while one is in flight and ``h`` is not
        readable; else None."""
        ready = self._inflight.get(h)
        if ready is None:
            return None
        e = self.entries.get(h)
        if e is not None and now <= e[0]:
            return None
        return ready
