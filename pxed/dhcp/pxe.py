"""PXE boot information in DHCP replies, shared by the full server and the ProxyDHCP.

Who counts as a boot client (RFC 4578: option 60 "PXEClient", iPXE, or a client asking for
a boot file), which file it gets (the injected BootPolicy), and how the answer is carried:
siaddr, the file field, options 60/66/67, and for PXE ROMs the client UUID (97) echoed.
"""

from __future__ import annotations

import logging
import uuid
from ipaddress import IPv4Address

from pxed.boot import BootChoice, BootPolicy, BootRequest, delivery, undeliverable, wants_boot
from pxed.config import HostConfig
from pxed.dhcp import rpi
from pxed.dhcp.options import OptionCode, encode_pxe_vendor_options
from pxed.dhcp.packet import DhcpPacket
from pxed.events import Event, Notice

PXE_VENDOR_PREFIXES = (b"PXEClient", b"HTTPClient")
# Option 43 for PXE clients: PXE_DISCOVERY_CONTROL (sub-option 6) = 8, "download the boot
# file named in the offer" (PXE 2.1 §2.4.4.1), then END.
PXE_USE_OFFERED_FILE = encode_pxe_vendor_options(discovery_control=8)
RASPBERRY_PI = "raspberry_pi"
"""BootChoice.reason for a Raspberry Pi's boot loader (pxed.dhcp.rpi answers it)."""


def is_pxe_client(p: DhcpPacket) -> bool:
    """Option 60 says PXE firmware (or UEFI HTTP boot)."""
    return (p.vendor_class or b"").startswith(PXE_VENDOR_PREFIXES)


def boot_request(p: DhcpPacket, host: HostConfig | None) -> BootRequest:
    """What pxed.boot is asked about this client. A function of its own so that
    `pxed explain` asks exactly what the DHCP cores ask."""
    vendor = p.vendor_class or b""
    return BootRequest(
        mac=p.mac,
        arch=p.client_arch,
        is_ipxe=p.is_ipxe,
        is_pxe=vendor.startswith(PXE_VENDOR_PREFIXES),
        host=host,
        uuid=client_uuid(p),
        hostname=p.hostname,
        is_http=vendor.startswith(b"HTTPClient"),
        asks_file=OptionCode.BOOTFILE_NAME in p.parameter_request_list,
    )


def client_uuid(p: DhcpPacket) -> str | None:
    """Option 97 (RFC 4578 §2.3: type 0, then the 16-byte machine UUID) as dmidecode and
    QEMU's ``-uuid`` write it: the first three fields are little-endian on the wire, as
    SMBIOS 2.6 stores them and as EDK2 and iPXE send them. None when absent or malformed."""
    raw = p.options.get(OptionCode.CLIENT_UUID)
    if raw is None or len(raw) != 17 or raw[0] != 0:
        return None
    return str(uuid.UUID(bytes_le=bytes(raw[1:])))


def choose_boot(
    policy: BootPolicy,
    p: DhcpPacket,
    host: HostConfig | None,
    events: list[Event],
    min_level: int,
    *,
    pxe_only: bool = False,
    http: tuple[str, int] | None = None,
) -> BootChoice | None:
    """The boot file for this client, or None when it gets none (pxed.boot.wants_boot, the
    policy, pxed.boot.undeliverable); ``http``: pxed's HTTP listener.

    A choice that came with a warning (a chainload loop, ...), or one this client could not
    load (refused), adds a ``dhcp.boot_warning`` event to ``events``, unless WARNING is
    below ``min_level``.
    """
    request = boot_request(p, host)
    if not wants_boot(request, pxe_only=pxe_only):
        return None
    if rpi.is_raspberry_pi(p):
        # Its boot loader takes no boot file: it reads the TFTP server as a file system.
        return BootChoice(rpi.first_file(p), RASPBERRY_PI)
    choice = policy.choose(request)
    if choice is None:
        return None
    why = undeliverable(choice, request, http)
    warning = why or choice.warning
    if warning and min_level <= logging.WARNING:
        fields = {"mac": p.mac, "xid": f"0x{p.xid:08x}", "detail": warning}
        events.append(Notice("dhcp.boot_warning", logging.WARNING, fields))
    return None if why else choice


def add_boot_options(
    opts: dict[int, bytes],
    p: DhcpPacket,
    boot: BootChoice,
    next_server: IPv4Address,
    http: tuple[str, int] | None = None,
) -> bytes:
    """Put the boot answer into ``opts``; returns the value for the BOOTP file field.
    ``http``: pxed's HTTP listener; whether the file goes as a name or a URL is
    pxed.boot.delivery's decision."""
    if boot.reason == RASPBERRY_PI:
        rpi.add_options(opts, p, str(next_server).encode())
        return b""
    vendor = p.vendor_class or b""
    file = delivery(boot.file, is_http=vendor.startswith(b"HTTPClient"), is_ipxe=p.is_ipxe,
                    server=next_server, http=http).file  # fmt: skip
    if vendor.startswith(b"PXEClient"):
        # PXE ROMs only accept an offer that says PXEClient back (PXE 2.1 §2.2), and one
        # that says PXEClient without option 43 is a "BINL" offer to EDK2 (UEFI): it then
        # asks port 4011 for the file instead of taking this one, and fails with PXE-E16.
        # Discovery control 8: boot the file named here, no boot-server discovery.
        # An option 43 of the configuration ([dhcp.options]) already in opts wins: whoever
        # set it is speaking PXE to their firmware on purpose.
        opts[OptionCode.VENDOR_CLASS_ID] = b"PXEClient"
        opts.setdefault(OptionCode.VENDOR_SPECIFIC, PXE_USE_OFFERED_FILE)
    elif vendor.startswith(b"HTTPClient"):
        # UEFI HTTP boot (arch 15/16/18/19) takes an offer that says HTTPClient back.
        opts[OptionCode.VENDOR_CLASS_ID] = b"HTTPClient"
    name = file.encode()
    if vendor.startswith(b"PXE") or OptionCode.TFTP_SERVER_NAME in p.parameter_request_list:
        opts[OptionCode.TFTP_SERVER_NAME] = str(next_server).encode()
    opts[OptionCode.BOOTFILE_NAME] = name
    uuid = p.options.get(OptionCode.CLIENT_UUID)
    if uuid is not None and vendor.startswith(b"PXEClient"):
        opts[OptionCode.CLIENT_UUID] = uuid  # PXE 2.1: the machine identifier is echoed
    # Names that do not fit the 128-byte field travel in option 67 only.
    return name if len(name) < 128 else b""
