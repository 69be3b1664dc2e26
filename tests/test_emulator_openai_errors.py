"""OpenAI request errors through the real ``openai`` SDK on the emulator: malformed bodies,
invalid cache fields, the 80-breakpoint cap and injected errors, each the SDK's own exception.

Clients and helpers come from ``test_emulator_openai``; every SDK call goes through a
``CacheTracker`` on the emulator's clock.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from cachebench.testing import CacheEmulator

from . import test_emulator_openai as base
from .test_emulator_openai import (
    KEY,
    NEW,
    OLD,
    QUESTION,
    ClientFactory,
    chat,
    responses,
    sized,
    stepped,
    tokens,
)

clients = base.clients

# -- errors -------------------------------------------------------------------------------------


def test_malformed_and_incomplete_requests_get_400_error_json(cache_emulator: CacheEmulator) -> None:
    """Malformed JSON, a missing model and missing messages are 400s in OpenAI's error shape."""
    url = cache_emulator.openai_base_url
    with httpx2.Client(headers={"authorization": f"Bearer {KEY}"}) as http:
        bad = http.post(f"{url}/chat/completions", content=b'{"model": ')
        no_model = http.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        no_messages = http.post(f"{url}/chat/completions", json={"model": OLD})
        no_input = http.post(f"{url}/responses", json={"model": OLD})
    for r in (bad, no_model, no_messages, no_input):
        assert r.status_code == 400
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    assert no_model.json()["error"]["message"] == "you must provide a model parameter"
    assert no_messages.json()["error"]["param"] == "messages"
    assert no_input.json()["error"]["code"] == "missing_required_parameter"


async def test_invalid_cache_fields_raise_the_sdks_bad_request_error(clients: ClientFactory) -> None:
    """Bad ``prompt_cache_retention``, ``prompt_cache_options.ttl`` or marker TTLs, and an empty
    ``messages``, raise ``openai.BadRequestError`` naming the parameter."""
    client = clients()
    part = {"type": "text", "text": "q", "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "5m"}}
    bad = [
        chat("x", prompt_cache_retention="forever"),
        chat("x", model=NEW, prompt_cache_options={"ttl": "1h"}),
        {"model": NEW, "messages": [{"role": "user", "content": [part]}]},
        {"model": OLD, "messages": []},
    ]
    params = []
    for body in bad:
        with pytest.raises(openai.BadRequestError) as info:
            client.sync.chat.completions.create(**body)
        params.append(info.value.param)
    assert params == [
        "prompt_cache_retention",
        "prompt_cache_options.ttl",
        "messages[0].content[0].prompt_cache_breakpoint.ttl",
        "messages",
    ]


@pytest.mark.parametrize(
    ("knob", "status", "error"),
    [
        (429, 429, openai.RateLimitError),
        (500, 500, openai.InternalServerError),
        (529, 503, openai.InternalServerError),
    ],
)
async def test_injected_errors_raise_the_sdks_error_and_write_nothing(
    cache_emulator: CacheEmulator, clients: ClientFactory, knob: int, status: int, error: type[Exception]
) -> None:
    """An injected error is the SDK's own exception with OpenAI's status (an overload is a
    503); the failed call writes nothing, so the next one is still cold."""
    client = clients()
    body = chat(sized(1500))
    cache_emulator.set_knobs(error_rate=1.0, error_status=knob)
    with pytest.raises(error) as info:
        client.sync.chat.completions.create(**body)
    assert getattr(info.value, "status_code", None) == status
    with pytest.raises(error):
        await client.aio.responses.create(**responses(body))
    assert client.tracker.calls()[-1].error is not None
    cache_emulator.set_knobs(error_rate=0.0)
    assert (await client.chat("sync", body))[1] == 0
    assert (await client.chat("sync", body))[1] == stepped(tokens(sized(1500), QUESTION))


def many_marks(count: int, api: str = "chat") -> dict[str, Any]:
    """A GPT-5.6 request whose one user message has ``count`` parts, each with a breakpoint."""
    kind = "text" if api == "chat" else "input_text"
    parts = [
        {
            "type": kind,
            "text": f"Clause {i}: " + "refunds follow the handbook. " * 3,
            "prompt_cache_breakpoint": {"mode": "explicit"},
        }
        for i in range(count)
    ]
    return {"model": NEW, "messages" if api == "chat" else "input": [{"role": "user", "content": parts}]}


def clause_tokens(count: int) -> int:
    return tokens(*(f"Clause {i}: " + "refunds follow the handbook. " * 3 for i in range(count)))


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_81_breakpoints_raise_bad_request_and_80_are_matched(clients: ClientFactory, api: str) -> None:
    """GPT-5.6 matches up to 80 ``prompt_cache_breakpoint`` markers: 81 raise
    ``openai.BadRequestError`` (400 ``invalid_request_error`` naming the cap and the marker; the
    tracker records the SDK's error and no usage). 80 are accepted; only the 4 longest entries
    are written, so a request ending at the 70th part reads nothing."""
    client = clients()
    create = client.sync.chat.completions.create if api == "chat" else client.sync.responses.create
    with pytest.raises(openai.BadRequestError) as info:
        create(**many_marks(81, api))
    assert (info.value.status_code, info.value.type) == (400, "invalid_request_error")
    assert "80" in info.value.message
    failed = client.tracker.calls()[-1]
    assert failed.error is not None and failed.error.startswith("BadRequestError")
    assert not failed.usage_known
    send = client.chat if api == "chat" else client.respond
    n = clause_tokens(80)
    assert n > 1024
    assert await send("sync", many_marks(80, api)) == (n, 0, n)
    assert await send("sync", many_marks(80, api)) == (n, n, 0)
    assert await send("sync", many_marks(70, api)) == (clause_tokens(70), 0, clause_tokens(70))
    # OpenAI's wording names its own marker (review item 16), not Anthropic's cache_control.
    assert "prompt_cache_breakpoint" in info.value.message
