"""A trace compiled once for :func:`~._simulate.simulate` and :func:`~._advise.advise`: a
column per field of its calls (time, flow, input and output tokens, ...) and, for each call,
the :class:`Shape` it shares with every call of the same model, scope and layers (interned
prefix ids, cumulative tokens, block positions, TTLs). :attr:`Compiled.rows` gives the calls
as :class:`Row` objects, made when first asked for.

:func:`compile_trace` reads a trace file straight into columns: each line decoded and checked
at once by msgspec against the usual shape of a trace line (:class:`_Line`); a line that is not
of that shape goes through ``orjson`` and :func:`~._trace.trace_call`, which names what is
wrong with it. It also compiles a :class:`~._trace.Trace` or calls already in memory. Calls
come in time order (stable).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from ..cachemodel._rules import min_tokens
from ..importing import ImportFileError, _open
from ..planner._saved import _BOM, _MAX_TIMESTAMP
from ._rates import Rates
from ._trace import (
    _FIELDS,
    _TTLS,
    Trace,
    TraceCall,
    TraceError,
    line_call,
    read_trace,
)

__all__ = ["Compiled", "Row", "Shape", "compile_trace"]

_MAX_SHAPES = 1 << 18  # distinct layer lists remembered while compiling
_CHUNK = 1 << 22  # bytes of a trace file read at a time
# Counts past int64 go through orjson and trace_call (which take them up to 2**64 - 1; orjson
# reads a larger whole number as a float, which trace_call refuses).
_LARGEST = (1 << 63) - 1


@dataclass(frozen=True, slots=True, eq=False)
class Shape:
    """What every call with the same provider, model, scope and layers shares."""

    family: str
    model: str
    rates: Rates
    minimum: int
    scope: str
    chain: tuple[int, ...]  # the prefix id through each layer
    cum: tuple[int, ...]  # tokens through each layer
    pos: tuple[int, ...]  # the block position of each layer's last block
    ttls: tuple[str | None, ...]
    keys: tuple[str, ...]
    blocks: tuple[int, ...]

    @property
    def layer_tokens(self) -> int:
        return self.cum[-1] if self.cum else 0

    @property
    def reach(self) -> int:
        """The first layer whose prefix reaches the model's minimum (the number of layers when
        none does): a breakpoint before it is never cached."""
        return next((k for k, c in enumerate(self.cum) if c >= self.minimum), len(self.cum))


@dataclass(slots=True)
class Row:
    """One call, compiled: what is its own, and its :class:`Shape`."""

    t: float
    flow: int
    shape: Shape
    tail: int
    out: int
    ttft: float
    warm: bool


class Compiled:
    """A compiled trace: the calls' columns, in time order, and the shapes they share."""

    __slots__ = (
        "_rows",
        "arrays",
        "derived",
        "flow",
        "flows",
        "out",
        "shape",
        "shapes",
        "skipped",
        "t",
        "tail",
        "ttft",
        "warm",
    )

    def __init__(
        self,
        shapes: list[Shape],
        t: list[float],
        shape: list[int],
        flow: list[int],
        tail: list[int],
        out: list[int],
        ttft: list[float],
        warm: list[bool],
        flows: dict[str, int] | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        self.shapes = shapes
        self.t = t
        self.shape = shape  # each call's index in shapes
        self.flow = flow  # each call's flow id (flows)
        self.tail = tail
        self.out = out
        self.ttft = ttft
        self.warm = warm
        self.flows: dict[str, int] = {} if flows is None else flows  # each flow's id
        self.skipped: list[str] = (
            [] if skipped is None else skipped
        )  # (unpriced_ok) the flows left out, and why
        self._rows: list[Row] | None = None
        # What the column paths derive from the shapes, made once for the trace and its subsets,
        # and the calls' columns as arrays, made once for these calls.
        self.derived: dict[str, Any] = {}
        self.arrays: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.t)

    @property
    def flow_names(self) -> dict[int, str]:
        return {i: name for name, i in self.flows.items()}

    @property
    def rows(self) -> list[Row]:
        """The calls as :class:`Row` objects (made once, when first asked for)."""
        if self._rows is None:
            shapes = self.shapes
            self._rows = [
                Row(t, flow, shapes[s], tail, out, ttft, warm)
                for t, s, flow, tail, out, ttft, warm in zip(
                    self.t, self.shape, self.flow, self.tail, self.out, self.ttft, self.warm, strict=True
                )
            ]
        return self._rows

    def subset(self, indexes: Iterable[int]) -> Compiled:
        """The calls at ``indexes`` (in that order), with the same shapes and flows."""
        chosen = list(indexes)
        part = Compiled(
            self.shapes,
            [self.t[i] for i in chosen],
            [self.shape[i] for i in chosen],
            [self.flow[i] for i in chosen],
            [self.tail[i] for i in chosen],
            [self.out[i] for i in chosen],
            [self.ttft[i] for i in chosen],
            [self.warm[i] for i in chosen],
            self.flows,
            list(self.skipped),
        )
        part.derived = self.derived  # (the same shapes)
        return part


# The usual shape of a trace line, decoded and checked by msgspec in one go (the TTLs against the
# provider's are checked after it; msgspec refuses a number out of a double's range); a line of
# another shape, or one msgspec refuses, goes through trace_call, which says what is wrong with it.
class _LineLayer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    key: Annotated[str, msgspec.Meta(min_length=1)]
    tokens: Annotated[int, msgspec.Meta(ge=0, le=_LARGEST)]
    ttl: str | None = None
    blocks: Annotated[int, msgspec.Meta(ge=0, le=_LARGEST)] = 1


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    timestamp: Annotated[float, msgspec.Meta(gt=-_MAX_TIMESTAMP, lt=_MAX_TIMESTAMP)]
    flow: Annotated[str, msgspec.Meta(min_length=1)] = "default"
    user: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    provider: str = "anthropic"
    model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    scope: Annotated[str, msgspec.Meta(min_length=1)] = ""
    layers: tuple[_LineLayer, ...] = ()
    input_tokens: Annotated[int, msgspec.Meta(ge=0, le=_LARGEST)] = 0
    output_tokens: Annotated[int, msgspec.Meta(ge=0, le=_LARGEST)] = 0
    ttft_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    warm: bool = False


assert set(_Line.__struct_fields__) == _FIELDS  # (one list of a trace line's fields)
_decode_line = msgspec.json.Decoder(_Line).decode


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
        self.unpriced: dict[tuple[str, str], str] = {}  # (provider, model) -> why it has no prices
        self.shapes: list[Shape] = []
        self.memo: dict[Any, int] = {}  # (provider, model, scope, layers) -> index in shapes
        self.line_memo: dict[Any, int] = {}  # the same for a decoded line's fields
        self.t: list[float] = []
        self.shape: list[int] = []
        self.flow: list[int] = []
        self.tail: list[int] = []
        self.out: list[int] = []
        self.ttft: list[float] = []
        self.warm: list[bool] = []

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
    ) -> int | None:
        """One call; its shape's index (None: its flow is left out, unpriced)."""
        name = model or self.model
        if name is None:
            if self.unpriced_ok:
                self.skipped.setdefault(flow, f"{flow}: its calls name no model (give model=)")
                return None
            raise ValueError(f"{where}: the call names no model: give the trace's lines a model, or model=")
        memo_key = (provider, name, scope, layers)
        s = self.memo.get(memo_key)
        if s is None:
            mkey = (provider, name)
            priced = self.rates.get(mkey)
            if priced is None:
                why = self.unpriced.get(mkey)
                if why is None:
                    try:
                        rates = Rates.for_model(name, provider, when=t, prices=self.prices)
                    except ValueError as exc:
                        why = self.unpriced[mkey] = str(exc)
                if why is not None:
                    if not self.unpriced_ok:
                        raise ValueError(f"{where}: {why}") from None
                    self.skipped.setdefault(flow, f"{flow}: {why}")
                    return None
                priced = self.rates[mkey] = (rates, min_tokens(provider, name))
            if len(self.memo) > _MAX_SHAPES:
                # (the memo's keys stay bounded; a layer list met again gets a second Shape, alike)
                self.memo.clear()
                self.line_memo.clear()
            s = self.memo[memo_key] = len(self.shapes)
            self.shapes.append(self._shape(where, provider, name, scope, layers, *priced))
        self.append(t, s, flow, tail, out, ttft_s, warm)
        return s

    def append(
        self, t: float, s: int, flow: str, tail: int, out: int, ttft_s: float | None, warm: bool
    ) -> None:
        """One call of shape ``s``, in the columns."""
        self.t.append(t)
        self.shape.append(s)
        flows = self.flows
        found = flows.get(flow)
        self.flow.append(flows.setdefault(flow, len(flows)) if found is None else found)
        self.tail.append(tail)
        self.out.append(out)
        self.ttft.append(self.ttft_s if ttft_s is None else ttft_s)
        self.warm.append(warm)

    def _shape(
        self,
        where: str,
        provider: str,
        name: str,
        scope: str,
        layers: tuple[tuple[str, int, str | None, int], ...],
        rates: Rates,
        minimum: int,
    ) -> Shape:
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
        return Shape(
            provider,
            name,
            rates,
            minimum,
            scope,
            tuple(chain),
            tuple(cum),
            tuple(pos),
            tuple(ttls),
            tuple(keys),
            tuple(blocks_of),
        )

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

    def add_raw(self, path: str, number: int, raw: bytes) -> None:
        """Line ``number`` of a trace file, as read (the usual shapes decoded at once)."""
        try:
            line = _decode_line(raw)
        except msgspec.MsgspecError:
            line = None
        if line is not None:
            key = (line.provider, line.model, line.scope, line.layers)
            s = self.line_memo.get(key)
            ttft = line.ttft_ms
            if s is not None or self._usual(line):
                t = line.timestamp
                ttft_s = None if ttft is None else ttft / 1000.0
                if s is None:  # (a new shape: made, or refused with the line named, by add)
                    layers = tuple([(x.key, x.tokens, x.ttl, x.blocks) for x in line.layers])
                    s = self.add(
                        f"{path}:{number}",
                        t,
                        line.flow,
                        line.provider,
                        line.model,
                        line.scope,
                        layers,
                        line.input_tokens,
                        line.output_tokens,
                        ttft_s,
                        line.warm,
                    )
                    if s is not None:
                        self.line_memo[key] = s
                    return
                self.append(t, s, line.flow, line.input_tokens, line.output_tokens, ttft_s, line.warm)
                return
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw.strip():
            return
        where = f"{path}:{number}"
        self.add_call(where, line_call(raw, where))

    @staticmethod
    def _usual(line: _Line) -> bool:
        allowed = _TTLS.get(line.provider)
        return allowed is not None and all(x.ttl is None or x.ttl in allowed for x in line.layers)

    def read(self, path: str) -> None:
        """A trace file, a chunk of lines at a time."""
        try:
            f = _open(path)
        except ImportFileError as exc:
            raise TraceError(str(exc)) from None
        number = 0
        rest = b""
        with f:
            while True:
                try:
                    block = f.read(_CHUNK)
                except (OSError, EOFError, zlib.error) as exc:
                    after = f" after line {number}" if number else ""
                    raise TraceError(f"{path}: cannot be read{after} ({exc})") from None
                lines = (rest + block).split(b"\n")
                rest = lines.pop() if block else b""
                add_raw = self.add_raw
                for raw in lines:
                    number += 1
                    add_raw(path, number, raw)
                if not block:
                    break

    def done(self) -> Compiled:
        t = self.t
        columns: list[list[Any]] = [t, self.shape, self.flow, self.tail, self.out, self.ttft, self.warm]
        if any(t[i] < t[i - 1] for i in range(1, len(t))):
            order = sorted(range(len(t)), key=t.__getitem__)
            columns = [[column[i] for i in order] for column in columns]
        t, shape, flow, tail, out, ttft, warm = columns
        return Compiled(
            self.shapes, t, shape, flow, tail, out, ttft, warm, self.flows, list(self.skipped.values())
        )


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
        builder.read(os.fspath(source))
        return builder.done()
    trace = read_trace(source)
    for i, c in enumerate(trace.calls):
        builder.add_call(f"trace call {i} (at {c.timestamp})", c)
    return builder.done()
