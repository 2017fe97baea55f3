"""As-recorded interference (replay/interference.py): the time other jobs held the recorded tasks off their
CPUs comes back in the replay at the recorded point, for the recorded time; the time the tasks' own
workload explains (every CPU ran a recorded task) is left to the simulator's scheduler."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from replay.interference import Interference, apply, derive
from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Block, Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.trace import Trace
from replay.workload import reconstruct
from tests.tracebuilder import TraceBuilder

SAMPLES = Path(__file__).resolve().parents[1] / "sample_traces"


def _two_tasks(path, cpus: int, other_runs: bool, work) -> Trace:
    """Task 100 doing work(task); with other_runs a second recorded task, switched in on the other CPU,
    running throughout and taking mmap_lock once at the end."""
    b = TraceBuilder(cpus=cpus)
    a = b.thread(100, comm="worker", cpu=0)
    if other_runs:
        o = b.thread(101, comm="worker", cpu=0)
        o.sleep(1)
    work(a)
    if other_runs:
        o.run(a.now - o.now)
        with o.syscall("mmap"), o.mmap_lock("write"):
            o.run(2_000)
    return Trace.open(b.write(path))


def _trace(path, cpus: int, other_runs: bool):
    def work(a):
        for _ in range(3):
            a.run(10_000)
            with a.syscall("mmap"), a.mmap_lock("write"):
                a.run(2_000)
        a.run(10_000)
        a.preempted(50_000)
        a.run(10_000)
        with a.syscall("munmap"), a.mmap_lock("write"):
            a.run(3_000)
        a.run(1_000)
    return _two_tasks(path, cpus, other_runs, work)


def test_a_preemption_by_another_job_is_an_interval_of_its_recorded_length(tmp_path):
    trace = _trace(tmp_path / "t", cpus=2, other_runs=False)
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    assert inf.preemptions == 1 and inf.own_ns == 0
    [(start, ns)] = inf.intervals[100]
    assert ns == 50_000


def test_a_wait_behind_the_recorded_tasks_themselves_is_left_to_the_scheduler(tmp_path):
    trace = _trace(tmp_path / "t", cpus=1, other_runs=True)  # one CPU, the other recorded task on it
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    assert 100 not in inf.intervals
    assert inf.own_ns == 50_000


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_the_interval_is_replayed_off_cpu_at_its_recorded_point(tmp_path, mode):
    trace = _trace(tmp_path / "t", cpus=2, other_runs=False)
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    out = apply(w, inf, overhead_ns=0)
    assert (out.placed, out.moved, out.skipped) == (1, 0, 0)
    [th] = [t for t in out.workload.threads if t.tid == 100]
    kinds = [type(op).__name__ for op in th.ops]
    i = kinds.index("Block")
    assert th.ops[i] == Block(50_000, inf.intervals[100][0][0])
    assert type(th.ops[i - 1]) is Think and isinstance(th.ops[i + 1], (Think, Span))
    # the work is unchanged: the Think it fell in was split, not shortened
    work = lambda t: sum(op.ns for op in t.ops if type(op) is Think)  # noqa: E731
    assert work(th) == work(next(t for t in w.threads if t.tid == 100))
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, mode=mode,
                    costs=replace(Costs.zero(), cas_ns=0))
    plain, interfered = simulate(w, cfg), simulate(out.workload, cfg)
    assert interfered.metrics["makespan_ns"] - plain.metrics["makespan_ns"] == (50_000 if mode == "closed" else 0)
    switched_in = lambda r: [row for row in r.tables["sim_sched"].to_pylist() if row["next_tid"] == 100]  # noqa: E731
    assert len(switched_in(interfered)) == len(switched_in(plain)) + 1


def test_an_interval_inside_a_system_call_goes_into_its_body_at_the_recorded_offset():
    span = Span("munmap", (Think(5_000, 1_000),), 1_000, 5_000)
    ops = [Think(1_000, 0), span, Think(1_000, 6_000)]
    w = Workload([Thread(7, 7, ops)], cpus=1, contiguous=True)
    out = apply(w, Interference({7: [(3_000, 20_000)]}), overhead_ns=2_000)
    assert (out.placed, out.moved) == (1, 0)
    body = (Think(2_000, 1_000), Block(18_000, 3_000), Think(3_000, 23_000))
    assert out.workload.threads[0].ops == [ops[0], replace(span, body=body), ops[2]]


def test_preempted_holding_mmap_lock_the_block_is_under_the_lock_but_never_under_a_spinlock():
    under = Critical(LockRef("mmap_lock", 1), "write", 100, (Think(4_000, 1_100),), 1_000)
    spin = Critical(LockRef("page_table_lock", 2), "write", 100, (Think(4_000, 10_000),), 9_900)
    gather = Gather(16, at_ns=20_000)
    ops = [Think(1_000, 0), under, Think(1_000, 9_000), spin, Think(1_000, 19_000), gather, Think(10, 30_000)]
    w = Workload([Thread(7, 7, ops)], cpus=1, contiguous=True)
    out = apply(w, Interference({7: [(2_000, 5_000), (11_000, 5_000), (25_000, 5_000)]}), overhead_ns=0)
    assert (out.placed, out.moved) == (3, 2)
    got = out.workload.threads[0].ops
    assert got[1].body == (Think(900, 1_100), Block(5_000, 2_000), Think(3_100, 7_000))
    assert got[3] == spin and got[4] == Block(5_000, 11_000)
    assert got[6] == gather and got[7] == Block(5_000, 25_000)


def test_the_shipped_sample_with_preemptions_by_other_jobs():
    trace = Trace.open(SAMPLES / "mmap1_threads")
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    assert inf.preemptions > 0 and inf.count > 0
    out = apply(w, inf, overhead_ns=0)
    assert out.placed - out.woken + out.skipped == inf.count


def test_replay_interference_option(capsys):
    from replay.cli.main import main

    sample = str(SAMPLES / "mmap1_threads")
    assert main(["replay", sample, "--compare", "current", "--seeds", "1", "--interference", "--mode", "open"]) == 0
    assert "other jobs' time on the CPUs replayed as recorded" in capsys.readouterr().out
    assert main(["replay", sample, "--interference", "--cpus", "1"]) == 2
    assert "--interference" in capsys.readouterr().err


def test_preempted_inside_a_hold_with_no_nested_op_the_block_is_under_the_lock():
    crit = Critical(LockRef("mmap_lock", 1), "write", 3_000, (), 1_000)
    ops = [Think(1_000, 0), Span("mmap", (crit,), 1_000, 3_000), Think(1_000, 9_000)]
    out = apply(Workload([Thread(7, 7, ops)], cpus=1, contiguous=True),
                Interference({7: [(2_000, 5_000)]}), overhead_ns=0)
    assert (out.placed, out.moved) == (1, 0)
    assert out.workload.threads[0].ops[1].body == (replace(crit, body=(Block(5_000, 2_000),)),)


def test_preempted_after_mmap_write_downgrade_the_block_is_under_the_read_lock():
    """munmap holds mmap_lock for write, then for read after mmap_write_downgrade (the zap, ms long for a large
    region): a preemption that began in the read part is placed there, where the others' readers could share the
    lock, not at the end of the write part (as it was: on a page_fault1_threads recording its two preemptions in a
    20.6-ms read part made the replayed write hold 785 µs instead of 31 µs, docs/VALIDATION.md §e item 11)."""
    lock = LockRef("mmap_lock", 1)
    read = Critical(lock, "read", 0, (Think(6_000, 3_000),), 3_000)
    write = Critical(lock, "write", 0, (Think(2_000, 1_000),), 1_000, downgrade=read)
    ops = [Think(1_000, 0), Span("munmap", (write,), 1_000, 8_000), Think(1_000, 9_000)]
    out = apply(Workload([Thread(7, 7, ops)], cpus=1, contiguous=True),
                Interference({7: [(1_500, 1_000), (5_000, 4_000)]}), overhead_ns=0)
    assert (out.placed, out.moved) == (2, 0)
    (got,) = out.workload.threads[0].ops[1].body
    assert got.body == (Think(500, 1_000), Block(1_000, 1_500), Think(1_500, 2_500))  # the write part's own
    assert got.downgrade.body == (Think(2_000, 3_000), Block(4_000, 5_000), Think(4_000, 9_000))


def _woken_trace(path, cpus: int, other_runs: bool):
    """Task 100 sleeps 40 µs in a contended mmap_lock wait, the last 30 µs of it woken and waiting for its CPU
    (another job had it), then sleeps 20 µs outside any wait, woken 15 µs before it runs."""
    def work(a):
        a.run(10_000)
        with a.syscall("mmap"), a.mmap_lock("write", wait=40_000, sleeping=True, runnable=30_000):
            a.run(2_000)
        a.run(10_000)
        a.sleep(20_000, runnable=15_000)
        a.run(10_000)
        with a.syscall("munmap"), a.mmap_lock("write"):
            a.run(3_000)
        a.run(1_000)
    return _two_tasks(path, cpus, other_runs, work)


def test_a_wait_to_run_after_a_wake_up_is_another_jobs_time(tmp_path):
    """After a sleep the task is runnable from its wake-up to its switch-in; on a loaded host that is another job's
    time, as a preemption is (recorded mmap1_threads, pinned: 90-213 ms of each thread's 1.5 s)."""
    trace = _woken_trace(tmp_path / "t", cpus=2, other_runs=False)
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    assert inf.preemptions == 0 and 100 not in inf.intervals
    assert [ns for _, ns in inf.woken[100]] == [30_000, 15_000]
    # every CPU ran a recorded task then: the simulator's scheduler decides that wait
    trace = _woken_trace(tmp_path / "u", cpus=1, other_runs=True)
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    assert 100 not in inf.woken and inf.own_ns == 45_000


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_wait_to_run_inside_a_lock_wait_is_replayed_before_the_attempt_and_a_sleeps_is_not_twice(tmp_path, mode):
    trace = _woken_trace(tmp_path / "t", cpus=2, other_runs=False)
    w = reconstruct(trace)
    inf = derive(trace, [t.tid for t in w.threads], w.cpus)
    out = apply(w, inf, overhead_ns=1_000)
    # the lock wait's goes in; the one after the sleep outside a wait is in that sleep's recorded Block already
    assert (out.placed, out.woken, out.moved) == (1, 1, 0)
    [th] = out.workload.threads
    [mmap] = [op for op in th.ops if type(op) is Span and op.kind == "mmap"]
    kinds = [type(op).__name__ for op in mmap.body]
    assert kinds.index("Block") == kinds.index("Critical") - 1  # before the attempt, not under the lock
    assert next(op for op in mmap.body if type(op) is Block).ns == 29_000
    crit = next(op for op in mmap.body if type(op) is Critical)
    assert not any(type(op) is Block for op in crit.body)
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, mode=mode,
                    costs=replace(Costs.zero(), cas_ns=0))
    plain, interfered = simulate(w, cfg), simulate(out.workload, cfg)
    # closed: the task's recorded time comes back (the lock was free in the replay, its wait is 0)
    assert interfered.metrics["makespan_ns"] - plain.metrics["makespan_ns"] == (29_000 if mode == "closed" else 0)
    # no longer than the engine's own wake-up and switch: the engine's
    assert apply(w, inf, overhead_ns=30_000).woken == 0
    # open replay: the next operation's recorded start holds it already
    assert apply(w, inf, overhead_ns=1_000, woken=False).woken == 0


def test_a_sleep_whose_switch_in_was_lost_gives_no_wait_to_run(tmp_path):
    """The recorder can lose a switch (sched_switch 'lost'): a later preemption's switch-in must not be taken
    for the end of an earlier sleep (which would make the whole stretch since its wake-up a wait to run)."""
    b = TraceBuilder(cpus=2)
    a = b.thread(100, comm="worker", cpu=0)
    a.run(10_000)
    # a sleep whose switch-in the recorder lost: switched out asleep, woken, (no switch-in row)
    b._rows.add("sched_switch", dict(ts=a.now, cpu=0, prev_tid=100, prev_prio=120, prev_state=1, next_tid=0,
                                     next_prio=120))
    a.now += 20_000
    b._rows.add("sched_wakeup", dict(ts=a.now, cpu=0, tid=100, prio=120, target_cpu=0, kind="wakeup", waker_tid=0))
    a.run(10_000)
    a.preempted(5_000)
    with a.syscall("mmap"), a.mmap_lock("write"):
        a.run(2_000)
    trace = Trace.open(b.write(tmp_path / "t"))
    inf = derive(trace, [100], 2)
    assert 100 not in inf.woken and [ns for _, ns in inf.intervals[100]] == [5_000]
