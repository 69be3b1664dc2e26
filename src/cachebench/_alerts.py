"""The tracker's default callbacks: a warning on the ``cachebench`` logger for each
unexpected cache miss (``on_miss_alert``) and each opened incident (``on_regression``) when
the user gave no callback of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._guard import logger

if TYPE_CHECKING:
    from .types import CallMetrics, Regression

__all__ = ["default_alert", "default_regression"]


def default_regression(r: Regression) -> None:
    where = ""
    if r.diff is not None:
        where = (
            f": {r.diff.section} block {r.diff.block_index} changed "
            f"(bytes {r.diff.byte_start}-{r.diff.byte_end}, {r.diff.kind})"
        )
    logger.warning(
        "cachebench: %s in flow %r%s; hit ratio %.0f%% before",
        r.kind.replace("_", " "),
        r.flow,
        where,
        100 * r.hit_ratio_before if r.hit_ratio_before == r.hit_ratio_before else float("nan"),
    )


def default_alert(m: CallMetrics) -> None:
    logger.warning(
        "cachebench: unexpected cache miss in flow %r (prefix %s): read %d of %d expected tokens",
        m.flow,
        m.prefix_id,
        m.cache_read_tokens,
        m.expected_read_tokens,
    )
