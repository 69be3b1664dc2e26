"""The column paths of simulate and advise, and the trace file's decoder, against the call-by-call
reference they stand in for: random traces (gaps on the TTLs' edges, shared and personal layers,
minimums, warm calls, several flows and models) give the same figures to the last bit, and a
trace the column path cannot replay exactly is left to the reference."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cachebench.economics._advise as advise_module
import cachebench.economics._compiled as compiled_module
import cachebench.economics._simulate as simulate_module
from cachebench.economics import Strategy, Trace, TraceError, advise, simulate
from cachebench.economics._advise import _traffic_columns, _traffic_rows
from cachebench.economics._compiled import Compiled, compile_trace
from cachebench.economics._simulate import _run, _run_columns

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the same prices every run
MODELS = [
    ("anthropic", "claude-sonnet-4-5"),  # a 1,024-token minimum
    ("anthropic", "claude-haiku-4-5"),  # 4,096
    ("bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
]
# Gaps on and around the TTLs (5 minutes, an hour) and the day after which an expired entry is
# forgotten, and ordinary ones.
GAPS = [0.0, 0.25, 1.0, 30.0, 299.0, 300.0, 300.5, 301.0, 1800.0, 3599.0, 3600.0, 3601.0, 86_400.0, 90_000.0]
STRATEGIES = [
    "current",
    "none",
    "advised",
    "ttl=5m",
    "ttl=1h",
    "layers=0:1h,-1:5m",
    "layers=1:5m",
    "layers=0:1h,1:1h,2:5m",
]


@st.composite
def traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Calls of 1 to 3 flows: a shared system layer, a customer's layer, and sometimes a
    session's; each key with one size; each flow with its own markers (sometimes varied)."""
    sizes = {
        "system": draw(st.sampled_from([600, 2_000, 5_000])),
        **{f"c{i}": draw(st.sampled_from([0, 300, 1_500])) for i in range(4)},
        **{f"c{i}/s{j}": draw(st.sampled_from([100, 2_500])) for i in range(4) for j in range(2)},
    }
    flows = draw(st.integers(1, 3))
    marking = [
        draw(
            st.sampled_from(
                [
                    ("1h", "5m", "5m"),
                    ("5m", "5m", None),
                    (None, "1h", "5m"),
                    ("1h", None, None),
                    (None, None, None),
                ]
            )
        )
        for _ in range(flows)
    ]
    models = [draw(st.sampled_from(MODELS)) for _ in range(flows)]
    vary = draw(st.booleans())  # some calls mark their layers otherwise
    t = START
    calls = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from(GAPS))
        f = draw(st.integers(0, flows - 1))
        customer = draw(st.integers(0, 3))
        depth = draw(st.integers(1, 3))
        keys = ["system", f"c{customer}", f"c{customer}/s{draw(st.integers(0, 1))}"][:depth]
        ttls = list(marking[f][:depth])
        if vary and draw(st.integers(0, 4)) == 0:
            ttls = [None if x is not None else "5m" for x in ttls]
            if "5m" in ttls and "1h" in ttls:
                ttls = ["5m" if x else None for x in ttls]
        provider, model = models[f]
        calls.append(
            {
                "timestamp": round(t, 3),
                "flow": f"flow{f}",
                "provider": provider,
                "model": model,
                "layers": [
                    {"key": k, "tokens": sizes[k], "ttl": ttl} for k, ttl in zip(keys, ttls, strict=True)
                ],
                "input_tokens": draw(st.sampled_from([0, 50, 400])),
                "output_tokens": draw(st.sampled_from([0, 200])),
                "warm": draw(st.integers(0, 9)) == 0,
            }
        )
    return calls


def _placements(compiled: Compiled) -> dict[int, dict[int, str]]:
    found = advise(compiled)
    return {compiled.flows[f.flow]: f.placement for f in found.flows}


@given(traces())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_column_replay_equals_the_call_by_call_one(calls: list[dict[str, Any]]) -> None:
    compiled = compile_trace(calls)
    placements = _placements(compiled)
    for spec in STRATEGIES:
        strategy = Strategy.parse(spec)
        try:
            expected = _run(compiled, strategy, compiled.t[-1], placements).as_dict()
        except ValueError as exc:  # (a strategy the provider refuses: both name the same call)
            with pytest.raises(ValueError, match=f"^{re.escape(str(exc))}$"):
                _run_columns(compiled, strategy, placements)
            continue
        columns = _run_columns(compiled, strategy, placements)
        if columns is not None:
            assert columns.as_dict() == expected, spec


@given(traces(), st.sampled_from([60.0, 240.0, 1000.0]))
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_flows_traffic_on_columns_equals_the_call_by_call_one(
    calls: list[dict[str, Any]], every: float
) -> None:
    compiled = compile_trace(calls)
    for flow in compiled.flows.values():
        calls_of = compiled.subset(i for i, f in enumerate(compiled.flow) if f == flow)
        depth = max(len(compiled.shapes[s].chain) for s in calls_of.shape)
        columns = _traffic_columns(calls_of, every, depth)
        rows = _traffic_rows(calls_of.rows, every, depth)
        assert columns is not None
        assert columns == rows
        # (and in the same order: most_common breaks ties by it)
        assert list(columns.groups.items()) == list(rows.groups.items())
        assert [list(c.items()) for c in columns.tokens] == [list(c.items()) for c in rows.tokens]


def test_the_column_replay_runs_on_the_usual_trace() -> None:
    """A support flow whose layers are each marked alike in every call: the column path replays
    it (the tests above would hold vacuously if it never did)."""
    calls = [
        {
            "timestamp": START + 37.0 * i,
            "flow": "support",
            "model": "claude-sonnet-4-5",
            "layers": [
                {"key": "system", "tokens": 2_000, "ttl": "1h"},
                {"key": f"customer/{i % 7}", "tokens": 900, "ttl": "5m"},
            ],
            "input_tokens": 100,
            "output_tokens": 200,
        }
        for i in range(500)
    ]
    compiled = compile_trace(calls)
    placements = _placements(compiled)
    for spec in ["current", "none", "advised", "ttl=1h", "layers=0:1h"]:
        strategy = Strategy.parse(spec)
        columns = _run_columns(compiled, strategy, placements)
        assert columns is not None, spec
        assert columns.as_dict() == _run(compiled, strategy, compiled.t[-1], placements).as_dict()
    current = _run_columns(compiled, Strategy.current(), None)
    assert current is not None
    assert current.hit_ratio is not None
    assert current.hit_ratio > 0.5


def test_a_breakpoint_under_the_minimum_does_not_stop_the_column_replay() -> None:
    """A first layer under the model's minimum, marked in every other call only: it is never
    cached either way, so the column path still replays the trace (and agrees)."""
    calls = [
        {
            "timestamp": START + 50.0 * i,
            "model": "claude-sonnet-4-5",
            "layers": [
                {"key": "preamble", "tokens": 300, "ttl": "1h" if i % 2 else None},
                {"key": "system", "tokens": 2_000, "ttl": "1h"},
                {"key": f"customer/{i % 5}", "tokens": 900, "ttl": "5m"},
            ],
        }
        for i in range(200)
    ]
    compiled = compile_trace(calls)
    columns = _run_columns(compiled, Strategy.current())
    assert columns is not None
    assert columns.as_dict() == _run(compiled, Strategy.current(), compiled.t[-1]).as_dict()


def test_one_flows_calls_are_not_judged_by_another_flows() -> None:
    """An OpenAI flow beside an Anthropic one: the Anthropic flow's calls alone still replay on
    columns (advise's replays and simulate(flow=) take a flow's calls)."""
    calls = [
        {
            "timestamp": START + 30.0 * i,
            "flow": "chat" if i % 2 else "search",
            "provider": "anthropic" if i % 2 else "openai",
            "model": "claude-sonnet-4-5" if i % 2 else "gpt-5.6",
            "layers": [{"key": "system", "tokens": 2_000, "ttl": "5m" if i % 2 else None}],
        }
        for i in range(60)
    ]
    compiled = compile_trace(calls)
    assert _run_columns(compiled, Strategy.current()) is None  # (the OpenAI calls)
    chat = compiled.subset(i for i, f in enumerate(compiled.flow) if f == compiled.flows["chat"])
    columns = _run_columns(chat, Strategy.current())
    assert columns is not None
    assert columns.as_dict() == _run(chat, Strategy.current(), chat.t[-1]).as_dict()


@pytest.mark.parametrize(
    ("change", "spec"),
    [
        ({"ttft_ms": 800}, "current"),  # writes readable only when the response starts
        ({}, "current+warm=4m"),
        ({}, "current+miss_aware"),
        ({"provider": "openai", "model": "gpt-5.6", "ttl": None}, "current"),
        ({"last_only": True}, "layers=-1:5m"),  # a conversation's newest turn, read through the lookback
    ],
)
def test_a_trace_the_columns_cannot_replay_exactly_is_left_to_the_reference(
    change: dict[str, Any], spec: str
) -> None:
    calls = []
    for i in range(40):
        turns = 1 + i % 4
        layers = [{"key": "system", "tokens": 1_500, "ttl": change.get("ttl", "5m")}]
        layers += [{"key": f"turn{k}", "tokens": 400} for k in range(turns)]
        call: dict[str, Any] = {
            "timestamp": START + 20.0 * i,
            "flow": "chat",
            "model": "claude-sonnet-4-5",
            "layers": layers,
        }
        call.update({k: v for k, v in change.items() if k in ("ttft_ms", "provider", "model")})
        calls.append(call)
    compiled = compile_trace(calls)
    strategy = Strategy.parse(spec)
    assert _run_columns(compiled, strategy, None) is None
    expected = _run(compiled, strategy, compiled.t[-1]).as_dict()
    assert simulate(calls, [strategy]).results[0].as_dict() == expected


def test_a_call_too_large_for_64_bit_sums_is_left_to_the_reference() -> None:
    calls = [
        {
            "timestamp": START + 60.0 * i,
            "model": "claude-sonnet-4-5",
            "layers": [{"key": "system", "tokens": 2_000, "ttl": "5m"}],
        }
        for i in range(30)
    ]
    calls[7]["output_tokens"] = (1 << 64) - 1
    compiled = compile_trace(calls)
    assert _run_columns(compiled, Strategy.current()) is None
    result = simulate(calls, ["current"])["current"]
    assert result.output_tokens == (1 << 64) - 1
    assert advise(calls).flows[0].calls == 30


def test_another_flows_counts_past_64_bits_leave_a_flows_column_replay_alone() -> None:
    """A flow whose layers' tokens add up past int64 beside an ordinary one: the ordinary flow's
    calls replay on columns, and simulate and advise run (the shapes' arrays, shared by the
    trace's flows, do not overflow)."""
    calls = [
        {
            "timestamp": START + 60.0 * i,
            "flow": "huge" if i % 2 else "chat",
            "model": "claude-sonnet-4-5",
            "layers": [
                {"key": f"a{i % 2}", "tokens": 2**62 if i % 2 else 2_000, "ttl": "5m"},
                {"key": f"b{i % 2}", "tokens": 2**62 if i % 2 else 900, "ttl": "5m"},
            ],
        }
        for i in range(40)
    ]
    compiled = compile_trace(calls)
    chat = compiled.subset(i for i, f in enumerate(compiled.flow) if f == compiled.flows["chat"])
    columns = _run_columns(chat, Strategy.current())
    assert columns is not None
    assert columns.as_dict() == _run(chat, Strategy.current(), chat.t[-1]).as_dict()
    assert simulate(calls, ["current"], flow="chat")["current"].cache_read_tokens == 19 * 2_900
    assert {f.flow for f in advise(calls).flows} == {"chat", "huge"}


@pytest.fixture
def without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on an install without the ``simulate`` extra."""
    monkeypatch.setattr(simulate_module, "np", None)
    monkeypatch.setattr(advise_module, "np", None)


@given(traces())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_simulate_and_advise_say_the_same_without_numpy(calls: list[dict[str, Any]]) -> None:
    strategies = applicable(STRATEGIES, calls)
    with pytest.MonkeyPatch.context() as patch:
        expected_advice = advise(calls).as_dict()
        expected = simulate(calls, strategies).as_dict()
        patch.setattr(simulate_module, "np", None)
        patch.setattr(advise_module, "np", None)
        assert advise(calls).as_dict() == expected_advice
        assert simulate(calls, strategies).as_dict() == expected


def applicable(strategies: list[str], calls: list[dict[str, Any]]) -> list[str]:
    """The strategies that name a layer some call has (simulate refuses the others)."""
    deepest = max(len(c["layers"]) for c in calls)
    out = []
    for name in strategies:
        marks = Strategy.parse(name).marks
        if not isinstance(marks, dict) or any(0 <= k < deepest or 0 < -k <= deepest for k in marks):
            out.append(name)
    return out


def test_the_simulate_command_runs_without_numpy(without_numpy: None, tmp_path: Path) -> None:
    calls = [
        {
            "timestamp": START + 60.0 * i,
            "model": "claude-sonnet-4-5",
            "layers": [{"key": "system", "tokens": 2_000, "ttl": "5m"}],
        }
        for i in range(30)
    ]
    result = simulate(calls, ["current", "none"])
    assert result["current"].cache_read_tokens == 29 * 2_000
    assert result["none"].cache_read_tokens == 0


# -- the trace file's decoder ------------------------------------------------------------------------


_ODD_LINES = [
    b"",  # blank
    b"   \r",
    b'{"timestamp": "2026-01-01T00:10:00Z", "model": "claude-sonnet-4-5"}',  # a time as text
    b'{"timestamp": 1767226300, "flow": "chat", "ttft_ms": 250, "model": "claude-sonnet-4-5", "layers": []}',
    b'{"timestamp": 1767226300.5, "user": "u1", "scope": "org-1", "model": "claude-sonnet-4-5",'
    b' "layers": [{"key": "system", "tokens": 2000, "ttl": "1h", "blocks": 3}]}',
    b'{"timestamp": 1767226301, "provider": "openai", "model": "gpt-5.6", "layers": [{"key": "p", "tokens": 1100}]}',
    b'{"timestamp": 1767226303, "model": "claude-sonnet-4-5", "warm": true, "output_tokens": 12}',
    b'{"timestamp": 1767226304, "model": "claude-sonnet-4-5", "output_tokens": 18446744073709551615}',
]
_BAD_LINES = [
    (b'{"timestamp": 1767225600, "flow": "", "model": "claude-sonnet-4-5"}', "flow must be"),
    (b'{"timestamp": 1767225600, "scope": "", "model": "claude-sonnet-4-5"}', "scope must be"),
    (b'{"timestamp": 1767225600, "user": 5, "model": "claude-sonnet-4-5"}', "user must be"),
    (
        b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "output_tokens": 18446744073709551616}',
        "output_tokens",
    ),
    (
        b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "input_tokens": 99999999999999999999999}',
        "input_tokens",
    ),
    (
        b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "layers": [{"key": "k", "tokens": 1.5}]}',
        "tokens",
    ),
    (
        b'{"timestamp": 1767225600, "provider": "openai", "model": "gpt-4o", "layers": [{"key": "k", "tokens": 9, "ttl": "1h"}]}',
        "ttl",
    ),
    (b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "colour": "red"}', "unknown field"),
    (b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5"', "not JSON"),
    (b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "ttft_ms": -1}', "ttft_ms"),
    (
        b'{"timestamp": 1767225600, "model": "claude-sonnet-4-5", "layers": [{"key": "system", "tokens": 7}]}',
        "a key names one content",
    ),
    (b'{"timestamp": 1767225600, "model": "no-such-model-anywhere"}', "no prices"),
    (b'{"model": "claude-sonnet-4-5"}', "no timestamp"),
]


def _file_lines(calls: list[dict[str, Any]], odd: list[bytes]) -> list[bytes]:
    lines = [orjson.dumps(c) for c in calls]
    for i, line in enumerate(odd):
        lines.insert((i * 7) % (len(lines) + 1), line)
    return lines


def _same(a: Compiled, b: Compiled) -> None:
    """The same calls (flows by name: their ids are in the order first met)."""
    assert [_row(r, a) for r in a.rows] == [_row(r, b) for r in b.rows]
    assert sorted(a.flows) == sorted(b.flows)


def _row(r: Any, compiled: Compiled) -> bytes:
    x = r.shape
    shape = {k: getattr(x, k) for k in x.__slots__ if k not in ("rates", "chain")}  # (ids: in the order met)
    own = {k: getattr(r, k) for k in r.__slots__ if k not in ("shape", "flow")}
    return orjson.dumps({**own, **shape, "flow": compiled.flow_names[r.flow], "rates": x.rates.as_dict()})


@given(
    traces(),
    st.lists(st.sampled_from(_ODD_LINES), max_size=6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 7, 200, 1 << 22]),
)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_a_trace_file_compiles_as_its_calls_do(
    tmp_path: Path,
    calls: list[dict[str, Any]],
    odd: list[bytes],
    bom: bool,
    crlf: bool,
    gzipped: bool,
    chunk: int,
) -> None:
    """Read from its file (plain or gzip, a chunk of bytes at a time: lines cross the chunks'
    edges; decoded by msgspec, odd lines through trace_call) a trace compiles to what
    :class:`Trace` reading it line by line with trace_call compiles to."""
    lines = _file_lines(calls, odd)
    data = (b"\xef\xbb\xbf" if bom else b"") + (b"\r\n" if crlf else b"\n").join(lines)
    if not crlf:  # (the CRLF files end without a newline after their last line)
        data += b"\n"
    path = tmp_path / ("trace.jsonl.gz" if gzipped else "trace.jsonl")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled_module, "_CHUNK", chunk)
        _same(compile_trace(path), compile_trace(Trace.read(path)))


def test_a_damaged_gzip_trace_is_named_after_its_last_line_read(tmp_path: Path) -> None:
    calls = [
        {"timestamp": START + i, "model": "claude-sonnet-4-5", "layers": [{"key": "system", "tokens": 2_000}]}
        for i in range(5_000)
    ]
    data = gzip.compress(b"".join(orjson.dumps(c) + b"\n" for c in calls))
    path = tmp_path / "trace.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}: cannot be read \(") as at_once:
        compile_trace(path)  # (its first chunk cannot be read: no line was)
    assert "after line" not in str(at_once.value)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled_module, "_CHUNK", 10_000)
        with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}: cannot be read after line \d+ \("):
            compile_trace(path)


@pytest.mark.parametrize(("bad", "says"), _BAD_LINES)
@pytest.mark.parametrize("at", [0, 5, 30])
def test_a_bad_line_in_a_trace_file_is_named_as_trace_call_names_it(
    tmp_path: Path, bad: bytes, says: str, at: int
) -> None:
    calls = [
        {
            "timestamp": START,  # (one time: the reference, which puts calls in time order, meets them in file order)
            "model": "claude-sonnet-4-5",
            "layers": [{"key": "system", "tokens": 2_000, "ttl": "5m"}],
        }
        for _ in range(40)
    ]
    lines = [orjson.dumps(c) for c in calls]
    lines.insert(at, bad)
    path = tmp_path / "trace.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises((TraceError, ValueError)) as found:
        compile_trace(path)
    # (a key's other size is told at the second of the two lines, whichever is the bad one)
    line = at + 2 if at == 0 and says == "a key names one content" else at + 1
    assert str(found.value).startswith(f"{path}:{line}: "), str(found.value)
    assert says in str(found.value)
    with pytest.raises((TraceError, ValueError)) as reference:
        compile_trace(Trace.read(path))
    mine, theirs = str(found.value).split(": ", 1)[1], str(reference.value).split(": ", 1)[1]
    assert mine == theirs


def test_a_trace_file_out_of_order_is_put_in_time_order(tmp_path: Path) -> None:
    calls = [
        {
            "timestamp": START + t,
            "model": "claude-sonnet-4-5",
            "layers": [{"key": "system", "tokens": 2_000, "ttl": "5m"}],
        }
        for t in (30.0, 10.0, 20.0, 10.0)
    ]
    path = tmp_path / "trace.jsonl"
    path.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in calls))
    compiled = compile_trace(path)
    assert compiled.t == [START + 10.0, START + 10.0, START + 20.0, START + 30.0]
    _same(compiled, compile_trace(Trace.read(path)))
