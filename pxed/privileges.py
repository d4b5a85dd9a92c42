"""`pxed --user NAME`: started as root without systemd, pxed gives root up once every socket
is bound, keeping only the network capabilities it still uses.

What is kept, and why (the same list as systemd/pxed.service's AmbientCapabilities=):

    CAP_NET_BIND_SERVICE  a reload, or an interface that appears late, opens ports 67, 68
                          and 69 again
    CAP_NET_ADMIN         SIOCSARP: an OFFER/ACK unicast to a client without an address
                          needs the kernel's ARP entry set first (pxed/net/dhcp.py)

CAP_NET_RAW is not kept: SO_BINDTODEVICE needs it only on kernels before 5.7, where the
TFTP threads (which make each transfer's socket) would be left without it, so --user is
refused there (run the systemd unit instead, which gives every thread its capabilities).

The drop, on the event loop's thread: the bounding set cut to the kept capabilities,
PR_SET_KEEPCAPS, setgroups/setgid/setuid (glibc applies them to every thread), then capset
and PR_CAP_AMBIENT_RAISE for the kept ones. Capabilities are per thread: threads already
running (the lease writer, TFTP pumps, the metrics server) keep none; threads started
later (a TFTP endpoint opened by a reload) inherit the event loop thread's. Programs run
by [hooks] get the kept capabilities as ambient ones, as they do under the unit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pxed.errors import PxedError

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
KEPT = (CAP_NET_BIND_SERVICE, CAP_NET_ADMIN)
"""The capabilities pxed keeps after dropping to --user (see the module doc)."""

# linux/prctl.h
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522  # linux/capability.h: two 32-bit words per set

BINDTODEVICE_FREE_SINCE = (5, 7)
"""Linux 5.7 made SO_BINDTODEVICE work without CAP_NET_RAW (on an unbound socket)."""


class PrivilegeError(PxedError):
    """Why pxed cannot become --user; one line."""


@dataclass(frozen=True, slots=True)
class Account:
    """The user pxed runs as after the drop."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups (/etc/group), the primary one included."""
    home: str


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def account(name: str) -> Account:
    """The account named (or a numeric uid); PrivilegeError for an unknown one or root."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        raise PrivilegeError(f"--user {name}: no such user") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"--user {name}: that is root; name an unprivileged user")
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of ``uname -r``; (0, 0) when it cannot be read."""
    head = (release or os.uname().release).split("-")[0].split(".")
    try:
        return int(head[0]), int(head[1])
    except (IndexError, ValueError):
        return (0, 0)


def check_can_drop(user: str, *, euid: int | None = None, release: str | None = None) -> Account:
    """Everything that can be known before a socket is bound: the account exists, pxed
    runs as root, the kernel lets an unprivileged thread use SO_BINDTODEVICE."""
    found = account(user)
    if (os.geteuid() if euid is None else euid) != 0:
        raise PrivilegeError(
            f"--user {user}: pxed is not running as root, so there is nothing to drop "
            "(start it as root, or leave --user out)"
        )
    version = kernel_version(release)
    if version < BINDTODEVICE_FREE_SINCE:
        raise PrivilegeError(
            f"--user {user}: Linux {version[0]}.{version[1]} needs CAP_NET_RAW in every thread "
            "for SO_BINDTODEVICE; run pxed under systemd/pxed.service instead"
        )
    return found


def _allows(st: os.stat_result, who: Account, bits: int) -> bool:
    """Whether the mode bits grant ``who`` ``bits`` (0o1 search, 0o2 write, 0o4 read; as
    for "other"), taken from the owner's, the group's or the others' triplet as the kernel
    does (ACLs are not looked at)."""
    if st.st_uid == who.uid:
        return (st.st_mode >> 6) & bits == bits
    if st.st_gid in who.groups:
        return (st.st_mode >> 3) & bits == bits
    return st.st_mode & bits == bits


def writable_by(path: Path, who: Account) -> bool:
    """Whether ``who`` may create files in the directory ``path`` (its mode bits)."""
    return _allows(path.stat(), who, 0o3)


def unreachable_parent(path: Path, who: Account) -> Path | None:
    """The first directory above ``path`` that ``who`` may not enter, if any."""
    for parent in reversed(path.resolve().parents):
        if not _allows(parent.stat(), who, 0o1):
            return parent
    return None


def hand_over(state_dir: Path, who: Account, names: Iterable[str]) -> list[Path]:
    """Give ``who`` the state directory and pxed's files in it (the lease database, its
    WAL, the lock, boots.jsonl, control.sock), before the drop. The directory itself is
    chowned only when its mode does not already let ``who`` write there: a shared one
    (``/tmp``) is left as it is. Returns what was chowned."""
    changed: list[Path] = []
    if not state_dir.is_dir():
        return changed  # none was made (TFTP only, or it could not be): nothing to give
    closed = unreachable_parent(state_dir, who)
    if closed is not None:
        raise PrivilegeError(
            f"state_dir {state_dir}: user {who.name} may not enter {closed}; "
            "choose a state directory it can reach"
        )
    if not writable_by(state_dir, who):
        os.chown(state_dir, who.uid, who.gid)
        changed.append(state_dir)
    for name in names:
        path = state_dir / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # not ours: never follow a link placed in the directory
        os.chown(path, who.uid, who.gid, follow_symlinks=False)
        changed.append(path)
    return changed


def check_writable(state_dir: Path, who: Account) -> None:
    """After the drop: the state directory must take new files (SQLite's WAL, boots.jsonl);
    the mode bits said so before (hand_over), this asks the kernel (ACLs, mounts)."""
    if state_dir.is_dir() and not os.access(state_dir, os.W_OK | os.X_OK):
        raise PrivilegeError(f"state_dir {state_dir}: user {who.name} cannot write there")


CAPABILITY_NAMES = {
    CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
    CAP_NET_ADMIN: "CAP_NET_ADMIN",
    CAP_NET_RAW: "CAP_NET_RAW",
}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0, arg3: int = 0) -> None:
    zero = ctypes.c_ulong(0)
    if libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), zero, zero) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"prctl({option}, {arg}): {os.strerror(err)}")


def _capset(libc: ctypes.CDLL, caps: Sequence[int]) -> None:
    """Effective, permitted and inheritable sets of this thread = ``caps``."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for cap in caps:
        word, bit = divmod(cap, 32)
        data[word].effective |= 1 << bit
        data[word].permitted |= 1 << bit
        data[word].inheritable |= 1 << bit
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"capset: {os.strerror(err)}")


def last_capability() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one in Linux 5.9-6.x


def drop(who: Account, keep: Sequence[int] = KEPT) -> None:
    """Become ``who`` for good, keeping ``keep`` (permitted, effective, inheritable and
    ambient); PrivilegeError if any step fails or root could be taken back."""
    libc = _libc()
    # While still root (CAP_SETPCAP): nothing beyond ``keep`` can come back, not even
    # through a set-uid program a hook runs.
    for cap in range(last_capability() + 1):
        if cap not in keep:
            _prctl(libc, PR_CAPBSET_DROP, cap)
    _prctl(libc, PR_SET_KEEPCAPS, 1)
    try:
        os.setgroups(list(who.groups))
        os.setgid(who.gid)
        os.setuid(who.uid)
    except OSError as exc:
        raise PrivilegeError(f"--user {who.name}: {exc.strerror}") from exc
    _capset(libc, keep)
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in keep:
        _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
    _prctl(libc, PR_SET_KEEPCAPS, 0)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(f"--user {who.name}: root could be taken back after the drop")
    if os.getuid() != who.uid or os.geteuid() != who.uid or os.getegid() != who.gid:
        raise PrivilegeError(f"--user {who.name}: the identity did not change")
    # What the hooks inherit, as a login would set it.
    os.environ.update(HOME=who.home, USER=who.name, LOGNAME=who.name)


def status_capabilities(pid: int | str = "self") -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd and CapAmb of /proc/PID/status, as bit masks."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
    return out


def mask(caps: Iterable[int]) -> int:
    return sum(1 << cap for cap in set(caps))
