"""Offline explain: saved request bodies replayed through the cache model and the tracker's own
diagnosis, before anything is turned on (:func:`explain_requests`).

No usage is needed. Each request is rendered by the emulator's renderers and run through one
:class:`~cachebench.cachemodel.CacheModel` at its own time, which says what the provider
would read and write; the response the provider would have sent is recorded by the tracker's
engine, whose diagnosis names the cause of what was not read (the same causes, diffs and
avoidable tokens as a live call). Requests are replayed in time order (stable): a request
without a timestamp comes ``interval_s`` after the one before it in the input; the first one,
undated, at ``start`` (default :data:`UNDATED_START`).

Results are taken from the engine as each call is analysed (a listener), so the engine's
bounded history never limits a file; a row keeps the call's
:class:`~cachebench.types.CallMetrics` and builds its explanation when asked. The engine writes
to no store (``CACHEBENCH_DB`` is not read) and raises no alert.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from .._guard import strict_from_env
from ..cachemodel import CacheModel
from ..engine import CallContext, Engine
from ..providers import adapter_for
from ..stats import Stats
from ..types import CallMetrics, Provider
from . import _replay_process
from ._offline_report import CauseSummary, OfflineReport, OfflineRow, report
from ._replay import InputOrder, Replayed, Timeline, in_time_order, replay
from ._replay_process import Call, Job, Refused, ReplayProcess, input_bytes
from ._saved import ReplayError, SavedRequest, Skipped, is_path, parse_timestamp, read_requests

__all__ = ["UNDATED_START", "CauseSummary", "OfflineReport", "OfflineRow", "Skipped", "explain_requests"]

#: When the first request of an input without timestamps is replayed (2026-01-01T00:00:00Z):
#: a fixed time, so the same file always gives the same report (prices are those of that day).
UNDATED_START = 1_767_225_600.0


def _ignore(_: object) -> None:
    return None


class _Quiet:
    """The engine's owner: its callbacks do nothing (the report says what they would)."""

    on_miss_alert = staticmethod(_ignore)
    on_regression = staticmethod(_ignore)


class _NoAggregates(Stats):
    """The engine's aggregates (per prefix, flow, model and time), not kept: the report is made
    of each call's metrics, and nothing reads them."""

    def add(self, m: CallMetrics, prefix_hash: int | None) -> None:
        return None


class _Session:
    """One cache model and one engine, fed in time order; the rows come back through the
    engine's listener, on its consumer thread."""

    def __init__(
        self,
        prices: Mapping[str, Mapping[str, float]] | None,
        provider: Provider | None,
        model: str | None,
        flow: str | None,
    ) -> None:
        self.now = 0.0
        self.defaults = (provider, model, flow)
        self.cache = CacheModel(clock=self.clock)
        self.owner = _Quiet()  # the engine holds its owner weakly
        self.engine = Engine(
            self.owner,
            threshold=0.6,
            capture_text=False,
            gate=None,
            max_prefixes=10_000,
            max_calls=1,  # the rows are kept here, not in the engine's history
            prices=prices,
            clock=self.clock,
            strict=strict_from_env(),
        )
        self.engine.stats = _NoAggregates(1, 1)
        self.engine.listeners.append(self._recorded)
        self.pending: dict[int, tuple[Mapping[str, Any], str, int, int]] = {}
        self.stopped = False  # set from another thread: the replay ends at the next request
        self.rows: list[OfflineRow] = []
        self.refused: list[Skipped] = []

    def clock(self) -> float:
        return self.now

    def replay(self, saved: SavedRequest, now: float) -> None:
        """``saved`` through the cache model, then the engine."""
        provider, model, _ = self.defaults
        self.now = now
        try:
            done = replay(self.cache, saved, now, provider=provider, model=model)
        except ReplayError as exc:
            self.refused.append(Skipped(saved.source, saved.line, str(exc), saved.index))
            return
        call = done.call if done.call is not saved.body else dict(done.call)  # one object per call
        self._record(saved.source, saved.line, saved.flow, done, call, now)

    def replayed(self, item: Call) -> None:
        """A request the reading process ran through its cache model, to the engine."""
        self.now = item.now
        call = orjson.loads(item.call)
        done = Replayed(Provider(item.provider), item.model, call, item.response, item.unread)
        self._record(item.source, item.line, item.flow, done, call, item.now)

    def _record(
        self, source: str, line: int, flow: str | None, done: Replayed, call: Mapping[str, Any], now: float
    ) -> None:
        self.pending[id(call)] = (call, source, line, done.unread)
        self.engine.record(
            adapter_for(done.provider),
            done.response,
            call,
            flow or self.defaults[2] or f"{done.provider.value}/{done.model}",
            timestamp=now,
            elapsed_ms=None,
            wait=False,
        )

    def _recorded(self, metrics: CallMetrics, ctx: CallContext) -> None:
        found = self.pending.pop(id(ctx.request), None)
        if found is not None:
            self.rows.append(OfflineRow(found[1], found[2], metrics, found[3]))

    def close(self) -> list[Skipped]:
        """Wait for every call's analysis; the calls the engine could not record, as skipped."""
        self.engine.close()
        lost = [
            Skipped(p[1], p[2], "not analysed (an internal error, logged)") for p in self.pending.values()
        ]
        self.pending.clear()
        return [*self.refused, *lost]


def _check(
    provider: Any, model: Any, flow: Any, interval_s: Any, start: Any
) -> tuple[Provider | None, float]:
    parsed = Provider.parse(provider) if provider is not None else None
    for name, value in (("model", model), ("flow", flow)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or not interval_s >= 0:
        raise ValueError(f"interval_s must be a number of seconds >= 0, got {interval_s!r}")
    if not math.isfinite(interval_s):
        raise ValueError(f"interval_s must be finite, got {interval_s!r}")
    try:
        first = UNDATED_START if start is None else parse_timestamp(start)
    except ReplayError as exc:
        raise ValueError(f"start: {exc}") from None
    return parsed, first


def explain_requests(
    requests: Iterable[Any] | str | os.PathLike[str],
    *,
    provider: Provider | str | None = None,
    model: str | None = None,
    flow: str | None = None,
    interval_s: float = 1.0,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    start: float | str | None = None,
) -> OfflineReport:
    """Replay saved request bodies through the cache model and explain each one.

    ``requests``: a path (JSON Lines, plain or gzip), a list of paths, or request bodies and
    wrappers (dicts or JSON text: text that starts with ``{``), or one of them. ``provider``, ``model`` and ``flow`` apply to requests
    whose wrapper (and, for the model, body) names none; a request's flow defaults to
    ``"<provider>/<model>"``. ``prices`` overrides genai-prices as
    :class:`~cachebench.CacheTracker` takes it. A file that cannot be read raises ``OSError``;
    a line that cannot be replayed is in :attr:`OfflineReport.skipped` with why.

    Files of :data:`~._replay_process.MIN_BYTES` and more are read, rendered and run through the
    cache model in a second process while this one runs the engine: the same report, sooner.
    """
    chosen, first = _check(provider, model, flow, interval_s, start)
    step = float(interval_s)
    skipped: list[Skipped] = []
    sources: dict[str, int] = {}  # each source's place in the input, for the skipped lines' order
    paths = _paths(requests)
    process = None
    if paths is not None and input_bytes(paths) >= _replay_process.MIN_BYTES:
        process = ReplayProcess.start(Job(paths, chosen, model, first, step))
    session = _Session(prices, chosen, model, flow)
    try:
        # On the engine's consumer thread: each call is analysed as it is recorded, with no
        # hand-over between threads.
        if process is None:
            in_order, timeline = session.engine.read(
                _replay_in_input_order, session, requests, first, step, skipped, sources
            )
        else:
            in_order = session.engine.read(_record_from, session, process, skipped, sources)
        if not in_order:
            session.close()
            session = _Session(prices, chosen, model, flow)
            if process is None:
                session.engine.read(_replay_sorted, session, timeline, skipped)
            else:
                session.engine.read(_record_from, session, process, skipped, sources)
    except BaseException:
        session.stopped = True  # (an interrupt: the consumer stops at the next request)
        if process is not None:
            process.stop()
        raise
    finally:
        try:
            skipped.extend(session.close())
        finally:
            if process is not None:
                process.close()
    skipped.sort(key=lambda s: (sources.get(s.source, len(sources)), s.line))
    return report(session.rows, skipped)


def _paths(requests: Any) -> list[str] | None:
    """The files ``requests`` names (as :func:`~._saved.read_requests` reads them), else None."""
    if is_path(requests):
        return [os.fspath(requests)]
    if isinstance(requests, list) and requests and all(is_path(p) for p in requests):
        return [os.fspath(p) for p in requests]
    return None


def _replay_in_input_order(
    session: _Session,
    requests: Any,
    first: float,
    step: float,
    skipped: list[Skipped],
    sources: dict[str, int],
) -> tuple[bool, Timeline]:
    """Replay while the input is in time order; return whether it all was, and every request's
    (time, place in the input, where to find it again) for a replay in time order if not."""
    order = InputOrder(first, step, sources)
    for now, item in order.walk(read_requests(requests)):
        if session.stopped:
            break
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            session.replay(item, now)
    return order.in_order, order.timeline


def _replay_sorted(session: _Session, timeline: Timeline, skipped: list[Skipped]) -> None:
    for now, item in in_time_order(timeline):
        if session.stopped:
            break
        if isinstance(item, Skipped):  # (the file changed since it was read)
            skipped.append(item)
        else:
            session.replay(item, now)


def _record_from(
    session: _Session, process: ReplayProcess, skipped: list[Skipped], sources: dict[str, int]
) -> bool:
    """One phase of the reading process's requests to the engine; whether the input was in time
    order (the first phase: ``sources`` then has each source's place in it)."""
    for batch in process.phase():
        for item in batch:
            if session.stopped:
                process.stop()
                return True
            if isinstance(item, Call):
                session.replayed(item)
            elif isinstance(item, Refused):
                session.refused.append(item.skipped)
            else:
                skipped.append(item)
    for source in process.end.sources:
        sources.setdefault(source, len(sources))
    return process.end.in_order
