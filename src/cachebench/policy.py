"""Cache policies: what cachebench may do around a call to avoid paying for a miss.

``CachePolicy.miss_aware(delay_ms, max_retries)`` describes single-flight holds: a call
whose prefix is cold and already being written by an in-flight twin waits until that twin's
response starts (a provider entry becomes readable only then) or ``delay_ms`` passes, so N
parallel cold calls pay one write instead of N. ``max_retries`` bounds how many holds one
call may take. A completed call is never re-sent: a re-send pays input and output again and
cannot be cheaper than the miss it repeats.

This module validates and carries the settings; the holds themselves are applied by the
tracker's policy engine.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CachePolicy"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """A validated policy. Build it with :meth:`miss_aware`."""

    kind: str = "none"
    delay_ms: float = 0.0
    max_retries: int = 0

    @classmethod
    def miss_aware(cls, delay_ms: float = 2000, max_retries: int = 1) -> CachePolicy:
        """Hold a call whose cold prefix an in-flight twin is writing (see module docstring)."""
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, float)) or not delay_ms >= 0:
            raise ValueError(f"delay_ms must be a number of milliseconds >= 0, got {delay_ms!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        return cls("miss_aware", float(delay_ms), max_retries)
