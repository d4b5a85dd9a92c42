#!/usr/bin/env python3
"""pxed inside another program: a configuration built in code, the event stream followed,
the leases read and a reservation added by a reload, all without a TOML file.

    sudo python3 examples/embed.py --iface eth0 --network 192.168.50.0/24 \
        --range 192.168.50.100-192.168.50.199 --tftp-root /srv/tftp

It prints one line per lease bound, file served and boot story finished; after the first
lease it reserves that machine's address for it (a [[dhcp.host]] entry, by a reload).
Ctrl-C stops it: the last leases are written and every socket closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
from pathlib import Path

import pxed
from pxed.config import HostConfig, SubnetConfig, TftpConfig


def build_config(args: argparse.Namespace) -> pxed.Config:
    first, last = (ipaddress.IPv4Address(a) for a in args.range.split("-"))
    subnet = SubnetConfig(
        network=ipaddress.IPv4Network(args.network, strict=False),  # 192.168.50.1/24 too
        ranges=((first, last),),
        interface=args.iface,
        lease_time=3600,
    )
    return pxed.Config(
        interfaces=(args.iface,),
        mode="dhcp",
        subnets=(subnet,),
        tftp=TftpConfig(root=args.tftp_root),
        state_dir=args.state_dir,
    )


async def main(args: argparse.Namespace) -> None:
    config = build_config(args)
    async with pxed.Server(config) as server:
        print(f"serving {args.iface}: {len(server.leases())} lease(s) on record", flush=True)
        reserved: set[str] = set()
        async for event in server.events("dhcp.ack", "tftp.done", "boots.finished"):
            fields = event.fields()
            if event.kind == "dhcp.ack":
                print(f"lease {fields['ip']} -> {fields['mac']}", flush=True)
                if fields["mac"] not in reserved:  # keep this machine's address for it
                    reserved.add(fields["mac"])
                    host = HostConfig(mac=fields["mac"], ip=ipaddress.IPv4Address(fields["ip"]))
                    config = dataclasses.replace(config, hosts=(*config.hosts, host))
                    await server.reload(config)
                    print(f"reserved {fields['ip']} for {fields['mac']}", flush=True)
            elif event.kind == "tftp.done":
                print(f"sent {fields['file']} ({fields['bytes']} bytes) to "
                      f"{fields.get('mac') or fields['client']}", flush=True)
            else:
                print(f"boot of {fields['mac']}: {fields['outcome']} {fields.get('reason') or ''}",
                      flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--network", required=True, help="the interface's subnet, CIDR")
    parser.add_argument("--range", required=True, help="FIRST-LAST")
    parser.add_argument("--tftp-root", type=Path, default=Path("/srv/tftp"))
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/pxed"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
