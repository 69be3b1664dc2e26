"""Regressions that explain themselves, through the real ``anthropic`` SDK on the emulator.

Each test drives flows on the local emulator (its clock shared with the tracker) and checks
what the tracker concludes: one incident per cause, the block and byte range the diff names,
incidents closing when the flow recovers, and silence on healthy traffic.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench.diagnose.flowstate import Incident
from cachebench.fingerprint import canonical
from cachebench.testing import CacheEmulator

MODEL = "claude-sonnet-5"
SYSTEM = "You are ACME's support agent. Answer briefly, cite the policy section, never guess. " * 60
TOOLS = [
    {
        "name": f"lookup_{name}",
        "description": f"Look up a {name} in the ACME back office by its id. " * 12,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
    for name in ("order", "invoice", "shipment", "refund", "customer", "ticket")
]
MARK = {"type": "ephemeral"}


def request(
    question: str,
    *,
    system: str = SYSTEM,
    tools: list[dict[str, Any]] | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """Tools (marked when given), a marked system prompt, an optional marked user context."""
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 32,
        "system": [{"type": "text", "text": system, "cache_control": MARK}],
    }
    if tools is not None:
        body["tools"] = [*tools[:-1], {**tools[-1], "cache_control": MARK}]
    content: list[dict[str, Any]] = []
    if context is not None:
        content.append({"type": "text", "text": context, "cache_control": MARK})
    content.append({"type": "text", "text": question})
    body["messages"] = [{"role": "user", "content": content}]
    return body


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    """Every SDK client a test opens, closed when it ends (no socket left for the GC)."""
    with contextlib.ExitStack() as stack:
        yield stack


class Harness:
    """One tracker on the emulator's clock, with a wrapped client per flow."""

    def __init__(self, emu: CacheEmulator, clients: contextlib.ExitStack, **tracker_kwargs: Any) -> None:
        self.emu = emu
        self.clients = clients
        self._opened: list[Regression] = []
        self._alerts: list[CallMetrics] = []
        self.tracker = CacheTracker(
            clock=emu.clock,
            on_regression=self._opened.append,
            on_miss_alert=self._alerts.append,
            **tracker_kwargs,
        )

    # The callbacks run on the tracker's consumer: read them after what was queued before.
    @property
    def opened(self) -> list[Regression]:
        self.tracker.flush()
        return self._opened

    @property
    def alerts(self) -> list[CallMetrics]:
        self.tracker.flush()
        return self._alerts

    def flow(self, name: str, api_key: str = "sk-regressions") -> Callable[..., Any]:
        client = self.clients.enter_context(
            anthropic.Anthropic(base_url=self.emu.anthropic_base_url, api_key=api_key, max_retries=0)
        )
        return self.tracker.wrap(client.messages.create, flow=name)

    def tick(self, seconds: float = 3.0) -> None:
        self.emu.advance(seconds)

    def of(self, flow: str) -> list[Regression]:
        return [r for r in self.tracker.regressions() if r.flow == flow]


def stamp(i: int) -> str:
    return f"Current time: 2026-11-22T09:{i // 60:02d}:{i % 60:02d}Z. "


def test_timestamp_in_the_system_prompt_is_one_churn_incident_naming_the_bytes(
    cache_emulator: CacheEmulator,
    clients: contextlib.ExitStack,
) -> None:
    """A deploy that stamps the time into the system prompt raises exactly one prefix-churn
    incident on that flow within a few calls (no waiting for TTLs): its diff names section
    ``system``, block 0, a volatile ``timestamp`` and the byte range of the stamp in the block's
    canonical bytes. The stamped calls are ``prefix_changed``; another flow's traffic raises
    nothing; removing the stamp closes the incident."""
    h = Harness(cache_emulator, clients)
    support, other = h.flow("support"), h.flow("billing", api_key="sk-billing")
    billing_system = "You are ACME's billing assistant. Quote invoice numbers exactly. " * 80
    for i in range(20):
        support(**request(f"healthy question {i % 3}"))
        other(**request(f"billing question {i % 4}", system=billing_system))
        h.tick(20)
    assert h.opened == []
    stamped = ""
    opened_at = -1
    for i in range(30):
        stamped = stamp(i) + SYSTEM
        m = support(**request(f"question {i % 3}", system=stamped))
        other(**request(f"billing question {i % 4}", system=billing_system))
        assert m.usage.cache_creation_input_tokens > 0  # the provider really misses
        if h.opened and opened_at < 0:
            opened_at = i
        h.tick(20)
    assert [(r.flow, r.kind) for r in h.opened] == [("support", "prefix_churn")]
    assert 0 < opened_at < 8  # within 8 calls of the first changed call
    churn = h.opened[0]
    assert churn.open and churn.hit_ratio_before > 0.9 and churn.hit_ratio_after < 0.1
    diff = churn.diff
    assert diff is not None and (diff.section, diff.block_index, diff.kind) == ("system", 0, "volatile")
    assert diff.value_type == "timestamp"
    block = canonical(("system", stamped))  # a plain text part is hashed as its text
    offset = block.index(b"2026-11-22T")
    assert (diff.byte_start, diff.byte_end) == (offset, offset + len("2026-11-22T09:00:00Z"))
    assert diff.before is None and diff.after is None  # no text kept without capture_text
    causes = [c.miss_cause for c in h.tracker.calls() if c.flow == "support"][-30:]
    assert causes[0] == "prefix_changed" and set(causes[opened_at + 1 :]) == {"prefix_changed"}
    assert not {"provider", "concurrent"} & set(causes)
    assert h.tracker.by_flow()["support"]["regression"] == h.tracker.regressions()[0].as_dict()
    assert h.tracker.by_flow()["billing"]["regression"] is None
    for i in range(20):  # the fix ships: the plain system prompt again
        support(**request(f"question {i % 3}"))
        h.tick(20)
    (closed,) = h.of("support")
    assert closed.closed_at is not None and not closed.open
    assert len(h.opened) == 1 and h.of("billing") == [] and h.alerts == []


def test_timestamp_from_the_first_call_churns_too(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """A prompt stamped since the process started has no good version to compare with: the
    first layer still churns (its writes are never read back), and the diff compares two
    consecutive stamped prompts, which differ in the stamp."""
    h = Harness(cache_emulator, clients)
    create = h.flow("fresh-start")
    for i in range(30):
        create(**request("q", system=stamp(i) + SYSTEM))
        h.tick(20)
    (churn,) = h.opened
    assert churn.kind == "prefix_churn" and churn.diff is not None
    assert (churn.diff.section, churn.diff.block_index) == ("system", 0)
    offset = canonical(("system", stamp(0) + SYSTEM)).index(b"2026-11-22T")
    assert (churn.diff.kind, churn.diff.value_type) == ("volatile", "timestamp")
    assert (churn.diff.byte_start, churn.diff.byte_end) == (offset, offset + len("2026-11-22T09:00:00Z"))
    assert churn.calls_affected >= 3 and churn.detected_at is not None
    assert churn.detected_at - churn.started_at <= 8 * 20  # within 8 calls (one every 20 s)
    # Its cost is what its calls paid beyond reading the prefix (their avoidable costs): with no
    # healthy call to compare with, not the difference from the flow's first (cold) call.
    assert churn.extra_cost_per_hour_usd is not None and churn.extra_cost_per_hour_usd > 0


def test_reordered_tool_list_names_the_tools_section(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """Tools rendered in a different order on every call churn the first layer; the diff names
    section ``tools`` and the first position whose tool differs from the order last read."""
    h = Harness(cache_emulator, clients)
    create = h.flow("agent")
    for i in range(16):
        create(**request(f"q{i % 2}", tools=TOOLS))
        h.tick(20)
    rng = random.Random(7)
    moved_when_opened = -1
    for i in range(30):
        shuffled = rng.sample(TOOLS, len(TOOLS))
        create(**request(f"q{i % 2}", tools=shuffled))
        if h.opened and moved_when_opened < 0:
            moved_when_opened = next(k for k, t in enumerate(shuffled) if t is not TOOLS[k])
        h.tick(20)
    (churn,) = h.opened
    assert churn.kind == "prefix_churn" and churn.diff is not None
    assert (churn.diff.section, churn.diff.block_index) == ("tools", moved_when_opened)


def test_changed_user_context_names_the_message_block_and_captures_redacted_text(
    cache_emulator: CacheEmulator,
    clients: contextlib.ExitStack,
) -> None:
    """A user context that carries a request id churns the second layer: the diff names the
    ``messages`` block holding it and the id (a ``hex_id``), and with ``capture_text=True``
    short before/after excerpts around the change (the previous id and the new one), with
    secrets redacted."""
    h = Harness(cache_emulator, clients, capture_text=True)
    create = h.flow("assistant")
    key = "sk-live-" + "9" * 24

    def ctx(request_id: str) -> str:
        return f"Customer 42, plan Pro. api_key={key} Request {request_id}. " + "Prefers email. " * 90

    for i in range(16):
        create(**request(f"q{i % 2}", context=ctx("stable")))
        h.tick(20)
    for i in range(30):
        create(**request(f"q{i % 2}", context=ctx(f"req-{i:04d}")))
        h.tick(20)
    (churn,) = h.opened
    diff = churn.diff
    assert diff is not None and (diff.section, diff.block_index) == ("messages", 0)
    assert (diff.kind, diff.value_type) == ("volatile", "hex_id")
    assert diff.before is not None and diff.after is not None
    before_id = re.search(r"Request (req-\d{4})\.", diff.before)
    after_id = re.search(r"Request (req-\d{4})\.", diff.after)
    assert before_id and after_id and before_id.group(1) != after_id.group(1)
    assert key not in diff.before + diff.after and "[REDACTED]" in diff.before


def test_new_customers_after_a_single_customer_phase_are_not_churn(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """A flow that served one customer for a while, then 16 new customers at once who each come
    back within minutes: their contexts are read back, so nothing churns and their first calls
    are ``cold``."""
    h = Harness(cache_emulator, clients)
    create = h.flow("shop")
    for i in range(30):
        create(**request(f"q{i % 3}", context=f"Customer 1 context. {'Likes tea. ' * 120}"))
        h.tick(10)
    customers = [f"Customer {n} context. {'Likes coffee. ' * 120}" for n in range(2, 18)]
    for c in customers:
        create(**request("hello", context=c))
        h.tick(10)
    for turn in range(3):
        for c in customers:
            create(**request(f"follow-up {turn}", context=c))
            h.tick(10)
    assert h.opened == [] and h.alerts == []
    first_calls = h.tracker.calls()[30:46]
    assert {m.miss_cause for m in first_calls} == {"cold"}


def test_one_off_deploy_under_concurrent_traffic_is_not_churn(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """16 calls in parallel right after a one-off change of the system prompt: the first to
    finish writes the new prompt, the others find it written; later calls read it. One change,
    no incident."""
    h = Harness(cache_emulator, clients)
    create = h.flow("burst")
    for i in range(20):
        create(**request(f"q{i % 3}"))
        h.tick(10)
    changed = "Policy v2. " + SYSTEM
    cache_emulator.set_knobs(ttft_ms=200)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: create(**request(f"parallel {i}", system=changed)), range(16)))
    cache_emulator.set_knobs(ttft_ms=0)
    for i in range(40):
        create(**request(f"q{i % 3}", system=changed))
        h.tick(10)
    assert h.opened == [] and h.alerts == []


def test_provider_that_starts_missing_raises_one_hit_ratio_drop(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """When the emulator makes one flow's API key miss every time, that flow raises one
    hit-ratio drop (no diff: its prompt did not change) and the calls are unexpected misses;
    the other flow stays quiet. When the misses stop, the incident closes."""
    h = Harness(cache_emulator, clients)
    flaky, steady = h.flow("flaky", api_key="sk-flaky"), h.flow("steady", api_key="sk-steady")
    steady_system = "You are ACME's returns desk. Be precise about dates and fees. " * 80
    for i in range(16):
        flaky(**request(f"q{i % 2}"))
        steady(**request(f"q{i % 2}", system=steady_system))
        h.tick()
    cache_emulator.set_knobs(miss_rate=1.0, seed=1, scope="sk-flaky")
    for i in range(20):
        flaky(**request(f"q{i % 2}"))
        steady(**request(f"q{i % 2}", system=steady_system))
        h.tick()
    assert [(r.flow, r.kind) for r in h.opened] == [("flaky", "hit_ratio_drop")]
    drop = h.opened[0]
    assert drop.diff is None and drop.hit_ratio_before > 0.9 and drop.hit_ratio_after == 0.0
    assert drop.extra_cost_per_hour_usd is not None and drop.extra_cost_per_hour_usd > 0
    assert {m.miss_cause for m in h.alerts} == {"provider"} and {m.flow for m in h.alerts} == {"flaky"}
    cache_emulator.set_knobs(miss_rate=0.0, scope="sk-flaky")
    for i in range(20):
        flaky(**request(f"q{i % 2}"))
        h.tick()
    (closed,) = h.of("flaky")
    assert closed.closed_at is not None and closed.calls_affected >= 12
    assert len(h.opened) == 1


def test_healthy_multi_tenant_multi_turn_traffic_raises_nothing(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """2,000 calls of a healthy support agent: 120 customers arriving over time (each new
    customer's first message writes their own context layer), interleaved multi-turn
    conversations, bursts of new customers at once, and two flows. No miss alert, no
    regression; new customers' first calls are ``cold``."""
    h = Harness(cache_emulator, clients)
    flows = {"chat": h.flow("chat"), "email": h.flow("email")}
    rng = random.Random(2026)
    active: dict[str, tuple[str, int]] = {}
    arrived = 0
    calls = 0
    while calls < 2000:
        if arrived < 120 and (len(active) < 6 or rng.random() < 0.12):
            burst = 4 if rng.random() < 0.1 else 1
            for _ in range(burst):
                active[f"customer-{arrived}"] = (rng.choice(list(flows)), 0)
                arrived += 1
        user = rng.choice(sorted(active))
        flow_name, turn = active[user]
        context = {"type": "text", "text": f"Context of {user}. " * 80, "cache_control": MARK}
        messages: list[dict[str, Any]] = [{"role": "user", "content": [context]}]
        for t in range(turn):
            messages += [
                {"role": "assistant", "content": f"Answer {t} to {user}."},
                {"role": "user", "content": f"Follow-up {t + 1} from {user}."},
            ]
        if turn:  # the conversation's breakpoint moves with the newest message
            newest = messages[-1]["content"]
            messages[-1]["content"] = [{"type": "text", "text": newest, "cache_control": MARK}]
        body = {
            "model": MODEL,
            "max_tokens": 16,
            "system": [{"type": "text", "text": SYSTEM, "cache_control": MARK}],
            "messages": messages,
        }
        flows[flow_name](**body)
        calls += 1
        active[user] = (flow_name, turn + 1)
        if turn + 1 >= 20:
            del active[user]
        h.tick(rng.uniform(0.5, 4.0))
    assert h.alerts == []
    assert h.tracker.regressions() == []
    totals = h.tracker.aggregate()
    assert totals["calls"] == 2000 and totals["hit_ratio"] > 0.8
    causes = {m.miss_cause for m in h.tracker.calls()}
    assert "cold" in causes and not causes & {"provider", "prefix_changed", "serialization_changed"}


@pytest.mark.parametrize("kind", ["model", "capture"])
def test_regression_callbacks_never_break_the_call(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack, kind: str
) -> None:
    """A broken ``on_regression`` is logged and counted by the guard, never raised into the call."""

    def broken(r: Regression) -> None:
        raise RuntimeError("callback bug")

    tracker = CacheTracker(clock=cache_emulator.clock, on_regression=broken, capture_text=kind == "capture")
    client = clients.enter_context(
        anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-cb", max_retries=0)
    )
    create = tracker.wrap(client.messages.create, flow="cb")
    for _ in range(14):
        create(**request("q"))
        cache_emulator.advance(20)
    for i in range(30):
        assert create(**request("q", system=stamp(i) + SYSTEM)).content
        cache_emulator.advance(20)
    assert len(tracker.regressions()) == 1


def test_switching_model_is_model_changed(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """Caches are per model: the first call after a flow switches model writes everything and
    is ``model_changed``, not an unexpected miss."""
    h = Harness(cache_emulator, clients)
    create = h.flow("switch")
    for i in range(3):
        create(**request(f"q{i}"))
        h.tick(5)
    m = create(**(request("q") | {"model": "claude-opus-4-8"}))
    assert m.usage.cache_creation_input_tokens > 0
    last = h.tracker.calls()[-1]
    assert (last.miss_cause, last.unexpected_miss) == ("model_changed", False)


def test_reordered_keys_with_the_same_content_is_serialization_changed(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """A tool schema re-serialised with its keys in another order keeps ``prefix_id`` (same
    content) but the provider caches rendered bytes and misses: the tracker expected a read,
    alerts, and names the cause ``serialization_changed``."""
    h = Harness(cache_emulator, clients)
    create = h.flow("schema")
    tools = [dict(t) for t in TOOLS]
    create(**request("q0", tools=tools))
    h.tick(5)
    create(**request("q1", tools=tools))  # reads: the layer is now known and printed
    h.tick(5)
    reordered = [{k: t[k] for k in reversed(list(t))} for t in tools]
    m = create(**request("q2", tools=reordered))
    assert m.usage.cache_read_input_tokens == 0  # the emulator caches the bytes it was sent
    _, second, third = h.tracker.calls()
    assert third.prefix_id == second.prefix_id
    assert (third.unexpected_miss, third.miss_cause) == (True, "serialization_changed")
    assert h.alerts == [third]


def test_implicit_caching_below_the_minimum_is_below_minimum(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """OpenAI caches nothing under 1,024 prompt tokens: repeating a short prompt is
    ``below_minimum`` every time, not ``cold`` forever, and raises nothing."""
    tracker = CacheTracker(clock=cache_emulator.clock)
    client = clients.enter_context(
        openai.OpenAI(base_url=cache_emulator.openai_base_url, api_key="sk-short", max_retries=0)
    )
    create = tracker.wrap(client.chat.completions.create, flow="short")
    for _ in range(3):
        create(
            model="gpt-4.1",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        )
        cache_emulator.advance(5)
    assert {m.miss_cause for m in tracker.calls()} == {"below_minimum"}
    assert tracker.regressions() == []


def test_a_hit_ratio_drop_does_not_flap_near_the_threshold() -> None:
    """A drop opens below ``miss_alert_threshold`` and closes only 10 points above it: a flow
    hovering just above the threshold after a drop keeps one open incident, not a new one each
    time it crosses (replayed with ``record()``)."""
    opened: list[Regression] = []
    now = [1_763_000_000.0]
    tracker = CacheTracker(clock=lambda: now[0], on_regression=opened.append, on_miss_alert=lambda m: None)
    body = request("q")

    def call(read: int, write: int) -> None:
        usage = {
            "input_tokens": 5,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write,
            "output_tokens": 5,
        }
        response = {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "usage": usage,
        }
        tracker.record(response, request=body, provider="anthropic", flow="hover")
        now[0] += 10

    call(0, 3000)
    for _ in range(16):
        call(3000, 0)
    for _ in range(16):
        call(1500, 1500)  # the provider starts half-missing: 50 %
    assert [r.kind for r in opened] == ["hit_ratio_drop"]
    for _ in range(16):
        call(1950, 1050)  # 65 %: above the 60 % threshold, below 70 %
    (incident,) = tracker.regressions()
    assert incident.open and len(opened) == 1
    for _ in range(16):
        call(3000, 0)
    (incident,) = tracker.regressions()
    assert incident.closed_at is not None and len(opened) == 1


# -- incidents within a few calls, at any rate; sparse traffic is no churn -------------------------


@pytest.mark.parametrize("gap_s", [0.05, 1.0, 120.0])
def test_a_timestamp_inserted_mid_run_opens_churn_within_8_calls_at_any_rate(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack, gap_s: float
) -> None:
    """A timestamp with microseconds enters the system prompt of a healthy flow: churn opens
    within 8 calls of the first stamped call, at 20 calls a second as at one every 2 minutes
    (nothing waits for a TTL to pass), and every stamped call after the first is
    ``prefix_changed`` with a volatile ``timestamp`` diff and an avoidable cost."""
    h = Harness(cache_emulator, clients)
    create = h.flow("busy")
    for i in range(10):
        create(**request(f"q{i % 3}"))
        h.tick(gap_s)
    first_opened = -1
    for n in range(1, 9):
        stamp = f"Now: 2026-12-07T10:00:{n:02d}.{n * 1117:06d}Z. "
        create(**request("q", system=stamp + SYSTEM))
        if h.opened and first_opened < 0:
            first_opened = n
        h.tick(gap_s)
    assert 0 < first_opened <= 8 and len(h.opened) == 1
    stamped = h.tracker.calls()[-8:]
    for m in stamped[1:]:
        assert m.miss_cause == "prefix_changed", m
        assert m.diff is not None and (m.diff.kind, m.diff.value_type) == ("volatile", "timestamp")
        assert m.avoidable_tokens > 0 and m.avoidable_cost_usd is not None and m.avoidable_cost_usd > 0
    flow = h.tracker.by_flow()["busy"]
    assert flow["avoidable_cost_usd"] > 0 and flow["hit_ratio_if_fixed"] > flow["hit_ratio"]


def test_fifty_tenants_read_rarely_are_unread_writes_not_churn(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """Fifty tenants whose contexts come back rarely (one call every 45 s overall, so a tenant
    returns after about 37 minutes): their writes expire unread. That is no churn and no
    ``prefix_changed`` (each context is another tenant's, ``cold`` or ``ttl_expired``); the
    layer is reported under ``unread_writes`` with its cost and the advice."""
    h = Harness(cache_emulator, clients)
    create = h.flow("tenants")
    rnd = random.Random(50)
    tenants = [
        f"Tenant {n} ({rnd.choice(['retail', 'travel', 'banking'])}): " + f"notes {n} " * 300
        for n in range(50)
    ]
    for i in range(150):
        create(**request(f"question {i}", context=tenants[rnd.randrange(50)]))
        h.tick(45)
    assert h.opened == [] and h.alerts == []
    causes = {m.miss_cause for m in h.tracker.calls()}
    assert "prefix_changed" not in causes and "serialization_changed" not in causes
    unread = h.tracker.by_flow()["tenants"]["unread_writes"]
    assert set(unread) == {"1"}  # the context layer (breakpoint 1), not the shared system prompt
    layer = unread["1"]
    assert layer["unread"] >= layer["writes"] // 2 > 0
    assert layer["unread_cost_usd"] > 0 and "1 h TTL" in layer["advice"]


def test_a_one_off_whitespace_reserialisation_is_one_change_and_no_incident(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """A deploy re-indents the system prompt once: that call is ``serialization_changed`` with a
    ``serialization`` diff (the same content in other whitespace); later calls read the new
    entry, so no incident opens."""
    h = Harness(cache_emulator, clients)
    create = h.flow("deploy")
    lines = [f"Rule {i}: answer questions about topic {i} politely." for i in range(120)]
    for i in range(8):
        create(**request(f"q{i % 2}", system="\n".join(lines)))
        h.tick(10)
    for i in range(8):
        create(**request(f"q{i % 2}", system="\n".join("    " + line for line in lines)))
        h.tick(10)
    calls = h.tracker.calls()
    assert [m.miss_cause for m in calls[8:]] == ["serialization_changed"] + [None] * 7
    assert calls[8].diff is not None and (calls[8].diff.section, calls[8].diff.kind) == (
        "system",
        "serialization",
    )
    assert h.opened == []


def test_an_incidents_cost_per_hour_counts_a_burst_over_a_minute_at_least() -> None:
    """Ten churning calls within half a second, each paying $0.01 beyond a read, are not an
    hour of 72,000 such calls: the rate is taken over at least a minute (10 calls a minute)."""
    burst = Incident(
        "f", "prefix_churn", 100.0, 1.0, 0, None, calls=10, avoidable_cost=0.1, charged=10, last_at=100.5
    )
    assert burst.regression().extra_cost_per_hour_usd == pytest.approx(0.01 * 10 * 60)
    steady = Incident(
        "f", "prefix_churn", 100.0, 1.0, 0, None, calls=10, avoidable_cost=0.1, charged=10, last_at=400.0
    )
    assert steady.regression().extra_cost_per_hour_usd == pytest.approx(0.01 * 10 * 12)


def test_a_short_history_still_has_a_hit_ratio_before(
    cache_emulator: CacheEmulator,
    clients: contextlib.ExitStack,
) -> None:
    """Five healthy calls, then a stamped system prompt: the churn incident's hit ratio before is
    the flow's ratio over the calls before its first stamped call (all read: 100%), not n/a
    because the detection window also holds them."""
    h = Harness(cache_emulator, clients)
    support = h.flow("support")
    for i in range(5):
        support(**request(f"question {i}"))
        h.tick(20)
    for i in range(6):
        support(**request(f"question {i}", system=stamp(i) + SYSTEM))
        h.tick(20)
    (incident,) = h.opened
    assert incident.kind == "prefix_churn"
    assert incident.hit_ratio_before == 1.0
    assert incident.hit_ratio_after is not None and incident.hit_ratio_after < 0.5
