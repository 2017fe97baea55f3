"""The compiled op-tree walk: replay/sim/flatten.c, a CPython extension built on first use.

Flattener.walk (program.py) is the reference; flatten.c visits the same ops in
the same order and calls back into the same Flattener for locks, kinds, gathers
and noise, so the Program is identical. It needs this interpreter's headers
(Python.h); without them ``flatten(compiled=True)`` raises EngineUnavailable
and simulate() walks in Python.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sysconfig
from pathlib import Path
from types import ModuleType

import numpy as np

from replay.sim.cbuild import EngineUnavailable, build_and_open
from replay.sim.ops import Block, Critical, Gather, Span, Think, Thread

SOURCE = Path(__file__).with_name("flatten.c")
_module: ModuleType | None = None


def load() -> ModuleType:
    """The _mmr_flatten extension, built if needed (EngineUnavailable if it cannot be)."""
    global _module
    if _module is None:
        include = sysconfig.get_paths().get("include") or ""
        if not (Path(include) / "Python.h").exists():
            raise EngineUnavailable(f"no Python.h under {include!r} to build the compiled flattening "
                                    "(install the python3-dev package)")
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        _module = build_and_open(SOURCE, ("-O2", f"-I{include}"), _import, suffix=suffix)
    return _module


def _import(path: Path) -> ModuleType:
    """The extension module in ``path`` (ImportError if it does not load)."""
    loader = importlib.machinery.ExtensionFileLoader("_mmr_flatten", str(path))
    spec = importlib.util.spec_from_file_location("_mmr_flatten", path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def walk(flattener, threads: list[Thread]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattener.walk, compiled: (code, points, start) of the Program."""
    from replay.sim.program import WIDTH

    code, points, start = load().walk(flattener, threads, (Think, Block, Critical, Gather, Span),
                                      flattener.open_mode, flattener.full, flattener.voluntary)
    return (np.frombuffer(code, dtype=np.int64).reshape(-1, WIDTH), np.frombuffer(points, dtype=np.uint8),
            np.asarray(start, dtype=np.int64))
