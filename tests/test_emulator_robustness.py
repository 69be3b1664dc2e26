"""Requests the providers would refuse, on every route the emulator serves: a 4xx in the
provider's own error shape (raised by its SDK as its own error type), never a 5xx; bodies
over the size limit and models the provider does not serve, each refused in the provider's
words; and the control routes' checks on what they are given.
"""

from __future__ import annotations

import gc
import http.client
import json
import random
import select
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import httpx2
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from hypothesis import given, settings
from hypothesis import strategies as st

from cachebench.cachemodel import MAX_MISS_GENERATORS, CacheRequest, Knobs
from cachebench.emulator import Emulator, EmulatorServer, ManualClock
from cachebench.emulator._models import known_model
from cachebench.emulator._wire import Call
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


# -- SDK clients ----------------------------------------------------------------------------

SDK_KEY = "sk-robustness"


def anthropic_call(url: str, model: str, text: str = "Hello.") -> Any:
    with anthropic.Anthropic(base_url=url, api_key=SDK_KEY, max_retries=0) as client:
        return client.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": text}])


def openai_call(url: str, model: str, text: str = "Hello.") -> Any:
    with openai.OpenAI(base_url=f"{url}/v1", api_key=SDK_KEY, max_retries=0) as client:
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def bedrock_call(url: str, model: str, text: str = "Hello.") -> Any:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIDROBUSTNESS",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": text}]}])


def gemini_call(url: str, model: str, text: str = "Hello.") -> Any:
    with genai.Client(api_key=SDK_KEY, http_options=genai_types.HttpOptions(base_url=url)) as client:
        return client.models.generate_content(model=model, contents=text)


# -- request size ---------------------------------------------------------------------------

LIMIT = 64 * 1024
# A valid request per family, its text to be padded, and what each answers past the limit.
_SIZED: dict[str, tuple[str, dict[str, Any]]] = {
    "anthropic": (
        "/v1/messages",
        {"model": "claude-sonnet-5", "max_tokens": 5, "messages": [{"role": "user", "content": "{pad}"}]},
    ),
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-5.6", "messages": [{"role": "user", "content": "{pad}"}]},
    ),
    "bedrock": (
        f"/model/{BEDROCK_MODEL}/converse",
        {"messages": [{"role": "user", "content": [{"text": "{pad}"}]}]},
    ),
    "gemini": (
        f"/v1beta/models/{GEMINI_MODEL}:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "{pad}"}]}]},
    ),
}
_TOO_LARGE_STATUS = {"anthropic": 413, "openai": 413, "bedrock": 413, "gemini": 400}


def sized_body(family: str, size: int) -> bytes:
    """``family``'s valid request, its text padded so the JSON is exactly ``size`` bytes."""
    template = json.dumps(_SIZED[family][1]).encode()
    pad = size - (len(template) - len(b"{pad}"))
    assert pad >= 0
    return template.replace(b"{pad}", b"x" * pad)


def assert_too_large(family: str, response: httpx2.Response, limit: int) -> None:
    """``response`` is ``family``'s answer to a body over ``limit`` bytes."""
    assert response.status_code == _TOO_LARGE_STATUS[family], response.text
    assert_error_shape(family, response)
    err = response.json()
    if family == "anthropic":
        assert err["error"]["type"] == "request_too_large"
    elif family == "bedrock":
        assert response.headers["x-amzn-errortype"].startswith("ValidationException:")
    elif family == "gemini":
        assert err["error"] == {
            "code": 400,
            "message": f"Request payload size exceeds the limit: {limit} bytes.",
            "status": "INVALID_ARGUMENT",
        }
    assert str(limit) in json.dumps(err)


@pytest.fixture(scope="module")
def small_limit() -> Iterator[EmulatorServer]:
    """An emulator that serves bodies of up to :data:`LIMIT` bytes."""
    with EmulatorServer(Emulator(clock=ManualClock(), max_body_bytes=LIMIT)) as server:
        yield server


def test_the_default_limit_is_anthropics_32_mb(cache_emulator: CacheEmulator) -> None:
    """Without ``max_body_bytes`` the limit is 32 MiB (Anthropic's documented Messages
    limit), reported by the health route; a limit below 1 byte is refused."""
    assert Emulator().max_body_bytes == 32 * 1024 * 1024
    health = httpx2.get(f"{cache_emulator.url}/_emulator/health").json()
    assert health["max_body_bytes"] == 32 * 1024 * 1024
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_body_bytes"):
            Emulator(max_body_bytes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("family", sorted(_SIZED))
def test_a_body_of_the_limit_is_served_and_one_byte_more_is_refused(
    small_limit: EmulatorServer, family: str, chunked: bool
) -> None:
    """A body of exactly the limit is answered 200; one byte more gets the provider's own "too
    large" error (Gemini's is a 400 INVALID_ARGUMENT), whether its size is declared
    (``Content-Length``) or only known by reading it (chunked)."""
    route = _SIZED[family][0]

    def post(body: bytes) -> httpx2.Response:
        content: Any = iter([body[:1000], body[1000:]]) if chunked else body
        return httpx2.post(f"{small_limit.url}{route}", content=content, headers={"x-api-key": SDK_KEY})

    assert post(sized_body(family, LIMIT)).status_code == 200
    assert_too_large(family, post(sized_body(family, LIMIT + 1)), LIMIT)


@pytest.mark.parametrize("family", sorted(_SIZED))
def test_a_declared_100_mb_body_is_refused_before_it_is_sent(
    cache_emulator: CacheEmulator, family: str
) -> None:
    """A request declaring 100 MB is refused from its headers alone: the answer comes while
    not one byte of the body has been sent."""
    host, port = cache_emulator.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", _SIZED[family][0])
        conn.putheader("content-type", "application/json")
        conn.putheader("x-api-key", SDK_KEY)
        conn.putheader("content-length", str(100 * 1024 * 1024))
        conn.endheaders()
        raw = conn.getresponse()
        response = httpx2.Response(raw.status, headers=raw.getheaders(), content=raw.read())
    finally:
        conn.close()
    assert_too_large(family, response, 32 * 1024 * 1024)


def test_a_chunked_100_mb_body_is_refused_once_past_the_limit(small_limit: EmulatorServer) -> None:
    """A chunked body (no declared size) is read only up to the limit: the 413 comes while the
    client is still sending, long before its 100 MB are through."""
    chunk = b"x" * (64 * 1024)
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", small_limit.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: emulator\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b'5\r\n{"a":\r\n'
        )
        while sent < 100 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            sock.sendall(frame)
            sent += len(chunk)
        head = sock.recv(65536)
        while head.startswith(b"HTTP/1.1 413 ") and b"request_too_large" not in head:
            more = sock.recv(65536)  # the body may come in a segment of its own
            if not more:
                break
            head += more
    assert head.startswith(b"HTTP/1.1 413 "), head[:100]
    assert b"request_too_large" in head
    assert sent < 50 * 1024 * 1024


def test_oversized_requests_raise_each_sdks_own_error(small_limit: EmulatorServer) -> None:
    """Past the limit, each SDK raises its own error: anthropic ``ContentTooLargeError``,
    openai ``APIStatusError`` (413), botocore ``ValidationException`` (413) and google-genai
    ``ClientError`` (400 INVALID_ARGUMENT)."""
    text = "x" * (LIMIT + 1)
    with pytest.raises(anthropic.ContentTooLargeError) as too_large:
        anthropic_call(small_limit.url, "claude-sonnet-5", text)
    assert too_large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as openai_error:
        openai_call(small_limit.url, "gpt-5.6", text)
    assert openai_error.value.status_code == 413
    with pytest.raises(ClientError) as bedrock_error:
        bedrock_call(small_limit.url, BEDROCK_MODEL, text)
    assert bedrock_error.value.response["Error"]["Code"] == "ValidationException"
    assert bedrock_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    with pytest.raises(genai_errors.ClientError) as gemini_error:
        gemini_call(small_limit.url, GEMINI_MODEL, text)
    assert (gemini_error.value.code, gemini_error.value.status) == (400, "INVALID_ARGUMENT")


# -- models ---------------------------------------------------------------------------------


def test_unknown_models_raise_each_sdks_not_found_error(cache_emulator: CacheEmulator) -> None:
    """A model the provider does not serve gets its own answer, raised by its SDK: Anthropic
    404 ``not_found_error`` (also from count_tokens), OpenAI 404 ``model_not_found``, Bedrock
    400 ``ValidationException`` (Converse and InvokeModel), Gemini 404 ``NOT_FOUND``."""
    url = cache_emulator.url
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_call(url, "claude-imaginary-9")
    assert info.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-imaginary-9"},
    }
    with (
        anthropic.Anthropic(base_url=url, api_key=SDK_KEY, max_retries=0) as client,
        pytest.raises(anthropic.NotFoundError),
    ):
        client.messages.count_tokens(
            model="claude-imaginary-9", messages=[{"role": "user", "content": "Hi."}]
        )

    with pytest.raises(openai.NotFoundError) as openai_info:
        openai_call(url, "gpt-imaginary")
    assert openai_info.value.code == "model_not_found"
    assert openai_info.value.body["message"] == (  # type: ignore[index]
        "The model `gpt-imaginary` does not exist or you do not have access to it."
    )

    with pytest.raises(ClientError) as bedrock_info:
        bedrock_call(url, "us.anthropic.claude-imaginary-9-v1:0")
    error = bedrock_info.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "ValidationException",
        400,
    )
    assert error["Error"]["Message"] == "The provided model identifier is invalid."
    invoke = httpx2.post(
        f"{url}/model/anthropic.claude-imaginary-9-v1:0/invoke",
        json={
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hi."}],
        },
    )
    assert invoke.status_code == 400 and invoke.headers["x-amzn-errortype"].startswith("ValidationException:")

    with pytest.raises(genai_errors.ClientError) as gemini_info:
        gemini_call(url, "gemini-9-ultra")
    assert (gemini_info.value.code, gemini_info.value.status) == (404, "NOT_FOUND")
    assert "models/gemini-9-ultra is not found" in str(gemini_info.value.message)


def test_any_model_serves_every_name() -> None:
    """``Emulator(any_model=True)`` answers the same made-up names with 200s, and says so on
    its health route."""
    with EmulatorServer(Emulator(any_model=True)) as server:
        url = server.url
        assert httpx2.get(f"{url}/_emulator/health").json()["any_model"] is True
        assert anthropic_call(url, "claude-imaginary-9").model == "claude-imaginary-9"
        assert openai_call(url, "gpt-imaginary").model == "gpt-imaginary"
        assert bedrock_call(url, "us.anthropic.claude-imaginary-9-v1:0")["stopReason"] == "end_turn"
        assert gemini_call(url, "gemini-9-ultra").text


@pytest.mark.parametrize(
    ("family", "model", "known"),
    [
        ("anthropic", "claude-sonnet-5", True),
        ("anthropic", "claude-3-5-haiku-20241022", True),
        ("anthropic", "claude-imaginary-9", False),
        ("anthropic", "gpt-4o", False),  # another provider's model
        ("openai", "gpt-5.6", True),
        ("openai", "o4-mini-2025-04-16", True),  # genai-prices only: no cache fact names it
        ("openai", "gpt-4o-mini", True),
        ("openai", "gpt-5.6-marked", False),
        ("openai", "claude-sonnet-5", False),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("bedrock", "us.amazon.nova-pro-v1:0", True),
        ("bedrock", "us.anthropic.claude-opus-4-8-v1:0", True),  # the Claude minimum table
        ("bedrock", "us.anthropic.claude-imaginary-9-v1:0", False),
        ("bedrock", "gpt-4o", False),
        ("gemini", "gemini-2.5-flash", True),
        ("gemini", "gemini-3-pro", True),  # the Gemini generation table only
        ("gemini", "gemma-3", True),
        ("gemini", "gemini-9-ultra", False),
        ("gemini", "claude-sonnet-5", False),  # genai-prices' Google list has Vertex's Claude
    ],
)
def test_known_models_come_from_the_price_data_and_the_cache_facts(
    family: str, model: str, known: bool
) -> None:
    """A model is known to a family when genai-prices prices it for that provider or the cache
    facts have an entry for it; Claude names are not Gemini models."""
    assert known_model(family, model) is known


# -- isolated misses ------------------------------------------------------------------------


def test_miss_generators_do_not_grow_with_the_number_of_api_keys() -> None:
    """With ``miss_rate`` on, 4,096 callers with distinct API keys leave at most 1,024 miss
    generators behind (a bound, not one ~3 KB generator per key ever seen)."""
    emu = Emulator(knobs=Knobs(miss_rate=0.5, seed=7))

    def generators() -> int:
        gc.collect()
        return sum(isinstance(o, random.Random) for o in gc.get_objects())

    before = generators()
    for i in range(4096):
        Call(emu, CacheRequest("anthropic", "claude-sonnet-5", f"sk-caller-{i}", segments=())).abort()
    assert generators() - before <= MAX_MISS_GENERATORS == 1024


def test_a_key_that_keeps_drawing_keeps_its_sequence() -> None:
    """The generators kept are the most recently used: a key drawing between 2,000 other keys
    keeps one sequence, the same one a fresh emulator with the same seed gives it."""
    emu = Emulator(knobs=Knobs(miss_rate=0.5, seed=7))
    fresh = Emulator(knobs=Knobs(miss_rate=0.5, seed=7))
    for i in range(2000):
        Call(emu, CacheRequest("anthropic", "claude-sonnet-5", f"sk-caller-{i}", segments=())).abort()
        assert emu.cache._draw_miss("sk-steady") == fresh.cache._draw_miss("sk-steady")
