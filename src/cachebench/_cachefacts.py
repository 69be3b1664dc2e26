"""Provider cache facts as data: minimum prefixes, TTLs, lookback, model generations.

The bottom of the dependency order: the provider adapters (what the tracker expects), the
cache model (what the emulator does) and the detector read the same numbers from here.
Values marked (varies) change between models and over time; they are checked against the
providers' own caching guides (late 2026) and kept as tables, never as constants in logic.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "EXPLICIT_SINCE",
    "LOOKBACK",
    "OPENAI_DEFAULT_MIN",
    "OPENAI_READ_STEP",
    "RETENTION_24H_SINCE",
    "TTL_CLOCK_MARGIN_S",
    "anthropic_min_tokens",
    "explicit_caching",
    "gemini_min_tokens",
    "model_version",
    "nova_min_tokens",
    "openai_implicit_end",
    "openai_min_tokens",
    "ttl_seconds",
]

# Anthropic: each breakpoint looks back at most this many block positions for an earlier entry.
LOOKBACK = 20

# The client's clock and the provider's differ, and an entry's lifetime runs from the start of
# the provider's handling of a request: a miss this close to an entry's expiry (plus the
# call's own duration) is a TTL expiry, never evidence against the provider.
TTL_CLOCK_MARGIN_S = 2.0

# Entry lifetimes by TTL name, in seconds. Anthropic/Bedrock "5m"/"1h"; OpenAI GPT-5.6+
# "30m"/"12h"; OpenAI retention "24h" and "in_memory" (5-10 min idle: we take 10).
_TTL_SECONDS = {
    "5m": 300.0,
    "1h": 3600.0,
    "30m": 1800.0,
    "12h": 43200.0,
    "24h": 86400.0,
    "in_memory": 600.0,
    "10m": 600.0,
}


def ttl_seconds(ttl: str) -> float:
    """Seconds an entry with this TTL name lives after its last use (unknown names: 5 min)."""
    return _TTL_SECONDS.get(ttl, 300.0)


# Anthropic minimum cacheable prefix per model, in tokens (varies). A name matches a family
# when the family is followed by a date, a non-version suffix or nothing: "opus-5" matches
# "claude-opus-5-20260301" but not "claude-opus-5-5" (the 5.5 models' minimum is unknown, so
# they get the caller's default).
ANTHROPIC_MIN_TOKENS = (
    ("opus-5", 512),
    ("fable-5", 512),
    ("fable-5-1", 512),
    ("mythos-5", 512),
    ("mythos-5-1", 512),
    ("opus-4-8", 1024),
    ("sonnet-5", 1024),
    ("sonnet-4-6", 1024),
    ("sonnet-4-5", 1024),
    ("opus-4-1", 1024),
    ("opus-4", 1024),
    ("sonnet-4", 1024),
    ("opus-4-7", 2048),
    ("haiku-3-5", 2048),
    ("3-5-haiku", 2048),
    ("opus-4-6", 4096),
    ("opus-4-5", 4096),
    ("haiku-4-5", 4096),
)
# A version segment after the family: "-5" or ".5" (one or two digits, not a date).
_NOT_A_MINOR = r"(?![-.]\d{1,2}(?!\d))"
_ANTHROPIC_PATTERNS = tuple(
    (re.compile(re.escape(family) + _NOT_A_MINOR), tokens) for family, tokens in ANTHROPIC_MIN_TOKENS
)


@functools.lru_cache(maxsize=256)
def anthropic_min_tokens(model: str | None) -> int:
    """Claude's minimum cacheable prefix for ``model``; 0 when the model is not in the table."""
    if not model:
        return 0
    found = _ANTHROPIC_MEMO.get(model)
    if found is None:
        name = model.lower().replace(".", "-")
        found = next((tokens for pattern, tokens in _ANTHROPIC_PATTERNS if pattern.search(name)), 0)
        if len(_ANTHROPIC_MEMO) < 4096:  # bounded: model names come from requests and responses
            _ANTHROPIC_MEMO[model] = found
    return found


_ANTHROPIC_MEMO: dict[str, int] = {}


# Amazon Nova on Bedrock: 1,000 tokens per cache checkpoint (varies).
NOVA_MIN_TOKENS = 1000


def nova_min_tokens(model: str | None) -> int:
    return NOVA_MIN_TOKENS if model and "amazon.nova" in model else 0


# Gemini implicit caching: minimum prefix per model family (varies). Substring, first match.
GEMINI_MIN_TOKENS = (("gemini-2.5", 2048), ("gemini-3", 4096), ("gemini-4", 4096))


def gemini_min_tokens(model: str | None) -> int:
    if model:
        for needle, tokens in GEMINI_MIN_TOKENS:
            if needle in model:
                return tokens
    return 0


# OpenAI. Explicit breakpoints, reported writes and exact reads start at GPT-5.6; gpt-5.5 and
# later keep entries 24 h by default; "gpt-35" is Azure's spelling of gpt-3.5.
EXPLICIT_SINCE = (5, 6)
RETENTION_24H_SINCE = (5, 5)
OPENAI_DEFAULT_MIN = 1024  # automatic caching from 1,024 prompt tokens (varies)
OPENAI_MIN_TOKENS: tuple[tuple[str, int], ...] = ()  # substring -> tokens for exceptions
OPENAI_READ_STEP = 128  # before GPT-5.6, hits come in 128-token steps
_VERSION_ALIASES = (("gpt-35", (3, 5)),)
_GPT_VERSION = re.compile(r"gpt-(\d+)(?:\.(\d+))?")


def model_version(model: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a GPT model name (``gpt-5.6-mini`` -> (5, 6)); None for others."""
    if not model:
        return None
    name = model.lower()
    for needle, version in _VERSION_ALIASES:
        if needle in name:
            return version
    m = _GPT_VERSION.search(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def explicit_caching(model: str | None) -> bool:
    """True for models that take ``prompt_cache_breakpoint`` and report writes (GPT-5.6+)."""
    version = model_version(model)
    return version is not None and version >= EXPLICIT_SINCE


def openai_implicit_end(model: str | None, turn_start: int, n_blocks: int) -> int:
    """How many leading blocks OpenAI's implicit breakpoint covers.

    From GPT-5.6 on, the implicit (managed) breakpoint ends with the latest user or tool
    message: an identical repeat reads the whole prompt, and a changed last message misses
    (no fallback to a shorter unmarked prefix). Before GPT-5.6 the tracker's one implicit
    breakpoint is the end of the conversation before the newest turn (the whole prompt when
    nothing precedes it); the provider caches the whole prompt and matches its longest
    prefix. The tracker's adapter and the emulator both place it here.
    """
    if explicit_caching(model):
        return n_blocks
    return turn_start if turn_start > 0 else n_blocks


def openai_min_tokens(model: str | None) -> int:
    if model:
        for needle, tokens in OPENAI_MIN_TOKENS:
            if needle in model:
                return tokens
    return OPENAI_DEFAULT_MIN
