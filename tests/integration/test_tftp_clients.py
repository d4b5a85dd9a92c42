"""Real TFTP clients against pxed in network namespaces this test makes.

curl (blksize 512 and 1468), atftp (blksize 1468 + windowsize 16), tftp-hpa (no options) and
tftpy each fetch a small file, an exact multiple of their block size, an empty file and a
100 MB file (past block 65535 at blksize 512: the rollover); the bytes are compared. Then the
same behind ``tc netem loss 5%`` on the server's interface, 50 clients at once, single-port
mode and a flood of requests beyond the limits. Behaviour only: timings are in bench/tftp.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import require, wait_for
from pxed.lab.tftp import (
    CLIENT_IP,
    SERVER_IF,
    SERVER_IP,
    PxedTftp,
    TftpLab,
    client_command,
    fetch,
    fetch_many,
    make_file,
    same_file,
)

MB = 1024 * 1024

# client id -> (client program, options, block size it ends up with)
CLIENTS: dict[str, tuple[str, dict[str, int], int]] = {
    "curl-512": ("curl", {}, 512),
    "curl-1468": ("curl", {"blksize": 1468}, 1468),
    "atftp-w16": ("atftp", {"blksize": 1468, "windowsize": 16}, 1468),
    "tftp-hpa": ("tftp-hpa", {}, 512),
    "tftpy": ("tftpy", {"blksize": 1468}, 1468),
}
TOOL = {"curl": "curl", "atftp": "atftp", "tftp-hpa": "tftp", "tftpy": "ip"}


def files_for(tl: TftpLab, blksize: int, big: int) -> dict[str, Path]:
    root = tl.root
    files = {
        "small.bin": make_file(root / "small.bin", 3000, seed=1),
        "exact.bin": make_file(root / "exact.bin", blksize * 64, seed=2),
        "empty.bin": make_file(root / "empty.bin", 0),
        "dir/big.bin": make_file(root / "dir" / "big.bin", big, seed=3),
    }
    return files


def done_events(server: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in server.events("tftp.done") if e.get("file") == name]


def wait_logged(server: Any, count: int) -> None:
    wait_for(
        lambda: len(server.events("tftp.done")) + len(server.events("tftp.failed")) >= count,
        timeout=10,
    )


@pytest.mark.parametrize("client_id", list(CLIENTS))
def test_client_fetches_intact(tftp_lab: TftpLab, client_id: str) -> None:
    client, options, blksize = CLIENTS[client_id]
    require(TOOL[client])
    files = files_for(tftp_lab, blksize, 100 * MB)
    server = tftp_lab.server("pxed")
    for remote, path in files.items():
        got = fetch(tftp_lab.client_ns, client, remote, tftp_lab.out / "got.bin", **options)
        assert got.ok, f"{client_id} {remote}: {got.output}\n{server.tail()}"
        assert same_file(path, got.out), f"{client_id} {remote}: content differs"
    wait_logged(server, len(files))
    events = server.events("tftp.done")
    assert {e["file"] for e in events} == set(files)
    for event in events:
        # One log event per transfer, with what the issue lists.
        assert event["client"].startswith(CLIENT_IP + ":")
        for key in (
            "file",
            "bytes",
            "blksize",
            "windowsize",
            "seconds",
            "retransmissions",
            "outcome",
        ):
            assert key in event, event
        assert event["outcome"] == "ok"
        assert event["blksize"] == blksize
        assert event["bytes"] == files[event["file"]].stat().st_size
        if client_id == "atftp-w16":
            assert event["windowsize"] == 16
    assert not server.events("tftp.failed")


@pytest.mark.parametrize("client_id", list(CLIENTS))
def test_client_fetches_intact_with_loss(tftp_lab: TftpLab, client_id: str) -> None:
    """5% of what the server sends is lost: every transfer still completes, intact.

    ``tc netem loss 5%`` on the server's interface, or the same drop by nftables where the
    kernel has no netem (this CI's kernel: CONFIG_NET_SCH_NETEM is not set).
    """
    client, options, blksize = CLIENTS[client_id]
    require(TOOL[client])
    # The large file is smaller for lock-step clients: each loss costs a retransmission
    # timeout, and a lock-step 100 MB would be thousands of them (bench/tftp measures that).
    big = {"atftp": 100 * MB, "curl": 8 * MB if blksize > 512 else 2 * MB}.get(client, 2 * MB)
    files = files_for(tftp_lab, blksize, big)
    server = tftp_lab.server("pxed")
    tftp_lab.loss(5)
    for remote, path in files.items():
        got = fetch(tftp_lab.client_ns, client, remote, tftp_lab.out / "got.bin", **options)
        assert got.ok, f"{client_id} {remote}: {got.output}\n{server.tail()}"
        assert same_file(path, got.out), f"{client_id} {remote}: content differs"
    wait_logged(server, len(files))
    big_done = done_events(server, "dir/big.bin")
    assert big_done and big_done[-1]["retransmissions"] > 0


def test_fifty_clients_at_once_share_one_mapping(tftp_lab: TftpLab) -> None:
    require("curl")
    path = make_file(tftp_lab.root / "initrd.img", 4 * MB, seed=7)
    server = tftp_lab.server("pxed", tftp={"max_transfers_per_client": 64})
    idle_rss = server.rss_kib()
    cmds = [
        client_command(
            "curl", "initrd.img", tftp_lab.out / f"c{i}.img", blksize=1468 if i % 2 else None
        )
        for i in range(50)
    ]
    peak = [idle_rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak.append(server.rss_kib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        codes, _ = fetch_many(tftp_lab.client_ns, cmds, timeout=600)
    finally:
        stop.set()
        sampler.join()
    assert codes == [0] * 50
    for i in range(50):
        assert same_file(path, tftp_lab.out / f"c{i}.img"), f"client {i}"
    wait_logged(server, 50)
    assert len(server.events("tftp.done")) == 50
    # One mapping for all: memory does not grow with the clients (4 MB file, 50 clients).
    assert max(peak) - idle_rss < 48 * 1024


def test_single_port_mode_with_real_clients(tftp_lab: TftpLab) -> None:
    require("curl", "atftp")
    big = make_file(tftp_lab.root / "big.bin", 3 * MB, seed=4)
    server = tftp_lab.server("pxed", tftp={"single_port": True})
    for client, options in (
        ("curl", {"blksize": 1468}),
        ("atftp", {"blksize": 1468, "windowsize": 16}),
    ):
        got = fetch(tftp_lab.client_ns, client, "big.bin", tftp_lab.out / "got.bin", **options)
        assert got.ok, f"{client}: {got.output}\n{server.tail()}"
        assert same_file(big, got.out)
    codes, _ = fetch_many(
        tftp_lab.client_ns,
        [client_command("curl", "big.bin", tftp_lab.out / f"s{i}.bin") for i in range(8)],
    )
    assert codes == [0] * 8
    assert all(same_file(big, tftp_lab.out / f"s{i}.bin") for i in range(8))


def test_port_range_behind_a_firewall(tftp_lab: TftpLab) -> None:
    """The server's namespace lets UDP out from port 69 and the range only (as a firewall that
    opens just those would): real clients fetch intact, and nothing left from another port."""
    require("curl", "atftp", "nft")
    first, last = 30000, 30009
    rules = (
        "table inet pxedrange {\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f'    oifname "{SERVER_IF}" udp sport != {{ 69, {first}-{last} }} counter drop\n'
        f'    oifname "{SERVER_IF}" udp sport {first}-{last} counter accept\n'
        "  }\n"
        "}\n"
    )
    tftp_lab.server_ns.run("nft", "-f", "-", input=rules.encode())
    big = make_file(tftp_lab.root / "big.bin", 3 * MB, seed=5)
    server = tftp_lab.server("pxed", tftp={"port_range": f"{first}-{last}"})
    (ready,) = server.events("pxed.ready")
    assert ready["tftp_port_range"] == f"{first}-{last}"
    for client, options in (
        ("curl", {"blksize": 1468}),
        ("atftp", {"blksize": 1468, "windowsize": 16}),
        ("tftp-hpa", {}),
    ):
        # A short timeout: blocked by the firewall, a client would wait for minutes.
        out = tftp_lab.out / "got.bin"
        got = fetch(tftp_lab.client_ns, client, "big.bin", out, timeout=60, **options)
        assert got.ok, f"{client}: {got.output}\n{server.tail()}"
        assert same_file(big, got.out)
    codes, _ = fetch_many(
        tftp_lab.client_ns,
        [client_command("curl", "big.bin", tftp_lab.out / f"r{i}.bin") for i in range(10)],
        timeout=120,
    )
    assert codes == [0] * 10
    assert all(same_file(big, tftp_lab.out / f"r{i}.bin") for i in range(10))
    listed = tftp_lab.server_ns.run("nft", "-j", "list", "table", "inet", "pxedrange").stdout
    counters = [
        expr["counter"]["packets"]
        for item in json.loads(listed)["nftables"]
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    ]
    dropped, from_range = counters
    assert dropped == 0, f"{dropped} datagrams from outside the range\n{server.tail()}"
    assert from_range > 3 * MB // 1468  # the transfers really went out from the range


def test_windows_style_names_match_ignoring_case(tftp_lab: TftpLab) -> None:
    """Windows boot loaders ask for \\Boot\\BCD; the file was copied as boot/bcd."""
    require("curl", "tftp")
    bcd = make_file(tftp_lab.root / "boot" / "bcd", 70_000, seed=6)
    server = tftp_lab.server("pxed")
    for client, remote in (("tftp-hpa", "\\Boot\\BCD"), ("curl", "BOOT/Bcd")):
        got = fetch(tftp_lab.client_ns, client, remote, tftp_lab.out / "bcd", timeout=60)
        assert got.ok, f"{client} {remote}: {got.output}\n{server.tail()}"
        assert same_file(bcd, got.out)
    wait_logged(server, 2)
    assert [e["file"] for e in server.events("tftp.done")] == ["boot/bcd", "boot/bcd"]
    strict, address = tftp_lab.side_server("pxed", tftp={"case_insensitive": False})
    got = fetch(tftp_lab.client_ns, "curl", "BOOT/Bcd", tftp_lab.out / "no", server=address)
    assert got.returncode == 68, got.output  # CURLE_TFTP_NOTFOUND: the ERROR 1 it got
    wait_for(lambda: strict.events("tftp.refused"), timeout=10)
    (refused,) = strict.events("tftp.refused")
    assert refused["file"] == "BOOT/Bcd" and refused["reason"] == "file not found"


def test_per_client_files(tftp_lab: TftpLab) -> None:
    """A file under ROOT/<client>/ wins over the shared one, by IP and by MAC (TFTP alone, so
    the MAC comes from the kernel's ARP table); what the client has not got is shared."""
    require("curl")
    server_ip = tftp_lab.server("pxed", tftp={"per_client": "ip"})
    (ready,) = server_ip.events("pxed.ready")
    assert ready["tftp_per_client"] == "ip" and "tftp_port_range" not in ready
    # A server of its own, reached through the client's second interface (pxtc1).
    server_mac, mac_address = tftp_lab.side_server("pxed", tftp={"per_client": "mac"})
    plain, plain_address = tftp_lab.side_server("pxed")
    link = json.loads(tftp_lab.client_ns.run("ip", "-j", "link", "show", "pxtc1").stdout)
    mac = link[0]["address"]
    shared = make_file(tftp_lab.root / "boot.ipxe", 3000, seed=7)
    kernel = make_file(tftp_lab.root / "vmlinuz", 200_000, seed=8)
    by_ip = make_file(tftp_lab.root / CLIENT_IP / "boot.ipxe", 2000, seed=9)
    by_mac = make_file(tftp_lab.root / mac.replace(":", "-") / "boot.ipxe", 1000, seed=10)
    for srv, at, expected in (
        (server_ip, SERVER_IP, by_ip),
        (server_mac, mac_address, by_mac),
        (plain, plain_address, shared),
    ):
        got = fetch(tftp_lab.client_ns, "curl", "boot.ipxe", tftp_lab.out / "s", server=at)
        assert got.ok, f"{got.output}\n{srv.tail()}"
        assert same_file(expected, got.out), srv
        got = fetch(tftp_lab.client_ns, "curl", "vmlinuz", tftp_lab.out / "k", server=at)
        assert got.ok and same_file(kernel, got.out)
    wait_logged(server_mac, 2)
    files = sorted(e["file"] for e in server_mac.events("tftp.done"))
    assert files == [f"{mac.replace(':', '-')}/boot.ipxe", "vmlinuz"]


def test_only_world_readable_files_as_root(tftp_lab: TftpLab) -> None:
    """pxed runs as root here: a file only root may read is refused (ERROR 2), as dnsmasq
    does as root and as the systemd unit's unprivileged user would find it."""
    require("curl")
    public = make_file(tftp_lab.root / "public.cfg", 500, seed=11)
    private = make_file(tftp_lab.root / "private.cfg", 500, seed=12)
    private.chmod(0o600)
    server = tftp_lab.server("pxed")
    got = fetch(tftp_lab.client_ns, "curl", "public.cfg", tftp_lab.out / "p", timeout=60)
    assert got.ok and same_file(public, got.out), got.output
    got = fetch(tftp_lab.client_ns, "curl", "private.cfg", tftp_lab.out / "q", timeout=60)
    assert got.returncode == 69, got.output  # CURLE_TFTP_PERM: the ERROR 2 it got
    wait_for(lambda: server.events("tftp.refused"), timeout=10)
    (refused,) = server.events("tftp.refused")
    assert refused["file"] == "private.cfg" and "not world-readable" in refused["reason"]


def test_a_file_added_needs_no_reload_and_sighup_keeps_serving(tftp_lab: TftpLab) -> None:
    """A file put into the root while pxed runs is served at once (nothing is cached but
    open mappings); SIGHUP with the same configuration reloads it, changes nothing and
    pxed goes on serving."""
    require("curl")
    server = tftp_lab.server("pxed")
    assert server.proc is not None
    small = make_file(tftp_lab.root / "added-later.bin", 3000, seed=13)
    got = fetch(tftp_lab.client_ns, "curl", "added-later.bin", tftp_lab.out / "h", timeout=60)
    assert got.ok and same_file(small, got.out), got.output
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.events("pxed.reloaded"), timeout=10)
    assert server.events("pxed.reloaded")[0]["changed"] == []
    got = fetch(tftp_lab.client_ns, "curl", "added-later.bin", tftp_lab.out / "i", timeout=60)
    assert got.ok and same_file(small, got.out), got.output
    assert server.proc.poll() is None


FLOOD_CLIENT = r"""
import json, socket, sys, time
server = (sys.argv[1], 69)
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(5)
    s.sendto(b"\x00\x01big.bin\x00octet\x00", server)
    socks.append(s)
answers = {"data": 0, "error": 0, "none": 0}
for s in socks:
    try:
        data, _ = s.recvfrom(2048)
        answers["data" if data[1] == 3 else "error" if data[1] == 5 else "none"] += 1
    except OSError:
        answers["none"] += 1
for raw in (b"", b"\x00", b"\x00\x04", b"\x00\x05\x00", b"\x00\x01x", b"\x00\x01" + b"a" * 600,
            b"\x00\x01big.bin\x00octet\x00blksize\x00", b"\x00\x01big.bin\x00octet\x00"
            b"windowsize\x0065536\x00", b"\x00\x02up\x00octet\x00"):
    socks[0].sendto(raw, server)
print(json.dumps(answers))
"""


def test_flood_beyond_the_limit_gets_errors_and_service_goes_on(tftp_lab: TftpLab) -> None:
    require("curl")
    big = make_file(tftp_lab.root / "big.bin", 1 * MB, seed=5)
    # Short timeouts so that the flood's abandoned transfers are reaped within seconds.
    limits = {"max_transfers": 20, "max_transfers_per_client": 400}
    server = tftp_lab.server("pxed", tftp={**limits, "default_timeout": 0.3, "retries": 2})
    script = tftp_lab.lab.tmp / "flood.py"
    script.write_text(FLOOD_CLIENT)
    res = tftp_lab.client_ns.run(PxedTftp.python, str(script), SERVER_IP, "200", timeout=120)
    answers = json.loads(res.stdout)
    assert answers == {"data": 20, "error": 180, "none": 0}
    # Every ERROR was answered; its log line reaches the test's reader of pxed's output a
    # little later (the pump hands it to the event loop, which writes once per turn).
    wait_for(lambda: len(server.events("tftp.refused")) >= 180, timeout=10)
    refused = server.events("tftp.refused")
    assert len(refused) >= 180
    # The abandoned transfers are reaped on their timeout; service goes on meanwhile.
    got = fetch(tftp_lab.client_ns, "curl", "big.bin", tftp_lab.out / "got.bin")
    if not got.ok:  # the limit may still be full of the flood's transfers: wait for the reaper
        assert wait_for(lambda: len(server.events("tftp.failed")) >= 20, timeout=120)
        got = fetch(tftp_lab.client_ns, "curl", "big.bin", tftp_lab.out / "got.bin")
    assert got.ok and same_file(big, got.out), server.tail()
    assert wait_for(lambda: len(server.events("tftp.failed")) >= 20, timeout=120)
    assert all(e["outcome"] == "timeout" for e in server.events("tftp.failed"))
    assert server.proc is not None and server.proc.poll() is None
    time.sleep(0.2)
    malformed = server.events("tftp.malformed")
    assert len(malformed) >= 5
