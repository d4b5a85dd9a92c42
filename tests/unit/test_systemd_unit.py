"""The unit stays valid (`systemd-analyze verify`) and hardened: the exposure score
`systemd-analyze security --offline=true` gives it stays at 2.0 or less. Checked as
`pxed install-unit` writes it (systemd/pxed.service links to the one it starts from)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pxed.install import render, shipped

UNIT = Path(__file__).parents[2] / "systemd" / "pxed.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (package systemd) missing"
)


def unit_copy(tmp_path: Path) -> Path:
    """The unit as installed, its pxed an executable that exists here (verify checks it)."""
    path = tmp_path / "pxed.service"
    path.write_text(render(sys.executable, Path("/etc/pxed/pxed.toml")))
    return path


def test_the_documented_path_is_the_shipped_unit() -> None:
    assert UNIT.is_symlink() and UNIT.read_text() == shipped("pxed.service")


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for pxed\.service: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit_copy(tmp_path))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == ""


@needs_analyze
def test_exposure_is_at_most_two(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_copy(tmp_path))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    score = exposure(done.stdout)
    assert score <= MAX_EXPOSURE, done.stdout


def test_exposure_line_is_parsed() -> None:
    assert exposure("→ Overall exposure level for pxed.service: 1.6 OK 🙂") == 1.6
