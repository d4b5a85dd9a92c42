"""Profiles' rendered files fetched by real clients (curl over HTTP and TFTP) from a pxed in
a namespace this test makes, and boot-once through `pxed host` and a real transfer.

The machine is the client namespace's own interface: pxed knows its MAC from the kernel's
neighbour table, as it does for a ProxyDHCP client, and names its files by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pxed.lab import require, wait_for
from pxed.lab.tftp import CLIENT_IF, CLIENT_IP, SERVER_IP, PxedTftp, TftpLab, make_file

PORT = 8080
BASE = f"http://{SERVER_IP}:{PORT}"


def client_mac(tl: TftpLab) -> str:
    out = tl.client_ns.run("ip", "-j", "link", "show", CLIENT_IF).stdout
    return str(json.loads(out)[0]["address"]).lower()


def config_text(mac: str, template: Path) -> str:
    return f"""
[dhcp]
[[dhcp.host]]
mac = "{mac}"
hostname = "node7"
profile = "inst"

[[profile]]
name = "inst"
kernel = "inst/linux"
initrd = ["inst/initrd.gz"]
cmdline = "auto=true url={{{{ preseed_url }}}} ip={{{{ ip }}}} suite={{{{ suite }}}}"
vars = {{ suite = "bookworm" }}
templates = {{ preseed = "{template}" }}

[[profile]]
name = "rescue"
kernel = "inst/linux"
cmdline = "rescue"
match = {{ hostname = ["rescue-*"] }}
"""


@pytest.fixture
def served(tftp_lab: TftpLab) -> Iterator[tuple[TftpLab, PxedTftp, str]]:
    require("curl")
    make_file(tftp_lab.root / "inst" / "linux", 4000, seed=1)
    make_file(tftp_lab.root / "inst" / "initrd.gz", 90_000, seed=2)
    template = tftp_lab.lab.tmp / "preseed.cfg.j2"
    template.write_text("d-i mirror/suite string {{ suite }}\n"
                        "# {{ hostname }} at {{ ip }}, profile {{ profile }}\n")  # fmt: skip
    mac = client_mac(tftp_lab)
    server = PxedTftp(tftp_lab.server_ns, tftp_lab.root, tftp_lab.lab.tmp / "srv-pxed")
    server.config = config_text(mac, template)
    server.args += ["--http-port", str(PORT)]
    server.start()
    tftp_lab.servers.append(server)
    yield tftp_lab, server, mac


def curl(tl: TftpLab, url: str) -> tuple[int, str]:
    res = tl.client_ns.run("curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}",
                           url, check=False, timeout=40)  # fmt: skip
    body, _, code = res.stdout.rpartition("\n")
    return int(code or 0), body


def host_command(server: PxedTftp, *args: str) -> Any:
    res = subprocess.run([sys.executable, "-P", "-m", "pxed", "host", *args, "--json",
                          "--state-dir", str(server.state_dir)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 0, res
    return json.loads(res.stdout)


def test_each_file_is_rendered_for_the_machine(served: tuple[TftpLab, PxedTftp, str]) -> None:
    tl, server, mac = served
    d = mac.replace(":", "-")
    code, script = curl(tl, f"{BASE}/pxed/{d}/boot.ipxe")
    assert code == 200, (code, script, server.tail())
    assert script.startswith("#!ipxe\n"), script
    preseed_url = f"{BASE}/pxed/{d}/preseed.cfg"
    assert (f"kernel {BASE}/inst/linux initrd=initrd.gz auto=true url={preseed_url} ip={CLIENT_IP} "
            "suite=bookworm\n") in script, script  # fmt: skip
    assert f"initrd {BASE}/inst/initrd.gz\n" in script, script
    code, preseed = curl(tl, preseed_url)
    assert code == 200, preseed
    assert preseed == (f"d-i mirror/suite string bookworm\n"
                       f"# node7 at {CLIENT_IP}, profile inst\n")  # fmt: skip
    code, meta = curl(tl, f"{BASE}/pxed/{d}/meta-data")
    assert code == 200 and "local-hostname: node7" in meta, meta
    for name in ("user-data", "vendor-data", "network-config"):
        code, body = curl(tl, f"{BASE}/pxed/{d}/{name}")
        assert code == 200 and body, (name, body)
    # PXELINUX asks TFTP for its own name of the machine's config, beside pxelinux.0.
    code, menu = curl(tl, f"tftp://{SERVER_IP}/pxelinux.cfg/01-{d}")
    assert "KERNEL inst/linux\n" in menu and "INITRD inst/initrd.gz\n" in menu, menu
    assert f"APPEND auto=true url={preseed_url}" in menu, menu
    code, grub = curl(tl, f"tftp://{SERVER_IP}/grub/grub.cfg-01-{d}")
    assert f"linux (tftp,{SERVER_IP})/inst/linux auto=true" in grub, grub
    # Another machine has no profile: its names are the root's, which has none of them.
    code, _ = curl(tl, f"{BASE}/pxed/52-54-00-99-99-99/boot.ipxe")
    assert code == 404
    done = [e for e in server.events("http.done") if e.get("file") == f"pxed/{d}/preseed.cfg"]
    assert done and done[0]["mac"] == mac, server.events("http.done")


def test_a_template_error_refuses_the_file_and_says_where(
    served: tuple[TftpLab, PxedTftp, str],
) -> None:
    tl, _, mac = served
    template = tl.lab.tmp / "preseed.cfg.j2"
    template.write_text("ok\n{{ no_such_variable }}\n")  # templates are read again on change
    code, body = curl(tl, f"{BASE}/pxed/{mac.replace(':', '-')}/preseed.cfg")
    assert code == 403, (code, body)
    assert "line 2" in body and "no_such_variable" in body, body


def test_boot_once_goes_to_local_disk_after_the_initrd(
    served: tuple[TftpLab, PxedTftp, str],
) -> None:
    tl, server, mac = served
    d = mac.replace(":", "-")
    shown = host_command(server, mac, "--local")
    assert shown["next_boot"] == "local" and shown["profile"] == "local", shown
    code, script = curl(tl, f"{BASE}/pxed/{d}/boot.ipxe")
    assert "exit" in script and "kernel" not in script, script
    shown = host_command(server, mac, "--next", "rescue")
    assert shown["next_boot"] == "rescue", shown
    code, script = curl(tl, f"{BASE}/pxed/{d}/boot.ipxe")
    assert f"kernel {BASE}/inst/linux rescue\n" in script, script
    # The kernel is rescue's final file (it has no initrd): sent, the machine is installed.
    res = tl.client_ns.run("curl", "-sS", "-f", "-o", "/dev/null", f"{BASE}/inst/linux",
                           check=False, timeout=40)  # fmt: skip
    assert res.returncode == 0, res
    assert wait_for(lambda: server.events("profile.once_done"), 10), server.tail()
    (event,) = server.events("profile.once_done")
    assert (event["mac"], event["profile"], event["next"]) == (mac, "rescue", "local")
    assert host_command(server, mac)["next_boot"] == "local"
    # The state is in the lease database: a restarted pxed (or one stopped) keeps it.
    server.restart()
    assert host_command(server, mac)["next_boot"] == "local"
    code, script = curl(tl, f"{BASE}/pxed/{d}/boot.ipxe")
    assert "exit" in script, script
    server.stop()
    shown = host_command(server, mac, "--clear")  # written to the database directly
    assert shown["next_boot"] is None, shown
    server.start()
    code, script = curl(tl, f"{BASE}/pxed/{d}/boot.ipxe")
    assert "suite=bookworm" in script, (code, script, server.tail())


def test_an_unknown_profile_is_refused_by_the_running_pxed(
    served: tuple[TftpLab, PxedTftp, str],
) -> None:
    _, server, mac = served
    res = subprocess.run([sys.executable, "-P", "-m", "pxed", "host", mac, "--next", "nope",
                          "--state-dir", str(server.state_dir)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert res.returncode == 1
    assert "no profile named 'nope' (there are: inst, local, rescue)" in res.stderr, res
