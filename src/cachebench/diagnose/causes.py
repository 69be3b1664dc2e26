"""Why a call missed: the one place a call's ``miss_cause`` is decided.

A cause is decided in two steps, and only here:

1. :func:`miss_cause`, as the call finishes, from the cache view (:mod:`cachebench.expect`):
   what the call read against what the view expected of it, whether a twin was writing the
   same prefix when it went out (``concurrent``), and, for a shortfall the view cannot
   explain, whether the entry had expired by the call's time plus the clocks' margin
   (``TTL_CLOCK_MARGIN_S``) and its duration (``ttl_expired``, not ``provider``).
2. :func:`refine_cause`, the second and last step, with what the call's flow knows: it is
   called from :meth:`cachebench.diagnose.regressions.FlowDetector.observe`, which gathers
   the flow's facts (its previous model, whether the first layer it wrote anew is a change of
   a shared or churning layer, whether the caller's key order changed) and returns the
   refined cause (``model_changed``, ``prefix_changed``, ``serialization_changed``).

Causes, and what makes them (the design's *Expected hit*): ``cold`` (never seen), ``ttl_expired``
(seen, but longer ago than its TTL), ``below_minimum`` (marked, but shorter than the model's
minimum), ``concurrent`` (a twin was writing the same prefix in flight), ``prefix_changed``,
``serialization_changed``, ``model_changed`` and ``provider`` (identical bytes, within TTL,
still missed: the only one that is an unexpected miss).
"""

from __future__ import annotations

from collections.abc import Callable

from ..expect import EXPIRED, NEVER, CacheView, Expectation
from ..facts import TTL_CLOCK_MARGIN_S
from ..types import MissCause, PrefixKey, Usage
from .thresholds import ESTIMATE_SHORTFALL

__all__ = ["miss_cause", "refine_cause"]


def miss_cause(
    view: CacheView,
    key: PrefixKey,
    usage: Usage,
    exp: Expectation,
    *,
    implicit: bool,
    tolerance: int,
    min_tokens: int,
    concurrent: bool,
    timestamp: float,
    elapsed_ms: float | None,
) -> tuple[bool, MissCause | None]:
    """(unexpected_miss, miss_cause) of a finished call (step 1).

    ``exp`` is what ``view`` expected when the call went out; ``tolerance`` the shortfall the
    provider's rounding allows; ``min_tokens`` the model's minimum cacheable prefix (implicit
    caching stores nothing shorter); ``concurrent`` whether a twin was writing the same prefix
    when the call went out. ``view`` is read only for a ``provider`` miss; like every other
    part of the analysis, this runs on the tracker's consumer thread, the view's only writer.
    """
    unexpected, cause = _view_cause(key, usage, exp, implicit, tolerance, min_tokens)
    if concurrent and cause in ("cold", "ttl_expired"):
        return unexpected, "concurrent"  # an expected write, like a twin of a cold prefix
    if cause == "provider":
        # Looked at again as of the end of the margin the clocks and the call's duration
        # allow: if what the call was expected to read had expired by then, the miss is an
        # expected one.
        late = timestamp + TTL_CLOCK_MARGIN_S + (elapsed_ms or 0.0) / 1000.0
        if usage.cache_read_tokens + tolerance >= view.expect(key, implicit, late).tokens:
            return False, "ttl_expired"
        return True, "provider"
    return unexpected, cause


def _view_cause(
    key: PrefixKey, usage: Usage, exp: Expectation, implicit: bool, tolerance: int, min_tokens: int
) -> tuple[bool, MissCause | None]:
    """(unexpected_miss, miss_cause) from what the view expected and what the call read."""
    if not usage.known or key.prefix_id is None or not key.breakpoints:
        return False, None
    read = usage.cache_read_tokens
    # An estimated size (a byte share) may be off either way: only a large shortfall is a miss
    # then. A measured size is exact up to the provider's rounding.
    if read + tolerance < exp.tokens and (exp.measured or read < ESTIMATE_SHORTFALL * exp.tokens):
        return True, "provider"
    if implicit or not usage.writes_reported:
        if exp.tokens == 0 and read == 0:
            total = usage.total_input_tokens
            if implicit and 0 < total < min_tokens:
                return False, "below_minimum"
            states = exp.breakpoint_states
            if states and states[-1] == EXPIRED:
                return False, "ttl_expired"
            return False, "cold" if total else None
        return False, None
    if read + usage.cache_write_tokens == 0:
        return False, "below_minimum"
    if usage.cache_write_tokens == 0:
        return False, None
    for state in exp.breakpoint_states:
        if state == NEVER:
            return False, "cold"
        if state == EXPIRED:
            return False, "ttl_expired"
    return False, "provider"


def refine_cause(
    cause: MissCause | None,
    *,
    model_switched: bool,
    layer_changed: bool,
    reordered: Callable[[], bool],
) -> MissCause | None:
    """The cause refined with what the call's flow knows (step 2, the last).

    ``model_switched``: the call's first layer was not served, and the flow's previous call
    used another model (caches are per model). ``layer_changed``: the first layer the call
    wrote anew differs from the flow's previous call there, and that layer is the flow's
    shared first layer or one that churns. ``reordered``: asked only of a ``provider`` miss,
    whether the caller's key order changed under identical content.
    """
    if cause in ("cold", "ttl_expired", "provider"):
        if model_switched:
            cause = "model_changed"
        elif layer_changed and cause == "cold":
            cause = "prefix_changed"
    if cause == "provider" and reordered():
        cause = "serialization_changed"
    return cause
