"""The provider cache state machine: one test per rule, each with a positive and a negative case."""

from __future__ import annotations

import threading

import pytest

from cachebench.cachemodel import CacheModel, CacheRequest, CacheResult, CacheRuleError, Knobs, Segment

SONNET = "claude-sonnet-4-5"  # minimum 1024
OPUS_45 = "claude-opus-4-5"  # minimum 4096


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def seg(name: str, tokens: int, ttl: str | None = None, kind: str = "text") -> Segment:
    return Segment(name.encode(), tokens, ttl, kind)


def req(
    *segments: Segment, family: str = "anthropic", model: str = SONNET, scope: str = "key-a", **kw: object
) -> CacheRequest:
    return CacheRequest(family, model, scope, tuple(segments), **kw)  # type: ignore[arg-type]


def counts(r: CacheResult) -> tuple[int, int, int]:
    return r.input_tokens, r.cache_read_tokens, r.cache_write_tokens


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model(clock: Clock) -> CacheModel:
    return CacheModel(clock=clock)


# -- Anthropic / Bedrock -----------------------------------------------------------------------


def test_minimum_prefix_per_model(model: CacheModel) -> None:
    """Below the model's minimum a breakpoint caches nothing (both counters 0); at or above it,
    it writes. The minimum is per model (Opus 4.5: 4096, Sonnet 4.5: 1024) and overridable."""
    assert model.min_tokens("anthropic", OPUS_45) == 4096
    assert model.min_tokens("anthropic", SONNET) == 1024
    assert model.min_tokens("anthropic", "claude-unknown-9") == 1024
    below = req(seg("sys", 3000, "5m"), model=OPUS_45)
    assert counts(model.handle(below)) == (3000, 0, 0)
    assert counts(model.handle(below)) == (3000, 0, 0)
    assert counts(model.handle(req(seg("sys", 3000, "5m")))) == (0, 0, 3000)
    # a first breakpoint below the minimum is ignored; the second one covers its range
    two = req(seg("a", 500, "5m"), seg("b", 700, "5m"), seg("c", 10))
    assert counts(model.handle(two)) == (10, 0, 1200)
    custom = CacheModel(min_tokens={SONNET: 5000, "gemini": 10})
    assert custom.min_tokens("anthropic", SONNET) == 5000
    assert custom.min_tokens("gemini", "gemini-2.5-flash") == 10
    assert counts(custom.handle(req(seg("sys", 3000, "5m")))) == (3000, 0, 0)


def test_at_most_four_breakpoints(model: CacheModel) -> None:
    """Four breakpoints are accepted; a fifth (explicit or the automatic one) is a 400
    ``too_many_breakpoints``. Automatic caching on an already-marked last block adds no slot."""
    four = [seg(f"s{i}", 400, "5m") for i in range(4)]
    assert model.handle(req(*four)).cache_write_tokens == 1600
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(*four, seg("s4", 400, "5m")))
    assert info.value.kind == "too_many_breakpoints"
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(*four, seg("tail", 10), automatic="5m"))
    assert info.value.kind == "too_many_breakpoints"
    assert model.handle(req(*four, automatic="5m")).cache_read_tokens == 1600


def test_ttl_order_and_values(model: CacheModel) -> None:
    """A 1h breakpoint may precede a 5m one, not follow it (``invalid_ttl_order``); a ttl other
    than 5m/1h is ``invalid_ttl``."""
    ok = model.handle(req(seg("sys", 2000, "1h"), seg("user", 500, "5m")))
    assert dict(ok.cache_write_by_ttl) == {"1h": 2000, "5m": 500}
    assert ok.cache_write_1h_tokens == 2000
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(seg("sys", 2000, "5m"), seg("user", 500, "1h")))
    assert info.value.kind == "invalid_ttl_order"
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(seg("sys", 2000, "10m")))
    assert info.value.kind == "invalid_ttl"


def test_automatic_cache_control(model: CacheModel) -> None:
    """Top-level ``cache_control`` marks the last segment (Anthropic API only); without it and
    without markers nothing is cached; Bedrock rejects it."""
    prompt = (seg("sys", 1500), seg("user", 600))
    assert counts(model.handle(req(*prompt))) == (2100, 0, 0)
    auto = model.handle(req(*prompt, automatic="1h"))
    assert counts(auto) == (0, 0, 2100)
    assert auto.cache_write_1h_tokens == 2100
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(*prompt, family="bedrock", model="anthropic.claude-sonnet-4-5-v1:0", automatic="5m"))
    assert info.value.kind == "automatic_unsupported"


def test_ttl_expiry_refresh_and_lifetime_from_request_start(model: CacheModel, clock: Clock) -> None:
    """A 5m entry lives 300 s from the start of the request that wrote it (not from when its
    response started); every read restarts the timer; a 1h entry survives a 5-minute gap."""
    five = req(seg("sys", 2000, "5m"))
    result = model.begin(five)
    clock.t += 100  # a slow first token: the lifetime still runs from the request's start
    model.started(result.ticket)
    clock.t += 200
    assert model.handle(five).cache_read_tokens == 2000  # 300 s after the write: refreshed
    clock.t += 299
    assert model.handle(five).cache_read_tokens == 2000
    clock.t += 301
    assert counts(model.handle(five)) == (0, 0, 2000)  # idle 301 s: expired, written again
    hour = req(seg("sys-1h", 2000, "1h"))
    model.handle(hour)
    clock.t += 301
    assert model.handle(hour).cache_read_tokens == 2000
    clock.t += 3601
    assert model.handle(hour).cache_read_tokens == 0


def test_lookback_twenty_positions(model: CacheModel) -> None:
    """A breakpoint finds an entry at most 20 positions before it; 21 is a miss."""
    model.handle(req(seg("sys", 2000), seg("u0", 10, "5m")))
    base = [seg("sys", 2000), seg("u0", 10)]  # the same bytes, the marker moved on
    grown = [seg(f"m{i}", 10) for i in range(1, 21)]
    assert model.handle(req(*base, *grown[:-1], seg("m20", 10, "5m"))).cache_read_tokens == 2010
    far = [seg(f"n{i}", 10) for i in range(1, 22)]
    far[-1] = seg("n21", 10, "5m")
    assert counts(model.handle(req(*base, *far))) == (0, 0, 2220)


def test_lookback_tool_runs_count_as_one_position(model: CacheModel) -> None:
    """Consecutive tool_use/tool_result blocks are one lookback position: 30 of them in a row
    stay within reach; 30 text blocks do not."""
    model.handle(req(seg("sys", 2000), seg("u0", 10, "5m")))
    base = [seg("sys", 2000), seg("u0", 10)]  # the same bytes, the marker moved on
    tools = [seg(f"t{i}", 10, kind="tool_use" if i % 2 else "tool_result") for i in range(30)]
    assert model.handle(req(*base, *tools, seg("q", 10, "5m"))).cache_read_tokens == 2010
    texts = [seg(f"x{i}", 10) for i in range(30)]
    assert model.handle(req(*base, *texts, seg("q", 10, "5m"))).cache_read_tokens == 0


def test_writes_billed_only_past_the_highest_hit(model: CacheModel) -> None:
    """A hit on the shared prefix is read; only the tokens from it to the last breakpoint are
    written (at that breakpoint's ttl); tokens after the last breakpoint are plain input."""
    sys = seg("sys", 2000, "1h")
    cold = model.handle(req(sys, seg("alice", 500, "5m"), seg("q1", 30), overhead_tokens=7))
    assert counts(cold) == (37, 0, 2500)
    assert dict(cold.cache_write_by_ttl) == {"1h": 2000, "5m": 500}
    warm = model.handle(req(sys, seg("bob", 800, "5m"), seg("q2", 40), overhead_tokens=7))
    assert counts(warm) == (47, 2000, 800)
    assert dict(warm.cache_write_by_ttl) == {"5m": 800}
    assert warm.total_input_tokens == 2847
    assert warm.writes_reported


def test_pending_entries_readable_only_after_started(model: CacheModel) -> None:
    """Parallel cold calls all write: an entry is readable only once its response started;
    ``started`` is idempotent and ignores unknown tickets."""
    prompt = req(seg("sys", 2000, "5m"))
    first = model.begin(prompt)
    second = model.begin(prompt)
    assert (first.cache_write_tokens, second.cache_write_tokens) == (2000, 2000)
    model.started(first.ticket)
    model.started(first.ticket)
    model.started(999_999)
    model.started(second.ticket)
    assert model.handle(prompt).cache_read_tokens == 2000
    assert len(model) == 1


def test_abort_drops_pending_entries(model: CacheModel) -> None:
    """A response that failed before starting leaves nothing behind; one that started does."""
    prompt = req(seg("sys", 2000, "5m"))
    failed = model.begin(prompt)
    model.abort(failed.ticket)
    model.started(failed.ticket)
    assert model.handle(prompt).cache_write_tokens == 2000
    assert model.handle(prompt).cache_read_tokens == 2000


def test_scope_per_api_key_model_and_family(model: CacheModel) -> None:
    """Caches never cross API keys, models or providers; the same key and model share."""
    sys = seg("sys", 2000, "5m")
    model.handle(req(sys, scope="key-a"))
    assert model.handle(req(sys, scope="key-a")).cache_read_tokens == 2000
    assert model.handle(req(sys, scope="key-b")).cache_read_tokens == 0
    assert model.handle(req(sys, model="claude-sonnet-4-6")).cache_read_tokens == 0
    assert model.handle(req(sys, family="bedrock")).cache_read_tokens == 0


def test_bedrock_follows_anthropic_rules(model: CacheModel) -> None:
    """Claude on Bedrock counts exactly as the Anthropic API (minimums, breakpoint limit);
    Amazon Nova's minimum is 1000 tokens."""
    claude = "anthropic.claude-opus-4-5-20251101-v1:0"
    assert model.min_tokens("bedrock", claude) == 4096
    assert model.min_tokens("bedrock", "amazon.nova-pro-v1:0") == 1000
    prompt = (seg("sys", 5000, "1h"), seg("u", 300, "5m"), seg("q", 20))
    api = [counts(model.handle(req(*prompt, model=OPUS_45))) for _ in range(2)]
    bedrock = [counts(model.handle(req(*prompt, family="bedrock", model=claude))) for _ in range(2)]
    assert api == bedrock == [(20, 0, 5300), (20, 5300, 0)]
    assert counts(model.handle(req(seg("s", 3000, "5m"), family="bedrock", model=claude))) == (3000, 0, 0)
    with pytest.raises(CacheRuleError):
        model.begin(req(*[seg(f"s{i}", 10, "5m") for i in range(5)], family="bedrock", model=claude))


# -- OpenAI ------------------------------------------------------------------------------------


def oa(*segments: Segment, model: str = "gpt-4.1", **kw: object) -> CacheRequest:
    return req(*segments, family="openai", model=model, **kw)


def test_openai_implicit_1024_and_128_steps(model: CacheModel) -> None:
    """OpenAI caches the whole prompt by itself; a read counts from 1024 tokens and comes in
    128-token steps; writes are free and not reported."""
    small = oa(seg("p", 1000))
    model.handle(small)
    assert counts(model.handle(small)) == (1000, 0, 0)
    prompt = oa(seg("sys", 1200), seg("q", 300), overhead_tokens=5)
    first = model.handle(prompt)
    assert counts(first) == (1505, 0, 0)
    assert not first.writes_reported
    again = model.handle(prompt)
    assert counts(again) == (1505 - 1408, 1408, 0)
    assert again.total_input_tokens == 1505
    # a new last turn reads the longest cached boundary: 1200 -> 1152
    assert model.handle(oa(seg("sys", 1200), seg("q2", 300))).cache_read_tokens == 1152


def test_openai_implicit_end(model: CacheModel) -> None:
    """Only the first ``implicit_end`` segments are cached; the rest is never read."""
    prompt = oa(seg("sys", 1100), seg("tail", 900), implicit_end=1)
    model.handle(prompt)
    assert model.handle(prompt).cache_read_tokens == 1024
    whole = oa(seg("sys", 1100), seg("tail", 900), implicit_end=2)
    model.handle(whole)
    assert model.handle(whole).cache_read_tokens == 1920


def test_openai_routing_key(model: CacheModel) -> None:
    """``prompt_cache_key`` is part of the cache key: the same key hits, another one misses."""
    model.handle(oa(seg("sys", 2000), routing_key="user-1"))
    assert model.handle(oa(seg("sys", 2000), routing_key="user-1")).cache_read_tokens == 1920
    assert model.handle(oa(seg("sys", 2000), routing_key="user-2")).cache_read_tokens == 0


def test_openai_retention(model: CacheModel, clock: Clock) -> None:
    """In-memory entries live 10 min idle and 1 h at most; ``24h`` keeps them a day; GPT-5.5+
    defaults to 24h; an unknown retention is a 400."""
    mem = oa(seg("sys", 2048))
    model.handle(mem)
    clock.t += 599
    assert model.handle(mem).cache_read_tokens == 2048
    clock.t += 601
    assert model.handle(mem).cache_read_tokens == 0
    for _ in range(7):  # read every 500 s: the entry still dies 1 h after it was written
        clock.t += 500
        assert model.handle(mem).cache_read_tokens == 2048
    clock.t += 500
    assert model.handle(mem).cache_read_tokens == 0
    day = oa(seg("day", 2048), retention="24h")
    model.handle(day)
    clock.t += 3 * 3600
    assert model.handle(day).cache_read_tokens == 2048
    new_model = oa(seg("sys", 2048), model="gpt-5.5")
    model.handle(new_model)
    clock.t += 3600
    assert model.handle(new_model).cache_read_tokens == 2048
    with pytest.raises(CacheRuleError) as info:
        model.begin(oa(seg("sys", 2048), retention="forever"))
    assert info.value.kind == "invalid_retention"


def test_openai_explicit_gpt56(model: CacheModel) -> None:
    """GPT-5.6+: breakpoints with ttl 30m/12h plus the implicit one at ``implicit_end``; reads
    are exact (no 128 steps); writes are reported; at most 4 entries written per request."""
    turn1 = (seg("sys", 1500, "12h"), seg("u1", 100))
    first = model.handle(oa(*turn1, model="gpt-5.6", explicit=True))
    assert first.writes_reported
    assert counts(first) == (0, 0, 1600)
    assert dict(first.cache_write_by_ttl) == {"12h": 1500, "30m": 100}
    turn2 = model.handle(oa(*turn1, seg("a1", 50), seg("u2", 70), model="gpt-5.6", explicit=True))
    assert counts(turn2) == (0, 1600, 120)
    many = [seg(f"b{i}", 1100, "30m") for i in range(6)]
    capped = model.handle(oa(*many, model="gpt-5.6", explicit=True))
    assert capped.cache_write_tokens == 6600
    assert model.handle(oa(*many[:2], model="gpt-5.6", explicit=True)).cache_read_tokens == 0
    assert model.handle(oa(*many[:3], model="gpt-5.6", explicit=True)).cache_read_tokens == 3300
    with pytest.raises(CacheRuleError) as info:
        model.begin(oa(seg("sys", 1500, "5m"), model="gpt-5.6", explicit=True))
    assert info.value.kind == "invalid_ttl"


# -- Gemini ------------------------------------------------------------------------------------


def test_gemini_implicit_minimums(model: CacheModel, clock: Clock) -> None:
    """Gemini caches implicitly from 2048 tokens on 2.5 and 4096 on 3.x, reads exactly, does
    not report writes, and drops an entry after 5 idle minutes."""
    assert model.min_tokens("gemini", "gemini-2.5-flash") == 2048
    assert model.min_tokens("gemini", "models/gemini-3-pro") == 4096
    ok = req(seg("sys", 2100), seg("q", 50), family="gemini", model="gemini-2.5-flash")
    assert not model.handle(ok).writes_reported
    assert counts(model.handle(ok)) == (0, 2150, 0)
    short = req(seg("short", 2000), family="gemini", model="gemini-2.5-flash")
    model.handle(short)
    assert model.handle(short).cache_read_tokens == 0
    three = req(seg("sys", 3000), family="gemini", model="gemini-3-pro")
    model.handle(three)
    assert model.handle(three).cache_read_tokens == 0
    clock.t += 301
    assert model.handle(ok).cache_read_tokens == 0


# -- knobs, bounds, protocol -------------------------------------------------------------------


def hits(model: CacheModel, scope: str, n: int) -> list[bool]:
    prompt = req(seg("sys", 2000, "5m"), scope=scope)
    model.handle(prompt)
    return [model.handle(prompt).cache_read_tokens > 0 for _ in range(n)]


def test_miss_rate_is_seeded_and_deterministic() -> None:
    """With ``miss_rate`` a call reads nothing with that probability, from an RNG seeded by the
    seed and scope: the same seed repeats the same pattern, another seed differs, 0 never misses."""
    pattern = [hits(CacheModel(knobs=Knobs(miss_rate=0.5, seed=7)), "k", 40) for _ in range(2)]
    assert pattern[0] == pattern[1]
    assert 5 < pattern[0].count(False) < 35
    assert hits(CacheModel(knobs=Knobs(miss_rate=0.5, seed=8)), "k", 40) != pattern[0]
    assert all(hits(CacheModel(), "k", 40))
    model = CacheModel()
    model.set_knobs(Knobs(miss_rate=1.0), scope="flaky")
    assert model.knobs_for("flaky").miss_rate == 1.0
    assert model.knobs_for("other") is model.knobs
    assert not any(hits(model, "flaky", 5))
    assert all(hits(model, "steady", 5))


def test_max_entries_evicts_least_recently_used(clock: Clock) -> None:
    """The cache holds at most ``max_entries``; the least recently used entry goes first, and
    a read counts as a use."""
    model = CacheModel(clock=clock, max_entries=2)
    a, b, c = (req(seg(name, 2000, "5m")) for name in "abc")
    model.handle(a)
    model.handle(b)
    assert model.handle(a).cache_read_tokens == 2000
    model.handle(c)
    assert len(model) == 2
    assert model.handle(a).cache_read_tokens == 2000
    assert model.handle(b).cache_read_tokens == 0


def test_reset_and_unknown_family(model: CacheModel) -> None:
    """``reset`` forgets every entry; an unknown family is rejected."""
    prompt = req(seg("sys", 2000, "5m"))
    model.handle(prompt)
    model.reset()
    assert len(model) == 0
    assert model.handle(prompt).cache_read_tokens == 0
    with pytest.raises(CacheRuleError) as info:
        model.begin(req(seg("sys", 2000), family="mistral"))
    assert info.value.kind == "unknown_family"


def test_threads_share_one_consistent_cache() -> None:
    """Concurrent callers never corrupt the state: every thread's second call reads."""
    model = CacheModel()
    results: list[int] = []

    def run(i: int) -> None:
        prompt = req(seg("sys", 2000, "5m"), seg(f"user{i}", 100, "5m"))
        model.handle(prompt)
        for _ in range(50):
            results.append(model.handle(prompt).cache_read_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2100] * 400


# -- review additions: caps, Nova, TTL on read, knobs, wording -----------------------------------


def test_openai_explicit_matches_at_most_80_breakpoints(model: CacheModel) -> None:
    """GPT-5.6+: 80 ttl-marked segments are accepted; an 81st is ``too_many_breakpoints``,
    worded with OpenAI's own marker name."""
    eighty = [seg(f"p{i}", 20, "30m") for i in range(80)]
    assert model.handle(oa(*eighty, model="gpt-5.6", explicit=True)).cache_write_tokens == 1600
    with pytest.raises(CacheRuleError) as info:
        model.begin(oa(*eighty, seg("p80", 20, "30m"), model="gpt-5.6", explicit=True))
    assert info.value.kind == "too_many_breakpoints"
    assert str(info.value) == (
        "A maximum of 80 content parts with prompt_cache_breakpoint may be provided. Found 81."
    )


def test_nova_minimum_is_1000_tokens_through_handle(model: CacheModel) -> None:
    """Amazon Nova on Bedrock: a 999-token checkpoint caches nothing (both counters 0, twice);
    a 1000-token one is written, then read."""
    nova = "amazon.nova-pro-v1:0"
    short = req(seg("sys", 999, "5m"), family="bedrock", model=nova)
    assert [counts(model.handle(short)) for _ in range(2)] == [(999, 0, 0)] * 2
    enough = req(seg("sys2", 1000, "5m"), family="bedrock", model=nova)
    assert [counts(model.handle(enough)) for _ in range(2)] == [(0, 0, 1000), (0, 1000, 0)]


def test_a_read_keeps_the_entrys_own_ttl(model: CacheModel, clock: Clock) -> None:
    """A 1h marker that reads a 5m entry refreshes it for 5 minutes, not an hour (301 s later it
    is gone); a 5m marker that reads a 1h entry leaves it an hour-long entry."""
    model.handle(req(seg("sys", 2000, "5m")))
    assert model.handle(req(seg("sys", 2000, "1h"))).cache_read_tokens == 2000
    clock.t += 301
    assert model.handle(req(seg("sys", 2000, "1h"))).cache_read_tokens == 0
    model.handle(req(seg("long", 2000, "1h")))
    assert model.handle(req(seg("long", 2000, "5m"))).cache_read_tokens == 2000
    clock.t += 301
    assert model.handle(req(seg("long", 2000, "5m"))).cache_read_tokens == 2000


@pytest.mark.parametrize(
    "fields",
    [
        {"latency_ms": -1},
        {"ttft_ms": float("nan")},
        {"latency_ms": float("inf")},
        {"error_rate": "0.5"},
        {"error_rate": 1.5},
        {"miss_rate": -0.1},
        {"miss_rate": float("nan")},
        {"error_status": 200},
        {"error_status": "529"},
        {"error_status": True},
        {"seed": "7"},
        {"seed": 1.5},
    ],
)
def test_knobs_reject_values_no_run_could_have(fields: dict[str, object]) -> None:
    """Knobs check themselves when built: a negative or non-finite delay, a rate outside
    [0, 1] or not a number, a status other than 429/500/529, a non-integer seed: ValueError."""
    with pytest.raises(ValueError):
        Knobs(**fields)  # type: ignore[arg-type]


def test_knobs_accept_their_whole_range() -> None:
    """The edges of every range are accepted: 0 and 1 rates, zero delays, each status, a seed."""
    for status in (429, 500, 529):
        assert (
            Knobs(error_rate=1, miss_rate=0, latency_ms=0, error_status=status, seed=0).error_status == status
        )
    assert Knobs(error_rate=0.0, miss_rate=1.0, ttft_ms=12.5, seed=None).miss_rate == 1.0


def test_rule_errors_name_each_familys_marker(model: CacheModel) -> None:
    """Too many breakpoints and a bad TTL order are worded with the family's marker: Anthropic
    ``cache_control``, Bedrock ``cachePoint``; :meth:`CacheRuleError.worded` rewords them."""
    five = [seg(f"s{i}", 10, "5m") for i in range(5)]
    with pytest.raises(CacheRuleError) as api:
        model.begin(req(*five))
    assert str(api.value) == "A maximum of 4 blocks with cache_control may be provided. Found 5."
    with pytest.raises(CacheRuleError) as bedrock:
        model.begin(req(*five, family="bedrock"))
    assert str(bedrock.value) == "A maximum of 4 cachePoint blocks may be provided. Found 5."
    assert bedrock.value.worded("anthropic") == str(api.value)
    with pytest.raises(CacheRuleError) as order:
        model.begin(req(seg("a", 10, "5m"), seg("b", 10, "1h"), family="bedrock"))
    assert str(order.value) == "A ttl='1h' cachePoint must not come after a ttl='5m' one."
