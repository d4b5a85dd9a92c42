"""Raspberry Pi 4/5 network boot: how their EEPROM boot loader is recognised and answered.

The Pi's boot loader speaks a dialect of PXE (Raspberry Pi documentation, "Network booting";
rpi-eeprom's release notes):

- its DISCOVER says ``PXEClient:Arch:00000:UNDI:002001`` (arch 0, like a BIOS PC) and carries
  option 97 with the FourCC "RPi4" or "RPi5" where RFC 4578's UUID would be (after the type
  byte: board revision, MAC bytes, serial);
- it takes only an offer whose option 43 holds a PXE boot menu item "Raspberry Pi Boot",
  and ignores option 67: TFTP is a file system to it, not a boot file;
- it reads the TFTP server from option 66 (an address as text), else siaddr, else the
  offer's option 54; in ProxyDHCP it merges the router's offer (address) with the proxy's;
- it then asks TFTP for ``<serial>/start4.elf`` (Pi 4) or ``<serial>/config.txt`` (Pi 5),
  the serial being 8 lower-case hex digits, and falls back to the root.

No emulator runs this boot loader: pxed answers it from that documented behaviour, and the
tests check the packets, not a Pi.
"""

from __future__ import annotations

from pxed.dhcp.options import OptionCode
from pxed.dhcp.packet import DhcpPacket

MENU_TEXT = "Raspberry Pi Boot"
"""What the boot loader looks for in option 43 (its EEPROM setting PXE_OPTION43's default)."""

OPTION_43 = bytes((
    6, 1, 3,                      # discovery control: no broadcast or multicast discovery
    10, 4, 0, *b"PXE",            # menu prompt: timeout 0, "PXE"
    9, 20, 0, 0, len(MENU_TEXT),  # boot menu: one item, type 0, the text
)) + MENU_TEXT.encode() + b"\xff"  # fmt: skip
"""Option 43 as dnsmasq's ``pxe-service=0,"Raspberry Pi Boot"`` sends it (the bytes in the
Raspberry Pi documentation's capture): sub-options 6, 10, 9 and the end mark."""

FOURCC = (b"RPi4", b"RPi5")
"""Option 97's first bytes after the type byte (EEPROM DHCP_OPTION97's default)."""

OUIS = frozenset({
    "b8:27:eb",  # Raspberry Pi Foundation
    "dc:a6:32", "e4:5f:01", "28:cd:c1", "d8:3a:dd", "2c:cf:67", "88:a2:9e",  # Raspberry Pi Ltd
})  # fmt: skip
"""MAC prefixes of Raspberry Pi boards (IEEE registry)."""

PI_VENDOR = b"PXEClient:Arch:00000"


def model(p: DhcpPacket) -> str | None:
    """``"RPi4"`` or ``"RPi5"`` when option 97 carries the boot loader's FourCC, else None."""
    raw = p.options.get(OptionCode.CLIENT_UUID)
    if raw is None or len(raw) != 17:
        return None
    fourcc = bytes(raw[1:5])
    return fourcc.decode() if fourcc in FOURCC else None


def is_raspberry_pi(p: DhcpPacket) -> bool:
    """A Pi's boot loader: option 97's FourCC, or a Raspberry Pi MAC prefix on a request that
    says arch-0 PXE (a BIOS PC's vendor class alone is not enough; the Pi's own OS, with the
    same MAC, sends no PXEClient and is an ordinary client)."""
    if model(p) is not None:
        return True
    vendor = p.vendor_class or b""
    return p.mac[:8].lower() in OUIS and vendor.startswith(PI_VENDOR)


def serial(p: DhcpPacket) -> str | None:
    """The board serial as the boot loader names its TFTP directory (8 lower-case hex
    digits): option 97's last four bytes, little-endian (one published capture shows that
    order; EEPROM TFTP_PREFIX can change the directory anyway). None without the FourCC."""
    if model(p) is None:
        return None
    raw = p.options[OptionCode.CLIENT_UUID]
    return f"{int.from_bytes(bytes(raw[13:17]), 'little'):08x}"


def first_file(p: DhcpPacket) -> str:
    """What the boot loader will ask TFTP for first (for the logs: it ignores option 67)."""
    name = "config.txt" if model(p) == "RPi5" else "start4.elf"
    where = serial(p)
    return name if where is None else f"{where}/{name}"


def add_options(opts: dict[int, bytes], p: DhcpPacket, server: bytes) -> None:
    """The Pi's answer: PXEClient, the boot menu, the TFTP server as text (66), option 97
    echoed; no boot file. ``server``: the TFTP server's address as text. An option 43 of
    the configuration ([dhcp.options]) already in ``opts`` wins, as for PXE ROMs."""
    opts[OptionCode.VENDOR_CLASS_ID] = b"PXEClient"
    opts.setdefault(OptionCode.VENDOR_SPECIFIC, OPTION_43)
    opts[OptionCode.TFTP_SERVER_NAME] = server
    raw = p.options.get(OptionCode.CLIENT_UUID)
    if raw is not None:
        opts[OptionCode.CLIENT_UUID] = bytes(raw)
