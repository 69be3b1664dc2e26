"""Shared test set-up: the guard is strict here, so internal errors fail tests loudly.

``make unit-compiled`` runs this suite against the compiled build with
``CACHEBENCH_EXPECT_COMPILED=1``; the session refuses to start if the package imported is
not that build (a stale path would otherwise test plain Python twice)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CACHEBENCH_STRICT", "1")


def pytest_report_header() -> str:
    import cachebench
    from cachebench._core import build

    return f"cachebench build: {build()}, from {os.path.dirname(cachebench.__file__ or '')}"


def pytest_sessionstart(session: pytest.Session) -> None:
    from cachebench._core import build

    if os.environ.get("CACHEBENCH_EXPECT_COMPILED") == "1" and build() != "compiled (mypyc)":
        raise pytest.UsageError(
            "CACHEBENCH_EXPECT_COMPILED=1 but cachebench imports as plain Python; run `make compiled`"
        )
