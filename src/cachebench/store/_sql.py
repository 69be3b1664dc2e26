"""The store's SQL, shared by SQLite and PostgreSQL: writing a batch, retention, the queries.

A batch is one transaction: its calls, what they add to the hourly roll-up, and the
incidents that changed. The roll-up is kept as calls arrive, so a report over a month reads
hours, not a million calls; retention then only deletes: raw calls past ``keep_calls_s``,
hours past ``keep_hours_s``, closed incidents past ``keep_hours_s`` too.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._rows import (
    CALL_COLUMNS,
    HOUR_S,
    HOURLY_KEY,
    HOURLY_SPAN,
    HOURLY_SUMS,
    INCIDENT_COLUMNS,
    StoredCall,
    StoredIncident,
    call_metrics,
    hourly_rows,
    incident,
    summary,
)
from ._schema import SCHEMA_VERSION, STEPS, SUMS_SQL, UPDATES, Dialect

#: How long raw calls are kept by default (then only their hourly roll-up).
KEEP_CALLS_S = 7 * 86400.0
#: How long the hourly roll-up and closed incidents are kept by default.
KEEP_HOURS_S = 400 * 86400.0
#: Rows one retention pass deletes at most per table (the consumer's pass stays short).
PRUNE_LIMIT = 5000

#: What a report groups by (``"all"``: one row, the totals).
GROUPS = ("flow", "prefix", "model", "day", "provider", "all")


class StoreError(ValueError):
    """The store cannot be used: a bad URL, a database of a newer schema, a file that is not a
    database, one that cannot be written. Raised at construction, with what to do."""


@dataclass(frozen=True)
class Pruned:
    """What one retention pass deleted."""

    calls: int
    hours: int
    incidents: int


class SQLStore:
    """A store in a SQL database (see :mod:`cachebench.store`). Subclasses connect."""

    dialect: Dialect
    url: str

    def __init__(
        self, *, keep_calls_s: float = KEEP_CALLS_S, keep_hours_s: float = KEEP_HOURS_S, upgrade: bool = True
    ) -> None:
        for name, value in (("keep_calls_s", keep_calls_s), ("keep_hours_s", keep_hours_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        #: Bring an older schema (or an empty database) to this version on opening; when False
        #: (a reader that must not change the database: the dashboard), refuse it instead.
        self.upgrade = bool(upgrade)
        self.keep_calls_s = float(keep_calls_s)
        self.keep_hours_s = float(keep_hours_s)
        self._lock = threading.Lock()  # one thread at a time on the connection
        self._conn: Any = None
        d = self.dialect
        cols = ", ".join(CALL_COLUMNS)
        self._insert_call = d.sql(f"INSERT INTO calls ({cols}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})")
        hourly_cols = (*HOURLY_KEY, *HOURLY_SUMS, *HOURLY_SPAN)
        self._upsert_hour = d.sql(
            f"INSERT INTO hourly ({', '.join(hourly_cols)}) VALUES ({', '.join('?' * len(hourly_cols))}) "
            f"ON CONFLICT ({', '.join(HOURLY_KEY)}) DO UPDATE SET {', '.join(UPDATES)}"
        )
        incident_updates = ", ".join(f"{c} = excluded.{c}" for c in INCIDENT_COLUMNS[1:])
        self._upsert_incident = d.sql(
            f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(INCIDENT_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET {incident_updates}"
        )

    # -- connection: subclasses ------------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _fail(self, exc: BaseException, doing: str) -> StoreError:
        """A clear error for what the driver raised while ``doing``."""
        return StoreError(f"cachebench store {self.url}: cannot {doing}: {exc}")

    def _open(self) -> None:
        """Connect and bring the schema to :data:`SCHEMA_VERSION` (a clear error if it cannot)."""
        try:
            conn = self._connect()
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, "open the database") from None
        try:
            self._migrate(conn)
        except StoreError:
            conn.close()
            raise
        except Exception as exc:
            conn.close()
            raise self._fail(exc, "read or write its schema") from None
        self._conn = conn

    def _migrate(self, conn: Any) -> None:
        self._begin(conn)
        try:
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"cachebench store {self.url}: the database has schema version {version}, newer than "
                    f"this cachebench's {SCHEMA_VERSION}: upgrade cachebench to use it"
                )
            if version < SCHEMA_VERSION and not self.upgrade:
                raise StoreError(
                    f"cachebench store {self.url}: "
                    + (
                        "the database holds no cachebench tables yet: record calls into it first"
                        if not version
                        else f"the database has schema version {version}, older than this cachebench's "
                        f"{SCHEMA_VERSION}, and this reader does not change it: open it once with this "
                        "cachebench's tracker or `cachebench report`, which upgrade it (a cachebench "
                        "older than this one then cannot write it)"
                    )
                )
            cur = conn.cursor()
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in STEPS[step]:
                    for text in statement(self.dialect.name) if callable(statement) else (statement,):
                        cur.execute(self.dialect.sql(text))
            if version != SCHEMA_VERSION:
                q = (
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'"
                    if version
                    else ("INSERT INTO meta (key, value) VALUES ('schema_version', ?)")
                )
                cur.execute(self.dialect.sql(q), (str(SCHEMA_VERSION),))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _version(self, conn: Any) -> int:
        """The database's schema version (0: empty)."""
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def after_fork(self) -> None:
        """In a forked child: a connection of its own (the parent's is not the child's), opened
        when the child first uses the store (a fork hook must not wait on a server)."""
        self._lock = threading.Lock()
        self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._open()
        return self._conn

    def require_writable(self) -> None:
        """:class:`StoreError` now when the store is known to refuse writes (a read-only SQLite
        file or directory), for a writer to fail where it is built rather than at each write."""
        return None

    def _broken(self, conn: Any) -> bool:
        """Whether a failure left ``conn`` unusable (the server went away): never, by default."""
        return False

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """The connection, under the lock, in one transaction: committed when the block ends,
        undone (:meth:`_undo`) when it raises."""
        with self._lock:
            conn = self._connection()
            try:
                self._begin(conn)
                yield conn
                conn.commit()
            except BaseException:
                self._undo(conn)
                raise

    def _undo(self, conn: Any) -> None:
        """Roll back after a failure (the lock held). A connection the failure broke (a server
        restarted, a network cut) is dropped: the next use connects again, and the calls still
        pending are written then."""
        try:
            conn.rollback()
        except Exception:
            pass  # (a lost connection cannot roll back; the failure itself is what is raised)
        if self._broken(conn):
            self._conn = None
            with contextlib.suppress(Exception):
                conn.close()

    @property
    def schema_version(self) -> int:
        """The database's schema version (:data:`SCHEMA_VERSION` once opened)."""
        return int(self._query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"])

    # -- writing ---------------------------------------------------------------------------

    def write(self, calls: Sequence[tuple[Any, ...]], incidents: Sequence[tuple[Any, ...]] = ()) -> None:
        """Store rows of calls (:func:`~cachebench.store._rows.call_row`) and incidents in one
        transaction; the calls' sums go into the hourly roll-up in the same transaction."""
        if not calls and not incidents:
            return
        with self._transaction() as conn:
            cur = conn.cursor()
            if calls:
                cur.executemany(self._insert_call, calls)
                # (the flows' roll-up follows, by the database's own triggers)
                cur.executemany(self._upsert_hour, hourly_rows(list(calls)))
            if incidents:
                cur.executemany(self._upsert_incident, sorted(incidents))

    def prune(self, now: float | None = None, *, limit: int | None = None) -> Pruned:
        """Delete raw calls older than ``keep_calls_s``, hours and closed incidents older than
        ``keep_hours_s`` (as of ``now``, default the time now); at most ``limit`` rows per
        table (``None``: all)."""
        now = time.time() if now is None else now
        calls_before = now - self.keep_calls_s
        hours_before = now - self.keep_hours_s
        cap = "" if limit is None else f" LIMIT {int(limit)}"
        statements: tuple[tuple[str, tuple[float, ...]], ...] = (
            (f"DELETE FROM calls WHERE id IN (SELECT id FROM calls WHERE ts < ?{cap})", (calls_before,)),
            _prune_hours("hourly", hours_before, limit),
            (
                f"DELETE FROM incidents WHERE id IN (SELECT id FROM incidents WHERE closed_at IS NOT NULL "
                f"AND closed_at < ?{cap})",
                (hours_before,),
            ),
            # (the same oldest hours, which the triggers emptied as the hourly roll-up lost them)
            _prune_hours("hourly_flows", hours_before, limit),
        )
        counts = []
        with self._transaction() as conn:
            cur = conn.cursor()
            for statement, args in statements:
                cur.execute(self.dialect.sql(statement), args)
                counts.append(max(0, cur.rowcount))
        calls, hours, incidents, _ = counts
        return Pruned(calls, hours, incidents)

    # -- reading ---------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.cursor()
                cur.execute(self.dialect.sql(sql), tuple(args))
                names = [d[0] for d in cur.description]
                out = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            except BaseException:
                self._undo(conn)
                raise
            conn.rollback()  # (PostgreSQL: end the read's transaction; SQLite: nothing open)
        return out

    def report(
        self,
        by: str = "flow",
        *,
        since: float | None = None,
        until: float | None = None,
        raw: bool = False,
        flow: str | None = None,
    ) -> list[dict[str, Any]]:
        """The aggregate keys per ``by`` (:data:`GROUPS`; ``all``: one row of totals) over
        calls in ``[since, until)``, most expensive first: whole hours from the hourly
        roll-up, the parts of hours at the edges from the raw calls; where retention kept an
        edge hour's calls only as sums, the hour counts whole on the side of its start
        (:meth:`exact` tells). ``raw=True`` sums only raw calls
        (what retention has not deleted yet), which the roll-up must equal. ``flow``: that
        flow's calls only."""
        if by not in GROUPS:
            raise ValueError(f"by must be one of {', '.join(GROUPS)}, got {by!r}")
        lo = -math.inf if since is None else float(since)
        hi = math.inf if until is None else float(until)
        sums: dict[Any, dict[str, Any]] = {}
        if raw:
            self._add(sums, by, "calls", lo, hi, flow)
        else:
            hours, edges, _ = self._plan(lo, hi)
            if hours is not None:
                self._add(sums, by, "hourly" if by == "prefix" else "hourly_flows", *hours, flow)
            for a, b in edges:
                self._add(sums, by, "calls", a, b, flow)
        if by == "all" and not sums:
            sums[""] = {"calls": 0}
        rows = []
        for key, s in sums.items():
            row = {by: key, **summary(s)}
            rows.append(row)
        rows.sort(key=lambda r: (-(r["cost_usd"] or 0.0), -r["calls"], str(r[by])))
        if by == "prefix":
            self._add_users(rows, since, until)
        return rows

    def series(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        bucket_s: int = HOUR_S,
        flow: str | None = None,
    ) -> list[dict[str, Any]]:
        """The calls summed per time bucket and flow, oldest first: each row the aggregate keys
        of :meth:`report` with ``t`` (the bucket's start, seconds since the epoch) and ``flow``.

        ``bucket_s``: a whole number of hours, summed from the hourly roll-up (every hour that
        starts in ``[since, until)``, or holds ``since``), or a part of an hour that divides it
        (60, 300, 900...), summed from the raw calls made in ``[since, until)`` (those retention
        has kept: the last ``keep_calls_s``). Either way the database sums, a bucket a row."""
        if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s <= 0:
            raise ValueError(f"bucket_s must be a positive whole number of seconds, got {bucket_s!r}")
        if bucket_s % HOUR_S and HOUR_S % bucket_s:
            raise ValueError(f"bucket_s must be a multiple of 3600 or divide it, got {bucket_s}")
        lo = -math.inf if since is None else float(since)
        hi = math.inf if until is None else float(until)
        if bucket_s >= HOUR_S:
            table = "hourly_flows"
            lo = math.floor(lo / HOUR_S) * HOUR_S if math.isfinite(lo) else lo
            t = "hour" if bucket_s == HOUR_S else f"(hour / {bucket_s}) * {bucket_s}"
        else:
            table = "calls"
            t = self.dialect.bucket(bucket_s)
        sums, where, args = self._sums(table, lo, hi, flow)
        sql = f"SELECT {t} AS t, flow AS f, {sums} FROM {table}{where} GROUP BY {t}, flow ORDER BY t, f"
        out = []
        for row in self._query(sql, args):
            if row["calls"]:
                out.append({"t": float(row.pop("t")), "flow": row.pop("f"), **summary(row)})
        return out

    def prefix_counts(self, *, since: float | None = None, until: float | None = None) -> dict[str, int]:
        """Per flow: how many distinct cacheable prefixes its calls used over about ``[since,
        until)`` (its hours in the roll-up)."""
        lo = -math.inf if since is None else math.floor(since / HOUR_S) * HOUR_S
        hi = math.inf if until is None else float(until)
        where, args = self._bounds("hour", lo, hi)
        where += (" AND " if where else " WHERE ") + "prefix_id <> ''"
        rows = self._query(
            f"SELECT flow, COUNT(DISTINCT prefix_id) AS n FROM hourly{where} GROUP BY flow", args
        )
        return {r["flow"]: int(r["n"]) for r in rows}

    def _add_users(self, rows: list[dict[str, Any]], since: float | None, until: float | None) -> None:
        """A prefix's ``flows`` and ``models`` (sorted): who used it over about the range (its
        hours in the roll-up)."""
        lo = -math.inf if since is None else math.floor(since / HOUR_S) * HOUR_S
        hi = math.inf if until is None else float(until)
        where, args = self._bounds("hour", lo, hi)
        users: dict[str, tuple[set[str], set[str]]] = {}
        for r in self._query(f"SELECT DISTINCT prefix_id, flow, model FROM hourly{where}", args):
            flows, models = users.setdefault(r["prefix_id"], (set(), set()))
            flows.add(r["flow"])
            if r["model"]:
                models.add(r["model"])
        for row in rows:
            flows, models = users.get(row["prefix"] or "", (set(), set()))
            row["flows"] = sorted(flows)
            row["models"] = sorted(models)

    def _whole(self, hour: float) -> bool:
        """Whether every call of the hour starting at ``hour`` is still kept raw (retention
        deletes the oldest calls; the roll-up keeps their sums)."""
        (raw,) = self._query(
            "SELECT COUNT(*) AS n FROM calls WHERE ts >= ? AND ts < ?", (hour, hour + HOUR_S)
        )
        (rolled,) = self._query("SELECT SUM(calls) AS n FROM hourly_flows WHERE hour = ?", (hour,))
        return int(raw["n"] or 0) == int(rolled["n"] or 0)

    def _plan(
        self, lo: float, hi: float
    ) -> tuple[tuple[float, float] | None, list[tuple[float, float]], bool]:
        """How to sum ``[lo, hi)``: whole hours from the roll-up, and the parts of the hours at
        its edges from the raw calls, where those are all kept. Where they are not, an edge
        hour counts whole on the side of its start (so the two sides of a comparison never
        count it twice), and the plan is not exact."""
        exact = True
        edges: list[tuple[float, float]] = []
        start = math.floor(lo / HOUR_S) * HOUR_S if math.isfinite(lo) else lo
        end = math.floor(hi / HOUR_S) * HOUR_S if math.isfinite(hi) else hi
        if math.isfinite(lo) and math.isfinite(hi) and start == end:  # within one hour
            if lo >= hi:
                return None, [], True
            if self._whole(start):
                return None, [(lo, hi)], True
            return ((start, start + HOUR_S) if lo == start else None), [], False
        h0, h1 = lo, hi
        if math.isfinite(lo) and lo != start:
            h0 = start + HOUR_S
            if self._whole(start):
                edges.append((lo, h0))
            else:
                exact = False
        if math.isfinite(hi) and hi != end:
            if self._whole(end):
                edges.append((end, hi))
                h1 = end
            else:
                h1 = end + HOUR_S
                exact = False
        return ((h0, h1) if h0 < h1 else None), edges, exact

    def exact(self, since: float | None = None, until: float | None = None) -> bool:
        """Whether a report over ``[since, until)`` starts and ends at those seconds (False: an
        edge falls in an hour whose calls retention kept only as sums; see :meth:`report`)."""
        lo = -math.inf if since is None else float(since)
        hi = math.inf if until is None else float(until)
        return self._plan(lo, hi)[2]

    _GROUP_SQL = {
        "flow": "flow",
        "prefix": "prefix_id",
        "model": "model",
        "provider": "provider",
        "day": "(({hour}) / 86400) * 86400",
        "all": "''",
    }

    def _group(self, by: str, table: str) -> str:
        expr = self._GROUP_SQL[by]
        if by == "day":
            return (
                expr.replace("({hour})", "hour")
                if table.startswith("hourly")
                else expr.format(hour=self.dialect.hour)
            )
        return expr

    @staticmethod
    def _bounds(column: str, lo: float, hi: float) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if math.isfinite(lo):
            where.append(f"{column} >= ?")
            args.append(lo)
        if math.isfinite(hi):
            where.append(f"{column} < ?")
            args.append(hi)
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def _sums(self, table: str, lo: float, hi: float, flow: str | None) -> tuple[str, str, list[Any]]:
        """What a query of ``table`` (a roll-up, or ``calls``) selects to sum its rows: the
        :data:`HOURLY_SUMS` and the span, as SQL; and its WHERE clause (the hours, or the
        calls' times, in ``[lo, hi)``; ``flow``'s only when given) with its arguments."""
        if table != "calls":
            where, args = self._bounds("hour", lo, hi)
            columns = [f"SUM({s}) AS {s}" for s in HOURLY_SUMS]
            span = "MIN(first_seen) AS first_seen, MAX(last_seen) AS last_seen"
        else:
            where, args = self._bounds("ts", lo, hi)
            columns = [f"{SUMS_SQL[s]} AS {s}" for s in HOURLY_SUMS]
            span = "MIN(ts) AS first_seen, MAX(ts) AS last_seen"
        if flow is not None:
            where += (" AND " if where else " WHERE ") + "flow = ?"
            args.append(flow)
        return f"{', '.join(columns)}, {span}", where, args

    def _add(
        self,
        sums: dict[Any, dict[str, Any]],
        by: str,
        table: str,
        lo: float,
        hi: float,
        flow: str | None = None,
    ) -> None:
        """Add the sums per ``by`` of ``table`` (a roll-up's hours in ``[lo, hi)``, or the raw
        calls made then; ``flow``'s only when given) to ``sums``."""
        selected, where, args = self._sums(table, lo, hi, flow)
        g = self._group(by, table)
        sql = f"SELECT {g} AS k, {selected} FROM {table}{where}"
        sql += f" GROUP BY {g}" if by != "all" else ""
        for row in self._query(sql, args):
            if row["calls"]:
                _merge(sums, _key(by, row.pop("k")), row)

    def calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        flow: str | None = None,
        after_id: int | None = None,
        limit: int | None = None,
        newest: bool = False,
    ) -> list[StoredCall]:
        """Stored raw calls, oldest first (``newest=True``: the ``limit`` newest, still oldest
        first), by time, flow and id."""
        where, args = [], []
        for cond, value in (("ts >= ?", since), ("ts < ?", until), ("flow = ?", flow), ("id > ?", after_id)):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = "SELECT * FROM calls" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC" if newest else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._query(sql, args)
        if newest:
            rows.reverse()
        return [StoredCall(r["id"], call_metrics(r)) for r in rows]

    def iter_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        flow: str | None = None,
        page: int = 10_000,
    ) -> Iterator[StoredCall]:
        """Every stored raw call in ``[since, until)`` (``flow``'s only, when given), oldest
        first, a page at a time."""
        after = None
        while True:
            chunk = self.calls(since=since, until=until, flow=flow, after_id=after, limit=page)
            yield from chunk
            if len(chunk) < page:
                return
            after = chunk[-1].id

    def call(self, call_id: int) -> StoredCall | None:
        rows = self._query("SELECT * FROM calls WHERE id = ?", (int(call_id),))
        return StoredCall(rows[0]["id"], call_metrics(rows[0])) if rows else None

    def incidents(
        self, *, since: float | None = None, flow: str | None = None, open_only: bool = False
    ) -> list[StoredIncident]:
        """Stored incidents, oldest first."""
        where, args = [], []
        for cond, value in (("started_at >= ?", since), ("flow = ?", flow)):
            if value is not None:
                where.append(cond)
                args.append(value)
        if open_only:
            where.append("closed_at IS NULL")
        sql = "SELECT * FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
        return [incident(r) for r in self._query(sql + " ORDER BY started_at, id", args)]

    def incident(self, incident_id: str) -> StoredIncident | None:
        rows = self._query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return incident(rows[0]) if rows else None

    def imported(self, digest: str) -> dict[str, Any] | None:
        """The import of the file whose bytes have this digest, if any (source, time, calls)."""
        rows = self._query("SELECT source, imported_at, calls FROM imports WHERE digest = ?", (digest,))
        return rows[0] if rows else None

    def note_import(self, digest: str, source: str, calls: int, at: float) -> None:
        with self._transaction() as conn:
            conn.cursor().execute(
                self.dialect.sql(
                    "INSERT INTO imports (digest, source, imported_at, calls) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO UPDATE SET source = excluded.source, "
                    "imported_at = excluded.imported_at, calls = imports.calls + excluded.calls"
                ),
                (digest, source, at, calls),
            )

    def import_records(
        self, sources: Any, *, flow: str | None = None, provider: str | None = None, force: bool = False
    ) -> Any:
        """Load saved calls into this store, analysed as live calls are, in timestamp order:
        file paths (JSON Lines of ``record()``'s shape, Anthropic Message Batches and OpenAI
        Batch input/output pairs) or :class:`~cachebench.importing.SavedCall` items. Lines that
        cannot be read are skipped and reported; a file this store imported before is refused
        (:class:`~cachebench.importing.ImportFileError`) unless ``force``. Returns an
        :class:`~cachebench.store._import.Imported`."""
        from ._import import import_records

        return import_records(self, sources, flow=flow, provider=provider, force=force)

    def count_calls(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM calls")[0]["n"])


def _key(by: str, value: Any) -> Any:
    if by == "prefix" and value == "":
        return None
    if by == "model" and value == "":
        return None
    if by == "day" and value is not None:
        return time.strftime("%Y-%m-%d", time.gmtime(int(value)))
    return value


def _merge(sums: dict[Any, dict[str, Any]], key: Any, row: dict[str, Any]) -> None:
    into = sums.get(key)
    if into is None:
        sums[key] = {k: (v if v is not None else 0) for k, v in row.items()}
        return
    for k, v in row.items():
        if v is None:
            continue
        if k == "first_seen":
            into[k] = min(into[k], v) if into[k] else v
        elif k == "last_seen":
            into[k] = max(into[k], v)
        else:
            into[k] = (into[k] or 0) + v


def _prune_hours(table: str, before: float, limit: int | None) -> tuple[str, tuple[float, ...]]:
    """The statement (and its arguments) deleting a roll-up's hours that ended before
    ``before``, the oldest ``limit`` hours at most."""
    if limit is None:
        return f"DELETE FROM {table} WHERE hour + 3600 <= ?", (before,)
    return (
        f"DELETE FROM {table} WHERE hour + 3600 <= ? AND hour IN "
        f"(SELECT DISTINCT hour FROM {table} WHERE hour + 3600 <= ? ORDER BY hour LIMIT {int(limit)})",
        (before, before),
    )
