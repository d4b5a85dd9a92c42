"""Boot-once state, kept in the lease database beside the leases it belongs with.

``pxed host MAC --next PROFILE`` makes the machine boot PROFILE; once that profile's final
file (its last initrd) has been sent, pxed sets it to ``local`` (boot from the local disk)
and it stays so until told otherwise (``--clear`` hands it back to the configuration's
choice). A row is written and fsynced before the change is acknowledged: a machine that was
told to install is never told it again after a crash.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Protocol

from pxed.config.model import LeasesConfig
from pxed.errors import PxedError
from pxed.leases.store import LeaseStore

LOCAL = "local"


class BootOnceStore(Protocol):
    """Where boot-once state is kept: beside the leases, in SQLite or the shared
    PostgreSQL database (pxed.leases.pg.PgNextBoots)."""

    def open(self) -> dict[str, str]: ...

    def set(self, mac: str, profile: str | None) -> None: ...

    def close(self) -> None: ...


def boot_once_store(config: LeasesConfig, path: Path) -> BootOnceStore:
    """The store of ``[leases]``: ``path`` is the SQLite lease database's."""
    if config.backend == "postgresql":
        from pxed.leases.pg import PgNextBoots  # psycopg: only for this backend

        return PgNextBoots(config.dsn or "")
    return NextBoots(path)


class NextBoots:
    """The ``next_boot`` table, on a connection of its own (the lease store's commits run
    on a worker thread; this table is written rarely, from the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def open(self) -> dict[str, str]:
        """Open (creating or migrating the database as the lease store does) and return
        every MAC's state."""
        if self._conn is None:
            with LeaseStore(self.path):  # creates the file or migrates it to this schema
                pass
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout = 5000")
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                raise PxedError(f"cannot open lease database {self.path}: {exc}") from exc
            self._conn = conn
        rows = self._conn.execute("SELECT mac, profile FROM next_boot").fetchall()
        return {str(mac): str(profile) for mac, profile in rows}

    def set(self, mac: str, profile: str | None) -> None:
        """``mac`` boots ``profile`` next (``local``: the local disk); None: forget it."""
        conn = self._conn
        if conn is None:
            raise PxedError("boot-once state is not open")
        try:
            if profile is None:
                conn.execute("DELETE FROM next_boot WHERE mac = ?", (mac,))
            else:
                conn.execute(
                    "INSERT INTO next_boot (mac, profile, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (mac) DO UPDATE SET profile = excluded.profile, "
                    "updated = excluded.updated",
                    (mac, profile, time.time()),
                )
        except sqlite3.Error as exc:
            raise PxedError(f"cannot write boot-once state to {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
