"""The Prometheus exporter: a scrape, parsed back, says what the tracker's own aggregates say,
labelled provider, model and flow only; counters never go down; the server listens on
loopback, on a registry of its own, and stops when closed."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import cachebench.stats
from cachebench import CacheTracker, CallMetrics
from cachebench.export import MetricsServer, PrometheusCollector, start_http_server
from cachebench.export import prometheus as prometheus_export
from cachebench.testing import ManualClock

from . import fakes

UNPRICED_MODEL = "claude-nonexistent-1"  # not in the price data: its calls are unpriced

COUNTERS = {
    "cachebench_calls": "calls",
    "cachebench_input_tokens": "input_tokens",
    "cachebench_cache_read_tokens": "cache_read_tokens",
    "cachebench_cache_write_tokens": "cache_write_tokens",
    "cachebench_cache_write_1h_tokens": "cache_write_1h_tokens",
    "cachebench_output_tokens": "output_tokens",
    "cachebench_cost_usd": "cost_usd",
    "cachebench_cost_without_cache_usd": "cost_without_cache_usd",
    "cachebench_avoidable_cost_usd": "avoidable_cost_usd",
}
GAUGES = {
    "cachebench_cost_saved_usd": "cost_saved_usd",
    "cachebench_hit_ratio": "hit_ratio",
    "cachebench_token_hit_ratio": "token_hit_ratio",
}
LABELS = {"provider", "model", "flow"}
Series = tuple[str, str, str]  # (provider, model, flow)


def openai_request() -> dict[str, Any]:
    return {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "Answer from the catalogue. " * 300}],
    }


def record(
    tracker: CacheTracker, body: dict[str, Any], request: dict[str, Any], flow: str, **kwargs: Any
) -> CallMetrics:
    """``tracker.record`` of an Anthropic or OpenAI body in ``flow``; its metrics."""
    provider = "openai" if "choices" in body else "anthropic"
    m = tracker.record(body, request=request, provider=provider, flow=flow, **kwargs)
    assert m is not None
    return m


def busy_tracker() -> CacheTracker:
    """Calls in three series: Anthropic in ``support`` (a write, two reads, a failed read of
    unknown usage), an unpriced model in ``support``, and OpenAI (no writes reported) in
    ``triage``."""
    tracker = fakes.quiet_tracker(ManualClock())
    record(tracker, fakes.message(fakes.usage(write=3000, write_1h=1000)), fakes.request(), "support")
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hi"), "support")
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hey"), "support")
    unknown = fakes.message(fakes.usage())
    unknown["usage"] = "x"
    record(tracker, unknown, fakes.request("Yo"), "support")
    record(tracker, fakes.message(fakes.usage(read=3000), model=UNPRICED_MODEL), fakes.request(), "support")
    record(tracker, fakes.chat_completion(2400, 0), openai_request(), "triage")
    record(tracker, fakes.chat_completion(2400, 2304), openai_request(), "triage")
    return tracker


def scrape_text(text: str) -> tuple[dict[str, str], dict[str, dict[Series, float]]]:
    """The families' types by name, and each family's samples by (provider, model, flow)."""
    types: dict[str, str] = {}
    samples: dict[str, dict[Series, float]] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            assert set(sample.labels) == LABELS, sample
            assert sample.name == (family.name + "_total" if family.type == "counter" else family.name)
            key = (sample.labels["provider"], sample.labels["model"], sample.labels["flow"])
            samples.setdefault(family.name, {})[key] = sample.value
    return types, samples


def scrape(registry: CollectorRegistry) -> tuple[dict[str, str], dict[str, dict[Series, float]]]:
    return scrape_text(generate_latest(registry).decode())


def registry_of(tracker: CacheTracker) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(tracker))
    return registry


def test_a_scrape_says_what_the_trackers_aggregates_say() -> None:
    """Every counter and gauge, parsed back from the text format: summed over the series, each
    counter equals the tracker's ``aggregate()`` and, per flow, its ``by_flow()``; one series is
    pinned whole. Unpriced calls add no cost sample; labels are provider, model and flow, and no
    label value is a prefix id."""
    tracker = busy_tracker()
    types, samples = scrape(registry_of(tracker))
    assert types == dict.fromkeys(COUNTERS, "counter") | dict.fromkeys(GAUGES, "gauge")

    support = ("anthropic", fakes.MODEL, "support")
    unpriced = ("anthropic", UNPRICED_MODEL, "support")
    triage = ("openai", "gpt-4.1", "triage")
    assert set(samples["cachebench_calls"]) == {support, unpriced, triage}
    priced = tracker.calls()[:3]  # the support series' write and two reads
    assert {name: series[support] for name, series in samples.items()} == pytest.approx(
        {
            "cachebench_calls": 4,
            "cachebench_input_tokens": 30,  # the unknown usage adds nothing
            "cachebench_cache_read_tokens": 6000,
            "cachebench_cache_write_tokens": 3000,
            "cachebench_cache_write_1h_tokens": 1000,
            "cachebench_output_tokens": 60,
            "cachebench_cost_usd": sum(m.cost_usd or 0.0 for m in priced),
            "cachebench_cost_without_cache_usd": sum(m.cost_without_cache_usd or 0.0 for m in priced),
            "cachebench_avoidable_cost_usd": 0.0,
            "cachebench_cost_saved_usd": sum(m.cost_saved_usd or 0.0 for m in priced),
            "cachebench_hit_ratio": 6000 / 9000,
            "cachebench_token_hit_ratio": 6000 / 9030,
        }
    )
    assert unpriced not in samples["cachebench_cost_usd"]
    assert samples["cachebench_cache_read_tokens"][unpriced] == 3000

    total = tracker.aggregate()
    flows = tracker.by_flow()
    for name, key in COUNTERS.items():
        assert sum(samples[name].values()) == pytest.approx(total[key]), name
        for flow in ("support", "triage"):
            in_flow = [v for (_, _, f), v in samples[name].items() if f == flow]
            assert sum(in_flow) == pytest.approx(flows[flow][key]), (name, flow)
    for name, key in GAUGES.items():  # triage is one series: its gauges are the flow's
        assert samples[name][triage] == pytest.approx(flows["triage"][key]), name

    prefix_ids = set(tracker.by_prefix())
    assert prefix_ids
    values = {v for series in samples.values() for key in series for v in key}
    assert not values & prefix_ids


def test_counters_never_go_down_and_the_net_saving_is_a_gauge() -> None:
    """Between two scrapes every counter sample is still there and none went down; a new cache
    write raises the cost and lowers the net saving (a write costs more than plain input), which
    is why the saving is a gauge."""
    tracker = busy_tracker()
    registry = registry_of(tracker)
    _, before = scrape(registry)
    record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request(ttl="1h"), "support")
    _, after = scrape(registry)
    for name in COUNTERS:
        for series, value in before[name].items():
            assert after[name][series] >= value, (name, series)
    support = ("anthropic", fakes.MODEL, "support")
    assert after["cachebench_cost_usd"][support] > before["cachebench_cost_usd"][support]
    assert after["cachebench_cost_saved_usd"][support] < before["cachebench_cost_saved_usd"][support]


def test_series_beyond_the_bound_count_under_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for two series, a third (model, flow) counts under ``(other)``: no call is
    lost from the totals and the first two series keep their own labels."""
    monkeypatch.setattr(cachebench.stats, "MAX_SERIES", 2)
    tracker = fakes.quiet_tracker(ManualClock())
    for flow in ("a", "b", "c", "d"):
        record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request(flow), flow)
    _, samples = scrape(registry_of(tracker))
    assert samples["cachebench_calls"] == {
        ("anthropic", fakes.MODEL, "a"): 1,
        ("anthropic", fakes.MODEL, "b"): 1,
        ("anthropic", "(other)", "(other)"): 2,
    }
    assert sum(samples["cachebench_cache_read_tokens"].values()) == tracker.aggregate()["cache_read_tokens"]


def test_registering_reads_nothing_and_names_clash_clearly() -> None:
    """``describe()`` gives the same families as a scrape, without samples (a registry never
    scrapes the tracker to register it); a second collector in one registry is refused."""
    tracker = busy_tracker()
    collector = PrometheusCollector(tracker)
    described = list(collector.describe())
    assert [(f.name, f.type) for f in described] == [(f.name, f.type) for f in collector.collect()]
    assert all(not f.samples for f in described)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PrometheusCollector(tracker))


def test_a_scrape_fails_rather_than_hangs_when_the_consumer_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that does not answer fails the scrape with ``TimeoutError`` (the HTTP server
    answers 500) instead of holding it forever."""
    monkeypatch.setattr(prometheus_export, "READ_TIMEOUT_S", 0.01)
    tracker = CacheTracker()
    release = threading.Event()
    tracker._engine.submit(release.wait)
    try:
        with pytest.raises(TimeoutError):
            list(PrometheusCollector(tracker).collect())
    finally:
        release.set()
    tracker.close()


def test_the_server_answers_a_real_scrape_on_loopback() -> None:
    """``start_http_server(tracker, 0)`` listens on 127.0.0.1 on a free port; a plain HTTP GET
    of its URL returns the metrics; nothing goes to the global registry; ``close()`` stops the
    server and empties its registry."""
    tracker = busy_tracker()
    server = start_http_server(tracker, 0)
    assert isinstance(server, MetricsServer)
    try:
        assert server.addr == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.close()
    _, samples = scrape_text(text)
    assert samples["cachebench_calls"][("openai", "gpt-4.1", "triage")] == 2
    assert REGISTRY.get_sample_value("cachebench_calls_total", {"provider": "openai"}) is None
    assert "cachebench_calls_total" not in generate_latest(REGISTRY).decode()
    assert generate_latest(server.registry) == b""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=10)
    server.close()  # twice: nothing happens


def test_the_server_uses_the_registry_it_is_given() -> None:
    """With ``registry=``, the collector goes there (beside what it already holds) for as long
    as the server runs."""
    tracker = busy_tracker()
    registry = CollectorRegistry()
    with start_http_server(tracker, 0, registry=registry) as server:
        assert server.registry is registry
        _, samples = scrape(registry)
        assert samples["cachebench_calls"][("openai", "gpt-4.1", "triage")] == 2
    assert generate_latest(registry) == b""


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("tracker", 9100), {}, TypeError, "CacheTracker"),
        ((None, -1), {}, ValueError, "port must be an int from 0 to 65535"),
        ((None, 70000), {}, ValueError, "port must be an int"),
        ((None, "9100"), {}, ValueError, "port must be an int"),
        ((None, True), {}, ValueError, "port must be an int"),
        ((None, 0), {"addr": ""}, ValueError, "addr"),
        ((None, 0), {"registry": object()}, TypeError, "CollectorRegistry"),
    ],
)
def test_configuration_mistakes_raise_clear_errors(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type, match: str
) -> None:
    """A wrong tracker, port, address or registry raises at once, naming what is wrong."""
    tracker = CacheTracker()
    args = (tracker if args[0] is None else args[0], *args[1:])
    with pytest.raises(error, match=match):
        start_http_server(*args, **kwargs)
    with pytest.raises(TypeError, match="CacheTracker"):
        PrometheusCollector(object())  # type: ignore[arg-type]


def import_error(blocked: str, name: str) -> str:
    """What ``from cachebench.export import <name>`` says, in a fresh interpreter where the
    module ``blocked`` cannot be imported."""
    code = (
        "import sys\n"
        f"sys.modules[{blocked!r}] = None\n"
        "try:\n"
        f"    from cachebench.export import {name}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def test_the_extras_are_imported_only_by_the_exporters() -> None:
    """``import cachebench`` and ``import cachebench.export`` import neither prometheus-client
    nor OpenTelemetry; without prometheus-client, importing the collector is an ImportError
    naming the extra to install."""
    code = (
        "import sys, cachebench, cachebench.export\n"
        "print([m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")
    assert import_error("prometheus_client", "PrometheusCollector") == (
        "cachebench.export's Prometheus collector needs prometheus-client: pip install -e '.[prometheus]' in a "
        "clone of cachebench, or pip install 'cachebench[prometheus] @ git+<repository URL>' (the package "
        "index's 'cachebench' is another project)\n"
    )
