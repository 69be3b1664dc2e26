"""The fleet's store: one PostgreSQL database that processes on many hosts write to.

The same schema and queries as SQLite (:mod:`cachebench.store._sql`), through psycopg 3 (the
``postgres`` extra). Each batch is one transaction; the hourly roll-up's rows are upserted in
one order by every writer, so concurrent batches never deadlock.
"""

from __future__ import annotations

from typing import Any

from .._extras import install_hint
from ._schema import POSTGRES
from ._sql import KEEP_CALLS_S, KEEP_HOURS_S, SQLStore, StoreError

#: How long connecting may take.
CONNECT_TIMEOUT_S = 10


class PostgresStore(SQLStore):
    """A store in the PostgreSQL database at ``url`` (``postgresql://user@host:port/db``)."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        keep_calls_s: float = KEEP_CALLS_S,
        keep_hours_s: float = KEEP_HOURS_S,
        upgrade: bool = True,
    ) -> None:
        super().__init__(keep_calls_s=keep_calls_s, keep_hours_s=keep_hours_s, upgrade=upgrade)
        self.url = url
        self._shown = _without_password(url)
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StoreError(
                f"cachebench store: a postgresql:// store needs psycopg: {install_hint('postgres')}"
            ) from None
        self._open()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False)

    def _begin(self, conn: Any) -> None:
        conn.rollback()  # (psycopg opens a transaction at the first statement)

    def _broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def _version(self, conn: Any) -> int:
        cur = conn.cursor()
        # A lock per database while the schema is read or changed: processes starting together
        # create it once.
        cur.execute("SELECT pg_advisory_xact_lock(7262386351)")
        cur.execute("SELECT to_regclass('meta') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0
        cur.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        row = cur.fetchone()
        if row is None:
            raise StoreError(f"cachebench store {self._shown}: the database has no schema version")
        return int(row[0])

    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        return StoreError(
            f"cachebench store {self._shown}: cannot {doing}: {str(exc).strip().splitlines()[0]}"
        )


def _without_password(url: str) -> str:
    """The URL as errors show it: no password."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://..."
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = parts.username or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
