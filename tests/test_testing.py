"""``cachebench.testing`` outside the emulator: :class:`ManualClock` needs no extra.

A user who only wants a clock to move by hand (``unittest``, a script, a tracker in a replay)
installs the core package; the emulator's starlette and uvicorn, and pytest itself, are
extras. The pytest plugin's fixture is tested where the emulator runs (``tests/test_cli.py``).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from cachebench.emulator import Emulator
from cachebench.emulator import ManualClock as EmulatorClock
from cachebench.testing import ManualClock

# Run in a fresh interpreter where importing any of these fails, as it would in a venv with
# the core package alone: ManualClock must still import and drive a tracker.
WITHOUT_EXTRAS = textwrap.dedent(
    """
    import sys

    for name in ("starlette", "uvicorn", "pytest", "anthropic", "openai", "typer"):
        sys.modules[name] = None  # "import name" now raises ImportError

    from cachebench import CacheTracker
    from cachebench.testing import ManualClock

    clock = ManualClock(1_000.0)
    tracker = CacheTracker(clock=clock)
    assert tracker.clock() == 1_000.0
    assert clock.advance(301) == 1_301.0 == tracker.clock()
    heavy = sorted(n for n in ("starlette", "uvicorn", "pytest") if sys.modules.get(n) is not None)
    assert not heavy, heavy
    import cachebench.testing

    assert not hasattr(cachebench.testing, "cache_emulator")
    assert cachebench.testing.__all__ == [
        "CacheEmulator", "ManualClock", "PrefixUnstable", "assert_cache_friendly", "assert_prefix_stable"
    ]
    print("ok")
    """
)


def test_manual_clock_imports_without_the_emulator_extras_or_pytest() -> None:
    """With starlette, uvicorn, pytest and the SDKs unimportable, ``from cachebench.testing
    import ManualClock`` works and the clock drives a tracker; the fixture is simply absent."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_the_emulator_runs_on_the_same_clock_class() -> None:
    """One ManualClock: the one ``cachebench.testing`` exports is the emulator's, so an
    ``Emulator`` built with it can be advanced."""
    assert ManualClock is EmulatorClock
    emulator = Emulator(clock=ManualClock(50.0))
    assert emulator.manual_clock
    assert emulator.advance(10) == 60.0 == emulator.clock()


def test_manual_clock_moves_only_forward_and_only_when_told() -> None:
    """``advance`` adds finite, non-negative seconds and returns the new time; anything else
    is a ``ValueError`` that leaves the time unchanged."""
    clock = ManualClock()
    assert clock() == 1_700_000_000.0
    assert clock.advance(0) == 1_700_000_000.0
    assert clock.advance(2.5) == 1_700_000_002.5 == clock()
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite number >= 0"):
            clock.advance(bad)
    assert clock() == 1_700_000_002.5


def test_the_fixture_refuses_made_up_models_unless_a_test_allows_them(cache_emulator: object) -> None:
    """A made-up model name gets Anthropic's own not-found error, as it would in production;
    ``cache_emulator.any_model = True`` serves it for one test, and the next test starts
    refusing again (the fixture resets it)."""
    import anthropic

    from cachebench.testing import CacheEmulator

    assert isinstance(cache_emulator, CacheEmulator)
    assert cache_emulator.any_model is False
    with anthropic.Anthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-test", max_retries=0
    ) as client:
        request = {
            "model": "claude-made-up-9",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(**request)
        cache_emulator.any_model = True
        assert client.messages.create(**request).model == "claude-made-up-9"
        cache_emulator.reset()
        assert cache_emulator.any_model is False
