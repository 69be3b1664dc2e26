"""Saved request bodies read back, for :mod:`cachebench.planner.offline` and the commands that
read request files (``cachebench lint``, ``check``, ``plan``).

:func:`read_file` is the one reader of a request file: JSON Lines (one request per line) or
one JSON document (a request, or a list of them), plain or gzip. :func:`read_requests` turns
files or Python objects into :class:`SavedRequest` values and :class:`Skipped` lines, in input
order. A request is a body in any provider's shape, or a wrapper around one::

    {"request": {...}, "timestamp": 1767225600 | "2026-01-01T00:00:00Z", "provider": "openai",
     "model": "gemini-2.5-flash", "flow": "support", "scope": "team-a"}   # ("api_key" = "scope")

:class:`Rereader` reads lines again at their byte offsets (a replay in time order of a file that
is not in it).
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, cast

import orjson

from ..importing import ImportFileError, json_lines
from ..types import Provider

__all__ = [
    "ReplayError",
    "Rereader",
    "SavedRequest",
    "Skipped",
    "UnreadableFile",
    "parse_timestamp",
    "read_file",
    "read_requests",
]

# Seconds since the epoch beyond the year 5000 are milliseconds written by mistake.
_MAX_TIMESTAMP = 1e11
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Names that say JSON Lines (with ``.gz`` or not); any other file is told by its first line.
_LINES_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line that was not replayed: where (``source``, 1-based ``line``; ``index``, its index
    in a JSON file's list, None for a line of its own) and why."""

    source: str
    line: int
    reason: str
    index: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: " + (f"request {self.index}: " if self.index is not None else "")
        return where + self.reason


@dataclass(slots=True)
class SavedRequest:
    """One request body to replay, with what its wrapper said (None: not said)."""

    source: str
    line: int
    body: Mapping[str, Any]
    timestamp: float | None = None
    provider: Provider | None = None
    model: str | None = None
    flow: str | None = None
    scope: str | None = None
    offset: int = -1  # where the line starts in its (decompressed) file; -1: not from a file
    index: int | None = None  # its index in a JSON file's list; None: a line of its own


class ReplayError(ValueError):
    """Why a request cannot be replayed (the line is skipped with this reason)."""


class UnreadableFile(OSError):
    """A file that cannot be read at all: not valid JSON as a whole, or a damaged gzip stream
    (``path`` and ``why``, also as an ``OSError``'s ``filename`` and ``strerror``)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(None, why, path)
        self.path, self.why = path, why

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"

    def __reduce__(self) -> tuple[type[UnreadableFile], tuple[str, str]]:
        # (offline explain may read in another process and send the exception back pickled)
        return UnreadableFile, (self.path, self.why)


# -- reading ------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return (
        "null" if value is None else "a boolean" if isinstance(value, bool) else kinds.get(type(value), "?")
    )


def parse_timestamp(value: Any) -> float:
    """Seconds since the epoch, or an ISO-8601 date and time (UTC when it has no offset)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if value >= _MAX_TIMESTAMP:
            raise ReplayError(f"timestamp {value!r} looks like milliseconds, not seconds")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ReplayError(f"timestamp {value!r} is not an ISO-8601 date and time")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    raise ReplayError(f"timestamp is {_json_type(value)}: seconds since the epoch or ISO-8601")


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ReplayError(f"{key} is {_json_type(value)}, not a non-empty string")
    return value


def saved_request(
    source: str, line: int, obj: Any, offset: int = -1, index: int | None = None
) -> SavedRequest:
    """A line's value (parsed JSON or a Python object) as a :class:`SavedRequest`."""
    if not isinstance(obj, Mapping):
        raise ReplayError(f"not a JSON object but {_json_type(obj)}")
    body = obj.get("request")
    if body is None:
        return SavedRequest(source, line, obj, offset=offset, index=index)
    if not isinstance(body, Mapping):
        raise ReplayError(f"request is {_json_type(body)}, not an object")
    provider = _text(obj, "provider")
    try:
        parsed = Provider.parse(provider) if provider is not None else None
    except ValueError:
        raise ReplayError(f"provider {provider!r} is not one of {', '.join(p.value for p in Provider)}")
    ts = obj.get("timestamp")
    return SavedRequest(
        source,
        line,
        body,
        timestamp=None if ts is None else parse_timestamp(ts),
        provider=parsed,
        model=_text(obj, "model"),
        flow=_text(obj, "flow"),
        scope=_text(obj, "scope") or _text(obj, "api_key"),
        offset=offset,
        index=index,
    )


def _open(path: str) -> IO[bytes]:
    """A file's bytes, decompressed when it is gzip; OSError when it cannot be read."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    if compressed:
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))
    return open(path, "rb")


def _line(path: str, line: int, raw: bytes, offset: int = -1) -> SavedRequest | Skipped:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Skipped(path, line, f"not valid JSON: {exc.msg} at column {min(exc.pos, len(raw)) + 1}")
    try:
        return saved_request(path, line, value, offset)
    except ReplayError as exc:
        return Skipped(path, line, str(exc))


def _value(path: str, value: Any, index: int | None) -> SavedRequest | Skipped:
    try:
        return saved_request(path, 1, value, index=index)
    except ReplayError as exc:
        return Skipped(path, 1, str(exc), index)


def _is_object(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return False


def read_file(path: str) -> Iterator[SavedRequest | Skipped]:
    """The requests of one file (plain or gzip), in order, with the lines that are none (the one
    reader of request files: offline explain, ``cachebench lint``, ``check`` and ``plan``).

    JSON Lines when the name says so (``.jsonl``, ``.ndjson``) or the first line that is not
    blank is a whole JSON object: a request per line, with its line number and byte offset
    (blank lines are no lines). Otherwise one JSON document: a request, or a list of them (each
    on line 1, with its index in the list). ``OSError`` when the file cannot be opened,
    :class:`UnreadableFile` when it cannot be read at all (a document that is not JSON, a
    damaged gzip stream); a JSON Lines file cut or damaged after some lines gives those, then
    one skipped line that says where reading stopped."""
    with _open(path) as f:
        lines = json_lines(path, f)
        try:
            first = next(lines, None)
        except ImportFileError as exc:  # its message starts with the path, as ours will
            raise UnreadableFile(path, str(exc).removeprefix(f"{path}: ")) from None
        if first is None:
            return
        if path.lower().removesuffix(".gz").endswith(_LINES_SUFFIXES) or _is_object(first[2]):
            yield _line(path, first[0], first[2], first[1])
            last = first[0]
            try:
                for line, offset, raw in lines:
                    yield _line(path, line, raw, offset)
                    last = line
            except ImportFileError as exc:
                # A stream cut or damaged after some lines: those were read; the rest is a line
                # skipped, so that what could be read is not lost.
                cause = exc.__context__ if exc.__context__ is not None else exc
                yield Skipped(path, last + 1, f"the file cannot be read past line {last} ({cause})")
            return
        try:
            f.seek(0)
            data = f.read().removeprefix(_BOM)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableFile(path, f"a damaged gzip file ({exc})") from None
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        why = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise UnreadableFile(path, why) from None
    if isinstance(whole, list):
        for index, value in enumerate(whole):
            yield _value(path, value, index)
    else:
        yield _value(path, whole, None)


class Rereader:
    """Lines read again at their offsets, from any of the files read before (each opened once,
    a gzip file decompressed once into a temporary file, to be read at those offsets)."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._files: dict[str, IO[bytes]] = {}

    def get(self, path: str, line: int, offset: int) -> SavedRequest | Skipped:
        f = self._files.get(path)
        if f is None:
            f = self._stack.enter_context(_open(path))
            if isinstance(f, gzip.GzipFile):
                copy = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
                shutil.copyfileobj(f, copy)
                f = copy
            self._files[path] = f
        f.seek(offset)
        return _line(path, line, f.readline(), offset)

    def close(self) -> None:
        self._stack.close()


def _from_objects(items: Iterable[Any], source: str) -> Iterator[SavedRequest | Skipped]:
    for line, value in enumerate(items, 1):
        try:
            if isinstance(value, (str, bytes)):
                value = orjson.loads(value)
            yield saved_request(source, line, value)
        except orjson.JSONDecodeError as exc:
            yield Skipped(source, line, f"not valid JSON: {exc.msg}")
        except ReplayError as exc:
            yield Skipped(source, line, str(exc))


def is_path(value: object) -> bool:
    """A file's path: a path object, or text that is not a JSON object's (``{...}``)."""
    if isinstance(value, str):
        return not value.lstrip().startswith("{")
    return isinstance(value, os.PathLike)


def read_requests(requests: Any, source: str = "<requests>") -> Iterator[SavedRequest | Skipped]:
    """Files (a path, or a list of paths: :func:`read_file`) read in the order given, or
    request bodies / wrappers (dicts or JSON text) in the order iterated, or one of them;
    OSError when a file cannot be read."""
    if is_path(requests):
        yield from read_file(os.fspath(requests))
        return
    if isinstance(requests, (str, bytes, bytearray, Mapping)):
        requests = [requests]  # one body or wrapper (JSON text of one: text that starts with "{")
    items = list(requests) if not isinstance(requests, list) else requests
    if items and all(is_path(p) for p in items):
        for path in items:
            yield from read_file(os.fspath(path))
        return
    yield from _from_objects(items, source)
