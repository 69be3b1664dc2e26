"""``CacheTracker``: wrap, instrument, record. The only orchestrator.

One call, start to end::

    begin:  adapter.parse_request -> Prompt -> fingerprint.key -> PrefixKey, expectation
    call:   the SDK call itself (never touched)
    end:    adapter.usage / stream accumulator -> Usage -> pricing -> CallMetrics
            -> stats, cache view, alerts

Everything but the SDK call runs under the tracker's :class:`~cachebench._guard.Guard`:
the caller gets the SDK's response or the SDK's own exception, unchanged.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._alerts import default_alert, default_regression
from ._call import CallContext, apply_ttl_hint, call_row
from ._flow import current_flow, default_flow
from ._guard import Guard, strict_from_env
from ._instrument import InstrumentHooks, unpatch, wrapper_for
from .detect import ALIVE, CacheView
from .fingerprint import key as prefix_key
from .policy import CachePolicy, Hold
from .pricing import PriceTable
from .providers import adapter_for, detect_client, detect_response
from .providers._stream import observe_result
from .regress import FlowDetector
from .stats import Stats
from .types import UNKNOWN_USAGE, UNPRICED, CallMetrics, Provider, Regression, Usage

__all__ = ["CacheTracker", "CallContext"]

F = TypeVar("F", bound=Callable[..., Any])


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CacheTracker:
    """Observes a provider's prompt cache from inside the application. See DESIGN "Public API"."""

    def __init__(
        self,
        provider: Provider | str | None = None,
        miss_alert_threshold: float = 0.6,
        on_miss_alert: Callable[[CallMetrics], object] | None = None,
        on_regression: Callable[[Regression], object] | None = None,
        policy: CachePolicy | None = None,
        store: Any = None,
        max_prefixes: int = 10_000,
        max_calls: int = 100_000,
        capture_text: bool = False,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = Provider.parse(provider) if provider is not None else None
        if (
            isinstance(miss_alert_threshold, bool)
            or not isinstance(miss_alert_threshold, (int, float))
            or not 0.0 <= float(miss_alert_threshold) <= 1.0
        ):
            raise ValueError(f"miss_alert_threshold must be a number in [0, 1], got {miss_alert_threshold!r}")
        for name, cb in (("on_miss_alert", on_miss_alert), ("on_regression", on_regression)):
            if cb is not None and not callable(cb):
                raise TypeError(f"{name} must be callable or None, got {type(cb).__name__}")
        if policy is not None and not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy (e.g. CachePolicy.miss_aware()), got {policy!r}")
        for name, n in (("max_prefixes", max_prefixes), ("max_calls", max_calls)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        if store is not None:
            raise ValueError(
                f"store: only the in-memory store (store=None) is available in this version; got {store!r}"
            )
        self.miss_alert_threshold = float(miss_alert_threshold)
        self.on_miss_alert = on_miss_alert if on_miss_alert is not None else default_alert
        self.on_regression = on_regression
        self.policy = policy
        self.capture_text = bool(capture_text)
        self.clock = clock
        self.max_prefixes = max_prefixes
        self.max_calls = max_calls
        self._guard = Guard(strict=strict_from_env())
        self._prices = PriceTable(prices)
        self._lock = threading.Lock()
        self._stats = Stats(max_prefixes, max_calls)
        self._view = CacheView(max_entries=max_prefixes * 8)
        self._gate = policy.gate() if policy is not None else None
        self._inflight: dict[int, int] = {}  # cold prefix -> calls writing it, response not started
        self._opened: list[Regression] = []  # opened under the lock, announced after it
        self._detector = FlowDetector(
            self.miss_alert_threshold, self.capture_text, max_prefixes, self._opened.append
        )
        self._patches: dict[int, list[tuple[Any, str, Any]]] = {}

    # -- configuration helpers ------------------------------------------------------------

    def _adapter(self, provider: Provider | str | None, target: Any = None, response: Any = None) -> Any:
        if provider is not None:
            return adapter_for(provider)
        if self.provider is not None:
            return adapter_for(self.provider)
        found = detect_client(target) if target is not None else None
        if found is None and response is not None:
            found = detect_response(response)
        if found is None:
            what = "client" if target is not None else "response"
            raise ValueError(
                f"cannot tell which provider this {what} belongs to; pass provider= "
                f"(one of {', '.join(p.value for p in Provider)})"
            )
        return adapter_for(found)

    @property
    def internal_errors(self) -> int:
        """How many internal failures the guard caught (and logged) so far."""
        return self._guard.errors

    # -- the call path --------------------------------------------------------------------

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
        try:
            name = flow or current_flow() or default_flow(3)
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
        if exp is not None and usage.known and error is None:
            unexpected, cause = CacheView.cause(
                key, usage, exp, implicit, adapter.read_tolerance(model), min_tokens
            )
            if ctx.concurrent and cause in ("cold", "ttl_expired"):
                cause = "concurrent"  # a twin was writing the same prefix when this call went out
        if cost is None:
            cost = UNPRICED
        with self._lock:
            if exp is not None and usage.known and error is None:
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
            row = call_row(ctx, model, usage, cost, elapsed, unexpected, cause, error)
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
        for regression in opened:
            if self.on_regression is None:
                default_regression(regression)
            else:
                self._guard.user_callback("on_regression", self.on_regression, regression)
        if unexpected:
            self._guard.user_callback("on_miss_alert", self.on_miss_alert, CallMetrics(*row))
        return row

    def _fail(self, ctx: CallContext, exc: BaseException) -> None:
        ctx.finish(UNKNOWN_USAGE, exc)

    # -- public: wrap / instrument / record -----------------------------------------------

    def wrap(self, fn: F, flow: str | None = None, *, provider: Provider | str | None = None) -> F:
        """Return ``fn`` observed: same signature, same result (sync, async, streams).

        ``fn`` is an SDK method such as ``client.messages.create``; ``provider`` is detected
        from it unless given here or to the tracker.
        """
        if not callable(fn):
            raise TypeError(f"wrap() needs a callable SDK method, got {type(fn).__name__}")
        if flow is not None and (not isinstance(flow, str) or not flow.strip()):
            raise ValueError(f"flow must be a non-empty string or None, got {flow!r}")
        adapter = self._adapter(provider, target=fn)
        return wrapper_for(self, adapter, fn, flow)  # type: ignore[return-value]

    def _observe(self, result: Any, ctx: CallContext | None) -> Any:
        if ctx is None:
            return result
        try:
            return observe_result(result, ctx)
        except Exception as exc:
            self._guard.failed("observe", exc)
            return result

    def instrument(self, client: Any, *, flow: str | None = None) -> Any:
        """Patch a whole SDK client in place so every cacheable call is observed.

        Idempotent (a second call does nothing) and reversible with :meth:`uninstrument`.
        Returns the client.
        """
        if id(client) in self._patches:
            return client
        adapter = self._adapter(None, target=client)
        hooks = InstrumentHooks(self, adapter, flow)
        self._patches[id(client)] = adapter.instrument(client, hooks)
        return client

    def uninstrument(self, client: Any) -> Any:
        """Undo :meth:`instrument`. A client that was never instrumented is left as it is."""
        unpatch(self._patches.pop(id(client), []))
        return client

    def record(
        self,
        response: Any,
        request: Mapping[str, Any] | None = None,
        provider: Provider | str | None = None,
        elapsed_ms: float | None = None,
        timestamp: float | None = None,
        *,
        flow: str | None = None,
    ) -> CallMetrics | None:
        """Record a call made some other way: a response object or its plain JSON, an SDK
        stream's final state, or (Bedrock) the boto3 response dict. ``timestamp`` replays a
        logged call at its own time. Returns the :class:`CallMetrics`, or ``None`` if the
        tracker failed internally (logged, never raised).
        """
        if request is not None and not isinstance(request, Mapping):
            raise TypeError(
                f"request must be the call's keyword arguments as a mapping, got {type(request).__name__}"
            )
        if timestamp is not None and (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, (int, float))
            or not math.isfinite(timestamp)
        ):
            raise ValueError(f"timestamp must be seconds since the epoch, got {timestamp!r}")
        adapter = self._adapter(provider, response=response)
        try:
            body: Mapping[str, Any] = request or {}
            ctx = self._begin(adapter, body, flow or current_flow() or default_flow(2), live=False)
            if ctx is None:
                return None
            if timestamp is not None:
                ctx.timestamp = float(timestamp)
                if ctx.exp is not None:
                    with self._lock:
                        ctx.exp = self._view.expect(
                            ctx.key, ctx.prompt.implicit if ctx.prompt else False, ctx.timestamp
                        )
            ctx.stream = False
            usage = adapter.recorded_usage(response, body)
            ctx.finished = True
            row = self._complete(ctx, usage, None, float(elapsed_ms) if elapsed_ms is not None else None)
            return CallMetrics(*row)
        except Exception as exc:
            self._guard.failed("record", exc)
            return None

    # -- public: reading ------------------------------------------------------------------

    def aggregate(self, window_s: float | None = None) -> dict[str, Any]:
        """Totals over every call, or over the retained calls of the last ``window_s`` seconds."""
        if window_s is not None and (
            isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or window_s <= 0
        ):
            raise ValueError(f"window_s must be a positive number of seconds or None, got {window_s!r}")
        with self._lock:
            if window_s is None:
                return self._stats.total.as_dict()
            return self._stats.window(self.clock() - window_s).as_dict()

    def by_prefix(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._stats.by_prefix()

    def by_flow(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per flow, plus ``distinct_prefixes`` and ``regression`` (the
        flow's open :class:`Regression`, or None)."""
        with self._lock:
            flows = self._stats.by_flow()
            for name, d in flows.items():
                d["regression"] = self._detector.open_for(name)
            return flows

    def calls(self) -> list[CallMetrics]:
        with self._lock:
            return self._stats.calls()

    def regressions(self) -> list[Regression]:
        """Every incident so far (open ones have ``closed_at=None``), oldest first."""
        with self._lock:
            return self._detector.regressions()

    def close(self) -> None:
        """Flush and release the store. Safe to call twice."""
        return None

    def __enter__(self) -> CacheTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
