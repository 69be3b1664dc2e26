"""What the benchmark scripts share: the verdict words and the machine line they open with."""

from __future__ import annotations

import os
import platform

import cachebench


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def machine_line(library: str, version: str) -> str:
    """cachebench's version, the other library measured, the machine and its load."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"cachebench {cachebench.__version__} | {library} {version} | "
        f"Python {platform.python_version()} | {platform.machine()} | {os.cpu_count()} CPUs | "
        f"load average {load} (timings are only comparable on an otherwise idle machine)"
    )
