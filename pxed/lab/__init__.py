"""The lab: pxed, its peers and real machines in network namespaces made for one run.

One package for everything that starts pxed, a peer or a machine outside the daemon itself:
`pxed demo`, every integration and end-to-end test (tests/lab.py adds only the pytest
fixtures) and every benchmark in bench/. Nothing here touches an interface outside the
namespaces it made; addresses come from 198.18.0.0/15 (RFC 2544).

    tools.py     the programs driven and their Debian packages (ToolMissing names one)
    netns.py     Lab: namespaces, veth pairs, bridges, tap devices; wait_for, stop_process
    logs.py      EventLog: a process's output as events and lines, copied to a file
    process.py   ServerProcess: start and wait until ready, stop, SIGKILL, restart, events
    pxed.py      PxedProcess: a configuration mapping as TOML, the command line, pxed.ready
    dhcp.py      DhcpSetup rendered by pxed, dnsmasq and Kea; the server <-> client net
    clients.py   dhclient, udhcpc, perfdhcp
    capture.py   tcpdump in a namespace, DHCP messages read back with scapy
    tftp.py      pxed, dnsmasq and atftpd serving a root; curl, atftp, tftp-hpa, tftpy
    machines.py  firmware kinds (data), QEMU command lines, serial consoles
    kernel.py    a kernel to boot (cached, the host's, or Debian's, downloaded)
    boot.py      BootLab: a server and machines on a bridge, one boot at a time
"""

from __future__ import annotations

from pxed.lab.netns import Lab, Netns, stop_process, wait_for
from pxed.lab.tools import ToolMissing, have, require

__all__ = ["Lab", "Netns", "ToolMissing", "have", "require", "stop_process", "wait_for"]
