"""Clients that leave in the middle of a streamed response: the emulator notices, stops writing
to them, logs nothing (asyncio's ``socket.send() raised exception.`` came once per chunk written
to a closed socket) and goes on serving everyone else.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from typing import Any

import anthropic
import pytest

from cachebench.testing import CacheEmulator

BEDROCK_MODEL = "us.anthropic.claude-sonnet-5-v1:0"
_TEXT = "Tell me about prompt caching. " * 20
_CLAUDE = {"max_tokens": 500, "messages": [{"role": "user", "content": _TEXT}]}
# Every streaming route, with a request that streams a reply of several chunks.
STREAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "anthropic": ("/v1/messages", {"model": "claude-sonnet-5", "stream": True, **_CLAUDE}),
    "openai-chat": (
        "/v1/chat/completions",
        {
            "model": "gpt-5.6",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": _TEXT}],
        },
    ),
    "openai-responses": ("/v1/responses", {"model": "gpt-5.6", "stream": True, "input": _TEXT}),
    "bedrock-converse": (
        f"/model/{BEDROCK_MODEL}/converse-stream",
        {"messages": [{"role": "user", "content": [{"text": _TEXT}]}]},
    ),
    "bedrock-invoke": (
        f"/model/{BEDROCK_MODEL}/invoke-with-response-stream",
        {"anthropic_version": "bedrock-2023-05-31", **_CLAUDE},
    ),
    "gemini": (
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": _TEXT}]}]},
    ),
}


def leave_mid_stream(port: int, path: str, body: dict[str, Any], *, read_first: bool) -> None:
    """Send a streaming request, maybe read its first bytes, then reset the connection."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: emulator\r\ncontent-type: application/json\r\n"
            f"x-api-key: sk-leaver\r\ncontent-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        if read_first:
            sock.recv(16)
        # SO_LINGER 0: close with a reset, as a client that is killed or times out does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("route", sorted(STREAMS))
def test_clients_leaving_mid_stream_leave_the_log_clean(
    cache_emulator: CacheEmulator, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    """Forty clients at once reset their connection during a stream (half before reading a
    byte, half after the first bytes): no warning is logged, and the next client is served."""
    path, body = STREAMS[route]
    port = int(cache_emulator.url.rsplit(":", 1)[1])
    caplog.set_level(logging.WARNING)
    leavers = [
        threading.Thread(target=leave_mid_stream, args=(port, path, body), kwargs={"read_first": i % 2 == 1})
        for i in range(40)
    ]
    for t in leavers:
        t.start()
    for t in leavers:
        t.join()
    time.sleep(0.3)  # the server writes its last chunks to the dead sockets meanwhile
    with anthropic.Anthropic(base_url=cache_emulator.url, api_key="sk-stayer", max_retries=0) as client:
        message = client.messages.create(
            model="claude-sonnet-5", max_tokens=20, messages=[{"role": "user", "content": "Hi."}]
        )
    assert message.content
    assert warnings_in(caplog) == []


def test_an_sdk_stream_closed_early_leaves_the_log_clean(
    cache_emulator: CacheEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """anthropic SDK streams closed after their first event (the response is closed, and with it
    the connection) log nothing on the emulator's side."""
    caplog.set_level(logging.WARNING)
    with anthropic.Anthropic(base_url=cache_emulator.url, api_key="sk-closer", max_retries=0) as client:
        for _ in range(20):
            stream = client.messages.create(model="claude-sonnet-5", stream=True, **_CLAUDE)  # type: ignore[call-overload]
            first = next(iter(stream))
            assert first.type == "message_start"
            stream.close()
    time.sleep(0.3)
    assert warnings_in(caplog) == []
