"""Building the simulator's C parts (engine.c, flatten.c) on first use.

Each source is compiled with the system C compiler ($CC, else cc, gcc or clang)
into a shared object in a cache directory, named by a hash of the source, the
compiler and its flags: a checkout, an installed package and concurrent
``--jobs`` processes all find or build the same file, and an edited source is
rebuilt. Nothing is built at install time, so ``pip install .`` needs no
compiler; without one the Python implementations run instead.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from replay.cachedir import cache_dir as shared_cache_dir
from replay.errors import MmreplayError


class EngineUnavailable(MmreplayError):
    """A compiled part cannot be built or loaded here (no compiler, no headers, build failure)."""


def cache_dir() -> Path:
    """$MMREPLAY_ENGINE_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/mmreplay/engine, else a temporary directory."""
    try:
        return shared_cache_dir("engine", "MMREPLAY_ENGINE_CACHE")
    except MmreplayError as e:
        raise EngineUnavailable(str(e)) from None


def compiler() -> list[str]:
    """$CC (split like a shell would), else the first of cc, gcc, clang on $PATH."""
    cc = os.environ.get("CC")
    if cc:
        argv = shlex.split(cc)
        if shutil.which(argv[0]):
            return argv
        raise EngineUnavailable(f"C compiler {cc!r} ($CC) not found")
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise EngineUnavailable("no C compiler (cc, gcc or clang) to build the compiled simulator")


def build(source: Path, cflags: Sequence[str], libs: Sequence[str] = (), suffix: str = ".so") -> Path:
    """The shared object built from ``source`` (built now unless cached); EngineUnavailable on failure."""
    text = source.read_bytes()
    cc = compiler()
    flags = [*cflags, "-fPIC", "-shared"]
    key = hashlib.sha256(text + " ".join([*cc, *flags, *libs, platform.machine()]).encode()).hexdigest()[:16]
    out_dir = cache_dir()
    lib = out_dir / f"{source.stem}-{key}{suffix}"
    if lib.exists():
        return lib
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=suffix, dir=out_dir)
    except OSError as e:
        raise EngineUnavailable(f"cannot write to {out_dir}: {e.strerror}") from None
    os.close(fd)
    cmd = [*cc, *flags, "-o", tmp, str(source), *libs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        os.unlink(tmp)
        raise EngineUnavailable(f"building {source.name} failed: {' '.join(cmd)}: {e}") from None
    if proc.returncode != 0:
        os.unlink(tmp)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), None) or \
            (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise EngineUnavailable(f"building {source.name} failed: {' '.join(cmd)}: {first}")
    os.replace(tmp, lib)  # concurrent builders each rename a complete file
    return lib


T = TypeVar("T")


def build_and_open(source: Path, cflags: Sequence[str], open_: Callable[[Path], T], libs: Sequence[str] = (),
                   suffix: str = ".so") -> T:
    """``open_`` of the shared object built from ``source``. A cached file that does not open (cut
    short by a full disk or a killed copy) is built again, once; EngineUnavailable if that fails too."""
    path = build(source, cflags, libs, suffix)
    try:
        return open_(path)
    except (OSError, ImportError):
        try:
            path.unlink()
        except OSError:
            pass
    path = build(source, cflags, libs, suffix)
    try:
        return open_(path)
    except (OSError, ImportError) as e:
        raise EngineUnavailable(f"loading {path} failed: {e}") from None


_warned: set[str] = set()


def warn_fallback(reason: str, what: str) -> None:
    """Say once per process that a compiled part is not used (``what`` runs instead), and why."""
    if what not in _warned:
        _warned.add(what)
        print(f"mmreplay: {what}: {reason}", file=sys.stderr)
