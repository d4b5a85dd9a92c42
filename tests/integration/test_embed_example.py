"""examples/embed.py, the README's embedding example, runs as written: pxed.Server from a
Config built in code, in a namespace; dhclient gets a lease, the example sees the ACK on
the event stream, reserves the address by a reload, and sees the file curl fetches over TFTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from pxed.lab import Lab, wait_for
from pxed.lab.clients import dhclient_once, leased_address
from pxed.lab.dhcp import CLIENT_IF, SERVER_IF, make_dhcp_net
from pxed.lab.pxed import pythonpath
from pxed.lab.tftp import client_command
from pxed.lab.tools import require

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed.py"


def test_the_embedding_example_serves_and_follows_events(lab: Lab) -> None:
    require("curl")
    net = make_dhcp_net(lab)
    root = lab.tmp / "root"
    root.mkdir()
    (root / "hello.bin").write_bytes(os.urandom(5000))
    s = net.setup
    proc = net.server_ns.popen(
        sys.executable, "-P", str(EXAMPLE), "--iface", SERVER_IF,
        "--network", f"{s.server_ip}/{s.prefix}", "--range", f"{s.pool_first}-{s.pool_last}",
        "--tftp-root", str(root), "--state-dir", str(lab.tmp / "state"),
        env={**os.environ, **pythonpath()},
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip())

    threading.Thread(target=read, daemon=True).start()
    try:
        assert wait_for(lambda: any(x.startswith("serving") for x in lines), 30), "\n".join(lines)
        ip = leased_address(dhclient_once(net.client_ns, CLIENT_IF, net.tmp))
        assert wait_for(lambda: f"reserved {ip} for {net.client_mac}" in lines, 10), lines
        assert f"lease {ip} -> {net.client_mac}" in lines, lines
        # dhclient ran without its script: the address is put on the link here, as it would.
        net.client_ns.run("ip", "addr", "add", f"{ip}/{s.prefix}", "dev", CLIENT_IF)
        fetch = client_command("curl", "hello.bin", lab.tmp / "got", server=s.server_ip)
        got = net.client_ns.run(*fetch, check=False, timeout=60)
        assert (lab.tmp / "got").exists(), (got, lines)
        assert wait_for(lambda: any(x.startswith("sent hello.bin (5000 bytes)") for x in lines),
                        10), lines  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        time.sleep(0.1)
        net.close()
