"""pxed: a pure-Python PXE boot daemon (DHCP, ProxyDHCP, TFTP) in one asyncio process."""

from __future__ import annotations

__version__ = "0.1.0"
