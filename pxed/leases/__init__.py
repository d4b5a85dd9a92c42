"""Leases: pool allocation per subnet (pure, no I/O) and the SQLite store (the only lease I/O).

The DHCP server asks a ``LeaseTable`` (one per subnet) for decisions, stages the leases those
decisions return in the ``LeaseStore``, and sends DHCPACKs only once ``commit()`` returned.
"""

from __future__ import annotations

from pxed.leases.model import Lease, LeaseConflict, LeaseState, TableStats
from pxed.leases.store import APPLICATION_ID, SCHEMA_VERSION, LeaseStore, read_leases
from pxed.leases.table import LeaseTable

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Lease",
    "LeaseConflict",
    "LeaseState",
    "LeaseStore",
    "LeaseTable",
    "TableStats",
    "read_leases",
]
