"""The integrated TFTP server: wire codec, transfer state machine, files, server core.

Everything here is free of sockets and clocks; the asyncio glue is :mod:`pxed.net.tftp`.
"""

from __future__ import annotations

from pxed.files import FileRefused, FileStore
from pxed.tftp.packet import ErrorCode, Opcode
from pxed.tftp.server import Accepted, Duplicate, Refused, TftpServer, TftpStats
from pxed.tftp.transfer import Settings, State, Transfer

__all__ = [
    "Accepted",
    "Duplicate",
    "ErrorCode",
    "FileRefused",
    "FileStore",
    "Opcode",
    "Refused",
    "Settings",
    "State",
    "TftpServer",
    "TftpStats",
    "Transfer",
]
