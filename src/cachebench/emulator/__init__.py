"""A local server that speaks the providers' HTTP APIs with their caching rules.

It serves Anthropic Messages, OpenAI Chat Completions and Responses, Bedrock Runtime
(Converse and InvokeModel, streaming too) and Gemini ``generateContent``, computing every
usage count with :mod:`cachebench.cachemodel` on a clock you can inject::

    from cachebench.emulator import Emulator, EmulatorServer, ManualClock

    clock = ManualClock()
    with EmulatorServer(Emulator(clock=clock)) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-test")
        ...
        clock.advance(301)  # every 5-minute entry is gone (alive while now <= expires)

Needs the ``emulator`` extra (starlette, uvicorn). ``cachebench emulate --port N`` runs one
from the command line; the pytest fixture ``cache_emulator`` (:mod:`cachebench.testing`)
starts one per test session and empties its cache before each test.

The server's names are imported when first asked for, so the request renderers
(:mod:`._render`, :mod:`._render_openai`, :mod:`._render_gemini`), which the planner's offline
explain replays saved requests through, import without starlette or uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .._clock import ManualClock
    from ._server import EmulatorServer, serve
    from .app import Emulator, create_app

__all__ = ["Emulator", "EmulatorServer", "ManualClock", "create_app", "serve"]

_HOMES = {
    "Emulator": ".app",
    "create_app": ".app",
    "EmulatorServer": "._server",
    "serve": "._server",
    "ManualClock": ".._clock",
}


__getattr__ = lazy_names(__name__, _HOMES)
