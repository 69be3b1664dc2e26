"""Provider cache rules as data, and the request validation that follows from them.

The providers' caching guides (Anthropic prompt caching, OpenAI prompt caching, Bedrock prompt
caching, Gemini context caching; late 2026). Per-model minimum prefixes, TTL lengths and the
lookback come from :mod:`cachebench._cachefacts`, the same tables the tracker's adapters read.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._cachefacts import (
    RETENTION_24H_SINCE,
    anthropic_min_tokens,
    gemini_min_tokens,
    model_version,
    nova_min_tokens,
    openai_min_tokens,
    ttl_seconds,
)

if TYPE_CHECKING:
    from .cachemodel import CacheRequest, Knobs, Segment


# Minimum cacheable prefix per model: the adapters' tables; below them, the family default.
def _bedrock_min_tokens(model: str | None) -> int:
    return nova_min_tokens(model) or anthropic_min_tokens(model)


def _gemini_min_tokens(model: str | None) -> int:
    name = model.rsplit("models/", 1)[-1] if model else model
    return gemini_min_tokens(name)


MIN_TOKENS_BY_MODEL: Mapping[str, Callable[[str | None], int]] = {
    "anthropic": anthropic_min_tokens,
    "bedrock": _bedrock_min_tokens,
    "openai": openai_min_tokens,
    "gemini": _gemini_min_tokens,
}
# For models the tables do not know (Anthropic's 5.5 models are unknown; Gemini: 2.5's minimum).
DEFAULT_MIN_TOKENS = {"anthropic": 1024, "bedrock": 1024, "openai": 1024, "gemini": 2048}
# Breakpoint TTLs each family accepts, longest first ("longer TTL entries must come before
# shorter ones"); OpenAI's are GPT-5.6's prompt_cache_options ttl values.
BREAKPOINT_TTLS = {"anthropic": ("1h", "5m"), "bedrock": ("1h", "5m"), "openai": ("12h", "30m")}
# Anthropic/Bedrock: a 5th breakpoint is a 400. OpenAI GPT-5.6+: up to 80 breakpoints matched.
MAX_BREAKPOINTS = {"anthropic": 4, "bedrock": 4, "openai": 80}
# The statuses the error knob injects (each wire maps them onto its provider's own).
INJECTED_STATUSES = (429, 500, 529)
OPENAI_MAX_WRITES = 4  # GPT-5.6+: at most 4 entries written per request
OPENAI_EXPLICIT_DEFAULT_TTL = "30m"
# OpenAI prompt_cache_retention: (idle TTL, longest lifetime) in seconds; in_memory is
# "5-10 min idle, at most 1 h".
OPENAI_RETENTION = {"in_memory": (ttl_seconds("in_memory"), 3600.0), "24h": (ttl_seconds("24h"), 86400.0)}
# Gemini implicit entries: Google documents no TTL; we assume 5 min idle, like Anthropic's.
GEMINI_IMPLICIT_TTL_S = 300.0
_TOOL_KINDS = frozenset({"tool_use", "tool_result"})
FOREVER = float("inf")


# What each family's requests call a breakpoint (the marker, and its blocks in a count), for
# error messages: Bedrock InvokeModel takes Anthropic bodies, so its wire words them as
# "anthropic".
MARKER_WORDS = {
    "anthropic": ("cache_control", "blocks with cache_control"),
    "bedrock": ("cachePoint", "cachePoint blocks"),
    "openai": ("prompt_cache_breakpoint", "content parts with prompt_cache_breakpoint"),
}
_TEMPLATES = {
    "too_many_breakpoints": "A maximum of {limit} {blocks} may be provided. Found {found}.",
    "invalid_ttl_order": "A ttl='{later}' {marker} must not come after a ttl='{earlier}' one.",
}


class CacheRuleError(ValueError):
    """A request the provider would reject with a 400. ``kind`` says which rule:
    ``too_many_breakpoints``, ``invalid_ttl_order``, ``invalid_ttl``, ``invalid_retention``,
    ``automatic_unsupported``, ``unknown_family``.

    The two breakpoint rules keep their ``details`` so a wire can word the message with its
    own marker (:meth:`worded`); their default wording is ``family``'s.
    """

    def __init__(self, kind: str, message: str = "", *, family: str = "anthropic", **details: Any) -> None:
        self.kind = kind
        self.details = details
        super().__init__(message or self.worded(family))

    def worded(self, family: str) -> str:
        """The message in ``family``'s words (its marker's name)."""
        template = _TEMPLATES.get(self.kind)
        if template is None:
            return str(self.args[0]) if self.args else self.kind
        marker, blocks = MARKER_WORDS.get(family, MARKER_WORDS["anthropic"])
        return template.format(marker=marker, blocks=blocks, **self.details)


def check_knobs(knobs: Knobs) -> None:
    """Raise ``ValueError`` for knobs no provider run could have: a negative or non-finite
    delay, a rate outside [0, 1], an injected status other than 429/500/529, a seed that is
    not an integer."""
    for name in ("latency_ms", "ttft_ms"):
        value = getattr(knobs, name)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    for name in ("error_rate", "miss_rate"):
        value = getattr(knobs, name)
        if not _is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    status = knobs.error_status
    if not isinstance(status, int) or isinstance(status, bool) or status not in INJECTED_STATUSES:
        raise ValueError(f"error_status must be 429, 500 or 529, got {status!r}")
    if knobs.seed is not None and (not isinstance(knobs.seed, int) or isinstance(knobs.seed, bool)):
        raise ValueError(f"seed must be an integer or null, got {knobs.seed!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def breakpoints(request: CacheRequest) -> list[tuple[int, str]]:
    """(segment index, ttl) of every breakpoint, validated; raises :class:`CacheRuleError`."""
    family = request.family
    allowed = BREAKPOINT_TTLS.get(family)
    if allowed is None:
        raise CacheRuleError("unknown_family", f"unknown family {family!r}")
    segments = request.segments
    points: list[tuple[int, str]] = []
    for i, seg in enumerate(segments):
        if seg.ttl is not None:
            if seg.ttl not in allowed:
                raise CacheRuleError("invalid_ttl", f"ttl must be one of {allowed}, got {seg.ttl!r}")
            points.append((i, seg.ttl))
    if request.automatic is not None:
        if family != "anthropic":
            raise CacheRuleError("automatic_unsupported", "top-level cache_control is Anthropic API only")
        if request.automatic not in allowed:
            raise CacheRuleError("invalid_ttl", f"ttl must be one of {allowed}, got {request.automatic!r}")
        if segments and (not points or points[-1][0] != len(segments) - 1):
            points.append((len(segments) - 1, request.automatic))
    if len(points) > MAX_BREAKPOINTS[family]:
        raise CacheRuleError(
            "too_many_breakpoints", family=family, limit=MAX_BREAKPOINTS[family], found=len(points)
        )
    if family == "openai":
        end = len(segments) if request.implicit_end is None else min(request.implicit_end, len(segments))
        # the implicit breakpoint's ttl (prompt_cache_options.ttl) rides in ``retention``
        ttl = request.retention if request.retention in allowed else OPENAI_EXPLICIT_DEFAULT_TTL
        if end > 0 and all(i != end - 1 for i, _ in points):
            points.append((end - 1, ttl))
            points.sort()
        return points
    rank = {ttl: r for r, ttl in enumerate(allowed)}
    for (_, a), (_, b) in itertools.pairwise(points):
        if rank[b] < rank[a]:
            raise CacheRuleError("invalid_ttl_order", family=family, earlier=a, later=b)
    return points


def lookback_positions(segments: tuple[Segment, ...]) -> list[int]:
    """Lookback position of each segment: a run of tool_use/tool_result blocks is one."""
    out: list[int] = []
    pos = -1
    prev_tool = False
    for seg in segments:
        tool = seg.kind in _TOOL_KINDS
        if not (tool and prev_tool):
            pos += 1
        out.append(pos)
        prev_tool = tool
    return out


def implicit_ttl(request: CacheRequest) -> tuple[float, float]:
    """(idle TTL, longest lifetime) of an implicit entry."""
    if request.family == "gemini":
        return GEMINI_IMPLICIT_TTL_S, FOREVER
    retention = request.retention
    if retention is None:
        version = model_version(request.model)
        since = RETENTION_24H_SINCE
        retention = "24h" if version is not None and version >= since else "in_memory"
    if retention not in OPENAI_RETENTION:
        raise CacheRuleError(
            "invalid_retention", f"prompt_cache_retention must be in_memory or 24h, got {retention!r}"
        )
    return OPENAI_RETENTION[retention]
