"""The call path of one :class:`~cachebench.tracker.CacheTracker`: everything a wrapped call
runs besides the SDK call itself.

One call, start to end::

    begin:  adapter.parse_request -> Prompt -> fingerprint.key -> PrefixKey, expectation
    call:   the SDK call itself (never touched)
    end:    adapter.usage / stream accumulator -> Usage -> pricing -> CallMetrics
            -> stats, cache view, regressions, alerts

Everything but the SDK call runs under the :class:`~cachebench._guard.Guard`: the caller
gets the SDK's response or the SDK's own exception, unchanged.

The public :class:`~cachebench.tracker.CacheTracker` validates the configuration and holds
one ``Core``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ._alerts import default_alert, default_regression
from ._call import CallContext, apply_ttl_hint, call_row
from ._flow import current_flow, default_flow
from ._guard import Guard
from .diagnose import FlowDetector, miss_cause
from .expect import ALIVE, CacheView
from .fingerprint import key as prefix_key
from .policy import Hold
from .pricing import PriceTable
from .providers._stream import observe_result
from .stats import Stats
from .types import UNKNOWN_USAGE, UNPRICED, CallMetrics, Cost, Regression, Usage

__all__ = ["MAX_TOKENS", "Core", "Pricer"]

# No call reads, writes or produces this many tokens: a count above it is corrupt input
# (a logged body mangled, an overflowed counter), refused rather than added to the totals.
MAX_TOKENS = 10**12


class Pricer(Protocol):
    """What the call path asks of a price table (:class:`~cachebench.pricing.PriceTable`)."""

    def cost(self, provider: str, model: str | None, usage: Usage, timestamp: float) -> Cost: ...


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Core:
    """The call path and the state it updates. Not public: reached as ``CacheTracker._core``.

    ``owner`` is the tracker, held weakly; its ``on_miss_alert`` and ``on_regression`` are
    read when one fires, so reassigning them on the tracker takes effect at once.
    """

    def __init__(
        self,
        owner: Any,
        *,
        threshold: float,
        capture_text: bool,
        gate: Any,
        max_prefixes: int,
        max_calls: int,
        prices: Mapping[str, Mapping[str, float]] | None,
        clock: Callable[[], float],
        strict: bool,
    ) -> None:
        # Weak: the tracker holds its core, and a cycle would keep both (and every recorded
        # call) alive until the cycle collector runs.
        self._owner: Callable[[], Any] = weakref.ref(owner)
        self.clock = clock
        self._guard = Guard(strict=strict)
        self._prices: Pricer = PriceTable(prices)
        self._lock = threading.Lock()
        self._stats = Stats(max_prefixes, max_calls)
        self._view = CacheView(max_entries=max_prefixes * 8)
        self._gate: Any = gate
        self._inflight: dict[int, int] = {}  # cold prefix -> calls writing it, response not started
        self._opened: list[Regression] = []  # opened under the lock, announced after it
        self._detector = FlowDetector(threshold, capture_text, max_prefixes, self._opened.append)
        # Work handed over by garbage-collector finalizers (an abandoned stream): they may run
        # while this very thread holds ``_lock``, so they only put here (SimpleQueue.put is
        # reentrant and takes no lock a finalizer could interrupt) and ``drain`` does the work.
        self._later: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]]] = queue.SimpleQueue()

    def later(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` at the next safe point: safe to call from a finalizer."""
        self._later.put((fn, args))

    def drain(self) -> None:
        """Run what finalizers handed over. Called where this thread holds none of
        cachebench's locks: the start of a call, and every reader."""
        pending = self._later
        while not pending.empty():
            try:
                fn, args = pending.get_nowait()
            except queue.Empty:
                return
            try:
                fn(*args)
            except Exception as exc:
                self._guard.failed("finalize", exc)

    def _begin(
        self,
        adapter: Any,
        request: Mapping[str, Any],
        flow: str | None,
        *,
        hold: bool = True,
        live: bool = True,
    ) -> CallContext | None:
        """Everything before the SDK call. With a policy and ``hold``, a thread may wait here;
        async callers pass ``hold=False`` and await :meth:`_ahold` instead. ``live=False``
        (``record()`` of a call that already happened) never holds and is never in flight."""
        if not self._later.empty():
            self.drain()
        try:
            name = flow or current_flow() or default_flow()
            ctx = CallContext(self, adapter, request, name, self.clock())
            prompt = adapter.parse_request(request)
            key = prefix_key(prompt)
            ctx.prompt = prompt
            ctx.key = key
            if key.breakpoints:
                with self._lock:
                    exp = ctx.exp = self._view.expect(key, prompt.implicit, ctx.timestamp)
                if live and exp.breakpoint_states[-1] != ALIVE:
                    ctx.write_key = key.bp_hashes[-1]
        except Exception as exc:
            self._guard.failed("begin", exc)
            return None
        if ctx.write_key is None:
            return ctx
        if self._gate is None:
            self._fly(ctx)
        elif hold and not _in_event_loop():
            try:
                self._held(ctx, self._gate.enter(ctx.write_key))
            except Exception as exc:
                self._guard.failed("policy", exc)
            self._fly(ctx)
        return ctx

    def _held(self, ctx: CallContext, hold: Hold) -> None:
        """The policy let ``ctx`` go. If it waited, look at the cache again: the twin it waited
        for has been recorded, so the call now expects to read what the twin wrote."""
        ctx.held(hold)
        if hold.held_ms and ctx.prompt is not None:
            with self._lock:
                ctx.exp = self._view.expect(ctx.key, ctx.prompt.implicit, ctx.timestamp)

    def _fly(self, ctx: CallContext) -> None:
        """Count ``ctx`` among the in-flight writers of its cold prefix until its response
        starts: a call that goes out while a twin is already writing is ``concurrent``."""
        k = ctx.write_key
        if k is None or ctx.flying or (ctx.exp is not None and ctx.exp.breakpoint_states[-1] == ALIVE):
            return  # nothing cold to write (after a hold, the twin's entry is known)
        with self._lock:
            n = self._inflight.get(k, 0)
            ctx.concurrent = n > 0
            self._inflight[k] = n + 1
            ctx.flying = True

    def _land(self, ctx: CallContext) -> None:
        k = ctx.write_key
        with self._lock:
            if not ctx.flying or k is None:
                return
            ctx.flying = False
            n = self._inflight.get(k, 1) - 1
            if n > 0:
                self._inflight[k] = n
            else:
                self._inflight.pop(k, None)

    async def _ahold(self, ctx: CallContext | None) -> None:
        """The policy's hold for an async call (never blocks the event loop)."""
        if ctx is None or ctx.write_key is None or self._gate is None or ctx.hold is not None:
            return
        try:
            self._held(ctx, await self._gate.aenter(ctx.write_key))
        except Exception as exc:
            self._guard.failed("policy", exc)
        self._fly(ctx)

    def _complete(
        self, ctx: CallContext, usage: Usage, error: BaseException | None, elapsed: float | None
    ) -> tuple[Any, ...]:
        """Price, explain and store one finished call; return its row (CallMetrics field order)."""
        adapter = ctx.adapter
        prompt = ctx.prompt
        key = ctx.key
        model = (
            usage.model
            or (prompt.model if prompt is not None else None)
            or adapter.request_model(ctx.request)
        )
        counts = (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens, usage.output_tokens)
        if usage.known and max(counts) > MAX_TOKENS:
            self._guard.refuse(
                "usage",
                f"refused a usage of more than {MAX_TOKENS:,} tokens in flow {ctx.flow!r} "
                f"(input, cache read, cache write, output: {counts}); the call is recorded "
                "with its usage unknown",
            )
            usage = UNKNOWN_USAGE._replace(model=usage.model, diagnostics=usage.diagnostics)
        usage = apply_ttl_hint(usage, key)
        try:
            cost = self._prices.cost(adapter.NAME, model, usage, ctx.timestamp)
        except Exception as exc:
            self._guard.failed("pricing", exc)
            cost = None
        exp = ctx.exp
        unexpected = False
        cause = None
        implicit = prompt.implicit if prompt is not None else False
        min_tokens = adapter.min_cacheable(model)
        tolerance = adapter.read_tolerance(model)  # a shortfall this small is no miss
        if cost is None:
            cost = UNPRICED
        with self._lock:
            if exp is not None and usage.known and error is None:
                unexpected, cause = miss_cause(
                    self._view,
                    key,
                    usage,
                    exp,
                    implicit=implicit,
                    tolerance=tolerance,
                    min_tokens=min_tokens,
                    concurrent=ctx.concurrent,
                    timestamp=ctx.timestamp,
                    elapsed_ms=elapsed,
                )
                read = usage.cache_read_tokens
                den = read + usage.cache_write_tokens if usage.writes_reported else exp.tokens
                try:
                    # What the cache holds now: a twin that finished first may have written it.
                    states = exp.breakpoint_states
                    done = exp
                    if states.count(ALIVE) != len(states):
                        done = self._view.expect(key, implicit, ctx.timestamp)
                    cause = self._detector.observe(
                        ctx.flow,
                        model,
                        key,
                        prompt,
                        exp,
                        done,
                        cause,
                        (min(read, den), den),
                        cost.cost_usd,
                        ctx.timestamp,
                    )
                except Exception as exc:
                    self._guard.failed("detect", exc)
            # What the provider would serve of the expected entry: its reads come in steps.
            step = adapter.read_step(model)
            expected = 0 if exp is None else exp.tokens - exp.tokens % step if step else exp.tokens
            row = call_row(ctx, model, usage, cost, elapsed, unexpected, cause, error, expected)
            self._stats.add(row, key.prefix_hash)
            if exp is not None and error is None:
                self._view.observe(
                    key,
                    usage,
                    exp,
                    implicit,
                    ctx.timestamp,
                    adapter.DEFAULT_TTL,
                    min_tokens,
                )
            opened: list[Regression] | tuple[()] = self._opened
            if opened:  # hand the list over: later calls open into a new one
                self._opened = []
                self._detector.on_open = self._opened.append
            else:
                opened = ()
        if opened or unexpected:
            owner = self._owner()  # None once the tracker is gone (a wrapper outlived it)
            for regression in opened:
                on_regression = owner.on_regression if owner is not None else None
                if on_regression is None:
                    default_regression(regression)
                else:
                    self._guard.user_callback("on_regression", on_regression, regression)
            if unexpected:
                on_miss = owner.on_miss_alert if owner is not None else default_alert
                self._guard.user_callback("on_miss_alert", on_miss, CallMetrics(*row))
        return row

    def _fail(self, ctx: CallContext, exc: BaseException) -> None:
        ctx.finish(UNKNOWN_USAGE, exc)

    def _observe(self, result: Any, ctx: CallContext | None) -> Any:
        if ctx is None:
            return result
        try:
            return observe_result(result, ctx)
        except Exception as exc:
            self._guard.failed("observe", exc)
            return result
