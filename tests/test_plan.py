"""Breakpoint plans: layers, optimal placement (checked by brute force), and ``apply`` through
the real SDKs onto the emulator (the planned requests read what the plan says)."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config

import cachebench
from cachebench import facts
from cachebench.planner import Plan, Traffic, apply, plan
from cachebench.planner._markers import set_breakpoints, slots
from cachebench.planner._view import view
from cachebench.planner.placement import evaluate
from cachebench.providers import adapter_for
from cachebench.testing import CacheEmulator

TOOLS = [
    {
        "name": f"tool_{i}",
        "description": f"Tool {i}: looks up the customer's orders and returns them. " * 30,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    for i in range(3)
]
POLICY = "You are the support agent of a bicycle shop. Answer briefly and politely. " * 80
PROFILES = {
    "ann": "Customer Ann: road bikes, lives in Leeds, prefers e-mail, member since spring. " * 30,
    "bob": "Customer Bob: mountain bikes, lives in Bristol, prefers phone calls, new customer. " * 30,
}
QUESTIONS = ("Where is my order?", "Can I return the helmet?", "Do you fit tubeless tyres?")


def support_request(user: str, question: str, model: str = "claude-sonnet-5") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "tools": copy.deepcopy(TOOLS),
        "system": [{"type": "text", "text": POLICY}, {"type": "text", "text": PROFILES[user]}],
        "messages": [{"role": "user", "content": question}],
    }


def samples() -> list[dict[str, Any]]:
    return [support_request(u, q) for u in ("ann", "bob") for q in QUESTIONS]


def brute_force(requests: list[dict[str, Any]], traffic: Traffic | None = None) -> float:
    """The best saving over every placement of up to the provider's limit of breakpoints on
    every markable block of the request the plan is laid out on, with every allowed TTL order."""
    v = max((view(r) for r in requests), key=lambda v: v.turn_start)
    positions = [b.position for b in v.blocks if b.markable]
    ttls = facts.BREAKPOINT_TTLS[v.provider]
    best = 0.0
    for k in range(1, 5):
        for chosen in itertools.combinations(positions, k):
            for order in itertools.product(ttls, repeat=k):
                if list(order) != sorted(order, key=ttls.index):
                    continue
                best = max(best, evaluate(requests, list(zip(chosen, order, strict=True)), traffic))
    return best


# -- the marker walk agrees with the adapters --------------------------------------------------

BODIES = {
    "anthropic": support_request("ann", "hi")
    | {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "more"}]},
        ]
    },
    "bedrock": {
        "modelId": "us.anthropic.claude-sonnet-5-v1:0",
        "system": [{"text": POLICY}, {"cachePoint": {"type": "default"}}, {"text": "second"}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}]},
        "messages": [{"role": "user", "content": [{"text": "hi"}, {"text": "there"}]}],
    },
    "openai": {
        "model": "gpt-5.6",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "reasoning_effort": "low",
        "messages": [
            {"role": "system", "content": POLICY},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "ok", "name": "bot"},
            {"role": "user", "content": "c"},
        ],
    },
    "openai-responses": {
        "model": "gpt-5.6",
        "instructions": POLICY,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
    },
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_marker_walk_matches_the_adapter(name: str) -> None:
    """The planner's walk over a request finds one slot per block the adapter's
    ``parse_request`` emits, and setting markers on every markable slot gives a request whose
    breakpoints the adapter reads at exactly those positions, with the prefix bytes unchanged."""
    body = BODIES[name]
    provider = name.split("-")[0]
    adapter = adapter_for(provider)
    prompt = adapter.parse_request(body)
    found = slots(body, provider)
    assert len(found) == len(prompt.pairs)
    wanted = {i: facts.BREAKPOINT_TTLS[provider][-1] for i, s in enumerate(found) if s.how}
    assert wanted, "every body here has a markable block"
    marked = set_breakpoints(body, provider, wanted)
    again = adapter.parse_request(marked)
    assert [p for p, _ in again.marks if p in wanted] == sorted(wanted)
    assert again.pairs == prompt.pairs  # markers never change what is hashed
    assert (
        cachebench.fingerprint.key(again).cum[: len(prompt.pairs)]
        == cachebench.fingerprint.key(prompt._replace(marks=again.marks)).cum
    )


def test_apply_never_changes_its_input() -> None:
    """``apply`` returns a new request and leaves the one it was given as it was, markers
    included."""
    body = support_request("ann", "hi")
    body["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    before = copy.deepcopy(body)
    p = plan(samples())
    out = apply(body, p)
    assert body == before
    assert out is not body and out["system"] is not body["system"]


def test_cannot_mark_what_cannot_carry_a_marker() -> None:
    """OpenAI tools carry no marker: asking for one there is a clear error."""
    with pytest.raises(ValueError, match="cannot carry a cache marker"):
        set_breakpoints(BODIES["openai"], "openai", {1: "30m"})


# -- layers and the plan ----------------------------------------------------------------------


def test_layers_of_a_multi_tenant_flow() -> None:
    """Tools and the policy are shared by all six samples, each profile by three, each question
    is the newest turn: three layers, in that order."""
    p = plan(samples())
    kinds = [(layer.start, layer.end, layer.shared_by, layer.kind) for layer in p.layers]
    assert kinds == [(0, 3, 6, "shared"), (4, 4, 3, "partly shared"), (5, 5, 1, "newest turn")]


def test_plan_places_one_breakpoint_per_layer_and_says_why() -> None:
    """On the six samples the plan marks the end of the shared policy and the end of each
    customer's profile, each with its tokens, sharing and reads per write; the first sample
    writes both, the next two of the same customer read both, the first of the other
    customer reads the shared layer and writes its own."""
    p = plan(samples())
    assert [(bp.section, bp.index, bp.ttl) for bp in p.breakpoints] == [
        ("system", 0, "5m"),
        ("system", 1, "5m"),
    ]
    shared, profile = p.breakpoints
    assert (shared.shared_by, profile.shared_by) == (6, 3)
    # A read counts for the deepest entry it reads: the shared entry is written once and read
    # by Bob's first call; each profile entry is written once and read by two later calls.
    assert shared.reads_per_write == pytest.approx(1.0)
    assert profile.reads_per_write == pytest.approx(2.0)
    assert "shared by all 6 samples" in shared.why and "shared by 3 of 6" in profile.why
    ann, bob = view(samples()[0]).cum_tokens, view(samples()[3]).cum_tokens
    assert ann[3] == bob[3] and ann[4] != bob[4]  # the same tools and policy, profiles of their own
    assert p.reads == (0, ann[4], ann[4], ann[3], bob[4], bob[4])
    assert p.writes == (ann[4], 0, 0, bob[4] - bob[3], 0, 0)
    assert p.unit == "USD" and p.saving > 0
    assert "system block 0 (5m)" in str(p)


def test_plan_is_optimal_by_brute_force_without_traffic() -> None:
    """No placement of up to four breakpoints on any block, with any TTL order, saves more on
    the replayed samples than the plan's."""
    requests = samples()[:4]
    p = plan(requests)
    assert p.saving == pytest.approx(brute_force(requests))
    assert p.saving == pytest.approx(evaluate(requests, [(bp.position, bp.ttl) for bp in p.breakpoints]))


@pytest.mark.parametrize(
    "traffic",
    [Traffic(calls_per_hour=600, users=40), Traffic(calls_per_hour=2, users=500), Traffic(calls_per_hour=30)],
)
def test_plan_is_optimal_by_brute_force_with_traffic(traffic: Traffic) -> None:
    """With a traffic description the plan's expected saving per hour is the best of every
    placement; at two calls an hour a 1-hour TTL on the shared layer beats 5 minutes."""
    requests = samples()[:4]
    p = plan(requests, traffic)
    assert p.per_hour
    assert p.saving == pytest.approx(brute_force(requests, traffic))
    if traffic.calls_per_hour == 2:
        assert p.breakpoints and p.breakpoints[0].ttl == "1h"


def test_sparse_per_user_traffic_does_not_mark_the_user_layer() -> None:
    """At 2 calls an hour over 500 users a user's entry is almost never read again: the
    write premium is not recovered, so the plan leaves that layer unmarked."""
    p = plan(samples(), Traffic(calls_per_hour=2, users=500))
    assert [(bp.section, bp.index) for bp in p.breakpoints] == [("system", 0)]


def test_a_history_that_others_start_the_same_way_is_read_by_their_calls_too() -> None:
    """With traffic, the conversation before the newest turn is read by the session's next
    turn, and, where other samples start with the same history (a customer's, on every visit),
    by their calls too: at 40 calls an hour over 4 customers (one visit each 6 minutes) it is
    marked, for an hour; where every sample's history is its own it is not (one turn a
    session: nothing reads it)."""
    policy = [{"type": "text", "text": "You answer questions about orders. " * 300}]

    def visit(customer: int, i: int) -> dict[str, Any]:
        return {
            "model": "claude-sonnet-4-5",
            "max_tokens": 20,
            "system": policy,
            "messages": [
                {"role": "user", "content": f"I am customer {customer}. " * 200},
                {"role": "assistant", "content": "Hello, how can I help?"},
                {"role": "user", "content": f"Where is order {i}?"},
            ],
        }

    traffic = Traffic(calls_per_hour=40)
    shared = plan([visit(i % 4, i) for i in range(20)], traffic)
    assert [(bp.section, bp.ttl) for bp in shared.breakpoints] == [("system", "1h"), ("turn", "1h")]
    own = plan([visit(i, i) for i in range(20)], traffic)
    assert [(bp.section, bp.ttl) for bp in own.breakpoints] == [("system", "1h")]


def test_multi_turn_conversation_marks_the_newest_turn() -> None:
    """Three turns of one session: the plan marks the last block of the newest turn (as
    Anthropic's guide does for conversations), so each turn reads everything the previous one
    sent, and writes only the answer and the new question: the three entries are read twice."""
    history: list[dict[str, Any]] = []
    turns = []
    for i, q in enumerate(QUESTIONS):
        history = [*history, {"role": "user", "content": q + " " + "details " * 300}]
        turns.append(support_request("ann", "x") | {"messages": copy.deepcopy(history)})
        history.append({"role": "assistant", "content": f"Answer {i}: " + "words " * 300})
    p = plan(turns)
    assert [(bp.section, bp.index) for bp in p.breakpoints] == [("last", -1)]
    assert p.breakpoints[0].reads_per_write == pytest.approx(2 / 3)
    sent = [view(t).cum_tokens[-1] for t in turns]
    assert p.reads == (0, sent[0], sent[1])
    assert p.writes == (sent[0], sent[1] - sent[0], sent[2] - sent[1])


def test_implicit_providers_get_advice_and_no_markers() -> None:
    """Gemini caches implicitly: no breakpoints, a note on ordering, and ``apply`` returns an
    equal copy."""
    body = {
        "model": "gemini-2.5-flash",
        "systemInstruction": {"parts": [{"text": POLICY}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    }
    p = plan([body, body])
    assert p.breakpoints == ()
    assert any("implicitly" in n for n in p.notes)
    out = apply(body, p)
    assert out == body and out is not body


def test_bad_input_is_a_clear_error() -> None:
    """No samples, samples of two providers, an unknown shape and nonsense traffic each raise a
    ``ValueError`` naming the problem."""
    with pytest.raises(ValueError, match="at least one"):
        plan([])
    other = {"model": "gpt-5.6", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ValueError, match="different providers"):
        plan([support_request("ann", "hi"), other])
    with pytest.raises(ValueError, match="cannot tell which provider"):
        plan([{"hello": "world"}])
    with pytest.raises(ValueError, match="calls_per_hour"):
        Traffic(calls_per_hour=0)
    with pytest.raises(ValueError, match="users"):
        Traffic(calls_per_hour=1, users=0)


# -- apply, through the real SDKs, onto the emulator ---------------------------------------------


def test_applied_anthropic_requests_read_what_the_plan_says(cache_emulator: CacheEmulator) -> None:
    """The six samples, planned, applied and sent in order through ``anthropic.Anthropic`` to
    the emulator, read exactly the tokens the plan predicted for each."""
    requests = samples()
    p = plan(requests)
    client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-plan", max_retries=0)
    try:
        reads = []
        for r in requests:
            cache_emulator.advance(1)
            reads.append(client.messages.create(**apply(r, p)).usage.cache_read_input_tokens)
    finally:
        client.close()
    assert tuple(reads) == p.reads
    assert reads[1] > 0


def test_applied_bedrock_converse_requests_read_what_the_plan_says(cache_emulator: CacheEmulator) -> None:
    """The same flow as Converse requests through ``boto3``: cache points inserted where the
    plan says, and the emulator reads what it predicted."""

    def converse(user: str, question: str) -> dict[str, Any]:
        tools = [
            {
                "toolSpec": {
                    "name": t["name"],
                    "description": t["description"],
                    "inputSchema": {"json": t["input_schema"]},
                }
            }
            for t in TOOLS
        ]
        return {
            "modelId": "us.anthropic.claude-sonnet-5-v1:0",
            "toolConfig": {"tools": tools},
            "system": [{"text": POLICY}, {"text": PROFILES[user]}],
            "messages": [{"role": "user", "content": [{"text": question}]}],
        }

    requests = [converse(u, q) for u in ("ann", "bob") for q in QUESTIONS[:2]]
    p = plan(requests)
    assert len(p.breakpoints) == 2
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=cache_emulator.bedrock_endpoint_url,
        aws_access_key_id="AKIDPLAN",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    reads = []
    for r in requests:
        cache_emulator.advance(1)
        reads.append(client.converse(**apply(r, p))["usage"].get("cacheReadInputTokens", 0))
    assert tuple(reads) == p.reads


def test_applied_openai_requests_read_what_the_plan_says(cache_emulator: CacheEmulator) -> None:
    """GPT-5.6 Chat Completions: the plan marks content parts with prompt_cache_breakpoint
    (tools cannot carry one) and the emulator's reads match its prediction."""

    def chat(user: str, question: str) -> dict[str, Any]:
        return {
            "model": "gpt-5.6",
            "messages": [
                {"role": "system", "content": POLICY},
                {"role": "system", "content": PROFILES[user]},
                {"role": "user", "content": question},
            ],
        }

    requests = [chat(u, q) for u in ("ann", "bob") for q in QUESTIONS[:2]]
    p = plan(requests)
    assert p.breakpoints
    client = openai.OpenAI(base_url=cache_emulator.openai_base_url, api_key="sk-plan", max_retries=0)
    try:
        reads = []
        for r in requests:
            cache_emulator.advance(1)
            usage = client.chat.completions.create(**apply(r, p)).usage
            assert usage is not None and usage.prompt_tokens_details is not None
            reads.append(usage.prompt_tokens_details.cached_tokens or 0)
    finally:
        client.close()
    assert tuple(reads) == p.reads
    assert any(reads)


def test_plan_type_is_public() -> None:
    """``cachebench.plan`` returns a :class:`Plan` whose ``apply`` is the module's ``apply``."""
    p = cachebench.plan(samples()[:2])
    assert isinstance(p, Plan)
    assert p.apply(samples()[0]) == cachebench.apply(samples()[0], p)


def test_gpt56_without_a_breakpoint_is_explained_and_the_plan_fixes_it(cache_emulator: CacheEmulator) -> None:
    """On GPT-5.6 the implicit breakpoint ends with the newest message: two questions on one
    system prompt read nothing. The tracker calls the second miss a new question (``cold``,
    not an edit, nothing avoidable priced) and its explanation says to add a
    prompt_cache_breakpoint; the plan adds it, and the next question reads the system prompt."""

    def chat(question: str) -> dict[str, Any]:
        return {
            "model": "gpt-5.6",
            "messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": question}],
        }

    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = openai.OpenAI(base_url=cache_emulator.openai_base_url, api_key="sk-gpt56", max_retries=0)
    create = tracker.wrap(client.chat.completions.create, flow="faq")
    try:
        for q in QUESTIONS[:2]:
            cache_emulator.advance(1)
            create(**chat(q))
        second = tracker.calls()[-1]
        assert (second.cache_read_tokens, second.miss_cause, second.avoidable_tokens) == (0, "cold", 0)
        assert "prompt_cache_breakpoint" in cachebench.explain(second)
        p = plan([chat(q) for q in QUESTIONS])
        assert [(bp.section, bp.index) for bp in p.breakpoints] == [("system", 0)]
        cache_emulator.advance(1)
        create(**apply(chat(QUESTIONS[1]), p))
        cache_emulator.advance(1)
        create(**apply(chat(QUESTIONS[2]), p))
        fixed = tracker.calls()[-1]
        assert fixed.cache_read_tokens == view(chat("x")).cum_tokens[0] > 0
    finally:
        client.close()
        tracker.close()


def test_apply_to_an_invoke_model_body() -> None:
    """Bedrock InvokeModel with an Anthropic body: the markers go inside the JSON body, which
    stays a string when it was one (bytes when bytes)."""
    inner = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "system": POLICY,
        "messages": [{"role": "user", "content": "hi"}],
    }
    other = inner | {"messages": [{"role": "user", "content": "hello"}]}
    for encode in (json.dumps, lambda b: json.dumps(b).encode()):
        body = {"modelId": "us.anthropic.claude-sonnet-5-v1:0", "body": encode(inner)}
        p = plan([body, {"modelId": body["modelId"], "body": encode(other)}])
        assert [(bp.section, bp.index) for bp in p.breakpoints] == [("system", 0)]
        out = apply(body, p)
        assert type(out["body"]) is type(body["body"])
        sent = json.loads(out["body"])
        assert sent["system"] == [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}]
        assert json.loads(body["body"]) == inner


def test_a_plan_as_plain_json() -> None:
    """``Plan.as_dict()`` is plain JSON: breakpoints and layers as dicts, lists not tuples."""
    d = plan(samples()[:3]).as_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["breakpoints"][0]["section"] == "system" and d["layers"][0]["kind"] == "shared"
    assert d["unit"] == "USD" and isinstance(d["reads"], list)


def test_every_planner_name_resolves() -> None:
    """Each name ``cachebench.planner`` lists is importable from it (they load lazily)."""
    import cachebench.planner as planner

    for name in planner.__all__:
        assert getattr(planner, name) is not None, name
    assert planner.Layer is type(plan(samples()[:2]).layers[0])


def test_a_plan_prices_what_the_price_list_lacks_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """GPT-5.6's price list has no 12 h write price: the plan scores it as the usual multiple
    of the input price, in the same unit (USD) as everything else, and logs nothing."""
    chat = [
        {
            "model": "gpt-5.6",
            "messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": q}],
        }
        for q in QUESTIONS
    ]
    with caplog.at_level("WARNING", logger="cachebench"):
        p = plan(chat, Traffic(calls_per_hour=1, users=1))
    assert caplog.records == []
    assert p.unit == "USD" and p.breakpoints[0].ttl == "12h"


def test_a_provider_that_does_not_fit_the_body_is_refused() -> None:
    """A Gemini body linted or planned as Anthropic would parse as nothing and pass silently:
    it is a clear error instead. Bedrock takes an Anthropic Messages body (InvokeModel)."""
    gemini = {"model": "gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with pytest.raises(ValueError, match="gemini's shape, not anthropic's"):
        cachebench.lint(gemini, provider="anthropic")
    with pytest.raises(ValueError, match="name no model"):
        plan([{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}], provider="gemini")
    view(support_request("ann", "hi"), "bedrock")  # no error


def test_one_request_unpriced_models_and_implicit_caching_notes() -> None:
    """One request (not a list) is one sample; a model genai-prices does not know is scored in
    input-token equivalents and says so; older OpenAI models and Gemini cache implicitly (no
    markers), OpenAI's note adding prompt_cache_key; Gemini bodies take their model from
    ``model=`` and their provider from ``provider=``."""
    single = plan(support_request("ann", "hi"))
    assert len(single.reads) == 1 and single.layers[-1].samples == 1
    made_up = [support_request(u, q, model="claude-sonnet-97") for u in ("ann", "bob") for q in QUESTIONS]
    p = plan(made_up)
    assert p.unit == "input-token equivalents" and p.saving > 0
    assert "claude-sonnet-97 is not priced: savings are in input-token equivalents" in p.notes
    assert str(p).startswith(
        f"anthropic claude-sonnet-97: 2 breakpoint(s), saves {p.saving:,.0f} input-token equivalents a call"
    )
    old = [
        {
            "model": "gpt-4.1",
            "messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": q}],
        }
        for q in QUESTIONS
    ]
    o = plan(old)
    assert o.breakpoints == () and str(o).startswith("openai gpt-4.1: no breakpoint to place")
    assert any("one prompt_cache_key per flow" in n for n in o.notes)
    gem = [
        {
            "systemInstruction": {"parts": [{"text": POLICY}]},
            "contents": [{"role": "user", "parts": [{"text": q}]}],
        }
        for q in QUESTIONS
    ]
    g = plan(gem, provider="gemini", model="gemini-2.5-flash")
    assert (g.provider, g.model, g.breakpoints) == ("gemini", "gemini-2.5-flash", ())
    assert not any("prompt_cache_key" in n for n in g.notes)


def test_no_breakpoint_pays_when_nothing_is_shared() -> None:
    """Three samples with nothing in common: every write would go unread, so the plan places
    none and says why."""
    unique = [
        support_request("ann", "hi")
        | {"tools": [], "system": [{"type": "text", "text": f"Policy {i}: " + POLICY}]}
        for i in range(3)
    ]
    p = plan(unique)
    assert p.breakpoints == () and p.saving == 0.0
    assert "no breakpoint saves money on these samples" in p.notes


def test_planned_breakpoints_read_in_words() -> None:
    """A breakpoint on a section's block, on the end of the conversation and on the last block
    each say where they are in words."""
    from cachebench.planner import PlannedBreakpoint

    def bp(section: str, index: int) -> str:
        return str(PlannedBreakpoint(section, index, "5m", 0, 100, 2, 1.0, "why"))

    assert bp("system", 1) == "system block 1 (5m): why"
    assert bp("turn", -1) == "the end of the conversation before the newest turn (5m): why"
    assert bp("last", -1) == "the last block (the newest turn) (5m): why"
