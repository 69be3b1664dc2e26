"""Real Anthropic SDK clients over ``httpx2.MockTransport``, answering recorded-shape bodies."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

import anthropic
import httpx2

from cachebench import CacheTracker

MODEL = "claude-sonnet-5"


def usage(
    *, input: int = 10, read: int = 0, write: int = 0, write_1h: int = 0, output: int = 20, split: bool = True
) -> dict[str, Any]:
    u: dict[str, Any] = {
        "input_tokens": input,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
        "output_tokens": output,
    }
    if split:
        u["cache_creation"] = {
            "ephemeral_5m_input_tokens": write - write_1h,
            "ephemeral_1h_input_tokens": write_1h,
        }
    return u


def message(u: dict[str, Any], model: str = MODEL, text: str = "Hello!") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": u,
    }


def sse_events(
    u: dict[str, Any], model: str = MODEL, text: str = "Hello!"
) -> list[tuple[str, dict[str, Any]]]:
    """The real Messages event sequence; ``message_delta`` restates the cumulative counts."""
    start_usage = dict(u, output_tokens=1)
    delta_usage = {k: v for k, v in u.items() if k != "cache_creation"}
    return [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def sse_bytes(events: Iterable[tuple[str, dict[str, Any]]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


Handler = Callable[[httpx2.Request], httpx2.Response]


def scripted(usages: Iterable[dict[str, Any]], model: str = MODEL) -> tuple[Handler, list[dict[str, Any]]]:
    """A handler answering each request with the next usage (JSON or SSE as requested).

    Returns the handler and the list the request bodies are appended to.
    """
    queue = list(usages)
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        u = queue.pop(0) if len(queue) > 1 else queue[0]
        if body.get("stream"):
            return httpx2.Response(
                200, content=sse_bytes(sse_events(u, model)), headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(200, json=message(u, model))

    return handler, seen


def client(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="test-key", max_retries=0, http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )


def async_client(handler: Handler) -> anthropic.AsyncAnthropic:
    async def ahandler(request: httpx2.Request) -> httpx2.Response:
        return handler(request)

    return anthropic.AsyncAnthropic(
        api_key="test-key",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(ahandler)),
    )


SYSTEM_TEXT = "You are a careful support agent for Acme. " * 60


def request(user: str = "Where is my order?", *, ttl: str | None = None, **extra: Any) -> dict[str, Any]:
    marker: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        marker["ttl"] = ttl
    return {
        "model": MODEL,
        "max_tokens": 64,
        "system": [{"type": "text", "text": SYSTEM_TEXT, "cache_control": marker}],
        "messages": [{"role": "user", "content": user}],
        **extra,
    }


def writer_in_flight(body: dict[str, Any]) -> tuple[Handler, threading.Event, threading.Event]:
    """A handler answering ``body``, that keeps the request marked ``first twin`` in flight
    until released; returns it, the event set once that request is in flight, and the release."""
    in_flight = threading.Event()
    release = threading.Event()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if b"first twin" in request.content:
            in_flight.set()
            assert release.wait(10), "the second twin never went out"
        return httpx2.Response(200, json=body)

    return handler, in_flight, release


def chat_completion(prompt_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """A Chat Completions body of a model that reports cache reads but not writes (gpt-4.1)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1763000000,
        "model": "gpt-4.1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Ok."}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 5,
            "total_tokens": prompt_tokens + 5,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


def quiet_tracker(clock: Callable[[], float], **kwargs: Any) -> CacheTracker:
    """A tracker on ``clock`` whose miss alerts and regressions go nowhere unless given (the
    tests read the metrics)."""
    kwargs.setdefault("on_regression", lambda r: None)
    return CacheTracker(clock=clock, on_miss_alert=lambda m: None, **kwargs)
