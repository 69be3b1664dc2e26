"""Testing helpers: :class:`ManualClock`, and a pytest plugin that runs the local emulator.

``ManualClock`` needs no extra: ``from cachebench.testing import ManualClock`` works with the
core package alone, with or without pytest. Give one clock to a ``CacheTracker(clock=...)``
(and to an ``Emulator(clock=...)``) and move it with ``advance(seconds)``.

Installing cachebench registers this module as a pytest plugin (a ``pytest11`` entry point,
whatever the extras), which provides one fixture, ``cache_emulator``. The fixture needs the
``emulator`` extra (starlette, uvicorn); without it the plugin costs nothing until a test
asks for the fixture::

    import anthropic

    from cachebench import CacheTracker

    SYSTEM = [{"type": "text", "text": "Answer as the shop's support agent. " * 150,
               "cache_control": {"type": "ephemeral"}}]

    def ask(create, question):
        return create(model="claude-sonnet-5", max_tokens=64, system=SYSTEM,
                      messages=[{"role": "user", "content": question}])

    def test_second_call_reads_the_system_prompt(cache_emulator):
        client = anthropic.Anthropic(base_url=cache_emulator.anthropic_base_url, api_key="sk-test")
        tracker = CacheTracker(clock=cache_emulator.clock)
        create = tracker.wrap(client.messages.create)
        ask(create, "Hi")                                   # writes the cache
        assert ask(create, "Hello").usage.cache_read_input_tokens > 0
        cache_emulator.advance(301)             # past 5 idle minutes on the emulator's clock
        assert ask(create, "Hey").usage.cache_read_input_tokens == 0
        client.close()

The fixture yields a :class:`CacheEmulator`:

- ``url``: the server's base URL (``http://127.0.0.1:<port>``, no trailing slash);
- ``anthropic_base_url`` (``anthropic.Anthropic(base_url=...)``), ``openai_base_url`` (ends
  with ``/v1``: ``openai.OpenAI(base_url=...)``), ``bedrock_endpoint_url``
  (``boto3.client("bedrock-runtime", endpoint_url=..., region_name="us-east-1", ...)`` with
  any credentials) and ``gemini_base_url`` (``genai.Client(api_key=...,
  http_options={"base_url": ...})``);
- ``clock``: the emulator's :class:`ManualClock`; give it to a ``CacheTracker(clock=...)`` so
  the tracker and the emulator agree on time, and move it with ``advance(seconds)`` (an entry
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

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._clock import ManualClock

if TYPE_CHECKING:
    from .cachemodel import Knobs
    from .emulator import Emulator, EmulatorServer

__all__ = ["CacheEmulator", "ManualClock"]


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

    @property
    def any_model(self) -> bool:
        """Whether model names the providers do not serve are answered too (default False:
        they get the provider's own not-found error, as in production). Set it to True for a
        test that uses a made-up model name; each test starts with it False."""
        return self.emulator.any_model

    @any_model.setter
    def any_model(self, value: bool) -> None:
        self.emulator.any_model = bool(value)

    def reset(self) -> None:
        """Forget every cache entry, restore the default knobs and refuse unknown models again."""
        self.emulator.reset()
        self.emulator.any_model = False


# The fixtures exist only where pytest does: ManualClock and CacheEmulator import without it.
if importlib.util.find_spec("pytest") is not None:
    import pytest

    __all__ += ["cache_emulator"]

    @pytest.fixture(scope="session")
    def _cache_emulator_server() -> Iterator[EmulatorServer]:
        try:
            from .emulator import Emulator, EmulatorServer
        except ImportError as e:
            raise ImportError(
                f"the cache_emulator fixture needs the emulator extra: pip install 'cachebench[emulator]' ({e})"
            ) from e

        with EmulatorServer(Emulator(clock=ManualClock())) as server:
            yield server

    @pytest.fixture
    def cache_emulator(_cache_emulator_server: EmulatorServer) -> Iterator[CacheEmulator]:
        """A local provider emulator with an empty cache (see :mod:`cachebench.testing`)."""
        emulator = CacheEmulator(_cache_emulator_server)
        emulator.reset()
        yield emulator
        emulator.reset()
