"""Is a request's cached prefix the same every time it is built? Where it is not, the
:class:`~cachebench.PrefixDiff` a live diagnosis would name, from the same layer prints
(:mod:`cachebench.diagnose.prints`).

Used by :func:`cachebench.testing.assert_prefix_stable` and ``cachebench check``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..advice import advice_for
from ..diagnose.prints import Printer, block_bytes, compare
from ..types import PrefixDiff, Provider
from ._view import RequestView, view

__all__ = ["Instability", "differences", "first_difference", "stable_end"]


@dataclass(frozen=True, slots=True)
class Instability:
    """Request ``request`` (an index) differs from request 0 inside the prefix they should
    share: ``diff`` says where and how (None when the blocks are the same and the model or the
    breakpoints differ), ``why`` what that does to the cache (from the advice table of live
    diagnosis), ``fix`` what to do."""

    request: int
    diff: PrefixDiff | None  # None: the model or the breakpoints differ, not the blocks
    why: str
    fix: str

    def __str__(self) -> str:
        where = f": {self.diff}" if self.diff is not None else ""
        return (
            f"request {self.request} differs from request 0 in its cached prefix{where}; "
            f"{self.why}. Fix: {self.fix}"
        )


def stable_end(v: RequestView, *, first_layer: bool = False) -> int:
    """How many leading blocks must be the same every time: through the last breakpoint (the
    first one with ``first_layer``), or everything before the newest turn where the request
    sets none."""
    if v.marks:
        return (v.marks[0][0] if first_layer else v.marks[-1][0]) + 1
    return v.turn_start if v.turn_start > 0 else len(v.blocks)


def first_difference(
    requests: Sequence[Mapping[str, Any]],
    provider: Provider | str | None = None,
    model: str | None = None,
    *,
    first_layer: bool = False,
) -> Instability | None:
    """The first request whose prefix differs from the first request's, and where; None when
    every request has the same prefix (through the first request's last breakpoint, or its
    first with ``first_layer``: the layer meant to be shared by different users)."""
    return next(iter(differences(requests, provider, model, first_layer=first_layer)), None)


def differences(
    requests: Sequence[Mapping[str, Any]],
    provider: Provider | str | None = None,
    model: str | None = None,
    *,
    first_layer: bool = False,
) -> list[Instability]:
    """Each request whose prefix differs from the first request's, and where (as
    :func:`first_difference` says it for the first of them), in order."""
    views = [view(r, provider, model) for r in requests]
    if len(views) < 2:
        return []
    base = views[0]
    end = stable_end(base, first_layer=first_layer)
    printer = Printer(keep_text=False)
    old = printer.layer(base.prompt, 0, end)
    found = [_difference(i, v, base, old, end, printer) for i, v in enumerate(views[1:], start=1)]
    return [x for x in found if x is not None]


def _difference(
    i: int, v: RequestView, base: RequestView, old: Any, end: int, printer: Printer
) -> Instability | None:
    if (v.provider, v.model) != (base.provider, base.model):
        return Instability(
            i,
            None,
            f"it is for {v.provider} {v.model}, request 0 for {base.provider} {base.model}, "
            "and caches are per model",
            "build every request of a flow for one model",
        )
    change = compare(old, printer.layer(v.prompt, 0, end), block_bytes(v.prompt))
    if change is not None:
        if change.diff.kind == "content":
            # (live diagnosis calls an edit of content a deploy; between builds it is a bug)
            why = "the block differs between builds of the same request"
            fix = (
                "build it the same way every time; what must vary (a time, a user) belongs "
                "after the last breakpoint, or, for a user, after the shared layer's"
            )
        else:
            advice = advice_for("prefix_changed", change.diff)
            why, fix = advice if advice is not None else ("", "keep the cached prefix identical")
        return Instability(i, change.diff, why, fix)
    mine = [(p, ttl) for p, ttl in v.marks if p < end]
    theirs = [(p, ttl) for p, ttl in base.marks if p < end]
    if mine != theirs:
        return Instability(
            i,
            None,
            f"its breakpoints are {_marks(mine)}, request 0's {_marks(theirs)}: entries are "
            "written and looked up where the breakpoints are",
            "set the cache markers the same way on every build (cachebench.apply() with one plan)",
        )
    return None


def _marks(marks: list[tuple[int, str]]) -> str:
    return ", ".join(f"block {p} ({ttl})" for p, ttl in marks) if marks else "none"
