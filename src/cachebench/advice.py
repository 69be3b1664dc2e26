"""What a miss or an incident means and what to do about it: :func:`explain`, from one table of
advice per cause and kind of change (:data:`ADVICE`).

``explain(call)`` says, for a call that did not read all it could, what changed and where (from
its ``diff``), why it missed, what it cost, and the fix; ``explain(regression)`` the same for an
incident. The default log lines and ``str()`` of both use it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import CallMetrics, PrefixDiff, Regression

__all__ = ["ADVICE", "advice_for", "call_advice", "explain", "incident_advice"]

# (cause, kind of change or value type) -> (why it missed, the fix). The second key is the
# diff's value type for a volatile value, its kind otherwise, None where the cause has no diff.
ADVICE: dict[tuple[str, str | None], tuple[str, str]] = {
    ("prefix_changed", "timestamp"): (
        "a timestamp in the cached prefix changes on every call, so every call writes a new entry",
        "move the timestamp after the last cache breakpoint (into the newest user turn), or round it",
    ),
    ("prefix_changed", "date"): (
        "a date in the cached prefix changed, so the call wrote a new entry",
        "move the date after the last cache breakpoint (a date that changes daily costs one write a day)",
    ),
    ("prefix_changed", "uuid"): (
        "a UUID in the cached prefix is new on every call, so every call writes a new entry",
        "move the UUID out of the cached prefix (after the last cache breakpoint)",
    ),
    ("prefix_changed", "hex_id"): (
        "a request or trace id in the cached prefix is new on every call, so every call writes a new entry",
        "move the id out of the cached prefix (after the last cache breakpoint)",
    ),
    ("prefix_changed", "number"): (
        "a number in the cached prefix changed (a counter or a version?), so the call wrote a new entry",
        "keep that number constant, or move it after the last cache breakpoint",
    ),
    ("prefix_changed", "volatile"): (
        "a value in the cached prefix (a time, an id, a number) changed, so the call wrote a new entry",
        "move that value after the last cache breakpoint, or keep it constant",
    ),
    ("prefix_changed", "reordered"): (
        "the same blocks (tools) came in another order, and the provider caches the order it is sent",
        "sort the tools (or blocks) the same way on every call, e.g. by name",
    ),
    ("prefix_changed", "serialization"): (
        "the same content was serialised differently (key order or whitespace), and the provider "
        "caches the bytes it is sent",
        "serialise with sorted keys and fixed separators (json.dumps(..., sort_keys=True))",
    ),
    ("prefix_changed", "content"): (
        "the cached prefix was edited (a deploy or a prompt change), so the call wrote a new entry",
        "nothing, if it was a one-off change; if it keeps changing, keep that part constant or move "
        "it after the last cache breakpoint",
    ),
    ("serialization_changed", "serialization"): (
        "the same content was serialised differently (its keys in another order, other whitespace, "
        "or JSON inside its text rendered another way), and the provider caches the bytes it is sent",
        "build it the same way on every call: dicts in a fixed order (or json.dumps(..., "
        "sort_keys=True)), the same indentation and separators, the same whitespace",
    ),
    ("serialization_changed", None): (
        "the same content was serialised differently (its keys in another order, other whitespace, "
        "or JSON inside its text rendered another way), and the provider caches the bytes it is sent",
        "build it the same way on every call: dicts in a fixed order (or json.dumps(..., "
        "sort_keys=True)), the same indentation and separators, the same whitespace",
    ),
    ("cold", None): (
        "the flow had never sent this prefix (its first call, a new customer's context or a new turn)",
        "none needed, a first write is expected",
    ),
    # GPT-5.6 with no explicit breakpoint: the implicit one ends with the newest message
    # (PROVIDER_FACTS, "OpenAI caching rules"), so a new question is a new prefix.
    ("cold", "implicit_breakpoint"): (
        "GPT-5.6's implicit breakpoint ends with the newest message, so a call with a new "
        "question never reads the prefix before it",
        "put a prompt_cache_breakpoint at the end of the stable part (the system prompt, or the "
        "conversation before the newest message); cachebench.plan() places it",
    ),
    ("ttl_expired", None): (
        "the cache entry expired before this call (no call read it within its TTL)",
        "if calls come back within the hour, use the 1 h TTL; or warm the prefix when it pays",
    ),
    ("below_minimum", None): (
        "the prefix is shorter than the model's minimum cacheable length, so nothing was cached",
        "move the breakpoint later (a longer prefix) or drop it",
    ),
    ("concurrent", None): (
        "a parallel call was writing the same prefix, and an entry is readable only once its "
        "writer's response starts",
        "use CachePolicy.miss_aware() to hold twins, or warm the prefix before a burst",
    ),
    ("model_changed", None): (
        "the flow switched model, and caches are per model",
        "nothing, if the switch was intended; keep one model per flow to keep its cache",
    ),
    ("provider", None): (
        "the same prefix was cached within its TTL, yet the provider did not serve it "
        "(routing, eviction or an outage)",
        "nothing on your side if it is rare; if it persists, report it to the provider",
    ),
}

_CHURN = (
    "the layer keeps changing, so its writes are never read back",
    "keep the cached prefix identical between calls",
)
_DROP = (
    "the prompt did not change, yet the flow's hit ratio fell below its threshold (the "
    "provider stopped serving the cache, or calls come too far apart for the TTL)",
    "check the provider's status and the calls' spacing against the TTL",
)


def _change_key(diff: PrefixDiff | None) -> str | None:
    if diff is None:
        return None
    return (diff.value_type or "volatile") if diff.kind == "volatile" else diff.kind


def advice_for(cause: str | None, diff: PrefixDiff | None) -> tuple[str, str] | None:
    """(why it missed, the fix) for a cause and the change that made it, from :data:`ADVICE`."""
    if cause is None:
        return None
    return (
        ADVICE.get((cause, _change_key(diff))) or ADVICE.get((cause, None)) or ADVICE.get((cause, "content"))
    )


def _where(diff: PrefixDiff) -> str:
    return f"{diff.section} block {diff.block_index}, bytes {diff.byte_start}-{diff.byte_end}"


def _usd(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:,.6f}"


def explain(x: CallMetrics | Regression) -> str:
    """One or two sentences: what changed, where, why it missed, what it cost, and the fix.

    ``x`` is a :class:`~cachebench.types.CallMetrics` (a call) or a
    :class:`~cachebench.types.Regression` (an incident)."""
    from .types import CallMetrics, Regression

    if isinstance(x, CallMetrics):
        return _explain_call(x)
    if isinstance(x, Regression):
        return _explain_incident(x)
    raise TypeError(f"explain() takes a CallMetrics or a Regression, got {type(x).__name__}")


def _implicit_only(m: CallMetrics) -> bool:
    """A GPT-5.6+ call whose only breakpoint is the implicit one (no prompt_cache_breakpoint)."""
    from .facts import explicit_caching

    return m.provider == "openai" and explicit_caching(m.model) and len(m.breakpoint_ids) == 1


def call_advice(m: CallMetrics) -> tuple[str, str] | None:
    """(why it missed, the fix) for one call: :func:`advice_for` its cause and change, but for
    a GPT-5.6 call whose only breakpoint is the implicit one, whose cold miss a breakpoint of
    its own would have read."""
    if m.miss_cause == "cold" and _implicit_only(m):
        return ADVICE[("cold", "implicit_breakpoint")]
    return advice_for(m.miss_cause, m.diff)


def _explain_call(m: CallMetrics) -> str:
    if m.error is not None:
        return f"The call failed ({m.error}); nothing about its cache is known."
    if not m.usage_known:
        return "The provider reported no usage for this call, so its cache use is unknown."
    if m.prefix_id is None:
        return "The call had no cache breakpoint, so nothing of it was cacheable."
    found = call_advice(m)
    if found is None:
        if m.cache_read_tokens:
            return f"The call read {m.cache_read_tokens:,} tokens from the cache; nothing to fix."
        return "The call read nothing from the cache and was not expected to; nothing to fix."
    why, fix = found
    where = f" ({_where(m.diff)})" if m.diff is not None else ""
    first = f"Missed the cache ({m.miss_cause}{where}): {why}."
    if m.avoidable_cost_usd:
        cost = f" It cost {_usd(m.avoidable_cost_usd)} more than a cache read."
    elif m.avoidable_tokens:
        cost = f" {m.avoidable_tokens:,} tokens were not read that could have been."
    else:
        cost = ""
    return f"{first}{cost} Fix: {fix}."


def incident_advice(r: Regression) -> tuple[str, str]:
    """(why, the fix) of an incident."""
    if r.kind == "hit_ratio_drop":
        return _DROP
    found = advice_for("prefix_changed", r.diff) if r.diff is not None else None
    return found or _CHURN


def _explain_incident(r: Regression) -> str:
    why, fix = incident_advice(r)
    what = "Hit-ratio drop" if r.kind == "hit_ratio_drop" else "Prefix churn"
    where = f" at {_where(r.diff)}" if r.diff is not None else ""
    cost = r.extra_cost_per_hour_usd
    money = f", costing {_usd(cost)} an hour more" if cost is not None and math.isfinite(cost) else ""
    return f"{what} in flow {r.flow!r}{where}: {why}{money}. Fix: {fix}."
