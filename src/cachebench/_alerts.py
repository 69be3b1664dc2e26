"""The tracker's default callbacks: a warning on the ``cachebench`` logger for each
unexpected cache miss (``on_miss_alert``) and each opened incident (``on_regression``) when
the user gave no callback of their own. Each line is the value's own ``str()``: one line,
with labelled times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._guard import logger

if TYPE_CHECKING:
    from .types import CallMetrics, Regression

__all__ = ["default_alert", "default_regression"]


def default_regression(r: Regression) -> None:
    logger.warning("cachebench: regression: %s", r)


def default_alert(m: CallMetrics) -> None:
    logger.warning("cachebench: unexpected cache miss: %s", m)
