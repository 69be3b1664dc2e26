"""Before it costs money: lint rules, breakpoint plans and offline explain.

Pure functions over the parsed prompt and the cache model; nothing here wraps a call.

- :func:`lint` (:mod:`.rules`): findings from one table of rules (code, title, why, fix);
- :func:`plan` and :func:`apply` (:mod:`.placement`): layer boundaries and breakpoint placement
  from sample requests, and the same request with the markers set;
- :func:`explain_requests` (:mod:`.offline`): saved request bodies replayed through the cache
  model and the tracker's own diagnosis;
- :func:`first_difference` (:mod:`.stability`): where builds of one request stop sharing their
  cached prefix (the CI gate's check);
- :func:`find_volatile` (:mod:`.volatile`): values in one text that change between requests
  (dates, times, epoch stamps, UUIDs, request ids, counters).

Submodules are imported when a name is first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .offline import CauseSummary, OfflineReport, OfflineRow, explain_requests
    from .placement import Layer, Plan, PlannedBreakpoint, Traffic, apply, plan
    from .rules import RULES, Finding, Rule, lint
    from .stability import Instability, first_difference
    from .volatile import Volatile, find_volatile

__all__ = [
    "RULES",
    "CauseSummary",
    "Finding",
    "Instability",
    "Layer",
    "OfflineReport",
    "OfflineRow",
    "Plan",
    "PlannedBreakpoint",
    "Rule",
    "Traffic",
    "Volatile",
    "apply",
    "explain_requests",
    "find_volatile",
    "first_difference",
    "lint",
    "plan",
]

_HOMES = {
    "RULES": "rules",
    "Finding": "rules",
    "Rule": "rules",
    "lint": "rules",
    "Plan": "placement",
    "PlannedBreakpoint": "placement",
    "Traffic": "placement",
    "apply": "placement",
    "plan": "placement",
    "OfflineReport": "offline",
    "OfflineRow": "offline",
    "CauseSummary": "offline",
    "Layer": "placement",
    "Instability": "stability",
    "first_difference": "stability",
    "explain_requests": "offline",
    "Volatile": "volatile",
    "find_volatile": "volatile",
}


__getattr__ = lazy_names(__name__, {name: f".{home}" for name, home in _HOMES.items()})
