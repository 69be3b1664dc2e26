"""Shared test set-up: the guard is strict here, so internal errors fail tests loudly."""

from __future__ import annotations

import os

os.environ.setdefault("CACHEBENCH_STRICT", "1")

from .postgres_server import postgres_db, postgres_url  # noqa: F401 (the fixtures)
