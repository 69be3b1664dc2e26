""":class:`ManualClock`, the clock tests and demos move by hand.

It needs nothing beyond the standard library: ``cachebench.testing`` exports it to users
whatever extras they installed, and :mod:`cachebench.emulator` runs on it.
"""

from __future__ import annotations

import math
import threading

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that moves only when told: pass it as ``Emulator(clock=...)`` and to a
    ``CacheTracker`` so both see the same time, then :meth:`advance` past a TTL."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (finite, >= 0: ``ValueError`` otherwise); the new time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        with self._lock:
            self._now += float(seconds)
            return self._now
