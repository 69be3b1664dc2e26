"""Keep what was measured: calls, their hourly roll-up and incidents, in SQLite or PostgreSQL.

``CacheTracker(store="sqlite:///calls.db")`` (or ``CACHEBENCH_DB``) writes every finished call
there from the tracker's consumer thread, in batches: a batch is written when the consumer's
queue empties, when it reaches :data:`BATCH_CALLS` calls, or when its oldest call has waited
:data:`FLUSH_WINDOW_S`; ``flush()``, ``close()``, interpreter exit, the end of a
``multiprocessing`` child and SIGTERM write what is pending. The caller never waits on the
disk. A process killed outright (SIGKILL) loses at most the calls of the last
:data:`FLUSH_WINDOW_S` (plus any the consumer had not analysed yet).

Raw calls are kept ``keep_calls_s`` (default 7 days), the hourly roll-up per flow, prefix and
model ``keep_hours_s`` (default 400 days), incidents whole for as long. Retention runs on the
consumer every :data:`PRUNE_EVERY_S`, deleting at most :data:`~cachebench.store._sql.PRUNE_LIMIT`
rows a table each time; ``cachebench prune`` runs it by hand. Prompt text is never stored;
with ``capture_text=True`` only the redacted excerpts of a diff are.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._guard import logger
from ._rows import NANO_USD, StoredCall, StoredIncident, call_row, incident_row
from ._schema import SCHEMA_VERSION
from ._sql import GROUPS, KEEP_CALLS_S, KEEP_HOURS_S, PRUNE_LIMIT, Pruned, SQLStore, StoreError
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..diagnose.flowstate import Incident
    from ..types import CallMetrics

__all__ = [
    "BATCH_CALLS",
    "DEFAULT_PATH",
    "FLUSH_WINDOW_S",
    "GROUPS",
    "KEEP_CALLS_S",
    "KEEP_HOURS_S",
    "NANO_USD",
    "PRUNE_EVERY_S",
    "SCHEMA_VERSION",
    "Pruned",
    "SQLStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreWriter",
    "StoredCall",
    "StoredIncident",
    "open_store",
    "sqlite_path",
]

#: A batch is written once it holds this many calls.
BATCH_CALLS = 5000
#: ... or once its oldest call has waited this long (seconds).
FLUSH_WINDOW_S = 0.5
#: How often (tracker clock) the consumer runs a bounded retention pass.
PRUNE_EVERY_S = 60.0
#: Calls kept while the database cannot be written (a lock held too long, a full disk); beyond
#: it the oldest are dropped, logged and counted.
MAX_PENDING = 200_000

Store = SQLStore
ENV = "CACHEBENCH_DB"
#: The store the command line and the dashboard read when neither ``--db`` nor ``CACHEBENCH_DB``
#: names one: a SQLite file in the current directory.
DEFAULT_PATH = "cachebench.db"


def open_store(target: object, **options: Any) -> SQLStore:
    """A store from ``target``: a :class:`SQLStore` as it is; ``"sqlite:///relative.db"``,
    ``"sqlite:////absolute.db"``; ``"postgresql://..."`` (or ``postgres://``); a plain path
    (``str`` without ``://``, or ``os.PathLike``) is a SQLite file. A clear error otherwise."""
    if isinstance(target, SQLStore):
        return target
    if isinstance(target, os.PathLike):
        return SQLiteStore(target, **options)
    if not isinstance(target, str):
        raise TypeError(
            f"store must be None, a URL ('sqlite:///path.db', 'postgresql://...'), a path or a Store; got {target!r}"
        )
    path = sqlite_path(target)
    if path is not None:
        return SQLiteStore(path, **options)
    if target.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(target, **options)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise StoreError(f"cachebench store: unknown scheme {scheme!r} (use sqlite:/// or postgresql://)")
    return SQLiteStore(target, **options)


def sqlite_path(target: str) -> str | None:
    """The file a SQLite store URL (``sqlite:///relative.db``, ``sqlite:////absolute.db``) or a
    plain path names; None for another scheme."""
    if target.startswith("sqlite://"):
        path = target[len("sqlite://") :]
        if not path.startswith("/"):
            raise StoreError(
                f"cachebench store {target!r}: write sqlite:///relative.db or sqlite:////absolute.db"
            )
        return path[1:]
    return None if "://" in target else target


def store_from_env(environ: Any = os.environ) -> str | None:
    """The store ``CACHEBENCH_DB`` names, if set (read once, where a tracker is built)."""
    value = environ.get(ENV)
    return value or None


class StoreWriter:
    """The consumer's side of a store: gathers finished calls and writes them in batches with
    the incidents that changed. Touched only on the consumer thread (or, once it stopped, by
    the thread closing the tracker)."""

    def __init__(self, store: SQLStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.rows: list[tuple[Any, ...]] = []
        self.first_at = 0.0  # time.monotonic() of the oldest pending call
        self.failures = 0
        self.dropped = 0
        self._incidents: dict[str, tuple[int, float | None]] = {}  # stored: id -> (calls, closed_at)
        self._open: dict[str, Incident] = {}  # incidents not yet stored closed
        self._seen: set[str] = set()  # every incident id met (a few bytes each; at most one a call)
        self._next_prune = 0.0
        self.retention = True  # run a bounded retention pass now and then (an import does not)

    def add(self, m: CallMetrics) -> bool:
        """Keep one call's row; True when the batch is due (full, or waited long enough)."""
        rows = self.rows
        if not rows:
            self.first_at = time.monotonic()
        rows.append(call_row(m))
        return len(rows) >= BATCH_CALLS or time.monotonic() - self.first_at >= FLUSH_WINDOW_S

    def _changed(self, incidents: Sequence[Incident]) -> list[tuple[Any, ...]]:
        """The rows of the incidents that are new or changed since the last write. New ones are
        at the end of the detector's list (it only appends), so the scan stops at the first one
        seen before; the open ones are re-checked."""
        for inc in reversed(incidents):
            if inc.uid in self._seen:
                break
            self._seen.add(inc.uid)
            self._open[inc.uid] = inc
        stored = self._incidents
        return [
            incident_row(uid, inc.regression())
            for uid, inc in self._open.items()
            if stored.get(uid) != (inc.calls, inc.closed_at)
        ]

    def write(self, incidents: Sequence[Incident], final: bool) -> None:
        """Write what is pending (``final``: also run nothing else, the tracker is closing).
        On failure the calls stay pending for the next write, and the error is raised for the
        guard to log and count."""
        rows = self.rows
        changed = self._changed(incidents)
        if rows or changed:
            try:
                self.store.write(rows, changed)
            except Exception:
                self.failures += 1
                if len(rows) > MAX_PENDING:
                    extra = len(rows) - MAX_PENDING
                    del rows[:extra]
                    self.dropped += extra
                    logger.error(
                        "cachebench: the store could not be written; %d call(s) dropped so far", self.dropped
                    )
                raise
            self.rows = []
            for row in changed:
                uid, closed_at = row[0], row[5]
                if closed_at is None:
                    self._incidents[uid] = (row[6], closed_at)
                else:  # stored closed: it does not change again
                    self._incidents.pop(uid, None)
                    self._open.pop(uid, None)
        if not final and self.retention:
            now = self.clock()
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_EVERY_S
                self.store.prune(now, limit=PRUNE_LIMIT)

    def after_fork(self) -> None:
        self.rows = []
        self.store.after_fork()

    def close(self) -> None:
        self.store.close()
