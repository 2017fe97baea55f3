"""Emitted reconstruction (the common segments as policy-neutral instructions) gives what the op objects give.

``reconstruct(trace, emit=True)`` (what ``replay`` and ``sweep`` use) writes the
fast segments of each thread as rows of a NeutralCode (replay/workload/emit.py,
replay/sim/neutral.py) instead of op objects; ``emit=False`` is the reference.
On every shipped sample, on random traces built with tests/tracebuilder.py
(hypothesis) and on workloads recorded fresh, the two must give:

* the same thread list and reconstruction facts (meta, notes);
* the same census (sections per class, spans per kind, gathers, dependent classes) and lock classes;
* the same engine input: each Program's arrays byte for byte and its lock and kind
  tables, from both walks (compiled and Python), under several sets, preemption
  models, closed and open replay, with and without noise; and the same files from
  the streamed flattening the CLI uses;
* the same replay results for the same seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay import batch
from replay.compare import census
from replay.policies import resolve
from replay.sim import SimConfig, neutral
from replay.sim.neutral import Emitted
from replay.sim.ops import Workload
from replay.sim.simulate import program_for
from replay.trace.reader import Trace
from replay.workload import emit as emit_rows
from replay.workload import reconstruct
from tests.live import record_workloads
from tests.test_reconstruct_columnar import assert_same_results
from tests.tracebuilder import FILE_A, TraceBuilder

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p for p in (ROOT / "sample_traces").iterdir() if (p / "manifest.json").exists())
MODELS = (("2.6.39", "none", "closed"), ("current", "voluntary", "closed"), ("as-recorded", "full", "open"),
          ("3.0", "voluntary", "open"))


def both(trace: Path) -> tuple[Workload, Workload]:
    """(emitted, op objects) workloads of ``trace``."""
    return reconstruct(Trace.open(trace), emit=True), reconstruct(Trace.open(trace))


def configs(w: Workload, engines=("c", "python"), noise=(0.0, 0.3)) -> list[SimConfig]:
    return [SimConfig(cpus=w.cpus, policy=resolve(s), preempt=p, seed=2, mode=m, engine=e, perturb=x)
            for s, p, m in MODELS for e in engines for x in noise]


def assert_same(e: Workload, r: Workload, cfgs: list[SimConfig]) -> None:
    assert repr(e.meta) == repr(r.meta)
    assert (e.cpus, e.name, e.derived_classes, e.contiguous) == (r.cpus, r.name, r.derived_classes, r.contiguous)
    assert [(t.tid, t.pid, t.mm, t.comm, t.start_ns, t.prio) for t in e.threads] == \
        [(t.tid, t.pid, t.mm, t.comm, t.start_ns, t.prio) for t in r.threads]
    assert census(e) == census(r)
    assert e.lock_classes == r.lock_classes
    for cfg in cfgs:
        pe, pr = program_for(e, cfg), program_for(r, cfg)
        what = f"{cfg.policy.name} {cfg.preempt} {cfg.mode} {cfg.engine} perturb={cfg.perturb}"
        for name in ("code", "points", "start", "floats"):
            a, b = getattr(pe, name), getattr(pr, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f"{what}: {name} differs"
        assert pe.locks == pr.locks and pe.kinds == pr.kinds, what


def pieces(w: Workload) -> tuple[int, int]:
    """(op objects at top level, Emitted pieces) of a workload."""
    em = sum(1 for t in w.threads for op in t.ops if type(op) is Emitted)
    return sum(len(t.ops) for t in w.threads) - em, em


@pytest.mark.parametrize("trace", SAMPLES, ids=[p.name for p in SAMPLES])
def test_emitted_reconstruction_is_the_op_objects_on_every_sample(trace):
    e, r = both(trace)
    assert r.threads
    assert_same(e, r, configs(r, engines=("c",)) + configs(r, engines=("python",), noise=(0.3,))[:2])
    assert_same_results(e, r, ("2.6.39", "current"))


@pytest.mark.parametrize("trace", SAMPLES[:4], ids=[p.name for p in SAMPLES[:4]])
def test_the_streamed_flattening_of_an_emitted_workload_writes_the_same_programs(trace, tmp_path):
    """The CLI's path: every set flattened thread by thread into files, the threads' ops freed."""
    e, r = both(trace)
    cfgs = [SimConfig(cpus=r.cpus, policy=resolve(s), preempt=p, seed=1, mode=m) for s, p, m in MODELS]
    expected = [program_for(r, c) for c in cfgs]
    dirs = [tmp_path / str(i) for i in range(len(cfgs))]
    tables = batch._flatten_shared(e, cfgs, dirs, release=True)
    assert all(t.ops == [] for t in e.threads)
    for want, d, (locks, kinds) in zip(expected, dirs, tables, strict=True):
        got = batch._mapped(str(d), locks, kinds)
        for name in batch.PROGRAM_ARRAYS:
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
        assert got.locks == want.locks and got.kinds == want.kinds


def test_the_common_segments_leave_no_op_object():
    """mmap1_threads is system calls around mmap_lock sections: nearly all of it is emitted, not ops."""
    e, r = both(ROOT / "sample_traces" / "mmap1_threads")
    ops, em = pieces(e)
    assert em > 0 and ops + em < pieces(r)[0] / 50


def test_a_write_then_read_section_at_top_level_stays_one_downgraded_section(tmp_path):
    """reconstruct._body merges a write section followed at once by a read section of the same lock across
    roots too: the pair goes to the op objects, which compose it (it would be two sections as rows)."""
    b = TraceBuilder()
    t = b.thread(7)
    for _ in range(3):
        t.run(300)
        with t.syscall("mmap"), t.mmap_lock("write", wait=100):
            t.run(500)
        t.run(200)
        with t.mmap_lock("write", wait=50):
            t.run(700)
        with t.mmap_lock("read"):
            t.run(900)
    e, r = both(b.write(tmp_path / "t"))
    assert_same(e, r, configs(r, engines=("c",), noise=(0.0,)))
    assert any(type(op) is Emitted for op in e.threads[0].ops)
    assert sum(1 for op in r.threads[0].ops if getattr(op, "downgrade", None) is not None) == 3


# -- windows and spool -----------------------------------------------------------------------

def windowed(trace: Path, spool: Path, monkeypatch, chunk: int = 97, window: int = 1001) -> Workload:
    """The emitted workload of ``trace`` made ``chunk`` intervals at a time (emit.CHUNK: whole segments, so
    a little more), its rows written to files in ``spool`` and read ``window`` rows at a time
    (neutral.WINDOW, left patched). Windows of a few rows are for small traces: each costs Python calls."""
    spool.mkdir()
    with monkeypatch.context() as m:
        m.setattr(emit_rows, "CHUNK", chunk)
        w = reconstruct(Trace.open(trace), emit=True, spool=spool)
    assert list(spool.iterdir()) == []  # the files are unlinked once mapped
    monkeypatch.setattr(neutral, "WINDOW", window)
    return w


def assert_spooled(w: Workload) -> None:
    ncs = {id(op.neutral): op.neutral for t in w.threads for op in t.ops if type(op) is Emitted}
    assert ncs and all(nc.maps for nc in ncs.values() if len(nc))


@pytest.mark.parametrize("trace", SAMPLES, ids=[p.name for p in SAMPLES])
def test_a_reconstruction_in_tiny_windows_spooled_to_files_is_the_whole_one(trace, tmp_path, monkeypatch):
    """Rows made a hundred intervals at a time (whole segments: a window never cuts one), written to files
    and mapped, read a thousand rows at a time: the same census, programs (every model, noise), streamed
    files and results as the reference's op objects. (The random traces below take windows of 2 and 4.)"""
    r = reconstruct(Trace.open(trace))
    e = windowed(trace, tmp_path / "spool", monkeypatch)
    if any(type(op) is Emitted for t in e.threads for op in t.ops):
        assert_spooled(e)
    assert_same(e, r, configs(r, engines=("c",)))
    assert_same_results(e, r, ("current",))
    cfgs = [SimConfig(cpus=r.cpus, policy=resolve(s), preempt=p, seed=1, mode=m) for s, p, m in MODELS]
    dirs = [tmp_path / str(i) for i in range(len(cfgs))]
    tables = batch._flatten_shared(e, cfgs, dirs, release=True)
    for cfg, d, (locks, kinds) in zip(cfgs, dirs, tables, strict=True):
        want, got = program_for(r, cfg), batch._mapped(str(d), locks, kinds)
        for name in batch.PROGRAM_ARRAYS:
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name


def test_a_spooled_workload_pickles_as_arrays(tmp_path, monkeypatch):
    """A spawned worker gets the workload pickled: a spooled NeutralCode goes as its arrays, not its maps."""
    import pickle

    e = windowed(ROOT / "sample_traces" / "mmap1_threads", tmp_path / "spool", monkeypatch, 1 << 18, 1 << 20)
    assert_spooled(e)
    back = pickle.loads(pickle.dumps(e))
    r = reconstruct(Trace.open(ROOT / "sample_traces" / "mmap1_threads"))
    assert_same(back, r, configs(r, engines=("c",), noise=(0.0,)))


# -- random traces ---------------------------------------------------------------------------

_step = st.one_of(
    st.tuples(st.just("run"), st.integers(1, 5_000)),
    st.tuples(st.just("sleep"), st.integers(1, 50_000)),
    st.tuples(st.just("preempted"), st.integers(1, 20_000)),
    st.tuples(st.just("fault"), st.integers(0, 3_000), st.integers(0, 3_000)),
    st.tuples(st.just("mmap"), st.integers(0, 2_000), st.integers(0, 3_000), st.sampled_from([0, 0, 700])),
    st.tuples(st.just("munmap"), st.integers(0, 2_000), st.integers(0, 3_000), st.integers(0, 3_000),
              st.sampled_from([0, 0, 40]), st.sampled_from([0, 0, 600])),
    st.tuples(st.just("lock"), st.sampled_from(["read", "write"]), st.integers(0, 2_000), st.integers(0, 3_000)),
    st.tuples(st.just("downgrade"), st.integers(0, 3_000), st.integers(0, 3_000)),
)


def _play(t, step) -> None:
    kind = step[0]
    if kind == "run":
        t.run(step[1])
    elif kind == "sleep":
        t.sleep(step[1])
    elif kind == "preempted":
        t.preempted(step[1])
    elif kind == "fault":
        with t.fault(0x1000, wait=step[1]):
            t.run(step[2])
    elif kind == "mmap":
        with t.syscall("mmap"):
            t.run(100)
            with t.mmap_lock("write", wait=step[1]):
                t.run(step[2])
                if step[3]:
                    t.preempted(step[3])  # off CPU inside: the segment goes to the op objects
            t.run(50)
    elif kind == "munmap":
        with t.syscall("munmap"):
            t.run(150)
            with t.mmap_lock("write", wait=step[1]):
                t.run(step[2])
                if step[5]:  # an i_mmap wait of tier 1: a derived hold, a rare segment
                    with t.lock("i_mmap_rwsem", FILE_A, wait=step[5]):
                        t.run(300)
            with t.mmap_lock("read"):
                t.run(step[3])
                if step[4]:
                    t.gather(pages=step[4])
            t.run(80)
    elif kind == "lock":
        with t.mmap_lock(step[1], wait=step[2]):
            t.run(step[3])
    else:  # a write section going on for read at top level
        with t.mmap_lock("write", wait=0):
            t.run(step[1])
        with t.mmap_lock("read"):
            t.run(step[2])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(programs=st.lists(st.lists(_step, min_size=1, max_size=12), min_size=1, max_size=3),
       shared=st.booleans())
def test_emitted_reconstruction_is_the_op_objects_on_random_traces(tmp_path_factory, programs, shared):
    """Any mix of system calls, faults, bare sections, top-level downgrades, sleeps and preemptions
    (inside segments and between them), gathers and derived holds, threads of one process or several."""
    b = TraceBuilder(cpus=4)
    for i, program in enumerate(programs):
        t = b.thread(100 + i, pid=100 if shared else 100 + i)
        for step in program:
            _play(t, step)
    trace = b.write(tmp_path_factory.mktemp("t") / "t")
    e, r = both(trace)
    assert_same(e, r, configs(r, engines=("c", "python"), noise=(0.0, 0.3)))
    with pytest.MonkeyPatch.context() as mp:  # the same made two intervals at a time, spooled, read in fours
        mp.setattr(emit_rows, "CHUNK", 2)
        mp.setattr(neutral, "WINDOW", 4)
        e = reconstruct(Trace.open(trace), emit=True, spool=tmp_path_factory.mktemp("spool"))
        assert_same(e, r, configs(r, engines=("c",), noise=(0.0, 0.3)))


# -- the command ------------------------------------------------------------------------------

@pytest.mark.parametrize("sample", ["mmap1_threads", "fork-exit", "take-all-locks"])
def test_replay_reports_the_same_figures_as_the_reference_reconstruction(sample):
    """``replay --json --jobs 2`` with the emitted workload (the default) and with the reference path's op
    objects (MMREPLAY_RECONSTRUCT=reference, which never emits)."""
    out = []
    for path in ("columnar", "reference"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), MMREPLAY_RECONSTRUCT=path)
        proc = subprocess.run([sys.executable, "-m", "replay", "replay", str(ROOT / "sample_traces" / sample),
                               "--compare", "2.6.39", "current", "--seeds", "2", "--jobs", "2", "--json"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(json.loads(proc.stdout))
    assert out[0] == out[1]


# -- fresh recordings -------------------------------------------------------------------------

LIVE = ("mmap1_threads", "page_fault1_threads", "mmap-file", "tlb_flush2_threads", "fork-exit")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, Path]:
    """LIVE workloads recorded now (root + bcc), 0.5 s, 2 tasks each."""
    return record_workloads(tmp_path_factory.mktemp("emit"), LIVE, 0.5)


@pytest.mark.live
@pytest.mark.parametrize("name", LIVE)
def test_emitted_reconstruction_is_the_op_objects_on_a_fresh_recording(fresh, name):
    e, r = both(fresh[name])
    assert r.threads, f"{name}: nothing reconstructed"
    assert_same(e, r, configs(r, engines=("c",)))
    assert_same_results(e, r, ("current",))


@pytest.mark.live
@pytest.mark.parametrize("name", LIVE)
def test_a_fresh_recording_reconstructed_in_tiny_windows_spooled_is_the_op_objects(fresh, name, tmp_path,
                                                                                  monkeypatch):
    r = reconstruct(Trace.open(fresh[name]))
    e = windowed(fresh[name], tmp_path / "spool", monkeypatch, 61, 4099)
    assert_same(e, r, configs(r, engines=("c",), noise=(0.0,)))
