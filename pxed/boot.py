"""Boot policy: which boot file a PXE client gets.

The policy is an object handed to the DHCP core (not a subclass of it), so that embedding
programs can decide per client. The default follows `[boot]`, `[[dhcp.host]]` and
`[[profile]]`: a host's own file; for iPXE, the machine's rendered script when it has a
profile (pxed.profiles.select), else `[boot] ipxe`; else the file for the client
architecture (PXELINUX and GRUB loaded that way then ask for their own rendered config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Protocol

from pxed.config import BootConfig, HostConfig, ProfileConfig
from pxed.profiles.paths import machine_file
from pxed.profiles.select import Machine, select


class ClientArch(IntEnum):
    """Client system architecture, option 93 (RFC 4578 §2.1; IANA processor architectures)."""

    X86_BIOS = 0
    NEC_PC98 = 1
    EFI_ITANIUM = 2
    DEC_ALPHA = 3
    ARC_X86 = 4
    INTEL_LEAN = 5
    EFI_IA32 = 6
    EFI_BC = 7  # EFI byte code; in practice x86-64 firmware (EDK2 sends 7)
    EFI_XSCALE = 8
    EFI_X86_64 = 9
    ARM32_EFI = 10
    ARM64_EFI = 11
    X86_HTTP = 15  # RFC 7440 era IANA additions: UEFI HTTP boot
    X64_HTTP = 16
    ARM64_HTTP = 19


@dataclass(frozen=True, slots=True)
class BootRequest:
    """What the policy may look at."""

    mac: str
    arch: tuple[int, ...]
    """Option 93 values, empty when the client sent none."""
    is_ipxe: bool
    """User class "iPXE" or option 175 present."""
    is_pxe: bool
    """Option 60 starts with "PXEClient" (or "HTTPClient")."""
    host: HostConfig | None
    is_http: bool = False
    """Option 60 starts with "HTTPClient": UEFI HTTP boot, which loads URLs only."""
    asks_file: bool = False
    """Option 67 (the boot file name) is in its parameter request list."""
    uuid: str | None = None
    """Option 97's machine UUID, as dmidecode prints it."""
    hostname: str | None = None
    """Option 12, as the client sent it."""

    @property
    def machine(self) -> Machine:
        arch = firmware_key(self.arch) if self.arch else None
        return Machine(self.mac, arch, self.uuid, self.hostname)


@dataclass(frozen=True, slots=True)
class BootChoice:
    file: str
    reason: str
    """Why this file: "host", "profile", "ipxe", "bios", "uefi_x64", ... (logged with the
    decision)."""
    warning: str | None = None
    profile: str | None = None
    """The machine's profile, when it has one."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the chosen file reaches the client: what the reply names, and over what."""

    file: str
    """The name under the root (TFTP), or a URL."""
    transport: str
    """"tftp" or "http"."""


def http_base(http: tuple[str, int] | None, server: str) -> str | None:
    """``http://HOST:PORT`` of pxed's HTTP server (``[http] listen``): its own address when
    it listens on one, else ``server``, the address the client reaches pxed at; None when
    pxed serves no HTTP."""
    if http is None:
        return None
    host = http[0] if http[0] not in ("0.0.0.0", "::", "") else server
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{http[1]}"


def boot_url(file: str, server: IPv4Address, http: tuple[str, int] | None) -> str | None:
    """The URL of ``file``: the file itself when it is a URL already, else on pxed's HTTP
    server (http_base); None when pxed serves no HTTP."""
    if "://" in file:
        return file
    base = http_base(http, str(server))
    return None if base is None else f"{base}/{file.lstrip('/')}"


def wants_boot(request: BootRequest, *, pxe_only: bool = False) -> bool:
    """Whether the client gets a boot file at all (RFC 4578: PXE firmware says PXEClient).

    ``pxe_only`` (ProxyDHCP): only PXE firmware counts (iPXE says PXEClient too); the full
    server also gives a file to iPXE, to a host with its own ``boot`` and to a client that
    asks for option 67 (a Linux installer's DHCP, say)."""
    if pxe_only:
        return request.is_pxe
    host = request.host
    return (request.is_pxe or request.is_ipxe or request.asks_file
            or (host is not None and bool(host.boot)))  # fmt: skip


def undeliverable(
    choice: BootChoice, request: BootRequest, http: tuple[str, int] | None
) -> str | None:
    """Why ``request``'s client could not load ``choice`` at all, or None."""
    if request.is_http and http is None and "://" not in choice.file:
        return (
            f"UEFI HTTP boot client {request.mac} loads URLs only and pxed serves no HTTP "
            f"([http] listen): {choice.file} not offered"
        )
    return None


def delivery(file: str, *, is_http: bool, is_ipxe: bool, server: IPv4Address,
             http: tuple[str, int] | None) -> Delivery:  # fmt: skip
    """The name or URL the reply gives for ``file`` to a UEFI HTTP boot client (``is_http``)
    or iPXE (``is_ipxe``) or another; ``server``: the next-server.

    UEFI HTTP boot firmware speaks no TFTP (UEFI 2.x 24.7; EDK2 HttpBootDxe): it gets a
    URL. iPXE speaks HTTP: with [http] on it gets a URL too, and the names its script gives
    relative (kernel, initrd) resolve against it, so they come over HTTP, many times faster
    than over lock-step TFTP. Everything else gets the name, for TFTP."""
    if is_http or (is_ipxe and http is not None) or "://" in file:
        url = boot_url(file, server, http)
        if url is not None:
            return Delivery(url, url.split("://", 1)[0].lower())
    return Delivery(file, "tftp")


class BootPolicy(Protocol):
    def choose(self, request: BootRequest) -> BootChoice | None: ...


# File names that are iPXE binaries: handing one to a client that already runs iPXE makes it
# load itself again, forever (the classic chainload loop).
_IPXE_BINARY_SUFFIXES = (".kpxe", ".kkpxe", ".kkkpxe", ".pxe", ".lkrn", ".efi", ".usb")


def looks_like_ipxe_binary(name: str) -> bool:
    low = name.rsplit("/", 1)[-1].lower()
    return ("ipxe" in low or "undionly" in low or "netboot.xyz" in low) and low.endswith(
        _IPXE_BINARY_SUFFIXES
    )


def firmware_key(arch: Iterable[int]) -> str:
    """The [boot] key for an option 93 list; the first known architecture wins."""
    for value in arch:
        if value in (ClientArch.EFI_BC, ClientArch.EFI_X86_64, ClientArch.X64_HTTP):
            return "uefi_x64"
        if value in (ClientArch.EFI_IA32, ClientArch.X86_HTTP):
            return "uefi_ia32"
        if value in (ClientArch.ARM64_EFI, ClientArch.ARM64_HTTP):
            return "uefi_arm64"
        if value == ClientArch.X86_BIOS:
            return "bios"
    # No option 93, or only architectures we have no key for: the default (BIOS) file.
    return "bios"


class ConfigBootPolicy:
    """The default policy: `[[dhcp.host]] boot` > for iPXE, the profile's script, else
    `[boot] ipxe` > `[boot]` by arch.

    ``next_boot``: a MAC's boot-once state (the profile it boots next, or None);
    ``seen``: told every machine asked about, so that its rendered files, fetched later,
    are selected and filled in from the same facts (arch, UUID, name)."""

    def __init__(
        self,
        boot: BootConfig,
        profiles: Sequence[ProfileConfig] = (),
        next_boot: Callable[[str], str | None] | None = None,
        seen: Callable[[Machine], None] | None = None,
    ) -> None:
        self.boot = boot
        self.profiles = tuple(profiles)
        self._next_boot = next_boot
        self._seen = seen

    def profile(self, request: BootRequest) -> ProfileConfig | None:
        machine = request.machine
        if self._seen is not None:
            self._seen(machine)
        next_boot = None if self._next_boot is None else self._next_boot(request.mac)
        return select(self.profiles, request.host, machine, next_boot)

    def choose(self, request: BootRequest) -> BootChoice | None:
        host = request.host
        if host is not None and host.boot:
            warning = None
            if request.is_ipxe and looks_like_ipxe_binary(host.boot):
                warning = (
                    f"host {host.mac} boot file {host.boot} looks like an iPXE binary and the "
                    "client already runs iPXE: it may chainload itself in a loop"
                )
            return BootChoice(host.boot, "host", warning)
        profile = self.profile(request)
        if profile is not None and request.is_ipxe:
            return BootChoice(machine_file(request.mac, "ipxe"), "profile", None, profile.name)
        name = profile.name if profile is not None else None
        if request.is_ipxe and self.boot.ipxe:
            return BootChoice(self.boot.ipxe, "ipxe")
        key = firmware_key(request.arch)
        file: str | None = getattr(self.boot, key)
        if file is None:
            return None
        warning = None
        if request.is_ipxe and looks_like_ipxe_binary(file):
            warning = (
                f"iPXE client {request.mac} would get iPXE binary {file} again "
                "(set [boot] ipxe to a script to break the chainload loop)"
            )
        return BootChoice(file, key, warning, name)
