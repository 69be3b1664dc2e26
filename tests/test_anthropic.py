"""The Anthropic adapter through the real ``anthropic`` SDK over ``httpx2.MockTransport``."""

from __future__ import annotations

import dataclasses
import gc
import json
from typing import Any

import anthropic
import httpx2
import pytest

from cachebench import CacheTracker, CallMetrics
from cachebench.providers import anthropic as adapter

from . import fakes

# claude-sonnet-5 published rates, USD per MTok (genai-prices): input 2, output 10,
# cache read 0.20, 5m write 2.50, 1h write 4.
RATES = {"input": 2.0, "output": 10.0, "read": 0.20, "w5": 2.50, "w1": 4.0}

USAGE = fakes.usage(input=12, read=1800, write=600, write_1h=200, output=40)


def expected_cost(u: dict[str, Any]) -> float:
    w1 = u["cache_creation"]["ephemeral_1h_input_tokens"]
    w5 = u["cache_creation_input_tokens"] - w1
    return (
        u["input_tokens"] * RATES["input"]
        + u["cache_read_input_tokens"] * RATES["read"]
        + w5 * RATES["w5"]
        + w1 * RATES["w1"]
        + u["output_tokens"] * RATES["output"]
    ) / 1e6


def comparable(m: CallMetrics) -> dict[str, Any]:
    d = dataclasses.asdict(m)
    for k in ("elapsed_ms", "timestamp", "stream"):
        d.pop(k)
    return d


def assert_counts(m: CallMetrics, u: dict[str, Any]) -> None:
    assert m.provider == "anthropic"
    assert m.model == fakes.MODEL
    assert m.input_tokens == u["input_tokens"]
    assert m.cache_read_tokens == u["cache_read_input_tokens"]
    assert m.cache_write_tokens == u["cache_creation_input_tokens"]
    assert m.cache_creation_tokens == u["cache_creation_input_tokens"]
    assert m.cache_write_1h_tokens == u["cache_creation"]["ephemeral_1h_input_tokens"]
    assert m.output_tokens == u["output_tokens"]
    assert m.cost_usd == pytest.approx(expected_cost(u), rel=1e-12)
    assert m.usage_known


def test_create_sync_records_every_count_and_cost() -> None:
    """A wrapped ``messages.create`` records read, write, 1h write, uncached and output tokens."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker(clock=lambda: 1_000.0)
    create = tracker.wrap(client.messages.create, flow="support")
    result = create(**fakes.request())
    assert isinstance(result, anthropic.types.Message)
    (m,) = tracker.calls()
    assert_counts(m, USAGE)
    assert m.flow == "support"
    assert m.prefix_id is not None and len(m.prefix_id) == 16
    assert len(m.breakpoint_ids) == 1
    assert m.cost_without_cache_usd == pytest.approx((2412 * 2.0 + 40 * 10.0) / 1e6)
    assert m.cost_saved_usd == pytest.approx(m.cost_without_cache_usd - m.cost_usd)
    assert m.hit_ratio == pytest.approx(1800 / 2400)


async def test_all_call_modes_give_identical_metrics() -> None:
    """The same request gives the same CallMetrics sync, async, streamed and async-streamed."""
    results: list[CallMetrics] = []
    for mode in ("sync", "async", "stream", "async_stream"):
        handler, _ = fakes.scripted([USAGE])
        tracker = CacheTracker(clock=lambda: 1_000.0)
        if mode == "sync":
            tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
        elif mode == "async":
            await tracker.wrap(fakes.async_client(handler).messages.create)(**fakes.request())
        elif mode == "stream":
            for _ in tracker.wrap(fakes.client(handler).messages.create)(**fakes.request(), stream=True):
                pass
        else:
            stream = await tracker.wrap(fakes.async_client(handler).messages.create)(
                **fakes.request(), stream=True
            )
            async for _ in stream:
                pass
        (m,) = tracker.calls()
        assert m.stream == mode.endswith("stream")
        results.append(m)
    assert_counts(results[0], USAGE)
    first = comparable(results[0])
    for other in results[1:]:
        assert comparable(other) == first


def test_stream_helper_and_final_message() -> None:
    """``messages.stream()`` (a stream manager) is recorded once, with the cumulative usage."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker()
    with tracker.wrap(client.messages.stream)(**fakes.request()) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 40
    (m,) = tracker.calls()
    assert_counts(m, USAGE)
    assert m.stream


def test_instrument_covers_create_stream_helper_and_raw_response() -> None:
    """``instrument(client)`` sees create, create(stream=True), stream() and with_raw_response."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker()
    assert tracker.instrument(client) is client
    tracker.instrument(client)  # idempotent: a second call adds no second patch
    client.messages.create(**fakes.request())
    for _ in client.messages.create(**fakes.request(), stream=True):
        pass
    with client.messages.stream(**fakes.request()) as stream:
        assert stream.get_final_text() == "Hello!"
    raw = client.messages.with_raw_response.create(**fakes.request())
    assert raw.parse().usage.output_tokens == 40
    calls = tracker.calls()
    assert len(calls) == 4
    for m in calls:
        assert_counts(m, USAGE)
    assert [m.stream for m in calls] == [False, True, True, False]
    assert (
        calls[0].flow == "tests.test_anthropic.test_instrument_covers_create_stream_helper_and_raw_response"
    )


def test_uninstrument_restores_the_client() -> None:
    """After ``uninstrument`` the client's calls are no longer recorded and it still works."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    client.messages.create(**fakes.request())
    tracker.uninstrument(client)
    assert "request" not in vars(client)
    result = client.messages.create(**fakes.request())
    assert result.usage.output_tokens == 40
    assert len(tracker.calls()) == 1


def test_clients_copied_with_options_are_observed_until_uninstrument() -> None:
    """``client.with_options(...)``/``copy()`` of an instrumented client (and a copy of a copy)
    is observed as well, for create and the stream() helper; after ``uninstrument`` new copies
    are not, and the client has its own methods back."""
    handler, _ = fakes.scripted([USAGE])
    client = fakes.client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    client.with_options(timeout=30.0).messages.create(**fakes.request())
    with client.copy(max_retries=0).messages.stream(**fakes.request()) as stream:
        assert stream.get_final_text() == "Hello!"
    client.with_options(timeout=30.0).copy(max_retries=1).messages.create(**fakes.request())
    calls = tracker.calls()
    assert [m.stream for m in calls] == [False, True, False]
    for m in calls:
        assert_counts(m, USAGE)
    tracker.uninstrument(client)
    assert not {"request", "copy", "with_options"} & set(vars(client))
    result = client.with_options(timeout=30.0).messages.create(**fakes.request())
    assert result.usage.output_tokens == 40
    assert len(tracker.calls()) == 3


async def test_async_clients_copied_with_options_are_observed() -> None:
    handler, _ = fakes.scripted([USAGE])
    client = fakes.async_client(handler)
    tracker = CacheTracker()
    tracker.instrument(client)
    result = await client.with_options(timeout=30.0).messages.create(**fakes.request())
    assert result.usage.output_tokens == 40
    (m,) = tracker.calls()
    assert_counts(m, USAGE)


def test_break_then_gc_finalises_once() -> None:
    """Leaving a stream with ``break`` records it once when it is garbage-collected."""
    handler, _ = fakes.scripted([USAGE])
    tracker = CacheTracker()
    stream = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request(), stream=True)
    for event in stream:
        assert event.type == "message_start"
        break
    assert tracker.calls() == []
    del stream, event
    gc.collect()
    (m,) = tracker.calls()
    # Only message_start was read: input and cache counts are known, output is partial.
    assert m.cache_read_tokens == 1800
    assert m.cache_write_tokens == 600
    assert m.output_tokens == 1


def test_close_finalises_once() -> None:
    """``stream.close()`` records the call; a later GC does not record it again."""
    handler, _ = fakes.scripted([USAGE])
    tracker = CacheTracker()
    stream = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request(), stream=True)
    next(iter(stream))
    stream.close()
    stream.close()
    del stream
    gc.collect()
    assert len(tracker.calls()) == 1


def test_error_mid_stream_is_recorded_and_reraised() -> None:
    """An ``error`` event mid-stream reaches the caller as the SDK's own error, and is recorded."""
    events = [
        *fakes.sse_events(USAGE)[:3],
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=fakes.sse_bytes(events), headers={"content-type": "text/event-stream"}
        )

    tracker = CacheTracker()
    stream = tracker.wrap(fakes.client(handler).messages.create)(**fakes.request(), stream=True)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for _ in stream:
            pass
    (m,) = tracker.calls()
    assert m.error is not None and "Overloaded" in m.error
    assert m.cache_read_tokens == 1800
    assert tracker.aggregate()["errors"] == 1


def test_sdk_exception_reaches_caller_unchanged() -> None:
    """A 400 from the API is the SDK's own ``BadRequestError``, and the call counts as an error."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            400,
            json={
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "too many breakpoints"},
            },
        )

    tracker = CacheTracker()
    with pytest.raises(anthropic.BadRequestError) as info:
        tracker.wrap(fakes.client(handler).messages.create)(**fakes.request())
    assert info.value.status_code == 400
    (m,) = tracker.calls()
    assert m.error is not None and m.error.startswith("BadRequestError")
    assert not m.usage_known
    assert tracker.aggregate()["unknown_usage_calls"] == 1


def test_automatic_top_level_cache_control_marks_last_block() -> None:
    """Top-level ``cache_control`` (automatic caching) is a breakpoint on the last block."""
    req = {
        "model": fakes.MODEL,
        "max_tokens": 5,
        "cache_control": {"type": "ephemeral"},
        "system": "Stable instructions.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    prompt = adapter.parse_request(req)
    assert [b.ttl for b in prompt.blocks] == [None, "5m"]
    assert prompt.turn_start == 1


def test_cache_order_tools_system_messages_and_ttls() -> None:
    """Blocks come tools -> system -> messages; markers carry their TTL and are stripped."""
    req = {
        "model": fakes.MODEL,
        "tools": [
            {
                "name": "lookup",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        "system": [{"type": "text", "text": "S"}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "ctx", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "q"},
        ],
    }
    prompt = adapter.parse_request(req)
    assert [b.section for b in prompt.blocks] == ["tools", "system", "messages", "messages", "messages"]
    assert [b.ttl for b in prompt.blocks] == ["1h", None, "5m", None, None]
    assert "cache_control" not in prompt.blocks[0].payload
    assert prompt.turn_start == 4


def test_ttl_taken_from_markers_when_response_lacks_split() -> None:
    """Without ``cache_creation`` in the response, 1h markers make the write a 1h write."""
    u = fakes.usage(input=5, read=0, write=1000, output=10, split=False)
    handler, _ = fakes.scripted([u])
    tracker = CacheTracker()
    tracker.wrap(fakes.client(handler).messages.create)(**fakes.request(ttl="1h"))
    (m,) = tracker.calls()
    assert m.cache_write_1h_tokens == 1000
    assert m.cost_usd == pytest.approx((5 * 2.0 + 1000 * 4.0 + 10 * 10.0) / 1e6)


def test_bedrock_and_vertex_clients_are_observed() -> None:
    """``AnthropicBedrock`` and ``AnthropicVertex`` report like the API and are instrumented."""
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(json.loads(request.content))
        return httpx2.Response(200, json=fakes.message(USAGE))

    bedrock = anthropic.AnthropicBedrock(
        aws_access_key="AKIDEXAMPLE",
        aws_secret_key="secret",
        aws_region="us-east-1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    vertex = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="proj",
        access_token="token",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    tracker = CacheTracker()
    tracker.instrument(bedrock)
    tracker.instrument(vertex)
    bedrock.messages.create(**fakes.request())
    vertex.messages.create(**fakes.request())
    assert len(bodies) == 2
    calls = tracker.calls()
    assert len(calls) == 2
    for m in calls:
        assert m.cache_read_tokens == 1800 and m.cache_write_1h_tokens == 200


def test_diagnostics_are_recorded() -> None:
    """A response's ``diagnostics.cache_miss_reason`` is kept on the call."""
    body = fakes.message(USAGE)
    body["diagnostics"] = {"cache_miss_reason": {"type": "system_changed"}}
    tracker = CacheTracker()
    m = tracker.record(body, request=fakes.request(), provider="anthropic")
    assert m is not None
    assert m.diagnostics == {"cache_miss_reason": {"type": "system_changed"}}


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-opus-5", 512),
        ("claude-opus-5-20260301", 512),
        ("claude-fable-5-1", 512),
        ("claude-mythos-5-1-20260901", 512),
        ("claude-opus-5-5", 0),  # the 5.5 models' minimum is not published: no guess
        ("claude-mythos-5-5", 0),
        ("claude-fable-5-2", 0),
        ("claude-sonnet-5", 1024),
        ("claude-sonnet-4-5-20250929", 1024),
        ("claude-sonnet-4-20250514", 1024),
        ("claude-opus-4-1-20250805", 1024),
        ("claude-opus-4-7", 2048),
        ("claude-3-5-haiku-20241022", 2048),
        ("claude-opus-4-5-20251101", 4096),
        ("claude-opus-4.6", 4096),
        ("claude-haiku-4-5", 4096),
        ("some-other-model", 0),
        (None, 0),
    ],
)
def test_minimum_cacheable_prefix_per_model(model: str | None, minimum: int) -> None:
    """Minimums come from the per-model table, matched on whole version segments: a family
    followed by a date matches, a later minor version does not."""
    assert adapter.min_cacheable(model) == minimum
