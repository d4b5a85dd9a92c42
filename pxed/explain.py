"""`pxed explain MAC`: what pxed would answer a client, and why, from the configuration alone.

No daemon and no packet on the network: the client's DHCPDISCOVER is built as firmware
builds it, encoded and decoded by pxed's own codec, and handed to the same functions the
DHCP cores call (pxed.dhcp.pxe.boot_request, then pxed.boot), so the answer cannot
drift from the daemon's. The boot file is then looked up under the TFTP root by the TFTP
server's own lookup (pxed.files.FileStore), with its root checks and mode rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pxed.boot import (
    BootChoice,
    ClientArch,
    ConfigBootPolicy,
    delivery,
    firmware_key,
    undeliverable,
    wants_boot,
)
from pxed.config import Config, HostConfig, SubnetConfig
from pxed.config.derive import InterfaceLookup
from pxed.config.load import build_config, load_config
from pxed.config.parse import load_file, normalise_mac
from pxed.dhcp.options import MessageType, OptionCode
from pxed.dhcp.packet import DhcpPacket, build, parse
from pxed.dhcp.pxe import boot_request
from pxed.errors import ConfigError
from pxed.files import FileRefused, FileStore
from pxed.netinfo import interface_info
from pxed.profiles.paths import rendered
from pxed.tftp.server import client_dir

PROG = "pxed explain"

# What PXE ROMs ask for (PXE 2.1 §2.2.1, trimmed): among others 66 and 67, the TFTP server
# and boot file; iPXE asks for them too. A client that asks for 67 counts as a boot client.
_BOOT_CLIENT_PRL = bytes(
    [
        OptionCode.SUBNET_MASK,
        OptionCode.ROUTER,
        OptionCode.DNS_SERVERS,
        OptionCode.HOSTNAME,
        OptionCode.DOMAIN_NAME,
        OptionCode.VENDOR_SPECIFIC,
        OptionCode.TFTP_SERVER_NAME,
        OptionCode.BOOTFILE_NAME,
    ]
)
# A plain OS client (dhclient's default request) asks for no boot file.
_PLAIN_PRL = bytes(
    [OptionCode.SUBNET_MASK, OptionCode.ROUTER, OptionCode.DNS_SERVERS, OptionCode.DOMAIN_NAME]
)

_RULES = {
    "ipxe": "[boot] ipxe: the client is iPXE (user class 77 'iPXE')",
    "profile": "its profile's iPXE script, rendered for it: the client is iPXE",
    "bios": "[boot] bios",
    "uefi_x64": "[boot] uefi_x64",
    "uefi_ia32": "[boot] uefi_ia32",
    "uefi_arm64": "[boot] uefi_arm64",
}


@dataclass(frozen=True, slots=True)
class Client:
    """The client explained: what its DISCOVER would carry."""

    mac: str
    arch: int | None = None
    """Option 93; None: not sent."""
    user_class: str | None = None
    """Option 77 as iPXE sends it (the bare string); None: not sent."""
    vendor_class: str | None = None
    """Option 60. None: what PXE firmware of ``arch`` sends (``PXEClient:Arch:00007:...``),
    or nothing when no arch is given either; "": not sent."""

    @property
    def option60(self) -> str | None:
        if self.vendor_class is not None:
            return self.vendor_class or None
        if self.arch is None:
            return None
        return f"PXEClient:Arch:{self.arch:05d}:UNDI:003016"


def discover(client: Client) -> DhcpPacket:
    """The client's DHCPDISCOVER as the DHCP core sees it: built and parsed by the codec."""
    options: dict[int, bytes] = {OptionCode.MESSAGE_TYPE: bytes([MessageType.DISCOVER])}
    vendor = client.option60
    if vendor is not None:
        options[OptionCode.VENDOR_CLASS_ID] = vendor.encode()
    if client.user_class:
        options[OptionCode.USER_CLASS] = client.user_class.encode()
    if client.arch is not None:
        options[OptionCode.CLIENT_ARCH] = client.arch.to_bytes(2, "big")
    boot_client = vendor is not None and vendor.startswith(("PXEClient", "HTTPClient"))
    boot_client = boot_client or client.user_class == "iPXE"
    options[OptionCode.PARAMETER_REQUEST_LIST] = _BOOT_CLIENT_PRL if boot_client else _PLAIN_PRL
    packet = DhcpPacket(
        op=1, xid=0x7078_6564, chaddr=bytes.fromhex(client.mac.replace(":", "")), options=options
    )
    return parse(build(packet))


@dataclass(slots=True)
class Explanation:
    mac: str
    arch: int | None
    user_class: str | None
    vendor_class: str | None
    mode: str
    answered: bool
    """False: pxed would not answer this client at all (see ``why``)."""
    boot_file: str | None = None
    """As the reply names it: a name under the root, or a URL."""
    transport: str | None = None
    """How the client loads it: "tftp", "http"."""
    profile: str | None = None
    """The client's [[profile]] (from the configuration; `pxed host` state aside)."""
    rule: str | None = None
    """Which rule chose the file (or why there is none), in the configuration's words."""
    reason: str | None = None
    """The policy's key, as logged with each decision (``boot_reason``)."""
    ip: str | None = None
    """The address it gets when it is reserved (a pool's address is the first free one at
    the time: not known from the configuration)."""
    address: str | None = None
    """Where its address comes from, in words."""
    hostname: str | None = None
    """Option 12 from its [[dhcp.host]], if any."""
    next_server: str | None = None
    """siaddr / option 66 when one address is known for it."""
    next_server_from: str | None = None
    tftp_path: str | None = None
    served: bool | None = None
    """Whether the TFTP server would serve ``tftp_path``; None when it is not its to serve."""
    why: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def arch_name(arch: int | None) -> str:
    if arch is None:
        return "none"
    try:
        return f"{arch} ({ClientArch(arch).name})"
    except ValueError:
        return f"{arch} (unknown)"


def _rule(choice: BootChoice, arch: tuple[int, ...], host: HostConfig | None) -> str:
    if choice.reason == "host" and host is not None:
        return f"host entry [[dhcp.host]] {host.mac} boot"
    base = _RULES.get(choice.reason, choice.reason)
    if choice.reason == "ipxe":
        return base
    if not arch:
        return f"{base}: no client arch (option 93), the default"
    if choice.reason == "bios" and arch[0] != ClientArch.X86_BIOS:
        return f"{base}: client arch {arch[0]} is not one pxed has a [boot] key for, the default"
    return f"{base}: client arch {arch[0]}"


def _subnet_of(config: Config, host: HostConfig | None) -> list[SubnetConfig]:
    """The subnets the client may get its address from (its reservation's, else all)."""
    if host is not None and host.ip is not None:
        return [s for s in config.subnets if host.ip in s.network]
    return list(config.subnets)


def _address(config: Config, host: HostConfig | None) -> tuple[str | None, str]:
    """(its reserved address or None, where its address comes from)."""
    if host is not None and host.ip is not None:
        return str(host.ip), f"reserved by [[dhcp.host]] {host.mac}"
    pools = [
        f"{sub.network} pool " + ", ".join(f"{a}-{b}" for a, b in sub.ranges)
        for sub in config.subnets
    ]
    if not pools and config.derive_on:
        pools = [f"the pool derived once {config.derive_on} has an address"]
    return None, "a free address of " + "; ".join(pools or ["no subnet"])


def _next_server(
    config: Config, host: HostConfig | None, lookup: InterfaceLookup
) -> tuple[str | None, str]:
    """(siaddr / option 66 when one address is known, where it comes from):
    ``[boot] next_server``, else pxed's own address in the client's subnet on the
    interface the request comes in on (DhcpServer._server_ip)."""
    if config.boot.next_server is not None:
        return str(config.boot.next_server), "[boot] next_server"
    found: list[tuple[IPv4Address | None, str]] = []
    for sub in _subnet_of(config, host):
        info = lookup(sub.interface) if sub.interface else None
        own = info.address_in(sub.network) if info is not None else None
        if own is not None:
            found.append((own, f"pxed's address on {sub.interface}"))
        else:
            found.append((None, f"pxed's address in {sub.network} (none on an interface now)"))
    if len(found) == 1 and found[0][0] is not None:
        return str(found[0][0]), found[0][1]
    text = "; ".join(f"{ip} ({why})" if ip else why for ip, why in found)
    return None, text or "pxed's address in the client's subnet"


def _tftp(config: Config, name: str, mac: str, ip: IPv4Address | None) -> tuple[str, bool | None]:
    """The path the TFTP server would serve ``name`` from for this client, and whether it
    would serve it (found by its own lookup: per-client directory, case, root, mode)."""
    root = config.tftp.root
    if "://" in name:
        return name, None  # a URL (UEFI HTTP boot, iPXE): not the TFTP server's to serve
    store = FileStore.for_config(config.tftp)
    under = client_dir(config.tftp.per_client, str(ip) if ip else None, mac)
    try:
        opened = store.open(name, under=under)
    except FileRefused as exc:
        return f"{root / name.lstrip('/')} ({exc.reason})", False
    except (OSError, ValueError) as exc:  # a root that is not there, a bad directory name
        return f"{root / name.lstrip('/')} ({exc})", False
    try:
        return opened.path, True
    finally:
        opened.close()
        store.close()


def explain(
    config: Config,
    client: Client,
    *,
    lookup: InterfaceLookup = interface_info,
    notes: Sequence[str] = (),
) -> Explanation:
    """What the daemon, run with ``config``, would answer ``client``'s DISCOVER.

    ``notes``: what load_config said (a default boot file left out because it is missing).
    """
    packet = discover(client)
    mac = packet.mac
    host = {h.mac: h for h in config.hosts}.get(mac)
    mode = config.mode
    out = Explanation(
        mac=mac,
        arch=client.arch,
        user_class=client.user_class,
        vendor_class=client.option60,
        mode=mode,
        answered=True,
    )
    if not config.dhcp_enabled:
        out.answered = False
        out.why = "DHCP is off ([dhcp] enabled = false): pxed answers no DHCP request"
        return out
    proxy = mode == "proxy"
    if not proxy and config.known_only and host is None:
        # DhcpServer._unknown: dropped at DISCOVER, nothing is offered.
        out.answered = False
        out.why = "[dhcp] known_only = true and no [[dhcp.host]] has this MAC: no answer"
        return out
    request = boot_request(packet, host)
    wanted = wants_boot(request, pxe_only=proxy)
    if proxy:
        out.address = "none from pxed: the other DHCP server gives it (pxed is a ProxyDHCP)"
        if not wanted:
            out.answered = False
            out.why = "ProxyDHCP answers PXE firmware only (option 60 PXEClient)"
            return out
    else:
        out.ip, out.address = _address(config, host)
        out.hostname = host.hostname if host is not None else None
    if mode == "auto":
        out.notes.append(
            "mode auto: explained as the full DHCP server; if another DHCP server answers "
            "the start-up probe, pxed is a ProxyDHCP and answers PXE firmware only"
        )
    if not wanted:
        out.rule = (
            "none: not a PXE or iPXE client and asks for no boot file (option 67), "
            "so it gets an address only"
        )
        return out
    policy = ConfigBootPolicy(config.boot, config.profiles)
    profile = policy.profile(request)
    out.profile = profile.name if profile is not None else None
    choice = policy.choose(request)
    if choice is None:
        key = firmware_key(request.arch)
        out.rule = f"none: [boot] {key} is not set for client arch {arch_name(client.arch)}"
        out.notes.extend(n for n in notes if f"({key})" in n)
        return out
    why = undeliverable(choice, request, config.http.listen)
    if why is not None:
        out.rule = f"none: {why}"
        return out
    out.boot_file = choice.file
    out.transport = "tftp"
    out.reason = choice.reason
    out.rule = _rule(choice, request.arch, host)
    if choice.warning:
        out.warnings.append(choice.warning)
    out.next_server, out.next_server_from = _next_server(config, host, lookup)
    if out.next_server is not None:
        sent = delivery(choice.file, is_http=request.is_http, is_ipxe=request.is_ipxe,
                        server=IPv4Address(out.next_server), http=config.http.listen)  # fmt: skip
        out.boot_file, out.transport = sent.file, sent.transport
    if rendered(choice.file) is not None:
        out.tftp_path = f"{choice.file} (rendered for it from profile {out.profile})"
        out.served = True
    elif config.tftp.enabled:
        ip = host.ip if host is not None else None
        out.tftp_path, out.served = _tftp(config, choice.file, mac, ip)
        if config.tftp.per_client == "ip" and ip is None:
            out.notes.append(
                "[tftp] per_client = ip: the client's own directory depends on the address "
                "it gets; shown from the shared root"
            )
    else:
        out.notes.append("TFTP is off here ([tftp] enabled = false): next-server serves it")
    return out


def as_text(e: Explanation) -> str:
    rows: list[tuple[str, str]] = [
        (
            "client",
            f"{e.mac}, arch {arch_name(e.arch)}, user class {e.user_class or '-'}, "
            f"vendor class {e.vendor_class or '-'}",
        ),
        ("mode", e.mode),
    ]
    if not e.answered:
        rows.append(("answer", f"none: {e.why}"))
    else:
        over = f" (over {e.transport.upper()})" if e.boot_file and e.transport else ""
        rows.append(("boot file", (e.boot_file or "none") + over))
        if e.profile:
            rows.append(("profile", e.profile))
        rows.append(("rule", e.rule or "-"))
        where = e.address or "-"
        rows.append(("address", f"{e.ip} ({where})" if e.ip else where))
        if e.hostname:
            rows.append(("hostname", e.hostname))
        if e.next_server_from is not None:
            ns = e.next_server_from
            rows.append(("next-server", f"{e.next_server} ({ns})" if e.next_server else ns))
        if e.tftp_path is not None:
            state = {True: "served", False: "NOT served", None: "not under the root"}
            rows.append(("root", f"{e.tftp_path} [{state[e.served]}]"))
    rows += [("warning", w) for w in e.warnings]
    rows += [("note", n) for n in e.notes]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def as_json(e: Explanation) -> dict[str, Any]:
    return asdict(e)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Which boot file a client would get, by which rule, at which address, and "
            "where the file is under the TFTP root. Reads the configuration only."
        ),
    )
    parser.add_argument("mac", metavar="MAC", help="the client's MAC (52:54:00:12:34:56)")
    parser.add_argument(
        "--arch", type=int, metavar="N", help="option 93: 0 BIOS, 7/9 x86-64 UEFI, 11 arm64..."
    )
    parser.add_argument("--user-class", metavar="TEXT", help="option 77 (iPXE sends 'iPXE')")
    parser.add_argument(
        "--vendor-class",
        metavar="TEXT",
        help="option 60 (default: PXEClient:Arch:N:... when --arch is given; '' for none)",
    )
    parser.add_argument("--config", "-c", type=Path, help="TOML configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _load(path: Path | None, lookup: InterfaceLookup) -> tuple[Config, list[str], list[str]]:
    """The configuration as the daemon loads it; when the daemon would refuse it only for
    its boot files, as it stands without that check (explained with the refusal as
    warnings: showing which file is missing is much of what explain is for)."""
    notes: list[str] = []
    warnings: list[str] = []
    try:
        return load_config(path, lookup=lookup, notes=notes, warnings=warnings), notes, warnings
    except ConfigError as refused:
        data = load_file(path) if path is not None else {}
        # Raises (with those lines) when more than the files is wrong.
        config = build_config(data, lookup=lookup, check_files=False)
        lines = [f"pxed would refuse this configuration: {line}" for line in refused.problems]
        return config, notes, warnings + lines


def main(argv: Sequence[str], lookup: InterfaceLookup = interface_info) -> int:
    args = _parser().parse_args(list(argv))
    try:
        mac = normalise_mac(args.mac)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.arch is not None and not 0 <= args.arch <= 0xFFFF:
        print(f"{PROG}: --arch {args.arch} is not a 16-bit architecture type", file=sys.stderr)
        return 1
    try:
        config, notes, warnings = _load(args.config, lookup)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{PROG}: {line}", file=sys.stderr)
        return 1
    client = Client(mac, args.arch, args.user_class, args.vendor_class)
    result = explain(config, client, lookup=lookup, notes=notes)
    result.warnings[:0] = warnings
    if args.json:
        print(json.dumps(as_json(result), indent=2))
    else:
        print(as_text(result))
    return 0
