"""A Linux kernel for the lab's machines to boot: one cached before, the host's own, or
Debian's linux-image-amd64 downloaded with apt-get and unpacked (never installed)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path


def host_kernel() -> Path | None:
    """This host's own kernel image when it is readable (most Debian-like hosts have one)."""
    boot = Path("/boot")
    candidates = [boot / f"vmlinuz-{os.uname().release}"]
    with contextlib.suppress(OSError):
        candidates += sorted(boot.glob("vmlinuz-*"), reverse=True)
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.is_file() and os.access(path, os.R_OK) and path.stat().st_size > 1_000_000:
                return path
    return None


def cached_kernel(cache: Path) -> Path | None:
    found = sorted(cache.glob("vmlinuz-*")) if cache.is_dir() else []
    return found[-1] if found else None


def fetch_debian_kernel(
    cache: Path, log: Callable[[str], None] = lambda _: None, timeout: float = 600,
    arch: str = "amd64",
) -> Path:
    """Debian's linux-image-ARCH kernel, downloaded with apt-get and unpacked into cache.

    ``arch`` other than amd64 (arm64) is a foreign architecture here: dpkg must know it
    (``dpkg --add-architecture arm64`` and ``apt-get update``; make deps-debian does that).

    Only boot/vmlinuz-* is extracted from the package (it is not installed). A kernel already
    in the cache is used as is. Needs apt-get and dpkg-deb (a Debian-like host); runs
    `apt-get update` once when the package lists are missing.
    """
    have = cached_kernel(cache)
    if have is not None:
        return have
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(
                f"{tool} not found: the kernel is fetched from Debian's linux-image-amd64 "
                "package; on other hosts pass a kernel file instead"
            )
    cache.mkdir(parents=True, exist_ok=True)

    def package_name() -> str | None:
        res = subprocess.run(["apt-cache", "depends", f"linux-image-{arch}:{arch}"],
                             capture_output=True, text=True, timeout=60)
        for line in res.stdout.splitlines():
            m = re.match(r"\s*Depends:\s*(linux-image-[^\s:]+)", line)
            if m:
                return f"{m.group(1)}:{arch}"
        return None

    pkg = package_name()
    if pkg is None:
        log("apt-get update (package lists are missing)")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=timeout)
        pkg = package_name()
    if pkg is None:
        raise RuntimeError(f"apt-cache knows no linux-image-{arch}:{arch} (is a Debian mirror "
                           "configured, and the architecture added with dpkg?)")
    with tempfile.TemporaryDirectory(prefix="pxed-kernel-", dir=cache) as tmp:
        log(f"apt-get download {pkg}")
        res = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True,
                             text=True, timeout=timeout)
        debs = list(Path(tmp).glob("*.deb"))
        if res.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {pkg} failed: {res.stderr.strip()}")
        log(f"unpacking boot/vmlinuz-* from {debs[0].name}")
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                                stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*"],
                             stdin=dpkg.stdout, capture_output=True, timeout=timeout)
        if dpkg.stdout is not None:
            dpkg.stdout.close()
        dpkg.wait(timeout=timeout)
        kernels = sorted((Path(tmp) / "boot").glob("vmlinuz-*"))
        if tar.returncode != 0 or not kernels:
            raise RuntimeError(f"no boot/vmlinuz-* in {debs[0].name}: {tar.stderr!r}")
        dest = cache / kernels[-1].name
        shutil.move(str(kernels[-1]), dest)
    return dest


def find_kernel(cache: Path, log: Callable[[str], None] = lambda _: None) -> Path:
    """A kernel to boot: one cached before, the host's own, else Debian's (downloaded)."""
    return cached_kernel(cache) or host_kernel() or fetch_debian_kernel(cache, log)
