"""Where recorded calls are kept beyond the process (placeholder while the store is built)."""

from __future__ import annotations

from typing import Any

StoreWriter = Any
