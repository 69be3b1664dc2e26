"""Transitional: the provider cache facts live in :mod:`cachebench.facts`.

Only ``detect.py`` and ``_core.py`` still import these names from here (they are being changed
in parallel); point them at :mod:`cachebench.facts` and delete this module.
"""

from __future__ import annotations

from .facts import LOOKBACK, TTL_CLOCK_MARGIN_S, ttl_seconds
from .facts import TTL_SECONDS as _TTL_SECONDS

__all__ = ["LOOKBACK", "TTL_CLOCK_MARGIN_S", "_TTL_SECONDS", "ttl_seconds"]
