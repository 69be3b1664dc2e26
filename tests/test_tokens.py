"""The deterministic token estimate: exact outputs for text, JSON, images and every block shape."""

from __future__ import annotations

import base64
import struct

import pytest

from cachebench.tokens import (
    IMAGE_DEFAULT_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    estimate_block,
    estimate_image,
    estimate_json,
    estimate_text,
)


def png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x02\x00\x00\x00"


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("x" * 400, 100),
        ("日本語", 3),  # 3 chars, 6 extra UTF-8 bytes: ceil((3 + 9) / 4)
        ("привет", 4),  # 6 chars, 6 extra bytes: ceil((6 + 9) / 4)
    ],
)
def test_estimate_text(text: str, tokens: int) -> None:
    """Text costs ceil((chars + 1.5 * extra UTF-8 bytes) / 4) tokens; non-empty text at least 1."""
    assert estimate_text(text) == tokens


def test_estimate_text_is_proportional_and_deterministic() -> None:
    """Longer text never costs less, and the same text always costs the same."""
    prose = "The quick brown fox jumps over the lazy dog. " * 100
    assert estimate_text(prose) == estimate_text(prose) == 1125
    assert estimate_text(prose + "!") >= estimate_text(prose)


def test_estimate_json() -> None:
    """JSON costs its compact rendering (caller's key order) at 3 characters a token; bytes
    are rendered as base64 and a string is text."""
    assert estimate_json({"a": 1}) == 3  # {"a":1}
    schema = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    assert estimate_json(schema) == 32  # 95 characters
    assert estimate_json({"b": b"\x00\x01\x02"}) == 4  # {"b":"AAEC"}
    assert estimate_json("abcd") == 1
    assert estimate_json({1: (1, 2)}) == 4  # {"1":[1,2]}


def test_estimate_image_declared_and_sniffed_size() -> None:
    """Images cost width*height/750 after scaling into 1568 px and 1.15 MP; the size comes from
    declared fields or a PNG/GIF header; otherwise a fixed cost; OpenAI low detail is 85."""
    assert estimate_image({"type": "image", "width": 1000, "height": 1000}) == 1334
    assert estimate_image({"type": "image", "width": 4000, "height": 3000}) == 1532
    png = base64.b64encode(png_header(200, 100) + b"\x00" * 20).decode()
    assert estimate_image({"type": "image", "source": {"type": "base64", "data": png}}) == 27
    gif = b"GIF89a" + struct.pack("<HH", 300, 250) + b"\x00" * 10
    assert estimate_image({"image": {"format": "gif", "source": {"bytes": gif}}}) == 100
    data_url = "data:image/png;base64," + png
    assert estimate_image({"type": "image_url", "image_url": {"url": data_url}}) == 27
    assert (
        estimate_image({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}})
        == IMAGE_DEFAULT_TOKENS
    )
    assert estimate_image({"type": "image", "source": {"data": "not base64 at all"}}) == IMAGE_DEFAULT_TOKENS
    low = {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}}
    assert estimate_image(low) == IMAGE_LOW_DETAIL_TOKENS


def test_estimate_block_dispatch() -> None:
    """Blocks of every provider: strings and text blocks are text, lists add up, images go to
    the image rule, tool calls cost name + JSON input, tool results their content, and anything
    else (tool definitions) its JSON."""
    assert estimate_block("abcdefgh") == 2
    assert estimate_block({"type": "text", "text": "abcdefgh", "cache_control": {"type": "ephemeral"}}) == 2
    assert estimate_block({"text": "abcdefgh"}) == 2  # Bedrock / Gemini parts
    assert estimate_block(["abcd", {"type": "text", "text": "abcd"}]) == 2
    tool_use = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}
    assert estimate_block(tool_use) == estimate_text("get_weather") + estimate_json({"city": "Paris"}) == 9
    bedrock_use = {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
    assert estimate_block(bedrock_use) == 9
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny, 21C"}]}
    assert estimate_block(result) == 3
    assert estimate_block({"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny, 21C"}]}}) == 3
    inline = {
        "inline_data": {"mime_type": "image/png", "data": base64.b64encode(png_header(750, 1)).decode()}
    }
    assert estimate_block(inline) == 1
    assert estimate_block({"type": "image", "source": {"type": "url", "url": "u"}}) == IMAGE_DEFAULT_TOKENS
    tool = {"name": "f", "description": "d", "input_schema": {"type": "object"}}
    assert estimate_block(tool) == estimate_json(tool)
    assert estimate_block(12345) == 2
    assert estimate_block(None) == 2  # null
