"""The wrapped call is sacred: internal failures never change what the caller receives."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.pricing import PriceTable

from . import fakes

USAGE = fakes.usage(input=10, read=0, write=2000, output=30)


def explode_pricing(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    """Make every price lookup fail (an internal pricing bug)."""

    def cost(*args: Any) -> Any:
        raise RuntimeError(message)

    monkeypatch.setattr(PriceTable, "cost", cost)


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trackers built under this fixture run with the production guard (log, never raise)."""
    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)


def test_garbage_usage_is_recorded_as_unknown(lenient: None) -> None:
    """A response whose ``usage`` is garbage reaches the caller unchanged; usage is unknown."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = fakes.message(USAGE)
        body["usage"] = "banana"
        return httpx2.Response(200, json=body)

    tracker = CacheTracker()
    result = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
    assert result.content[0].text == "Hello!"
    (m,) = tracker.calls()
    assert not m.usage_known
    assert tracker.aggregate()["unknown_usage_calls"] == 1


def test_garbage_counts_are_zero_not_a_crash(lenient: None) -> None:
    """Nonsense token counts (strings, lists, negatives) are read as 0."""
    body = fakes.message({"input_tokens": "lots", "cache_read_input_tokens": [3], "output_tokens": -4})
    tracker = CacheTracker()
    m = tracker.record(body, request=fakes.request(), provider="anthropic")
    assert m is not None
    assert (m.input_tokens, m.cache_read_tokens, m.output_tokens) == (0, 0, 0)
    assert tracker.internal_errors == 0


def test_pricing_failure_never_reaches_the_caller(
    lenient: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If pricing raises, the caller still gets the response; tokens are kept, costs are None."""
    handler, _ = fakes.scripted([USAGE])
    tracker = CacheTracker()

    explode_pricing(monkeypatch, "price table exploded")
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        result = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
    assert isinstance(result, anthropic.types.Message)
    (m,) = tracker.calls()
    assert m.cache_write_tokens == 2000
    assert m.cost_usd is None
    assert tracker.internal_errors == 1
    assert "price table exploded" in caplog.text


def test_broken_alert_callback_is_logged_not_raised(lenient: None, caplog: pytest.LogCaptureFixture) -> None:
    """An ``on_miss_alert`` that raises is the user's bug: logged, and the call is unaffected."""
    fired: list[CallMetrics] = []

    def alert(m: CallMetrics) -> None:
        fired.append(m)
        raise ValueError("pager offline")

    # First call writes 2000; the second should read them but writes them again: unexpected.
    handler, _ = fakes.scripted([USAGE, USAGE])
    tracker = CacheTracker(on_miss_alert=alert, clock=lambda: 100.0)
    create = tracker.wrap(fakes.client(handler).messages.create)
    create(**fakes.request())
    with caplog.at_level(logging.ERROR, logger="cachebench"):
        result = create(**fakes.request())
        tracker.flush()  # callbacks run on the consumer: wait for them
    assert result.usage.cache_creation_input_tokens == 2000
    assert len(fired) == 1 and fired[0].unexpected_miss
    assert "pager offline" in caplog.text


def test_request_parsing_failure_leaves_the_call_alone(
    lenient: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the adapter cannot read the request, the SDK call still runs and returns its result."""
    from cachebench.providers import anthropic as adapter

    def boom(request: Any) -> Any:
        raise KeyError("weird request")

    monkeypatch.setattr(adapter, "parse_request", boom)
    handler, seen = fakes.scripted([USAGE])
    tracker = CacheTracker()
    result = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
    assert result.usage.output_tokens == 30
    assert len(seen) == 1
    assert tracker.calls() == []
    assert tracker.internal_errors == 1


def test_sdk_errors_keep_their_type_and_instance() -> None:
    """The exception the caller catches is the very object the SDK raised."""
    raised: list[BaseException] = []

    def create(**kwargs: Any) -> Any:
        err = anthropic.APIConnectionError(request=httpx2.Request("POST", "https://example.invalid"))
        raised.append(err)
        raise err

    create.__module__ = "anthropic.resources.messages"
    tracker = CacheTracker(provider="anthropic")
    with pytest.raises(anthropic.APIConnectionError) as info:
        tracker.wrap(create)(**fakes.request())
    assert info.value is raised[0]
    assert tracker.calls()[0].error is not None


def test_strict_guard_reraises_in_this_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CACHEBENCH_STRICT=1 (this suite) internal errors surface instead of being logged:
    one on the caller's thread raises into the call; one in the analysis, which runs on the
    consumer, raises from the next read (or flush) of the tracker. Never both, never lost."""
    monkeypatch.setenv("CACHEBENCH_STRICT", "1")
    tracker = CacheTracker()

    explode_pricing(monkeypatch, "bug")
    handler, _ = fakes.scripted([USAGE, USAGE])
    create = tracker.wrap(fakes.client(handler).messages.create)
    result = create(**fakes.request())
    assert result.usage.cache_creation_input_tokens == 2000
    with pytest.raises(RuntimeError, match="bug"):
        tracker.calls()
    tracker.calls()  # raised once: the next read is clean
    create(**fakes.request())
    with pytest.raises(RuntimeError, match="bug"):
        tracker.flush()

    from cachebench.providers import anthropic as adapter

    def parse_bug(request: Any) -> Any:
        raise KeyError("parse bug")

    monkeypatch.setattr(adapter, "parse_request", parse_bug)
    with pytest.raises(KeyError, match="parse bug"):
        create(**fakes.request())
