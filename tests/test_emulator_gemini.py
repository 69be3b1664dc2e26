"""The emulator's Gemini ``generateContent`` / ``streamGenerateContent`` through google-genai.

The SDK runs against the ``cache_emulator`` fixture's server on loopback
(``genai.Client(api_key=..., http_options=types.HttpOptions(base_url=...))``). Every client is
instrumented by a ``CacheTracker`` on the emulator's own clock and the tracked ``CallMetrics``
must equal the SDK's ``usage_metadata``. Gemini caches implicitly: the whole prompt, from
2048 tokens on 2.5 and 4096 on 3.x, exact (no rounding), 5 idle minutes, writes never
reported. Expected counts are computed here from the raw strings with
``cachebench.tokens.estimate_text`` (a text part is its text's tokens; roles add nothing), never
through the emulator's parser. The four-layer table, multi-turn growth and parallel cold calls
are in ``test_emulator_gemini_scenarios.py``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from cachebench import CacheTracker, CallMetrics
from cachebench.testing import CacheEmulator
from cachebench.tokens import estimate_text

FLASH = "gemini-2.5-flash"  # minimum 2048
PRO3 = "gemini-3-pro"  # minimum 4096
KEY = "gemini-emulator-tests"
MODES = ("sync", "async", "stream", "async_stream")
QUESTION = "Where is order 42?"


def policy(lines: int) -> str:
    return "".join(f"Policy line {i}: answer from the support handbook only. " for i in range(lines))


def request(system: str, question: str = QUESTION, model: str = FLASH, **config: Any) -> dict[str, Any]:
    """``generate_content`` keyword arguments."""
    return {
        "model": model,
        "contents": question,
        "config": types.GenerateContentConfig(system_instruction=system, **config),
    }


def tokens(*texts: str) -> int:
    """Prompt tokens of these text parts, from the raw strings."""
    return sum(estimate_text(t) for t in texts)


@functools.cache
def sized(target: int, below: bool = False) -> str:
    """A system instruction that, with :data:`QUESTION`, is the first prompt of at least
    ``target`` tokens (or the last one below it)."""
    lines = 1
    while tokens(policy(lines + 1), QUESTION) < target:
        lines += 1
    return policy(lines if below else lines + 1)


def counts(meta: Any) -> tuple[int, int | None]:
    """(inclusive prompt tokens, cached tokens or None) of ``usage_metadata``."""
    return meta.prompt_token_count, meta.cached_content_token_count


def agrees(m: CallMetrics, meta: Any) -> None:
    prompt, read = counts(meta)
    assert m.usage_known and not m.writes_reported
    assert (m.input_tokens, m.cache_read_tokens, m.cache_write_tokens) == (prompt - (read or 0), read or 0, 0)
    assert m.output_tokens == meta.candidates_token_count > 0


class Client:
    """A google-genai client of one API key, instrumented by one tracker."""

    def __init__(self, emu: CacheEmulator, key: str = KEY) -> None:
        self.tracker = CacheTracker(clock=emu.clock)
        self.genai = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=emu.gemini_base_url))
        self.tracker.instrument(self.genai)

    async def send(self, mode: str, kwargs: dict[str, Any]) -> tuple[int, int | None]:
        """One call in ``mode``; checks the stream's chunks and that the tracker agrees."""
        models, aio = self.genai.models, self.genai.aio.models
        if mode == "sync":
            meta = models.generate_content(**kwargs).usage_metadata
        elif mode == "async":
            meta = (await aio.generate_content(**kwargs)).usage_metadata
        else:
            if mode == "stream":
                chunks = list(models.generate_content_stream(**kwargs))
            else:
                chunks = [c async for c in await aio.generate_content_stream(**kwargs)]
            assert len(chunks) > 1
            metas = [c.usage_metadata for c in chunks]
            assert all(m is not None and counts(m) == counts(metas[-1]) for m in metas)
            outputs = [m.candidates_token_count for m in metas if m is not None]
            assert outputs == sorted(outputs)
            assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
            assert "".join(c.text or "" for c in chunks).startswith("Noted")
            meta = metas[-1]
        assert meta is not None
        last = self.tracker.calls()[-1]
        agrees(last, meta)
        assert last.stream == mode.endswith("stream")
        return counts(meta)


ClientFactory = Callable[..., Client]


@pytest.fixture
async def clients(cache_emulator: CacheEmulator) -> AsyncIterator[ClientFactory]:
    """``clients(key=KEY)`` builds a :class:`Client`; closed after the test."""
    made: list[Client] = []

    def make(key: str = KEY) -> Client:
        made.append(Client(cache_emulator, key))
        return made[-1]

    yield make
    for c in made:
        c.genai.close()
        await c.genai.aio.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_repeated_prompt_reads_all_of_it(clients: ClientFactory, mode: str) -> None:
    """A 3,000-token prompt reads nothing cold (``cached_content_token_count`` None), then the
    whole prompt, exactly; the tracker sees no writes reported."""
    kwargs = request(sized(3000))
    n = tokens(sized(3000), QUESTION)
    client = clients()
    assert await client.send(mode, kwargs) == (n, None)
    assert await client.send(mode, kwargs) == (n, n)


@pytest.mark.parametrize("mode", MODES)
async def test_new_question_reads_the_shared_prefix(clients: ClientFactory, mode: str) -> None:
    """Another question after the same system instruction reads the system instruction only."""
    system = sized(3000)
    client = clients()
    await client.send(mode, request(system, "first question"))
    assert await client.send(mode, request(system, "another question")) == (
        tokens(system, "another question"),
        tokens(system),
    )


async def test_minimum_prefix_per_model(clients: ClientFactory) -> None:
    """Below 2048 tokens gemini-2.5 caches nothing; a 3,000-token prompt is cached on 2.5 but
    not on gemini-3 (minimum 4096), where a 4,100-token prompt is."""
    client = clients()
    below = tokens(sized(2048, below=True), QUESTION)
    assert 2000 < below < 2048
    for _ in range(2):
        assert await client.send("sync", request(sized(2048, below=True))) == (below, None)
    for _ in range(2):
        assert await client.send("sync", request(sized(3000), model=PRO3)) == (
            tokens(sized(3000), QUESTION),
            None,
        )
    big = tokens(sized(4100), QUESTION)
    await client.send("sync", request(sized(4100), model=PRO3))
    assert await client.send("sync", request(sized(4100), model=PRO3)) == (big, big)


async def test_entries_expire_after_5_idle_minutes(
    cache_emulator: CacheEmulator, clients: ClientFactory
) -> None:
    """Each read refreshes the entry: reads 299 s apart keep hitting; 301 idle seconds lose it."""
    client = clients()
    kwargs = request(sized(3000))
    n = tokens(sized(3000), QUESTION)
    await client.send("sync", kwargs)
    for _ in range(3):
        cache_emulator.advance(299)
        assert await client.send("sync", kwargs) == (n, n)
    cache_emulator.advance(301)
    assert await client.send("sync", kwargs) == (n, None)


async def test_caches_are_scoped_by_api_key(clients: ClientFactory) -> None:
    """Another API key never reads this key's entries."""
    kwargs = request(sized(3000))
    await clients().send("sync", kwargs)
    assert await clients("gemini-other-team").send("sync", kwargs) == (tokens(sized(3000), QUESTION), None)


async def test_max_output_tokens_cuts_the_reply(clients: ClientFactory) -> None:
    """``max_output_tokens`` cuts the text; the finish reason is ``MAX_TOKENS``."""
    response = clients().genai.models.generate_content(**request("x", max_output_tokens=3))
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.usage_metadata and (response.usage_metadata.candidates_token_count or 0) <= 3


# -- the wire -----------------------------------------------------------------------------------


def rest_body(system: str, question: str = QUESTION) -> dict[str, Any]:
    return {
        "contents": [{"role": "user", "parts": [{"text": question}]}],
        "systemInstruction": {"parts": [{"text": system}]},
    }


def post(emu: CacheEmulator, path: str, body: Any, *, raw: bytes | None = None) -> httpx2.Response:
    return httpx2.post(
        f"{emu.gemini_base_url}/v1beta/models/{path}",
        content=raw if raw is not None else json.dumps(body).encode(),
        headers={"x-goog-api-key": KEY, "content-type": "application/json"},
    )


def test_wire_json_is_camel_case_and_omits_zero_cache_counts(cache_emulator: CacheEmulator) -> None:
    """``usageMetadata`` is camelCase with an inclusive ``promptTokenCount``;
    ``cachedContentTokenCount`` is absent on a miss and present on a hit; no write field."""
    body = rest_body(sized(3000))
    n = tokens(sized(3000), QUESTION)
    cold = post(cache_emulator, f"{FLASH}:generateContent", body).json()
    warm = post(cache_emulator, f"{FLASH}:generateContent", body).json()
    assert set(cold["usageMetadata"]) >= {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}
    assert "cachedContentTokenCount" not in cold["usageMetadata"]
    assert cold["usageMetadata"]["promptTokenCount"] == n
    assert warm["usageMetadata"]["cachedContentTokenCount"] == n
    meta = warm["usageMetadata"]
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
    assert not any("write" in k.lower() for k in meta)
    assert warm["modelVersion"] == FLASH
    assert warm["candidates"][0]["content"]["role"] == "model"


def test_stream_framing_sse_and_json_array(cache_emulator: CacheEmulator) -> None:
    """``?alt=sse`` sends ``data:`` events with cumulative usage in each; without it the
    chunks come as one JSON array, the same chunks."""
    body = rest_body("short prompt")
    sse = post(cache_emulator, f"{FLASH}:streamGenerateContent?alt=sse", body)
    assert sse.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    array = post(cache_emulator, f"{FLASH}:streamGenerateContent", body).json()
    assert isinstance(array, list)
    assert [e["usageMetadata"]["candidatesTokenCount"] for e in events] == [
        a["usageMetadata"]["candidatesTokenCount"] for a in array
    ]
    assert all("usageMetadata" in e and "promptTokenCount" in e["usageMetadata"] for e in events)
    assert [e["candidates"][0].get("finishReason") for e in events][-2:] == [None, "STOP"]


def test_malformed_and_invalid_requests_get_google_error_json(cache_emulator: CacheEmulator) -> None:
    """Malformed JSON, missing ``contents`` and a bad role are 400 INVALID_ARGUMENT; an
    unknown method is 404 NOT_FOUND; all in ``{"error": {"code", "message", "status"}}``."""
    cases = [
        (
            post(cache_emulator, f"{FLASH}:generateContent", None, raw=b'{"contents": ['),
            400,
            "INVALID_ARGUMENT",
        ),
        (post(cache_emulator, f"{FLASH}:generateContent", {"contents": []}), 400, "INVALID_ARGUMENT"),
        (
            post(
                cache_emulator,
                f"{FLASH}:generateContent",
                {"contents": [{"role": "bot", "parts": [{"text": "x"}]}]},
            ),
            400,
            "INVALID_ARGUMENT",
        ),
        (post(cache_emulator, f"{FLASH}:explode", rest_body("x")), 404, "NOT_FOUND"),
    ]
    for response, status, name in cases:
        assert response.status_code == status
        assert response.json() == {
            "error": {"code": status, "message": response.json()["error"]["message"], "status": name}
        }
        assert response.json()["error"]["message"]


async def test_bad_role_raises_the_sdks_client_error(clients: ClientFactory) -> None:
    """A request the API refuses raises google-genai's own ``ClientError`` with code 400."""
    client = clients()
    bad = types.Content(role="system", parts=[types.Part(text="hello")])
    with pytest.raises(errors.ClientError) as info:
        client.genai.models.generate_content(model=FLASH, contents=[bad])
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    ("knob", "code", "status", "error"),
    [
        (429, 429, "RESOURCE_EXHAUSTED", errors.ClientError),
        (500, 500, "INTERNAL", errors.ServerError),
        (529, 503, "UNAVAILABLE", errors.ServerError),
    ],
)
async def test_injected_errors_raise_the_sdks_error_and_write_nothing(
    cache_emulator: CacheEmulator,
    clients: ClientFactory,
    knob: int,
    code: int,
    status: str,
    error: type[Exception],
) -> None:
    """An injected error is google-genai's own exception with Google's code and status (an
    overload is 503 UNAVAILABLE), sync and streamed; the failed calls write nothing."""
    client = clients()
    kwargs = request(sized(3000))
    cache_emulator.set_knobs(error_rate=1.0, error_status=knob)
    with pytest.raises(error) as info:
        client.genai.models.generate_content(**kwargs)
    assert isinstance(info.value, errors.APIError)
    assert (info.value.code, info.value.status) == (code, status)
    with pytest.raises(error):
        async for _ in await client.genai.aio.models.generate_content_stream(**kwargs):
            pass
    cache_emulator.set_knobs(error_rate=0.0)
    n = tokens(sized(3000), QUESTION)
    assert await client.send("sync", kwargs) == (n, None)
    assert await client.send("sync", kwargs) == (n, n)
