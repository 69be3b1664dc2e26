"""cachebench demo: a multi-tenant support agent on the local provider emulator.

``make demo`` runs it. No key, no network: the real ``anthropic`` and ``openai`` SDK clients
talk to cachebench's emulator on 127.0.0.1, which applies each provider's caching rules and
reports usage exactly as the provider would. One :class:`~cachebench.emulator.ManualClock`
drives both the emulator and the :class:`~cachebench.CacheTracker`, so simulated minutes
pass instantly and every run prints the same figures.

The agent has two flows, both prompts built from one template:

- ``support-chat`` (Claude, Messages API): four cached layers, in the provider's cache order:
  the tool set, the shared system prompt, the customer's own context, the conversation so far
  (each turn reads the previous turn's entry and writes only the new one);
- ``ticket-triage`` (GPT-5.6, Chat Completions, explicit cache mode): a breakpoint after the
  tools and the system prompt, and one after the customer's context (GPT-5.6's implicit
  breakpoint would end with the newest user message, new every ticket); writes are reported.

Customers come in two waves. Each wave opens with a burst of parallel first messages (the
emulator takes 250 ms to the first token, so every call of the burst writes the cold prefix)
and continues with interleaved multi-turn conversations. Between the waves comes a deploy
that puts the current time at the top of the system prompt: from then on, every call writes
its prefix instead of reading it.

The tracker writes every call to a SQLite store (``cachebench-demo.db``, made anew each run;
``--db PATH`` names another). The report at the end is the library's own
(:mod:`cachebench.report`), read from that store, as ``cachebench report --compare-at`` prints
it; the demo ends with that command, to run next.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import anthropic
import openai
from rich.console import Console
from support_prompts import (
    CHAT_ROLE,
    FIRST_NAMES,
    OPENAI_TOOLS,
    QUESTIONS,
    TENANTS,
    TOOLS,
    TRIAGE_ROLE,
    customer_context,
    system_prompt,
)

from cachebench import CacheTracker, Regression
from cachebench.emulator import Emulator, EmulatorServer, ManualClock
from cachebench.report import compare, print_comparison, print_incidents

CHAT_MODEL = "claude-sonnet-5"  # minimum cacheable prefix: 1,024 tokens
TRIAGE_MODEL = "gpt-5.6"  # explicit breakpoints and reported writes (GPT-5.6 on)
# Yesterday, 09:00 UTC: recent enough that retention (7 days of raw calls) keeps every call of
# the demo's store; the figures are the same every day.
START = (
    (datetime.now(timezone.utc) - timedelta(days=1))
    .replace(hour=9, minute=0, second=0, microsecond=0)
    .timestamp()
)
CUSTOMERS_PER_WAVE = 10
BURST = 6  # customers of a wave whose first message arrives at the same moment
GAP_S = 20.0  # simulated seconds between two customer messages
DEPLOY_GAP_S = 120.0
TTFT_MS = 250.0
EPHEMERAL = {"type": "ephemeral"}  # 5-minute cache entry
OPENAI_MARK = {"mode": "explicit", "ttl": "30m"}
DEFAULT_DB = "cachebench-demo.db"


@dataclass
class Customer:
    context: str  # profile and recent orders: the customer's own cached layer
    order: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # the conversation so far


class SupportAgent:
    """The application: it renders its prompts and calls the SDKs, nothing more. cachebench
    sees its calls through the wrapped ``create`` and the instrumented OpenAI client."""

    def __init__(self, chat: Any, triage: openai.OpenAI, clock: ManualClock) -> None:
        self.chat = chat
        self.triage_client = triage
        self.clock = clock
        self.deployed = False

    def system(self, role: str) -> str:
        return system_prompt(role, self.clock() if self.deployed else None)

    def turn(self, customer: Customer, n: int) -> None:
        """Customer message ``n``: triage the ticket, then answer it."""
        question = QUESTIONS[n].format(order=customer.order)
        self.triage_client.chat.completions.create(
            model=TRIAGE_MODEL,
            max_completion_tokens=60,
            prompt_cache_options={"mode": "explicit"},
            tools=OPENAI_TOOLS,
            messages=[
                # Two cached layers: the system part, and the customer's context. In explicit
                # mode there is no implicit breakpoint, which would write through the newest
                # user message, new every ticket.
                {
                    "role": "system",
                    "content": [
                        {
                            "type": "text",
                            "text": self.system(TRIAGE_ROLE),
                            "prompt_cache_breakpoint": OPENAI_MARK,
                        },
                        {"type": "text", "text": customer.context, "prompt_cache_breakpoint": OPENAI_MARK},
                    ],
                },
                {"role": "user", "content": question},
            ],
        )
        history = customer.messages
        if history:  # at most 4 breakpoints: the newest user turn takes the conversation's marker
            history[-2]["content"][0].pop("cache_control")
        history.append(
            {"role": "user", "content": [{"type": "text", "text": question, "cache_control": EPHEMERAL}]}
        )
        reply = self.chat(
            model=CHAT_MODEL,
            max_tokens=300,
            tools=[*TOOLS[:-1], {**TOOLS[-1], "cache_control": EPHEMERAL}],
            system=[
                {"type": "text", "text": self.system(CHAT_ROLE), "cache_control": EPHEMERAL},
                {"type": "text", "text": customer.context, "cache_control": EPHEMERAL},
            ],
            messages=history,
        )
        history.append({"role": "assistant", "content": [{"type": "text", "text": reply.content[0].text}]})


def customers(first: int, count: int) -> list[Customer]:
    """Customers ``first`` to ``first + count - 1``, spread over the tenants (shops)."""
    return [
        Customer(customer_context(TENANTS[i % len(TENANTS)], FIRST_NAMES[i], i), f"P-{10400 + i * 10}")
        for i in range(first, first + count)
    ]


def wave(agent: SupportAgent, emulator: Emulator, clock: ManualClock, people: list[Customer]) -> None:
    """A burst of parallel first messages, then interleaved conversations, one message per
    ``GAP_S`` simulated seconds."""
    # Only the burst waits for its first token: parallel cold calls all write, and the
    # sequential rest of the demo stays fast.
    emulator.set_knobs(ttft_ms=TTFT_MS)
    with ThreadPoolExecutor(BURST) as pool:
        list(pool.map(lambda c: agent.turn(c, 0), people[:BURST]))
    emulator.set_knobs(ttft_ms=0.0)
    for n in range(len(QUESTIONS)):
        for c in people if n else people[BURST:]:
            clock.advance(GAP_S)
            agent.turn(c, n)


def clock_time(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, timezone.utc):%H:%M} UTC"


def command() -> str:
    """How to run ``cachebench`` from here: the script beside this interpreter (a venv's, not
    on PATH until the venv is activated), else the name."""
    script = os.path.join(os.path.dirname(sys.executable), "cachebench")
    if os.path.exists(script):
        relative = os.path.relpath(script)
        return relative if not relative.startswith("..") else script
    return "cachebench"


def main(console: Console | None = None, db: str = DEFAULT_DB) -> int:
    console = console or Console(width=130)
    started = time.perf_counter()
    clock = ManualClock(START)
    emulator = Emulator(clock=clock)
    for stale in (db, f"{db}-wal", f"{db}-shm"):  # the demo's own store, made anew each run
        if os.path.exists(stale):
            os.remove(stale)

    def on_regression(r: Regression) -> None:
        """Called once per incident, the moment the tracker is sure of it."""
        console.print(
            f"[yellow]on_regression:[/] {r.kind.replace('_', ' ')} in {r.flow}, "
            f"started {clock_time(r.started_at)}, detected {clock_time(clock())}"
        )

    tracker = CacheTracker(
        clock=clock,  # the emulator's clock: both agree on every timestamp
        on_regression=on_regression,
        store=db,
    )
    with EmulatorServer(emulator) as server:
        claude = anthropic.Anthropic(base_url=server.url, api_key="sk-demo", max_retries=0)
        gpt = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-demo", max_retries=0)
        tracker.instrument(gpt, flow="ticket-triage")
        agent = SupportAgent(tracker.wrap(claude.messages.create, flow="support-chat"), gpt, clock)
        wave(agent, emulator, clock, customers(0, CUSTOMERS_PER_WAVE))
        clock.advance(DEPLOY_GAP_S)
        agent.deployed = True  # the deploy: the template now starts with "Current time: ..."
        deploy_at = clock()
        wave(agent, emulator, clock, customers(CUSTOMERS_PER_WAVE, CUSTOMERS_PER_WAVE))
        claude.close()
        gpt.close()
    store = tracker.store
    assert store is not None
    tracker.close()  # every call written
    calls = store.count_calls()
    console.print(
        f"{calls} calls through the real SDK clients on the local emulator, in "
        f"{time.perf_counter() - started:.1f} s; simulated clock {clock_time(START)} to {clock_time(clock())}, "
        f"the deploy at {clock_time(deploy_at)}."
    )
    print_comparison(console, compare(store, deploy_at, "flow"))
    console.print()
    print_incidents(console, store.incidents())
    at = datetime.fromtimestamp(deploy_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    console.print(f"\nThe calls are in {db}. Next, try:", soft_wrap=True)
    for args in (
        ["report", "--db", db, "--compare-at", at],
        ["report", "--db", db, "--by", "prefix"],
        ["regressions", "--db", db],
    ):
        console.print(f"  {shlex.join([command(), *args])}", soft_wrap=True, highlight=False)
    if db == DEFAULT_DB:  # (in the clone: installs the dashboard extra, then serves this store)
        console.print("  make dashboard   (the dashboard of these calls, on http://127.0.0.1:8501)")
    else:
        dashboard = shlex.join([command(), "dashboard", "--db", db])
        console.print(f"  {dashboard}   (the dashboard extra: pip install -e '.[dashboard]')", soft_wrap=True)
    store.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="cachebench demo: a support agent on the local emulator")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"the SQLite store to write (default {DEFAULT_DB})")
    sys.exit(main(db=parser.parse_args().db))
