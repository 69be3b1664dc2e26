"""``cachebench simulate TRACE``: a trace replayed under caching strategies side by side
(:func:`cachebench.economics.simulate`); ``cachebench advise [TRACE]``: per flow and layer,
cache it or not, 5m or 1h, and whether warming pays, from a trace or the store
(:func:`cachebench.economics.advise`). ``cli.py`` adds them to the application.

Exit 0 when it simulated or advised; 2 on a usage error or a trace that cannot be read (one
message naming ``file:line`` on stderr); 1 when the store cannot be read (as the store's other
commands). No ``from __future__ import annotations``: typer reads the annotations at run time.
"""

from typing import Annotated

import typer

from ._cli_planner import Json
from ._cli_store import DEFAULT_DB, Db, open_db


def _fail(message: str, command: str = "simulate") -> typer.Exit:
    typer.echo(f"cachebench {command}: {message}", err=True)
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

    @app.command(short_help="Per flow and layer: cache it or not, 5m or 1h, warm or not.")
    def advise(
        trace: Annotated[
            str | None,
            typer.Argument(
                metavar="[TRACE]",
                help="A trace (JSON Lines); without one, the calls in --db.",
                show_default=False,
            ),
        ] = None,
        warm_every: Annotated[
            float, typer.Option("--warm-every", help="Seconds between a warmer's calls.", min=1.0)
        ] = 240.0,
        json: Json = False,
        model: Annotated[
            str | None, typer.Option("--model", help="The model, for trace lines that name none.")
        ] = None,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Advise, per flow and layer, where breakpoints go and with which TTL, and whether a
        warmer or keep-alive pings pay, from TRACE or the calls stored in --db (their cached
        layers' sizes as the provider measured them). Money is per 30 days at the observed
        rate (docs/economics.md)."""
        import orjson

        from .economics import TraceError
        from .economics import advise as run

        try:
            if trace is not None:
                made = run(trace, model=model, warm_every_s=warm_every)
            else:
                store = open_db(db)
                try:
                    made = run(store, model=model, warm_every_s=warm_every)
                finally:
                    store.close()
        except TraceError as e:
            raise _fail(str(e), "advise") from None
        if json:
            typer.echo(orjson.dumps(made.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            typer.echo(str(made))
