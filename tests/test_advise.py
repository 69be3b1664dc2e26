"""Advice from traffic: its costs are the simulator's, its placement the cheapest of all, its
warmers priced from the trace; from a trace, a live tracker (real SDK, emulator) and the demo's
store (the CLI as a subprocess); recorded calls as a trace."""

from __future__ import annotations

import importlib
import io
import itertools
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from rich.console import Console

import cachebench
from cachebench.economics import Rates, Strategy, Trace, advise, simulate, trace_from_calls
from cachebench.economics._advise import _placements
from cachebench.store import open_store
from cachebench.testing import CacheEmulator

ROOT = Path(__file__).resolve().parents[1]
MONTH = 30 * 86_400.0


def _trace(seed: int = 4, n: int = 1_500) -> list[dict[str, Any]]:
    """A support flow: a shared system layer, 30 customers' contexts, short sessions of turns."""
    rnd = random.Random(seed)
    t = 1_767_225_600.0
    out = []
    turn: dict[int, int] = {}
    for _ in range(n):
        t += rnd.expovariate(1 / 50)
        c = rnd.randrange(30)
        turn[c] = turn.get(c, 0) + 1 if rnd.random() < 0.7 else 1
        layers = [
            {"key": "system", "tokens": 5_000, "ttl": "5m"},
            {"key": f"customer/{c}", "tokens": 2_000, "ttl": "5m"},
        ]
        if turn[c] > 1:
            layers.append(
                {"key": f"customer/{c}/turns/{turn[c] - 1}", "tokens": 400 * (turn[c] - 1), "ttl": "5m"}
            )
        out.append(
            {
                "timestamp": t,
                "flow": "support",
                "model": "claude-opus-4-5",
                "layers": layers,
                "input_tokens": 150,
                "output_tokens": 250,
            }
        )
    return out


def test_advice_costs_are_the_simulators_and_its_placement_is_the_cheapest() -> None:
    calls = _trace()
    advice = advise(calls)["support"]
    scale = MONTH / advice.span_s
    sim = simulate(calls, ["current", advice.strategy])
    assert advice.monthly_cost_current == pytest.approx(sim["current"].cost_usd * scale, rel=1e-9)
    assert advice.monthly_cost_advised == pytest.approx(sim[advice.strategy].cost_usd * scale, rel=1e-9)
    # every placement the provider allows, replayed: none is cheaper than the advice
    costs = {}
    for placement, last in _placements(3, 4):
        assert last is None  # (three layers are placed one by one)
        marks = {k: t for k, t in enumerate(placement) if t is not None}
        name = "layers=" + ",".join(f"{k}:{t}" for k, t in marks.items()) if marks else "none"
        strategy = Strategy(name, marks) if marks else Strategy.none()
        costs[name] = simulate(calls, [strategy])[name].cost_usd * scale
    assert min(costs.values()) == pytest.approx(advice.monthly_cost_advised, rel=1e-9)
    assert advice.monthly_cost_uncached == pytest.approx(costs["none"], rel=1e-9)
    # customers come back every ~25 minutes: their layer is worth 1h, which a 5m now wastes
    layers = {x.layer: x for x in advice.layers}
    assert layers[1].current == "5m" and layers[1].advised == "1h"
    assert layers[1].live_1h > layers[1].live_5m
    assert advice.monthly_saving > 0
    text = str(advice and advise(calls))
    assert "flow support (claude-opus-4-5)" in text and "advised 1h (change)" in text
    assert f"--strategy '{advice.strategy}'" in text


def test_a_global_warmer_is_priced_from_the_gaps_in_the_trace() -> None:
    """One call every 6-9 minutes on a large shared layer: each one finds a 5m entry expired.
    The warmer's saving is those writes (less reads) a month; its cost, a read every 240 s."""
    rnd = random.Random(3)
    t = 1_767_225_600.0
    calls = []
    for _ in range(300):
        t += rnd.uniform(360, 540)
        calls.append(
            {
                "timestamp": t,
                "model": "claude-opus-4-5",
                "flow": "nightly",
                "layers": [{"key": "handbook", "tokens": 60_000, "ttl": "5m"}],
                "input_tokens": 100,
            }
        )
    advice = advise(calls, warm_every_s=240)["nightly"]
    (warmer,) = [w for w in advice.warming if w.kind == "global warmer"]
    opus = Rates.for_model("claude-opus-4-5", when=calls[0]["timestamp"])
    ttl = advice.layers[0].advised or "5m"
    gaps = [b["timestamp"] - a["timestamp"] for a, b in itertools.pairwise(calls)]
    expired = sum(1 for g in gaps if g > {"5m": 300, "1h": 3600}[ttl])
    scale = MONTH / (calls[-1]["timestamp"] - calls[0]["timestamp"])
    premium = 60_000 * (opus.write(ttl) - opus.cache_read) / 1e6
    assert warmer.monthly_saving == pytest.approx(scale * expired * premium)
    ping = (60_000 * opus.cache_read + 8 * opus.input + 1 * opus.output) / 1e6
    assert warmer.monthly_cost == pytest.approx(MONTH / 240 * ping)
    assert warmer.pays == (warmer.monthly_saving > warmer.monthly_cost)


def test_bad_sources_and_flows_that_cannot_be_advised() -> None:
    with pytest.raises(ValueError, match="advise\\(\\) reads a trace"):
        advise(42)
    with pytest.raises(ValueError, match="warm_every_s"):
        advise([], warm_every_s=0)
    calls = [
        {
            "timestamp": 1.0 + i,
            "provider": "openai",
            "model": "gpt-5",
            "flow": "triage",
            "layers": [{"key": "s", "tokens": 5_000}],
        }
        for i in range(3)
    ]
    calls += [
        {"timestamp": 1.0 + i, "flow": "nameless", "layers": [{"key": "s", "tokens": 5_000, "ttl": "5m"}]}
        for i in range(3)
    ]
    got = advise(calls)
    assert got.flows == ()
    assert any(s.startswith("triage: advice places Anthropic and Bedrock") for s in got.skipped)
    assert any(s.startswith("nameless: its calls name no model") for s in got.skipped)


# -- from recorded calls ----------------------------------------------------------------------------


POLICY = "Answer as the support agent of a bicycle shop, briefly and politely. " * 120


def _request(customer: int, history: list[dict[str, Any]], question: str) -> dict[str, Any]:
    messages = [*history, {"role": "user", "content": question}]
    if history:  # the breakpoint on the end of the conversation so far
        last = dict(messages[-2])
        last["content"] = [{"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}]
        messages[-2] = last
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "system": [
            {"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {
                "type": "text",
                "text": f"Customer {customer}: " + "has ordered bikes before. " * 60,
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": messages,
    }


def test_recorded_calls_as_a_trace_replay_what_the_provider_counted(cache_emulator: CacheEmulator) -> None:
    """Conversations of three customers through ``anthropic.Anthropic`` to the emulator with a
    tracker: the trace made of its recorded calls, replayed under its own markers, reads and
    writes what the emulator reported; advise() reads the tracker itself."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-advise", max_retries=0
    )
    create = tracker.wrap(client.messages.create, flow="support")
    rnd = random.Random(8)
    histories: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}
    for i in range(24):
        cache_emulator.advance(rnd.choice([20, 60, 200, 400]))
        c = rnd.randrange(3)
        if rnd.random() < 0.25:
            histories[c] = []
        question = f"Question {i} about order {rnd.randrange(1000)}?"
        response = create(**_request(c, histories[c], question))
        answer = "".join(b.text for b in response.content if b.type == "text") or "ok"
        histories[c] = [
            *histories[c],
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    recorded = tracker.calls()
    trace = trace_from_calls(recorded)
    assert len(trace) == len(recorded) == 24
    replayed = simulate(trace, ["current"])["current"]
    assert replayed.cache_read_tokens == sum(m.cache_read_tokens for m in recorded)
    assert replayed.cache_write_tokens == sum(m.cache_write_tokens for m in recorded)
    assert replayed.input_tokens == sum(m.input_tokens for m in recorded)
    advice = advise(tracker)["support"]
    assert advice.calls == 24 and len(advice.layers) >= 3
    tracker.close()
    client.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        demo = importlib.import_module("support_agent")
    finally:
        sys.path.remove(str(ROOT / "examples"))
    db = str(tmp_path_factory.mktemp("advise") / "demo.db")
    assert demo.main(Console(file=io.StringIO(), width=130, color_system=None), db=db) == 0
    return db


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachebench", *args], capture_output=True, text=True, timeout=120
    )


def test_advise_and_export_on_the_demos_store(demo_db: str, tmp_path: Path) -> None:
    done = _cli("advise", "--db", demo_db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flow support-chat (claude-sonnet-5): 80 calls")
    assert "skipped: ticket-triage: advice places Anthropic and Bedrock breakpoints" in done.stdout
    as_json = orjson.loads(_cli("advise", "--db", demo_db, "--json").stdout)
    (flow,) = as_json["flows"]
    assert flow["monthly_cost_advised"] <= flow["monthly_cost_current"] <= flow["monthly_cost_uncached"] * 1.5
    path = tmp_path / "demo-trace.jsonl"
    exported = _cli("export", "--db", demo_db, "--format", "trace", "-o", str(path))
    assert exported.returncode == 0, exported.stderr
    assert "wrote 160 calls" in exported.stderr
    trace = Trace.read(path)
    assert {c.flow for c in trace} == {"support-chat", "ticket-triage"}
    simulated = _cli("simulate", str(path), "-s", "current", "-s", flow["strategy"], "--json")
    assert simulated.returncode == 0, simulated.stderr
    # the trace of the store replays what the providers counted (twins sent together do not read
    # each other's writes: a response's writes are readable once it starts)
    current = orjson.loads(simulated.stdout)["strategies"][0]
    store = open_store(demo_db)
    calls = [c.metrics for c in store.iter_calls()]
    store.close()
    assert (current["cache_read_tokens"], current["cache_write_tokens"], current["input_tokens"]) == (
        sum(m.cache_read_tokens for m in calls),
        sum(m.cache_write_tokens for m in calls),
        sum(m.input_tokens for m in calls),
    )
    assert current["cost_usd"] == pytest.approx(sum(m.cost_usd for m in calls))
    advised_again = orjson.loads(_cli("advise", str(path), "--json").stdout)
    assert advised_again["flows"][0]["monthly_cost_advised"] == pytest.approx(flow["monthly_cost_advised"])


def test_advise_without_a_database_says_so(tmp_path: Path) -> None:
    done = _cli("advise", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1 and "no such database" in done.stderr


def test_the_advised_strategy_replays_advises_placement_per_flow() -> None:
    """Two flows with different traffic: ``advised`` gives each its own placement."""
    calls = _trace()
    rnd = random.Random(9)
    t = calls[0]["timestamp"]
    for _ in range(400):  # a dense flow: a 5m TTL is enough, and cheaper to write
        t += rnd.expovariate(1 / 20)
        calls.append(
            {
                "timestamp": t,
                "flow": "search",
                "model": "claude-opus-4-5",
                "layers": [{"key": "index", "tokens": 9_000, "ttl": "1h"}],
                "input_tokens": 50,
            }
        )
    advice = advise(calls)
    assert advice["search"].strategy == "layers=0:5m"
    assert advice["support"].strategy != advice["search"].strategy
    sim = simulate(calls, ["advised", "current"])
    by_flow = {
        f: simulate([c for c in calls if c["flow"] == f], [advice[f].strategy])[advice[f].strategy]
        for f in ("support", "search")
    }
    assert sim["advised"].cost_usd == pytest.approx(sum(r.cost_usd for r in by_flow.values()), rel=1e-9)
    assert sim["advised"].cost_usd < sim["current"].cost_usd


def test_a_layer_below_the_minimum_is_said_and_never_warmed() -> None:
    """Haiku 4.5 caches from 4,096 tokens: a 2,100-token layer is never cached, so no
    breakpoint is advised and no warmer is offered for it."""
    calls = [
        {
            "timestamp": 1_767_225_600.0 + 600 * i,
            "flow": "classify",
            "model": "claude-haiku-4-5",
            "layers": [{"key": "classify-system", "tokens": 2_100, "ttl": "5m"}],
            "input_tokens": 50,
        }
        for i in range(100)
    ]
    advice = advise(calls)["classify"]
    (layer,) = advice.layers
    assert layer.below_minimum and layer.advised is None
    assert advice.warming == ()
    assert "under claude-haiku-4-5's minimum: never cached" in str(advise(calls))


def test_a_short_trace_says_its_month_is_an_extrapolation() -> None:
    calls = _trace(n=30)
    advice = advise(calls)
    assert advice["support"].span_s < 3600
    assert "a month at this rate is an extrapolation of it" in str(advice)


def test_advise_and_simulate_take_prices_for_models_genai_prices_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    Trace(
        [
            {
                "timestamp": 1_767_225_600.0 + 30 * i,
                "flow": "tuned",
                "model": "my-finetune-x",
                "layers": [{"key": "system", "tokens": 5_000, "ttl": "5m"}],
                "input_tokens": 100,
            }
            for i in range(20)
        ]
    ).write(path)
    refused = _cli("simulate", str(path), "-s", "current")
    assert refused.returncode == 2 and f"{path}:1: no prices for 'my-finetune-x'" in refused.stderr
    prices = tmp_path / "prices.json"
    prices.write_text('{"my-finetune-x": {"input": 2, "output": 8, "cache_read": 0.2, "cache_write": 2.5}}')
    done = _cli("simulate", str(path), "-s", "current", "-s", "none", "--prices", str(prices), "--json")
    assert done.returncode == 0, done.stderr
    current, none = orjson.loads(done.stdout)["strategies"]
    assert none["cost_usd"] == pytest.approx(20 * 5_100 * 2 / 1e6)
    assert current["cost_usd"] < none["cost_usd"]
    advised = _cli("advise", str(path), "--prices", str(prices))
    assert advised.returncode == 0 and advised.stdout.startswith("flow tuned (my-finetune-x)")
    prices.write_text('{"my-finetune-x": {"input": "cheap"}}')
    bad = _cli("advise", str(path), "--prices", str(prices))
    assert bad.returncode == 2 and str(prices) in bad.stderr


def test_an_empty_trace_is_said(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    done = _cli("simulate", str(path))
    assert done.returncode == 2 and "no call in it" in done.stderr


def _conversations(turns: int, model: str = "claude-opus-4-5", flow: str = "chat") -> list[dict[str, Any]]:
    """Conversations of ``turns`` turns, a layer a turn, the breakpoint on the newest."""
    rnd = random.Random(turns)
    out, t = [], 1_767_225_600.0
    for conversation in range(20):
        t += 600
        for k in range(1, turns + 1):
            t += rnd.uniform(20, 200)
            layers = [{"key": "system", "tokens": 6_000, "ttl": "5m"}]
            layers += [{"key": f"c{conversation}/turn{j}", "tokens": 300} for j in range(1, k)]
            if k > 1:
                layers[-1]["ttl"] = "5m"
            out.append({"timestamp": t, "flow": flow, "model": model, "layers": layers, "input_tokens": 80})
    out.sort(key=lambda c: c["timestamp"])
    return out


def test_deep_conversations_are_advised_quickly_with_a_breakpoint_on_the_last_layer() -> None:
    """A layer a turn: 25 turns are 25 layers. The first layers are placed one by one and the
    last layer of each call is one more choice (every placement of 25 layers would never end)."""
    calls = _conversations(25)
    started = time.monotonic()
    advice = advise(calls)["chat"]
    assert time.monotonic() - started < 20
    assert advice.advised_last == "5m" and advice.strategy.endswith("-1:5m")
    assert advice.current_last == "5m"  # (most calls mark their newest turn today)
    assert "each call's last layer: breakpoint now 5m, advised 5m" in str(advise(calls))
    sim = simulate(calls, ["current", advice.strategy])
    scale = MONTH / advice.span_s
    assert advice.monthly_cost_advised == pytest.approx(sim[advice.strategy].cost_usd * scale, rel=1e-9)
    assert advice.monthly_cost_current == pytest.approx(sim["current"].cost_usd * scale, rel=1e-9)


def test_a_flow_of_two_models_is_one_advice_replayed_alike() -> None:
    calls = _trace(n=600) + [{**c, "model": "claude-sonnet-4-5"} for c in _trace(seed=5, n=600)]
    advice = advise(calls)
    assert [f.flow for f in advice.flows] == ["support"]
    (flow,) = advice.flows
    assert set(flow.model.split(", ")) == {"claude-opus-4-5", "claude-sonnet-4-5"}
    sim = simulate(calls, ["advised", flow.strategy])
    assert sim["advised"].cost_usd == pytest.approx(sim[flow.strategy].cost_usd)
    assert flow.monthly_cost_advised == pytest.approx(sim["advised"].cost_usd * MONTH / flow.span_s)


def test_with_responses_that_take_time_the_advice_is_replayed_alike() -> None:
    """Bursts of parallel calls write alike until the first response starts: with ttft_s the
    current and advised costs are both replayed, and advising what the trace already does
    saves nothing."""
    calls, t = [], 1_767_225_600.0
    for _ in range(40):
        t += 900
        calls += [
            {
                "timestamp": t + 0.1 * k,
                "flow": "batch",
                "model": "claude-opus-4-5",
                "layers": [{"key": "doc", "tokens": 30_000, "ttl": "1h"}],
                "input_tokens": 100,
            }
            for k in range(5)
        ]
    advice = advise(calls, ttft_s=2.0)["batch"]
    assert advice.strategy == "layers=0:1h"
    assert advice.monthly_saving == pytest.approx(0.0, abs=1e-9)


def test_a_flow_with_too_little_traffic_is_not_projected() -> None:
    got = advise(
        [
            {
                "timestamp": 1_767_225_600.0,
                "flow": "once",
                "model": "claude-opus-4-5",
                "layers": [{"key": "s", "tokens": 9_000, "ttl": "5m"}],
            }
        ]
    )
    assert got.flows == () and got.skipped[0].startswith("once: 1 call over 0 s: too little traffic")


def test_conversations_read_through_the_lookback_replay_what_the_provider_counted(
    cache_emulator: CacheEmulator,
) -> None:
    """Two conversations on one system prompt, a breakpoint on the system prompt and on the end
    of the conversation: turn 2 reads turn 1's entry through the lookback. Their trace replays
    the provider's counts (the lookback read is not taken for the system layer's size)."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-look", max_retries=0)
    create = tracker.wrap(client.messages.create, flow="chat")
    for conversation in range(2):
        history: list[dict[str, Any]] = []
        for turn in range(3):
            cache_emulator.advance(30)
            question = f"Conversation {conversation}, question {turn}: " + "tell me more. " * 40
            messages = [
                *history,
                {
                    "role": "user",
                    "content": [{"type": "text", "text": question, "cache_control": {"type": "ephemeral"}}],
                },
            ]
            body = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 16,
                "messages": messages,
                "system": [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}],
            }
            response = create(**body)
            answer = "".join(b.text for b in response.content if b.type == "text") or "ok"
            history = [
                *history,
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
    recorded = tracker.calls()
    replayed = simulate(trace_from_calls(recorded), ["current"])["current"]
    assert (replayed.cache_read_tokens, replayed.cache_write_tokens) == (
        sum(m.cache_read_tokens for m in recorded),
        sum(m.cache_write_tokens for m in recorded),
    )
    tracker.close()
    client.close()


def test_calls_of_one_shape_are_priced_from_their_gaps_as_the_simulator_replays_them() -> None:
    """Calls of one length and one marking (no replay in the advice): its figures are still
    the simulator's."""
    rnd = random.Random(12)
    t, calls = 1_767_225_600.0, []
    for _ in range(2_000):
        t += rnd.expovariate(1 / 90)
        user = rnd.randrange(25)
        calls.append(
            {
                "timestamp": t,
                "flow": "search",
                "model": "claude-opus-4-5",
                "input_tokens": 60,
                "output_tokens": 40,
                "layers": [
                    {"key": "tools", "tokens": 3_000},
                    {"key": "system", "tokens": 2_000, "ttl": "1h"},
                    {"key": f"u{user}", "tokens": 1_500, "ttl": "5m"},
                ],
            }
        )
    advice = advise(calls)["search"]
    scale = MONTH / advice.span_s
    sim = simulate(calls, ["current", advice.strategy])
    assert advice.monthly_cost_current == pytest.approx(sim["current"].cost_usd * scale, rel=1e-9)
    assert advice.monthly_cost_advised == pytest.approx(sim[advice.strategy].cost_usd * scale, rel=1e-9)


def test_deep_calls_of_one_shape_get_the_last_layer_when_it_is_cheapest() -> None:
    """Ten layers a call, the breakpoint on the first: the whole prompt repeats, so a breakpoint
    on the last layer reads it all."""
    calls = [
        {
            "timestamp": 1_767_225_600.0 + 60 * i,
            "flow": "deep",
            "model": "claude-opus-4-5",
            "input_tokens": 50,
            "layers": [
                {"key": "sys", "tokens": 3_000, "ttl": "5m"},
                *({"key": f"l{j}", "tokens": 400} for j in range(9)),
            ],
        }
        for i in range(40)
    ]
    advice = advise(calls)["deep"]
    assert advice.strategy == "layers=-1:5m"
    sim = simulate(calls, ["current", advice.strategy])
    scale = MONTH / advice.span_s
    assert advice.monthly_cost_advised == pytest.approx(sim[advice.strategy].cost_usd * scale, rel=1e-9)
    assert sim[advice.strategy].cost_usd < sim["current"].cost_usd / 3


def test_of_equal_placements_the_advice_takes_the_fewest_breakpoints() -> None:
    calls = _conversations(6)
    advice = advise(calls)["chat"]
    marks = advice.placement
    for layer in [k for k in marks if k >= 0]:
        fewer = {k: t for k, t in marks.items() if k != layer}
        cost = simulate(calls, [Strategy("fewer", fewer)])["fewer"].cost_usd * MONTH / advice.span_s
        assert cost > advice.monthly_cost_advised + 1e-9, (layer, marks)


def test_simulate_one_flow_of_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    Trace([*_trace(n=200), *({**c, "flow": "other"} for c in _trace(seed=7, n=100))]).write(path)
    done = _cli("simulate", str(path), "--flow", "other", "-s", "current", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["calls"] == 100
    missing = _cli("simulate", str(path), "--flow", "nope")
    assert missing.returncode == 2 and "no call of flow 'nope'" in missing.stderr
    hint = _cli("advise", str(path))
    assert "simulate it: --flow support --strategy current" in hint.stdout
