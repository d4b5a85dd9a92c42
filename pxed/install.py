"""`pxed install-unit`: the systemd unit and the example configuration, from the package.

    pxed install-unit [--prefix /] [--bin PATH] [--config PATH] [--force] [--print]

Writes PREFIX/etc/systemd/system/pxed.service, its ExecStartPre/ExecStart naming the pxed
that runs this command (or --bin) and the configuration file (--config, default
/etc/pxed/pxed.toml), and copies the example configuration there unless a file is there
already. Nothing else is made. The unit's first line records the SHA-256 of what was
written: a unit written by an earlier pxed is replaced (an upgrade), one edited since, or
not written by pxed at all, is left alone unless --force.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pxed import __version__

UNIT_NAME = "pxed.service"
UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/pxed/pxed.toml")
SHIPPED_BIN = "/usr/local/bin/pxed"
"""The paths as systemd/pxed.service has them (replaced when the unit is rendered)."""
SHIPPED_CONFIG = "/etc/pxed/pxed.toml"
MARK = "# Written by pxed install-unit"
HIDDEN = {
    Path("/home"): "ProtectHome=yes",
    Path("/root"): "ProtectHome=yes",
    Path("/run/user"): "ProtectHome=yes",
    Path("/tmp"): "PrivateTmp=yes",
    Path("/var/tmp"): "PrivateTmp=yes",
}
"""Where the unit's sandbox cannot see a pxed installed there."""


def shipped(name: str) -> str:
    """A file of pxed/data (the unit, the example configuration)."""
    return resources.files("pxed").joinpath("data", name).read_text()


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def render(bin_path: str, config: Path) -> str:
    """The unit for this pxed and configuration file, with its recording first line."""
    for value in (bin_path, str(config)):
        if any(c.isspace() for c in value) or "%" in value:
            raise ValueError(f"{value!r}: a path in a unit may hold no spaces or '%'")
    body = shipped(UNIT_NAME).replace(SHIPPED_BIN, bin_path).replace(SHIPPED_CONFIG, str(config))
    return f"{MARK} (pxed {__version__}; sha256 {_digest(body)})\n{body}"


def written_by_us(text: str) -> bool:
    """Whether ``text`` is a unit install-unit wrote and nobody edited since."""
    first, _, body = text.partition("\n")
    return first.startswith(MARK) and first.endswith(f"sha256 {_digest(body)})")


def running_pxed(argv0: str | None = None) -> str | None:
    """The pxed command running this (the console script), else the one on PATH."""
    arg = sys.argv[0] if argv0 is None else argv0
    path = Path(arg)
    if path.name == "pxed" and path.is_file() and os.access(path, os.X_OK):
        return str(path.absolute())
    return shutil.which("pxed")


def _under_prefix(prefix: Path, path: Path) -> Path:
    return prefix / path.relative_to(path.anchor)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pxed install-unit",
        description="Install the systemd unit (and the example configuration unless one is "
        "there) for this pxed.",
    )
    parser.add_argument("--prefix", type=Path, default=Path("/"),
                        help="install under this directory (default /)")  # fmt: skip
    parser.add_argument("--bin", metavar="PATH",
                        help="the pxed the unit runs (default: this one)")  # fmt: skip
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="PATH",
                        help=f"the file the unit names (default {DEFAULT_CONFIG})")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="replace a unit that was edited or not written by pxed")  # fmt: skip
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="write the unit to stdout; install nothing")  # fmt: skip
    args = parser.parse_args(list(argv))

    bin_path = args.bin or running_pxed()
    if bin_path is None:
        print("pxed: no pxed command found (run the installed `pxed`, or give --bin PATH)",
              file=sys.stderr)  # fmt: skip
        return 1
    if not Path(bin_path).is_absolute() or not args.config.is_absolute():
        print("pxed: --bin and --config must be absolute paths", file=sys.stderr)
        return 1
    try:
        unit = render(bin_path, args.config)
    except ValueError as exc:
        print(f"pxed: {exc}", file=sys.stderr)
        return 1
    if args.print_only:
        sys.stdout.write(unit)
        return 0

    unit_path = _under_prefix(args.prefix, UNIT_DIR / UNIT_NAME)
    config_path = _under_prefix(args.prefix, args.config)
    try:
        old = unit_path.read_text() if unit_path.exists() else None
        if old is not None and old != unit and not written_by_us(old) and not args.force:
            print(
                f"pxed: {unit_path} was edited or not written by pxed install-unit; left as "
                f"it is (compare: pxed install-unit --print | diff {unit_path} -; --force "
                "replaces it)",
                file=sys.stderr,
            )
            return 1
        lines: list[str] = []
        if old == unit:
            lines.append(f"unchanged {unit_path}")
        else:
            unit_path.parent.mkdir(parents=True, exist_ok=True)
            _write(unit_path, unit)
            lines.append(f"wrote {unit_path} (ExecStart={bin_path} --config {args.config})")
        if config_path.exists():
            lines.append(f"kept {config_path} (already there)")
        else:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            _write(config_path, shipped("pxed.toml"))
            lines.append(f"wrote {config_path} (the example: set [server] interfaces and "
                         "[dhcp] range)")  # fmt: skip
    except OSError as exc:
        print(f"pxed: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    hidden = [h for h in HIDDEN for p in (Path(bin_path), Path(bin_path).resolve())
              if p.is_relative_to(h)]  # fmt: skip
    if hidden:
        print(f"warning: {bin_path} is under {hidden[0]}, which the unit's {HIDDEN[hidden[0]]} "
              "hides from pxed: install it system-wide (pip install as root, or pipx with "
              "PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin)")  # fmt: skip
    print("next:")
    print(f"  {bin_path} check --config {args.config}")
    print("  systemctl daemon-reload")
    print("  systemctl enable --now pxed")
    return 0


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a temporary file beside it, renamed over it (mode 0644: the
    unit's dynamic user reads the configuration)."""
    tmp = path.with_name(f".{path.name}.pxed-tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)
