"""``cachebench plan FILE``: where a flow's breakpoints go, from its sample requests (the same
files ``lint`` reads: JSON, JSON Lines, wrappers). ``cli.py`` adds it to the application.

It prints the plan (its breakpoints, each with its tokens, sharing and reads per write, and the
layers), or ``--json``; ``--apply OUT`` writes every sample with the plan's markers set to OUT
as JSON Lines (``-``: standard output, and the plan goes to standard error). Exit 0 when it planned, 2 on a usage error or a file
that cannot be read or planned. No ``from __future__ import annotations``: typer reads the
annotations at run time.
"""

from typing import Annotated, Any

import typer

from ._cli_help import FilesCommand
from ._cli_planner import Files, Json, ModelOption, ProviderOption, _check_options, read_file


def _fail(message: str) -> typer.Exit:
    typer.echo(f"cachebench plan: {message}", err=True)
    return typer.Exit(2)


def add_plan_command(app: typer.Typer) -> None:
    @app.command(cls=FilesCommand, short_help="Place a flow's breakpoints from sample requests.")
    def plan(
        files: Files,
        calls_per_hour: Annotated[
            float | None, typer.Option(help="Score expected savings per hour at this rate.", min=0.0)
        ] = None,
        users: Annotated[
            int | None, typer.Option(help="Users the calls are spread over (with --calls-per-hour).", min=1)
        ] = None,
        turns: Annotated[
            float | None,
            typer.Option("--turns", help="Turns per session (with --calls-per-hour).", min=1.0),
        ] = None,
        apply_to: Annotated[
            str | None,
            typer.Option(
                "--apply",
                metavar="OUT",
                help="Write the samples with the markers set (JSON Lines; - for stdout).",
            ),
        ] = None,
        json: Json = False,
        provider: ProviderOption = None,
        model: ModelOption = None,
    ) -> None:
        """Find the layers of the sample requests in FILE... (what all share, what some share,
        the conversation) and place the provider's breakpoints where they save the most. The
        samples are replayed in order through the cache model, or, with --calls-per-hour,
        scored by expected reads per write (docs/planner.md)."""
        import orjson

        from .planner import Traffic, apply
        from .planner import plan as make_plan

        chosen = _check_options("text", json, provider)
        if calls_per_hour is None and (users is not None or turns is not None):
            raise typer.BadParameter("--users and --turns describe traffic: give --calls-per-hour too")
        items = []
        for path in files:
            found, problems = read_file(path, chosen, model)
            if problems:
                raise _fail(str(problems[0]))
            items += found
        bodies = [item.body for item in items]
        kinds = {(item.provider, item.model) for item in items}
        given_provider, given_model = kinds.pop() if len(kinds) == 1 else (chosen, model)
        try:
            traffic = Traffic(calls_per_hour, users, turns) if calls_per_hour is not None else None
            made = make_plan(bodies, traffic, provider=given_provider, model=given_model)
        except (TypeError, ValueError) as e:
            raise _fail(str(e)) from None
        to_stderr = apply_to == "-"  # standard output carries the applied requests
        if json:
            typer.echo(orjson.dumps(made.as_dict(), option=orjson.OPT_INDENT_2).decode(), err=to_stderr)
        else:
            typer.echo(str(made), err=to_stderr)
            for layer in made.layers:
                typer.echo(
                    f"  layer blocks {layer.start}-{layer.end}: {layer.tokens:,} tokens, {layer.kind}"
                    f" ({layer.shared_by} of {layer.samples} samples)",
                    err=to_stderr,
                )
        if apply_to is not None:
            lines = b"".join(orjson.dumps(apply(body, made)) + b"\n" for body in bodies)
            _write(apply_to, lines)


def _write(target: str, data: bytes) -> Any:
    import sys

    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        with open(target, "wb") as f:
            f.write(data)
    except OSError as e:
        raise _fail(f"cannot write {target}: {e.strerror or e}") from None
