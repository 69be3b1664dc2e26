"""Every provider prompt-cache fact, as data: TTLs, minimum prefixes, lookback, limits, steps,
model generations and model-name normalisation.

The bottom of the dependency order. The tracker's adapters (``providers/*``: what a call is
expected to read), the cache model and the emulator (what a provider would serve) all read the
numbers and names from here, so the two sides of every test follow one set of facts.

Source for every value: ``PROVIDER_FACTS.md`` (the team's notes, checked late 2026 against
anthropic 2.12, openai 3.54, botocore 1.44, google-genai 3.4 and the providers' caching
guides); the section is named next to each value. Values marked (varies) change between
models and over time: they are tables, never constants inside logic.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "ANTHROPIC_DEFAULT_TTL",
    "ANTHROPIC_MAX_BREAKPOINTS",
    "ANTHROPIC_MIN_TOKENS",
    "ANTHROPIC_TTLS",
    "BATCH_PRICE_FACTOR",
    "BEDROCK_DEFAULT_TTL",
    "BEDROCK_MAX_CHECKPOINTS",
    "BEDROCK_TTLS",
    "BREAKPOINT_TTLS",
    "EXPLICIT_SINCE",
    "GEMINI_IMPLICIT_TTL",
    "GEMINI_MIN_TOKENS",
    "LOOKBACK",
    "LOOKBACK_RUN_KINDS",
    "MAX_BREAKPOINTS",
    "NOVA_MIN_TOKENS",
    "OPENAI_DEFAULT_MIN",
    "OPENAI_DEFAULT_RETENTION",
    "OPENAI_EXPLICIT_DEFAULT_TTL",
    "OPENAI_EXPLICIT_TTLS",
    "OPENAI_MAX_BREAKPOINTS",
    "OPENAI_MAX_WRITES",
    "OPENAI_READ_STEP",
    "OPENAI_RETENTIONS",
    "OPENAI_RETENTION_LIFETIME_S",
    "RETENTION_24H_SINCE",
    "TTL_CLOCK_MARGIN_S",
    "TTL_SECONDS",
    "UNKNOWN_MODEL_MIN_TOKENS",
    "anthropic_min_tokens",
    "bedrock_min_tokens",
    "bedrock_model_id",
    "explicit_caching",
    "gemini_min_tokens",
    "gemini_model_name",
    "model_version",
    "nova_min_tokens",
    "openai_default_retention",
    "openai_implicit_end",
    "openai_min_tokens",
    "openai_read_step",
    "ttl_seconds",
]

# -- batch prices --------------------------------------------------------------------------------

# What a call sent through a provider's batch API pays, as a share of the same call's price:
# Anthropic's Message Batches halve every rate, cache reads and writes included ("Anthropic
# caching rules": "Batch halves all"); OpenAI's Batch API charges half of the synchronous
# price. Providers not listed have no batch price here (their batch calls are priced in full).
BATCH_PRICE_FACTOR = {"anthropic": 0.5, "openai": 0.5}

# -- lifetimes ---------------------------------------------------------------------------------

# Entry lifetimes by TTL name, in seconds. "5m"/"1h": Anthropic and Bedrock breakpoints
# ("Anthropic caching rules", "Bedrock"). "30m"/"12h": OpenAI GPT-5.6+ prompt_cache_options
# ttl. "24h"/"in_memory": OpenAI prompt_cache_retention; in_memory is "5-10 min idle, at most
# 1 h": we take 10 min idle ("OpenAI caching rules").
TTL_SECONDS = {
    "5m": 300.0,
    "1h": 3600.0,
    "30m": 1800.0,
    "12h": 43200.0,
    "24h": 86400.0,
    "in_memory": 600.0,
}
_UNKNOWN_TTL_S = TTL_SECONDS["5m"]


def ttl_seconds(ttl: str) -> float:
    """Seconds an entry with this TTL name lives after its last use (unknown names: 5 min)."""
    return TTL_SECONDS.get(ttl, _UNKNOWN_TTL_S)


# An entry's lifetime runs from the start of the provider's handling of a request ("Anthropic
# caching rules"), and the client's clock is not the provider's: a miss this close to an
# entry's expiry (plus the call's own duration) is a TTL expiry, never evidence against the
# provider.
TTL_CLOCK_MARGIN_S = 2.0

# -- Anthropic (also Bedrock's Claude models and InvokeModel with an Anthropic body) ----------

# "TTL 5m (default) or 1h ... longer TTL entries must come before shorter ones": longest first.
ANTHROPIC_TTLS = ("1h", "5m")
ANTHROPIC_DEFAULT_TTL = "5m"
# "At most 4 breakpoints (a 5th is a 400 error)"; top-level cache_control uses a slot.
ANTHROPIC_MAX_BREAKPOINTS = 4
# "Lookback: each breakpoint looks back at most 20 block positions for an earlier entry (a run
# of consecutive tool_use or tool_result blocks counts as one position)."
LOOKBACK = 20
LOOKBACK_RUN_KINDS = frozenset({"tool_use", "tool_result"})

# Minimum cacheable prefix per model, in tokens (varies; "Anthropic caching rules"). A name
# matches a family when the family is followed by a date, a non-version suffix or nothing:
# "opus-5" matches "claude-opus-5-20260301" but not "claude-opus-5-5" (the 5.5 models' minimum
# is unknown).
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


@functools.lru_cache(maxsize=1024)  # bounded: model names come from requests and responses
def anthropic_min_tokens(model: str | None) -> int:
    """Claude's minimum cacheable prefix for ``model``; 0 when the table does not know it."""
    if not model:
        return 0
    name = model.lower().replace(".", "-")
    return next((tokens for pattern, tokens in _ANTHROPIC_PATTERNS if pattern.search(name)), 0)


# -- Bedrock -----------------------------------------------------------------------------------

# Converse cachePoint {type: "default", ttl?: "5m"|"1h"}; 4 checkpoints ("Bedrock").
BEDROCK_TTLS = ANTHROPIC_TTLS
BEDROCK_DEFAULT_TTL = ANTHROPIC_DEFAULT_TTL
BEDROCK_MAX_CHECKPOINTS = 4
# "Nova: 1000 tokens per checkpoint, no tools" (varies).
NOVA_MIN_TOKENS = 1000


def nova_min_tokens(model: str | None) -> int:
    """Amazon Nova's minimum per cache checkpoint; 0 for other models."""
    return NOVA_MIN_TOKENS if model and "amazon.nova" in model else 0


def bedrock_min_tokens(model: str | None) -> int:
    """A Bedrock model's minimum: Nova's, or Claude's from the Anthropic table ("Anthropic
    minimums apply to Claude models"); 0 for any other model or an unknown Claude."""
    if not model:
        return 0
    return nova_min_tokens(model) or (anthropic_min_tokens(model) if "claude" in model else 0)


def bedrock_model_id(value: object) -> str | None:
    """``modelId`` without an ARN prefix (``arn:aws:bedrock:...:inference-profile/us.x`` ->
    ``us.x``): Bedrock responses carry no model id, so the request's names the model ("Usage
    conventions")."""
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("arn:"):
        return value.rsplit("/", 1)[-1] or None
    return value


# -- OpenAI ------------------------------------------------------------------------------------

# Explicit breakpoints, reported writes and exact reads start at GPT-5.6; gpt-5.5 and later keep
# implicit entries 24 h when the request names no retention ("OpenAI caching rules").
EXPLICIT_SINCE = (5, 6)
RETENTION_24H_SINCE = (5, 5)
# prompt_cache_retention values, and the longest an entry lives however often it is read:
# in_memory "5-10 min idle, at most 1 h"; 24h.
OPENAI_RETENTIONS = ("in_memory", "24h")
OPENAI_RETENTION_LIFETIME_S = {"in_memory": 3600.0, "24h": 86400.0}
OPENAI_DEFAULT_RETENTION = "in_memory"
# GPT-5.6+: prompt_cache_options.ttl "30m" | "12h" (longest first), default 30m; at most 4
# writes per request, up to 80 breakpoints matched.
OPENAI_EXPLICIT_TTLS = ("12h", "30m")
OPENAI_EXPLICIT_DEFAULT_TTL = "30m"
OPENAI_MAX_WRITES = 4
OPENAI_MAX_BREAKPOINTS = 80
# Before GPT-5.6: "automatic for prompts of 1024+ tokens, hits in 128-token steps" (varies).
OPENAI_DEFAULT_MIN = 1024
OPENAI_MIN_TOKENS: tuple[tuple[str, int], ...] = ()  # substring -> tokens, for exceptions
OPENAI_READ_STEP = 128
# "gpt-35" is Azure's spelling of gpt-3.5.
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


def openai_default_retention(model: str | None) -> str:
    """The implicit retention of a request that names none: 24h from gpt-5.5, else in_memory."""
    version = model_version(model)
    return "24h" if version is not None and version >= RETENTION_24H_SINCE else OPENAI_DEFAULT_RETENTION


def openai_min_tokens(model: str | None) -> int:
    """The shortest prompt OpenAI caches for ``model``."""
    if model:
        for needle, tokens in OPENAI_MIN_TOKENS:
            if needle in model:
                return tokens
    return OPENAI_DEFAULT_MIN


def openai_read_step(model: str | None) -> int:
    """Reads come in steps of this many tokens past the minimum (0: exact, GPT-5.6+)."""
    return 0 if explicit_caching(model) else OPENAI_READ_STEP


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


# -- Gemini ------------------------------------------------------------------------------------

# Implicit caching minimum per model family (varies; "Gemini"): substring, first match.
GEMINI_MIN_TOKENS = (("gemini-2.5", 2048), ("gemini-3", 4096), ("gemini-4", 4096))
# Google documents no lifetime for implicit entries: we assume 5 min idle, like Anthropic's.
GEMINI_IMPLICIT_TTL = "5m"


def gemini_model_name(value: object) -> str | None:
    """A model name without its resource path: ``models/gemini-2.5-flash``,
    ``projects/p/locations/l/publishers/google/models/gemini-2.5-flash`` and
    ``google/gemini-2.5-flash`` are all ``gemini-2.5-flash``. Version suffixes
    (``-001``, ``-preview-06-17``) stay: the minimum table matches on the family."""
    if not isinstance(value, str) or not value:
        return None
    if "models/" in value:
        value = value.rsplit("models/", 1)[-1]
    elif value.startswith("google/"):
        value = value[len("google/") :]
    return value or None


def gemini_min_tokens(model: str | None) -> int:
    """Gemini's minimum implicit-cache prefix for ``model`` (any spelling); 0 when unknown."""
    name = gemini_model_name(model)
    if name:
        for needle, tokens in GEMINI_MIN_TOKENS:
            if needle in name:
                return tokens
    return 0


# -- per family (the cache model's tables) -----------------------------------------------------

BREAKPOINT_TTLS = {"anthropic": ANTHROPIC_TTLS, "bedrock": BEDROCK_TTLS, "openai": OPENAI_EXPLICIT_TTLS}
MAX_BREAKPOINTS = {
    "anthropic": ANTHROPIC_MAX_BREAKPOINTS,
    "bedrock": BEDROCK_MAX_CHECKPOINTS,
    "openai": OPENAI_MAX_BREAKPOINTS,
}
# The minimum the emulator assumes for a model the tables do not know (Anthropic's 5.5 models;
# Gemini: 2.5's). The tracker assumes none for such a model: it measures entries from usage.
UNKNOWN_MODEL_MIN_TOKENS = {"anthropic": 1024, "bedrock": 1024, "openai": OPENAI_DEFAULT_MIN, "gemini": 2048}
