"""The engine's call path, pinned where ``make mutate`` found it unpinned.

Each test kills mutants of :mod:`cachebench.engine` that survived the selection ``make mutate``
runs (see ``benchmarks/mutation.md``), through the public API only: ``record()`` of
recorded-shape bodies, or ``CacheTracker.wrap`` around a real SDK client over
``httpx2.MockTransport``, with a :class:`~cachebench.testing.ManualClock`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anthropic
import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench.engine import MAX_TOKENS
from cachebench.testing import ManualClock

from . import fakes

OTHER_MODEL = "claude-opus-4-8"


def record_here(tracker: CacheTracker, body: dict[str, Any], request: dict[str, Any]) -> CallMetrics:
    m = tracker.record(body, request=request, provider="anthropic")
    assert m is not None
    return m


def test_a_call_without_a_marker_expects_nothing() -> None:
    """A request without a cache marker has no prefix, expects no read and is never an
    unexpected miss."""
    tracker = CacheTracker(clock=ManualClock())
    m = record_here(tracker, fakes.message(fakes.usage()), fakes.request() | {"system": "Be brief."})
    assert (m.prefix_id, m.expected_read_tokens, m.unexpected_miss, m.miss_cause) == (None, 0, False, None)


def test_an_sdk_error_is_recorded_as_its_type_and_message_cut_at_500_characters() -> None:
    """A call the SDK raised on is recorded with ``error`` = ``"<type>: <message>"``, at most
    500 characters, unknown usage, and no miss."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            500, json={"type": "error", "error": {"type": "api_error", "message": "down " * 200}}
        )

    tracker = CacheTracker(clock=ManualClock())
    with pytest.raises(anthropic.InternalServerError):
        tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
    [m] = tracker.calls()
    assert m.error is not None and m.error.startswith("InternalServerError: ") and len(m.error) == 500
    assert (m.usage_known, m.unexpected_miss, m.miss_cause) == (False, False, None)


def test_a_usage_over_a_trillion_tokens_is_refused_keeping_the_model_and_diagnostics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A count above :data:`MAX_TOKENS` is corrupt input: the call is recorded with its usage
    unknown (the response's model and diagnostics kept) and the refusal logged; a count of
    exactly :data:`MAX_TOKENS` is taken as it is."""
    tracker = CacheTracker(clock=ManualClock())
    diagnostics = {"cache_miss_reason": "new prefix"}
    body = fakes.message(fakes.usage(input=MAX_TOKENS + 1, write=3000), model=OTHER_MODEL)
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        refused = record_here(tracker, body | {"diagnostics": diagnostics}, fakes.request())
    assert (refused.usage_known, refused.model, refused.diagnostics) == (False, OTHER_MODEL, diagnostics)
    assert tracker.refused_usage == 1
    assert any(
        f"refused a usage of more than {MAX_TOKENS:,} tokens" in r.getMessage() for r in caplog.records
    )
    taken = record_here(tracker, fakes.message(fakes.usage(input=MAX_TOKENS, write=3000)), fakes.request())
    assert (taken.usage_known, taken.input_tokens) == (True, MAX_TOKENS)


def test_raising_callbacks_are_logged_by_name_and_every_later_regression_is_still_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising ``on_miss_alert`` or ``on_regression`` never reaches the caller: each error is
    logged naming its callback, and a regression opened after one was announced is announced
    too."""
    announced: list[Regression] = []

    def broken_alert(m: CallMetrics) -> None:
        raise RuntimeError("pager down")

    def broken_regression(regression: Regression) -> None:
        announced.append(regression)
        raise RuntimeError("dashboard down")

    clock = ManualClock()
    tracker = CacheTracker(
        clock=clock, on_miss_alert=broken_alert, on_regression=broken_regression, miss_alert_threshold=0.75
    )

    def call(flow: str, **usage: int) -> None:
        clock.advance(10)
        tracker.record(
            fakes.message(fakes.usage(**usage)), request=fakes.request(flow), provider="anthropic", flow=flow
        )

    with caplog.at_level(logging.ERROR, logger="cachebench"):
        for flow in ("f", "g"):
            call(flow, write=3000)
            for _ in range(15):
                call(flow, read=3000)
            for _ in range(5):
                call(flow, write=3000)
        tracker.flush()
    assert [(r.flow, r.kind) for r in announced] == [("f", "hit_ratio_drop"), ("g", "hit_ratio_drop")]
    messages = [r.getMessage() for r in caplog.records]
    assert any("the on_miss_alert callback raised" in m for m in messages)
    assert any("the on_regression callback raised" in m for m in messages)


def test_the_consumer_is_one_daemon_thread_named_cachebench_consumer() -> None:
    """The analysis runs on a daemon thread named ``cachebench-consumer``, so it never keeps
    the interpreter from exiting."""
    tracker = CacheTracker(clock=ManualClock())
    record_here(tracker, fakes.message(fakes.usage()), fakes.request())
    consumers = [t for t in threading.enumerate() if t.name == "cachebench-consumer"]
    assert consumers and all(t.daemon for t in consumers)
    tracker.close()


def test_a_wrapped_calls_elapsed_ms_is_its_duration_in_milliseconds() -> None:
    """``elapsed_ms`` of a wrapped call is how long the SDK call took, in milliseconds."""

    def slow(request: httpx2.Request) -> httpx2.Response:
        time.sleep(0.05)
        return httpx2.Response(200, json=fakes.message(fakes.usage()))

    tracker = CacheTracker(clock=ManualClock())
    tracker.wrap(fakes.client(slow).messages.create)(**fakes.request())
    [m] = tracker.calls()
    assert m.elapsed_ms is not None and 50.0 <= m.elapsed_ms < 5000.0
