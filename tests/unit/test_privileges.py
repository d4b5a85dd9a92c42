"""pxed.privileges without dropping anything: accounts, the checks made before a socket is
bound, the state directory's hand-over and the mode-bit rules behind it. The drop itself
runs in tests/integration/test_user.py (a pxed process started as root)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pxed.privileges import (
    CAP_NET_ADMIN,
    CAP_NET_BIND_SERVICE,
    KEPT,
    Account,
    PrivilegeError,
    account,
    check_can_drop,
    hand_over,
    kernel_version,
    mask,
    status_capabilities,
    unreachable_parent,
    writable_by,
)


def me(uid: int | None = None, groups: tuple[int, ...] | None = None) -> Account:
    uid = os.getuid() if uid is None else uid
    gid = os.getgid()
    return Account("me", uid, gid, (gid,) if groups is None else groups, "/")


def test_unknown_user_is_one_line() -> None:
    with pytest.raises(PrivilegeError, match=r"^--user no-such-user-pxed: no such user$"):
        account("no-such-user-pxed")


def test_root_is_not_a_user_to_drop_to() -> None:
    with pytest.raises(PrivilegeError, match="that is root"):
        account("root")
    with pytest.raises(PrivilegeError, match="that is root"):
        account("0")


def test_nobody_by_name_and_by_number() -> None:
    entry = pwd.getpwnam("nobody")
    found = account("nobody")
    assert (found.uid, found.gid) == (entry.pw_uid, entry.pw_gid)
    assert entry.pw_gid in found.groups
    assert account(str(entry.pw_uid)).name == "nobody"


def test_kernel_versions() -> None:
    assert kernel_version("6.18.44-fc-v1098") == (6, 18)
    assert kernel_version("5.4.0-150-generic") == (5, 4)
    assert kernel_version("weird") == (0, 0)


def test_refused_unless_root_and_on_an_old_kernel() -> None:
    with pytest.raises(PrivilegeError, match="not running as root"):
        check_can_drop("nobody", euid=1000, release="6.1.0")
    with pytest.raises(PrivilegeError, match=r"Linux 5\.4 needs CAP_NET_RAW"):
        check_can_drop("nobody", euid=0, release="5.4.0-150-generic")
    assert check_can_drop("nobody", euid=0, release="5.7.0").name == "nobody"


def test_mode_bits(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o700)
    assert writable_by(d, me())
    stranger = me(uid=os.getuid() + 12345, groups=(os.getgid() + 12345,))
    assert not writable_by(d, stranger)
    d.chmod(0o773)
    assert writable_by(d, stranger)
    member = me(uid=os.getuid() + 12345)  # in the directory's group
    d.chmod(0o730)
    assert writable_by(d, member) and not writable_by(d, stranger)


def test_a_closed_parent_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "state").mkdir(parents=True)
    try:
        closed.chmod(0o600)  # its owner may not enter it either
        assert unreachable_parent(closed / "state", me()) == closed
    finally:
        closed.chmod(0o700)
    assert unreachable_parent(closed / "state", me()) is None


def test_hand_over_chowns_pxeds_files_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name in ("leases.sqlite3", "pxed.lock", "someone-elses"):
        (state / name).write_text("")
    (state / "boots.jsonl").symlink_to(tmp_path / "elsewhere")
    changed = hand_over(state, me(), ["leases.sqlite3", "pxed.lock", "boots.jsonl", "gone"])
    # Already writable by "me": the directory is left alone; a link is never followed.
    assert changed == [state / "leases.sqlite3", state / "pxed.lock"]
    assert hand_over(tmp_path / "missing", me(), ["x"]) == []


def test_capability_masks() -> None:
    assert mask(KEPT) == (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_NET_ADMIN) == 0x1400
    caps = status_capabilities()
    assert set(caps) >= {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
