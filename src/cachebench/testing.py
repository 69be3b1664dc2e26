"""Pytest plugin: test your LLM app's prompt caching against the local emulator.

Installing cachebench registers this module as a pytest plugin (a ``pytest11`` entry point,
whatever the extras), which provides one fixture, ``cache_emulator``. The fixture needs the
``emulator`` extra (``pip install 'cachebench[emulator]'``: starlette, uvicorn); without it
the plugin costs nothing until a test asks for the fixture::

    import anthropic
    from cachebench import CacheTracker

    def test_second_call_reads_the_system_prompt(cache_emulator):
        client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-test")
        tracker = CacheTracker(clock=cache_emulator.clock)
        create = tracker.wrap(client.messages.create)
        create(**request)                       # writes the cache
        second = create(**request)              # reads it
        assert second.usage.cache_read_input_tokens > 0
        cache_emulator.advance(301)             # past 5 idle minutes on the emulator's clock
        assert create(**request).usage.cache_read_input_tokens == 0

The fixture yields a :class:`CacheEmulator`:

- ``url``: the server's base URL (``http://127.0.0.1:<port>``, no trailing slash);
- ``anthropic_base_url`` (``anthropic.Anthropic(base_url=...)``), ``openai_base_url`` (ends
  with ``/v1``: ``openai.OpenAI(base_url=...)``), ``bedrock_endpoint_url``
  (``boto3.client("bedrock-runtime", endpoint_url=..., region_name="us-east-1", ...)`` with
  any credentials) and ``gemini_base_url`` (``genai.Client(api_key=...,
  http_options={"base_url": ...})``);
- ``clock``: the emulator's manual clock; give it to a ``CacheTracker(clock=...)`` so the
  tracker and the emulator agree on time, and move it with ``advance(seconds)`` (an entry
  is alive while ``now <= expires``: a 5m entry is still read after ``advance(300)`` and
  gone after ``advance(301)``);
- ``set_knobs(**fields)``: latency, time to first token, injected errors and isolated
  misses (``cache_emulator.set_knobs(error_rate=1.0, error_status=429)``; ``scope=`` limits
  them to one API key); ``reset()`` forgets every cache entry and restores the knobs;
- ``emulator``: the :class:`cachebench.emulator.Emulator` itself.

Every test starts with an empty cache and default knobs. One server runs per test session
(per pytest-xdist worker); the clock only moves forward across tests. Caches are scoped by
API key (AWS access key id on Bedrock), so two clients with different keys never share
entries. Nothing heavy is imported until the fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .cachemodel import Knobs
    from .emulator import Emulator, EmulatorServer, ManualClock

__all__ = ["CacheEmulator", "cache_emulator"]


class CacheEmulator:
    """A running emulator and the URLs to point each provider's SDK at."""

    def __init__(self, server: EmulatorServer) -> None:
        self._server = server

    @property
    def emulator(self) -> Emulator:
        return self._server.emulator

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def bedrock_endpoint_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    @property
    def clock(self) -> ManualClock:
        from .emulator import ManualClock

        clock = self.emulator.clock
        if not isinstance(clock, ManualClock):  # pragma: no cover - the fixture always builds one
            raise TypeError("this emulator does not run on a manual clock")
        return clock

    def advance(self, seconds: float) -> float:
        """Move the emulator's clock forward (and any tracker sharing :attr:`clock`)."""
        return self.emulator.advance(seconds)

    def set_knobs(self, knobs: Knobs | None = None, *, scope: str | None = None, **fields: Any) -> Knobs:
        """Change the knobs (``latency_ms``, ``ttft_ms``, ``error_rate``, ``error_status``,
        ``miss_rate``, ``seed``), for every caller or for one API key (``scope``)."""
        return self.emulator.set_knobs(knobs, scope=scope, **fields)

    def reset(self) -> None:
        """Forget every cache entry and restore the default knobs."""
        self.emulator.reset()


@pytest.fixture(scope="session")
def _cache_emulator_server() -> Iterator[EmulatorServer]:
    from .emulator import Emulator, EmulatorServer, ManualClock

    with EmulatorServer(Emulator(clock=ManualClock())) as server:
        yield server


@pytest.fixture
def cache_emulator(_cache_emulator_server: EmulatorServer) -> Iterator[CacheEmulator]:
    """A local provider emulator with an empty cache (see :mod:`cachebench.testing`)."""
    _cache_emulator_server.emulator.reset()
    yield CacheEmulator(_cache_emulator_server)
    _cache_emulator_server.emulator.reset()
