"""One request as the planner reads it: its blocks in cache order with their sizes, where its
breakpoints are, what can be marked, and the provider's limits for its model.

Built on the tracker's own adapters (``parse_request``) and fingerprint, so a lint finding's
section, block and byte range are the ones a live diagnosis of the same request would name.
Byte ranges are offsets inside the block's canonical bytes (:func:`cachebench.fingerprint.canonical`
of ``[section, payload]``), as in :class:`cachebench.PrefixDiff`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import facts
from ..cachemodel._rules import min_tokens
from ..fingerprint import canonical, key
from ..providers import adapter_for, detect_request
from ..tokens import estimate_block
from ..types import PrefixKey, Prompt, Provider
from ._markers import OPENAI_MARKER, Slot, slots

__all__ = ["BlockView", "RequestView", "max_breakpoints", "view"]


@dataclass(frozen=True, slots=True)
class BlockView:
    position: int  # in cache order, from 0
    section: str  # "tools" | "system" | "messages"
    index: int  # within its section
    payload: Any  # the block without its marker (the adapter's form; never stored)
    tokens: int  # estimated (cachebench.tokens)
    nbytes: int  # canonical bytes
    kind: str  # "tool_use" | "tool_result" | "image" | "text" | "json"
    markable: bool
    role: str | None = None  # a message block's role


@dataclass(frozen=True, slots=True)
class RequestView:
    provider: str
    model: str | None
    prompt: Prompt
    blocks: tuple[BlockView, ...]
    cum_tokens: tuple[int, ...]  # tokens through each block
    marks: tuple[tuple[int, str], ...]  # explicit breakpoints (position, ttl) the request sets
    turn_start: int  # the first block of the newest user turn
    implicit: bool  # the provider caches without markers (the whole prompt before the newest turn)
    minimum: int  # the model's minimum cacheable prefix, in tokens
    settings: Any

    def key(self) -> PrefixKey:
        return key(self.prompt)

    def tokens_through(self, position: int) -> int:
        return self.cum_tokens[position] if 0 <= position < len(self.cum_tokens) else 0

    @property
    def history_start(self) -> int:
        """The first block of the conversation history: message blocks after the leading user
        message (its context), which the next turn sends again unchanged."""
        first = next((b.position for b in self.blocks if b.section == "messages"), len(self.blocks))
        p = first
        while (
            p < len(self.blocks)
            and self.blocks[p].role in ("user", None)
            and self.blocks[p].kind != "tool_result"
        ):
            p += 1
        return p

    @property
    def cached_end(self) -> int:
        """Blocks ``[0, cached_end)`` are inside the cached prefix: through the last breakpoint,
        or before the newest turn where the provider caches implicitly."""
        if self.implicit:
            return self.turn_start
        return self.marks[-1][0] + 1 if self.marks else 0


def _inner(payload: Any) -> Any:
    """A message block's part, without the role the adapters pair it with."""
    if isinstance(payload, (tuple, list)) and len(payload) == 2 and isinstance(payload[0], str):
        return payload[1]
    return payload


def _role(payload: Any) -> str | None:
    if isinstance(payload, (tuple, list)) and len(payload) == 2 and isinstance(payload[0], str):
        return payload[0]
    return None


def _kind(part: Any) -> str:
    if isinstance(part, str):
        return "text"
    if isinstance(part, Mapping):
        kind = part.get("type")
        if kind in ("tool_use", "function_call") or "toolUse" in part or "functionCall" in part:
            return "tool_use"
        if (
            kind in ("tool_result", "function_call_output")
            or "toolResult" in part
            or "functionResponse" in part
        ):
            return "tool_result"
        if kind in ("image", "input_image", "image_url") or "image" in part or "inlineData" in part:
            return "image"
        if isinstance(part.get("text"), str):
            return "text"
    return "json"


# A body one provider's shape tells and another provider also takes: Bedrock's InvokeModel with an
# Anthropic Messages body.
SAME_BODY = frozenset({("bedrock", "anthropic")})


def max_breakpoints(provider: str) -> int:
    """How many breakpoints a plan may place: the provider's limit; for OpenAI the writes one
    request can make less the one its implicit breakpoint takes (PROVIDER_FACTS: "one of the 4
    writes per request is consumed by implicit mode")."""
    if provider == "openai":
        return facts.OPENAI_MAX_WRITES - 1
    return facts.MAX_BREAKPOINTS.get(provider, 0)


def view(
    request: Mapping[str, Any], provider: Provider | str | None = None, model: str | None = None
) -> RequestView:
    """Read ``request`` (a provider request body; the provider is told from its shape when not
    given). Raises ``ValueError`` for a request that is not a JSON object or whose provider
    cannot be told."""
    if not isinstance(request, Mapping):
        raise TypeError(
            f"a request must be a mapping (a provider request body), got {type(request).__name__}"
        )
    shape = detect_request(request)
    if provider is None:
        if shape is None:
            raise ValueError(
                "cannot tell which provider this request is for: pass provider="
                "'anthropic' | 'openai' | 'bedrock' | 'gemini'"
            )
        provider = shape
    name = Provider.parse(provider).value
    if shape is not None and shape.value != name and (name, shape.value) not in SAME_BODY:
        raise ValueError(
            f"this request body is {shape.value}'s shape, not {name}'s: leave provider= out or fix it"
        )
    adapter = adapter_for(name)
    if model is not None and adapter.request_model(request) is None:
        request = {**request, ("modelId" if name == "bedrock" else "model"): model}
    prompt = adapter.parse_request(request)
    model_name = prompt.model or model
    found = slots(request, name)  # one walk: what can carry a marker, and what carries one
    takes_markers = name != "openai" or facts.explicit_caching(model_name)
    can_mark = [takes_markers and slot.how != "" for slot in found]
    blocks = []
    cum: list[int] = []
    total = 0
    seen: dict[str, int] = {}
    for position, (section, payload) in enumerate(prompt.pairs):
        part = _inner(payload) if section != "tools" else payload
        tokens = estimate_block(part)
        total += tokens
        cum.append(total)
        index = seen.get(section, 0)
        seen[section] = index + 1
        blocks.append(
            BlockView(
                position,
                section,
                index,
                payload,
                tokens,
                len(canonical([section, payload])),
                _kind(part),
                can_mark[position] if position < len(can_mark) else False,
                _role(payload) if section == "messages" else None,
            )
        )
    explicit = bool(prompt.marks) and not prompt.implicit
    marks = tuple(prompt.marks) if explicit else ()
    if name == "openai" and explicit:
        # GPT-5.6's implicit breakpoint (added by the adapter at the newest turn) is no marker
        # the request set; keep only the ones its parts carry.
        marks = tuple((p, t) for p, t in marks if p < len(found) and _has_marker(found[p]))
    return RequestView(
        provider=name,
        model=model_name,
        prompt=prompt,
        blocks=tuple(blocks),
        cum_tokens=tuple(cum),
        marks=marks,
        turn_start=min(prompt.turn_start, len(prompt.pairs)),
        implicit=prompt.implicit or (name == "gemini"),
        minimum=min_tokens(name, model_name or ""),
        settings=prompt.settings,
    )


def _has_marker(slot: Slot) -> bool:
    """An OpenAI content part that carries a ``prompt_cache_breakpoint`` itself."""
    if slot.how != "key":
        return False
    block = slot.holder[slot.at]
    return isinstance(block, dict) and block.get(OPENAI_MARKER) is not None
