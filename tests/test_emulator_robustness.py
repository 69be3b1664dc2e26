"""Requests the providers would refuse, on every route the emulator serves: a 4xx in the
provider's own error shape (raised by its SDK as its own error type), never a 5xx; and the
control routes' checks on what they are given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachebench.cachemodel import Knobs
from cachebench.emulator import EmulatorServer
from cachebench.testing import CacheEmulator

BEDROCK_MODEL = "us.anthropic.claude-sonnet-5-v1:0"
GEMINI_MODEL = "gemini-2.5-flash"

_KEYS = ["model", "max_tokens", "messages", "role", "content", "system", "tools", "type", "text"]
_KEYS += ["cache_control", "ttl", "stream", "anthropic_version", "cachePoint", "toolConfig"]
_KEYS += ["inferenceConfig", "maxTokens", "toolUse", "input", "instructions", "stream_options"]
_KEYS += ["include_usage", "max_output_tokens", "max_completion_tokens", "prompt_cache_key"]
_KEYS += ["prompt_cache_options", "prompt_cache_retention", "prompt_cache_breakpoint", "mode"]
_KEYS += ["contents", "parts", "systemInstruction", "generationConfig", "maxOutputTokens"]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 5000)
    | st.sampled_from(["", "user", "assistant", "model", "ephemeral", "5m", "30m", "explicit", "x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6),
    max_leaves=25,
)
_ROUTES = {"/v1/messages": "anthropic", "/v1/messages/count_tokens": "anthropic"}
_ROUTES |= {
    f"/model/{BEDROCK_MODEL}/{op}": "bedrock"
    for op in ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
}
_ROUTES |= {"/v1/chat/completions": "openai", "/v1/responses": "openai", "/openai/v1/responses": "openai"}
_ROUTES |= {
    f"/v1beta/models/{GEMINI_MODEL}:{method}": "gemini"
    for method in ("generateContent", "streamGenerateContent")
}


def assert_error_shape(family: str, response: httpx2.Response) -> None:
    """``response`` is a 4xx in ``family``'s error shape."""
    assert 400 <= response.status_code < 500, response.text
    err = response.json()
    if family == "anthropic":
        assert err["type"] == "error" and set(err["error"]) == {"type", "message"}
    elif family == "bedrock":
        assert set(err) == {"message"} and response.headers["x-amzn-errortype"]
    elif family == "openai":
        assert set(err["error"]) == {"message", "type", "param", "code"}
    else:
        assert set(err["error"]) == {"code", "message", "status"}
        assert err["error"]["code"] == response.status_code


@pytest.fixture(scope="module")
def fuzz_http() -> Iterator[httpx2.Client]:
    """An HTTP client on an emulator of its own (hypothesis reruns the test body, so the
    per-test ``cache_emulator`` fixture does not fit)."""
    with (
        EmulatorServer() as server,
        httpx2.Client(base_url=server.url, headers={"x-api-key": "fuzz"}) as http,
    ):
        yield http


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=8),
    route=st.sampled_from(sorted(_ROUTES)),
)
def test_arbitrary_bodies_never_get_a_server_error(
    fuzz_http: httpx2.Client, body: dict[str, Any], route: str
) -> None:
    """Whatever JSON object arrives on an Anthropic, Bedrock, OpenAI or Gemini route, the answer
    is a 200 or a 4xx in that provider's error shape, never a 5xx."""
    response = fuzz_http.post(route, content=json.dumps(body))
    if response.status_code != 200:
        assert_error_shape(_ROUTES[route], response)


# Gemini paths under /v1/ look like OpenAI ones.
_ALL_ROUTES = _ROUTES | {
    f"/v1/models/{GEMINI_MODEL}:{m}": "gemini" for m in ("generateContent", "streamGenerateContent")
}


@pytest.mark.parametrize("route", sorted(_ALL_ROUTES))
def test_wrong_method_is_a_405_in_the_routes_own_shape(cache_emulator: CacheEmulator, route: str) -> None:
    """A GET on a provider route is a 405 in the error shape of the provider the route
    belongs to, whatever its path looks like."""
    response = httpx2.get(f"{cache_emulator.url}{route}")
    assert response.status_code == 405
    assert_error_shape(_ALL_ROUTES[route], response)


def test_eighty_first_openai_breakpoint_is_the_sdks_bad_request_error(cache_emulator: CacheEmulator) -> None:
    """GPT-5.6 matches up to 80 ``prompt_cache_breakpoint`` markers; 81 are a 400 that the
    openai SDK raises as ``BadRequestError``, worded with OpenAI's marker."""
    marker = {"mode": "explicit", "ttl": "30m"}

    def parts(n: int) -> list[Any]:
        return [{"type": "text", "text": f"Part {i}.", "prompt_cache_breakpoint": marker} for i in range(n)]

    with openai.OpenAI(base_url=cache_emulator.openai_base_url, api_key="sk-test", max_retries=0) as client:
        ok = client.chat.completions.create(
            model="gpt-5.6", messages=[{"role": "user", "content": parts(80)}]
        )
        assert ok.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-5.6", messages=[{"role": "user", "content": parts(81)}])
    assert info.value.status_code == 400
    message = info.value.body["message"]  # type: ignore[index]
    assert message == "A maximum of 80 content parts with prompt_cache_breakpoint may be provided. Found 81."


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("knobs", {"error_rate": "0.5"}, "error_rate"),
        ("knobs", {"error_rate": 1, "error_status": 200}, "error_status"),
        ("knobs", {"miss_rate": 2}, "miss_rate"),
        ("knobs", {"latency_ms": -5}, "latency_ms"),
        ("knobs", {"seed": "abc"}, "seed"),
        ("knobs", {"scope": 7}, "scope"),
        ("advance", {"seconds": "nan"}, "seconds"),
        ("advance", {"seconds": -1}, "seconds"),
        ("advance", {"seconds": None}, "seconds"),
    ],
)
def test_control_routes_reject_out_of_range_values(
    cache_emulator: CacheEmulator, path: str, body: dict[str, Any], needle: str
) -> None:
    """``/_emulator/knobs`` and ``/_emulator/advance`` answer 400 with a message naming the
    field for a value no run could have, and change nothing: requests still succeed and the
    clock has not moved."""
    before = cache_emulator.clock()
    response = httpx2.post(f"{cache_emulator.url}/_emulator/{path}", content=json.dumps(body))
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]
    assert cache_emulator.clock() == before
    assert cache_emulator.emulator.knobs_for(None) == Knobs()


def test_python_api_rejects_out_of_range_values(cache_emulator: CacheEmulator) -> None:
    """The fixture's ``set_knobs`` and ``advance`` raise ``ValueError`` for what the control
    routes refuse, and leave the knobs and the clock as they were."""
    before = cache_emulator.clock()
    with pytest.raises(ValueError, match="error_status"):
        cache_emulator.set_knobs(error_rate=1.0, error_status=200)
    with pytest.raises(ValueError, match="seconds"):
        cache_emulator.advance(float("nan"))
    assert cache_emulator.emulator.knobs_for(None) == Knobs()
    assert cache_emulator.clock() == before


def test_control_routes_accept_valid_values(cache_emulator: CacheEmulator) -> None:
    """Valid knobs come back as the knobs in force; a finite advance moves the clock."""
    url = cache_emulator.url
    knobs = httpx2.post(f"{url}/_emulator/knobs", content=json.dumps({"error_rate": 0.25, "seed": 3}))
    assert knobs.status_code == 200 and knobs.json()["error_rate"] == 0.25
    before = cache_emulator.clock()
    moved = httpx2.post(f"{url}/_emulator/advance", content=json.dumps({"seconds": 1.5}))
    assert moved.status_code == 200 and moved.json()["clock"] == before + 1.5
