"""Recorded calls as a trace (:func:`trace_from_calls`): what ``advise`` reads from a tracker
or a store, and ``cachebench export --format trace`` writes.

A recorded call keeps its breakpoint ids (the chained hash of the prompt through each
breakpoint), its token counts and its flow, not its text. Its layers are its breakpoints: a
layer's key is the breakpoint's id (the same id after the same ids is the same bytes), and its
size comes from what the calls measured:

* the prefix through a call's last breakpoint is what it read plus what it wrote (where the
  provider reports writes); the largest such measure of an id is its size; a call that read
  less than that read through its deepest inner breakpoint an earlier call had: that is the
  inner breakpoint's size;
* an inner breakpoint whose size no call measured is merged into the layer after it;
* a layer's TTL is ``1h`` when every write of it was within the calls' 1 h writes (which
  come first), else ``5m`` (per-breakpoint TTLs are not recorded; OpenAI's: ``30m``);
* ``input_tokens`` after the layers is the call's uncached input beyond its cached prefix;
* ``ttft_ms`` is the call's elapsed time (its writes readable from then: twins sent together
  do not read each other's writes);
* a call that read an entry that is none of its own breakpoints (the previous turn of its
  conversation, found by the provider's lookback) starts with the layers of the latest call
  of its flow whose prefix had that size: its own last layer adds what follows them.

Warm calls stay, as warm calls (what they kept cached, other calls read). Calls without
breakpoints, failed calls, calls of unknown usage and the calls of providers that report no
cache writes (OpenAI before GPT-5.6, Gemini: their layers' sizes cannot be measured) are left
out.
The sizes are measured, not estimated: a trace made from a store replays through
:func:`~._simulate.simulate` with the counts the provider reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..types import CallMetrics
from ._trace import Layer, Trace, TraceCall

__all__ = ["trace_from_calls"]

# Each provider's (default, long) breakpoint TTL: a layer is written with the long one when
# its calls wrote only 1 h tokens (OpenAI reports no split: its default).
_TTLS = {"anthropic": ("5m", "1h"), "bedrock": ("5m", "1h"), "openai": ("30m", "30m")}


def trace_from_calls(calls: Iterable[CallMetrics], left_out: Counter[str] | None = None) -> Trace:
    """A :class:`~._trace.Trace` of recorded calls (see the module). ``left_out`` (when given)
    counts, per flow, the calls of providers that report no cache writes."""
    kept = []
    for m in calls:
        if not m.breakpoint_ids or not m.usage_known or m.error is not None:
            continue
        if not m.writes_reported:
            if left_out is not None:
                left_out[m.flow] += 1
            continue
        kept.append(m)
    kept.sort(key=lambda m: m.timestamp)
    size: dict[str, int] = {}
    seen: set[str] = set()
    latest: dict[tuple[str, int], str] = {}  # (flow, size): the latest call's last breakpoint of that size
    for m in kept:
        ids = m.breakpoint_ids
        last = ids[-1]
        measured = m.cache_read_tokens + m.cache_write_tokens
        if measured > size.get(last, 0):
            size[last] = measured
        read = m.cache_read_tokens
        if read and read < measured:
            parent = latest.get((m.flow, read))
            if parent is None or parent in ids:
                # It read through one of its inner breakpoints: the deepest one an earlier call had
                # (not an earlier call's prefix found by the lookback: that one has the read's size).
                inner = next((bp for bp in reversed(ids[:-1]) if bp in seen), None)
                if inner is not None and inner not in size:
                    size[inner] = read
        seen.update(ids)
        latest[(m.flow, measured)] = last
    # A layer written at 1 h: the provider bills the writes of each span at the TTL of the
    # breakpoint that ends it, and 1 h spans come first, so the first cache_write_1h_tokens of
    # what a call wrote end at its 1 h breakpoints.
    hour: dict[str, bool] = {}
    for m in kept:
        if not m.cache_write_tokens:
            continue
        start = m.cache_read_tokens
        one_hour_end = start + m.cache_write_1h_tokens
        for bp in m.breakpoint_ids:
            through = size.get(bp)
            if through is None or through <= start:
                continue
            hour[bp] = hour.get(bp, True) and through <= one_hour_end
    out: list[TraceCall] = []
    paths: dict[str, tuple[Layer, ...]] = {}  # each breakpoint id: the layers through it
    recent: dict[tuple[str, int], str] = {}  # (flow, size): the latest id of that size
    for m in kept:
        layers: list[Layer] = []
        before = 0
        short, long = _TTLS.get(m.provider, ("5m", "1h"))
        for bp in m.breakpoint_ids:
            through = size.get(bp)
            if through is None or through <= before:
                continue  # unmeasured (merged into the next layer) or empty
            layers.append(Layer(bp, through - before, long if hour.get(bp) else short))
            before = through
        if not layers:
            continue
        read = m.cache_read_tokens
        if (
            read
            and read < before
            and all(sum(x.tokens for x in layers[: k + 1]) != read for k in range(len(layers)))
        ):
            # It read an entry that is none of its own breakpoints: an earlier call's (the
            # conversation's previous turn, found by the provider's lookback). That call's
            # layers come first; this call's own add what follows them.
            parent = recent.get((m.flow, read))
            if parent is not None:
                own_last = layers[-1]
                layers = [*paths[parent], Layer(own_last.key, before - read, own_last.ttl)]
        last_id = layers[-1].key
        paths.setdefault(last_id, tuple(layers))
        own = set(m.breakpoint_ids)  # (an earlier call's breakpoint is not marked in this one)
        layers = [x if x.key in own else x._replace(ttl=None) for x in paths[last_id]]
        recent[(m.flow, before)] = last_id
        total = m.input_tokens + m.cache_read_tokens + m.cache_write_tokens
        out.append(
            TraceCall(
                timestamp=m.timestamp,
                flow=m.flow,
                provider=m.provider,
                model=m.model,
                layers=tuple(layers),
                input_tokens=max(0, total - before),
                output_tokens=m.output_tokens,
                warm=m.warm,
                # (a response's writes are readable once it starts: its elapsed time is the
                # nearest recorded bound, and parallel twins must not read each other's writes)
                ttft_s=None if m.elapsed_ms is None else m.elapsed_ms / 1000.0,
            )
        )
    return Trace(out)
