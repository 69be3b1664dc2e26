"""The OpenTelemetry exporter: metrics read by the SDK's in-memory reader say what the
tracker's aggregates say, under the GenAI semantic conventions' names; a call made under a span
puts its cachebench attributes on that span while it is open, and always on a
``cachebench.call`` child span (checked with the SDK's in-memory span exporter)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from cachebench import CacheTracker, CallMetrics
from cachebench.export import OTelExporter
from cachebench.export import otel as otel_export
from cachebench.testing import ManualClock

from . import fakes
from .test_export_prometheus import import_error, openai_request, record

METRIC_ATTRIBUTES = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.response.model",
    "cachebench.flow",
}
# name -> (instrument kind as the SDK reports it, unit)
INSTRUMENTS = {
    "gen_ai.usage.input_tokens": ("counter", "{token}"),
    "gen_ai.usage.cache_read.input_tokens": ("counter", "{token}"),
    "gen_ai.usage.cache_creation.input_tokens": ("counter", "{token}"),
    "cachebench.usage.cache_creation_1h.input_tokens": ("counter", "{token}"),
    "gen_ai.usage.output_tokens": ("counter", "{token}"),
    "cachebench.calls": ("counter", "{call}"),
    "cachebench.cost": ("counter", "USD"),
    "cachebench.cost_without_cache": ("counter", "USD"),
    "cachebench.avoidable_cost": ("counter", "USD"),
    "cachebench.cost_saved": ("up_down_counter", "USD"),
    "cachebench.hit_ratio": ("gauge", "1"),
    "cachebench.token_hit_ratio": ("gauge", "1"),
}
Points = dict[str, dict[tuple[str, str], float]]  # name -> (provider name, flow) -> value


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider
    provider.shutdown()


def two_flows(tracker: CacheTracker) -> None:
    """Anthropic in ``support`` (a 1 h write and two reads) and OpenAI in ``triage``."""
    record(
        tracker,
        fakes.message(fakes.usage(write=3000, write_1h=3000)),
        fakes.request(ttl="1h"),
        flow="support",
    )
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hi", ttl="1h"), flow="support")
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hey", ttl="1h"), flow="support")
    record(tracker, fakes.chat_completion(2400, 0), openai_request(), flow="triage")
    record(tracker, fakes.chat_completion(2400, 2304), openai_request(), flow="triage")


def collect(reader: InMemoryMetricReader) -> tuple[dict[str, tuple[str, str]], Points]:
    """The cachebench scope's instruments (kind, unit) and points by (provider name, flow); every
    point's attributes are the four of a series (no point at all: empty)."""
    data = reader.get_metrics_data()
    kinds: dict[str, tuple[str, str]] = {}
    points: Points = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            assert scope.scope.name == "cachebench"
            for metric in scope.metrics:
                if isinstance(metric.data, Sum):
                    kind = "counter" if metric.data.is_monotonic else "up_down_counter"
                else:
                    assert isinstance(metric.data, Gauge)
                    kind = "gauge"
                kinds[metric.name] = (kind, metric.unit or "")
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    assert set(attributes) == METRIC_ATTRIBUTES, attributes
                    key = (str(attributes["gen_ai.provider.name"]), str(attributes["cachebench.flow"]))
                    points.setdefault(metric.name, {})[key] = point.value
    return kinds, points


def test_metrics_say_what_the_trackers_aggregates_say(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """Every instrument, with its kind and unit; per flow, the values equal ``by_flow()`` (the
    conventions' input tokens include cache reads and writes); the attributes name the
    operation, the provider as the conventions spell it, the model that answered and the
    flow."""
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, meter_provider=meter_provider, spans=False)
    two_flows(tracker)
    kinds, points = collect(reader)
    assert kinds == INSTRUMENTS
    flows = tracker.by_flow()
    for flow, provider in (("support", "anthropic"), ("triage", "openai")):
        agg = flows[flow]
        expected = {
            "gen_ai.usage.input_tokens": agg["input_tokens"]
            + agg["cache_read_tokens"]
            + agg["cache_write_tokens"],
            "gen_ai.usage.cache_read.input_tokens": agg["cache_read_tokens"],
            "gen_ai.usage.cache_creation.input_tokens": agg["cache_write_tokens"],
            "cachebench.usage.cache_creation_1h.input_tokens": agg["cache_write_1h_tokens"],
            "gen_ai.usage.output_tokens": agg["output_tokens"],
            "cachebench.calls": agg["calls"],
            "cachebench.cost": agg["cost_usd"],
            "cachebench.cost_without_cache": agg["cost_without_cache_usd"],
            "cachebench.avoidable_cost": agg["avoidable_cost_usd"],
            "cachebench.cost_saved": agg["cost_saved_usd"],
            "cachebench.hit_ratio": agg["hit_ratio"],
            "cachebench.token_hit_ratio": agg["token_hit_ratio"],
        }
        assert {name: points[name][(provider, flow)] for name in INSTRUMENTS} == pytest.approx(expected)
    assert points["gen_ai.usage.input_tokens"][("anthropic", "support")] == 3 * 10 + 6000 + 3000
    assert points["cachebench.usage.cache_creation_1h.input_tokens"][("anthropic", "support")] == 3000

    data = reader.get_metrics_data()
    assert data is not None
    point = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points[0]
    assert dict(point.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.response.model": fakes.MODEL,
        "cachebench.flow": "support",
    }


def test_counters_grow_and_close_stops_reporting(
    reader: InMemoryMetricReader, meter_provider: MeterProvider
) -> None:
    """Cumulative counters only grow between collections; after ``close()`` the exporter
    reports nothing more for the tracker, whose own readers still work."""
    tracker = fakes.quiet_tracker(ManualClock())
    exporter = OTelExporter(tracker, meter_provider=meter_provider, spans=False)
    two_flows(tracker)
    _, before = collect(reader)
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("More", ttl="1h"), flow="support")
    _, after = collect(reader)
    for name, (kind, _) in INSTRUMENTS.items():
        if kind == "counter":
            for key, value in before[name].items():
                assert after[name][key] >= value, (name, key)
    assert after["cachebench.calls"][("anthropic", "support")] == 4
    exporter.close()
    exporter.close()
    record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Again", ttl="1h"), flow="support")
    assert collect(reader) == ({}, {})
    assert tracker.aggregate()["calls"] == 7


def test_the_providers_default_to_the_global_ones(
    monkeypatch: pytest.MonkeyPatch,
    reader: InMemoryMetricReader,
    meter_provider: MeterProvider,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
) -> None:
    """Without ``meter_provider=`` and ``tracer_provider=``, the exporter takes
    opentelemetry-api's global providers."""
    monkeypatch.setattr(otel_export.metrics_api, "get_meter_provider", lambda: meter_provider)
    monkeypatch.setattr(otel_export.trace_api, "get_tracer_provider", lambda: tracer_provider)
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker)
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        two_flows(tracker)
    _, points = collect(reader)
    assert points["cachebench.calls"] == {("anthropic", "support"): 3, ("openai", "triage"): 2}
    assert [s.name for s in spans.get_finished_spans()].count("cachebench.call") == 5


def span_named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def expected_attributes(m: CallMetrics) -> dict[str, Any]:
    return {
        "cachebench.flow": m.flow,
        "cachebench.provider": "anthropic",
        "cachebench.model": fakes.MODEL,
        "cachebench.prefix_id": m.prefix_id,
        "cachebench.unexpected_miss": m.unexpected_miss,
        "cachebench.miss_cause": m.miss_cause or "",
        "cachebench.cache_read_tokens": m.cache_read_tokens,
        "cachebench.cache_write_tokens": m.cache_write_tokens,
        "cachebench.expected_read_tokens": m.expected_read_tokens,
        "cachebench.hit_ratio": m.hit_ratio,
        "cachebench.cost_usd": m.cost_usd,
        "cachebench.cost_saved_usd": m.cost_saved_usd,
        "cachebench.avoidable_cost_usd": m.avoidable_cost_usd,
    }


def test_a_span_open_until_after_the_flush_gets_the_calls_attributes(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    """A call made through a wrapped SDK client under an open span: after ``flush()`` the span
    carries the call's cachebench attributes (prefix id, miss cause, costs, cache tokens, hit
    ratio, flow), and a ``cachebench.call`` child of it carries the same."""
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    client = fakes.client(handler)
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    create = tracker.wrap(client.messages.create, flow="support")
    with tracer_provider.get_tracer("app").start_as_current_span("handler") as parent:
        create(**fakes.request())
        tracker.flush()
        assert parent.is_recording()
    (m,) = tracker.calls()
    expected = expected_attributes(m)
    assert expected["cachebench.miss_cause"] == "cold" and expected["cachebench.cost_usd"] > 0
    (handler_span,) = span_named(spans, "handler")
    assert dict(handler_span.attributes or {}) == expected
    (child,) = span_named(spans, "cachebench.call")
    assert dict(child.attributes or {}) == expected
    assert child.parent is not None and child.parent.span_id == handler_span.context.span_id
    assert child.context.trace_id == handler_span.context.trace_id


def test_a_span_holding_a_miss_then_a_hit_says_the_hit_did_not_miss(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    """Two calls under one span, a write then a read: the span ends with the read's
    attributes, its miss cause empty (the write's "cold" is not left behind); each child has
    its own call's."""
    handler, _ = fakes.scripted([fakes.usage(write=3000), fakes.usage(read=3000)])
    client = fakes.client(handler)
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    create = tracker.wrap(client.messages.create, flow="support")
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        create(**fakes.request())
        create(**fakes.request())
        tracker.flush()
    first, second = tracker.calls()
    assert (first.miss_cause, second.miss_cause) == ("cold", None)
    (handler_span,) = span_named(spans, "handler")
    assert dict(handler_span.attributes or {}) == expected_attributes(second)
    assert (handler_span.attributes or {})["cachebench.miss_cause"] == ""
    children = span_named(spans, "cachebench.call")
    assert [dict(c.attributes or {})["cachebench.miss_cause"] for c in children] == ["cold", ""]


def test_a_span_ended_before_the_call_was_analysed_leaves_it_to_the_child(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The user's span ends before the consumer gets to the call (held up here): the ended span
    is left alone (no attribute set on an ended span, no warning), and the ``cachebench.call``
    child, parented on it, carries the attributes."""
    handler, _ = fakes.scripted([fakes.usage(write=3000)])
    client = fakes.client(handler)
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    create = tracker.wrap(client.messages.create, flow="support")
    release = threading.Event()
    tracker._engine.submit(release.wait)  # the consumer is busy until the span has ended
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        create(**fakes.request())
    with caplog.at_level(logging.WARNING):
        release.set()
        tracker.flush()
    assert [r.getMessage() for r in caplog.records] == []
    (handler_span,) = span_named(spans, "handler")
    assert not dict(handler_span.attributes or {})
    (m,) = tracker.calls()
    (child,) = span_named(spans, "cachebench.call")
    assert dict(child.attributes or {}) == expected_attributes(m)
    assert child.parent is not None and child.parent.span_id == handler_span.context.span_id


def test_a_recorded_call_ends_when_recorded_and_lasts_its_elapsed_time(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    """``record(..., elapsed_ms=812)`` under a span: the child lasts exactly 812 ms and ends
    inside the span. An unknown usage leaves the token attributes out (no None values)."""
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    unknown = fakes.message(fakes.usage())
    unknown["usage"] = "x"
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        record(
            tracker, fakes.message(fakes.usage(read=3000)), fakes.request(), flow="replay", elapsed_ms=812.0
        )
        record(tracker, unknown, fakes.request(), flow="replay")
    (handler_span,) = span_named(spans, "handler")
    known, unknown_span = span_named(spans, "cachebench.call")
    assert known.start_time is not None and known.end_time is not None
    assert known.end_time - known.start_time == 812_000_000
    assert handler_span.end_time is not None and known.end_time <= handler_span.end_time
    attributes = dict(unknown_span.attributes or {})
    assert "cachebench.cache_read_tokens" not in attributes and "cachebench.hit_ratio" not in attributes
    assert None not in attributes.values()
    assert attributes["cachebench.flow"] == "replay"


def test_no_span_no_child_and_an_unsampled_span_records_nothing(
    spans: InMemorySpanExporter, tracer_provider: TracerProvider
) -> None:
    """Without a current span nothing is recorded; under a span the sampler dropped, neither is
    the child (it follows its parent's sampling)."""
    tracker = fakes.quiet_tracker(ManualClock())
    OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request(), flow="support")
    assert spans.get_finished_spans() == ()
    dropped = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with dropped.get_tracer("app").start_as_current_span("handler") as parent:
        assert not parent.is_recording()
        record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hi"), flow="support")
    assert spans.get_finished_spans() == ()
    assert tracker.internal_errors == 0


def test_close_detaches_and_one_tracker_has_one_span_exporter(
    tracer_provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    """A second span exporter on a tracker is refused until the first is closed; a closed one
    leaves later calls' spans alone."""
    tracker = fakes.quiet_tracker(ManualClock())
    first = OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    with pytest.raises(ValueError, match="already exports spans"):
        OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False)
    first.close()
    with tracer_provider.get_tracer("app").start_as_current_span("handler"):
        record(tracker, fakes.message(fakes.usage(write=3000)), fakes.request(), flow="support")
    (handler_span,) = span_named(spans, "handler")
    assert not dict(handler_span.attributes or {})
    assert not span_named(spans, "cachebench.call")
    with (
        OTelExporter(tracker, tracer_provider=tracer_provider, metrics=False),
        tracer_provider.get_tracer("app").start_as_current_span("again"),
    ):
        record(tracker, fakes.message(fakes.usage(read=3000)), fakes.request("Hi"), flow="support")
    assert len(span_named(spans, "cachebench.call")) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"meter_provider": "global"}, TypeError, "meter_provider must be an opentelemetry MeterProvider"),
        ({"tracer_provider": 3}, TypeError, "tracer_provider must be an opentelemetry TracerProvider"),
    ],
)
def test_configuration_mistakes_raise_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    """A provider of the wrong kind, or something else than a tracker, raises at construction
    and attaches nothing."""
    tracker = CacheTracker()
    with pytest.raises(error, match=match):
        OTelExporter(tracker, **kwargs)
    assert tracker._engine.span_of is None
    with pytest.raises(TypeError, match="CacheTracker"):
        OTelExporter(None)  # type: ignore[arg-type]


def test_without_opentelemetry_the_import_error_names_the_extra() -> None:
    """Without opentelemetry-api, importing the exporter is an ImportError naming the extra."""
    assert import_error("opentelemetry", "OTelExporter") == (
        "cachebench.export's OpenTelemetry exporter needs opentelemetry-api: pip install -e '.[otel]' in a clone "
        "of cachebench, or pip install 'cachebench[otel] @ git+<repository URL>' (the package index's "
        "'cachebench' is another project)\n"
    )
