"""The columnar reconstruction (the default) gives what the reference object path gives, bit for bit.

replay/workload/columnar.py builds the Workload from numpy columns; the
reference (MMREPLAY_RECONSTRUCT=reference: intervals.py, holds.py,
reconstruct.nest/build) makes an object per row. On every shipped sample and on
workloads recorded fresh on this machine the two must give:

* the same Workload: every thread's fields and every op's fields, types
  included (compared as an iterative serialization: take-all-locks nests too
  deep for ``==``);
* the same engine input: the flattened Program's arrays byte for byte, its lock
  and span-kind tables, under several policy sets, closed and open;
* the same replay results (tables and metrics) for the same seed.

A change to the reference path that the columnar path does not follow (or the
reverse) fails here instead of diverging silently.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import polars as pl
import pytest

from replay.policies import resolve
from replay.sim import SimConfig, simulate
from replay.sim.ops import Critical, Gather, Span, Workload
from replay.sim.simulate import program_for
from replay.trace.reader import Trace
from replay.workload import columnar
from tests.live import record_workloads
from tests.test_reconstruct_exit_teardown import cow_then_exit, walk
from tests.tracebuilder import TraceBuilder, mm_addr

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p for p in (ROOT / "sample_traces").iterdir() if (p / "manifest.json").exists())
recon = importlib.import_module("replay.workload.reconstruct")
#: workloads recorded fresh: lock-heavy threads, faults, processes with frees, file mappings, deep nests
LIVE = ("mmap1_threads", "page_fault1_threads", "mmap-file", "mprotect-split", "tlb_flush2_threads", "fork-exit",
        "take-all-locks")
LIVE_S = 0.5


def both(trace: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workload, Workload]:
    """(columnar, reference) workloads of ``trace``."""
    out = []
    for path in ("columnar", "reference"):
        monkeypatch.setenv(recon.PATH_ENV, path)
        out.append(recon.reconstruct(Trace.open(trace)))
    return out[0], out[1]


def serial(w: Workload) -> list[tuple]:
    """Every field of the workload and of each op in pre-order, with its type (iterative)."""
    out: list[tuple] = [("workload", w.cpus, w.name, tuple(sorted(w.derived_classes)), repr(w.meta), w.contiguous)]
    for t in w.threads:
        out.append(("thread", t.tid, t.pid, t.mm, t.comm, t.start_ns, t.prio, len(t.ops)))
        todo = list(reversed(t.ops))
        while todo:
            op = todo.pop()
            fields = tuple((f.name, type(getattr(op, f.name)).__name__, getattr(op, f.name))
                           for f in dataclasses.fields(op) if f.name not in ("body", "downgrade", "lock"))
            lock = (op.lock.lock_class, op.lock.addr) if type(op) is Critical else None
            body = list(op.body) if type(op) in (Critical, Span) else []
            down = op.downgrade if type(op) is Critical else None
            out.append((type(op).__name__, fields, lock, len(body), down is not None))
            if down is not None:
                todo.append(down)
            todo.extend(reversed(body))
    return out


def assert_same_workload(c: Workload, r: Workload) -> None:
    sc, sr = serial(c), serial(r)
    if sc != sr:
        i = next((i for i, (a, b) in enumerate(zip(sc, sr, strict=False)) if a != b), min(len(sc), len(sr)))
        raise AssertionError(f"first difference at item {i} of {len(sr)}:\n columnar  {sc[i:i + 1]}\n "
                             f"reference {sr[i:i + 1]}")


def configs(w: Workload) -> list[SimConfig]:
    return [SimConfig(cpus=w.cpus, policy=resolve(s), preempt=p, seed=1, mode=m)
            for s, p, m in (("2.6.39", "none", "closed"), ("current", "voluntary", "closed"),
                            ("as-recorded", "full", "open"), ("3.0", "voluntary", "open"))]


def assert_same_engine_input(c: Workload, r: Workload) -> None:
    for cfg in configs(r):
        pc, pr = program_for(c, cfg), program_for(r, cfg)
        for name in ("code", "points", "start", "floats"):
            a, b = getattr(pc, name), getattr(pr, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), \
                f"{cfg.policy.name}: Program.{name} differs"
        assert pc.locks == pr.locks and pc.kinds == pr.kinds, cfg.policy.name


def assert_same_results(c: Workload, r: Workload, sets: tuple[str, ...]) -> None:
    for s in sets:
        cfg = SimConfig(cpus=r.cpus, policy=resolve(s), preempt="voluntary", seed=3)
        a, b = simulate(c, cfg), simulate(r, cfg)
        assert a.metrics == b.metrics, s
        for name, table in b.tables.items():
            assert table.equals(a.tables[name]), f"{s}: table {name} differs"


@pytest.mark.parametrize("trace", SAMPLES, ids=[p.name for p in SAMPLES])
def test_columnar_reconstruction_equals_the_reference_on_every_sample(trace, monkeypatch):
    c, r = both(trace, monkeypatch)
    assert r.threads, "nothing reconstructed"
    assert_same_workload(c, r)
    assert_same_engine_input(c, r)
    assert_same_results(c, r, ("2.6.39", "current"))


def test_the_reference_path_is_selectable_and_the_columnar_one_is_the_default(monkeypatch):
    """Each path runs its own code: breaking one makes reconstruct() fail only when that path is selected."""
    import replay.workload.columnar as columnar

    trace = ROOT / "sample_traces" / "mmap1_threads"

    def broken(_trace, *_args):
        raise RuntimeError("columnar path ran")

    monkeypatch.setattr(columnar, "build_threads", broken)
    monkeypatch.delenv(recon.PATH_ENV, raising=False)
    with pytest.raises(RuntimeError, match="columnar path ran"):
        recon.reconstruct(Trace.open(trace))
    monkeypatch.setenv(recon.PATH_ENV, "reference")
    assert recon.reconstruct(Trace.open(trace)).threads


def test_a_change_to_the_reference_path_shows_up_as_a_difference(monkeypatch):
    """The differential check is not blind: a one-nanosecond change in the reference's nesting is caught."""
    trace = ROOT / "sample_traces" / "mmap1_threads"
    c, _ = both(trace, monkeypatch)
    real = recon._op

    def shifted(iv, body, off_ns=0, slept=None):
        op = real(iv, body, off_ns, slept)
        return dataclasses.replace(op, at_ns=op.at_ns + 1) if type(op) is Span else op

    monkeypatch.setattr(recon, "_op", shifted)
    monkeypatch.setenv(recon.PATH_ENV, "reference")
    r = recon.reconstruct(Trace.open(trace))
    with pytest.raises(AssertionError, match="first difference"):
        assert_same_workload(c, r)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> dict[str, Path]:
    """LIVE workloads recorded now (root + bcc), LIVE_S seconds, 2 tasks each."""
    return record_workloads(tmp_path_factory.mktemp("columnar"), LIVE, LIVE_S)


@pytest.mark.live
@pytest.mark.parametrize("name", LIVE)
def test_columnar_reconstruction_equals_the_reference_on_a_fresh_recording(fresh, name, monkeypatch):
    c, r = both(fresh[name], monkeypatch)
    assert r.threads, f"{name}: nothing reconstructed"
    assert_same_workload(c, r)
    assert_same_engine_input(c, r)
    assert_same_results(c, r, ("current",))


def processes_that_free(b: TraceBuilder, rounds: int = 120) -> None:
    """Two processes (no lock shared) of many mmap_lock sections whose few gathers sit inside munmaps, between
    them, split by a lock section inside one call, with a second free batch; each ends with a fault and exit."""
    for tid, cpu in ((500, 0), (600, 1)):
        t = b.thread(tid, pid=tid, comm="proc", cpu=cpu)
        for i in range(rounds):
            with t.syscall("munmap" if i % 2 else "mmap"):
                with t.mmap_lock("write"):
                    t.run(800 + 7 * i)
                if i % 40 == 3:
                    t.gather(pages=40, flushes=2)
                    with t.mmap_lock("read"):
                        t.run(300)
                    t.gather(pages=8)
            t.run(400)
            if i % 50 == 7:
                t.gather(pages=5)  # outside a system call
                t.run(100)
            if tid == 500 and i == 60:  # a fork: the child's mmap_lock nested in the parent's, waited for
                with t.mmap_lock("write"), t.lock("mmap_lock", mm_addr(600), "write", wait=300):
                    t.run(500)
        cow_then_exit(b, tid + 1, cpu=cpu)


def test_tier1_gathers_get_a_few_holds_and_calls_per_free_not_every_row(tmp_path, monkeypatch):
    """A process-mode recording: every worker frees, so every thread goes to _tier1_gathers, which only
    bisects its holds and calls at the frees' and flushes' times. Handing it one object per row was most
    of the reconstruction's memory (mmap1_processes: 906 MiB peak for 1.9 M rows); the workload is the
    reference's either way."""
    b = TraceBuilder(cpus=2)
    processes_that_free(b)
    path = b.write(tmp_path / "t")
    seen: list[tuple[int, int]] = []  # (stand-ins, event times) per thread
    real = columnar._tier1_gathers

    def spy(trace, threads, syscalls, mm_of, notes):
        for tid, t in threads.items():
            times = (2 * trace.scan("page_free_batches").filter(pl.col("tid") == tid).collect().height
                     + trace.scan("tlb_flushes").filter(pl.col("tid") == tid).collect().height)
            seen.append((len(t.intervals) + len(syscalls.get(tid, ())), times))
        return real(trace, threads, syscalls, mm_of, notes)

    indexed: list[int] = []  # holds in the measured-holders index, per nested thread

    def fit(t, held, holders, notes):
        indexed.append(sum(len(v[0]) for v in holders.index.values()))
        return real_fit(t, held, holders, notes)

    real_fit = columnar.fit_thread_holds
    monkeypatch.setattr(columnar, "_tier1_gathers", spy)
    monkeypatch.setattr(columnar, "fit_thread_holds", fit)
    c, r = both(path, monkeypatch)
    # thread 500 nests: only the holds of its two locks (its and 600's mmap_lock: all of 500's and 600's holds)
    # are indexed, not those of the children's mm too, as an index of every lock of every thread has them
    holds = Trace.open(path).scan("lock_holds").collect()
    assert indexed == [holds.filter(pl.col("tid").is_in([500, 600])).height]
    assert len(seen) >= 4 and all(n for n, _ in seen)
    # at most one hold and one call per time, and the exit
    assert all(n <= 2 * k + 1 for n, k in seen), seen
    monkeypatch.undo()
    c, r = both(path, monkeypatch)
    assert sum(isinstance(op, Gather) for th in r.threads for op, _ in walk(th.ops)) >= 10
    assert_same_workload(c, r)
    assert_same_engine_input(c, r)
    assert_same_results(c, r, ("2.6.39", "current"))
