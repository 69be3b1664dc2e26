"""The Bedrock adapter, through the real boto3 client and botocore's own parsers.

A small HTTP server on 127.0.0.1 answers as Bedrock Runtime does: JSON bodies for
``converse`` / ``invoke_model``, and AWS event-stream framing (prelude, headers, CRC32s) for
``converse_stream`` / ``invoke_model_with_response_stream``, so every response, stream and
error below went through botocore exactly as a real one would.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gc
import io
import json
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError
from botocore.response import StreamingBody
from botocore.stub import Stubber

import cachebench
from cachebench.providers import anthropic, bedrock
from cachebench.tracker import CacheTracker
from cachebench.types import CallMetrics

NOW = 1_800_000_000.0
MODEL_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
)
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
# genai-prices, provider "aws", regional.anthropic.claude-sonnet-4-5-20250929-v1:0 (USD per MTok).
RATES = {
    "input": "3.3",
    "output": "16.5",
    "cache_read": "0.33",
    "cache_write": "4.125",
    "cache_write_1h": "6.6",
}

TOOLS = [
    {
        "toolSpec": {
            "name": "lookup_order",
            "description": "Find an order.",
            "inputSchema": {"json": {"type": "object", "properties": {"order_id": {"type": "string"}}}},
        }
    },
    {"cachePoint": {"type": "default", "ttl": "1h"}},
]
REQUEST: dict[str, Any] = {
    "modelId": MODEL_ARN,
    "toolConfig": {"tools": TOOLS},
    "system": [
        {"text": "You are the support agent of Example Corp."},
        {"cachePoint": {"type": "default", "ttl": "1h"}},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"text": "Order history: ..."},
                {"cachePoint": {"type": "default"}},
                {"text": "Where is order 42?"},
            ],
        },
    ],
}
USAGE = {
    "inputTokens": 25,
    "outputTokens": 300,
    "totalTokens": 3825,
    "cacheReadInputTokens": 500,
    "cacheWriteInputTokens": 3000,
    "cacheDetails": [{"ttl": "1h", "inputTokens": 2000}, {"ttl": "5m", "inputTokens": 1000}],
}


def expected_cost(inp: int, read: int, write_5m: int, write_1h: int, out: int) -> float:
    r = {k: Decimal(v) for k, v in RATES.items()}
    total = (
        inp * r["input"]
        + read * r["cache_read"]
        + write_5m * r["cache_write"]
        + write_1h * r["cache_write_1h"]
        + out * r["output"]
    )
    return float(total / Decimal(1_000_000))


# -- a Bedrock Runtime on loopback ----------------------------------------------------------


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and header lengths, CRC32), string
    headers (type 7), payload, message CRC32."""
    hb = b"".join(
        struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(hb) + len(payload) + 4, len(hb))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + hb + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, body: Any) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps(body).encode())


def exception_event(kind: str, message: str) -> bytes:
    headers = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, json.dumps({"message": message}).encode())


def chunk(model_event: Any) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: the model's own event, base64 in JSON."""
    return event("chunk", {"bytes": base64.b64encode(json.dumps(model_event).encode()).decode()})


CONVERSE_EVENTS = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"delta": {"text": "It ships"}, "contentBlockIndex": 0}},
    {"contentBlockDelta": {"delta": {"text": " today."}, "contentBlockIndex": 0}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {"messageStop": {"stopReason": "end_turn"}},
    {"metadata": {"usage": USAGE, "metrics": {"latencyMs": 640}}},
]
CONVERSE_BODY = {
    "output": {"message": {"role": "assistant", "content": [{"text": "It ships today."}]}},
    "stopReason": "end_turn",
    "usage": USAGE,
    "metrics": {"latencyMs": 640},
}
ANTHROPIC_REQUEST_BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 512,
    "system": [{"type": "text", "text": "Handbook ...", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [{"role": "user", "content": "Where is order 42?"}],
}
ANTHROPIC_USAGE = {
    "input_tokens": 14,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 120,
}
ANTHROPIC_BODY = {
    "id": "msg_bdrk_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "It ships today."}],
    "stop_reason": "end_turn",
    "usage": ANTHROPIC_USAGE,
}
ANTHROPIC_EVENTS = [
    {
        "type": "message_start",
        "message": {
            **ANTHROPIC_BODY,
            "content": [],
            "stop_reason": None,
            "usage": {**ANTHROPIC_USAGE, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "It ships today."}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 120}},
    {
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 14,
            "outputTokenCount": 120,
            "invocationLatency": 900,
            "firstByteLatency": 300,
        },
    },
]


class FakeBedrock(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # operation (last path segment) -> (status, headers, body, declared content length)
        self.replies: dict[str, tuple[int, dict[str, str], bytes, int | None]] = {}
        self.requests: list[tuple[str, bytes]] = []

    def reply(
        self,
        op: str,
        body: bytes,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        declared_length: int | None = None,
    ) -> None:
        stream = op.endswith("stream")
        base = {"Content-Type": "application/vnd.amazon.eventstream" if stream else "application/json"}
        self.replies[op] = (status, {**base, **(headers or {})}, body, declared_length)


class _Handler(BaseHTTPRequestHandler):
    server: FakeBedrock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.path, body))
        status, headers, data, declared = self.server.replies[self.path.rsplit("/", 1)[-1]]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if declared is None else declared))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _client(port: int) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def client(fake: FakeBedrock) -> Iterator[Any]:
    c = _client(fake.server_port)
    yield c
    c.close()


@pytest.fixture
def tracker() -> CacheTracker:
    return CacheTracker(provider="bedrock", clock=lambda: NOW)


def serve_converse(fake: FakeBedrock) -> None:
    fake.reply("converse", json.dumps(CONVERSE_BODY).encode())
    fake.reply(
        "converse-stream", b"".join(event(next(iter(e)), next(iter(e.values()))) for e in CONVERSE_EVENTS)
    )


def serve_invoke(fake: FakeBedrock) -> None:
    fake.reply("invoke", json.dumps(ANTHROPIC_BODY).encode())
    fake.reply("invoke-with-response-stream", b"".join(chunk(e) for e in ANTHROPIC_EVENTS))


def comparable(m: CallMetrics) -> dict[str, Any]:
    d = dataclasses.asdict(m)
    for name in ("elapsed_ms", "timestamp", "stream"):
        d.pop(name)
    return d


# -- requests -------------------------------------------------------------------------------


def test_converse_cache_points_mark_the_previous_block_and_are_dropped() -> None:
    """A cachePoint marks the block before it (with its TTL, default 5m), is not a block
    itself, and blocks come in cache order tools -> system -> messages; the model is the
    modelId without its ARN prefix."""
    p = bedrock.parse_request(REQUEST)
    assert [(b.section, b.index, b.ttl) for b in p.blocks] == [
        ("tools", 0, "1h"),
        ("system", 0, "1h"),
        ("messages", 0, "5m"),
        ("messages", 1, None),
    ]
    assert p.blocks[2].payload == ["user", {"text": "Order history: ..."}]
    assert "cachePoint" not in json.dumps([b.payload for b in p.blocks])
    assert (p.provider, p.model, p.turn_start, p.implicit) == ("bedrock", MODEL, 2, False)


def test_cache_point_marks_across_sections_and_a_leading_one_marks_nothing() -> None:
    """A cachePoint opening ``messages`` marks the last system block; one before any block
    is ignored."""
    p = bedrock.parse_request(
        {
            "modelId": MODEL,
            "system": [{"cachePoint": {"type": "default"}}, {"text": "S"}],
            "messages": [
                {"role": "user", "content": [{"cachePoint": {"type": "default", "ttl": "1h"}}, {"text": "Q"}]}
            ],
        }
    )
    assert [(b.section, b.ttl) for b in p.blocks] == [("system", "1h"), ("messages", None)]


def test_tool_choice_and_thinking_are_settings() -> None:
    """toolConfig.toolChoice and additionalModelRequestFields.thinking invalidate the messages
    part of a Claude entry, so they are hashed as settings: the breakpoint inside the
    messages changes, the tools+system ones do not."""
    base = bedrock.parse_request(REQUEST)
    req = {
        **REQUEST,
        "toolConfig": {**REQUEST["toolConfig"], "toolChoice": {"auto": {}}},
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
    }
    p = bedrock.parse_request(req)
    assert base.settings is None
    assert p.settings == {"toolChoice": {"auto": {}}, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert cachebench.fingerprint(
        REQUEST["messages"], REQUEST["system"], TOOLS, provider="bedrock", model=MODEL_ARN
    ) == bedrock_prefix(REQUEST)
    from cachebench.fingerprint import key

    before, after = key(base).breakpoint_ids, key(p).breakpoint_ids
    assert before[:2] == after[:2] and before[2] != after[2]


def bedrock_prefix(request: dict[str, Any]) -> str | None:
    from cachebench.fingerprint import key

    return key(bedrock.parse_request(request)).prefix_id


@pytest.mark.parametrize("form", ["bytes", "str", "file"])
def test_invoke_model_anthropic_body_is_read_as_anthropic(form: str) -> None:
    """An InvokeModel body with anthropic_version is decoded (bytes, text or a file, whose
    position is left where it was) and parsed with the Anthropic rules under provider
    "bedrock"."""
    raw = json.dumps(ANTHROPIC_REQUEST_BODY).encode()
    body: Any = {"bytes": raw, "str": raw.decode(), "file": io.BytesIO(raw)}[form]
    p = bedrock.parse_request({"modelId": MODEL, "body": body})
    want = anthropic.build_prompt(
        provider="bedrock",
        model=MODEL,
        tools=None,
        system=ANTHROPIC_REQUEST_BODY["system"],
        messages=ANTHROPIC_REQUEST_BODY["messages"],
    )
    assert p == want
    assert [b.ttl for b in p.blocks] == ["1h", None]
    if form == "file":
        assert body.tell() == 0


def test_invoke_model_body_that_is_not_json_is_an_empty_prompt() -> None:
    """A non-JSON InvokeModel body (an image model, say) is uncacheable, not an error."""
    p = bedrock.parse_request({"modelId": "stability.sd3", "body": b"\x89PNG"})
    assert (p.blocks, p.model) == ((), "stability.sd3")


def test_min_cacheable_and_read_tolerance() -> None:
    """Claude models use the Anthropic minimums, Nova 1000 per checkpoint, others 0; reads
    are exact."""
    assert bedrock.min_cacheable("global.anthropic.claude-haiku-4-5-20251001-v1:0") == 4096
    assert bedrock.min_cacheable("us.anthropic.claude-sonnet-4-20250514-v1:0") == 1024
    assert bedrock.min_cacheable("us.amazon.nova-pro-v1:0") == 1000
    assert bedrock.min_cacheable("meta.llama3-70b-instruct-v1:0") == 0
    assert bedrock.min_cacheable(None) == 0
    assert bedrock.read_tolerance(MODEL) == 0


def test_owns_client_and_response() -> None:
    """bedrock-runtime botocore clients are Bedrock's; other AWS services are not; Converse
    bodies and stream events are recognised."""
    assert bedrock.owns_client(
        boto3.client(
            "bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
    )
    assert not bedrock.owns_client(
        boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    )
    assert bedrock.owns_response(CONVERSE_BODY)
    assert bedrock.owns_response(CONVERSE_EVENTS)
    assert not bedrock.owns_response({"type": "message", "usage": {"input_tokens": 1}})


def test_provider_is_detected_from_client_and_body(fake: FakeBedrock, client: Any) -> None:
    """Without provider=, wrap() and instrument() recognise a bedrock-runtime client and
    record() a Converse body."""
    serve_converse(fake)
    t = CacheTracker(clock=lambda: NOW)
    t.wrap(client.converse)(**REQUEST)
    t.instrument(client)
    client.converse(**REQUEST)
    t.uninstrument(client)
    t.record({k: v for k, v in CONVERSE_BODY.items() if k != "usage"}, request=REQUEST)
    assert [(m.provider, m.usage_known) for m in t.calls()] == [("bedrock", True)] * 2 + [("bedrock", False)]


# -- live calls -----------------------------------------------------------------------------


def test_converse_records_exact_counts_and_cost(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """converse: exclusive inputTokens, reads, writes with the 1h part from cacheDetails,
    output, and the genai-prices cost for the ARN's model; the caller's dict is unchanged."""
    serve_converse(fake)
    converse = tracker.wrap(client.converse, flow="support")
    resp = converse(**REQUEST)
    assert resp["usage"] == USAGE and resp["output"] == CONVERSE_BODY["output"]
    [m] = tracker.calls()
    assert (m.provider, m.model, m.flow, m.stream) == ("bedrock", MODEL, "support", False)
    assert (
        m.input_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.cache_write_1h_tokens,
        m.output_tokens,
    ) == (25, 500, 3000, 2000, 300)
    assert m.cost_usd == expected_cost(25, 500, 1000, 2000, 300)
    assert m.cost_without_cache_usd == expected_cost(3525, 0, 0, 0, 300)
    assert (m.usage_known, m.writes_reported, m.error) == (True, True, None)
    assert m.prefix_id is not None and len(m.breakpoint_ids) == 3


def test_converse_stream_caller_gets_every_event_and_same_metrics(fake: FakeBedrock, client: Any) -> None:
    """converse_stream: the caller iterates the same EventStream object and sees exactly the
    events an unobserved client sees; the call is recorded once, as a stream, with the
    metadata event's usage; every field equals the non-stream call's."""
    serve_converse(fake)
    plain = _client(fake.server_port)
    try:
        want_events = list(plain.converse_stream(**REQUEST)["stream"])
    finally:
        plain.close()
    assert want_events == CONVERSE_EVENTS

    results = {}
    for method in ("converse", "converse_stream"):
        t = CacheTracker(provider="bedrock", clock=lambda: NOW)
        resp = t.wrap(getattr(client, method), flow="support")(**REQUEST)
        if method == "converse_stream":
            stream = resp["stream"]
            assert type(stream).__name__ == "EventStream"
            assert list(stream) == want_events
            stream.close()  # after exhaustion: still recorded once
        [m] = t.calls()
        results[method] = m
    assert results["converse_stream"].stream is True
    assert comparable(results["converse_stream"]) == comparable(results["converse"])


def test_invoke_model_body_is_put_back_and_counts_as_anthropic(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """invoke_model: the StreamingBody is read and replaced by an equivalent one, so the
    caller reads identical bytes; usage follows the Anthropic body (TTL split included) and
    the model is the request's modelId, not the body's unprefixed name."""
    serve_invoke(fake)
    resp = tracker.wrap(client.invoke_model)(modelId=MODEL, body=json.dumps(ANTHROPIC_REQUEST_BODY))
    assert isinstance(resp["body"], StreamingBody)
    assert resp["body"].read() == json.dumps(ANTHROPIC_BODY).encode()
    assert resp["body"].read() == b""
    [m] = tracker.calls()
    assert (
        m.model,
        m.input_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.cache_write_1h_tokens,
        m.output_tokens,
    ) == (MODEL, 14, 1000, 3000, 2000, 120)
    assert m.cost_usd == expected_cost(14, 1000, 1000, 2000, 120)
    assert [len(m.breakpoint_ids), m.stream] == [1, False]


def test_invoke_stream_decodes_chunks_and_matches_invoke_model(fake: FakeBedrock, client: Any) -> None:
    """invoke_model_with_response_stream: chunk bytes are decoded and folded like Anthropic
    SSE (message_start counts, message_delta output overwrites); the caller still gets every
    chunk; the metrics equal invoke_model's for the same request."""
    serve_invoke(fake)
    request = {"modelId": MODEL, "body": json.dumps(ANTHROPIC_REQUEST_BODY)}
    results = {}
    for method in ("invoke_model", "invoke_model_with_response_stream"):
        t = CacheTracker(provider="bedrock", clock=lambda: NOW)
        resp = t.wrap(getattr(client, method), flow="f")(**request)
        if method.endswith("stream"):
            got = [json.loads(e["chunk"]["bytes"]) for e in resp["body"]]
            assert got == ANTHROPIC_EVENTS
        [results[method]] = t.calls()
    assert results["invoke_model_with_response_stream"].stream is True
    assert comparable(results["invoke_model_with_response_stream"]) == comparable(results["invoke_model"])


def test_stream_left_with_break_is_finalised_once_by_gc(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """Breaking out of a stream before its metadata event and dropping it records the call
    once, on garbage collection, with unknown usage (not zeros) and no error."""
    serve_converse(fake)
    resp = tracker.wrap(client.converse_stream)(**REQUEST)
    for first in resp["stream"]:
        assert first == CONVERSE_EVENTS[0]
        break
    assert tracker.calls() == []
    del resp
    gc.collect()
    [m] = tracker.calls()
    assert (m.usage_known, m.error, m.stream, m.cost_usd) == (False, None, True, None)


def test_stream_close_finalises_once(fake: FakeBedrock, client: Any, tracker: CacheTracker) -> None:
    """close() on the EventStream finalises the call; closing again or GC adds nothing."""
    serve_converse(fake)
    resp = tracker.wrap(client.converse_stream)(**REQUEST)
    resp["stream"].close()
    resp["stream"].close()
    del resp
    gc.collect()
    [m] = tracker.calls()
    assert m.usage_known is False


def test_stream_exception_event_reaches_caller_and_is_recorded(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """A modelStreamErrorException event mid-stream raises botocore's own EventStreamError to
    the caller, unchanged, and the call is recorded with that error as it is raised (once:
    dropping the stream later adds nothing)."""
    fake.reply(
        "converse-stream",
        event("messageStart", {"role": "assistant"})
        + exception_event("modelStreamErrorException", "model went away"),
    )
    resp = tracker.wrap(client.converse_stream)(**REQUEST)
    stream = iter(resp["stream"])
    seen = [next(stream)]
    with pytest.raises(EventStreamError, match="model went away"):
        next(stream)
    assert seen == [{"messageStart": {"role": "assistant"}}]
    [m] = tracker.calls()
    del resp, stream
    gc.collect()
    assert tracker.calls() == [m]
    assert m.error is not None and m.error.startswith("EventStreamError")
    assert m.usage_known is False


def test_stream_corrupt_frame_mid_stream_is_recorded(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """A frame failing its CRC mid-stream: botocore's own decoding error reaches the caller
    unchanged (raised from the raw event generator we observe) and the call is recorded
    once with it."""
    bad = bytearray(event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}}))
    bad[-1] ^= 0xFF
    fake.reply("converse-stream", event("messageStart", {"role": "assistant"}) + bytes(bad))
    resp = tracker.wrap(client.converse_stream)(**REQUEST)
    with pytest.raises(Exception, match=r"[Cc]hecksum") as info:
        list(resp["stream"])
    [m] = tracker.calls()
    assert m.error is not None and m.error.startswith(type(info.value).__name__)
    assert m.usage_known is False


def test_stream_ending_early_is_unknown_usage(fake: FakeBedrock, client: Any, tracker: CacheTracker) -> None:
    """A stream that ends before its metadata event (the connection closed early) is recorded
    once, at exhaustion, with unknown usage."""
    body = event("messageStart", {"role": "assistant"})
    fake.reply("converse-stream", body, declared_length=len(body) + 500)
    resp = tracker.wrap(client.converse_stream)(**REQUEST)
    assert list(resp["stream"]) == [{"messageStart": {"role": "assistant"}}]
    [m] = tracker.calls()
    assert (m.usage_known, m.stream) == (False, True)


def test_invoke_model_body_read_failure_reaches_caller(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """If reading an InvokeModel body fails, the call is recorded with the error and the
    caller's own read raises that same error."""
    data = json.dumps(ANTHROPIC_BODY).encode()
    fake.reply("invoke", data[:20], declared_length=len(data))
    resp = tracker.wrap(client.invoke_model)(modelId=MODEL, body=json.dumps(ANTHROPIC_REQUEST_BODY))
    [m] = tracker.calls()
    assert m.error is not None and m.usage_known is False
    with pytest.raises(Exception) as info:
        resp["body"].read()
    assert m.error.startswith(type(info.value).__name__)


def test_http_error_reaches_caller_and_is_recorded(
    fake: FakeBedrock, client: Any, tracker: CacheTracker
) -> None:
    """A 400 ValidationException is boto3's own exception for the caller; the call is
    recorded with the error and unknown usage."""
    fake.reply(
        "converse",
        b'{"message": "too many cache points"}',
        status=400,
        headers={"x-amzn-ErrorType": "ValidationException"},
    )
    with pytest.raises(client.exceptions.ValidationException, match="too many cache points"):
        tracker.wrap(client.converse)(**REQUEST)
    [m] = tracker.calls()
    assert m.error is not None and m.error.startswith("ValidationException")
    assert (m.usage_known, m.cost_usd, m.prefix_id) == (False, None, bedrock_prefix(REQUEST))


def test_null_and_missing_usage_fields(fake: FakeBedrock, client: Any, tracker: CacheTracker) -> None:
    """Null or absent counters are 0; a response without usage is unknown, never zeros."""
    fake.reply(
        "converse",
        json.dumps(
            {
                **CONVERSE_BODY,
                "usage": {
                    "inputTokens": 20,
                    "outputTokens": None,
                    "totalTokens": None,
                    "cacheReadInputTokens": None,
                    "cacheDetails": None,
                },
            }
        ).encode(),
    )
    converse = tracker.wrap(client.converse)
    converse(**REQUEST)
    fake.reply("converse", json.dumps({k: v for k, v in CONVERSE_BODY.items() if k != "usage"}).encode())
    converse(**REQUEST)
    nulls, missing = tracker.calls()
    assert (
        nulls.input_tokens,
        nulls.cache_read_tokens,
        nulls.cache_write_tokens,
        nulls.output_tokens,
        nulls.usage_known,
    ) == (20, 0, 0, 0, True)
    assert (missing.usage_known, missing.input_tokens, missing.cost_usd) == (False, 0, None)


def test_instrument_and_uninstrument(fake: FakeBedrock, client: Any, tracker: CacheTracker) -> None:
    """instrument() patches the four runtime methods on the client instance (idempotently,
    with the flow given); uninstrument() restores the class's own methods."""
    serve_converse(fake)
    serve_invoke(fake)
    tracker.instrument(client, flow="support")
    tracker.instrument(client, flow="ignored")
    assert set(bedrock.METHODS) <= set(vars(client))
    client.converse(**REQUEST)
    list(client.converse_stream(**REQUEST)["stream"])
    client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_REQUEST_BODY))["body"].read()
    list(
        client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(ANTHROPIC_REQUEST_BODY))[
            "body"
        ]
    )
    tracker.uninstrument(client)
    assert not set(bedrock.METHODS) & set(vars(client))
    client.converse(**REQUEST)
    calls = tracker.calls()
    assert [(m.flow, m.stream, m.output_tokens) for m in calls] == [
        ("support", False, 300),
        ("support", True, 300),
        ("support", False, 120),
        ("support", True, 120),
    ]


def test_second_call_expects_the_written_prefix(fake: FakeBedrock, client: Any) -> None:
    """After a call wrote its prefix, the same request is expected to read it all: a full
    read is a hit, a fresh write instead is an unexpected miss (and alerts)."""
    alerts: list[CallMetrics] = []
    t = CacheTracker(provider="bedrock", clock=lambda: NOW, on_miss_alert=alerts.append)
    converse = t.wrap(client.converse, flow="support")
    for usage in (
        USAGE,
        {**USAGE, "cacheReadInputTokens": 3500, "cacheWriteInputTokens": 0, "cacheDetails": []},
        {**USAGE, "cacheReadInputTokens": 0, "cacheWriteInputTokens": 3500},
    ):
        fake.reply("converse", json.dumps({**CONVERSE_BODY, "usage": usage}).encode())
        converse(**REQUEST)
    first, hit, miss = t.calls()
    assert (first.expected_read_tokens, first.unexpected_miss) == (0, False)
    assert (hit.expected_read_tokens, hit.cache_read_tokens, hit.unexpected_miss) == (3500, 3500, False)
    assert (miss.expected_read_tokens, miss.unexpected_miss, miss.miss_cause) == (3500, True, "provider")
    assert alerts == [miss]


def test_stubber_responses_are_observed(tracker: CacheTracker) -> None:
    """A client stubbed with botocore's Stubber (what users' own tests use) is observed like
    a live one: instrument() wraps the method the Stubber answers."""
    c = boto3.client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(c) as stub:
        stub.add_response("converse", CONVERSE_BODY)
        tracker.instrument(c, flow="stubbed")
        assert c.converse(**REQUEST)["usage"] == USAGE
    [m] = tracker.calls()
    assert (m.flow, m.model, m.cache_write_1h_tokens, m.cost_usd) == (
        "stubbed",
        MODEL,
        2000,
        expected_cost(25, 500, 1000, 2000, 300),
    )


def test_record_boto3_invoke_response_puts_body_back(fake: FakeBedrock, client: Any) -> None:
    """record() of a boto3 invoke_model response dict reads its body and leaves an equivalent
    one for the caller."""
    serve_invoke(fake)
    resp = client.invoke_model(modelId=MODEL, body=json.dumps(ANTHROPIC_REQUEST_BODY))
    t = CacheTracker(clock=lambda: NOW)
    m = t.record(
        resp, request={"modelId": MODEL, "body": json.dumps(ANTHROPIC_REQUEST_BODY)}, provider="bedrock"
    )
    assert m is not None and (m.cache_write_1h_tokens, m.output_tokens, m.model) == (2000, 120, MODEL)
    assert json.loads(resp["body"].read()) == ANTHROPIC_BODY


def test_record_boto3_stream_result_reads_it(fake: FakeBedrock, client: Any) -> None:
    """record() of an unread converse_stream result dict reads its EventStream to the end."""
    serve_converse(fake)
    resp = client.converse_stream(**REQUEST)
    m = CacheTracker(clock=lambda: NOW).record(resp, request=REQUEST, provider="bedrock")
    assert m is not None and (m.input_tokens, m.cache_read_tokens, m.output_tokens) == (25, 500, 300)


CASES = json.loads((Path(__file__).parent / "usage_cases" / "bedrock.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_usage_cases(case: dict[str, Any]) -> None:
    """Each recorded Bedrock body or event list gives exactly the expected counts and cost."""
    m = CacheTracker().record(
        case.get("events") or case["response"], request=case.get("request"), provider=case["provider"]
    )
    assert m is not None
    assert {k: getattr(m, k) for k in case["expected"]} == case["expected"]
