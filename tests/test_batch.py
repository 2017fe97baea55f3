"""A batch of replays: the same results on one process or many, each program flattened once.

A policy set's seeds share one flattened Program (it does not depend on the
seed unless service-time noise is on); across processes they share it as
memory-mapped arrays in a private temporary directory, removed afterwards,
also when a run fails.
"""

from __future__ import annotations

import importlib
import tempfile

import pytest

from replay import batch
from replay.batch import RunSpec, Settings, run_all
from replay.errors import MmreplayError
from replay.sim import Costs
from replay.sim.ops import Block, Critical, Gather, LockRef, Span, Think, Thread, Workload


def _workload() -> Workload:
    mmap, anon = LockRef("mmap_lock", 1), LockRef("anon_vma", 2)
    threads = [Thread(tid=t, pid=1, start_ns=13 * t, ops=[
        Think(700 + 31 * t),
        Span("munmap", (Critical(mmap, "write", 900, (Critical(anon, "write", 400), Gather(pages=40))),)),
        Critical(mmap, "read", 300), Think(200)] * 30) for t in range(1, 7)]
    return Workload(threads, cpus=3)


SETS = ("2.6.39", "3.0", "current")
simulate_module = importlib.import_module("replay.sim.simulate")  # replay.sim.simulate is also a function


def _specs(seeds: int = 3) -> list[RunSpec]:
    return [RunSpec(s, seed) for s in SETS for seed in range(seeds)]


def _settings(**kw) -> Settings:
    return Settings(cpus=3, preempt="full", mode="closed", costs=Costs(), **kw)


def _same(a, b) -> None:
    assert [(r.policy_set, r.seed) for r in a] == [(r.policy_set, r.seed) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.metrics == y.metrics
        assert x.tables.keys() == y.tables.keys()
        assert all(x.tables[k].equals(y.tables[k]) for k in x.tables)


def _alone(workload: Workload, specs: list[RunSpec], settings: Settings) -> list:
    """Each run on its own, flattening its own program: the reference."""
    return [batch.run_one(workload, spec, settings) for spec in specs]


@pytest.mark.parametrize("perturb", [0.0, 0.3])
def test_two_processes_sharing_programs_give_the_runs_of_each_run_alone(perturb):
    w, specs, settings = _workload(), _specs(), _settings(perturb=perturb)
    reference = _alone(w, specs, settings)
    _same(run_all(w, specs, settings, jobs=1), reference)
    _same(run_all(w, specs, settings, jobs=2), reference)


def test_a_program_is_flattened_once_per_policy_set_unless_noise_makes_it_depend_on_the_seed(monkeypatch):
    calls = []
    real = simulate_module.program_for

    def counting(workload, config):
        calls.append((config.policy.name, config.seed))
        return real(workload, config)

    monkeypatch.setattr(simulate_module, "program_for", counting)
    w = _workload()
    run_all(w, _specs(3), _settings(), jobs=1)
    assert sorted(calls) == [(s, 0) for s in sorted(SETS)]
    calls.clear()
    run_all(w, _specs(3), _settings(perturb=0.2), jobs=1)
    assert len(calls) == 9


def test_the_shared_programs_are_removed_after_the_batch_also_when_a_run_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    w, specs = _workload(), _specs(2)
    run_all(w, specs, _settings(), jobs=2)
    assert list(tmp_path.iterdir()) == []
    lock = LockRef("i_mmap_rwsem", 1)
    stuck = Workload([Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(10_000),))]),
                      Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=50)], cpus=1)
    settings = Settings(cpus=1, preempt="full", mode="closed", costs=Costs(), probe=False)
    with pytest.raises(MmreplayError, match="deadlocked"):
        run_all(stuck, [RunSpec("i_mmap_rwsem=spinlock", s) for s in range(3)], settings, jobs=2)
    assert list(tmp_path.iterdir()) == []


def test_a_run_spilled_to_arrow_files_maps_back_the_tables_it_would_return(tmp_path):
    """--jobs N with -o: a worker writes each table as it is made and the parent maps the files; the
    tables are the ones the run returns otherwise, and write_results lets each go once written."""
    from replay.results import write_results
    from replay.trace.manifest import Host

    w, spec, settings = _workload(), RunSpec("current", 1), _settings()
    kept = batch.run_one(w, spec, settings)
    spilled = batch.run_one(w, spec, settings, spill=str(tmp_path / "run"))
    assert spilled.tables == {} and spilled.metrics == kept.metrics
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(f"{k}.arrow" for k in kept.tables)
    _same([batch._unspill(spilled, str(tmp_path / "run"))], [kept])
    write_results(tmp_path / "res", [spilled], [], dependent=frozenset(), host=Host(cpus=3))
    assert spilled.tables == {}
