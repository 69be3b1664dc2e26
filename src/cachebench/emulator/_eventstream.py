"""The AWS event-stream encoding (``application/vnd.amazon.eventstream``) that Bedrock's
streaming operations answer with and botocore's ``EventStream`` parses.

A message is a prelude (total length, headers length, CRC32 of those 8 bytes), the headers
(name length, name, type 7 = string, value length, value), the payload, and a CRC32 of
everything before it. Source: botocore ``eventstream.py`` (``EventStreamMessage``,
``_validate_prelude``, ``_parse_headers``).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from typing import Any

import orjson

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string ``headers`` and ``payload``."""
    parts: list[bytes] = []
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        parts.append(struct.pack(">B", len(n)) + n + struct.pack(">BH", _STRING, len(v)) + v)
    head = b"".join(parts)
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, body: Any) -> bytes:
    """An ``event`` message of type ``kind`` (``messageStart``, ``metadata``, ``chunk``...)."""
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, orjson.dumps(body))


def chunk(model_event: Any) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: the model's own event, base64 in JSON."""
    return event("chunk", {"bytes": base64.b64encode(orjson.dumps(model_event)).decode()})
