"""The ``cachebench`` commands that read and keep a store: report, regressions, explain, tail,
export, import and prune (``cli.py`` adds them to the application). ``explain`` given files of
saved requests replays them offline instead (``_cli_offline``).

Each takes ``--db`` (default: ``CACHEBENCH_DB``, else ``./cachebench.db``), a SQLite path or a
``sqlite:///`` / ``postgresql://`` URL; the reports take ``--json``. Errors (no such database,
a schema of a newer cachebench, a file that cannot be read) are one line on stderr and exit
code 1; a bad option is click's usage error (exit code 2). No ``from __future__ import
annotations``: typer reads the annotations at run time.
"""

import csv
import os
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from . import _cli_offline as offline
from ._cli_help import FilesCommand
from .store import DEFAULT_PATH

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="CACHEBENCH_DB",
        help="The store: a SQLite file, sqlite:///PATH or postgresql://URL (default: $CACHEBENCH_DB, else ./cachebench.db).",
        show_envvar=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Since = Annotated[
    str | None, typer.Option(help="Calls from this time: a span back from now (24h, 30d) or a UTC date/time.")
]
Until = Annotated[str | None, typer.Option(help="Calls before this time (same forms as --since).")]
DEFAULT_DB = DEFAULT_PATH


def fail(message: str) -> "typer.Exit":
    typer.echo(f"cachebench: {message}", err=True)
    return typer.Exit(1)


def open_db(db: str, *, create: bool = False, write: bool = False) -> Any:
    """The store ``--db`` names; a reader's must exist (a typo must not create an empty one),
    and a command that writes (``write``) is refused a read-only one at once."""
    from .store import StoreError, open_store, sqlite_path

    try:
        path = sqlite_path(db)
        if path is not None and not create and not os.path.exists(path):
            raise fail(
                f"no such database: {path} (record calls with CacheTracker(store='sqlite:///{path}'), "
                "run `cachebench import`, or pass --db)"
            )
        store = open_store(db)
        if write:
            try:
                store.require_writable()
            except StoreError:
                store.close()
                raise
        return store
    except StoreError as exc:
        raise fail(str(exc).removeprefix("cachebench ")) from None


def shown(db: str) -> str:
    """The database as messages name it: a URL's password hidden."""
    if "://" not in db:
        return db
    from .store.postgres import _without_password

    return _without_password(db)


def span(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """--since and --until as times, the first before the second."""
    lo, hi = when(since, "--since"), when(until, "--until")
    if lo is not None and hi is not None and lo >= hi:
        raise typer.BadParameter(f"--since ({since}) must be before --until ({until})", param_hint="--since")
    return lo, hi


def when(text: str | None, option: str) -> float | None:
    from .report import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def console() -> Any:
    import shutil

    from rich.console import Console

    # A report's table is wide: never narrower than 150 columns (a pipe, a log, a narrow
    # terminal scroll sideways rather than crop the figures).
    return Console(highlight=False, width=max(150, shutil.get_terminal_size((150, 40)).columns))


def add_store_commands(app: typer.Typer) -> None:
    @app.command(short_help="Cost, savings and hit ratios, grouped.")
    def report(
        by: Annotated[str, typer.Option(help="Group by flow, prefix, model, provider or day.")] = "flow",
        since: Since = None,
        until: Until = None,
        compare_at: Annotated[
            str | None,
            typer.Option(help="Compare before and after this time (a deploy), same forms as --since."),
        ] = None,
        top: Annotated[
            int | None,
            typer.Option(help="Show only the N most expensive rows (the total still counts all).", min=1),
        ] = None,
        json: Json = False,
        db: Db = DEFAULT_DB,
    ) -> None:
        """What caching did: calls, hit ratio, tokens read, written and uncached, cost, cost
        without cache, saved and avoidable cost, per flow, prefix, model, provider or day."""
        from . import report as reports

        if by not in ("flow", "prefix", "model", "provider", "day"):
            raise typer.BadParameter("must be flow, prefix, model, provider or day", param_hint="--by")
        lo, hi = span(since, until)
        at = when(compare_at, "--compare-at")
        store = open_db(db)
        try:
            if at is not None:
                comp = reports.compare(store, at, by, since=lo, until=hi)
                if top is not None:
                    comp = reports.top_comparison(comp, top)
                if json:
                    typer.echo(reports.as_json(comp))
                else:
                    reports.print_comparison(console(), comp)
                return
            rep = reports.report(store, by, since=lo, until=hi)
            if top is not None:
                rep = reports.top(rep, top)
            if json:
                typer.echo(reports.as_json(rep))
            else:
                reports.print_report(console(), rep)
        finally:
            store.close()

    @app.command(short_help="Serve the dashboard on 127.0.0.1.")
    def dashboard(
        db: Db = DEFAULT_DB,
        port: Annotated[int, typer.Option(help="The port to serve on.", min=1, max=65535)] = 8501,
    ) -> None:
        """Serve the Streamlit dashboard of a store on http://127.0.0.1:PORT until interrupted:
        key figures, flows, incidents and what-if replays. Needs the 'dashboard' extra."""
        from . import dashboard as board

        if not board.available():
            raise fail(board.MISSING)
        from .dashboard.data import DashboardError, open_database

        try:
            open_database(db).close()
        except DashboardError as exc:
            raise fail(str(exc)) from None
        import socket

        with socket.socket() as probe:
            # (as the server will: a port whose last connections are closing is free)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise fail(
                    f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc} (another server? pass --port)"
                ) from None
        typer.echo(f"cachebench dashboard of {shown(db)} on http://127.0.0.1:{port} (Ctrl+C stops it)")
        raise typer.Exit(board.serve(db, port))

    @app.command(short_help="Incidents, each with its id.")
    def regressions(
        since: Since = None,
        flow: Annotated[str | None, typer.Option(help="Only this flow's incidents.")] = None,
        open_only: Annotated[bool, typer.Option("--open", help="Only incidents still open.")] = False,
        json: Json = False,
        db: Db = DEFAULT_DB,
    ) -> None:
        """The incidents (hit-ratio drops, prefix churn): where the prompt changed, the cost,
        why and the fix. Each starts with its id, for `cachebench explain ID`."""
        from . import report as reports

        lo = when(since, "--since")
        store = open_db(db)
        try:
            found = store.incidents(since=lo, flow=flow, open_only=open_only)
        finally:
            store.close()
        if json:
            typer.echo(reports.as_json(found))
        else:
            reports.print_incidents(console(), found)

    @app.command(
        cls=FilesCommand, short_help="Why a call missed or an incident opened; or replay saved requests."
    )
    def explain(
        targets: offline.Targets,
        json: Json = False,
        all_rows: offline.All = False,
        provider: offline.ProviderOption = None,
        model: offline.Model = None,
        flow: offline.Flow = None,
        interval: offline.Interval = 1.0,
        start: offline.Start = None,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Why a call missed (or an incident opened): what changed, where, the cost, the fix.

        Given files of saved request bodies (JSON Lines, in any provider's shape, no usage
        needed), replays them in time order through the cache model and says, per request,
        what it would read and write and why the rest misses, with a table per cause."""
        import orjson

        from .advice import explain as explain_text

        options = offline.Options(all_rows, provider, model, flow, interval, start)
        if offline.explain_files(targets, options, json=json):
            return
        call_or_incident = targets[0]
        store = open_db(db)
        try:
            found: Any = store.call(int(call_or_incident)) if call_or_incident.isdigit() else None
            if found is None:
                found = store.incident(call_or_incident)
        finally:
            store.close()
        if found is None:
            raise fail(f"no call or incident {call_or_incident!r} in {shown(db)}")
        subject = found.metrics if hasattr(found, "metrics") else found.regression
        text = explain_text(subject)
        if json:
            data = {"id": found.id, "explanation": text, **subject.as_dict()}
            typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
            return
        line = f"{found.id}: {subject}"
        typer.echo(line)
        if text not in line:  # (a call's or an incident's line usually ends with it)
            typer.echo(text)
        if subject.diff is not None:
            d = subject.diff
            typer.echo(
                f"diff: {d.section} block {d.block_index}, bytes {d.byte_start}-{d.byte_end}, "
                f"kind {d.kind}" + (f", value {d.value_type}" if d.value_type else "")
            )
            if d.before is not None or d.after is not None:
                typer.echo(f"  before: {d.before!r}\n  after:  {d.after!r}")

    @app.command(short_help="Calls as they are written.")
    def tail(
        lines: Annotated[
            int, typer.Option("-n", "--lines", help="Show this many recent calls first.", min=0)
        ] = 10,
        follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new calls.")] = True,
        interval: Annotated[float, typer.Option(help="Seconds between looks for new calls.", min=0.05)] = 0.5,
        flow: Annotated[str | None, typer.Option(help="Only this flow's calls.")] = None,
        json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Calls as they are written (Ctrl-C to stop), each with its id."""
        import orjson

        from .report import print_calls

        store = open_db(db)
        out = console()

        def show(calls: list[Any]) -> None:
            if json:
                for c in calls:
                    sys.stdout.write(orjson.dumps({"id": c.id, **c.metrics.as_dict()}).decode() + "\n")
                sys.stdout.flush()
            else:
                print_calls(out, calls)
                out.file.flush()

        try:
            recent = store.calls(flow=flow, limit=lines, newest=True) if lines else []
            show(recent)
            last = recent[-1].id if recent else (store.calls(limit=1, newest=True) or [None])[-1]
            last_id = last if isinstance(last, int) else last.id if last is not None else 0
            while follow:
                time.sleep(interval)
                new = store.calls(flow=flow, after_id=last_id, limit=1000)
                if new:
                    show(new)
                    last_id = new[-1].id
        except KeyboardInterrupt:
            pass
        finally:
            store.close()

    @app.command(short_help="Stored calls as CSV or JSON Lines.")
    def export(
        format: Annotated[
            str, typer.Option("--format", help="csv, jsonl, or trace (for cachebench simulate and advise).")
        ] = "jsonl",
        output: Annotated[
            str | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
        ] = None,
        since: Since = None,
        until: Until = None,
        db: Db = DEFAULT_DB,
    ) -> None:
        """The stored raw calls, one per row or line, with their ids; or (``--format trace``) as
        a trace of their cached layers' sizes (docs/economics.md)."""
        if format not in ("csv", "jsonl", "trace"):
            raise typer.BadParameter("must be csv, jsonl or trace", param_hint="--format")
        lo, hi = span(since, until)
        store = open_db(db)
        try:
            with _output(output) as fh:
                n = _write_calls(fh, store.iter_calls(since=lo, until=hi), format)
        finally:
            store.close()
        if output is not None:
            typer.echo(f"wrote {n:,} calls to {output}", err=True)

    @app.command("import", cls=FilesCommand, short_help="Load saved calls and batch files.")
    def import_(
        files: Annotated[
            list[str], typer.Argument(metavar="FILE", help="Saved calls (JSON Lines, batch files).")
        ],
        flow: Annotated[str | None, typer.Option(help="The flow of calls that name none.")] = None,
        provider: Annotated[
            str | None,
            typer.Option(
                help="The provider of calls whose line names none (else their response's shape tells)."
            ),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Import a file this store imported before.")
        ] = False,
        json: Json = False,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Load saved calls into the store and analyse them as live calls: JSON Lines of
        record()'s shape (request, response, provider, timestamp, elapsed_ms, flow), and
        Anthropic Message Batches or OpenAI Batch input + output files (give both)."""
        import orjson

        from .importing import ImportFileError

        for f in files:
            if not os.path.isfile(f):
                raise fail(f"no such file: {f}")
        store = open_db(db, create=True, write=True)
        try:
            done = store.import_records(files, flow=flow, provider=provider, force=force)
        except (ImportFileError, OSError) as exc:
            raise fail(str(exc)) from None
        finally:
            store.close()
        if json:
            typer.echo(orjson.dumps(done.as_dict(), option=orjson.OPT_INDENT_2).decode())
            return
        from ._cli_planner import plural

        typer.echo(
            f"imported {plural(done.calls, 'call')} into {shown(db)}; skipped {plural(len(done.skipped), 'line')}"
        )
        for s in done.skipped[:50]:
            typer.echo(f"  {s.source}:{s.line}: {s.reason}")
        if len(done.skipped) > 50:
            typer.echo(f"  ... and {len(done.skipped) - 50:,} more (--json lists them all)")

    @app.command(short_help="Delete what retention no longer keeps.")
    def prune(
        keep_calls: Annotated[str, typer.Option(help="Keep raw calls this long (7d, 48h, ...).")] = "7d",
        keep_hours: Annotated[
            str, typer.Option(help="Keep the hourly roll-up and incidents this long.")
        ] = "400d",
        json: Json = False,
        db: Db = DEFAULT_DB,
    ) -> None:
        """Run retention now: delete raw calls and hours older than what is kept."""
        import orjson

        from .report import parse_span

        spans = {}
        for name, text in (("--keep-calls", keep_calls), ("--keep-hours", keep_hours)):
            try:
                spans[name] = parse_span(text)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=name) from None
        store = open_db(db, write=True)
        try:
            store.keep_calls_s = spans["--keep-calls"]
            store.keep_hours_s = spans["--keep-hours"]
            done = store.prune()
        finally:
            store.close()
        if json:
            typer.echo(orjson.dumps(done.__dict__).decode())
        else:
            typer.echo(
                f"deleted {done.calls:,} raw calls, {done.hours:,} hourly rows, {done.incidents:,} closed incidents"
            )


class _output:
    """stdout, or a file written whole (a partial file is removed if the export fails)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __enter__(self) -> Any:
        if self.path is None:
            return sys.stdout
        try:
            self.fh = open(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise fail(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return self.fh

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self.path is None:
            sys.stdout.flush()
            return
        self.fh.close()
        if kind is not None:
            os.unlink(self.path)


def _write_calls(fh: Any, calls: Iterator[Any], format: str) -> int:
    import orjson

    n = 0
    if format == "trace":
        from .economics import trace_from_calls

        for call in trace_from_calls(c.metrics for c in calls):
            fh.write(orjson.dumps(call.as_dict()).decode() + "\n")
            n += 1
        return n
    if format == "jsonl":
        for c in calls:
            fh.write(orjson.dumps({"id": c.id, **c.metrics.as_dict()}).decode() + "\n")
            n += 1
        return n
    from dataclasses import fields

    from .types import CallMetrics

    columns = ["id", *(f.name for f in fields(CallMetrics)), "hit_ratio", "token_hit_ratio"]
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()
    for c in calls:
        row = {"id": c.id, **c.metrics.as_dict()}
        writer.writerow(
            {
                k: orjson.dumps(v).decode() if isinstance(v, (list, dict)) else "" if v is None else v
                for k, v in row.items()
            }
        )
        n += 1
    return n
