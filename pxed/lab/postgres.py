"""A PostgreSQL server of the lab's own: initdb in a scratch directory, a UNIX socket only.

For the tests and benchmarks of the shared lease store. It listens on no TCP port at all
(``listen_addresses = ''``): pxed processes in network namespaces reach it through the
socket file, which namespaces do not hide. PostgreSQL refuses to run as root, so the data
directory belongs to the ``postgres`` user (Debian's package makes it) and the server runs
as that user; local connections are trusted (the socket directory is the lab's own).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from pxed.lab.tools import ToolMissing

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
PORT = 5432
"""Only names the socket file (.s.PGSQL.5432): no TCP port is opened."""


def _binary(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} not found: apt-get install postgresql (PostgreSQL 15)")
    return found


class PostgresServer:
    """``start()``, ``stop()``, ``crash()`` (immediate shutdown, as a power cut leaves it),
    ``dsn`` of database ``pxed``; ``close()`` stops it and removes the directory."""

    def __init__(self, where: Path, *, fsync: bool = True, primary: PostgresServer | None = None
                 ) -> None:  # fmt: skip
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            raise ToolMissing("no postgres user: apt-get install postgresql") from None
        self.root = where
        self.data = where / "data"
        self.socket_dir = where / "run"
        self.log = where / "postgres.log"
        self.fsync = fsync
        """False only for a benchmark that wants to compare without disk flushes."""
        self._uid, self._gid = pw.pw_uid, pw.pw_gid
        where.mkdir(parents=True, exist_ok=True)
        for d in (where, self.socket_dir):
            d.mkdir(exist_ok=True)
            os.chown(d, self._uid, self._gid)
        if primary is None:
            self.initdb()
        else:
            self._replicate(primary)

    @property
    def dsn(self) -> str:
        return self.dsn_for("pxed")

    def dsn_for(self, database: str) -> str:
        return f"host={self.socket_dir} port={PORT} user={USER} dbname={database}"

    def create_database(self, name: str) -> str:
        """Another database beside ``pxed`` (Kea's, in a benchmark); its DSN."""
        res = self._as_postgres(
            _binary("createdb"), "-h", str(self.socket_dir), "-p", str(PORT), name
        )
        self._check(res, f"createdb {name}")
        return self.dsn_for(name)

    def cpu_seconds(self) -> float:
        """CPU time of every process the postgres user runs now (the server's backends)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if stat.parent.stat().st_uid != self._uid:
                    continue
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def _as_postgres(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", USER, "--", *cmd],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def _check(self, res: subprocess.CompletedProcess[str], what: str) -> None:
        if res.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr}\n{tail}")

    def initdb(self) -> None:
        res = self._as_postgres(
            _binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", USER,
            "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self._check(res, "initdb")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# pxed lab\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"port = {PORT}\n"
                "max_connections = 50\n"
                f"fsync = {'on' if self.fsync else 'off'}\n"
            )
        self.start()
        res = self._as_postgres(
            _binary("createdb"), "-h", str(self.socket_dir), "-p", str(PORT), "pxed"
        )
        self._check(res, "createdb")

    def standby(self, where: Path, *, synchronous: bool = True) -> PostgresServer:
        """A streaming replica of this server (pg_basebackup), running, with a socket of its
        own. ``synchronous``: this server's commits wait for the standby to have the WAL, so
        that a promotion loses no committed row (``synchronous_standby_names``)."""
        if synchronous:
            with (self.data / "postgresql.conf").open("a") as f:
                f.write("synchronous_standby_names = '*'\n")
            self._check(self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "reload"),
                        "pg_ctl reload")  # fmt: skip
        return PostgresServer(where, fsync=self.fsync, primary=self)

    def _replicate(self, primary: PostgresServer) -> None:
        res = self._as_postgres(
            _binary("pg_basebackup"), "-h", str(primary.socket_dir), "-p", str(PORT),
            "-U", USER, "-D", str(self.data), "-R", "-X", "stream", "-c", "fast", timeout=120,
        )  # fmt: skip
        self._check(res, "pg_basebackup")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(f"unix_socket_directories = '{self.socket_dir}'\n"
                    "synchronous_standby_names = ''\n")  # fmt: skip
        self.start()

    def promote(self) -> None:
        """Make this standby the primary (what a failover manager does)."""
        res = self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-w", "promote")
        self._check(res, "pg_ctl promote")

    def start(self) -> None:
        res = self._as_postgres(
            _binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
            "start",
        )  # fmt: skip
        self._check(res, "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        res = self._as_postgres(
            _binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
        )
        self._check(res, f"pg_ctl stop -m {mode}")

    def crash(self) -> None:
        """Stop at once, without a checkpoint: what a power cut leaves (WAL replays)."""
        self.stop("immediate")

    def running(self) -> bool:
        return self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def sql(self, query: str, database: str = "pxed") -> str:
        """Run one query with psql; its unaligned output."""
        res = self._as_postgres(
            _binary("psql"), "-h", str(self.socket_dir), "-p", str(PORT), "-d", database,
            "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query,
        )  # fmt: skip
        self._check(res, f"psql {query!r}")
        return res.stdout.strip()

    def reset(self) -> None:
        """Empty database ``pxed`` (no pxed schema): a test's clean start."""
        self.sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

    def close(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
