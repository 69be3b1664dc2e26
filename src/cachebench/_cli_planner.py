"""The ``cachebench`` commands that lint request bodies before they are sent: lint and check
(``cli.py`` adds them to the application).

A FILE is a JSON file holding one request body or a list of them, or a JSON Lines file
(``.jsonl``, ``.ndjson``; plain or gzip) with one per line, read by offline explain's reader
(:func:`cachebench.planner._saved.read_file`). An item may be a wrapper
``{"request": body, "provider": ..., "model": ...}``; the wrapper's provider and model come
before ``--provider`` and ``--model``. A file's requests are one flow: the rules that compare
requests run on them. A request is named by its JSON Lines line, or in a JSON file's list by
its index there (``request 2``); a finding's line is its JSON Lines line, or 1 in a JSON file.

``check``'s FILE holds builds of the same request: built in different processes, at different
times, with other hash seeds. Their cached prefixes must be the same byte for byte; builds for
different users are no such builds (their per-user layers differ, as they should).

Exit codes: 0 clean; 1 a finding that fails (an error, a warning too with ``lint --strict``,
and for ``check`` a cached prefix that differs between builds); 2 a usage error or a file or
line that cannot be read (one message naming ``file:line`` on stderr; the other files and lines
are still linted). No ``from __future__ import annotations``: typer reads the annotations at
run time.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ._cli_help import FilesCommand

if TYPE_CHECKING:
    from .planner.rules import Finding

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")]
Format = Annotated[
    Literal["text", "github"],
    typer.Option("--format", help="text, or github: workflow commands that annotate the files."),
]
ProviderOption = Annotated[
    str | None, typer.Option("--provider", help="The provider, where a body cannot tell.")
]
ModelOption = Annotated[str | None, typer.Option("--model", help="The model, for bodies that name none.")]
Files = Annotated[
    list[str],
    typer.Argument(
        metavar="FILE", help="JSON (a body or a list) or JSON Lines (.jsonl, .gz).", show_default=False
    ),
]


@dataclass(frozen=True, slots=True)
class Item:
    """One request body of a file: its line (1 in a JSON file), its index among the file's
    requests as written (in a JSON list, its index there; in a JSON Lines file, among the lines
    that are not blank; the ones that cannot be read count), whether it is an entry of a JSON
    list, and the provider and model its wrapper (or the command line) gave."""

    file: str
    line: int
    index: int
    listed: bool
    body: Mapping[str, Any]
    provider: str | None
    model: str | None

    @property
    def name(self) -> str:
        """How messages name it: its line, or in a JSON list its index there."""
        return f"request {self.index}" if self.listed else f"line {self.line}"


@dataclass(frozen=True, slots=True)
class Problem:
    """A file, a line or an entry of a JSON list (``index``) that could not be read or linted
    (exit code 2)."""

    file: str
    line: int | None
    message: str
    index: int | None = None

    @property
    def unit(self) -> str:
        """What was not linted: a file, a line, or a request of a JSON list."""
        return "file" if self.line is None else "line" if self.index is None else "request"

    @property
    def detail(self) -> str:
        return (f"request {self.index}: " if self.index is not None else "") + self.message

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.detail}"
            if self.line is not None
            else f"{self.file}: {self.detail}"
        )


@dataclass(frozen=True, slots=True)
class Difference:
    """A build whose cached prefix differs from the first build of the same file."""

    item: Item
    first: Item
    kind: str
    why: str
    fix: str
    diff: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        if self.diff is None:
            return f"kind {self.kind}"
        d = self.diff
        where = f"{d['section']} block {d['block_index']}, bytes {d['byte_start']}-{d['byte_end']}, kind {d['kind']}"
        return where + (f", value {d['value_type']}" if d.get("value_type") else "")

    @property
    def message(self) -> str:
        return f"{self.item.name} differs from {self.first.name}: {self.where}: {self.why}."

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.item.file,
            "line": self.item.line,
            "request": self.item.index,
            "first_line": self.first.line,
            "first_request": self.first.index,
            "kind": self.kind,
            "diff": self.diff,
            "why": self.why,
            "fix": self.fix,
        }


@dataclass(slots=True)
class Outcome:
    """What the commands found over all the files."""

    findings: "list[tuple[Item, Finding]]" = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    requests: int = 0


# -- reading --------------------------------------------------------------------------------------


def read_file(path: str, provider: str | None, model: str | None) -> tuple[list[Item], list[Problem]]:
    """The request bodies of one file (read as offline explain reads it), and what could not be
    read."""
    from .planner._saved import Skipped, UnreadableFile
    from .planner._saved import read_file as read_saved

    try:
        entries = list(read_saved(path))
    except UnreadableFile as exc:
        return [], [Problem(path, None, exc.why)]
    except OSError as exc:
        return [], [Problem(path, None, f"cannot be read: {exc.strerror or exc}")]
    if not entries:
        return [], [Problem(path, None, "holds no request body")]
    items: list[Item] = []
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, Skipped):
            problems.append(Problem(path, entry.line, entry.reason, entry.index))
            continue
        own = entry.provider.value if entry.provider is not None else None
        listed = entry.index is not None
        items.append(Item(path, entry.line, index, listed, entry.body, own or provider, entry.model or model))
    return items, problems


# -- linting --------------------------------------------------------------------------------------


def lint_items(items: Sequence[Item], out: Outcome) -> list[Item]:
    """Lint a file's requests as one flow (one per provider and model its wrappers name), into
    ``out``; the items that could be linted."""
    from dataclasses import replace

    from .planner.rules import lint

    groups: dict[tuple[str | None, str | None], list[Item]] = {}
    for item in items:
        groups.setdefault((item.provider, item.model), []).append(item)
    linted: list[Item] = []
    found_here: list[tuple[Item, Finding]] = []
    for (provider, model), group in groups.items():
        try:
            found = lint([i.body for i in group], provider, model)
        except (ValueError, TypeError):
            group = [i for i in group if _lints_alone(i, out)]
            found = lint([i.body for i in group], provider, model) if group else []
        found_here += [(group[f.request], replace(f, request=group[f.request].index)) for f in found]
        linted += group
    linted.sort(key=lambda i: i.index)
    out.findings += sorted(found_here, key=lambda pair: pair[0].index)
    out.requests += len(linted)
    return linted


def _lints_alone(item: Item, out: Outcome) -> bool:
    from .planner.rules import lint
    from .providers import detect_request

    try:
        lint(item.body, item.provider, item.model)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if item.provider is None and detect_request(item.body) is None:
            message = (
                "cannot tell which provider this request is for: pass --provider, or wrap it as "
                '{"request": ..., "provider": "anthropic"}'
            )
        out.problems.append(Problem(item.file, item.line, message, item.index if item.listed else None))
        return False
    return True


def compare_builds(items: Sequence[Item], out: Outcome) -> None:
    """Each build of a file whose cached prefix differs from the file's first build (the first
    one built for another provider or model, alone)."""
    from .planner.stability import differences
    from .providers import adapter_for, detect_request
    from .types import Provider

    if len(items) < 2:
        return
    first = items[0]

    def target(item: Item) -> tuple[str | None, str | None]:
        provider = item.provider or detect_request(item.body)
        if provider is None:
            return None, item.model
        name = Provider.parse(provider).value
        return name, adapter_for(name).request_model(item.body) or item.model

    base = target(first)
    for item in items[1:]:
        other = target(item)
        if other != base:
            out.differences.append(
                Difference(
                    item,
                    first,
                    "model",
                    f"built for {'/'.join(map(str, other))}, {first.name} for "
                    f"{'/'.join(map(str, base))}; "
                    "the provider caches per model, so this build reads nothing the others wrote",
                    "build every request for the same provider and model",
                )
            )
            return
    for found in differences([i.body for i in items], first.provider, first.model):
        item = items[found.request]
        if found.diff is None:  # the blocks agree; the breakpoints do not
            out.differences.append(Difference(item, first, "breakpoints", found.why, found.fix))
        else:
            diff = found.diff.as_dict()
            out.differences.append(Difference(item, first, found.diff.kind, found.why, found.fix, diff))


# -- printing -------------------------------------------------------------------------------------


def _escape_data(text: str) -> str:
    # GitHub's toolkit (core/src/command.ts): a command's message escapes %, CR and LF; its
    # properties also the ':' and ',' that would end them.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_command(level: str, file: str, line: int | None, title: str, message: str) -> str:
    props = f"file={_escape_property(file)}"
    if line is not None:
        props += f",line={line}"
    return f"::{level} {props},title={_escape_property(title)}::{_escape_data(message)}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and the word, in the plural unless ``n`` is 1: "1 request", "2 requests"."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def _listing(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def summary(out: Outcome, verb: str = "linted") -> str:
    """The last line: findings, requests, differences and what was not ``verb`` (see stderr)."""
    errors = sum(1 for _, f in out.findings if f.severity == "error")
    warnings = len(out.findings) - errors
    line = f"{plural(errors, 'error')}, {plural(warnings, 'warning')} in {plural(out.requests, 'request')}"
    if out.differences:
        files = len({d.item.file for d in out.differences})
        line += f"; {plural(files, 'file')} whose cached prefix differs between builds"
    if out.problems:
        units = [p.unit for p in out.problems]
        parts = [plural(units.count(u), u) for u in ("file", "line", "request") if u in units]
        line += f"; {_listing(parts)} not {verb} (see stderr)"
    return line


def print_outcome(out: Outcome, fmt: str, json: bool, as_object: bool, verb: str = "linted") -> None:
    """Problems on stderr; findings (and differences) on stdout as lines, workflow commands or
    JSON (a list of findings, or with ``as_object`` an object with both lists). A request of a
    JSON list is named by its index there (``request 2: ``) after the file and line."""
    import orjson

    for p in out.problems:
        typer.echo(f"cachebench: {p}", err=True)
    if json:
        findings = [{**f.as_dict(), "file": item.file, "line": item.line} for item, f in out.findings]
        data: Any = findings
        if as_object:
            data = {"findings": findings, "differences": [d.as_dict() for d in out.differences]}
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    if fmt == "github":
        for p in out.problems:
            typer.echo(github_command("error", p.file, p.line, "unreadable", p.detail))
        for item, f in out.findings:
            message = f"{_named(item)}{f.message} Fix: {f.fix}"
            typer.echo(github_command(f.severity, item.file, item.line, f"{f.code} {f.name}", message))
        for d in out.differences:
            typer.echo(
                github_command(
                    "error", d.item.file, d.item.line, "prefix differs", f"{d.message} Fix: {d.fix}"
                )
            )
    else:
        for item, f in out.findings:
            typer.echo(f"{item.file}:{item.line}: {_named(item)}{f}")
        for d in out.differences:
            typer.echo(f"{d.item.file}:{d.item.line}: prefix differs: {d.message} Fix: {d.fix}")
    typer.echo(summary(out, verb))


def _named(item: Item) -> str:
    return f"{item.name}: " if item.listed else ""


def _check_options(fmt: str, json: bool, provider: str | None) -> str | None:
    from .types import Provider

    if fmt not in ("text", "github"):
        raise typer.BadParameter("must be text or github", param_hint="--format")
    if json and fmt != "text":
        raise typer.BadParameter("--json prints JSON; leave --format out", param_hint="--format")
    if provider is None:
        return None
    try:
        return Provider.parse(provider).value
    except ValueError:
        raise typer.BadParameter(
            "must be anthropic, openai, bedrock or gemini", param_hint="--provider"
        ) from None


def _run(
    files: Sequence[str], provider: str | None, model: str | None, each: Callable[[list[Item], Outcome], None]
) -> Outcome:
    out = Outcome()
    for path in files:
        if os.path.isdir(path):
            out.problems.append(Problem(path, None, "is a folder, not a file"))
            continue
        items, problems = read_file(path, provider, model)
        start = len(out.problems)
        out.problems += problems
        each(items, out)
        # (the lines that could not be read, then those that could not be linted: in line order)
        out.problems[start:] = sorted(
            out.problems[start:],
            key=lambda p: (p.line or 0, -1 if p.index is None else p.index),
        )
    return out


def add_planner_commands(app: typer.Typer) -> None:
    @app.command(cls=FilesCommand, short_help="Lint request bodies for what breaks caching.")
    def lint(
        files: Files,
        json: Json = False,
        format: Format = "text",
        provider: ProviderOption = None,
        model: ModelOption = None,
        strict: Annotated[bool, typer.Option("--strict", help="Fail on warnings too.")] = False,
    ) -> None:
        """Lint saved request bodies for what will keep the provider's cache from serving
        them (the rules of docs/lint.md). Exit 1 on an error finding (or a warning with
        --strict), 2 when a file cannot be read."""
        chosen = _check_options(format, json, provider)

        def each(items: list[Item], out: Outcome) -> None:
            if items:
                lint_items(items, out)

        out = _run(files, chosen, model, each)
        print_outcome(out, format, json, as_object=False)
        failing = any(f.severity == "error" or strict for _, f in out.findings)
        raise typer.Exit(2 if out.problems else 1 if failing else 0)

    @app.command(cls=FilesCommand, short_help="Fail when builds of one request differ.")
    def check(
        files: Files,
        json: Json = False,
        format: Format = "text",
        provider: ProviderOption = None,
        model: ModelOption = None,
    ) -> None:
        """The CI gate: each FILE holds the same request built several times (in different
        processes, at different times, with other hash seeds; not for different users, whose
        per-user layers differ as they should). Exit 1 on an error finding or when the builds'
        cached prefixes differ, 2 when a file cannot be read."""
        chosen = _check_options(format, json, provider)

        def each(items: list[Item], out: Outcome) -> None:
            if not items:
                return
            if len(items) < 2:
                out.problems.append(
                    Problem(items[0].file, None, "holds one request; check compares two or more builds of it")
                )
            compare_builds(lint_items(items, out), out)

        out = _run(files, chosen, model, each)
        print_outcome(out, format, json, as_object=True, verb="checked")
        failing = out.differences or any(f.severity == "error" for _, f in out.findings)
        raise typer.Exit(2 if out.problems else 1 if failing else 0)
