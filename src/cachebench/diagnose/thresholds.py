"""Every named threshold of the diagnosis, in one block.

Changing one changes when misses are blamed and when incidents open and close: the
tests in ``tests/test_regressions.py`` and ``tests/test_mutants.py`` pin them.
"""

from __future__ import annotations

__all__ = [
    "CHURN_CHANGES",
    "CHURN_QUIET",
    "CHURN_SPAN",
    "COST_BASE_WEIGHT",
    "DROP_CLOSE",
    "ESTIMATE_SHORTFALL",
    "FEATURES_BUDGET",
    "LOCALIZED_SHARE",
    "MAX_INCIDENTS",
    "MAX_LAYERS",
    "MAX_PENDING",
    "MAX_PRINTS",
    "MAX_PRINT_BYTES",
    "MIN_CALLS",
    "NORMALIZE_MAX_BYTES",
    "PRINTS_BUDGET",
    "RATE_MIN_SPAN_S",
    "RECENT_VALUES",
    "SETTLE_S",
    "UNREAD_SHARE",
    "WINDOW",
]

# -- a call's miss cause -----------------------------------------------------------------------
ESTIMATE_SHORTFALL = 0.5  # an estimated (byte-share) entry size is missed only below this share of it

# -- a flow's window ----------------------------------------------------------------------------
WINDOW = 16  # calls per flow in the hit-ratio window
MIN_CALLS = 12  # a window judges nothing before this many calls
MAX_LAYERS = 8  # breakpoints beyond this are not tracked per layer
COST_BASE_WEIGHT = 0.1  # of each healthy call in the flow's normal cost per call (moving average)

# -- writes waiting to be read back ------------------------------------------------------------
MAX_PENDING = 64  # writes per flow waiting to be read back
SETTLE_S = 300.0  # a write not read back within this (or its shorter TTL) counts as never read

# -- a call's diagnosis -------------------------------------------------------------------------
RECENT_VALUES = 8  # distinct values per flow and layer kept to find a call's nearest earlier prompt
LOCALIZED_SHARE = 0.25  # a content change within this share of its block (or two chunks) is an edit
NORMALIZE_MAX_BYTES = 1 << 16  # blocks carrying JSON in their text up to this size are parsed to compare
FEATURES_BUDGET = 1 << 20  # bytes of block features kept tracker-wide (least recently used dropped)

# -- prefix churn ------------------------------------------------------------------------------
CHURN_SPAN = 8  # the last calls at a layer that churn is judged on
CHURN_CHANGES = 3  # ... changes of the layer among them that open churn
CHURN_QUIET = 4  # calls in a row that read the layer, or found it unchanged, close churn
UNREAD_SHARE = 0.5  # share of a layer's settled writes never read back reported as unread writes

# -- an incident's cost ------------------------------------------------------------------------
RATE_MIN_SPAN_S = 60.0  # an incident's calls per hour are counted over at least this long

# -- hit-ratio drop ----------------------------------------------------------------------------
DROP_CLOSE = 0.1  # a hit-ratio drop closes this far above the threshold (no flapping)

# -- what the detector keeps -------------------------------------------------------------------
MAX_PRINTS = 2048  # layer prints kept tracker-wide (least recently used dropped) ...
PRINTS_BUDGET = 1 << 20  # ... within this many bytes (their blocks' features: FEATURES_BUDGET)
MAX_PRINT_BYTES = 1 << 18  # layers larger than this are not printed (their diff is block-level)
MAX_INCIDENTS = 1000  # incidents kept tracker-wide (oldest dropped)
