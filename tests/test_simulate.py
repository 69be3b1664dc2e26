"""What-if simulation: the layer cache against the cache model, the simulation against the
emulator's own accounting through the real SDK, strategies and traces."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from cachebench.cachemodel import CacheModel, CacheRequest, LayerCache, Segment
from cachebench.economics import DEFAULT_STRATEGIES, Rates, Strategy, Trace, TraceError, simulate
from cachebench.testing import CacheEmulator

MODEL = "claude-sonnet-4-5"  # a 1,024-token minimum


def _random_requests(seed: int) -> list[tuple[float, float, list[tuple[str, int, int, str | None]]]]:
    """(time, response start, layers as (key, tokens, blocks, ttl)) of a churning multi-user,
    multi-turn flow with bursts of parallel calls."""
    rnd = random.Random(seed)
    sizes: dict[str, tuple[int, int]] = {}  # a key names content: its tokens and blocks are its own

    def size(key: str, tokens: list[int], blocks: list[int]) -> tuple[int, int]:
        return sizes.setdefault(key, (rnd.choice(tokens), rnd.choice(blocks)))

    out = []
    t = 0.0
    for _ in range(400):
        t += rnd.choice([0.0, 0.2, 1.0, 30.0, 200.0, 400.0, 4000.0])
        user = rnd.randrange(4)
        turns = rnd.randrange(0, 4)
        system = rnd.choice(["sys-a", "sys-b", "sys-c"])
        layers = [
            (system, *size(system, [300, 1500], [1]), rnd.choice(["1h", "5m", None])),
            (f"user{user}", *size(f"user{user}", [200, 900], [1, 3]), rnd.choice(["5m", None])),
        ]
        for k in range(turns):
            key = f"user{user}/turn{k}"
            layers.append((key, *size(key, [50, 400], [1, 2, 12]), None))
        if turns and rnd.random() < 0.8:
            key, tokens, blocks, _ = layers[-1]
            layers[-1] = (key, tokens, blocks, "5m")
        ttls = [x[3] for x in layers]
        if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
            layers = [(k, n, b, None if x == "1h" else x) for k, n, b, x in layers]
        out.append((t, t + rnd.choice([0.0, 0.0, 0.5, 3.0]), layers))
    return out


def _segments(layers: list[tuple[str, int, int, str | None]]) -> tuple[Segment, ...]:
    out = []
    path = ""
    for key, tokens, blocks, ttl in layers:
        path += "/" + key
        for b in range(blocks - 1):
            out.append(Segment(f"{path}#{b}".encode(), 0))
        out.append(Segment(path.encode(), tokens, ttl))
    return tuple(out)


def _layer_args(
    layers: list[tuple[str, int, int, str | None]], ids: dict[str, int]
) -> tuple[list[int], list[int], list[int], list[tuple[int, str]]]:
    """The same layers as the layer cache takes them: each layer's interned chain id (``ids``
    interns the key paths), its cumulative tokens, its last block's position, and the marked
    layers with their TTLs."""
    chain, cum, pos = [], [], []
    path, total, blocks = "", 0, -1
    for key, tokens, b, _ in layers:
        path += "/" + key
        chain.append(ids.setdefault(path, len(ids)))
        total += tokens
        blocks += b
        cum.append(total)
        pos.append(blocks)
    marks = [(j, ttl) for j, (_, _, _, ttl) in enumerate(layers) if ttl is not None]
    return chain, cum, pos, marks


@pytest.mark.parametrize("seed", range(12))
def test_the_layer_cache_counts_what_the_cache_model_counts(seed: int) -> None:
    """Random requests (parallel ones too: entries readable only once the response starts)
    through both, in the same order of events: every read and write equal."""
    requests = _random_requests(seed)
    model = CacheModel(max_entries=1 << 20)
    layers = LayerCache()
    ids: dict[str, int] = {}
    events: list[tuple[float, int, str, Any]] = []
    for n, (t, ready, spec) in enumerate(requests):
        events.append((t, n, "begin", (ready, spec)))
    events.sort(key=lambda e: (e[0], e[1]))
    pending: list[tuple[float, int, int | None, int]] = []
    i = 0
    compared = 0
    while i < len(events) or pending:
        pending.sort()
        if pending and (i >= len(events) or pending[0][0] <= events[i][0]):
            at, _, ticket, model_ticket = pending.pop(0)
            model.started(model_ticket, at)
            if ticket is not None:
                layers.started(ticket, at)
            continue
        t, n, _, (ready, spec) = events[i]
        i += 1
        got = model.begin(CacheRequest("anthropic", MODEL, "k", _segments(spec)), t)
        chain, cum, pos, marks = _layer_args(spec, ids)
        read, by_ttl, _, _, ticket = layers.begin(chain, cum, pos, marks, 1024, t, ready)
        assert (read, by_ttl) == (got.cache_read_tokens, dict(got.cache_write_by_ttl)), (seed, n)
        compared += 1
        pending.append((ready, n, ticket, got.ticket))
    assert compared == len(requests)


# -- the simulation against the emulator, through the real SDK ---------------------------------------


def _text(tokens: int, seed: str) -> str:
    """ASCII text of exactly ``tokens`` tokens by the emulator's estimate (4 characters each)."""
    rnd = random.Random(seed)
    words = []
    size = 0
    while size < tokens * 4:
        word = "".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(2, 7)))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[: tokens * 4]


def _trace_calls(start: float) -> list[dict[str, Any]]:
    rnd = random.Random(5)
    out = []
    t = start
    sessions: dict[int, int] = {}
    for _n in range(60):
        t += rnd.choice([2.0, 20.0, 90.0, 400.0])
        user = rnd.randrange(3)
        turn = sessions[user] = sessions.get(user, 0) + 1 if rnd.random() < 0.8 else 1
        layers = [
            {"key": "system", "tokens": 1_300, "ttl": "1h"},
            {"key": f"user{user}", "tokens": 700, "ttl": "5m"},
        ]
        for k in range(1, turn):
            layers.append(
                {"key": f"user{user}/turn{k}", "tokens": 120, "ttl": "5m" if k == turn - 1 else None}
            )
        out.append(
            {
                "timestamp": t,
                "flow": "support",
                "user": f"user{user}",
                "model": MODEL,
                "layers": layers,
                "input_tokens": 40,
            }
        )
    return out


def _body(call: dict[str, Any]) -> dict[str, Any]:
    system = []
    messages: list[dict[str, Any]] = []
    for layer in call["layers"]:
        block: dict[str, Any] = {"type": "text", "text": _text(layer["tokens"], layer["key"])}
        if layer["ttl"] is not None:
            block["cache_control"] = {"type": "ephemeral", "ttl": layer["ttl"]}
        if "/turn" in layer["key"]:
            messages.append({"role": "user", "content": [block]})
        else:
            system.append(block)
    messages.append({"role": "user", "content": _text(call["input_tokens"], f"q{call['timestamp']}")})
    return {"model": MODEL, "max_tokens": 16, "system": system, "messages": messages}


def test_simulate_equals_the_emulators_accounting_through_the_sdk(cache_emulator: CacheEmulator) -> None:
    """A trace sent call by call through ``anthropic.Anthropic`` to the emulator at its
    timestamps: the current strategy's tokens and cost are the emulator's."""
    clock = cache_emulator.clock
    calls = _trace_calls(clock())
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-sim", max_retries=0)
    read = written = uncached = output = 0
    for call in calls:
        cache_emulator.advance(call["timestamp"] - clock())
        response = client.messages.create(**_body(call))
        usage = response.usage
        read += usage.cache_read_input_tokens or 0
        written += usage.cache_creation_input_tokens or 0
        uncached += usage.input_tokens
        output += usage.output_tokens
        call["output_tokens"] = usage.output_tokens
    client.close()
    result = simulate(calls, ["current"])["current"]
    assert (
        result.cache_read_tokens,
        result.cache_write_tokens,
        result.input_tokens,
        result.output_tokens,
    ) == (
        read,
        written,
        uncached,
        output,
    )
    assert read > 0 and written > 0
    rates = Rates.for_model(MODEL, when=calls[0]["timestamp"])
    assert result.cost_usd == pytest.approx(
        (uncached * rates.input + read * rates.cache_read + output * rates.output) / 1e6
        + _write_cost(calls, rates),
        rel=1e-9,
    )


def _write_cost(calls: list[dict[str, Any]], rates: Rates) -> float:
    """What the writes cost, by TTL, from a replay of the same calls through the cache model
    (the emulator reports the 1h part of its writes; the 5m part is the rest)."""
    model = CacheModel()
    cost = 0.0
    for call in calls:
        spec = [(x["key"], x["tokens"], 1, x["ttl"]) for x in call["layers"]]
        got = model.handle(CacheRequest("anthropic", MODEL, "k", _segments(spec)), call["timestamp"])
        cost += sum(n * rates.write(ttl) for ttl, n in got.cache_write_by_ttl.items()) / 1e6
    return cost


# -- strategies -------------------------------------------------------------------------------------


def _support_trace(n: int = 3_000, gap: float = 40.0, seed: int = 2) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    t = 1_767_225_600.0
    out = []
    for _ in range(n):
        t += rnd.expovariate(1 / gap)
        user = rnd.randrange(40)
        out.append(
            {
                "timestamp": t,
                "flow": "support",
                "model": "claude-opus-4-5",
                "layers": [
                    {"key": "system", "tokens": 6_000, "ttl": "5m"},
                    {"key": f"user{user}", "tokens": 1_500, "ttl": "5m"},
                ],
                "input_tokens": 200,
                "output_tokens": 300,
            }
        )
    return out


def test_strategies_side_by_side() -> None:
    sim = simulate(_support_trace(), ["none", "current", "ttl=1h", "current+warm=4m", "layers=0:1h"])
    none, current, hour, warmed, first = (
        sim[s.name]
        for s in [Strategy.parse(x) for x in ["none", "current", "ttl=1h", "current+warm=4m", "layers=0:1h"]]
    )
    assert none.cost_saved_usd == 0 and none.hit_ratio is None
    assert none.cost_usd == pytest.approx(none.cost_without_cache_usd)
    assert all(r.cost_without_cache_usd == pytest.approx(none.cost_usd) for r in sim.results)
    # users come back every ~27 minutes: a 5m TTL re-writes their layer, 1h keeps it
    assert current.rewrite_cost_usd > 0
    assert hour.hit_ratio > current.hit_ratio and hour.cost_usd < current.cost_usd
    assert hour.rewrite_cost_usd < current.rewrite_cost_usd
    # the warmer keeps the system layer alive between sparse calls, at a price
    assert warmed.warm_calls > 0 and warmed.warm_cost_usd > 0
    assert warmed.calls == current.calls
    assert warmed.cache_read_tokens > current.cache_read_tokens
    assert first.cache_write_tokens > 0
    assert sim.best.name == "ttl=1h"
    table = str(sim)
    assert "ttl=1h" in table and "cheapest: ttl=1h" in table
    assert orjson.loads(orjson.dumps(sim.as_dict()))["best"] == "ttl=1h"


def test_miss_aware_removes_concurrent_writes() -> None:
    """Bursts of parallel calls on a cold prefix: without miss_aware each writes it (the
    avoidable cost); held until the first response starts, they read it."""
    calls = []
    t = 1_767_225_600.0
    for burst in range(20):
        t += 600.0  # past the 5m TTL: each burst is cold
        for k in range(5):
            calls.append(
                {
                    "timestamp": t + 0.05 * k,
                    "model": "claude-opus-4-5",
                    "layers": [{"key": f"doc{burst}", "tokens": 8_000, "ttl": "5m"}],
                    "input_tokens": 50,
                }
            )
    sim = simulate(calls, ["current", "current+miss_aware"], ttft_s=1.0)
    plain, aware = sim["current"], sim["current+miss_aware"]
    assert plain.avoidable_cost_usd > 0 and plain.cache_write_tokens == 20 * 5 * 8_000
    assert aware.held_calls == 20 * 4
    assert aware.cache_write_tokens == 20 * 8_000 and aware.avoidable_cost_usd == 0
    assert aware.cost_usd < plain.cost_usd


def test_openai_and_gemini_traces_run_on_the_cache_model() -> None:
    calls = [
        {
            "timestamp": 1_767_225_600.0 + 10 * i,
            "provider": provider,
            "model": model,
            "layers": [{"key": "system", "tokens": 5_000}],
            "input_tokens": 100,
        }
        for provider, model in [("openai", "gpt-5"), ("gemini", "gemini-2.5-pro")]
        for i in range(5)
    ]
    result = simulate(calls, ["current", "none"])
    current = result["current"]
    assert current.cache_read_tokens > 0 and current.cache_write_tokens == 0  # implicit: writes are free
    assert current.cost_usd < result["none"].cost_usd


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "a strategy is text"),
        ("ttl", "is not one of"),
        ("warm=soon", "not a duration"),
        ("layers=a:1h", "not layer:ttl"),
        ("ttl=2h", "ttl must be one of"),
        ("ttl=1h+ttl=5m", "says again what an earlier part said"),
        ("current+layers=0:1h", "says again"),
        ("none+warm=4m", "'none' caches nothing"),
    ],
)
def test_bad_strategies_get_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Strategy.parse(spec)


def test_a_strategy_whose_layers_no_call_has_is_named() -> None:
    """``layers=5:1h`` on a trace whose calls have fewer layers would cache nothing and be
    called a strategy: refused, naming the layers the calls have; a layer some calls have is
    fine, and so is -1 (the last)."""
    calls = _support_trace(5)
    deepest = max(len(c["layers"]) for c in calls)
    with pytest.raises(
        ValueError, match=rf"no call of the trace has layer 5 \(its calls have at most {deepest} layers"
    ):
        simulate(calls, ["layers=5:1h"])
    with pytest.raises(ValueError, match="no call of the trace has layer"):
        simulate(calls, [Strategy("deep", {9: "1h", -7: "5m"})])
    found = simulate(calls, [f"layers={deepest - 1}:1h", "layers=-1:5m"])
    assert all(r.cache_write_tokens > 0 for r in found.results)


def test_a_strategy_the_provider_would_refuse_is_named() -> None:
    calls = _support_trace(5)
    with pytest.raises(ValueError, match="1h breakpoint after a 5m"):
        simulate(calls, [Strategy("odd", {0: "5m", 1: "1h"})])
    with pytest.raises(ValueError, match="allows 4"):
        simulate(
            [{**calls[0], "layers": [{"key": f"l{i}", "tokens": 2_000} for i in range(5)]}],
            [Strategy("all", dict.fromkeys(range(5), "5m"))],
        )


def test_a_bad_trace_line_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    good = orjson.dumps(_support_trace(1)[0])
    path.write_bytes(good + b"\n\n" + b'{"timestamp": 1, "layers": [{"key": "a", "tokens": -3}]}\n')
    with pytest.raises(TraceError, match=r"trace.jsonl:3: layer 'a' tokens must be a whole number"):
        simulate(str(path))
    path.write_bytes(b'{"timestamp": 1, "layerz": []}\n')
    with pytest.raises(TraceError, match=r":1: unknown field 'layerz'"):
        Trace.read(path)
    with pytest.raises(TraceError, match="no such file"):
        Trace.read(tmp_path / "missing.jsonl")


def test_a_trace_round_trips_through_its_file(tmp_path: Path) -> None:
    trace = Trace(_support_trace(50))
    trace.write(tmp_path / "t.jsonl")
    again = Trace.read(tmp_path / "t.jsonl")
    assert again.calls == trace.calls
    assert simulate(again, ["current"]).as_dict() == simulate(trace, ["current"]).as_dict()


# -- the command line, as a subprocess ---------------------------------------------------------------


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "cachebench", "simulate", *args], capture_output=True, text=True, timeout=120
    )


def test_the_simulate_command(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    Trace(_support_trace(400)).write(path)
    done = _cli(str(path), "-s", "current", "-s", "ttl=1h")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["strategy", "hit", "ratio"]
    assert [line.split()[0] for line in lines[1:3]] == ["current", "ttl=1h"]
    assert "400 calls; cheapest:" in done.stdout
    as_json = _cli(str(path), "-s", "current", "--json")
    assert as_json.returncode == 0, as_json.stderr
    expected = simulate(Trace.read(path), ["current"]).as_dict()
    assert orjson.loads(as_json.stdout) == orjson.loads(orjson.dumps(expected))
    default = _cli(str(path))
    assert default.returncode == 0 and "current+miss_aware" in default.stdout


def test_the_simulate_command_refuses_bad_input(tmp_path: Path) -> None:
    bad = _cli(str(tmp_path / "none.jsonl"))
    assert bad.returncode == 2 and "no such file" in bad.stderr
    path = tmp_path / "trace.jsonl"
    path.write_text('{"timestamp": 1, "layers": [{"key": "a", "tokens": 10}]}\n{"timestamp": "soon"}\n')
    bad = _cli(str(path), "--model", "claude-opus-4-5")
    assert bad.returncode == 2 and "trace.jsonl:2: timestamp 'soon'" in bad.stderr
    bad = _cli(str(path), "-s", "ttl=forever")
    assert bad.returncode == 2 and "--strategy" in bad.stderr
    path.write_text('{"timestamp": 1, "layers": []}\n{"timestamp": 2, "layers": [}\n')
    bad = _cli(str(path), "--model", "claude-opus-4-5")
    assert bad.returncode == 2 and "trace.jsonl:2: not JSON: " in bad.stderr and " at column 29" in bad.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for command in ("simulate", "advise"):
        done = subprocess.run(
            [sys.executable, "-m", "cachebench", command, str(empty)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and f"{empty}: no call in it" in done.stderr, (command, done.stderr)


def test_a_strategy_that_loses_money_shows_a_negative_saving() -> None:
    """A call every 7 minutes on a 5m entry writes every time: the saving is negative."""
    calls = [
        {
            "timestamp": 1_767_225_600 + 420 * i,
            "model": "claude-opus-4-5",
            "layers": [{"key": "system", "tokens": 8_000, "ttl": "5m"}],
            "input_tokens": 100,
        }
        for i in range(50)
    ]
    result = simulate(calls, ["current"])
    current = result["current"]
    assert current.cache_read_tokens == 0 and current.cost_saved_usd < 0
    assert f"-${-current.cost_saved_usd:,.4f}" in str(result)


def test_edge_cases_of_traces_and_strategies() -> None:
    # a recorded warm call without layers, and a strategy's warmer on a flow of such calls
    calls = [
        {"timestamp": 1.0, "model": "claude-opus-4-5", "layers": [], "warm": True, "input_tokens": 8},
        *_support_trace(20),
    ]
    result = simulate(calls, ["current+warm=4m"])["current+warm=4m"]
    assert result.calls == 20 and result.warm_calls >= 1
    with pytest.raises(ValueError, match="ttl must be one of 5m, 1h, 30m, 12h"):
        Strategy("long", ttl="24h")
    # a TTL of another provider is that provider's of the same rank, for the warmer's calls too
    mapped = simulate(_support_trace(300), ["ttl=30m+warm=4m", "ttl=5m+warm=4m"])
    assert mapped["ttl=30m+warm=4m"].cost_usd == pytest.approx(mapped["ttl=5m+warm=4m"].cost_usd)


def test_a_rewrite_is_one_of_an_entry_that_expired_lately() -> None:
    """An entry that expired more than FORGET_AFTER_S ago is written again as cold content."""
    from cachebench.cachemodel._layers import FORGET_AFTER_S

    cache = LayerCache()
    marks = [(0, "5m")]
    *_, ticket = cache.begin([7], [5_000], [0], marks, 1024, 0.0)
    assert ticket is not None
    cache.started(ticket, 0.0)
    _, _, _, rewritten, ticket = cache.begin([7], [5_000], [0], marks, 1024, 600.0)
    assert rewritten == 5_000 and ticket is not None
    cache.started(ticket, 600.0)
    _, _, _, rewritten, _ = cache.begin([7], [5_000], [0], marks, 1024, 600.0 + 300 + FORGET_AFTER_S + 1)
    assert rewritten == 0


def _both(requests: list[tuple[float, list[tuple[str, int, int, str | None]]]], minimum: int = 1024) -> None:
    """Each request through the layer cache and the cache model at once: equal counts."""
    model = CacheModel(max_entries=1 << 20, min_tokens={"anthropic": minimum})
    layers = LayerCache()
    ids: dict[str, int] = {}
    for t, spec in requests:
        got = model.handle(CacheRequest("anthropic", MODEL, "k", _segments(spec)), t)
        chain, cum, pos, marks = _layer_args(spec, ids)
        read, by_ttl, _, _, ticket = layers.begin(chain, cum, pos, marks, minimum, t)
        if ticket is not None:
            layers.started(ticket, t)
        assert (read, by_ttl) == (got.cache_read_tokens, dict(got.cache_write_by_ttl)), (t, spec)


def test_the_layer_cache_at_the_edges_of_the_rules() -> None:
    """A prefix of exactly the minimum qualifies; an entry is alive at the instant it expires
    and not after; the lookback reaches exactly 20 blocks back."""
    _both([(0.0, [("a", 1024, 1, "5m")]), (300.0, [("a", 1024, 1, "5m")]), (600.1, [("a", 1024, 1, "5m")])])
    _both([(0.0, [("a", 1023, 1, "5m")]), (1.0, [("a", 1023, 1, "5m")])])
    for gap in (20, 21):  # blocks between the earlier entry and the new breakpoint
        _both(
            [
                (0.0, [("s", 2_000, 1, None), ("t", 100, 1, "5m")]),
                (1.0, [("s", 2_000, 1, None), ("t", 100, 1, None), ("u", 50, gap, "5m")]),
            ]
        )


def test_concurrent_and_rewritten_writes_add_up_over_breakpoints() -> None:
    cache = LayerCache()
    marks = [(0, "1h"), (1, "5m")]
    _, _, _, _, ticket = cache.begin([1, 2], [3_000, 5_000], [0, 1], marks, 1024, 0.0, ready_at=10.0)
    _, by_ttl, concurrent, _, _ = cache.begin([1, 2], [3_000, 5_000], [0, 1], marks, 1024, 1.0, ready_at=11.0)
    assert concurrent == 5_000 and by_ttl == {"1h": 3_000, "5m": 2_000}  # both spans a twin was writing
    assert ticket is not None
    cache.started(ticket, 10.0)
    _, _, _, rewritten, _ = cache.begin([1, 2], [3_000, 5_000], [0, 1], marks, 1024, 10.0 + 3_601)
    assert rewritten == 5_000  # both expired: re-written
    assert cache.writing(1, 20.0) is None  # (written and readable)


def test_without_caching_recorded_warm_calls_are_not_sent() -> None:
    calls = [
        {
            "timestamp": 1_767_225_600.0 + 240 * i,
            "model": "claude-opus-4-5",
            "warm": True,
            "layers": [{"key": "s", "tokens": 6_000, "ttl": "5m"}],
            "input_tokens": 8,
        }
        for i in range(10)
    ]
    result = simulate(calls, ["none", "current"])
    assert result["none"].cost_usd == 0 and result["none"].cost_saved_usd == 0
    assert result["current"].warm_calls == 10 and result["current"].warm_cost_usd > 0
    with pytest.raises(ValueError, match="layer 0 is given twice"):
        Strategy.parse("layers=0:1h,0:5m")


# -- saved requests and a plan of the planner --------------------------------------------------------


def _agent_requests(start: float) -> list[dict[str, Any]]:
    """Wrappers of an agent's requests: shared tools and system prompt, three customers, turns
    with tool calls (a tool_use and tool_result run is one lookback position), its own markers
    on the system prompt (1h) and the newest turn (5m)."""
    rnd = random.Random(9)
    tools = [
        {"name": f"tool{k}", "description": _text(120, f"tool{k}"), "input_schema": {"type": "object"}}
        for k in range(3)
    ]
    system = [
        {"type": "text", "text": _text(1_400, "system"), "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    history: dict[int, list[dict[str, Any]]] = {}
    out = []
    t = start
    for n in range(50):
        t += rnd.choice([3.0, 40.0, 200.0, 500.0])
        customer = rnd.randrange(3)
        turns = history.setdefault(customer, [{"role": "user", "content": _text(300, f"customer{customer}")}])
        if len(turns) > 1 and rnd.random() < 0.5:
            call_id = f"toolu_{n}"
            turns.append(
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": call_id, "name": "tool1", "input": {"n": n}}],
                }
            )
            turns.append(
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call_id, "content": _text(90, f"result{n}")},
                        {"type": "text", "text": _text(20, f"ask{n}")},
                    ],
                }
            )
        else:
            turns.append({"role": "assistant", "content": _text(60, f"answer{n}")})
            turns.append({"role": "user", "content": _text(40, f"next{n}")})
        messages = [dict(m) for m in turns]
        body = {"model": MODEL, "max_tokens": 8, "tools": tools, "system": system, "messages": messages}
        if customer == 2:  # (its newest turn marked by the top-level cache_control: the last block)
            body["cache_control"] = {"type": "ephemeral"}
        else:
            last = messages[-1]
            content = (
                last["content"]
                if isinstance(last["content"], list)
                else [{"type": "text", "text": last["content"]}]
            )
            messages[-1] = {
                **last,
                "content": [*content[:-1], {**content[-1], "cache_control": {"type": "ephemeral"}}],
            }
        out.append({"timestamp": t, "flow": "agent", "request": body})
    return out


def _through_the_sdk(
    cache_emulator: CacheEmulator, wrappers: list[dict[str, Any]], key: str
) -> tuple[int, int, int]:
    """The requests sent at their times through ``anthropic.Anthropic`` to the emulator (under
    their own API key: a cache of their own): read, written and uncached input tokens."""
    clock = cache_emulator.clock
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key=key, max_retries=0)
    read = written = uncached = 0
    for w in wrappers:
        cache_emulator.advance(max(w["timestamp"] - clock(), 0.0))
        body = dict(w["request"])
        automatic = body.pop(
            "cache_control", None
        )  # (sent as the API has it, beside the SDK's own arguments)
        extra = {"extra_body": {"cache_control": automatic}} if automatic else {}
        usage = client.messages.create(**body, **extra).usage
        read += usage.cache_read_input_tokens or 0
        written += usage.cache_creation_input_tokens or 0
        uncached += usage.input_tokens
    client.close()
    return read, written, uncached


def test_saved_requests_simulate_as_the_emulator_serves_them_as_marked_and_as_planned(
    cache_emulator: CacheEmulator, tmp_path: Path
) -> None:
    """An agent's requests saved to a file: the ``current`` strategy on their trace reads,
    writes and leaves uncached what the emulator did for the requests sent through the real SDK,
    and the ``plan`` strategy what it did for the same requests marked by the planner's plan."""
    from cachebench.economics import plans_for_requests, trace_from_requests

    wrappers = _agent_requests(cache_emulator.clock() + 1.0)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in wrappers))
    # (planned from the samples alone: a plan that marks them otherwise than they are marked, so
    # the two replays differ; with their traffic the planner marks them as they are)
    plans = plans_for_requests(path, measure_traffic=False)
    (plan,) = plans.values()
    assert plan.breakpoints
    planned_wrappers = [{**w, "request": plan.apply(w["request"])} for w in wrappers]
    as_marked = _through_the_sdk(cache_emulator, wrappers, "sk-marked")
    # The planned requests a day later, the same time apart (the clock only moves on).
    later = cache_emulator.clock() + 86_400.0 - wrappers[0]["timestamp"]
    shifted = [{**w, "timestamp": w["timestamp"] + later} for w in planned_wrappers]
    as_planned = _through_the_sdk(cache_emulator, shifted, "sk-planned")
    trace = trace_from_requests(path)
    assert any(x.blocks == 0 for c in trace.calls for x in c.layers)  # (tool_result runs)
    result = simulate(trace, ["current", "plan", "none"], planned=trace_from_requests(path, plans=plans))
    for name, expected in (("current", as_marked), ("plan", as_planned)):
        r = result[name]
        assert (r.cache_read_tokens, r.cache_write_tokens, r.input_tokens) == expected, name
    assert as_marked[0] > 0 and as_planned[0] > 0 and as_marked != as_planned
    assert result["none"].cache_read_tokens == 0


def test_the_plan_strategy_needs_the_planned_calls() -> None:
    from cachebench.economics import trace_from_requests

    wrappers = _agent_requests(1_767_225_600.0)[:5]
    trace = trace_from_requests(wrappers)
    with pytest.raises(ValueError, match="pass planned="):
        simulate(trace, ["plan"])
    with pytest.raises(ValueError, match="planned must be the same calls"):
        simulate(trace, ["plan"], planned=trace_from_requests(wrappers[:3]))


def test_saved_requests_that_cannot_be_a_trace_are_named(tmp_path: Path) -> None:
    from cachebench.economics import plans_for_requests, trace_from_requests

    path = tmp_path / "requests.jsonl"
    openai_body = {"model": "gpt-5.6", "messages": [{"role": "user", "content": "hi"}]}
    path.write_bytes(
        orjson.dumps({"request": _agent_requests(1_767_225_600.0)[0]["request"]})
        + b"\n"
        + orjson.dumps({"provider": "openai", "request": openai_body})
        + b"\n"
    )
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}:2: a request to openai"):
        trace_from_requests(path)
    refused = {  # (a TTL the provider does not have)
        "model": MODEL,
        "max_tokens": 8,
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "2h"}}
        ],
        "messages": [{"role": "user", "content": "hi"}],
    }
    path.write_bytes(orjson.dumps({"request": refused}) + b"\n")
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}:1: the provider would refuse it: "):
        trace_from_requests(path)
    path.write_bytes(b'{"request": {"model": "claude-sonnet-4-5", "max_tokens": 8}\n')
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}:1: not valid JSON"):
        trace_from_requests(path)
    listed = tmp_path / "requests.json"  # (a JSON file of a list: its items are named by index)
    listed.write_bytes(orjson.dumps([{"request": refused}, {"provider": "openai", "request": openai_body}]))
    with pytest.raises(
        TraceError, match=rf"^{re.escape(str(listed))}:1: request 0: the provider would refuse"
    ):
        trace_from_requests(listed)
    with pytest.raises(TraceError, match="no such file"):
        trace_from_requests(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="start: "):
        trace_from_requests(path, start="soon")
    with pytest.raises(ValueError, match="flows must be a collection"):
        plans_for_requests(path, flows="agent")


def test_planned_calls_must_be_the_traces_own() -> None:
    """The same times but another flow for a call: refused."""
    from cachebench.economics import trace_from_requests

    wrappers = _agent_requests(1_767_225_600.0)[:6]
    mine = [{**w, "flow": "other"} if i == 0 else w for i, w in enumerate(wrappers)]
    moved = [{**w, "flow": "other"} if i == 3 else w for i, w in enumerate(wrappers)]  # (the same flows)
    with pytest.raises(ValueError, match="the same times and flows, in order"):
        simulate(trace_from_requests(mine), ["plan"], planned=trace_from_requests(moved))


def test_the_simulate_command_on_saved_requests(tmp_path: Path) -> None:
    """``cachebench simulate FILE --requests``: the requests as marked and as the planner's plan
    for their flow marks them, as the library replays them; ``plan`` without --requests is
    refused."""
    from cachebench.economics import plans_for_requests, trace_from_requests

    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in _agent_requests(1_767_225_600.0)))
    done = _cli(str(path), "--requests", "-s", "current", "-s", "plan", "--json")
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout)
    plans = plans_for_requests(path)
    assert out.pop("plans") == orjson.loads(orjson.dumps({k: p.as_dict() for k, p in plans.items()}))
    expected = simulate(
        trace_from_requests(path), ["current", "plan"], planned=trace_from_requests(path, plans=plans)
    )
    assert out == orjson.loads(orjson.dumps(expected.as_dict()))
    table = _cli(str(path), "--requests")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("plan for flow agent: anthropic claude-sonnet-4-5: ")
    lines = table.stdout.splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("strategy "))
    names = [line.split()[0] for line in lines[head + 1 : -1]]
    assert names == [*DEFAULT_STRATEGIES, "plan"]  # (the usual set, and the plan)
    refused = _cli(str(path), "-s", "plan")
    assert refused.returncode == 2
    assert "give --requests" in refused.stderr


def test_requests_read_once_serve_the_trace_and_the_plans_as_the_file_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the simulate command does with --requests: the file read once, then its trace, its
    flows' plans and the planned trace made from what was read, each equal to what the file
    itself gives; a file that cannot be read is named as the file's own functions name it."""
    from cachebench.economics import _requests, plans_for_requests, trace_from_requests
    from cachebench.planner import _saved

    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in _agent_requests(1_767_225_600.0)))
    reads = []
    real = _saved.read_file
    monkeypatch.setattr(_saved, "read_file", lambda p: (reads.append(p), real(p))[1])
    saved = _requests.read_once(path)
    plans = plans_for_requests(saved)
    made = (trace_from_requests(saved), trace_from_requests(saved, plans=plans))
    assert reads == [str(path)]
    assert plans["agent"].as_dict() == plans_for_requests(path)["agent"].as_dict()
    assert [t.calls for t in made] == [
        trace_from_requests(path).calls,
        trace_from_requests(path, plans=plans).calls,
    ]
    with pytest.raises(TraceError, match=r"missing\.jsonl: no such file"):
        _requests.read_once(tmp_path / "missing.jsonl")


def test_a_flow_whose_model_changes_is_planned_on_its_most_frequent_model(tmp_path: Path) -> None:
    """An upgrade halfway: the last 20 of a flow's 50 requests go to another model. Its plan is
    made from the requests to the model most of them went to, the same plan every time, and
    marks all of them; --flow plans that flow alone."""
    from cachebench.economics import plans_for_requests, trace_from_requests

    wrappers = _agent_requests(1_767_225_600.0)
    for w in wrappers[30:]:
        w["request"] = {**w["request"], "model": "claude-opus-4-5"}
    other = [{**w, "flow": "other"} for w in _agent_requests(1_767_225_600.5)[:10]]
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(w) + b"\n" for w in [*wrappers, *other]))
    plans = plans_for_requests(path)
    assert plans["agent"].model == MODEL
    assert plans["agent"].as_dict() == plans_for_requests(path)["agent"].as_dict()
    assert set(plans_for_requests(path, flows=["other"])) == {"other"}
    planned = trace_from_requests(path, plans=plans)
    result = simulate(trace_from_requests(path), ["current", "plan"], planned=planned)
    assert result["plan"].calls == 60
    opus = [c for c in planned.calls if c.model == "claude-opus-4-5"]
    assert len(opus) == 20 and all(any(x.ttl for x in c.layers) for c in opus)
    done = _cli(str(path), "--requests", "--flow", "other", "-s", "plan")
    assert done.returncode == 0, done.stderr
    assert "plan for flow other:" in done.stdout and "plan for flow agent:" not in done.stdout
    wrong = _cli(str(path), "-s", "current")
    assert wrong.returncode == 2 and "give --requests" in wrong.stderr


def test_saved_requests_without_messages_are_named_and_plans_of_nothing_place_none(tmp_path: Path) -> None:
    """A line of a trace read with --requests, or a body with no messages, stops the reading
    with its file and line (a trace's line is told so); plan() of a body with nothing to cache
    places no breakpoint (it raised IndexError)."""
    import cachebench

    trace_line = {"timestamp": 1_767_225_600, "model": MODEL, "layers": [{"key": "system", "tokens": 3000}]}
    path = tmp_path / "trace.jsonl"
    path.write_bytes(orjson.dumps(trace_line) + b"\n")
    done = _cli(str(path), "--requests")
    assert done.returncode == 2
    assert (
        f"{path}:1: not a request body for anthropic: it has no list of messages (a trace's line"
        in done.stderr
    )
    from cachebench.economics import trace_from_requests

    empty = {"model": MODEL, "max_tokens": 10}
    with pytest.raises(
        TraceError, match=r"<requests>:1: not a request body for anthropic: it has no list of messages$"
    ):
        trace_from_requests([empty])
    plan = cachebench.plan([empty])
    assert plan.breakpoints == () and plan.layers == ()


def test_wrong_kinds_of_trace_and_strategies_are_named() -> None:
    """A number, a dict or bytes for the trace, and one strategy's text for the list, raise a
    TypeError that says what each must be; a one-call result says "1 call"."""
    for bad in (42, {"timestamp": 1}, b"trace.jsonl"):
        with pytest.raises(TypeError, match="a trace is calls"):
            simulate(bad, ["current"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strategies must be a list"):
        simulate(_support_trace(3), "current")  # type: ignore[arg-type]
    one = simulate(_support_trace(1), ["current"])
    assert str(one).endswith("1 call; cheapest: current")


def _turns(customer: str, n: int, start: float, gap: float) -> list[tuple[float, dict[str, Any]]]:
    """A session of ``n`` turns as an agent sends them: each turn's messages are the last one's,
    then its answer and a new question, with the breakpoint moved to the newest answer (whose
    text becomes a block to carry it)."""
    out = []
    history: list[dict[str, Any]] = []
    for k in range(n):
        messages = [*history, {"role": "user", "content": f"{customer} asks question {k}. " * 20}]
        if history:
            last = dict(messages[-2])
            last["content"] = [
                {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}
            ]
            messages[-2] = last
        body = {"model": MODEL, "max_tokens": 8, "system": "Be brief. " * 400, "messages": messages}
        out.append((start + k * gap, body))
        history = [*history, messages[-1], {"role": "assistant", "content": f"Answer {k} for {customer}."}]
    return out


def test_measured_traffic_counts_calls_an_hour_and_turns_a_session() -> None:
    """Sessions of 3, 1 and 2 turns, interleaved over an hour: 6 requests, 5 an hour after the
    first, 2 turns a session (a turn continues its session although its breakpoint moved and a
    string became a block). A log that starts mid-session counts that session's first request
    it has as a start; requests without timestamps show no rate."""
    from types import SimpleNamespace

    from cachebench.economics._requests import measured_traffic
    from cachebench.types import Provider

    t0 = 1_767_225_600.0
    sent = sorted(
        [*_turns("ann", 3, t0, 1500.0), *_turns("bob", 1, t0 + 600, 0.0), *_turns("cy", 2, t0 + 900, 2700.0)],
        key=lambda x: x[0],
    )
    assert sent[-1][0] - sent[0][0] == 3600.0
    pairs = [(SimpleNamespace(timestamp=t), body) for t, body in sent]
    found = measured_traffic(pairs, Provider.ANTHROPIC)
    assert found is not None
    assert (found.calls_per_hour, found.turns_per_session, found.users) == (5.0, 2.0, None)
    late = [
        p for p in pairs if p[1]["messages"] != sent[0][1]["messages"]
    ]  # (ann's first turn not in the log)
    partial = measured_traffic(late, Provider.ANTHROPIC)
    assert partial is not None and partial.turns_per_session == pytest.approx(5 / 3)
    assert (
        measured_traffic([(SimpleNamespace(timestamp=None), b) for _, b in sent], Provider.ANTHROPIC) is None
    )
    assert measured_traffic(pairs[:1], Provider.ANTHROPIC) is None
    # The same request sent again (a retry, another user's same first question) is no next turn.
    again = [pairs[0], (SimpleNamespace(timestamp=t0 + 60.0), sent[0][1])]
    repeated = measured_traffic(again, Provider.ANTHROPIC)
    assert repeated is not None and repeated.turns_per_session == 1.0


def test_plans_for_requests_plan_for_the_traffic_unless_told_not_to(tmp_path: Path) -> None:
    """The same requests planned with their traffic (a plan per hour) and without it (a plan
    per call, from the samples replayed a second apart)."""
    from cachebench.economics import plans_for_requests

    t0 = 1_767_225_600.0
    sent = [*_turns("ann", 3, t0, 120.0), *_turns("bob", 2, t0 + 60.0, 120.0)]
    path = tmp_path / "requests.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"timestamp": t, "flow": "chat", "request": b}) + b"\n" for t, b in sent)
    )
    measured = plans_for_requests(path)["chat"]
    alone = plans_for_requests(path, measure_traffic=False)["chat"]
    assert measured.per_hour and not alone.per_hour
    with pytest.raises(TypeError, match="measure_traffic must be True or False"):
        plans_for_requests(path, measure_traffic="yes")  # type: ignore[arg-type]
