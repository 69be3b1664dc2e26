"""The ``cachebench`` command line (``main(argv)`` returns exit codes, ``cachebench emulate``
serves the emulator, ``--version``, help within 80 columns, ``python -m cachebench``), the
emulator's control routes and the ``cache_emulator`` fixture."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
import typer
from starlette.routing import Route

import cachebench
from cachebench import cli, emulator
from cachebench.cachemodel import Knobs
from cachebench.emulator import Emulator, EmulatorServer
from cachebench.testing import CacheEmulator


def test_help_returns_zero_and_lists_emulate(capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` prints usage naming the ``emulate`` command and returns 0 (no SystemExit)."""
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and "emulate" in out


def test_bad_options_return_two(capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error (unknown command, out-of-range or unsupported knob) returns 2."""
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["emulate", "--error-rate", "1.5"]) == 2
    assert cli.main(["emulate", "--error-status", "418"]) == 2
    assert "429, 500 or 529" in capsys.readouterr().err


def test_emulate_builds_the_emulator_from_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The knob flags become the emulator's default knobs; host and port reach ``serve``; the
    SIGTERM handler installed while serving is put back."""
    seen: dict[str, Any] = {}
    before = signal.getsignal(signal.SIGTERM)

    def fake_serve(emu: emulator.Emulator, **kwargs: Any) -> None:
        seen.update(kwargs, emulator=emu)

    monkeypatch.setattr(emulator, "serve", fake_serve)
    argv = ["emulate", "--host", "127.0.0.2", "--port", "0", "--latency-ms", "5", "--ttft-ms", "20"]
    argv += [
        "--error-rate",
        "0.25",
        "--error-status",
        "429",
        "--miss-rate",
        "0.1",
        "--seed",
        "7",
        "--manual-clock",
    ]
    assert cli.main(argv) == 0
    emu = seen.pop("emulator")
    assert emu.cache.knobs == Knobs(
        latency_ms=5, ttft_ms=20, error_rate=0.25, error_status=429, miss_rate=0.1, seed=7
    )
    assert emu.manual_clock
    assert seen["host"] == "127.0.0.2" and seen["port"] == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_missing_cli_extra_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without typer installed, ``main`` names the extra to install and returns 2."""
    monkeypatch.setitem(sys.modules, "typer", None)
    assert cli.main(["emulate"]) == 2
    assert "cachebench[cli]" in capsys.readouterr().err


def _get(url: str, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
        return json.loads(r.read())


def _status(url: str, data: bytes) -> tuple[int, Any]:
    try:
        return 200, _get(url, data)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_control_routes_validate_and_scope_knobs() -> None:
    """``/_emulator/knobs`` changes the given fields (of one scope when named) and rejects
    unknown ones; ``/_emulator/advance`` needs a manual clock (409 on the wall clock);
    ``/_emulator/reset`` restores the initial knobs."""
    emu = Emulator(knobs=Knobs(latency_ms=1))
    with EmulatorServer(emu) as server:
        url = f"{server.url}/_emulator"
        assert _status(f"{url}/knobs", b'{"ttft_ms": 5, "scope": "sk-a"}')[1]["ttft_ms"] == 5
        assert emu.knobs_for("sk-a") == Knobs(latency_ms=1, ttft_ms=5)
        assert emu.knobs_for("sk-b") == Knobs(latency_ms=1)
        assert _status(f"{url}/knobs", b'{"speed": 2}') == (400, {"error": "unknown knobs: speed"})
        assert _status(f"{url}/knobs", b"{oops")[0] == 400
        assert _status(f"{url}/advance", b'{"seconds": 5}')[0] == 409
        assert _status(f"{url}/reset", b"")[0] == 200
        assert emu.knobs_for("sk-a") == Knobs(latency_ms=1)
        assert _get(f"{url}/health")["manual_clock"] is False


def test_cache_emulator_fixture(cache_emulator: CacheEmulator) -> None:
    """The fixture's URLs, its clock (shared with the emulator), knobs and reset."""
    url = cache_emulator.url
    assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
    assert cache_emulator.openai_base_url == f"{url}/v1"
    assert (
        cache_emulator.anthropic_base_url
        == cache_emulator.bedrock_endpoint_url
        == cache_emulator.gemini_base_url
        == url
    )
    start = cache_emulator.clock()
    assert cache_emulator.advance(10) == start + 10 == cache_emulator.emulator.clock()
    assert cache_emulator.set_knobs(error_rate=1.0, scope="sk-x").error_rate == 1.0
    assert cache_emulator.emulator.knobs_for(None) == Knobs()
    cache_emulator.reset()
    assert cache_emulator.emulator.knobs_for("sk-x") == Knobs()


def test_emulate_serves_until_terminated() -> None:
    """``cachebench emulate --port 0`` announces its URL, serves all four provider families
    (anthropic, bedrock, openai, gemini), answers the control routes and exits cleanly on
    SIGTERM."""
    cmd = [
        sys.executable,
        "-m",
        "cachebench.cli",
        "emulate",
        "--port",
        "0",
        "--manual-clock",
        "--ttft-ms",
        "1",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("cachebench emulator on http://127.0.0.1:"), first + proc.stderr.read()  # type: ignore[union-attr]
            url = first.split()[-1]
            health = _get(f"{url}/_emulator/health")
            assert health["status"] == "ok" and health["manual_clock"] is True
            assert set(health["families"]) == {"anthropic", "bedrock", "openai", "gemini"}
            assert _get(f"{url}/_emulator/advance", b'{"seconds": 300}')["clock"] == health["clock"] + 300
            knobs = _get(f"{url}/_emulator/knobs", b'{"latency_ms": 3}')
            assert (knobs["latency_ms"], knobs["ttft_ms"]) == (3, 1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        assert proc.returncode == 0


def test_emulate_on_a_port_in_use_says_so_in_one_line() -> None:
    """A second ``cachebench emulate`` on a taken port exits 1 with one clear line on stderr
    (what happened, and ``--port 0``), not a traceback."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cachebench", "emulate", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port 0" in line


def test_version_is_printed_by_main_and_by_python_m_cachebench(capsys: pytest.CaptureFixture[str]) -> None:
    """``cachebench --version`` prints ``cachebench <version>`` and exits 0, in process and as
    ``python -m cachebench`` in a real subprocess."""
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"cachebench {cachebench.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "cachebench", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"cachebench {cachebench.__version__}\n", "")


def _commands() -> list[list[str]]:
    """The root and every command, as the argv prefix that names it."""
    group = typer.main.get_command(cli.build())
    assert isinstance(group, typer.core.TyperGroup)
    return [[], *([name] for name in sorted(group.commands))]


def _assert_fits_80_columns(text: str) -> None:
    usage, *rest = text.splitlines()
    assert usage.startswith("Usage: cachebench") and len(usage) <= 80
    for line in rest:
        assert len(line) <= 80, line
        assert not line.endswith(("...", "\N{HORIZONTAL ELLIPSIS}")), line  # a line cut short


@pytest.mark.parametrize("columns", ["80", "200"])
def test_help_of_every_command_fits_80_columns_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: str
) -> None:
    """``--help`` of the root and of every command, through ``main(argv)``, is at most 80
    columns wide with nothing cut short, on an 80-column terminal and on a wider one."""
    monkeypatch.setenv("COLUMNS", columns)
    commands = _commands()
    assert ["emulate"] in commands
    for argv in commands:
        assert cli.main([*argv, "--help"]) == 0
        _assert_fits_80_columns(capsys.readouterr().out)


def test_help_of_every_command_fits_80_columns_in_a_subprocess() -> None:
    """The installed ``cachebench`` script and ``python -m cachebench`` print every command's
    help within 80 columns (COLUMNS=80), exiting 0."""
    script = shutil.which("cachebench", path=os.path.dirname(sys.executable))
    assert script is not None
    env = {**os.environ, "COLUMNS": "80"}
    for launcher in ([script], [sys.executable, "-m", "cachebench"]):
        for argv in _commands():
            done = subprocess.run(
                [*launcher, *argv, "--help"], capture_output=True, text=True, timeout=60, env=env
            )
            assert done.returncode == 0, done.stderr
            _assert_fits_80_columns(done.stdout)


def test_emulate_help_lists_every_control_route(capsys: pytest.CaptureFixture[str]) -> None:
    """``emulate --help`` lists each control route of the emulator's app, method and path,
    one line each, and no route the app does not have."""
    routes = {
        (method, route.path)
        for route in emulator.create_app().routes
        if isinstance(route, Route) and route.path.startswith("/_emulator/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert len(routes) >= 4
    assert cli.main(["emulate", "--help"]) == 0
    listed = re.findall(r"^\s+(GET|POST)\s+(/_emulator/\S+)\s+\S", capsys.readouterr().out, re.MULTILINE)
    assert sorted(listed) == sorted(routes)


def test_emulate_passes_the_body_limit_and_any_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--max-body-mb`` (MiB, default 32) and ``--any-model`` (default off) reach the
    emulator; a limit below 1 MiB is a usage error."""
    seen: list[emulator.Emulator] = []
    monkeypatch.setattr(emulator, "serve", lambda emu, **kwargs: seen.append(emu))
    assert cli.main(["emulate"]) == 0
    assert cli.main(["emulate", "--max-body-mb", "2", "--any-model"]) == 0
    assert [(e.max_body_bytes, e.any_model) for e in seen] == [
        (32 * 1024 * 1024, False),
        (2 * 1024 * 1024, True),
    ]
    assert cli.main(["emulate", "--max-body-mb", "0"]) == 2
