"""`pxed stage`: finding sources, deciding per file, the menu and script, and whole runs.

Every run here stages from fake source directories into a tmp dir; downloads use file:// URLs
(no sockets in unit tests).
"""

from __future__ import annotations

import io
import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pxed import cli, stage
from pxed.stage import (
    MANIFEST,
    Action,
    BootMenu,
    KernelEntry,
    SourceSpec,
    StageError,
    StageOptions,
    decide,
    find_source,
    render_boot_ipxe,
    render_pxelinux_menu,
)

SYSLINUX_FILES = ("pxelinux.0", "ldlinux.c32", "menu.c32", "libutil.c32")
IPXE_FILES = ("undionly.kpxe", "ipxe.efi")


@pytest.fixture
def distro(tmp_path: Path) -> Path:
    """A fake distribution: syslinux and iPXE files in their own directories."""
    d = tmp_path / "distro"
    (d / "syslinux").mkdir(parents=True)
    (d / "ipxe").mkdir()
    for name in SYSLINUX_FILES:
        (d / "syslinux" / name).write_bytes(f"fake {name}".encode())
    for name in IPXE_FILES:
        (d / "ipxe" / name).write_bytes(f"fake {name}".encode())
    (d / "debian-installer").mkdir()
    for name in ("linux", "initrd.gz"):
        (d / "debian-installer" / name).write_bytes(f"fake d-i {name}".encode())
    return d


def sources_in(distro: Path) -> list[SourceSpec]:
    """The real source table, pointed at the fake distribution only."""
    out = []
    for spec in stage.SOURCES:
        sub = {"ipxe": "ipxe", "debian-installer-12-netboot-amd64": "debian-installer"}.get(
            spec.package, "syslinux")
        out.append(replace(spec, dirs=(str(distro / sub),)))
    return out


@pytest.fixture
def netboot(tmp_path: Path) -> Path:
    d = tmp_path / "netboot"
    d.mkdir()
    (d / "netboot.xyz.lkrn").write_bytes(b"lkrn" * 1000)
    (d / "netboot.xyz.efi").write_bytes(b"efi!" * 1000)
    return d


def run(distro: Path, **kw: object) -> stage.Report:
    opts = StageOptions(**kw)  # type: ignore[arg-type]
    return stage.run(opts, io.StringIO(), package_files=None, sources=sources_in(distro))


# -- deciding per file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "new", "recorded", "force", "expected"),
    [
        (None, "a", None, False, Action.NEW),
        ("a", "a", None, False, Action.SAME),
        ("a", "a", "z", False, Action.SAME),
        ("old", "new", "old", False, Action.UPDATE),  # ours, unedited: update it
        ("edited", "new", "old", False, Action.CONFLICT),  # edited since we wrote it
        ("theirs", "new", None, False, Action.CONFLICT),  # never ours
        ("edited", "new", "old", True, Action.UPDATE),
        (None, None, None, False, Action.NEW),  # download target absent
        ("x", None, "x", False, Action.KEEP),  # downloaded before: not again
        ("x", None, None, False, Action.KEEP),  # put there by hand: kept
        ("x", None, "x", True, Action.UPDATE),
    ],
)
def test_decide(
    existing: str | None, new: str | None, recorded: str | None, force: bool, expected: Action
) -> None:
    assert decide(existing, new, recorded, force) is expected


# -- finding sources ---------------------------------------------------------------------------


def test_find_source_prefers_extra_dirs_then_known_dirs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "pxelinux.0").write_bytes(b"x")
    spec = SourceSpec("pxelinux.0", ("pxelinux.0",), (str(b),), "pxelinux", True, "")
    assert find_source(spec, Path.is_file) == b / "pxelinux.0"
    assert find_source(spec, Path.is_file, [a]) == a / "pxelinux.0"


def test_find_source_other_distribution_names(tmp_path: Path) -> None:
    (tmp_path / "ipxe-x86_64.efi").write_bytes(b"x")  # Fedora's name for ipxe.efi
    spec = next(s for s in stage.SOURCES if s.dest == "ipxe.efi")
    spec = replace(spec, dirs=(str(tmp_path),))
    assert find_source(spec, Path.is_file) == tmp_path / "ipxe-x86_64.efi"


def test_find_source_falls_back_to_package_listing_and_prefers_bios(tmp_path: Path) -> None:
    efi = tmp_path / "modules" / "efi64" / "ldlinux.c32"
    bios = tmp_path / "modules" / "bios" / "ldlinux.c32"
    for p in (efi, bios):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    spec = SourceSpec("ldlinux.c32", ("ldlinux.c32",), (str(tmp_path / "nowhere"),),
                      "syslinux-common", True, "")
    listed: dict[str, list[str]] = {"syslinux-common": [str(efi), str(bios), "/usr/share/doc"]}
    assert find_source(spec, Path.is_file, (), lambda pkg: listed.get(pkg, [])) == bios
    assert find_source(spec, Path.is_file, (), lambda pkg: []) is None


def test_known_locations_cover_debian_and_other_distributions() -> None:
    by_dest = {s.dest: s for s in stage.SOURCES}
    assert "/usr/lib/PXELINUX" in by_dest["pxelinux.0"].dirs
    assert "/usr/share/syslinux" in by_dest["pxelinux.0"].dirs
    assert "/usr/lib/syslinux/modules/bios" in by_dest["ldlinux.c32"].dirs
    assert by_dest["pxelinux.0"].package == "pxelinux"
    assert by_dest["ldlinux.c32"].package == "syslinux-common"
    assert by_dest["ipxe.efi"].package == "ipxe"
    assert by_dest["pxelinux.0"].required and by_dest["ldlinux.c32"].required
    assert not by_dest["ipxe.efi"].required


# -- menu and script ---------------------------------------------------------------------------


def test_menu_boots_netboot_xyz_by_default() -> None:
    text = render_pxelinux_menu(BootMenu(netboot_bios=True))
    assert "UI menu.c32" in text
    assert "DEFAULT netbootxyz" in text
    assert "MENU LABEL Boot netboot.xyz" in text
    assert "KERNEL netboot.xyz.lkrn" in text
    assert "SERIAL" not in text


def test_menu_with_kernel_serial_and_no_menu_module() -> None:
    menu = BootMenu(netboot_bios=True, kernel="vmlinuz", initrd="initrd.img",
                    append="console=ttyS0", ui_menu=False, serial=True, timeout=10)
    text = render_pxelinux_menu(menu)
    lines = text.splitlines()
    assert lines[1] == "SERIAL 0 115200"  # SERIAL must come first to take effect early
    assert "PROMPT 1" in lines and "UI menu.c32" not in text
    assert "DEFAULT linux" in lines and "TIMEOUT 10" in lines
    assert "  KERNEL vmlinuz" in lines and "  INITRD initrd.img" in lines
    assert "  APPEND console=ttyS0" in lines
    assert "MENU LABEL Boot netboot.xyz" in text  # still offered as the second entry


def test_boot_ipxe_chains_netboot_xyz_per_platform() -> None:
    text = render_boot_ipxe(BootMenu(netboot_bios=True, netboot_efi=True))
    assert text.startswith("#!ipxe\n")
    assert "iseq ${platform} efi && chain --autofree netboot.xyz.efi ||" in text
    assert "iseq ${platform} pcbios && chain --autofree netboot.xyz.lkrn ||" in text


def test_boot_ipxe_kernel_with_initrd() -> None:
    text = render_boot_ipxe(BootMenu(kernel="vmlinuz", initrd="initrd.img",
                                     append="console=ttyS0"))
    assert "kernel vmlinuz initrd=initrd.img console=ttyS0" in text
    assert "initrd initrd.img" in text
    assert text.rstrip().endswith("boot")


def test_boot_ipxe_with_nothing_staged_says_so() -> None:
    text = render_boot_ipxe(BootMenu())
    assert "nothing staged" in text and "exit 1" in text


# -- whole runs --------------------------------------------------------------------------------


def test_stage_from_local_files(tmp_path: Path, distro: Path, netboot: Path) -> None:
    root = tmp_path / "srv" / "tftp"
    report = run(distro, root=root, netboot_xyz=(netboot,))
    for name in (*SYSLINUX_FILES, *IPXE_FILES, "netboot.xyz.lkrn", "netboot.xyz.efi"):
        assert (root / name).is_file(), name
    assert (root / "pxelinux.0").read_bytes() == b"fake pxelinux.0"
    menu = (root / "pxelinux.cfg" / "default").read_text()
    assert "MENU LABEL Boot netboot.xyz" in menu and "UI menu.c32" in menu
    script = (root / "boot.ipxe").read_text()
    assert "netboot.xyz.efi" in script and "netboot.xyz.lkrn" in script
    # It says what it did, file by file.
    text = "\n".join(report.done)
    for name in ("pxelinux.0", "ldlinux.c32", "ipxe.efi", "netboot.xyz.lkrn", "boot.ipxe",
                 "pxelinux.cfg/default"):
        assert any(name in line and "added" in line for line in report.done), text
    manifest = json.loads((root / MANIFEST).read_text())
    assert set(manifest["files"]) >= {"pxelinux.0", "boot.ipxe", "netboot.xyz.efi"}

    again = run(distro, root=root, netboot_xyz=(netboot,))
    assert all("unchanged" in line for line in again.done), again.done


def test_stage_writes_profiles_pxed_accepts(tmp_path: Path, distro: Path, netboot: Path) -> None:
    from pxed.config.load import build_config
    from pxed.config.parse import merge

    root = tmp_path / "srv" / "tftp"
    profiles = tmp_path / "etc" / "profiles.toml"
    report = run(distro, root=root, netboot_xyz=(netboot,), profiles=profiles)
    assert report.profiles == profiles
    assert (root / "debian-installer/amd64/initrd.gz").read_bytes() == b"fake d-i initrd.gz"
    text = profiles.read_text()
    assert 'name = "debian-install"' in text and 'name = "netboot-xyz"' in text
    data = merge(tomllib.loads(text), {"tftp": {"root": str(root)}, "dhcp": {"enabled": False}})
    config = build_config(data, lookup=lambda name: None, base=profiles.parent)
    assert [p.name for p in config.profiles] == ["debian-install", "netboot-xyz"]
    with pytest.raises(stage.StageError, match="exists; not overwritten"):
        run(distro, root=root, netboot_xyz=(netboot,), profiles=profiles)
    with pytest.raises(stage.StageError, match="under the root, which is served"):
        run(distro, root=root, netboot_xyz=(netboot,), profiles=root / "p.toml")


def test_profiles_name_only_what_the_root_holds() -> None:
    text = stage.render_profiles(netboot_bios=False, debian_installer=False)
    assert "[[profile]]" not in text


def test_edited_files_are_refused_without_force(
    tmp_path: Path, distro: Path, netboot: Path
) -> None:
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz=(netboot,))
    menu = root / "pxelinux.cfg" / "default"
    menu.write_text(menu.read_text() + "# my edit\n")
    (root / "ldlinux.c32").write_bytes(b"hand-built")
    (distro / "syslinux" / "pxelinux.0").write_bytes(b"newer pxelinux")  # a package upgrade
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    with pytest.raises(StageError) as err:
        run(distro, root=root, netboot_xyz=(netboot,), kernel=None, serial=True)
    problems = "\n".join(err.value.problems)
    assert "pxelinux.cfg/default: edited since pxed stage wrote it" in problems
    assert "ldlinux.c32: edited since pxed stage wrote it" in problems
    assert "--force" in problems
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing was changed

    report = run(distro, root=root, netboot_xyz=(netboot,), serial=True, force=True)
    assert "SERIAL 0 115200" in menu.read_text()
    assert (root / "ldlinux.c32").read_bytes() == b"fake ldlinux.c32"
    assert (root / "pxelinux.0").read_bytes() == b"newer pxelinux"
    assert any("updated" in line and "pxelinux.cfg/default" in line for line in report.done)


def test_unedited_files_follow_package_upgrades(tmp_path: Path, distro: Path) -> None:
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz_url=None)
    (distro / "syslinux" / "pxelinux.0").write_bytes(b"newer pxelinux")
    report = run(distro, root=root, netboot_xyz_url=None)
    assert (root / "pxelinux.0").read_bytes() == b"newer pxelinux"
    assert any(line.split()[:2] == ["updated", "pxelinux.0"] for line in report.done)


def test_files_not_written_by_stage_are_refused(tmp_path: Path, distro: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "boot.ipxe").write_text("#!ipxe\nshell\n")
    with pytest.raises(StageError) as err:
        run(distro, root=root, netboot_xyz_url=None)
    assert any("boot.ipxe: not written by pxed stage" in p for p in err.value.problems)
    assert (root / "boot.ipxe").read_text() == "#!ipxe\nshell\n"
    assert not (root / "pxelinux.0").exists()


def test_missing_required_source_names_the_package(tmp_path: Path, distro: Path) -> None:
    (distro / "syslinux" / "pxelinux.0").unlink()
    (distro / "syslinux" / "ldlinux.c32").unlink()
    root = tmp_path / "root"
    with pytest.raises(StageError) as err:
        run(distro, root=root, netboot_xyz_url=None)
    problems = "\n".join(err.value.problems)
    assert "pxelinux.0: not found" in problems and "apt-get install pxelinux" in problems
    assert "ldlinux.c32: not found" in problems and "syslinux-common" in problems
    assert not root.exists()  # nothing written


def test_missing_optional_ipxe_is_a_note(tmp_path: Path, distro: Path) -> None:
    for name in IPXE_FILES:
        (distro / "ipxe" / name).unlink()
    root = tmp_path / "root"
    report = run(distro, root=root, netboot_xyz_url=None)
    assert report.ok and (root / "pxelinux.0").is_file() and not (root / "ipxe.efi").exists()
    assert any("ipxe.efi" in n and "apt-get install ipxe" in n for n in report.notes)
    assert any(line.split()[:2] == ["missing", "ipxe.efi"] for line in report.done)
    assert any("UEFI" in line for line in stage.summary_lines(report))


def test_menu_without_menu_module_uses_a_prompt(tmp_path: Path, distro: Path) -> None:
    (distro / "syslinux" / "menu.c32").unlink()
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz_url=None)
    menu = (root / "pxelinux.cfg" / "default").read_text()
    assert "UI menu.c32" not in menu and "PROMPT 1" in menu


def test_download_from_url_then_kept(tmp_path: Path, distro: Path, netboot: Path) -> None:
    root = tmp_path / "root"
    url = netboot.as_uri() + "/"
    report = run(distro, root=root, netboot_xyz_url=url)
    assert (root / "netboot.xyz.lkrn").read_bytes() == (netboot / "netboot.xyz.lkrn").read_bytes()
    assert any(line.split()[:2] == ["downloaded", "netboot.xyz.efi"] for line in report.done)
    assert not list(root.glob("*.part"))
    manifest = json.loads((root / MANIFEST).read_text())["files"]
    assert manifest["netboot.xyz.lkrn"]["source"] == url + "netboot.xyz.lkrn"

    again = run(distro, root=root, netboot_xyz_url=url)
    assert any(line.split()[:2] == ["kept", "netboot.xyz.lkrn"] for line in again.done)
    (netboot / "netboot.xyz.lkrn").write_bytes(b"new release")
    run(distro, root=root, netboot_xyz_url=url, force=True)
    assert (root / "netboot.xyz.lkrn").read_bytes() == b"new release"


def test_offline_download_fails_cleanly(tmp_path: Path, distro: Path) -> None:
    root = tmp_path / "root"
    url = (tmp_path / "no-such-mirror").as_uri() + "/"
    with pytest.raises(StageError) as err:
        run(distro, root=root, netboot_xyz_url=url)
    problems = "\n".join(err.value.problems)
    assert "cannot download" in problems and "--netboot-xyz FILE" in problems
    assert "--no-netboot-xyz" in problems
    assert not root.exists()


def test_local_netboot_file_by_suffix(tmp_path: Path, distro: Path, netboot: Path) -> None:
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz=(netboot / "netboot.xyz.efi",))
    assert (root / "netboot.xyz.efi").is_file() and not (root / "netboot.xyz.lkrn").exists()
    menu = (root / "pxelinux.cfg" / "default").read_text()
    assert "netboot.xyz.lkrn" not in menu  # no BIOS build staged: not offered
    assert "netboot.xyz.efi" in (root / "boot.ipxe").read_text()
    with pytest.raises(StageError):
        run(distro, root=root, netboot_xyz=(tmp_path / "missing.lkrn",))


def test_kernel_entry(tmp_path: Path, distro: Path) -> None:
    kernel = tmp_path / "vmlinuz-6.1"
    kernel.write_bytes(b"bzImage")
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz_url=None, serial=True, menu_timeout=10,
        kernel=KernelEntry(kernel, None, "console=ttyS0"))
    assert (root / "vmlinuz").read_bytes() == b"bzImage"
    menu = (root / "pxelinux.cfg" / "default").read_text()
    assert "DEFAULT linux" in menu and "APPEND console=ttyS0" in menu
    assert "kernel vmlinuz console=ttyS0" in (root / "boot.ipxe").read_text()


def test_dry_run_writes_nothing(tmp_path: Path, distro: Path) -> None:
    root = tmp_path / "root"
    report = run(distro, root=root, netboot_xyz_url=None, dry_run=True)
    assert not root.exists()
    assert any(line.split()[:3] == ["would", "add", "pxelinux.0"] for line in report.done)


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = stage.Progress("netboot.xyz.lkrn", 2_000_000, out, width=10)
    bar.update(1_000_000)
    bar.finish(2_000_000)
    text = out.getvalue()
    assert "\r" in text and " 50%" in text and "100%" in text and text.endswith("\n")
    quiet = io.StringIO()
    stage.Progress("x", 10, quiet).update(5)
    assert quiet.getvalue() == ""  # no bar in logs and pipes


# -- command line ------------------------------------------------------------------------------


def test_cli_stage(tmp_path: Path, distro: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    args = ["stage", str(root), "--no-netboot-xyz",
            "--search-dir", str(distro / "syslinux"), "--search-dir", str(distro / "ipxe")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"staging {root}" in out
    assert "added" in out and "pxelinux.0" in out and str(distro / "syslinux") in out
    assert f"pxed --iface IFACE --tftp-root {root}" in out

    (root / "boot.ipxe").write_text("#!ipxe\n")
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "boot.ipxe: edited since pxed stage wrote it" in err and "nothing was changed" in err
    assert cli.main([*args, "--force"]) == 0


def test_cli_initrd_needs_kernel(tmp_path: Path) -> None:
    assert cli.main(["stage", str(tmp_path), "--initrd", str(tmp_path / "x")]) == 2


def test_daemon_defaults_point_at_a_staged_root(tmp_path: Path, distro: Path) -> None:
    """`pxed --iface eth0` after `pxed stage`: the defaults name exactly what stage writes."""
    from ipaddress import IPv4Interface

    from pxed.config import TftpConfig
    from pxed.config.load import load_config
    from pxed.netinfo import InterfaceInfo

    assert TftpConfig().root == stage.DEFAULT_ROOT
    root = tmp_path / "root"
    run(distro, root=root, netboot_xyz_url=None)
    eth0 = InterfaceInfo("eth0", "02:00:00:00:00:01", (IPv4Interface("198.19.0.1/16"),), 1500)
    notes: list[str] = []
    cfg = load_config(
        None,
        {"server": {"interfaces": ["eth0"], "mode": "dhcp"}, "tftp": {"root": str(root)}},
        lookup=lambda name: eth0 if name == "eth0" else None,
        notes=notes,
    )
    assert (cfg.boot.bios, cfg.boot.uefi_x64, cfg.boot.ipxe) == (
        "pxelinux.0", "ipxe.efi", "boot.ipxe")
    assert not [n for n in notes if "not offered" in n], notes
