"""The dashboard in a real browser: ``cachebench dashboard`` serving the demo's store on
loopback, headless Chromium (Debian's, which ``scripts/ensure-chromium`` installs) driven by
Playwright. The overview's key figures must be ``cachebench report --json``'s; the incidents
page must draw both incidents. Screenshots of both pages are saved (in
``$CACHEBENCH_SCREENSHOTS`` when set, else the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Page, sync_playwright

from .test_dashboard import demo_db  # noqa: F401 (the fixture)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = (
        os.environ.get("CACHEBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert found, "Chromium is not installed: run scripts/ensure-chromium (make test does)"
    return found


@pytest.fixture(scope="module")
def server(demo_db: str) -> Iterator[str]:  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cachebench", "dashboard", "--db", demo_db, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield tab
        browser.close()


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CACHEBENCH_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dollars(x: float) -> str:
    """Money as the dashboard's cards show it: to the cent from $1, else to a hundredth of a
    cent."""
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:,.4f}"


def figures(page: Page) -> list[tuple[str, str]]:
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    return [(a.strip(), b.strip()) for a, b in zip(labels, values, strict=True)]


def test_the_overview_shows_the_reports_figures(
    server: str,
    page: Page,
    demo_db: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cachebench", "report", "--db", demo_db, "--json"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    total = orjson.loads(done.stdout)["total"]
    page.goto(f"{server}/?page=overview")
    page.locator('[data-testid="stMetricValue"]').nth(17).wait_for(timeout=60_000)
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=60_000)
    shown = figures(page)
    assert len(shown) == 18
    in_range = dict(shown[12:])  # this hour, today, then the range: all stored calls
    assert in_range["Calls"] == f"{total['calls']:,}"
    assert in_range["Hit ratio"] == f"{total['hit_ratio']:.1%}"
    assert in_range["Token hit ratio"] == f"{total['token_hit_ratio']:.1%}"
    assert in_range["Cost"] == dollars(total["cost_usd"])
    assert in_range["Cost saved"] == dollars(total["cost_saved_usd"])
    assert in_range["Avoidable cost"] == dollars(total["avoidable_cost_usd"])
    shot = screenshots(tmp_path) / "dashboard-overview.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_the_incidents_page_draws_each_incident(server: str, page: Page, tmp_path: Path) -> None:
    page.goto(f"{server}/?page=incidents")
    page.get_by_text("prefix churn in ticket-triage").wait_for(timeout=60_000)
    page.locator('[data-testid="stVegaLiteChart"]').nth(1).wait_for(timeout=60_000)
    body = page.locator("body").inner_text()
    assert "prefix churn in support-chat" in body
    assert "Why:" in body and "Fix:" in body
    assert body.count("Changed: system block 0") == 2
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 2  # the block strips
    shot = screenshots(tmp_path) / "dashboard-incidents.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
