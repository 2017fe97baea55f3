"""Where mmreplay keeps what it builds on first use (the compiled simulator, the workload programs).

What is built there is loaded (a shared object) or run (a workload program), often by root. So a cache
directory is used only if nobody else can put code in it: it is created with mode 0700, and before
every use it is checked to be a real directory (not a link), owned by the user running mmreplay, not
writable by anyone else, below directories that nobody else can write either (the sticky /tmp
excepted). Otherwise the next candidate is tried, and if none is private the command refuses with one
line naming the reason.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from replay.errors import MmreplayError


class UnsafeCache(MmreplayError):
    """A cache directory or file someone else could have written code into."""


def cache_dir(name: str, env: str) -> Path:
    """The first private (created if needed) of $``env``, $XDG_CACHE_HOME (or ~/.cache)/mmreplay/``name``
    and <tmp>/mmreplay-``name``-<uid>; with $``env`` set, only that. MmreplayError if none is."""
    explicit = os.environ.get(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    fallback = Path(tempfile.gettempdir()) / f"mmreplay-{name}-{os.geteuid()}"
    candidates = (Path(explicit),) if explicit else (Path(base) / "mmreplay" / name, fallback)
    reasons = []
    for candidate in candidates:
        try:
            return private_dir(candidate)
        except UnsafeCache as e:
            reasons.append(str(e))
        except OSError as e:
            reasons.append(f"{candidate}: {e.strerror or e}")
    raise UnsafeCache(f"no private directory for mmreplay's {name} cache ({'; '.join(reasons)}); "
                      f"set {env} to a directory only you can write")


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path``, created with mode 0700 if missing, after checking nobody else can write code into it."""
    p = Path(os.path.abspath(path))
    _check_ancestors(p)
    if not os.path.lexists(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass  # a concurrent mmreplay made it: checked below like any other
    verify_private_dir(p)
    return p


def verify_private_dir(path: Path) -> None:
    """UnsafeCache unless ``path`` is a directory (not a link) of ours that no one else can write; a
    directory of ours readable by others is narrowed to 0700."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafeCache(f"{path}: is a symbolic link; refusing to load code from it") from None
        raise UnsafeCache(f"{path}: cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise UnsafeCache(f"{path}: belongs to uid {st.st_uid}, not to uid {os.geteuid()}; "
                              "refusing to load code from it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeCache(f"{path}: is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                              "refusing to load code from it")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _check_ancestors(path: Path) -> None:
    """UnsafeCache if a directory above ``path`` could let someone else replace what is below it."""
    euid = os.geteuid()
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue
        if st.st_uid not in (0, euid):
            raise UnsafeCache(f"{parent}: belongs to uid {st.st_uid}; refusing a code cache below it")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise UnsafeCache(f"{parent}: is writable by others; refusing a code cache below it")


def verify_code_file(path: Path) -> Path:
    """``path`` if it is a regular file of ours that no one else can write (checked before loading or
    running it); else UnsafeCache."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise UnsafeCache(f"{path}: cannot check ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeCache(f"{path}: is not a regular file; refusing to load it")
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(f"{path}: could have been written by someone else (uid {st.st_uid}, mode "
                          f"{stat.S_IMODE(st.st_mode):o}); refusing to load it")
    return path
