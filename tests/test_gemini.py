"""The Gemini adapter, through the real google-genai client.

The client's HTTP goes to an ``httpx2.MockTransport`` (google-genai accepts injected httpx2
clients through ``HttpOptions``): ``:generateContent`` answers with a JSON body and
``:streamGenerateContent?alt=sse`` with ``data: {...}`` lines, in the REST API's camelCase,
so responses and streams below are built by the SDK's own parsers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import _transformers, errors, types

from cachebench.fingerprint import key, to_plain
from cachebench.providers import gemini
from cachebench.tracker import CacheTracker
from cachebench.types import CallMetrics

NOW = 1_800_000_000.0
MODEL = "gemini-2.5-flash"
# genai-prices, provider "google", gemini-2.5-flash (USD per MTok).
RATES = {"input": "0.3", "output": "2.5", "cache_read": "0.03"}

USAGE = {
    "promptTokenCount": 5000,
    "cachedContentTokenCount": 4000,
    "candidatesTokenCount": 100,
    "thoughtsTokenCount": 50,
    "totalTokenCount": 5150,
}
BODY = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "It ships today."}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": USAGE,
    "modelVersion": MODEL,
    "responseId": "resp-1",
}
# Every chunk's usage is the running total; the last one is the whole call's.
CHUNKS = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "It ships"}]}, "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 5000,
            "cachedContentTokenCount": 4000,
            "candidatesTokenCount": 40,
            "totalTokenCount": 5040,
        },
        "modelVersion": MODEL,
        "responseId": "resp-1",
    },
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": " today."}]}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": USAGE,
        "modelVersion": MODEL,
        "responseId": "resp-1",
    },
]
REQUEST: dict[str, Any] = {
    "model": MODEL,
    "contents": [
        {"role": "user", "parts": [{"text": "Order history: ..."}]},
        {"role": "model", "parts": [{"text": "Noted."}]},
        {"role": "user", "parts": [{"text": "Where is order 42?"}]},
    ],
    "config": {
        "system_instruction": "You are the support agent of Example Corp.",
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "lookup_order",
                        "description": "Find an order.",
                        "parameters": {"type": "OBJECT", "properties": {"order_id": {"type": "STRING"}}},
                    }
                ]
            }
        ],
    },
}


def expected_cost(inp: int, read: int, out: int) -> float:
    r = {k: Decimal(v) for k, v in RATES.items()}
    return float((inp * r["input"] + read * r["cache_read"] + out * r["output"]) / Decimal(1_000_000))


class FakeGemini:
    """Answers google-genai's requests; ``status`` other than 200 answers with an API error."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.body: dict[str, Any] = BODY
        self.chunks: list[dict[str, Any]] = CHUNKS
        self.status = 200

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if self.status != 200:
            error = {
                "error": {"code": self.status, "message": "cachedContent not found", "status": "NOT_FOUND"}
            }
            return httpx2.Response(self.status, json=error)
        if request.url.path.endswith(":streamGenerateContent"):
            sse = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in self.chunks)
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=sse.encode())
        return httpx2.Response(200, json=self.body)


@pytest.fixture
def fake() -> FakeGemini:
    return FakeGemini()


@pytest.fixture
def client(fake: FakeGemini) -> Iterator[genai.Client]:
    sync_http = httpx2.Client(transport=httpx2.MockTransport(fake.handler))
    async_http = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    c = genai.Client(
        api_key="x",
        http_options=types.HttpOptions(
            base_url="http://gemini.test", httpx_client=sync_http, httpx_async_client=async_http
        ),
    )
    yield c
    c.close()
    sync_http.close()
    asyncio.run(async_http.aclose())


@pytest.fixture
def tracker() -> CacheTracker:
    return CacheTracker(provider="gemini", clock=lambda: NOW)


def comparable(m: CallMetrics) -> dict[str, Any]:
    d = dataclasses.asdict(m)
    for name in ("elapsed_ms", "timestamp", "stream"):
        d.pop(name)
    return d


# -- requests -------------------------------------------------------------------------------


def test_implicit_breakpoint_sits_before_the_newest_user_turn() -> None:
    """Blocks come as tools -> system instruction -> contents; the one implicit breakpoint
    (TTL 5m) is the last block before the newest user turn."""
    p = gemini.parse_request(REQUEST)
    assert [(b.section, b.index, b.ttl) for b in p.blocks] == [
        ("tools", 0, None),
        ("system", 0, None),
        ("messages", 0, None),
        ("messages", 1, "5m"),
        ("messages", 2, None),
    ]
    assert (p.provider, p.model, p.turn_start, p.implicit) == ("gemini", MODEL, 4, True)
    assert p.blocks[1].payload == {"text": "You are the support agent of Example Corp."}
    assert p.blocks[3].payload == ["model", {"text": "Noted."}]


def test_single_turn_and_model_last_put_the_breakpoint_on_the_last_block() -> None:
    """With nothing before the newest user turn, or no user turn after the last model turn,
    the implicit breakpoint is the last block."""
    single = gemini.parse_request({"model": MODEL, "contents": "Hello"})
    assert [(b.payload, b.ttl) for b in single.blocks] == [(["user", {"text": "Hello"}], "5m")]
    assert single.turn_start == 0
    model_last = gemini.parse_request({"model": MODEL, "contents": REQUEST["contents"][:2]})
    assert [b.ttl for b in model_last.blocks] == [None, "5m"]
    assert model_last.turn_start == 2
    assert gemini.parse_request({"model": MODEL, "contents": []}).blocks == ()


CONTENT_FORMS: list[Any] = [
    "Hello",
    ["a", "b"],
    ["a", types.Part(function_call=types.FunctionCall(name="f", args={"order_id": "42"})), "c"],
    [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]}, "c"],
    [
        types.Content(role="user", parts=[types.Part(text="a")]),
        ["b", "c"],
        types.Part(inline_data=types.Blob(mime_type="image/png", data=b"\x89PNG")),
    ],
    types.Content(parts=[types.Part(text="no role")]),
]


@pytest.mark.parametrize("contents", CONTENT_FORMS)
def test_contents_are_grouped_as_the_sdk_groups_them(contents: Any) -> None:
    """Turns and roles match google-genai's own ``t_contents`` for strings, part lists
    (function calls make a model turn), Content objects and dicts, and nested lists."""
    want = []
    for c in _transformers.t_contents(contents):
        want.append((c.role or "user", [to_plain(p) for p in c.parts or []]))
    assert gemini.contents_of(contents) == want


def test_sdk_objects_and_snake_case_dicts_fingerprint_alike() -> None:
    """A request spelled with types.Content/Part/Tool objects and the same one spelled as
    snake_case dicts give the same blocks, so the same prefix_id."""
    objects = {
        "model": MODEL,
        "contents": [
            types.Content(
                role="user",
                parts=[
                    types.Part(text="a"),
                    types.Part(inline_data=types.Blob(mime_type="text/plain", data=b"x")),
                ],
            ),
            types.Content(
                role="model",
                parts=[types.Part(function_call=types.FunctionCall(name="f", args={"order_id": "42"}))],
            ),
            types.Content(
                role="user",
                parts=[
                    types.Part(
                        function_response=types.FunctionResponse(
                            name="f", response={"status_code": "shipped"}
                        )
                    )
                ],
            ),
        ],
        "config": types.GenerateContentConfig(
            system_instruction=types.Content(parts=[types.Part(text="sys")]),
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="f", description="d")])],
        ),
    }
    dicts = {
        "model": f"models/{MODEL}",
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "a"}, {"inline_data": {"mime_type": "text/plain", "data": "eA=="}}],
            },
            {"role": "model", "parts": [{"function_call": {"name": "f", "args": {"order_id": "42"}}}]},
            {
                "role": "user",
                "parts": [{"function_response": {"name": "f", "response": {"status_code": "shipped"}}}],
            },
        ],
        "config": {
            "system_instruction": "sys",
            "tools": [{"function_declarations": [{"name": "f", "description": "d"}]}],
        },
    }
    a, b = gemini.parse_request(objects), gemini.parse_request(dicts)
    assert a == b
    assert key(a).prefix_id == key(b).prefix_id is not None


def test_rest_body_parses_like_sdk_arguments() -> None:
    """A logged REST body (camelCase, systemInstruction and tools at the top level) parses
    to the same prompt as the SDK call that sent it."""
    rest = {
        "model": MODEL,
        "contents": REQUEST["contents"],
        "systemInstruction": {"parts": [{"text": "You are the support agent of Example Corp."}]},
        "tools": [{"functionDeclarations": REQUEST["config"]["tools"][0]["function_declarations"]}],
    }
    assert gemini.parse_request(rest) == gemini.parse_request(REQUEST)


def test_cached_content_is_the_first_block_and_callables_are_tools() -> None:
    """An explicit cached_content name is hashed first; a Python function given as a tool
    (automatic function calling) is described by its name, signature and docstring."""

    def lookup_order(order_id: str) -> str:
        """Find an order."""
        return order_id

    p = gemini.parse_request(
        {
            "model": MODEL,
            "contents": "Hi",
            "config": {"cached_content": "cachedContents/abc", "tools": [lookup_order]},
        }
    )
    assert p.blocks[0].payload == {"cachedContent": "cachedContents/abc"}
    tool = p.blocks[1].payload
    assert tool["callable"].endswith("lookup_order")
    assert tool["signature"] == str(inspect.signature(lookup_order))
    assert tool["doc"] == "Find an order."


def test_model_names_min_cacheable_and_tolerance() -> None:
    """Resource paths are stripped from model names; minimums are 2048 on 2.5 and 4096 on
    3.x (0 otherwise); a read shortfall under the minimum is not a miss."""
    assert gemini.model_name("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert (
        gemini.model_name("projects/p/locations/l/publishers/google/models/gemini-3.5-flash")
        == "gemini-3.5-flash"
    )
    assert gemini.model_name("google/gemini-2.5-pro") == "gemini-2.5-pro"
    assert gemini.model_name("tunedModels/123") == "tunedModels/123"
    assert [
        gemini.min_cacheable(m)
        for m in (
            "models/gemini-2.5-pro",
            "gemini-3-pro-preview",
            "gemini-3.5-flash",
            "gemini-2.0-flash",
            None,
        )
    ] == [2048, 4096, 4096, 0, 0]
    assert gemini.read_tolerance("gemini-3.5-flash") == 4096


def test_owns_client_and_response() -> None:
    """google-genai objects and Gemini JSON in either casing are recognised."""
    assert gemini.owns_client(genai.Client(api_key="x").models)
    assert gemini.owns_response(types.GenerateContentResponse())
    assert gemini.owns_response({"usageMetadata": {}}) and gemini.owns_response([{"usage_metadata": {}}])
    assert not gemini.owns_response({"type": "message"})


def test_provider_is_detected_from_client_and_body(client: genai.Client) -> None:
    """Without provider=, wrap() and instrument() recognise google-genai clients and record()
    a Gemini body in either casing."""
    t = CacheTracker(clock=lambda: NOW)
    t.wrap(client.models.generate_content)(**REQUEST)
    t.instrument(client)
    client.models.generate_content(**REQUEST)
    t.uninstrument(client)
    t.record(BODY)
    t.record(
        {
            "usage_metadata": {
                "prompt_token_count": 5000,
                "cached_content_token_count": 4000,
                "candidates_token_count": 150,
            },
            "model_version": MODEL,
        }
    )
    assert {(m.provider, m.input_tokens, m.output_tokens) for m in t.calls()} == {("gemini", 1000, 150)}
    assert len(t.calls()) == 4


# -- live calls -----------------------------------------------------------------------------


def test_generate_content_records_exact_counts_and_cost(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """generate_content: prompt_token_count includes the cached tokens, so input is the
    difference; thoughts count as output; writes are not reported; the model comes from
    model_version; cost from genai-prices."""
    resp = tracker.wrap(client.models.generate_content, flow="support")(**REQUEST)
    assert resp.text == "It ships today."
    [m] = tracker.calls()
    assert (m.provider, m.model, m.flow, m.stream) == ("gemini", MODEL, "support", False)
    assert (
        m.input_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.cache_write_1h_tokens,
        m.output_tokens,
    ) == (1000, 4000, 0, 0, 150)
    assert (m.usage_known, m.writes_reported, m.error) == (True, False, None)
    assert m.cost_usd == expected_cost(1000, 4000, 150)
    assert m.cost_without_cache_usd == expected_cost(5000, 0, 150)
    assert m.prefix_id == key(gemini.parse_request(REQUEST)).prefix_id is not None
    assert fake.requests[0].url.path == f"/v1/models/{MODEL}:generateContent"


async def test_same_request_same_metrics_in_every_mode(fake: FakeGemini, client: genai.Client) -> None:
    """sync, async, stream and async stream: identical CallMetrics but for timing and the
    stream flag; streams take the last cumulative chunk (never a sum); callers get every
    chunk."""
    results: dict[str, CallMetrics] = {}

    def tracked(method: Any) -> Any:
        t = CacheTracker(provider="gemini", clock=lambda: NOW)
        return t, t.wrap(method, flow="support")

    t, fn = tracked(client.models.generate_content)
    fn(**REQUEST)
    [results["sync"]] = t.calls()
    t, fn = tracked(client.aio.models.generate_content)
    await fn(**REQUEST)
    [results["async"]] = t.calls()
    t, fn = tracked(client.models.generate_content_stream)
    assert [c.text for c in fn(**REQUEST)] == ["It ships", " today."]
    [results["stream"]] = t.calls()
    t, fn = tracked(client.aio.models.generate_content_stream)
    assert [c.text async for c in await fn(**REQUEST)] == ["It ships", " today."]
    [results["async_stream"]] = t.calls()

    assert {k: m.stream for k, m in results.items()} == {
        "sync": False,
        "async": False,
        "stream": True,
        "async_stream": True,
    }
    want = comparable(results["sync"])
    assert all(comparable(m) == want for m in results.values())
    assert want["output_tokens"] == 150


def test_implicit_reads_are_judged_with_the_minimum_as_tolerance(
    fake: FakeGemini, client: genai.Client
) -> None:
    """The same request again is expected to find the whole previous prompt cached; a read
    short of it by less than the model's minimum (2048 on 2.5) is fine, reading nothing is an
    unexpected miss."""
    alerts: list[CallMetrics] = []
    t = CacheTracker(provider="gemini", clock=lambda: NOW, on_miss_alert=alerts.append)
    generate = t.wrap(client.models.generate_content, flow="support")
    for cached in (4000, 4000, None):
        fake.body = {**BODY, "usageMetadata": {**USAGE, "cachedContentTokenCount": cached}}
        generate(**REQUEST)
    first, short, none = t.calls()
    assert (first.expected_read_tokens, first.unexpected_miss) == (0, False)
    assert (short.expected_read_tokens, short.cache_read_tokens, short.unexpected_miss) == (5000, 4000, False)
    assert (none.cache_read_tokens, none.unexpected_miss, none.miss_cause) == (0, True, "provider")
    assert alerts == [none]


def test_stream_left_with_break_is_finalised_once_by_gc(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """Breaking out of a stream and dropping it records the call once, on garbage
    collection, with the usage of the last chunk seen."""
    gen = tracker.wrap(client.models.generate_content_stream)(**REQUEST)
    for first in gen:
        assert first.text == "It ships"
        break
    assert tracker.calls() == []
    del gen
    gc.collect()
    [m] = tracker.calls()
    assert (m.usage_known, m.error, m.stream, m.input_tokens, m.output_tokens) == (True, None, True, 1000, 40)


async def test_async_stream_left_with_break_is_finalised_once(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """The async stream too: after break, the event loop's async-generator finaliser closes
    it and the call is recorded once."""
    agen: AsyncIterator[Any] = await tracker.wrap(client.aio.models.generate_content_stream)(**REQUEST)
    async for _ in agen:
        break
    del agen
    gc.collect()
    for _ in range(100):  # the finaliser schedules aclose() on the loop
        if tracker.calls():
            break
        await asyncio.sleep(0)
    [m] = tracker.calls()
    assert (m.usage_known, m.error, m.output_tokens) == (True, None, 40)


def test_errors_reach_the_caller_unchanged_and_are_recorded(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """An API error is google-genai's own exception for the caller, raised from the call or
    from the stream's first iteration; each call is recorded once with it and unknown usage."""
    fake.status = 404
    with pytest.raises(errors.ClientError, match="cachedContent not found"):
        tracker.wrap(client.models.generate_content)(**REQUEST)
    gen = tracker.wrap(client.models.generate_content_stream)(**REQUEST)
    with pytest.raises(errors.ClientError, match="cachedContent not found"):
        next(gen)
    plain, stream = tracker.calls()
    for m in (plain, stream):
        assert m.error is not None and m.error.startswith("ClientError")
        assert (m.usage_known, m.cost_usd) == (False, None)
    assert stream.stream is True


async def test_async_errors_reach_the_caller_unchanged(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """The async twins raise the SDK's own error too, and record it once per call."""
    fake.status = 404
    with pytest.raises(errors.ClientError):
        await tracker.wrap(client.aio.models.generate_content)(**REQUEST)
    agen = await tracker.wrap(client.aio.models.generate_content_stream)(**REQUEST)
    with pytest.raises(errors.ClientError):
        async for _ in agen:
            pass
    assert [m.error is not None for m in tracker.calls()] == [True, True]


def test_null_and_missing_usage_fields(fake: FakeGemini, client: genai.Client, tracker: CacheTracker) -> None:
    """cached_content_token_count None (the SDK's "0") and missing counters are 0; a
    response without usage_metadata is unknown, never zeros."""
    generate = tracker.wrap(client.models.generate_content)
    fake.body = {**BODY, "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 30}}
    generate(**REQUEST)
    fake.body = {k: v for k, v in BODY.items() if k != "usageMetadata"}
    generate(**REQUEST)
    nulls, missing = tracker.calls()
    assert (nulls.input_tokens, nulls.cache_read_tokens, nulls.output_tokens, nulls.usage_known) == (
        1200,
        0,
        30,
        True,
    )
    assert (missing.usage_known, missing.input_tokens, missing.cost_usd) == (False, 0, None)


def test_response_object_and_both_json_casings_record_alike(fake: FakeGemini, client: genai.Client) -> None:
    """record() gives the same counts for the SDK response object, its model_dump() (snake
    case) and the REST JSON (camelCase)."""
    resp = client.models.generate_content(**REQUEST)
    got = []
    for form in (resp, resp.model_dump(mode="json", exclude_none=True), BODY):
        m = CacheTracker(clock=lambda: NOW).record(form, provider="gemini")
        assert m is not None
        got.append((m.model, m.input_tokens, m.cache_read_tokens, m.output_tokens, m.cost_usd))
    assert got == [(MODEL, 1000, 4000, 150, expected_cost(1000, 4000, 150))] * 3


async def test_instrument_and_uninstrument(
    fake: FakeGemini, client: genai.Client, tracker: CacheTracker
) -> None:
    """instrument() patches generate_content(_stream) on client.models and client.aio.models
    (chats go through them too); uninstrument() restores the classes' own methods."""
    tracker.instrument(client, flow="support")
    for obj in (client.models, client.aio.models):
        assert set(gemini.METHODS) <= set(vars(obj))
    client.models.generate_content(**REQUEST)
    list(client.models.generate_content_stream(**REQUEST))
    await client.aio.models.generate_content(**REQUEST)
    [_ async for _ in await client.aio.models.generate_content_stream(**REQUEST)]
    client.chats.create(model=MODEL).send_message("Hello")
    tracker.uninstrument(client)
    for obj in (client.models, client.aio.models):
        assert not set(gemini.METHODS) & set(vars(obj))
    client.models.generate_content(**REQUEST)
    assert [(m.flow, m.stream, m.output_tokens) for m in tracker.calls()] == [
        ("support", False, 150),
        ("support", True, 150),
        ("support", False, 150),
        ("support", True, 150),
        ("support", False, 150),
    ]


CASES = json.loads((Path(__file__).parent / "usage_cases" / "gemini.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_usage_cases(case: dict[str, Any]) -> None:
    """Each recorded Gemini body or chunk list gives exactly the expected counts and cost."""
    m = CacheTracker().record(
        case.get("events") or case["response"], request=case.get("request"), provider=case["provider"]
    )
    assert m is not None
    assert {k: getattr(m, k) for k in case["expected"]} == case["expected"]
