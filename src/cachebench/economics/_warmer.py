"""Keeping a cached prefix warm when it pays: :class:`CacheWarmer`.

A warmer sends :func:`~._warm_request.warm_request` of a request (its cached layers and a
trivial turn, the least output the provider allows) through the SDK method it is given:

* :meth:`CacheWarmer.warm` / :meth:`CacheWarmer.awarm`: once, now;
* :meth:`CacheWarmer.start` (a daemon thread) or :meth:`CacheWarmer.start_task` (an asyncio
  task): every ``every_s`` seconds, give or take ``jitter_s``; :meth:`CacheWarmer.stop` /
  :meth:`CacheWarmer.astop` end it at once (the thread waits on an event, the task is
  cancelled); ``max_errors`` failures in a row stop it too (logged);
* ``auto=True``: on schedule, it warms only while the traffic it sees on the prefix makes a
  warmer pay (:func:`~._cost.warmer_value` at the observed rate), and says so in
  :attr:`CacheWarmer.stats`.

With a ``tracker``, every warm call is recorded as such: under the warmer's ``flow``
(default ``"cachebench-warmer"``) with ``CallMetrics.warm`` set, whether the SDK client is
instrumented or not; its cost is the warmer's. The warmer also watches the tracker's calls on
the prefix it warms: their rate (for ``auto``), and the saving it bought (a call that read the
prefix after a gap longer than its TTL, which only the warmer kept alive: the write it did not
pay, less the read).

Nothing a warmer does raises into the application: a failed warm call is logged (logger
``cachebench``) and counted. Configuration mistakes raise ``ValueError`` at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import facts
from .._args import whole_number
from .._flow import _warming, flow
from ..fingerprint import key as prefix_key
from ..pricing import validate_overrides
from ..providers import adapter_for, detect_request
from ..types import CallMetrics, Provider
from ._cost import warmer_value
from ._rates import Rates
from ._warm_request import warm_request

if TYPE_CHECKING:
    from ..tracker import CacheTracker

__all__ = ["CacheWarmer", "WarmerStats"]

logger = logging.getLogger("cachebench")

# Which warmer warmed each prefix last (its marker): the one that bought a read after a gap. A
# plain lock, held for a dict operation only (never around user code).
_LAST_WARMER: dict[str, object] = {}
_LAST_WARMER_LOCK = threading.Lock()
_MAX_LAST_WARMERS = 10_000

#: How far back the traffic on the prefix is looked at, for ``auto``.
TRAFFIC_WINDOW_S = 3600.0
_MAX_ARRIVALS = 10_000


@dataclass(frozen=True, slots=True)
class WarmerStats:
    """What a warmer did: ``calls`` made (``errors`` of them failed), what they cost (USD, from
    the tracker; None without one or when unpriced), the ``saving_usd`` they bought, the traffic
    it saw on the prefix (``calls_per_hour``: its calls in the last hour), whether it is
    ``running`` and, in auto mode, whether warming ``pays`` at that traffic."""

    calls: int
    errors: int
    cost_usd: float | None
    saving_usd: float
    calls_per_hour: float
    running: bool
    pays: bool | None
    stopped_by_errors: bool


class CacheWarmer:
    """Keeps ``request``'s cached layers warm by calling ``create`` (the SDK method the request
    is for, sync or async: ``client.messages.create``) with a trivial turn.

    ``every_s`` must be under the TTL of the last breakpoint it warms. ``jitter_s`` (default
    5% of ``every_s``) spreads warmers that start together. ``auto``: warm on schedule only
    while the observed traffic makes it pay (needs ``tracker``; prices from genai-prices, or
    ``prices=``)."""

    def __init__(
        self,
        create: Callable[..., Any],
        request: Mapping[str, Any],
        *,
        tracker: CacheTracker | None = None,
        provider: Provider | str | None = None,
        flow: str = "cachebench-warmer",
        every_s: float = 240.0,
        jitter_s: float | None = None,
        max_errors: int = 3,
        auto: bool = False,
        prices: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if not callable(create):
            raise TypeError(f"create must be the SDK method to call (client.messages.create), got {create!r}")
        if not isinstance(request, Mapping):
            raise TypeError(
                f"request must be the call's keyword arguments as a mapping, got {type(request).__name__}"
            )
        from ..planner._view import SAME_BODY
        from ..tracker import CacheTracker

        if tracker is not None and not isinstance(tracker, CacheTracker):
            raise TypeError(f"tracker must be a CacheTracker or None, got {type(tracker).__name__}")
        if not isinstance(auto, bool):
            raise TypeError(f"auto must be True or False, got {auto!r}")
        validate_overrides(prices)  # (the tracker's own check: a mistake now, not at the first price)
        shape = detect_request(request)
        chosen = Provider.parse(provider) if provider is not None else shape
        if chosen is None:
            raise ValueError("cannot tell which provider the request is for: give provider=")
        if (
            shape is not None
            and provider is not None
            and shape is not chosen
            and (chosen.value, shape.value) not in SAME_BODY
        ):
            raise ValueError(
                f"provider={chosen.value!r}, but the request is {shape.value}'s shape: its warm calls"
                " would be malformed (leave provider= out, or give the request of that provider)"
            )
        self.provider = chosen
        self.request = warm_request(request, chosen)
        if not isinstance(flow, str) or not flow.strip():
            raise ValueError(f"flow must be a non-empty string, got {flow!r}")
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)):
            raise TypeError(f"every_s must be a number of seconds > 0, got {every_s!r}")
        if not 0 < every_s < math.inf:
            raise ValueError(f"every_s must be a number of seconds > 0, got {every_s!r}")
        prompt = adapter_for(chosen).parse_request(self.request)
        key = prefix_key(prompt)
        self.ttl = key.ttls[-1] if key.ttls else _implicit_ttl(chosen)
        ttl_s = facts.ttl_seconds(self.ttl)
        if every_s >= ttl_s:
            raise ValueError(
                f"every_s ({every_s:g} s) must be under the warmed prefix's TTL ({self.ttl}: {ttl_s:g} s)"
            )
        jitter = min(every_s * 0.05, (ttl_s - every_s) / 2) if jitter_s is None else jitter_s
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < every_s:
            raise ValueError(f"jitter_s must be a number of seconds from 0 to every_s, got {jitter_s!r}")
        if every_s + jitter >= ttl_s:
            raise ValueError(
                f"every_s + jitter_s ({every_s + jitter:g} s) must be under the warmed prefix's TTL"
                f" ({self.ttl}: {ttl_s:g} s): a late warm call finds it expired"
            )
        whole_number("max_errors", max_errors, 1, "a whole number >= 1")
        if auto and tracker is None:
            raise ValueError("auto=True decides from the traffic a tracker sees: give tracker=")
        self.model = prompt.model
        self.prefix_id = key.breakpoint_ids[-1] if key.breakpoint_ids else key.prefix_id
        self.create = create
        self.tracker = tracker
        self.flow = flow
        self.every_s = float(every_s)
        self.jitter_s = float(jitter)
        self.max_errors = max_errors
        self.auto = auto
        self._prices = prices
        self._rates: Rates | None = None
        self._lock = threading.Lock()  # (counters: the warmer's threads and the tracker's consumer)
        # Set around this warmer's calls: the tracker counts them in it and keeps it on each
        # call's context, so the warmer knows its own calls (not another warmer's).
        self._marker: list[int] = [0]
        self._calls = self._errors = self._in_a_row = 0
        self._cost = 0.0
        self._cost_known = tracker is not None  # (False once a warm call is unpriced)
        self._saving = 0.0
        self._tokens = 0  # the warmed prefix's tokens, from the last warm call
        self._arrivals: deque[float] = deque(maxlen=_MAX_ARRIVALS)
        self._last_seen: float | None = None  # the tracker's latest call time
        self._last_traffic: float | None = None  # the latest call (not warm) on the prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop_of_task: asyncio.AbstractEventLoop | None = None
        self._stopped_by_errors = False
        self._said_uncached = False
        if tracker is not None:
            # (traffic before the warmer watched is unknown: it counts from now)
            self._last_traffic = tracker._engine.clock()
            tracker._engine.read(tracker._engine.listeners.append, self._on_call)

    # -- one warm call ----------------------------------------------------------------------

    def warm(self) -> Any:
        """Warm now; the provider's response, or None when the call failed (logged, counted)."""
        before = self._marker[0]
        token = _warming.set(self._marker)
        try:
            with flow(self.flow):
                response = self.create(**self.request)
                if inspect.isawaitable(response):
                    with contextlib.suppress(Exception):
                        response.close()  # type: ignore[attr-defined]
                    raise TypeError("create is async: use awarm() or start_task()")
                self._record(response, before)
        except Exception as exc:
            self._failed(exc)
            return None
        finally:
            _warming.reset(token)
        self._succeeded()
        return response

    async def awarm(self) -> Any:
        """Warm now, from an event loop (``create`` async, or sync run in a thread)."""
        before = self._marker[0]
        token = _warming.set(self._marker)
        try:
            with flow(self.flow):
                if _is_async(self.create):
                    response = await self.create(**self.request)
                else:  # a sync client: in a thread (the context, and so the flow, goes with it)
                    response = await asyncio.to_thread(self.create, **self.request)
                    if inspect.isawaitable(response):
                        response = await response
                self._record(response, before)
        except Exception as exc:
            self._failed(exc)
            return None
        finally:
            _warming.reset(token)
        self._succeeded()
        return response

    def _record(self, response: Any, before: int) -> None:
        """Record the call with the tracker unless an instrumented client already did."""
        if self.tracker is not None and self._marker[0] == before:
            self.tracker.record(response, request=self.request, provider=self.provider, flow=self.flow)

    def _succeeded(self) -> None:
        with self._lock:
            self._calls += 1
            self._in_a_row = 0

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._calls += 1
            self._errors += 1
            self._in_a_row += 1
            stop = self._in_a_row >= self.max_errors
            if stop:
                self._stopped_by_errors = True
        logger.warning(
            "cachebench: a warm call for prefix %s failed: %s: %s", self.prefix_id, type(exc).__name__, exc
        )
        if stop:
            logger.warning(
                "cachebench: the warmer for prefix %s stops after %d failed calls in a row",
                self.prefix_id,
                self.max_errors,
            )
            self._stop.set()
            self._cancel_task()

    # -- the traffic, from the tracker's consumer ----------------------------------------------

    def _on_call(self, m: CallMetrics, ctx: Any) -> None:
        with self._lock:
            self._last_seen = m.timestamp if self._last_seen is None else max(self._last_seen, m.timestamp)
            if m.warm:
                if getattr(ctx, "warmer", None) is self._marker:
                    if self.prefix_id is not None:
                        with _LAST_WARMER_LOCK:
                            _LAST_WARMER.pop(self.prefix_id, None)
                            _LAST_WARMER[self.prefix_id] = self._marker
                            if len(_LAST_WARMER) > _MAX_LAST_WARMERS:
                                del _LAST_WARMER[next(iter(_LAST_WARMER))]
                    if m.cost_usd is None:
                        self._cost_known = False
                    else:
                        self._cost += m.cost_usd
                    if m.usage_known:
                        self._tokens = m.cache_read_tokens + m.cache_write_tokens or self._tokens
                        if not self._tokens and m.writes_reported and not self._said_uncached:
                            self._said_uncached = True
                            logger.warning(
                                "cachebench: a warm call for prefix %s read and wrote nothing: the prefix is"
                                " below the model's minimum, or the provider does not cache it; warming it"
                                " only costs",
                                self.prefix_id,
                            )
                return
            if self.prefix_id is None or self.prefix_id not in m.breakpoint_ids:
                return
            self._arrivals.append(m.timestamp)
            previous, self._last_traffic = self._last_traffic, m.timestamp
            gap = None if previous is None else m.timestamp - previous
            ttl_s = facts.ttl_seconds(self.ttl)
            with _LAST_WARMER_LOCK:
                mine = _LAST_WARMER.get(self.prefix_id) is self._marker
            if mine and gap is not None and gap > ttl_s and m.cache_read_tokens >= self._tokens > 0:
                rates = self._rates_or_none()
                if rates is not None:
                    self._saving += self._tokens * (rates.write(self.ttl) - rates.cache_read) / 1_000_000

    def _rates_or_none(self) -> Rates | None:
        if self._rates is None and self.model:
            try:
                self._rates = Rates.for_model(self.model, self.provider.value, prices=self._prices)
            except ValueError as exc:
                logger.warning("cachebench: the warmer cannot price %s: %s", self.model, exc)
                self.model = None
        return self._rates

    def _rate_per_hour(self) -> float:
        if self._last_seen is None:
            return 0.0
        since = self._last_seen - TRAFFIC_WINDOW_S
        return sum(1 for t in self._arrivals if t > since) * 3600.0 / TRAFFIC_WINDOW_S

    def pays(self) -> bool | None:
        """Whether warming pays at the traffic seen on the prefix (None while unpriced or before
        the first warm call measured the prefix)."""
        if self.tracker is not None:
            self.tracker.flush()
        with self._lock:
            tokens, rate = self._tokens, self._rate_per_hour()
        rates = self._rates_or_none()
        if rates is None or not tokens:
            return None
        value = warmer_value(rates, tokens, calls_per_hour=rate, interval_s=self.every_s, ttl=self.ttl)
        return value.pays

    @property
    def stats(self) -> WarmerStats:
        pays = self.pays() if self.auto else None
        with self._lock:
            return WarmerStats(
                self._calls,
                self._errors,
                self._cost if self._cost_known else None,
                self._saving,
                self._rate_per_hour(),
                self.running,
                pays,
                self._stopped_by_errors,
            )

    # -- on a schedule -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        thread, task = self._thread, self._task
        return (thread is not None and thread.is_alive()) or (task is not None and not task.done())

    def _due(self) -> bool:
        """On schedule: warm (not in auto mode, or when it pays; the first two times, to measure
        the prefix: when it still cannot tell after them, the model is unpriced or the prefix is
        not cached, and it does not warm)."""
        if not self.auto:
            return True
        pays = self.pays()
        if pays is None:  # (two calls measure even a prefix whose writes are not reported)
            if self._calls < 2:
                return True
            logger.warning(
                "cachebench: the warmer for prefix %s stops: it cannot tell whether warming pays (a model"
                " without prices, or a prefix the provider does not cache)",
                self.prefix_id,
            )
            self._stop.set()
            return False
        return pays

    def _interval(self) -> float:
        return max(0.0, self.every_s + random.uniform(-self.jitter_s, self.jitter_s))

    def _restart(self) -> None:
        if self.running:
            raise RuntimeError("this warmer is already running")
        self._stop.clear()
        with self._lock:
            self._in_a_row = 0
            self._stopped_by_errors = False

    def start(self) -> CacheWarmer:
        """Warm now and then every ``every_s`` in a daemon thread, until :meth:`stop` (the
        interval runs from each call's start). :meth:`close` it when done (or use ``with``):
        it watches the tracker's calls until then."""
        if _is_async(self.create):
            raise TypeError("create is async: use start_task() in its event loop")
        self._restart()
        self._thread = threading.Thread(target=self._loop, name="cachebench-warmer", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if self._due():
                    self.warm()
            except Exception as exc:  # (warm() never raises; pays() may, on a closed tracker)
                logger.warning("cachebench: the warmer for prefix %s: %s", self.prefix_id, exc)
            if self._stop.wait(max(0.0, self._interval() - (time.monotonic() - began))):
                break

    def start_task(self) -> asyncio.Task[None]:
        """Warm now and then every ``every_s`` in an asyncio task of the running loop, until
        :meth:`astop` (or the task is cancelled)."""
        self._restart()
        self._loop_of_task = asyncio.get_running_loop()
        self._task = self._loop_of_task.create_task(self._aloop(), name="cachebench-warmer")
        return self._task

    async def _aloop(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    # (pays() waits for the tracker's queue: in a thread, never on the loop)
                    if not self.auto or await asyncio.to_thread(self._due):
                        await self.awarm()
                except Exception as exc:
                    logger.warning("cachebench: the warmer for prefix %s: %s", self.prefix_id, exc)
                await asyncio.sleep(max(0.0, self._interval() - (time.monotonic() - began)))

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the schedule, from any thread (a thread's warm call in flight finishes first,
        up to ``timeout``; an asyncio task is cancelled on its loop)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._cancel_task()

    def _cancel_task(self) -> None:
        task, loop = self._task, self._loop_of_task
        if task is None or loop is None or task.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:  # (a task is cancelled on its own loop's thread)
            with contextlib.suppress(RuntimeError):  # its loop is closed: the task is gone with it
                loop.call_soon_threadsafe(task.cancel)

    async def astop(self) -> None:
        """Stop the asyncio task and wait for it to end."""
        self._stop.set()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close(self) -> None:
        """Stop, and stop watching the tracker's calls."""
        self.stop()
        tracker = self.tracker
        if tracker is not None and not tracker._engine.closed:
            tracker._engine.read(_remove, tracker._engine.listeners, self._on_call)

    def __enter__(self) -> CacheWarmer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_async(fn: Callable[..., Any]) -> bool:
    """An async SDK method (``AsyncAnthropic().messages.create``), or a wrapper of one."""
    target = getattr(fn, "__wrapped__", fn)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(target)


def _remove(listeners: list[Any], listener: Any) -> None:
    if listener in listeners:
        listeners.remove(listener)


def _implicit_ttl(provider: Provider) -> str:
    return {"gemini": facts.GEMINI_IMPLICIT_TTL}.get(provider.value, "5m")
