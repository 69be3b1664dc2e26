"""The throwaway PostgreSQL server and its fixtures (tests/postgres_server.py) work as promised."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from urllib.parse import urlsplit

import psycopg
import pytest

from .postgres_server import (
    URL_ENV,
    PostgresServer,
    find_bindir,
    fresh_database,
    server_programs,
    with_database,
)

# The fixtures, as a plugin: the same registration tests/conftest.py may make, so one server serves
# the session whichever way a module gets them.
pytest_plugins = ["tests.postgres_server"]

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = bool(os.environ.get(URL_ENV))
own_server = pytest.mark.skipif(EXTERNAL, reason=f"{URL_ENV} names a server these tests did not start")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {name for (name,) in rows}


def databases(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie no one reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_session_database_answers(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        (version,) = conn.execute("SELECT version()").fetchone() or ("",)
        assert version.startswith("PostgreSQL ")
        if not EXTERNAL:
            assert conn.execute("SELECT current_database(), current_user").fetchone() == (
                "cachebench_test",
                "postgres",
            )


@own_server
def test_the_url_names_the_postgres_role_on_loopback(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    assert (parts.scheme, parts.username, parts.hostname, parts.path) == (
        "postgresql",
        "postgres",
        "127.0.0.1",
        "/cachebench_test",
    )
    assert parts.port


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_an_empty_database_of_its_own(postgres_db: str, postgres_url: str, turn: int) -> None:
    """Both turns find nothing: the first turn's table went with its database."""
    assert tables(postgres_db) == set()
    with psycopg.connect(postgres_db) as conn:
        conn.execute("CREATE TABLE left_behind (turn int)")
    assert tables(postgres_db) == {"left_behind"}
    assert "left_behind" not in tables(postgres_url)


def test_a_table_in_one_database_is_absent_from_another(postgres_db: str, postgres_url: str) -> None:
    with psycopg.connect(postgres_db) as conn:
        conn.execute("CREATE TABLE entries (key text PRIMARY KEY)")
        conn.execute("INSERT INTO entries VALUES ('a')")
    with fresh_database(postgres_url) as other:
        assert other != postgres_db
        assert tables(other) == set()
        with psycopg.connect(other) as conn, pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM entries")
        name = urlsplit(other).path.lstrip("/")
        assert name in databases(postgres_url)
    assert name not in databases(postgres_url)
    assert tables(postgres_db) == {"entries"}


def test_four_threads_insert_at_once(postgres_db: str) -> None:
    """Four connections open together (each waits for the others), each inserting 200 rows."""
    with psycopg.connect(postgres_db) as conn:
        conn.execute("CREATE TABLE hits (worker int, n int, PRIMARY KEY (worker, n))")
    together = Barrier(4, timeout=30)

    def insert(worker: int) -> int:
        with psycopg.connect(postgres_db) as conn:
            together.wait()
            (connected,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchone() or (0,)
            together.wait()
            for n in range(200):
                with conn.transaction():
                    conn.execute("INSERT INTO hits VALUES (%s, %s)", (worker, n))
            return int(connected)

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(insert, range(4)))
    assert min(seen) >= 4
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute(
            "SELECT worker, count(*) FROM hits GROUP BY worker ORDER BY worker"
        ).fetchall() == [(w, 200) for w in range(4)]


@own_server
def test_the_server_listens_on_127_0_0_1_only(postgres_url: str) -> None:
    port = urlsplit(postgres_url).port
    assert port
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)
    # The kernel's table of listening TCP sockets (state 0A) on that port: 127.0.0.1 alone.
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = line.split()[1:4]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:
                listening.append((table, address))
    assert listening == [("/proc/net/tcp", "0100007F")]
    # Another loopback address is refused: nothing listens on 0.0.0.0.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.2", port), timeout=5):
        pass


def test_without_the_server_programs_the_fixture_fails_naming_the_script(tmp_path: Path) -> None:
    """A failure, not a skip, that says what to run."""
    assert find_bindir(path=str(tmp_path), lib_root=tmp_path) is None
    with pytest.raises(pytest.fail.Exception, match=r"run scripts/ensure-postgres") as failed:
        server_programs(path=str(tmp_path), lib_root=tmp_path)
    assert not isinstance(failed.value, pytest.skip.Exception)


def test_the_programs_come_from_the_newest_complete_version(tmp_path: Path) -> None:
    for version, programs in [("9.6", 3), ("15", 3), ("16", 1)]:
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres")[:programs]:
            (bindir / name).touch(mode=0o755)
    assert find_bindir(path="", lib_root=tmp_path) == tmp_path / "15" / "bin"


def test_with_database_renames_the_database_in_either_form() -> None:
    assert (
        with_database("postgresql://u:pw@h:5/a?sslmode=disable", "b")
        == "postgresql://u:pw@h:5/b?sslmode=disable"
    )
    assert with_database("host=h dbname=a", "b") in {"host=h dbname=b", "dbname=b host=h"}


@pytest.fixture
def bindir() -> Path:
    """The server's programs: these tests start servers of their own."""
    if EXTERNAL and find_bindir() is None:
        pytest.skip(f"{URL_ENV} is set and this machine has no server programs to start a server with")
    return server_programs()


def test_stop_leaves_no_process_and_no_folder(bindir: Path) -> None:
    server = PostgresServer(bindir)
    url = server.start()
    assert server.dir is not None
    folder, pid = server.dir, server.pid
    assert alive(pid)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    server.stop()
    assert not alive(pid)
    assert not folder.exists()


def test_a_killed_test_process_leaves_no_server_behind(bindir: Path) -> None:
    """The watchdog stops the server and removes its folder when its test process dies unannounced."""
    script = (
        "import sys, time\n"
        "from tests.postgres_server import PostgresServer, server_programs\n"
        "server = PostgresServer(server_programs())\n"
        "server.start()\n"
        "print(server.pid, server.dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        pid_text, folder_text = child.stdout.readline().split()
        pid, folder = int(pid_text), Path(folder_text)
        assert alive(pid)
        child.kill()
    deadline = time.monotonic() + 30
    while (alive(pid) or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert not folder.exists()


def test_ensure_postgres_is_quiet_when_the_programs_are_there(bindir: Path) -> None:
    done = subprocess.run([ROOT / "scripts" / "ensure-postgres"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
