"""Offline explain's second process, for :mod:`cachebench.planner.offline`: large files are read,
parsed, rendered and run through the cache model in a child process while this one runs the
tracker's engine, so the two halves of a replay use two cores.

The child is a plain interpreter (``sys.executable -c``) that imports this module, not a
:mod:`multiprocessing` child: a caller's script is never imported again (a script without an
``if __name__ == "__main__"`` guard keeps working). It reads the job (the parent's ``sys.path``,
then a :class:`Job`) from its stdin and writes pickled messages to its stdout, in this order::

    Ready                                       imported, the job read
    [Call | Refused | Skipped, ...]  ...        the input in its order, a batch at a time
    PhaseEnd(in_order, sources)                 (while the input is in time order: Calls)
    [Call | Refused | Skipped, ...]  ...        only when it was not: the requests in time order,
    PhaseEnd(True, [])                          read again, through a new cache model
    Failed(error, traceback)                    instead of any of these when something raised

It ignores SIGINT (the parent stops it), and exits when its stdin closes (the parent is gone).
Its print() output goes to its stderr: its stdout carries only messages.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import orjson

from ..cachemodel import CacheModel
from ..types import Provider
from ._replay import InputOrder, in_time_order, replay
from ._saved import ReplayError, Skipped, read_requests

__all__ = ["MIN_BYTES", "Call", "Job", "Refused", "ReplayProcess", "input_bytes", "serve"]

logger = logging.getLogger("cachebench")

#: Inputs of at least this many bytes (decompressed, as far as a gzip trailer says) are replayed
#: in two processes. Starting the child costs about 0.3 s (an interpreter and its imports); with
#: a core free for it, the replay breaks even at 30-40 MB of requests (about 3,000 of the
#: benchmark's) and takes about a third less time on large inputs (24 s instead of 38 s for its
#: 100,000, 1.4 GB). Smaller inputs stay in one process.
MIN_BYTES = 32 * 2**20
_BATCH = 128  # requests a message
_PICKLE = pickle.HIGHEST_PROTOCOL
_BOOT = (
    "import pickle, sys\n"
    "sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "from cachebench.planner._replay_process import serve\n"
    "serve()\n"
)


@dataclass(frozen=True, slots=True)
class Job:
    """What the child replays: the files, in order, and the replay's defaults."""

    paths: list[str]
    provider: Provider | None
    model: str | None
    first: float
    step: float


class Call(NamedTuple):
    """One request the cache model answered: what the engine records for it."""

    source: str
    line: int
    flow: str | None  # the wrapper's
    now: float
    provider: str  # a Provider's value
    model: str
    call: bytes  # the SDK call's arguments, as JSON
    response: dict[str, Any]
    unread: int


class Refused(NamedTuple):
    """A request the provider would refuse (the session lists it, as in one process)."""

    skipped: Skipped


class Ready(NamedTuple):
    pass


class PhaseEnd(NamedTuple):
    in_order: bool
    sources: list[str]  # each source read, in input order


class Failed(NamedTuple):
    error: bytes  # the exception, pickled (b"" when it does not come back whole)
    text: str  # its traceback, in the child
    # An OSError that does not pickle (a subclass with its own __init__): its class, as
    # (module, qualified name), and its errno, strerror and filename.
    oserror: tuple[str, str, Any, Any, Any] | None = None


# -- the parent's side -----------------------------------------------------------------------------


def _file_bytes(path: str) -> int:
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return os.fstat(f.fileno()).st_size
        # A gzip member's last 4 bytes: its uncompressed size, modulo 2**32.
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 4, 0))
        return max(size, int.from_bytes(f.read(4), "little"))


def input_bytes(paths: list[str]) -> int:
    """About how many bytes of requests ``paths`` hold (0 when one cannot be read: the replay in
    one process says why)."""
    try:
        return sum(_file_bytes(p) for p in paths)
    except OSError:
        return 0


class ReplayProcess:
    """The child, from the parent's side: :meth:`start` it, read each phase's batches with
    :meth:`phase` (on one thread), :meth:`stop` it from any thread, :meth:`close` it at the end."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._stopped = False
        self.end = PhaseEnd(True, [])

    @classmethod
    def start(cls, job: Job) -> ReplayProcess | None:
        """The child started on ``job`` and ready; None when it cannot start (the replay then
        runs in one process)."""
        if getattr(sys, "frozen", False) or not sys.executable:
            return None  # (a frozen application's executable is not an interpreter)
        flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
        try:
            proc = subprocess.Popen(
                [sys.executable, *flags, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as exc:
            logger.debug("cachebench: offline explain runs in one process: %s", exc)
            return None
        self = cls(proc)
        try:
            assert proc.stdin is not None
            pickle.dump(list(sys.path), proc.stdin, _PICKLE)
            pickle.dump(job, proc.stdin, _PICKLE)
            proc.stdin.flush()
            first = self._receive()
        except BaseException as exc:
            self.stop()
            self.close()
            if isinstance(exc, Exception):
                logger.debug("cachebench: offline explain runs in one process: %r", exc)
                return None
            raise
        if not isinstance(first, Ready):
            self.stop()
            self.close()
            logger.debug("cachebench: offline explain runs in one process: the child said %r", first)
            return None
        return self

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit code, None while it runs."""
        return self._proc.poll()

    def _receive(self) -> Any:
        out = self._proc.stdout
        assert out is not None
        try:
            return pickle.load(out)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            if self._stopped:
                return PhaseEnd(True, [])
            try:
                code: int | None = self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(
                f"offline explain: the process reading the requests ended without a word (exit code {code})"
            ) from None

    def phase(self) -> Iterator[list[Call | Refused | Skipped]]:
        """The batches of one phase; then :attr:`end` says how it ended. An error in the child is
        raised here: the child's own exception (with its traceback as a note) when it pickles."""
        while True:
            message = self._receive()
            if isinstance(message, list):
                yield message
            elif isinstance(message, PhaseEnd):
                self.end = message
                return
            elif isinstance(message, Failed):
                raise _error(message)
            else:
                raise RuntimeError(f"offline explain: the reading process sent {message!r}")

    def stop(self) -> None:
        """End the child now (an interrupt, an error): any thread, any time; the phase being
        read ends."""
        self._stopped = True
        with contextlib.suppress(OSError):
            self._proc.terminate()

    def close(self) -> None:
        """Wait for the child to end (closing its stdin ends it), and close the pipes."""
        proc = self._proc
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _failed(exc: BaseException) -> Failed:
    text = "".join(traceback.format_exception(exc))
    try:
        error = pickle.dumps(exc, _PICKLE)
        pickle.loads(error)
    except Exception:
        error = b""
    oserror = None
    if isinstance(exc, OSError):
        kind = type(exc)
        oserror = (kind.__module__, kind.__qualname__, exc.errno, exc.strerror, exc.filename)
    return Failed(error, text, oserror)


def _error(failed: Failed) -> BaseException:
    """The child's exception, with its traceback as a note; RuntimeError when it cannot be
    made again here."""
    exc: Any = None
    with contextlib.suppress(Exception):
        if failed.error:
            exc = pickle.loads(failed.error)
        elif failed.oserror is not None:
            module, name, errno, strerror, filename = failed.oserror
            kind = getattr(importlib.import_module(module), name)
            exc = kind.__new__(kind)  # (its __init__ may take other arguments)
            exc.errno, exc.strerror, exc.filename = errno, strerror, filename
    if not isinstance(exc, BaseException):
        return RuntimeError(f"offline explain: the reading process failed:\n{failed.text}")
    note = "raised in offline explain's reading process:\n" + failed.text
    exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # (add_note(), on Python 3.10 too)
    return exc


# -- the child's side ------------------------------------------------------------------------------


class _Sender:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.batch: list[Any] = []

    def send(self, message: Any) -> None:
        pickle.dump(message, self._out, _PICKLE)
        self._out.flush()

    def add(self, item: Any) -> None:
        batch = self.batch
        batch.append(item)
        if len(batch) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.send(self.batch)
            self.batch = []


def _exit_when_closed(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass
    os._exit(0)


def _replay(job: Job, out: _Sender) -> None:
    def send(items: Iterator[tuple[float, Any]]) -> None:
        cache = CacheModel()
        for now, item in items:
            if isinstance(item, Skipped):
                out.add(item)
                continue
            try:
                done = replay(cache, item, now, provider=job.provider, model=job.model)
            except ReplayError as exc:
                out.add(Refused(Skipped(item.source, item.line, str(exc), item.index)))
                continue
            out.add(
                Call(
                    item.source,
                    item.line,
                    item.flow,
                    now,
                    done.provider.value,
                    done.model,
                    orjson.dumps(done.call),
                    done.response,
                    done.unread,
                )
            )
        out.flush()

    order = InputOrder(job.first, job.step)
    send(order.walk(read_requests(job.paths)))
    out.send(PhaseEnd(order.in_order, list(order.sources)))
    if not order.in_order:
        send(in_time_order(order.timeline))
        out.send(PhaseEnd(True, []))


def serve() -> None:
    """The child's main: read the job from stdin, write messages to stdout (see the module)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    stdout = sys.stdout.fileno()
    out = os.fdopen(os.dup(stdout), "wb")
    # print() goes to stderr from here on (nowhere when the parent has none)
    os.dup2(sys.stderr.fileno() if sys.stderr is not None else os.open(os.devnull, os.O_WRONLY), stdout)
    sender = _Sender(out)
    try:
        job = pickle.load(stdin)
        # (the raw descriptor: a thread blocked in the buffered reader would hold its lock at exit)
        threading.Thread(target=_exit_when_closed, args=(stdin.fileno(),), daemon=True).start()
        sender.send(Ready())
        _replay(job, sender)
    except BrokenPipeError:
        os._exit(0)  # the parent stopped reading
    except BaseException as exc:
        with contextlib.suppress(OSError):
            sender.send(_failed(exc))
    finally:
        with contextlib.suppress(OSError):
            out.close()
