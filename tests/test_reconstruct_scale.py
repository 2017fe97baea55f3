"""--scale-tasks: copies are new processes sharing the shared locks, never the mm-private ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.errors import UsageError
from replay.sim.ops import Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.workload import scale_tasks

MM = 0xFFFF_8880_0000_1000
FILE = 0xFFFF_8880_2000_0100


def thread(tid: int) -> Thread:
    munmap = Span("munmap", (
        Think(100),
        Critical(LockRef("mmap_lock", MM + tid), "write", 50, body=(
            Critical(LockRef("i_mmap_rwsem", FILE), "write", 400, derived=True),
            Gather(64, mm=MM + tid),
        )),
    ))
    return Thread(tid, tid, [Think(1_000), munmap], mm=MM + tid, start_ns=tid)


def workload(n: int) -> Workload:
    return Workload([thread(i + 1) for i in range(n)], cpus=4, derived_classes=frozenset({"i_mmap_rwsem"}))


def locks(t: Thread) -> dict[str, int]:
    out = {}
    todo = list(t.ops)
    while todo:
        op = todo.pop()
        if isinstance(op, Critical):
            out[op.lock.lock_class] = op.lock.addr
        if isinstance(op, Critical | Span):
            todo.extend(op.body)
        if isinstance(op, Gather):
            out["gather_mm"] = op.mm
    return out


def test_doubling_copies_every_thread_into_a_new_process():
    w = scale_tasks(workload(3), 2)
    assert len(w.threads) == 6
    assert len({t.tid for t in w.threads}) == 6 and len({t.pid for t in w.threads}) == 6
    orig, copy = w.threads[0], w.threads[3]
    assert copy.start_ns == orig.start_ns and copy.comm == orig.comm
    lo, lc = locks(orig), locks(copy)
    assert lc["i_mmap_rwsem"] == lo["i_mmap_rwsem"]  # the file is shared
    assert lc["mmap_lock"] != lo["mmap_lock"]  # the address space is not
    assert lc["gather_mm"] == copy.mm != orig.mm
    assert w.derived_classes == {"i_mmap_rwsem"}


def test_halving_keeps_the_earliest_threads():
    w = scale_tasks(workload(4), 0.5)
    assert [t.tid for t in w.threads] == [1, 2]


@settings(deadline=None)  # timing is not what it checks; a loaded machine missed the 200 ms default
@given(n=st.integers(1, 12), k=st.floats(0.05, 6.0, allow_nan=False))
def test_thread_count_scales_by_k(n, k):
    w = scale_tasks(workload(n), k)
    expected = max(1, round(k * n)) if k < 1 else math.floor(k) * n + round((k - math.floor(k)) * n)
    assert len(w.threads) == expected
    assert len({t.tid for t in w.threads}) == expected
    assert scale_tasks(workload(n), k) == w  # deterministic


@pytest.mark.parametrize("k", [0, -1, float("nan"), float("inf")])
def test_nonsense_factors_are_usage_errors(k):
    with pytest.raises(UsageError, match="--scale-tasks"):
        scale_tasks(workload(2), k)
