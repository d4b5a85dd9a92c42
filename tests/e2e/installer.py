"""Debian's network installer for the e2e tests: debian-installer-12-netboot-amd64, downloaded
once with `apt-get download` (never installed) and its text-mode kernel and initrd unpacked
into the test cache, in the layout of Debian's netboot tree (debian-installer/amd64/...).

The package holds the graphical (gtk) build too, 250 MB unpacked in all; only the two files
the text installer boots from are taken out of it (48 MB), and the .deb is not kept.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pxed.stage import DI_INITRD as INITRD
from pxed.stage import DI_KERNEL as KERNEL

PACKAGE = "debian-installer-12-netboot-amd64"
IMAGES = "usr/lib/debian-installer/images/12/amd64/text"
"""Where the package keeps the text installer's netboot tree; KERNEL and INITRD are relative
to it (as in Debian's netboot.tar.gz), under the names pxed stage gives them in a root."""


@dataclass(frozen=True, slots=True)
class DebianInstaller:
    """The unpacked installer: its netboot tree and the two files in it."""

    tree: Path
    """The netboot tree: ``tree / KERNEL`` and ``tree / INITRD``."""
    version: str
    """The package version they came from."""

    @property
    def kernel(self) -> Path:
        return self.tree / KERNEL

    @property
    def initrd(self) -> Path:
        return self.tree / INITRD


def cached_installer(cache: Path) -> DebianInstaller | None:
    tree = cache / PACKAGE
    version = tree / "VERSION"
    if (tree / KERNEL).is_file() and (tree / INITRD).is_file() and version.is_file():
        return DebianInstaller(tree, version.read_text().strip())
    return None


def fetch_debian_installer(cache: Path, timeout: float = 900) -> DebianInstaller:
    """The installer from ``cache``, or downloaded with apt-get and unpacked into it once.

    Runs `apt-get update` when apt knows no such package (missing package lists). Raises
    RuntimeError (or OSError, subprocess.SubprocessError) when it cannot be had.
    """
    have = cached_installer(cache)
    if have is not None:
        return have
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found: the installer comes from {PACKAGE}")

    def candidate() -> str | None:
        res = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        for line in res.stdout.splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "Candidate" and value and value != "(none)":
                return value
        return None

    version = candidate()
    if version is None:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=timeout)
        version = candidate()
    if version is None:
        raise RuntimeError(f"apt knows no {PACKAGE} (is a Debian bookworm mirror configured?)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pxed-d-i-", dir=cache) as tmp:
        res = subprocess.run(["apt-get", "download", f"{PACKAGE}={version}"], cwd=tmp,
                             capture_output=True, text=True, timeout=timeout)  # fmt: skip
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {PACKAGE} failed: {res.stderr.strip()}")
        members = [f"./{IMAGES}/{KERNEL}", f"./{IMAGES}/{INITRD}"]
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                                stdout=subprocess.PIPE)  # fmt: skip
        tar = subprocess.run(["tar", "-x", "-C", tmp, *members], stdin=dpkg.stdout,
                             capture_output=True, timeout=timeout)  # fmt: skip
        if dpkg.stdout is not None:
            dpkg.stdout.close()
        dpkg.wait(timeout=timeout)
        tree = Path(tmp) / IMAGES
        if tar.returncode != 0 or not (tree / KERNEL).is_file() or not (tree / INITRD).is_file():
            raise RuntimeError(f"no {KERNEL} and {INITRD} in {debs[0].name}: {tar.stderr!r}")
        (tree / "VERSION").write_text(version + "\n")
        dest = cache / PACKAGE
        shutil.rmtree(dest, ignore_errors=True)
        tree.rename(dest)
    found = cached_installer(cache)
    assert found is not None
    return found
