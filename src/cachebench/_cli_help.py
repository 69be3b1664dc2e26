"""How the ``cachebench`` commands that take files show them in their help: ``FILE...``.

No ``from __future__ import annotations``: the CLI modules are read by typer at run time.
"""

from typing import Any

from typer.core import TyperCommand

__all__ = ["FilesCommand"]


class FilesCommand(TyperCommand):
    """A command whose FILE arguments read ``FILE...`` in its help, in the usage line and under
    Arguments (typer writes ``{FILE}...`` and ``FILE <list[str]>``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            pieces += [_many(param)] if _is_many(param) else param.get_usage_pieces(ctx)
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name != "argument":
                options.append(record)
            else:
                arguments.append((_many(param), record[1]) if _is_many(param) else record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _is_many(param: Any) -> bool:
    return bool(param.param_type_name == "argument" and param.nargs == -1)


def _many(param: Any) -> str:
    name = f"{param.metavar or str(param.name).upper()}..."
    return name if param.required else f"[{name}]"
