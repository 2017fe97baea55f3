"""Build the simulator's compiled parts at install time (``pip install .``).

Everything else is declared in pyproject.toml. Two extensions are built:

* ``replay.sim._engine`` from engine.c: plain C (no Python API) that
  replay/sim/cengine.py drives through ctypes;
* ``replay.sim._mmr_flatten`` from flatten.c: a CPython extension
  (replay/sim/cflatten.py), which needs this interpreter's headers.

Each also gets buildinfo.c, which records the SHA-256 of its main source, so
that the Python side refuses a library built from another version of it.
Without a C compiler or the Python headers the build stops with a message that
says what to install; ``MMREPLAY_PURE_PYTHON=1`` installs without the compiled
parts instead (every replay then runs the Python reference, about 10x slower,
and says so).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
SIM = Path("replay", "sim")
# -O2 whatever this Python was built with (a debug build has -O0). -std=c11 (ISO C) keeps GCC from contracting
# a*b+c into an FMA, and -ffp-contract=off says so for every compiler: the engine must round exactly as Python
# does to give the reference engine's results bit for bit. -fno-wrapv undoes the -fwrapv of Python's own
# CFLAGS: these are the flags the engine was built and tested with at first use before; with -fwrapv a fresh
# mprotect-split recording deadlocked in tests/test_replay_live_matrix.py (twice) where without it it did not,
# a hint of a signed overflow in engine.c still to find.
CFLAGS = ["-O2", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-fno-wrapv"]
PURE_PYTHON_ENV = "MMREPLAY_PURE_PYTHON"


def _sha256(source: Path) -> str:
    return hashlib.sha256((HERE / source).read_bytes()).hexdigest()


def _extension(name: str, source: str, **kw) -> Extension:
    main = SIM / source
    return Extension(name, [str(main), str(SIM / "buildinfo.c")], extra_compile_args=CFLAGS,
                     define_macros=[("MMR_SOURCE_SHA256", f'"{_sha256(main)}"')], **kw)


class BuildExt(build_ext):
    """build_ext that says what is missing, in one paragraph, instead of a compiler's traceback."""

    def build_extensions(self) -> None:
        cc = getattr(self.compiler, "compiler_so", None) or ["cc"]
        if not shutil.which(cc[0]):
            self._fail(f"no C compiler: {cc[0]!r} was not found (install gcc, or set CC)")
        include = sysconfig.get_paths().get("include") or ""
        if not (Path(include) / "Python.h").exists():
            self._fail(f"no Python.h under {include!r} (install this Python's headers: python3-dev on Debian)")
        try:
            super().build_extensions()
        except Exception as e:  # CompileError, LinkError, ... : say which part and how to get past it
            self._fail(f"compiling failed: {e}")

    @staticmethod
    def _fail(reason: str) -> None:
        raise SystemExit(
            f"mmreplay: cannot build the compiled simulator: {reason}.\n"
            f"Install the missing tool and run pip again, or set {PURE_PYTHON_ENV}=1 to install without it "
            "(replays then run the pure-Python reference engine: the same results, about 10x slower)."
        )


def extensions() -> list[Extension]:
    """The compiled parts, none with $MMREPLAY_PURE_PYTHON=1."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return []
    return [_extension("replay.sim._engine", "engine.c", libraries=["m"]),
            _extension("replay.sim._mmr_flatten", "flatten.c")]


if __name__ == "__main__":  # also when setuptools' build backend runs this file (tests import it)
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
