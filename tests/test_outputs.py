"""What the tracker hands out is plain, strict JSON and reads as one line.

Every test drives a real ``CacheTracker`` through real SDK clients (``anthropic`` and
``openai`` over ``httpx2.MockTransport``, or ``anthropic`` on the emulator) on a manual clock,
then reads it back: every reader and every ``as_dict()`` survives
``json.dumps(..., allow_nan=False)``, ``by_prefix()`` names every flow of a shared prefix,
``distinct_prefixes`` counts the prefixes a flow used, and ``str()`` of a call and of an
incident (and so the default log lines) is one labelled line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import xxhash

from cachebench import CacheTracker, CallMetrics, PrefixDiff, Regression
from cachebench.stats import DISTINCT_EXACT, MAX_FLOWS_PER_PREFIX, DistinctCount
from cachebench.testing import CacheEmulator, ManualClock

from . import fakes

T0 = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC
PRICES = {
    fakes.MODEL: {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75, "cache_write_1h": 6.0}
}
ELAPSED = re.compile(r"; [\d,]+ ms")


def strict_json(value: Any) -> Any:
    """``value`` through ``json.dumps(allow_nan=False)`` and back: raises on NaN, infinities
    and anything that is not plain JSON."""
    return json.loads(json.dumps(value, allow_nan=False))


def readers(tracker: CacheTracker) -> dict[str, Any]:
    return {
        "aggregate": tracker.aggregate(),
        "aggregate(window_s)": tracker.aggregate(window_s=60.0),
        "by_flow": tracker.by_flow(),
        "by_prefix": tracker.by_prefix(),
        "calls": [m.as_dict() for m in tracker.calls()],
        "regressions": [r.as_dict() for r in tracker.regressions()],
    }


def anthropic_calls(*usages: dict[str, Any]) -> anthropic.Anthropic:
    handler, _ = fakes.scripted(list(usages))
    return fakes.client(handler)


def unreported_usage_stream(request: httpx2.Request) -> httpx2.Response:
    """A Chat Completions stream without ``stream_options.include_usage``: no usage chunk."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1763000000, "model": "gpt-4o"}
    chunks = [
        dict(
            base,
            choices=[{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}],
        ),
        dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx2.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})


def bad_request(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        400,
        json={"type": "error", "error": {"type": "invalid_request_error", "message": "too many breakpoints"}},
    )


# -- NaN: every reader and every value is strict JSON --------------------------------------------


def test_empty_tracker_readers_are_strict_json() -> None:
    """With no call at all, ratios are ``None`` (0/0 is not a number) and every reader dumps."""
    tracker = CacheTracker(clock=ManualClock(T0))
    out = strict_json(readers(tracker))
    assert out["aggregate"]["hit_ratio"] is None and out["aggregate"]["token_hit_ratio"] is None
    assert out["aggregate(window_s)"]["hit_ratio"] is None
    assert (out["by_flow"], out["by_prefix"], out["calls"], out["regressions"]) == ({}, {}, [], [])


def test_unknown_usage_error_and_zero_token_calls_are_strict_json() -> None:
    """A stream without usage, an API error and a call that reported zero tokens have no hit
    ratio: ``None`` in the object, in ``as_dict()``, and in every aggregate they alone make up;
    every reader passes ``json.dumps(allow_nan=False)``."""
    clock = ManualClock(T0)
    tracker = CacheTracker(clock=clock, prices=PRICES, on_miss_alert=lambda m: None)
    chat = openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(unreported_usage_stream)),
    )
    stream = tracker.wrap(chat.chat.completions.create, flow="unreported")(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hi"
    clock.advance(1)
    with pytest.raises(anthropic.BadRequestError):
        tracker.wrap(fakes.client(bad_request).messages.create, flow="failing")(**fakes.request())
    clock.advance(1)
    zero = fakes.usage(input=0, read=0, write=0, output=0)
    tracker.wrap(anthropic_calls(zero).messages.create, flow="empty")(**fakes.request())

    unknown, failed, empty = tracker.calls()
    assert (unknown.usage_known, unknown.flow, failed.flow, empty.flow) == (
        False,
        "unreported",
        "failing",
        "empty",
    )
    assert failed.error is not None and failed.error.startswith("BadRequestError")
    for m in (unknown, failed, empty):
        assert (m.hit_ratio, m.token_hit_ratio) == (None, None)
        d = strict_json(m.as_dict())
        assert (d["hit_ratio"], d["token_hit_ratio"]) == (None, None)
        assert set(d) == {*CallMetrics.__dataclass_fields__, "hit_ratio", "token_hit_ratio"}
    assert strict_json(empty.as_dict())["breakpoint_ids"] == list(empty.breakpoint_ids)
    out = strict_json(readers(tracker))
    for flow in ("unreported", "failing", "empty"):
        assert out["by_flow"][flow]["hit_ratio"] is None
        assert out["by_flow"][flow]["token_hit_ratio"] is None
    (prefix,) = [p for p in out["by_prefix"].values() if p["flow"] == "empty"]
    assert (prefix["hit_ratio"], prefix["calls"], prefix["flows"]) == (None, 2, ["failing", "empty"])
    assert out["aggregate"]["hit_ratio"] is None and out["aggregate"]["calls"] == 3
    assert (out["aggregate"]["errors"], out["aggregate"]["unknown_usage_calls"]) == (1, 2)


def test_regression_with_no_calls_before_it_is_strict_json(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """A prompt stamped from the first call churns with no healthy call before it: its
    ``hit_ratio_before`` is ``None`` (it was NaN), ``by_flow()`` carries the open incident as
    its ``as_dict()``, and every reader dumps."""
    tracker = CacheTracker(clock=cache_emulator.clock, on_regression=lambda r: None)
    create = churning_flow(cache_emulator, clients, tracker, "fresh-start")
    for i in range(30):
        create(i)
    (churn,) = tracker.regressions()
    assert churn.kind == "prefix_churn" and churn.open
    assert churn.hit_ratio_before is None and churn.hit_ratio_after is not None
    out = strict_json(readers(tracker))
    (r,) = out["regressions"]
    assert r == strict_json(churn.as_dict())
    assert out["by_flow"]["fresh-start"]["regression"] == r
    assert (r["hit_ratio_before"], r["open"], r["closed_at"], r["flow"]) == (None, True, None, "fresh-start")
    assert r["diff"] is not None and (r["diff"]["section"], r["diff"]["block_index"]) == ("system", 0)


def test_regression_turns_nan_and_infinity_into_none() -> None:
    """A Regression built with a 0/0 ratio or an infinite cost holds ``None`` there instead."""
    r = Regression("f", "hit_ratio_drop", T0, float("nan"), 0.25, 3, float("inf"))
    assert (r.hit_ratio_before, r.hit_ratio_after, r.extra_cost_per_hour_usd) == (None, 0.25, None)
    assert r == Regression("f", "hit_ratio_drop", T0, None, 0.25, 3, None)  # NaN made it unequal to itself
    strict_json(r.as_dict())


# -- by_prefix() flows and distinct_prefixes ------------------------------------------------------


def test_prefix_shared_by_three_flows_lists_them_all() -> None:
    """One prefix used by three flows lists all three in first-use order (``flow`` stays the
    flow of its last call); each of the three counts it once in ``distinct_prefixes``."""
    tracker = CacheTracker(clock=ManualClock(T0), prices=PRICES)
    client = anthropic_calls(fakes.usage(write=3000), fakes.usage(read=3000))
    creates = {
        name: tracker.wrap(client.messages.create, flow=name) for name in ("triage", "chat", "billing")
    }
    for name in ("chat", "triage", "billing", "chat", "triage"):
        creates[name](**fakes.request())
    (prefix,) = tracker.by_prefix().values()
    assert (prefix["flows"], prefix["flow"], prefix["calls"]) == (["chat", "triage", "billing"], "triage", 5)
    assert {name: f["distinct_prefixes"] for name, f in tracker.by_flow().items()} == {
        "chat": 1,
        "triage": 1,
        "billing": 1,
    }


def test_prefix_flows_are_bounded() -> None:
    """A prefix keeps the first ``MAX_FLOWS_PER_PREFIX`` flows that used it, in order."""
    tracker = CacheTracker(clock=ManualClock(T0), prices=PRICES)
    client = anthropic_calls(fakes.usage(read=3000))
    names = [f"flow-{i:02d}" for i in range(MAX_FLOWS_PER_PREFIX + 8)]
    for name in names:
        tracker.wrap(client.messages.create, flow=name)(**fakes.request())
    (prefix,) = tracker.by_prefix().values()
    assert prefix["flows"] == names[:MAX_FLOWS_PER_PREFIX]
    assert prefix["flow"] == names[-1] and prefix["calls"] == len(names)


def test_distinct_prefixes_counts_every_prefix_the_flow_used() -> None:
    """A flow that made five cacheable calls on five prefixes counts 5 even when another flow
    used each of them after it, and a repeated prefix is counted once."""
    tracker = CacheTracker(clock=ManualClock(T0), prices=PRICES, on_miss_alert=lambda m: None)
    client = anthropic_calls(fakes.usage(write=3000))
    tenants = tracker.wrap(client.messages.create, flow="tenants")
    audit = tracker.wrap(client.messages.create, flow="audit")
    for i in range(5):
        body = fakes.request()
        body["system"][0]["text"] = f"Tenant {i}. " + fakes.SYSTEM_TEXT
        tenants(**body)
        audit(**body)
    tenants(**body)  # the last prefix again
    flows = tracker.by_flow()
    assert (flows["tenants"]["calls"], flows["tenants"]["distinct_prefixes"]) == (6, 5)
    assert (flows["audit"]["calls"], flows["audit"]["distinct_prefixes"]) == (5, 5)
    prefixes = tracker.by_prefix()
    assert len(prefixes) == 5
    assert sorted(p["flow"] for p in prefixes.values()) == ["audit"] * 4 + ["tenants"]
    assert all(p["flows"] == ["tenants", "audit"] for p in prefixes.values())


def test_distinct_count_is_exact_then_estimates() -> None:
    """Exact up to ``DISTINCT_EXACT`` distinct hashes, repeats ignored; past it, never below
    ``DISTINCT_EXACT + 1`` and within 30 % of the truth for these (xxh3, like prefix ids) hashes."""
    counter = DistinctCount()
    hashes = [xxhash.xxh3_64_intdigest(str(i).encode()) for i in range(5000)]
    for h in hashes[:DISTINCT_EXACT]:
        counter.add(h)
        counter.add(hashes[0])
    assert counter.count() == DISTINCT_EXACT
    counter.add(hashes[DISTINCT_EXACT])
    assert counter.count() == DISTINCT_EXACT + 1
    for h in hashes:
        counter.add(h)
    assert 0.7 * 5000 <= counter.count() <= 1.3 * 5000


# -- str(): one readable line -------------------------------------------------------------------


def test_call_metrics_str_is_one_labelled_line() -> None:
    """``str()`` of a call: provider, model, flow and time, prefix, tokens, hit ratio, money,
    elapsed time, and the miss; unknown usage and errors say so."""
    clock = ManualClock(T0)
    tracker = CacheTracker(clock=clock, prices=PRICES, on_miss_alert=lambda m: None)
    client = anthropic_calls(fakes.usage(write=3000), fakes.usage(read=2400, write=600))
    create = tracker.wrap(client.messages.create, flow="support")
    create(**fakes.request())
    clock.advance(90)
    create(**fakes.request())
    with pytest.raises(anthropic.BadRequestError):
        tracker.wrap(fakes.client(bad_request).messages.create, flow="support")(**fakes.request())
    cold, partial, failed = tracker.calls()
    assert partial.prefix_id is not None
    assert ELAPSED.sub("; <ms>", str(partial)) == (
        f"anthropic claude-sonnet-5 call in flow 'support' at 2026-11-18 11:08:10 UTC, prefix {partial.prefix_id}; "
        "read 2,400 (expected 3,000), wrote 600, uncached 10 input tokens, 20 output; hit ratio 80%; "
        "cost $0.003300, saved $0.006030; <ms>; unexpected miss. Missed the cache (provider): the same "
        "prefix was cached within its TTL, yet the provider did not serve it (routing, eviction or an "
        "outage). It cost $0.002070 more than a cache read. Fix: nothing on your side if it is rare; "
        "if it persists, report it to the provider."
    )
    assert ELAPSED.sub("; <ms>", str(cold)).endswith(
        "hit ratio 0%; cost $0.011580, saved -$0.002250; <ms>; Missed the cache (cold): the flow had never "
        "sent this prefix (its first call, a new customer's context or a new turn). Fix: none needed, a "
        "first write is expected."
    )
    assert str(failed).startswith(
        "anthropic claude-sonnet-5 call in flow 'support' at 2026-11-18 11:08:10 UTC"
    )
    assert "; failed: BadRequestError: " in str(failed)
    assert "; usage not reported; cost unknown" in str(failed)
    for m in (cold, partial, failed):
        assert "\n" not in str(m) and "CallMetrics(" not in str(m) and "nan" not in str(m)


def test_regression_str_is_one_line_with_two_labelled_times_and_its_state(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack
) -> None:
    """``str()`` of an incident: kind, flow, the changed block, when it started and when it was
    detected, the hit ratios, calls and cost, and ``open`` or ``closed <time>``."""
    tracker = CacheTracker(clock=cache_emulator.clock, on_regression=lambda r: None)
    create = churning_flow(cache_emulator, clients, tracker, "fresh-start")
    for i in range(30):
        create(i)
    (opened,) = tracker.regressions()
    text = str(opened)
    started = utc(opened.started_at)
    assert opened.detected_at is not None and opened.detected_at >= opened.started_at
    detected = utc(opened.detected_at)
    assert re.fullmatch(
        rf"prefix churn in flow 'fresh-start': system block 0, bytes \d+-\d+: a timestamp changed; "
        rf"started {started}, detected {detected}; read n/a -> 0% of what could be read over \d+ calls, "
        rf"([+-]?\$[\d.,]+ an hour|extra cost unpriced); open\. Why: a timestamp in the cached prefix "
        rf"changes on every call, so every call writes a new entry\. Fix: move the timestamp after the "
        rf"last cache breakpoint \(into the newest user turn\), or round it\.",
        text,
    ), text
    for i in range(20):  # the stamp goes away: the flow recovers
        create(i, stamped=False)
    (closed,) = tracker.regressions()
    assert closed.closed_at is not None
    assert f"; closed {utc(closed.closed_at)}. Why: " in str(closed)
    assert f"started {started}, detected " in str(closed)


def test_regression_str_pins_both_times_and_the_damage() -> None:
    """The whole line for a value with every part known."""
    diff = PrefixDiff("system", 0, 0, 12, 40, kind="volatile", value_type="uuid")
    r = Regression(
        "support",
        "prefix_churn",
        T0,
        0.97,
        0.05,
        27,
        1.5834,
        diff,
        details={"layer": 0},
        detected_at=T0 + 300,
    )
    assert str(r) == (
        "prefix churn in flow 'support': system block 0, bytes 12-40: a uuid changed; "
        "started 2026-11-18 11:06:40 UTC, detected 2026-11-18 11:11:40 UTC; "
        "read 97% -> 5% of what could be read over 27 calls, +$1.58 an hour; open. "
        "Why: a UUID in the cached prefix is new on every call, so every call writes a new entry. "
        "Fix: move the UUID out of the cached prefix (after the last cache breakpoint)."
    )
    drop = Regression("billing", "hit_ratio_drop", T0, 0.9, None, 4, None, closed_at=T0 + 3600)
    assert str(drop) == (
        "hit ratio drop in flow 'billing': the prompt did not change; "
        "started 2026-11-18 11:06:40 UTC, detected (time not recorded); "
        "read 90% -> n/a of what could be read over 4 calls, extra cost unpriced; closed 2026-11-18 12:06:40 UTC. "
        "Why: the prompt did not change, yet the flow's hit ratio fell below its threshold (the provider "
        "stopped serving the cache, or calls come too far apart for the TTL). "
        "Fix: check the provider's status and the calls' spacing against the TTL."
    )
    assert strict_json(r.as_dict())["diff"] == {
        "section": "system",
        "block_index": 0,
        "position": 0,
        "byte_start": 12,
        "byte_end": 40,
        "kind": "volatile",
        "before": None,
        "after": None,
        "value_type": "uuid",
    }


# -- the default log lines ----------------------------------------------------------------------


def test_default_miss_alert_logs_the_calls_line(caplog: pytest.LogCaptureFixture) -> None:
    """With no ``on_miss_alert``, an unexpected miss logs one warning: the call's ``str()``."""
    clock = ManualClock(T0)
    tracker = CacheTracker(clock=clock, prices=PRICES)
    create = tracker.wrap(anthropic_calls(fakes.usage(write=3000)).messages.create, flow="support")
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        create(**fakes.request())
        clock.advance(10)
        create(**fakes.request())  # the same bytes within the TTL, written again
        _, missed = tracker.calls()
    assert missed.unexpected_miss
    assert [r.getMessage() for r in caplog.records] == [f"cachebench: unexpected cache miss: {missed}"]


def test_default_regression_log_line_has_labelled_times_and_no_nan(
    cache_emulator: CacheEmulator, clients: contextlib.ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    """With no ``on_regression``, an incident logs one warning when it opens: its ``str()``,
    so a hit ratio with no calls before it reads ``n/a``, never ``nan%``."""
    tracker = CacheTracker(clock=cache_emulator.clock, on_miss_alert=lambda m: None)
    create = churning_flow(cache_emulator, clients, tracker, "fresh-start")
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        for i in range(30):
            create(i)
        (churn,) = tracker.regressions()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "cachebench: regression: prefix churn in flow 'fresh-start': system block 0, bytes "
    )
    assert f"; started {utc(churn.started_at)}, detected " in line
    assert "; read n/a -> 0% of what could be read over " in line and "; open. Why: a timestamp " in line
    assert line.endswith(
        "Fix: move the timestamp after the last cache breakpoint (into the newest user turn), or round it."
    )
    assert "nan" not in line and "\n" not in line


# -- helpers -------------------------------------------------------------------------------------


def utc(ts: float) -> str:
    from datetime import datetime, timezone

    return f"{datetime.fromtimestamp(ts, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


SYSTEM = "You are ACME's support agent. Answer briefly, cite the policy section, never guess. " * 60


def churning_flow(emu: CacheEmulator, clients: contextlib.ExitStack, tracker: CacheTracker, flow: str) -> Any:
    """``create(i, stamped=True)``: call ``i`` of a flow whose system prompt starts with the
    current time (a new first layer on every call), 20 simulated seconds apart."""
    client = clients.enter_context(
        anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="sk-out", max_retries=0)
    )
    wrapped = tracker.wrap(client.messages.create, flow=flow)

    def create(i: int, *, stamped: bool = True) -> None:
        stamp = f"Current time: 2026-11-22T09:{i // 60:02d}:{i % 60:02d}Z. " if stamped else ""
        wrapped(
            model=fakes.MODEL,
            max_tokens=32,
            system=[{"type": "text", "text": stamp + SYSTEM, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "Where is my order?"}],
        )
        emu.advance(20)

    return create
