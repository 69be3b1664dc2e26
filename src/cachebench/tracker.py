"""``CacheTracker``: wrap, instrument, record, and read what was recorded.

The tracker checks its configuration and holds a :class:`~cachebench._core.Core`, which runs
the call path (begin, the SDK call, observe) under the guard: the caller gets the SDK's
response or the SDK's own exception, unchanged. The tracker stays a plain Python class in
every build (it may be subclassed); the core is compiled in the compiled build.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._alerts import default_alert
from ._call import CallContext
from ._core import Core
from ._flow import current_flow, default_flow
from ._guard import strict_from_env
from ._instrument import InstrumentHooks, unpatch, wrapper_for
from .policy import CachePolicy
from .providers import adapter_for, detect_client, detect_response
from .redact import require_redactor
from .types import CallMetrics, Provider, Regression

__all__ = ["CacheTracker", "CallContext"]

F = TypeVar("F", bound=Callable[..., Any])


def _check_callback(name: str, callback: object) -> None:
    if callback is None:
        return
    if not callable(callback):
        raise TypeError(f"{name} must be callable or None, got {type(callback).__name__}")
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 (an object whose __call__ is async)
    ):
        raise TypeError(
            f"{name} must be a plain function: an async def callback would never be awaited "
            "(cachebench calls it from the thread that recorded the call, which may run no event "
            "loop). Pass a plain function and schedule the coroutine from it, for example "
            "lambda m: loop.call_soon_threadsafe(queue.put_nowait, m)"
        )


class CacheTracker:
    """Observes a provider's prompt cache from inside the application (README.md, "Quickstart",
    shows the whole public API in use)."""

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
            _check_callback(name, cb)
        if policy is not None and not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy (e.g. CachePolicy.miss_aware()), got {policy!r}")
        for name, n in (("max_prefixes", max_prefixes), ("max_calls", max_calls)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be a positive int, got {n!r}")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        if capture_text:
            require_redactor()  # excerpts are redacted by the secret detector: a clear error now
        if store is not None:
            raise ValueError(
                f"store: only the in-memory store (store=None) is available in this version; got {store!r}"
            )
        self.miss_alert_threshold = float(miss_alert_threshold)
        self._on_miss_alert = on_miss_alert if on_miss_alert is not None else default_alert
        self._on_regression = on_regression
        self.policy = policy
        self.capture_text = bool(capture_text)
        self.max_prefixes = max_prefixes
        self.max_calls = max_calls
        self._core = Core(
            self,
            threshold=self.miss_alert_threshold,
            capture_text=self.capture_text,
            gate=policy.gate() if policy is not None else None,
            max_prefixes=max_prefixes,
            max_calls=max_calls,
            prices=prices,
            clock=clock,
            strict=strict_from_env(),
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
    def on_miss_alert(self) -> Callable[[CallMetrics], object]:
        """Called with the :class:`CallMetrics` of each unexpected miss; may be replaced."""
        return self._on_miss_alert

    @on_miss_alert.setter
    def on_miss_alert(self, callback: Callable[[CallMetrics], object] | None) -> None:
        _check_callback("on_miss_alert", callback)
        self._on_miss_alert = callback if callback is not None else default_alert

    @property
    def on_regression(self) -> Callable[[Regression], object] | None:
        """Called once per incident with its :class:`Regression` (None: log it); may be replaced."""
        return self._on_regression

    @on_regression.setter
    def on_regression(self, callback: Callable[[Regression], object] | None) -> None:
        _check_callback("on_regression", callback)
        self._on_regression = callback

    @property
    def refused_usage(self) -> int:
        """How many calls' usage was refused as corrupt (a count above 10**12 tokens): such a
        call is recorded with its usage unknown, and logged."""
        return self._core._guard.refused.get("usage", 0)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock calls are timestamped with (seconds since the epoch); may be replaced."""
        return self._core.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        self._core.clock = clock

    @property
    def internal_errors(self) -> int:
        """How many internal failures the guard caught (and logged) so far."""
        return self._core._guard.errors

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
        return wrapper_for(self._core, adapter, fn, flow)  # type: ignore[return-value]

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
        core = self._core
        try:
            body: Mapping[str, Any] = request or {}
            ctx = core._begin(adapter, body, flow or current_flow() or default_flow(), live=False)
            if ctx is None:
                return None
            if timestamp is not None:
                ctx.timestamp = float(timestamp)
                if ctx.exp is not None:
                    with core._lock:
                        ctx.exp = core._view.expect(
                            ctx.key, ctx.prompt.implicit if ctx.prompt else False, ctx.timestamp
                        )
            ctx.stream = False
            usage = adapter.recorded_usage(response, body)
            ctx.finished = True
            row = core._complete(ctx, usage, None, float(elapsed_ms) if elapsed_ms is not None else None)
            return CallMetrics(*row)
        except Exception as exc:
            core._guard.failed("record", exc)
            return None

    # -- public: reading ------------------------------------------------------------------

    def aggregate(self, window_s: float | None = None) -> dict[str, Any]:
        """Totals over every call, or over the retained calls of the last ``window_s`` seconds."""
        if window_s is not None and (
            isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or window_s <= 0
        ):
            raise ValueError(f"window_s must be a positive number of seconds or None, got {window_s!r}")
        self._core.drain()
        with self._core._lock:
            if window_s is None:
                return self._core._stats.total.as_dict()
            return self._core._stats.window(self.clock() - window_s).as_dict()

    def by_prefix(self) -> dict[str, dict[str, Any]]:
        self._core.drain()
        with self._core._lock:
            return self._core._stats.by_prefix()

    def by_flow(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per flow, plus ``distinct_prefixes`` and ``regression`` (the
        flow's open :class:`Regression` as its ``as_dict()``, or None): plain JSON values."""
        self._core.drain()
        with self._core._lock:
            flows = self._core._stats.by_flow()
            for name, d in flows.items():
                r = self._core._detector.open_for(name)
                d["regression"] = r.as_dict() if r is not None else None
            return flows

    def calls(self) -> list[CallMetrics]:
        self._core.drain()
        with self._core._lock:
            return self._core._stats.calls()

    def regressions(self) -> list[Regression]:
        """Every incident so far (open ones have ``closed_at=None``), oldest first."""
        self._core.drain()
        with self._core._lock:
            return self._core._detector.regressions()

    def flush(self) -> None:
        """Finish recording what is still pending (a stream the collector finalised). The
        readers do this themselves; call it before reading the tracker's state another way."""
        self._core.drain()

    def close(self) -> None:
        """Flush and release the store. Safe to call twice."""
        self._core.drain()

    def __enter__(self) -> CacheTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
