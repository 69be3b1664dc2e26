"""What the Stainless SDKs (anthropic, openai) share: one patch on ``client.request``.

Every resource method and helper of a Stainless client (``create``, ``stream()``,
``parse()``, ``with_raw_response``, ``with_streaming_response``) ends in
``client.request(cast_to, options, stream=, stream_cls=)``, with the request body in
``options.json_data``: patching that one method observes every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["stainless_instrument"]


def stainless_instrument(
    client: Any, hooks: Any, wanted: Callable[[Any], bool]
) -> list[tuple[Any, str, Any]]:
    """Patch ``client.request`` so the calls whose ``options`` are ``wanted`` are observed;
    returns the patch to undo, ``(client, "request", original)``."""
    original = client.request
    client.request = hooks.stainless(original, wanted)
    return [(client, "request", original)]
