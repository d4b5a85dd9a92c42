"""pxed: a pure-Python PXE boot daemon (DHCP, ProxyDHCP, TFTP) in one asyncio process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__", "load_config"]

if TYPE_CHECKING:
    from pxed.app import Server
    from pxed.config import Config
    from pxed.config.load import load_config


def __getattr__(name: str) -> Any:
    # Lazy re-exports: `pxed --version` and `import pxed` stay fast and need no sockets code.
    if name == "Server":
        from pxed.app import Server

        return Server
    if name == "Config":
        from pxed.config import Config

        return Config
    if name == "load_config":
        from pxed.config.load import load_config

        return load_config
    raise AttributeError(name)
