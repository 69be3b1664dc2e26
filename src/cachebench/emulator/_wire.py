"""What every wire module shares: cache requests, scope, JSON bodies, knobs, reply text,
streamed responses, and the begin/started/abort protocol of one call.

A handler is written as::

    async def messages(request: Request) -> Response:
        body = await read_json(request, FAMILY, emu.max_body_bytes)  # WireError: 400, 413
        call = Call(emu, cache_request("anthropic", model, scope_of(request), render.anthropic(body)))
        await call.open()                                    # injected error, ttft, started()
        ...                                                  # the response, then call.finish()

and registered as a :class:`WireRoute` (:mod:`._errors`), which renders any
:class:`WireError` (and any bug) as the provider's own error JSON.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import xxhash
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..cachemodel import CacheRequest, CacheResult, CacheRuleError, Knobs
from ..tokens import estimate_text
from ._errors import WireError, injected_error
from ._requests import cache_request as cache_request

if TYPE_CHECKING:
    from .app import Emulator

# -- bodies ---------------------------------------------------------------------------------

_OPENAI_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)
# What each provider says about a body that is empty, not JSON, or not an object; the OpenAI
# one names ``param`` and ``code`` too.
_BODY_ERRORS: dict[str, tuple[str, str, str]] = {
    "anthropic": (
        "Request body is empty: expected a JSON object.",
        "Request body is not valid JSON: {detail}",
        "Request body must be a JSON object.",
    ),
    "openai": (_OPENAI_BAD_JSON, _OPENAI_BAD_JSON, "Invalid type for 'body': expected an object."),
    "gemini": (
        "Invalid JSON payload received. Empty body.",
        "Invalid JSON payload received. {detail}",
        "Invalid JSON payload received. Expected an object (GenerateContentRequest).",
    ),
}


# The emulator's default request size limit: Anthropic's documented limit for the Messages and
# Token Counting APIs (32 MB, "413 request_too_large"). Bedrock documents 20 MB for a Claude
# InvokeModel payload; OpenAI and Gemini document none this low. One limit serves every route:
# ``Emulator(max_body_bytes=...)``, ``cachebench emulate --max-body-mb``.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# What each provider answers for a body over the limit: (status, message). Gemini says it with
# a 400 INVALID_ARGUMENT, as Google's front end does; the others with a 413 in their shape.
_TOO_LARGE: dict[str, tuple[int, str]] = {
    "anthropic": (413, "Request exceeds the maximum allowed number of bytes ({limit})."),
    "openai": (413, "Request body too large: the maximum is {limit} bytes."),
    "bedrock": (413, "Request body too large: the maximum is {limit} bytes."),
    "gemini": (400, "Request payload size exceeds the limit: {limit} bytes."),
}


def too_large(family: str, limit: int) -> WireError:
    """``family``'s error for a request body over ``limit`` bytes."""
    status, message = _TOO_LARGE.get(family, _TOO_LARGE["anthropic"])
    return WireError(status, message.format(limit=limit))


async def read_body(request: Request, family: str, limit: int) -> bytes:
    """The body, or ``family``'s :func:`too_large` error as soon as it is known to exceed
    ``limit`` bytes: from ``Content-Length`` before reading anything, else (a chunked body)
    when the bytes read so far pass it. Nothing past the limit is kept; the server drops
    the rest of the body unread."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(family, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(family, limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: Request, family: str, limit: int) -> dict[str, Any]:
    """The body as a JSON object; :func:`too_large` when it is over ``limit`` bytes, a 400
    :class:`WireError` in ``family``'s words when it is empty, malformed or not an object
    (Bedrock's words are Anthropic's)."""
    empty, malformed, not_object = _BODY_ERRORS.get(family, _BODY_ERRORS["anthropic"])
    raw = await read_body(request, family, limit)
    if not raw.strip():
        raise WireError(400, empty)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise WireError(400, malformed.format(detail=e))
    if not isinstance(body, dict):
        if family == "openai":
            raise WireError(400, not_object, param="body", code="invalid_type")
        raise WireError(400, not_object)
    return body


def stream_response(
    head: Iterable[bytes], call: Call, tail: Iterable[bytes], *, media_type: str, headers: Mapping[str, str]
) -> StreamingResponse:
    """A streamed response: ``head`` at once, then :meth:`Call.finish` (the latency knob holds
    back the end), then ``tail``.

    The event loop gets a turn after every chunk. Without one, a stream whose chunks are all
    ready is written in one go: a client that disconnected is only noticed once the loop runs,
    and meanwhile asyncio's transport counts every write to the dead socket and, past its
    fifth, logs ``socket.send() raised exception.`` once per chunk. With it, the loop sees the
    disconnect within a write or two; uvicorn then drops what is still sent and Starlette
    stops the stream.
    """

    async def body() -> AsyncIterator[bytes]:
        for chunk in head:
            yield chunk
            await asyncio.sleep(0)
        await call.finish()
        for chunk in tail:
            yield chunk
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type=media_type, headers=dict(headers))


def scope_of(request: Request) -> str:
    """The credential a cache is scoped to: ``x-api-key``, ``x-goog-api-key``, ``?key=``, an
    ``Authorization: Bearer`` token, or the access key id of an AWS SigV4 ``Authorization``;
    ``"anonymous"`` without one."""
    h = request.headers
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if h.get(name):
            return h[name]
    key = request.query_params.get("key")
    if key:
        return key
    auth = h.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or "anonymous"
    if auth.startswith("AWS4-HMAC-SHA256"):
        # AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, ...
        _, _, rest = auth.partition("Credential=")
        akid = rest.split("/", 1)[0].strip()
        if akid:
            return akid
    return "anonymous"


# -- replies --------------------------------------------------------------------------------

_WORDS = ("Noted", "the", "cachebench", "emulator", "answers", "this", "request", "with", "reply")


@dataclass(frozen=True)
class Reply:
    """The deterministic answer to a request: ``stop`` is ``"end_turn"`` or ``"max_tokens"``."""

    text: str
    output_tokens: int
    stop: str


def reply(seed: bytes | str, max_tokens: int | None = None) -> Reply:
    """A short text that depends only on ``seed``, cut to ``max_tokens``: whole words while one
    fits, else the first word cut short (a provider always answers with a token or more);
    ``max_tokens=0`` (Anthropic's pre-warm) gives no text."""
    tag = xxhash.xxh3_64_hexdigest(seed.encode() if isinstance(seed, str) else seed)[:8]
    words = [*_WORDS, f"{tag}."]
    text = " ".join(words)
    if max_tokens is None or estimate_text(text) <= max_tokens:
        return Reply(text, estimate_text(text), "end_turn")
    if max_tokens <= 0:
        return Reply("", 0, "max_tokens")
    while len(words) > 1 and estimate_text(" ".join(words)) > max_tokens:
        words.pop()
    text = " ".join(words)
    while len(text) > 1 and estimate_text(text) > max_tokens:
        text = text[:-1]
    return Reply(text, estimate_text(text), "max_tokens")


def seed_of(call: Call) -> bytes:
    """What the reply text depends on: the model and the prompt's blocks."""
    req = call.request
    return req.model.encode() + b"".join(s.digest for s in req.segments)


def reply_chunks(text: str, size: int = 3) -> list[str]:
    """``text`` in pieces of ``size`` words (stream deltas), joining back to ``text``."""
    words = text.split(" ")
    return (
        [(" " if i else "") + " ".join(words[i : i + size]) for i in range(0, len(words), size)]
        if text
        else []
    )


# -- one call -------------------------------------------------------------------------------


class Call:
    """One request's path through the cache model.

    ``Call(...)`` refuses a model the provider does not serve (its own not-found error, unless
    the emulator serves ``any_model``), then runs ``cache.begin()`` (a :class:`CacheRuleError`
    becomes a 400), so the request's reads and pending writes are fixed when it arrives. :meth:`open` applies the
    knobs before the first response byte: an injected error aborts the pending writes and
    raises; otherwise it waits ``ttft_ms`` and calls ``started()``, making the writes
    readable. :meth:`finish` waits ``latency_ms`` before the end of the response. A call
    that is dropped without ``open()`` must be aborted (:meth:`abort`).

    ``markers`` names the family whose breakpoint marker the body uses, for rule errors
    (Bedrock InvokeModel: ``"anthropic"``); by default the request's own family.
    """

    def __init__(self, emu: Emulator, request: CacheRequest, *, markers: str | None = None) -> None:
        self.emu = emu
        self.cache = emu.cache  # the model this call began on, even if the emulator is reset meanwhile
        self.request = request
        self.family = request.family
        self.knobs: Knobs = self.cache.knobs_for(request.scope)
        emu.check_model(self.family, request.model)
        try:
            self.result: CacheResult = self.cache.begin(request)
        except CacheRuleError as e:
            raise WireError(400, e.worded(markers or self.family))
        self._open = False

    async def open(self) -> None:
        """Before the first response byte: raise an injected error (the pending writes are
        dropped) or wait ``ttft_ms``, then make this call's writes readable."""
        try:
            if self.emu.draw_error(self.knobs):
                raise injected_error(self.family, self.knobs.error_status)
            if self.knobs.ttft_ms > 0:
                await self.emu.sleep(self.knobs.ttft_ms / 1000)
        except BaseException:
            self.abort()
            raise
        self.cache.started(self.result.ticket)
        self._open = True

    async def finish(self) -> None:
        """Before the end of the response: wait ``latency_ms``."""
        if self.knobs.latency_ms > 0:
            await self.emu.sleep(self.knobs.latency_ms / 1000)

    def abort(self) -> None:
        """Drop the pending writes of a call that never opened (no-op once opened)."""
        if not self._open:
            self.cache.abort(self.result.ticket)
