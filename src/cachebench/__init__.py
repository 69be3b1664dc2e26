"""cachebench: prompt-cache observability for LLM apps.

Wrap the SDK calls an app already makes and see, per call, what the provider's prompt
cache read, wrote, cost and saved, grouped by the cacheable prefix each call tried to hit.

``__all__`` holds what users call or receive. ``fingerprint`` is the submodule
:mod:`cachebench.fingerprint`, which is callable: ``cachebench.fingerprint(...)`` returns a
prefix id, and ``cachebench.fingerprint.key`` and the rest stay reachable. The value types
the tracker uses inside (``Usage``, ``Cost``, ``PrefixKey``) are in :mod:`cachebench.types`.
"""

import typing as _typing

from ._flow import flow
from ._lazy import lazy_names as _lazy_names
from .advice import explain
from .policy import CachePolicy
from .tracker import CacheTracker
from .types import CallMetrics, PrefixDiff, Provider, Regression

if _typing.TYPE_CHECKING:
    # Type checkers do not follow the module's callable class: to them the name is the function.
    from .economics import CacheWarmer, advise, simulate
    from .fingerprint import fingerprint
    from .planner import Finding, Plan, Traffic, apply, lint, plan
else:
    from . import fingerprint

# The planner's names are imported when first asked for (``import cachebench`` stays light).
_PLANNER = frozenset({"Finding", "Plan", "Traffic", "apply", "lint", "plan"})
# So are the economics' (advice, what-if simulation, the cache warmer).
_ECONOMICS = frozenset({"CacheWarmer", "advise", "simulate"})
__getattr__ = _lazy_names(
    __name__, {**dict.fromkeys(_PLANNER, ".planner"), **dict.fromkeys(_ECONOMICS, ".economics")}
)


def __dir__() -> list[str]:
    return sorted({*globals(), *_PLANNER, *_ECONOMICS})


__all__ = [
    "CachePolicy",
    "CacheTracker",
    "CacheWarmer",
    "CallMetrics",
    "Finding",
    "Plan",
    "PrefixDiff",
    "Provider",
    "Regression",
    "Traffic",
    "advise",
    "apply",
    "explain",
    "fingerprint",
    "flow",
    "lint",
    "plan",
    "simulate",
]

__version__ = "0.2.0.dev0"
