"""What offline explain found (:class:`OfflineReport`): a row per replayed request, a summary per
miss cause, the totals and the lines skipped. Built by :mod:`cachebench.planner.offline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..advice import explain
from ..types import CallMetrics, PrefixDiff
from ._saved import Skipped

__all__ = ["CauseSummary", "OfflineReport", "OfflineRow", "report"]


@dataclass(frozen=True, slots=True)
class OfflineRow:
    """One replayed request: where it came from and what the tracker recorded for it."""

    source: str
    line: int
    metrics: CallMetrics
    #: What of its cacheable prefix it did not read: its writes where the provider reports them,
    #: else (implicit caching) the prompt through its last cacheable block less what it read.
    unread_tokens: int = 0

    @property
    def flow(self) -> str:
        return self.metrics.flow

    @property
    def provider(self) -> str:
        return self.metrics.provider

    @property
    def model(self) -> str | None:
        return self.metrics.model

    @property
    def prefix_id(self) -> str | None:
        return self.metrics.prefix_id

    @property
    def read(self) -> int:
        """Tokens it would read from the cache."""
        return self.metrics.cache_read_tokens

    @property
    def written(self) -> int:
        """Tokens it would write to the cache."""
        return self.metrics.cache_write_tokens

    @property
    def uncached(self) -> int:
        """Input tokens neither read nor written (billed at the base rate)."""
        return self.metrics.input_tokens

    @property
    def miss_cause(self) -> str | None:
        return self.metrics.miss_cause

    @property
    def diff(self) -> PrefixDiff | None:
        return self.metrics.diff

    @property
    def avoidable_tokens(self) -> int:
        return self.metrics.avoidable_tokens

    @property
    def avoidable_cost_usd(self) -> float | None:
        return self.metrics.avoidable_cost_usd

    @property
    def explanation(self) -> str:
        """What it would read and why the rest misses, with the fix (:func:`cachebench.explain`)."""
        return explain(self.metrics)

    def as_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "source": self.source,
            "line": self.line,
            "timestamp": m.timestamp,
            "flow": m.flow,
            "provider": m.provider,
            "model": m.model,
            "prefix_id": m.prefix_id,
            "read": m.cache_read_tokens,
            "written": m.cache_write_tokens,
            "uncached": m.input_tokens,
            "expected_read": m.expected_read_tokens,
            "miss_cause": m.miss_cause,
            "diff": m.diff.as_dict() if m.diff is not None else None,
            "unread_tokens": self.unread_tokens,
            "avoidable_tokens": m.avoidable_tokens,
            "avoidable_cost_usd": m.avoidable_cost_usd,
            "explanation": self.explanation,
        }


@dataclass(slots=True)
class CauseSummary:
    """One miss cause over the whole input: how many requests, the tokens they did not read,
    and the avoidable part with its cost (None when none of its requests was priced)."""

    cause: str
    calls: int = 0
    unread_tokens: int = 0
    avoidable_calls: int = 0
    avoidable_tokens: int = 0
    priced_cost_usd: float = 0.0  # the avoidable cost of the priced requests
    unpriced_calls: int = 0  # avoidable requests whose model has no price

    @property
    def avoidable_cost_usd(self) -> float | None:
        if self.avoidable_calls and self.unpriced_calls == self.avoidable_calls:
            return None
        return self.priced_cost_usd

    def add(self, row: OfflineRow) -> None:
        self.calls += 1
        self.unread_tokens += row.unread_tokens
        tokens = row.avoidable_tokens
        if tokens:
            self.avoidable_calls += 1
            self.avoidable_tokens += tokens
            cost = row.avoidable_cost_usd
            if cost is None:
                self.unpriced_calls += 1
            else:
                self.priced_cost_usd += cost

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "calls": self.calls,
            "unread_tokens": self.unread_tokens,
            "avoidable_calls": self.avoidable_calls,
            "avoidable_tokens": self.avoidable_tokens,
            "avoidable_cost_usd": self.avoidable_cost_usd,
            "unpriced_calls": self.unpriced_calls,
        }


@dataclass(frozen=True)
class OfflineReport:
    """What :func:`explain_requests` found: a row per replayed request (in replay order), a
    summary per miss cause (most avoidable cost first, then most calls), the totals, and the
    lines skipped (in input order) with why."""

    rows: list[OfflineRow]
    causes: list[CauseSummary]
    skipped: list[Skipped]

    @property
    def misses(self) -> list[OfflineRow]:
        """The rows with an avoidable miss: tokens they could have read and did not."""
        return [r for r in self.rows if r.avoidable_tokens]

    def total(self) -> dict[str, Any]:
        """Requests replayed and skipped, and their tokens read, written, uncached and
        avoidable, with the avoidable cost (None when none of the avoidable requests was priced)."""
        calls = sum(c.avoidable_calls for c in self.causes)
        unpriced = sum(c.unpriced_calls for c in self.causes)
        return {
            "requests": len(self.rows),
            "skipped": len(self.skipped),
            "read": sum(r.read for r in self.rows),
            "written": sum(r.written for r in self.rows),
            "uncached": sum(r.uncached for r in self.rows),
            "avoidable_calls": calls,
            "avoidable_tokens": sum(c.avoidable_tokens for c in self.causes),
            "avoidable_cost_usd": None
            if calls and unpriced == calls
            else sum(c.priced_cost_usd for c in self.causes),
            "unpriced_calls": unpriced,
        }

    def as_dict(self, *, all_rows: bool = False) -> dict[str, Any]:
        """Plain JSON values: the totals, the causes, the skipped lines (``index``: the index in
        a JSON file's list, else null) and the rows with an avoidable miss (every row with
        ``all_rows``)."""
        return {
            "total": self.total(),
            "causes": [c.as_dict() for c in self.causes],
            "skipped": [
                {"source": s.source, "line": s.line, "index": s.index, "reason": s.reason}
                for s in self.skipped
            ],
            "rows": [r.as_dict() for r in (self.rows if all_rows else self.misses)],
        }

    def as_json(self, *, all_rows: bool = False) -> str:
        """:meth:`as_dict` as indented JSON text."""
        return orjson.dumps(self.as_dict(all_rows=all_rows), option=orjson.OPT_INDENT_2).decode()


def report(rows: list[OfflineRow], skipped: list[Skipped]) -> OfflineReport:
    """The report of ``rows`` (in replay order) and ``skipped`` (in input order)."""
    causes: dict[str, CauseSummary] = {}
    for row in rows:
        cause = row.miss_cause
        if cause is not None:
            summary = causes.get(cause)
            if summary is None:
                summary = causes[cause] = CauseSummary(cause)
            summary.add(row)
    ordered = sorted(causes.values(), key=lambda c: (-(c.avoidable_cost_usd or 0.0), -c.calls, c.cause))
    return OfflineReport(rows, ordered, skipped)
