"""Why calls miss and when a flow regresses.

* :mod:`.causes`: the one place a call's ``miss_cause`` is decided (:func:`miss_cause` as the
  call finishes, refined by the flow in :meth:`FlowDetector.observe`).
* :mod:`.regressions`: :class:`FlowDetector`, prefix churn and hit-ratio drops per flow,
  each with the diff that explains it.
* :mod:`.flowstate`: what the detector keeps per flow (its window, baseline, incidents).
* :mod:`.thresholds`: every named threshold of the diagnosis, in one block.

What the cache should have served comes from :mod:`cachebench.expect`.
"""

from __future__ import annotations

from .causes import miss_cause
from .regressions import FlowDetector

__all__ = ["FlowDetector", "miss_cause"]
