"""`pxed install-unit`: the unit and the example configuration from the package, under a
--prefix; an edited unit is left alone; the wheel carries both files and the status page's."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pxed.install import main, render, running_pxed, shipped, written_by_us

REPO = Path(__file__).parents[2]
BIN = "/opt/pxed/bin/pxed"


def install(prefix: Path, *extra: str) -> int:
    return main(["--prefix", str(prefix), "--bin", BIN, *extra])


def test_render_names_this_pxed_and_the_config() -> None:
    unit = render(BIN, Path("/etc/pxed/site.toml"))
    assert f"ExecStart={BIN} --config /etc/pxed/site.toml --log-format json" in unit
    assert f"ExecStartPre={BIN} check --config /etc/pxed/site.toml" in unit
    assert "/usr/local/bin" not in unit
    assert written_by_us(unit) and not written_by_us(unit + "# edited\n")
    assert not written_by_us(shipped("pxed.service"))
    with pytest.raises(ValueError, match="no spaces"):
        render("/opt/my pxed/pxed", Path("/etc/pxed/pxed.toml"))


def test_install_under_a_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert install(tmp_path) == 0
    unit = tmp_path / "etc/systemd/system/pxed.service"
    config = tmp_path / "etc/pxed/pxed.toml"
    assert unit.read_text() == render(BIN, Path("/etc/pxed/pxed.toml"))
    assert config.read_text() == shipped("pxed.toml")
    assert oct(unit.stat().st_mode & 0o777) == oct(config.stat().st_mode & 0o777) == "0o644"
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == ["etc/pxed/pxed.toml", "etc/systemd/system/pxed.service"]
    out = capsys.readouterr().out
    assert f"wrote {unit}" in out and f"wrote {config}" in out
    assert "systemctl daemon-reload" in out and "systemctl enable --now pxed" in out

    config.write_text("# mine\n")
    assert install(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"unchanged {unit}" in out and f"kept {config}" in out
    assert config.read_text() == "# mine\n"


def test_an_edited_unit_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert install(tmp_path) == 0
    unit = tmp_path / "etc/systemd/system/pxed.service"
    edited = unit.read_text().replace("RestartSec=2s", "RestartSec=9s")
    unit.write_text(edited)
    assert install(tmp_path) == 1
    assert "edited or not written by pxed" in capsys.readouterr().err
    assert unit.read_text() == edited
    assert install(tmp_path, "--force") == 0
    assert unit.read_text() == render(BIN, Path("/etc/pxed/pxed.toml"))


def test_a_unit_an_earlier_pxed_wrote_is_replaced(tmp_path: Path) -> None:
    unit = tmp_path / "etc/systemd/system/pxed.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(render("/usr/bin/pxed-old", Path("/etc/pxed/pxed.toml")))  # untouched
    assert install(tmp_path) == 0
    assert f"ExecStart={BIN} " in unit.read_text()


def test_a_pxed_the_sandbox_hides_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--prefix", str(tmp_path), "--bin", "/root/.local/bin/pxed"]) == 0
    assert "under /root, which the unit's ProtectHome=yes hides" in capsys.readouterr().out


def test_print_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print", "--bin", BIN, "--prefix", str(tmp_path)]) == 0
    assert capsys.readouterr().out == render(BIN, Path("/etc/pxed/pxed.toml"))
    assert list(tmp_path.iterdir()) == []


def test_the_running_pxed(tmp_path: Path) -> None:
    script = tmp_path / "pxed"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert running_pxed(str(script)) == str(script)
    # `python -m pxed`: argv[0] is __main__.py; the pxed on PATH then.
    assert running_pxed(str(REPO / "pxed" / "__main__.py")) == shutil.which("pxed")


def test_relative_paths_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--print", "--bin", "pxed"]) == 1
    assert "absolute" in capsys.readouterr().err


def _can_build_offline() -> bool:
    """setuptools >= 70.1 builds wheels itself; older ones need the wheel package."""
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.skipif(not _can_build_offline(), reason="pip install 'setuptools>=70.1' (.[test])")
def test_the_wheel_carries_the_unit_and_the_example(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pxed", src / "pxed",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    # Offline (no build isolation: the setuptools installed here), never touching the
    # checkout (build/ and *.egg-info go to the copy).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp_path / "w"), str(src)],
        check=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )  # fmt: skip
    (wheel,) = (tmp_path / "w").glob("pxed-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"pxed/data/pxed.service", "pxed/data/pxed.toml"} <= names
        # The status page's own files (pxed.web reads them from the package).
        assert {"pxed/web/index.html", "pxed/web/status.js", "pxed/web/status.css"} <= names
        assert zf.read("pxed/data/pxed.service").decode() == shipped("pxed.service")
        assert zf.read("pxed/data/pxed.toml").decode() == shipped("pxed.toml")
        assert "pxed = pxed.cli:main" in zf.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
