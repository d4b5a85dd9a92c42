"""`pxed leases`: formatting, the state directory as the daemon finds it, read-only reading,
and the plain messages for a missing directory, a missing database and an empty one."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pxed.leases import Lease, LeaseState, LeaseStore, read_leases
from pxed.leases.report import as_json, as_table, human_duration, main, relative, rows, state_dir

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "198.19.0.0/16"
NOW = 1_800_000_000.0


def lease(ip: str, mac: str, state: LeaseState, expires: float, name: str | None = None) -> Lease:
    key = b"\x01" + bytes.fromhex(mac.replace(":", ""))
    return Lease(IPv4Address(ip), key, mac, name, expires, state, SUBNET, NOW - 60)


LEASES = [
    replace(
        lease("198.19.1.10", "52:54:00:00:00:10", LeaseState.ACTIVE, NOW + 43140, "node10"),
        arch=7,
        boot_file="ipxe.efi",
    ),
    lease("198.19.0.50", "52:54:00:12:34:56", LeaseState.ACTIVE, NOW - 5),
    lease("198.19.1.9", "52:54:00:00:00:09", LeaseState.RELEASED, NOW - 192),
    lease("198.19.1.2", "", LeaseState.DECLINED, NOW + 600),
]


def store_with(directory: Path, leases: list[Lease]) -> Path:
    db = directory / "leases.sqlite3"
    with LeaseStore(db) as store:
        for x in leases:
            store.stage(x)
    return db


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (192, "3m12s"), (43140, "11h59m"), (86400, "1d"), (187200, "2d4h")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
    assert human_duration(-seconds) == text


def test_relative() -> None:
    assert relative(43140) == "in 11h59m"
    assert relative(-192) == "3m12s ago"


def test_rows_sorted_by_address_with_derived_state() -> None:
    shown = rows(LEASES, NOW)
    # By address as a number: 198.19.1.9 before 198.19.1.10 (text order would swap them).
    assert [str(r.lease.ip) for r in shown] == [
        "198.19.0.50",
        "198.19.1.2",
        "198.19.1.9",
        "198.19.1.10",
    ]
    assert [r.state for r in shown] == ["expired", "declined", "released", "active"]


def test_table() -> None:
    text = as_table(rows(LEASES, NOW))
    lines = text.splitlines()
    assert lines[0].split() == ["IP", "MAC", "HOSTNAME", "STATE", "ARCH", "BOOT", "EXPIRES"]
    assert len(lines) == 5
    # Columns line up: every row's MAC starts where the header's does.
    column = lines[0].index("MAC")
    assert all(line[column - 2 : column] == "  " for line in lines)
    last = lines[-1]
    assert last.startswith("198.19.1.10 ") and "node10" in last and "(in 11h59m)" in last
    assert last.split()[4:6] == ["7", "ipxe.efi"]
    assert lines[1].split()[4:6] == ["-", "-"]
    assert "expired" in lines[1] and "(5s ago)" in lines[1] and " - " in lines[1]


def test_json_objects() -> None:
    got = as_json(rows(LEASES, NOW))
    first = got[-1]
    assert first["ip"] == "198.19.1.10" and first["mac"] == "52:54:00:00:00:10"
    assert first["hostname"] == "node10" and first["state"] == "active"
    assert first["expires_epoch"] == NOW + 43140 and first["expires_in"] == 43140
    assert first["expires"].startswith("2027-")  # ISO 8601 with the local offset
    assert first["client_id"] == "01525400000010" and first["subnet"] == SUBNET
    assert (first["arch"], first["boot_file"]) == (7, "ipxe.efi")
    assert (got[0]["arch"], got[0]["boot_file"]) == (None, None)
    json.dumps(got)  # all of it JSON


def test_read_leases_is_read_only_and_sees_the_daemons_commits(tmp_path: Path) -> None:
    db = tmp_path / "leases.sqlite3"
    with LeaseStore(db) as store:  # the "daemon" holds its store open while the tool reads
        store.stage(LEASES[0])
        store.commit()
        assert [str(x.ip) for x in read_leases(db)] == ["198.19.1.10"]
        store.stage(LEASES[1])
        store.commit()
        assert len(read_leases(db)) == 2
    before = db.stat().st_mtime_ns
    read_leases(db)
    assert db.stat().st_mtime_ns == before
    with pytest.raises(FileNotFoundError):
        read_leases(tmp_path / "other.sqlite3")
    assert not (tmp_path / "other.sqlite3").exists()  # never created by a reader


def test_read_leases_refuses_a_foreign_database(tmp_path: Path) -> None:
    db = tmp_path / "leases.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    from pxed.errors import PxedError

    with pytest.raises(PxedError, match="something else"):
        read_leases(db)


def test_state_dir_as_the_daemon_finds_it(tmp_path: Path) -> None:
    conf = tmp_path / "pxed.toml"
    # A problem elsewhere in the file (a key pxed does not know) does not hide the leases.
    conf.write_text(f"[server]\nstate_dir = '{tmp_path / 's'}'\nbogus = 1\n")
    assert state_dir(conf, None) == tmp_path / "s"
    assert state_dir(conf, tmp_path / "given") == tmp_path / "given"
    assert state_dir(None, None) == Path("/var/lib/pxed")


def test_main_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_with(tmp_path, LEASES)
    assert main(["--state-dir", str(tmp_path)], now=NOW) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"4 lease(s) in {tmp_path / 'leases.sqlite3'} (pxed is not running): " + (
        "1 active, 1 declined, 1 expired, 1 released"
    )
    assert out[1].startswith("IP ")
    assert main(["--state-dir", str(tmp_path), "--json"], now=NOW) == 0
    got = json.loads(capsys.readouterr().out)
    assert [x["ip"] for x in got] == ["198.19.0.50", "198.19.1.2", "198.19.1.9", "198.19.1.10"]


def test_main_config_names_the_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "s").mkdir()
    store_with(tmp_path / "s", LEASES[:1])
    conf = tmp_path / "pxed.toml"
    conf.write_text(f"[server]\nstate_dir = '{tmp_path / 's'}'\n")
    assert main(["--config", str(conf), "--json"], now=NOW) == 0
    assert [x["ip"] for x in json.loads(capsys.readouterr().out)] == ["198.19.1.10"]


def test_main_empty_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no leases in {tmp_path} (no lease database yet)\n"
    store_with(tmp_path, [])
    assert main(["--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no leases in {tmp_path} (the store is empty)\n"
    assert main(["--state-dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "the store is empty" in captured.err
    assert main(["--state-dir", str(tmp_path / "nope")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"pxed leases: no state directory {tmp_path}")


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """`pxed leases ARGS` run by a user with no rights on the state directory but o+r."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-P",
         "-m", "pxed", "leases", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_other_users_are_told_what_stops_them() -> None:
    # Not under pytest's tmp_path: its parent is root's own (0o700), nobody gets that far.
    top = Path(tempfile.mkdtemp(prefix="pxed-leases-"))
    try:
        check_as_nobody(top)
    finally:
        shutil.rmtree(top)


def check_as_nobody(top: Path) -> None:
    top.chmod(0o755)
    state = top / "state"
    state.mkdir()
    store_with(state, LEASES)
    state.chmod(0o750)  # as the daemon makes it: not for every local user
    res = as_nobody("--state-dir", str(state))
    assert res.returncode == 1 and "Permission denied" in res.stderr, res
    # Readable but not writable, daemon stopped (no -wal): read without the -shm index.
    state.chmod(0o755)
    (state / "leases.sqlite3").chmod(0o644)
    assert not (state / "leases.sqlite3-wal").exists()
    res = as_nobody("--state-dir", str(state), "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) == len(LEASES)


def test_garbage_file_is_no_lease_database(tmp_path: Path) -> None:
    from pxed.errors import PxedError

    (tmp_path / "leases.sqlite3").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(PxedError, match="not a pxed lease database"):
        read_leases(tmp_path / "leases.sqlite3")
