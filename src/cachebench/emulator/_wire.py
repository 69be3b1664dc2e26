"""What every wire module shares: prompt segments, scope, JSON bodies, provider error shapes,
knobs, reply text, and the begin/started/abort protocol of one call.

A handler is written as::

    async def messages(request: Request) -> Response:
        body = await read_json(request)                      # WireError(400) when malformed
        call = Call(emu, cache_request("anthropic", model, scope_of(request), prompt))
        await call.open()                                    # injected error, ttft, started()
        ...                                                  # the response, then call.finish()

and registered through :func:`endpoint`, which renders any :class:`WireError` (and any bug) as
the provider's own error JSON: a client never sees a traceback or a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import xxhash
from starlette.requests import Request
from starlette.responses import Response

from ..cachemodel import CacheRequest, CacheResult, CacheRuleError, Knobs, Segment
from ..tokens import estimate_block, estimate_text
from ..types import Prompt

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("cachebench.emulator")

Handler = Callable[[Request], Awaitable[Response]]

# -- errors ---------------------------------------------------------------------------------

# Injected statuses per family: the knob says 429 | 500 | 529 in Anthropic's words; the other
# providers answer an overload with 503.
_STATUS = {
    "anthropic": {429: 429, 500: 500, 529: 529},
    "bedrock": {429: 429, 500: 500, 529: 503},
    "openai": {429: 429, 500: 500, 529: 503},
    "gemini": {429: 429, 500: 500, 529: 503},
}
# Error type per family and HTTP status (fallback: the 4xx or 5xx entry).
# Anthropic: https://docs.claude.com/en/api/errors; OpenAI: openai-python _exceptions.py and
# the API's error JSON; Bedrock: botocore bedrock-runtime service-2.json error shapes; Gemini:
# google.rpc.Code names (google-genai errors.py reads "status").
_TYPES: dict[str, dict[int, str]] = {
    "anthropic": {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    },
    "openai": {
        400: "invalid_request_error",
        404: "invalid_request_error",
        429: "requests",
        500: "server_error",
        503: "server_error",
    },
    "bedrock": {
        400: "ValidationException",
        404: "ResourceNotFoundException",
        429: "ThrottlingException",
        500: "InternalServerException",
        503: "ServiceUnavailableException",
    },
    "gemini": {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    },
}
_OPENAI_CODES = {429: "rate_limit_exceeded", 503: "server_overloaded"}
_INJECTED_MESSAGES = {
    429: "Rate limit exceeded (injected by the cachebench emulator).",
    500: "Internal server error (injected by the cachebench emulator).",
    503: "The service is temporarily overloaded (injected by the cachebench emulator).",
    529: "Overloaded (injected by the cachebench emulator).",
}


class WireError(Exception):
    """A request the provider would refuse, or an injected failure, as an HTTP status and a
    message; ``kind`` overrides the provider's error type for the status, ``param`` and
    ``code`` fill OpenAI's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def response(self, family: str) -> Response:
        return error_response(
            family, self.status, self.message, kind=self.kind, param=self.param, code=self.code
        )


def error_type(family: str, status: int) -> str:
    table = _TYPES[family]
    if status in table:
        return table[status]
    return table[400] if status < 500 else table[500]


def error_body(
    family: str,
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The provider's error JSON and extra headers for ``status``."""
    kind = kind or error_type(family, status)
    if family == "anthropic":
        # {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return {"type": "error", "error": {"type": kind, "message": message}}, {}
    if family == "openai":
        # {"error": {"message": ..., "type": "invalid_request_error", "param": null, "code": null}}
        return {
            "error": {
                "message": message,
                "type": kind,
                "param": param,
                "code": code or _OPENAI_CODES.get(status),
            }
        }, {}
    if family == "bedrock":
        # botocore's rest-json parser takes the code from x-amzn-ErrorType (before any ':')
        # and the message from the body.
        return {"message": message}, {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/"}
    if family == "gemini":
        # {"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}
        return {"error": {"code": status, "message": message, "status": kind}}, {}
    raise ValueError(f"unknown family {family!r}")


def error_response(
    family: str,
    status: int,
    message: str,
    *,
    kind: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> Response:
    body, headers = error_body(family, status, message, kind=kind, param=param, code=code)
    if family == "anthropic":
        headers = {**headers, "request-id": "req_emulator"}
    return json_response(body, status=status, headers=headers)


def injected_error(family: str, knob_status: int) -> WireError:
    """The error a provider of ``family`` sends for an injected ``knob_status`` (429/500/529)."""
    status = _STATUS[family].get(knob_status, knob_status)
    return WireError(status, _INJECTED_MESSAGES.get(status, "Injected error."))


def endpoint(family: str, handler: Handler) -> Handler:
    """``handler`` with every :class:`WireError` rendered as ``family``'s error JSON, and any
    other exception (a bug) as its 500 error, logged."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except WireError as e:
            return e.response(family)
        except Exception:
            log.exception("emulator bug while serving %s %s", request.method, request.url.path)
            return error_response(family, 500, "Internal error in the cachebench emulator.")

    guarded.__name__ = getattr(handler, "__name__", "endpoint")
    return guarded


# -- bodies and headers ---------------------------------------------------------------------


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}), media_type="application/json"
    )


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; :class:`WireError` 400 when empty, malformed or not an object."""
    raw = await request.body()
    if not raw.strip():
        raise WireError(400, "Request body is empty: expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise WireError(400, f"Request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise WireError(400, "Request body must be a JSON object.")
    return body


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


# -- segments -------------------------------------------------------------------------------

# Block types that form one lookback position when consecutive (PROVIDER_FACTS "Lookback").
_TOOL_USE = {"tool_use", "toolUse", "function_call", "functionCall", "server_tool_use"}
_TOOL_RESULT = {"tool_result", "toolResult", "function_call_output", "functionResponse", "tool"}


def digest(payload: Any) -> bytes:
    """xxh3_64 of the payload's JSON, keys in their given order (providers cache the bytes
    they render, so a reordered object is another prefix)."""
    try:
        data = orjson.dumps(payload)
    except TypeError:
        data = repr(payload).encode()
    return xxhash.xxh3_64_digest(data)


def block_kind(payload: Any) -> str:
    """``"tool_use"``, ``"tool_result"`` or the block's own type (``"text"`` by default)."""
    if isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], str):
        if payload[0] == "tool":  # an OpenAI chat tool message: ["tool", {...}]
            return "tool_result"
        payload = payload[1]
    if isinstance(payload, Mapping):
        kind = payload.get("type")
        if isinstance(kind, str):
            return _normal_kind(kind)
        for key in payload:
            if key in _TOOL_USE or key in _TOOL_RESULT:
                return _normal_kind(key)
    return "text"


def _normal_kind(kind: str) -> str:
    if kind in _TOOL_USE:
        return "tool_use"
    if kind in _TOOL_RESULT:
        return "tool_result"
    return kind


def _content(block_payload: Any, section: str) -> Any:
    """What a block's tokens are counted on: message blocks are ``[role, part]``."""
    if section == "messages" and isinstance(block_payload, list) and len(block_payload) == 2:
        return block_payload[1]
    return block_payload


def segments(prompt: Prompt, *, markers: bool = True) -> tuple[Segment, ...]:
    """The prompt's blocks as cache :class:`Segment` s, in cache order.

    ``markers=False`` drops every ttl (implicit caching: the model decides). The prompt's
    ``settings`` (Anthropic ``tool_choice``/``thinking``) are hashed into the first message
    block, so a change invalidates the messages part and nothing before it.
    """
    out: list[Segment] = []
    settings_pending = prompt.settings is not None
    for block in prompt.blocks:
        d = digest(block.payload)
        if settings_pending and block.section == "messages":
            d = digest([prompt.settings, d.hex()])
            settings_pending = False
        out.append(
            Segment(
                digest=d,
                tokens=estimate_block(_content(block.payload, block.section)),
                ttl=block.ttl if markers else None,
                kind=block_kind(block.payload),
            )
        )
    return tuple(out)


def cache_request(
    family: str,
    model: str,
    scope: str,
    prompt: Prompt,
    *,
    markers: bool = True,
    **fields: Any,
) -> CacheRequest:
    """A :class:`CacheRequest` for ``prompt``; ``fields`` are the other CacheRequest fields
    (``automatic``, ``implicit_end``, ``routing_key``, ``retention``, ``explicit``,
    ``overhead_tokens``)."""
    return CacheRequest(
        family=family, model=model, scope=scope, segments=segments(prompt, markers=markers), **fields
    )


# -- replies --------------------------------------------------------------------------------

_WORDS = ("Noted", "the", "cachebench", "emulator", "answers", "this", "request", "with", "reply")


@dataclass(frozen=True)
class Reply:
    """The deterministic answer to a request: ``stop`` is ``"end_turn"`` or ``"max_tokens"``."""

    text: str
    output_tokens: int
    stop: str


def reply(seed: bytes | str, max_tokens: int | None = None) -> Reply:
    """A short text that depends only on ``seed``, cut to ``max_tokens`` (0 gives no text)."""
    tag = xxhash.xxh3_64_hexdigest(seed.encode() if isinstance(seed, str) else seed)[:8]
    words = [*_WORDS, f"{tag}."]
    text = " ".join(words)
    if max_tokens is None or estimate_text(text) <= max_tokens:
        return Reply(text, estimate_text(text), "end_turn")
    while words and estimate_text(" ".join(words)) > max_tokens:
        words.pop()
    text = " ".join(words)
    return Reply(text, estimate_text(text) if text else 0, "max_tokens")


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

    ``Call(...)`` runs ``cache.begin()`` (a :class:`CacheRuleError` becomes a 400), so the
    request's reads and pending writes are fixed when it arrives. :meth:`open` applies the
    knobs before the first response byte: an injected error aborts the pending writes and
    raises; otherwise it waits ``ttft_ms`` and calls ``started()``, making the writes
    readable. :meth:`finish` waits ``latency_ms`` before the end of the response. A call
    that is dropped without ``open()`` must be aborted (:meth:`abort`).
    """

    def __init__(self, emu: Emulator, request: CacheRequest) -> None:
        self.emu = emu
        self.cache = emu.cache  # the model this call began on, even if the emulator is reset meanwhile
        self.request = request
        self.family = request.family
        self.knobs: Knobs = self.cache.knobs_for(request.scope)
        try:
            self.result: CacheResult = self.cache.begin(request)
        except CacheRuleError as e:
            raise WireError(400, str(e))
        self._open = False

    async def open(self) -> None:
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
        if self.knobs.latency_ms > 0:
            await self.emu.sleep(self.knobs.latency_ms / 1000)

    def abort(self) -> None:
        if not self._open:
            self.cache.abort(self.result.ticket)
