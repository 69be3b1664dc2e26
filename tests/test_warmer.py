"""The cache warmer: the cheapest warm request per provider, and the warmer against the emulator
through the real SDKs (on demand, on a schedule in a thread and in asyncio, auto mode, errors)."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Any

import anthropic
import pytest

import cachebench
from cachebench.economics import CacheWarmer, warm_request
from cachebench.testing import CacheEmulator

MODEL = "claude-sonnet-4-5"
POLICY = "Answer as the support agent of a bicycle shop, briefly and politely. " * 400  # ~7,000 tokens


def support_request(question: str = "Where is my order?") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
    }


# -- the warm request ---------------------------------------------------------------------------------


def test_an_anthropic_warm_request_keeps_the_cached_layers_and_asks_for_nothing() -> None:
    request = {
        **support_request(),
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "My order 17", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "assistant", "content": "It shipped."},
            {"role": "user", "content": "When does it arrive?"},
        ],
    }
    before = copy.deepcopy(request)
    warm = warm_request(request)
    assert request == before  # never changed
    assert warm["max_tokens"] == 0 and "stream" not in warm
    assert warm["system"] == request["system"]
    assert warm["messages"] == [
        {"role": "user", "content": [*request["messages"][0]["content"], {"type": "text", "text": "."}]}
    ]
    thinking = warm_request({**support_request(), "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert thinking["max_tokens"] == 1 and thinking["messages"] == [{"role": "user", "content": "."}]
    forced = warm_request({**support_request(), "tool_choice": {"type": "tool", "name": "lookup"}})
    assert forced["max_tokens"] == 1


def test_warm_requests_of_the_other_providers() -> None:
    chat = warm_request(
        {
            "model": "gpt-5",
            "stream": True,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        }
    )
    assert chat == {
        "model": "gpt-5",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "."}],
        "max_completion_tokens": 1,
    }
    responses = warm_request({"model": "gpt-5", "instructions": "be brief", "input": "q"}, "openai")
    assert responses["input"] == [{"role": "user", "content": "."}] and responses["max_output_tokens"] == 16
    gemini = warm_request(
        {
            "model": "gemini-2.5-flash",
            "contents": [{"role": "user", "parts": [{"text": "q"}]}],
            "config": {"system_instruction": "s"},
        },
        "gemini",
    )
    assert gemini["contents"] == [{"role": "user", "parts": [{"text": "."}]}]
    assert gemini["config"] == {"system_instruction": "s", "max_output_tokens": 1}
    converse = warm_request(
        {
            "modelId": "anthropic.claude-sonnet-4-5-20250929-v1:0",
            "system": [{"text": "s"}, {"cachePoint": {"type": "default"}}],
            "messages": [{"role": "user", "content": [{"text": "q"}]}],
        },
        "bedrock",
    )
    assert converse["messages"] == [{"role": "user", "content": [{"text": "."}]}]
    assert converse["inferenceConfig"] == {"maxTokens": 1}


@pytest.mark.parametrize(
    ("request_", "provider", "message"),
    [
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]},
            None,
            "no cache_control",
        ),
        (
            {"modelId": "m", "messages": [{"role": "user", "content": [{"text": "q"}]}]},
            "bedrock",
            "no cachePoint",
        ),
        ({"something": 1}, None, "cannot tell which provider"),
    ],
)
def test_nothing_to_warm_is_said_at_construction(
    request_: dict[str, Any], provider: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CacheWarmer(lambda **kw: None, request_, provider=provider)


def test_a_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="must be under the warmed prefix's TTL"):
        CacheWarmer(lambda **kw: None, support_request(), every_s=300)
    with pytest.raises(ValueError, match="auto=True"):
        CacheWarmer(lambda **kw: None, support_request(), auto=True)
    with pytest.raises(TypeError, match="create must be"):
        CacheWarmer("client.messages.create", support_request())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="every_s must be a number of seconds"):
        CacheWarmer(lambda **kw: None, support_request(), every_s="240")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every_s must be a number of seconds"):
        CacheWarmer(lambda **kw: None, support_request(), every_s=0)
    with pytest.raises(TypeError, match="max_errors must be a whole number"):
        CacheWarmer(lambda **kw: None, support_request(), max_errors=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_errors must be a whole number"):
        CacheWarmer(lambda **kw: None, support_request(), max_errors=0)
    with pytest.raises(TypeError, match="tracker must be a CacheTracker"):
        CacheWarmer(lambda **kw: None, support_request(), tracker="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="auto must be True or False"):
        CacheWarmer(lambda **kw: None, support_request(), auto="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"prices\['x'\] must be a mapping"):
        CacheWarmer(lambda **kw: None, support_request(), prices={"x": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"is not a number: 'abc'"):
        CacheWarmer(lambda **kw: None, support_request(), prices={MODEL: {"input": "abc"}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="provider='openai', but the request is anthropic's shape"):
        CacheWarmer(lambda **kw: None, support_request(), provider="openai")


# -- against the emulator -------------------------------------------------------------------------------


def _client(emulator: CacheEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emulator.anthropic_base_url, api_key="sk-warm", max_retries=0)


def test_warming_on_demand_keeps_a_sparse_prefix_cached_and_is_recorded(
    cache_emulator: CacheEmulator,
) -> None:
    """A call every 8 minutes on a 5m prefix writes it every time; a warm call every 4 minutes
    keeps it: the next call reads it. Warm calls are recorded under the warmer's flow, flagged,
    and their cost and the saving they bought are the warmer's."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    create = tracker.wrap(client.messages.create, flow="support")
    first = create(**support_request())
    assert first.usage.cache_creation_input_tokens > 0
    cache_emulator.advance(480)
    assert create(**support_request("And my refund?")).usage.cache_read_input_tokens == 0  # expired
    warmer = CacheWarmer(client.messages.create, support_request(), tracker=tracker)
    for _ in range(2):
        cache_emulator.advance(240)
        assert warmer.warm() is not None
    third = create(**support_request("Can I return it?"))
    assert third.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    warm_calls = [m for m in tracker.calls() if m.warm]
    assert [m.flow for m in warm_calls] == ["cachebench-warmer"] * 2
    assert warm_calls[0].cache_read_tokens > 0 and warm_calls[0].output_tokens == 0  # max_tokens 0
    assert not any(m.warm for m in tracker.calls() if m.flow == "support")
    stats = warmer.stats
    assert stats.calls == 2 and stats.errors == 0
    assert stats.cost_usd == pytest.approx(sum(m.cost_usd for m in warm_calls))
    assert stats.saving_usd > 0  # the third call read what only the warmer kept
    warmer.close()
    tracker.close()
    client.close()


def test_an_instrumented_client_records_each_warm_call_once(cache_emulator: CacheEmulator) -> None:
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    tracker.instrument(client)
    warmer = CacheWarmer(client.messages.create, support_request(), tracker=tracker)
    warmer.warm()
    calls = tracker.calls()
    assert len(calls) == 1 and calls[0].warm and calls[0].flow == "cachebench-warmer"
    warmer.close()
    tracker.close()
    client.close()


def test_a_scheduled_warmer_in_a_thread_warms_and_stops_cleanly(cache_emulator: CacheEmulator) -> None:
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    with CacheWarmer(
        client.messages.create, support_request(), tracker=tracker, every_s=0.05, jitter_s=0.0
    ) as warmer:
        deadline = time.monotonic() + 10
        while warmer.stats.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert warmer.running
    started = time.monotonic()
    assert not warmer.running and time.monotonic() - started < 1.0
    calls = warmer.stats.calls
    assert calls >= 3
    time.sleep(0.15)
    assert warmer.stats.calls == calls  # stopped
    recorded = [m for m in tracker.calls() if m.warm]
    assert len(recorded) == calls
    assert recorded[0].cache_write_tokens > 0 and all(m.cache_read_tokens > 0 for m in recorded[1:])
    tracker.close()
    client.close()


def test_a_scheduled_warmer_in_asyncio(cache_emulator: CacheEmulator) -> None:
    async def main() -> tuple[int, bool]:
        tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
        client = anthropic.AsyncAnthropic(
            base_url=cache_emulator.anthropic_base_url, api_key="sk-warm", max_retries=0
        )
        warmer = CacheWarmer(
            client.messages.create, support_request(), tracker=tracker, every_s=0.05, jitter_s=0.0
        )
        task = warmer.start_task()
        for _ in range(200):
            if warmer.stats.calls >= 3:
                break
            await asyncio.sleep(0.02)
        await warmer.astop()
        done = task.done()
        calls = warmer.stats.calls
        await client.close()
        warm = [m for m in tracker.calls() if m.warm]
        tracker.close()
        assert len(warm) == calls
        return calls, done

    calls, done = asyncio.run(main())
    assert calls >= 3 and done


def test_a_failing_warmer_never_raises_and_stops_after_errors_in_a_row(
    cache_emulator: CacheEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    cache_emulator.set_knobs(error_rate=1.0)
    client = _client(cache_emulator)
    warmer = CacheWarmer(client.messages.create, support_request(), every_s=0.02, jitter_s=0.0, max_errors=3)
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        assert warmer.warm() is None  # on demand: None, logged
        warmer.start()
        deadline = time.monotonic() + 10
        while warmer.running and time.monotonic() < deadline:
            time.sleep(0.02)
    stats = warmer.stats
    assert not stats.running and stats.stopped_by_errors and stats.errors >= 3
    assert "stops after 3 failed calls in a row" in caplog.text
    warmer.close()
    client.close()


def _response(read: int, written: int) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
            "output_tokens": 5,
        },
    }


def test_auto_mode_warms_only_while_the_traffic_makes_it_pay(cache_emulator: CacheEmulator) -> None:
    """No traffic: a warmer does not pay. Six calls an hour on a 5m prefix: most find it
    expired, and warming pays. Ten calls a minute keep it warm themselves: it does not."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    warmer = CacheWarmer(client.messages.create, support_request(), tracker=tracker, every_s=270, auto=True)
    assert warmer.pays() is None  # the prefix is not measured yet: the first scheduled call measures it
    warmer.warm()
    assert warmer.pays() is False  # no traffic
    tokens = next(m for m in tracker.calls() if m.warm).cache_write_tokens
    now = cache_emulator.clock()
    for i in range(6):  # sparse: six an hour
        tracker.record(
            _response(0, tokens), request=support_request(), timestamp=now + 600 * i, flow="support"
        )
    assert warmer.stats.calls_per_hour == pytest.approx(6.0)
    assert warmer.pays() is True
    start = now + 3600
    for i in range(600):  # dense: ten a minute
        tracker.record(
            _response(tokens, 0), request=support_request(), timestamp=start + 6 * i, flow="support"
        )
    assert warmer.stats.calls_per_hour >= 590
    assert warmer.pays() is False
    # on schedule it now skips: no warm call in 0.2 s of a 0.05 s schedule
    fast = CacheWarmer(client.messages.create, support_request(), tracker=tracker, every_s=0.05, auto=True)
    fast.warm()  # measured
    before = fast.stats.calls
    fast.start()
    time.sleep(0.2)
    fast.stop()
    assert fast.stats.calls == before
    fast.close()
    warmer.close()
    tracker.close()
    client.close()


def test_an_asyncio_warmer_stops_from_another_thread(cache_emulator: CacheEmulator) -> None:
    """stop() from any thread cancels the task on its own loop."""
    import threading

    client = anthropic.AsyncAnthropic(
        base_url=cache_emulator.anthropic_base_url, api_key="sk-warm", max_retries=0
    )
    warmer = CacheWarmer(client.messages.create, support_request(), every_s=0.05, jitter_s=0.0)
    started = threading.Event()
    ended: list[bool] = []

    async def main() -> None:
        task = warmer.start_task()
        started.set()
        try:
            await asyncio.wait_for(task, 10)
        except asyncio.TimeoutError:
            ended.append(False)
        else:
            ended.append(True)
        await client.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert started.wait(5)
    time.sleep(0.2)
    warmer.stop()
    thread.join(15)
    assert ended == [True] and not warmer.running and warmer.stats.calls >= 2


def test_warming_a_prefix_the_provider_does_not_cache_is_said_once(
    cache_emulator: CacheEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    small = {
        **support_request(),
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    }
    warmer = CacheWarmer(client.messages.create, small, tracker=tracker)
    with caplog.at_level(logging.WARNING, logger="cachebench"):
        warmer.warm()
        warmer.warm()
        tracker.flush()
    assert caplog.text.count("read and wrote nothing") == 1
    assert warmer.stats.cost_usd is not None and warmer.stats.errors == 0
    warmer.close()
    tracker.close()
    client.close()


def test_two_warmers_on_one_tracker_count_their_own_calls(cache_emulator: CacheEmulator) -> None:
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    other = {
        **support_request(),
        "system": [{"type": "text", "text": POLICY * 2, "cache_control": {"type": "ephemeral"}}],
    }
    a = CacheWarmer(client.messages.create, support_request(), tracker=tracker)
    b = CacheWarmer(client.messages.create, other, tracker=tracker)
    a.warm()
    b.warm()
    tracker.flush()
    by_prefix = {m.breakpoint_ids[-1]: m for m in tracker.calls()}
    assert a.stats.cost_usd == pytest.approx(by_prefix[a.prefix_id].cost_usd)
    assert b.stats.cost_usd == pytest.approx(by_prefix[b.prefix_id].cost_usd)
    a.close()
    b.close()
    tracker.close()
    client.close()


def test_the_schedule_stays_under_the_ttl_and_fits_the_client() -> None:
    with pytest.raises(ValueError, match="every_s \\+ jitter_s"):
        CacheWarmer(lambda **kw: None, support_request(), every_s=290, jitter_s=14)
    assert CacheWarmer(lambda **kw: None, support_request(), every_s=290).jitter_s == pytest.approx(5.0)

    async def create(**kw: Any) -> None:
        return None

    with pytest.raises(TypeError, match="use start_task"):
        CacheWarmer(create, support_request()).start()


def test_auto_mode_stops_when_it_cannot_tell_whether_warming_pays(cache_emulator: CacheEmulator) -> None:
    """An unpriced model: after the two calls that measure the prefix, auto mode does not warm."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    cache_emulator.any_model = True
    request = {**support_request(), "model": "claude-house-model-1"}
    warmer = CacheWarmer(
        client.messages.create, request, tracker=tracker, every_s=0.02, jitter_s=0.0, auto=True
    )
    warmer.start()
    time.sleep(0.4)
    assert not warmer.running  # (it stopped itself, and said why)
    warmer.stop()
    assert warmer.stats.calls == 2 and warmer.pays() is None
    warmer.close()
    tracker.close()
    client.close()


def test_two_warmers_of_one_prefix_count_their_own_calls_and_one_saving(
    cache_emulator: CacheEmulator,
) -> None:
    """Two warmers of the same prefix (one flow, or two): each counts the calls it made, and a
    read it bought is counted once, by the one that warmed it last."""
    tracker = cachebench.CacheTracker(clock=cache_emulator.clock)
    client = _client(cache_emulator)
    create = tracker.wrap(client.messages.create, flow="support")
    first = CacheWarmer(client.messages.create, support_request(), tracker=tracker)
    second = CacheWarmer(client.messages.create, support_request(), tracker=tracker, flow="other-warmer")
    create(**support_request())
    for warmer in (first, first, first, second):
        cache_emulator.advance(200)
        warmer.warm()
    cache_emulator.advance(200)
    assert create(**support_request("And now?")).usage.cache_read_input_tokens > 0  # 1,000 s later
    warm = [m for m in tracker.calls() if m.warm]
    assert first.stats.calls == 3 and second.stats.calls == 1
    assert first.stats.cost_usd == pytest.approx(sum(m.cost_usd for m in warm[:3]))
    assert second.stats.cost_usd == pytest.approx(warm[3].cost_usd)
    assert first.stats.saving_usd == 0 and second.stats.saving_usd > 0
    first.close()
    second.close()
    tracker.close()
    client.close()
