"""``cachebench simulate TRACE``: a trace replayed under caching strategies side by side
(:func:`cachebench.economics.simulate`); ``cachebench advise [TRACE]``: per flow and layer,
cache it or not, 5m or 1h, and whether warming pays, from a trace or the store
(:func:`cachebench.economics.advise`). ``cli.py`` adds them to the application.

Exit 0 when it simulated or advised; 2 on a usage error or a trace (or prices file) that cannot
be read or has no call (one message naming ``file:line`` on stderr); 1 when the store cannot be
read (as the store's other commands). No ``from __future__ import annotations``: typer reads
the annotations at run time.
"""

from typing import Annotated, Any

import typer

from ._cli_planner import Json
from ._cli_store import DEFAULT_DB, Db, open_db
from ._cli_store import fail as store_failed

Model = Annotated[str | None, typer.Option("--model", help="The model, for trace lines that name none.")]
Prices = Annotated[
    str | None,
    typer.Option(
        "--prices",
        metavar="FILE",
        help='Prices in USD per million tokens, as JSON: {"model": {"input": 3, "output": 15, ...}}'
        " (for models genai-prices does not know, or to override it).",
    ),
]
TtftMs = Annotated[
    float,
    typer.Option(
        "--ttft-ms",
        help="When responses start (their writes readable), where the trace does not say.",
        min=0.0,
    ),
]


def _fail(message: str, command: str) -> typer.Exit:
    typer.echo(f"cachebench {command}: {message}", err=True)
    return typer.Exit(2)


def _prices(path: str | None, command: str) -> Any:
    """The prices file's overrides, checked as a tracker checks them."""
    if path is None:
        return None
    import orjson

    from .pricing import validate_overrides

    try:
        with open(path, "rb") as f:
            found = orjson.loads(f.read())
        validate_overrides(found)
    except OSError as e:
        raise _fail(f"cannot read {path}: {e.strerror or e}", command) from None
    except orjson.JSONDecodeError as e:
        raise _fail(f"{path}: not JSON ({e})", command) from None
    except ValueError as e:
        raise _fail(f"{path}: {e}", command) from None
    return found


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
                help="A strategy (repeat for more): none, current, advised, plan (with --requests),"
                " ttl=1h, layers=0:1h,-1:5m, warm=4m, miss_aware; joined with + (current+warm=4m)."
                " Default: a usual set.",
            ),
        ] = None,
        ttft_ms: TtftMs = 0.0,
        flow: Annotated[str | None, typer.Option("--flow", help="Only this flow's calls.")] = None,
        requests: Annotated[
            bool,
            typer.Option(
                "--requests",
                help="TRACE is saved requests (as explain reads them: Anthropic and Bedrock bodies or"
                " wrappers), replayed as they are marked, and as the planner's plan for each flow"
                " would mark them (-s plan).",
            ),
        ] = False,
        json: Json = False,
        model: Model = None,
        prices: Prices = None,
    ) -> None:
        """Replay TRACE (calls as their cached layers' sizes, docs/economics.md; or saved requests
        with --requests) through the cache model once per strategy and print hit ratio, cost,
        saving, avoidable cost (concurrent writes), re-writes after expiry and the warmer's cost
        per strategy."""
        import orjson

        from .economics import DEFAULT_STRATEGIES, Strategy, plans_for_requests, trace_from_requests
        from .economics import simulate as run
        from .economics._requests import read_once

        try:
            chosen = [Strategy.parse(s) for s in strategy] if strategy else None
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--strategy") from None
        if requests and chosen is None:  # (the usual set, and the planner's plan)
            chosen = [Strategy.parse(s) for s in (*DEFAULT_STRATEGIES, "plan")]
        if not requests and chosen is not None and any(s.marks == "plan" for s in chosen):
            raise typer.BadParameter(
                "'plan' replays saved requests as the planner would mark them: give --requests",
                param_hint="--strategy",
            )
        overrides = _prices(prices, "simulate")
        source: Any = trace
        planned = None
        plans: dict[str, Any] = {}
        try:
            if requests:
                saved = read_once(trace)  # (read once: the trace, the plans and the planned trace)
                source = trace_from_requests(saved, model=model)
                if chosen is not None and any(s.marks == "plan" for s in chosen):
                    plans = plans_for_requests(saved, model=model, flows=None if flow is None else [flow])
                    planned = trace_from_requests(saved, plans=plans, model=model)
            result = run(
                source,
                chosen,
                model=model,
                prices=overrides,
                ttft_s=ttft_ms / 1000.0,
                flow=flow,
                planned=planned,
            )
        except ValueError as e:  # (TraceError is one)
            hint = (
                " (a file of saved requests? give --requests)" if "unknown field 'request'" in str(e) else ""
            )
            raise _fail(f"{e}{hint}", "simulate") from None
        if not result.calls:
            raise _fail(f"{trace}: no call in it", "simulate")
        if json:
            out = result.as_dict()
            if plans:
                out["plans"] = {name: plan.as_dict() for name, plan in plans.items()}
            typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        else:
            for name, plan in plans.items():
                typer.echo(f"plan for flow {name}: {plan}")
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
        ttft_ms: TtftMs = 0.0,
        json: Json = False,
        model: Model = None,
        prices: Prices = None,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Advise, per flow and layer, where breakpoints go and with which TTL, and whether a
        warmer or keep-alive pings pay, from TRACE or the calls stored in --db (their cached
        layers' sizes as the provider measured them). Money is per 30 days at the observed
        rate (docs/economics.md)."""
        import orjson

        from .economics import advise as run
        from .store import StoreError

        overrides = _prices(prices, "advise")
        options: dict[str, Any] = {
            "model": model,
            "prices": overrides,
            "warm_every_s": warm_every,
            "ttft_s": ttft_ms / 1000.0,
        }
        try:
            if trace is not None:
                from .economics._compiled import compile_trace

                compiled = compile_trace(
                    trace, model=model, prices=overrides, ttft_s=ttft_ms / 1000.0, unpriced_ok=True
                )
                if not len(compiled) and not compiled.skipped:
                    raise _fail(f"{trace}: no call in it", "advise")
                made = run(compiled, warm_every_s=warm_every)
            else:
                store = open_db(db)
                try:
                    made = run(store, **options)
                finally:
                    store.close()
        except StoreError as e:  # (the store's other commands' exit code)
            raise store_failed(str(e).removeprefix("cachebench ")) from None
        except ValueError as e:  # (TraceError is one)
            raise _fail(str(e), "advise") from None
        if json:
            typer.echo(orjson.dumps(made.as_dict(), option=orjson.OPT_INDENT_2).decode())
        else:
            typer.echo(str(made))
