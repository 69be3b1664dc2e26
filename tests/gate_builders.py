"""Request builders for the CI gate's tests (module level: the hash_seed variation rebuilds the
request in a new interpreter, which imports them from here)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

POLICY = "You are the support agent of a bicycle shop. Answer briefly and politely. " * 60
TOOL_NAMES = ("orders", "returns", "refunds", "stock", "fitting", "delivery", "warranty", "invoices")
TOOLS = {
    name: {
        "name": name,
        "description": f"Looks up {name} for the customer.",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    for name in TOOL_NAMES
}


def _request(tools: list[Any], system: list[Any], question: str = "Where is my order?") -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "max_tokens": 64,
        "tools": tools,
        "system": system,
        "messages": [{"role": "user", "content": question}],
    }


def _mark(block: dict[str, Any]) -> dict[str, Any]:
    return {**block, "cache_control": {"type": "ephemeral"}}


def good(user: str = "ann", tools: tuple[str, ...] = TOOL_NAMES) -> dict[str, Any]:
    """Sorted tools, a fixed policy, the user's context in a layer of its own, the time in the
    question."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")
    return _request(
        [TOOLS[n] for n in sorted(tools)],
        [
            _mark({"type": "text", "text": POLICY}),
            _mark({"type": "text", "text": f"Customer: {user}. " * 200}),
        ],
        question=f"(sent at {now}) Where is my order?",
    )


def with_timestamp(user: str = "ann") -> dict[str, Any]:
    """The current time inside the cached system prompt."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return _request(
        [TOOLS[n] for n in TOOL_NAMES], [_mark({"type": "text", "text": f"Current time: {now}. {POLICY}"})]
    )


def with_uuid(user: str = "ann") -> dict[str, Any]:
    """A new request id inside the cached system prompt."""
    return _request(
        [TOOLS[n] for n in TOOL_NAMES], [_mark({"type": "text", "text": f"Request {uuid.uuid4()}. {POLICY}"})]
    )


def tools_from_a_set(user: str = "ann") -> dict[str, Any]:
    """The tool list built from a set: its order follows the interpreter's string hashing."""
    return _request([TOOLS[n] for n in set(TOOL_NAMES)], [_mark({"type": "text", "text": POLICY})])


def keeps_caller_order(tools: tuple[str, ...] = TOOL_NAMES) -> dict[str, Any]:
    """The tools in the order the caller passed them."""
    return _request([TOOLS[n] for n in tools], [_mark({"type": "text", "text": POLICY})])


def user_first(user: str = "ann") -> dict[str, Any]:
    """The customer's name ahead of the shared policy, inside the first layer."""
    return _request(
        [TOOLS[n] for n in TOOL_NAMES],
        [
            _mark({"type": "text", "text": f"Customer: {user}.\n{POLICY}"}),
            _mark({"type": "text", "text": "Be kind. " * 200}),
        ],
    )
