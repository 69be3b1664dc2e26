"""The cache rules that validate a request and place its breakpoints, and the knob checks.

The numbers (TTLs, limits, lookback, retention) are :mod:`cachebench.facts`; this module is
the logic the cache model applies with them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import facts

if TYPE_CHECKING:
    from ._model import CacheRequest, Knobs, Segment

FOREVER = float("inf")
# The statuses the error knob injects (each wire maps them onto its provider's own).
INJECTED_STATUSES = (429, 500, 529)

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


_MIN_TOKENS: Mapping[str, Callable[[str | None], int]] = {
    "anthropic": facts.anthropic_min_tokens,
    "bedrock": facts.bedrock_min_tokens,
    "openai": facts.openai_min_tokens,
    "gemini": facts.gemini_min_tokens,
}


def min_tokens(family: str, model: str) -> int:
    """The model's minimum cacheable prefix from the facts, or the family's assumption for a
    model they do not know."""
    lookup = _MIN_TOKENS.get(family)
    if lookup is None:
        raise CacheRuleError("unknown_family", f"unknown family {family!r}")
    return lookup(model) or facts.UNKNOWN_MODEL_MIN_TOKENS[family]


def breakpoints(request: CacheRequest) -> list[tuple[int, str]]:
    """(segment index, ttl) of every breakpoint, validated; raises :class:`CacheRuleError`."""
    family = request.family
    allowed = facts.BREAKPOINT_TTLS.get(family)
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
    limit = facts.MAX_BREAKPOINTS[family]
    if len(points) > limit:
        raise CacheRuleError("too_many_breakpoints", family=family, limit=limit, found=len(points))
    if family == "openai":
        end = len(segments) if request.implicit_end is None else min(request.implicit_end, len(segments))
        # the implicit breakpoint's ttl (prompt_cache_options.ttl) rides in ``retention``
        ttl = request.retention if request.retention in allowed else facts.OPENAI_EXPLICIT_DEFAULT_TTL
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
    prev_run = False
    for seg in segments:
        run = seg.kind in facts.LOOKBACK_RUN_KINDS
        if not (run and prev_run):
            pos += 1
        out.append(pos)
        prev_run = run
    return out


def implicit_ttl(request: CacheRequest) -> tuple[float, float]:
    """(idle TTL, longest lifetime) of an implicit entry, in seconds."""
    if request.family == "gemini":
        return facts.ttl_seconds(facts.GEMINI_IMPLICIT_TTL), FOREVER
    retention = request.retention
    if retention is None:
        retention = facts.openai_default_retention(request.model)
    if retention not in facts.OPENAI_RETENTIONS:
        raise CacheRuleError(
            "invalid_retention", f"prompt_cache_retention must be in_memory or 24h, got {retention!r}"
        )
    return facts.ttl_seconds(retention), facts.OPENAI_RETENTION_LIFETIME_S[retention]
