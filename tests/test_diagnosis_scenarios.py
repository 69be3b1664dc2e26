"""Per-call diagnosis scenarios through the real SDK clients on the emulator, for every provider
that can express them.

Each scenario drives one flow through ``anthropic`` (Messages, ``cache_control``), ``openai``
Chat Completions and Responses (GPT-5.6 explicit ``prompt_cache_breakpoint`` markers), ``boto3``
Bedrock Converse (``cachePoint``) and google-genai (Gemini implicit caching), all on the
``cache_emulator`` fixture with the tracker on the emulator's manual clock. Per call it checks
what the tracker concludes: ``miss_cause``; the diff's kind, value type and place (section,
block, and the byte range of the changed value in ``canonical((section, payload))`` of the
block, written out here by hand for each provider's request shape); the avoidable cost (above
zero when the miss was avoidable, exactly 0.0 when it was legitimate); the prefix-churn
incident (exactly one, opened within 8 calls of the first changed call) or its absence.

Where the provider has native diagnostics (Anthropic ``diagnostics.previous_message_id`` ->
``cache_miss_reason``; OpenAI Responses ``prompt_cache_options.comparison_response_id`` ->
``prompt_cache_diagnostics``), each call names the previous response of its conversation and
the tracker's place is compared with the provider's reason kept in ``CallMetrics.diagnostics``:
whenever the tracker names a place (a diff's section, or ``model_changed``) the provider must
name the same one, and whenever the provider finds no difference the tracker must name none.
Every comparison must agree.

Gemini caches implicitly, with one breakpoint before the newest user turn: it has no later
layer (its "later" variant is a second system part, in the same layer) and its newest turn is
never cached (no context variant).
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from google import genai
from google.genai import types

from cachebench import CacheTracker, CallMetrics, Regression
from cachebench.facts import anthropic_min_tokens, gemini_min_tokens, openai_min_tokens
from cachebench.fingerprint import canonical
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_text

from .scenario import SYSTEM

FLOW = "scenario"
GAP_S = 20.0  # simulated seconds between two calls of a scenario
START = datetime(2026, 11, 22, 9, 0, 0)

# -- prompts --------------------------------------------------------------------------------------

# Digit-free, so the only volatile value in a block is the one a scenario puts there.
POLICY = SYSTEM  # 1,260 tokens: above the 1,024-token minimum of claude-sonnet-5 and gpt-5.6
LONG_POLICY = SYSTEM + "Escalate refunds, chargebacks and legal threats to a human, politely. " * 70
SHORT_POLICY = "You are ACME's support agent. Answer briefly, cite the policy section. " * 20
PROFILE = "The customer prefers email, writes in English and has a Pro plan with priority routing. " * 12


def with_value(text: str, value: str, label: str = "Reference") -> str:
    """``text`` with ``label: value.`` between two of its sentences, a third of the way in."""
    sentences = text.split(". ")
    at = len(sentences) // 3
    return ". ".join([*sentences[:at], f"{label}: {value}", *sentences[at:]])


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]


def schema(
    order: tuple[str, ...] = ("type", "properties", "required"), props: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A JSON schema with its top-level keys in ``order`` and its properties in ``props`` order."""
    names = props or ("id", "customer", "channel", "priority", "locale", "since")
    whole: dict[str, Any] = {
        "type": "object",
        "properties": {p: {"type": "string", "description": f"The {p} to look up."} for p in names},
        "required": ["id"],
    }
    return {k: whole[k] for k in order}


TOOL_NAMES = ("order", "invoice", "shipment", "refund", "customer", "ticket")
TOOLS = tuple(
    Tool(f"lookup_{n}", f"Look up a {n} in the ACME back office by its id and return it as JSON.", schema())
    for n in TOOL_NAMES
)


@dataclass(frozen=True)
class Req:
    """One request in provider-neutral terms. ``system`` is the first system block (the flow's
    first layer with the tools); ``later`` a second system block after a breakpoint; ``context``
    a marked block of the user's own context before the question; ``history`` earlier
    (question, answer) pairs; ``mark_turn`` a breakpoint on the newest question."""

    system: str
    question: str = "Where is my order?"
    later: str | None = None
    context: str | None = None
    tools: tuple[Tool, ...] = ()
    model: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    mark_turn: bool = False


# -- one driver per provider API ------------------------------------------------------------------


class Driver:
    """One provider API's SDK client, wrapped by the scenario's tracker. ``native``: the API
    has cache diagnostics naming the previous response of a conversation."""

    name: ClassVar[str]
    model: ClassVar[str]
    other_model: ClassVar[str]  # priced, same caching rules: for the model switch
    native: ClassVar[bool] = False
    layered: ClassVar[bool] = True  # explicit breakpoints: the later blocks are layers of their own
    ttl_s: ClassVar[float] = 300.0
    min_tokens: ClassVar[int]

    def __init__(self, emu: CacheEmulator, clients: dict[str, Any], tracker: CacheTracker) -> None:
        self.emu = emu
        self.tracker = tracker
        self.previous: dict[str, str | None] = {}  # conversation -> its last response's id
        self.named: str | None = None  # the id the last call named for diagnostics
        client = clients.get(self.name)
        if client is None:  # one SDK client per API for the module (each loads its TLS context)
            client = clients[self.name] = self.connect(f"sk-diagnosis-{self.name}")
        self.create = tracker.wrap(self.method(client), flow=FLOW)

    def connect(self, key: str) -> Any:
        """A new SDK client of the emulator (closed with ``close()``)."""
        raise NotImplementedError

    def method(self, client: Any) -> Callable[..., Any]:
        """The client's method a call goes through."""
        raise NotImplementedError

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        raise NotImplementedError

    def policy(self) -> str:
        """A system prompt just above the model's minimum cacheable prefix."""
        return POLICY

    def send(self, req: Req, *, conversation: str = "main", diagnose: bool = True) -> Any:
        """One call; with ``diagnose`` (native APIs) it names the conversation's previous
        response and becomes the one the conversation's next call names."""
        diagnose = diagnose and self.native
        self.named = self.previous.get(conversation) if diagnose else None
        response = self.create(**self.body(req, self.named, diagnose))
        if diagnose:
            self.previous[conversation] = str(response.id)
        return response

    # The block payloads as the tracker hashes them (cache markers removed), by hand.
    def system_payload(self, text: str) -> Any:
        raise NotImplementedError

    def context_payload(self, text: str) -> Any:
        raise NotImplementedError

    def tool_payload(self, tool: Tool) -> Any:
        raise NotImplementedError


class AnthropicDriver(Driver):
    name = "anthropic"
    model = "claude-sonnet-5"
    other_model = "claude-opus-5"
    native = True
    min_tokens = anthropic_min_tokens("claude-sonnet-5")
    MARK: ClassVar[dict[str, str]] = {"type": "ephemeral"}

    def connect(self, key: str) -> Any:
        return anthropic.Anthropic(base_url=self.emu.anthropic_base_url, api_key=key, max_retries=0)

    def method(self, client: Any) -> Callable[..., Any]:
        return client.messages.create  # type: ignore[no-any-return]

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        system = [{"type": "text", "text": req.system, "cache_control": self.MARK}]
        if req.later is not None:
            system.append({"type": "text", "text": req.later, "cache_control": self.MARK})
        messages: list[dict[str, Any]] = []
        for q, a in req.history:
            messages += [
                {"role": "user", "content": [{"type": "text", "text": q}]},
                {"role": "assistant", "content": [{"type": "text", "text": a}]},
            ]
        content: list[dict[str, Any]] = []
        if req.context is not None:
            content.append({"type": "text", "text": req.context, "cache_control": self.MARK})
        question: dict[str, Any] = {"type": "text", "text": req.question}
        if req.mark_turn:
            question["cache_control"] = self.MARK
        messages.append({"role": "user", "content": [*content, question]})
        body: dict[str, Any] = {
            "model": req.model or self.model,
            "max_tokens": 16,
            "system": system,
            "messages": messages,
        }
        if req.tools:
            body["tools"] = [self.tool_payload(t) for t in req.tools]
        if diagnose:
            body["diagnostics"] = {"previous_message_id": compare_with}
        return body

    def system_payload(self, text: str) -> Any:
        return text  # a plain text part is hashed as its text

    def context_payload(self, text: str) -> Any:
        return ["user", text]

    def tool_payload(self, tool: Tool) -> Any:
        return {"name": tool.name, "description": tool.description, "input_schema": tool.schema}


OPENAI_MARK = {"mode": "explicit"}


class ChatDriver(Driver):
    name = "openai-chat"
    model = "gpt-5.6"
    other_model = "gpt-5.6-sol"
    ttl_s = 30 * 60.0  # the explicit breakpoints' default ttl
    min_tokens = openai_min_tokens("gpt-5.6")
    PART = "text"

    def connect(self, key: str) -> Any:
        return openai.OpenAI(base_url=self.emu.openai_base_url, api_key=key, max_retries=0)

    def method(self, client: Any) -> Callable[..., Any]:
        return client.chat.completions.create  # type: ignore[no-any-return]

    def part(self, text: str, marked: bool) -> dict[str, Any]:
        part: dict[str, Any] = {"type": self.PART, "text": text}
        return {**part, "prompt_cache_breakpoint": OPENAI_MARK} if marked else part

    def messages(self, req: Req) -> list[dict[str, Any]]:
        system = [self.part(req.system, True)]
        if req.later is not None:
            system.append(self.part(req.later, True))
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for q, a in req.history:
            messages += [
                {"role": "user", "content": [self.part(q, False)]},
                {"role": "assistant", "content": a},
            ]
        user = [self.part(req.context, True)] if req.context is not None else []
        user.append(self.part(req.question, req.mark_turn))
        messages.append({"role": "user", "content": user})
        return messages

    def tool(self, tool: Tool) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.schema},
        }

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": req.model or self.model,
            "max_completion_tokens": 16,
            "prompt_cache_options": {"mode": "explicit"},
            "messages": self.messages(req),
        }
        if req.tools:
            body["tools"] = [self.tool(t) for t in req.tools]
        return body

    def system_payload(self, text: str) -> Any:
        return ["system", text]

    def context_payload(self, text: str) -> Any:
        return ["user", text]

    def tool_payload(self, tool: Tool) -> Any:
        return self.tool(tool)


class ResponsesDriver(ChatDriver):
    name = "openai-responses"
    native = True
    PART = "input_text"

    def method(self, client: Any) -> Callable[..., Any]:
        return client.responses.create  # type: ignore[no-any-return]

    def tool(self, tool: Tool) -> dict[str, Any]:
        return {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.schema,
        }

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        options: dict[str, Any] = {"mode": "explicit"}
        if compare_with is not None:
            options["comparison_response_id"] = compare_with
        body: dict[str, Any] = {
            "model": req.model or self.model,
            "max_output_tokens": 16,
            "prompt_cache_options": options,
            "input": self.messages(req),
        }
        if req.tools:
            body["tools"] = [self.tool(t) for t in req.tools]
        return body


class PartsDriver(Driver):
    """Bedrock Converse and Gemini: a text block is hashed as ``{"text": ...}``."""

    def system_payload(self, text: str) -> Any:
        return {"text": text}

    def context_payload(self, text: str) -> Any:
        return ["user", {"text": text}]


class BedrockDriver(PartsDriver):
    name = "bedrock"
    model = "us.anthropic.claude-sonnet-5-v1:0"
    other_model = "us.anthropic.claude-opus-5-v1:0"
    min_tokens = anthropic_min_tokens("claude-sonnet-5")
    POINT: ClassVar[dict[str, Any]] = {"cachePoint": {"type": "default"}}

    def connect(self, key: str) -> Any:
        return boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=self.emu.bedrock_endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def method(self, client: Any) -> Callable[..., Any]:
        return client.converse  # type: ignore[no-any-return]

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        system: list[dict[str, Any]] = [{"text": req.system}, self.POINT]
        if req.later is not None:
            system += [{"text": req.later}, self.POINT]
        messages: list[dict[str, Any]] = []
        for q, a in req.history:
            messages += [
                {"role": "user", "content": [{"text": q}]},
                {"role": "assistant", "content": [{"text": a}]},
            ]
        user: list[dict[str, Any]] = [{"text": req.context}, self.POINT] if req.context is not None else []
        user.append({"text": req.question})
        if req.mark_turn:
            user.append(self.POINT)
        messages.append({"role": "user", "content": user})
        body: dict[str, Any] = {
            "modelId": req.model or self.model,
            "system": system,
            "messages": messages,
            "inferenceConfig": {"maxTokens": 16},
        }
        if req.tools:
            body["toolConfig"] = {"tools": [self.tool_payload(t) for t in req.tools]}
        return body

    def tool_payload(self, tool: Tool) -> Any:
        return {
            "toolSpec": {
                "name": tool.name,
                "description": tool.description,
                "inputSchema": {"json": tool.schema},
            }
        }


class GeminiDriver(PartsDriver):
    name = "gemini"
    model = "gemini-2.5-flash"
    other_model = "gemini-2.5-pro"
    layered = False
    min_tokens = gemini_min_tokens("gemini-2.5-flash")

    def connect(self, key: str) -> Any:
        return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=self.emu.gemini_base_url))

    def method(self, client: Any) -> Callable[..., Any]:
        return client.models.generate_content  # type: ignore[no-any-return]

    def policy(self) -> str:
        return LONG_POLICY  # gemini-2.5-flash caches from 2,048 tokens

    def body(self, req: Req, compare_with: str | None, diagnose: bool) -> dict[str, Any]:
        parts = [types.Part(text=req.system)]
        if req.later is not None:
            parts.append(types.Part(text=req.later))
        config = types.GenerateContentConfig(system_instruction=types.Content(parts=parts))
        if req.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name, description=t.description, parameters_json_schema=t.schema
                        )
                    ]
                )
                for t in req.tools
            ]
        contents: list[types.Content] = []
        for q, a in req.history:
            contents += [
                types.Content(role="user", parts=[types.Part(text=q)]),
                types.Content(role="model", parts=[types.Part(text=a)]),
            ]
        user = [types.Part(text=req.context)] if req.context is not None else []
        contents.append(types.Content(role="user", parts=[*user, types.Part(text=req.question)]))
        return {"model": req.model or self.model, "contents": contents, "config": config}

    def tool_payload(self, tool: Tool) -> Any:
        return {
            "functionDeclarations": [
                {"name": tool.name, "description": tool.description, "parametersJsonSchema": tool.schema}
            ]
        }


DRIVERS: dict[str, type[Driver]] = {
    d.name: d for d in (AnthropicDriver, ChatDriver, ResponsesDriver, BedrockDriver, GeminiDriver)
}
ALL = tuple(DRIVERS)
LAYERED = tuple(name for name, d in DRIVERS.items() if d.layered)


def test_prompt_sizes() -> None:
    """Every prompt is just above its model's minimum cacheable prefix (the short one below)."""
    for d in DRIVERS.values():
        size = estimate_text(LONG_POLICY if d is GeminiDriver else POLICY)
        assert d.min_tokens <= size < d.min_tokens + 1300
        assert estimate_text(SHORT_POLICY) < d.min_tokens // 2


# -- the harness ----------------------------------------------------------------------------------

# Provider-native reasons -> the places the tracker may name for them ("model": model_changed).
ANTHROPIC_REASONS = {
    "tools_changed": {"tools"},
    "system_changed": {"system"},
    "messages_changed": {"messages"},
    "model_changed": {"model"},
}
OPENAI_REASONS = {
    "tools_changed": {"tools"},
    "input_changed": {"system", "messages"},  # instructions and input are one "input"
    "model_changed": {"model"},
}


@dataclass
class Comparison:
    call: int
    tracker: str | None
    native: set[str] | None

    @property
    def agrees(self) -> bool:
        if self.native is None:
            return self.tracker is None
        return self.tracker in self.native


# Over the whole module, for the record: (provider, the tracker's place or "none", agreed) -> calls.
AGREEMENT: Counter[tuple[str, str, bool]] = Counter()


@dataclass
class Run:
    """One scenario: a tracker on the emulator's clock and one driver's client."""

    emu: CacheEmulator
    driver: Driver
    tracker: CacheTracker
    _opened: list[Regression]
    _alerts: list[CallMetrics]
    comparisons: list[Comparison] = field(default_factory=list)
    calls: list[CallMetrics] = field(default_factory=list)
    opened_at: int = -1  # the call after which the first incident was open

    @property
    def opened(self) -> list[Regression]:
        self.tracker.flush()  # the callbacks run on the tracker's consumer
        return self._opened

    @property
    def alerts(self) -> list[CallMetrics]:
        self.tracker.flush()
        return self._alerts

    def send(self, req: Req, *, conversation: str = "main", tick: float = GAP_S) -> CallMetrics:
        self.driver.send(req, conversation=conversation)
        m = self.tracker.calls()[-1]
        self.calls.append(m)
        if self.driver.native and self.driver.named is not None:
            self._compare(m)
        if self.opened_at < 0 and self.opened:
            self.opened_at = len(self.calls) - 1
        self.emu.advance(tick)
        return m

    def _compare(self, m: CallMetrics) -> None:
        place = "model" if m.miss_cause == "model_changed" else m.diff.section if m.diff is not None else None
        diag = m.diagnostics
        native: set[str] | None
        if self.driver.name == "anthropic":
            reason = (diag or {}).get("cache_miss_reason")
            if reason is None or reason.get("cache_missed_input_tokens") == 0:
                native = None  # no difference, or none in what was cached (a new question)
            elif reason["type"] in ANTHROPIC_REASONS:
                native = ANTHROPIC_REASONS[reason["type"]]
            else:
                return  # previous_message_not_found, unavailable: nothing compared
        else:
            assert diag is not None, "a comparison id was named: the response carries diagnostics"
            got = diag["prompt_cache_diagnostics"]
            if got["type"] == "cache_hit" or got.get("cache_missed_tokens") == 0:
                native = None
            elif got["type"] == "cache_miss" and got["reason"] in OPENAI_REASONS:
                native = OPENAI_REASONS[got["reason"]]
            else:
                return
        # The tracker says cold (a new customer, a new turn), expired... where the provider
        # names what differs from the previous request: both are right, nothing to compare. (A
        # call the tracker finds no miss in is compared: the provider must find no difference.)
        if place is None and native is not None and m.miss_cause is not None:
            return
        c = Comparison(len(self.calls) - 1, place, native)
        self.comparisons.append(c)
        AGREEMENT[self.driver.name, place or "none", c.agrees] += 1

    def assert_agreement(self, at_least: int) -> None:
        """Every comparison with the provider's own diagnostics agreed (native APIs only)."""
        if not self.driver.native:
            assert self.comparisons == []
            return
        assert [c for c in self.comparisons if not c.agrees] == []
        assert len(self.comparisons) >= at_least

    def churn(self) -> Regression:
        """The one incident of the scenario: prefix churn."""
        found = self.tracker.regressions()
        assert [r.kind for r in found] == ["prefix_churn"]
        assert [r.kind for r in self.opened] == ["prefix_churn"]  # raised once
        return found[0]

    def no_incident(self) -> None:
        assert self.tracker.regressions() == []
        assert self.opened == []


@pytest.fixture(scope="module")
def sdk_clients() -> Iterator[dict[str, Any]]:
    """The SDK clients of the module, one per API (made by the first test that needs it; the
    emulator empties its cache before each test), closed when the module ends."""
    made: dict[str, Any] = {}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture
def run(
    request: pytest.FixtureRequest, cache_emulator: CacheEmulator, sdk_clients: dict[str, Any]
) -> Iterator[Run]:
    """A :class:`Run` for the test's ``provider`` parameter, with a tracker of its own."""
    provider: str = request.node.callspec.params["provider"]
    opened: list[Regression] = []
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(
        clock=cache_emulator.clock, on_regression=opened.append, on_miss_alert=alerts.append
    )
    driver = DRIVERS[provider](cache_emulator, sdk_clients, tracker)
    yield Run(cache_emulator, driver, tracker, opened, alerts)
    tracker.close()


# -- per-call checks ------------------------------------------------------------------------------


def priced(m: CallMetrics, *, avoidable: bool) -> None:
    """An avoidable miss is priced above zero; a legitimate one (or a hit) at exactly 0.0."""
    assert m.cost_usd is not None and m.cost_usd > 0
    if avoidable:
        assert m.avoidable_tokens > 0
        assert m.avoidable_cost_usd is not None and m.avoidable_cost_usd > 0
    else:
        assert (m.avoidable_tokens, m.avoidable_cost_usd) == (0, 0.0)


def legit(m: CallMetrics, cause: str | None) -> None:
    """A call with a legitimate cause (or none) and no diff."""
    assert (m.miss_cause, m.diff) == (cause, None)
    priced(m, avoidable=False)


def block(driver: Driver, place: str, text: str) -> tuple[str, int, bytes]:
    """(section, index within it, canonical bytes) of the block a scenario's text is in."""
    if place == "first":
        section, index, payload = "system", 0, driver.system_payload(text)
    elif place == "later":
        section, index, payload = "system", 1, driver.system_payload(text)
    else:
        section, index, payload = "messages", 0, driver.context_payload(text)
    return section, index, canonical((section, payload))


def span(data: bytes, value: str) -> tuple[int, int]:
    """The byte range of the one occurrence of ``value`` in a block's canonical bytes."""
    raw = value.encode()
    assert data.count(raw) == 1
    at = data.index(raw)
    return at, at + len(raw)


def changed_range(before: bytes, after: bytes) -> tuple[int, int]:
    """The range of ``after`` that differs from ``before`` (common head and tail cut off)."""
    head = 0
    while head < min(len(before), len(after)) and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < min(len(before), len(after)) - head and before[-1 - tail] == after[-1 - tail]:
        tail += 1
    return head, len(after) - tail


# -- 1. volatile values ---------------------------------------------------------------------------


def values(value_type: str, n: int, seed: int = 11) -> list[str]:
    """``n`` distinct values of a kind, as an application would render them."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        if value_type == "timestamp":
            stamp = START + timedelta(seconds=GAP_S * i, microseconds=rng.randrange(1, 10**6))
            out.append(stamp.isoformat(timespec="microseconds"))
        elif value_type == "date":
            out.append((date(2026, 11, 22) + timedelta(days=i)).isoformat())
        elif value_type == "uuid":
            out.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        elif value_type == "hex_id":
            out.append(f"req_8f3a{rng.getrandbits(80):020x}")
        else:
            out.append(str(rng.randrange(1_000, 99_999)))
    assert len(set(out)) == n
    return out


PLACES = [
    (p, place) for p in ALL for place in ("first", "later", "context") if place == "first" or p in LAYERED
]


def placed(driver: Driver, place: str, text: str) -> Req:
    """A request whose ``place`` block is ``text`` (the others stable)."""
    policy = driver.policy()
    if place == "first":
        return Req(system=text)
    if place == "later":
        return Req(system=policy, later=text)
    return Req(system=policy, context=text)


def volatile_texts(driver: Driver, place: str, value_type: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` values and the block texts carrying them (the system prompt, or a profile)."""
    found = values(value_type, n)
    label = "Current time" if value_type == "timestamp" else "Reference"
    return found, [with_value(driver.policy() if place == "first" else PROFILE, v, label) for v in found]


@pytest.mark.parametrize("value_type", ["timestamp", "date", "uuid", "hex_id"])
@pytest.mark.parametrize(
    ("provider", "place"),
    [*PLACES, ("gemini", "later")],
)
def test_volatile_value(run: Run, provider: str, place: str, value_type: str) -> None:
    """A value that changes on every call (an ISO timestamp with microseconds, a date, a UUID,
    a ``req_...`` request id), in the first layer (the system prompt) or a later one (a second
    system block after a breakpoint; the user's marked context block before the question).

    Gemini has one implicit layer: its "later" block is a second system part after the shared
    one, a change of that layer all the same. It is a change wherever it is: from the second
    call on, each call is ``prefix_changed``
    with a ``volatile`` diff naming the value's type, its block and exactly its bytes, avoidable
    (priced above zero; for the context block see
    :func:`test_volatile_value_in_the_newest_turns_context_is_priced`), and the layer churns:
    one incident within 8 calls of the first change."""
    d = run.driver
    n = 10
    found, texts = volatile_texts(d, place, value_type, n)
    section, index, _ = block(d, place, texts[0])
    for i, text in enumerate(texts):
        m = run.send(placed(d, place, text))
        if i == 0:
            legit(m, "cold")
            continue
        # Nothing is read when the first layer changes; the first layer is read otherwise.
        assert m.cache_read_tokens == 0 if place == "first" else m.cache_read_tokens > 0
        assert m.miss_cause == "prefix_changed"
        assert m.diff is not None
        assert (m.diff.section, m.diff.block_index) == (section, index)
        assert (m.diff.kind, m.diff.value_type) == ("volatile", value_type)
        assert (m.diff.byte_start, m.diff.byte_end) == span(block(d, place, text)[2], found[i])
        if place != "context":
            priced(m, avoidable=True)
    churn = run.churn()
    assert 1 <= run.opened_at < 1 + 8  # within 8 calls of the first changed call
    assert churn.diff is not None
    assert (churn.diff.section, churn.diff.block_index) == (section, index)
    assert (churn.diff.kind, churn.diff.value_type) == ("volatile", value_type)
    assert run.alerts == []
    run.assert_agreement(n - 1)


@pytest.mark.parametrize("provider", LAYERED)
def test_volatile_value_in_the_newest_turns_context_is_priced(run: Run, provider: str) -> None:
    """A timestamp in the user's marked context block (in the newest user message, before the
    question): each call from the second on reads the system layer and writes the context
    again. The tracker says ``prefix_changed`` (volatile, avoidable); what the call wrote of
    the context layer is what a stable context would have read: priced above zero."""
    d = run.driver
    _, texts = volatile_texts(d, "context", "timestamp", 4)
    for i, text in enumerate(texts):
        m = run.send(placed(d, "context", text))
        if i:
            assert m.miss_cause == "prefix_changed" and m.cache_write_tokens > 0
            priced(m, avoidable=True)


@pytest.mark.parametrize(("provider", "place"), [pp for pp in PLACES if pp[1] != "first"])
def test_number_in_a_later_layer_is_cold(run: Run, provider: str, place: str) -> None:
    """A plain number that differs on every call in a later layer is another customer's or
    session's value: ``cold`` each time (legitimate, 0.0 avoidable), no diff, no incident."""
    d = run.driver
    _, texts = volatile_texts(d, place, "number", 10)
    for i, text in enumerate(texts):
        m = run.send(placed(d, place, text))
        legit(m, "cold")
        if i:
            assert m.cache_read_tokens > 0 and m.cache_write_tokens > 0
    run.no_incident()
    assert run.alerts == []


# -- 2. re-ordered tools --------------------------------------------------------------------------


def orders(n: int, seed: int) -> list[tuple[Tool, ...]]:
    """``n`` distinct orders of :data:`TOOLS`, the first the declared one."""
    rng = random.Random(seed)
    out = [TOOLS]
    while len(out) < n:
        shuffled = tuple(rng.sample(TOOLS, len(TOOLS)))
        if shuffled not in out:
            out.append(shuffled)
    return out


def first_moved(earlier: list[tuple[Tool, ...]], now: tuple[Tool, ...]) -> int:
    """The first position where ``now`` differs from the earlier order nearest to it (the one
    sharing the longest run of leading tools with it)."""

    def run_length(a: tuple[Tool, ...]) -> int:
        return next((k for k, (x, y) in enumerate(zip(a, now, strict=True)) if x != y), len(now))

    return max(run_length(a) for a in earlier)


@pytest.mark.parametrize("provider", ALL)
def test_reordered_tools(run: Run, provider: str) -> None:
    """The same tools shuffled on every call: from the second call each is ``prefix_changed``
    with a ``reordered`` diff in section ``tools`` naming the first moved tool (the whole
    block), avoidable; one incident within 8 calls."""
    d = run.driver
    n = 10
    sent = orders(n, seed=7)
    for i, tools in enumerate(sent):
        m = run.send(Req(system=d.policy(), tools=tools))
        if i == 0:
            legit(m, "cold")
            continue
        assert m.miss_cause == "prefix_changed"
        assert m.diff is not None
        k = first_moved(sent[max(0, i - 8) : i], tools)
        assert (m.diff.section, m.diff.block_index, m.diff.kind, m.diff.value_type) == (
            "tools",
            k,
            "reordered",
            None,
        )
        whole = canonical(("tools", d.tool_payload(tools[k])))
        assert (m.diff.byte_start, m.diff.byte_end) == (0, len(whole))
        priced(m, avoidable=True)
    churn = run.churn()
    assert 1 <= run.opened_at < 9
    assert churn.diff is not None and (churn.diff.section, churn.diff.kind) == ("tools", "reordered")
    run.assert_agreement(n - 1)


@pytest.mark.parametrize("provider", ["gemini"])
def test_gemini_timestamp_behind_stable_tools(run: Run, provider: str) -> None:
    """Gemini, the declared tools (stable, far below the 2,048-token minimum) before a system
    instruction stamped with the time: the provider reads nothing (its cache is keyed by the
    whole prefix), so from the second call each call is ``prefix_changed``, a ``volatile``
    timestamp in system block 0, exactly as without tools."""
    d = run.driver
    found, texts = volatile_texts(d, "first", "timestamp", 5)
    for i, text in enumerate(texts):
        m = run.send(Req(system=text, tools=TOOLS))
        assert m.cache_read_tokens == 0
        if i:
            assert m.miss_cause == "prefix_changed"
            assert m.diff is not None and (m.diff.section, m.diff.block_index) == ("system", 0)
            assert (m.diff.kind, m.diff.value_type) == ("volatile", "timestamp")
            assert (m.diff.byte_start, m.diff.byte_end) == span(block(d, "first", text)[2], found[i])


# -- 3. key order: JSON inside a text part, and tool schemas ---------------------------------------

PROFILE_FIELDS = {
    "name": "Ann Lee",
    "plan": "pro",
    "country": "NL",
    "language": "en",
    "channel": "email",
    "tier": "gold",
    "segment": "smb",
}


def profiles(n: int, seed: int) -> list[str]:
    """A user profile dumped with ``json.dumps`` of a dict whose keys come in another order on
    every call (the same content)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        keys = rng.sample(list(PROFILE_FIELDS), len(PROFILE_FIELDS))
        dumped = json.dumps({k: PROFILE_FIELDS[k] for k in keys})
        if dumped not in out:
            out.append(dumped)
    return out


@pytest.mark.parametrize(("provider", "place"), [pp for pp in PLACES if pp[1] != "context"])
def test_json_key_order_inside_a_text_part(run: Run, provider: str, place: str) -> None:
    """A user profile serialised with its keys in a random order on every call, inside the
    system prompt or a later system block: the same content rendered differently, so from the
    second call each is ``serialization_changed`` with a ``serialization`` diff whose range
    lies on the JSON, avoidable; one incident within 8 calls."""
    d = run.driver
    n = 10
    texts = [
        f"User profile: {p}. " + (d.policy() if place == "first" else PROFILE) for p in profiles(n, seed=5)
    ]
    for i, text in enumerate(texts):
        m = run.send(placed(d, place, text))
        if i == 0:
            legit(m, "cold")
            continue
        assert m.cache_read_tokens == 0 if place == "first" else m.cache_read_tokens > 0
        assert not m.unexpected_miss  # new bytes: nothing was expected of them
        assert m.miss_cause == "serialization_changed"
        section, index, data = block(d, place, text)
        assert m.diff is not None
        assert (m.diff.section, m.diff.block_index, m.diff.kind, m.diff.value_type) == (
            section,
            index,
            "serialization",
            None,
        )
        lo, hi = span(data, json.dumps(text.split("User profile: ")[1].split(". ")[0])[1:-1])
        assert m.diff.byte_start < hi and m.diff.byte_end > lo  # on the JSON ...
        assert lo - 64 <= m.diff.byte_start and m.diff.byte_end <= hi + 64  # ... and not beyond
        priced(m, avoidable=True)
    churn = run.churn()
    assert 1 <= run.opened_at < 9
    assert churn.diff is not None and churn.diff.kind == "serialization"
    assert run.alerts == []
    run.assert_agreement(n - 1)


def schema_orders(n: int, seed: int) -> list[dict[str, Any]]:
    """The same schema with its keys (top level and properties) in ``n`` distinct orders."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = [schema()]
    seen = {json.dumps(out[0])}
    props = ("id", "customer", "channel", "priority", "locale", "since")
    while len(out) < n:
        s = schema(
            tuple(rng.sample(("type", "properties", "required"), 3)), tuple(rng.sample(props, len(props)))
        )
        if json.dumps(s) not in seen:
            seen.add(json.dumps(s))
            out.append(s)
    return out


@pytest.mark.parametrize("provider", ALL)
def test_key_order_in_tool_schemas(run: Run, provider: str) -> None:
    """The same tools whose third schema is built from an unordered source, so its keys come
    in another order on every call: the prefix id (sorted keys) does not change, the provider
    (which caches the bytes it renders) misses; from the second call each is
    ``serialization_changed`` naming that tool, avoidable; one incident within 8 calls."""
    d = run.driver
    n = 10
    first_prefix: str | None = None
    for i, s in enumerate(schema_orders(n, seed=3)):
        tools = (*TOOLS[:2], replace(TOOLS[2], schema=s), *TOOLS[3:])
        m = run.send(Req(system=d.policy(), tools=tools))
        if i == 0:
            legit(m, "cold")
            first_prefix = m.prefix_id
            continue
        assert m.prefix_id == first_prefix is not None
        assert m.cache_read_tokens == 0  # the provider cached other bytes
        # Identical content within its TTL, unread: an unexpected miss, alerted.
        assert m.unexpected_miss
        assert m.miss_cause == "serialization_changed"
        assert m.diff is not None
        assert (m.diff.section, m.diff.block_index, m.diff.kind) == ("tools", 2, "serialization")
        assert 0 <= m.diff.byte_start < m.diff.byte_end <= len(canonical(("tools", d.tool_payload(tools[2]))))
        priced(m, avoidable=True)
    churn = run.churn()
    assert 1 <= run.opened_at < 9
    assert churn.diff is not None and (churn.diff.section, churn.diff.kind) == ("tools", "serialization")
    assert [a.miss_cause for a in run.alerts] == ["serialization_changed"] * (n - 1)
    run.assert_agreement(n - 1)


# -- 4. a re-indenting deploy ---------------------------------------------------------------------


def indented(text: str, width: int) -> str:
    """The prompt as a template renders it: one sentence a line, indented by ``width`` spaces."""
    return "\n".join(
        " " * width + sentence.strip(". ") + "." for sentence in text.split(". ") if sentence.strip()
    )


@pytest.mark.parametrize("provider", ALL)
def test_whitespace_reserialisation_once(run: Run, provider: str) -> None:
    """A deploy re-indents the system prompt once: the first call after it is
    ``serialization_changed`` (the same content, other whitespace; the range covers the
    re-indented bytes), priced as avoidable; every later call reads. No incident."""
    d = run.driver
    before, after = indented(d.policy(), 2), indented(d.policy(), 4)  # the same lines, re-indented
    for i in range(6):
        m = run.send(Req(system=before))
        legit(m, "cold" if i == 0 else None)
    for i in range(10):
        m = run.send(Req(system=after))
        if i:
            legit(m, None)
            continue
        assert m.miss_cause == "serialization_changed"
        assert m.diff is not None
        assert (m.diff.section, m.diff.block_index, m.diff.kind, m.diff.value_type) == (
            "system",
            0,
            "serialization",
            None,
        )
        old, new = block(d, "first", before)[2], block(d, "first", after)[2]
        lo, hi = changed_range(old, new)
        assert m.diff.byte_start <= lo and m.diff.byte_end >= hi
        priced(m, avoidable=True)
    run.no_incident()
    assert run.alerts == []
    run.assert_agreement(15)


# -- 5. per-user text before shared text ----------------------------------------------------------

USERS = ("Ann Lee", "Bob Stone", "Cem Arslan", "Dana Whitfield", "Eli Moreau", "Fay Okafor")


@pytest.mark.parametrize("provider", ALL)
def test_per_user_text_before_shared_text(run: Run, provider: str) -> None:
    """The user's name at the top of the system prompt, before the shared policy, in one
    cached layer; six users, each coming back twice within the TTL.

    Every user's first call writes the whole layer (the shared policy included). The tracker
    calls the second user's first call a ``prefix_changed`` (a localized content edit of the
    flow's first layer, naming the name's bytes, not avoidable: a one-off edit) and, once two
    values of the layer have been read back, the next users' first calls ``cold`` (another
    customer's value). Their returns read. No incident."""
    d = run.driver
    for u, name in enumerate(USERS):
        text = f"You are talking to {name}. " + d.policy()
        for visit in range(3):
            m = run.send(Req(system=text, question=f"Question {visit} from {name}?"), conversation=name)
            if visit:
                legit(m, None)
            elif u != 1:
                legit(m, "cold")
            else:
                assert m.miss_cause == "prefix_changed"
                assert m.diff is not None
                assert (m.diff.section, m.diff.block_index, m.diff.kind) == ("system", 0, "content")
                data = block(d, "first", text)[2]
                lo, hi = span(data, name)
                assert m.diff.byte_start <= lo and m.diff.byte_end >= hi
                priced(m, avoidable=False)
    run.no_incident()
    assert run.alerts == []
    run.assert_agreement(12)


# -- 6. model switch ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_model_switch(run: Run, provider: str) -> None:
    """The flow moves to another model: caches are per model, so its first call there is
    ``model_changed`` (legitimate: 0.0 avoidable, no diff) and the next ones read. No incident."""
    d = run.driver
    req = Req(system=d.policy())
    for i in range(4):
        legit(run.send(req), "cold" if i == 0 else None)
    other = replace(req, model=d.other_model)
    legit(run.send(other), "model_changed")
    for _ in range(4):
        legit(run.send(other), None)
    run.no_incident()
    run.assert_agreement(8)
    if d.native:
        assert run.comparisons[3].tracker == "model"


# -- 7. TTL expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_ttl_expiry(run: Run, provider: str) -> None:
    """Idle past the TTL (5 minutes; 30 for GPT-5.6's explicit breakpoints): the next call is
    ``ttl_expired`` (legitimate), the ones after it read. No incident."""
    d = run.driver
    req = Req(system=d.policy())
    legit(run.send(req), "cold")
    legit(run.send(req), None)
    run.emu.advance(d.ttl_s + 1)
    legit(run.send(req), "ttl_expired")
    legit(run.send(req), None)
    run.emu.advance(d.ttl_s - GAP_S - 1)  # still alive: a read refreshes the entry
    legit(run.send(req), None)
    run.no_incident()
    run.assert_agreement(4)


# -- 8. parallel fan-out --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_parallel_fan_out(run: Run, provider: str) -> None:
    """Six threads send the same cold prompt at once while the first token is slow: one call
    is ``cold``, its five twins ``concurrent`` (avoidable: priced above zero); the next call
    reads. No incident."""
    d = run.driver
    req = Req(system=d.policy())
    run.emu.set_knobs(ttft_ms=600)  # wide enough for six threads to start on a loaded machine
    barrier = threading.Barrier(6)

    def call(i: int) -> None:
        barrier.wait()
        d.send(replace(req, question=f"Question {i}?"), diagnose=False)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.emu.set_knobs(ttft_ms=0)
    burst = run.tracker.calls()
    assert sorted(m.miss_cause or "" for m in burst) == ["cold", *["concurrent"] * 5]
    for m in burst:
        assert m.diff is None and m.cache_read_tokens == 0
        priced(m, avoidable=m.miss_cause == "concurrent")
    legit(run.send(req), None)
    run.no_incident()


# -- 9. below the minimum -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
def test_below_minimum(run: Run, provider: str) -> None:
    """A marked prompt shorter than the model's minimum is never cached: every call is
    ``below_minimum`` (legitimate), none reads. No incident."""
    req = Req(system=SHORT_POLICY)
    for _ in range(5):
        m = run.send(req)
        legit(m, "below_minimum")
        assert (m.cache_read_tokens, m.cache_write_tokens) == (0, 0)
    run.no_incident()
    run.assert_agreement(4)


# -- 10. healthy multi-tenant, multi-turn traffic with one deploy ----------------------------------


def tenant_context(tenant: str) -> str:
    return f"Customer {tenant}: plan Pro, three open tickets, prefers email. " * 20


@pytest.mark.parametrize("provider", ALL)
def test_healthy_multi_tenant_traffic_with_one_deploy(run: Run, provider: str) -> None:
    """Tenants arriving over time, each a conversation of several turns interleaved with the
    others' (the shared system prompt, the tenant's context after a breakpoint, the
    conversation with a breakpoint on its newest question), and one deploy that edits the
    system prompt. No incident, no miss alert, no unexpected miss; causes are ``cold`` (a new
    tenant, a new turn) or None, except exactly one ``prefix_changed`` at the deploy (a
    one-off edit of the first layer: not avoidable)."""
    d = run.driver
    rng = random.Random(2026)
    policy = d.policy()
    deployed = with_value(policy, "refunds over forty euros need approval", "New rule")
    names = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell"]
    names += ["Cyberdyne", "Soylent", "Wonka", "Gringotts", "Oscorp", "Vandelay"]
    active: dict[str, list[tuple[str, str]]] = {}
    arrived = 0
    deploy_at = 36
    deploy_call: CallMetrics | None = None
    i = 0
    while active or arrived < len(names):
        if arrived < len(names) and (len(active) < 3 or rng.random() < 0.2):
            active[names[arrived]] = []
            arrived += 1
        tenant = rng.choice(sorted(active))
        history = active[tenant]
        question = f"{tenant} asks question {len(history)}?"
        req = Req(
            system=deployed if i >= deploy_at else policy,
            later=tenant_context(tenant),
            question=question,
            history=tuple(history),
            mark_turn=True,
        )
        m = run.send(req, conversation=tenant, tick=15)
        history.append((question, f"Answer {len(history)} for {tenant}."))
        if len(history) >= 5:
            del active[tenant]
        assert not m.unexpected_miss
        if i == deploy_at:
            deploy_call = m
            assert m.miss_cause == "prefix_changed"
            assert m.diff is not None
            assert (m.diff.section, m.diff.block_index, m.diff.kind) == ("system", 0, "content")
            lo, hi = changed_range(block(d, "first", policy)[2], block(d, "first", deployed)[2])
            assert m.diff.byte_start <= lo and m.diff.byte_end >= hi
            priced(m, avoidable=False)
        elif d.layered:
            # A new tenant's first turn writes its context; each turn writes its marked question.
            legit(m, "cold")
            assert i == 0 or m.cache_read_tokens > 0  # what earlier turns (or tenants) cached
        else:
            # Gemini's one implicit breakpoint ends before the newest question: a new tenant
            # reads the shared part and writes its context, a next turn reads what the previous
            # one sent and writes the answer it got: both new content, ``cold``.
            legit(m, "cold")
            assert i == 0 or m.cache_read_tokens > 0
        i += 1
    assert i == 5 * len(names)
    assert deploy_call is not None
    assert [m.miss_cause for m in run.calls].count("prefix_changed") == 1
    run.no_incident()
    assert run.alerts == []
    run.assert_agreement(20)
