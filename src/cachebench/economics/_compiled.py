"""A trace compiled once for :func:`~._simulate.simulate` and :func:`~._advise.advise`: each
call as a :class:`Row` of interned prefix ids, cumulative tokens and block positions.

:func:`compile_trace` reads a trace file straight into rows (one ``orjson.loads`` a line and a
check of the usual shapes; a line the check does not pass goes through
:func:`~._trace.trace_call`, which names what is wrong with it), or compiles a
:class:`~._trace.Trace` or calls already in memory. Rows come in time order (stable).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..cachemodel._rules import min_tokens
from ..importing import ImportFileError, _open, json_lines
from ..planner._saved import _MAX_TIMESTAMP
from ._rates import Rates
from ._trace import _FIELDS, _TTLS, Trace, TraceCall, TraceError, read_trace, trace_call, usual_layer

__all__ = ["Compiled", "Row", "compile_trace"]

_MAX_SHAPES = 1 << 18  # distinct layer lists remembered while compiling


@dataclass(slots=True)
class Row:
    """One call, compiled."""

    t: float
    flow: int
    family: str
    model: str
    rates: Rates
    minimum: int
    chain: tuple[int, ...]  # the prefix id through each layer
    cum: tuple[int, ...]  # tokens through each layer
    pos: tuple[int, ...]  # the block position of each layer's last block
    ttls: tuple[str | None, ...]
    keys: tuple[str, ...]
    blocks: tuple[int, ...]
    tail: int
    out: int
    total: int  # all its input: the layers and the tail
    ttft: float
    scope: str
    warm: bool


@dataclass(slots=True)
class Compiled:
    rows: list[Row]
    flows: dict[str, int] = field(default_factory=dict)  # each flow's id
    skipped: list[str] = field(default_factory=list)  # (unpriced_ok) the flows left out, and why

    @property
    def flow_names(self) -> dict[int, str]:
        return {i: name for name, i in self.flows.items()}


class _Builder:
    def __init__(
        self,
        model: str | None,
        prices: Mapping[str, Mapping[str, float]] | None,
        ttft_s: float,
        unpriced_ok: bool = False,
    ) -> None:
        self.model = model
        self.unpriced_ok = unpriced_ok
        self.skipped: dict[str, str] = {}
        self.prices = prices
        self.ttft_s = ttft_s
        self.ids: dict[Any, int] = {}
        self.sizes: dict[int, tuple[int, int]] = {}
        self.flows: dict[str, int] = {}
        self.rates: dict[tuple[str, str], tuple[Rates, int]] = {}
        self.rows: list[Row] = []
        self.shapes: dict[Any, Any] = {}
        self.in_order = True
        self.last_t = -math.inf

    def add(
        self,
        where: str,
        t: float,
        flow: str,
        provider: str,
        model: str | None,
        scope: str,
        layers: tuple[tuple[str, int, str | None, int], ...],
        tail: int,
        out: int,
        ttft_s: float | None,
        warm: bool,
    ) -> None:
        name = model or self.model
        if name is None:
            if self.unpriced_ok:
                self.skipped.setdefault(flow, f"{flow}: its calls name no model (give model=)")
                return
            raise ValueError(f"{where}: the call names no model: give the trace's lines a model, or model=")
        mkey = (provider, name)
        priced = self.rates.get(mkey)
        if priced is None:
            try:
                rates = Rates.for_model(name, provider, when=t, prices=self.prices)
            except ValueError as exc:
                if not self.unpriced_ok:
                    raise ValueError(f"{where}: {exc}") from None
                self.skipped.setdefault(flow, f"{flow}: {exc}")
                return
            priced = self.rates[mkey] = (rates, min_tokens(provider, name))
        memo_key = (provider, name, scope, layers)
        shape = self.shapes.get(memo_key)
        if shape is None:
            shape = self.shapes[memo_key] = self._shape(where, provider, name, scope, layers)
        if t < self.last_t:
            self.in_order = False
        self.last_t = t
        chain, cum, pos, ttls, keys, blocks_of = shape
        self.rows.append(
            Row(
                t,
                self.flows.setdefault(flow, len(self.flows)),
                provider,
                name,
                priced[0],
                priced[1],
                chain,
                cum,
                pos,
                ttls,
                keys,
                blocks_of,
                tail,
                out,
                (cum[-1] if cum else 0) + tail,
                self.ttft_s if ttft_s is None else ttft_s,
                scope,
                warm,
            )
        )

    def _shape(
        self,
        where: str,
        provider: str,
        name: str,
        scope: str,
        layers: tuple[tuple[str, int, str | None, int], ...],
    ) -> Any:
        """A call's prefix ids, cumulative tokens, block positions, TTLs, keys and block counts
        (the same for every call with the same layers: made once)."""
        ids = self.ids
        sizes = self.sizes
        h = ids.setdefault((provider, name, scope), len(ids))
        chain, cum, pos, ttls, keys, blocks_of = [], [], [], [], [], []
        total, blocks = 0, -1
        for key, tokens, ttl, nblocks in layers:
            h = ids.setdefault((h, key), len(ids))
            size = sizes.setdefault(h, (tokens, nblocks))
            if size[0] != tokens or size[1] != nblocks:
                raise TraceError(
                    f"{where}: layer {key!r} has {tokens:,} tokens in {_blocks(nblocks)}, after the same"
                    f" layers an earlier call had {size[0]:,} in {_blocks(size[1])}: a key names one content"
                    " (give changed content a key of its own)"
                )
            total += tokens
            blocks += nblocks
            chain.append(h)
            cum.append(total)
            pos.append(blocks)
            ttls.append(ttl)
            keys.append(key)
            blocks_of.append(nblocks)
        if len(self.shapes) > _MAX_SHAPES:
            self.shapes.clear()  # (memory stays bounded; the next calls make theirs again)
        return tuple(chain), tuple(cum), tuple(pos), tuple(ttls), tuple(keys), tuple(blocks_of)

    def add_call(self, where: str, c: TraceCall) -> None:
        self.add(
            where,
            c.timestamp,
            c.flow,
            c.provider,
            c.model,
            c.scope,
            tuple([(x.key, x.tokens, x.ttl, x.blocks) for x in c.layers]),
            c.input_tokens,
            c.output_tokens,
            c.ttft_s,
            c.warm,
        )

    def add_object(self, where: str, obj: Any) -> None:
        """A trace line's object: the usual shapes checked here, anything else by trace_call."""
        if type(obj) is dict and obj.keys() <= _FIELDS:
            t: Any = obj.get("timestamp")
            flow = obj.get("flow", "default")
            provider = obj.get("provider", "anthropic")
            model = obj.get("model")
            scope = obj.get("scope", "")
            layers = obj.get("layers", [])
            tail = obj.get("input_tokens", 0)
            out = obj.get("output_tokens", 0)
            ttft = obj.get("ttft_ms")
            warm = obj.get("warm", False)
            allowed = _TTLS.get(provider)
            if (
                type(t) in (int, float)
                and -_MAX_TIMESTAMP < t < _MAX_TIMESTAMP
                and type(flow) is str
                and flow
                and allowed is not None
                and (model is None or (type(model) is str and model))
                and type(scope) is str
                and type(layers) is list
                and type(tail) is int
                and tail >= 0
                and type(out) is int
                and out >= 0
                and ttft is None
                and type(warm) is bool
            ):
                try:
                    parsed = tuple(
                        [(x["key"], x["tokens"], x.get("ttl"), x.get("blocks", 1)) for x in layers]
                    )
                except (TypeError, KeyError, AttributeError):
                    parsed = None
                if parsed is not None and (
                    (provider, model or self.model, scope, parsed) in self.shapes
                    or all(usual_layer(x, *p, allowed) for x, p in zip(layers, parsed, strict=True))
                ):
                    self.add(where, float(t), flow, provider, model, scope, parsed, tail, out, None, warm)
                    return
        self.add_call(where, trace_call(obj, where))

    def done(self) -> Compiled:
        if not self.in_order:
            self.rows.sort(key=lambda r: r.t)
        return Compiled(self.rows, self.flows, skipped=list(self.skipped.values()))


def _blocks(n: int) -> str:
    return "1 block" if n == 1 else f"{n} blocks"


def compile_trace(
    source: Compiled | Trace | str | os.PathLike[str] | Iterable[TraceCall | Mapping[str, Any]],
    *,
    model: str | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    ttft_s: float = 0.0,
    unpriced_ok: bool = False,
) -> Compiled:
    """``source`` (a trace file, a :class:`~._trace.Trace`, calls) compiled (see the module);
    :class:`~._trace.TraceError` names the line (or call) that is not a trace call. A call
    without a model or prices raises ``ValueError``; with ``unpriced_ok`` its flow is left out
    and named in :attr:`Compiled.skipped`."""
    if isinstance(source, Compiled):
        return source
    builder = _Builder(model, prices, ttft_s, unpriced_ok)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            f = _open(path)
        except ImportFileError as exc:
            raise TraceError(str(exc)) from None
        loads = orjson.loads
        with f:
            try:
                for number, _, raw in json_lines(path, f):
                    try:
                        obj = loads(raw)
                    except orjson.JSONDecodeError as exc:
                        raise TraceError(f"{path}:{number}: not JSON ({exc})") from None
                    builder.add_object(f"{path}:{number}", obj)
            except ImportFileError as exc:
                raise TraceError(str(exc)) from None
        return builder.done()
    trace = read_trace(source)
    for i, c in enumerate(trace.calls):
        builder.add_call(f"trace call {i} (at {c.timestamp})", c)
    return builder.done()
