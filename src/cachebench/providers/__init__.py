"""Provider adapters: one module per SDK, the same functions in each (see ``_base.Adapter``).

Modules are imported lazily; only they import a provider SDK, and only when asked to. No
adapter imports another: what two share sits in a private module (``_messages_body``: the
Anthropic Messages body, for anthropic and bedrock; ``_stainless``: the Stainless SDKs'
instrumentation, for anthropic and openai). ``_detect`` tells a request body's provider from
its shape (:func:`detect_request`), for saved bodies replayed without their responses.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any, cast

from ..types import Provider
from ._base import Adapter
from ._detect import detect_request

if TYPE_CHECKING:
    from . import anthropic, bedrock, gemini, openai

    # Checked by mypy: every module is an Adapter (what adapter_for's cast relies on).
    _ADAPTERS: tuple[Adapter, Adapter, Adapter, Adapter] = (anthropic, openai, bedrock, gemini)

__all__ = ["adapter_for", "detect_client", "detect_request", "detect_response"]

_MODULES = {
    Provider.ANTHROPIC: "anthropic",
    Provider.OPENAI: "openai",
    Provider.BEDROCK: "bedrock",
    Provider.GEMINI: "gemini",
}
_cache: dict[Provider, Adapter] = {}


def adapter_for(provider: Provider | str) -> Adapter:
    """The adapter module for ``provider`` (a :class:`Provider` or its string value)."""
    p = Provider.parse(provider)
    adapter = _cache.get(p)
    if adapter is None:
        adapter = cast(Adapter, importlib.import_module(f"{__name__}.{_MODULES[p]}"))
        _cache[p] = adapter
    return adapter


def _owner(target: Any) -> Any:
    """The object a method belongs to: a bound method's ``__self__``, looking through
    ``functools.wraps`` wrappers (``client.messages.with_raw_response.create`` wraps the bound
    ``create``) and ``functools.partial``."""
    for _ in range(16):  # wrapper chains are short; never follow a cycle for ever
        owner = getattr(target, "__self__", None)
        if owner is not None:
            return owner
        inner = getattr(target, "__wrapped__", None)
        if inner is None:
            inner = getattr(target, "func", None) if isinstance(target, functools.partial) else None
        if inner is None:
            return target
        target = inner
    return target


def detect_client(client: Any) -> Provider | None:
    """Which provider an SDK client (or a method of one, however wrapped) belongs to, if any."""
    target = _owner(client)
    for p in Provider:
        if adapter_for(p).owns_client(target):
            return p
    return None


def detect_response(response: Any) -> Provider | None:
    for p in Provider:
        if adapter_for(p).owns_response(response):
            return p
    return None
