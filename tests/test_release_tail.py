"""The tier-1 tracer's time after an mmap_lock release's stamp still holds the lock, and the replay holds it too.

``mmap_lock_released`` fires before ``up_write``/``up_read`` and ``mmap_write_downgrade``'s
``acquire_returned`` before ``downgrade_write`` (include/linux/mmap_lock.h): what the BPF program runs
after its timestamp is lock time no recorded hold contains (issue #16 item 2, docs/VALIDATION.md §e).
The recorder measures it (bpf/mmap_lock.c, manifest ``extra.mmap_lock_tail``), ``--calibrate`` reads it
into ``mmap_lock_release_tail_ns`` / ``mmap_lock_downgrade_tail_ns``, and both engines run it before the
release (downgrade) with the lock held, log the hold as the tracer stamped it, and take it back from the
work that follows (the reconstruction put it there), so an uncontended thread's timeline is unchanged.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim import calibrate as calibrate_mod
from replay.sim.calibrate import calibrate
from replay.sim.ops import Critical, LockRef, Span, Think, Thread, Workload
from replay.trace import Trace
from tests.test_sim_engines import assert_identical, needs_c, run_both

MMAP = LockRef("mmap_lock", 0x100)
ENGINES = ["python", pytest.param("c", marks=needs_c)]
SAMPLE = Path(__file__).resolve().parents[1] / "sample_traces" / "mmap1_threads"


def _costs(tail: int = 0, dtail: int = 0) -> Costs:
    return replace(Costs.zero(), cas_ns=0, mmap_lock_release_tail_ns=tail, mmap_lock_downgrade_tail_ns=dtail)


def _run(w: Workload, costs: Costs, engine: str, policy: str = "current"):
    cfg = SimConfig(cpus=w.cpus, policy=resolve(policy), preempt="none", probe=False, engine=engine, costs=costs)
    return simulate(w, cfg).tables


def _holder_and_late_waiter(waiter_at: int) -> Workload:
    """Thread 1 write-holds for 1 µs from t=0 then works 1 µs; thread 2 asks for the lock at waiter_at."""
    holder = Thread(1, 1, [Span("munmap", (Critical(MMAP, "write", 1_000), Think(1_000)))])
    waiter = Thread(2, 1, [Think(waiter_at), Span("mmap", (Critical(MMAP, "write", 500),))])
    return Workload([holder, waiter], cpus=2)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_waiter_arriving_in_the_release_tail_waits_for_it(engine):
    # 1_000 ns hold + 200 ns tracer tail: a waiter at 1_100 finds the lock still held, until 1_200
    t = _run(_holder_and_late_waiter(1_100), _costs(tail=200), engine)
    waits = t["sim_lock_waits"]
    assert waits.column("tid").to_pylist() == [2]
    assert waits.column("dur").to_pylist() == [100]
    # without the tail (the recorded hold alone) it found the lock free: no wait
    assert _run(_holder_and_late_waiter(1_100), _costs(), engine)["sim_lock_waits"].num_rows == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_the_tail_is_logged_as_recorded_and_taken_back_from_the_next_work(engine):
    t = _run(_holder_and_late_waiter(5_000), _costs(tail=200), engine)
    holds = t["sim_lock_holds"].to_pylist()
    h1 = [h for h in holds if h["tid"] == 1]
    assert [h["dur"] for h in h1] == [1_000]  # the hold as the tracer stamped it
    ops = {o["tid"]: o["dur"] for o in t["sim_ops"].to_pylist()}
    assert ops[1] == 2_000  # the system call as long as recorded: the tail came out of the work after it


@pytest.mark.parametrize("engine", ENGINES)
def test_the_downgrade_tail_is_write_held(engine):
    down = Critical(MMAP, "read", 1_000)
    holder = Thread(1, 1, [Span("munmap", (Critical(MMAP, "write", 1_000, downgrade=down), Think(500)))])
    # a writer at 1_050: without the tail it waits for the read part (until 2_000); a reader at 1_050 would
    # share the read part at once, with the 100 ns downgrade tail it waits until 1_100
    reader = Thread(2, 1, [Think(1_050), Span("mmap", (Critical(MMAP, "read", 100),))])
    w = Workload([holder, reader], cpus=2)
    t = _run(w, _costs(dtail=100), engine)
    assert t["sim_lock_waits"].column("dur").to_pylist() == [50]
    holds = sorted((h["tid"], h["mode"], h["ts"], h["dur"]) for h in t["sim_lock_holds"].to_pylist())
    assert holds[:2] == [(1, "read", 1_000, 1_000), (1, "write", 0, 1_000)]  # both as the tracer stamped them
    assert {o["tid"]: o["dur"] for o in t["sim_ops"].to_pylist()}[1] == 2_500
    assert _run(w, _costs(), engine)["sim_lock_waits"].num_rows == 0


def test_as_recorded_adds_no_tail():
    w = _holder_and_late_waiter(1_100)
    assert _run(w, _costs(tail=200), "python", policy="as-recorded")["sim_lock_waits"].num_rows == 0


@needs_c
def test_both_engines_agree_with_tails_on_contended_munmaps():
    down = Critical(MMAP, "read", 800)
    ops = [Span("munmap", (Critical(MMAP, "write", 1_400, downgrade=down, recorded_wait_ns=300),)), Think(300),
           Span("mmap", (Critical(MMAP, "write", 900, recorded_wait_ns=300),)), Think(200)]
    w = Workload([Thread(t, 1, ops * 40) for t in (1, 2, 3)], cpus=2)
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=True, seed=5,
                    costs=replace(Costs(), mmap_lock_tracer_ns=150, mmap_lock_release_tail_ns=90,
                                  mmap_lock_downgrade_tail_ns=110))
    py, c = run_both(w, cfg)
    assert_identical(py, c)


def _with_manifest_extra(tmp_path: Path, tail: object) -> Trace:
    d = tmp_path / "t"
    d.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SAMPLE, d)
    m = json.loads((d / "manifest.json").read_text())
    m.setdefault("extra", {}).pop("mmap_lock_tail", None)
    if tail is not None:
        m["extra"]["mmap_lock_tail"] = tail
    (d / "manifest.json").write_text(json.dumps(m))
    return Trace.open(d)


def test_calibrate_reads_the_recorders_tail_measurement(tmp_path):
    tr = _with_manifest_extra(tmp_path, {"release": {"samples": 1_000, "ns": 85_400},
                                         "downgrade": {"samples": 500, "ns": 49_600}})
    cal = calibrate(tr)
    assert cal.costs.mmap_lock_release_tail_ns == 85
    assert cal.costs.mmap_lock_downgrade_tail_ns == 99
    assert any(n.startswith("mmap_lock_release_tail_ns = 85") for n in cal.notes)


def test_a_hand_off_holds_the_release_tail_once(tmp_path, monkeypatch):
    # a recorded hand-off starts at the release's stamp: the tail replayed before the release is taken out of it
    monkeypatch.setattr(calibrate_mod, "_handoffs", lambda trace: pl.Series([500] * 1_000))
    old = calibrate(_with_manifest_extra(tmp_path / "old", None)).costs.line_transfer_ns
    new = calibrate(_with_manifest_extra(tmp_path / "new", {"release": {"samples": 1_000, "ns": 85_000}}))
    assert (old, new.costs.line_transfer_ns) == (500, 415)
    assert any("less the 85 ns replayed before each release" in n for n in new.notes)


@pytest.mark.parametrize("tail", [None, {"release": {"samples": 10, "ns": 900}}, {"release": "x"}])
def test_calibrate_without_a_measurement_leaves_the_tail_out_and_says_so(tmp_path, tail):
    cal = calibrate(_with_manifest_extra(tmp_path, tail))
    assert cal.costs.mmap_lock_release_tail_ns == 0 and cal.costs.mmap_lock_downgrade_tail_ns == 0
    assert any(n.startswith("mmap_lock_release_tail_ns: 0") for n in cal.notes)
