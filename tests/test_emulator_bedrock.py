"""The emulator's Bedrock Runtime through the real ``boto3`` client on loopback: Converse,
ConverseStream (AWS event-stream framing parsed by botocore), InvokeModel and
InvokeModelWithResponseStream with Anthropic bodies.

Every call is also wrapped in a ``CacheTracker`` on the emulator's clock, and the tracked
``CallMetrics`` must equal the usage boto3 returned.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_block

from . import test_emulator_anthropic as layers

MODEL = "us.anthropic.claude-sonnet-5-v1:0"  # Anthropic minimum: 1024 tokens
MODES = ("converse", "converse_stream", "invoke_model", "invoke_model_with_response_stream")
T_SPECS = [
    {
        "toolSpec": {
            "name": t["name"],
            "description": t["description"],
            "inputSchema": {"json": t["input_schema"]},
        }
    }
    for t in layers.TOOLS
]
T = sum(estimate_block(t) for t in T_SPECS)
S, C, M = layers.S, layers.C, layers.M


def point(ttl: str) -> dict[str, Any]:
    return {"cachePoint": {"type": "default", "ttl": ttl}}


def converse_request(user: str, turn: int, *, shared_ttl: str = "5m") -> dict[str, Any]:
    """The four layers in Converse shapes, a cache point after each."""
    pairs = layers.turns(user, turn)
    messages: list[dict[str, Any]] = []
    for question, answer in pairs[:-1]:
        messages += [
            {"role": "user", "content": [{"text": question}]},
            {"role": "assistant", "content": [{"text": answer}]},
        ]
    messages.append({"role": "user", "content": [{"text": pairs[-1][0]}, point("5m")]})
    return {
        "modelId": MODEL,
        "toolConfig": {"tools": [*T_SPECS, point(shared_ttl)]},
        "system": [{"text": layers.SYSTEM}, point(shared_ttl), {"text": layers.context(user)}, point("5m")],
        "messages": messages,
        "inferenceConfig": {"maxTokens": 64},
    }


def invoke_body(user: str, turn: int, *, shared_ttl: str = "5m") -> dict[str, Any]:
    body = layers.four_layers(user, turn, shared_ttl=shared_ttl)
    del body["model"]
    return {"anthropic_version": "bedrock-2023-05-31", **body}


def tracked(m: CallMetrics) -> tuple[int, int, int, int]:
    return (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens, m.cache_write_1h_tokens)


def converse_counts(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    one_hour = sum(d["inputTokens"] for d in usage.get("cacheDetails", []) if d["ttl"] == "1h")
    assert usage["totalTokens"] == sum(usage[k] for k in usage if k.endswith("Tokens") and k != "totalTokens")
    return (usage["inputTokens"], usage["cacheReadInputTokens"], usage["cacheWriteInputTokens"], one_hour)


def anthropic_counts(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    split = usage.get("cache_creation") or {}
    return (
        usage["input_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
        split.get("ephemeral_1h_input_tokens", 0),
    )


class Agent:
    """A boto3 client of one AWS account, wrapped method by method by one tracker."""

    def __init__(self, emu: CacheEmulator, account: str = "AKIDEMULATORTESTS") -> None:
        self.client = boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=emu.bedrock_endpoint_url,
            aws_access_key_id=account,
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        self.tracker = CacheTracker(clock=emu.clock)

    def send(self, mode: str, user: str, turn: int, *, shared_ttl: str = "5m") -> tuple[int, int, int, int]:
        """One call in ``mode``; asserts the tracker recorded what boto3 returned."""
        call = self.tracker.wrap(getattr(self.client, mode))
        if mode.startswith("converse"):
            response = call(**converse_request(user, turn, shared_ttl=shared_ttl))
            if mode == "converse":
                got = converse_counts(response["usage"])
            else:
                events = list(response["stream"])
                assert [next(iter(e)) for e in events][:1] == ["messageStart"]
                got = converse_counts(events[-1]["metadata"]["usage"])
        else:
            body = json.dumps(invoke_body(user, turn, shared_ttl=shared_ttl))
            response = call(modelId=MODEL, body=body, contentType="application/json")
            if mode == "invoke_model":
                got = anthropic_counts(json.loads(response["body"].read())["usage"])
            else:
                chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
                assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"
                metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
                got = anthropic_counts(chunks[0]["message"]["usage"])
                assert (metrics["inputTokenCount"], metrics["cacheReadInputTokenCount"]) == got[:2]
                assert (
                    anthropic_counts(
                        {
                            **chunks[-2]["usage"],
                            "cache_creation": chunks[0]["message"]["usage"]["cache_creation"],
                        }
                    )
                    == got
                )
        assert tracked(self.tracker.calls()[-1]) == got
        return got


@pytest.fixture
def agents(cache_emulator: CacheEmulator) -> Iterator[Any]:
    made: list[Agent] = []

    def make(account: str = "AKIDEMULATORTESTS") -> Agent:
        made.append(Agent(cache_emulator, account))
        return made[-1]

    yield make
    for agent in made:
        agent.client.close()


def full(user: str, turn: int, mode: str) -> int:
    return (T if mode.startswith("converse") else layers.T) + S + C(user) + M(user, turn)


@pytest.mark.parametrize("mode", MODES)
def test_four_layer_scenario(cache_emulator: CacheEmulator, agents: Any, mode: str) -> None:
    """A new user writes all four layers; their next turn reads them; another user reads tools
    and system and writes their own context; after 5 idle minutes everything is written again."""
    agent = agents()
    tools = T if mode.startswith("converse") else layers.T
    a1, a2 = full("ann", 1, mode), full("ann", 2, mode)
    assert agent.send(mode, "ann", 1) == (0, 0, a1, 0)
    assert agent.send(mode, "ann", 2) == (0, a1, a2 - a1, 0)
    assert agent.send(mode, "bob", 1) == (0, tools + S, C("bob") + M("bob", 1), 0)
    cache_emulator.advance(301)
    assert agent.send(mode, "ann", 2) == (0, 0, a2, 0)


@pytest.mark.parametrize("mode", MODES)
def test_one_hour_cache_point_survives_five_idle_minutes(
    cache_emulator: CacheEmulator, agents: Any, mode: str
) -> None:
    """1h cache points on tools and system outlive a 5-minute gap (``cacheDetails`` and
    ``cache_creation`` split the writes by TTL); after an idle hour nothing is left."""
    agent = agents()
    shared = (T if mode.startswith("converse") else layers.T) + S
    first = agent.send(mode, "ann", 1, shared_ttl="1h")
    assert first == (0, 0, full("ann", 1, mode), shared)
    cache_emulator.advance(301)
    assert agent.send(mode, "ann", 1, shared_ttl="1h") == (0, shared, C("ann") + M("ann", 1), 0)
    cache_emulator.advance(3601)
    assert agent.send(mode, "ann", 1, shared_ttl="1h") == first


@pytest.mark.parametrize(("repeats", "cached"), [(500, False), (520, True)])
def test_below_minimum_cache_point_caches_nothing(agents: Any, repeats: int, cached: bool) -> None:
    """A cache point under the 1024-token minimum caches nothing: both counters 0."""
    text = "policy: " * repeats
    prefix, question = estimate_block(text), estimate_block("hi")
    request = {
        "modelId": MODEL,
        "system": [{"text": text}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    }
    client = agents().client
    got = [converse_counts(client.converse(**request)["usage"]) for _ in range(2)]
    if cached:
        assert got == [(question, 0, prefix, 0), (question, prefix, 0, 0)]
    else:
        assert got == [(prefix + question, 0, 0, 0)] * 2


def test_fifth_cache_point_is_a_validation_exception(agents: Any) -> None:
    """Five cache points: 400 ``ValidationException`` (botocore's modeled error class)."""
    client = agents().client
    system: list[dict[str, Any]] = []
    for i in range(5):
        system += [{"text": f"Part {i}. {layers.SYSTEM}"}, {"cachePoint": {"type": "default"}}]
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.converse(
            modelId=MODEL, system=system, messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert (
        info.value.response["Error"]["Message"]
        == "A maximum of 4 cachePoint blocks may be provided. Found 5."
    )


def test_fifth_cache_control_on_invoke_model_is_a_validation_exception(agents: Any) -> None:
    """InvokeModel with an Anthropic body and five ``cache_control`` blocks (the tool's, three
    system blocks', the question's): botocore raises
    a ``ClientError`` with code ``ValidationException``, worded with the body's marker."""
    client = agents().client
    body = invoke_body("ann", 1)
    body["system"] = [
        {"type": "text", "text": f"Part {i}. {layers.SYSTEM}", "cache_control": layers.cc("5m")}
        for i in range(3)
    ]
    with pytest.raises(ClientError) as info:
        client.invoke_model(modelId=MODEL, body=json.dumps(body))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["Error"]["Message"] == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )


def test_parallel_cold_calls_all_write(cache_emulator: CacheEmulator, agents: Any) -> None:
    """Eight concurrent Converse calls on a cold prefix, each 200 ms before its first byte: all
    write (an entry is readable only once its response started); the next call reads."""
    cache_emulator.set_knobs(ttft_ms=800)
    agent = agents()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: agent.send("converse", "ann", 1), range(8)))
    whole = full("ann", 1, "converse")
    assert results == [(0, 0, whole, 0)] * 8
    assert agent.send("converse_stream", "ann", 1) == (0, whole, 0, 0)
    assert sorted(tracked(m) for m in agent.tracker.calls()) == sorted([*results, (0, whole, 0, 0)])


@pytest.mark.parametrize("mode", ["converse", "invoke_model"])
def test_multi_turn_growth_reads_the_previous_turn(
    cache_emulator: CacheEmulator, agents: Any, mode: str
) -> None:
    """Each turn reads exactly the previous turn's prompt and writes only what it adds."""
    agent = agents()
    previous = 0
    for turn in range(1, 6):
        now = full("cy", turn, mode)
        assert agent.send(mode, "cy", turn) == (0, previous, now - previous, 0)
        previous = now
        cache_emulator.advance(120)


def test_caches_are_scoped_by_account(agents: Any) -> None:
    """Another AWS access key shares no entry with the first."""
    whole = full("ann", 1, "converse")
    assert agents().send("converse", "ann", 1) == (0, 0, whole, 0)
    assert agents("AKIDOTHERACCOUNT").send("converse", "ann", 1) == (0, 0, whole, 0)


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, "ThrottlingException"), (500, "InternalServerException"), (529, "ServiceUnavailableException")],
)
def test_injected_errors_are_bedrocks_exceptions(
    cache_emulator: CacheEmulator, agents: Any, status: int, error: str
) -> None:
    """Injected 429/500/529 arrive as botocore's modeled Throttling, InternalServer and
    ServiceUnavailable exceptions, and the failed call's writes never become readable."""
    agent = agents()
    cache_emulator.set_knobs(error_rate=1.0, error_status=status)
    for mode in ("converse", "invoke_model_with_response_stream"):
        with pytest.raises(getattr(agent.client.exceptions, error)):
            agent.send(mode, "ann", 1)
    cache_emulator.set_knobs(error_rate=0.0)
    assert agent.send("converse", "ann", 1) == (0, 0, full("ann", 1, "converse"), 0)


def test_invalid_requests_are_validation_exceptions(agents: Any) -> None:
    """Malformed JSON, a body without ``anthropic_version``, a top-level ``cache_control``
    (automatic caching is Anthropic API only) and an empty conversation: 400
    ``ValidationException``, never a 500."""
    client = agents().client
    body = invoke_body("ann", 1)
    bad = {
        "not valid JSON": b"{not json",
        "anthropic_version": json.dumps({k: v for k, v in body.items() if k != "anthropic_version"}),
        "Anthropic API only": json.dumps({**body, "cache_control": {"type": "ephemeral"}}),
        "max_tokens": json.dumps({k: v for k, v in body.items() if k != "max_tokens"}),
    }
    for needle, payload in bad.items():
        with pytest.raises(client.exceptions.ValidationException) as info:
            client.invoke_model(modelId=MODEL, body=payload)
        assert needle in info.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId=MODEL, messages=[])


def test_inference_profile_arn_is_read_as_its_model_id(agents: Any) -> None:
    """An inference-profile ARN (with '/' in the path) reaches the same cache as its id."""
    client = agents().client
    request = converse_request("ann", 1)
    whole = full("ann", 1, "converse")
    assert converse_counts(client.converse(**request)["usage"]) == (0, 0, whole, 0)
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{MODEL}"
    assert converse_counts(client.converse(**{**request, "modelId": arn})["usage"]) == (0, whole, 0, 0)


def converse_thread(blocks_after: int, *, tools: bool = False) -> dict[str, Any]:
    """Converse twin of the Anthropic ``long_thread``: system (uncached), a first question with a
    cache point, then ``blocks_after`` more blocks with a cache point only after the last.
    ``tools``: the middle blocks are one run of toolUse and toolResult blocks."""
    first: dict[str, Any] = {"role": "user", "content": [{"text": "Start the audit."}, point("5m")]}
    request: dict[str, Any] = {"modelId": MODEL, "system": [{"text": layers.SYSTEM}], "messages": [first]}
    if blocks_after == 0:
        return request
    first["content"] = [{"text": "Start the audit."}]
    if tools:
        n = (blocks_after - 1) // 2
        uses = [
            {"toolUse": {"toolUseId": f"t{i}", "name": "lookup_order", "input": {"id": str(i)}}}
            for i in range(n)
        ]
        results = [
            {"toolResult": {"toolUseId": f"t{i}", "content": [{"text": f"order {i} ok"}]}} for i in range(n)
        ]
        texts = [{"text": "Step 0 done."}]
        middle = [
            {"role": "assistant", "content": uses},
            {"role": "user", "content": [*results, *texts, point("5m")]},
        ]
    else:
        texts = [{"text": f"Step {i} done."} for i in range(blocks_after - 1)]
        middle = [
            {"role": "assistant", "content": [{"text": "Auditing."}]},
            {"role": "user", "content": [*texts, point("5m")]},
        ]
    request["messages"] = [first, *middle]
    return request


@pytest.mark.parametrize(
    ("blocks_after", "tools", "reads"), [(20, False, True), (21, False, False), (41, True, True)]
)
def test_converse_lookback_counts_tool_runs_as_one_position(
    agents: Any, blocks_after: int, tools: bool, reads: bool
) -> None:
    """A Converse cache point reads an earlier entry up to 20 block positions back (20: read,
    21: miss); a run of toolUse/toolResult blocks (20 of each here) counts as one position."""
    client = agents().client
    prefix = S + estimate_block("Start the audit.")
    assert converse_counts(client.converse(**converse_thread(0))["usage"]) == (0, 0, prefix, 0)
    got = converse_counts(client.converse(**converse_thread(blocks_after, tools=tools))["usage"])
    assert got[0] == 0 and got[1] == (prefix if reads else 0)


NOVA = "us.amazon.nova-pro-v1:0"


def test_nova_refuses_a_cache_point_among_tools(agents: Any) -> None:
    """Nova caches system and messages but no tools: a cachePoint in ``toolConfig.tools`` is a
    ``ValidationException``; the same request without it caches the system prompt."""
    client = agents().client
    request = {
        "modelId": NOVA,
        "system": [{"text": layers.SYSTEM}, point("5m")],
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "toolConfig": {"tools": [*T_SPECS, point("5m")]},
    }
    with pytest.raises(client.exceptions.ValidationException) as info:
        client.converse(**request)
    assert "toolConfig.tools" in info.value.response["Error"]["Message"]
    request["toolConfig"] = {"tools": T_SPECS}
    assert converse_counts(client.converse(**request)["usage"])[2] == T + S


@pytest.mark.parametrize("mode", ["converse", "converse_stream"])
def test_one_output_token_is_a_cut_word(agents: Any, mode: str) -> None:
    """``maxTokens=1`` answers with one token of text, never an empty ``{"text": ""}``."""
    client = agents().client
    request = {**converse_request("ann", 1), "inferenceConfig": {"maxTokens": 1}}
    if mode == "converse":
        response = client.converse(**request)
        text = response["output"]["message"]["content"][0]["text"]
        usage, stop = response["usage"], response["stopReason"]
    else:
        events = list(client.converse_stream(**request)["stream"])
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
        usage = events[-1]["metadata"]["usage"]
        stop = next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e)
    assert text and estimate_block(text) == usage["outputTokens"] == 1
    assert stop == "max_tokens"
