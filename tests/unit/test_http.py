"""HTTP boot's pure parts: byte ranges, request names, and [http] in the configuration."""

from __future__ import annotations

import pytest

from pxed.config.parse import parse
from pxed.errors import ConfigError
from pxed.net.http import ByteRange, Unsatisfiable, parse_range, request_name


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),
        ("bytes=500-5000", ByteRange(500, 999)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-9,20-29", None),  # several ranges: the whole file (allowed by RFC 9110)
        ("items=0-9", None),
        ("bytes=9-0", None),
        ("bytes=x-y", None),
        ("bytes=", None),
    ],
)
def test_ranges_over_a_thousand_bytes(header: str | None, want: ByteRange | None) -> None:
    assert parse_range(header, 1000) == want


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 1000)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("/boot/vmlinuz", "/boot/vmlinuz"),
        ("/%2e%2e/etc/passwd", "/../etc/passwd"),
        ("/a%2Fb", "/a/b"),
        ("/x%00.txt", "/x\0.txt"),
        ("/grub.cfg?mac=01", "/grub.cfg"),
        ("/a%5Cb", "/a\\b"),
        ("/%ff", "/\udcff"),  # not UTF-8: kept as the bytes it was, refused by the store
        ("http://198.19.0.1:8080/boot/x?y", "/boot/x"),  # absolute form
        ("http://h/%2e%2e/etc", "/../etc"),
    ],
)
def test_request_names(raw: str, name: str) -> None:
    assert request_name(raw) == name


def test_http_listen_is_checked() -> None:
    assert parse({"http": {"listen": "0.0.0.0:8080"}}).config.http.listen == ("0.0.0.0", 8080)
    assert parse({}).config.http.listen is None
    with pytest.raises(ConfigError) as info:
        parse({"http": {"listen": "eth0:80", "port": 1}})
    text = "\n".join(info.value.problems)
    assert "[http] listen: 'eth0' is not an IP address" in text
    assert "port" in text


def test_a_uefi_http_client_gets_a_url_on_pxeds_http_server() -> None:
    from ipaddress import IPv4Address

    from pxed.boot import BootChoice, boot_url
    from pxed.dhcp.options import MessageType, OptionCode
    from pxed.dhcp.packet import DhcpPacket
    from pxed.dhcp.pxe import add_boot_options

    server = IPv4Address("198.19.0.1")
    http_client = DhcpPacket(op=1, xid=7, chaddr=bytes(6), options={
        OptionCode.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
        OptionCode.VENDOR_CLASS_ID: b"HTTPClient:Arch:00016:UNDI:003001",
        OptionCode.CLIENT_ARCH: b"\x00\x10"})  # fmt: skip
    opts: dict[int, bytes] = {}
    field = add_boot_options(opts, http_client, BootChoice("ipxe.efi", "uefi_x64"), server,
                             ("0.0.0.0", 8080))  # fmt: skip
    assert opts[OptionCode.VENDOR_CLASS_ID] == b"HTTPClient"
    assert opts[OptionCode.BOOTFILE_NAME] == b"http://198.19.0.1:8080/ipxe.efi" == field
    assert boot_url("/efi/grubx64.efi", server, ("198.19.0.5", 80)) == (
        "http://198.19.0.5:80/efi/grubx64.efi")
    assert boot_url("http://mirror/x.efi", server, None) == "http://mirror/x.efi"
    assert boot_url("ipxe.efi", server, None) is None


def test_ipxe_gets_its_script_as_a_url_when_http_is_on() -> None:
    from ipaddress import IPv4Address

    from pxed.boot import BootChoice
    from pxed.dhcp.options import MessageType, OptionCode
    from pxed.dhcp.packet import DhcpPacket
    from pxed.dhcp.pxe import add_boot_options

    ipxe = DhcpPacket(op=1, xid=8, chaddr=bytes(6), options={
        OptionCode.MESSAGE_TYPE: bytes([MessageType.REQUEST]),
        OptionCode.VENDOR_CLASS_ID: b"PXEClient:Arch:00000:UNDI:002001",
        OptionCode.USER_CLASS: b"iPXE", OptionCode.CLIENT_ARCH: b"\x00\x00"})  # fmt: skip
    assert ipxe.is_ipxe
    server = IPv4Address("198.19.0.1")
    opts: dict[int, bytes] = {}
    add_boot_options(opts, ipxe, BootChoice("boot.ipxe", "ipxe"), server, ("0.0.0.0", 8080))
    assert opts[OptionCode.BOOTFILE_NAME] == b"http://198.19.0.1:8080/boot.ipxe"
    assert opts[OptionCode.VENDOR_CLASS_ID] == b"PXEClient"  # still PXE to the ROM
    plain: dict[int, bytes] = {}
    add_boot_options(plain, ipxe, BootChoice("boot.ipxe", "ipxe"), server, None)
    assert plain[OptionCode.BOOTFILE_NAME] == b"boot.ipxe"


def test_a_uefi_http_client_without_http_gets_no_file_and_a_warning() -> None:
    import logging

    from pxed.boot import BootConfig, ConfigBootPolicy
    from pxed.dhcp.options import MessageType, OptionCode
    from pxed.dhcp.packet import DhcpPacket
    from pxed.dhcp.pxe import choose_boot
    from pxed.events import Event

    http_client = DhcpPacket(op=1, xid=7, chaddr=bytes.fromhex("525400000001"), options={
        OptionCode.MESSAGE_TYPE: bytes([MessageType.DISCOVER]),
        OptionCode.VENDOR_CLASS_ID: b"HTTPClient:Arch:00016:UNDI:003001",
        OptionCode.CLIENT_ARCH: b"\x00\x10"})  # fmt: skip
    policy = ConfigBootPolicy(BootConfig())
    events: list[Event] = []
    assert choose_boot(policy, http_client, None, events, logging.INFO) is None
    (warning,) = events
    assert warning.kind == "dhcp.boot_warning"
    assert "pxed serves no HTTP ([http] listen): ipxe.efi not offered" in warning.fields()["detail"]
    events.clear()
    choice = choose_boot(policy, http_client, None, events, logging.INFO, http=("0.0.0.0", 80))
    assert choice is not None and choice.file == "ipxe.efi" and not events
