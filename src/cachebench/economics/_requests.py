"""Saved requests as a trace (:func:`trace_from_requests`), so that :func:`~._simulate.simulate`
can replay the requests a flow sends, as they are marked now or as a plan of the planner
(:func:`cachebench.plan`) would mark them (:func:`plans_for_requests`).

Each request is rendered as the emulator renders it (its blocks in cache order, each with its
tokens by the emulator's estimate and its breakpoint) and becomes one trace call whose layers
are its blocks: a layer's key is the block's digest, so two requests share a prefix exactly where
they send the same blocks. A run of tool_use and tool_result blocks is one lookback position,
as the providers count it: a block that continues a run is a layer of ``blocks: 0``. The
requests are read as :func:`~cachebench.planner.explain_requests` reads them (files of JSON
Lines, plain or gzip, of bodies or wrappers with a timestamp, flow, provider and model; or the
bodies themselves); a request without a timestamp comes ``interval_s`` after the one before it
(the first undated one at ``start``), and a request that cannot be read or rendered stops the
reading with its file and line (and its index in a JSON file's list).

Anthropic and Bedrock requests only: their breakpoints are explicit, which a trace's layers
carry. A trace has no output tokens (a saved request has no response): every strategy pays the
same for them, so the comparison stands, and its costs are the input's.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..cachemodel import CacheRuleError
from ..cachemodel._rules import breakpoints, lookback_positions
from ..fingerprint import key as prefix_key
from ..providers import adapter_for, detect_request
from ..types import Provider
from ._trace import Layer, Trace, TraceCall, TraceError

if TYPE_CHECKING:
    from ..planner import Traffic

__all__ = ["measured_traffic", "plans_for_requests", "trace_from_requests"]

_FAMILIES = (Provider.ANTHROPIC, Provider.BEDROCK)


def trace_from_requests(
    requests: Any,
    *,
    plans: Any = None,
    provider: Provider | str | None = None,
    model: str | None = None,
    flow: str | None = None,
    interval_s: float = 1.0,
    start: float | str | None = None,
) -> Trace:
    """``requests`` (see the module) as a :class:`~._trace.Trace`. ``plans``: a
    :class:`~cachebench.planner.Plan`, or one per flow (``{flow: Plan}``, as
    :func:`plans_for_requests` gives), whose breakpoints replace each request's own (a flow
    without a plan, and a request to another provider than its flow's plan, keep their own).
    ``provider``, ``model``, ``flow``, ``interval_s`` and ``start`` are as
    :func:`~cachebench.planner.explain_requests` takes them. A request that cannot be read or
    rendered raises :class:`~._trace.TraceError` naming its file and line."""
    from ..planner._replay import api_for
    from ..planner._saved import ReplayError
    from ..planner.offline import _check

    chosen, first = _check(provider, model, flow, interval_s, start)
    calls = []
    previous: float | None = None
    for item in _read(requests):
        where, family, api, body, name, flow_name = _resolved(item, chosen, model, flow)
        now = item.timestamp
        if now is None:
            now = first if previous is None else previous + interval_s
        previous = now
        plan = plans.get(flow_name) if isinstance(plans, Mapping) else plans
        if plan is not None and plan.provider == family.value:
            try:
                api, body, _ = api_for(family, plan.apply(item.body))
            except (ValueError, ReplayError) as exc:
                raise TraceError(f"{where}: the plan cannot mark it: {exc}") from None
        try:
            request = api.cache_request(body, name, item.scope or "offline")
            marks = dict(breakpoints(request))
        except CacheRuleError as exc:
            raise TraceError(f"{where}: the provider would refuse it: {exc.worded(api.markers)}") from None
        positions = lookback_positions(request.segments)
        layers = tuple(
            Layer(seg.digest.hex(), seg.tokens, marks.get(i), int(i == 0 or positions[i] != positions[i - 1]))
            for i, seg in enumerate(request.segments)
        )
        calls.append(
            TraceCall(
                timestamp=now,
                flow=flow_name,
                provider=family.value,
                model=name,
                layers=layers,
                input_tokens=request.overhead_tokens,
                scope=item.scope or "",
            )
        )
    return Trace(calls)


def plans_for_requests(
    requests: Any,
    *,
    samples: int = 20,
    provider: Provider | str | None = None,
    model: str | None = None,
    flow: str | None = None,
    flows: Collection[str] | None = None,
    measure_traffic: bool = True,
) -> dict[str, Any]:
    """The planner's plan (:func:`cachebench.plan`) for each flow of ``requests`` (read as
    :func:`trace_from_requests` reads them; ``flows``: only these), from up to ``samples`` of
    its requests to its most frequent provider and model, picked at random (a fixed seed: the
    same plan every time) and kept in their order: ``{flow: Plan}``.

    ``measure_traffic``: the planner is given the flow's traffic as those requests show it
    (:func:`measured_traffic`: calls per hour and turns per session) and chooses each
    breakpoint's TTL for it. A flow whose requests do not show a rate (fewer than two with a
    timestamp of their own, or all at one instant), and every flow with
    ``measure_traffic=False``, is planned from the samples alone, replayed a second apart."""
    from ..planner import plan
    from ..planner.offline import _check

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a whole number >= 1, got {samples!r}")
    if isinstance(flows, str):
        raise ValueError(f"flows must be a collection of flow names, got the text {flows!r}")
    if not isinstance(measure_traffic, bool):
        raise TypeError(f"measure_traffic must be True or False, got {measure_traffic!r}")
    chosen, _ = _check(provider, model, flow, 1.0, None)
    by_flow: dict[str, dict[tuple[Provider, str], list[tuple[Any, Mapping[str, Any]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for item in _read(requests):
        _, family, api, body, name, flow_name = _resolved(item, chosen, model, flow)
        if flows is None or flow_name in flows:
            by_flow[flow_name][(family, name)].append((item, api.call(body, name)))
    out = {}
    for flow_name, by_model in by_flow.items():
        (family, name), sent = max(by_model.items(), key=lambda kv: len(kv[1]))  # (the first of equals)
        picked = sorted(random.Random(0).sample(range(len(sent)), min(samples, len(sent))))
        traffic = measured_traffic(sent, family) if measure_traffic else None
        try:
            out[flow_name] = plan([sent[i][0].body for i in picked], traffic, provider=family, model=name)
        except ValueError as exc:
            raise ValueError(
                f"flow {flow_name}: no plan from its requests to {family.value} {name}: {exc}"
            ) from None
    return out


def measured_traffic(sent: Sequence[tuple[Any, Mapping[str, Any]]], provider: Provider) -> Traffic | None:
    """The :class:`~cachebench.planner.Traffic` a flow's saved requests to ``provider`` show
    (each with the SDK call's arguments it stands for), or None when they show no rate:

    * ``calls_per_hour``: the requests after the first over the hours from the first timestamp
      to the last (requests without a timestamp of their own count in neither);
    * ``turns_per_session``: requests per session. A request continues a session when an
      earlier request's whole prompt is where its own starts: the fingerprint's chained hash
      of that request's last block (cache markers aside, as the tracker's adapter reads them) is
      one of this request's; a log that starts mid-session counts the first request it has of
      each as a start;
    * ``users`` is not in requests: the planner takes a layer's share of the samples as its
      share of the calls."""
    from ..planner import Traffic

    stamps = [item.timestamp for item, _ in sent if item.timestamp is not None]
    if len(stamps) < 2 or max(stamps) <= min(stamps):
        return None
    adapter = adapter_for(provider)
    ends: set[int] = set()  # each earlier request's whole prompt, as its last block's chain value
    starts = 0
    for _, call in sent:
        chain = prefix_key(adapter.parse_request(call)).chain
        if not any(h in ends for h in chain[:-1]):
            starts += 1
        if chain:
            ends.add(chain[-1])
    return Traffic(
        calls_per_hour=(len(stamps) - 1) * 3600.0 / (max(stamps) - min(stamps)),
        turns_per_session=len(sent) / max(starts, 1),
    )


def _resolved(item: Any, chosen: Provider | None, model: str | None, flow: str | None) -> tuple[Any, ...]:
    """A saved request's place (file:line, and its index in a JSON list), provider, wire API,
    the body its renderer reads, model and flow; :class:`~._trace.TraceError` for a line that
    was skipped, or a request that names no provider or model, or is not Anthropic's or
    Bedrock's."""
    from ..planner._replay import api_for
    from ..planner._saved import ReplayError, Skipped

    where = f"{item.source}:{item.line}" + (f": request {item.index}" if item.index is not None else "")
    if isinstance(item, Skipped):
        raise TraceError(f"{where}: {item.reason}")
    family = item.provider or chosen or detect_request(item.body)
    if family is None:
        raise TraceError(
            f"{where}: cannot tell which provider this request is for (give provider=, --provider)"
        )
    if family not in _FAMILIES:
        raise TraceError(
            f"{where}: a request to {family.value}: a trace carries explicit breakpoints, which Anthropic"
            " and Bedrock requests have (cachebench explain, or explain_requests, replays the others)"
        )
    try:
        api, body, own = api_for(family, item.body)
    except ReplayError as exc:
        raise TraceError(f"{where}: {exc}") from None
    if not isinstance(body.get("messages"), list):
        hint = " (a trace's line: simulate reads a trace without --requests)" if "layers" in item.body else ""
        raise TraceError(f"{where}: not a request body for {family.value}: it has no list of messages{hint}")
    name = api.normalize(own) or api.normalize(item.model) or api.normalize(model)
    if name is None:
        raise TraceError(f"{where}: no model: give the request's wrapper a model, or model= (--model)")
    return where, family, api, body, name, item.flow or flow or f"{family.value}/{name}"


class _Read(list):  # type: ignore[type-arg]
    """Requests already read (:func:`read_once`): the functions here take them as they are."""


def read_once(requests: Any) -> list[Any]:
    """``requests`` read once, for more than one of :func:`trace_from_requests` and
    :func:`plans_for_requests` (each would read a file again); :class:`~._trace.TraceError`
    when a file cannot be read."""
    return _Read(_read(requests))


def _read(requests: Any) -> list[Any]:
    from ..planner._saved import read_requests

    if isinstance(requests, _Read):
        return requests
    try:
        return list(read_requests(requests))
    except OSError as exc:
        why = exc.strerror or str(exc)
        why = why[:1].lower() + why[1:]
        raise TraceError(f"{exc.filename}: {why}" if exc.filename else why) from None
