"""PXE boot information in DHCP replies, shared by the full server and the ProxyDHCP.

Who counts as a boot client (RFC 4578: option 60 "PXEClient", iPXE, or a client asking for
a boot file), which file it gets (the injected BootPolicy), and how the answer is carried:
siaddr, the file field, options 60/66/67, and for PXE ROMs the client UUID (97) echoed.
"""

from __future__ import annotations

import logging
import uuid
from ipaddress import IPv4Address

from pxed.boot import BootChoice, BootPolicy, BootRequest
from pxed.config import HostConfig
from pxed.dhcp.options import OptionCode, encode_pxe_vendor_options
from pxed.dhcp.packet import DhcpPacket
from pxed.events import Event, Notice

PXE_VENDOR_PREFIXES = (b"PXEClient", b"HTTPClient")
# Option 43 for PXE clients: PXE_DISCOVERY_CONTROL (sub-option 6) = 8, "download the boot
# file named in the offer" (PXE 2.1 §2.4.4.1), then END.
PXE_USE_OFFERED_FILE = encode_pxe_vendor_options(discovery_control=8)


def is_pxe_client(p: DhcpPacket) -> bool:
    """Option 60 says PXE firmware (or UEFI HTTP boot)."""
    return (p.vendor_class or b"").startswith(PXE_VENDOR_PREFIXES)


def boot_request(
    p: DhcpPacket, host: HostConfig | None, *, pxe_only: bool = False
) -> BootRequest | None:
    """What the policy is asked about this client, or None when it is not a boot client.

    ``pxe_only`` (ProxyDHCP): only PXE firmware and iPXE count; the full server also gives a
    file to a host with its own ``boot`` and to clients that ask for option 67.
    A function of its own so that `pxed explain` asks the policy exactly what the DHCP
    cores ask it.
    """
    is_pxe = is_pxe_client(p)
    if pxe_only:
        wanted = is_pxe
    else:
        wanted = (
            is_pxe
            or p.is_ipxe
            or (host is not None and bool(host.boot))
            or OptionCode.BOOTFILE_NAME in p.parameter_request_list
        )
    if not wanted:
        return None
    return BootRequest(mac=p.mac, arch=p.client_arch, is_ipxe=p.is_ipxe, is_pxe=is_pxe,
                       host=host, uuid=client_uuid(p), hostname=p.hostname)  # fmt: skip


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
) -> BootChoice | None:
    """The boot file for this client, or None when it is not a boot client (boot_request).

    A choice that came with a warning (a chainload loop, ...) adds a ``dhcp.boot_warning``
    event to ``events``, unless WARNING is below ``min_level``.
    """
    request = boot_request(p, host, pxe_only=pxe_only)
    if request is None:
        return None
    choice = policy.choose(request)
    if choice is not None and choice.warning and min_level <= logging.WARNING:
        fields = {"mac": p.mac, "xid": f"0x{p.xid:08x}", "detail": choice.warning}
        events.append(Notice("dhcp.boot_warning", logging.WARNING, fields))
    return choice


def boot_url(file: str, server: IPv4Address, http: tuple[str, int] | None) -> str | None:
    """The URL UEFI HTTP boot firmware is given for ``file``: the file itself when it is a
    URL already, else pxed's HTTP server (``[http] listen``; its own address when it
    listens on one, else the server's); None when pxed serves no HTTP."""
    if "://" in file:
        return file
    if http is None:
        return None
    host = http[0] if http[0] not in ("0.0.0.0", "::", "") else str(server)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{http[1]}/{file.lstrip('/')}"


def add_boot_options(
    opts: dict[int, bytes],
    p: DhcpPacket,
    boot: BootChoice,
    next_server: IPv4Address,
    http: tuple[str, int] | None = None,
) -> bytes:
    """Put the boot answer into ``opts``; returns the value for the BOOTP file field.
    ``http``: pxed's HTTP listener, whose URL a UEFI HTTP boot client, and iPXE, get as
    their file."""
    vendor = p.vendor_class or b""
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
        # UEFI HTTP boot (arch 15/16/18/19): option 60 said back, and a URL as the file,
        # since the firmware speaks no TFTP (UEFI 2.x 24.7; EDK2 HttpBootDxe). Without
        # [http] listen the name goes as it is, which such firmware cannot use.
        opts[OptionCode.VENDOR_CLASS_ID] = b"HTTPClient"
        url = boot_url(boot.file, next_server, http)
        if url is not None:
            boot = BootChoice(url, boot.reason, boot.warning)
    if p.is_ipxe and http is not None:
        # iPXE speaks HTTP: its script comes from pxed's HTTP server, and the names the
        # script gives relative (kernel, initrd) resolve against that URL, so they come
        # over HTTP too, many times faster than over TFTP.
        url = boot_url(boot.file, next_server, http)
        if url is not None:
            boot = BootChoice(url, boot.reason, boot.warning)
    name = boot.file.encode()
    if vendor.startswith(b"PXE") or OptionCode.TFTP_SERVER_NAME in p.parameter_request_list:
        opts[OptionCode.TFTP_SERVER_NAME] = str(next_server).encode()
    opts[OptionCode.BOOTFILE_NAME] = name
    uuid = p.options.get(OptionCode.CLIENT_UUID)
    if uuid is not None and vendor.startswith(b"PXEClient"):
        opts[OptionCode.CLIENT_UUID] = uuid  # PXE 2.1: the machine identifier is echoed
    # Names that do not fit the 128-byte field travel in option 67 only.
    return name if len(name) < 128 else b""
