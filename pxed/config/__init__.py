"""Configuration: the frozen model (model.py), re-exported here.

``from pxed.config import Config`` stays the one import the cores need.
"""

from __future__ import annotations

from pxed.config.model import (
    BootConfig,
    Config,
    HostConfig,
    LogFormat,
    Mode,
    SubnetConfig,
    TftpConfig,
)

__all__ = [
    "BootConfig",
    "Config",
    "HostConfig",
    "LogFormat",
    "Mode",
    "SubnetConfig",
    "TftpConfig",
]
