"""Provider error shapes: :class:`WireError`, each family's error JSON and status mapping, and
:class:`WireRoute`, which renders any error a handler raises (or any bug) in its provider's
shape, so a client never sees a traceback or a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("cachebench.emulator")

Handler = Callable[[Request], Awaitable[Response]]

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
        """This error as ``family``'s error JSON."""
        return error_response(
            family, self.status, self.message, kind=self.kind, param=self.param, code=self.code
        )


def error_type(family: str, status: int) -> str:
    """``family``'s error type for an HTTP ``status`` (its 4xx or 5xx default otherwise)."""
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


def error_response(family: str, status: int, message: str, **fields: str | None) -> Response:
    """``family``'s error JSON for ``status`` (``fields``: :func:`error_body`'s ``kind``,
    ``param``, ``code``), with its headers (Anthropic's ``request-id``)."""
    body, headers = error_body(family, status, message, **fields)
    if family == "anthropic":
        headers = {**headers, "request-id": "req_emulator"}
    return json_response(body, status=status, headers=headers)


def injected_error(family: str, knob_status: int) -> WireError:
    """The error a provider of ``family`` sends for an injected ``knob_status`` (429/500/529)."""
    status = _STATUS[family].get(knob_status, knob_status)
    return WireError(status, _INJECTED_MESSAGES.get(status, "Injected error."))


class WireRoute(Route):
    """A provider route: its handler guarded by :func:`guard`, and the ``family`` whose error
    shape a 404/405 on its path takes."""

    def __init__(self, family: str, path: str, handler: Handler, *, methods: list[str] | None = None) -> None:
        super().__init__(path, guard(family, handler), methods=methods or ["POST"])
        self.family = family


def guard(family: str, handler: Handler) -> Handler:
    """``handler`` with every :class:`WireError` rendered as ``family``'s error JSON, and any
    other exception (a bug) as its 500 error, logged. A client that left while sending its
    body is no bug: it gets a bare 400 that nobody reads."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except WireError as e:
            return e.response(family)
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception:
            log.exception("emulator bug while serving %s %s", request.method, request.url.path)
            return error_response(family, 500, "Internal error in the cachebench emulator.")

    guarded.__name__ = getattr(handler, "__name__", "endpoint")
    return guarded


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``body`` as compact JSON (orjson) with ``status`` and ``headers``."""
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}), media_type="application/json"
    )
