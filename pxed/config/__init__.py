"""Configuration: the frozen model, and the stages that build it from TOML.

    model.py    the frozen dataclasses (Config and its parts), re-exported here
    parse.py    the TOML's mapping -> what it states; pure: no interfaces, no files
    derive.py   + the interfaces present now -> Config (subnets placed, default pools)
    check.py    rules between the parts of a Config; boot files under the TFTP root
    load.py     load_config: the three in order, every problem told at once

Only the model is imported here, so that the cores' ``from pxed.config import Config``
loads no TOML parser and no interface code.
"""

from __future__ import annotations

from pxed.config.model import (
    TEMPLATE_KINDS,
    BootConfig,
    BootsConfig,
    Config,
    HooksConfig,
    HostConfig,
    HttpConfig,
    LogFormat,
    MetricsConfig,
    Mode,
    ProfileConfig,
    ProfileMatch,
    SubnetConfig,
    TftpConfig,
)

__all__ = [
    "TEMPLATE_KINDS",
    "BootConfig",
    "BootsConfig",
    "Config",
    "HooksConfig",
    "HostConfig",
    "HttpConfig",
    "LogFormat",
    "MetricsConfig",
    "Mode",
    "ProfileConfig",
    "ProfileMatch",
    "SubnetConfig",
    "TftpConfig",
]
