"""The README's configuration reference stays true: every key pxed reads is documented there,
and every ``[section] key`` the README names (the reference, "Coming from dnsmasq") is a key
pxed reads."""

from __future__ import annotations

import re
from pathlib import Path

from pxed.config.parse import BOOT_KEYS, DHCP_KEYS, SERVER_KEYS, TFTP_KEYS

README = (Path(__file__).parents[2] / "README.md").read_text()
SECTIONS = {
    "server": SERVER_KEYS,
    "dhcp": DHCP_KEYS,
    "boot": BOOT_KEYS,
    "tftp": TFTP_KEYS,
}
UNDOCUMENTED = {("server", "dhcp_port")}  # a test-only knob (--dhcp-port is hidden too)


def reference_rows() -> dict[str, str]:
    """Section -> the first cells of the reference table's rows for it."""
    rows: dict[str, str] = {name: "" for name in SECTIONS}
    for line in README.splitlines():
        match = re.match(r"\| (`\[(\w+)\] [^|]*)\|", line)
        if match and match.group(2) in rows:
            rows[match.group(2)] += match.group(1)
        elif line.startswith("| `[[dhcp.subnet]]`"):
            rows["dhcp"] += line  # a subnet's own keys (network, interface) are named there
    return rows


def test_every_key_is_in_the_reference() -> None:
    rows = reference_rows()
    missing = [
        f"[{section}] {key}"
        for section, keys in SECTIONS.items()
        for key in sorted(keys)
        if (section, key) not in UNDOCUMENTED
        and key not in ("host", "subnet", "options")  # tables of their own: [[dhcp.host]]...
        and f"`{key}`" not in rows[section]
        and f"] {key}`" not in rows[section]
    ]
    assert missing == []


def test_every_key_the_readme_names_exists() -> None:
    named = set(re.findall(r"\[(server|dhcp|boot|tftp)\] (\w+)", README))
    unknown = sorted(f"[{s}] {k}" for s, k in named if k not in SECTIONS[s])
    assert unknown == []
    assert ("tftp", "port_range") in named and ("tftp", "per_client") in named
