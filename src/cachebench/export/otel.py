"""OpenTelemetry: the tracker's aggregates as metrics under the GenAI semantic conventions'
names, and each call's cachebench attributes on the span current when it started.

Names. The token metrics are named after the GenAI usage attributes, from
open-telemetry/semantic-conventions-genai ``model/gen-ai/registry.yaml`` (the
``GEN_AI_USAGE_*`` constants of opentelemetry-semantic-conventions'
``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``): there
``gen_ai.usage.input_tokens`` includes cached tokens, and ``gen_ai.usage.cache_read.input_tokens``
and ``gen_ai.usage.cache_creation.input_tokens`` are parts of it. ``gen_ai.provider.name`` takes
the registry's well-known values (``aws.bedrock``; ``gcp.gen_ai`` where the Google backend is
not known). The conventions' own token *metrics* are still being redesigned (the
``gen_ai.client.token.usage`` histogram is being replaced by ``gen_ai.client.inference.*``
counters), and the app's GenAI instrumentation (OpenLLMetry, Logfire, the OpenTelemetry
instrumentations) already emits them: cachebench does not, so no call is counted twice.

Metrics are observable instruments: each collection reads the tracker's per-(provider, model,
flow) aggregates on its consumer (:meth:`cachebench.stats.Stats.by_series`), so nothing is
counted twice and a call costs the consumer nothing more. Sums that never go down are counters;
the net saving (a write costs more than plain input) is an up-down counter; ratios are gauges.

Spans. When a span is current as a call starts, the consumer, once it has the call's metrics,
sets the ``cachebench.*`` attributes on it if it is still recording, and records a child span
``cachebench.call`` with the call's own start and end and the same attributes: the user's span
often ends before the consumer gets to the call, and one span per call keeps two calls under one
span apart. The spans carry no ``gen_ai.usage.*`` attribute: backends that add those up over
spans would count the call twice, beside the GenAI instrumentation's own span.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._extras import install_hint

try:
    from opentelemetry import metrics as metrics_api
    from opentelemetry import trace as trace_api
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:
    raise ImportError(
        f"cachebench.export's OpenTelemetry exporter needs opentelemetry-api: {install_hint('otel')}"
    ) from exc

from .. import __version__
from . import _engine_of

if TYPE_CHECKING:
    from ..engine import CallContext, Engine
    from ..tracker import CacheTracker
    from ..types import CallMetrics

__all__ = ["CALL_SPAN", "OTelExporter", "metric_attributes", "span_attributes"]

#: The name of the child span recorded for each call made under a span.
CALL_SPAN = "cachebench.call"

# cachebench provider -> gen_ai.provider.name (registry.yaml's well-known values).
_PROVIDER_NAME = {
    "anthropic": "anthropic",
    "openai": "openai",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gen_ai",
}
# cachebench provider -> gen_ai.operation.name ("chat" unless listed).
_OPERATION = {"gemini": "generate_content"}

Aggregate = Mapping[str, Any]


def _total_input(agg: Aggregate) -> int:
    """``gen_ai.usage.input_tokens`` includes cached tokens: cachebench's ``input_tokens`` are
    the uncached part only."""
    return int(agg["input_tokens"] + agg["cache_read_tokens"] + agg["cache_write_tokens"])


def _key(name: str) -> Callable[[Aggregate], Any]:
    return lambda agg: agg[name]


# (instrument, name, unit, value read from an aggregate (cachebench.stats.Agg.as_dict()), description)
_INSTRUMENTS: tuple[tuple[str, str, str, Callable[[Aggregate], Any], str], ...] = (
    ("counter", "gen_ai.usage.input_tokens", "{token}", _total_input,
     "Input tokens, cache reads and writes included."),
    ("counter", "gen_ai.usage.cache_read.input_tokens", "{token}", _key("cache_read_tokens"),
     "Input tokens served from the provider's cache."),
    ("counter", "gen_ai.usage.cache_creation.input_tokens", "{token}", _key("cache_write_tokens"),
     "Input tokens written to the provider's cache, every TTL."),
    ("counter", "cachebench.usage.cache_creation_1h.input_tokens", "{token}", _key("cache_write_1h_tokens"),
     "The part of the cache writes made with a 1 h TTL."),
    ("counter", "gen_ai.usage.output_tokens", "{token}", _key("output_tokens"), "Output tokens."),
    ("counter", "cachebench.calls", "{call}", _key("calls"), "Calls recorded, failed ones included."),
    ("counter", "cachebench.cost", "USD", _key("cost_usd"), "What the priced calls cost."),
    ("counter", "cachebench.cost_without_cache", "USD", _key("cost_without_cache_usd"),
     "What the priced calls would have cost with every input token at the base rate."),
    ("counter", "cachebench.avoidable_cost", "USD", _key("avoidable_cost_usd"),
     "What avoidable cache misses cost beyond reading the tokens they missed."),
    ("up_down_counter", "cachebench.cost_saved", "USD", _key("cost_saved_usd"),
     "Cost without cache minus cost (negative while cache writes are not yet paid back)."),
    ("gauge", "cachebench.hit_ratio", "1", _key("hit_ratio"),
     "Cache reads over what was cacheable (read + written, or expected where writes are not reported)."),
    ("gauge", "cachebench.token_hit_ratio", "1", _key("token_hit_ratio"), "Cache reads over all input tokens."),
)  # fmt: skip


def metric_attributes(provider: str, model: str | None, flow: str | None) -> dict[str, AttributeValue]:
    """The attributes of one series: ``gen_ai.operation.name``, ``gen_ai.provider.name``,
    ``gen_ai.response.model`` (the model that answered, or the one asked for when the response
    names none; left out when neither is known) and ``cachebench.flow``."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": _OPERATION.get(provider, "chat"),
        "gen_ai.provider.name": _PROVIDER_NAME.get(provider, provider),
    }
    if model is not None:
        attributes["gen_ai.response.model"] = model
    if flow is not None:
        attributes["cachebench.flow"] = flow
    return attributes


def span_attributes(m: CallMetrics) -> dict[str, AttributeValue]:
    """One call's attributes for its spans: ``cachebench.flow``, ``.provider``, ``.model``,
    ``.prefix_id``, ``.unexpected_miss``, ``.miss_cause`` (empty without a miss); with its usage known,
    ``.cache_read_tokens``, ``.cache_write_tokens``, ``.expected_read_tokens`` and
    ``.hit_ratio``; priced, ``.cost_usd``, ``.cost_saved_usd`` and ``.avoidable_cost_usd``;
    failed, ``.error``. What is unknown is left out (a span attribute cannot be None)."""
    attributes: dict[str, AttributeValue] = {
        "cachebench.flow": m.flow,
        "cachebench.provider": m.provider,
        "cachebench.unexpected_miss": m.unexpected_miss,
        # (always set: a call without a miss clears the cause a span holding several calls had)
        "cachebench.miss_cause": m.miss_cause or "",
    }
    optional: dict[str, Any] = {
        "cachebench.model": m.model,
        "cachebench.prefix_id": m.prefix_id,
        "cachebench.cost_usd": m.cost_usd,
        "cachebench.cost_saved_usd": m.cost_saved_usd,
        "cachebench.avoidable_cost_usd": m.avoidable_cost_usd,
        "cachebench.error": m.error,
    }
    if m.usage_known:
        optional.update(
            {
                "cachebench.cache_read_tokens": m.cache_read_tokens,
                "cachebench.cache_write_tokens": m.cache_write_tokens,
                "cachebench.expected_read_tokens": m.expected_read_tokens,
                "cachebench.hit_ratio": m.hit_ratio,
            }
        )
    for name, value in optional.items():
        if value is not None and not (isinstance(value, float) and not math.isfinite(value)):
            attributes[name] = value
    return attributes


def _span_at_start() -> tuple[Span, int] | None:
    """On the caller's thread, as a call starts: the current span and the time (ns since the
    epoch), or None when no span is current."""
    span = trace_api.get_current_span()
    if not span.get_span_context().is_valid:
        return None
    return span, time.time_ns()


class OTelExporter:
    """Exports one tracker to OpenTelemetry: metrics (``metrics=True``) through
    ``meter_provider`` and span attributes plus a ``cachebench.call`` child span per call
    (``spans=True``) through ``tracer_provider``; both default to the global providers of
    opentelemetry-api. ``close()`` (or ``with``) detaches it; until then it keeps the
    tracker's aggregates readable.
    """

    def __init__(
        self,
        tracker: CacheTracker,
        *,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        metrics: bool = True,
        spans: bool = True,
    ) -> None:
        engine = _engine_of(tracker)
        if meter_provider is None:
            meter_provider = metrics_api.get_meter_provider()
        elif not isinstance(meter_provider, MeterProvider):
            raise TypeError(
                "meter_provider must be an opentelemetry MeterProvider (e.g. "
                f"opentelemetry.sdk.metrics.MeterProvider) or None, got {type(meter_provider).__name__}"
            )
        if tracer_provider is None:
            tracer_provider = trace_api.get_tracer_provider()
        elif not isinstance(tracer_provider, TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry TracerProvider (e.g. "
                f"opentelemetry.sdk.trace.TracerProvider) or None, got {type(tracer_provider).__name__}"
            )
        if spans and engine.span_of is not None:
            raise ValueError(
                "this tracker already exports spans through another OTelExporter: close() that one "
                "first, or pass spans=False"
            )
        self._engine: Engine | None = engine
        self._spans = bool(spans)
        self._tracer = tracer_provider.get_tracer("cachebench", __version__)
        if metrics:
            meter = meter_provider.get_meter("cachebench", __version__)
            create = {
                "counter": meter.create_observable_counter,
                "up_down_counter": meter.create_observable_up_down_counter,
                "gauge": meter.create_observable_gauge,
            }
            for kind, name, unit, value, description in _INSTRUMENTS:
                callback = functools.partial(self._observe, value)
                create[kind](name, callbacks=[callback], unit=unit, description=description)
        if self._spans:
            engine.span_of = _span_at_start
            engine.read(engine.listeners.append, self._on_call)  # on the consumer: no race

    def close(self) -> None:
        """Stop exporting: no more span attributes, and the metrics report nothing for this
        tracker from now on (OpenTelemetry has no way to remove an instrument). Safe to call
        twice."""
        engine, self._engine = self._engine, None
        if engine is None or not self._spans:
            return
        if engine.span_of is _span_at_start:
            engine.span_of = None
        engine.read(_remove, engine.listeners, self._on_call)

    def __enter__(self) -> OTelExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metrics: read at each collection, on the reader's thread ---------------------------

    def _observe(self, value: Callable[[Aggregate], Any], options: CallbackOptions) -> Iterator[Observation]:
        engine = self._engine
        if engine is None:
            return
        series = engine.read(engine.stats.by_series, timeout=options.timeout_millis / 1000)
        for provider, model, flow, agg in series:
            v = value(agg)
            if v is not None:  # no price, or a ratio over nothing: no point
                yield Observation(v, metric_attributes(provider, model, flow))

    # -- spans: on the consumer, after each call ------------------------------------------

    def _on_call(self, m: CallMetrics, ctx: CallContext) -> None:
        captured = ctx.span
        if captured is None:
            return
        span, started_ns = captured
        attributes = span_attributes(m)
        if span.is_recording():
            span.set_attributes(attributes)
        took_ms = (m.elapsed_ms or 0.0) + m.held_ms
        took_ns = int(took_ms * 1e6) if math.isfinite(took_ms) and took_ms > 0 else 0
        # A live call started at the captured time; record() gets a call that already ended.
        start = started_ns if ctx.live else started_ns - took_ns
        child = self._tracer.start_span(
            CALL_SPAN,
            context=trace_api.set_span_in_context(span),
            start_time=start,
            attributes=attributes,
        )
        child.end(end_time=start + took_ns)


def _remove(listeners: list[Any], listener: Any) -> None:
    if listener in listeners:
        listeners.remove(listener)
