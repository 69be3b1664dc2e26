"""Flows: the logical caller a call belongs to.

A flow is named with ``tracker.wrap(fn, flow=...)`` or ``with cachebench.flow("name"):``;
otherwise it is the caller's ``module.function`` (stable when line numbers move).
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Callable
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
        self._tokens.append(_current.set(self._name))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
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

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(name)
            try:
                return fn(*args, **kwargs)
            finally:
                _current.reset(token)

        return run  # type: ignore[return-value]


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)
