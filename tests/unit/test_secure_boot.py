"""The signed UEFI chain (pxed.chain): `pxed stage --secure-boot` writes it, the defaults give
it to UEFI x64 machines when it is complete, and `pxed check` names the missing link."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pxed import chain, stage
from pxed.config.check import check
from pxed.config.load import build_config
from pxed.errors import ConfigError
from pxed.stage import BootMenu, KernelEntry, StageOptions, render_grub_cfg


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    """Where the packages would put the signed files (as --search-dir)."""
    d = tmp_path / "signed"
    d.mkdir()
    (d / "shimx64.efi.signed").write_bytes(b"shim")
    (d / "grubnetx64.efi.signed").write_bytes(b"grub")
    return d


def staged(tmp_path: Path, signed: Path, **kw: object) -> Path:
    kernel = tmp_path / "vmlinuz-src"
    kernel.write_bytes(b"kernel")
    root = tmp_path / "root"
    opts = StageOptions(root=root, netboot_xyz_url=None, search_dirs=(signed,),
                        kernel=KernelEntry(kernel, None, "console=ttyS0"), secure_boot=True,
                        **kw)  # type: ignore[arg-type]  # fmt: skip
    stage.run(opts, io.StringIO(), package_files=None)
    return root


def config_for(root: Path, boot: dict[str, object] | None = None) -> object:
    data: dict[str, object] = {"tftp": {"root": str(root)}, "dhcp": {"enabled": False}}
    if boot is not None:
        data["boot"] = boot
    return build_config(data, lookup=lambda name: None)


def test_stage_secure_boot_writes_the_chain(tmp_path: Path, signed: Path) -> None:
    root = staged(tmp_path, signed)
    assert (root / chain.SHIM).read_bytes() == b"shim"
    assert (root / chain.GRUB).read_bytes() == b"grub"
    cfg = (root / chain.GRUB_CFG).read_text()
    assert "linux /vmlinuz console=ttyS0" in cfg and "set default=linux" in cfg
    # A machine's rendered menu first: the name pxed serves it under (pxed.profiles.paths).
    assert 'configfile "$prefix/grub.cfg-01-$m1-$m2-$m3-$m4-$m5-$m6"' in cfg


def test_without_secure_boot_no_chain_is_staged(tmp_path: Path, signed: Path) -> None:
    root = tmp_path / "root"
    opts = StageOptions(root=root, netboot_xyz_url=None, search_dirs=(signed,))
    stage.run(opts, io.StringIO(), package_files=None)
    assert not (root / chain.SHIM).exists() and not (root / chain.GRUB_CFG).exists()


def test_grub_menu_offers_netboot_xyz_only_as_unsigned() -> None:
    cfg = render_grub_cfg(BootMenu(netboot_efi=True))
    assert "chainloader /netboot.xyz.efi" in cfg and "Secure Boot off" in cfg
    assert "set default=local" in cfg and "linux " not in cfg


def test_defaults_give_uefi_x64_shim_when_the_chain_is_staged(
    tmp_path: Path, signed: Path
) -> None:
    root = staged(tmp_path, signed)
    config = check(config_for(root))  # type: ignore[arg-type]
    assert config.boot.uefi_x64 == chain.SHIM
    # Said by the user, it stays theirs.
    (root / "ipxe.efi").write_bytes(b"ipxe")
    mine = check(config_for(root, {"uefi_x64": "ipxe.efi"}))  # type: ignore[arg-type]
    assert mine.boot.uefi_x64 == "ipxe.efi"


def test_an_incomplete_chain_is_not_offered_by_default(tmp_path: Path, signed: Path) -> None:
    root = staged(tmp_path, signed)
    (root / chain.GRUB).unlink()
    notes: list[str] = []
    config = check(config_for(root), notes=notes)  # type: ignore[arg-type]
    assert config.boot.uefi_x64 != chain.SHIM
    assert any("grubx64.efi" in n and "not offered" in n for n in notes), notes


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        (chain.GRUB, "shim (shimx64.efi) loads grubx64.efi from its own directory"),
        (chain.GRUB_CFG, "GRUB (grubx64.efi) reads grub/grub.cfg"),
        ("vmlinuz", "grub/grub.cfg boots vmlinuz"),
    ],
)
def test_check_names_the_missing_link(
    tmp_path: Path, signed: Path, remove: str, expected: str
) -> None:
    root = staged(tmp_path, signed)
    (root / remove).unlink()
    with pytest.raises(ConfigError) as err:
        check(config_for(root, {"uefi_x64": chain.SHIM}))  # type: ignore[arg-type]
    lines = [p for p in err.value.problems if "[boot] uefi_x64" in p]
    assert len(lines) == 1 and expected in lines[0], err.value.problems


def test_files_named_reads_linux_and_initrd_lines() -> None:
    cfg = """
menuentry a {
  linux /vmlinuz console=ttyS0 root=/dev/sda1
  initrd /initrd.img (tftp,198.18.0.1)/extra.img
}
menuentry b { linuxefi (tftp)/k2 quiet }
menuentry c { linux $prefix/k3 }
"""
    assert chain.files_named(cfg) == ["vmlinuz", "initrd.img", "extra.img", "k2"]


def test_grub_is_beside_shim() -> None:
    assert chain.grub_for("shimx64.efi") == "grubx64.efi"
    assert chain.grub_for("efi/shimx64.efi") == "efi/grubx64.efi"
    assert chain.is_shim("efi/shimx64.efi") and not chain.is_shim("ipxe.efi")


def test_arm64_grub_is_beside_arm64_shim() -> None:
    assert chain.grub_for(chain.SHIM_ARM64) == chain.GRUB_ARM64
    assert chain.grub_for("arm64/shimaa64.efi") == "arm64/grubaa64.efi"


@pytest.fixture
def signed_arm64(signed: Path) -> Path:
    (signed / "shimaa64.efi.signed").write_bytes(b"shim-aa64")
    (signed / "grubnetaa64.efi.signed").write_bytes(b"grub-aa64")
    return signed


def test_stage_arm64_puts_its_chain_beside_x64(tmp_path: Path, signed_arm64: Path) -> None:
    root = staged(tmp_path, signed_arm64, arm64=True)
    assert (root / chain.SHIM_ARM64).read_bytes() == b"shim-aa64"
    assert (root / chain.GRUB_ARM64).read_bytes() == b"grub-aa64"
    assert (root / chain.SHIM).read_bytes() == b"shim" and (root / "pxelinux.0").is_file()
    cfg = (root / chain.GRUB_CFG).read_text()
    # One grub.cfg for both GRUBs: the x86 kernel only where GRUB runs on x86_64; arm64
    # machines get their rendered menu (a profile) first, else the local disk.
    head, x86 = cfg.split('if [ "$grub_cpu" = "x86_64" ]; then', 1)
    assert "set default=local" in head and "linux /vmlinuz" not in head
    assert "set default=linux" in x86.split("fi\n")[0] and "linux /vmlinuz" in x86
    assert cfg.index("configfile") < cfg.index("if [")


def test_defaults_give_arm64_machines_arm64_shim(tmp_path: Path, signed_arm64: Path) -> None:
    root = staged(tmp_path, signed_arm64, arm64=True)
    config = check(config_for(root))  # type: ignore[arg-type]
    assert config.boot.uefi_arm64 == chain.SHIM_ARM64 and config.boot.uefi_x64 == chain.SHIM
    (root / chain.GRUB_ARM64).unlink()
    notes: list[str] = []
    config = check(config_for(root), notes=notes)  # type: ignore[arg-type]
    assert config.boot.uefi_arm64 is None
    assert any("grubaa64.efi" in n and "not offered" in n for n in notes), notes


def test_stage_refuses_an_arm64_kernel_for_the_x86_menus(tmp_path: Path, signed: Path) -> None:
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"MZ" + bytes(54) + b"ARM\x64" + bytes(64))
    opts = StageOptions(root=tmp_path / "root", netboot_xyz_url=None, search_dirs=(signed,),
                        kernel=KernelEntry(kernel))  # fmt: skip
    with pytest.raises(stage.StageError, match="an arm64 kernel"):
        stage.run(opts, io.StringIO(), package_files=None)


def test_arm64_fetch_failure_says_how_to_add_the_architecture(tmp_path: Path) -> None:
    if stage.shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    with pytest.raises(stage.StageError) as err:
        stage.unpack_packages(["pxed-no-such-package:arm64"], tmp_path, io.StringIO())
    assert any("dpkg --add-architecture arm64" in p for p in err.value.problems)
