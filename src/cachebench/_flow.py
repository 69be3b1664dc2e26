"""Flows: the logical caller a call belongs to.

A flow is named with ``tracker.wrap(fn, flow=...)`` or ``with cachebench.flow("name"):``;
otherwise it is the caller's ``module.function`` (stable when line numbers move).

The name lives in a context variable, so asyncio tasks created inside the block inherit it,
and so does anything run in a copy of the context: ``contextvars.copy_context().run(fn)`` as
a thread's target, ``asyncio.to_thread`` (it copies the context itself), and
``loop.run_in_executor(None, contextvars.copy_context().run, fn)``. A plain
``threading.Thread`` or ``ThreadPoolExecutor.submit`` starts from an empty context: its calls
get the default name.

Entering a flow patches nothing. :meth:`flow.carry_into_threads` is the opt-in for code that
starts threads it cannot change: it replaces ``threading.Thread.start`` (the current flow name
goes into the thread it starts) and ``ThreadPoolExecutor.submit`` (the submitter's flow goes
into the task: pool threads outlive the block that started them), process-wide, until
:meth:`flow.stop_carrying_into_threads`. Only the flow name is carried; no other context
variable changes.

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

from ._args import text

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


# Set by a cache warmer around its own calls (its own marker, the same object for all of them):
# the tracker records each as warm, counts it here (so the warmer knows whether an instrumented
# client recorded it already) and keeps the marker on the call's context (so the warmer knows
# its own calls from another warmer's).
_warming: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "cachebench_warming", default=None
)


def warming() -> list[int] | None:
    """The counter of the cache warmer whose call this is, or None for any other call."""
    return _warming.get()


# code object -> "module.function", or None for a frame of a skipped package. Bounded: code
# objects come from the program's own functions; a program that makes functions without end
# (exec in a loop) stops being remembered, not named.
_NAMES: dict[CodeType, str | None] = {}
_UNSEEN = object()


def default_flow(depth: int = 0) -> str:
    """``module.function`` of the first frame outside cachebench and the SDKs.

    The walk starts ``depth`` frames above the caller (frames the caller knows to be
    cachebench's own) and skips cachebench's and the SDKs' frames: an instrumented client's
    helpers (``messages.stream()``, ``with_raw_response``) reach the patched method through
    frames of their own, so no fixed depth fits every path."""
    frame = sys._getframe(1 + depth)
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
        self._name = text("a flow name", name, "a non-empty string")

    @property
    def name(self) -> str:
        return self._name

    def __enter__(self) -> flow:
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

    @staticmethod
    def carry_into_threads() -> None:
        """Opt in: carry the current flow into every thread and thread-pool task the process
        starts from now on, by replacing ``threading.Thread.start`` and
        ``ThreadPoolExecutor.submit`` process-wide. Calling it again changes nothing.

        Without it, run the thread's work in a copy of the context instead:
        ``threading.Thread(target=contextvars.copy_context().run, args=(fn,))``,
        ``asyncio.to_thread(fn)`` or
        ``loop.run_in_executor(None, contextvars.copy_context().run, fn)``."""
        _carry_into_threads()

    @staticmethod
    def stop_carrying_into_threads() -> None:
        """Undo :meth:`carry_into_threads`: put the standard library's functions back.
        Threads already started keep their flow. Raises ``RuntimeError`` if something replaced
        those functions again since (restoring would remove that too); without a
        ``carry_into_threads()`` in effect, it does nothing."""
        _stop_carrying_into_threads()


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


# The functions carry_into_threads replaced and its own replacements, while they are installed.
_Patched = tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]
_patched: _Patched | None = None
_patch_lock = threading.Lock()


def _carry_into_threads() -> None:
    """Replace ``Thread.start`` and ``ThreadPoolExecutor.submit`` (see the module docstring)."""
    global _patched
    with _patch_lock:
        if _patched is not None:
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
        _patched = (thread_start, pool_submit, start, submit)


def _stop_carrying_into_threads() -> None:
    """Put back what :func:`_carry_into_threads` replaced, if nothing replaced it since."""
    global _patched
    with _patch_lock:
        if _patched is None:
            return
        thread_start, pool_submit, start, submit = _patched
        if threading.Thread.start is not start or ThreadPoolExecutor.submit is not submit:
            # Restoring now would also remove whatever was installed on top of ours.
            raise RuntimeError(
                "threading.Thread.start or ThreadPoolExecutor.submit was replaced again after "
                "flow.carry_into_threads(); undo that replacement first"
            )
        threading.Thread.start = thread_start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = pool_submit  # type: ignore[method-assign]
        _patched = None
