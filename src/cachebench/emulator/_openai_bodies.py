"""OpenAI response bodies: Chat completions and their stream chunks, Responses and their
stream events, each with its ``usage``.

Field shapes follow openai-python: ``types/completion_usage.py``, ``types/chat/chat_completion.py``,
``chat_completion_chunk.py``, ``types/responses/response.py``, ``response_usage.py`` and
``response_stream_event.py``. Usage is inclusive (``prompt_tokens`` / ``input_tokens`` count
cached and written tokens); write counts appear only when the cache model reports them
(GPT-5.6 and later).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..facts import OPENAI_EXPLICIT_DEFAULT_TTL
from ._requests import chat_usage as chat_usage
from ._requests import responses_usage as responses_usage
from ._wire import Call, Reply, reply_chunks

_STOP = {"end_turn": "stop", "max_tokens": "length"}


# -- chat completions -----------------------------------------------------------------------


def _chat_head(call: Call, model: str, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-emu{call.result.ticket:020d}",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def chat_body(call: Call, answer: Reply, model: str, created: int) -> dict[str, Any]:
    return {
        **_chat_head(call, model, created),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": _STOP[answer.stop],
            }
        ],
        "usage": chat_usage(call.result, answer.output_tokens),
    }


def chat_chunks(
    call: Call, answer: Reply, model: str, created: int, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat completion: the role, the text, the finish reason and,
    with ``include_usage``, a last chunk with ``choices: []`` (the others then carry
    ``usage: null``)."""
    head = {**_chat_head(call, model, created), "object": "chat.completion.chunk"}
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in reply_chunks(answer.text):
        yield chunk({"content": piece})
    yield chunk({}, _STOP[answer.stop])
    if include_usage:
        yield {**head, "choices": [], "usage": chat_usage(call.result, answer.output_tokens)}


# -- responses ------------------------------------------------------------------------------


def _message_item(call: Call, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": f"msg_emu{call.result.ticket:020d}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content if status == "completed" else [],
    }


def response_id(call: Call) -> str:
    return f"resp_emu{call.result.ticket:020d}"


# Request fields a ``Response`` echoes, with the value it shows when the request omits them.
RESPONSE_ECHO: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "metadata": {},
}


def response_body(
    call: Call,
    answer: Reply,
    body: Mapping[str, Any],
    created: float,
    *,
    done: bool = True,
    diagnostics: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``Response`` object: complete, or (``done=False``) as ``response.created`` shows it.
    ``diagnostics`` is its ``prompt_cache_diagnostics`` when the request asked for them (the
    complete response only: streamed, the ``response.completed`` event's)."""
    cut = answer.stop == "max_tokens"
    out: dict[str, Any] = {
        "id": response_id(call),
        "object": "response",
        "created_at": created,
        "status": ("incomplete" if cut else "completed") if done else "in_progress",
        "completed_at": created if done else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and cut else None,
        "model": body["model"],
        "output": [_message_item(call, answer.text, "completed")] if done else [],
        "reasoning": {"effort": None, "summary": None},
        "usage": responses_usage(call.result, answer.output_tokens) if done else None,
        "user": None,
        **{k: default if body.get(k) is None else body[k] for k, default in RESPONSE_ECHO.items()},
    }
    if call.request.explicit:
        options = body.get("prompt_cache_options") or {}
        out["prompt_cache_options"] = {
            "mode": options.get("mode", "implicit"),
            "ttl": options.get("ttl", OPENAI_EXPLICIT_DEFAULT_TTL),
        }
        if options.get("comparison_response_id") is not None:
            out["prompt_cache_options"]["comparison_response_id"] = options["comparison_response_id"]
    if done and diagnostics is not None:
        out["prompt_cache_diagnostics"] = dict(diagnostics)
    return out


def response_events(
    call: Call,
    answer: Reply,
    body: Mapping[str, Any],
    created: float,
    diagnostics: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The Responses stream events, in the API's order, numbered by ``sequence_number``;
    ``diagnostics`` rides on the last one's response."""
    pending = response_body(call, answer, body, created, done=False)
    item_id = f"msg_emu{call.result.ticket:020d}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message_item(call, "", "in_progress"),
        },
        {"type": "response.content_part.added", **where, "part": part},
        *(
            {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
            for piece in reply_chunks(answer.text)
        ),
        {"type": "response.output_text.done", **where, "text": answer.text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": answer.text}},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": _message_item(call, answer.text, "completed"),
        },
    ]
    final = response_body(call, answer, body, created, diagnostics=diagnostics)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": kind, "response": final})
    for n, event in enumerate(events):
        yield {**event, "sequence_number": n}
