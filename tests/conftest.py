"""Shared test set-up: the guard is strict here, so internal errors fail tests loudly.

``make unit`` runs this suite on the plain package with ``CACHEBENCH_EXPECT_COMPILED=0``,
``make unit-compiled`` on the compiled build with ``CACHEBENCH_EXPECT_COMPILED=1``; the
session refuses to start if the package imported is not the build asked for (a stale path,
or compiled modules left in ``src/``, would otherwise test one build twice)."""

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

    expected = os.environ.get("CACHEBENCH_EXPECT_COMPILED")
    if expected == "1" and build() != "compiled (mypyc)":
        raise pytest.UsageError(
            "CACHEBENCH_EXPECT_COMPILED=1 but cachebench imports as plain Python; run `make compiled`"
        )
    if expected == "0" and build() != "plain Python":
        raise pytest.UsageError(
            "CACHEBENCH_EXPECT_COMPILED=0 but cachebench imports compiled modules: "
            "remove the .so files in src/ (`make clean`) or unset PYTHONPATH"
        )
