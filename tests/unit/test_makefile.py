"""`make run` on a Debian without python3-venv says what to install instead of letting
`python3 -m venv` fail obscurely; `make test` installs it (deps-debian) before the venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
MESSAGE = (
    "pxed: python3 -m venv needs the Debian package python3-venv: apt-get install python3-venv"
)

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make missing")


def test_run_without_ensurepip_says_which_package(tmp_path: Path) -> None:
    # A Python whose ensurepip is missing, as Debian's python3 is without python3-venv.
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "ensurepip.py").write_text("raise ImportError('ensurepip')\n")
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "stub"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "run", f"PYTHON={python}", f"VENV={venv}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == MESSAGE, done.stderr
    assert not venv.exists()


def test_make_test_installs_python3_venv_before_making_the_venv(tmp_path: Path) -> None:
    plan = subprocess.run(
        ["make", "-n", "-C", str(REPO), "test", f"VENV={tmp_path / 'venv'}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    debs = next(line for line in plan.splitlines() if "dpkg-query" in line or "for p in" in line)
    assert " python3-venv " in debs
    assert plan.index("apt-get install") < plan.index("-m venv")
    assert plan.index("import ensurepip, venv") < plan.index("-m venv")
