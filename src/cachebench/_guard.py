"""The never-break-the-call guard.

Everything cachebench does after (or around) the user's SDK call runs under one
:class:`Guard`. An internal failure is logged on the ``cachebench`` logger, counted, and
swallowed: the caller always gets the SDK's own response or the SDK's own exception.

In cachebench's own test suite the guard is *strict* (``CACHEBENCH_STRICT=1``) and
re-raises, so bugs surface as test failures instead of log lines. It is never strict in a
user's process unless they ask for it.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("cachebench")

__all__ = ["Guard", "logger"]

T = TypeVar("T")


def strict_from_env() -> bool:
    """Read once at tracker construction (the edge), never deep inside the call path."""
    return os.environ.get("CACHEBENCH_STRICT", "").strip().lower() in {"1", "true", "yes", "on"}


class Guard:
    """Counts and logs internal errors; re-raises them only when ``strict``."""

    __slots__ = ("_lock", "by_stage", "errors", "refused", "strict")

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.errors = 0
        self.by_stage: dict[str, int] = {}
        self.refused: dict[str, int] = {}  # bad input turned away (not an internal error)
        self._lock = threading.Lock()

    def refuse(self, what: str, message: str) -> None:
        """Count and log input cachebench turned away (say, an absurd token count). Never
        raised: the input is the provider's or the caller's, not a bug of cachebench's."""
        with self._lock:
            self.refused[what] = self.refused.get(what, 0) + 1
        logger.warning("cachebench: %s", message)

    def failed(self, stage: str, exc: BaseException) -> None:
        """Record an internal failure in ``stage``; re-raise it when strict."""
        with self._lock:
            self.errors += 1
            self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
        logger.warning(
            "cachebench: internal error in %s (the call is unaffected): %r", stage, exc, exc_info=exc
        )
        if self.strict:
            raise exc

    def call(self, stage: str, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)``, or ``None`` if it raised (recorded as a failure in ``stage``)."""
        try:
            return fn(*args)
        except Exception as exc:
            self.failed(stage, exc)
            return None

    def user_callback(self, name: str, fn: Callable[[Any], object], arg: Any) -> None:
        """Run a user's callback. Its exceptions are the user's: logged, counted, never raised
        (``SystemExit`` and ``KeyboardInterrupt`` too: a callback runs on the tracker's consumer
        thread, where neither could stop anything but the consumer)."""
        try:
            result = fn(arg)
            if inspect.iscoroutine(result):
                # Constructing the tracker refuses ``async def`` callbacks; a plain function
                # that returns a coroutine slips through: close it, and say so.
                result.close()
                raise TypeError(
                    f"the {name} callback returned a coroutine, which cachebench cannot await; "
                    "pass a plain function (schedule async work from it yourself)"
                )
        except BaseException as exc:
            with self._lock:
                self.errors += 1
                self.by_stage[name] = self.by_stage.get(name, 0) + 1
            logger.error("cachebench: the %s callback raised %r; ignored", name, exc, exc_info=exc)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread of the parent may have held it)."""
        self._lock = threading.Lock()
