"""A real PostgreSQL server for tests, started from the machine's own ``initdb`` and ``pg_ctl`` on a
free loopback port in a temp folder, with password (scram-sha-256) authentication, and stopped at
the end. Not a test module (no ``test_`` prefix); no dependency beyond the stdlib and psycopg2.

    with PostgresServer.start() as server:
        env = server.env(server.create_database("t1"))   # DAGSTER_PG_* for that database

PostgreSQL refuses to run as root, so under root the server runs as Debian's ``postgres`` user (or
``nobody``) from a folder that user owns; pytest-postgresql has no such option, hence this helper.
`find_binaries` returns None when the server is not installed (the Makefile's test target installs
Debian's ``postgresql`` when it can); the fixtures then skip, saying so.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.live_dagster import free_port

SUPERUSER = "sessionlake"
PASSWORD = "pg-test-password"


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: None (this user) unless root, else ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists to run PostgreSQL")


class PostgresServer:
    """One running server; `stop()` (or leaving the ``with`` block) shuts it down and removes its folder."""

    def __init__(self, bindir: Path, folder: Path, port: int, user: pwd.struct_passwd | None):
        self.bindir, self.folder, self.port, self.user = bindir, folder, port, user
        self.host = "127.0.0.1"
        self.running = False
        self._options = ""

    @classmethod
    def start(cls, bindir: Path | None = None, fsync: bool = False) -> PostgresServer:
        """``fsync``: durable commits as in production (benchmarks); tests run without, since a test
        server need not survive a power cut and the machine's disk is shared."""
        bindir = bindir or find_binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        user = _server_user()
        folder = Path(tempfile.mkdtemp(prefix="sessionlake-pg-"))
        server = cls(bindir, folder, free_port(), user)
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        try:
            (folder / "pwfile").write_text(PASSWORD + "\n")
            if user is not None:
                os.chown(folder / "pwfile", user.pw_uid, user.pw_gid)
            server._run("initdb", "-D", str(folder / "data"), "-U", SUPERUSER, "--pwfile", str(folder / "pwfile"),
                        "--auth", "scram-sha-256", "-E", "UTF8", "--no-sync")
            server._options = f"-h {server.host} -p {server.port} -k {folder}" + ("" if fsync else " -c fsync=off")
            server.resume()
        except BaseException:
            server._remove()
            raise
        return server

    def resume(self) -> None:
        """Start the server (again, after `halt`) on the same port and data."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", self._options, "start")
        self.running = True

    def halt(self) -> None:
        """Stop the server at once, as a crash or a lost host would (``-m immediate``), keeping its data."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        self.running = False

    def _run(self, tool: str, *args: str) -> None:
        kwargs = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid,
                                                "extra_groups": []}
        done = subprocess.run([str(self.bindir / tool), *args], capture_output=True, text=True, cwd=self.folder,
                              timeout=120, **kwargs)
        if done.returncode:
            log = self.folder / "server.log"
            raise RuntimeError(f"{tool} exited {done.returncode}: {done.stderr.strip()}"
                               + (f"\nserver log:\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def connect(self, db_name: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=SUPERUSER, password=PASSWORD, dbname=db_name)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        return name

    def env(self, db_name: str) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables that point pipelines/instance/dagster-postgres.yaml at ``db_name``."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USERNAME": SUPERUSER,
                "DAGSTER_PG_PASSWORD": PASSWORD, "DAGSTER_PG_DB": db_name}

    def stop(self) -> None:
        try:
            if self.running:
                self.halt()
        finally:
            self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
