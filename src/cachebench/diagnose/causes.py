"""Why a call missed: the one place a call's ``miss_cause`` is decided.

A cause is decided in two steps, and only here:

1. :func:`miss_cause`, as the call finishes, from the cache view (:mod:`cachebench.expect`):
   what the call read against what the view expected of it, whether a twin was writing the
   same prefix when it went out (``concurrent``), and, for a shortfall the view cannot
   explain, whether the entry had expired by the call's time plus the clocks' margin
   (``TTL_CLOCK_MARGIN_S``) and its duration (``ttl_expired``, not ``provider``).
2. :func:`refine_cause`, the second and last step, with what the call's flow knows: it is
   called from :meth:`cachebench.diagnose.regressions.FlowDetector.observe`, which gathers
   the flow's facts (its previous model; how the first layer the call wrote anew differs from
   the flow's nearest earlier prompt there, :mod:`cachebench.diagnose.prints`) and returns
   the refined cause (``model_changed``, ``prefix_changed``, ``serialization_changed``).
   :func:`avoidable` then says whether the miss was waste.

Causes, and what makes them (the design's *Expected hit*): ``cold`` (never seen), ``ttl_expired``
(seen, but longer ago than its TTL), ``below_minimum`` (marked, but shorter than the model's
minimum), ``concurrent`` (a twin was writing the same prefix in flight), ``prefix_changed``,
``serialization_changed``, ``model_changed`` and ``provider`` (identical bytes, within TTL,
still missed: the only one that is an unexpected miss).
"""

from __future__ import annotations

from ..expect import ALIVE, EXPIRED, NEVER, CacheView, Expectation
from ..facts import TTL_CLOCK_MARGIN_S
from ..types import MissCause, PrefixKey, Usage
from .prints import Change
from .thresholds import ESTIMATE_SHORTFALL

__all__ = ["AVOIDABLE_CAUSES", "avoidable", "miss_cause", "refine_cause"]


def miss_cause(
    view: CacheView,
    key: PrefixKey,
    usage: Usage,
    exp: Expectation,
    *,
    implicit: bool,
    tolerance: int,
    min_tokens: int,
    first_layer: int,
    concurrent: bool,
    timestamp: float,
    elapsed_ms: float | None,
) -> tuple[bool, MissCause | None]:
    """(unexpected_miss, miss_cause) of a finished call (step 1).

    ``exp`` is what ``view`` expected when the call went out; ``tolerance`` the shortfall the
    provider's rounding allows; ``min_tokens`` the model's minimum cacheable prefix (implicit
    caching stores nothing shorter); ``first_layer`` the first breakpoint whose prefix reaches
    it (:func:`~cachebench.expect.cacheable_from`: those before it are no cache entries);
    ``concurrent`` whether a twin was writing the same prefix
    when the call went out. ``view`` is read only for a ``provider`` miss; like every other
    part of the analysis, this runs on the tracker's consumer thread, the view's only writer.
    """
    unexpected, cause = _view_cause(key, usage, exp, implicit, tolerance, min_tokens, first_layer)
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
    key: PrefixKey,
    usage: Usage,
    exp: Expectation,
    implicit: bool,
    tolerance: int,
    min_tokens: int,
    first_layer: int,
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
        states = exp.breakpoint_states
        if exp.tokens == 0 and read == 0:
            total = usage.total_input_tokens
            if implicit and 0 < total < min_tokens:
                return False, "below_minimum"
            if states and states[-1] == EXPIRED:
                return False, "ttl_expired"
            return False, "cold" if total else None
        if states and states[-1] != ALIVE:
            # It read a shared start but not all through its last breakpoint: the rest is new
            # (a new turn, or a change the flow's step tells) or expired.
            return False, "ttl_expired" if states[-1] == EXPIRED else "cold"
        return False, None
    if read + usage.cache_write_tokens == 0:
        return False, "below_minimum"
    if usage.cache_write_tokens == 0:
        return False, None
    # (Breakpoints below the model's minimum are not cache entries: the provider ignores them.)
    for state in exp.breakpoint_states[first_layer:]:
        if state == NEVER:
            return False, "cold"
        if state == EXPIRED:
            return False, "ttl_expired"
    return False, "provider"


def refine_cause(
    cause: MissCause | None,
    *,
    model_switched: bool,
    change: Change | None,
    shared_layer: bool,
    newest_turn: bool,
) -> MissCause | None:
    """The cause refined with what the call's flow knows (step 2, the last).

    ``model_switched``: the call's first layer was not served, and the flow's previous call
    used another model (caches are per model). ``change``: how the first layer the call did
    not read differs from the flow's nearest earlier prompt there (None when the flow never
    had that layer, or for a ``provider`` miss how the caller's rendering of identical content
    changed). ``shared_layer``: that layer is one the whole flow shares (its first: tools and
    system prompt) and not one that takes several values each read back. ``newest_turn``: the
    change lies in the newest user turn, which a breakpoint covers only where the provider
    puts one there itself (GPT-5.6's implicit breakpoint ends with the newest message): other
    content there is a new question, not an edit of the prompt (a volatile value there is
    still one).

    A timestamp, date, uuid or id, a re-ordering or a re-serialisation is a change wherever it
    is. A localized edit of other content changes a shared layer (a deploy); in a later layer it
    is another customer's or session's value: ``cold``. So is a plain number anywhere (a
    customer's or tenant's number as often as a counter).
    """
    if cause in ("cold", "ttl_expired", "provider") and model_switched:
        return "model_changed"
    if change is None or change.structural:
        return cause  # a new turn, a trimmed history, a layer the flow never had
    diff = change.diff
    if cause == "cold":
        if diff.kind == "serialization":
            return "serialization_changed"
        if diff.kind == "reordered" or (diff.kind == "volatile" and diff.value_type != "number"):
            return "prefix_changed"
        if shared_layer and diff.kind == "content" and change.localized and not newest_turn:
            return "prefix_changed"
    if cause == "provider" and diff.kind == "serialization":
        return "serialization_changed"
    return cause


#: Causes that cost money only because of how the prompt is built or sent.
AVOIDABLE_CAUSES = ("concurrent", "provider", "serialization_changed")


def avoidable(cause: MissCause | None, change: Change | None, churning: bool) -> bool:
    """Whether a miss was waste (priced as ``avoidable_cost_usd``) or legitimate: a
    ``prefix_changed`` is waste when the change keeps recurring (a volatile value, a
    re-ordering, a re-serialisation) or its layer churns; a one-off edit (a deploy), a new
    customer, a new turn, an expiry, a short prefix and a model switch are not."""
    if cause in AVOIDABLE_CAUSES:
        return True
    if cause == "prefix_changed":
        return churning or (change is not None and change.avoidable_kind)
    return False
