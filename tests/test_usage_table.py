"""Usage normalisation over recorded response bodies from every provider (tests/usage_cases/*.json).

Each case is a plain JSON body as the provider sends it (or the list of its stream events)
with the normalised counts and the exact cost computed by hand from the published prices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cachebench import CacheTracker

CASES_DIR = Path(__file__).parent / "usage_cases"


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for case in json.loads(path.read_text()):
            case["_file"] = path.name
            cases.append(case)
    return cases


CASES = load_cases()


def test_the_table_covers_every_provider() -> None:
    """At least 25 bodies, from all four providers."""
    assert len(CASES) >= 25
    assert {c["provider"] for c in CASES} == {"anthropic", "openai", "bedrock", "gemini"}


@pytest.mark.parametrize("case", CASES, ids=[f"{c['provider']}:{c['name']}" for c in CASES])
def test_usage_is_normalised(case: dict[str, Any]) -> None:
    """Recording the body gives exactly the expected normalised counts and cost."""
    tracker = CacheTracker(clock=lambda: 1_763_000_000.0)
    response = case["events"] if "events" in case else case["response"]
    m = tracker.record(response, request=case.get("request"), provider=case["provider"])
    assert m is not None
    exp = case["expected"]
    got = {
        "input_tokens": m.input_tokens,
        "cache_read_tokens": m.cache_read_tokens,
        "cache_write_tokens": m.cache_write_tokens,
        "cache_write_1h_tokens": m.cache_write_1h_tokens,
        "output_tokens": m.output_tokens,
        "usage_known": m.usage_known,
    }
    assert got == {k: exp[k] for k in got}
    if exp["cost_usd"] is None:
        assert m.cost_usd is None
    else:
        assert m.cost_usd == pytest.approx(exp["cost_usd"], rel=1e-9, abs=1e-15)
