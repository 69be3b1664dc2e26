"""Saved calls read back from files, for ``cachebench import`` and ``store.import_records``.

Nothing here records or stores anything: :func:`read_saved` turns files into
:class:`SavedCall` values, each the arguments of one :meth:`cachebench.CacheTracker.record`
call, and :class:`Skipped` values for the lines that hold no call to record, with their line
numbers::

    for item in read_saved(["calls.jsonl"]):
        if isinstance(item, SavedCall):
            tracker.record(item.response, request=item.request, provider=item.provider,
                           timestamp=item.timestamp, elapsed_ms=item.elapsed_ms, flow=item.flow)
        else:
            print(f"{item.source}:{item.line}: {item.kind}: {item.reason}")

Every format is JSON Lines, plain or gzip-compressed, in UTF-8 with or without a BOM; blank
lines are ignored. A file's format is that of its first line that is a JSON object of a known
shape (looked for in its first 1,000 lines):

* **Saved-call records**, one call per line in the shape ``record()`` takes: ``request`` and
  ``response`` (objects, required), and optional ``provider`` (a :class:`Provider` value),
  ``timestamp`` (seconds since the epoch, or an ISO-8601 string, UTC when it has no offset),
  ``elapsed_ms`` and ``flow``; null is the same as absent, other keys are ignored.
* **Anthropic Message Batches**: the requests (``{"custom_id", "params"}`` per line) and the
  results file (``{"custom_id", "result"}``). A Message has no creation time: timestamp None.
* **OpenAI Batch**: the input file (``{"custom_id", "method", "url", "body"}``) and the output
  file (``{"id", "custom_id", "response", "error"}``), or the error file, of the same shape.
  The timestamp is the body's ``created`` (Chat Completions) or ``created_at`` (Responses).

A batch output needs its input, where the requests (the prompt prefixes) are: the two are
joined by ``custom_id``, given in any order. When one provider's batch files include several
input files, each output file goes with the input file that holds most of its first 100
custom_ids. Batch calls have no flow and no elapsed time (the caller may set a flow).

What is yielded, file by file in the order given (a pair where its first file is): a
:class:`SavedCall` per call and a :class:`Skipped` per line that is ``malformed`` (not JSON,
not an object, a field missing or of the wrong type), ``failed`` (a batch result other than a
success), ``unmatched`` (a custom_id in only one file of a pair), ``duplicate`` (a custom_id
twice in an input: all its lines and results; twice in the outputs: the second and later
results) or ``unsupported`` (an OpenAI endpoint other than Chat Completions and Responses). A
pair yields its input's malformed and duplicate lines, then its outputs line by line (a call
carries the output line; a request's problem is reported at its input line), then the input
lines with no result.

Memory: files are read line by line; a batch input is indexed as custom_id -> byte offset, and
a gzip-compressed input is decompressed into a temporary file to be read at those offsets.

Exceptions::

    ValueError
     └── ImportFileError    a file that cannot be imported at all: missing, unreadable, empty,
                            of no known format, given twice, a batch output without its input
                            (or the reverse) or one whose input cannot be told. Raised by
                            read_saved() itself, before anything is yielded, except for a file
                            that fails while it is read (a truncated gzip file).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import orjson

from cachebench.types import Provider

__all__ = ["ImportFileError", "SavedCall", "SkipKind", "Skipped", "json_lines", "read_saved"]

SkipKind = Literal["malformed", "failed", "unmatched", "duplicate", "unsupported"]

_DETECT_LINES = 1000
_PAIRING_SAMPLE = 100
# Seconds since the epoch beyond the year 5000 are milliseconds written by mistake.
_MAX_TIMESTAMP = 1e11
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"


class ImportFileError(ValueError):
    """A file that cannot be imported at all. The message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class SavedCall:
    """One call to record: the arguments of :meth:`CacheTracker.record`, and where it came from
    (``source``, the path as given, and ``line``, 1-based; for a batch pair, the output
    file's). ``custom_id`` is the batch request's id, None for saved-call records."""

    source: str
    line: int
    provider: Provider | None
    request: dict[str, Any]
    response: dict[str, Any]
    timestamp: float | None = None
    elapsed_ms: float | None = None
    flow: str | None = None
    custom_id: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line not imported, and why (see the module's docstring for the kinds)."""

    source: str
    line: int
    kind: SkipKind
    reason: str


class _Skip(Exception):
    def __init__(self, kind: SkipKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# -- lines and fields -------------------------------------------------------------------------


def _open(path: str) -> io.BufferedIOBase:
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else open(path, "rb")
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot be read ({exc.strerror or exc})")


def json_lines(path: str, f: Iterable[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, bytes) of each line of an open JSON Lines file that is
    not blank (a leading byte-order mark left out); ``ImportFileError`` when it cannot be read
    on (a damaged gzip stream). Offline explain reads its files with it too."""
    number = offset = 0
    try:
        for raw in f:
            number += 1
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM) :], start + len(_BOM)
            # (a line that starts with other than whitespace is no blank line: not copied to know)
            if raw and (not raw[:1].isspace() or raw.strip()):
                yield number, start, raw
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportFileError(f"{path}: cannot be read after line {number} ({exc})")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        column = min(exc.pos, len(raw.rstrip())) + 1
        raise _Skip("malformed", f"not valid JSON: {exc.msg} at column {column}")
    if not isinstance(value, dict):
        raise _Skip("malformed", f"not a JSON object but {_json_type(value)}")
    return value


def _object_field(obj: dict[str, Any], key: str, name: str | None = None) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        raise _Skip("malformed", f"no {name or key}")
    if not isinstance(value, dict):
        raise _Skip("malformed", f"{name or key} is {_json_type(value)}, not an object")
    return value


def _custom_id(obj: dict[str, Any]) -> str:
    value = obj.get("custom_id")
    if not isinstance(value, str):
        raise _Skip("malformed", "no custom_id" if value is None else f"custom_id is {_json_type(value)}")
    return value


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# -- saved-call records -----------------------------------------------------------------------


def _provider(value: Any) -> Provider:
    try:
        return Provider.parse(value)
    except (ValueError, TypeError):  # (a name that is not text: TypeError)
        names = ", ".join(p.value for p in Provider)
        raise _Skip("malformed", f"provider {value!r} is not one of {names}")


def _timestamp(value: Any) -> float:
    seconds = _finite(value)
    if seconds is not None and seconds >= _MAX_TIMESTAMP:
        raise _Skip("malformed", f"timestamp {value!r} looks like milliseconds, not seconds")
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise _Skip("malformed", f"timestamp {value!r} is not an ISO-8601 date and time")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = moment.timestamp()
    if seconds is None:
        raise _Skip("malformed", f"timestamp is {_json_type(value)}: seconds since the epoch or ISO-8601")
    return seconds


def _elapsed_ms(value: Any) -> float:
    number = _finite(value)
    if number is None or number < 0:
        raise _Skip("malformed", f"elapsed_ms {value!r} is not a number of milliseconds")
    return number


def _flow(value: Any) -> str:
    if not isinstance(value, str):
        raise _Skip("malformed", f"flow is {_json_type(value)}, not a string")
    return value


_RECORD_OPTIONAL: dict[str, Callable[[Any], Any]] = {
    "provider": _provider,
    "timestamp": _timestamp,
    "elapsed_ms": _elapsed_ms,
    "flow": _flow,
}


def _record(source: str, line: int, raw: bytes) -> SavedCall:
    obj = _object(raw)
    request, response = _object_field(obj, "request"), _object_field(obj, "response")
    optional = {k: None if obj.get(k) is None else parse(obj[k]) for k, parse in _RECORD_OPTIONAL.items()}
    return SavedCall(source, line, request=request, response=response, **optional)


def _read_records(source: str) -> Iterator[SavedCall | Skipped]:
    with _open(source) as f:
        for line, _, raw in json_lines(source, f):
            item: SavedCall | Skipped
            try:
                item = _record(source, line, raw)
            except _Skip as skip:
                item = Skipped(source, line, skip.kind, skip.reason)
            yield item


# -- batch files: each provider's shapes as data ----------------------------------------------


def _error_text(error: Any) -> str:
    """``": <type or code>: <message>"`` from an error object of either provider, or ``""``."""
    if not isinstance(error, dict):
        return ""
    parts = [str(error[k]) for k in ("type", "code", "message") if isinstance(error.get(k), (str, int))]
    return (": " + ": ".join(parts))[:300] if parts else ""


def _anthropic_request(obj: dict[str, Any]) -> dict[str, Any]:
    # anthropic.types.messages.batch_create_params.Request, one of BatchCreateParams.requests:
    #   {"custom_id": "req-1", "params": {"model": ..., "max_tokens": ..., "system": ..., "messages": [...]}}
    return _object_field(obj, "params")


def _anthropic_response(obj: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    # anthropic.types.messages.MessageBatchIndividualResponse, one line of the results file
    # (https://docs.claude.com/en/api/retrieving-message-batch-results, in any order):
    #   {"custom_id": "req-1", "result": {"type": "succeeded", "message": {...Message...}}}
    # or result {"type": "errored", "error": {"type": "error", "error": {"type", "message"}}},
    # {"type": "canceled"}, {"type": "expired"} (MessageBatch{Errored,Canceled,Expired}Result).
    result = _object_field(obj, "result")
    if result.get("type") != "succeeded":
        error = result.get("error")
        detail = _error_text(error.get("error") if isinstance(error, dict) else None)
        raise _Skip("failed", f"result {result.get('type')!s}{detail}")
    return _object_field(result, "message", "result.message"), None


# The OpenAI Batch endpoints whose bodies cachebench reads, and where each response body keeps
# its creation time (openai.types.chat.ChatCompletion.created, openai.types.responses.Response
# .created_at), by the body's "object".
_OPENAI_URLS = ("/v1/chat/completions", "/v1/responses")
_OPENAI_CREATED = {"chat.completion": "created", "response": "created_at"}


def _openai_request(obj: dict[str, Any]) -> dict[str, Any]:
    # One line of the input file (https://platform.openai.com/docs/api-reference/batch/request-input):
    #   {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    body = _object_field(obj, "body")
    if obj.get("url") not in _OPENAI_URLS:
        raise _Skip("unsupported", f"url {obj.get('url')!r}: cachebench reads {' and '.join(_OPENAI_URLS)}")
    return body


def _openai_response(obj: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    # One line of the output or error file (https://platform.openai.com/docs/api-reference/batch/
    # request-output):
    #   {"id": "batch_req_...", "custom_id": "request-1", "error": null,
    #    "response": {"status_code": 200, "request_id": "req_...", "body": {...ChatCompletion...}}}
    # A request that did not run has "response": null and "error": {"code": "batch_expired" |
    # "batch_cancelled" | "request_timeout", "message"}; one that failed has a status_code other
    # than 200 and the API's error in body.error.
    if obj.get("error") is not None:
        raise _Skip("failed", f"request failed{_error_text(obj['error'])}")
    response = _object_field(obj, "response")
    body = response.get("body")
    if response.get("status_code") != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise _Skip("failed", f"status_code {response.get('status_code')!s}{_error_text(error)}")
    body = _object_field(response, "body", "response.body")
    created = _OPENAI_CREATED.get(str(body.get("object")), "created")
    return body, _finite(body.get(created))


@dataclass(frozen=True)
class _Batch:
    """One provider's batch files: the keys that tell each apart and how each line is read."""

    provider: Provider
    input_name: str
    output_name: str
    input_keys: frozenset[str]
    output_keys: frozenset[str]
    request: Callable[[dict[str, Any]], dict[str, Any]]
    response: Callable[[dict[str, Any]], tuple[dict[str, Any], float | None]]


_BATCHES = (
    _Batch(
        Provider.ANTHROPIC,
        "Anthropic Message Batches requests file",
        "Anthropic Message Batches results file",
        frozenset({"custom_id", "params"}),
        frozenset({"custom_id", "result"}),
        _anthropic_request,
        _anthropic_response,
    ),
    _Batch(
        Provider.OPENAI,
        "OpenAI Batch input file",
        "OpenAI Batch output file",
        frozenset({"custom_id", "url", "body"}),
        frozenset({"custom_id", "response"}),
        _openai_request,
        _openai_response,
    ),
)
_RECORD_KEYS = frozenset({"request", "response"})


@dataclass(frozen=True)
class _File:
    path: str
    batch: _Batch | None  # None: saved-call records
    output: bool = False


# -- finding each file's format and pairing batch files ---------------------------------------


def _detect(path: str) -> _File:
    seen = 0
    with _open(path) as f:
        for _, _, raw in json_lines(path, f):
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                keys = obj.keys()
                if keys >= _RECORD_KEYS:
                    return _File(path, None)
                for batch in _BATCHES:
                    if batch.input_keys <= keys or batch.output_keys <= keys:
                        return _File(path, batch, output=not batch.input_keys <= keys)
            seen += 1
            if seen == _DETECT_LINES:
                break
    if seen == 0:
        raise ImportFileError(f"{path}: empty file")
    raise ImportFileError(
        f"{path}: no known format in its first {seen} lines (expected JSON Lines of saved calls"
        " with request and response, Anthropic Message Batches requests or results, or OpenAI"
        " Batch input or output)"
    )


def _custom_ids(path: str, limit: int | None = None) -> Iterator[str]:
    with _open(path) as f:
        for count, (_, _, raw) in enumerate(json_lines(path, f)):
            if count == limit:
                return
            try:
                yield _custom_id(_object(raw))
            except _Skip:
                continue


def _pair_by_ids(batch: _Batch, inputs: list[_File], outputs: list[_File]) -> dict[str, _File]:
    """Each output's input: the one holding most of the output's first custom_ids (one pass
    over each input file)."""
    samples = {o.path: set(_custom_ids(o.path, _PAIRING_SAMPLE)) for o in outputs}
    wanted = set().union(*samples.values())
    held = {i.path: {c for c in _custom_ids(i.path) if c in wanted} for i in inputs}
    paired: dict[str, _File] = {}
    for o in outputs:
        scores = [len(samples[o.path] & held[i.path]) for i in inputs]
        chosen = [i for i, score in zip(inputs, scores, strict=True) if score == max(scores)]
        if max(scores) == 0:
            raise ImportFileError(f"{o.path}: none of the {batch.input_name}s given holds its custom_ids")
        if len(chosen) > 1:
            raise ImportFileError(
                f"{o.path}: its custom_ids are in {chosen[0].path} and {chosen[1].path}; import one batch at a time"
            )
        paired[o.path] = chosen[0]
    return paired


def _plan(files: list[_File]) -> list[_File | tuple[_File, list[_File]]]:
    """Records files alone and each batch input with its outputs, where the first of them is."""
    input_of: dict[str, _File] = {}
    for batch in _BATCHES:
        inputs = [f for f in files if f.batch is batch and not f.output]
        outputs = [f for f in files if f.batch is batch and f.output]
        if outputs and not inputs:
            raise ImportFileError(
                f"{outputs[0].path}: an {batch.output_name} needs its {batch.input_name}, which holds"
                " the requests (the prompt prefixes): pass both"
            )
        if len(inputs) == 1:
            input_of.update((o.path, inputs[0]) for o in outputs)
        elif inputs:
            input_of.update(_pair_by_ids(batch, inputs, outputs))
        for i in inputs:
            if i not in input_of.values():
                raise ImportFileError(
                    f"{i.path}: an {batch.input_name} needs its {batch.output_name}: pass both"
                )
    plan: list[_File | tuple[_File, list[_File]]] = []
    for f in files:
        if f.batch is None:
            plan.append(f)
            continue
        source = input_of.get(f.path, f)
        if not any(isinstance(unit, tuple) and unit[0] is source for unit in plan):
            plan.append((source, [o for o in files if input_of.get(o.path) is source]))
    return plan


# -- reading a batch pair ---------------------------------------------------------------------


def _read_pair(source: _File, outputs: list[_File]) -> Iterator[SavedCall | Skipped]:
    batch = source.batch
    assert batch is not None
    with ExitStack() as stack:
        f = stack.enter_context(_open(source.path))
        # Reading back at an offset in a gzip stream decompresses it again from the start.
        copy = stack.enter_context(tempfile.TemporaryFile()) if isinstance(f, gzip.GzipFile) else None
        where: dict[str, tuple[int, int]] = {}  # custom_id -> (byte offset, line)
        repeated: dict[str, list[int]] = {}  # custom_id -> its lines, when on several
        for line, offset, raw in json_lines(source.path, f):
            if copy is not None:
                offset = copy.tell()
                copy.write(raw)
            try:
                custom_id = _custom_id(_object(raw))
            except _Skip as skip:
                yield Skipped(source.path, line, skip.kind, skip.reason)
                continue
            if custom_id in repeated:
                repeated[custom_id].append(line)
            elif custom_id in where:
                repeated[custom_id] = [where.pop(custom_id)[1], line]
            else:
                where[custom_id] = (offset, line)
        for custom_id, lines in repeated.items():
            for line in lines:
                yield Skipped(source.path, line, "duplicate", f"custom_id {custom_id!r} is on lines {lines}")
        requests = copy if copy is not None else f

        answered: dict[str, tuple[str, int]] = {}  # custom_id -> the output line that had its result
        for output in outputs:
            out = stack.enter_context(_open(output.path))
            for line, _, raw in json_lines(output.path, out):
                item: SavedCall | Skipped
                try:
                    obj = _object(raw)
                    custom_id = _custom_id(obj)
                    if custom_id in answered:
                        first = answered[custom_id]
                        raise _Skip(
                            "duplicate", f"custom_id {custom_id!r} had a result at {first[0]}:{first[1]}"
                        )
                    if custom_id in repeated:
                        raise _Skip(
                            "duplicate", f"custom_id {custom_id!r} is on several lines of {source.path}"
                        )
                    if custom_id not in where:
                        raise _Skip("unmatched", f"custom_id {custom_id!r} is not in {source.path}")
                    offset, request_line = where.pop(custom_id)
                    answered[custom_id] = (output.path, line)
                    response, created = batch.response(obj)
                except _Skip as skip:
                    yield Skipped(output.path, line, skip.kind, skip.reason)
                    continue
                requests.seek(offset)
                try:
                    request = batch.request(_object(requests.readline()))
                    item = SavedCall(
                        output.path, line, batch.provider, request, response, created, custom_id=custom_id
                    )
                except _Skip as skip:
                    item = Skipped(source.path, request_line, skip.kind, skip.reason)
                yield item
        names = ", ".join(o.path for o in outputs)
        for custom_id, (_, line) in sorted(where.items(), key=lambda kv: kv[1][1]):
            yield Skipped(source.path, line, "unmatched", f"custom_id {custom_id!r} has no result in {names}")


# -- the entry point --------------------------------------------------------------------------


def read_saved(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> Iterator[SavedCall | Skipped]:
    """The saved calls in ``paths`` (one path or several), and the lines skipped, in file and
    line order. Formats are found and batch files paired here, so a file that cannot be
    imported raises :class:`ImportFileError` now, before anything is read."""
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not given:
        raise ImportFileError("no files given")
    sources = [os.fspath(p) for p in given]
    seen: dict[str, str] = {}
    for source in sources:
        real = os.path.realpath(source)
        if real in seen:
            raise ImportFileError(f"{source}: given twice (also as {seen[real]})")
        seen[real] = source
    plan = _plan([_detect(source) for source in sources])
    return _read(plan)


def _read(plan: list[_File | tuple[_File, list[_File]]]) -> Iterator[SavedCall | Skipped]:
    for unit in plan:
        if isinstance(unit, _File):
            yield from _read_records(unit.path)
        else:
            yield from _read_pair(*unit)
