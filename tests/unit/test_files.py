"""Safe names under the TFTP root (40 hostile ones), the shared mapping cache, netascii."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pxed.config import TftpConfig
from pxed.files import FileRefused, FileStore, Refusal, to_netascii

SECRET = b"outside the root"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with boot files and traps; outside/ beside it with a secret."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "boot").mkdir(parents=True)
    (root / "sub" / "dir").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "boot" / "pxelinux.0").write_bytes(b"PXELINUX")
    (root / "sub" / "dir" / "file").write_bytes(b"deep")
    (root / "a.txt").write_bytes(b"line1\nline2\r\n")
    (root / "empty").write_bytes(b"")
    os.symlink("boot/pxelinux.0", root / "link_inside")
    os.symlink(str(root / "boot" / "pxelinux.0"), root / "link_abs_inside")
    os.symlink("/etc/passwd", root / "link_passwd")
    os.symlink("/", root / "link_root")
    os.symlink(str(outside), root / "link_outside")
    os.symlink("..", root / "link_up")
    os.symlink("../../outside", root / "sub" / "link_up2")
    os.symlink("/dev/zero", root / "link_dev")
    os.symlink("link_loop", root / "link_loop")
    os.symlink("missing-target", root / "dangling")
    os.mkfifo(root / "fifo")
    return root


ACCEPTED = [
    ("boot/pxelinux.0", b"PXELINUX"),
    ("/boot/pxelinux.0", b"PXELINUX"),
    ("\\boot\\pxelinux.0", b"PXELINUX"),
    ("boot\\pxelinux.0", b"PXELINUX"),
    ("boot//pxelinux.0", b"PXELINUX"),
    ("./boot/./pxelinux.0", b"PXELINUX"),
    ("link_inside", b"PXELINUX"),
    ("link_abs_inside", b"PXELINUX"),
    ("/sub/dir/file", b"deep"),
    ("empty", b""),
]


@pytest.mark.parametrize(("name", "content"), ACCEPTED)
def test_accepted_names(tree: Path, name: str, content: bytes) -> None:
    store = FileStore(tree)
    f = store.open(name)
    assert bytes(f.data) == content
    assert f.size == len(content)
    f.close()


def test_root_own_path_is_the_root(tree: Path) -> None:
    store = FileStore(tree)
    for name in (
        f"{tree}/boot/pxelinux.0",
        f"{os.path.realpath(tree)}/boot/pxelinux.0",
        f"{tree}\\boot\\pxelinux.0".replace("/", "\\"),
    ):
        f = store.open(name)
        assert bytes(f.data) == b"PXELINUX"
        f.close()


# (name, the code it must get; None: 1 or 2, whichever, as long as nothing is served)
HOSTILE: list[tuple[str, int | None]] = [
    ("../outside/secret", 2),
    ("../../etc/passwd", 2),
    ("/../outside/secret", 2),
    ("..", 2),
    ("../", 2),
    ("a/../../outside/secret", 2),
    ("sub/../../outside/secret", 2),
    ("sub/dir/../../../outside/secret", 2),
    ("..\\outside\\secret", 2),
    ("\\..\\outside\\secret", 2),
    ("sub\\..\\..\\outside\\secret", 2),
    ("./../outside/secret", 2),
    ("sub/./../../outside/secret", 2),
    ("../" * 20 + "etc/passwd", 2),
    ("/boot/../../outside/secret", 2),
    ("boot/pxelinux.0/../../../outside/secret", 2),
    ("{root}/../outside/secret", 2),
    ("{root}/..", 2),
    ("a\0b", 2),
    ("boot/pxelinux.0\0.txt", 2),
    ("\0", 2),
    ("link_passwd", 2),
    ("link_root/etc/passwd", 2),
    ("link_root", 2),
    ("link_outside/secret", 2),
    ("link_up/outside/secret", 2),
    ("sub/link_up2/secret", 2),
    ("link_dev", 2),
    ("link_loop", 2),
    ("fifo", 2),
    ("sub", 2),
    ("boot/", 2),
    ("/etc/passwd", None),
    ("etc/passwd", None),
    ("//etc//passwd", None),
    ("/proc/self/environ", None),
    ("{outside}/secret", None),
    ("....//outside/secret", None),
    ("%2e%2e/outside/secret", None),
    ("~/.bashrc", None),
    ("C:\\Windows\\System32\\config\\SAM", None),
    ("dangling", None),
    ("", None),
    ("/", None),
    ("x" * 600, None),
    ("sub/" + "y" * 300 + "/z", None),
]


# The same traps spelt in another case: matching names ignoring case must not open a way out.
# (name, code ignoring case, code when case counts: 1 where the name then does not exist)
HOSTILE_CASED: list[tuple[str, int | None, int | None]] = [
    ("LINK_PASSWD", 2, 1),
    ("Link_Root/etc/passwd", 2, 1),
    ("LINK_OUTSIDE/secret", 2, 1),
    ("link_outside/SECRET", 2, 2),
    ("LINK_UP/outside/secret", 2, 1),
    ("SUB/LINK_UP2/secret", 2, 1),
    ("SUB/Link_Up2/SECRET", 2, 1),
    ("Link_Dev", 2, 1),
    ("FIFO", 2, 1),
    ("SUB", 2, 1),
    ("../OUTSIDE/secret", 2, 2),
    ("DANGLING", None, None),
]
CASES = [(name, code, code) for name, code in HOSTILE] + HOSTILE_CASED
KIND = {1: Refusal.NOT_FOUND, 2: Refusal.FORBIDDEN}
"""The codes above are TFTP's (1 file not found, 2 access violation): the kind behind each."""


@pytest.mark.parametrize("case_insensitive", [False, True], ids=["exact", "nocase"])
@pytest.mark.parametrize(("name", "nocase", "exact"), CASES)
def test_hostile_names_are_refused(
    tree: Path, name: str, nocase: int | None, exact: int | None, case_insensitive: bool
) -> None:
    store = FileStore(tree, case_insensitive=case_insensitive)
    name = name.format(root=tree, outside=tree.parent / "outside")
    with pytest.raises(FileRefused) as info:
        f = store.open(name)
        f.close()
    assert info.value.kind in (Refusal.NOT_FOUND, Refusal.FORBIDDEN)
    code = nocase if case_insensitive else exact
    if code is not None:
        assert info.value.kind == KIND[code], info.value.reason
    assert store.open_files == 0


def test_at_least_thirty_hostile_names() -> None:
    assert len(HOSTILE) >= 30


def test_unreadable_file_is_access_violation() -> None:
    # A tree of its own under /tmp, traversable by everyone: as root (CI) the check runs in a
    # child that has dropped to nobody, since root reads every file whatever its mode.
    tree = Path(tempfile.mkdtemp(prefix="pxed-unreadable-"))
    try:
        tree.chmod(0o755)
        (tree / "locked").write_bytes(b"x")
        (tree / "locked").chmod(0)

        def refused() -> bool:
            try:
                FileStore(tree).open("locked").close()
            except FileRefused as exc:
                return exc.kind == Refusal.FORBIDDEN
            return False

        if os.geteuid() != 0:
            assert refused()
            return
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                code = 0 if refused() else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def test_one_mapping_shared_by_many_transfers(tree: Path) -> None:
    (tree / "initrd").write_bytes(os.urandom(1 << 20))
    store = FileStore(tree)
    handles = [store.open("/initrd") for _ in range(50)]
    assert store.open_files == 1
    assert store.references == 50
    assert all(h.data.obj is handles[0].data.obj for h in handles)
    for h in handles:
        h.close()
        h.close()  # idempotent
    assert store.open_files == 0 and store.references == 0


def test_replaced_file_keeps_old_contents_for_running_transfers(tree: Path) -> None:
    target = tree / "boot" / "initrd"
    target.write_bytes(b"old" * 1000)
    store = FileStore(tree)
    old = store.open("boot/initrd")
    tmp = tree / "boot" / "initrd.new"
    tmp.write_bytes(b"new" * 1000)
    tmp.rename(target)
    new = store.open("boot/initrd")
    assert bytes(old.data[:3]) == b"old" and bytes(new.data[:3]) == b"new"
    assert store.open_files == 2
    old.close()
    new.close()
    assert store.open_files == 0


def test_slice_alive_at_close_does_not_break(tree: Path) -> None:
    store = FileStore(tree)
    f = store.open("boot/pxelinux.0")
    piece = f.data[0:3]
    f.close()  # the mapping stays until the slice goes
    assert bytes(piece) == b"PXE"
    assert store.open_files == 0


def test_netascii_conversion(tree: Path) -> None:
    assert to_netascii(b"a\nb\rc\r\n") == b"a\r\nb\r\0c\r\0\r\n"
    store = FileStore(tree)
    f = store.open("a.txt", netascii=True)
    assert bytes(f.data) == b"line1\r\nline2\r\0\r\n"
    g = store.open("a.txt")
    assert bytes(g.data) == b"line1\nline2\r\n"
    assert store.open_files == 1
    f.close()
    g.close()


def test_root_symlink_itself_is_followed(tmp_path: Path, tree: Path) -> None:
    link = tmp_path / "tftproot"
    os.symlink(tree, link)
    store = FileStore(link)
    f = store.open(f"{link}/boot/pxelinux.0")
    assert bytes(f.data) == b"PXELINUX"
    f.close()
    with pytest.raises(FileRefused):
        store.open("link_outside/secret")


def test_names_matched_ignoring_case(tree: Path) -> None:
    (tree / "boot" / "bcd").write_bytes(b"BCD store")
    (tree / "Boot.SDI").write_bytes(b"sdi")
    store = FileStore(tree, case_insensitive=True)
    for name, content in (
        ("\\Boot\\BCD", b"BCD store"),
        ("BOOT/PXELINUX.0", b"PXELINUX"),
        ("Sub/Dir/File", b"deep"),
        ("boot.sdi", b"sdi"),
        ("LINK_INSIDE", b"PXELINUX"),
    ):
        f = store.open(name)
        assert bytes(f.data) == content, name
        f.close()
    f = store.open("\\Boot\\BCD")
    assert f.name == "boot/bcd"  # the log names the file served
    f.close()
    with pytest.raises(FileRefused) as info:
        FileStore(tree).open("BOOT/PXELINUX.0")  # exact names only
    assert info.value.kind == Refusal.NOT_FOUND
    with pytest.raises(FileRefused) as info:
        store.open("boot/nothing")
    assert info.value.kind == Refusal.NOT_FOUND
    assert store.open_files == 0


def test_exact_spelling_wins_and_a_tie_is_refused(tree: Path) -> None:
    (tree / "menu").write_bytes(b"lower")
    (tree / "MENU").write_bytes(b"upper")
    store = FileStore(tree, case_insensitive=True)
    for name, content in (("menu", b"lower"), ("MENU", b"upper")):
        f = store.open(name)
        assert bytes(f.data) == content
        f.close()
    with pytest.raises(FileRefused) as info:
        store.open("Menu")  # neither spelt so: which one was meant is unknown
    assert info.value.kind == Refusal.NOT_FOUND
    assert "MENU, menu differ only in case" in info.value.reason


def test_a_clients_own_directory_comes_first(tree: Path) -> None:
    own = tree / "52-54-00-12-34-56"
    (own / "boot").mkdir(parents=True)
    (own / "boot" / "pxelinux.0").write_bytes(b"MINE")
    (own / "Menu.cfg").write_bytes(b"my menu")
    (tree / "menu.cfg").write_bytes(b"shared menu")
    store = FileStore(tree, case_insensitive=True)
    for name, under, content, served_as in (
        ("boot/pxelinux.0", "52-54-00-12-34-56", b"MINE", "52-54-00-12-34-56/boot/pxelinux.0"),
        (f"{tree}/boot/pxelinux.0", "52-54-00-12-34-56", b"MINE", None),
        ("menu.cfg", "52-54-00-12-34-56", b"my menu", "52-54-00-12-34-56/Menu.cfg"),
        ("sub/dir/file", "52-54-00-12-34-56", b"deep", "sub/dir/file"),  # not there: shared
        ("menu.cfg", "52-54-00-AA-AA-AA", b"shared menu", "menu.cfg"),  # no such directory
        ("boot/pxelinux.0", None, b"PXELINUX", "boot/pxelinux.0"),
    ):
        f = store.open(name, under=under)
        assert bytes(f.data) == content, (name, under)
        if served_as is not None:
            assert f.name == served_as
        f.close()
    os.symlink(str(tree.parent / "outside"), own / "escape")
    for name in ("escape/secret", "../outside/secret", "../52-54-00-12-34-56/boot/pxelinux.0"):
        with pytest.raises(FileRefused) as info:
            store.open(name, under="52-54-00-12-34-56")
        assert info.value.kind == Refusal.FORBIDDEN, name
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(ValueError):
            store.open("menu.cfg", under=bad)
    assert store.open_files == 0


@pytest.mark.parametrize(
    ("mode", "served"), [(0o644, True), (0o604, True), (0o600, False), (0o640, False)]
)
def test_world_readable_only(tree: Path, mode: int, served: bool) -> None:
    (tree / "f").write_bytes(b"data")
    (tree / "f").chmod(mode)
    store = FileStore(tree, world_readable_only=True)
    if served:
        store.open("f").close()
    else:
        with pytest.raises(FileRefused) as info:
            store.open("f")
        assert info.value.kind == Refusal.FORBIDDEN
        assert "not world-readable" in info.value.reason
    FileStore(tree).open("f").close()  # the rule is off unless asked for
    assert store.open_files == 0


def test_world_readable_rule_from_the_config(tree: Path) -> None:
    (tree / "f").write_bytes(b"data")
    (tree / "f").chmod(0o600)
    as_root = os.geteuid() == 0
    with contextlib.nullcontext() if not as_root else pytest.raises(FileRefused):
        FileStore.for_config(TftpConfig(root=tree)).open("f").close()
    FileStore.for_config(TftpConfig(root=tree, world_readable_only=False)).open("f").close()
