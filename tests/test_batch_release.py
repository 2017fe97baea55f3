"""run_all(release=True): the op trees are freed once every program is flattened, the runs unchanged.

The op objects are most of a long replay's memory; a run that is given its set's flattened Program
reads nothing of the workload but the thread list, so the CLI lets run_all flatten every run's program
into a file first and empty the ops before the runs (one process) or before the workers fork (--jobs).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay import batch
from replay.batch import RunSpec, Settings, run_all, run_one
from replay.errors import MmreplayError
from replay.policies import resolve
from replay.sim import Costs, SimConfig
from replay.sim.ops import Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.sim.simulate import program_for
from replay.trace.reader import Trace
from replay.workload import reconstruct
from tests.test_sim_invariants import SETTINGS, configs, workloads


def _workload() -> Workload:
    mmap, anon = LockRef("mmap_lock", 1), LockRef("anon_vma", 2)
    return Workload([Thread(tid=t, pid=1, start_ns=11 * t, ops=[
        Think(500 + 17 * t),
        Span("munmap", (Critical(mmap, "write", 800, (Critical(anon, "write", 300), Gather(pages=30))),)),
        Critical(mmap, "read", 250), Think(150)] * 20) for t in range(1, 6)], cpus=2)


def _settings(**kw) -> Settings:
    return Settings(cpus=2, preempt="voluntary", mode="closed", costs=Costs(), **kw)


def _specs() -> list[RunSpec]:
    return [RunSpec(s, seed) for s in ("2.6.39", "current") for seed in range(2)]


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("case", ["two seeds", "one seed", "one seed, perturbed"])
def test_released_ops_give_the_same_runs_and_are_gone_afterwards(jobs, case):
    # one seed too: each set's program is flattened into a file before the runs like a shared one, not in
    # memory beside the op objects (one seed's replay of a 10-s recording peaked at 2.4 GB, two seeds' at 0.56 GB)
    settings = _settings(perturb=0.2) if "perturbed" in case else _settings()
    specs = _specs() if case == "two seeds" else [s for s in _specs() if s.seed == 0]
    reference = [run_one(_workload(), s, settings) for s in specs]
    w = _workload()
    runs = run_all(w, specs, settings, jobs=jobs, release=True)
    assert [(r.policy_set, r.seed, r.metrics) for r in runs] == [(r.policy_set, r.seed, r.metrics) for r in reference]
    for a, b in zip(runs, reference, strict=True):
        assert a.tables.keys() == b.tables.keys() and all(a.tables[k].equals(b.tables[k]) for k in a.tables)
    assert all(t.ops == [] for t in w.threads)
    assert [t.tid for t in w.threads] == [1, 2, 3, 4, 5]  # the thread list stays: the report counts it


@pytest.mark.parametrize("jobs", [1, 2])
def test_ops_are_kept_when_every_seed_has_its_own_program(jobs):
    # with service-time noise every seed has its own program: flattened by its run, not all ahead in files
    w = _workload()
    run_all(w, _specs(), _settings(perturb=0.2), jobs=jobs, release=True)
    assert all(t.ops for t in w.threads)


def test_without_release_the_workload_is_left_alone():
    w = _workload()
    run_all(w, _specs(), _settings(), jobs=2)
    assert all(t.ops for t in w.threads)


ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p for p in (ROOT / "sample_traces").iterdir() if (p / "manifest.json").exists())
SETS = ("2.6.39", "current", "3.0")


def _streamed_is(w: Workload, configs: list, expected: list, dirs: list[Path], jobs: int = 1) -> None:
    """_flatten_shared (released) writes each config's expected Program, byte for byte, and empties the ops
    (``jobs``: shared out between this process and forked ones)."""
    tables = batch._flatten_shared(w, configs, dirs, release=True, jobs=jobs)
    assert all(t.ops == [] for t in w.threads)
    for want, d, (locks, kinds) in zip(expected, dirs, tables, strict=True):
        got = batch._mapped(str(d), locks, kinds)
        for name in batch.PROGRAM_ARRAYS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
        assert got.locks == want.locks and got.kinds == want.kinds


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize(("engine", "jobs"), [("c", 1), ("python", 1), ("c", 3)])
def test_streamed_flattening_writes_the_programs_flatten_gives_byte_for_byte(sample, engine, jobs, tmp_path):
    """Every set flattened thread by thread into files (what --jobs and release use) is program_for's
    Program: code, points, start, floats, locks and kinds; also for open replay and with noise, and
    with the sets shared out between processes (--jobs 3)."""
    w = reconstruct(Trace.open(sample))
    models = (("voluntary", "closed", 0.0), ("full", "open", 0.0), ("none", "closed", 0.2))
    configs = [SimConfig(policy=resolve(s), cpus=w.cpus, preempt=p, mode=m, perturb=x, seed=3, engine=engine)
               for s in SETS for p, m, x in (models if engine == "c" else models[1:2])]  # Python: slow
    expected = [program_for(w, c) for c in configs]
    _streamed_is(w, configs, expected, [tmp_path / str(i) for i in range(len(configs))], jobs)


@SETTINGS
@given(w=workloads, cfgs=st.lists(configs, min_size=1, max_size=3), perturb=st.sampled_from([0.0, 0.3]),
       engine=st.sampled_from(["c", "python"]))
def test_streamed_flattening_is_flatten_on_random_workloads(w, cfgs, perturb, engine, tmp_path_factory):
    """The same bytes as program_for for any op trees (nests, downgrades, gathers, spans, blocks,
    recorded starts), any sets, models, modes, and noise drawn in walk order."""
    cfgs = [replace(c, perturb=perturb, engine=engine) for c in cfgs]
    expected = []
    for c in cfgs:
        try:
            expected.append(program_for(w, c))
        except MmreplayError:  # e.g. a lock class a set cannot replay: the same error streamed
            dirs = [tmp_path_factory.mktemp("p") / "set" for _ in cfgs]
            with pytest.raises(MmreplayError):
                batch._flatten_shared(copy.deepcopy(w), cfgs, dirs, False)
            return
    _streamed_is(w, cfgs, expected, [tmp_path_factory.mktemp("p") / "set" for _ in cfgs])


def test_a_mapped_programs_pages_dropped_during_the_run_change_nothing(tmp_path, monkeypatch):
    """The C engine drops a mapped program's pages from its resident set every DROP_EVERY events (read
    again from the file where a thread is): the run gives what the program in memory gives."""
    from replay.sim import cengine, simulate

    drops = []
    real = cengine.CEngine._drop
    monkeypatch.setattr(cengine, "DROP_EVERY", 256)
    monkeypatch.setattr(cengine.CEngine, "_drop", lambda self: (drops.append(1), real(self)))
    w = reconstruct(Trace.open(ROOT / "sample_traces" / "mmap1_threads"), emit=True)
    cfg = SimConfig(policy=resolve("current"), cpus=w.cpus, preempt="voluntary", seed=5, engine="c")
    program = program_for(w, cfg)
    want = simulate(w, cfg, program=program)
    assert not drops  # a program in memory is never dropped
    locks, kinds = batch._save(program, tmp_path / "p")
    got = simulate(w, cfg, program=batch._mapped(str(tmp_path / "p"), locks, kinds))
    assert len(drops) > 10
    assert got.metrics == want.metrics
    assert all(got.tables[k].equals(t) for k, t in want.tables.items())
