"""Recognising a Raspberry Pi's boot loader (pxed.dhcp.rpi) and what it is told."""

from __future__ import annotations

from pxed.dhcp import rpi
from pxed.dhcp.packet import DhcpPacket

VENDOR = b"PXEClient:Arch:00000:UNDI:002001"


def pi(mac: str = "dc:a6:32:01:02:03", model: bytes = b"RPi4", vendor: bytes | None = VENDOR,
       serial: int = 0x5B154510) -> DhcpPacket:  # fmt: skip
    opts: dict[int, bytes] = {53: b"\x01", 93: b"\x00\x00"}
    chaddr = bytes.fromhex(mac.replace(":", ""))
    if model:
        opts[97] = (b"\x00" + model + (0x00A03111).to_bytes(4, "little") + chaddr[2:6]
                    + serial.to_bytes(4, "little"))  # fmt: skip
    if vendor is not None:
        opts[60] = vendor
    return DhcpPacket(op=1, chaddr=chaddr, options=opts)


def test_the_fourcc_says_pi_whatever_the_mac() -> None:
    p = pi(mac="52:54:00:00:00:01")
    assert rpi.is_raspberry_pi(p) and rpi.model(p) == "RPi4"
    assert rpi.serial(p) == "5b154510" and rpi.first_file(p) == "5b154510/start4.elf"


def test_a_pi5_starts_with_config_txt() -> None:
    assert rpi.first_file(pi(model=b"RPi5", serial=0xABCDEF01)) == "abcdef01/config.txt"


def test_a_pi_mac_with_arch_0_pxe_is_a_pi_without_the_fourcc() -> None:
    p = pi(model=b"")
    assert rpi.is_raspberry_pi(p) and rpi.first_file(p) == "start4.elf"


def test_a_bios_pc_and_the_pis_own_os_are_not() -> None:
    # A PC's PXE ROM sends the same vendor class; a UUID is not the FourCC.
    pc = pi(mac="52:54:00:00:00:01", model=b"")
    pc.options[97] = b"\x00" + bytes(range(16))
    assert not rpi.is_raspberry_pi(pc)
    # Raspberry Pi OS's own DHCP client: a Pi MAC, no PXEClient.
    assert not rpi.is_raspberry_pi(pi(model=b"", vendor=b"dhcpcd-9.4.1:Linux"))
    assert not rpi.is_raspberry_pi(pi(model=b"", vendor=None))


def test_the_answer_has_the_boot_menu_and_the_server_as_text() -> None:
    p = pi()
    opts: dict[int, bytes] = {}
    rpi.add_options(opts, p, b"198.19.0.5")
    assert opts[43] == rpi.OPTION_43 and b"Raspberry Pi Boot" in opts[43]
    assert opts[43][0:3] == b"\x06\x01\x03" and opts[43][-1] == 0xFF and len(opts[43]) == 32
    assert opts[60] == b"PXEClient" and opts[66] == b"198.19.0.5" and opts[97] == p.options[97]
    assert 67 not in opts
    # Option 43 of the configuration wins, as for PXE ROMs.
    mine = {43: b"\x06\x01\x08\xff"}
    rpi.add_options(mine, p, b"198.19.0.5")
    assert mine[43] == b"\x06\x01\x08\xff"
