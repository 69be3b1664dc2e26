"""Caching as an investment: what a request costs cold, warm and uncached, when a write pays for
itself, a conversation's and a month's bill, what a warmer is worth (:mod:`._cost`), and what a
trace would have cost under other strategies (:func:`simulate`), and a warmer that keeps a
prefix cached while that pays (:class:`CacheWarmer`).

Prices come from genai-prices on a given date (:meth:`Rates.for_model`) or are given
(:class:`Rates`, USD per million tokens). Every figure is computed from them.
"""

from __future__ import annotations

from ._advise import Advice, FlowAdvice, LayerAdvice, WarmingAdvice, advise
from ._cost import (
    WARM_INPUT_TOKENS,
    WARM_OUTPUT_TOKENS,
    BreakEven,
    ConversationTurn,
    Projection,
    RequestCost,
    WarmerValue,
    Workload,
    break_even,
    conversation,
    live_probability,
    monthly,
    reads_per_write,
    request_cost,
    warmer_value,
)
from ._observed import trace_from_calls
from ._rates import Rates
from ._requests import plans_for_requests, trace_from_requests
from ._simulate import DEFAULT_STRATEGIES, Simulation, Strategy, StrategyResult, simulate
from ._trace import Layer, Trace, TraceCall, TraceError
from ._warm_request import warm_request
from ._warmer import CacheWarmer, WarmerStats

__all__ = [
    "DEFAULT_STRATEGIES",
    "WARM_INPUT_TOKENS",
    "WARM_OUTPUT_TOKENS",
    "Advice",
    "BreakEven",
    "CacheWarmer",
    "ConversationTurn",
    "FlowAdvice",
    "Layer",
    "LayerAdvice",
    "Projection",
    "Rates",
    "RequestCost",
    "Simulation",
    "Strategy",
    "StrategyResult",
    "Trace",
    "TraceCall",
    "TraceError",
    "WarmerStats",
    "WarmerValue",
    "WarmingAdvice",
    "Workload",
    "advise",
    "break_even",
    "conversation",
    "live_probability",
    "monthly",
    "plans_for_requests",
    "reads_per_write",
    "request_cost",
    "simulate",
    "trace_from_calls",
    "trace_from_requests",
    "warm_request",
    "warmer_value",
]
