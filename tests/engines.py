"""Real database engines for the tests: one PostgreSQL server per test session.

``pg_server`` (session) runs ``initdb`` into a fresh directory and starts
PostgreSQL on a free loopback port with ``fsync=off``, as a non-root user
(PostgreSQL refuses to run as root, and CI runs as root: then the ``postgres``
system user, or a ``useradd``'d one, owns the cluster and every command runs
through ``runuser``). It migrates one template database; ``pg_url`` (per test)
is a database of its own, as fresh as a copy of that template: the first ones
are copies (``CREATE DATABASE ... TEMPLATE``, about 0.3 s each), and after a
test its database is emptied (every table, with triggers off, and every
identity sequence restarted: a few ms) and handed to the next test. The server
is stopped and its directory removed at the end of the session.

Where the binaries are missing or the server cannot start, the tests that need
it SKIP and say why; they never pass silently.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENGINES = ("sqlite", "postgres")
TEMPLATE = "hs_template"
_USER = "hs"  # the database superuser initdb creates (trust auth on loopback only)
_counter = itertools.count(1)
_free: list[str] = []  # emptied databases, ready for the next test
_reset_sql: list[bytes] = []  # built from the template once


def find_bindir() -> Path | None:
    """A PostgreSQL >= 15 bin directory with initdb and pg_ctl, newest first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in found:
        if (bindir / "pg_ctl").is_file() and (bindir / "initdb").is_file():
            return bindir
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _os_user() -> str | None:
    """The non-root account to run PostgreSQL as (None: we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "hs-pgtest"):
        with contextlib.suppress(KeyError):
            import pwd

            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "hs-pgtest"], check=True, capture_output=True
    )
    return "hs-pgtest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    os_user: str | None
    fsync: bool = False  # tests: off (speed); benchmarks: on (real commit cost)

    def url(self, database: str) -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.os_user is not None:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> str | None:
        """Start the server; the reason it could not, or None."""
        data = self.root / "data"
        init = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            _USER,
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if init.returncode != 0:
            return f"initdb failed: {init.stderr.strip()[-400:]}"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c max_connections=300 -c shared_buffers=64MB"
        )
        if not self.fsync:
            options += " -c fsync=off -c full_page_writes=off"
        started = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            options,
            "start",
        )
        if started.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-400:]
            return f"pg_ctl start failed: {started.stderr.strip()[-200:]} {log}"
        return None

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())


def start_pg(*, fsync: bool = False) -> PgServer | str:
    """A started server, or why there is none."""
    bindir = find_bindir()
    if bindir is None:
        return "PostgreSQL binaries not found (apt-get install postgresql; `make system-deps`)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    try:
        user = _os_user()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"no non-root user to run PostgreSQL as: {exc}"
    root = Path(tempfile.mkdtemp(prefix="hs-pg-"))
    root.chmod(0o755)
    if user is not None:
        shutil.chown(root, user)
    server = PgServer(bindir, root, _free_port(), user, fsync)
    reason = server.start()
    if reason is not None:
        shutil.rmtree(root, ignore_errors=True)
        return reason
    return server


def _migrate_template(server: PgServer) -> None:
    from storage import migrate, pg

    server.admin(f"CREATE DATABASE {TEMPLATE}")
    conn = pg.connect(server.url(TEMPLATE))
    try:
        migrate.migrate(pg.as_sqlite(conn))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    started = start_pg()
    if isinstance(started, str):
        pytest.skip(f"PostgreSQL tests skipped: {started}")
    try:
        _migrate_template(started)
        yield started
    finally:
        started.stop()


def _reset_script(server: PgServer) -> bytes:
    """Empty every table but schema_version (back to the template's rows), restart
    identity sequences, reseed stream_head."""
    if not _reset_sql:
        import psycopg

        with psycopg.connect(server.url(TEMPLATE), autocommit=True) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'schema_version' ORDER BY tablename"
                )
            ]
            sequences = [r[0] for r in conn.execute("SELECT sequencename FROM pg_sequences")]
            seeded = conn.execute("SELECT stream, position FROM stream_head").fetchall()
            (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchall()
        statements = ["SET session_replication_role = replica"]  # no triggers, no FK checks
        statements += [f"DELETE FROM {t}" for t in tables]
        # A test may record a newer schema (the "newer than this server" refusal).
        statements.append(f"DELETE FROM schema_version WHERE version > {version[0]}")
        statements += [f"ALTER SEQUENCE {q} RESTART" for q in sequences]
        statements += [f"INSERT INTO stream_head VALUES ('{st}', {pos})" for st, pos in seeded]
        statements.append("SET session_replication_role = DEFAULT")
        _reset_sql.append("; ".join(statements).encode())
    return _reset_sql[0]


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A database of its own for one test, migrated and empty."""
    if _free:
        name = _free.pop()
    else:
        name = f"hs_test_{os.getpid()}_{next(_counter)}"
        pg_server.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield pg_server.url(name)
    finally:
        _recycle(pg_server, name)


def _recycle(server: PgServer, name: str) -> None:
    import psycopg

    script = _reset_script(server)
    try:
        server.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        with psycopg.connect(server.url(name), autocommit=True) as conn:
            conn.execute(script)
    except psycopg.Error:
        server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    _free.append(name)


@pytest.fixture
def pg_empty_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with no schema at all (migration tests)."""
    name = f"hs_empty_{os.getpid()}_{next(_counter)}"
    pg_server.admin(f"CREATE DATABASE {name}")
    try:
        yield pg_server.url(name)
    finally:
        pg_server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
