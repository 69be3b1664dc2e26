"""The OpenAI adapter through the real ``openai`` SDK over ``httpx2.MockTransport``.

Chat Completions and Responses, sync and async, streamed and not, through ``wrap`` and
``instrument``. Bodies follow the SDK's own types (``openai/types/completion_usage.py``,
``chat/chat_completion_chunk.py``, ``responses/response_usage.py``,
``responses/response_stream_event.py``). Costs are exact, from genai-prices' published rates
(USD per MTok): gpt-4o input 2.5 / cached 1.25 / output 10; gpt-4.1-mini 0.4 / 0.1 / 1.6;
gpt-5.6 before 2026-08-21 (the clock used here) input 5 / write 6.25 / read 0.5 / output 30.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cachebench
from cachebench import CacheTracker, CallMetrics
from cachebench.fingerprint import key as prefix_key
from cachebench.providers import openai as adapter

T0 = 1_763_000_000.0  # 2025-11-13: prices are looked up for the call's own time

SYSTEM = "You are the Acme support assistant. Answer only from the policy below.\n" + "Policy line. " * 400
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its id.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
RESPONSES_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "lookup_order",
        "description": "Find an order by its id.",
        "parameters": TOOLS[0]["function"]["parameters"],
        "strict": True,
    }
]

# -- bodies as the API sends them --------------------------------------------------------------


def chat_usage(
    prompt: int, cached: int | None, completion: int, *, write: int | None = None, details: bool = True
) -> dict[str, Any]:
    prompt_details: dict[str, Any] | None = {"cached_tokens": cached, "audio_tokens": 0}
    if write is not None and prompt_details is not None:
        prompt_details["cache_write_tokens"] = write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": prompt_details if details else None,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(usage: dict[str, Any] | None, model: str = "gpt-4o-2024-11-20") -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-BKx2c9Vd1",
        "object": "chat.completion",
        "created": 1763000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Your order ships today.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "service_tier": "default",
        "system_fingerprint": "fp_7c63087da1",
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_chunks(usage: dict[str, Any] | None, model: str = "gpt-4o-2024-11-20") -> list[dict[str, Any]]:
    """The chunk sequence; the usage chunk (``choices: []``) only with ``include_usage``."""
    base = {
        "id": "chatcmpl-BKx3",
        "object": "chat.completion.chunk",
        "created": 1763000000,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_7c63087da1",
        "usage": None,
    }
    chunks = [
        dict(
            base,
            choices=[
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        ),
        dict(
            base,
            choices=[
                {"index": 0, "delta": {"content": "Your order "}, "logprobs": None, "finish_reason": None}
            ],
        ),
        dict(
            base,
            choices=[
                {"index": 0, "delta": {"content": "ships today."}, "logprobs": None, "finish_reason": None}
            ],
        ),
        dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]),
    ]
    if usage is not None:
        chunks.append(dict(base, choices=[], usage=usage))
    return chunks


def response_usage(
    inp: int, cached: int, out: int, *, write: int = 0, split: dict[str, int] | None = None
) -> dict[str, Any]:
    details: dict[str, Any] = {"cached_tokens": cached, "cache_write_tokens": write}
    if split is not None:
        details["cache_write_tokens_details"] = split
    return {
        "input_tokens": inp,
        "input_tokens_details": details,
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inp + out,
    }


def response_body(
    usage: dict[str, Any] | None, model: str = "gpt-4.1-mini-2025-04-14", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_68af4c1e2b6c8190",
        "object": "response",
        "created_at": 1763000000,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": SYSTEM,
        "max_output_tokens": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_68af4c1f7a",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": "Your order ships today.",
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    body.update(extra)
    return body


def response_events(final: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses event sequence; usage arrives in ``response.completed``."""
    pending = dict(final, status="in_progress", output=[], usage=None)
    item = final["output"][0]
    part = item["content"][0]
    ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": dict(item, status="in_progress", content=[]),
        },
        {"type": "response.content_part.added", **ids, "part": dict(part, text="")},
        {"type": "response.output_text.delta", **ids, "delta": part["text"], "logprobs": []},
        {"type": "response.output_text.done", **ids, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed" if final["status"] == "completed" else "response.incomplete",
            "response": final,
        },
    ]
    for n, event in enumerate(events):
        event["sequence_number"] = n
    return events


def sse_chat(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def sse_responses(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def sse(content: Any) -> httpx2.Response:
    return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})


CHAT_USAGE = chat_usage(2006, 1920, 300)  # gpt-4o: 86 uncached
RESP_USAGE = response_usage(3000, 2048, 120)  # gpt-4.1-mini: 952 uncached


class Server:
    """Answers ``/chat/completions`` and ``/responses`` like the API (SSE when ``stream``).

    ``chat``/``responses`` are the usages to answer with, in turn (the last one repeats).
    """

    def __init__(
        self,
        *,
        chat: list[dict[str, Any] | None] | None = None,
        responses: list[dict[str, Any] | None] | None = None,
        chat_model: str = "gpt-4o-2024-11-20",
        responses_model: str = "gpt-4.1-mini-2025-04-14",
        **response_extra: Any,
    ) -> None:
        self.chat = list(chat or [CHAT_USAGE])
        self.responses = list(responses or [RESP_USAGE])
        self.chat_model = chat_model
        self.responses_model = responses_model
        self.response_extra = response_extra
        self.seen: list[tuple[str, dict[str, Any]]] = []

    @staticmethod
    def _next(queue: list[Any]) -> Any:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        path = request.url.path
        self.seen.append((path, body))
        if path.endswith("/chat/completions"):
            u = self._next(self.chat)
            if body.get("stream"):
                include = (body.get("stream_options") or {}).get("include_usage")
                return sse(sse_chat(chat_chunks(u if include else None, self.chat_model)))
            return httpx2.Response(200, json=chat_completion(u, self.chat_model))
        if path.endswith("/responses"):
            final = response_body(self._next(self.responses), self.responses_model, **self.response_extra)
            if body.get("stream"):
                return sse(sse_responses(response_events(final)))
            return httpx2.Response(200, json=final)
        if path.endswith("/embeddings"):
            return httpx2.Response(
                200,
                json={
                    "object": "list",
                    "model": "text-embedding-3-small",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            )
        return httpx2.Response(404, json={"error": {"message": "not found", "type": "invalid_request_error"}})


Handler = Callable[[httpx2.Request], httpx2.Response]


def sync_client(handler: Handler) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def async_client(handler: Handler) -> openai.AsyncOpenAI:
    async def ahandler(request: httpx2.Request) -> httpx2.Response:
        return handler(request)

    return openai.AsyncOpenAI(
        api_key="sk-test",
        base_url="https://api.test/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ahandler)),
    )


def azure_client(handler: Handler) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key="az-test",
        api_version="2025-04-01-preview",
        azure_endpoint="https://acme.openai.azure.com",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def chat_request(
    user: str = "Where is order 4411?", *, model: str = "gpt-4o", system: str = SYSTEM, **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "tools": TOOLS,
        **extra,
    }


def responses_request(
    user: str = "Where is order 4411?", *, model: str = "gpt-4.1-mini", **extra: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "instructions": SYSTEM,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": user}]}],
        "tools": RESPONSES_TOOLS,
        **extra,
    }


def tracker(**kwargs: Any) -> CacheTracker:
    return CacheTracker(clock=lambda: T0, **kwargs)


def comparable(m: CallMetrics) -> dict[str, Any]:
    d = dataclasses.asdict(m)
    for k in ("elapsed_ms", "timestamp", "stream"):
        d.pop(k)
    return d


def assert_chat_counts(m: CallMetrics) -> None:
    """gpt-4o, prompt 2006 (1920 cached), 300 out: (86*2.5 + 1920*1.25 + 300*10) / 1e6."""
    assert (m.provider, m.model) == ("openai", "gpt-4o-2024-11-20")
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.output_tokens) == (86, 1920, 0, 300)
    assert m.cache_write_1h_tokens == 0
    assert m.usage_known and m.error is None
    assert m.cost_usd == 0.005615
    assert m.cost_without_cache_usd == 0.008015
    assert m.cost_saved_usd == 0.0024
    assert not m.writes_reported


def assert_responses_counts(m: CallMetrics) -> None:
    """gpt-4.1-mini, input 3000 (2048 cached), 120 out: (952*0.4 + 2048*0.1 + 120*1.6) / 1e6."""
    assert (m.provider, m.model) == ("openai", "gpt-4.1-mini-2025-04-14")
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.output_tokens) == (952, 2048, 0, 120)
    assert m.usage_known and m.error is None
    assert m.cost_usd == 0.0007776
    assert m.cost_without_cache_usd == 0.001392
    assert not m.writes_reported


# -- usage and cost ------------------------------------------------------------------------------


def test_chat_create_records_inclusive_counts_and_cost() -> None:
    """Chat ``prompt_tokens`` includes the cached tokens: uncached = prompt - cached; exact costs."""
    client = sync_client(Server())
    t = tracker()
    result = t.wrap(client.chat.completions.create, flow="support")(**chat_request())
    assert result.choices[0].message.content == "Your order ships today."
    (m,) = t.calls()
    assert_chat_counts(m)
    assert m.flow == "support"
    assert m.prefix_id is not None and len(m.prefix_id) == 16
    assert len(m.breakpoint_ids) == 1
    assert m.token_hit_ratio == 1920 / 2006
    assert not m.stream


def test_responses_create_records_counts_cost_and_diagnostics() -> None:
    """Responses ``input_tokens`` is inclusive too; ``prompt_cache_diagnostics`` is recorded."""
    diag = {"type": "cache_miss", "reason": "tools_changed", "cache_missed_tokens": 952}
    client = sync_client(Server(prompt_cache_diagnostics=diag))
    t = tracker()
    result = t.wrap(client.responses.create)(**responses_request())
    assert result.output_text == "Your order ships today."
    (m,) = t.calls()
    assert_responses_counts(m)
    assert m.diagnostics == {"prompt_cache_diagnostics": diag}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_gpt56_cache_writes_are_reported_and_priced(api: str) -> None:
    """GPT-5.6 reports ``cache_write_tokens``: uncached = total - read - write, writes at 1.25x."""
    server = Server(
        chat=[chat_usage(5000, 0, 50, write=4096)],
        responses=[
            response_usage(5000, 0, 50, write=4096, split={"ttl_30m_tokens": 4096, "ttl_12h_tokens": 0})
        ],
        chat_model="gpt-5.6",
        responses_model="gpt-5.6",
    )
    client = sync_client(server)
    t = tracker()
    if api == "chat":
        t.wrap(client.chat.completions.create)(**chat_request(model="gpt-5.6"))
    else:
        t.wrap(client.responses.create)(**responses_request(model="gpt-5.6"))
    (m,) = t.calls()
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.output_tokens) == (904, 0, 4096, 50)
    assert m.cache_write_1h_tokens == 0  # 30m/12h writes are not Anthropic-style 1h writes
    assert m.writes_reported
    assert m.hit_ratio == 0.0  # a write with nothing read: a miss the provider reported
    # (904*5 + 4096*6.25 + 50*30) / 1e6; without cache (5000*5 + 50*30) / 1e6
    assert m.cost_usd == 0.03162
    assert m.cost_without_cache_usd == 0.0265
    assert m.cost_saved_usd == pytest.approx(-0.00512, rel=1e-12)


def test_null_and_missing_usage_fields() -> None:
    """Null ``prompt_tokens_details`` gives 0 cached; null/missing ``usage`` is unknown, not zero."""
    t = tracker()
    m = t.record(chat_completion(chat_usage(1500, 0, 20, details=False), "gpt-4o-mini"), provider="openai")
    assert m is not None
    assert (m.input_tokens, m.cache_read_tokens, m.output_tokens, m.usage_known) == (1500, 0, 20, True)
    assert m.cost_usd == 0.000237  # 1500*0.15 + 20*0.6
    m = t.record(chat_completion(chat_usage(1500, None, 20), "gpt-4o-mini"), provider="openai")
    assert m is not None and (m.input_tokens, m.cache_read_tokens) == (1500, 0)
    for body in (chat_completion(None), dict(chat_completion(None), usage=None), response_body(None)):
        m = t.record(body, provider="openai")
        assert m is not None
        assert not m.usage_known
        assert (m.input_tokens, m.cache_read_tokens, m.output_tokens) == (0, 0, 0)
        assert m.cost_usd is None
    assert t.aggregate()["unknown_usage_calls"] == 3


def test_usage_normalisation_table() -> None:
    """``usage()`` reads both shapes as data: inclusive totals, missing fields 0, never negative."""
    u = adapter.usage(
        {
            "object": "chat.completion",
            "model": "gpt-4o",
            "usage": {"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 128}},
        }
    )
    assert (u.input_tokens, u.cache_read_tokens) == (0, 128)  # inconsistent logs never go negative
    u = adapter.usage(
        {
            "object": "response",
            "model": "gpt-4.1",
            "usage": {"input_tokens": "2048", "input_tokens_details": {"cached_tokens": 1024.0}},
        }
    )
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (1024, 1024, 0)
    assert not u.writes_reported
    # An older model sending cache_write_tokens: 0 still does not report writes.
    u = adapter.usage(chat_completion(chat_usage(2000, 1024, 5, write=0)))
    assert not u.writes_reported
    u = adapter.usage(chat_completion(chat_usage(2000, 1024, 5, write=0), "gpt-5.6"))
    assert u.writes_reported
    assert adapter.usage({"object": "chat.completion", "usage": "n/a"}).known is False
    assert adapter.usage(None).known is False


@given(
    cached=st.integers(0, 10**6),
    write=st.one_of(st.none(), st.integers(0, 10**6)),
    uncached=st.integers(0, 10**6),
    out=st.integers(0, 10**5),
    responses=st.booleans(),
)
def test_inclusive_totals_split_into_uncached_read_and_write(
    cached: int, write: int | None, uncached: int, out: int, responses: bool
) -> None:
    """For any consistent body: uncached + read + write == the inclusive total, all >= 0."""
    total = cached + (write or 0) + uncached
    if responses:
        u = adapter.usage(
            response_body(response_usage(total, cached, out, write=write or 0), model="gpt-5.6")
        )
    else:
        u = adapter.usage(chat_completion(chat_usage(total, cached, out, write=write), "gpt-5.6"))
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens) == (uncached, cached, write or 0)
    assert u.total_input_tokens == total and u.output_tokens == out
    assert u.writes_reported == (responses or write is not None)


def test_usage_cases_file_covers_the_required_shapes() -> None:
    """tests/usage_cases/openai.json: 8+ cases, each recorded to exactly its expected counts."""
    path = Path(__file__).parent / "usage_cases" / "openai.json"
    cases = json.loads(path.read_text())
    assert len(cases) >= 8
    names = " ".join(c["name"] for c in cases)
    for needle in (
        "null_prompt_tokens_details",
        "missing_usage",
        "inclusive",
        "gpt56_cache_write",
        "responses",
        "stream_final_usage_chunk",
    ):
        assert needle in names
    for case in cases:
        t = tracker()
        m = t.record(case.get("events", case.get("response")), request=case.get("request"), provider="openai")
        assert m is not None
        exp = case["expected"]
        got = {k: getattr(m, k) for k in exp if k not in ("cost_usd",)}
        assert got == {k: v for k, v in exp.items() if k != "cost_usd"}, case["name"]
        assert m.cost_usd == exp["cost_usd"], case["name"]


# -- every call mode gives the same metrics --------------------------------------------------------


async def _chat_call(mode: str, t: CacheTracker, handler: Handler) -> None:
    req = chat_request(stream_options={"include_usage": True}) if "stream" in mode else chat_request()
    if mode == "sync":
        t.wrap(sync_client(handler).chat.completions.create)(**req)
    elif mode == "async":
        await t.wrap(async_client(handler).chat.completions.create)(**req)
    elif mode == "stream":
        chunks = list(t.wrap(sync_client(handler).chat.completions.create)(**req, stream=True))
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
    else:
        stream = await t.wrap(async_client(handler).chat.completions.create)(**req, stream=True)
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None


async def _responses_call(mode: str, t: CacheTracker, handler: Handler) -> None:
    req = responses_request()
    if mode == "sync":
        t.wrap(sync_client(handler).responses.create)(**req)
    elif mode == "async":
        await t.wrap(async_client(handler).responses.create)(**req)
    elif mode == "stream":
        events = list(t.wrap(sync_client(handler).responses.create)(**req, stream=True))
        assert events[-1].type == "response.completed"
    else:
        stream = await t.wrap(async_client(handler).responses.create)(**req, stream=True)
        events = [e async for e in stream]
        assert events[-1].type == "response.completed"


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_all_call_modes_give_identical_metrics(api: str) -> None:
    """The same request gives the same CallMetrics sync, async, streamed and async-streamed."""
    results: dict[str, CallMetrics] = {}
    for mode in ("sync", "async", "stream", "async_stream"):
        t = tracker()
        call = _chat_call if api == "chat" else _responses_call
        await call(mode, t, Server())
        (m,) = t.calls()
        assert m.stream == ("stream" in mode)
        results[mode] = m
    (assert_chat_counts if api == "chat" else assert_responses_counts)(results["sync"])
    first = comparable(results["sync"])
    for mode in ("async", "stream", "async_stream"):
        assert comparable(results[mode]) == first, mode


# -- streams ---------------------------------------------------------------------------------------


def test_chat_stream_without_include_usage_is_unknown() -> None:
    """A Chat stream without ``stream_options.include_usage`` has unknown usage, never zeros."""
    t = tracker()
    stream = t.wrap(sync_client(Server()).chat.completions.create)(**chat_request(), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Your order ships today."
    (m,) = t.calls()
    assert not m.usage_known
    assert (m.input_tokens, m.cache_read_tokens, m.output_tokens) == (0, 0, 0)
    assert m.cost_usd is None and m.error is None
    assert m.model == "gpt-4o"  # from the request: the stream reported no usage
    assert m.hit_ratio is None
    agg = t.aggregate()
    assert agg["calls"] == 1
    assert agg["unknown_usage_calls"] == 1


def test_break_mid_stream_then_gc_finalises_once() -> None:
    """Leaving a stream with ``break`` records it once, when the stream is garbage-collected."""
    t = tracker()
    stream = t.wrap(sync_client(Server()).chat.completions.create)(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        assert chunk.choices[0].delta.role == "assistant"
        break
    assert t.calls() == []
    del stream, chunk
    gc.collect()
    (m,) = t.calls()
    assert not m.usage_known  # the usage chunk was never read
    assert m.error is None
    gc.collect()
    assert len(t.calls()) == 1


async def test_async_break_then_close_finalises_once() -> None:
    """An async stream left early and closed records once; closing again adds nothing."""
    t = tracker()
    stream = await t.wrap(async_client(Server()).responses.create)(**responses_request(), stream=True)
    async for event in stream:
        assert event.type == "response.created"
        break
    assert t.calls() == []
    await stream.close()
    await stream.close()
    (m,) = t.calls()
    assert not m.usage_known
    del stream
    gc.collect()
    assert len(t.calls()) == 1


def test_error_event_mid_stream_is_recorded_and_reraised() -> None:
    """An ``error`` payload mid-stream reaches the caller as the SDK's ``APIError``, and is recorded."""
    chunks: list[Any] = chat_chunks(None)[:2]
    chunks.append({"error": {"message": "The server is overloaded", "type": "server_error", "code": None}})

    def handler(request: httpx2.Request) -> httpx2.Response:
        return sse(sse_chat(chunks))

    t = tracker()
    stream = t.wrap(sync_client(handler).chat.completions.create)(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    )
    it = iter(stream)
    seen = [next(it), next(it)]
    with pytest.raises(openai.APIError, match="overloaded") as info:
        next(it)
    assert type(info.value) is openai.APIError
    assert all(c.choices for c in seen)
    (m,) = t.calls()
    assert m.error is not None and m.error.startswith("APIError") and "overloaded" in m.error
    assert not m.usage_known
    assert t.aggregate()["errors"] == 1


def test_malformed_event_mid_stream_is_recorded_and_reraised() -> None:
    """A malformed SSE payload raises the SDK's own JSON error to the caller; the call is recorded."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        events = response_events(response_body(RESP_USAGE))
        return sse(sse_responses(events[:3]) + b"event: response.output_text.delta\ndata: {not json\n\n")

    t = tracker()
    stream = t.wrap(sync_client(handler).responses.create)(**responses_request(), stream=True)
    with pytest.raises(json.JSONDecodeError):
        for _ in stream:
            pass
    (m,) = t.calls()
    assert m.error is not None and m.error.startswith("JSONDecodeError")


def test_transport_failure_mid_body_is_recorded_and_reraised() -> None:
    """The connection dropping mid-body reaches the caller as ``APIConnectionError``; recorded once."""
    head = sse_chat(chat_chunks(CHAT_USAGE))[:200]

    def body() -> Iterator[bytes]:
        yield head
        raise httpx2.ReadError("connection reset by peer")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return sse(body())

    t = tracker()
    stream = t.wrap(sync_client(handler).chat.completions.create)(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    )
    with pytest.raises(openai.APIConnectionError):
        for _ in stream:
            pass
    (m,) = t.calls()
    assert m.error is not None and m.error.startswith("APIConnectionError")
    del stream
    gc.collect()
    assert len(t.calls()) == 1


def test_accumulator_reports_in_band_responses_failures() -> None:
    """``error`` and ``response.failed`` events (which the SDK yields, not raises) are reported
    by ``StreamAccumulator.error()``; the usage of a failed response is still read."""
    acc = adapter.new_accumulator({})
    failed = response_body(
        response_usage(1500, 1024, 0),
        status="failed",
        error={"code": "server_error", "message": "The model crashed"},
    )
    for event in response_events(failed)[:2]:
        acc.add(event)
    acc.add({"type": "response.failed", "sequence_number": 2, "response": failed})
    err = acc.error()
    assert isinstance(err, adapter.StreamFailed)
    assert str(err) == "server_error: The model crashed"
    assert (acc.usage().input_tokens, acc.usage().cache_read_tokens) == (476, 1024)
    acc = adapter.new_accumulator({})
    acc.add({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None})
    assert str(acc.error()) == "rate_limit_exceeded: Slow down"
    assert not acc.usage().known
    ok = adapter.new_accumulator({})
    for event in response_events(response_body(RESP_USAGE)):
        ok.add(event)
    assert ok.error() is None


def test_http_error_reaches_caller_unchanged() -> None:
    """A 400 is the SDK's own ``BadRequestError``; the call counts as an error with unknown usage."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            400,
            json={
                "error": {
                    "message": "too many cache breakpoints",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    t = tracker()
    with pytest.raises(openai.BadRequestError) as info:
        t.wrap(sync_client(handler).chat.completions.create)(**chat_request())
    assert info.value.status_code == 400
    (m,) = t.calls()
    assert m.error is not None and m.error.startswith("BadRequestError")
    assert not m.usage_known
    assert t.aggregate()["errors"] == 1


# -- helpers, raw responses, instrument, Azure -------------------------------------------------------


def test_instrument_covers_every_sync_entry_point() -> None:
    """``instrument(client)`` sees create, create(stream=True), both ``.stream()`` helpers and
    ``with_raw_response`` for Chat and Responses, and ignores other endpoints."""
    client = sync_client(Server())
    t = tracker()
    assert t.instrument(client) is client
    t.instrument(client)  # idempotent
    client.chat.completions.create(**chat_request())
    for _ in client.chat.completions.create(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    ):
        pass
    with client.chat.completions.stream(**chat_request(), stream_options={"include_usage": True}) as s:
        assert s.get_final_completion().usage is not None
    raw = client.chat.completions.with_raw_response.create(**chat_request())
    assert raw.parse().usage is not None
    client.responses.create(**responses_request())
    for _ in client.responses.create(**responses_request(), stream=True):
        pass
    with client.responses.stream(**responses_request()) as rs:
        assert rs.get_final_response().output_text == "Your order ships today."
    raw = client.responses.with_raw_response.create(**responses_request())
    assert raw.parse().usage is not None
    client.embeddings.create(model="text-embedding-3-small", input="hello")  # not a cached endpoint
    calls = t.calls()
    assert len(calls) == 8
    for m in calls[:4]:
        assert_chat_counts(m)
    for m in calls[4:]:
        assert_responses_counts(m)
    assert [m.stream for m in calls] == [False, True, True, False] * 2
    assert calls[0].flow == "tests.test_openai.test_instrument_covers_every_sync_entry_point"
    assert len({m.prefix_id for m in calls[:4]}) == 1
    assert len({m.prefix_id for m in calls[4:]}) == 1


async def test_instrument_covers_every_async_entry_point() -> None:
    """The same entry points on ``AsyncOpenAI`` are observed through the async ``request``."""
    client = async_client(Server())
    t = tracker()
    t.instrument(client)
    await client.chat.completions.create(**chat_request())
    stream = await client.chat.completions.create(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    )
    async for _ in stream:
        pass
    async with client.chat.completions.stream(**chat_request(), stream_options={"include_usage": True}) as s:
        await s.get_final_completion()
    raw = await client.chat.completions.with_raw_response.create(**chat_request())
    assert raw.parse().usage is not None
    await client.responses.create(**responses_request())
    rstream = await client.responses.create(**responses_request(), stream=True)
    async for _ in rstream:
        pass
    async with client.responses.stream(**responses_request()) as rs:
        await rs.get_final_response()
    raw = await client.responses.with_raw_response.create(**responses_request())
    assert raw.parse().usage is not None
    calls = t.calls()
    assert len(calls) == 8
    for m in calls[:4]:
        assert_chat_counts(m)
    for m in calls[4:]:
        assert_responses_counts(m)
    t.uninstrument(client)
    assert "request" not in vars(client)


def test_wrapped_stream_helpers_record_once() -> None:
    """``tracker.wrap(client.chat.completions.stream)`` and ``responses.stream`` record once each."""
    client = sync_client(Server())
    t = tracker()
    with t.wrap(client.chat.completions.stream)(
        **chat_request(), stream_options={"include_usage": True}
    ) as s:
        completion = s.get_final_completion()
    assert completion.choices[0].message.content == "Your order ships today."
    with t.wrap(client.responses.stream)(**responses_request()) as rs:
        for _ in rs:
            pass
    chat_m, resp_m = t.calls()
    assert_chat_counts(chat_m)
    assert_responses_counts(resp_m)
    assert chat_m.stream and resp_m.stream


async def test_wrapped_async_stream_helpers_record_once() -> None:
    """The async ``.stream()`` helpers, wrapped, record once each with the final usage."""
    client = async_client(Server())
    t = tracker()
    async with t.wrap(client.chat.completions.stream)(
        **chat_request(), stream_options={"include_usage": True}
    ) as s:
        async for _ in s:
            pass
    async with t.wrap(client.responses.stream)(**responses_request()) as rs:
        final = await rs.get_final_response()
    assert final.usage is not None
    chat_m, resp_m = t.calls()
    assert_chat_counts(chat_m)
    assert_responses_counts(resp_m)


def test_wrapped_create_under_stream_helper_ignores_omit_sentinels() -> None:
    """``.stream()`` calls ``create`` with ``omit`` for every unset field; a wrapped ``create``
    installed on the resource parses that the same as the plain request."""
    client = sync_client(Server())
    t = tracker()
    client.chat.completions.create = t.wrap(client.chat.completions.create)  # type: ignore[method-assign]
    with client.chat.completions.stream(**chat_request(), stream_options={"include_usage": True}) as s:
        s.until_done()
    client.chat.completions.create(**chat_request())
    streamed, plain = t.calls()
    assert_chat_counts(streamed)
    assert streamed.stream and not plain.stream
    assert streamed.prefix_id == plain.prefix_id
    assert streamed.breakpoint_ids == plain.breakpoint_ids
    with_omit = dict(
        chat_request(),
        temperature=openai.omit,
        stream_options=openai.omit,
        prompt_cache_retention=openai.NOT_GIVEN,
    )
    assert adapter.parse_request(with_omit) == adapter.parse_request(chat_request())
    assert not adapter.is_stream_request({"stream": openai.omit})


def test_raw_and_streaming_responses_of_streams_are_recorded() -> None:
    """``with_raw_response.create(stream=True)`` and ``with_streaming_response`` record on parse."""
    client = sync_client(Server())
    t = tracker()
    t.instrument(client)
    raw = client.chat.completions.with_raw_response.create(
        **chat_request(), stream=True, stream_options={"include_usage": True}
    )
    assert t.calls() == []
    for _ in raw.parse():
        pass
    with client.responses.with_streaming_response.create(**responses_request()) as resp:
        assert resp.parse().output_text == "Your order ships today."
    with client.responses.with_streaming_response.create(**responses_request(), stream=True) as resp:
        events = list(resp.parse())
    assert events[-1].type == "response.completed"
    chat_m, resp_m, resp_stream_m = t.calls()
    assert_chat_counts(chat_m)
    assert_responses_counts(resp_m)
    assert_responses_counts(resp_stream_m)
    assert [m.stream for m in t.calls()] == [True, False, True]


def test_output_items_given_back_render_like_plain_messages() -> None:
    """A message passed back as an output item (type, id, status) has the plain message's prefix."""
    item = response_body(RESP_USAGE)["output"][0]
    plain = {"role": "assistant", "content": item["content"]}
    turn = {"role": "user", "content": "and then?"}
    a = adapter.parse_request(responses_request(input=[{"role": "user", "content": "q"}, item, turn]))
    b = adapter.parse_request(responses_request(input=[{"role": "user", "content": "q"}, plain, turn]))
    assert prefix_key(a).prefix_id == prefix_key(b).prefix_id


def test_wrapped_with_raw_response_is_recorded() -> None:
    """A wrapped ``with_raw_response.create`` records the parsed body, returning the raw response."""
    client = sync_client(Server())
    t = tracker(provider="openai")
    raw = t.wrap(client.chat.completions.with_raw_response.create)(**chat_request())
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "Your order ships today."
    (m,) = t.calls()
    assert_chat_counts(m)


def test_azure_client_is_observed() -> None:
    """``AzureOpenAI`` (deployment URLs) is recorded through ``instrument`` and ``wrap``."""
    server = Server()
    client = azure_client(server)
    t = tracker()
    t.instrument(client)
    client.chat.completions.create(**chat_request(model="support-gpt4o"))
    for _ in client.chat.completions.create(
        **chat_request(model="support-gpt4o"), stream=True, stream_options={"include_usage": True}
    ):
        pass
    t.uninstrument(client)
    t.wrap(client.chat.completions.create)(**chat_request(model="support-gpt4o"))
    assert [path for path, _ in server.seen] == ["/openai/deployments/support-gpt4o/chat/completions"] * 3
    calls = t.calls()
    assert len(calls) == 3
    for m in calls:
        assert_chat_counts(m)  # the model is the response's, so it is priced


def test_uninstrument_restores_the_client() -> None:
    """After ``uninstrument`` calls are no longer recorded and the client still works."""
    client = sync_client(Server())
    t = tracker()
    original = client.request
    t.instrument(client)
    assert client.request is not original
    client.chat.completions.create(**chat_request())
    t.uninstrument(client)
    assert "request" not in vars(client)
    assert client.chat.completions.create(**chat_request()).usage is not None
    assert len(t.calls()) == 1


def test_clients_copied_with_options_are_observed_until_uninstrument() -> None:
    """``client.with_options(...)``/``copy()`` of an instrumented client is observed as well;
    after ``uninstrument`` new copies are not."""
    client = sync_client(Server())
    t = tracker()
    t.instrument(client)
    client.with_options(timeout=30.0).chat.completions.create(**chat_request())
    client.copy(max_retries=0).responses.create(**responses_request())
    chat_m, resp_m = t.calls()
    assert_chat_counts(chat_m)
    assert_responses_counts(resp_m)
    t.uninstrument(client)
    assert not {"request", "copy", "with_options"} & set(vars(client))
    client.with_options(timeout=30.0).chat.completions.create(**chat_request())
    assert len(t.calls()) == 2


def test_record_accepts_stream_events_and_finished_helpers() -> None:
    """``record()`` takes SDK chunks/events (or their JSON) and finished ``.stream()`` helpers."""
    client = sync_client(Server())
    t = tracker()
    chunks = list(
        client.chat.completions.create(**chat_request(), stream=True, stream_options={"include_usage": True})
    )
    assert_chat_counts(t.record(chunks, request=chat_request(), provider="openai"))  # type: ignore[arg-type]
    assert_chat_counts(t.record(chat_chunks(CHAT_USAGE), provider="openai"))  # type: ignore[arg-type]
    with client.chat.completions.stream(**chat_request(), stream_options={"include_usage": True}) as s:
        s.until_done()
    assert_chat_counts(t.record(s, provider="openai"))  # type: ignore[arg-type]
    with client.responses.stream(**responses_request()) as rs:
        rs.until_done()
    assert_responses_counts(t.record(rs, provider="openai"))  # type: ignore[arg-type]
    events = response_events(response_body(RESP_USAGE))
    assert_responses_counts(t.record(events, provider="openai"))  # type: ignore[arg-type]
    assert adapter.owns_response(events) and adapter.owns_response(chat_chunks(None))
    assert adapter.owns_response(response_body(None))
    assert not adapter.owns_response({"type": "message", "usage": {}})


# -- prefixes and breakpoints ----------------------------------------------------------------------


def test_prefix_id_stable_when_only_the_newest_user_message_changes() -> None:
    """Only the newest user turn changes: same prefix_id (it never enters the prefix)."""
    t = tracker()
    create = t.wrap(sync_client(Server()).chat.completions.create)
    create(**chat_request("Where is order 4411?"))
    create(**chat_request("Can I return order 9001?"))
    a, b = t.calls()
    assert a.prefix_id == b.prefix_id
    assert a.breakpoint_ids == b.breakpoint_ids
    assert a.prefix_id == cachebench.fingerprint(
        messages=[{"role": "user", "content": "anything"}],
        system=SYSTEM,
        tools=TOOLS,
        provider="openai",
        model="gpt-4o",
    )


def test_prefix_id_changes_when_the_system_prompt_changes() -> None:
    """A different system prompt (or tool list, or model) is a different prefix."""
    t = tracker()
    create = t.wrap(sync_client(Server()).chat.completions.create)
    create(**chat_request())
    create(**chat_request(system=SYSTEM + " Today is Tuesday."))
    create(**chat_request(tools=[*TOOLS, {"type": "function", "function": {"name": "refund"}}]))
    create(**chat_request(model="gpt-4o-mini"))
    ids = [m.prefix_id for m in t.calls()]
    assert len(set(ids)) == 4


def test_chat_cache_order_turn_start_and_implicit_breakpoint() -> None:
    """tools -> system -> conversation; one implicit breakpoint before the trailing user/tool run."""
    req = {
        "model": "gpt-4o",
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Order 4411"}, {"type": "text", "text": "is late"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id":"4411"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status":"shipped"}'},
            {"role": "user", "content": "Thanks, and the refund?"},
        ],
    }
    p = adapter.parse_request(req)
    assert [b.section for b in p.blocks] == [
        "tools",
        "system",
        "messages",
        "messages",
        "messages",
        "messages",
        "messages",
        "messages",
    ]
    assert p.blocks[1].payload == ["system", "Be brief."]
    assert p.blocks[2].payload == ["user", "Order 4411"]  # a plain text part hashes as its string
    assert p.blocks[4].payload[0] == "assistant" and "tool_calls" in p.blocks[4].payload[1]
    assert p.blocks[5].payload == ["tool", {"tool_call_id": "call_1"}]
    assert p.turn_start == 5  # the tool result and the user message after it are the newest turn
    assert p.implicit
    assert p.breakpoints == (4,)
    assert p.blocks[4].ttl == "in_memory"
    assert [b.index for b in p.blocks] == [0, 0, 0, 1, 2, 3, 4, 5]


def test_retention_sets_the_implicit_ttl() -> None:
    """``prompt_cache_retention`` is the implicit breakpoint's TTL; gpt-5.5 defaults to 24h."""
    p = adapter.parse_request(chat_request(prompt_cache_retention="24h"))
    assert [b.ttl for b in p.blocks if b.ttl] == ["24h"]
    assert [b.ttl for b in adapter.parse_request(chat_request(model="gpt-5.5")).blocks if b.ttl] == ["24h"]
    assert [b.ttl for b in adapter.parse_request(chat_request()).blocks if b.ttl] == [adapter.DEFAULT_TTL]


def test_single_user_message_puts_the_breakpoint_on_the_last_block() -> None:
    """With nothing before the newest turn, the implicit breakpoint is the whole prompt."""
    p = adapter.parse_request({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert (p.turn_start, p.breakpoints) == (0, (0,))
    p = adapter.parse_request({"model": "gpt-4o", "messages": []})
    assert p.blocks == () and p.breakpoints == ()
    assert prefix_key(p).prefix_id is None


def test_gpt56_explicit_breakpoints_are_stripped_and_carry_their_ttl() -> None:
    """GPT-5.6+: ``prompt_cache_breakpoint`` marks a block (marker TTL, else the request's)."""
    docs = {"type": "text", "text": "Customer history ...", "prompt_cache_breakpoint": {"mode": "explicit"}}
    req = {
        "model": "gpt-5.6",
        "prompt_cache_options": {"mode": "explicit", "ttl": "30m"},
        "messages": [
            {
                "role": "developer",
                "content": [
                    {
                        "type": "text",
                        "text": SYSTEM,
                        "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"},
                    }
                ],
            },
            {"role": "user", "content": [docs, {"type": "text", "text": "Summarise."}]},
        ],
    }
    p = adapter.parse_request(req)
    assert not p.implicit
    assert p.breakpoints == (0, 1)
    assert [b.ttl for b in p.blocks] == ["12h", "30m", None]
    assert all("prompt_cache_breakpoint" not in json.dumps(b.payload) for b in p.blocks)
    assert p.blocks[0].payload[0] == "developer" and p.blocks[0].section == "system"
    assert p.turn_start == 1
    k = prefix_key(p)
    assert k.prefix_id == k.breakpoint_ids[0]  # the last breakpoint before the newest turn
    # Moving only the marker does not change the bytes hashed.
    unmarked = json.loads(json.dumps(req).replace(', "prompt_cache_breakpoint": {"mode": "explicit"}', ""))
    assert [b.payload for b in adapter.parse_request(unmarked).blocks] == [b.payload for b in p.blocks]
    assert adapter.read_tolerance("gpt-5.6") == 0


def test_gpt56_implicit_mode_adds_the_implicit_breakpoint() -> None:
    """With mode implicit (the default) the implicit breakpoint is kept next to explicit ones;
    from GPT-5.6 on it ends with the newest user message."""
    marked = {"type": "text", "text": SYSTEM, "prompt_cache_breakpoint": {"mode": "explicit"}}
    req = {
        "model": "gpt-5.6",
        "messages": [
            {"role": "system", "content": [marked]},
            {"role": "user", "content": "Order 4411?"},
            {"role": "assistant", "content": "Shipped."},
            {"role": "user", "content": "And 9001?"},
        ],
    }
    p = adapter.parse_request(req)
    assert not p.implicit
    assert p.breakpoints == (0, 3)
    assert [b.ttl for b in p.blocks] == ["30m", None, None, "30m"]


def test_gpt56_without_markers_falls_back_to_the_implicit_rule() -> None:
    """No markers: mode implicit -> the implicit breakpoint (TTL 30m) through the newest user
    message, matched at breakpoints like an explicit one (no longest-prefix fallback); mode
    explicit -> uncacheable."""
    p = adapter.parse_request(chat_request(model="gpt-5.6"))
    assert not p.implicit and p.breakpoints == (2,)
    assert p.blocks[2].ttl == "30m"
    p = adapter.parse_request(chat_request(model="gpt-6.1-sol", prompt_cache_options={"ttl": "12h"}))
    assert not p.implicit and p.blocks[2].ttl == "12h"
    p = adapter.parse_request(chat_request(model="gpt-5.6", prompt_cache_options={"mode": "explicit"}))
    assert p.breakpoints == ()
    assert prefix_key(p).prefix_id is None


def test_markers_before_gpt56_are_ignored() -> None:
    """Older models cache implicitly: markers neither add breakpoints nor change the prefix."""
    marked = chat_request(model="gpt-4.1")
    marked["messages"][0]["content"] = [
        {"type": "text", "text": SYSTEM, "prompt_cache_breakpoint": {"mode": "explicit"}}
    ]
    plain = chat_request(model="gpt-4.1")
    plain["messages"][0]["content"] = [{"type": "text", "text": SYSTEM}]
    p = adapter.parse_request(marked)
    assert p.implicit and p.breakpoints == (1,)
    assert prefix_key(p).prefix_id == prefix_key(adapter.parse_request(plain)).prefix_id


def test_responses_request_items_and_roles() -> None:
    """Responses: tools -> instructions -> input items; tool outputs belong to the newest turn."""
    req = {
        "model": "gpt-4.1-mini",
        "instructions": "Be brief.",
        "tools": RESPONSES_TOOLS,
        "input": [
            {"role": "user", "content": "Order 4411?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": '{"order_id":"4411"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"status":"shipped"}'},
        ],
    }
    p = adapter.parse_request(req)
    assert [b.section for b in p.blocks] == ["tools", "system", "messages", "messages", "messages"]
    assert p.blocks[1].payload == ["system", "Be brief."]
    assert p.blocks[3].payload[0] == "assistant" and p.blocks[4].payload[0] == "tool"
    assert p.turn_start == 4
    assert p.breakpoints == (3,)
    # A string input is one user block; previous_response_id is context before it.
    p = adapter.parse_request({"model": "gpt-4.1", "input": "hi", "previous_response_id": "resp_1"})
    assert [b.payload for b in p.blocks] == [["context", {"previous_response_id": "resp_1"}], ["user", "hi"]]
    assert p.turn_start == 1 and p.breakpoints == (0,)
    other = adapter.parse_request({"model": "gpt-4.1", "input": "hi", "previous_response_id": "resp_2"})
    assert prefix_key(p).prefix_id != prefix_key(other).prefix_id


def test_settings_that_invalidate_the_conversation_change_the_prefix() -> None:
    """Response format, reasoning effort, verbosity and prompt_cache_key are part of the prefix."""
    base = prefix_key(adapter.parse_request(chat_request())).prefix_id
    for extra in (
        {"response_format": {"type": "json_object"}},
        {"reasoning_effort": "high"},
        {"verbosity": "low"},
        {"prompt_cache_key": "tenant-7"},
    ):
        assert prefix_key(adapter.parse_request(chat_request(**extra))).prefix_id != base, extra
    assert prefix_key(adapter.parse_request(chat_request(temperature=0.2))).prefix_id == base
    rbase = prefix_key(adapter.parse_request(responses_request())).prefix_id
    for extra in ({"text": {"format": {"type": "json_object"}}}, {"reasoning": {"effort": "low"}}):
        assert prefix_key(adapter.parse_request(responses_request(**extra))).prefix_id != rbase, extra


def test_fingerprint_system_equals_a_system_message() -> None:
    """``fingerprint(system=...)`` gives the prefix of the same text as a system message."""
    msgs = [{"role": "user", "content": "q"}]
    via_system = cachebench.fingerprint(msgs, SYSTEM, TOOLS, provider="openai", model="gpt-4o")
    via_message = cachebench.fingerprint(
        [{"role": "system", "content": SYSTEM}, *msgs], None, TOOLS, provider="openai", model="gpt-4o"
    )
    assert via_system == via_message is not None
    assert (
        cachebench.fingerprint(
            msgs, [{"role": "developer", "content": SYSTEM}], TOOLS, provider="openai", model="gpt-4o"
        )
        != via_system
    )


# -- models and expectations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "version", "explicit"),
    [
        ("gpt-4o", (4, 0), False),
        ("gpt-4.1-mini-2025-04-14", (4, 1), False),
        ("gpt-5.5-pro", (5, 5), False),
        ("gpt-5.6", (5, 6), True),
        ("gpt-5.6-sol", (5, 6), True),
        ("gpt-5.10", (5, 10), True),
        ("gpt-6", (6, 0), True),
        ("ft:gpt-4o-mini:acme::abc", (4, 0), False),
        ("gpt-35-turbo", (3, 5), False),
        ("o4-mini", None, False),
        ("gpt-oss-120b", None, False),
        (None, None, False),
    ],
)
def test_model_generations(model: str | None, version: tuple[int, int] | None, explicit: bool) -> None:
    """GPT-5.6 and later cache explicitly and read exactly; others read in 128-token steps."""
    assert adapter.model_version(model) == version
    assert adapter.explicit_caching(model) is explicit
    assert adapter.read_tolerance(model) == (0 if explicit else 128)
    assert adapter.min_cacheable(model) == 1024


def test_repeat_calls_are_judged_against_the_128_token_rounding() -> None:
    """A cold call is not a miss; a hit rounded down to 128-token steps is what is expected;
    reading nothing when the prefix is live is an unexpected miss."""
    alerts: list[CallMetrics] = []
    server = Server(chat=[chat_usage(2006, 0, 300), chat_usage(2006, 1920, 300), chat_usage(2006, 0, 300)])
    t = tracker(on_miss_alert=alerts.append)
    create = t.wrap(sync_client(server).chat.completions.create)
    for _ in range(3):
        create(**chat_request())
    cold, warm, missed = t.calls()
    assert (cold.unexpected_miss, cold.miss_cause, cold.expected_read_tokens) == (False, "cold", 0)
    assert warm.expected_read_tokens == 1920 and not warm.unexpected_miss
    assert missed.unexpected_miss and missed.miss_cause == "provider"
    assert alerts == [missed]


def test_client_and_response_ownership() -> None:
    """The adapter claims OpenAI/Azure clients and OpenAI bodies, and nothing else."""
    client = sync_client(Server())
    assert adapter.owns_client(client) and adapter.owns_client(azure_client(Server()))
    assert adapter.owns_client(async_client(Server()))
    assert not adapter.owns_client(object())
    assert adapter.owns_response(chat_completion(CHAT_USAGE))
    assert not adapter.owns_response({"usage": {}})
    assert adapter.request_model(chat_request()) == "gpt-4o"
    assert adapter.is_stream_request({"stream": True}) and not adapter.is_stream_request({})
    assert adapter.NAME == "openai"
