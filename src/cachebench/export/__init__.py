"""Exporters of a tracker's numbers to the monitoring an app already runs (docs/export.md).

- :class:`PrometheusCollector` and :func:`start_http_server` (extra ``prometheus``): metrics
  computed at each scrape from the tracker's aggregates, labelled provider, model and flow.
- :class:`OTelExporter` (extra ``otel``): the same aggregates as OpenTelemetry metrics under
  the GenAI semantic conventions' names, and each call's cachebench attributes on the span
  current when it started.

Each name imports its client library when it is first imported from here, so ``import
cachebench`` and ``import cachebench.export`` need neither extra, and a missing one is an
``ImportError`` naming the ``pip install`` that adds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..engine import Engine

if TYPE_CHECKING:
    from ..tracker import CacheTracker
    from .otel import OTelExporter
    from .prometheus import MetricsServer, PrometheusCollector, start_http_server

__all__ = ["MetricsServer", "OTelExporter", "PrometheusCollector", "start_http_server"]

__getattr__ = lazy_names(
    __name__,
    {
        "MetricsServer": ".prometheus",
        "OTelExporter": ".otel",
        "PrometheusCollector": ".prometheus",
        "start_http_server": ".prometheus",
    },
)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def _engine_of(tracker: CacheTracker) -> Engine:
    """The engine an exporter reads: a clear ``TypeError`` for anything but a tracker."""
    engine = getattr(tracker, "_engine", None)
    if not isinstance(engine, Engine):
        raise TypeError(f"expected a cachebench.CacheTracker, got {type(tracker).__name__}")
    return engine
