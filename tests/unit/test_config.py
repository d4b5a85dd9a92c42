"""Configuration loading and validation: the issue's example as is, and one line per problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from pxed.cli import main
from pxed.config.derive import default_pool, derive_subnet
from pxed.config.load import build_config, load_config
from pxed.config.parse import (
    BOOT_KEYS,
    DHCP_KEYS,
    HOST_KEYS,
    SERVER_KEYS,
    TFTP_KEYS,
    parse,
    parse_duration,
)
from pxed.errors import ConfigError
from pxed.netinfo import InterfaceInfo

PXS0 = InterfaceInfo("pxs0", "02:00:00:00:00:01", (IPv4Interface("198.19.0.1/16"),), 1500)
PXS1 = InterfaceInfo("pxs1", "02:00:00:00:00:02", (IPv4Interface("198.18.64.1/24"),), 1500)
IFACES = {"pxs0": PXS0, "pxs1": PXS1}


def lookup(name: str) -> InterfaceInfo | None:
    return IFACES.get(name)


EXAMPLE = """
[server]
interfaces = ["pxs0"]
mode = "dhcp"                    # dhcp now; "proxy" and "auto" come with their own issue
state_dir = "{state}"      # leases live here
[dhcp]
range = "198.19.1.0-198.19.254.254"
lease_time = "12h"
router = "198.19.0.1"
dns = ["198.19.0.1"]
domain = "lab.test"
[[dhcp.host]]
mac = "52:54:00:12:34:56"
ip = "198.19.0.50"
hostname = "node1"
boot = "pxelinux.0"              # this host always gets this file, whatever its firmware
[boot]
bios = "pxelinux.0"              # client arch 0 (option 93) or no option 93
uefi_x64 = "ipxe.efi"            # arch 7 and 9
uefi_arm64 = "ipxe-arm64.efi"    # arch 11
ipxe = "boot.ipxe"               # any client whose user class (77) is "iPXE" or that sends option 175
[tftp]
root = "{root}"
"""  # noqa: E501 (the issue's example, character for character)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "tftp"
    r.mkdir()
    for name in ("pxelinux.0", "ipxe.efi", "ipxe-arm64.efi", "boot.ipxe"):
        (r / name).write_bytes(b"x")
    return r


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pxed.toml"
    p.write_text(text)
    return p


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), lookup=lookup)
    return info.value.problems


def test_the_issue_example_is_accepted_as_is(tmp_path: Path, root: Path) -> None:
    cfg = load_config(
        write(tmp_path, EXAMPLE.format(root=root, state=tmp_path / "state")), lookup=lookup
    )
    assert cfg.interfaces == ("pxs0",)
    (sub,) = cfg.subnets
    assert sub.network == IPv4Network("198.19.0.0/16")
    assert sub.ranges == ((IPv4Address("198.19.1.0"), IPv4Address("198.19.254.254")),)
    assert sub.lease_time == 12 * 3600
    assert sub.router == (IPv4Address("198.19.0.1"),) and sub.domain == "lab.test"
    assert sub.interface == "pxs0"
    (host,) = cfg.hosts
    assert (host.mac, host.ip, host.hostname, host.boot) == (
        "52:54:00:12:34:56",
        IPv4Address("198.19.0.50"),
        "node1",
        "pxelinux.0",
    )
    assert cfg.boot.uefi_arm64 == "ipxe-arm64.efi" and cfg.boot.ipxe == "boot.ipxe"
    assert cfg.tftp.root == root


def test_the_shipped_example_is_complete_and_valid(tmp_path: Path, root: Path) -> None:
    text = (Path(__file__).parents[2] / "conf" / "pxed.toml").read_text()
    text = text.replace('"/srv/tftp"', f'"{root}"').replace("/var/lib/pxed", str(tmp_path))
    cfg = load_config(write(tmp_path, text), lookup=lookup)
    assert cfg.hosts and cfg.subnets


def test_the_shipped_example_names_every_key() -> None:
    text = (Path(__file__).parents[2] / "conf" / "pxed.toml").read_text()
    keys = (
        SERVER_KEYS - {"dhcp_port"}  # a test-only knob
        | DHCP_KEYS
        | BOOT_KEYS
        | TFTP_KEYS
        | HOST_KEYS
    )
    missing = [
        key
        for key in sorted(keys)
        if not re.search(rf"^#? ?{key}\s*=", text, re.M) and f"dhcp.{key}]" not in text
    ]
    assert missing == []


def test_flags_override_the_file(tmp_path: Path, root: Path) -> None:
    path = write(tmp_path, EXAMPLE.format(root=root, state=tmp_path))
    cfg = load_config(path, {"dhcp": {"range": "198.19.5.0-198.19.5.9"}}, lookup=lookup)
    assert cfg.subnets[0].ranges == ((IPv4Address("198.19.5.0"), IPv4Address("198.19.5.9")),)
    assert cfg.subnets[0].router == (IPv4Address("198.19.0.1"),)


def test_only_an_interface_derives_subnet_and_pool(root: Path) -> None:
    notes: list[str] = []
    cfg = build_config(
        {"server": {"interfaces": ["pxs1"]}, "tftp": {"root": str(root)}},
        lookup=lookup,
        notes=notes,
    )
    (sub,) = cfg.subnets
    assert sub.network == IPv4Network("198.18.64.0/24")
    assert sub.ranges == ((IPv4Address("198.18.64.128"), IPv4Address("198.18.64.254")),)
    assert any("pool 198.18.64.128-198.18.64.254" in n for n in notes)


def test_parsing_looks_at_no_interface_and_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse stage states what the TOML says, with no lookup to give and none made:
    the interface named does not exist, nor do the root and the boot file."""

    def no_interfaces() -> list[str]:
        raise AssertionError("the parse stage looked at the interfaces")

    monkeypatch.setattr("pxed.netinfo.netifaces.interfaces", no_interfaces)
    parsed = parse(
        {
            "server": {"interfaces": ["nope0"], "mode": "dhcp"},
            "dhcp": {"range": "198.19.1.0-198.19.1.9", "router": "198.19.0.1"},
            "boot": {"bios": "missing.0"},
            "tftp": {"root": "/nonexistent"},
        }
    )
    assert parsed.config.interfaces == ("nope0",) and parsed.config.subnets == ()
    (spec,) = parsed.subnets
    assert (spec.where, spec.network, spec.interface) == ("[dhcp]", None, None)
    assert spec.ranges == ((IPv4Address("198.19.1.0"), IPv4Address("198.19.1.9")),)
    assert spec.settings is not None and spec.settings.router == (IPv4Address("198.19.0.1"),)
    assert parsed.config.boot.bios == "missing.0"  # looked for under the root by the check
    with pytest.raises(ConfigError) as info:
        parse({"server": {"interfaces": ["nope0"]}, "dhcp": {"range": "198.19.1.9-198.19.1.0"}})
    assert info.value.problems == [
        "[dhcp] range: range '198.19.1.9-198.19.1.0' starts after it ends"
    ]


def test_default_pool_avoids_our_own_address() -> None:
    net = IPv4Network("198.18.0.0/24")
    assert default_pool(net, IPv4Address("198.18.0.200")) == (
        IPv4Address("198.18.0.128"),
        IPv4Address("198.18.0.199"),
    )
    assert default_pool(IPv4Network("198.18.0.0/30"), IPv4Address("198.18.0.1")) is None


def test_every_problem_is_one_line(tmp_path: Path, root: Path) -> None:
    bad = f"""
[server]
interfaces = ["pxs0", "nope0"]
colour = "blue"
[dhcp]
range = "198.20.1.0-198.20.1.9"
router = "198.19.0.300"
lease_time = "forever"
[[dhcp.host]]
mac = "52:54:00:12:34:56"
ip = "198.19.0.50"
[[dhcp.host]]
mac = "52:54:00:12:34:57"
ip = "198.19.0.50"
[[dhcp.host]]
mac = "52:54:00:12:34:58"
ip = "10.0.0.5"
[[dhcp.host]]
mac = "not-a-mac"
[boot]
bios = "missing.0"
[tftp]
root = "{root}"
"""
    lines = problems_of(tmp_path, bad)
    text = "\n".join(lines)
    assert "[server]: unknown key 'colour'" in text
    assert "nope0" not in text  # a missing interface is a warning (next test), not a problem
    assert "198.20.1.0-198.20.1.9 is outside the subnet of every interface" in text
    assert "'198.19.0.300' is not an IPv4 address" in text
    assert "'forever' is not a duration" in text
    assert "address 198.19.0.50 is already reserved for 52:54:00:12:34:56" in text
    assert "'not-a-mac' is not a MAC address" in text
    assert "'missing.0' does not exist under the TFTP root" in text
    assert all("\n" not in line for line in lines)


def test_reservation_outside_every_subnet(tmp_path: Path, root: Path) -> None:
    text = f"""
[server]
interfaces = ["pxs0"]
[dhcp]
range = "198.19.1.0-198.19.1.9"
[[dhcp.host]]
mac = "52:54:00:12:34:58"
ip = "10.0.0.5"
[tftp]
root = "{root}"
"""
    (line,) = problems_of(tmp_path, text)
    assert "address 10.0.0.5 is outside every subnet (198.19.0.0/16)" in line


def test_pool_outside_the_interface_subnet(tmp_path: Path, root: Path) -> None:
    text = f"""
[server]
interfaces = ["pxs1"]
[[dhcp.subnet]]
interface = "pxs1"
network = "198.18.64.0/24"
range = "198.18.65.1-198.18.65.9"
[tftp]
root = "{root}"
"""
    (line,) = problems_of(tmp_path, text)
    assert "is not inside the subnet 198.18.64.0/24" in line


def test_missing_default_boot_files_are_not_offered(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    notes: list[str] = []
    cfg = build_config(
        {"server": {"interfaces": ["pxs0"]}, "tftp": {"root": str(empty)}},
        lookup=lookup,
        notes=notes,
    )
    assert cfg.boot.bios is None and cfg.boot.ipxe is None
    assert any("pxelinux.0" in n for n in notes)


def test_typed_options_by_name_and_code(root: Path) -> None:
    cfg = build_config(
        {
            "server": {"interfaces": ["pxs0"]},
            "dhcp": {
                "options": {
                    "ntp-servers": ["198.19.0.1"],
                    "150": {"type": "ip", "value": "198.19.0.2"},
                },
                "routes": [["198.18.5.0/24", "198.19.0.1"]],
            },
            "tftp": {"root": str(root)},
        },
        lookup=lookup,
    )
    opts = dict(cfg.subnets[0].options)
    assert opts[42] == IPv4Address("198.19.0.1").packed
    assert opts[150] == IPv4Address("198.19.0.2").packed
    assert cfg.subnets[0].routes == ((IPv4Network("198.18.5.0/24"), IPv4Address("198.19.0.1")),)


def test_bad_options(root: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(
            {
                "server": {"interfaces": ["pxs0"]},
                "dhcp": {"options": {"no-such-option": 1, "200": "x", "mtu-ish": 3}},
                "tftp": {"root": str(root)},
            },
            lookup=lookup,
        )
    assert len(info.value.problems) == 3


@pytest.mark.parametrize("value", ["30000-30099", " 30000 - 30099 ", [30000, 30099]])
def test_tftp_port_range_forms(root: Path, value: object) -> None:
    tftp = {"root": str(root), "port_range": value}
    cfg = build_config({"dhcp": {"enabled": False}, "tftp": tftp})
    assert cfg.tftp.port_range == (30000, 30099)


def test_tftp_per_client(root: Path) -> None:
    def tftp(**more: object) -> dict[str, object]:
        return {"dhcp": {"enabled": False}, "tftp": {"root": str(root), **more}}

    assert build_config(tftp()).tftp.per_client is None
    for value in ("ip", "mac"):
        assert build_config(tftp(per_client=value)).tftp.per_client == value
    with pytest.raises(ConfigError) as info:
        build_config(tftp(per_client="host"))
    assert info.value.problems == ['[tftp] per_client: \'host\' is not "mac" or "ip"']


def test_tftp_port_range_from_the_command_line(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["check", "--no-dhcp", "--tftp-root", str(root), "--tftp-port-range"]
    assert main([*common, "4000-4009"]) == 0
    assert main([*common, "4009-4000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pxed: [tftp] port_range: 4009-4000 is not a range of ports within 1..65535"]


@pytest.mark.parametrize(
    ("tftp", "problem"),
    [
        ({"port_range": "30000"}, "'30000' is not \"FIRST-LAST\" or [FIRST, LAST]"),
        ({"port_range": "a-b"}, "'a-b' is not \"FIRST-LAST\""),
        ({"port_range": [1, 2, 3]}, '[1, 2, 3] is not "FIRST-LAST"'),
        ({"port_range": [1, True]}, "[1, True] is not"),
        ({"port_range": 30000}, "30000 is not"),
        ({"port_range": "30099-30000"}, "30099-30000 is not a range of ports within 1..65535"),
        ({"port_range": [0, 10]}, "0-10 is not a range of ports"),
        ({"port_range": "65000-65536"}, "65000-65536 is not a range of ports"),
        ({"port_range": "30000-30099", "single_port": True}, "not with single_port = true"),
        ({"port_range": "60-70"}, "60-70 holds the listening port 69"),
        ({"port_range": "1000-2000", "port": 1069}, "holds the listening port 1069"),
    ],
)
def test_tftp_port_range_refused(root: Path, tftp: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"dhcp": {"enabled": False}, "tftp": {"root": str(root), **tftp}})
    (line,) = info.value.problems
    assert line.startswith("[tftp] port_range: ")
    assert problem in line


def test_boot_files_are_checked_as_the_tftp_server_finds_them(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.0").write_bytes(b"x")
    (root / "out.0").symlink_to(tmp_path / "outside.0")
    base = {"server": {"interfaces": ["pxs0"]}, "dhcp": {"enabled": False}}
    boot = {"bios": "PXELINUX.0", "uefi_x64": "\\IPXE.efi"}
    cfg = build_config({**base, "boot": boot, "tftp": {"root": str(root)}}, lookup=lookup)
    assert cfg.boot.bios == "PXELINUX.0"  # served as pxelinux.0: names match ignoring case
    with pytest.raises(ConfigError) as info:
        tftp = {"root": str(root), "case_insensitive": False}
        build_config({**base, "boot": boot, "tftp": tftp}, lookup=lookup)
    assert info.value.problems == [
        f"[boot] bios: 'PXELINUX.0' does not exist under the TFTP root {root}",
        f"[boot] uefi_x64: '\\\\IPXE.efi' does not exist under the TFTP root {root}",
    ]
    with pytest.raises(ConfigError) as info:
        build_config(
            {**base, "boot": {"bios": "out.0"}, "tftp": {"root": str(root)}}, lookup=lookup
        )
    assert info.value.problems == [
        f"[boot] bios: 'out.0' under the TFTP root {root} is not served: leads out of the root"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="the world-readable rule applies to root only")
def test_a_boot_file_only_root_may_read_is_refused(root: Path) -> None:
    (root / "pxelinux.0").chmod(0o600)
    base = {"server": {"interfaces": ["pxs0"]}, "dhcp": {"enabled": False}}
    boot = {"bios": "pxelinux.0"}
    with pytest.raises(ConfigError) as info:
        build_config({**base, "boot": boot, "tftp": {"root": str(root)}}, lookup=lookup)
    (problem,) = info.value.problems
    assert problem.startswith(f"[boot] bios: 'pxelinux.0' under the TFTP root {root} is not")
    assert "not world-readable" in problem
    tftp = {"root": str(root), "world_readable_only": False}
    assert build_config({**base, "boot": boot, "tftp": tftp}, lookup=lookup).boot.bios


@pytest.mark.parametrize(
    ("text", "seconds"), [("12h", 43200), ("90s", 90), ("30m", 1800), ("1d", 86400), (600, 600)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_check_command_exit_codes(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pxed.config.load.interface_info", lookup)
    import pxed.config.load as cl

    monkeypatch.setattr(cl.load_config, "__kwdefaults__", {"lookup": lookup, "notes": None})
    good = write(tmp_path, EXAMPLE.format(root=root, state=tmp_path))
    assert main(["check", "--config", str(good)]) == 0
    assert ": ok (" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\ninterfaces = ["pxs0"]\nfoo = 1\n[tftp]\nroot = "/nonexistent"\n')
    assert main(["check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any("unknown key 'foo'" in line for line in err)
    assert any("/nonexistent is not a directory" in line for line in err)


def test_version_and_help_run() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "pxed", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("pxed ")
    helptext = subprocess.run(
        [sys.executable, "-m", "pxed", "--help"], capture_output=True, text=True, check=True
    )
    assert "--iface" in helptext.stdout and "pxed check" in helptext.stdout


def test_a_missing_interface_is_a_warning_and_its_subnet_is_derived_later(tmp_path: Path) -> None:
    warnings: list[str] = []
    cfg = load_config(
        write(
            tmp_path,
            '[server]\ninterfaces = ["nope0"]\nmode = "dhcp"\n'
            '[dhcp]\nrouter = "198.19.0.1"\n[tftp]\nenabled = false\n',
        ),
        lookup=lookup,
        warnings=warnings,
    )
    assert warnings == ["[server] interfaces: no interface named 'nope0' yet"]
    assert cfg.subnets == () and cfg.derive_on == "nope0"
    assert cfg.derive_template is not None
    assert cfg.derive_template.router == (IPv4Address("198.19.0.1"),)
    later = InterfaceInfo("nope0", None, (IPv4Interface("198.18.7.1/24"),), 1500)
    sub = derive_subnet(cfg.derive_template, later)
    assert sub is not None and sub.network == IPv4Network("198.18.7.0/24")
    assert sub.ranges == ((IPv4Address("198.18.7.128"), IPv4Address("198.18.7.254")),)
    assert sub.interface == "nope0" and sub.derived


def test_known_only_and_the_new_client_bound(tmp_path: Path) -> None:
    base = '[server]\ninterfaces = ["pxs0"]\n[tftp]\nenabled = false\n[dhcp]\n'
    cfg = load_config(
        write(
            tmp_path,
            base + "known_only = true\nnew_clients_per_second = 20\n"
            '[[dhcp.host]]\nmac = "52:54:00:12:34:56"\n',
        ),
        lookup=lookup,
    )
    assert cfg.known_only and cfg.new_clients_per_second == 20
    lines = problems_of(tmp_path, base + 'known_only = "yes"\nnew_clients_per_second = -1\n')
    assert "[dhcp] known_only: 'yes' is not true or false" in lines
    assert "[dhcp] new_clients_per_second: -1 is not a count (0 = no bound)" in lines
    lines = problems_of(tmp_path, base + "known_only = true\n")
    assert lines == ["[dhcp] known_only: no [[dhcp.host]] entries, so nobody would be answered"]


def test_option_keys_are_read_by_the_codec(root: Path) -> None:
    """An option key is a name or a code as pxed/dhcp/options.py reads it; a key that only
    looks like digits ("²") is refused with a line, not a traceback."""
    base = {"server": {"interfaces": ["pxs0"]}, "tftp": {"root": str(root)}}
    opts = {"150": "198.19.0.2", "option-151": "198.19.0.3", "042": ["198.19.0.1"]}
    typed = {k: {"type": "ip-list", "value": v} for k, v in opts.items()}
    cfg = build_config({**base, "dhcp": {"options": typed}}, lookup=lookup)
    assert sorted(code for code, _ in cfg.subnets[0].options) == [42, 150, 151]
    with pytest.raises(ConfigError) as info:
        build_config({**base, "dhcp": {"options": {"²": 1, "255": 1}}}, lookup=lookup)
    assert info.value.problems == [
        "[dhcp] options: '²' is not a known option name or a code 1..254",
        "[dhcp] options: '255' is not a known option name or a code 1..254",
    ]



def test_an_option_of_unknown_type_says_how_to_give_one(root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(
            {
                "server": {"interfaces": ["pxs0"]},
                "dhcp": {"options": {"224": "x"}},
                "tftp": {"root": str(root)},
            },
            lookup=lookup,
        )
    (line,) = err.value.problems
    assert line.endswith('option 224 has no known type; write { type = "ip", value = ... }'), line


def test_leases_and_cluster_sections_are_checked_one_line_each(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, """
[leases]
backend = "mysql"
[cluster]
name = ""
takeover = "2s"
""")
    assert "[leases] backend: 'mysql' is not 'sqlite' or 'postgresql'" in lines
    assert any(line.startswith("[cluster]: servers share leases only through") for line in lines)
    assert any(line.startswith("[cluster] name: ''") for line in lines)
    assert "[cluster] takeover: 2s is under three heartbeats (3s)" in lines
    lines = problems_of(tmp_path, '[leases]\nbackend = "postgresql"\n')
    assert any("needs dsn" in line for line in lines)
    lines = problems_of(tmp_path, '[leases]\ndsn = "postgresql://db/pxed"\n')
    assert any(line.startswith("[leases] dsn: only for backend = 'postgresql'") for line in lines)


def test_a_postgresql_store_and_a_cluster_are_configured(tmp_path: Path, root: Path) -> None:
    cfg = load_config(write(tmp_path, f"""
[server]
interfaces = ["pxs0"]
state_dir = "{tmp_path / 'state'}"
[dhcp]
range = "198.19.1.0-198.19.1.99"
[tftp]
root = "{root}"
[leases]
backend = "postgresql"
dsn = "postgresql://pxed@db1.lab,db2.lab/pxed?target_session_attrs=read-write"
[cluster]
name = "pxed-a"
takeover = "15s"
"""), lookup=lookup)
    assert cfg.leases.backend == "postgresql" and cfg.leases.dsn is not None
    assert (cfg.cluster.name, cfg.cluster.heartbeat, cfg.cluster.takeover) == ("pxed-a", 1, 15)
