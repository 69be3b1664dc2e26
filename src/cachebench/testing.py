"""Testing helpers: :class:`ManualClock`, the CI gate's assertions, and a pytest plugin that
runs the local emulator.

The CI gate (``docs/planner.md``): :func:`assert_prefix_stable` builds a request under a moved
clock, other hash seeds, re-ordered arguments or other users and fails with
:class:`PrefixUnstable` (the :class:`cachebench.PrefixDiff` and the fix) when its cached prefix
changes; :func:`assert_cache_friendly` fails on :func:`cachebench.lint` errors. The clock is
moved with time-machine (the ``testing`` extra).

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
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._clock import ManualClock
from ._extras import install_hint

if TYPE_CHECKING:
    from .cachemodel import Knobs
    from .emulator import Emulator, EmulatorServer
    from .planner import Finding
    from .planner.stability import Instability

__all__ = [
    "CacheEmulator",
    "ManualClock",
    "PrefixUnstable",
    "assert_cache_friendly",
    "assert_prefix_stable",
]


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


# -- the CI gate: assertions for users' own tests ---------------------------------------------

VARIATIONS = ("clock", "hash_seed", "order", "user")
# The instants a request is built at for the "clock" variation (UTC): a base, 7 seconds and
# 59 minutes later, all on one day, so a date at day precision does not count as a change.
CLOCK_INSTANTS = (1_772_532_000.0, 1_772_532_007.0, 1_772_535_540.0)
HASH_SEEDS = ("1", "2")


class PrefixUnstable(AssertionError):
    """The cached prefix of a request differs between builds that should give the same one.

    ``variation`` names what was varied (``clock``, ``hash_seed``, ``order``, ``user``),
    ``instability`` where the prefix differs (its ``diff`` is a :class:`cachebench.PrefixDiff`)
    and the fix."""

    def __init__(self, variation: str, detail: str, instability: Instability) -> None:
        self.variation = variation
        self.instability = instability
        self.diff = instability.diff  # None when the model or the breakpoints moved
        super().__init__(f"the cached prefix is not stable under {variation} ({detail}): {instability}")


def _build_at(
    build: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], instant: float
) -> Any:
    """``build(*args, **kwargs)`` with the clock stopped at ``instant`` (also in a child
    interpreter: a module-level function, so it pickles)."""
    import time_machine

    with time_machine.travel(instant, tick=False):
        return build(*args, **kwargs)


def _build_with_seed(
    build: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], seed: str, instant: float
) -> Any:
    """Build the request in a new interpreter whose ``PYTHONHASHSEED`` is ``seed`` (set and
    dict-of-set orders change with it)."""
    import multiprocessing

    try:
        pickle.dumps((build, args, kwargs))
    except Exception as e:
        raise TypeError(
            "the hash_seed variation builds the request in a new interpreter, so build_request and "
            f"its arguments must pickle (a module-level function): {e}; or leave hash_seed out of variations"
        ) from e
    previous = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = seed
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_build_at, (build, args, kwargs, instant))
    finally:
        if previous is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = previous


def _reordered(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(reversed(list(value.items())))
    if isinstance(value, (list, tuple)):
        return type(value)(reversed(value))
    raise TypeError(f"only lists, tuples and dicts can be re-ordered, got {type(value).__name__}")


def assert_prefix_stable(
    build_request: Callable[..., Mapping[str, Any]],
    variations: Sequence[str] = ("clock", "hash_seed"),
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    unordered: Sequence[str] = (),
    users: Sequence[Any] = (),
    user_arg: str = "user",
    provider: str | None = None,
    model: str | None = None,
) -> None:
    """Fail (:class:`PrefixUnstable`) when ``build_request(*args, **kwargs)`` gives a different
    cached prefix under any of ``variations``:

    - ``"clock"``: built at three instants of one day (7 seconds and 59 minutes apart): a time,
      an epoch stamp, a UUID or a request id in the prefix fails it;
    - ``"hash_seed"``: built in two new interpreters with other ``PYTHONHASHSEED`` values: a
      tool list built from a set fails it (``build_request`` must be a module-level function);
    - ``"order"``: built with each keyword argument named in ``unordered`` (a list, tuple or
      dict) in reverse order: a builder that keeps its caller's order fails it;
    - ``"user"``: built with ``kwargs[user_arg]`` set to each of ``users``: the first layer
      (through the first breakpoint; the first of several meant to be shared) must be the same.

    The cached prefix is everything through the request's last breakpoint, or before its newest
    turn where it sets none. The error names the section, block, byte range and kind of the
    change (as a live diagnosis would) and the fix. Needs the ``testing`` extra (time-machine).
    """
    from .planner.stability import first_difference

    unknown = set(variations) - set(VARIATIONS)
    if unknown:
        raise ValueError(f"unknown variations {sorted(unknown)}: choose from {VARIATIONS}")
    kw = dict(kwargs or {})
    missing = [name for name in unordered if name not in kw]
    if missing:
        raise ValueError(f"unordered names arguments that kwargs does not give: {missing}")
    if "user" in variations and len(users) < 2:
        raise ValueError("the user variation needs two or more users=")
    base = _build_at(build_request, args, kw, CLOCK_INSTANTS[0])

    def check(variation: str, detail: str, other: Any, *, first_layer: bool = False) -> None:
        found = first_difference([base, other], provider, model, first_layer=first_layer)
        if found is not None:
            raise PrefixUnstable(variation, detail, found)

    for name in variations:
        if name == "clock":
            for instant in CLOCK_INSTANTS[1:]:
                later = instant - CLOCK_INSTANTS[0]
                check("clock", f"built {later:,.0f} s later", _build_at(build_request, args, kw, instant))
        elif name == "hash_seed":
            for seed in HASH_SEEDS:
                other = _build_with_seed(build_request, args, kw, seed, CLOCK_INSTANTS[0])
                check("hash_seed", f"PYTHONHASHSEED={seed}", other)
        elif name == "order":
            for arg in unordered:
                other = _build_at(build_request, args, {**kw, arg: _reordered(kw[arg])}, CLOCK_INSTANTS[0])
                check("order", f"{arg} in reverse order", other)
        elif name == "user":
            for user in users:
                other = _build_at(build_request, args, {**kw, user_arg: user}, CLOCK_INSTANTS[0])
                check("user", f"{user_arg}={user!r}", other, first_layer=True)


def assert_cache_friendly(
    request: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    provider: str | None = None,
    model: str | None = None,
    *,
    now: float | None = None,
    allow: Sequence[str] = (),
) -> list[Finding]:
    """Fail (``AssertionError``) when :func:`cachebench.lint` finds an error in ``request`` (a
    request body, or several of one flow), listing every error with its place and fix; rule
    codes in ``allow`` are let through. Returns the warnings."""
    from .planner import lint

    findings = lint(request, provider, model, now=now)
    errors = [f for f in findings if f.severity == "error" and f.code not in allow]
    if errors:
        lines = "\n".join(f"  {f}" for f in errors)
        raise AssertionError(f"{len(errors)} cache lint error(s):\n{lines}")
    return [f for f in findings if f.severity != "error"]


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
                f"the cache_emulator fixture needs the emulator extra: {install_hint('emulator')} ({e})"
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
