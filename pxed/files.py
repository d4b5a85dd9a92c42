"""The boot root, for every transport: safe name resolution under it and a shared mapped-file
cache. TFTP and HTTP ask the same store with the same names and get the same answer; a
refusal says only what kind it is (not found, forbidden), which TFTP answers with its error
codes and HTTP with 404 and 403.

Names from the wire are untrusted. :meth:`FileStore.resolve` accepts the forms PXE clients
really send (a leading ``/``, the root's own absolute path as a prefix, Windows ``\\``
separators) and refuses everything that could lead out of the root: ``..`` components, NUL
bytes, symlinks whose target is outside the root. The check is made on the real path before
opening and again on the opened descriptor (``/proc/self/fd``), so a symlink swapped in between
is caught too. With ``case_insensitive``, a name that does not exist as spelt is matched again
one component at a time, ignoring case (Windows boot loaders ask for ``\\Boot\\BCD`` where the
file was copied as ``boot/bcd``); the match then goes through the same checks.

TFTP clients fetching the same file share one read-only ``mmap`` (keyed by device, inode,
size and mtime, reference counted): memory stays flat however many clients fetch an initrd.
The mapping is never read by Python on the data path; payload slices go straight to
``sendmsg``, so a file truncated under a running transfer fails that send with ``EFAULT``
instead of killing the process with SIGBUS. A file replaced by ``rename`` keeps serving its old
contents to running transfers while new requests get the new file.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pxed.errors import PxedError

NETASCII_MAX = 64 * 1024 * 1024
"""Largest file served in netascii mode (it is converted in memory; text files are small)."""


class Refusal(StrEnum):
    """What kind of no a name gets: each transport says it in its own words."""

    NOT_FOUND = "not_found"
    """Nothing by that name (TFTP error 1, HTTP 404)."""
    FORBIDDEN = "forbidden"
    """There may be, but it is not served: outside the root, unreadable, not a regular
    file, not world-readable (TFTP error 2, HTTP 403)."""


class FileRefused(PxedError):
    """A name that is not served: ``reason`` in words, ``kind`` for the transport."""

    def __init__(self, reason: str, kind: Refusal) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class ServedFile(Protocol):
    """What a transfer needs from a file: its bytes, its size, a name for the log."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def data(self) -> memoryview: ...

    def close(self) -> None: ...


class RootSettings(Protocol):
    """Where the root is and its rules (``[tftp]``: TftpConfig has these)."""

    @property
    def root(self) -> Path: ...

    @property
    def case_insensitive(self) -> bool: ...

    @property
    def world_readable_only(self) -> bool: ...


class FileSource(Protocol):
    """Where the TFTP core gets files (a :class:`FileStore`, or an in-memory one in tests)."""

    def open(self, name: str, *, netascii: bool = False, under: str | None = None) -> ServedFile:
        """``under``: a directory below the root to look in first (a client's own files)."""
        ...


def canonical(name: str) -> str:
    """A name as a client sent it, as served files are logged: relative, ``/`` separated."""
    return name.replace("\\", "/").lstrip("/")


Rendered = Callable[[str, str, "str | None"], "bytes | None"]
"""Files made for the machine asking (pxed.profiles.serve): ``(name, client IP, the address
of pxed it asked) -> bytes``, or None for a name that is none of them (the root answers it).
Raises FileRefused for one that cannot be made."""


class MemoryFile:
    """A ServedFile over bytes in memory (a rendered file)."""

    def __init__(self, name: str, data: bytes) -> None:
        self._name = name
        self._data = memoryview(data)

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def data(self) -> memoryview:
        return self._data

    def close(self) -> None:
        pass


def to_netascii(raw: bytes) -> bytes:
    """RFC 1350 / RFC 764: CR -> CR NUL, LF -> CR LF."""
    return raw.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


@dataclass(eq=False)
class _Entry:
    key: tuple[int, int, int, int]
    path: str
    size: int
    mapping: mmap.mmap | None
    view: memoryview
    refs: int = 0
    netascii: memoryview | None = None


class OpenFile:
    """One transfer's reference to a shared file; :meth:`close` exactly once (idempotent)."""

    __slots__ = ("_closed", "_data", "_entry", "_name", "_store")

    def __init__(self, store: FileStore, entry: _Entry, name: str, data: memoryview) -> None:
        self._store = store
        self._entry = entry
        self._name = name
        self._data = data
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def data(self) -> memoryview:
        return self._data

    @property
    def path(self) -> str:
        return self._entry.path

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._release(self._entry)


class FileStore:
    """The boot root: resolves names safely and shares one mapping per file."""

    def __init__(
        self,
        root: Path | str,
        *,
        case_insensitive: bool = False,
        world_readable_only: bool = False,
    ) -> None:
        self._given = os.path.abspath(os.fspath(root))
        self._root = os.path.realpath(self._given)
        self._case_insensitive = case_insensitive
        self._world_readable_only = world_readable_only
        self._entries: dict[tuple[int, int, int, int], _Entry] = {}

    @classmethod
    def for_config(cls, config: RootSettings) -> FileStore:
        """The store a daemon serves (``[tftp] root`` and its rules, for TFTP and HTTP alike);
        the world-readable rule applies as root only (an unprivileged pxed is held to the
        file modes by the kernel already)."""
        return cls(
            config.root,
            case_insensitive=config.case_insensitive,
            world_readable_only=config.world_readable_only and os.geteuid() == 0,
        )

    @property
    def root(self) -> str:
        """The real path of the root."""
        return self._root

    @property
    def open_files(self) -> int:
        """Distinct files currently mapped (however many transfers use each)."""
        return len(self._entries)

    @property
    def references(self) -> int:
        return sum(entry.refs for entry in self._entries.values())

    def _inside(self, path: str) -> bool:
        return path == self._root or path.startswith(self._root.rstrip("/") + "/")

    def resolve(self, name: str, *, fold: bool = False, under: str | None = None) -> str:
        """The real path ``name`` designates under the root, or :class:`FileRefused`.

        ``fold``: match each component that does not exist as spelt ignoring case.
        ``under``: a directory (one name, no separators) below the root to resolve in.
        """
        if "\0" in name:
            raise FileRefused("NUL in filename", Refusal.FORBIDDEN)
        name = name.replace("\\", "/")
        for prefix in {self._given, self._root}:
            prefix = prefix.rstrip("/")
            if prefix and (name == prefix or name.startswith(prefix + "/")):
                name = name[len(prefix) :]
                break
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise FileRefused("'..' in filename", Refusal.FORBIDDEN)
        if not parts:
            raise FileRefused("no file named", Refusal.NOT_FOUND)
        if under is not None:
            parts = [under, *parts]
        if fold:
            parts = self._fold(parts)
        try:
            real = os.path.realpath(os.path.join(self._root, *parts))
        except (OSError, ValueError) as exc:
            raise FileRefused(f"unusable name: {exc}", Refusal.FORBIDDEN) from None
        if not self._inside(real) or real == self._root:
            raise FileRefused("leads out of the root", Refusal.FORBIDDEN)
        return real

    def _fold(self, parts: list[str]) -> list[str]:
        """``parts`` with each component missing as spelt replaced by its one match ignoring
        case; :class:`FileRefused` when there is none, or several (``BCD`` beside ``bcd``
        only matters when neither is spelt as asked)."""
        here = self._root
        folded: list[str] = []
        for part in parts:
            if not os.path.lexists(os.path.join(here, part)):
                key = part.casefold()
                try:
                    names = [entry for entry in os.listdir(here) if entry.casefold() == key]
                except OSError:
                    names = []
                if not names:
                    raise FileRefused("file not found", Refusal.NOT_FOUND)
                if len(names) > 1:
                    raise FileRefused(
                        f"file not found ({', '.join(sorted(names))} differ only in case)",
                        Refusal.NOT_FOUND,
                    )
                part = names[0]
            folded.append(part)
            here = os.path.join(here, part)
        return folded

    def _open_fd(self, real: str) -> int:
        try:
            return os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise FileRefused("file not found", Refusal.NOT_FOUND) from None
        except NotADirectoryError:
            raise FileRefused("file not found", Refusal.NOT_FOUND) from None
        except PermissionError:
            raise FileRefused("permission denied", Refusal.FORBIDDEN) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise FileRefused("name too long", Refusal.NOT_FOUND) from None
            if exc.errno == errno.ELOOP:
                raise FileRefused("symlink swapped in", Refusal.FORBIDDEN) from None
            raise FileRefused(f"cannot open: {exc.strerror}", Refusal.FORBIDDEN) from None

    def open(self, name: str, *, netascii: bool = False, under: str | None = None) -> OpenFile:
        if under is not None:
            _check_under(under)
            try:
                return self._open(name, netascii, under)
            except FileRefused as exc:
                if exc.kind != Refusal.NOT_FOUND:
                    raise
        return self._open(name, netascii, None)

    def _open(self, name: str, netascii: bool, under: str | None) -> OpenFile:
        fd, st, real = self._checked(name, under)
        try:
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._map(fd, key, real, st.st_size)
                self._entries[key] = entry
            entry.refs += 1
            try:
                if netascii and entry.netascii is None:
                    if entry.size > NETASCII_MAX:
                        raise FileRefused(
                            f"netascii of a file over {NETASCII_MAX} octets",
                            Refusal.FORBIDDEN,
                        )
                    entry.netascii = memoryview(to_netascii(_read_all(fd, entry.size)))
            except BaseException:
                self._release(entry)
                raise
        except OSError as exc:
            raise FileRefused(f"cannot read: {exc.strerror}", Refusal.FORBIDDEN) from None
        finally:
            os.close(fd)
        data = entry.netascii if netascii and entry.netascii is not None else entry.view
        return OpenFile(self, entry, self._relative(real), data)

    def open_fd(self, name: str, *, under: str | None = None) -> tuple[int, int, str]:
        """An open descriptor of what ``name`` designates, found and checked exactly as
        :meth:`open` does (``under`` first, then the root), with its size and its name
        under the root: for a transport that streams from the descriptor (HTTP's
        sendfile) rather than from a mapping. The caller closes it."""
        if under is not None:
            _check_under(under)
            try:
                fd, st, real = self._checked(name, under)
                return fd, st.st_size, self._relative(real)
            except FileRefused as exc:
                if exc.kind != Refusal.NOT_FOUND:
                    raise
        fd, st, real = self._checked(name, None)
        return fd, st.st_size, self._relative(real)

    def _relative(self, real: str) -> str:
        return real[len(self._root.rstrip("/")) + 1 :]  # real is inside the root (checked)

    def _checked(self, name: str, under: str | None) -> tuple[int, os.stat_result, str]:
        """The descriptor, status and real path of ``name``, or FileRefused: resolved (case
        folded when missing as spelt), opened without following a last symlink, a regular
        file, world-readable when that rule holds, and still inside the root as opened."""
        real = self.resolve(name, under=under)
        try:
            fd = self._open_fd(real)
        except FileRefused as exc:
            if not self._case_insensitive or exc.kind != Refusal.NOT_FOUND:
                raise
            real = self.resolve(name, fold=True, under=under)
            fd = self._open_fd(real)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileRefused("not a regular file", Refusal.FORBIDDEN)
            if self._world_readable_only and not st.st_mode & stat.S_IROTH:
                raise FileRefused(
                    "not world-readable (as root pxed serves only those: chmod o+r)",
                    Refusal.FORBIDDEN,
                )
            try:
                opened = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                opened = real
            if not self._inside(opened):
                raise FileRefused("leads out of the root", Refusal.FORBIDDEN)
        except OSError as exc:
            os.close(fd)
            raise FileRefused(f"cannot read: {exc.strerror}", Refusal.FORBIDDEN) from None
        except BaseException:
            os.close(fd)
            raise
        return fd, st, real

    @staticmethod
    def _map(fd: int, key: tuple[int, int, int, int], real: str, size: int) -> _Entry:
        if size == 0:
            return _Entry(key, real, 0, None, memoryview(b""))
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        return _Entry(key, real, size, mapping, memoryview(mapping))

    def _release(self, entry: _Entry) -> None:
        entry.refs -= 1
        if entry.refs > 0:
            return
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        with contextlib.suppress(BufferError):
            entry.view.release()
        entry.netascii = None
        if entry.mapping is not None:
            # A slice still referenced somewhere keeps the mapping until it goes.
            with contextlib.suppress(BufferError):
                entry.mapping.close()

    def close(self) -> None:
        """Drop every mapping (transfers must be ended first)."""
        for entry in list(self._entries.values()):
            entry.refs = 1
            self._release(entry)


def _check_under(under: str) -> None:
    if not under or under in (".", "..") or "/" in under or "\0" in under:
        raise ValueError(f"not a directory name: {under!r}")


def _read_all(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(size - offset, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
