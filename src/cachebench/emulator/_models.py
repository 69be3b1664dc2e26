"""Which models the emulator serves, and what each provider answers for one it does not.

A model is known to a family when genai-prices lists it for that provider (the price data
:mod:`cachebench.pricing` reads, with the same provider mapping: Bedrock is ``aws``) or when
the cache facts have a per-model entry for it (:mod:`cachebench.facts`: the Claude and
Nova minimums, the Gemini generations). Both are the package's own lists of real models, so
whatever the tracker prices or knows the cache rules of, the emulator serves.
``Emulator(any_model=True)`` (``cachebench emulate --any-model``) serves any name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..facts import anthropic_min_tokens, bedrock_min_tokens, gemini_min_tokens
from ..pricing import has_price
from ._errors import WireError

__all__ = ["known_model", "require_known_model"]


def _bedrock_facts(model: str | None) -> int:
    # Bedrock ids name their vendor ("us.anthropic.claude-sonnet-5-v1:0"): a bare Claude name
    # is not one.
    if model and "claude" in model and "anthropic." not in model:
        return 0
    return bedrock_min_tokens(model)


# The cache-fact tables with one entry per model (0: not in the table). OpenAI's facts are
# rules by generation (``gpt-N.M``), not a list of models: genai-prices alone decides there.
_FACTS: dict[str, tuple[Callable[[str | None], int], ...]] = {
    "anthropic": (anthropic_min_tokens,),
    "bedrock": (_bedrock_facts,),
    "gemini": (gemini_min_tokens,),
    "openai": (),
}
# Names genai-prices lists under the family's provider that its API does not serve: Google's
# list holds the Claude models Vertex AI hosts, which generateContent does not answer.
_NOT_SERVED = {"gemini": ("claude-",)}

# What each provider answers for a model it does not serve: (status, message, OpenAI code).
#   Anthropic: 404 {"type": "error", "error": {"type": "not_found_error", "message": "model: x"}}
#   OpenAI:    404 {"error": {"message": "The model `x` does not exist ...", "type":
#              "invalid_request_error", "param": null, "code": "model_not_found"}}
#   Bedrock:   400 ValidationException "The provided model identifier is invalid." (the
#              runtime says so for any modelId it cannot resolve, foundation model or profile)
#   Gemini:    404 {"error": {"code": 404, "message": "models/x is not found ...", "status":
#              "NOT_FOUND"}}
_NOT_FOUND: dict[str, tuple[int, str, str | None]] = {
    "anthropic": (404, "model: {model}", None),
    "openai": (404, "The model `{model}` does not exist or you do not have access to it.", "model_not_found"),
    "bedrock": (400, "The provided model identifier is invalid.", None),
    "gemini": (
        404,
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. "
        "Call ListModels to see the list of available models and their supported methods.",
        None,
    ),
}


@functools.lru_cache(maxsize=1024)  # bounded: model names come from requests
def known_model(family: str, model: str) -> bool:
    """Whether ``family``'s API serves ``model`` (see the module docstring)."""
    if any(fact(model) > 0 for fact in _FACTS[family]):
        return True
    if model.startswith(_NOT_SERVED.get(family, ())):
        return False
    return has_price(family, model)


def require_known_model(family: str, model: str) -> None:
    """Raise ``family``'s own error for a model it does not serve."""
    if not known_model(family, model):
        status, message, code = _NOT_FOUND[family]
        raise WireError(status, message.format(model=model), code=code)
