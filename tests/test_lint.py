"""Lint: each rule of the table fires on a realistic request that has the problem, at the
right place, and stays quiet on the same request without it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import cachebench
from cachebench.planner import RULES, Finding

NOW = 1_796_643_000.0  # 2026-12-07 12:10:00 UTC
POLICY = "You are the support agent of a bicycle shop. Answer briefly and politely, in English. " * 50
TOOLS = [
    {
        "name": name,
        "description": f"Looks up the customer's {name} by id and returns them as JSON.",
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    }
    for name in ("orders", "returns", "refunds", "stock")
]
EPHEMERAL = {"type": "ephemeral"}


def request(
    system: list[dict[str, Any]] | str | None = None,
    messages: list[dict[str, Any]] | None = None,
    *,
    model: str = "claude-sonnet-5",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "tools": copy.deepcopy(TOOLS),
        "system": system
        if system is not None
        else [{"type": "text", "text": POLICY, "cache_control": EPHEMERAL}],
        "messages": messages if messages is not None else [{"role": "user", "content": "Where is my order?"}],
    }
    body.update(extra)
    return body


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_a_well_built_request_has_no_findings() -> None:
    """Tools and a long policy with a breakpoint after it, the question last: nothing to say."""
    assert cachebench.lint(request(), now=NOW) == []


# -- breakpoints ------------------------------------------------------------------------------


def test_cb101_breakpoint_below_the_models_minimum() -> None:
    """A breakpoint after a short system prompt is below Sonnet 5's 1,024 tokens; the same
    prompt with the policy reaches it. Opus 4.6's minimum is 4,096: the policy alone is short."""
    short = request([{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}])
    short["tools"] = []
    (f,) = cachebench.lint(short, now=NOW)
    assert (f.code, f.severity, f.section, f.block_index) == ("CB101", "error", "system", 0)
    assert (
        f.message
        == "the prefix through this breakpoint is about 3 tokens; claude-sonnet-5 caches from 1,024."
    )
    assert "CB101" not in codes(cachebench.lint(request(), now=NOW))
    assert "CB101" in codes(cachebench.lint(request(model="claude-opus-4-6"), now=NOW))


def test_cb102_more_breakpoints_than_allowed() -> None:
    """Five cache_control markers on Anthropic (four allowed) and five cache points on Bedrock
    Converse; four are fine."""
    body = request()
    for tool in body["tools"]:
        tool["cache_control"] = EPHEMERAL
    assert codes(cachebench.lint(body, now=NOW)).count("CB102") == 1
    body["tools"][0].pop("cache_control")
    assert "CB102" not in codes(cachebench.lint(body, now=NOW))
    point = {"cachePoint": {"type": "default"}}
    converse = {
        "modelId": "us.anthropic.claude-sonnet-5-v1:0",
        "system": [{"text": POLICY}, point, {"text": "a"}, point, {"text": "b"}, point, {"text": "c"}, point],
        "messages": [{"role": "user", "content": [{"text": "hi"}, point]}],
    }
    found = [f for f in cachebench.lint(converse, now=NOW) if f.code == "CB102"]
    assert [(f.section, f.block_index) for f in found] == [("messages", 0)]


def _chat(n: int, *, tools: bool = False) -> list[dict[str, Any]]:
    """``n`` exchanges: plain text, or a tool call and its result each."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        if tools:
            out.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": f"t{i}", "name": "stock", "input": {"id": str(i)}}
                    ],
                }
            )
            out.append(
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "3 in stock"}],
                }
            )
        else:
            out.append({"role": "user", "content": f"Question {i} about wheels?"})
            out.append({"role": "assistant", "content": f"Answer {i}: yes."})
    return out


def test_cb103_breakpoint_past_the_lookback() -> None:
    """One reply of 22 blocks (text between tool calls) and then the breakpoint: 22 positions
    after the end of the previous call's request, past the 20-block lookback. The same 22 tool
    calls in a row are one run, one position; a 15-turn chat with the system prompt and the
    last message marked never is."""
    reply: list[dict[str, Any]] = []
    for i in range(11):
        reply.append({"type": "text", "text": f"Checking store {i}."})
        reply.append({"type": "tool_use", "id": f"t{i}", "name": "stock", "input": {"store": i}})
    results: list[dict[str, Any]] = [
        {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"{i} in stock"} for i in range(11)
    ]
    results[-1]["cache_control"] = EPHEMERAL
    body = request(messages=[
        {"role": "user", "content": "Which stores have the helmet?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": results},
    ])  # fmt: skip
    (f,) = [f for f in cachebench.lint(body, now=NOW) if f.code == "CB103"]
    assert (f.section, f.block_index, f.severity) == ("messages", 33, "warning")
    assert "22 block positions" in f.message  # 21 before the last call, then one run of calls and results
    calls_only = [b for b in reply if b["type"] == "tool_use"]
    body["messages"][1]["content"] = calls_only
    assert "CB103" not in codes(cachebench.lint(body, now=NOW))
    chat: list[dict[str, Any]] = []
    for i in range(15):
        chat += [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
    chat.append(
        {"role": "user", "content": [{"type": "text", "text": "One more?", "cache_control": EPHEMERAL}]}
    )
    assert "CB103" not in codes(cachebench.lint(request(messages=chat), now=NOW))


def test_cb104_one_hour_after_five_minutes() -> None:
    """A 1h breakpoint after a 5m one is refused by Anthropic; 1h first is right."""
    body = request([
        {"type": "text", "text": POLICY, "cache_control": EPHEMERAL},
        {"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ])  # fmt: skip
    (f,) = [f for f in cachebench.lint(body, now=NOW) if f.code == "CB104"]
    assert (f.section, f.block_index, f.severity) == ("system", 1, "error")
    assert f.message == "a 1h breakpoint after a 5m one."
    body["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body["system"][1]["cache_control"] = EPHEMERAL
    assert "CB104" not in codes(cachebench.lint(body, now=NOW))


# -- volatile values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "value_type", "value"),
    [
        ("Current time: 2026-12-07T12:09:58Z.", "timestamp", "2026-12-07T12:09:58Z"),
        ("Session 7c9e6679-7425-40de-944b-e07cc4f0e7c1.", "uuid", "7c9e6679-7425-40de-944b-e07cc4f0e7c1"),
        ("request_id: req_8f3a2b1c9d77", "hex_id", "req_8f3a2b1c9d77"),
        ("Generated at epoch 1796642998.", "timestamp", "1796642998"),
    ],
)
def test_cb201_volatile_value_in_the_cached_prefix(sentence: str, value_type: str, value: str) -> None:
    """A per-request value in the cached system prompt is an error at its exact bytes; the
    same sentence in the newest user message (after the breakpoint) is fine."""
    body = request([{"type": "text", "text": f"{sentence} {POLICY}", "cache_control": EPHEMERAL}])
    (f,) = cachebench.lint(body, now=NOW)
    assert (f.code, f.severity, f.section, f.block_index, f.value_type) == (
        "CB201",
        "error",
        "system",
        0,
        value_type,
    )
    start = len('["system","') + sentence.index(value)
    assert (f.byte_start, f.byte_end) == (start, start + len(value))
    after = request(messages=[{"role": "user", "content": f"{sentence} Where is my order?"}])
    assert cachebench.lint(after, now=NOW) == []


def test_cb205_a_date_in_the_shared_layer() -> None:
    """Today's date in the shared system prompt is a warning (it changes once a day); the same
    date in a small layer of its own after the shared one, as the fix says, is fine."""
    dated = request(
        [{"type": "text", "text": f"Today's date is December 7, 2026. {POLICY}", "cache_control": EPHEMERAL}]
    )
    (f,) = cachebench.lint(dated, now=NOW)
    assert (f.code, f.severity, f.section, f.block_index, f.value_type) == (
        "CB205",
        "warning",
        "system",
        0,
        "date",
    )
    start = len('["system","') + len("Today's date is ")
    assert (f.byte_start, f.byte_end) == (start, start + len("December 7, 2026"))
    own_layer = request([
        {"type": "text", "text": POLICY, "cache_control": EPHEMERAL},
        {"type": "text", "text": "Today's date is December 7, 2026.", "cache_control": EPHEMERAL},
    ])  # fmt: skip
    assert cachebench.lint(own_layer, now=NOW) == []


def test_values_of_a_customers_own_layer_are_not_flagged() -> None:
    """After the shared layer's breakpoint, a customer's own UUID and dates are that layer's
    content (on one request, and between two customers); a time to the second there still is a
    per-request value."""

    def body(customer: str, since: str, extra: str = "") -> dict[str, Any]:
        return request([
            {"type": "text", "text": POLICY, "cache_control": EPHEMERAL},
            {"type": "text", "text": f"Customer {customer}, member since {since}.{extra}", "cache_control": EPHEMERAL},
        ])  # fmt: skip

    ann = body("7c9e6679-7425-40de-944b-e07cc4f0e7c1", "2021-03-04")
    bob = body("16fd2706-8baf-433b-82eb-8c7fada847da", "2019-07-19")
    assert cachebench.lint([ann, bob], now=NOW) == []
    timed = body("7c9e6679-7425-40de-944b-e07cc4f0e7c1", "2021-03-04", " Now: 12:09:58.")
    assert [(f.code, f.block_index, f.value_type) for f in cachebench.lint(timed, now=NOW)] == [
        ("CB201", 1, "timestamp")
    ]
    # A UUID after a per-request id's cue is new on every request, in any layer.
    for cue in ("Request id: ", "trace_id=", "X-Request-ID "):
        tagged = body("c-042", "2021-03-04", f" {cue}5f0c8e7a-1b2c-4d3e-9f8a-0b1c2d3e4f5a.")
        (found,) = cachebench.lint(tagged, now=NOW)
        assert (found.code, found.block_index, found.value_type) == ("CB201", 1, "uuid"), cue
    session = body("c-042", "2021-03-04", " Session 5f0c8e7a-1b2c-4d3e-9f8a-0b1c2d3e4f5a.")
    assert cachebench.lint(session, now=NOW) == []  # (a session's own id: its layer's content)


def test_cb201_without_a_breakpoint_yet() -> None:
    """A long system prompt with no breakpoint and a timestamp in it: CB301 asks for a
    breakpoint, and CB201 already says the timestamp would bust what it caches."""
    body = request([{"type": "text", "text": f"Now: 2026-12-07T12:09:58Z. {POLICY}"}])
    assert codes(cachebench.lint(body, now=NOW)) == ["CB301", "CB201"]


def test_cb201_static_values_are_not_flagged() -> None:
    """A founding year, a version, a price and an HTTP status in the policy are not per
    request."""
    text = (
        "The shop was founded on March 5, 1998 in Leeds. Our API is version 3.12.1; refunds "
        "over $1,250.00 need approval; a 404 means the order id is wrong. " + POLICY
    )
    assert (
        cachebench.lint(request([{"type": "text", "text": text, "cache_control": EPHEMERAL}]), now=NOW) == []
    )


def test_cb201_on_implicit_caching_covers_everything_before_the_newest_turn() -> None:
    """OpenAI before GPT-5.6 caches without markers: a timestamp in the system message is
    inside the cached prefix; in the user's message it is not."""
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": f"Now: 2026-12-07 12:09:58 UTC. {POLICY}"},
            {"role": "user", "content": "Where is my order?"},
        ],
    }
    (f,) = cachebench.lint(body, now=NOW)
    assert (f.code, f.section, f.value_type) == ("CB201", "system", "timestamp")
    body["messages"] = [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": "Now: 2026-12-07 12:09:58 UTC."},
    ]
    assert cachebench.lint(body, now=NOW) == []


def test_cb201_from_two_requests_that_differ_in_a_value() -> None:
    """Two builds whose system prompts differ only in a counter-like id: the comparison names
    the changed value, even where one request alone does not show it."""
    a = request([{"type": "text", "text": f"Build 8f3a2b1c9d. {POLICY}", "cache_control": EPHEMERAL}])
    b = request([{"type": "text", "text": f"Build 0b71c4e2aa. {POLICY}", "cache_control": EPHEMERAL}])
    found = [f for f in cachebench.lint([a, b], now=NOW) if f.code == "CB201"]
    assert [(f.request, f.section, f.value_type, f.byte_start, f.byte_end) for f in found] == [
        (1, "system", "hex_id", 17, 27)
    ]


# -- comparing requests -----------------------------------------------------------------------


def test_cb202_reordered_tools() -> None:
    """The same tools in another order in the second request; the same order is fine."""
    a, b = request(), request()
    b["tools"] = b["tools"][::-1]
    findings = cachebench.lint([a, b], now=NOW)
    found = [f for f in findings if f.code == "CB202"]
    assert [(f.request, f.section, f.block_index) for f in found] == [(1, "tools", 0)]
    assert codes(findings) == ["CB202"]  # a re-ordering is not per-user content (no CB204)
    assert "CB202" not in codes(cachebench.lint([a, request()], now=NOW))


def test_requests_to_other_providers_or_models_are_compared_among_their_own() -> None:
    """A list that mixes providers and models: each provider and model's requests are compared
    with the first of them (a cache is per model), and the findings name the requests by their
    place in the whole list."""
    a, b = request(), request()
    b["tools"] = b["tools"][::-1]
    chat = {"model": "gpt-5.6", "messages": [{"role": "user", "content": "Hi"}]}
    opus, opus_reordered = request(), request()
    opus["model"] = opus_reordered["model"] = "claude-opus-4-5"
    opus_reordered["tools"] = opus_reordered["tools"][::-1]
    found = [f for f in cachebench.lint([chat, a, opus, b, opus_reordered], now=NOW) if f.code == "CB202"]
    assert [(f.request, f.section, f.block_index) for f in found] == [(3, "tools", 0), (4, "tools", 0)]
    assert "as in request 1, in another order" in found[0].message
    assert "as in request 2, in another order" in found[1].message


def test_cb203_nondeterministic_serialization() -> None:
    """A tool schema with its keys in another order, and a JSON profile dumped with other
    whitespace and 1.0 for 1: the same content in other bytes."""
    a, b = request(), request()
    b["tools"][1]["input_schema"] = dict(reversed(list(b["tools"][1]["input_schema"].items())))
    profile = '{"tier": "gold", "discount": 1}'
    a["system"].append({"type": "text", "text": profile, "cache_control": EPHEMERAL})
    b["system"].append(
        {"type": "text", "text": '{"tier":"gold",  "discount": 1.0}', "cache_control": EPHEMERAL}
    )
    found = [
        (f.request, f.section, f.block_index) for f in cachebench.lint([a, b], now=NOW) if f.code == "CB203"
    ]
    assert found == [(1, "tools", 1), (1, "system", 1)]
    assert "CB203" not in codes(cachebench.lint([a, copy.deepcopy(a)], now=NOW))


def test_cb204_per_user_content_before_shared_content() -> None:
    """Each customer's name in the first system block, the long policy after it: the policy is
    cached once per customer. The policy first and the customer after it is right."""

    def body(name: str, *, customer_first: bool) -> dict[str, Any]:
        customer = {"type": "text", "text": f"Customer: {name}."}
        policy = {"type": "text", "text": POLICY, "cache_control": EPHEMERAL}
        return request([customer, policy] if customer_first else [policy, customer])

    found = cachebench.lint([body("Ann", customer_first=True), body("Bob", customer_first=True)], now=NOW)
    (f,) = [f for f in found if f.code == "CB204"]
    assert (f.section, f.block_index, f.severity) == ("system", 0, "warning")
    good = [body("Ann", customer_first=False), body("Bob", customer_first=False)]
    assert "CB204" not in codes(cachebench.lint(good, now=NOW))


# -- structure --------------------------------------------------------------------------------


def test_cb301_a_long_stable_prefix_without_a_breakpoint() -> None:
    """Anthropic with a long policy and no breakpoint: nothing is cached. A short prompt is not
    worth one; Gemini caches implicitly."""
    body = request([{"type": "text", "text": POLICY}])
    (f,) = cachebench.lint(body, now=NOW)
    assert (f.code, f.section, f.block_index, f.severity) == ("CB301", "system", 0, "warning")
    short = request([{"type": "text", "text": "Be brief."}])
    short["tools"] = []
    assert cachebench.lint(short, now=NOW) == []
    gemini = {
        "model": "gemini-2.5-flash",
        "systemInstruction": {"parts": [{"text": POLICY}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    }
    assert cachebench.lint(gemini, now=NOW) == []


def test_cb301_gpt56_conversation_without_an_explicit_breakpoint() -> None:
    """GPT-5.6's implicit breakpoint ends with the newest message: a long conversation without
    a prompt_cache_breakpoint reads nothing when the question changes. With one, it is fine."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": "Where is my order?"},
    ]
    (f,) = cachebench.lint({"model": "gpt-5.6", "messages": messages}, now=NOW)
    assert (f.code, f.section) == ("CB301", "system")
    assert "prompt_cache_breakpoint" in f.message
    messages[0] = {
        "role": "system",
        "content": [{"type": "text", "text": POLICY, "prompt_cache_breakpoint": {"mode": "explicit"}}],
    }
    assert cachebench.lint({"model": "gpt-5.6", "messages": messages}, now=NOW) == []


def test_cb302_tool_result_or_image_in_a_shared_layer() -> None:
    """A tool result before the first of two breakpoints makes the shared layer per call; the
    same tool result after them is the conversation."""
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "3 in stock"}],
    }
    call = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "stock", "input": {"id": "7"}}],
    }
    marked_answer = {
        "role": "assistant",
        "content": [{"type": "text", "text": "Done.", "cache_control": EPHEMERAL}],
    }
    policy = [{"type": "text", "text": POLICY}]
    first = request(
        policy,
        [
            {"role": "user", "content": "Stock?"},
            call,
            result,
            marked_answer,
            {"role": "user", "content": "ok"},
        ],
    )
    first["messages"][2]["content"][0]["cache_control"] = EPHEMERAL
    first["messages"][3]["content"][0]["cache_control"] = EPHEMERAL
    (f,) = [f for f in cachebench.lint(first, now=NOW) if f.code == "CB302"]
    assert (f.section, f.block_index, f.message) == ("messages", 2, "a tool result in the messages layer.")
    late = request(
        messages=[{"role": "user", "content": "Stock?"}, call, result, {"role": "user", "content": "ok"}]
    )
    assert "CB302" not in codes(cachebench.lint(late, now=NOW))


def test_cb303_forced_tool_choice_with_a_breakpoint_in_the_messages() -> None:
    """tool_choice naming one tool, with a breakpoint on the conversation: a change of tool
    invalidates it. ``auto`` or breakpoints before the messages only are fine."""
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Stock of 7?", "cache_control": EPHEMERAL}]}
    ]
    body = request(messages=messages, tool_choice={"type": "tool", "name": "stock"})
    (f,) = [f for f in cachebench.lint(body, now=NOW) if f.code == "CB303"]
    assert f.section is None and f.request == 0
    assert f.message == (
        "tool_choice names one tool; when it changes between calls, every breakpoint in the messages misses."
    )
    assert "CB303" not in codes(
        cachebench.lint(request(messages=messages, tool_choice={"type": "auto"}), now=NOW)
    )
    assert "CB303" not in codes(
        cachebench.lint(request(tool_choice={"type": "tool", "name": "stock"}), now=NOW)
    )


# -- the findings themselves ------------------------------------------------------------------


def test_findings_come_from_the_table() -> None:
    """A finding's severity, title and fix are its rule's; ``as_dict`` is plain JSON and
    ``str`` one line with code, place and fix."""
    body = request(
        [
            {
                "type": "text",
                "text": f"Current time: 2026-12-07T12:09:58Z. {POLICY}",
                "cache_control": EPHEMERAL,
            }
        ]
    )
    (f,) = cachebench.lint(body, now=NOW)
    rule = RULES["CB201"]
    assert (f.severity, f.fix, f.rule) == (rule.severity, rule.fix, rule)
    d = f.as_dict()
    assert (d["code"], d["name"], d["title"], d["byte_start"]) == ("CB201", "volatile-value", rule.title, 25)
    assert str(f).startswith("CB201 error (volatile-value) system block 0, bytes 25-45: a timestamp")
    assert "\n" not in str(f)


def test_lint_rejects_what_is_not_a_request() -> None:
    """A string, an empty list and a body of no provider's shape are clear errors."""
    with pytest.raises(TypeError, match="request body"):
        cachebench.lint("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request body"):
        cachebench.lint([])
    with pytest.raises(ValueError, match="cannot tell which provider"):
        cachebench.lint({"prompt": "hi"})


def test_cb201_ignores_the_conversation_history() -> None:
    """A date and a request id inside an earlier tool result are history that the next turn
    sends again unchanged: not flagged. The same values in the leading user message (a
    template's per-request context) are."""
    call = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "orders", "input": {"id": "7"}}],
    }
    result = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": "request_id: req_8f3a2b1c9d77, shipped 2026-12-07T09:12:44Z",
            }
        ],
    }
    marked = {
        "role": "assistant",
        "content": [{"type": "text", "text": "It shipped.", "cache_control": EPHEMERAL}],
    }
    history = [
        {"role": "user", "content": "Where is order 7?"},
        call,
        result,
        marked,
        {"role": "user", "content": "Thanks"},
    ]
    assert cachebench.lint(request(messages=history), now=NOW) == []
    context = {"role": "user", "content": "Context: request_id: req_8f3a2b1c9d77. Where is order 7?"}
    found = cachebench.lint(request(messages=[context, *history[1:]]), now=NOW)
    assert [(f.code, f.section, f.block_index, f.value_type) for f in found] == [
        ("CB201", "messages", 0, "hex_id")
    ]


def test_cb303_tool_choice_or_thinking_that_differs_between_requests() -> None:
    """Two requests of a flow whose thinking (or tool_choice: any against auto) differs, with a
    breakpoint on the conversation: CB303 on the second; the same settings are fine."""
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Stock of 7?", "cache_control": EPHEMERAL}]}
    ]
    on = request(messages=messages, thinking={"type": "enabled", "budget_tokens": 2048})
    off = request(messages=messages)
    (f,) = [f for f in cachebench.lint([on, off], now=NOW) if f.code == "CB303"]
    assert f.request == 1 and "thinking differ from request 0" in f.message
    any_tool = request(messages=messages, tool_choice={"type": "any"})
    auto = request(messages=messages, tool_choice={"type": "auto"})
    assert "tool_choice differ" in str(
        [f for f in cachebench.lint([any_tool, auto], now=NOW) if f.code == "CB303"]
    )
    assert "CB303" not in codes(cachebench.lint([on, copy.deepcopy(on)], now=NOW))


def test_cb102_on_openai_counts_the_writes() -> None:
    """Five prompt_cache_breakpoints on GPT-5.6: OpenAI writes four entries a request, the
    longest, so the first is never written."""
    marker = {"mode": "explicit"}
    parts = [{"type": "text", "text": POLICY, "prompt_cache_breakpoint": marker}] + [
        {"type": "text", "text": f"Section {i}. " + POLICY, "prompt_cache_breakpoint": marker}
        for i in range(4)
    ]
    body = {
        "model": "gpt-5.6",
        "messages": [{"role": "system", "content": parts}, {"role": "user", "content": "Hi"}],
    }
    (f,) = [f for f in cachebench.lint(body, now=NOW) if f.code == "CB102"]
    assert "OpenAI writes at most 4 entries" in f.message
    body["messages"][0]["content"] = parts[1:]
    assert "CB102" not in codes(cachebench.lint(body, now=NOW))


def test_cb202_names_the_tool_on_openai_too() -> None:
    """OpenAI puts its request settings (reasoning_effort) in a block ahead of the tools: the
    re-ordered tool is named by its own place, tools block 0 at position 1, and no later
    block is taken for a re-ordered one."""
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")
    ]

    def body(order: list[Any]) -> dict[str, Any]:
        return {
            "model": "gpt-5.6",
            "reasoning_effort": "low",
            "tools": order,
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": POLICY, "prompt_cache_breakpoint": {"mode": "explicit"}}
                    ],
                },
                {"role": "user", "content": "Hi"},
            ],
        }

    found = cachebench.lint([body(tools), body(tools[::-1])], now=NOW)
    assert [(f.code, f.section, f.block_index, f.position) for f in found] == [("CB202", "tools", 0, 1)]
