"""cachebench: prompt-cache observability for LLM apps.

Wrap the SDK calls an app already makes and see, per call, what the provider's prompt
cache read, wrote, cost and saved, grouped by the cacheable prefix each call tried to hit.
"""

from __future__ import annotations

from ._flow import flow
from ._public import fingerprint
from .policy import CachePolicy
from .tracker import CacheTracker
from .types import CallMetrics, Cost, PrefixDiff, PrefixKey, Provider, Regression, Usage

__all__ = [
    "CachePolicy",
    "CacheTracker",
    "CallMetrics",
    "Cost",
    "PrefixDiff",
    "PrefixKey",
    "Provider",
    "Regression",
    "Usage",
    "fingerprint",
    "flow",
]

__version__ = "0.2.0.dev0"
