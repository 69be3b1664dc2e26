"""The CI gate users put in their own tests: ``assert_prefix_stable`` builds a request under
varied clock, hash seed, argument order and user and fails with the place and the fix;
``assert_cache_friendly`` fails on lint errors."""

from __future__ import annotations

import pytest

from cachebench.testing import PrefixUnstable, assert_cache_friendly, assert_prefix_stable

from . import gate_builders as builders


def test_a_well_built_request_passes_every_variation() -> None:
    """Sorted tools, a fixed policy, the time in the question: stable under every variation
    (the user layer is its own, after the shared one)."""
    assert_prefix_stable(
        builders.good,
        ("clock", "hash_seed", "order", "user"),
        kwargs={"user": "ann", "tools": builders.TOOL_NAMES},
        unordered=["tools"],
        users=["ann", "bob"],
    )


def test_a_timestamp_in_the_system_prompt_fails_under_the_clock() -> None:
    """The current time in the cached system prompt: the error names the system block, the
    timestamp's bytes and the fix."""
    with pytest.raises(PrefixUnstable) as caught:
        assert_prefix_stable(builders.with_timestamp, ("clock",))
    e = caught.value
    assert e.variation == "clock"
    assert (e.diff.section, e.diff.block_index, e.diff.kind, e.diff.value_type) == (
        "system",
        0,
        "volatile",
        "timestamp",
    )
    # ["system","Current time: 2026-03-03T10:00:07+00:00. ...: 11 bytes, then 14 of "Current time: "
    assert (e.diff.byte_start, e.diff.byte_end) == (25, 50)
    assert "built 7 s later" in str(e) and "move the timestamp after the last cache breakpoint" in str(e)


def test_a_uuid_in_the_system_prompt_fails() -> None:
    """A new UUID per build: the error names it as a uuid in system block 0."""
    with pytest.raises(PrefixUnstable) as caught:
        assert_prefix_stable(builders.with_uuid, ("clock",))
    assert (caught.value.diff.section, caught.value.diff.value_type) == ("system", "uuid")
    assert (caught.value.diff.byte_start, caught.value.diff.byte_end) == (19, 55)


def test_tools_built_from_a_set_fail_under_another_hash_seed() -> None:
    """A tool list built from a set comes in another order in an interpreter with another
    PYTHONHASHSEED: the error says the tools were re-ordered."""
    with pytest.raises(PrefixUnstable) as caught:
        assert_prefix_stable(builders.tools_from_a_set, ("hash_seed",))
    assert caught.value.variation == "hash_seed"
    assert (caught.value.diff.section, caught.value.diff.kind) == ("tools", "reordered")
    assert "sort the tools" in str(caught.value)


def test_a_builder_that_keeps_its_callers_order_fails_under_order() -> None:
    """Tools passed in another order reach the request in that order: re-ordered tools."""
    with pytest.raises(PrefixUnstable) as caught:
        assert_prefix_stable(
            builders.keeps_caller_order,
            ("order",),
            kwargs={"tools": builders.TOOL_NAMES},
            unordered=["tools"],
        )
    assert caught.value.diff.kind == "reordered"
    assert "tools in reverse order" in str(caught.value)


def test_the_user_inside_the_shared_layer_fails_under_user() -> None:
    """The customer's name at the start of the first layer: another user's build differs
    there (content), so the layer meant to be shared is per user."""
    with pytest.raises(PrefixUnstable) as caught:
        assert_prefix_stable(builders.user_first, ("user",), users=["ann", "bob"])
    assert (caught.value.diff.section, caught.value.diff.block_index) == ("system", 0)
    assert "user='ann'" in str(caught.value) or "user='bob'" in str(caught.value)


def test_bad_arguments_are_clear_errors() -> None:
    """Unknown variations, a user variation without users, unordered names not given, and a
    builder that cannot run in a new interpreter each raise a clear error before any build."""
    with pytest.raises(ValueError, match="unknown variations"):
        assert_prefix_stable(builders.good, ("moon",))
    with pytest.raises(ValueError, match="two or more users"):
        assert_prefix_stable(builders.good, ("user",))
    with pytest.raises(ValueError, match="kwargs does not give"):
        assert_prefix_stable(builders.good, ("order",), unordered=["tools"])
    with pytest.raises(TypeError, match="module-level function"):
        assert_prefix_stable(lambda: builders.good(), ("hash_seed",))


def test_assert_cache_friendly_fails_on_lint_errors_and_returns_warnings() -> None:
    """A timestamp in a cached system prompt is a lint error (CB201, with its place); a clean
    request passes and returns its warnings; ``allow`` lets a rule through."""
    bad = builders.with_timestamp()
    with pytest.raises(AssertionError, match=r"CB201 error \(volatile-value\) system block 0"):
        assert_cache_friendly(bad)
    assert assert_cache_friendly(bad, allow=["CB201"]) == []
    assert assert_cache_friendly(builders.good()) == []


def test_first_difference_names_a_moved_breakpoint_and_another_model() -> None:
    """The same blocks with a breakpoint lost, or built for another model, are not the same
    cached prefix: the difference says so (with no block diff) and how to fix it."""
    from cachebench.planner.stability import first_difference

    base = builders.good()
    lost = builders.good()
    del lost["system"][1]["cache_control"]
    found = first_difference([base, lost])
    assert found is not None and found.diff is None
    # eight tools (blocks 0-7), the policy (8), the customer (9)
    assert "its breakpoints are block 8 (5m), request 0's block 8 (5m), block 9 (5m)" in str(found)
    other = builders.good() | {"model": "claude-opus-5"}
    found = first_difference([base, other])
    assert found is not None and found.diff is None and "caches are per model" in found.why
    assert first_difference([base, builders.good()]) is None


def test_first_difference_names_the_build_that_differs() -> None:
    """Of three builds the third differs: it is request 2, named with its diff and the fix;
    builds for another provider's shape are read as such (provider= passes through)."""
    from cachebench.planner.stability import first_difference

    builds = [builders.good(), builders.good(), builders.with_uuid()]
    found = first_difference(builds)
    assert found is not None and found.request == 2
    assert str(found).startswith("request 2 differs from request 0 in its cached prefix: tools block 0")
    same = first_difference([builders.good(), builders.good()], provider="anthropic", model="claude-sonnet-5")
    assert same is None
