"""Flows: the logical caller a call belongs to.

A flow is named with ``tracker.wrap(fn, flow=...)`` or ``with cachebench.flow("name"):``;
otherwise it is the caller's ``module.function`` (stable when line numbers move).

The name lives in a context variable, so asyncio tasks created inside the block inherit it.
Threads do not inherit context variables, so the first time a flow is entered cachebench
makes ``threading.Thread.start`` carry the current flow name into the thread it starts, and
``ThreadPoolExecutor.submit`` (also behind ``loop.run_in_executor``) carry the submitter's
flow into the task (pool threads outlive the block that started them). Only the flow name is
carried; no other context variable changes.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["current_flow", "default_flow", "flow"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("cachebench_flow", default=None)
F = TypeVar("F", bound=Callable[..., Any])

# Frames from these packages are plumbing, never the caller a flow is named after.
_SKIP = (
    "cachebench.",
    "anthropic",
    "openai",
    "google.genai",
    "botocore",
    "boto3",
    "httpx",
    "httpx2",
    "httpcore",
    "anyio",
    "asyncio",
    "concurrent.",
    "threading",
    "functools",
    "contextlib",
    "typing_extensions",
)


def current_flow() -> str | None:
    return _current.get()


def default_flow(depth: int = 2) -> str:
    """``module.function`` of the first frame outside cachebench and the SDKs."""
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return "unknown"
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "cachebench" or module.startswith(_SKIP)):
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "unknown"


class flow:
    """Name the flow of every call made inside it (a context manager and a decorator)."""

    __slots__ = ("_name", "_tokens")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a flow name must be a non-empty string, got {name!r}")
        self._name = name
        self._tokens: list[contextvars.Token[str | None]] = []

    @property
    def name(self) -> str:
        return self._name

    def __enter__(self) -> flow:
        _carry_into_threads()
        self._tokens.append(_current.set(self._name))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        _carry_into_threads()
        name = self._name
        if _is_async(fn):

            @functools.wraps(fn)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                token = _current.set(name)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _current.reset(token)

            return arun  # type: ignore[return-value]

        return functools.wraps(fn)(_in_flow(name, fn))  # type: ignore[return-value]


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def _in_flow(name: str | None, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _current.set(name)
        try:
            return fn(*args, **kwargs)
        finally:
            _current.reset(token)

    return run


_carrying = False
_carry_lock = threading.Lock()


def _carry_into_threads() -> None:
    """Patch ``Thread.start`` and ``ThreadPoolExecutor.submit`` once (see the module docstring)."""
    global _carrying
    if _carrying:
        return
    with _carry_lock:
        if _carrying:
            return
        thread_start = threading.Thread.start
        pool_submit: Callable[..., Future[Any]] = ThreadPoolExecutor.submit

        @functools.wraps(thread_start)
        def start(self: threading.Thread) -> None:
            name = _current.get()
            if name is not None:
                self.run = _in_flow(name, self.run)  # type: ignore[method-assign]
            thread_start(self)

        @functools.wraps(pool_submit)
        def submit(
            self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
        ) -> Future[Any]:
            # Always set (None included): the pool thread may carry the flow it was started in.
            return pool_submit(self, _in_flow(_current.get(), fn), *args, **kwargs)

        threading.Thread.start = start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = submit  # type: ignore[method-assign, assignment]
        _carrying = True
