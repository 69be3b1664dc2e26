"""The dashboard: ``cachebench dashboard [--db PATH] [--port N]`` serves a Streamlit app on
127.0.0.1 that reads a store (SQLite or PostgreSQL) through its query API. Needs the
``dashboard`` extra (``pip install -e '.[dashboard]'`` in a clone).

:func:`command` is the ``streamlit run`` command line that serves it; :func:`serve` runs it
until interrupted (this process becomes Streamlit's, on POSIX). The pages are :mod:`cachebench.dashboard.app`; what they show comes from
:mod:`cachebench.dashboard.data`, which needs no Streamlit.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from .._extras import install_hint

__all__ = ["APP", "DEFAULT_PORT", "MISSING", "available", "command", "serve"]

#: The Streamlit script.
APP = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501
MISSING = f"the dashboard needs the 'dashboard' extra: {install_hint('dashboard')}"


def available() -> bool:
    """Whether Streamlit and Altair can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("streamlit", "altair"))


def command(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves the dashboard on ``host:port`` (headless: no browser is
    opened, no usage statistics are sent); the database is ``CACHEBENCH_DB`` in its
    environment (a URL's password stays off the command line)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r}")
    return [
        sys.executable,
        "-m",
        "cachebench.dashboard",  # (streamlit's command line, the pages' imports done first)
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]


def serve(db: str, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> int:
    """Serve the dashboard until interrupted. On POSIX this process becomes Streamlit's (its
    signals, its exit code); elsewhere Streamlit runs as a child whose exit code is returned."""
    if not available():
        raise RuntimeError(MISSING)
    line = command(port, host)
    env = {**os.environ, "CACHEBENCH_DB": db, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(line[0], line, env)
    proc = subprocess.Popen(line, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
