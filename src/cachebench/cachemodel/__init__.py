"""Provider prompt-cache semantics as a pure state machine (the emulator is built on it).

:mod:`._model` is the state machine (:class:`CacheModel` and its request and result types);
:mod:`._rules` validates a request and places its breakpoints from :mod:`cachebench.facts`.
"""

from __future__ import annotations

from ._layers import LayerCache
from ._model import MAX_MISS_GENERATORS, CacheModel, CacheRequest, CacheResult, Knobs, Segment
from ._rules import CacheRuleError

__all__ = [
    "MAX_MISS_GENERATORS",
    "CacheModel",
    "CacheRequest",
    "CacheResult",
    "CacheRuleError",
    "Knobs",
    "LayerCache",
    "Segment",
]
