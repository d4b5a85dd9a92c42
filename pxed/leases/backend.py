"""The one interface of the lease stores, and the choice between them (``[leases] backend``).

SQLite (pxed.leases.store) is one server's own database under its state directory;
PostgreSQL (pxed.leases.pg) is shared by every pxed serving the same network. The group
committer, the DHCP server and the lease tables see only this interface: staging, one
``commit()`` per group whose result says which writes the database refused, loading and
pruning. Both are driven from one worker thread (the committer's), except ``stage``.
"""

from __future__ import annotations

from typing import Protocol

from pxed.config.model import LeasesConfig
from pxed.leases.model import CommitResult, Lease


class Backend(Protocol):
    """A lease store (see the module docstring)."""

    @property
    def where(self) -> str:
        """Where the leases are, for messages: a path or a DSN without its password."""
        ...

    @property
    def pending(self) -> int:
        """Leases staged and not committed yet."""
        ...

    def open(self) -> None:
        """Connect or open; PxedError when the store cannot be used (one line, what to do)."""

    def load(self) -> list[Lease]:
        """Every stored lease."""
        ...

    def stage(self, lease: Lease) -> None:
        """Buffer an upsert for the next ``commit`` (safe from another thread)."""

    def commit(self) -> CommitResult:
        """Write what is staged in one transaction, durable when it returns. On failure
        PxedError, and what was staged stays staged for the next try."""
        ...

    def prune(self, older_than: float) -> int:
        """Delete records that ended before ``older_than``; how many."""
        ...

    def close(self) -> None:
        """Commit what is staged (when it can), then close."""


def open_backend(config: LeasesConfig, state_db: str, server: str) -> Backend:
    """The configured store, not opened yet. ``state_db``: the SQLite file's path;
    ``server``: this pxed's name in a shared store (``[cluster] name``)."""
    if config.backend == "postgresql":
        from pxed.leases.pg import PgLeaseStore  # psycopg is only needed for this backend

        return PgLeaseStore(config.dsn or "", server)
    from pathlib import Path

    from pxed.leases.store import LeaseStore

    return LeaseStore(Path(state_db))
