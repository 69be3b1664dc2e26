"""Lint: what in a request will keep the provider's cache from serving it, before it is sent.

Every finding comes from one table, :data:`RULES` (code, name, severity, title, why, fix);
``docs/lint.md`` documents the same table and a test keeps the two equal. Rules that look at
one request run on each request given; rules that compare requests (a block that differs
between them) run when two or more requests of one flow are given.

Severity: ``error`` means the cache will miss (or the provider rejects the request) on every
call the finding applies to; ``warning`` means caching is weaker than it could be.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import orjson

from .. import facts
from ..diagnose.classify import normalized_digest, volatile_in
from ..fingerprint import canonical, ordered
from ..types import Provider
from ._view import RequestView, view
from .volatile import after_request_cue, find_volatile

__all__ = ["RULES", "Finding", "Rule", "Severity", "lint"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    name: str
    severity: Severity
    title: str
    why: str
    fix: str


RULES: dict[str, Rule] = {
    r.code: r
    for r in (
        Rule(
            "CB101",
            "breakpoint-below-minimum",
            "error",
            "Breakpoint below the model's minimum cacheable prefix",
            "The provider ignores a breakpoint whose prefix is shorter than the model's minimum, "
            "without an error: nothing is written there and nothing is read.",
            "Move the breakpoint to a later block so the prefix reaches the minimum, or drop it.",
        ),
        Rule(
            "CB102",
            "too-many-breakpoints",
            "error",
            "More breakpoints than the provider allows",
            "Anthropic rejects a fifth breakpoint with a 400 error (Bedrock likewise its fifth "
            "cache point); OpenAI writes at most four entries a request, the longest, so its "
            "earlier breakpoints are never written.",
            "Keep at most the provider's number: one at the end of each layer that is shared "
            "differently (all users, one user, one session).",
        ),
        Rule(
            "CB103",
            "breakpoint-past-lookback",
            "warning",
            "Breakpoint more than 20 blocks after the previous call's request",
            "A breakpoint finds an earlier entry only at itself or up to 20 block positions "
            "before it (a run of tool calls and results is one). When one reply of the model "
            "and the turn after it add more than that, the next call's breakpoint cannot reach "
            "the entry the previous call wrote and writes the whole conversation again.",
            "Add a breakpoint inside the long reply (e.g. on a tool result halfway), so no two "
            "consecutive calls' breakpoints are more than 20 positions apart.",
        ),
        Rule(
            "CB104",
            "ttl-order",
            "error",
            "A 1-hour breakpoint after a 5-minute one",
            "Entries with a longer TTL must come before shorter ones; Anthropic rejects the request.",
            "Give the earlier breakpoints the longer TTL (1h first, then 5m).",
        ),
        Rule(
            "CB201",
            "volatile-value",
            "error",
            "A value that changes per request inside the cached prefix",
            "A time, an epoch stamp, a UUID, a request id or a counter before the last "
            "breakpoint makes every request's prefix new: every call writes and none reads. "
            "(The tools, the system prompt and the leading user message are looked at; the "
            "conversation history is sent again unchanged by the next turn. In the layers after "
            "the shared one, only times and request ids count: a customer's own dates and ids "
            "are that layer's content.)",
            "Move the value after the last breakpoint (into the newest user message), or drop it.",
        ),
        Rule(
            "CB205",
            "date-in-shared-layer",
            "warning",
            "A date in the layer every request shares",
            "A date that follows the calendar (today's) changes once a day: the first call of each "
            "day writes the whole shared prefix again, and calls around midnight split it.",
            "Keep the date after the shared layer's breakpoint (in a small layer of its own, or in "
            "the newest user message), so a new day rewrites only that.",
        ),
        Rule(
            "CB202",
            "reordered-blocks",
            "error",
            "The same blocks in another order",
            "Providers cache the bytes they render: a tool list built from a set or a dict in "
            "another order is another prefix, although nothing in it changed.",
            "Sort the tools (and any list built from a set) by name before sending them.",
        ),
        Rule(
            "CB203",
            "nondeterministic-serialization",
            "error",
            "The same content serialised differently",
            "Blocks whose content is equal but whose bytes differ (JSON key order, whitespace, "
            "1.0 against 1) are different prefixes to the provider.",
            "Serialise deterministically: json.dumps(..., sort_keys=True, separators=(',', ':')) "
            "and one number format, at every place that builds the block.",
        ),
        Rule(
            "CB204",
            "per-user-before-shared",
            "warning",
            "Per-user content before content every request shares",
            "A prefix ends at the first byte that differs: a block that is the same for every "
            "user, placed after one that is not, is cached once per user instead of once.",
            "Put the shared blocks first, a breakpoint at their end, then the per-user blocks "
            "with a breakpoint of their own.",
        ),
        Rule(
            "CB301",
            "no-breakpoint",
            "warning",
            "A long stable prefix with no breakpoint",
            "On a provider with explicit caching nothing is cached without a breakpoint; every "
            "call pays the full input price for a prefix it could read at a tenth of it. "
            "GPT-5.6's implicit breakpoint ends with the newest message, so a changed question "
            "reads nothing either.",
            "Mark the end of the stable part (tools and system prompt, or the conversation "
            "before the newest turn) as a breakpoint; cachebench.plan() places them.",
        ),
        Rule(
            "CB302",
            "dynamic-content-in-shared-layer",
            "warning",
            "A tool result or an image inside a layer meant to be shared",
            "Tool results and images usually change per call; inside the system prompt or "
            "before the first of several breakpoints they make the shared layer per call.",
            "Move tool results and images after the shared breakpoints, into the conversation.",
        ),
        Rule(
            "CB303",
            "dynamic-tool-choice",
            "warning",
            "tool_choice (or thinking) set per request",
            "Changing tool_choice or the thinking settings invalidates every cached message "
            "block (tools and system stay cached): a request that forces one tool, or requests "
            "that differ in either, lose their message breakpoints.",
            "Keep tool_choice and thinking the same across a flow's calls, or keep the "
            "breakpoints that matter before the messages.",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one request, located like a :class:`cachebench.PrefixDiff`: the section,
    the block's index in it, its position in cache order, and a byte range inside the block's
    canonical bytes. ``request`` is the request's index when several were linted."""

    code: str
    severity: Severity
    message: str
    fix: str
    section: str | None = None
    block_index: int | None = None
    position: int | None = None
    byte_start: int | None = None
    byte_end: int | None = None
    value_type: str | None = None
    request: int = 0

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def name(self) -> str:
        return RULES[self.code].name

    @property
    def where(self) -> str:
        if self.section is None:
            return "request"
        where = f"{self.section} block {self.block_index}"
        if self.byte_start is not None:
            where += f", bytes {self.byte_start}-{self.byte_end}"
        return where

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["name"] = self.name
        out["title"] = RULES[self.code].title
        return out

    def __str__(self) -> str:
        return f"{self.code} {self.severity} ({self.name}) {self.where}: {self.message} Fix: {self.fix}"


def _finding(
    code: str, v: RequestView | None, position: int | None, message: str, request: int, **extra: Any
) -> Finding:
    rule = RULES[code]
    if v is not None and position is not None:
        b = v.blocks[position]
        extra.setdefault("byte_start", 0)
        extra.setdefault("byte_end", b.nbytes)
        return Finding(
            code, rule.severity, message, rule.fix, b.section, b.index, position, request=request, **extra
        )
    return Finding(code, rule.severity, message, rule.fix, request=request, **extra)


# -- one request ------------------------------------------------------------------------------


def _breakpoint_rules(v: RequestView, r: int) -> Iterator[Finding]:
    marks = v.marks
    if v.provider == "openai":
        limit = facts.OPENAI_MAX_WRITES
        said = f"OpenAI writes at most {limit} entries a request, the longest: the earliest are never written"
    else:
        limit = facts.MAX_BREAKPOINTS.get(v.provider, 0)
        said = f"{v.provider} allows {limit}"
    if limit and len(marks) > limit:
        yield _finding("CB102", v, marks[limit][0], f"{len(marks)} breakpoints; {said}.", r)
    for p, _ in marks:
        tokens = v.tokens_through(p)
        if tokens < v.minimum:
            yield _finding(
                "CB101",
                v,
                p,
                f"the prefix through this breakpoint is about {tokens:,} tokens; "
                f"{v.model or v.provider} caches from {v.minimum:,}.",
                r,
            )
    if v.provider in ("anthropic", "bedrock"):
        rank = {ttl: i for i, ttl in enumerate(facts.ANTHROPIC_TTLS)}
        for (_, a), (p, b) in itertools.pairwise(marks):
            if rank.get(b, 1) < rank.get(a, 1):
                yield _finding("CB104", v, p, f"a {b} breakpoint after a {a} one.", r)
        yield from _lookback_rule(v, r)


def _lookback_rule(v: RequestView, r: int) -> Iterator[Finding]:
    """The last breakpoint, in a conversation, more than the lookback after the end of the
    previous call's request (every reply of the model, tool calls included, ends one call): the
    provider cannot find that call's entry, nor will the next call find this one's. Breakpoints
    in the tools and system prompt stay where they are from call to call and need no lookback."""
    if not v.marks:
        return
    p = v.marks[-1][0]
    if v.blocks[p].section != "messages":
        return
    previous = _previous_call_end(v, min(p, v.turn_start - 1))
    if previous is None:
        return
    steps = _lookback(v, previous, p)
    if steps > facts.LOOKBACK:
        yield _finding(
            "CB103",
            v,
            p,
            f"{steps} block positions after the end of the previous call's request (before the "
            f"model's last reply); the provider looks back {facts.LOOKBACK}, so this call cannot "
            "read what the previous one wrote.",
            r,
        )


def _previous_call_end(v: RequestView, before: int) -> int | None:
    """The last block of the request that the model's latest reply answered: the block before
    the run of assistant blocks that ends at or before ``before`` (None in a first turn)."""
    p = before
    while p >= 0 and v.blocks[p].section == "messages" and v.blocks[p].role != "assistant":
        p -= 1
    if p < 0 or v.blocks[p].section != "messages":
        return None
    while p >= 0 and v.blocks[p].section == "messages" and v.blocks[p].role == "assistant":
        p -= 1
    return p if p >= 0 else None


def _lookback(v: RequestView, q: int, p: int) -> int:
    """Lookback positions from block ``q`` to block ``p`` (a tool_use/tool_result run is one)."""
    steps, previous_run = 0, v.blocks[q].kind in facts.LOOKBACK_RUN_KINDS
    for b in v.blocks[q + 1 : p + 1]:
        run = b.kind in facts.LOOKBACK_RUN_KINDS
        if not (run and previous_run):
            steps += 1
        previous_run = run
    return steps


def _no_breakpoint_rule(v: RequestView, r: int) -> Iterator[Finding]:
    stable_end = v.turn_start if v.turn_start > 0 else len(v.blocks)
    tokens = v.tokens_through(stable_end - 1)
    if tokens < max(v.minimum, 1024) or stable_end == 0:
        return
    gpt56 = v.provider == "openai" and facts.explicit_caching(v.model)
    if v.provider in ("anthropic", "bedrock") and not v.marks:
        yield _finding(
            "CB301",
            v,
            stable_end - 1,
            f"about {tokens:,} tokens before the newest turn and no breakpoint: nothing is cached.",
            r,
        )
    elif gpt56 and not v.marks and v.turn_start > 0:
        yield _finding(
            "CB301",
            v,
            stable_end - 1,
            f"about {tokens:,} tokens before the newest message and no prompt_cache_breakpoint: "
            "the implicit breakpoint ends with the newest message, so a new question reads nothing.",
            r,
        )


def _strings(value: Any) -> Iterator[str]:
    """String leaves in canonical order (dict keys sorted, as :func:`canonical` writes them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            yield from _strings(value[k])
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


_DIGIT = re.compile(r"\d")


def _shared_end(v: RequestView) -> int:
    """The end of the layer meant to be shared by every request: through the first of several
    breakpoints; with one (or none), the whole prefix it caches."""
    if len(v.marks) >= 2:
        return v.marks[0][0] + 1
    return _scanned_end(v)


def _scanned_end(v: RequestView) -> int:
    """Where the cached prefix ends, for the values in it: through the last breakpoint (before
    the newest turn where caching is implicit, or where no breakpoint is set yet: CB301 asks for
    one), and never into the conversation history, which the next turn sends again unchanged."""
    end = v.cached_end if v.marks or v.implicit else v.turn_start
    return min(end, v.history_start)


# Kinds that are per request wherever they are; dates, UUIDs and plain numbers after the shared
# layer are a customer's or a session's own (a member-since date, a customer id), but for a UUID
# after a per-request id's cue ("Request id: ...").
_PER_REQUEST_KINDS = ("timestamp", "hex_id")


def _volatile_rule(v: RequestView, r: int, now: float) -> Iterator[Finding]:
    shared = _shared_end(v)
    for b in v.blocks[: _scanned_end(v)]:
        data = canonical([b.section, b.payload])
        cursor = 0
        for text in _strings(b.payload):
            if len(text) < 4 or _DIGIT.search(text) is None:
                continue  # every volatile value holds a digit
            encoded = orjson.dumps(text)
            at = data.find(encoded, cursor)
            if at < 0:
                continue
            cursor = at + len(encoded)
            for hit in find_volatile(text, now=now):
                if (
                    b.position >= shared
                    and hit.value_type not in _PER_REQUEST_KINDS
                    and not (hit.value_type == "uuid" and after_request_cue(text, hit.start))
                ):
                    continue
                start = at + len(orjson.dumps(text[: hit.start])) - 1
                end = at + len(orjson.dumps(text[: hit.end])) - 1
                yield _value_finding(v, b.position, hit.value_type, f"({hit.why})", r, start, end)


def _value_finding(
    v: RequestView, position: int, kind: str, why: str, r: int, start: int, end: int
) -> Finding:
    """CB201 for a per-request value, CB205 for a date (which changes once a day)."""
    label = kind.replace("_", " ")
    if kind == "date":
        message = f"a date in the shared layer {why}."
        return _finding("CB205", v, position, message, r, byte_start=start, byte_end=end, value_type=kind)
    message = f"a {label} inside the cached prefix {why}."
    return _finding("CB201", v, position, message, r, byte_start=start, byte_end=end, value_type=kind)


def _dynamic_rules(v: RequestView, r: int) -> Iterator[Finding]:
    first_mark = v.marks[0][0] if len(v.marks) >= 2 else -1
    for b in v.blocks[: v.cached_end]:
        if b.kind in ("tool_result", "image") and (b.section == "system" or b.position <= first_mark):
            what = "tool result" if b.kind == "tool_result" else "image"
            yield _finding("CB302", v, b.position, f"a {what} in the {b.section} layer.", r)
    if v.provider in ("anthropic", "bedrock") and isinstance(v.settings, Mapping):
        in_messages = any(v.blocks[p].section == "messages" for p, _ in v.marks)
        forced = {k: s for k, s in v.settings.items() if k != "thinking" and _forces_tool(s)}
        if in_messages and forced:
            yield _finding(
                "CB303",
                None,
                None,
                f"{', '.join(forced)} names one tool; when it changes between calls, every "
                "breakpoint in the messages misses.",
                r,
            )


def _forces_tool(choice: Any) -> bool:
    return isinstance(choice, Mapping) and (choice.get("type") == "tool" or "tool" in choice)


# -- several requests ------------------------------------------------------------------------


def _compare(views: Sequence[RequestView], ids: Sequence[int]) -> Iterator[Finding]:
    """The rules that compare requests of one provider and model: ``views[i]`` is request
    ``ids[i]`` of the lint (the findings and their words name requests so)."""
    base = views[0]
    end = min(v.cached_end for v in views)
    if end <= 0:
        return
    shared = min(min(_shared_end(v), v.history_start) for v in views)
    yield from _settings_rule(views, ids)
    differs_at: set[int] = set()  # blocks that differ in any way
    content_at: set[int] = set()  # ... in content (not a re-ordering, a rendering or a value)
    tool_at = [b.position for b in base.blocks if b.section == "tools"]  # (OpenAI: after its settings)
    tools_a = [canonical(base.blocks[p].payload) for p in tool_at]
    first_id = ids[0]
    for r, v in zip(ids[1:], views[1:], strict=True):
        tools_b = [canonical(b.payload) for b in v.blocks if b.section == "tools"]
        if tools_a != tools_b and Counter(tools_a) == Counter(tools_b):
            first = next(tool_at[i] for i, (a, b) in enumerate(zip(tools_a, tools_b, strict=True)) if a != b)
            yield _finding(
                "CB202", v, first, f"the tools are the same as in request {first_id}, in another order.", r
            )
            differs_at.update(tool_at)
        for p in range(end):
            if p in differs_at and v.blocks[p].section == "tools":
                continue
            a, b = base.blocks[p], v.blocks[p]
            if a.section != b.section:
                differs_at.add(p)
                content_at.add(p)
                continue
            if ordered(a.payload) == ordered(b.payload):
                continue
            differs_at.add(p)
            if normalized_digest(a.payload) == normalized_digest(b.payload):
                yield _finding("CB203", v, p, f"the same content as request {first_id}, in other bytes.", r)
                continue
            change = _changed_value(a, b)
            if change is None:
                content_at.add(p)
            elif p < shared:
                kind, start, stop = change
                yield _value_finding(v, p, kind, f"that differs from request {first_id}", r, start, stop)
            # (after the shared layer a value that differs is that customer's or session's own)
    if content_at:
        first = min(content_at)
        shared_after = [p for p in range(first + 1, end) if p not in differs_at]
        if shared_after:
            p = shared_after[0]
            yield _finding(
                "CB204",
                base,
                first,
                f"this block differs between the requests, and {len(shared_after)} later "
                f"block(s) they all share (from {base.blocks[p].section} block "
                f"{base.blocks[p].index}) are cached once per variant.",
                first_id,
            )


def _settings_rule(views: Sequence[RequestView], ids: Sequence[int]) -> Iterator[Finding]:
    """CB303 when tool_choice or thinking differs between the requests (Anthropic, Bedrock):
    every breakpoint in the messages misses when they change."""
    base = views[0]
    if base.provider not in ("anthropic", "bedrock"):
        return
    for r, v in zip(ids[1:], views[1:], strict=True):
        if v.settings != base.settings and any(v.blocks[p].section == "messages" for p, _ in v.marks):
            names = sorted({*(base.settings or {}), *(v.settings or {})})
            changed = [n for n in names if (base.settings or {}).get(n) != (v.settings or {}).get(n)]
            yield _finding(
                "CB303",
                None,
                None,
                f"{' and '.join(changed)} differ from request {ids[0]}; every breakpoint in the messages "
                "misses when they change.",
                r,
            )
            return


def _changed_value(a: Any, b: Any) -> tuple[str, int, int] | None:
    """The volatile value a differing block's bytes differ in, with its byte range in ``b``."""
    x = canonical([a.section, a.payload])
    y = canonical([b.section, b.payload])
    lo = 0
    limit = min(len(x), len(y))
    while lo < limit and x[lo] == y[lo]:
        lo += 1
    hi = 0
    while hi < limit - lo and x[-1 - hi] == y[-1 - hi]:
        hi += 1
    text = y.decode("utf-8", "replace")
    if len(text) != len(y):
        return None  # non-ASCII: byte and character offsets differ; leave it to the detector
    found = volatile_in(text, lo, len(y) - hi)
    if found is None or found[0] == "number":
        return None
    return found


# -- the entry point --------------------------------------------------------------------------


def _requests(request: Any) -> list[Mapping[str, Any]]:
    if isinstance(request, Mapping):
        return [request]
    if isinstance(request, Sequence) and not isinstance(request, (str, bytes)):
        listed = list(request)
        if listed and all(isinstance(r, Mapping) for r in listed):
            return listed
    raise TypeError("lint() takes a request body (a dict) or a list of request bodies of one flow")


def lint(
    request: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    provider: Provider | str | None = None,
    model: str | None = None,
    *,
    now: float | None = None,
) -> list[Finding]:
    """What in ``request`` will keep the provider's cache from serving it, by the rules of
    :data:`RULES`, sorted by request, then place.

    ``request`` is a provider request body (the keyword arguments of the SDK call), or a list
    of bodies of one flow (different users, or the same input built twice): then the rules
    that compare requests run too, among the requests to each provider and model (each
    compared with the first of them). ``provider`` is told from the body's shape when not given;
    ``model`` fills in a body that names none (Gemini's). ``now`` (default: the time) is when
    the requests were built: a date within two days of it counts as today's.
    """
    bodies = _requests(request)
    when = time.time() if now is None else now
    views = [view(body, provider, model) for body in bodies]
    found: list[Finding] = []
    for r, v in enumerate(views):
        found += _breakpoint_rules(v, r)
        found += _no_breakpoint_rule(v, r)
        found += _volatile_rule(v, r, when)
        found += _dynamic_rules(v, r)
    # The requests compared per provider and model (a cache is per model): each group's first
    # is the one the others are compared with.
    groups: dict[tuple[str, str | None], list[int]] = {}
    for r, v in enumerate(views):
        groups.setdefault((v.provider, v.model), []).append(r)
    seen = {(f.request, f.position, f.code, f.byte_start) for f in found}
    for ids in groups.values():
        if len(ids) >= 2:
            compared = _compare([views[r] for r in ids], ids)
            found += [f for f in compared if (f.request, f.position, f.code, f.byte_start) not in seen]
    found = _merge_repeats(found, len(views))
    found.sort(key=lambda f: (f.request, -1 if f.position is None else f.position, f.byte_start or 0, f.code))
    return found


def _merge_repeats(found: list[Finding], requests: int) -> list[Finding]:
    """The same finding in several requests (a missing breakpoint in every sample) once, at
    its first request, saying in how many it is."""
    if requests < 2:
        return found
    groups: dict[tuple[Any, ...], list[Finding]] = {}
    for f in found:
        groups.setdefault((f.code, f.section, f.block_index, f.byte_start, f.byte_end, f.message), []).append(
            f
        )
    out = []
    for same in groups.values():
        first = same[0]
        if len(same) > 1:
            first = replace(first, message=f"{first.message} (in {len(same)} of {requests} requests)")
        out.append(first)
    return out


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
