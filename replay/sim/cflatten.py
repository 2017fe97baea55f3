"""The compiled op-tree walk: replay/sim/flatten.c, a CPython extension built at install.

Flattener.walk (program.py) is the reference; flatten.c visits the same ops in
the same order and calls back into the same Flattener for locks, kinds, gathers
and noise, so the Program is identical. setup.py builds it as
replay.sim._mmr_flatten; replay/sim/cbuild.py finds it and checks it was built
from this flatten.c. Where it is not installed, ``flatten(compiled=True)``
raises EngineUnavailable and simulate() walks in Python.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

from replay.sim.cbuild import EngineUnavailable, locate
from replay.sim.ops import Block, Critical, Gather, Span, Think, Thread

SOURCE = Path(__file__).with_name("flatten.c")
_module: ModuleType | None = None


def load() -> ModuleType:
    """The _mmr_flatten extension (EngineUnavailable if it is not installed or does not load)."""
    global _module
    if _module is None:
        path = locate("_mmr_flatten", SOURCE)
        try:
            _module = _import(path)
        except ImportError as e:
            raise EngineUnavailable(f"loading {path} failed: {e}") from None
    return _module


def _import(path: Path) -> ModuleType:
    """The extension module in ``path`` (ImportError if it does not load)."""
    loader = importlib.machinery.ExtensionFileLoader("replay.sim._mmr_flatten", str(path))
    spec = importlib.util.spec_from_file_location("replay.sim._mmr_flatten", path, loader=loader)
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
