"""``CacheTracker``: wrap, instrument, record, and read what was recorded.

The tracker checks its configuration and holds an :class:`~cachebench.engine.Engine`, which
runs the call path: a short part on the caller's thread (the request's prefix, the policy's
hold, the SDK call, the response) and the analysis on one consumer thread. The caller gets the
SDK's response or the SDK's own exception, unchanged. The readers ask the consumer, after
everything queued before them. Settings are either live (assigning takes effect at once) or
read-only (assigning raises); none is silently ignored.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._alerts import default_alert
from ._args import text, whole_number
from ._guard import strict_from_env
from ._instrument import InstrumentHooks, unpatch, wrapper_for
from ._shutdown import flush_on_sigterm
from .engine import Engine
from .policy import CachePolicy
from .providers import adapter_for, detect_client, detect_response
from .providers._base import Adapter
from .redact import require_redactor
from .store import SQLStore, StoreError, StoreWriter, open_store, store_from_env
from .types import CallMetrics, Provider, Regression

__all__ = ["CacheTracker"]

F = TypeVar("F", bound=Callable[..., Any])


def _check_flow(flow: object) -> None:
    if flow is not None:
        text("flow", flow, "a non-empty string or None")


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
        self._provider = Provider.parse(provider) if provider is not None else None
        if isinstance(miss_alert_threshold, bool) or not isinstance(miss_alert_threshold, (int, float)):
            raise TypeError(f"miss_alert_threshold must be a number in [0, 1], got {miss_alert_threshold!r}")
        if not 0.0 <= float(miss_alert_threshold) <= 1.0:
            raise ValueError(f"miss_alert_threshold must be a number in [0, 1], got {miss_alert_threshold!r}")
        for name, cb in (("on_miss_alert", on_miss_alert), ("on_regression", on_regression)):
            _check_callback(name, cb)
        if policy is not None and not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy (e.g. CachePolicy.miss_aware()), got {policy!r}")
        for name, n in (("max_prefixes", max_prefixes), ("max_calls", max_calls)):
            whole_number(name, n, 1, "a positive int")
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        if not isinstance(capture_text, bool):
            raise TypeError(f"capture_text must be True or False, got {capture_text!r}")
        if capture_text:
            require_redactor()  # excerpts are redacted by the secret detector: a clear error now
        from_env = store is None
        if from_env:
            store = store_from_env()
        writer = None
        if store is not None:
            # A bad URL, a newer schema, a read-only or corrupt file: StoreError, now.
            try:
                opened = open_store(store)
                opened.require_writable()
            except StoreError as exc:
                if from_env:
                    raise StoreError(f"the store CACHEBENCH_DB names: {exc}") from None
                raise
            writer = StoreWriter(opened, clock)
            flush_on_sigterm()
        self._miss_alert_threshold = float(miss_alert_threshold)
        self._on_miss_alert = on_miss_alert if on_miss_alert is not None else default_alert
        self._on_regression = on_regression
        self._policy = policy
        self._capture_text = bool(capture_text)
        self._max_prefixes = max_prefixes
        self._max_calls = max_calls
        self._engine = Engine(
            self,
            threshold=self._miss_alert_threshold,
            capture_text=self._capture_text,
            gate=policy.gate() if policy is not None else None,
            max_prefixes=max_prefixes,
            max_calls=max_calls,
            prices=prices,
            clock=clock,
            strict=strict_from_env(),
            writer=writer,
        )
        self._patches: dict[int, tuple[InstrumentHooks, list[tuple[Any, str, Any]]]] = {}

    # -- configuration helpers ------------------------------------------------------------

    def _adapter(
        self,
        provider: Provider | str | None,
        target: Any = None,
        response: Any = None,
        *,
        what: str = "response",
    ) -> Adapter:
        """The adapter for ``provider``, the tracker's, or the one ``target`` (a client or SDK
        method) or ``response`` tells; ``what`` the argument an error names when none does."""
        if provider is not None:
            return adapter_for(provider)
        if self._provider is not None:
            return adapter_for(self._provider)
        found = detect_client(target) if target is not None else None
        if found is None and response is not None:
            found = detect_response(response)
        if found is None:
            raise ValueError(
                f"cannot tell which provider this {what} belongs to; pass provider= "
                f"(one of {', '.join(p.value for p in Provider)})"
            )
        return adapter_for(found)

    def _open(self, method: str) -> None:
        if self._engine.closed:
            raise RuntimeError(
                f"{method}() on a closed CacheTracker: its calls would not be recorded (make a new tracker)"
            )

    # -- settings: live ones have setters; the others are fixed at construction ------------

    @property
    def provider(self) -> Provider | None:
        """The provider of every call (None: detected per client or response); may be replaced."""
        return self._provider

    @provider.setter
    def provider(self, provider: Provider | str | None) -> None:
        self._provider = Provider.parse(provider) if provider is not None else None

    @property
    def miss_alert_threshold(self) -> float:
        """The hit ratio below which a flow's incident opens. Fixed at construction."""
        return self._miss_alert_threshold

    @property
    def policy(self) -> CachePolicy | None:
        """The call policy (miss-aware holds). Fixed at construction."""
        return self._policy

    @property
    def capture_text(self) -> bool:
        """Whether incidents keep short redacted excerpts of the changed text. Fixed at construction."""
        return self._capture_text

    @property
    def store(self) -> SQLStore | None:
        """Where finished calls are kept beyond the process (None: only in memory). Its
        queries (``report``, ``calls``, ``incidents``) read what was written: call
        :meth:`flush` first to include the calls just made. Fixed at construction."""
        writer = self._engine.writer
        return writer.store if writer is not None else None

    @property
    def max_prefixes(self) -> int:
        """How many prefixes (and flows) the aggregates keep. Fixed at construction."""
        return self._max_prefixes

    @property
    def max_calls(self) -> int:
        """How many calls the history keeps. Fixed at construction."""
        return self._max_calls

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
        return self._engine.guard.refused.get("usage", 0)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock calls are timestamped with (seconds since the epoch); may be replaced."""
        return self._engine.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        if not callable(clock):
            raise TypeError("clock must be a callable returning seconds since the epoch")
        self._engine.clock = clock

    @property
    def internal_errors(self) -> int:
        """How many internal failures the guard caught (and logged) so far."""
        return self._engine.guard.errors

    @property
    def dropped_calls(self) -> int:
        """How many calls were dropped unrecorded because the consumer stayed
        :data:`~cachebench.engine.QUEUE_LIMIT` items behind for
        :data:`~cachebench.engine.ROOM_WAIT_S` (a callback blocking, say), or because they
        were made after :meth:`close` (through a wrapper, or :meth:`record`); logged."""
        return self._engine.dropped

    # -- public: wrap / instrument / record -----------------------------------------------

    def wrap(self, fn: F, flow: str | None = None, *, provider: Provider | str | None = None) -> F:
        """Return ``fn`` observed: same signature, same result (sync, async, streams).

        ``fn`` is an SDK method such as ``client.messages.create``; ``provider`` is detected
        from it unless given here or to the tracker.
        """
        self._open("wrap")
        if not callable(fn):
            raise TypeError(f"wrap() needs a callable SDK method, got {type(fn).__name__}")
        _check_flow(flow)
        adapter = self._adapter(provider, target=fn, what="SDK method")
        return wrapper_for(self._engine, adapter, fn, flow)  # type: ignore[return-value]

    def instrument(self, client: Any, *, flow: str | None = None) -> Any:
        """Patch a whole SDK client in place so every cacheable call is observed.

        Idempotent (a second call does nothing) and reversible with :meth:`uninstrument`.
        Returns the client.
        """
        self._open("instrument")
        _check_flow(flow)
        if id(client) in self._patches:
            return client
        adapter = self._adapter(None, target=client, what="client")
        hooks = InstrumentHooks(self, adapter, flow)
        self._patches[id(client)] = (hooks, adapter.instrument(client, hooks))
        return client

    def uninstrument(self, client: Any) -> Any:
        """Undo :meth:`instrument`. A client that was never instrumented is left as it is."""
        patched = self._patches.pop(id(client), None)
        if patched is not None:
            unpatch(*patched)
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
        if elapsed_ms is not None and (
            isinstance(elapsed_ms, bool)
            or not isinstance(elapsed_ms, (int, float))
            or not math.isfinite(elapsed_ms)
            or elapsed_ms < 0
        ):
            raise ValueError(
                f"elapsed_ms must be a duration in milliseconds (>= 0) or None, got {elapsed_ms!r}"
            )
        _check_flow(flow)
        adapter = self._adapter(provider, response=response)
        engine = self._engine
        try:
            return engine.record(
                adapter,
                response,
                request or {},
                flow,
                timestamp=float(timestamp) if timestamp is not None else None,
                elapsed_ms=float(elapsed_ms) if elapsed_ms is not None else None,
            )
        except Exception as exc:
            engine.guard.failed("record", exc)
            return None

    # -- public: reading ------------------------------------------------------------------

    def aggregate(self, window_s: float | None = None) -> dict[str, Any]:
        """Totals over every call, or over the retained calls of the last ``window_s`` seconds."""
        if window_s is not None and (
            isinstance(window_s, bool) or not isinstance(window_s, (int, float)) or window_s <= 0
        ):
            raise ValueError(f"window_s must be a positive number of seconds or None, got {window_s!r}")
        engine = self._engine
        if window_s is None:
            return engine.read(lambda: engine.stats.total.as_dict())
        return engine.read(lambda: engine.stats.window(self.clock() - window_s).as_dict())

    def by_prefix(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per prefix id, plus ``flow``, ``flows``, ``model``,
        ``first_seen`` and ``last_seen``."""
        return self._engine.read(self._engine.stats.by_prefix)

    def by_flow(self) -> dict[str, dict[str, Any]]:
        """The aggregate keys per flow, plus ``distinct_prefixes``, ``regression`` (the
        flow's open :class:`Regression` as its ``as_dict()``, or None) and ``unread_writes``
        (per layer whose writes mostly expired unread, by breakpoint number as a string: how
        many, what they paid beyond plain input, and the advice): plain JSON values."""
        return self._engine.read(self._by_flow)

    def _by_flow(self) -> dict[str, dict[str, Any]]:
        engine = self._engine
        flows = engine.stats.by_flow()
        for name, d in flows.items():
            r = engine.detector.open_for(name)
            d["regression"] = r.as_dict() if r is not None else None
            d["unread_writes"] = {str(k): v for k, v in engine.detector.unread_writes(name).items()}
        return flows

    def calls(self) -> list[CallMetrics]:
        """Every retained call, oldest first."""
        return self._engine.read(self._engine.stats.calls)

    def regressions(self) -> list[Regression]:
        """Every incident so far (open ones have ``closed_at=None``), oldest first."""
        return self._engine.read(self._engine.detector.regressions)

    def flush(self) -> None:
        """Wait until every call made so far is recorded and the callbacks it triggered have
        run. The readers do this themselves; call it before reading the tracker's state
        another way (an exporter, a test's own counters fed by callbacks)."""
        self._engine.flush()

    def close(self) -> None:
        """Flush, undo every :meth:`instrument`, and stop the consumer thread. Calls made
        after through this tracker's wrappers are not recorded; what was recorded stays
        readable. Safe to call twice; ``with CacheTracker() as tracker:`` calls it at the end."""
        for hooks, patches in list(self._patches.values()):
            unpatch(hooks, patches)
        self._patches.clear()
        self._engine.close()

    def __enter__(self) -> CacheTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
