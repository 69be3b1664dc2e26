"""Every named threshold of the diagnosis, in one block.

Changing one changes when misses are blamed and when incidents open and close: the
tests in ``tests/test_regressions.py`` and ``tests/test_mutants.py`` pin them.
"""

from __future__ import annotations

__all__ = [
    "BASELINE_WEIGHT",
    "CHURN_ACTIVE",
    "CHURN_CLOSE",
    "CHURN_OPEN",
    "COST_BASE_WEIGHT",
    "DROP_CLOSE",
    "ESTIMATE_SHORTFALL",
    "MAX_INCIDENTS",
    "MAX_LAYERS",
    "MAX_PENDING",
    "MAX_PRINTS",
    "MAX_PRINT_BYTES",
    "MIN_CALLS",
    "MIN_SETTLED",
    "PRINTS_BUDGET",
    "SETTLED",
    "SETTLE_S",
    "SHARED",
    "WINDOW",
]

# -- a call's miss cause -----------------------------------------------------------------------
ESTIMATE_SHORTFALL = 0.5  # an estimated (byte-share) entry size is missed only below this share of it

# -- a flow's window and baseline --------------------------------------------------------------
WINDOW = 16  # calls per flow in the churn and hit-ratio windows
MIN_CALLS = 12  # a window judges nothing before this many calls
MAX_LAYERS = 8  # breakpoints beyond this are not tracked per layer
SHARED = 0.75  # baseline read and same-value rates that make a layer shared
BASELINE_WEIGHT = 0.05  # of each call leaving the window in the baseline (about 20 calls)
COST_BASE_WEIGHT = 0.1  # of each healthy call in the flow's normal cost per call (moving average)

# -- writes waiting to be read back ------------------------------------------------------------
MAX_PENDING = 64  # writes per flow waiting to be read back
SETTLE_S = 300.0  # a write not read back within this (or its shorter TTL) counts as never read
SETTLED = 16  # writes per flow whose fate (read back, or not within their TTL) is remembered
MIN_SETTLED = 8  # a layer's churn is judged from at least this many settled writes

# -- prefix churn ------------------------------------------------------------------------------
CHURN_OPEN = 0.75  # share of a layer's settled writes never read back that opens churn
CHURN_ACTIVE = 0.5  # ... while at least this share of the window's calls is new at the layer
CHURN_CLOSE = 0.25  # share of the window new at the layer at or below which churn closes

# -- hit-ratio drop ----------------------------------------------------------------------------
DROP_CLOSE = 0.1  # a hit-ratio drop closes this far above the threshold (no flapping)

# -- what the detector keeps -------------------------------------------------------------------
MAX_PRINTS = 512  # layer prints kept tracker-wide (least recently used dropped) ...
PRINTS_BUDGET = 16 << 20  # ... within this many bytes
MAX_PRINT_BYTES = 1 << 18  # layers larger than this are not printed (their diff is block-level)
MAX_INCIDENTS = 1000  # incidents kept tracker-wide (oldest dropped)
