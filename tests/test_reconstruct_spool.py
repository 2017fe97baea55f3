"""The columnar reconstruction's threads' columns written to files and read back a thread at a time
(columnar.SPOOL_ROWS): the same Workload and engine input as when they stay in memory, and never more than
one thread's columns held at once while the cross-thread steps run and the threads are built (every
thread's at once was the 60-s replay's peak: 60 M rows x 34 B)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from replay.trace.reader import Trace
from replay.workload import columnar
from replay.workload.reconstruct import reconstruct
from tests.test_reconstruct_columnar import SAMPLES, assert_same_engine_input, assert_same_workload

PICK = [p for p in SAMPLES if p.name in ("mmap1_threads", "fork-exit", "take-all-locks", "tlb_flush3_processes",
                                         "mmap2_processes", "page_fault2_processes")]


@pytest.mark.parametrize("path", PICK, ids=lambda p: p.name)
def test_spooled_columns_give_the_same_workload(path, monkeypatch, tmp_path):
    trace = Trace.open(path)
    kept = reconstruct(trace)
    monkeypatch.setattr(columnar, "SPOOL_ROWS", 0, raising=False)
    spooled = reconstruct(Trace.open(path))
    assert_same_workload(spooled, kept)
    assert_same_engine_input(spooled, kept)


def _threads_holding_columns() -> int:
    """Threads' column sets (in-memory _Cols or read _Spooled ones) with a numpy column alive now."""
    n = 0
    for o in gc.get_objects():
        if type(o).__name__ in ("_Cols", "_Spooled") and type(o).__module__ == columnar.__name__:
            if any(isinstance(v, np.ndarray) and len(v) for v in vars(o).values()):
                n += 1
    return n


def test_one_threads_columns_at_a_time(monkeypatch):
    """While each thread is built, and after the holders' fit, no other thread's columns are held (failed
    before: every thread's _Cols held from the load until its own thread was built)."""
    monkeypatch.setattr(columnar, "SPOOL_ROWS", 0, raising=False)
    seen = []
    real_thread, real_fit = columnar._thread, columnar._fit_measured_holds

    def thread(t, c, *args, **kwargs):
        seen.append(_threads_holding_columns())
        return real_thread(t, c, *args, **kwargs)

    def fit(*args, **kwargs):
        real_fit(*args, **kwargs)
        seen.append(_threads_holding_columns())

    monkeypatch.setattr(columnar, "_thread", thread)
    monkeypatch.setattr(columnar, "_fit_measured_holds", fit)
    threads = columnar.build_threads(Trace.open(SAMPLES[[p.name for p in SAMPLES].index("mmap1_threads")]))[0]
    assert sum(1 for t in threads if t.ops) >= 3
    assert seen and max(seen) <= 1, seen
