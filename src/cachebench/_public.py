"""Public functions that stay plain Python in every build.

The modules on the call path are compiled in the compiled build, and compiled code checks
declared argument types itself, with its own messages. A public function lives here
instead, so both builds accept the same arguments and refuse the same ones with the same
errors.
"""

from __future__ import annotations

from typing import Any

from .fingerprint import key

__all__ = ["fingerprint"]


def fingerprint(
    messages: Any = None,
    system: Any = None,
    tools: Any = None,
    *,
    provider: str = "anthropic",
    model: str | None = None,
) -> str | None:
    """The ``prefix_id`` a request with these parts would get, or ``None`` if uncacheable.

    ``messages``, ``system`` and ``tools`` take the provider's own request shapes (dicts or
    SDK objects). Key order, SDK-object-vs-dict and where the cache markers sit do not
    change the result; the newest user turn never enters it; any other change does.
    """
    from .providers import adapter_for

    if model is not None and not isinstance(model, str):
        raise TypeError(f"model must be a model name (str) or None, got {type(model).__name__}")
    adapter = adapter_for(provider)
    return key(
        adapter.prompt_from_parts(messages=messages, system=system, tools=tools, model=model)
    ).prefix_id
