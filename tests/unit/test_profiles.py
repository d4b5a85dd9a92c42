"""Profiles without I/O: parsing, selection, the rendered names, rendering, the boot policy."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pxed.boot import BootRequest, ConfigBootPolicy
from pxed.config import BootConfig, HostConfig, ProfileConfig, ProfileMatch
from pxed.config.check import check
from pxed.config.load import build_config
from pxed.config.model import Config, TftpConfig
from pxed.config.parse import parse
from pxed.config.problems import Problems
from pxed.dhcp.packet import DhcpPacket
from pxed.dhcp.pxe import client_uuid
from pxed.errors import ConfigError
from pxed.profiles import paths
from pxed.profiles.render import SAMPLE, Place, RenderError, check_profile, render, variables
from pxed.profiles.select import LOCAL_DISK, Machine, select

MAC = "52:54:00:12:34:56"
INSTALL = ProfileConfig("install", kernel="d-i/linux", initrd=("d-i/initrd.gz",),
                        cmdline="auto=true url={{ preseed_url }}")  # fmt: skip


def test_a_profile_parses_with_every_key(tmp_path: Path) -> None:
    data = {"profile": [{
        "name": "debian", "kernel": "d-i/linux", "initrd": ["a.gz", "b.gz"],
        "cmdline": "x={{ suite }}", "vars": {"suite": "bookworm"},
        "templates": {"preseed": "p.j2", "user_data": "/abs/u.j2"}, "default": True,
        "match": {"mac_prefix": "52-54-00", "arch": ["bios"], "hostname": "node-*",
                  "uuid": "A0000000-0000-4000-8000-000000000001", "mac": [MAC.upper()]},
    }]}  # fmt: skip
    (profile,) = parse(data, base=tmp_path).config.profiles
    assert profile.initrd == ("a.gz", "b.gz") and profile.final_file == "b.gz"
    assert dict(profile.variables) == {"suite": "bookworm"} and profile.default
    assert dict(profile.templates) == {"preseed": tmp_path / "p.j2", "user_data": Path("/abs/u.j2")}
    assert profile.match == ProfileMatch(
        (MAC,), ("52:54:00",), ("bios",), ("a0000000-0000-4000-8000-000000000001",), ("node-*",)
    )


def test_bad_profiles_are_one_line_each() -> None:
    data = {"profile": [
        {"name": "a b"},
        {"name": "x", "initrd": "i.gz", "vars": {"9x": 1}, "templates": {"ipxe": 3, "menu": "m"},
         "match": {"arch": "efi", "mac": "zz", "uuid": "nope", "colour": "red"}, "default": 1},
        {"name": "y", "match": {}},
    ], "dhcp": {"host": [{"mac": MAC, "profile": 7}]}}  # fmt: skip
    problems = Problems()
    parse(data, problems)
    assert problems.lines == [
        "[[dhcp.host]] #1 profile: 7 is not a profile name",
        "[[profile]] #1 name: 'a b' is not a name (letters, digits, . _ -)",
        "[[profile]] x initrd: an initrd needs a kernel",
        "[[profile]] x vars: '9x' is not a template variable name",
        "[[profile]] x templates ipxe: 3 is not a file name",
        "[[profile]] x templates: 'menu' is not one of ipxe, pxelinux, grub, preseed, "
        "meta_data, user_data, vendor_data, network_config",
        "[[profile]] x default: 1 is not true or false",
        "[[profile]] x match: unknown key 'colour'",
        "[[profile]] x match mac: 'zz' is not a MAC address",
        "[[profile]] x match arch: 'efi' is not one of bios, uefi_x64, uefi_ia32, uefi_arm64",
        "[[profile]] x match uuid: 'nope' is not a UUID",
        "[[profile]] y match: names no criterion (mac, mac_prefix, arch, uuid, hostname)",
    ]


def test_rules_between_profiles_and_hosts() -> None:
    config = Config(
        hosts=(HostConfig(MAC, profile="gone"), HostConfig("52:54:00:00:00:02", boot="a",
                                                           profile="install")),
        profiles=(INSTALL, ProfileConfig("install", default=True),
                  ProfileConfig("b", default=True)),
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check(config, files=False)
    assert err.value.problems == [
        "[[profile]] install: the name is used by another profile",
        "[[profile]]: default = true on more than one (install, b)",
        f"[[dhcp.host]] {MAC} profile: no [[profile]] named 'gone' (there are: b, install, local)",
        "[[dhcp.host]] 52:54:00:00:00:02: boot and profile both say what it boots; keep one",
    ]


def test_check_renders_every_template_and_finds_the_kernel(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d-i").mkdir(parents=True)
    (root / "d-i" / "linux").write_bytes(b"k")
    (root / "d-i" / "linux").chmod(0o644)
    (tmp_path / "user.j2").write_text("#cloud-config\n{{ hostname }}\n{% if %}\n")
    data = {"tftp": {"root": str(root)}, "dhcp": {"enabled": False},
            "profile": [{"name": "i", "kernel": "d-i/linux", "initrd": ["d-i/initrd.gz"],
                         "cmdline": "{{ nope }}",
                         "templates": {"user_data": "user.j2"}}]}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        build_config(data, lookup=lambda name: None, base=tmp_path)
    lines = [line for line in err.value.problems if "[[profile]]" in line]
    assert lines == [
        f"[[profile]] i initrd: 'd-i/initrd.gz' does not exist under the TFTP root {root}",
        "[[profile]] i cmdline: line 1: 'nope' is undefined",
        f"[[profile]] i templates user_data ({tmp_path / 'user.j2'}): line 3: "
        "Expected an expression, got 'end of statement block'",
    ]


def test_selection_order() -> None:
    by_mac = ProfileConfig("by-mac", match=ProfileMatch(mac_prefix=("52:54:00",), arch=("bios",)))
    by_name = ProfileConfig("by-name", match=ProfileMatch(hostname=("rack?-*",)))
    by_uuid = ProfileConfig("by-uuid", match=ProfileMatch(uuid=(SAMPLE.uuid or "",)))
    fallback = ProfileConfig("fallback", default=True)
    profiles = (INSTALL, by_mac, by_name, by_uuid, fallback)
    bios = Machine(MAC, "bios")
    assert select(profiles, None, bios) is by_mac
    assert select(profiles, None, Machine(MAC, "uefi_x64")) is fallback  # every criterion
    assert select(profiles, None, Machine("aa:00:00:00:00:01", hostname="RACK2-n1")) is by_name
    assert select(profiles, None, Machine("aa:00:00:00:00:01", uuid=SAMPLE.uuid)) is by_uuid
    host = HostConfig(MAC, profile="install")
    assert select(profiles, host, bios) is INSTALL  # the host entry before any match
    assert select(profiles, host, bios, next_boot="local") is LOCAL_DISK  # boot-once first
    assert select(profiles, host, bios, next_boot="by-name").name == "by-name"
    assert select((), None, bios) is None


def test_rendered_names() -> None:
    d = "52-54-00-12-34-56"
    assert paths.machine_file(MAC, "ipxe") == f"pxed/{d}/boot.ipxe"
    assert paths.rendered(f"/pxed/{d.upper()}/preseed.cfg") == (MAC, "preseed")
    assert paths.rendered(f"pxed\\{d}\\meta-data") == (MAC, "meta_data")
    assert paths.rendered(f"pxelinux.cfg/01-{d}") == (MAC, "pxelinux")
    assert paths.rendered(f"bios/pxelinux.cfg/01-{d}") == (MAC, "pxelinux")
    assert paths.rendered(f"boot/grub/grub.cfg-01-{d}") == (MAC, "grub")
    for name in (f"pxed/{d}/other", f"pxed/{d}", "pxelinux.cfg/default", f"x/pxed/{d}/boot.ipxe",
                 "pxelinux.cfg/C612", f"pxelinux.cfg/01-{d}-x"):  # fmt: skip
        assert paths.rendered(name) is None, name


def test_ipxe_script_uses_http_when_on_and_tftp_otherwise() -> None:
    machine = Machine(MAC, "bios", ip="198.18.0.7")
    place = Place("198.18.0.1", ("0.0.0.0", 8080))
    over_http = render(INSTALL, "ipxe", variables(INSTALL, machine, place))
    assert over_http.decode().splitlines() == [
        "#!ipxe",
        f"# host-52-54-00-12-34-56 ({MAC}): profile install, rendered by pxed",
        "kernel http://198.18.0.1:8080/d-i/linux initrd=initrd.gz auto=true "
        "url=http://198.18.0.1:8080/pxed/52-54-00-12-34-56/preseed.cfg",
        "initrd http://198.18.0.1:8080/d-i/initrd.gz",
        "boot",
    ]
    over_tftp = render(INSTALL, "ipxe", variables(INSTALL, machine, Place("198.18.0.1", None),
                                                  hostname="node1")).decode()  # fmt: skip
    assert "kernel tftp://198.18.0.1/d-i/linux initrd=initrd.gz auto=true url=tftp://" in over_tftp
    assert "# node1 (" in over_tftp
    local = render(LOCAL_DISK, "pxelinux", variables(LOCAL_DISK, machine, Place("a", None)))
    assert b"LOCALBOOT 0" in local and b"KERNEL" not in local


def test_a_template_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "t.j2"
    path.write_text("one {{ mac }}")
    profile = ProfileConfig("p", templates=(("preseed", path),))
    context = variables(profile, SAMPLE, Place("198.18.0.1", None))
    assert render(profile, "preseed", context) == f"one {SAMPLE.mac}".encode()
    path.write_text("two, longer {{ hostname }}")
    assert render(profile, "preseed", context) == b"two, longer sample"
    path.write_text("{{ missing }}")
    with pytest.raises(RenderError, match=r"p preseed \(.*t.j2\): line 1: 'missing' is undefined"):
        render(profile, "preseed", context)


def test_vars_may_not_shadow_pxeds_names() -> None:
    profile = ProfileConfig("p", variables=(("ip", "1.2.3.4"), ("mirror", "m")))
    assert check_profile(profile, None) == ["[[profile]] p vars: 'ip' is a name pxed sets"]


def test_ipxe_clients_with_a_profile_get_their_script() -> None:
    seen: list[Machine] = []
    policy = ConfigBootPolicy(BootConfig(), (INSTALL,), {MAC: "install"}.get, seen.append)

    def ask(mac: str, *, ipxe: bool, arch: tuple[int, ...] = (0,)) -> tuple[str, str, str | None]:
        request = BootRequest(mac, arch, ipxe, True, None, hostname="n1")
        choice = policy.choose(request)
        assert choice is not None
        return choice.file, choice.reason, choice.profile

    assert ask(MAC, ipxe=True) == ("pxed/52-54-00-12-34-56/boot.ipxe", "profile", "install")
    # PXE firmware gets its loader by arch; PXELINUX then asks for its rendered menu.
    assert ask(MAC, ipxe=False) == ("pxelinux.0", "bios", "install")
    assert ask(MAC, ipxe=False, arch=(7,)) == ("ipxe.efi", "uefi_x64", "install")
    assert ask("52:54:00:00:00:09", ipxe=True) == ("boot.ipxe", "ipxe", None)
    assert seen[0] == Machine(MAC, "bios", None, "n1")


def test_option_97_is_read_as_dmidecode_prints_it() -> None:
    want = uuid.UUID("4c4c4544-0042-3510-8052-b4c04f4e3232")
    def with_97(value: bytes) -> DhcpPacket:
        return DhcpPacket(op=1, xid=1, chaddr=bytes(16), options={97: value})

    assert client_uuid(with_97(b"\x00" + want.bytes_le)) == str(want)
    assert client_uuid(with_97(b"\x01" + bytes(16))) is None
    assert client_uuid(with_97(b"\x00\x01")) is None


def test_the_tftp_core_serves_rendered_files_before_the_root() -> None:
    from pxed.tftp.server import Accepted, Refused, TftpServer

    class NoFiles:
        def open(self, name: str, *, netascii: bool = False, under: str | None = None) -> object:
            from pxed.files import FileRefused, Refusal

            raise FileRefused("file not found", Refusal.NOT_FOUND)

    asked: list[tuple[str, str, str | None]] = []

    def rendered(name: str, ip: str, local: str | None) -> bytes | None:
        asked.append((name, ip, local))
        return b"line\n" if name.endswith("boot.ipxe") else None

    core = TftpServer(TftpConfig(), NoFiles(), rendered=rendered)  # type: ignore[arg-type]
    rrq = b"\x00\x01/pxed/52-54-00-12-34-56/boot.ipxe\x00netascii\x00"
    decision = core.request(rrq, ("198.18.0.9", 1000), 0.0, "198.18.0.1")
    assert isinstance(decision, Accepted)
    assert decision.transfer.file.name == "pxed/52-54-00-12-34-56/boot.ipxe"
    assert bytes(decision.transfer.file.data) == b"line\r\n"  # netascii, as asked
    assert asked == [("/pxed/52-54-00-12-34-56/boot.ipxe", "198.18.0.9", "198.18.0.1")]
    assert isinstance(core.request(b"\x00\x01other\x00octet\x00", ("198.18.0.9", 1001), 0.0),
                      Refused)  # fmt: skip
