"""Finding the simulator's compiled parts (engine.c, flatten.c), built by ``pip install``.

setup.py compiles each source into an extension of replay.sim when the package
is installed (wheels carry them); nothing is compiled at run time and nothing
is loaded from a cache directory. A part is looked for

1. next to this module (an installed package, an editable install, or a
   checkout after ``python3 setup.py build_ext --inplace``), then
2. in an installed mmreplay distribution, for a source checkout run with
   ``PYTHONPATH=.`` after ``pip install .`` (how the test suite runs).

A part is loaded only if it was built from the very source next to this module
(buildinfo.c records the source's SHA-256): a stale install next to an edited
checkout is refused with the command that rebuilds it, not run with structures
that no longer match. It is also refused if its file or directory can be
written by another user (a root tool must not load code anyone else can write).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import stat
import sys
import sysconfig
from pathlib import Path

from replay.errors import MmreplayError

HERE = Path(__file__).resolve().parent
REBUILD = "pip install . (or, in a checkout, with setuptools>=77: python3 setup.py build_ext --inplace)"


class EngineUnavailable(MmreplayError):
    """A compiled part is not installed, was built from another source, or does not load."""


def ext_suffix() -> str:
    """The file name suffix of this interpreter's extension modules (.cpython-311-x86_64-linux-gnu.so)."""
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def candidates(stem: str) -> list[Path]:
    """Where the compiled part ``stem`` may be, in the order tried (see the module docstring)."""
    name = f"{stem}{ext_suffix()}"
    out = [HERE / name]
    try:
        dists = list(importlib.metadata.distributions(name="mmreplay"))
    except Exception:  # a broken metadata directory on sys.path must not stop the replay
        dists = []
    for dist in dists:
        path = Path(str(dist.locate_file(f"replay/sim/{name}")))
        if path not in out:
            out.append(path)
    return out


def locate(stem: str, source: Path) -> Path:
    """The compiled part ``stem`` built from ``source``; EngineUnavailable saying why there is none."""
    what = {"engine.c": "engine", "flatten.c": "flattening"}.get(source.name, source.stem)
    found = [p for p in candidates(stem) if p.is_file()]
    if not found:
        raise EngineUnavailable(f"the compiled {what} is not installed ({stem}{ext_suffix()} was not "
                                f"built: install mmreplay with a C compiler and Python headers: {REBUILD})")
    want = source_sha256(source)
    refused = []
    for path in found:
        problem = unsafe(path)
        if problem is None:
            built_from = built_sha256(path)
            if want is None or built_from == want:
                return path
            problem = f"built from another {source.name}" if built_from else "records no source"
        refused.append(f"{path}: {problem}")
    raise EngineUnavailable(f"no usable compiled {what} ({'; '.join(refused)}); rebuild: {REBUILD}")


def source_sha256(source: Path) -> str | None:
    """SHA-256 of ``source``; None where the package was installed without its C sources."""
    try:
        return hashlib.sha256(source.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def built_sha256(path: Path) -> str | None:
    """The source SHA-256 that buildinfo.c recorded in the library ``path`` (None if it has none)."""
    try:
        lib = ctypes.CDLL(str(path))
        return (ctypes.c_char * 65).in_dll(lib, "mmr_source_sha256").value.decode()
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def unsafe(path: Path) -> str | None:
    """Why loading ``path`` would run code another user could have written, or None."""
    me = os.geteuid()
    for p in (path, path.parent):
        try:
            st = p.stat()
        except OSError as e:
            return f"cannot stat {p}: {e.strerror}"
        if st.st_uid not in (0, me):
            return f"{p} belongs to uid {st.st_uid}, not to root or to this user"
        if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
            return f"{p} is writable by every user"
    return None


_warned: set[str] = set()


def warn_fallback(reason: str, what: str) -> None:
    """Say once per process that a compiled part is not used (``what`` runs instead), and why."""
    if what not in _warned:
        _warned.add(what)
        print(f"mmreplay: {what}: {reason}", file=sys.stderr)
