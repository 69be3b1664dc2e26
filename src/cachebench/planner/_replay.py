"""Saved requests replayed through the emulator's cache model, for :mod:`cachebench.planner.offline`.

:func:`replay` runs one :class:`~._saved.SavedRequest` through a
:class:`~cachebench.cachemodel.CacheModel` with the emulator's own renderers
(:mod:`cachebench.emulator._render`, ``_render_openai``, ``_render_gemini``) and returns what
the tracker records: the request as the SDK call's arguments, and the response the provider
would have sent (its usage built by :mod:`cachebench.emulator._requests`, as the emulator's wire
builds it). No starlette. Each wire API is a row of :data:`APIS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import facts
from ..cachemodel import CacheModel, CacheRequest, CacheResult, CacheRuleError
from ..emulator import _render as render
from ..emulator import _render_openai as render_openai
from ..emulator import _requests as wire
from ..providers import detect_request
from ..types import Provider
from ._saved import ReplayError, Rereader, SavedRequest, Skipped

__all__ = ["API", "APIS", "InputOrder", "Replayed", "Timeline", "api_for", "in_time_order", "replay"]


# -- the APIs, as data ----------------------------------------------------------------------------


def _plain(result: CacheResult, model: str) -> dict[str, Any]:  # Anthropic, InvokeModel bodies
    return {"type": "message", "role": "assistant", "model": model, "usage": wire.anthropic_usage(result, 0)}


def _chat(result: CacheResult, model: str) -> dict[str, Any]:
    return {"object": "chat.completion", "model": model, "usage": wire.chat_usage(result, 0)}


def _responses(result: CacheResult, model: str) -> dict[str, Any]:
    return {"object": "response", "model": model, "usage": wire.responses_usage(result, 0)}


def _converse(result: CacheResult, model: str) -> dict[str, Any]:
    return {"stopReason": "end_turn", "usage": wire.converse_usage(result, 0)}


def _gemini(result: CacheResult, model: str) -> dict[str, Any]:
    return {"modelVersion": model, "usageMetadata": wire.gemini_usage(result, 0)}


def _gemini_body(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """google-genai's keyword arguments keep the system instruction, tools and cached content
    in ``config``; the REST body (what the renderer reads) at the top level."""
    config = body.get("config")
    if not isinstance(config, Mapping):
        return body
    lifted = {k: v for k, v in config.items() if k in ("system_instruction", "systemInstruction", "tools")}
    lifted.update((k, v) for k, v in config.items() if k in ("cached_content", "cachedContent"))
    return {**lifted, **{k: v for k, v in body.items() if k != "config"}}


@dataclass(frozen=True, slots=True)
class API:
    """One wire API: how its body becomes a cache request, the response the provider sends,
    and the SDK call's arguments the tracker records (with the model where the body has none).
    ``markers``: the family whose marker names a rule error's message."""

    name: str
    provider: Provider
    cache_request: Callable[[Mapping[str, Any], str, str], CacheRequest]
    response: Callable[[CacheResult, str], dict[str, Any]]
    call: Callable[[Mapping[str, Any], str], Mapping[str, Any]]
    markers: str
    normalize: Callable[[object], str | None] = lambda m: m if isinstance(m, str) and m else None


def _same(body: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    return body if body.get("model") == model else {**body, "model": model}


APIS = {
    "anthropic": API(
        "anthropic",
        Provider.ANTHROPIC,
        lambda b, m, s: wire.cache_request("anthropic", m, s, render.anthropic(b)),
        _plain,
        _same,
        "anthropic",
    ),
    "chat": API("chat", Provider.OPENAI, wire.openai_cache_request, _chat, _same, "openai"),
    "responses": API("responses", Provider.OPENAI, wire.openai_cache_request, _responses, _same, "openai"),
    "converse": API(
        "converse",
        Provider.BEDROCK,
        lambda b, m, s: wire.cache_request("bedrock", m, s, render.converse(b)),
        _converse,
        lambda b, m: {**b, "modelId": m},
        "bedrock",
        facts.bedrock_model_id,
    ),
    "invoke": API(
        "invoke",
        Provider.BEDROCK,
        lambda b, m, s: wire.cache_request("bedrock", m, s, render.anthropic(b)),
        _plain,
        lambda b, m: {"modelId": m, "body": b},
        "anthropic",
        facts.bedrock_model_id,
    ),
    "gemini": API(
        "gemini",
        Provider.GEMINI,
        lambda b, m, s: wire.gemini_cache_request(b, m, s),
        _gemini,
        _same,
        "gemini",
        facts.gemini_model_name,
    ),
}


def api_for(provider: Provider, body: Mapping[str, Any]) -> tuple[API, Mapping[str, Any], Any]:
    """The API a body of ``provider`` is for, the body its renderer reads, and the model the
    body itself names (None when it names none)."""
    if provider is Provider.OPENAI:
        api = APIS["responses" if render_openai.is_responses(body) else "chat"]
        return api, body, body.get("model")
    if provider is Provider.GEMINI:
        return APIS["gemini"], _gemini_body(body), body.get("model")
    if provider is Provider.BEDROCK:
        if "body" in body and "modelId" in body:  # boto3's invoke_model arguments
            inner = body["body"]
            if isinstance(inner, (str, bytes)):
                try:
                    inner = orjson.loads(inner)
                except orjson.JSONDecodeError:
                    raise ReplayError("modelId and body, but the body is not JSON")
            if not isinstance(inner, Mapping):
                raise ReplayError("modelId and body, but the body is not a JSON object")
            return APIS["invoke"], inner, body.get("modelId")
        if "anthropic_version" in body:
            return APIS["invoke"], body, None
        return APIS["converse"], body, body.get("modelId")
    return APIS["anthropic"], body, body.get("model")


@dataclass(frozen=True, slots=True)
class Replayed:
    """What the tracker records for one replayed request, and what of its cacheable prefix it
    did not read (``unread``)."""

    provider: Provider
    model: str
    call: Mapping[str, Any]  # the SDK call's arguments
    response: dict[str, Any]  # the provider's response (its usage)
    unread: int


def _unread(cache: CacheModel, request: CacheRequest, result: CacheResult) -> int:
    """What of the cacheable prefix the request did not read: its writes where the provider
    reports them; for implicit caching (no writes reported), the prompt through its last
    eligible block, when it reaches the model's minimum, less what it read."""
    if result.writes_reported:
        return result.cache_write_tokens
    segments = request.segments
    end = len(segments) if request.implicit_end is None else min(request.implicit_end, len(segments))
    eligible = sum(seg.tokens for seg in segments[:end])
    if eligible < cache.min_tokens(request.family, request.model):
        return 0
    return max(eligible - result.cache_read_tokens, 0)


def replay(
    cache: CacheModel, saved: SavedRequest, now: float, *, provider: Provider | None, model: str | None
) -> Replayed:
    """``saved`` through ``cache`` at ``now``; ``provider`` and ``model`` are the defaults for a
    request whose wrapper and body say none. :class:`ReplayError` says why it cannot be."""
    chosen = saved.provider or provider or detect_request(saved.body)
    if chosen is None:
        raise ReplayError(
            "cannot tell which provider this request is for (give the line a wrapper with"
            " 'provider', or --provider)"
        )
    api, body, own = api_for(chosen, saved.body)
    name = api.normalize(own) or api.normalize(saved.model) or api.normalize(model)
    if name is None:
        raise ReplayError(
            f"no model: a {api.name} request without one needs a wrapper's 'model' (or --model)"
        )
    try:
        request = api.cache_request(body, name, saved.scope or "offline")
        result = cache.handle(request, now)
    except CacheRuleError as exc:
        raise ReplayError(f"the provider would refuse it: {exc.worded(api.markers)}") from None
    return Replayed(
        api.provider, name, api.call(body, name), api.response(result, name), _unread(cache, request, result)
    )


# -- the order of a replay --------------------------------------------------------------------------

#: Every request's time, its place in the input, and where to find it again (the request itself,
#: or its file, line and byte offset).
Timeline = list[tuple[float, int, "SavedRequest | tuple[str, int, int]"]]


@dataclass(slots=True)
class InputOrder:
    """The input read in its own order, each request at its time: a request without a timestamp
    comes ``step`` after the one before it in the input (the first one, undated, at ``first``).

    :meth:`walk` yields each request while the input is in time order, and each line skipped;
    :attr:`in_order` says whether the input all was, :attr:`timeline` has every request for a
    replay in time order (:func:`in_time_order`) if not, and :attr:`sources` each source's
    place in the input."""

    first: float
    step: float
    sources: dict[str, int] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=list)
    in_order: bool = True

    def walk(self, items: Iterable[SavedRequest | Skipped]) -> Iterator[tuple[float, SavedRequest | Skipped]]:
        timeline = self.timeline
        sources = self.sources
        previous: float | None = None
        for item in items:
            sources.setdefault(item.source, len(sources))
            if isinstance(item, Skipped):
                yield 0.0, item
                continue
            now = item.timestamp
            if now is None:
                now = self.first if previous is None else previous + self.step
            self.in_order = self.in_order and (previous is None or now >= previous)
            previous = now
            timeline.append(
                (now, len(timeline), item if item.offset < 0 else (item.source, item.line, item.offset))
            )
            if self.in_order:
                yield now, item


def in_time_order(timeline: Timeline) -> Iterator[tuple[float, SavedRequest | Skipped]]:
    """The requests of ``timeline`` in time order (stable), read again from their files where
    they came from one; a line that no longer reads as a request (the file changed) is skipped."""
    timeline.sort(key=lambda entry: (entry[0], entry[1]))
    files = Rereader()
    try:
        for now, _, ref in timeline:
            yield now, ref if isinstance(ref, SavedRequest) else files.get(*ref)
    finally:
        files.close()
