"""What a user's call can meet and cachebench must survive: one SDK call observed by several
shells (``wrap`` on an ``instrument``-ed client, raw-response wrappers) is one record;
result objects that misbehave under inspection never raise into the caller; ``async def``
callbacks are refused at construction; usage that is no usage object is unknown, and
absurd counts are refused and counted."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from typing import Any

import httpx2
import pytest

from cachebench import CacheTracker, flow

from . import fakes
from .test_openai import CHAT_USAGE, Server, chat_request, sync_client
from .test_openai import async_client as openai_async_client

# -- one SDK call, one record -------------------------------------------------------------


def _anthropic_pair() -> tuple[Any, Any]:
    handler, _ = fakes.scripted([fakes.usage(write=2000), fakes.usage(read=2000)])
    return fakes.client(handler), fakes.async_client(handler)


@pytest.mark.parametrize("order", ["wrap-then-instrument", "instrument-then-wrap"])
def test_quickstart_wrap_and_instrument_record_each_anthropic_call_once(order: str) -> None:
    """The Quickstart wraps ``client.messages.create`` and instruments the same client: each
    real call is one record, named by the wrap's flow; no phantom default flow appears."""
    client, _ = _anthropic_pair()
    tracker = CacheTracker()
    if order == "instrument-then-wrap":
        tracker.instrument(client)
    create = tracker.wrap(client.messages.create, flow="support")
    if order == "wrap-then-instrument":
        tracker.instrument(client)
    create(**fakes.request("one"))
    create(**fakes.request("two"))
    with create(**fakes.request("three"), stream=True) as stream:
        for _ in stream:
            pass
    calls = tracker.calls()
    assert [c.flow for c in calls] == ["support"] * 3
    assert [(c.cache_read_tokens, c.cache_write_tokens) for c in calls] == [(0, 2000), (2000, 0), (2000, 0)]
    assert list(tracker.by_flow()) == ["support"]
    assert tracker.aggregate()["calls"] == 3


def test_instrumented_client_alone_names_calls_by_the_with_flow_block() -> None:
    client, _ = _anthropic_pair()
    tracker = CacheTracker()
    tracker.instrument(client)
    with flow("triage"):
        client.messages.create(**fakes.request())
    assert [c.flow for c in tracker.calls()] == ["triage"]


def test_the_innermost_explicit_flow_names_the_call() -> None:
    """``instrument(client, flow="a")`` runs inside ``wrap(..., flow="b")``'s call: the
    innermost explicit flow, "a", names it; a shell without a flow of its own renames nothing."""
    client, _ = _anthropic_pair()
    tracker = CacheTracker()
    tracker.instrument(client, flow="a")
    tracker.wrap(client.messages.create, flow="b")(**fakes.request())
    inner = tracker.wrap(client.messages.create, flow="inner")
    tracker.wrap(inner)(**fakes.request())  # a wrap of a wrap, the outer one without a flow
    assert [c.flow for c in tracker.calls()] == ["a", "a"]

    client2, _ = _anthropic_pair()
    t2 = CacheTracker()
    inner2 = t2.wrap(client2.messages.create, flow="inner")
    t2.wrap(inner2, flow="outer")(**fakes.request())
    t2.wrap(inner2)(**fakes.request())
    assert [c.flow for c in t2.calls()] == ["inner", "inner"]


async def test_async_wrap_and_instrument_record_each_call_once() -> None:
    _, aclient = _anthropic_pair()
    tracker = CacheTracker()
    tracker.instrument(aclient)
    create = tracker.wrap(aclient.messages.create, flow="support")
    await asyncio.gather(*(create(**fakes.request(f"q{i}")) for i in range(4)))
    stream = await create(**fakes.request("s"), stream=True)
    async for _ in stream:
        pass
    calls = tracker.calls()
    assert len(calls) == 5
    assert {c.flow for c in calls} == {"support"}


@pytest.mark.parametrize("order", ["wrap-then-instrument", "instrument-then-wrap"])
async def test_openai_wrap_and_instrument_record_each_call_once(order: str) -> None:
    server = Server(chat=[CHAT_USAGE])
    client, aclient = sync_client(server), openai_async_client(server)
    tracker = CacheTracker()
    if order == "instrument-then-wrap":
        tracker.instrument(client)
        tracker.instrument(aclient)
    create = tracker.wrap(client.chat.completions.create, flow="chat")
    acreate = tracker.wrap(aclient.chat.completions.create, flow="chat")
    if order == "wrap-then-instrument":
        tracker.instrument(client)
        tracker.instrument(aclient)
    create(**chat_request())
    await acreate(**chat_request())
    for _ in create(**chat_request(), stream=True, stream_options={"include_usage": True}):
        pass
    calls = tracker.calls()
    assert len(calls) == 3
    assert {c.flow for c in calls} == {"chat"}
    assert {c.cache_read_tokens for c in calls} == {1920}


# -- raw and streaming response wrappers ---------------------------------------------------


def test_wrap_detects_the_provider_of_raw_response_methods() -> None:
    """``wrap(client.messages.with_raw_response.create)`` needs no ``provider=``, and the
    call is recorded once with its usage, instrumented client or not."""
    client, _ = _anthropic_pair()
    tracker = CacheTracker()
    raw = tracker.wrap(client.messages.with_raw_response.create, flow="raw")
    response = raw(**fakes.request())
    assert response.parse().usage.cache_creation_input_tokens == 2000
    tracker.instrument(client)
    raw(**fakes.request())
    calls = tracker.calls()
    assert [(c.flow, c.cache_write_tokens, c.cache_read_tokens) for c in calls] == [
        ("raw", 2000, 0),
        ("raw", 0, 2000),
    ]


@pytest.mark.parametrize("instrumented", [False, True])
def test_wrap_of_with_streaming_response_records_once_when_entered(instrumented: bool) -> None:
    client, _ = _anthropic_pair()
    tracker = CacheTracker()
    if instrumented:
        tracker.instrument(client)
    create = tracker.wrap(client.messages.with_streaming_response.create, flow="streamed")
    with create(**fakes.request()) as response:
        message = response.parse()
    assert message.usage.cache_creation_input_tokens == 2000
    with create(**fakes.request(), stream=True) as response:
        for _ in response.parse():
            pass
    with create(**fakes.request()) as response:
        raw_lines = list(response.iter_lines())  # read by hand (the mock transport holds the body)
    assert raw_lines
    calls = tracker.calls()
    assert [(c.flow, c.usage_known, c.cache_read_tokens) for c in calls] == [
        ("streamed", True, 0),
        ("streamed", True, 2000),
        ("streamed", True, 2000),
    ]


def test_wrap_detects_openai_raw_and_streaming_response_methods() -> None:
    server = Server(chat=[CHAT_USAGE])
    client = sync_client(server)
    tracker = CacheTracker()
    tracker.wrap(client.chat.completions.with_raw_response.create, flow="raw")(**chat_request())
    with tracker.wrap(client.chat.completions.with_streaming_response.create, flow="raw")(
        **chat_request()
    ) as response:
        response.parse()
    assert [(c.provider, c.cache_read_tokens) for c in tracker.calls()] == [("openai", 1920)] * 2


# -- the caller's objects are inspected under the guard ----------------------------------


class _Hostile:
    """A result whose ``__getattr__`` raises something other than AttributeError."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


def test_a_result_that_raises_under_inspection_reaches_the_caller_unchanged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)
    tracker = CacheTracker(provider="anthropic")
    result = _Hostile()
    wrapped = tracker.wrap(lambda **kw: result, flow="hostile")
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        assert wrapped(**fakes.request()) is result
        assert wrapped(**fakes.request()) is result
    assert tracker.internal_errors >= 1


# -- callbacks ------------------------------------------------------------------------------


async def _async_alert(m: Any) -> None:
    return None


class _AsyncCallable:
    async def __call__(self, m: Any) -> None:
        return None


@pytest.mark.parametrize("callback", [_async_alert, _AsyncCallable()])
@pytest.mark.parametrize("name", ["on_miss_alert", "on_regression"])
def test_async_def_callbacks_are_refused_at_construction_and_on_assignment(name: str, callback: Any) -> None:
    with pytest.raises(TypeError, match="plain function"):
        CacheTracker(**{name: callback})
    tracker = CacheTracker()
    with pytest.raises(TypeError, match="plain function"):
        setattr(tracker, name, callback)


def test_a_callback_returning_a_coroutine_is_closed_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lambda that returns a coroutine slips past the construction check: cachebench closes
    the coroutine (no "never awaited" warning) and logs the mistake."""
    monkeypatch.delenv("CACHEBENCH_STRICT", raising=False)
    handler, _ = fakes.scripted([fakes.usage(write=2000), fakes.usage(read=0, write=2000)])
    client = fakes.client(handler)
    tracker = CacheTracker(on_miss_alert=lambda m: _async_alert(m))
    create = tracker.wrap(client.messages.create)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.ERROR, logger="cachebench"):
            create(**fakes.request())
            create(**fakes.request())  # read 0 of 2000 expected: an unexpected miss
            tracker.flush()  # the callback runs on the consumer
    assert any("returned a coroutine" in r.getMessage() for r in caplog.records)


# -- usage that is no usage object, and absurd counts ----------------------------------------


def _answering(body: dict[str, Any] | bytes, stream: bool = False) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if stream:
            assert isinstance(body, bytes)
            return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=body)

    return fakes.client(handler)


@pytest.mark.parametrize("bad", ["x", 7, [1, 2], True])
def test_a_usage_that_is_not_an_object_is_unknown_not_zero(bad: Any) -> None:
    tracker = CacheTracker()
    body = fakes.message(fakes.usage())
    body["usage"] = bad
    assert tracker.record(body, request=fakes.request(), provider="anthropic").usage_known is False  # type: ignore[union-attr]
    assert tracker.record({"type": "message", "usage": object()}, provider="anthropic").usage_known is False  # type: ignore[union-attr]
    for provider in ("openai", "bedrock", "gemini"):
        m = tracker.record(
            {"usage": object(), "usageMetadata": object(), "usage_metadata": "x"}, provider=provider
        )
        assert m is not None and m.usage_known is False, provider
    agg = tracker.aggregate()
    assert agg["unknown_usage_calls"] == agg["calls"] == 5
    assert agg["input_tokens"] == agg["output_tokens"] == 0


def test_a_stream_whose_usage_events_carry_a_string_is_unknown() -> None:
    events = fakes.sse_events(fakes.usage(write=2000))
    for _, data in events:
        if data["type"] == "message_start":
            data["message"]["usage"] = "x"
        if data["type"] == "message_delta":
            data["usage"] = "x"
    client = _answering(fakes.sse_bytes(events), stream=True)
    tracker = CacheTracker()
    tracker.instrument(client)
    for _ in client.messages.create(**fakes.request(), stream=True):
        pass
    [m] = tracker.calls()
    assert m.usage_known is False


def test_absurd_token_counts_are_refused_counted_and_not_added(caplog: pytest.LogCaptureFixture) -> None:
    client = _answering(fakes.message(fakes.usage(input=10**13, write=2000)))
    tracker = CacheTracker()
    tracker.instrument(client)
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        client.messages.create(**fakes.request())
    [m] = tracker.calls()
    assert m.usage_known is False
    assert tracker.refused_usage == 1
    agg = tracker.aggregate()
    assert agg["input_tokens"] == 0 and agg["cache_write_tokens"] == 0
    assert agg["unknown_usage_calls"] == 1
    assert tracker.internal_errors == 0
    assert any("refused a usage" in r.getMessage() for r in caplog.records)
    json.dumps(m.diagnostics)  # nothing else was kept of it
