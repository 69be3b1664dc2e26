"""Traces for :func:`~cachebench.economics.simulate` and :func:`~cachebench.economics.advise`:
calls as their cached layers' sizes, not their text.

One call per JSON Lines line (plain or gzip)::

    {"timestamp": 1767225600.5, "flow": "support", "user": "c-017", "model": "claude-opus-4-5",
     "layers": [{"key": "system@v3", "tokens": 2500, "ttl": "1h"},
                {"key": "customer/c-017", "tokens": 800, "ttl": "5m"},
                {"key": "session/s-91/turn-1", "tokens": 650, "blocks": 2, "ttl": "5m"}],
     "input_tokens": 120, "output_tokens": 400}

* ``layers``: the prompt's cacheable runs of blocks, in cache order. ``key`` names a layer's
  content: two calls whose layers have the same keys up to a depth send the same bytes up to
  it (a prefix is the run of keys, so ``turn-2`` after ``turn-1`` extends that conversation).
  ``tokens`` its size; ``ttl`` the breakpoint on its last block today (null or absent: none);
  ``blocks`` how many blocks it has (1; the provider's lookback counts blocks).
* ``input_tokens``: input after the layers (the newest turn), ``output_tokens`` the reply.
* ``timestamp`` (epoch seconds or ISO 8601) is required; ``flow`` (default ``"default"``),
  ``user``, ``provider`` (default ``"anthropic"``), ``model`` (or ``simulate(model=)``),
  ``scope`` (an API key: caches never cross one), ``ttft_ms`` (when the response started;
  a cache entry is readable from then), ``warm`` (a warm call) are optional.

A line that is not such a call raises :class:`TraceError` naming the file and line; nothing is
simulated from a trace with an error in it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import orjson

from .. import facts
from ..importing import ImportFileError, _open, json_lines
from ..planner._saved import ReplayError, parse_timestamp

__all__ = ["Layer", "Trace", "TraceCall", "TraceError", "read_trace"]

_PROVIDERS = ("anthropic", "openai", "bedrock", "gemini")
_TTLS = {p: frozenset(facts.BREAKPOINT_TTLS.get(p, ())) for p in _PROVIDERS}
_LAYER_KEYS = frozenset({"key", "tokens", "ttl", "blocks"})
_FIELDS = frozenset(
    {
        "timestamp",
        "flow",
        "user",
        "provider",
        "model",
        "scope",
        "layers",
        "input_tokens",
        "output_tokens",
        "ttft_ms",
        "warm",
    }
)


class TraceError(ValueError):
    """A trace that cannot be simulated: which file and line, and why."""


class Layer(NamedTuple):
    key: str
    tokens: int
    ttl: str | None = None
    blocks: int = 1


class TraceCall(NamedTuple):
    """One call of a trace (see the module)."""

    timestamp: float
    flow: str
    provider: str
    model: str | None
    layers: tuple[Layer, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    user: str | None = None
    scope: str = ""
    ttft_s: float | None = None
    warm: bool = False

    @property
    def cached_tokens(self) -> int:
        return sum(layer.tokens for layer in self.layers)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"timestamp": self.timestamp, "flow": self.flow, "provider": self.provider}
        if self.model is not None:
            out["model"] = self.model
        if self.user is not None:
            out["user"] = self.user
        if self.scope:
            out["scope"] = self.scope
        out["layers"] = [
            {
                "key": x.key,
                "tokens": x.tokens,
                "ttl": x.ttl,
                **({"blocks": x.blocks} if x.blocks != 1 else {}),
            }
            for x in self.layers
        ]
        out["input_tokens"] = self.input_tokens
        out["output_tokens"] = self.output_tokens
        if self.ttft_s is not None:
            out["ttft_ms"] = self.ttft_s * 1000.0
        if self.warm:
            out["warm"] = True
        return out


def _count(where: str, name: str, value: Any, *, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise TraceError(f"{where}: {name} must be a whole number >= {least}, got {value!r}")
    return value


def _timestamp(where: str, value: Any) -> float:
    try:
        return parse_timestamp(value)
    except ReplayError as exc:
        raise TraceError(f"{where}: {exc}") from None


def _text(where: str, obj: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise TraceError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value


def usual_layer(
    value: dict[str, Any], key: Any, tokens: Any, ttl: Any, blocks: Any, allowed: frozenset[str]
) -> bool:
    """Whether a layer object (``value``, its fields already read) is the usual shape, checked in
    one go: anything else goes through :func:`_layer`'s checks, which say what is wrong."""
    return bool(
        value.keys() <= _LAYER_KEYS
        and type(key) is str
        and key
        and type(tokens) is int
        and tokens >= 0
        and type(blocks) is int
        and blocks >= 0
        and (ttl is None or ttl in allowed)
    )


def _layer(where: str, value: Any, provider: str) -> Layer:
    if type(value) is dict:
        key: Any
        tokens: Any
        key, tokens, ttl, blocks = (
            value.get("key"),
            value.get("tokens"),
            value.get("ttl"),
            value.get("blocks", 1),
        )
        if usual_layer(value, key, tokens, ttl, blocks, _TTLS[provider]):
            return Layer(key, tokens, ttl, blocks)
    if not isinstance(value, Mapping):
        raise TraceError(f"{where}: each layer must be an object with key and tokens, got {value!r}")
    key = value.get("key")
    if not isinstance(key, str) or not key:
        raise TraceError(f"{where}: a layer's key must be a non-empty string, got {key!r}")
    extra = sorted(set(value) - _LAYER_KEYS)
    if extra:
        raise TraceError(
            f"{where}: layer {key!r}: unknown field {extra[0]!r} (a layer has key, tokens, ttl, blocks)"
        )
    ttl = value.get("ttl")
    allowed = facts.BREAKPOINT_TTLS.get(provider, ())
    if ttl is not None and ttl not in allowed:
        choices = ", ".join(allowed) if allowed else "none (implicit caching)"
        raise TraceError(f"{where}: layer {key!r}: ttl {ttl!r} is not one of {provider}'s ({choices})")
    return Layer(
        key,
        _count(where, f"layer {key!r} tokens", value.get("tokens")),
        ttl,
        _count(where, f"layer {key!r} blocks", value.get("blocks", 1), least=0),
    )


def trace_call(obj: Any, where: str = "<trace>") -> TraceCall:
    """One trace line's object as a :class:`TraceCall`; :class:`TraceError` says what is wrong."""
    if not isinstance(obj, Mapping):
        raise TraceError(f"{where}: a trace line must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise TraceError(
            f"{where}: unknown field {unknown[0]!r} (a trace line has {', '.join(sorted(_FIELDS))})"
        )
    if "timestamp" not in obj:
        raise TraceError(f"{where}: no timestamp")
    provider = _text(where, obj, "provider", "anthropic")
    assert provider is not None
    if provider not in _PROVIDERS:
        raise TraceError(f"{where}: provider must be one of {', '.join(_PROVIDERS)}, got {provider!r}")
    layers = obj.get("layers", [])
    if not isinstance(layers, list):
        raise TraceError(f"{where}: layers must be a list, got {layers!r}")
    ttft = obj.get("ttft_ms")
    if ttft is not None and (
        isinstance(ttft, bool) or not isinstance(ttft, (int, float)) or not math.isfinite(ttft) or ttft < 0
    ):
        raise TraceError(f"{where}: ttft_ms must be a number >= 0, got {ttft!r}")
    warm = obj.get("warm", False)
    if not isinstance(warm, bool):
        raise TraceError(f"{where}: warm must be true or false, got {warm!r}")
    return TraceCall(
        timestamp=_timestamp(where, obj["timestamp"]),
        flow=_text(where, obj, "flow", "default") or "default",
        provider=provider,
        model=_text(where, obj, "model"),
        layers=tuple(_layer(where, x, provider) for x in layers),
        input_tokens=_count(where, "input_tokens", obj.get("input_tokens", 0)),
        output_tokens=_count(where, "output_tokens", obj.get("output_tokens", 0)),
        user=_text(where, obj, "user"),
        scope=_text(where, obj, "scope", "") or "",
        ttft_s=None if ttft is None else ttft / 1000.0,
        warm=warm,
    )


class Trace:
    """The calls of a trace in time order (stable for equal timestamps)."""

    def __init__(self, calls: Iterable[TraceCall | Mapping[str, Any]]) -> None:
        if isinstance(calls, (Mapping, bytes)) or not isinstance(calls, Iterable):
            raise TypeError(
                "a trace is calls (TraceCall objects or dicts), a Trace or a JSON Lines path, got "
                f"{type(calls).__name__}"
            )
        made = [c if isinstance(c, TraceCall) else trace_call(c, f"call {i}") for i, c in enumerate(calls)]
        made.sort(key=lambda c: c.timestamp)
        self.calls: list[TraceCall] = made

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[TraceCall]:
        return iter(self.calls)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Trace:
        """A trace from a JSON Lines file (plain or gzip)."""
        return cls(_read_lines(os.fspath(path)))

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the trace as JSON Lines."""
        with open(path, "wb") as f:
            for call in self.calls:
                f.write(orjson.dumps(call.as_dict()) + b"\n")


def line_call(raw: bytes, where: str) -> TraceCall:
    """One line of a trace file as a :class:`TraceCall`; :class:`TraceError` names ``where``
    and says what is wrong (for a line that is not JSON, where in the line: orjson's own line
    and character counts would be of the text it was given)."""
    try:
        obj = orjson.loads(raw.rstrip(b"\r\n"))
    except orjson.JSONDecodeError as exc:
        raise TraceError(f"{where}: not JSON: {exc.msg} at column {exc.colno}") from None
    return trace_call(obj, where)


def _read_lines(path: str) -> Iterator[TraceCall]:
    try:
        f = _open(path)
    except ImportFileError as exc:
        raise TraceError(str(exc)) from None
    with f:
        try:
            for number, _, raw in json_lines(path, f):
                yield line_call(raw, f"{path}:{number}")
        except ImportFileError as exc:
            raise TraceError(str(exc)) from None


def read_trace(trace: Trace | str | os.PathLike[str] | Iterable[TraceCall | Mapping[str, Any]]) -> Trace:
    """A :class:`Trace` from a trace, a path, or calls (objects or dicts)."""
    if isinstance(trace, Trace):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        return Trace.read(trace)
    return Trace(trace)
