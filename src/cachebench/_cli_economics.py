"""``cachebench simulate TRACE``: a trace replayed under caching strategies side by side
(:func:`cachebench.economics.simulate`). ``cli.py`` adds it to the application.

Exit 0 when it simulated; 2 on a usage error or a trace that cannot be read (one message naming
``file:line`` on stderr). No ``from __future__ import annotations``: typer reads the
annotations at run time.
"""

from typing import Annotated

import typer

from ._cli_planner import Json


def _fail(message: str) -> typer.Exit:
    typer.echo(f"cachebench simulate: {message}", err=True)
    return typer.Exit(2)


def add_economics_commands(app: typer.Typer) -> None:
    @app.command(short_help="Replay a trace under caching strategies side by side.")
    def simulate(
        trace: Annotated[
            str,
            typer.Argument(metavar="TRACE", help="A trace: JSON Lines (.jsonl, .gz).", show_default=False),
        ],
        strategy: Annotated[
            list[str] | None,
            typer.Option(
                "--strategy",
                "-s",
                help="A strategy (repeat for more): none, current, ttl=1h, layers=0:1h,-1:5m, warm=4m,"
                " miss_aware; joined with + (current+warm=4m). Default: a usual set.",
            ),
        ] = None,
        ttft_ms: Annotated[
            float,
            typer.Option(
                "--ttft-ms",
                help="When responses start (their writes readable), where the trace does not say.",
                min=0.0,
            ),
        ] = 0.0,
        json: Json = False,
        model: Annotated[
            str | None, typer.Option("--model", help="The model, for trace lines that name none.")
        ] = None,
    ) -> None:
        """Replay TRACE (calls as their cached layers' sizes, docs/economics.md) through the
        cache model once per strategy and print hit ratio, cost, saving, avoidable cost
        (concurrent writes), re-writes after expiry and the warmer's cost per strategy."""
        import orjson

        from .economics import Strategy, TraceError
        from .economics import simulate as run

        try:
            chosen = [Strategy.parse(s) for s in strategy] if strategy else None
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--strategy") from None
        try:
            result = run(trace, chosen, model=model, ttft_s=ttft_ms / 1000.0)
        except TraceError as e:
            raise _fail(str(e)) from None
        except ValueError as e:
            raise _fail(str(e)) from None
        if json:
            typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            typer.echo(str(result))
