"""The ``cachebench`` command (also ``python -m cachebench``).

``cachebench emulate --port 8790`` serves the local provider emulator (see
:mod:`cachebench.emulator`) until interrupted; the knob flags (``--latency-ms``,
``--ttft-ms``, ``--error-rate``, ``--error-status``, ``--miss-rate``, ``--seed``) set its
default knobs, ``--manual-clock`` makes time move only through ``POST /_emulator/advance``,
``--max-body-mb`` sets the request size limit and ``--any-model`` serves any model name.
``cachebench --version`` prints the version. Help is plain text wrapped to the terminal
(80 columns at most), so it reads the same in a pipe, a log and a narrow terminal.

Needs the ``cli`` extra (typer, and the emulator's starlette and uvicorn):
the ``cli`` extra (``pip install -e '.[cli]'`` in a clone). Imports stay inside the functions so that
``import cachebench.cli`` costs nothing; no ``from __future__ import annotations`` here, since
typer reads the option annotations at run time.
"""

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from ._extras import install_hint

if TYPE_CHECKING:
    import typer

_MISSING = f"cachebench: the command line needs the 'cli' extra: {install_hint('cli')}"


def _announce(url: str) -> None:
    print(f"cachebench emulator on {url}", flush=True)
    print(f"  anthropic  base_url={url}", flush=True)
    print(f"  openai     base_url={url}/v1", flush=True)
    print(f"  bedrock    endpoint_url={url}", flush=True)
    print(f"  gemini     base_url={url}", flush=True)


@contextlib.contextmanager
def _exit_cleanly_on_sigterm() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM, then re-raises it to the previous handler:
    make that handler a clean exit (code 0) instead of death by signal, while serving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# The emulator's control routes (``emulator/app.py``), one line each, for ``emulate --help``;
# tests/test_cli.py checks the list against the app's routes.
CONTROL_ROUTES = """\b
Control endpoints, beside the provider routes:
  GET  /_emulator/health   status, clock, families, limits
  POST /_emulator/knobs    {"latency_ms": 50, "scope": "sk-1"}: set knobs
  POST /_emulator/reset    forget every cache entry, restore the knobs
  POST /_emulator/advance  {"seconds": 300}: move a --manual-clock"""


def _print_version(value: bool) -> None:
    import typer

    if value:
        from . import __version__

        typer.echo(f"cachebench {__version__}")
        raise typer.Exit()


def build() -> "typer.Typer":
    """The typer application (its commands import what they serve when they run)."""
    import typer

    app = typer.Typer(
        name="cachebench",
        help="Prompt-cache observability for LLM apps.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # click's plain help: wrapped to the width, never cropped
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
            ),
        ] = False,
    ) -> None:
        """Prompt-cache observability for LLM apps."""

    @app.command(epilog=CONTROL_ROUTES)
    def emulate(
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[
            int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)
        ] = 8790,
        latency_ms: Annotated[
            float, typer.Option(help="Extra time before each whole response.", min=0)
        ] = 0.0,
        ttft_ms: Annotated[
            float, typer.Option(help="Time before the first byte of each response.", min=0)
        ] = 0.0,
        error_rate: Annotated[
            float, typer.Option(help="Probability of an injected error.", min=0, max=1)
        ] = 0.0,
        error_status: Annotated[int, typer.Option(help="Injected error: 429, 500 or 529.")] = 529,
        miss_rate: Annotated[
            float, typer.Option(help="Probability of an isolated cache miss.", min=0, max=1)
        ] = 0.0,
        seed: Annotated[int | None, typer.Option(help="Seed for injected errors and misses.")] = None,
        manual_clock: Annotated[
            bool,
            typer.Option("--manual-clock", help="Time moves only through POST /_emulator/advance."),
        ] = False,
        max_body_mb: Annotated[
            int, typer.Option(help="Request size limit in MiB (past it: the provider's error).", min=1)
        ] = 32,
        any_model: Annotated[
            bool, typer.Option("--any-model", help="Serve any model name (default: known models only).")
        ] = False,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    ) -> None:
        """Serve the local provider emulator until Ctrl-C.

        It answers the Anthropic, OpenAI, Bedrock and Gemini HTTP APIs with their caching
        rules; point each SDK's base URL at the address it prints.
        """
        if error_status not in (429, 500, 529):
            raise typer.BadParameter("must be 429, 500 or 529", param_hint="--error-status")
        from .cachemodel import Knobs

        try:
            from .emulator import Emulator, ManualClock, serve
        except ImportError as e:
            typer.echo(f"{_MISSING} ({e})", err=True)
            raise typer.Exit(2)

        knobs = Knobs(
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            error_rate=error_rate,
            error_status=error_status,
            miss_rate=miss_rate,
            seed=seed,
        )
        emulator = Emulator(
            knobs=knobs,
            clock=ManualClock() if manual_clock else time.time,
            max_body_bytes=max_body_mb * 1024 * 1024,
            any_model=any_model,
        )
        with _exit_cleanly_on_sigterm():
            try:
                serve(emulator, host=host, port=port, log_level=log_level, announce=_announce)
            except OSError as e:  # binding: the port is taken, the address is not this machine's
                typer.echo(
                    f"cachebench emulate: cannot listen on {host}:{port}: {e.strerror or e}"
                    " (another emulator running? --port 0 picks a free port)",
                    err=True,
                )
                raise typer.Exit(1) from None

    from ._cli_economics import add_economics_commands
    from ._cli_plan import add_plan_command
    from ._cli_planner import add_planner_commands
    from ._cli_store import add_store_commands

    add_store_commands(app)
    add_planner_commands(app)
    add_plan_command(app)
    add_economics_commands(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        app = build()
    except ImportError:
        print(_MISSING, file=sys.stderr)
        return 2
    try:
        app(args=sys.argv[1:] if argv is None else list(argv), prog_name="cachebench")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run() -> None:
    """The ``cachebench`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
