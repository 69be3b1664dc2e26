"""The embedded store: one SQLite file, shared safely by every process on the host.

WAL journal (readers never wait for the writer), ``synchronous=NORMAL`` (a committed batch
survives the process being killed; the last batches may be lost only if the machine loses
power), a wait of up to :data:`BUSY_TIMEOUT_S` for another process's write, and write
transactions that take the write lock at their start (``BEGIN IMMEDIATE``), so two processes
never deadlock upgrading a read to a write.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from ._schema import SQLITE
from ._sql import KEEP_CALLS_S, KEEP_HOURS_S, SQLStore, StoreError

#: How long a write waits for another process's write to finish.
BUSY_TIMEOUT_S = 30.0


class SQLiteStore(SQLStore):
    """A store in the SQLite file at ``path`` (created if missing, with its directory's
    permission). ``CacheTracker(store="sqlite:///path.db")`` makes one. A write waits up to
    ``busy_timeout_s`` for another process's; past it, the batch is retried at the next write."""

    dialect = SQLITE

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_calls_s: float = KEEP_CALLS_S,
        keep_hours_s: float = KEEP_HOURS_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        upgrade: bool = True,
    ) -> None:
        super().__init__(keep_calls_s=keep_calls_s, keep_hours_s=keep_hours_s, upgrade=upgrade)
        if (
            isinstance(busy_timeout_s, bool)
            or not isinstance(busy_timeout_s, (int, float))
            or busy_timeout_s < 0
        ):
            raise ValueError(f"busy_timeout_s must be a number of seconds >= 0, got {busy_timeout_s!r}")
        self.busy_timeout_s = float(busy_timeout_s)
        self.path = os.fspath(path)
        if not self.path:
            raise StoreError("cachebench store: the SQLite path is empty (sqlite:///path/to/file.db)")
        self.url = f"sqlite:///{self.path}"
        parent = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise StoreError(f"cachebench store {self.url}: {self.path} is a directory, not a database file")
        if not os.path.isdir(parent):
            raise StoreError(f"cachebench store {self.url}: the directory {parent} does not exist")
        self._open()

    def require_writable(self) -> None:
        # (a directory SQLite cannot make its -wal and -shm files in fails opening, before this)
        if not os.access(self.path, os.W_OK):
            raise StoreError(
                f"cachebench store {self.url}: the database cannot be written (read-only file or directory)"
            )

    def _connect(self) -> Any:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            self._version(conn)  # another application's database: refused before it is touched
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"cachebench store {self.url}: SQLite could not use its WAL journal here "
                    f"(journal mode {mode!r}); use a local file system"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _version(self, conn: Any) -> int:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if has_meta is None:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if tables:
                raise StoreError(
                    f"cachebench store {self.url}: this SQLite file holds other tables "
                    f"({', '.join(t[0] for t in tables[:5])}), not a cachebench store"
                )
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise StoreError(f"cachebench store {self.url}: the database has no schema version")
        return int(row[0])

    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return StoreError(
                f"cachebench store {self.url}: the file is not a SQLite database (or is corrupt)"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"cachebench store {self.url}: the database cannot be written (read-only file or directory)"
            )
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return StoreError(f"cachebench store {self.url}: cannot open the file (permissions?)")
        return super()._fail(exc, doing)
