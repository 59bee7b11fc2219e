"""A private PostgreSQL cluster in a temporary directory, for tests and benchmarks that stop it.

The machine's PostgreSQL on 5432 is shared by every suite running on it and must never be stopped.
A test that restarts "the database" gets its own cluster here instead: `initdb` with trust auth in a
temporary directory, on a free port of 127.0.0.1, started and stopped with `pg_ctl`.

PostgreSQL refuses to run as root, so when this process is root the server's commands run as the
`postgres` user (`runuser`), and the directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from services.embedded_broker import free_port

BIN = Path(os.environ.get("LIANDONG_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
START_TIMEOUT_S = 30


class PgClusterError(RuntimeError):
    pass


class PgCluster:
    """One cluster: `start()` creates it the first time, `stop()` and `start()` restart it, `destroy()`
    removes it. Databases survive a restart (the data directory is kept)."""

    def __init__(self, port: int | None = None) -> None:
        if not (BIN / "initdb").exists():
            raise PgClusterError(
                f"no PostgreSQL server binaries in {BIN} (initdb, pg_ctl); install postgresql-15 "
                "or point LIANDONG_PG_BIN at another version's bin directory"
            )
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="liandong-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._initialised = False

    def _run(self, *command: str, timeout: float = START_TIMEOUT_S) -> None:
        argv = [str(BIN / command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgClusterError(
                f"{command[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
                f"\n{tail}"
            )

    def _init(self) -> None:
        # --no-sync and fsync=off: a throw-away cluster; durability across a *machine* crash is not
        # what these tests are about (a fast shutdown still writes everything out).
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8")
        self._initialised = True

    def start(self) -> float:
        """Start the server and wait until it accepts connections; return the seconds it took."""
        if not self._initialised:
            self._init()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
            "-c shared_buffers=32MB"
        )
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> float:
        """`pg_ctl stop -m MODE`: fast rolls back open transactions and closes every connection."""
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        return time.monotonic() - started

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    @property
    def dsn(self) -> str:
        """libpq/asyncpg DSN of the maintenance database."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """SQLAlchemy URL of a database of this cluster."""
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str = "liandong") -> str:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def destroy(self) -> None:
        if self._initialised and self.running:
            with contextlib.suppress(PgClusterError):  # removed below either way
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
