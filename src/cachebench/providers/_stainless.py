"""What the Stainless SDKs (anthropic, openai) share: one patch on ``client.request``.

Every resource method and helper of a Stainless client (``create``, ``stream()``,
``parse()``, ``with_raw_response``, ``with_streaming_response``) ends in
``client.request(cast_to, options, stream=, stream_cls=)``, with the request body in
``options.json_data``: patching that one method observes every call. A client made from an
instrumented one with ``copy()`` or ``with_options()`` (a new instance each) is instrumented
as it is made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._guard import logger

__all__ = ["stainless_instrument"]


def stainless_instrument(
    client: Any, hooks: Any, wanted: Callable[[Any], bool]
) -> list[tuple[Any, str, Any]]:
    """Patch ``client.request`` so the calls whose ``options`` are ``wanted`` are observed, and
    ``copy``/``with_options`` so the clients made from it are too; returns the patches to
    undo, ``(client, name, original)`` each."""
    patches = _patch_request(client, hooks, wanted)
    for name in ("copy", "with_options"):
        original = getattr(client, name, None)
        if callable(original):
            setattr(client, name, _instrumenting_copy(original, hooks, wanted))
            patches.append((client, name, original))
    return patches


def _patch_request(client: Any, hooks: Any, wanted: Callable[[Any], bool]) -> list[tuple[Any, str, Any]]:
    original = client.request
    client.request = hooks.stainless(original, wanted)
    return [(client, "request", original)]


def _instrumenting_copy(
    original: Callable[..., Any], hooks: Any, wanted: Callable[[Any], bool]
) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original(*args, **kwargs)
        if not hooks.on:  # undone, but another patch on top kept this one in place
            return new
        try:
            # (the copy's own copies: instrumented as they are made, like the client's)
            stainless_instrument(new, hooks, wanted)
        except Exception as exc:  # never break the caller's with_options()
            logger.warning("cachebench: could not instrument a copied client: %r", exc)
        return new

    copy.__cachebench_hooks__ = hooks  # type: ignore[attr-defined]  # what undoing it looks for
    return copy
