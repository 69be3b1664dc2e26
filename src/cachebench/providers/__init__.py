"""Provider adapters: one module per SDK, the same functions in each (see ``_base.Adapter``).

Modules are imported lazily; only they import a provider SDK, and only when asked to.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ..types import Provider

__all__ = ["adapter_for", "detect_client", "detect_response"]

_MODULES = {
    Provider.ANTHROPIC: "anthropic",
    Provider.OPENAI: "openai",
    Provider.BEDROCK: "bedrock",
    Provider.GEMINI: "gemini",
}
_cache: dict[Provider, ModuleType] = {}


def adapter_for(provider: Provider | str) -> Any:
    """The adapter module for ``provider`` (a :class:`Provider` or its string value)."""
    p = Provider.parse(provider)
    mod = _cache.get(p)
    if mod is None:
        mod = importlib.import_module(f"{__name__}.{_MODULES[p]}")
        _cache[p] = mod
    return mod


def detect_client(client: Any) -> Provider | None:
    """Which provider an SDK client (or a bound method of one) belongs to, if any."""
    target = getattr(client, "__self__", client)
    for p in Provider:
        if adapter_for(p).owns_client(target):
            return p
    return None


def detect_response(response: Any) -> Provider | None:
    for p in Provider:
        if adapter_for(p).owns_response(response):
            return p
    return None
