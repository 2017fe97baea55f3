"""What a long recording's replay costs: passes over the tables, calls per row, bytes per row held
(issue 13's targets; benchmarks/replay_scale.py measures them). Results stay those of the reference:
tests/test_reconstruct_columnar.py and tests/test_reconstruct_emit.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from replay.batch import RunSpec, Settings, config_of
from replay.sim import neutral
from replay.sim.costs import Costs
from replay.sim.neutral import Emitted
from replay.sim.simulate import program_for
from replay.trace.reader import Trace
from replay.trace.validate import check_values
from replay.workload import reconstruct

SAMPLES = Path(__file__).resolve().parents[1] / "sample_traces"


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_emitted_rows_are_flattened_a_window_at_a_time_not_a_piece_at_a_time(mode, monkeypatch):
    """A thread's Emitted pieces (thousands in a 10-s recording, between its rare segments) are flattened
    by one vectorised pass per WINDOW rows: before, a pass per piece (106 for this trace's busiest thread)."""
    w = reconstruct(Trace.open(SAMPLES / "mmap-merge"), emit=True)
    ncs = [nc for nc in (neutral.emitted(t) for t in w.threads) if nc is not None]
    pieces = max(sum(type(op) is Emitted for op in t.ops) for t in w.threads)
    assert pieces > 100
    calls = []
    real = neutral._window

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(neutral, "_window", counted)
    settings = Settings(cpus=w.cpus, preempt="full", mode=mode, costs=Costs(), keep_tables=False)
    program_for(w, config_of(RunSpec("current", 0), settings))
    assert len(calls) == sum(math.ceil(len(nc) / neutral.WINDOW) for nc in ncs)


def test_check_values_reads_each_table_once(monkeypatch):
    """The value checks take one pass per table (minimum durations, first and last event, intervals running
    outside the span, together): before, one more per duration column (lock_holds: three passes)."""
    trace = Trace.open(SAMPLES / "mmap1_threads")
    collects = []
    real = pl.LazyFrame.collect

    def counted(self, *args, **kwargs):
        collects.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pl.LazyFrame, "collect", counted)
    check_values(trace, ["lock_holds"])
    assert len(collects) == 1


def test_check_values_still_refuses_an_interval_running_outside_the_span(tmp_path):
    """The interval check reads ts clipped to the span: a duration that runs past the end is still refused."""
    import shutil

    import pyarrow as pa

    from replay.errors import TraceError

    src = SAMPLES / "mmap1_threads"
    dst = tmp_path / "t"
    shutil.copytree(src, dst)
    end_ns = Trace.open(src).manifest.end_ns
    path = dst / Trace.open(src).info("lock_holds").path.name
    with pa.OSFile(str(path)) as f:
        table = pa.ipc.open_file(f).read_all()
    dur = table.column("dur").to_numpy().copy()
    dur[0] = end_ns - table.column("ts").to_numpy()[0] + 2_000_000_000
    table = table.set_column(table.schema.get_field_index("dur"), "dur", pa.array(dur, pa.int64()))
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as wr:
        wr.write_table(table)
    with pytest.raises(TraceError, match="runs outside the recorded span"):
        check_values(Trace.open(dst), ["lock_holds"])


def test_the_threads_columns_hold_sequence_numbers_as_int32():
    """Every thread's measured intervals are held at once until each thread is built: their sequence
    numbers (they only order ties) are 4 bytes, not 8, when they fit (240 MB of a 60-s recording's)."""
    from replay.workload.columnar import _Load

    _, cols = _Load(Trace.open(SAMPLES / "tlb_flush2_threads")).run()
    assert cols and all(c.seq.dtype == np.int32 for c in cols.values())


def test_the_syscalls_views_go_before_the_threads_columns_are_copied(monkeypatch):
    """_Load's per-thread views of the syscalls table (the faults' and tier-1 gathers' reading) are let go
    before _cols copies every thread's columns: they kept the whole table's ts, end and code arrays alive
    through that copy (570 MB of a 60-s recording's)."""
    from replay.workload import columnar

    seen = []
    real = columnar._Load._cols

    def cols(self):
        seen.append(dict(self.sys_by_tid))
        return real(self)

    monkeypatch.setattr(columnar._Load, "_cols", cols)
    columnar._Load(Trace.open(SAMPLES / "mmap1_threads")).run()
    assert seen == [{}]


def test_the_nesting_order_is_lexsorts_without_its_four_passes(monkeypatch):
    """columnar._nest_order gives np.lexsort((seq, kind, -end, start))'s order, ties in start (and in every
    key) included; the reconstruction no longer calls lexsort over a thread's every interval."""
    from replay.workload import columnar

    rng = np.random.default_rng(13)
    for n in (0, 1, 2, 50, 5000):
        start = rng.integers(0, max(n // 3, 1), n)
        end = start + rng.integers(0, 4, n)
        kind = rng.integers(0, 3, n).astype(np.int8)
        seq = rng.integers(0, 3, n)
        assert (columnar._nest_order(start, end, kind, seq) == np.lexsort((seq, kind, -end, start))).all()
    sizes = []
    real = np.lexsort

    def counted(keys, *args, **kwargs):
        if len(keys) == 4 and keys[1].dtype == np.int8:  # (seq, kind, -end, start): the nesting order's
            sizes.append(len(keys[0]))
        return real(keys, *args, **kwargs)

    monkeypatch.setattr(np, "lexsort", counted)
    trace = Trace.open(SAMPLES / "mmap1_threads")
    intervals = trace.rows("lock_holds") + trace.rows("syscalls")
    reconstruct(trace, emit=True)
    assert sum(sizes) < intervals // 10  # only the rows whose start ties: before, every thread's every row
