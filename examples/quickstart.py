"""cachebench quickstart: the real Anthropic and OpenAI SDK clients, observed by one tracker.

No key and no network: the clients answer from recorded provider responses
(``examples/recorded_responses.json``) through ``httpx2.MockTransport``. Halfway through, a
"deploy" puts a timestamp into the system prompt; watch every later call write the cache
again instead of reading it.

Run it with ``make demo``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
from rich.console import Console
from rich.table import Table

from cachebench import CacheTracker, CallMetrics

RECORDED = json.loads((Path(__file__).parent / "recorded_responses.json").read_text())
SYSTEM = "You are Acme's support agent. Be brief, cite the order number. " * 60
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order by number.",
        "input_schema": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    }
]


def replay(bodies: list[dict[str, Any]]) -> Callable[[httpx2.Request], httpx2.Response]:
    """A transport handler that answers each request with the next recorded body."""
    queue = list(bodies)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=queue.pop(0))

    return handler


def fmt_ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def fmt_usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.5f}"


def main() -> None:
    console = Console(width=130)
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(on_miss_alert=alerts.append)

    claude = anthropic.Anthropic(
        api_key="demo",
        http_client=httpx2.Client(transport=httpx2.MockTransport(replay(RECORDED["anthropic"]))),
    )
    gpt = openai.OpenAI(
        api_key="demo", http_client=httpx2.Client(transport=httpx2.MockTransport(replay(RECORDED["openai"])))
    )

    # 1. Wrap one method: same signature, same result.
    ask = tracker.wrap(claude.messages.create, flow="support-bot")

    def support(question: str, system: str) -> str:
        reply = ask(
            model="claude-sonnet-5",
            max_tokens=256,
            tools=TOOLS,
            system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": question}],
        )
        return str(reply.content[0].text)

    for q in ("Where is order #1042?", "How long do refunds take?", "Can I change my address?"):
        support(q, SYSTEM)
    # The "deploy": a timestamp in the system prompt makes every prefix new.
    for i, q in enumerate(("Where is order #1043?", "What is your return policy?", "Do you ship to Canada?")):
        support(q, f"Current time: 2026-11-22T10:0{i}:00Z. " + SYSTEM)

    # 2. Or instrument a whole client in place.
    tracker.instrument(gpt)
    for ticket in ("My parcel is late", "I want my money back", "Wrong address on my order"):
        gpt.chat.completions.create(
            model="gpt-4.1-mini",
            messages=[
                {"role": "system", "content": "Tag the ticket. " + SYSTEM},
                {"role": "user", "content": ticket},
            ],
        )

    calls = Table(title="Every call", title_justify="left")
    for col in ("flow", "prefix", "read", "written", "uncached", "hit", "cost", "saved", "cause"):
        calls.add_column(col, justify="right" if col not in ("flow", "prefix", "cause") else "left")
    for m in tracker.calls():
        calls.add_row(
            m.flow,
            m.prefix_id or "-",
            str(m.cache_read_tokens),
            str(m.cache_write_tokens),
            str(m.input_tokens),
            fmt_ratio(m.hit_ratio),
            fmt_usd(m.cost_usd),
            fmt_usd(m.cost_saved_usd),
            m.miss_cause or "",
        )
    console.print(calls)

    flows = Table(title="Per flow", title_justify="left")
    for col in ("flow", "calls", "prefixes", "hit ratio", "cost", "without cache", "saved"):
        flows.add_column(col, justify="left" if col == "flow" else "right")
    for name, f in tracker.by_flow().items():
        flows.add_row(
            name,
            str(f["calls"]),
            str(f["distinct_prefixes"]),
            fmt_ratio(f["hit_ratio"]),
            fmt_usd(f["cost_usd"]),
            fmt_usd(f["cost_without_cache_usd"]),
            fmt_usd(f["cost_saved_usd"]),
        )
    console.print(flows)

    before = tracker.calls()[:3]
    after = tracker.calls()[3:6]
    cost_before = sum(m.cost_usd or 0.0 for m in before)
    cost_after = sum(m.cost_usd or 0.0 for m in after)
    total = tracker.aggregate()
    console.print(
        f"support-bot before the deploy: {cost_before / 3:.5f} USD per call, "
        f"after: {cost_after / 3:.5f} USD per call ({cost_after / cost_before:.1f}x)."
    )
    console.print(
        f"All calls: {total['calls']}, hit ratio {fmt_ratio(total['hit_ratio'])}, "
        f"spent {fmt_usd(total['cost_usd'])}, saved {fmt_usd(total['cost_saved_usd'])} by caching."
    )
    causes = sorted({m.miss_cause for m in after if m.miss_cause})
    console.print(f"After the deploy every call wrote a new prefix (miss cause: {', '.join(causes)}).")


if __name__ == "__main__":
    main()
