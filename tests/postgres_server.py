"""A throwaway PostgreSQL server for the test session, and the fixtures that hand out its URLs.

``postgres_url`` (session scope) starts the server on first use and removes it when the session
ends, also when tests fail: ``initdb`` into a temporary folder, listening on 127.0.0.1 only at a
free port, no unix socket, trust authentication, and fsync, full-page writes and synchronous
commit off (nothing in it outlives the session). Its value names a database made for the session::

    postgresql://postgres@127.0.0.1:PORT/cachebench_test

``postgres_db`` (function scope) creates a fresh, empty database on that server for one test and
gives its URL (same form, another database name); the database is dropped after the test, so
tests never see each other's tables. ``fresh_database(url)`` does the same as a context manager,
for a test that needs more than one.

``CACHEBENCH_TEST_POSTGRES_URL=<url>`` uses that server instead of starting one: its role must be
allowed to create databases (``postgres_db`` creates and drops one per test there).

The server's programs (initdb, pg_ctl, postgres) are taken from initdb's folder on PATH, else from
the newest /usr/lib/postgresql/N/bin; ``scripts/ensure-postgres`` installs them. Without them the
fixtures fail (they do not skip). PostgreSQL refuses to run as root: as root, the folder belongs
to the ``postgres`` OS user and its programs run as that user. A watchdog process stops the
server and removes the folder if the test process dies without tearing down (killed, say).

Other test modules get the fixtures from tests/conftest.py, with
``from .postgres_server import postgres_db, postgres_url  # noqa: F401``.

PYTEST_DONT_REWRITE: tests/test_postgres_server.py imports this module before it names it in
``pytest_plugins``, too late for pytest to rewrite its asserts (it would warn, an error here).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

URL_ENV = "CACHEBENCH_TEST_POSTGRES_URL"
DATABASE = "cachebench_test"
LIB_ROOT = Path("/usr/lib/postgresql")
PROGRAMS = ("initdb", "pg_ctl", "postgres")
MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found on PATH nor in "
    f"{LIB_ROOT}/*/bin: run scripts/ensure-postgres (as root it installs Debian's postgresql "
    f"package), or set {URL_ENV} to the URL of a server to use"
)

# Appended to postgresql.conf (the last setting of a name wins). Speed over durability: the data
# dies with the session.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "shared_buffers": "'32MB'",
    "jit": "off",
    "timezone": "'UTC'",
    "logging_collector": "off",
}
# Trust on 127.0.0.1 only: no unix socket, no IPv6, no other address.
HBA = "host all all 127.0.0.1/32 trust\n"

# Waits on a pipe the test process holds open; end of file (the process closed it or died) stops
# the server and removes its folder. $0 is pg_ctl, $1 the folder.
WATCHDOG = 'read -r _ || :; "$0" -D "$1/data" -m immediate -s stop >/dev/null 2>&1; rm -rf "$1"'


class PostgresUnavailable(RuntimeError):
    """The throwaway server could not be set up; the message says why."""


def find_bindir(path: str | None = None, lib_root: Path = LIB_ROOT) -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: initdb's on ``path`` (default PATH), else
    the newest ``lib_root``/N/bin; None when there is none."""
    candidates = []
    found = shutil.which("initdb", path=path)
    if found:
        candidates.append(Path(found).resolve().parent)
    candidates += sorted(
        (p.parent for p in lib_root.glob("*/bin/initdb")),
        key=lambda d: tuple(int(n) for n in re.findall(r"\d+", d.parent.name)),
        reverse=True,
    )
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in PROGRAMS):
            return bindir
    return None


def server_programs(path: str | None = None, lib_root: Path = LIB_ROOT) -> Path:
    """``find_bindir()``'s folder; without one, fails the test (not a skip) saying what to run."""
    bindir = find_bindir(path, lib_root)
    if bindir is None:
        pytest.fail(MISSING, pytrace=False)
    return bindir


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (a URL, or a key=value connection string)."""
    if url.startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(url)._replace(path="/" + quote(name, safe="")))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One throwaway server: ``start()`` gives the URL of its database ``cachebench_test``,
    ``stop()`` stops it and removes its folder (also after a failed start)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir: Path | None = None
        self.port = 0
        self.pid = 0
        self._watchdog: subprocess.Popen[bytes] | None = None
        # As root, the server's programs run as the postgres OS user (no PAM, no extra tool).
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "PostgreSQL will not run as root and there is no 'postgres' OS user to run it "
                    "as: install Debian's postgresql package (scripts/ensure-postgres) or create the user"
                ) from None
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        # PG* variables (PGDATA, PGPORT, ...) would change what the programs do.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / program), *args],
            cwd=self.dir,
            env=self._env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._as,
        )

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="cachebench-pg-"))
        try:
            if self._as:
                os.chown(self.dir, self._as["user"], self._as["group"])
            self._watchdog = subprocess.Popen(
                ["/bin/sh", "-c", WATCHDOG, str(self.bindir / "pg_ctl"), str(self.dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env=self._env,
                start_new_session=True,  # no Ctrl-C from the terminal: the test process's teardown runs
                **self._as,
            )
            self._initdb()
            self._start_server()
            import psycopg

            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.stop()
            raise
        return self.url()

    def _initdb(self) -> None:
        done = self._run(
            "initdb",
            *("-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"),
            "--no-sync",
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({done.returncode}): {done.stdout}{done.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# tests/postgres_server.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in SETTINGS.items())
        (self.data / "pg_hba.conf").write_text(HBA)

    def _start_server(self) -> None:
        assert self.dir is not None
        log = self.dir / "server.log"
        for attempt in range(3):
            seen = log.stat().st_size if log.exists() else 0
            self.port = free_port()
            done = self._run(
                "pg_ctl",
                *("-D", str(self.data), "-l", str(log), "-w", "-t", "60", "-s"),
                *("-o", f"-p {self.port}", "start"),
            )
            if done.returncode == 0:
                self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
                return
            logged = log.read_text(errors="replace")[seen:] if log.exists() else ""
            if attempt < 2 and "could not bind" in logged:
                continue  # another process took the port between free_port() and the bind
            raise PostgresUnavailable(
                f"pg_ctl start failed ({done.returncode}): {done.stdout}{done.stderr}\n"
                f"server log ({log}):\n{logged[-3000:]}"
            )

    def stop(self) -> None:
        """Stop the server at once and remove its folder; then the watchdog goes too."""
        problem = ""
        if self.dir is not None:
            if (self.data / "postmaster.pid").exists():
                done = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-s", "stop")
                if done.returncode != 0:
                    problem = f"pg_ctl stop failed ({done.returncode}): {done.stdout}{done.stderr}"
                    if self.pid:
                        try:
                            os.kill(self.pid, signal.SIGKILL)  # its backends follow the postmaster
                        except ProcessLookupError:
                            pass
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()
            self._watchdog = None
        if problem:
            raise PostgresUnavailable(problem)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped on exit; yields its URL."""
    import psycopg
    from psycopg import sql

    name = f"cachebench_t_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        # FORCE: connections a test left open do not keep the database.
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of the session's database on the throwaway server (or on CACHEBENCH_TEST_POSTGRES_URL's)."""
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    bindir = server_programs()
    try:
        server = PostgresServer(bindir)
        url = server.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"the tests' PostgreSQL server did not start: {exc}", pytrace=False)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """URL of a fresh, empty database for this test alone, dropped after it."""
    with fresh_database(postgres_url) as url:
        yield url
