"""``cachebench.explain()``: one or two sentences per call or incident, from one advice table."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from cachebench import CallMetrics, PrefixDiff, Regression, explain
from cachebench.advice import ADVICE, advice_for
from cachebench.types import ChangeKind, MissCause, ValueType


def call(**fields: Any) -> CallMetrics:
    base: dict[str, Any] = {
        "provider": "anthropic",
        "model": "claude-sonnet-5",
        "flow": "support",
        "prefix_id": "00000000000000aa",
        "breakpoint_ids": ("00000000000000aa",),
        "input_tokens": 10,
        "cache_read_tokens": 0,
        "cache_write_tokens": 2048,
        "cache_write_1h_tokens": 0,
        "output_tokens": 20,
        "elapsed_ms": 500.0,
        "timestamp": 1_800_000_000.0,
        "cost_usd": 0.01,
        "cost_without_cache_usd": 0.008,
        "cost_saved_usd": -0.002,
    }
    base.update(fields)
    return CallMetrics(**base)


def test_every_cause_has_advice_and_every_change_of_prefix_changed_its_own() -> None:
    """Each miss cause finds a why and a fix; each kind and value type of change behind a
    ``prefix_changed`` has advice of its own (not the generic edit's)."""
    for cause in get_args(MissCause):
        assert advice_for(cause, None) is not None, cause
    generic = ADVICE["prefix_changed", "content"]
    for value_type in get_args(ValueType):
        diff = PrefixDiff("system", 0, 0, 5, 9, kind="volatile", value_type=value_type)
        found = advice_for("prefix_changed", diff)
        assert found is not None and found != generic, value_type
    for kind in get_args(ChangeKind):
        assert advice_for("prefix_changed", PrefixDiff("tools", 1, 1, 0, 9, kind=kind)) is not None, kind


@pytest.mark.parametrize(
    ("diff", "words"),
    [
        (PrefixDiff("system", 0, 0, 25, 45, kind="volatile", value_type="timestamp"), "move the timestamp"),
        (PrefixDiff("system", 1, 1, 3, 39, kind="volatile", value_type="uuid"), "move the UUID"),
        (PrefixDiff("tools", 2, 2, 0, 800, kind="reordered"), "sort the tools"),
        (PrefixDiff("messages", 0, 3, 10, 90, kind="serialization"), "sort_keys=True"),
    ],
)
def test_a_call_names_the_change_its_place_cost_and_fix(diff: PrefixDiff, words: str) -> None:
    m = call(miss_cause="prefix_changed", diff=diff, avoidable_cost_usd=0.004421, avoidable_tokens=2048)
    text = explain(m)
    assert text.startswith(
        f"Missed the cache (prefix_changed ({diff.section} block {diff.block_index}, "
        f"bytes {diff.byte_start}-{diff.byte_end})): "
    )
    assert "It cost $0.004421 more than a cache read." in text and words in text
    assert text in str(m)  # str() of a call with a miss ends with its explanation


def test_a_serialization_change_names_whitespace_as_well_as_key_order() -> None:
    """The same content serialised differently may differ in key order or in whitespace only:
    the words name both, and the fix keeps both fixed."""
    diff = PrefixDiff("system", 0, 0, 40, 52, kind="serialization")
    text = explain(call(miss_cause="serialization_changed", diff=diff, avoidable_cost_usd=0.001))
    assert "keys in another order, other whitespace" in text
    assert "the same indentation and separators, the same whitespace" in text


def test_legitimate_misses_say_there_is_nothing_to_fix_and_cost_nothing_avoidable() -> None:
    cold = explain(call(miss_cause="cold"))
    assert cold.startswith("Missed the cache (cold): the flow had never sent this prefix")
    assert "cost" not in cold and cold.endswith("Fix: none needed, a first write is expected.")
    assert "1 h TTL" in explain(call(miss_cause="ttl_expired"))
    assert "miss_aware" in explain(call(miss_cause="concurrent", avoidable_cost_usd=0.002))


def test_calls_without_a_miss_say_what_happened() -> None:
    assert explain(call(cache_read_tokens=2048, cache_write_tokens=0)).startswith(
        "The call read 2,048 tokens"
    )
    assert "no cache breakpoint" in explain(call(prefix_id=None, breakpoint_ids=()))
    assert "no usage" in explain(call(usage_known=False))
    assert explain(call(error="APIError: boom")).startswith("The call failed (APIError: boom)")


def test_an_incident_is_explained_with_its_cost_per_hour_and_fix() -> None:
    churn = Regression(
        "support",
        "prefix_churn",
        1_800_000_000.0,
        0.97,
        0.05,
        27,
        1.5834,
        PrefixDiff("system", 0, 0, 25, 45, kind="volatile", value_type="timestamp"),
    )
    assert explain(churn) == (
        "Prefix churn in flow 'support' at system block 0, bytes 25-45: a timestamp in the cached "
        "prefix changes on every call, so every call writes a new entry, costing $1.58 an hour more. "
        "Fix: move the timestamp after the last cache breakpoint (into the newest user turn), or round it."
    )
    drop = Regression("billing", "hit_ratio_drop", 1_800_000_000.0, 0.9, 0.2, 4, None)
    assert explain(drop).startswith("Hit-ratio drop in flow 'billing': the prompt did not change")


def test_explain_refuses_anything_else() -> None:
    with pytest.raises(TypeError, match="explain\\(\\) takes a CallMetrics or a Regression, got dict"):
        explain({"miss_cause": "cold"})  # type: ignore[arg-type]
