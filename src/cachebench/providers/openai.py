"""OpenAI Chat Completions and Responses APIs (also ``AzureOpenAI`` and ``AsyncOpenAI``).

Cache order is tools -> system/instructions -> conversation. Models before GPT-5.6 cache
implicitly (one implicit breakpoint: the end of the conversation before the newest user
turn; retention ``in_memory`` or ``24h``; hits in 128-token steps; writes free and not
reported). GPT-5.6 and later take explicit ``prompt_cache_breakpoint`` markers on content
parts (TTL ``30m``/``12h``) and report writes; with ``prompt_cache_options.mode`` implicit
(the default) they also keep the implicit breakpoint.

This is the adapter: usage, streams and the client. Requests are read in ``_openai_request``
(prompt building, settings, breakpoints), whose names are re-exported here.

Usage is *inclusive*: Chat ``prompt_tokens`` and Responses ``input_tokens`` count cached
and written tokens too; the uncached part is what is left after both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..facts import OPENAI_DEFAULT_MIN, OPENAI_READ_STEP, openai_min_tokens, openai_read_step
from ..facts import explicit_caching as explicit_caching
from ..facts import model_version as model_version
from ..fingerprint import to_plain
from ..types import UNKNOWN_USAGE, Usage
from ._base import TtlSplit, UsageTable, field, get, get_path, has_field, is_record, read_usage
from ._openai_request import DEFAULT_TTL as DEFAULT_TTL
from ._openai_request import EXPLICIT_DEFAULT_TTL as EXPLICIT_DEFAULT_TTL
from ._openai_request import EXPLICIT_TTLS as EXPLICIT_TTLS
from ._openai_request import MARKER as MARKER
from ._openai_request import NAME as NAME
from ._openai_request import RETENTIONS as RETENTIONS
from ._openai_request import SETTINGS_FIELDS as SETTINGS_FIELDS
from ._openai_request import build_prompt as build_prompt
from ._openai_request import is_responses_request as is_responses_request
from ._openai_request import is_stream_request as is_stream_request
from ._openai_request import normalize_model as normalize_model
from ._openai_request import parse_request as parse_request
from ._openai_request import prompt_from_parts as prompt_from_parts
from ._openai_request import request_model as request_model
from ._stainless import stainless_instrument

# Usage fields, as data. Sources: openai-python src/openai/types/completion_usage.py
# (CompletionUsage, PromptTokensDetails) and types/responses/response_usage.py (ResponseUsage,
# InputTokensDetails). The input counts INCLUDE cache reads and writes. The TTL split
# (``cache_write_tokens_details.{ttl_30m_tokens, ttl_12h_tokens}``) is read for its presence
# only: OpenAI's TTLs are 30m and 12h, none priced as a 1 h write, and the total is reported.
# Whether writes are reported depends on the model too (:func:`usage_from_fields`).
CHAT_USAGE = UsageTable(
    input_tokens=field("prompt_tokens"),
    input_includes_cache=True,
    cache_read_tokens=field(("prompt_tokens_details", "cached_tokens")),
    cache_write_tokens=field(("prompt_tokens_details", "cache_write_tokens")),
    output_tokens=field("completion_tokens"),
    ttl_split=TtlSplit(("prompt_tokens_details", "cache_write_tokens_details")),
)
RESPONSES_USAGE = UsageTable(
    input_tokens=field("input_tokens"),
    input_includes_cache=True,
    cache_read_tokens=field(("input_tokens_details", "cached_tokens")),
    cache_write_tokens=field(("input_tokens_details", "cache_write_tokens")),
    output_tokens=field("output_tokens"),
    ttl_split=TtlSplit(("input_tokens_details", "cache_write_tokens_details")),
)
# Fields that tell a Chat-shaped usage object from a Responses-shaped one.
_CHAT_USAGE_MARKS = ("prompt_tokens", "prompt_tokens_details", "completion_tokens")
_OBJECTS = ("chat.completion", "chat.completion.chunk", "text_completion", "response")

_CACHED_PATHS = ("/chat/completions", "/responses")

# Model generations and minimums are data in ``facts`` (shared with the cache model);
# these names stay importable from here.
READ_STEP_IMPLICIT = OPENAI_READ_STEP
DEFAULT_MIN_CACHEABLE = OPENAI_DEFAULT_MIN
min_cacheable = openai_min_tokens


def read_tolerance(model: str | None) -> int:
    """Before GPT-5.6 hits are rounded down to 128-token steps; from 5.6 on they are exact."""
    return openai_read_step(model)


def read_step(model: str | None) -> int:
    """Before GPT-5.6 a read is the cached prefix rounded down to 128-token steps."""
    return openai_read_step(model)


# -- usage ---------------------------------------------------------------------------------


def _diagnostics(response: Any) -> dict[str, Any] | None:
    diag = get(response, "prompt_cache_diagnostics")
    if diag is None:
        return None
    plain = to_plain(diag)
    return {"prompt_cache_diagnostics": plain} if plain else None


def _is_chat_usage(u: Any, kind: Any) -> bool:
    if any(has_field(u, name) for name in _CHAT_USAGE_MARKS):
        return True
    if has_field(u, "input_tokens") or has_field(u, "input_tokens_details"):
        return False
    return bool(kind != "response")


def usage_from_fields(
    u: Any, *, model: str | None = None, kind: Any = None, diagnostics: dict[str, Any] | None = None
) -> Usage:
    """Normalise a Chat ``usage`` or a Responses ``usage`` (object or dict; inclusive input)."""
    table = CHAT_USAGE if _is_chat_usage(u, kind) else RESPONSES_USAGE
    read = read_usage(table, u, model=model, diagnostics=diagnostics)
    if not read.known:
        return read
    # Models before GPT-5.6 report no writes; a 0 they may send still means "not reported".
    (write_path,) = table.cache_write_tokens
    writes_reported = get_path(u, write_path) is not None and (
        read.cache_write_tokens > 0 or model is None or explicit_caching(model)
    )
    return read if read.writes_reported == writes_reported else read._replace(writes_reported=writes_reported)


def _usage_obj(response: Any) -> Any:
    u = get(response, "usage")
    return u if is_record(u) else None


def usage(response: Any) -> Usage:
    """A ``ChatCompletion`` or ``Response`` (or their JSON) -> :class:`Usage`; no usage -> unknown."""
    u = _usage_obj(response)
    if u is None:
        return UNKNOWN_USAGE
    return usage_from_fields(
        u,
        model=normalize_model(get(response, "model")),
        kind=get(response, "object"),
        diagnostics=_diagnostics(response),
    )


class StreamFailed(Exception):
    """A Responses stream that ended in an ``error`` or ``response.failed`` event.

    The SDK yields those events instead of raising, so the call looks successful to the
    caller; :meth:`StreamAccumulator.error` reports it so the call can count as an error.
    """


def _failure(kind: str, err: Any) -> StreamFailed:
    code = get(err, "code") or get(err, "type") or kind
    message = get(err, "message") or ""
    return StreamFailed(f"{code}: {message}" if message else str(code))


class StreamAccumulator:
    """Folds Chat chunks or Responses stream events into the final :class:`Usage`.

    Chat: usage only in the last chunk (``choices: []``), and only when the request set
    ``stream_options={"include_usage": True}``; without it the usage is unknown, never 0.
    Responses: ``response.usage`` of the ``response.completed`` event (``response.incomplete``
    and ``response.failed`` carry it too).
    """

    __slots__ = ("_diag", "_error", "_kind", "_model", "_usage")

    def __init__(self) -> None:
        self._usage: Any = None
        self._kind: Any = None
        self._model: str | None = None
        self._diag: dict[str, Any] | None = None
        self._error: StreamFailed | None = None

    def add(self, event: Any) -> None:
        kind = get(event, "type")
        if kind == "error":
            self._error = _failure(kind, event)
            return
        if isinstance(kind, str) and kind.startswith("response."):
            response = get(event, "response")
            if response is None:
                return
            if kind == "response.failed":
                self._error = _failure(kind, get(response, "error"))
            self._take(response, "response")
            return
        self._take(event, get(event, "object"))

    def error(self) -> StreamFailed | None:
        """The failure a Responses stream reported in-band (None when it did not)."""
        return self._error

    def _take(self, source: Any, kind: Any) -> None:
        model = get(source, "model")
        if isinstance(model, str) and model:
            self._model = model
        u = _usage_obj(source)
        if u is not None:
            self._usage = u
            self._kind = kind
        self._diag = _diagnostics(source) or self._diag

    def usage(self) -> Usage:
        if self._usage is None:
            return UNKNOWN_USAGE
        return usage_from_fields(self._usage, model=self._model, kind=self._kind, diagnostics=self._diag)


def new_accumulator(request: Mapping[str, Any]) -> StreamAccumulator:
    return StreamAccumulator()


def recorded_usage(response: Any, request: Mapping[str, Any]) -> Usage:
    """``record()``: a ``ChatCompletion``/``Response`` or its JSON, a list of stream chunks or
    events, or a finished ``chat.completions.stream()``/``responses.stream()`` helper."""
    if isinstance(response, (list, tuple)):
        acc = StreamAccumulator()
        for event in response:
            acc.add(event)
        return acc.usage()
    state = getattr(response, "_state", None)
    if state is not None and not isinstance(response, Mapping):
        completed = getattr(state, "_completed_response", None)  # ResponseStream
        if completed is not None:
            return usage(completed)
        try:
            snapshot = getattr(response, "current_completion_snapshot", None)  # ChatCompletionStream
        except Exception:
            snapshot = None  # not started
        if snapshot is not None:
            return usage(snapshot)
    return usage(response)


# -- clients -------------------------------------------------------------------------------


def owns_client(client: Any) -> bool:
    return type(client).__module__.split(".")[0] == "openai"


def owns_response(response: Any) -> bool:
    if type(response).__module__.split(".")[0] == "openai":
        return True
    if isinstance(response, Mapping):
        kind = response.get("type")
        return response.get("object") in _OBJECTS or (isinstance(kind, str) and kind.startswith("response."))
    if isinstance(response, (list, tuple)) and response:
        return owns_response(response[0])
    return False


def _is_cacheable_call(options: Any) -> bool:
    url = get(options, "url", "")
    method = str(get(options, "method", "post")).lower()
    if method != "post" or not isinstance(url, str):
        return False
    return url.split("?", 1)[0].rstrip("/").endswith(_CACHED_PATHS)


def instrument(client: Any, hooks: Any) -> list[tuple[Any, str, Any]]:
    """Patch the client's ``request`` so every Chat Completions and Responses call is observed.

    ``create`` (sync, async, ``stream=True``), ``chat.completions.stream()``,
    ``responses.stream()``, ``parse()``, ``with_raw_response`` and ``with_streaming_response``
    all end in ``client.request(cast_to, options, stream=, stream_cls=)`` with a relative
    ``options.url`` (``AzureOpenAI`` adds its ``/deployments/...`` prefix later). Clients made
    from it with ``copy()``/``with_options()`` (a new instance each) are instrumented too.
    """
    return stainless_instrument(client, hooks, _is_cacheable_call)
