"""The boot timeline: stories from the event stream, their verdicts, the file they live in."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pxed.boot import BootChoice
from pxed.boots.report import render
from pxed.boots.story import Boot
from pxed.boots.timeline import Timeline, read_boots
from pxed.dhcp.events import DhcpDecision
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket
from pxed.events import Notice
from pxed.hooks import boot_job

MAC = "52:54:00:b0:07:01"
IP = "198.19.0.10"
T0 = 1_800_000_000.0
BIOS_PXE = {OptionCode.CLIENT_ARCH: b"\x00\x00", 60: b"PXEClient:Arch:00000:UNDI:002001"}


def decision(kind: str, mtype: MessageType, *, xid: int = 1, mac: str = MAC,
             options: dict[int, bytes] | None = None, boot: BootChoice | None = None,
             ip: str = IP) -> DhcpDecision:  # fmt: skip
    opts = {OptionCode.MESSAGE_TYPE: bytes([mtype]), **(options if options is not None else
            BIOS_PXE)}  # fmt: skip
    p = DhcpPacket(op=1, xid=xid, chaddr=bytes.fromhex(mac.replace(":", "")), options=opts)
    return DhcpDecision(kind, logging.INFO, p, IPv4Address(ip), boot, {})


def dora(timeline: Timeline, *, xid: int = 1, file: str = "pxelinux.0", rule: str = "bios",
         options: dict[int, bytes] | None = None, offer_only: bool = False) -> None:  # fmt: skip
    boot = BootChoice(file, rule)
    timeline(decision("dhcp.offer", MessageType.DISCOVER, xid=xid, options=options, boot=boot))
    if not offer_only:
        timeline(decision("dhcp.ack", MessageType.REQUEST, xid=xid, options=options, boot=boot))


def tftp(timeline: Timeline, kind: str, file: str, port: int = 2000, **fields: Any) -> None:
    data: dict[str, Any] = {"client": f"{IP}:{port}", "file": file, "mac": MAC, **fields}
    level = logging.DEBUG if kind == "tftp.start" else logging.INFO
    timeline(Notice(kind, level, data))


def sent(timeline: Timeline, file: str, size: int, port: int = 2000) -> None:
    tftp(timeline, "tftp.start", file, port)
    tftp(timeline, "tftp.done", file, port, bytes=size, size=size, seconds=0.5,
         retransmissions=0, outcome="ok")  # fmt: skip


def test_a_pxelinux_boot_is_one_story_and_loaded_once_quiet(tmp_path: Path) -> None:
    finished: list[Boot] = []
    timeline = Timeline(tmp_path / "boots.jsonl", keep=10, quiet=60, on_finished=finished.append)
    dora(timeline)
    sent(timeline, "pxelinux.0", 42_000)
    sent(timeline, "ldlinux.c32", 120_000, port=2001)
    tftp(timeline, "tftp.refused", f"pxelinux.cfg/01-{MAC.replace(':', '-')}", port=2002,
         reason="no such file", code=1)  # fmt: skip
    sent(timeline, "pxelinux.cfg/default", 300, port=2003)
    tftp(timeline, "tftp.start", "vmlinuz", port=2004)
    timeline.fold(T0)

    boot = timeline.boots[MAC]
    assert boot.outcome == "booting" and not boot.finished
    assert [s.kind for s in boot.steps] == ["dhcp", "tftp", "tftp", "tftp", "tftp", "tftp"]
    dhcp = boot.steps[0]
    assert dhcp.detail["messages"] == ["OFFER", "ACK"], "one exchange, one step"
    assert dhcp.detail["boot_file"] == "pxelinux.0" and dhcp.detail["rule"] == "bios"
    assert boot.steps[3].ok and boot.steps[3].detail["probe"], "a probe pxelinux went past"
    assert boot.steps[-1].end is None and boot.steps[-1].ok is None, "vmlinuz still running"
    assert boot.arch == 0 and boot.ip == IP

    tftp(timeline, "tftp.done", "vmlinuz", port=2004, bytes=8_000_000, size=8_000_000,
         seconds=4.0, retransmissions=2, outcome="ok")  # fmt: skip
    timeline.fold(T0 + 10)
    assert boot.steps[-1].ok and "2 retransmission(s)" in boot.steps[-1].label
    assert not finished
    timeline.fold(boot.updated + 61)
    assert boot.finished and boot.outcome == "loaded" and boot.reason is None
    assert finished == [boot]
    stored = list(read_boots(tmp_path / "boots.jsonl"))
    assert [b.mac for b in stored] == [MAC] and stored[0].outcome == "loaded"
    text = render(stored[0])
    assert "pxelinux.0" in text and "LOADED" in text and "[probe]" in text


def test_a_deleted_boot_file_is_named_as_the_reason(tmp_path: Path) -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline)
    tftp(timeline, "tftp.refused", "pxelinux.0", reason="no such file", code=1)
    timeline.fold(T0)
    boot = timeline.boots[MAC]
    assert boot.outcome == "failed"
    assert boot.reason == "pxelinux.0 was not found under the TFTP root"
    timeline.fold(boot.updated + 31)
    assert boot.finished and boot.outcome == "failed"


def test_an_offer_nobody_requested_says_so_once_quiet() -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline, offer_only=True)
    timeline.fold(T0)
    assert timeline.boots[MAC].outcome == "booting"
    timeline.fold(timeline.boots[MAC].updated + 31)
    assert timeline.boots[MAC].outcome == "failed"
    assert "no REQUEST after the offer" in str(timeline.boots[MAC].reason)


def test_no_file_request_after_the_ack() -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline)
    timeline.fold(T0)
    timeline.fold(timeline.boots[MAC].updated + 31)
    assert "no file request after the ACK that named pxelinux.0" in str(
        timeline.boots[MAC].reason)  # fmt: skip


def test_a_chainload_loop_is_seen_while_it_loops_and_told_once() -> None:
    ipxe = {77: b"iPXE", OptionCode.CLIENT_ARCH: b"\x00\x00"}
    told: list[Boot] = []
    timeline = Timeline(None, keep=10, quiet=30, on_finished=told.append)
    for n in range(3):
        dora(timeline, xid=n + 1, file="undionly.kpxe", rule="bios", options=ipxe)
        sent(timeline, "undionly.kpxe", 70_000, port=3000 + n)
    timeline.fold(T0)
    boot = timeline.boots[MAC]
    assert len(boot.steps) == 6 and not boot.finished
    assert boot.outcome == "failed"
    assert str(boot.reason).startswith("chainload loop: undionly.kpxe was fetched 3 times")
    # A loop never goes quiet by itself: the hook hears of it now, and only once.
    assert told == [boot]
    for n in range(3, 6):
        dora(timeline, xid=n + 1, file="undionly.kpxe", rule="bios", options=ipxe)
        sent(timeline, "undionly.kpxe", 70_000, port=3000 + n)
        timeline.fold(T0 + n)
    assert timeline.boots[MAC] is boot and "fetched 6 times" in str(boot.reason)
    timeline.fold(boot.updated + 31)
    assert boot.finished and told == [boot]


def test_the_oack_nobody_acknowledged() -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline, file="ipxe.efi", rule="uefi_x64")
    tftp(timeline, "tftp.start", "ipxe.efi")
    tftp(timeline, "tftp.failed", "ipxe.efi", bytes=0, size=1_000_000, seconds=6.0,
         outcome="timeout", options="blksize,tsize")  # fmt: skip
    timeline.fold(T0)
    assert "never acknowledged the OACK for ipxe.efi" in str(timeline.boots[MAC].reason)


def test_the_booted_systems_dhcp_ends_the_story_and_others_are_not_stories() -> None:
    finished: list[Boot] = []
    timeline = Timeline(None, keep=10, quiet=600, on_finished=finished.append)
    plain = {60: b"dhcpcd-10"}
    timeline(decision("dhcp.ack", MessageType.REQUEST, mac="52:54:00:00:00:99", options=plain))
    assert not timeline._pending, "a laptop's lease costs the timeline nothing"
    dora(timeline)
    sent(timeline, "pxelinux.0", 42_000)
    timeline(decision("dhcp.offer", MessageType.DISCOVER, xid=9, options=plain))
    timeline(decision("dhcp.ack", MessageType.REQUEST, xid=9, options=plain))
    timeline.fold(T0)
    assert list(timeline.boots) == [MAC]
    boot = timeline.boots[MAC]
    assert boot.finished and boot.outcome == "loaded" and finished == [boot]
    assert boot.steps[-1].detail["system"] and "booted system" in boot.steps[-1].label
    job = boot_job(boot.to_json())
    assert job.args == ("boot", "loaded", MAC, IP)
    assert job.env["PXED_BOOT_FILES"] == "pxelinux.0"
    assert json.loads(job.env["PXED_BOOT_JSON"])["mac"] == MAC


def test_the_file_keeps_the_last_stories_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "boots.jsonl"
    timeline = Timeline(path, keep=3, quiet=1)
    for n in range(8):
        mac = f"52:54:00:00:01:{n:02x}"
        p = {OptionCode.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), **BIOS_PXE}
        packet = DhcpPacket(op=1, xid=n, chaddr=bytes.fromhex(mac.replace(":", "")), options=p)
        timeline(DhcpDecision("dhcp.offer", logging.INFO, packet, IPv4Address(IP), None, {}))
        timeline.fold(T0 + 10 * n)
        timeline.fold(T0 + 10 * n + 2)
    assert len(timeline.boots) == 3
    assert len(path.read_text().splitlines()) <= 6, "compacted to keep once twice over"
    with path.open("a") as f:
        f.write('{"mac": "torn')  # a crash mid-line
    again = Timeline(path, keep=3, quiet=1)
    again.load()
    assert list(again.boots) == [f"52:54:00:00:01:{n:02x}" for n in (5, 6, 7)]
    assert all(b.finished for b in again.boots.values())


async def test_the_control_socket_works_in_a_state_directory_deeper_than_108_bytes(
    tmp_path: Path,
) -> None:
    from pxed.control import ControlServer, answer, request

    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 5))
    deep.mkdir(parents=True)

    async def hello(args: Any) -> dict[str, Any]:
        return answer(0, "hello", echo=args.get("x"))

    server = ControlServer(deep / "control.sock", {"hello": hello})
    assert len(str(deep / "control.sock")) > 108
    assert await server.start()
    import asyncio

    reply = await asyncio.to_thread(request, deep / "control.sock", "hello", x=1)
    assert reply == {"result": 0, "text": "hello", "arguments": {"echo": 1}}
    await server.close()
    assert not (deep / "control.sock").exists()


def test_a_long_transfer_keeps_its_story_open_past_quiet() -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline, file="ipxe.efi", rule="uefi_x64")
    sent(timeline, "ipxe.efi", 1_000_000)
    tftp(timeline, "tftp.start", "debian.iso", port=2001)
    timeline.fold(T0)
    boot = timeline.boots[MAC]
    timeline.fold(boot.updated + 600)  # ten minutes into the ISO: not over
    assert not boot.finished and boot.outcome == "booting"
    tftp(timeline, "tftp.done", "debian.iso", port=2001, bytes=600_000_000, size=600_000_000,
         seconds=600.0, retransmissions=0, outcome="ok")  # fmt: skip
    timeline.fold(boot.updated + 1)
    timeline.fold(boot.updated + 31)
    assert boot.finished and boot.outcome == "loaded"


def http_event(kind: str, file: str, port: int = 40000, **fields: Any) -> Notice:
    return Notice(kind, logging.INFO, {"client": f"{IP}:{port}", "file": file, "mac": MAC,
                                       **fields})  # fmt: skip


def test_http_files_are_steps_of_the_same_story() -> None:
    timeline = Timeline(None, keep=10, quiet=30)
    dora(timeline, file="ipxe.efi", rule="uefi_x64")
    timeline(http_event("http.declined", "ipxe.efi", bytes=0, size=10**6, seconds=0.01,
                        outcome="head"))  # fmt: skip
    timeline(http_event("http.done", "ipxe.efi", bytes=10**6, size=10**6, seconds=0.5,
                        outcome="ok", status=200))  # fmt: skip
    timeline(http_event("http.refused", "boot.ipxe", 40001, status=404, cause="not_found",
                        reason="file not found"))  # fmt: skip
    timeline.fold(T0)
    boot = timeline.boots[MAC]
    assert [s.kind for s in boot.steps] == ["dhcp", "http", "http", "http"]
    assert boot.steps[1].detail.get("probe") and boot.steps[2].ok
    assert boot.outcome == "failed" and boot.reason == "boot.ipxe was not found under the TFTP root"
