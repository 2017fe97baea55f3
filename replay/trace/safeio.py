"""Creating output as root without following anyone's links: the one way mmreplay writes files.

The recorder runs as root (often under sudo) and writes where a user asked. A
local user who can predict the path could plant a symbolic link or a
directory of their own there; perf's rules apply:

* a new output directory is created by us (``mkdir`` then ``open`` with
  ``O_NOFOLLOW`` relative to its parent's descriptor), and so are the missing
  parents; all belong to the invoking user (``SUDO_UID``/``SUDO_GID`` under
  sudo), set with ``fchown`` on the open descriptor, never by path;
* an existing output directory is accepted only if it is not a link, belongs
  to the invoking user, is not writable by others, and is empty; ``--force``
  empties it only if it holds an mmreplay trace or results directory and
  nothing else, and never a directory this command reads (:func:`note_input`);
* every file is created inside the directory's descriptor with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``; replacing a file means writing a fresh
  temporary one and renaming it over (rename replaces a planted link, it does
  not follow it).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from replay.errors import TraceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

#: (st_dev, st_ino) of every directory or file this process opened as input (Trace.open notes them).
_inputs: set[tuple[int, int]] = set()


def note_input(path: str | os.PathLike[str]) -> None:
    """Remember ``path`` as an input of this command: --force never replaces it."""
    try:
        st = os.stat(path)
    except OSError:
        return
    _inputs.add((st.st_dev, st.st_ino))


def forget_inputs() -> None:
    """A new command begins (the CLI calls this): what the last one read is no longer an input."""
    _inputs.clear()


def is_input(st: os.stat_result) -> bool:
    return (st.st_dev, st.st_ino) in _inputs


def invoking_user() -> tuple[int, int]:
    """(uid, gid) of the user who asked: SUDO_UID/SUDO_GID when root runs under sudo, else ours."""
    if os.geteuid() == 0:
        uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
        if uid.isdigit() and gid.isdigit():
            return int(uid), int(gid)
    return os.geteuid(), os.getegid()


def _owner() -> tuple[int, int] | None:
    """Whom new files must be given to, or None when they are born the user's."""
    uid, gid = invoking_user()
    return None if (uid, gid) == (os.geteuid(), os.getegid()) else (uid, gid)


def _check_ownership(path: Path, st: os.stat_result, what: str) -> None:
    uid, gid = invoking_user()
    if st.st_uid != uid:
        raise TraceError(path, f"{what} belongs to uid {st.st_uid}, not to the invoking user (uid {uid}); refusing it")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise TraceError(path, f"{what} is writable by every user; refusing it")
    if st.st_mode & stat.S_IWGRP and st.st_gid != gid:
        raise TraceError(path, f"{what} is writable by group {st.st_gid}; refusing it")


def _valid_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")
    return name


class OutputDir:
    """A directory held open by descriptor; files are created inside it, never through a link."""

    def __init__(self, path: Path, fd: int, owner: tuple[int, int] | None):
        self.path = path
        self.fd = fd
        self._owner = owner

    def create(self, name: str, mode: int = 0o644) -> int:
        """A new file's descriptor (O_EXCL|O_NOFOLLOW); given to the invoking user."""
        fd = os.open(_valid_name(name), _NEW_FILE, mode, dir_fd=self.fd)
        try:
            if self._owner is not None:
                os.fchown(fd, *self._owner)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def open_new(self, name: str) -> BinaryIO:
        """A new file, opened for unbuffered binary writing: a chunk written is in the file (a killed
        writer loses nothing that a write returned for)."""
        return os.fdopen(self.create(name), "wb", buffering=0)

    def remove(self, name: str) -> None:
        """Unlink ``name`` if present (a link is removed, not followed)."""
        try:
            os.unlink(_valid_name(name), dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def replace(self, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` atomically: a fresh ``name.tmp``, fsync'd, renamed over ``name``."""
        tmp = _valid_name(name) + ".tmp"
        self.remove(tmp)
        with os.fdopen(self.create(tmp), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(_valid_name(src), _valid_name(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def entries(self) -> list[str]:
        return os.listdir(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_dir_nofollow(path: Path) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as e:
        if os.path.islink(path):
            raise TraceError(path, "is a symbolic link; refusing to write through it") from None
        raise TraceError(path, f"cannot open ({e.strerror})") from None


def _make_dirs(path: Path, owner: tuple[int, int] | None) -> int:
    """Create ``path`` and its missing parents, each opened O_NOFOLLOW right after mkdir; the new
    directory's descriptor. Existing ancestors are used as they are (a path the user named)."""
    path = Path(os.path.abspath(path))
    missing: list[str] = []
    base = path
    while not os.path.lexists(base):
        missing.append(base.name)
        base = base.parent
    missing.reverse()
    try:
        parent = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise TraceError(base, f"cannot create a directory here ({e.strerror})") from None
    try:
        for i, name in enumerate(missing):
            where = base.joinpath(*missing[: i + 1])
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileExistsError:
                raise TraceError(where, "appeared while being created; refusing it") from None
            except OSError as e:
                raise TraceError(where, f"cannot create ({e.strerror})") from None
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
            except BaseException:
                os.close(fd)
                raise
            os.close(parent)
            parent = fd
        return parent
    except BaseException:
        os.close(parent)
        raise


#: A predicate on a non-empty existing directory (descriptor, entries): None if --force may empty it,
#: else why not.
Replaceable = Callable[[int, list[str]], "str | None"]


def open_output_dir(path: str | os.PathLike[str], *, force: bool = False,
                    replaceable: Replaceable | None = None, create: bool = True) -> OutputDir | None:
    """Open (creating it if missing) an output directory under the rules above; TraceError if refused.

    With ``create=False`` only check, and create nothing (None is returned): a producer refuses
    before its slow set-up.
    """
    p = Path(path)
    owner = _owner()
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        if not create:
            return None
        return OutputDir(p, _make_dirs(p, owner), owner)
    except OSError as e:
        raise TraceError(p, f"cannot use as output ({e.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise TraceError(p, "is a symbolic link; refusing to write through it")
    if not stat.S_ISDIR(st.st_mode):
        raise TraceError(p, "exists and is not a directory")
    fd = _open_dir_nofollow(p)
    keep = False
    try:
        st = os.fstat(fd)
        _check_ownership(p, st, "output directory")
        entries = os.listdir(fd)
        if entries:
            if not force:
                raise TraceError(p, "already exists and is not empty; use --force to replace an mmreplay trace")
            if is_input(st):
                raise TraceError(p, "is an input of this command; refusing to replace it")
            why = (replaceable or _nothing_replaceable)(fd, entries)
            if why is not None:
                raise TraceError(p, f"{why}; refusing to delete it even with --force")
            if create:
                for name in entries:
                    os.unlink(name, dir_fd=fd)
        if not create:
            return None
        keep = True
        return OutputDir(p, fd, owner)
    finally:
        if not keep:
            os.close(fd)


def open_existing_dir(path: str | os.PathLike[str]) -> OutputDir:
    """An existing directory to rewrite files in (repair): not a link, the invoking user's, not writable by
    others; TraceError if not."""
    p = Path(path)
    fd = _open_dir_nofollow(p)
    try:
        _check_ownership(p, os.fstat(fd), "directory")
    except BaseException:
        os.close(fd)
        raise
    return OutputDir(p, fd, _owner())


def _nothing_replaceable(fd: int, entries: list[str]) -> str:
    return "is not empty"


def mmreplay_dir(allowed: Iterable[str]) -> Replaceable:
    """Replaceable: a trace or results directory holding only manifest.json, the files named in
    ``allowed`` (the tables) and the temporary files a writer leaves; all regular files."""
    allowed = set(allowed)

    def check(fd: int, entries: list[str]) -> str | None:
        if "manifest.json" not in entries:
            return "is not empty and holds no trace"
        for name in entries:
            base = name[:-4] if name.endswith(".tmp") else name
            if base != "manifest.json" and base not in allowed:
                return f"holds {name!r}, which mmreplay did not write"
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                return f"holds {name!r}, which is not a regular file"
        try:
            mfd = os.open("manifest.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            with os.fdopen(mfd, "rb") as f:
                d = json.loads(f.read(1 << 22))
        except (OSError, ValueError):
            return "holds a manifest.json that is not an mmreplay manifest"
        if not isinstance(d, dict) or d.get("format") != "mmreplay-trace" or d.get("kind") not in ("trace", "results"):
            return "holds a manifest.json that is not an mmreplay manifest"
        return None

    return check


def write_file(path: str | os.PathLike[str], data: bytes, *, force: bool = False,
               ours: Callable[[bytes], bool] | None = None) -> Path:
    """Write one output file (a report page, a PNG) under the same rules; the path."""
    with replacing(path, force=force, ours=ours, mode="wb") as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, force: bool = False, ours: Callable[[bytes], bool] | None = None,
              mode: str = "w") -> Iterator[IO[Any]]:
    """A new file object whose content replaces ``path`` when the block ends without an error: checked
    by :func:`check_file`, written to a fresh ``.NAME.PID.tmp`` (O_EXCL|O_NOFOLLOW) beside it, given to
    the invoking user, renamed over ``path``; removed instead if the block fails."""
    p = check_file(path, force=force, ours=ours)
    try:
        fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise TraceError(p.parent, f"cannot open ({e.strerror})") from None
    d = OutputDir(p.parent, fd, _owner())
    tmp = f".{p.name}.{os.getpid()}.tmp"
    try:
        try:
            f = os.fdopen(d.create(tmp), mode)
        except OSError as e:
            raise TraceError(p, f"cannot create ({e.strerror})") from None
        try:
            with f:
                yield f
            d.rename(tmp, p.name)
        except BaseException:
            d.remove(tmp)
            raise
    except OSError as e:
        raise TraceError(p, f"cannot write ({e.strerror or e})") from None
    finally:
        d.close()


def check_file(path: str | os.PathLike[str], *, force: bool = False,
               ours: Callable[[bytes], bool] | None = None) -> Path:
    """Whether ``path`` may be written (TraceError if not): new, or with ``force`` a regular file of the
    invoking user that ``ours`` recognises by its first 4 KiB as mmreplay's own output, and no input."""
    p = Path(path)
    if not p.parent.is_dir():
        raise TraceError(p.parent, "is not a directory")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    if stat.S_ISLNK(st.st_mode):
        raise TraceError(p, "is a symbolic link; refusing to write through it")
    if not stat.S_ISREG(st.st_mode):
        raise TraceError(p, "exists and is not a regular file")
    if not force:
        raise TraceError(p, "exists; use --force to replace it")
    if is_input(st):
        raise TraceError(p, "is an input of this command; refusing to replace it")
    _check_ownership(p, st, "file")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise TraceError(p, f"cannot read ({e.strerror})") from None
    if ours is not None and not ours(head):
        raise TraceError(p, "was not written by mmreplay; refusing to replace it even with --force")
    return p


def open_regular(path: Path) -> int:
    """Open an input file for reading, refusing FIFOs, devices and directories before any read
    (O_NONBLOCK: opening a FIFO does not wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise TraceError(path, f"cannot read ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TraceError(path, "is not a regular file; refusing to read it")
    return fd
