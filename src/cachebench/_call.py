"""One call in flight: :class:`CallContext`, the state learned before the SDK call and
finished exactly once after it, and :func:`call_row`, the finished call as the row the
stats keep (the :class:`~cachebench.types.CallMetrics` fields, in order).

The tracker's :class:`~cachebench._core.Core` is reached only at run time, through
``CallContext.core``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .types import PrefixKey

if TYPE_CHECKING:
    from ._core import Core
    from .expect import Expectation
    from .policy import Hold
    from .types import Cost, MissCause, Prompt, Usage

__all__ = ["EMPTY_KEY", "CallContext", "apply_ttl_hint", "call_row", "observing"]

# The call a shell of this context is observing while the SDK runs. One SDK call can pass
# through several shells of one tracker (``wrap(client.messages.create)`` on an
# ``instrument``-ed client, a wrap of a wrap, a ``with_streaming_response`` manager entered
# later): the outermost records it, the inner ones only pass it through and, when they were
# given a ``flow=`` of their own, name it (the innermost explicit flow wins). One SDK call
# is one record.
observing: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "cachebench_observing", default=None
)

EMPTY_KEY = PrefixKey(None, None, (), (), (), (), (), 0, 0, -1, 0, full=((), ()))


class CallContext:
    """One call in flight: what was learned before it, finished exactly once after it."""

    __slots__ = (
        "adapter",
        "concurrent",
        "core",
        "exp",
        "finished",
        "flow",
        "flying",
        "hold",
        "key",
        "observing",
        "prompt",
        "request",
        "started",
        "stream",
        "t0",
        "timestamp",
        "write_key",
    )

    def __init__(
        self, core: Core, adapter: Any, request: Mapping[str, Any], flow: str, timestamp: float
    ) -> None:
        self.core = core
        self.adapter = adapter
        self.request = request
        self.flow = flow
        self.timestamp = timestamp
        self.stream = adapter.is_stream_request(request)
        self.finished = False
        self.observing = False
        self.started = False
        self.prompt: Prompt | None = None
        self.key: PrefixKey = EMPTY_KEY
        self.exp: Expectation | None = None
        self.hold: Hold | None = None
        self.write_key: int | None = None  # the chained hash of the cold prefix this call writes
        self.flying = False  # registered as an in-flight writer of write_key
        self.concurrent = False  # a twin was already writing write_key when this call went out
        self.t0 = time.perf_counter()

    def response_started(self) -> None:
        """The provider has begun answering: its new cache entry is readable from now on.

        A finished response releases its twins only after it is recorded (``finish``), so a
        twin that was held sees the entry in the tracker's view; a stream releases them at
        its first event."""
        self.started = True
        if self.stream:
            self._release()

    def finished_response(self, result: Any) -> None:
        """Record a finished (non-stream) response: what ``observe_result`` does for one."""
        try:
            self.response_started()
            self.finish(self.adapter.usage(result), None)
        except Exception as exc:
            self.core._guard.failed("observe", exc)

    def _release(self) -> None:
        if self.flying:
            self.core._land(self)
        self._tell_gate(started=True)

    def _tell_gate(self, *, started: bool) -> None:
        """Tell the policy's gate this call's response started, or that the call is over."""
        gate = self.core._gate
        if self.hold is None or gate is None:
            return
        try:
            (gate.started if started else gate.finished)(self.write_key, self.hold)
        except Exception as exc:
            self.core._guard.failed("policy", exc)

    def held(self, hold: Hold) -> None:
        """The policy let this call go: restart its clocks if it waited."""
        self.hold = hold
        if hold.held_ms:
            self.timestamp = self.core.clock()
            self.t0 = time.perf_counter()

    def tracker_failed(self, stage: str, exc: BaseException) -> None:
        self.core._guard.failed(stage, exc)

    def guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            self.core._guard.failed("observe", exc)
            return None

    def finish(self, usage: Usage, error: BaseException | None) -> None:
        if self.finished:
            return
        self.finished = True
        elapsed = (time.perf_counter() - self.t0) * 1000.0
        try:
            self.core._complete(self, usage, error, elapsed)
        except Exception as exc:
            self.core._guard.failed("record", exc)
        finally:
            if self.hold is not None or self.flying:  # (without a policy or a cold write: nothing)
                if self.started and error is None:
                    self._release()  # a finished response: its entry is readable (and now recorded)
                if self.flying:
                    self.core._land(self)
                self._tell_gate(started=False)
        if not self.core._later.empty():
            self.core.drain()  # what a finalizer handed over meanwhile (this thread holds no lock now)


def call_row(
    ctx: CallContext,
    model: str | None,
    usage: Usage,
    cost: Cost,
    elapsed: float | None,
    unexpected: bool,
    cause: MissCause | None,
    error: BaseException | None,
    expected_read: int,
) -> tuple[Any, ...]:
    """The fields of CallMetrics, in order: the row is what stats keep; CallMetrics objects
    are built only when someone reads them (record()'s return, alerts, calls())."""
    key = ctx.key
    return (
        ctx.adapter.NAME,
        model,
        ctx.flow,
        key.prefix_id,
        key.breakpoint_ids,
        usage.input_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
        usage.output_tokens,
        elapsed,
        ctx.timestamp,
        cost.cost_usd,
        cost.cost_without_cache_usd,
        cost.cost_saved_usd,
        expected_read,
        unexpected,
        cause,
        usage.known,
        ctx.hold.held_ms if ctx.hold is not None else 0.0,
        usage.diagnostics,
        None if error is None else f"{type(error).__name__}: {error}"[:500],
        usage.writes_reported,
        cost.unpriced,
        ctx.stream,
    )


def apply_ttl_hint(usage: Usage, key: PrefixKey) -> Usage:
    """Without a 5m/1h split in the response, take the TTL from the request's markers."""
    if usage.ttl_split_reported or not usage.cache_write_tokens or not key.ttls:
        return usage
    if all(t == "1h" for t in key.ttls) and usage.cache_write_1h_tokens == 0:
        return usage._replace(cache_write_1h_tokens=usage.cache_write_tokens)
    return usage
