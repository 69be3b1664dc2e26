"""Cache policies: what cachebench may do around a call to avoid paying for a miss.

``CachePolicy.miss_aware(delay_ms, max_retries)`` describes single-flight holds: a call
whose prefix is cold and already being written by an in-flight twin waits until that twin's
response starts (a provider entry becomes readable only then) or ``delay_ms`` passes, so N
parallel cold calls pay one write instead of N. ``max_retries`` bounds how many holds one
call may take; with 0 the gate never holds.

A hold only delays the caller's own call, before it is sent: nothing is cancelled, queued
elsewhere or sent twice, and a call that waited is sent exactly as it would have been.
A completed call is never re-sent: a re-send pays input and output again and cannot be
cheaper than the miss it repeats, so the only moment a policy can save money is before
the request leaves.

:class:`Gate` is the hold engine (one per tracker). Per key (the chained hash of the prefix
a call would write) it keeps at most one in-flight *writer*, and only while that writer is
in flight, so memory is bounded by the calls in flight. Threads wait on a
``threading.Event`` and asyncio tasks on a future of their own loop, resolved with
``call_soon_threadsafe``, so a thread writer releases asyncio waiters and vice versa, and
the event loop is never blocked. Both shells share one decision (:meth:`Gate._look`):

- no writer registered for the key: proceed and become its writer;
- the writer's response has started (its entry is readable), or this call has used its
  ``max_retries`` holds: proceed, not as the writer;
- otherwise: hold until the writer's response starts, it finishes (or fails), or
  ``delay_ms`` passes. A call released by its writer's start proceeds (the entry is
  readable, even once that writer has finished); otherwise it looks again. When the first
  writer failed, the first released waiter becomes the new writer and the others may hold
  on it. A call whose last hold
  timed out while the writer is still in flight proceeds without becoming the writer:
  the writer stays the one whose start releases the others.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ._args import whole_number

__all__ = ["MAX_DELAY_MS", "CachePolicy", "Gate", "Hold"]

#: The longest hold: a twin never waits longer than an hour (the longest TTL) for a writer.
MAX_DELAY_MS = 3_600_000.0


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A validated policy. Build it with :meth:`miss_aware`."""

    kind: str = "none"
    delay_ms: float = 0.0
    max_retries: int = 0

    @classmethod
    def miss_aware(cls, delay_ms: float = 2000, max_retries: int = 1) -> CachePolicy:
        """Hold a call whose cold prefix an in-flight twin is writing (see module docstring)."""
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, float)):
            raise TypeError(f"delay_ms must be a number of milliseconds >= 0, got {delay_ms!r}")
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(
                f"delay_ms must be a number of milliseconds from 0 to {MAX_DELAY_MS:,.0f} (an hour), "
                f"got {delay_ms!r}"
            )
        whole_number("max_retries", max_retries, 0, "an int >= 0")
        return cls("miss_aware", float(delay_ms), max_retries)

    def gate(self) -> Gate | None:
        """A new hold engine for this policy (one per tracker); None when the policy never holds."""
        if self.kind != "miss_aware":
            return None
        return Gate(self.delay_ms, self.max_retries)


class _Flight:
    """One writer in flight for one key, and whoever waits on it."""

    __slots__ = ("event", "futures", "key", "released", "started", "waiting")

    def __init__(self, key: int) -> None:
        self.key = key
        self.started = False
        self.released = False
        self.waiting = 0  # calls holding on this writer now
        self.event: threading.Event | None = None  # created by the first thread waiter
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


@dataclass(frozen=True, slots=True)
class Hold:
    """What one call got from the gate: time held, holds taken, and whether it is the writer."""

    held_ms: float = 0.0
    holds: int = 0
    writer: bool = False
    _flight: _Flight | None = field(default=None, repr=False, compare=False)


_NO_HOLD = Hold()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Gate:
    """Single-flight holds for calls writing the same cold prefix (see module docstring).

    ``clock`` measures ``held_ms`` and the hold deadlines; the waits themselves use the
    real monotonic time of ``threading`` and asyncio.
    """

    def __init__(
        self, delay_ms: float, max_retries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._delay_s = delay_ms / 1000.0
        self._max_retries = max_retries
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: dict[int, _Flight] = {}

    @property
    def in_flight(self) -> int:
        """How many keys have a writer in flight (the gate's whole memory)."""
        return len(self._flights)

    def waiting(self, key: int) -> int:
        """How many calls are holding on ``key``'s writer right now."""
        with self._lock:
            flight = self._flights.get(key)
            return 0 if flight is None else flight.waiting

    def _look(
        self,
        key: int,
        holds: int,
        waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None,
    ) -> tuple[_Flight | None, bool]:
        """(flight to wait on, None to proceed; whether this call is now the writer).

        A thread waiter gets the flight's event created; an asyncio ``waiter`` is registered.
        Both happen under the lock, so a release cannot slip between the look and the wait.
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight(key)
                return flight, True
            if flight.started or holds >= self._max_retries:
                return None, False
            if waiter is None:
                if flight.event is None:
                    flight.event = threading.Event()
            else:
                flight.futures.append(waiter)
            flight.waiting += 1
            return flight, False

    def _release(self, flight: _Flight) -> None:
        with self._lock:
            if flight.released:
                return
            flight.released = True
            event, futures, flight.futures = flight.event, flight.futures, []
        if event is not None:
            event.set()
        for loop, fut in futures:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that waiter's loop is closed; nobody is left to release
                pass

    def _hold(self, start: float, holds: int, flight: _Flight | None, writer: bool) -> Hold:
        if writer:
            return Hold((self._clock() - start) * 1000.0 if holds else 0.0, holds, True, flight)
        if not holds:
            return _NO_HOLD
        return Hold((self._clock() - start) * 1000.0, holds)

    def enter(self, key: int | None) -> Hold:
        """Hold the calling thread while a twin writes ``key``; see the module docstring."""
        if key is None or self._max_retries == 0:
            return _NO_HOLD
        start = self._clock()
        holds = 0
        while True:
            flight, writer = self._look(key, holds)
            if flight is None or writer:
                return self._hold(start, holds, flight, writer)
            assert flight.event is not None
            deadline = self._clock() + self._delay_s
            remaining = self._delay_s
            # Wait again only if woken early by a timer and the clock moved on.
            while not flight.event.wait(remaining):
                left = deadline - self._clock()
                if left <= 0 or left >= remaining:
                    break
                remaining = left
            with self._lock:
                flight.waiting -= 1
                written = flight.started
            holds += 1
            if written:  # its entry is readable (even if the writer has finished since)
                return self._hold(start, holds, None, False)

    async def aenter(self, key: int | None) -> Hold:
        """:meth:`enter` for asyncio: the task waits on a future, the event loop runs on."""
        if key is None or self._max_retries == 0:
            return _NO_HOLD
        loop = asyncio.get_running_loop()
        start = self._clock()
        holds = 0
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            flight, writer = self._look(key, holds, (loop, fut))
            if flight is None or writer:
                return self._hold(start, holds, flight, writer)
            deadline = self._clock() + self._delay_s
            remaining = self._delay_s
            try:
                while not (await asyncio.wait({fut}, timeout=remaining))[0]:
                    left = deadline - self._clock()
                    if left <= 0 or left >= remaining:
                        break
                    remaining = left
            finally:  # timed out or cancelled: leave no waiter behind
                with self._lock:
                    flight.waiting -= 1
                    if (loop, fut) in flight.futures:
                        flight.futures.remove((loop, fut))
                    written = flight.started
                fut.cancel()
            holds += 1
            if written:  # its entry is readable (even if the writer has finished since)
                return self._hold(start, holds, None, False)

    def started(self, key: int | None, hold: Hold) -> None:
        """The writer's response started (first stream event or full response): release waiters.

        Acts only for the writer's own ``hold``; idempotent. ``key`` must be the one entered.
        """
        flight = hold._flight
        if not hold.writer or flight is None or key is None:
            return
        with self._lock:
            flight.started = True
        self._release(flight)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock and no flights (the parent's calls are not ours)."""
        self._lock = threading.Lock()
        self._flights = {}

    def finished(self, key: int | None, hold: Hold) -> None:
        """The call ended, successfully or not: the writer unregisters and releases waiters.

        Idempotent, and safe when :meth:`started` was never called (a failed writer).
        """
        flight = hold._flight
        if not hold.writer or flight is None or key is None:
            return
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
        self._release(flight)
