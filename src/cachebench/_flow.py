"""Flows: the logical caller a call belongs to.

A flow is named with ``tracker.wrap(fn, flow=...)`` or ``with cachebench.flow("name"):``;
otherwise it is the caller's ``module.function`` (stable when line numbers move).

The name lives in a context variable, so asyncio tasks created inside the block inherit it.
Threads do not inherit context variables, so the first time a flow is entered cachebench
makes ``threading.Thread.start`` carry the current flow name into the thread it starts, and
``ThreadPoolExecutor.submit`` (also behind ``loop.run_in_executor``) carry the submitter's
flow into the task (pool threads outlive the block that started them). Only the flow name is
carried; no other context variable changes.

One ``flow`` object may be shared (a module-level ``SUPPORT = flow("support")``) and entered
from many tasks and threads at once, or inside itself: what each ``with`` restores on exit is
kept in a context variable too, so every context unwinds only its own blocks.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import CodeType
from typing import Any, TypeVar

__all__ = ["current_flow", "default_flow", "flow"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("cachebench_flow", default=None)
# The open ``with flow(...)`` blocks of this context, innermost last: (flow object, the token
# its enter got). Per context, so tasks and threads sharing one flow object never see (and
# never reset) each other's tokens.
_Entered = tuple[tuple["flow", contextvars.Token[str | None]], ...]
_entered: contextvars.ContextVar[_Entered] = contextvars.ContextVar("cachebench_flow_entered", default=())
F = TypeVar("F", bound=Callable[..., Any])

# Frames from these packages (the package itself or a module inside it) are plumbing, never
# the caller a flow is named after; ``openai_bot`` or ``anthropic_tools`` are user code.
_SKIP = frozenset(
    {
        "cachebench",
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
        "concurrent",
        "threading",
        "functools",
        "contextlib",
        "typing_extensions",
    }
)
_SKIP_INSIDE = tuple(sorted(f"{package}." for package in _SKIP))


def current_flow() -> str | None:
    return _current.get()


# code object -> "module.function", or None for a frame of a skipped package. Bounded: code
# objects come from the program's own functions; a program that makes functions without end
# (exec in a loop) stops being remembered, not named.
_NAMES: dict[CodeType, str | None] = {}
_UNSEEN = object()


def default_flow() -> str:
    """``module.function`` of the first frame outside cachebench and the SDKs.

    The walk starts at the innermost frame and skips cachebench's own: a compiled build
    (mypyc) has no Python frames for its functions, so no fixed depth would fit both builds."""
    frame = sys._getframe(0)
    names = _NAMES
    while frame is not None:
        code = frame.f_code
        name = names.get(code, _UNSEEN)
        if name is _UNSEEN:
            module = frame.f_globals.get("__name__", "")
            skip = module in _SKIP or module.startswith(_SKIP_INSIDE)
            name = None if skip else f"{module}.{code.co_name}"
            if len(names) < 4096:
                names[code] = name
        if name is not None:
            return name  # type: ignore[return-value]
        frame = frame.f_back  # type: ignore[assignment]
    return "unknown"


class flow:
    """Name the flow of every call made inside it (a context manager and a decorator)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a flow name must be a non-empty string, got {name!r}")
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def __enter__(self) -> flow:
        _carry_into_threads()
        _entered.set((*_entered.get(), (self, _current.set(self._name))))
        return self

    def __exit__(self, *exc: object) -> None:
        entered = _entered.get()
        for i in range(len(entered) - 1, -1, -1):
            if entered[i][0] is self:
                break
        else:
            # Entered in another context (a framework that runs setup and teardown in
            # different tasks): that context is the one holding the name; nothing to undo here.
            return
        token = entered[i][1]
        _entered.set(entered[:i] + entered[i + 1 :])
        try:
            _current.reset(token)
        except (ValueError, RuntimeError):
            # A token inherited from the parent's copy of the context (a task exiting a block
            # its creator entered): restore the name by value instead.
            old = token.old_value
            _current.set(None if old is contextvars.Token.MISSING else old)

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
