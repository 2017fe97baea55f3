"""The columnar loader's syscall columns (numpy sort, exit_group stretch by searchsorted) against
intervals.syscall_table (polars sort and join), column by column."""

from __future__ import annotations

import numpy as np

from replay.trace.reader import Trace
from replay.workload import columnar
from replay.workload.intervals import lock_holds_table, syscall_table
from tests.test_reconstruct_exit_teardown import cow_then_exit
from tests.tracebuilder import TraceBuilder


def same_as_syscall_table(trace: Trace) -> None:
    sc = syscall_table(trace)
    tid, ts, seq, pid, dur, code, names = columnar._syscall_columns(trace)
    for name, got in (("tid", tid), ("ts", ts), ("seq", seq), ("pid", pid), ("dur", dur)):
        want = sc[name].to_numpy()
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert np.array_equal(code, sc["name"].to_physical().to_numpy().astype(np.int64))
    assert names == sc["name"].dtype.categories.to_list()


def interleaved(b: TraceBuilder) -> None:
    """Two threads whose system calls alternate in time: the file's rows are not in tid order."""
    hi, lo = b.thread(300, comm="a", cpu=0), b.thread(200, comm="b", cpu=1)
    for i in range(20):
        for t in (hi, lo):
            with t.syscall("mmap" if i % 2 else "munmap"):
                with t.mmap_lock("write"):
                    t.run(1_000 + 10 * i)
            t.run(500)


def test_an_exit_group_is_stretched_as_syscall_table_stretches_it(tmp_path):
    b = TraceBuilder(cpus=2)
    interleaved(b)
    cow_then_exit(b, 400, cpu=0)
    trace = Trace.open(b.write(tmp_path / "t"))
    tid, ts, _, _, dur, code, names = columnar._syscall_columns(trace)
    x = np.flatnonzero(code == names.index("exit_group"))
    raw = trace.scan("syscalls").collect()
    assert len(x) == 1 and dur[x[0]] > raw.filter(raw["name"] == "exit_group")["dur"][0]  # stretched
    assert not np.all(np.diff(raw["tid"].to_numpy()) >= 0)  # the file is not sorted by tid
    same_as_syscall_table(trace)


def test_without_an_exit_the_columns_are_the_sorted_table(tmp_path):
    b = TraceBuilder(cpus=2)
    interleaved(b)
    same_as_syscall_table(Trace.open(b.write(tmp_path / "t")))


def test_lock_holds_read_a_column_at_a_time_are_polars_sort_of_the_table(tmp_path):
    """lock_holds_table reads and gathers a column at a time: the frame polars' collect and sort give."""
    b = TraceBuilder(cpus=2)
    interleaved(b)
    trace = Trace.open(b.write(tmp_path / "t"))
    cols = ["tid", "ts", "seq", "pid", "dur", "wait", "lock_addr", "lock_class", "mode", "success"]
    raw = trace.scan("lock_holds").select(cols).collect()
    assert not np.all(np.diff(raw["tid"].to_numpy()) >= 0)  # the file is not sorted by tid
    assert lock_holds_table(trace, cols).equals(raw.sort("tid", "ts", "seq"))
