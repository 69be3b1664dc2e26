"""A deterministic token estimate, with no tokenizer: the emulator's usage counts come from it.

Method (the same input always gives the same count, on every machine and Python version):

* Text: ``ceil((chars + 1.5 * extra_utf8_bytes) / 4)``. English prose and code run about
  4 characters per token in the providers' BPE vocabularies; a character outside ASCII costs
  more (2-byte scripts such as Cyrillic or accented Latin about 0.6 tokens, 3-byte CJK about
  one token each), which the extra UTF-8 bytes stand for. Non-empty text is at least 1 token.
* JSON (tool schemas, ``tool_use`` input, anything that is not text or an image): the compact
  JSON rendering (keys in the caller's order) at 3 characters per token, since JSON is dense
  in quotes, braces and short keys.
* Images: Anthropic's published rule, ``width * height / 750`` after scaling the image down to
  fit 1568 px on its long edge and 1.15 megapixels. The size comes from declared ``width`` /
  ``height`` fields, else from a PNG or GIF header in inline base64 data, else a fixed
  :data:`IMAGE_DEFAULT_TOKENS`. OpenAI's ``detail: "low"`` is :data:`IMAGE_LOW_DETAIL_TOKENS`.

Expected error against the real tokenizers (cl100k/o200k, Claude's, Gemini's): within about
15% for English prose, 25% for source code and JSON, 40% for CJK text; image costs are exact
for Anthropic with a declared size and rough elsewhere. It is an estimate for the emulator, never
a bill: tests pin its exact outputs, not its closeness to any vendor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "IMAGE_DEFAULT_TOKENS",
    "IMAGE_LOW_DETAIL_TOKENS",
    "estimate_block",
    "estimate_image",
    "estimate_json",
    "estimate_text",
]

# Characters per token (see the module docstring).
_TEXT_CHARS_PER_TOKEN = 4
_JSON_CHARS_PER_TOKEN = 3
# Anthropic vision guide: tokens = width * height / 750; images larger than 1568 px on the
# long edge or 1.15 MP are scaled down first, so 1600 tokens is about the most one image costs.
_IMAGE_PIXELS_PER_TOKEN = 750
_IMAGE_MAX_EDGE = 1568
_IMAGE_MAX_PIXELS = 1_150_000
IMAGE_DEFAULT_TOKENS = 1600
IMAGE_LOW_DETAIL_TOKENS = 85  # OpenAI vision guide: a "low" detail image costs 85 tokens

_IMAGE_TYPES = frozenset({"image", "image_url", "input_image", "image_file"})
_IMAGE_KEYS = ("image", "inline_data", "inlineData", "image_url", "source")
_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})


def estimate_text(text: str) -> int:
    """Tokens in ``text``: about 4 characters each, more for characters outside ASCII."""
    n = len(text)
    if n == 0:
        return 0
    if text.isascii():
        return (n + _TEXT_CHARS_PER_TOKEN - 1) // _TEXT_CHARS_PER_TOKEN
    extra = len(text.encode("utf-8", "surrogatepass")) - n
    # ceil((n + 1.5 * extra) / 4) in integers
    return max(1, (2 * n + 3 * extra + 2 * _TEXT_CHARS_PER_TOKEN - 1) // (2 * _TEXT_CHARS_PER_TOKEN))


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def estimate_json(value: Any) -> int:
    """Tokens in the compact JSON rendering of ``value``, at 3 characters each."""
    if isinstance(value, str):
        return estimate_text(value)
    rendered = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    return (len(rendered) + _JSON_CHARS_PER_TOKEN - 1) // _JSON_CHARS_PER_TOKEN


def _pixels_to_tokens(width: int, height: int) -> int:
    if width <= 0 or height <= 0:
        return IMAGE_DEFAULT_TOKENS
    w, h = float(width), float(height)
    scale = min(1.0, _IMAGE_MAX_EDGE / max(w, h), (_IMAGE_MAX_PIXELS / (w * h)) ** 0.5)
    w, h = int(w * scale), int(h * scale)
    return max(1, (w * h + _IMAGE_PIXELS_PER_TOKEN - 1) // _IMAGE_PIXELS_PER_TOKEN)


def _sniff_size(data: Any) -> tuple[int, int] | None:
    """(width, height) from a PNG or GIF header: raw bytes, base64 text or a data: URL."""
    head: bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        head = bytes(data[:32])
    elif isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            head = base64.b64decode(text[:44], validate=False)
        except (binascii.Error, ValueError):
            return None
    else:
        return None
    # PNG: 8-byte signature, IHDR chunk; width and height big-endian at bytes 16..24.
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    # GIF: "GIF87a"/"GIF89a", width and height little-endian at bytes 6..10.
    if head[:4] == b"GIF8" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return None


def _declared_size(block: Mapping[str, Any], depth: int = 0) -> tuple[int, int] | None:
    width, height = block.get("width"), block.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return width, height
    if depth < 3:
        for key in _IMAGE_KEYS:
            inner = block.get(key)
            if isinstance(inner, Mapping):
                found = _declared_size(inner, depth + 1)
                if found is not None:
                    return found
    return None


def _image_data(block: Mapping[str, Any], depth: int = 0) -> Any:
    """The inline payload of an image block, in any provider's shape.

    Anthropic ``{"source": {"data": b64}}``, OpenAI ``{"image_url": {"url": "data:..."}}`` or
    ``{"image_url": "data:..."}``, Gemini ``{"inline_data": {"data": b64}}``, Bedrock
    ``{"image": {"source": {"bytes": b"..."}}}``.
    """
    for key in ("data", "bytes", "url", "image_url"):
        value = block.get(key)
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            return value
    if depth < 3:
        for key in _IMAGE_KEYS:
            inner = block.get(key)
            if isinstance(inner, Mapping):
                found = _image_data(inner, depth + 1)
                if found is not None:
                    return found
    return None


def _low_detail(block: Mapping[str, Any]) -> bool:
    if block.get("detail") == "low":
        return True
    inner = block.get("image_url")
    return isinstance(inner, Mapping) and inner.get("detail") == "low"


def estimate_image(block: Mapping[str, Any]) -> int:
    """Tokens of one image block: by its declared or sniffed size, else a fixed cost."""
    if _low_detail(block):
        return IMAGE_LOW_DETAIL_TOKENS
    size = _declared_size(block) or _sniff_size(_image_data(block))
    if size is None:
        return IMAGE_DEFAULT_TOKENS
    return _pixels_to_tokens(*size)


def _is_image(block: Mapping[str, Any]) -> bool:
    kind = block.get("type")
    if isinstance(kind, str):
        return kind in _IMAGE_TYPES
    if "image" in block and isinstance(block["image"], Mapping):
        return True  # Bedrock Converse {"image": {"format": ..., "source": ...}}
    inline = block.get("inline_data", block.get("inlineData"))
    if isinstance(inline, Mapping):
        mime = inline.get("mime_type", inline.get("mimeType", ""))
        return isinstance(mime, str) and mime.startswith("image/")
    return False


def estimate_block(payload: Any) -> int:
    """Tokens of any provider block payload: text, image, tool call, tool result or schema.

    A string is text; a list is the sum of its items; a mapping is an image, a text block
    (its ``text`` only: per-block framing is the caller's overhead), a ``tool_use`` / function
    call (name plus its input as JSON), a ``tool_result`` (its content, recursively) or, for
    anything else (tool definitions, JSON schemas), its JSON rendering.
    """
    if isinstance(payload, str):
        return estimate_text(payload)
    if isinstance(payload, (list, tuple)):
        return sum(estimate_block(item) for item in payload)
    if type(payload) is not dict and not isinstance(payload, Mapping):  # (dict first: no ABC check)
        return estimate_json(payload)
    if _is_image(payload):
        return estimate_image(payload)
    kind = payload.get("type")
    text = payload.get("text")
    if isinstance(text, str) and (kind is None or kind in _TEXT_TYPES):
        return estimate_text(text)
    if kind == "tool_use" or "toolUse" in payload:
        call = payload.get("toolUse", payload)
        if isinstance(call, Mapping):
            return estimate_text(str(call.get("name", ""))) + estimate_json(call.get("input", {}))
    if kind == "tool_result" or "toolResult" in payload:
        result = payload.get("toolResult", payload)
        if isinstance(result, Mapping):
            return estimate_block(result.get("content", ""))
    return estimate_json(payload)
