"""The cache view's expectations and the aggregates' sums, pinned where ``make mutate`` found
them unpinned.

Each test kills mutants of :mod:`cachebench.expect`, :mod:`cachebench.diagnose.causes` and
:mod:`cachebench.stats` that survived the selection ``make mutate`` runs (see
``benchmarks/mutation.md``), through the public API only: ``record()`` of recorded-shape bodies,
or ``CacheTracker.wrap`` around a real SDK client over ``httpx2.MockTransport``, with a
:class:`~cachebench.testing.ManualClock`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import anthropic
import pytest

from cachebench import CallMetrics
from cachebench.facts import LOOKBACK
from cachebench.testing import ManualClock

from . import fakes
from .test_mutation_stats import UNPRICED_MODEL, failing_client, unknown_usage

MARK = {"type": "ephemeral"}
CATALOGUE = "Answer from the catalogue. " * 300


def chat_request(*users: str, system: str = CATALOGUE) -> dict[str, Any]:
    return {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": system}, *({"role": "user", "content": u} for u in users)],
    }


def system_request(text: str) -> dict[str, Any]:
    return fakes.request() | {"system": [{"type": "text", "text": text, "cache_control": MARK}]}


def two_layers(second: str = "layer 1 ") -> dict[str, Any]:
    """Two marked system blocks of the same size."""
    blocks = [{"type": "text", "text": text * 400, "cache_control": MARK} for text in ("layer 0 ", second)]
    return fakes.request() | {"system": blocks}


def test_implicit_caching_expects_the_longest_prefix_it_measured() -> None:
    """OpenAI caches prompt prefixes on its own, and only from 1,024 tokens. A short prompt is
    ``below_minimum`` every time; one read in part on first sight (cached by another process)
    is ``cold`` for the rest; a long one is ``cold``, then expected as measured (1,920
    tokens read), its longer follow-up expected up to the last measured size in the provider's
    128-token steps; reading less is the provider's miss; an hour later it is ``ttl_expired``.
    The flow's hit ratio is the reads over what was expected."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    short = chat_request("Hi", system="Be brief.")
    table: list[tuple[dict[str, Any], dict[str, Any], float, tuple[int, str | None, bool]]] = [
        (fakes.chat_completion(20, 0), short, 10, (0, "below_minimum", False)),
        (fakes.chat_completion(20, 0), short, 10, (0, "below_minimum", False)),
        (
            fakes.chat_completion(1500, 1024),
            chat_request("q0", system="Warm elsewhere. " * 300),
            10,
            (0, "cold", False),
        ),
        (fakes.chat_completion(2000, 0), chat_request("q1"), 10, (0, "cold", False)),
        (fakes.chat_completion(2100, 1920), chat_request("q1", "q2"), 10, (1920, None, False)),
        (fakes.chat_completion(2200, 1024), chat_request("q1", "q2", "q3"), 10, (2048, "provider", True)),
        (fakes.chat_completion(2200, 0), chat_request("q1", "q2", "q3"), 3600, (0, "ttl_expired", False)),
        (fakes.chat_completion(2300, 0), chat_request("q1", "q2", "q3", "q4"), 10, (2176, "provider", True)),
    ]
    for body, request, after, (expected, cause, unexpected) in table:
        clock.advance(after)
        m = tracker.record(body, request=request, provider="openai", flow="o")
        assert m is not None
        assert (m.expected_read_tokens, m.miss_cause, m.unexpected_miss) == (expected, cause, unexpected)
    assert tracker.by_flow()["o"]["hit_ratio"] == (1920 + 1024) / (1920 + 2048 + 2176)


@pytest.mark.parametrize("rewritten", [1000, 0])
def test_a_read_short_of_a_measured_entry_is_a_miss_even_above_half_of_it(rewritten: int) -> None:
    """A written entry's size is measured: a later call reading two thirds of it is the
    provider's unexpected miss, whether it wrote the rest again or not."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    tracker.record(fakes.message(fakes.usage(write=3000)), request=fakes.request("a"), provider="anthropic")
    clock.advance(10)
    m = tracker.record(
        fakes.message(fakes.usage(read=2000, write=rewritten)),
        request=fakes.request("b"),
        provider="anthropic",
    )
    assert m is not None
    assert (m.expected_read_tokens, m.unexpected_miss, m.miss_cause) == (3000, True, "provider")


def test_each_breakpoint_is_expected_at_its_share_of_the_measured_size() -> None:
    """Two breakpoints written together (3,000 tokens through the last, equal byte sizes): a
    call that changes the second layer is expected to read the first one's share, 1,500 tokens,
    and writing its new second layer of the same size is ``cold``; the unchanged request is
    then expected to read all 3,000."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)

    def call(request: dict[str, Any], **usage: int) -> CallMetrics:
        clock.advance(10)
        m = tracker.record(fakes.message(fakes.usage(**usage)), request=request, provider="anthropic")
        assert m is not None
        return m

    assert call(two_layers(), write=3000).miss_cause == "cold"
    changed = call(two_layers("other layer "), read=1500, write=1500)
    assert (changed.expected_read_tokens, changed.miss_cause, changed.unexpected_miss) == (
        1500,
        "cold",
        False,
    )
    again = call(two_layers(), read=3000)
    assert (again.expected_read_tokens, again.miss_cause) == (3000, None)


@pytest.mark.parametrize(("others", "expected"), [(3, 3000), (8, 0)])
def test_the_view_keeps_8_entries_per_retained_prefix_at_most(others: int, expected: int) -> None:
    """The cache view holds at most ``8 * max_prefixes`` entries, in two generations: with
    ``max_prefixes=1``, an entry written before 3 others is still expected, one written before
    8 others has been forgotten."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock, max_prefixes=1)

    def call(text: str, **usage: int) -> CallMetrics:
        clock.advance(1)
        m = tracker.record(
            fakes.message(fakes.usage(**usage)), request=system_request(text), provider="anthropic"
        )
        assert m is not None
        return m

    call("Tenant A. " * 300, write=3000)
    for i in range(others):
        call(f"Tenant {i}. " * 300, write=3000)
    assert call("Tenant A. " * 300, read=expected).expected_read_tokens == expected


def test_a_call_in_a_wrapped_history_slot_never_inherits_the_error_it_replaced() -> None:
    """The history keeps ``max_calls``; the call that takes the slot of a failed call carries
    no error of its own."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock, max_calls=2)
    with pytest.raises(anthropic.InternalServerError):
        tracker.wrap(failing_client().messages.create)(**fakes.request())
    for user in ("q1", "q2"):
        tracker.record(
            fakes.message(fakes.usage(write=3000)), request=fakes.request(user), provider="anthropic"
        )
    assert [m.error for m in tracker.calls()] == [None, None]


def expected_sums(calls: list[CallMetrics]) -> dict[str, Any]:
    """The aggregate keys, from the calls' own fields and properties."""
    known = [m for m in calls if m.usage_known]
    priced = [m for m in known if not m.unpriced and m.cost_usd is not None]
    hit = sum(m.hit_tokens for m in known)
    cacheable = sum(m.cacheable_tokens for m in known)
    read = sum(m.cache_read_tokens for m in known)
    total_in = sum(m.input_tokens + m.cache_read_tokens + m.cache_write_tokens for m in known)
    cost = sum(m.cost_usd or 0.0 for m in priced)
    without = sum(m.cost_without_cache_usd or 0.0 for m in priced)
    fixed = [m.hit_tokens + m.avoidable_tokens for m in known]
    fixed_den = sum(max(f, m.cacheable_tokens) for f, m in zip(fixed, known, strict=True))
    return {
        "calls": len(calls),
        "errors": sum(m.error is not None for m in calls),
        "hit_ratio": hit / cacheable if cacheable else None,
        "token_hit_ratio": read / total_in if total_in else None,
        "input_tokens": sum(m.input_tokens for m in known),
        "cache_read_tokens": read,
        "cache_write_tokens": sum(m.cache_write_tokens for m in known),
        "cache_write_1h_tokens": sum(m.cache_write_1h_tokens for m in known),
        "output_tokens": sum(m.output_tokens for m in known),
        "cost_usd": pytest.approx(cost) if priced else None,
        "cost_without_cache_usd": pytest.approx(without) if priced else None,
        "cost_saved_usd": pytest.approx(without - cost) if priced else None,
        "avoidable_cost_usd": pytest.approx(sum(m.avoidable_cost_usd or 0.0 for m in priced))
        if priced
        else None,
        "hit_ratio_if_fixed": sum(fixed) / fixed_den if fixed_den else None,
        "unpriced_calls": sum(m.usage_known and (m.unpriced or m.cost_usd is None) for m in calls),
        "unknown_usage_calls": len(calls) - len(known),
        "holds": 0,
    }


def test_every_aggregate_is_the_sum_of_its_calls() -> None:
    """The totals, each flow's and each prefix's aggregate keys equal what their calls add up
    to (ratios of sums; costs of the priced calls only), and a prefix's ``first_seen`` and
    ``last_seen`` are its calls' earliest and latest timestamps, in whatever order they were
    replayed."""
    clock = ManualClock()
    t0 = clock()
    tracker = fakes.quiet_tracker(clock)
    create = tracker.wrap(failing_client().messages.create, flow="a")
    with pytest.raises(anthropic.InternalServerError):
        create(**fakes.request())
    anthropic_calls = [
        (fakes.message(fakes.usage(write=3000, write_1h=3000, output=40)), fakes.request("q0", ttl="1h"), 20),
        (fakes.message(fakes.usage(read=3000, output=7)), fakes.request("q1", ttl="1h"), 10),
        (unknown_usage(), fakes.request("q2", ttl="1h"), 30),
        (fakes.message(fakes.usage(read=3000, output=3), model=UNPRICED_MODEL), fakes.request("q3"), 40),
        (fakes.message(fakes.usage(read=1000, write=2000, output=11)), fakes.request("q4", ttl="1h"), 25),
    ]
    for body, request, at in anthropic_calls:
        tracker.record(body, request=request, provider="anthropic", flow="a", timestamp=t0 + at)
    for body, request in [
        (fakes.chat_completion(2000, 0), chat_request("q1")),
        (fakes.chat_completion(2100, 1920), chat_request("q1", "q2")),
        (fakes.chat_completion(2200, 1024), chat_request("q1", "q2", "q3")),
    ]:
        clock.advance(60)
        tracker.record(body, request=request, provider="openai", flow="o")
    calls = tracker.calls()
    assert len(calls) == 9
    assert tracker.aggregate() == expected_sums(calls)
    for flow, row in tracker.by_flow().items():
        mine = [m for m in calls if m.flow == flow]
        assert {k: v for k, v in row.items() if k in expected_sums(mine)} == expected_sums(mine), flow
    by_prefix: dict[str, list[CallMetrics]] = defaultdict(list)
    for m in calls:
        if m.prefix_id is not None:
            by_prefix[m.prefix_id].append(m)
    rows = tracker.by_prefix()
    assert set(rows) == set(by_prefix)
    for pid, mine in by_prefix.items():
        row = rows[pid]
        assert {k: v for k, v in row.items() if k in expected_sums(mine)} == expected_sums(mine), pid
        times = [m.timestamp for m in mine]
        assert (row["first_seen"], row["last_seen"]) == (min(times), max(times))


def conversation(turns: int) -> dict[str, Any]:
    """A conversation of ``turns`` one-block messages, the breakpoint on the last one."""
    messages: list[dict[str, Any]] = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": [{"type": "text", "text": f"turn {i} " * 50}],
        }
        for i in range(turns)
    ]
    messages[-1]["content"][-1]["cache_control"] = MARK
    return fakes.request() | {"system": fakes.SYSTEM_TEXT, "messages": messages}


@pytest.mark.parametrize(("ahead", "expected"), [(1, 3000), (LOOKBACK, 3000), (LOOKBACK + 1, 0)])
def test_a_breakpoint_looks_back_20_blocks_for_an_earlier_entry(ahead: int, expected: int) -> None:
    """Anthropic's lookback: a breakpoint finds an entry written up to 20 blocks before it (what
    lets turn N+1 read turn N's entry), and not one 21 blocks before."""
    clock = ManualClock()
    tracker = fakes.quiet_tracker(clock)
    tracker.record(fakes.message(fakes.usage(write=3000)), request=conversation(5), provider="anthropic")
    clock.advance(10)
    m = tracker.record(
        fakes.message(fakes.usage(read=expected, write=500)),
        request=conversation(5 + ahead),
        provider="anthropic",
    )
    assert m is not None and m.expected_read_tokens == expected


def test_the_first_cacheable_breakpoint_is_the_first_whose_share_reaches_the_minimum() -> None:
    """cacheable_from: a breakpoint whose byte share of the call's tokens is exactly the
    minimum counts; one below it does not; the last one always does when something was
    cached; when nothing was (no read, no write) none does; unknown usage says 0."""
    from types import SimpleNamespace

    from cachebench.expect import cacheable_from
    from cachebench.types import Usage

    key: Any = SimpleNamespace(bp_bytes=(100, 400, 1000), total_bytes=1200)
    wrote = Usage(input_tokens=5, cache_write_tokens=5000)  # 500 tokens per 100 bytes
    assert cacheable_from(key, wrote, 500) == 0  # (100 bytes: exactly the minimum)
    assert cacheable_from(key, wrote, 501) == 1
    assert cacheable_from(key, wrote, 2000) == 1  # (400 bytes: exactly it)
    assert cacheable_from(key, wrote, 2001) == 2
    assert cacheable_from(key, wrote, 10**9) == 2  # (the last one: measured, not a share)
    assert cacheable_from(key, Usage(input_tokens=3000), 500) == 3  # (nothing cached)
    assert cacheable_from(key, Usage(known=False), 500) == 0
