"""The programs the lab drives, the Debian package behind each, and what a missing one says."""

from __future__ import annotations

import shutil

# The Debian package behind each tool, named when one is missing.
PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nft": "nftables",
    "tcpdump": "tcpdump",
    "dhclient": "isc-dhcp-client",
    "busybox": "busybox",
    "perfdhcp": "kea-admin",
    "kea-dhcp4": "kea-dhcp4-server",
    "dnsmasq": "dnsmasq-base",
    "curl": "curl",
    "chromium-headless-shell": "chromium-headless-shell",
    "atftp": "atftp",
    "atftpd": "atftpd",
    "tftp": "tftp-hpa",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "tar": "tar",
}


class ToolMissing(RuntimeError):
    """A program the lab needs is not installed; the message names its Debian package.

    The test suite turns it into a skip with this message (tests/conftest.py); `make test`
    installs every package, so in CI it never skips.
    """

    def __init__(self, tool: str, package: str | None = None) -> None:
        self.tool = tool
        self.package = package or PACKAGES.get(tool, tool)
        super().__init__(f"{tool} not installed: apt-get install {self.package} (make deps-debian)")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require(*tools: str) -> None:
    """Raise ToolMissing for the first of these programs that is not installed."""
    for tool in tools:
        if not have(tool):
            raise ToolMissing(tool)


def missing_packages(*tools: str) -> list[str]:
    """The Debian packages of these programs that this host lacks (each named once)."""
    out: list[str] = []
    for tool in tools:
        pkg = PACKAGES.get(tool, tool)
        if not have(tool) and pkg not in out:
            out.append(pkg)
    return out
