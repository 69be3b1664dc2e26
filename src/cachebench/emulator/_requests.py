"""Rendered bodies as the cache model's requests, one function per wire family, and the usage
each provider reports for a :class:`~cachebench.cachemodel.CacheResult`.

Starlette-free: the wire modules build their calls and response bodies with these, and the
planner's offline explain (:mod:`cachebench.planner.offline`) replays saved request bodies
through the same functions without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import facts
from ..cachemodel import CacheRequest, CacheResult
from . import _render_openai
from ._render import Rendered
from ._render_gemini import gemini as render_gemini

__all__ = [
    "anthropic_usage",
    "cache_request",
    "chat_usage",
    "converse_usage",
    "gemini_cache_request",
    "gemini_usage",
    "openai_cache_request",
    "openai_rendered",
    "responses_usage",
]

_COMPLETION_DETAILS = (
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
)


# -- cache requests -------------------------------------------------------------------------


def cache_request(family: str, model: str, scope: str, rendered: Rendered, **fields: Any) -> CacheRequest:
    """A :class:`CacheRequest` for a rendered body (:mod:`._render`); ``fields`` are the other
    CacheRequest fields (``implicit_end``, ``routing_key``, ``retention``, ``explicit``,
    ``overhead_tokens``). The body's top-level automatic marker, if any, comes with it."""
    fields.setdefault("automatic", rendered.automatic)
    return CacheRequest(family=family, model=model, scope=scope, segments=rendered.segments, **fields)


def openai_rendered(body: Mapping[str, Any]) -> Rendered:
    """A Chat or Responses body as cache segments."""
    if _render_openai.is_responses(body):
        return _render_openai.responses(body)
    return _render_openai.chat(body)


def openai_cache_request(
    body: Mapping[str, Any], model: str, scope: str, rendered: Rendered | None = None
) -> CacheRequest:
    """The cache model's view of a Chat or Responses body (``rendered`` when already rendered).

    Before GPT-5.6 the whole prompt is cached implicitly (``implicit_end`` None, markers
    ignored) under the request's ``prompt_cache_retention``. From GPT-5.6 the prompt's
    breakpoints are the explicit markers plus, unless ``prompt_cache_options.mode`` is
    ``explicit``, the implicit one (``facts.openai_implicit_end``, the fact the tracker's
    adapter places it by too) with ``prompt_cache_options.ttl``.
    """
    if rendered is None:
        rendered = openai_rendered(body)
    fields: dict[str, Any] = {"routing_key": body.get("prompt_cache_key")}
    if facts.explicit_caching(model):
        options = body.get("prompt_cache_options") or {}
        implicit = options.get("mode", "implicit") == "implicit"
        fields["explicit"] = True
        fields["retention"] = options.get("ttl", facts.OPENAI_EXPLICIT_DEFAULT_TTL)
        n = len(rendered.segments)
        fields["implicit_end"] = facts.openai_implicit_end(model, rendered.turn_start, n) if implicit else 0
    else:
        fields["retention"] = body.get("prompt_cache_retention")
    return cache_request("openai", model, scope, rendered, **fields)


def gemini_cache_request(body: Mapping[str, Any], model: str, scope: str) -> CacheRequest:
    """The whole prompt (tools, system instruction, contents) is eligible for implicit caching:
    no breakpoint is marked (the cache model keeps an entry at every block boundary)."""
    return cache_request("gemini", model, scope, render_gemini(body))


# -- usage as each provider reports it ------------------------------------------------------


def anthropic_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """``usage`` as the Messages API sends it: ``input_tokens`` excludes cache tokens; the TTL
    split sits in ``cache_creation``."""
    return {
        "input_tokens": result.input_tokens,
        "cache_creation_input_tokens": result.cache_write_tokens,
        "cache_read_input_tokens": result.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": result.cache_write_tokens - result.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": result.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def converse_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """``TokenUsage``: ``inputTokens`` excludes cache tokens, ``totalTokens`` counts them all,
    ``cacheDetails`` splits the writes by TTL (1h before 5m; empty without writes)."""
    details = [
        {"ttl": ttl, "inputTokens": n}
        for ttl, n in sorted(result.cache_write_by_ttl.items(), key=lambda kv: kv[0] != "1h")
        if n
    ]
    return {
        "inputTokens": result.input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": result.total_input_tokens + output_tokens,
        "cacheReadInputTokens": result.cache_read_tokens,
        "cacheWriteInputTokens": result.cache_write_tokens,
        "cacheDetails": details,
    }


def chat_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """Chat ``usage``: inclusive ``prompt_tokens``; ``cache_write_tokens`` only when reported."""
    details: dict[str, Any] = {"cached_tokens": result.cache_read_tokens, "audio_tokens": 0}
    if result.writes_reported:
        details["cache_write_tokens"] = result.cache_write_tokens
    return {
        "prompt_tokens": result.total_input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": result.total_input_tokens + output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": dict.fromkeys(_COMPLETION_DETAILS, 0),
    }


def responses_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """Responses ``usage``: inclusive ``input_tokens``; the write count and its TTL split
    (``ttl_30m_tokens``/``ttl_12h_tokens``) only when reported."""
    details: dict[str, Any] = {"cached_tokens": result.cache_read_tokens}
    if result.writes_reported:
        by_ttl = result.cache_write_by_ttl
        details["cache_write_tokens"] = result.cache_write_tokens
        details["cache_write_tokens_details"] = {
            "ttl_30m_tokens": by_ttl.get("30m", 0),
            "ttl_12h_tokens": by_ttl.get("12h", 0),
        }
    return {
        "input_tokens": result.total_input_tokens,
        "input_tokens_details": details,
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": result.total_input_tokens + output_tokens,
    }


def gemini_usage(result: CacheResult, output_tokens: int) -> dict[str, Any]:
    """``usageMetadata``: inclusive ``promptTokenCount``; ``cachedContentTokenCount`` (and the
    cache modality split) only when something was read."""
    prompt = result.total_input_tokens
    meta: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": prompt + output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if result.cache_read_tokens > 0:
        meta["cachedContentTokenCount"] = result.cache_read_tokens
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": result.cache_read_tokens}]
    if output_tokens > 0:
        meta["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": output_tokens}]
    return meta
