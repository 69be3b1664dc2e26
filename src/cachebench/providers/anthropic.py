"""Anthropic Messages API (also ``AnthropicBedrock`` and ``AnthropicVertex``, which report
usage the same way).

This is the adapter: the client, the response and the call's model. The Messages body itself
(its prompt in cache order, its usage fields as data, its stream's usage) is read in
``_messages_body``, shared with Bedrock's ``InvokeModel``; its names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import anthropic_min_tokens
from ..types import UNKNOWN_USAGE, Prompt, Usage
from ._base import fields, get, is_record, read_usage
from ._messages_body import DEFAULT_TTL as DEFAULT_TTL
from ._messages_body import MARKER as MARKER
from ._messages_body import SETTINGS_FIELDS as SETTINGS_FIELDS
from ._messages_body import USAGE as USAGE
from ._messages_body import StreamAccumulator as StreamAccumulator
from ._messages_body import build, diagnostics
from ._messages_body import build_prompt as build_prompt
from ._messages_body import request_settings as request_settings
from ._stainless import stainless_instrument

NAME = "anthropic"
_MESSAGES_PATHS = ("/v1/messages",)


def normalize_model(model: object) -> str | None:
    """The model name as the API and the price tables spell it (no normalisation fact applies)."""
    return model if isinstance(model, str) else None


def request_model(request: Mapping[str, Any]) -> str | None:
    return normalize_model(request.get("model"))


def parse_request(request: Mapping[str, Any]) -> Prompt:
    get_field = request.get
    return build(
        NAME,
        normalize_model(get_field("model")),
        get_field("tools"),
        get_field("system"),
        get_field("messages"),
        get_field(MARKER),
        request_settings(request),
    )


def prompt_from_parts(*, messages: Any, system: Any, tools: Any, model: str | None) -> Prompt:
    return build_prompt(provider=NAME, model=model, tools=tools, system=system, messages=messages)


def is_stream_request(request: Mapping[str, Any]) -> bool:
    return bool(request.get("stream"))


def usage(response: Any) -> Usage:
    """A ``Message`` (or its JSON) -> :class:`Usage`; no usage at all -> unknown."""
    f = fields(response)
    u = f.get("usage")
    if not is_record(u):
        return UNKNOWN_USAGE
    return read_usage(
        USAGE,
        u,
        model=normalize_model(f.get("model")),
        diagnostics=diagnostics(response) if f.get("diagnostics") is not None else None,
    )


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a Message or its JSON, a finished ``MessageStream``, or a list of events."""
    snapshot = getattr(response, "current_message_snapshot", None)
    if snapshot is not None:
        return usage(snapshot)
    if isinstance(response, (list, tuple)):
        acc = StreamAccumulator()
        for event in response:
            acc.add(event)
        return acc.usage()
    return usage(response)


def min_cacheable(model: str | None) -> int:
    """The model's minimum cacheable prefix (``facts``); below it markers are ignored."""
    return anthropic_min_tokens(model)


def read_tolerance(model: str | None) -> int:
    """Reads are exact on Anthropic: any shortfall against a live entry is a miss."""
    return 0


def read_step(model: str | None) -> int:
    """Reads are whole entries, counted exactly (0: no rounding)."""
    return 0


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator()


def owns_client(client: Any) -> bool:
    return type(client).__module__.split(".")[0] == "anthropic"


def owns_response(response: Any) -> bool:
    if type(response).__module__.split(".")[0] == "anthropic":
        return True
    return isinstance(response, Mapping) and response.get("type") == "message"


def _is_messages_call(options: Any) -> bool:
    url = get(options, "url", "")
    method = str(get(options, "method", "post")).lower()
    return method == "post" and isinstance(url, str) and url.rstrip("/").endswith(_MESSAGES_PATHS)


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch the client's ``request`` so every Messages call passes through ``observe``.

    Every resource method and helper (``create``, ``stream()``, ``with_raw_response``) of a
    Stainless client ends in ``client.request(cast_to, options, stream=, stream_cls=)``;
    the request body is ``options.json_data``. Clients made from it with
    ``copy()``/``with_options()`` (a new instance each) are instrumented too.
    """
    return stainless_instrument(client, hooks, _is_messages_call)
