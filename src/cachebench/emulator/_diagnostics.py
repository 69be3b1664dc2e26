"""Cache diagnostics: why a request could not reuse the prefix of an earlier one it names.

Both providers compare a request with an earlier response's request and name the first
difference, from digests and token counts they keep of it (never its text):

* Anthropic Messages: the request opts in with ``diagnostics: {"previous_message_id": id | null}``;
  only requests that carry the object are remembered. Checked in cache order: ``model_changed``
  (the model or ``speed``), ``tools_changed``, ``system_changed``, then ``unavailable`` when
  another prompt-affecting parameter differs (``tool_choice``, ``thinking``,
  ``context_management``, ``output_config``, ``output_format``, the set of ``anthropic-beta``
  headers), then ``messages_changed`` when the named request's messages are not a prefix of
  this one's (edited, reordered or removed rather than appended to). Docs: platform.claude.com
  ``build-with-claude/cache-diagnostics``; shapes: anthropic-sdk-python ``types/diagnostics.py``,
  ``types/cache_miss_*.py``.
* OpenAI Responses (GPT-5.6 and later): ``prompt_cache_options.comparison_response_id`` names
  any recent response of the same organization. Checked in the order the guide lists them:
  ``model_changed``, ``prompt_cache_key_changed``, ``service_tier_changed``, ``tools_changed``,
  ``text_format_changed``, ``reasoning_effort_changed``, ``verbosity_changed``,
  ``context_compacted`` (another number of ``compaction`` items), then ``input_changed`` when
  the named response's reusable prefix (its ``cached_tokens + cache_write_tokens``) is not a
  prefix of this request. Docs: developers.openai.com ``guides/prompt-caching/diagnostics``;
  shapes: openai-python ``types/responses/response.py`` (``PromptCacheDiagnostics*``).

The comparison is about the request's structure, not whether the cache hit. The token count a
difference carries (``cache_missed_input_tokens`` / ``cache_missed_tokens``) is the named
request's reusable tokens this one cannot reuse: all of them when the cache is keyed by what
changed (model, routing), else those past the longest common run of blocks.

Each wire module builds a :class:`Fingerprint` of its request (:func:`anthropic`,
:func:`openai`), compares it with the named one (:func:`compare`) and words the
:class:`Verdict`; :class:`DiagnosticsStore` keeps the fingerprints per API key.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from ._render import Rendered

__all__ = [
    "MAX_RECORDS",
    "Check",
    "DiagnosticsStore",
    "Fingerprint",
    "Verdict",
    "anthropic",
    "compare",
    "openai",
]

# Fingerprints kept, over every API key: the least recently used are forgotten first (the
# providers keep theirs "for a short period"; they document no number).
MAX_RECORDS = 10_000
_WIDTH = 8  # bytes of one block's digest in Fingerprint.prompt


@dataclass(frozen=True, slots=True)
class Check:
    """One thing compared before the prompt's blocks: ``reason`` is what a difference is called;
    ``keys_cache`` says the cache is keyed by it, so a difference loses the whole prefix."""

    reason: str
    digest: bytes
    keys_cache: bool = False


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What is kept of one request: its checks, its blocks' digests (``_WIDTH`` bytes each,
    concatenated) and the tokens through each block, and how much of its prompt it read or
    wrote (what a later request could reuse). ``compared`` is the number of leading blocks a
    later request must repeat for no difference to be found; ``diverged`` what a difference
    there is called."""

    checks: tuple[Check, ...]
    prompt: bytes
    cum_tokens: tuple[int, ...]
    reusable_tokens: int
    compared: int
    diverged: str

    def kept(self) -> Fingerprint:
        """The part a store keeps: the compared blocks, no token counts."""
        return Fingerprint(
            self.checks,
            self.prompt[: self.compared * _WIDTH],
            (),
            self.reusable_tokens,
            self.compared,
            self.diverged,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A request against the one it names: ``reason`` is None when nothing differs;
    ``missed_tokens`` the named request's reusable tokens this one cannot reuse;
    ``reusable_tokens`` the named request's."""

    reason: str | None
    missed_tokens: int
    reusable_tokens: int


def compare(named: Fingerprint, current: Fingerprint) -> Verdict:
    """The first difference between the ``named`` request and the ``current`` one."""
    reusable = named.reusable_tokens
    for before, now in zip(named.checks, current.checks, strict=False):
        if before.digest != now.digest:
            common = 0 if before.keys_cache else _common_tokens(named, current)
            return Verdict(before.reason, max(0, reusable - common), reusable)
    if current.prompt.startswith(named.prompt[: named.compared * _WIDTH]):
        return Verdict(None, 0, reusable)
    return Verdict(named.diverged, max(0, reusable - _common_tokens(named, current)), reusable)


def _common_tokens(named: Fingerprint, current: Fingerprint) -> int:
    """Tokens of the leading blocks the two requests share."""
    shared = 0
    for before, now in zip(_blocks(named.prompt), _blocks(current.prompt), strict=False):
        if before != now:
            break
        shared += 1
    return current.cum_tokens[shared - 1] if shared else 0


def _blocks(prompt: bytes) -> Iterable[bytes]:
    return (prompt[i : i + _WIDTH] for i in range(0, len(prompt), _WIDTH))


# -- fingerprints -----------------------------------------------------------------------------


def _digest(value: Any) -> bytes:
    """A value's digest, its mappings' keys sorted (a setting is its value, not its spelling)."""
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON: a body is, but the renderer never raises and neither do we
        raw = repr(value).encode()
    return xxhash.xxh3_64_digest(raw)


def _section(rendered: Rendered, where: str) -> bytes:
    return _digest(
        [s.digest.hex() for s, w in zip(rendered.segments, rendered.wheres, strict=False) if w == where]
    )


def _prompt(rendered: Rendered) -> tuple[bytes, tuple[int, ...]]:
    digests = b"".join(
        s.digest if len(s.digest) == _WIDTH else xxhash.xxh3_64_digest(s.digest) for s in rendered.segments
    )
    return digests, tuple(itertools.accumulate(s.tokens for s in rendered.segments))


# Request fields that change the prompt the model is shown without being model, tools or
# system: a difference in one of them is ``unavailable`` (the docs' "another prompt-affecting
# request parameter").
ANTHROPIC_SETTINGS = ("tool_choice", "thinking", "context_management", "output_config", "output_format")


def anthropic(
    body: Mapping[str, Any], rendered: Rendered, *, betas: str | None, reusable_tokens: int
) -> Fingerprint:
    """A Messages request: ``betas`` is its ``anthropic-beta`` header."""
    beta_set = sorted({b.strip() for b in (betas or "").split(",") if b.strip()})
    settings = {k: body.get(k) for k in ANTHROPIC_SETTINGS}
    checks = (
        Check("model_changed", _digest([body.get("model"), body.get("speed")]), keys_cache=True),
        Check("tools_changed", _section(rendered, "tools")),
        Check("system_changed", _section(rendered, "system")),
        Check("unavailable", _digest([settings, beta_set])),
    )
    prompt, cum = _prompt(rendered)
    return Fingerprint(checks, prompt, cum, reusable_tokens, len(cum), "messages_changed")


def _path(body: Mapping[str, Any], *steps: str) -> Any:
    value: Any = body
    for step in steps:
        value = value.get(step) if isinstance(value, Mapping) else None
    return value


def openai(body: Mapping[str, Any], rendered: Rendered, *, reusable_tokens: int) -> Fingerprint:
    """A Responses request (GPT-5.6 and later)."""
    items = body.get("input")
    compactions = sum(
        1
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping) and item.get("type") == "compaction"
    )
    checks = (
        Check("model_changed", _digest(body.get("model")), keys_cache=True),
        Check("prompt_cache_key_changed", _digest(body.get("prompt_cache_key")), keys_cache=True),
        Check("service_tier_changed", _digest(body.get("service_tier")), keys_cache=True),
        Check("tools_changed", _section(rendered, "tools")),
        Check("text_format_changed", _digest(_path(body, "text", "format"))),
        Check("reasoning_effort_changed", _digest(_path(body, "reasoning", "effort"))),
        Check("verbosity_changed", _digest(_path(body, "text", "verbosity"))),
        Check("context_compacted", _digest(compactions)),
    )
    prompt, cum = _prompt(rendered)
    # The reusable prefix ends at a block boundary: reads and writes end at breakpoints.
    compared = bisect.bisect_right(cum, reusable_tokens) if reusable_tokens else 0
    return Fingerprint(checks, prompt, cum, reusable_tokens, compared, "input_changed")


# -- the store --------------------------------------------------------------------------------


class DiagnosticsStore:
    """Fingerprints by (API key, response id), the ``max_records`` most recently used.
    Thread-safe."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._max = max(1, max_records)
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], Fingerprint] = OrderedDict()

    def remember(self, scope: str, response_id: str, fingerprint: Fingerprint) -> None:
        with self._lock:
            self._records[(scope, response_id)] = fingerprint.kept()
            self._records.move_to_end((scope, response_id))
            while len(self._records) > self._max:
                self._records.popitem(last=False)

    def lookup(self, scope: str, response_id: str) -> Fingerprint | None:
        """The fingerprint of ``response_id`` if this API key made it and it is still kept."""
        with self._lock:
            found = self._records.get((scope, response_id))
            if found is not None:
                self._records.move_to_end((scope, response_id))
            return found

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __len__(self) -> int:
        return len(self._records)
