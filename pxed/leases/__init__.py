"""Leases: pool allocation per subnet (pure, no I/O) and the stores (the only lease I/O):
SQLite under the state directory (the default), or PostgreSQL shared by several servers.

The DHCP server asks a ``LeaseTable`` (one per subnet) for decisions, stages the leases those
decisions return in the store (``pxed.leases.backend.Backend``), and sends DHCPACKs only once
``commit()`` returned and did not refuse them.
"""

from __future__ import annotations

from pxed.leases.model import CommitResult, Lease, LeaseConflict, LeaseState, TableStats
from pxed.leases.store import APPLICATION_ID, SCHEMA_VERSION, LeaseStore, read_leases
from pxed.leases.table import LeaseTable

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "CommitResult",
    "Lease",
    "LeaseConflict",
    "LeaseState",
    "LeaseStore",
    "LeaseTable",
    "TableStats",
    "read_leases",
]
