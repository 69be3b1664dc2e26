"""``cachebench explain FILE...``: saved request bodies replayed offline
(:func:`cachebench.planner.explain_requests`); ``_cli_store``'s ``explain`` runs this when its
arguments are request files.

It prints the miss causes as a table (calls, tokens not read, the avoidable part and its cost),
then one line per request that missed something avoidable (every request with ``--all``):
where it came from, its flow, the cause, the place (section, block, bytes) and the kind of
change, what it would read and write, what was avoidable, and the fix; then the lines skipped.
``--json`` prints :meth:`~cachebench.planner.OfflineReport.as_json` instead. A file is JSON
Lines or a JSON file holding one body or a list of them, read as ``cachebench lint`` reads it
(:func:`cachebench.planner._saved.read_file`).

Exit code 0 when at least one request was replayed (misses or not); 1 when a file cannot be
read, or when nothing was replayed (no request in the files, or every line skipped: nothing to
explain is a problem with the input, said on stderr with the first reasons); 2 for a bad option.
"""

import os
from typing import Annotated, Any, NamedTuple

import typer

__all__ = ["Options", "explain_files", "is_request_file"]

# Lines printed of the misses and of the skipped lines before "... and N more".
SHOWN = 50
# Skipped lines named on stderr when nothing was replayed.
FIRST_REASONS = 3
# Names of request files, told from ids even when the file does not exist (to say so).
_SUFFIXES = tuple(s + gz for s in (".json", ".jsonl", ".ndjson") for gz in ("", ".gz"))
_CAPTION = (
    "not read: tokens of the cacheable prefix the requests did not read from the cache; avoidable: "
    "what they could have read had the prompt been built differently (a volatile value, an order, a "
    "serialisation), and what that cost beyond a read"
)

# The explain command's argument and its options for files (``_cli_store`` declares the command).
Targets = Annotated[
    list[str],
    typer.Argument(
        metavar="ID_OR_FILES",
        help="A call's id (a number) or an incident's id; or files of saved requests (JSON Lines, or JSON: a body or a list).",
    ),
]
All = Annotated[
    bool, typer.Option("--all", help="Files: every request, not only those with an avoidable miss.")
]
ProviderOption = Annotated[
    str | None, typer.Option("--provider", help="Files: the provider of requests whose shape does not tell.")
]
Model = Annotated[str | None, typer.Option("--model", help="Files: the model of requests that name none.")]
Flow = Annotated[
    str | None,
    typer.Option("--flow", help="Files: the flow of requests that name none (default: provider/model)."),
]
Interval = Annotated[
    float, typer.Option("--interval", help="Files: seconds between requests without a timestamp.", min=0)
]
Start = Annotated[
    str | None,
    typer.Option(
        "--start", help="Files: when the first request without a timestamp was made (default 2026-01-01)."
    ),
]


class Options(NamedTuple):
    all_rows: bool
    provider: str | None
    model: str | None
    flow: str | None
    interval: float
    start: str | None

    def given(self) -> list[str]:
        """The options given a value other than their default."""
        defaults = Options(False, None, None, None, 1.0, None)
        names = ("--all", "--provider", "--model", "--flow", "--interval", "--start")
        return [n for n, v, d in zip(names, self, defaults, strict=True) if v != d]


def is_request_file(arg: str) -> bool:
    """An argument that names saved requests rather than a stored call or incident."""
    return os.path.isfile(arg) or arg.endswith(_SUFFIXES)


def explain_files(targets: list[str], options: Options, *, json: bool) -> bool:
    """Replay ``targets`` and print what the replay found, when they are request files (True);
    False when they are one call or incident id for the store (a usage error otherwise)."""
    if not any(is_request_file(t) for t in targets):
        if len(targets) > 1:
            raise typer.BadParameter(
                "one call or incident id, or files of saved requests", param_hint="CALL_OR_INCIDENT"
            )
        given = options.given()
        if given:
            raise typer.BadParameter("applies to files of saved requests only", param_hint=given[0])
        return False
    from ._cli_store import console, fail
    from .planner._saved import UnreadableFile
    from .planner.offline import explain_requests

    for f in targets:
        if not os.path.isfile(f):
            raise fail(f"no such file: {f}" if not os.path.exists(f) else f"not a file: {f}")
    if options.provider is not None:
        from .types import Provider

        try:
            Provider.parse(options.provider)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--provider") from None
    try:
        report = explain_requests(
            targets,
            provider=options.provider,
            model=options.model,
            flow=options.flow,
            interval_s=options.interval,
            start=options.start,
        )
    except UnreadableFile as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except ValueError as exc:  # an option's value (the message names it)
        text = str(exc)
        if text.startswith("start: "):  # (explain_requests names its argument; the option is --start)
            raise typer.BadParameter(text.removeprefix("start: "), param_hint="--start") from None
        raise typer.BadParameter(text) from None
    if json:
        typer.echo(report.as_json(all_rows=options.all_rows))
    if not report.rows:
        raise fail(nothing_replayed(report, targets))
    if not json:
        out = console()
        print_summary(out, report, targets)
        print_rows(out, report, all_rows=options.all_rows)
        print_skipped(out, report)
    return True


def _skipped_unit(report: Any) -> str:
    """What the skipped are: requests when every one is an entry of a JSON list, else lines."""
    return "request" if all(s.index is not None for s in report.skipped) else "line"


def nothing_replayed(report: Any, files: list[str]) -> str:
    """Why no request was replayed: the files hold none, or every one was skipped (the first
    reasons)."""
    from ._cli_planner import plural

    names = ", ".join(files)
    skipped = report.skipped
    if not skipped:
        return f"nothing to explain: no request in {names}"
    unit = _skipped_unit(report)
    every = f"the only {unit} was" if len(skipped) == 1 else f"all {plural(len(skipped), unit)} were"
    lines = [f"nothing to explain: {every} skipped ({names}):"]
    lines += [f"  {s}" for s in skipped[:FIRST_REASONS]]
    if len(skipped) > FIRST_REASONS:
        lines.append(f"  ... and {len(skipped) - FIRST_REASONS:,} more (--json lists them all)")
    return "\n".join(lines)


def _usd(x: float | None) -> str:
    from .types import _usd

    return "-" if x is None else _usd(x)


def print_summary(out: Any, report: Any, files: list[str]) -> None:
    from rich.markup import escape

    from ._cli_planner import plural
    from .report import _label, _table

    total = report.total()
    names = ", ".join(files)
    skipped = f", {plural(total['skipped'], _skipped_unit(report))} skipped" if total["skipped"] else ""
    out.print(
        escape(f"Replayed {plural(total['requests'], 'request')} from {names}{skipped}."), soft_wrap=True
    )
    avoidable = (
        f"avoidable misses: {plural(total['avoidable_calls'], 'request')}, "
        f"{plural(total['avoidable_tokens'], 'token')}, {_usd(total['avoidable_cost_usd'])} beyond a read"
        if total["avoidable_calls"]
        else "no avoidable miss"
    )
    out.print(
        f"Read {plural(total['read'], 'token')} from the cache, wrote {total['written']:,}, "
        f"{total['uncached']:,} uncached; {avoidable}.",
        soft_wrap=True,
    )
    if not report.causes:
        out.print("No request missed the cache.")
        return
    table = _table("Miss causes", "cause", _CAPTION)
    for header in ("calls", "not read", "avoidable calls", "avoidable tokens", "avoidable cost"):
        table.add_column(header, justify="right", no_wrap=True)
    for c in report.causes:
        table.add_row(
            _label(c.cause),
            f"{c.calls:,}",
            f"{c.unread_tokens:,}",
            f"{c.avoidable_calls:,}",
            f"{c.avoidable_tokens:,}",
            _usd(c.avoidable_cost_usd) if c.avoidable_calls else "",
        )
    out.print(table)


def row_line(row: Any) -> str:
    """One request on one line: where, flow, cause and place, tokens, what was avoidable, the fix."""
    from ._cli_planner import plural
    from .advice import call_advice

    m = row.metrics
    what = row.miss_cause or "no miss"
    d = row.diff
    if d is not None:
        change = d.kind + (f" {d.value_type}" if d.value_type else "")
        what += f" at {d.section} block {d.block_index}, bytes {d.byte_start}-{d.byte_end} ({change})"
    line = (
        f"{row.source}:{row.line} {m.flow}: {what}: read {row.read:,}, wrote {row.written:,}, "
        f"uncached {row.uncached:,}"
    )
    if row.avoidable_tokens:
        line += f"; avoidable {plural(row.avoidable_tokens, 'token')} ({_usd(row.avoidable_cost_usd)})"
    found = call_advice(m)
    if found is not None:
        line += f". Fix: {found[1]}."
    return line


def print_rows(out: Any, report: Any, *, all_rows: bool) -> None:
    from rich.markup import escape

    rows = report.rows if all_rows else report.misses
    if not rows:
        return
    title = "Every request" if all_rows else f"Requests with an avoidable miss ({len(rows):,})"
    out.print(f"\n[bold]{title}[/]")
    shown = rows if all_rows else rows[:SHOWN]
    for row in shown:
        out.print(escape(row_line(row)), soft_wrap=True, highlight=False)
    if len(rows) > len(shown):
        out.print(f"... and {len(rows) - len(shown):,} more (--all lists every request, --json them all)")


def print_skipped(out: Any, report: Any) -> None:
    from rich.markup import escape

    if not report.skipped:
        return
    out.print(f"\n[bold]Skipped {_skipped_unit(report)}s ({len(report.skipped):,})[/]")
    for s in report.skipped[:SHOWN]:
        out.print(escape(str(s)), soft_wrap=True, highlight=False)
    if len(report.skipped) > SHOWN:
        out.print(f"... and {len(report.skipped) - SHOWN:,} more (--json lists them all)")
