"""The call path of one :class:`~cachebench.tracker.CacheTracker`: a short part on the caller's
thread and everything else on one consumer thread.

One call, start to end::

    caller's thread (kept short)
      begin     flow name; adapter.parse_request -> Prompt; fingerprint.key -> PrefixKey;
                with a policy, the hold (a look at the cache view decides if the call writes)
      BEGIN     queued: the consumer computes what the call should read, as of its start,
                and counts it among the in-flight writers of a cold prefix
      the SDK call itself (never touched)
      STARTED   queued when a stream's response starts (its entry is readable from then on)
      finish    queued END with the response (or the stream's accumulator): usage is read
                on the consumer; then the policy's gate lets held twins go
    consumer (one thread, one writer: no lock in the analysis)
      END       usage -> pricing -> miss cause -> regressions -> stats, cache view -> callbacks

Readers (``calls()``, ``aggregate()``, ...) run *on the consumer* after everything queued
before them, so a read after a call sees it and the alerts it raised; a reader called from
a callback (already on the consumer) runs at once. Everything cachebench does runs under
the :class:`~cachebench._guard.Guard`: the caller gets the SDK's response or the SDK's own
exception, unchanged, and never waits on the analysis (unless the queue is full: then a
caller waits for room, at most :data:`ROOM_WAIT_S`, and the call is dropped and counted if
none comes).

A garbage-collector finalizer (an abandoned stream) may run at any allocation, including
inside a lock the interrupted code holds, so it only queues (:meth:`Engine.later`):
``SimpleQueue.put`` is reentrant and takes no lock a finalizer could interrupt.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._alerts import default_alert, default_regression
from ._flow import current_flow, default_flow, warming
from ._guard import Guard, logger
from .diagnose import FlowDetector, miss_cause
from .expect import ALIVE, CacheView, Expectation, cacheable_from
from .fingerprint import key as prefix_key
from .policy import Gate, Hold
from .pricing import PriceTable
from .providers._stream import observe_result
from .stats import Stats
from .types import (
    UNKNOWN_USAGE,
    UNPRICED,
    CallMetrics,
    Cost,
    MissCause,
    PrefixDiff,
    PrefixKey,
    Prompt,
    Regression,
    Usage,
)

if TYPE_CHECKING:
    from .providers._base import Adapter
    from .store import StoreWriter

__all__ = [
    "MAX_TOKENS",
    "QUEUE_LIMIT",
    "RECENT_WRITE_S",
    "ROOM_WAIT_S",
    "CallContext",
    "Engine",
    "observing",
]

T = TypeVar("T")

# No call reads, writes or produces this many tokens: a count above it is corrupt input
# (a logged body mangled, an overflowed counter), refused rather than added to the totals.
MAX_TOKENS = 10**12
#: Work items the consumer may lag behind by before callers wait for room.
QUEUE_LIMIT = 20_000
#: How long a caller waits for room in a full queue before its call is dropped (and counted).
ROOM_WAIT_S = 2.0
#: How long interpreter exit waits for each tracker's consumer to finish what is queued.
EXIT_WAIT_S = 5.0
#: With a policy, a prefix a call wrote this recently (tracker clock) makes no twin a writer.
RECENT_WRITE_S = 60.0
#: Prefixes remembered as recently written, oldest dropped first.
MAX_RECENT_WRITES = 4096

# The call a shell of this engine is observing while the SDK runs. One SDK call can pass
# through several shells of one tracker (``wrap(client.messages.create)`` on an
# ``instrument``-ed client, a wrap of a wrap, a ``with_streaming_response`` manager entered
# later): the outermost records it, the inner ones only pass it through and, when they were
# given a ``flow=`` of their own, name it (the innermost explicit flow wins). One SDK call
# is one record.
observing: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "cachebench_observing", default=None
)

EMPTY_KEY = PrefixKey(None, None, (), (), (), (), (), 0, 0, -1, 0, full=((), ()))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class CallContext:
    """One call: what the caller learned before it and how it ended, handed to the consumer.

    The caller's thread writes its fields before it queues the call's BEGIN or END; the
    consumer writes ``begun``, ``exp``, ``write_key``, ``flying``, ``concurrent`` and
    ``metrics``, and reads the caller's fields only after the item that handed them over. No
    field is written by both."""

    __slots__ = (
        "adapter",
        "batch",
        "begun",
        "concurrent",
        "elapsed_ms",
        "engine",
        "error",
        "exp",
        "exp_version",
        "finished",
        "flow",
        "flying",
        "gate_key",
        "hold",
        "key",
        "live",
        "metrics",
        "observing",
        "prompt",
        "queued",
        "request",
        "span",
        "started",
        "stream",
        "t0",
        "timestamp",
        "usage",
        "warm",
        "warmer",
        "write_key",
    )

    def __init__(
        self,
        engine: Engine,
        adapter: Adapter,
        request: Mapping[str, Any],
        flow: str,
        timestamp: float,
        *,
        live: bool = True,
    ) -> None:
        self.engine = engine
        self.adapter = adapter
        self.request = request
        self.flow = flow
        self.timestamp = timestamp
        self.live = live  # a call happening now (record() replays one that already happened)
        self.warm = False  # a cache warmer's call
        self.warmer: object = None  # (which warmer's: the marker it set)
        self.stream = adapter.is_stream_request(request)
        self.finished = False
        self.observing = False  # a stream or manager took over finishing the call
        self.started = False
        self.queued = False  # BEGIN was handed to the consumer
        self.prompt: Prompt | None = None
        self.key: PrefixKey = EMPTY_KEY
        self.hold: Hold | None = None
        self.gate_key: int | None = None  # the cold prefix the policy's gate holds twins on
        self.usage: Usage | Callable[[], Usage] = UNKNOWN_USAGE
        self.error: BaseException | None = None
        self.elapsed_ms: float | None = None
        self.t0 = time.perf_counter()
        self.begun = False
        self.exp: Expectation | None = None
        self.exp_version = -1  # the view's version when ``exp`` was taken
        self.write_key: int | None = None  # the chained hash of the cold prefix this call writes
        self.flying = False  # counted among the in-flight writers of write_key
        self.concurrent = False  # a twin was already writing write_key when this call went out
        self.metrics: CallMetrics | None = None
        self.span: Any = None  # the tracing span current at the call's start (with an exporter)
        self.batch = False  # sent through the provider's batch API (an import's): its batch price

    # -- the caller's side ----------------------------------------------------------------

    def held(self, hold: Hold) -> None:
        """The policy let this call go: restart its clocks if it waited."""
        self.hold = hold
        if hold.held_ms:
            self.timestamp = self.engine.clock()
            self.t0 = time.perf_counter()

    def response_started(self) -> None:
        """The provider has begun answering: its new cache entry is readable from now on.

        A finished response lets its twins go only after its END is queued (:meth:`finish`),
        so a held twin's expectation sees the entry; a stream lets them go at its first event."""
        if self.started:
            return
        self.started = True
        if self.stream:
            self.engine.submit(self.engine._on_started, self)
            self._tell_gate(started=True)

    def finished_response(self, result: Any) -> None:
        """Record a finished (non-stream) response; its usage is read on the consumer."""
        self.started = True
        self.finish(functools.partial(self.adapter.usage, result), None)

    def finish(self, usage: Usage | Callable[[], Usage], error: BaseException | None) -> None:
        """The call is over: queue its END (usage, or a function the consumer reads it with)."""
        if self.finished:
            return
        self.finished = True
        if self.live:  # (a replayed call brought its own duration, if any)
            self.elapsed_ms = (time.perf_counter() - self.t0) * 1000.0
        self.usage = usage
        self.error = error
        engine = self.engine
        engine.submit(engine._on_end, self)  # never waits: the room for it was found at BEGIN
        if self.hold is not None:
            if self.started and error is None and not self.stream:
                self._tell_gate(started=True)  # a finished response: its entry is readable
            self._tell_gate(started=False)

    def _tell_gate(self, *, started: bool) -> None:
        """Tell the policy's gate this call's response started, or that the call is over."""
        if started and self.gate_key is not None:
            self.engine.wrote(self.gate_key, self.timestamp)
        gate = self.engine.gate
        if self.hold is not None and gate is not None:
            self.engine.guard.call(
                "policy", gate.started if started else gate.finished, self.gate_key, self.hold
            )

    def tracker_failed(self, stage: str, exc: BaseException) -> None:
        self.engine.guard.failed(stage, exc)

    def guarded(self, fn: Callable[..., T], *args: Any) -> T | None:
        return self.engine.guard.call("observe", fn, *args)


class _Consumer:
    """The consumer thread and its queue. Holds no reference to the :class:`Engine`, so an
    engine nobody uses any more is collected, and its finalizer stops the thread."""

    __slots__ = ("error", "ident", "on_idle", "queue", "strict", "thread")

    def __init__(self, strict: bool, on_idle: Callable[[], object] | None = None) -> None:
        self.queue: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self.thread: threading.Thread | None = None
        self.ident: int | None = None
        self.strict = strict
        self.error: BaseException | None = None  # a strict guard's error, raised at the next read
        # Run whenever the queue has just emptied (the store writes its batch then).
        self.on_idle = on_idle

    def run(self) -> None:
        self.ident = threading.get_ident()
        get = self.queue.get
        empty = self.queue.empty
        while True:
            item = get()
            if item is None:
                return
            self.handle(*item)
            del item
            if self.on_idle is not None and empty():
                self.handle(self.on_idle, ())

    def handle(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Run one item. What escapes it is a strict guard's re-raise (kept for the next read)
        or a bug (logged): never the caller's, never the end of the consumer."""
        try:
            fn(*args)
        except BaseException as exc:
            if self.strict:
                if self.error is None:
                    self.error = exc
            else:
                logger.error("cachebench: internal error on the consumer: %r", exc, exc_info=exc)

    def drain_here(self) -> None:
        """Run what is queued on this thread: the consumer cannot (the interpreter is
        finishing and no thread may start)."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.handle(*item)

    def stop(self) -> None:
        self.queue.put(None)  # reentrant: safe from a finalizer


class _Answer:
    """A reader's request to the consumer: run ``fn`` there and hand back what it returned."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Engine:
    """Runs every tracked call of one tracker. Not public: ``CacheTracker._engine``.

    ``owner`` is the tracker, held weakly; its ``on_miss_alert`` and ``on_regression`` are
    read when one fires, so reassigning them on the tracker takes effect at once.
    """

    def __init__(
        self,
        owner: Any,
        *,
        threshold: float,
        capture_text: bool,
        gate: Gate | None,
        max_prefixes: int,
        max_calls: int,
        prices: Mapping[str, Mapping[str, float]] | None,
        clock: Callable[[], float],
        strict: bool,
        writer: StoreWriter | None = None,
    ) -> None:
        # Weak: the tracker holds its engine, and a cycle would keep both (and every recorded
        # call) alive until the cycle collector runs.
        self._owner: Callable[[], Any] = weakref.ref(owner)
        self.clock = clock
        self.guard = Guard(strict=strict)
        self.gate = gate
        self.dropped = 0  # calls not recorded: the queue stayed full, or made after close() (logged)
        self.dropped_after_close = 0
        self._dropped_lock = threading.Lock()
        self._shedding = False  # the queue stayed full: drop at once until it drains to half
        self.closed = False
        # The analysis state: touched only on the consumer thread.
        self.prices = PriceTable(prices)
        self.stats = Stats(max_prefixes, max_calls)
        self.view = CacheView(max_entries=max_prefixes * 8)
        self.inflight: dict[int, int] = {}  # cold prefix -> calls writing it, response not started
        # Written by callers' threads: prefixes a call just wrote (its response started), by the
        # tracker's clock. With a policy, a call for one of them is no writer even while the
        # consumer, lagging behind, has not put the write in the cache view yet.
        self.recent_writes: dict[int, float] = {}
        self._opened: list[Regression] = []
        self.detector = FlowDetector(threshold, capture_text, max_prefixes, self._opened.append)
        # Where finished calls go besides the stats: the store's batch writer, and exporters'
        # listeners (each called on the consumer with the metrics and the call's context).
        self.writer = writer
        self.listeners: list[Callable[[CallMetrics, CallContext], object]] = []
        # With a span exporter: reads the tracing span current on the caller's thread.
        self.span_of: Callable[[], Any] | None = None
        self._consumer = _Consumer(strict, self._idle if writer is not None else None)
        self._start_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _Consumer.stop, self._consumer)
        self._finalizer.atexit = False
        _ENGINES.add(self)

    # -- the queue ------------------------------------------------------------------------

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` for the consumer (starting it if it is not running). On the
        consumer itself (a stream ended by a finalizer, a tracked call from a callback) it
        runs at once, so a read queued meanwhile sees it."""
        consumer = self._consumer
        if consumer.ident == threading.get_ident():
            consumer.handle(fn, args)  # a strict error is kept for the next read, not raised here
            return
        consumer.queue.put((fn, args))
        if consumer.thread is None:
            self._start(consumer)

    def later(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` from a finalizer: no lock, no wait, no thread start (the next
        call or read starts the consumer if it is not running yet)."""
        self._consumer.queue.put((fn, args))

    def _room(self) -> bool:
        """Whether a new call may be recorded. When the consumer lags :data:`QUEUE_LIMIT`
        items behind, a caller's thread waits for room, at most :data:`ROOM_WAIT_S`; if none
        comes, calls are dropped (not recorded, logged and counted) at once, without waiting,
        until the queue has drained to half. An event loop's thread and the consumer itself
        never wait."""
        consumer = self._consumer
        size = consumer.queue.qsize()
        if self._shedding:
            if size > QUEUE_LIMIT // 2:
                return self._drop(size)
            self._shedding = False
        if size < QUEUE_LIMIT:
            return True
        if consumer.ident == threading.get_ident() or _in_event_loop():
            return self._drop(size)
        deadline = time.monotonic() + ROOM_WAIT_S
        while consumer.queue.qsize() >= QUEUE_LIMIT:
            if time.monotonic() >= deadline:
                self._shedding = True
                return self._drop(consumer.queue.qsize())
            time.sleep(0.001)
        return True

    def _count_dropped(self, after_close: bool) -> int | None:
        """Count one call not recorded; the count of its kind when it is to be logged (the
        first, then every 1,000th), else None."""
        with self._dropped_lock:
            self.dropped += 1
            if after_close:
                self.dropped_after_close += 1
            n = self.dropped_after_close if after_close else self.dropped
        return n if n == 1 or n % 1000 == 0 else None

    def _drop(self, size: int) -> bool:
        n = self._count_dropped(after_close=False)
        if n is not None:
            logger.warning(
                "cachebench: the consumer is %d items behind; %d call(s) not recorded so far "
                "(is an on_miss_alert or on_regression callback blocking?)",
                size,
                n,
            )
        return False

    def _drop_closed(self) -> None:
        """A call after :meth:`close`: not recorded, counted with the dropped ones, logged."""
        n = self._count_dropped(after_close=True)
        if n is not None:
            logger.warning(
                "cachebench: %d call(s) made after the tracker was closed, not recorded (a wrapper "
                "or record() of a closed CacheTracker)",
                n,
            )

    def _start(self, consumer: _Consumer) -> None:
        if sys.is_finalizing():
            return  # no thread may start now; a read runs what is queued on its own thread
        with self._start_lock:
            if consumer.thread is not None:
                return
            thread = threading.Thread(target=consumer.run, name="cachebench-consumer", daemon=True)
            thread.start()
            consumer.thread = thread

    def read(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """``fn(*args)`` run on the consumer after everything queued before it (and the
        callbacks it triggered); at once when called on the consumer (from a callback).
        A strict guard's error raised on the consumer is raised here."""
        consumer = self._consumer
        if threading.get_ident() == consumer.ident:
            return fn(*args)
        if self.closed or sys.is_finalizing():
            # No consumer runs (closed, or the interpreter is finishing: its thread is frozen
            # and none may start): what is queued runs here, then the read.
            consumer.drain_here()
            self._raise_consumer_error(consumer)
            return fn(*args)
        answer = _Answer()
        self.submit(self._answer, answer, fn, args)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not answer.done.wait(1.0):
            thread = consumer.thread
            if sys.is_finalizing():
                consumer.drain_here()  # the consumer is frozen: answer from this thread
                self._raise_consumer_error(consumer)
                return fn(*args)
            if thread is not None and not thread.is_alive() and consumer is self._consumer:
                consumer.thread = None  # stopped under us: start another
                self._start(consumer)
            if consumer is not self._consumer:  # forked: the parent's queue is gone
                self.submit(self._answer, answer, fn, args)
                consumer = self._consumer
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("cachebench: the consumer did not answer in time")
        self._raise_consumer_error(consumer)
        if answer.error is not None:
            raise answer.error
        return answer.value  # type: ignore[no-any-return]

    @staticmethod
    def _raise_consumer_error(consumer: _Consumer) -> None:
        error, consumer.error = consumer.error, None
        if error is not None:
            raise error

    @staticmethod
    def _answer(answer: _Answer, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            answer.value = fn(*args)
        except BaseException as exc:
            answer.error = exc
        finally:
            answer.done.set()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued so far is recorded (in the store too, if any) and its
        callbacks have run."""
        self.read(self._write_all if self.writer is not None else _nothing, timeout=timeout)

    def _idle(self) -> None:
        """The queue has just emptied: the store writes what is pending."""
        writer = self.writer
        if writer is not None:
            self.guard.call("store", writer.write, self.detector.incidents, False)

    def _write_all(self) -> None:
        writer = self.writer
        if writer is not None:
            self.guard.call("store", writer.write, self.detector.incidents, True)

    def close(self) -> None:
        """Flush, then stop the consumer: later calls through this engine's wrappers are not
        recorded, and reads answer on the reader's thread."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        consumer = self._consumer
        consumer.stop()
        thread = consumer.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(EXIT_WAIT_S)
        consumer.drain_here()  # what a finalizer queued meanwhile
        if self.writer is not None:
            self._write_all()
            self.guard.call("store", self.writer.close)

    def _after_fork(self) -> None:
        """In a forked child: a fresh queue and no thread (the parent's did not come along),
        and no call in flight (the parent's calls are not the child's)."""
        self._consumer = _Consumer(self.guard.strict, self._consumer.on_idle)
        if self.writer is not None:
            self.writer.after_fork()
        self._start_lock = threading.Lock()
        self._dropped_lock = threading.Lock()
        self.guard.after_fork()
        if self.gate is not None:
            self.gate.after_fork()
        self.inflight.clear()
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _Consumer.stop, self._consumer)
        self._finalizer.atexit = False

    # -- the caller's thread --------------------------------------------------------------

    def begin(
        self,
        adapter: Adapter,
        request: Mapping[str, Any],
        flow: str | None,
        *,
        hold: bool = True,
        live: bool = True,
        timestamp: float | None = None,
    ) -> CallContext | None:
        """Everything before the SDK call. With a policy and ``hold``, a thread may wait here;
        async callers pass ``hold=False`` and await :meth:`ahold` instead. ``live=False``
        (``record()`` of a call that already happened) never holds and is never in flight."""
        if self.closed:
            self._drop_closed()
            return None
        # (_room() is called only when the queue is long or calls are being shed)
        if (self._shedding or self._consumer.queue.qsize() >= QUEUE_LIMIT) and not self._room():
            return None
        try:
            name = flow or current_flow() or default_flow(1)  # (from the frame calling begin)
            ctx = CallContext(
                self, adapter, request, name, self.clock() if timestamp is None else timestamp, live=live
            )
            counter = warming()
            if counter is not None:
                ctx.warm = True
                ctx.warmer = counter
                counter[0] += 1
            prompt = adapter.parse_request(request)
            key = prefix_key(prompt)
            ctx.prompt = prompt
            ctx.key = key
            # With a policy, an advisory look from this thread (dict lookups; the consumer is
            # the only writer): is the prefix this call would write cold? Then twins may wait.
            if (
                self.gate is not None
                and live
                and key.breakpoints
                and self.view.state(key.bp_hashes[-1], ctx.timestamp) != ALIVE
                and not self._written_lately(key.bp_hashes[-1], ctx.timestamp)
            ):
                ctx.gate_key = key.bp_hashes[-1]
            if self.span_of is not None:
                ctx.span = self.span_of()
        except Exception as exc:
            self.guard.failed("begin", exc)
            return None
        if ctx.gate_key is None:
            ctx.queued = True
            self.submit(self._on_begin, ctx)
        elif hold and not _in_event_loop() and self._consumer.ident != threading.get_ident():
            self._hold(ctx)  # (a tracked call from a callback never holds the consumer)
        return ctx

    def _written_lately(self, h: int, now: float) -> bool:
        written = self.recent_writes.get(h)
        return written is not None and 0.0 <= now - written < RECENT_WRITE_S

    def wrote(self, h: int, when: float) -> None:
        """A call whose prefix ``h`` was cold got its response started: ``h`` is written."""
        recent = self.recent_writes
        recent[h] = when
        if len(recent) > MAX_RECENT_WRITES:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del recent[next(iter(recent))]  # the oldest (another thread may race us: fine)

    def _hold(self, ctx: CallContext) -> None:
        gate = self.gate
        hold = self.guard.call("policy", gate.enter, ctx.gate_key) if gate is not None else None
        if hold is not None:
            ctx.held(hold)
        self._queue_begin(ctx)

    async def ahold(self, ctx: CallContext | None) -> None:
        """The policy's hold for an async call (never blocks the event loop)."""
        if ctx is None or ctx.queued:
            return
        gate = self.gate
        if gate is not None and ctx.gate_key is not None:
            try:
                ctx.held(await gate.aenter(ctx.gate_key))
            except Exception as exc:
                self.guard.failed("policy", exc)
        self._queue_begin(ctx)

    def _queue_begin(self, ctx: CallContext) -> None:
        ctx.queued = True
        self.submit(self._on_begin, ctx)

    def fail(self, ctx: CallContext, exc: BaseException) -> None:
        ctx.finish(UNKNOWN_USAGE, exc)

    def observe(self, result: Any, ctx: CallContext | None) -> Any:
        if ctx is None:
            return result
        if not ctx.queued:
            self._queue_begin(ctx)  # a call that skipped its hold (a sync call inside a loop)
        try:
            return observe_result(result, ctx)
        except Exception as exc:
            self.guard.failed("observe", exc)
            return result

    def record(
        self,
        adapter: Adapter,
        response: Any,
        request: Mapping[str, Any],
        flow: str | None,
        *,
        timestamp: float | None,
        elapsed_ms: float | None,
        wait: bool = True,
        batch: bool = False,
    ) -> CallMetrics | None:
        """A call made some other way: BEGIN and END at once, then wait for its metrics (with
        ``wait=False``, an import's, return None at once: ``flush()`` waits for them all)."""
        ctx = self.begin(adapter, request, flow, live=False, timestamp=timestamp)
        if ctx is None:
            return None
        ctx.stream = False
        ctx.batch = batch
        ctx.elapsed_ms = elapsed_ms
        ctx.started = True
        ctx.finish(functools.partial(adapter.recorded_usage, response, request), None)
        return self.read(_metrics_of, ctx) if wait else None

    # -- the consumer ---------------------------------------------------------------------

    def _on_begin(self, ctx: CallContext) -> None:
        """What the call should read, as of its start; and whether it writes a cold prefix
        some twin is already writing (``concurrent``)."""
        ctx.begun = True
        prompt = ctx.prompt
        key = ctx.key
        if prompt is None or not key.breakpoints:
            return
        try:
            exp = ctx.exp = self.view.expect(key, prompt.implicit, ctx.timestamp)
            ctx.exp_version = self.view.version
            if ctx.live and exp.breakpoint_states[-1] != ALIVE:
                k = ctx.write_key = key.bp_hashes[-1]
                n = self.inflight.get(k, 0)
                ctx.concurrent = n > 0
                self.inflight[k] = n + 1
                ctx.flying = True
        except Exception as exc:
            self.guard.failed("begin", exc)

    def _on_started(self, ctx: CallContext) -> None:
        if not ctx.begun:
            self._on_begin(ctx)
        self._land(ctx)

    def _land(self, ctx: CallContext) -> None:
        k = ctx.write_key
        if not ctx.flying or k is None:
            return
        ctx.flying = False
        n = self.inflight.get(k, 1) - 1
        if n > 0:
            self.inflight[k] = n
        else:
            self.inflight.pop(k, None)

    def _on_end(self, ctx: CallContext) -> None:
        if not ctx.begun:
            self._on_begin(ctx)
        self._land(ctx)
        try:
            usage = ctx.usage
            if callable(usage):
                usage = self.guard.call("usage", usage) or UNKNOWN_USAGE
            ctx.metrics = self._complete(ctx, usage)
        except Exception as exc:
            self.guard.failed("record", exc)

    def _complete(self, ctx: CallContext, usage: Usage) -> CallMetrics:
        """Price, explain and store one finished call; run the callbacks it triggers."""
        adapter = ctx.adapter
        prompt = ctx.prompt
        key = ctx.key
        error = ctx.error
        model = (
            usage.model
            or (prompt.model if prompt is not None else None)
            or adapter.request_model(ctx.request)
        )
        counts = (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens, usage.output_tokens)
        if usage.known and max(counts) > MAX_TOKENS:
            self.guard.refuse(
                "usage",
                f"refused a usage of more than {MAX_TOKENS:,} tokens in flow {ctx.flow!r} "
                f"(input, cache read, cache write, output: {counts}); the call is recorded "
                "with its usage unknown",
            )
            usage = UNKNOWN_USAGE._replace(model=usage.model, diagnostics=usage.diagnostics)
        usage = apply_ttl_hint(usage, key)
        batch = ctx.batch
        cost = self.guard.call("pricing", self.prices.cost, adapter.NAME, model, usage, ctx.timestamp, batch)
        if cost is None:
            cost = UNPRICED
        exp = ctx.exp
        unexpected = False
        cause: MissCause | None = None
        diff: PrefixDiff | None = None
        avoidable_tokens = 0
        avoidable_cost: float | None = 0.0 if cost.cost_usd is not None else None
        implicit = prompt.implicit if prompt is not None else False
        min_tokens = adapter.min_cacheable(model)
        tolerance = adapter.read_tolerance(model)  # a shortfall this small is no miss
        if exp is not None and usage.known and error is None:
            # The first breakpoint whose prefix reaches the minimum (those before it are no cache
            # entries): for the cause and for the diagnosis.
            first_layer = 0 if implicit else cacheable_from(key, usage, min_tokens)
            unexpected, cause = miss_cause(
                self.view,
                key,
                usage,
                exp,
                implicit=implicit,
                tolerance=tolerance,
                min_tokens=min_tokens,
                first_layer=first_layer,
                concurrent=ctx.concurrent,
                timestamp=ctx.timestamp,
                elapsed_ms=ctx.elapsed_ms,
            )
            read = usage.cache_read_tokens
            den = read + usage.cache_write_tokens if usage.writes_reported else exp.tokens
            try:
                # What the cache holds now: a twin that finished first may have written it.
                states = exp.breakpoint_states
                done = exp
                if states.count(ALIVE) != len(states) and ctx.exp_version != self.view.version:
                    done = self.view.expect(key, implicit, ctx.timestamp)

                def premium() -> float | None:
                    """What the call's writes paid beyond plain input."""
                    if not usage.cache_write_tokens:
                        return None
                    return self._priced_difference(
                        adapter.NAME, model, usage, cost, _as_input(usage), ctx.timestamp, batch
                    )

                def price(layer: int) -> tuple[int, float | None]:
                    """An avoidable miss's tokens, and what it paid beyond reading them."""
                    tokens = _avoidable_tokens(key, usage, min(read, den), den, layer)
                    if not tokens:
                        return 0, None
                    instead = _read_instead(usage, tokens)
                    return tokens, self._priced_difference(
                        adapter.NAME, model, usage, cost, instead, ctx.timestamp, batch
                    )

                found = self.detector.observe(
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
                    premium,
                    price,
                    first_layer,
                )
                cause, diff = found.cause, found.diff
                avoidable_tokens = found.avoidable_tokens
                if found.avoidable_cost is not None:
                    avoidable_cost = found.avoidable_cost
            except Exception as exc:
                self.guard.failed("detect", exc)
        # What the provider would serve of the expected entry: its reads come in steps.
        step = adapter.read_step(model)
        expected = 0 if exp is None else exp.tokens - exp.tokens % step if step else exp.tokens
        metrics = CallMetrics(
            provider=adapter.NAME,
            model=model,
            flow=ctx.flow,
            prefix_id=key.prefix_id,
            breakpoint_ids=key.breakpoint_ids,
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=usage.output_tokens,
            elapsed_ms=ctx.elapsed_ms,
            timestamp=ctx.timestamp,
            cost_usd=cost.cost_usd,
            cost_without_cache_usd=cost.cost_without_cache_usd,
            cost_saved_usd=cost.cost_saved_usd,
            expected_read_tokens=expected,
            unexpected_miss=unexpected,
            miss_cause=cause,
            usage_known=usage.known,
            held_ms=ctx.hold.held_ms if ctx.hold is not None else 0.0,
            diagnostics=usage.diagnostics,
            error=None if error is None else f"{type(error).__name__}: {error}"[:500],
            writes_reported=usage.writes_reported,
            unpriced=cost.unpriced,
            stream=ctx.stream,
            diff=diff,
            avoidable_cost_usd=avoidable_cost,
            avoidable_tokens=avoidable_tokens,
            warm=ctx.warm,
        )
        self.stats.add(metrics, key.prefix_hash)
        if self.writer is not None and self.writer.add(metrics):
            self._idle()  # the batch is due: the queue may not empty for a while
        for listener in self.listeners:
            self.guard.call("export", listener, metrics, ctx)
        if exp is not None and error is None:
            self.view.observe(key, usage, exp, implicit, ctx.timestamp, adapter.DEFAULT_TTL, min_tokens)
        if self._opened:
            opened, self._opened = self._opened, []
            self.detector.on_open = self._opened.append
            self._announce(opened)
        if unexpected:
            owner = self._owner()  # None once the tracker is gone (a wrapper outlived it)
            on_miss = owner.on_miss_alert if owner is not None else default_alert
            self.guard.user_callback("on_miss_alert", on_miss, metrics)
        return metrics

    def _priced_difference(
        self,
        provider: str,
        model: str | None,
        usage: Usage,
        cost: Cost,
        other: Usage,
        timestamp: float,
        batch: bool = False,
    ) -> float | None:
        """What the call paid beyond what ``other`` usage would have cost (None if unpriced)."""
        if cost.cost_usd is None:
            return None
        alternative = self.prices.cost(provider, model, other, timestamp, batch)
        if alternative.cost_usd is None:
            return None
        return max(0.0, cost.cost_usd - alternative.cost_usd)

    def _announce(self, opened: list[Regression]) -> None:
        owner = self._owner()
        for regression in opened:
            on_regression = owner.on_regression if owner is not None else None
            if on_regression is None:
                default_regression(regression)
            else:
                self.guard.user_callback("on_regression", on_regression, regression)


def _as_input(usage: Usage) -> Usage:
    """The usage had the call's cache writes been plain input (what a write pays beyond it)."""
    return usage._replace(
        input_tokens=usage.input_tokens + usage.cache_write_tokens,
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
    )


def _read_instead(usage: Usage, tokens: int) -> Usage:
    """The usage had ``tokens`` more been read from the cache: taken from the writes first,
    then from the plain input."""
    from_writes = min(tokens, usage.cache_write_tokens)
    from_input = min(tokens - from_writes, usage.input_tokens)
    write_1h = usage.cache_write_1h_tokens
    return usage._replace(
        input_tokens=usage.input_tokens - from_input,
        cache_read_tokens=usage.cache_read_tokens + from_writes + from_input,
        cache_write_tokens=usage.cache_write_tokens - from_writes,
        cache_write_1h_tokens=min(write_1h, usage.cache_write_tokens - from_writes),
    )


def _avoidable_tokens(key: PrefixKey, usage: Usage, hit: int, den: int, layer: int) -> int:
    """What an avoidable miss did not read, less what it read: with a change at ``layer``, the
    prefix through that layer or through the last breakpoint before the newest turn, whichever
    ends later (the flow's earlier calls had cached them; the newest turn's own layers are
    written anyway); with no change (a twin's write, the provider's miss), all that was
    cacheable. Token counts per position are byte shares of what the call reported."""
    bps = key.breakpoints
    if not bps:
        return 0
    if 0 <= layer < len(bps):
        through = key.bp_bytes[layer]
        if key.prefix_end in bps:
            through = max(through, key.bp_bytes[bps.index(key.prefix_end)])
    else:
        through = key.bp_bytes[-1]
    if usage.writes_reported:
        cacheable, last, read = den, key.bp_bytes[-1], hit  # read + written: through the last breakpoint
    else:
        cacheable, last, read = usage.total_input_tokens, key.total_bytes, usage.cache_read_tokens
    if last <= 0:
        return 0
    reachable = min(cacheable, round(cacheable * through / last))
    return max(0, reachable - read)


def _nothing() -> None:
    return None


def _metrics_of(ctx: CallContext) -> CallMetrics | None:
    return ctx.metrics


def apply_ttl_hint(usage: Usage, key: PrefixKey) -> Usage:
    """Without a 5m/1h split in the response, take the TTL from the request's markers: the
    writes are 1h only when every marker asked for 1h."""
    if usage.ttl_split_reported or not usage.cache_write_tokens or not key.ttls:
        return usage
    if all(t == "1h" for t in key.ttls) and usage.cache_write_1h_tokens == 0:
        return usage._replace(cache_write_1h_tokens=usage.cache_write_tokens)
    return usage


# Every engine alive, for interpreter exit (drain what is queued) and fork (a fresh consumer).
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drain_at_exit() -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    for engine in list(_ENGINES):
        left = deadline - time.monotonic()
        if left <= 0:
            logger.warning("cachebench: exiting before every tracker finished recording")
            return
        try:
            engine.flush(timeout=left)
        except BaseException as exc:  # never fail the interpreter's exit
            logger.warning("cachebench: could not finish recording at exit: %r", exc)


def _after_fork_in_child() -> None:
    for engine in list(_ENGINES):
        try:
            engine._after_fork()
        except Exception as exc:  # one tracker's failure must not leave the others the parent's
            logger.warning("cachebench: could not prepare a tracker for the forked child: %r", exc)
    # A multiprocessing child (fork) ends with os._exit: no atexit. It runs multiprocessing's
    # own finalizers instead; those registered before its start are cleared, the after-fork
    # hooks run next, so one of those registers the drain.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _ENGINES:
        mp_util.register_after_fork(_MP_CHILD, _drain_at_multiprocessing_exit)


class _Marker:
    """A key for multiprocessing's after-fork registry (it holds its keys weakly)."""


_MP_CHILD = _Marker()


def _drain_at_multiprocessing_exit(_: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _drain_at_exit, exitpriority=100)


atexit.register(_drain_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
