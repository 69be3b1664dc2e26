"""Prometheus: a collector computed at scrape time from the tracker's own aggregates, and a
``/metrics`` server on loopback.

Nothing is counted twice: each scrape asks the tracker's consumer for its per-(provider, model,
flow) aggregates (:meth:`cachebench.stats.Stats.by_series`) and turns them into metric
families. Labels are ``provider``, ``model`` and ``flow`` only (never a prefix id: one series
per prefix would be unbounded). A series, once shown, never goes away and its counters never go
down: the tracker keeps every series it has counted, the first
:data:`~cachebench.stats.MAX_SERIES` under their own labels and the rest under
``model="(other)", flow="(other)"``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._extras import install_hint

try:
    from prometheus_client import start_http_server as _start_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import CollectorRegistry
except ImportError as exc:
    raise ImportError(
        f"cachebench.export's Prometheus collector needs prometheus-client: {install_hint('prometheus')}"
    ) from exc

from . import _engine_of

if TYPE_CHECKING:
    from ..tracker import CacheTracker

__all__ = ["LABELS", "READ_TIMEOUT_S", "MetricsServer", "PrometheusCollector", "start_http_server"]

#: The only labels of every metric.
LABELS = ("provider", "model", "flow")
#: How long a scrape waits for the tracker's consumer to answer before it fails (HTTP 500).
READ_TIMEOUT_S = 10.0

# (name, unit, aggregate key, help). Counters: sums of values that are never negative, so they
# never go down. The aggregate keys are those of cachebench.stats.Agg.as_dict().
_COUNTERS = (
    ("cachebench_calls", "", "calls", "Calls recorded, failed ones included."),
    ("cachebench_input_tokens", "tokens", "input_tokens",
     "Uncached input tokens (billed at the base rate; cache reads and writes not included)."),
    ("cachebench_cache_read_tokens", "tokens", "cache_read_tokens", "Input tokens read from the cache."),
    ("cachebench_cache_write_tokens", "tokens", "cache_write_tokens",
     "Input tokens written to the cache, every TTL."),
    ("cachebench_cache_write_1h_tokens", "tokens", "cache_write_1h_tokens",
     "The part of the cache writes made with a 1 h TTL."),
    ("cachebench_output_tokens", "tokens", "output_tokens", "Output tokens."),
    ("cachebench_cost_usd", "usd", "cost_usd", "What the priced calls cost, in USD."),
    ("cachebench_cost_without_cache_usd", "usd", "cost_without_cache_usd",
     "What the priced calls would have cost with every input token at the base rate, in USD."),
    ("cachebench_avoidable_cost_usd", "usd", "avoidable_cost_usd",
     "What avoidable cache misses cost beyond reading the tokens they missed, in USD."),
)  # fmt: skip
# Gauges. What caching saved is cost without cache minus cost: a cache write costs more than
# plain input, so the net saving goes down after a write until reads pay it back. Not a counter.
_GAUGES = (
    ("cachebench_cost_saved_usd", "usd", "cost_saved_usd",
     "Cost without cache minus cost, in USD (negative while cache writes are not yet paid back)."),
    ("cachebench_hit_ratio", "ratio", "hit_ratio",
     "Cache reads over what was cacheable (read + written, or expected where writes are not reported)."),
    ("cachebench_token_hit_ratio", "ratio", "token_hit_ratio", "Cache reads over all input tokens."),
)  # fmt: skip


class PrometheusCollector:
    """A Prometheus collector of one tracker's aggregates, computed at each scrape.

    ``registry.register(PrometheusCollector(tracker))`` on a registry of your own (or
    ``prometheus_client.REGISTRY``, if you pass it); :func:`start_http_server` does it for you.
    """

    def __init__(self, tracker: CacheTracker) -> None:
        self._engine = _engine_of(tracker)

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: a registry checks names with it and never
        scrapes at registration."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        """The metric families, read from the tracker's consumer (after every call queued
        before the scrape). Raises ``TimeoutError`` if it does not answer within
        :data:`READ_TIMEOUT_S`."""
        engine = self._engine
        return self._families(engine.read(engine.stats.by_series, timeout=READ_TIMEOUT_S))

    @staticmethod
    def _families(series: list[tuple[str, str | None, str | None, dict[str, Any]]]) -> Iterator[Metric]:
        labelled = [((provider, model or "", flow or ""), agg) for provider, model, flow, agg in series]
        for kind, table in ((CounterMetricFamily, _COUNTERS), (GaugeMetricFamily, _GAUGES)):
            for name, unit, key, doc in table:
                family = kind(name, doc, labels=LABELS, unit=unit)
                for labels, agg in labelled:
                    value = agg[key]
                    if value is not None:  # no price, or a ratio over nothing: no sample
                        family.add_metric(labels, value)
                yield family


class MetricsServer:
    """A running ``/metrics`` endpoint (what :func:`start_http_server` returns).

    ``port`` is the port it listens on (the one the system chose when asked for port 0);
    ``close()`` stops it and unregisters the collector; ``with`` closes it too.
    """

    def __init__(
        self,
        server: Any,
        thread: threading.Thread,
        registry: CollectorRegistry,
        collector: PrometheusCollector,
    ) -> None:
        self._server = server
        self._thread = thread
        self.registry = registry
        self.collector = collector
        address = server.server_address
        self.addr: str = address[0]
        self.port: int = address[1]
        self._closed = False

    @property
    def url(self) -> str:
        """The metrics URL, ``http://<addr>:<port>/metrics``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and unregister the collector. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.registry.unregister(self.collector)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_http_server(
    tracker: CacheTracker,
    port: int,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``tracker``'s metrics on ``http://addr:port/metrics`` from a daemon thread.

    Binds to loopback unless ``addr`` says otherwise (``"0.0.0.0"`` to let a Prometheus
    server on another host scrape it). ``port=0`` picks a free port (read it from the answer's
    ``port``). The collector goes into ``registry``, or into a new registry of its own: never
    into ``prometheus_client.REGISTRY`` unless you pass it.
    """
    collector = PrometheusCollector(tracker)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535 (0: any free port), got {port!r}")
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"addr must be a host address such as '127.0.0.1', got {addr!r}")
    if registry is None:
        registry = CollectorRegistry()
    elif not isinstance(registry, CollectorRegistry):
        raise TypeError(
            f"registry must be a prometheus_client.CollectorRegistry or None, got {type(registry).__name__}"
        )
    registry.register(collector)
    try:
        server, thread = _start_server(port, addr, registry)
    except BaseException:
        registry.unregister(collector)
        raise
    return MetricsServer(server, thread, registry, collector)
