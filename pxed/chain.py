"""The signed UEFI boot chain for Secure Boot PCs: shim -> GRUB -> a signed kernel.

What each stage asks the server for, as Debian ships them (shim-signed, grub-efi-amd64-signed):

- the firmware loads shim (``shimx64.efi``; Microsoft's UEFI CA signed it, so firmware with
  Secure Boot on runs it, and so does firmware with it off);
- shim loads ``grubx64.efi`` from the directory it came from (Debian's network GRUB image,
  ``grubnetx64.efi.signed``, signed by Debian, whose key shim carries);
- that GRUB was built with the prefix ``/grub``: it reads ``grub/grub.cfg`` at the root;
- GRUB asks shim to verify the kernel (Debian's kernels are signed) and boots it.

One home for those names: `pxed stage --secure-boot` writes them, the configuration's
defaults pick shim when the chain is there, and `pxed check` says which link is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

SHIM = "shimx64.efi"
GRUB = "grubx64.efi"
"""shim loads this name, beside itself."""
SHIM_ARM64 = "shimaa64.efi"
GRUB_ARM64 = "grubaa64.efi"
"""The arm64 chain (shim-signed and grub-efi-arm64-signed for arm64): shimaa64 loads
grubaa64.efi beside itself; its GRUB has the same prefix, so both read one grub/grub.cfg."""
GRUB_CFG = "grub/grub.cfg"
"""Where Debian's network GRUB reads its menu (its built-in prefix is /grub)."""

_LOADS = re.compile(r"(?:^|[{;])\s*(linux|linuxefi|initrd|initrdefi)\s+([^;}\n]+)")
"""A command that loads files, at a line's start or after ``{`` or ``;``."""
_DEVICE = re.compile(r"^\([^)]*\)")


def is_shim(name: str) -> bool:
    """A boot file that is shim (shimx64.efi, or a copy named like one: bootx64.efi is not)."""
    return PurePosixPath(name).name.lower().startswith("shim")


def grub_for(shim: str) -> str:
    """The GRUB image shim loads: ``grubx64.efi`` (``grubaa64.efi`` for shimaa64) in shim's
    own directory."""
    path = PurePosixPath(shim)
    grub = GRUB_ARM64 if "aa64" in path.name.lower() else GRUB
    return grub if str(path.parent) == "." else f"{path.parent}/{grub}"


def files_named(grub_cfg: str) -> list[str]:
    """Root-relative files a grub.cfg loads with linux/initrd (plain names and paths on
    the boot server; ``(tftp,ADDR)/`` and ``$root`` forms too). Names with other GRUB
    variables in them cannot be checked and are left out."""
    names: list[str] = []
    for line in grub_cfg.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in _LOADS.finditer(line):
            args = m.group(2).split()
            # initrd takes several files; linux one, then the kernel's arguments.
            for arg in args if m.group(1).startswith("initrd") else args[:1]:
                path = _DEVICE.sub("", arg.strip("'\""))
                if "$" in path or not path:
                    continue
                names.append(path.lstrip("/"))
    return names


def chain_problems(shim: str, served: Callable[[str], str | None],
                   read: Callable[[str], str | None]) -> list[str]:  # fmt: skip
    """What is missing for ``shim`` to boot a kernel, one line each (empty when complete).

    ``served(name)``: why the server would not serve ``name`` under its root, or None;
    ``read(name)``: a served text file's contents, or None."""
    problems: list[str] = []
    grub = grub_for(shim)
    why = served(grub)
    if why is not None:
        problems.append(f"shim ({shim}) loads {grub} from its own directory: {why}")
        return problems
    why = served(GRUB_CFG)
    if why is not None:
        problems.append(f"GRUB ({grub}) reads {GRUB_CFG}: {why}")
        return problems
    text = read(GRUB_CFG) or ""
    for name in files_named(text):
        why = served(name)
        if why is not None:
            problems.append(f"{GRUB_CFG} boots {name}: {why}")
    return problems
