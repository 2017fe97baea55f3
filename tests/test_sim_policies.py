"""Policy sets, cost files and the behaviour each lock and gather policy must show."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from replay.errors import UsageError
from replay.policies import NAMED_SETS, resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Block, Critical, Gather, LockRef, Span, Think, Thread, Workload

# ------------------------------------------------------------------ policy sets


def test_named_sets_follow_the_kernel_history():
    old, v30, cur = NAMED_SETS["2.6.39"], NAMED_SETS["3.0"], NAMED_SETS["current"]
    assert (old.lock_policy("i_mmap_rwsem"), old.lock_policy("anon_vma"), old.gather) == ("spinlock", "spinlock",
                                                                                          "percpu")
    assert (v30.lock_policy("i_mmap_rwsem"), v30.lock_policy("anon_vma"), v30.gather) == (
        "mutex-classic", "mutex-classic", "preemptible")
    assert (cur.lock_policy("i_mmap_rwsem"), cur.lock_policy("anon_vma"), cur.gather) == ("rwsem", "rwsem",
                                                                                          "preemptible")
    assert [s.lock_policy("mmap_lock") for s in (old, v30, cur)] == ["rwsem-classic", "rwsem-classic", "rwsem"]
    for s in (old, v30, cur):
        for spin in ("page_table_lock", "zone_lock", "runqueue_lock"):
            assert s.lock_policy(spin) == "spinlock"
    assert set(NAMED_SETS["as-recorded"].locks.values()) == {"as-recorded"}


def test_overrides_apply_over_current():
    s = resolve("i_mmap_rwsem=spinlock, gather=percpu")
    assert s.lock_policy("i_mmap_rwsem") == "spinlock" and s.gather == "percpu"
    assert s.lock_policy("anon_vma") == "rwsem"
    assert resolve(["anon_vma=mutex", "page_table_lock=qspinlock"]).lock_policy("page_table_lock") == "qspinlock"


@pytest.mark.parametrize(
    "spec", ["2.6.40", "i_mmap=mutex", "anon_vma=semaphore", "gather=lazy", "", "3.0,gather=percpu"]
)
def test_bad_policy_specs_are_one_line_usage_errors(spec):
    with pytest.raises(UsageError) as e:
        resolve(spec)
    assert "\n" not in str(e.value) and str(e.value)


# ------------------------------------------------------------------ costs


def test_cost_files_override_defaults(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("context_switch_ns = 2500\nbatch_alloc_fail_p = 0.25\n")
    c = Costs.load(toml)
    assert c.context_switch_ns == 2500 and c.batch_alloc_fail_p == 0.25 and c.cas_ns == Costs().cas_ns
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"invlpg_ns": 120}))
    assert Costs.load(js).invlpg_ns == 120


@pytest.mark.parametrize("content", ['{"context_switch": 1}', '{"cas_ns": -1}', '{"cas_ns": "fast"}', "{nope",
                                     '{"cas_ns": 1.5}'])
def test_bad_cost_files_are_usage_errors(tmp_path, content):
    p = tmp_path / "c.json"
    p.write_text(content)
    with pytest.raises(UsageError):
        Costs.load(p)


def test_missing_cost_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        Costs.load(tmp_path / "absent.toml")


# ------------------------------------------------------------------ mm_take_all_locks


def take_all_locks(depth: int, lock_class: str, rounds: int) -> Workload:
    """One task nests ``depth`` locks (like mm_take_all_locks walking every VMA: 100 ns of walking,
    then the next lock), does 1 µs of work holding them all, and drops them; ``rounds`` times."""
    ops: list = []
    for _ in range(rounds):
        chain: tuple = (Think(1_000),)
        for i in reversed(range(depth)):
            chain = (Think(100), Critical(LockRef(lock_class, 0x10_000 + i), "write", 0, chain))
        ops.append(Span("mmu_notifier_register", chain))
        ops.append(Think(50_000))
    return Workload([Thread(tid=1, pid=1, ops=ops)], cpus=1)


def _run(w, policy, preempt="full", cpus=1, period=40_000, costs=None, seed=3, probe=True):
    return simulate(w, SimConfig(cpus=cpus, policy=resolve(policy), preempt=preempt, seed=seed, probe=probe,
                                 probe_period_ns=period, costs=costs or Costs()))


def test_a_chain_of_500_spinlocks_is_one_long_preempt_off_section_the_probe_waits_for():
    w = take_all_locks(500, "i_mmap_rwsem", rounds=20)
    res = _run(w, "i_mmap_rwsem=spinlock")
    chain_ns = 500 * (100 + Costs().spin_lock_unlock_ns)
    assert res.metrics["preempt_off_max_ns"] >= chain_ns - 100
    sections = res.tables["sim_preempt_off"]
    assert sections.num_rows == 20  # one per round: the nested locks never re-enable preemption
    assert res.metrics["probe_latency_max_ns"] >= 0.8 * chain_ns


@pytest.mark.parametrize("policy", ["i_mmap_rwsem=mutex", "i_mmap_rwsem=rwsem"])
def test_a_chain_of_500_sleeping_locks_leaves_the_probe_unharmed_under_full_preemption(policy):
    w = take_all_locks(500, "i_mmap_rwsem", rounds=20)
    res = _run(w, policy)
    assert res.metrics["preempt_off_max_ns"] == 0
    c = Costs()
    wake_path = c.probe_irq_ns + c.context_switch_ns
    # the probe waits only for the wake path, its jitter and the segment's timer interrupt
    assert res.metrics["probe_latency_max_ns"] < wake_path + 12 * c.wake_jitter_ns


def test_voluntary_preemption_points_at_might_sleep_shorten_the_wait_that_none_imposes():
    w = take_all_locks(500, "i_mmap_rwsem", rounds=20)
    none = _run(w, "i_mmap_rwsem=mutex", preempt="none")
    vol = _run(w, "i_mmap_rwsem=mutex", preempt="voluntary")
    assert none.metrics["probe_latency_max_ns"] > 3 * vol.metrics["probe_latency_max_ns"]


# ------------------------------------------------------------------ locks


def _two_threads(first_ops, second_ops, cpus=2):
    return Workload([Thread(tid=1, pid=1, ops=first_ops), Thread(tid=2, pid=1, ops=second_ops, start_ns=1_000)],
                    cpus=cpus)


def test_mutex_waiter_spins_while_the_owner_runs_and_sleeps_when_it_blocks():
    lock = LockRef("i_mmap_rwsem", 1)
    running = _two_threads([Critical(lock, "write", 50_000)], [Critical(lock, "write", 100)])
    w = _run(running, "i_mmap_rwsem=mutex", cpus=2, probe=False).tables["sim_lock_waits"].to_pylist()
    assert len(w) == 1 and not w[0]["slept"] and w[0]["spun_ns"] == w[0]["dur"] > 40_000
    blocked = _two_threads([Critical(lock, "write", 100, (Block(50_000),))], [Critical(lock, "write", 100)])
    w = _run(blocked, "i_mmap_rwsem=mutex", cpus=2, probe=False).tables["sim_lock_waits"].to_pylist()
    assert len(w) == 1 and w[0]["slept"] and w[0]["spun_ns"] == 0


def test_ticket_hand_off_slows_with_waiters_where_mcs_does_not():
    lock = LockRef("page_table_lock", 1)
    threads = [Thread(tid=i, pid=1, ops=[Critical(lock, "write", 50) for _ in range(300)]) for i in range(1, 9)]
    w = Workload(threads, cpus=8)
    costs = replace(Costs(), line_transfer_ns=100)
    ticket = simulate(w, SimConfig(cpus=8, policy=resolve("page_table_lock=spinlock"), costs=costs, probe=False))
    mcs = simulate(w, SimConfig(cpus=8, policy=resolve("page_table_lock=qspinlock"), costs=costs, probe=False))
    assert ticket.metrics["makespan_ns"] > 1.5 * mcs.metrics["makespan_ns"]
    assert ticket.metrics["spin_cpu_ns"] > mcs.metrics["spin_cpu_ns"]


def test_rwsem_readers_share_and_a_sleeping_writer_blocks_new_readers():
    """Readers T1, T2 share. Writer T3 (2 000) spins on them for 11 µs, unseen by reader T4 (3 000),
    which joins; then it sleeps, and reader T5 (15 000) queues behind it."""
    lock = LockRef("mmap_lock", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "read", 20_000)]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "read", 20_000)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "write", 1_000)], start_ns=2_000),
        Thread(tid=4, pid=1, ops=[Critical(lock, "read", 1_000)], start_ns=3_000),
        Thread(tid=5, pid=1, ops=[Critical(lock, "read", 1_000)], start_ns=15_000),
    ]
    res = simulate(Workload(threads, cpus=5), SimConfig(cpus=5, policy=resolve("current"), probe=False))
    holds = {r["tid"]: r for r in res.tables["sim_lock_holds"].to_pylist()}
    assert holds[2]["wait"] == 0  # readers share
    assert holds[4]["wait"] == 0  # a spinning writer does not stop readers
    assert holds[3]["ts"] >= holds[2]["ts"] + holds[2]["dur"]  # the writer waits for the readers
    assert holds[5]["ts"] >= holds[3]["ts"] + holds[3]["dur"]  # the late reader queues behind the sleeping writer


def _replay(threads, policy, cpus=4):
    """Tables of a replay on zero costs but a 1 µs wake-up, without the probe."""
    costs = replace(Costs.zero(), wakeup_ns=1_000)
    return simulate(Workload(threads, cpus=cpus), SimConfig(cpus=cpus, policy=resolve(policy), costs=costs,
                                                            probe=False)).tables


def _holds(threads, policy, cpus=4):
    """tid -> (acquired, wait) of its first hold."""
    return {r["tid"]: (r["ts"], r["wait"]) for r in _replay(threads, policy, cpus)["sim_lock_holds"].to_pylist()}


def _waits(threads, policy, cpus=4):
    """tid -> (wait, spun, slept) of its contended acquisition."""
    return {r["tid"]: (r["dur"], r["spun_ns"], r["slept"])
            for r in _replay(threads, policy, cpus)["sim_lock_waits"].to_pylist()}


def _behind_a_blocked_writer(lock, *waiters):
    """T1 takes ``lock`` for write and blocks 5 µs holding it; T2, T3, ... try it at 1 000, 2 000, ...
    with (mode, hold ns) each."""
    return [Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))])] + [
        Thread(tid=i + 2, pid=1, ops=[Critical(lock, mode, hold)], start_ns=1_000 * (i + 1))
        for i, (mode, hold) in enumerate(waiters)]


def test_a_reader_steals_a_free_rwsem_from_a_woken_writer_today_but_not_in_the_classic_rwsem():
    """T1 blocks holding the lock for write; writer T2 sleeps on it from 1 000. T1 unlocks at 6 100.
    Today the unlock wakes T2 to retry (it runs at 7 100) and reader T3, trying at 6 200, steals
    the free lock (reader optimistic lock stealing, 5.11+); T2 finds it reader-owned and sleeps again
    (a woken writer does not spin: rwsem_down_write_slowpath's wait loop only retries the lock), T3's
    unlock at 9 200 wakes it and it runs at 10 200. The classic rwsem grants T2 the lock at the unlock,
    and T3 queues behind it."""
    lock = LockRef("mmap_lock", 1)
    threads = [*_behind_a_blocked_writer(lock, ("write", 100)),
               Thread(tid=3, pid=1, ops=[Critical(lock, "read", 3_000)], start_ns=6_200)]
    today = _holds(threads, "mmap_lock=rwsem")
    assert today[3] == (6_200, 0) and today[2] == (10_200, 9_200)
    classic = _holds(threads, "mmap_lock=rwsem-classic")
    assert classic[2] == (7_100, 6_100) and classic[3] == (8_200, 2_000)


def test_a_release_to_readers_wakes_every_queued_reader_today_but_only_the_leading_ones_classically():
    """Behind writer T1 (off its CPU) wait reader T2, writer T3 and reader T4, in that order. Today
    T1's unlock wakes both readers past the writer (rwsem_mark_wake since 5.3); the classic rwsem
    wakes T2 only, then grants T3, then T4."""
    threads = _behind_a_blocked_writer(LockRef("mmap_lock", 1), ("read", 100), ("write", 100), ("read", 100))
    today = _holds(threads, "mmap_lock=rwsem")
    assert today[2][0] == today[4][0] == 7_100 and today[3][0] == 8_200
    classic = _holds(threads, "mmap_lock=rwsem-classic")
    assert [classic[t][0] for t in (2, 3, 4)] == [7_100, 8_200, 9_300]


def test_a_writer_spins_on_readers_for_ten_microseconds_and_then_sleeps_without_stopping_new_readers():
    """Reader T1 holds the lock 50 µs. Writer T2 arrives at 1 000 and spins on the readers for
    (20 + 1 reader) / 2 = 10.5 µs (rwsem_rspin_threshold), then sleeps; reader T3, arriving while
    T2 spins, shares the lock at once (spinners are invisible to readers). Writer T4, arriving after
    the time-out, does not spin (RWSEM_NONSPINNABLE) and sleeps at once. The classic rwsem never spins."""
    lock = LockRef("mmap_lock", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "read", 50_000)]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "read", 1_000)], start_ns=5_000),
        Thread(tid=4, pid=1, ops=[Critical(lock, "write", 100)], start_ns=20_000),
    ]
    waits = _waits(threads, "mmap_lock=rwsem")
    assert 3 not in waits
    assert waits[2][1:] == (10_500, True) and waits[4][1:] == (0, True)
    assert all(spun == 0 for _, spun, _ in _waits(threads, "mmap_lock=rwsem-classic").values())
    # readers that leave within the limit hand the lock to the spinning writer, which never sleeps
    short = [Thread(tid=1, pid=1, ops=[Critical(lock, "read", 5_000)]), threads[1]]
    assert _waits(short, "mmap_lock=rwsem")[2] == (4_000, 4_000, False)


def test_at_most_256_readers_are_woken_at_once():
    lock = LockRef("mmap_lock", 1)
    readers = [Thread(tid=10 + i, pid=1, ops=[Critical(lock, "read", 100)], start_ns=1_000 + i) for i in range(300)]
    threads = [Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]), *readers]
    holds = _holds(threads, "mmap_lock=rwsem", cpus=301)
    first = sorted(ts for tid, (ts, _) in holds.items() if tid >= 10)
    assert first[255] == first[0] == 7_100 and first[256] > 7_100


@pytest.mark.parametrize("lock_class", ["page_table_lock", "i_mmap_rwsem"])
def test_as_recorded_replays_the_recorded_wait_verbatim(lock_class):
    lock = LockRef(lock_class, 1)
    w = Workload([Thread(tid=1, pid=1, ops=[Think(1_000), Critical(lock, "write", 500, recorded_wait_ns=7_000)])],
                 cpus=1)
    res = simulate(w, SimConfig(cpus=1, policy=resolve("as-recorded"), probe=False))
    assert res.tables["sim_lock_holds"].column("wait").to_pylist() == [7_000]


# ------------------------------------------------------------------ gathers and TLB flushes


def _gather(pages, policy, costs=None, preempt="full", probe=False):
    w = Workload([Thread(tid=1, pid=1, ops=[Gather(pages, pt_pages=2)], mm=1)], cpus=1)
    return simulate(w, SimConfig(cpus=1, policy=resolve(policy), preempt=preempt, probe=probe,
                                 costs=costs or Costs()))


def test_percpu_gather_flushes_every_506_pages_and_preemptible_every_10k():
    assert _gather(5_000, "gather=percpu").metrics["tlb_flushes"] == 10  # 9 full batches + the final flush
    # 1024-page zap blocks (!PREEMPT): the batch still flushes when it fills, inside a block
    assert _gather(5_000, "gather=percpu", preempt="none").metrics["tlb_flushes"] == 10
    assert _gather(5_000, "gather=preemptible").metrics["tlb_flushes"] == 1
    assert _gather(25_000, "gather=preemptible").metrics["tlb_flushes"] == 3


def test_failing_batch_allocations_fall_back_to_the_on_stack_batch():
    costs = replace(Costs(), batch_alloc_fail_p=1.0)
    # every PTE page (512 pages) fills the 8-entry local batch: a flush per page-table page
    assert _gather(5_000, "gather=preemptible", costs).metrics["tlb_flushes"] == 10


def test_percpu_gather_without_resched_requests_is_one_preempt_off_section():
    res = _gather(5_000, "gather=percpu")
    assert res.tables["sim_preempt_off"].num_rows == 1
    c = Costs()
    assert res.metrics["preempt_off_max_ns"] >= 5_000 * (c.zap_page_ns + c.free_page_ns)


def test_percpu_gather_breaks_at_zap_blocks_for_the_probe_under_full_but_not_under_none():
    full = _gather(200_000, "gather=percpu", preempt="full", probe=True)
    none = _gather(200_000, "gather=percpu", preempt="none", probe=True)
    assert full.metrics["probe_latency_max_ns"] < none.metrics["probe_latency_max_ns"]
    # preemptible gathers hold preemption off only while zapping one page-table page (+ a timer interrupt)
    pre = _gather(200_000, "gather=preemptible", preempt="full", probe=True)
    c = Costs()
    assert 512 * c.zap_page_ns <= pre.metrics["preempt_off_max_ns"] <= 512 * c.zap_page_ns + c.probe_irq_ns \
        + 8 * c.wake_jitter_ns


def test_remote_cpus_running_the_mm_get_shootdown_ipis():
    t1 = Thread(tid=1, pid=1, mm=7, ops=[Think(2_000), Gather(10)])
    t2 = Thread(tid=2, pid=1, mm=7, ops=[Think(50_000)])
    other = Thread(tid=3, pid=3, mm=8, ops=[Think(50_000)])
    res = simulate(Workload([t1, t2, other], cpus=3), SimConfig(cpus=3, policy=resolve("current"), probe=False))
    assert res.metrics["ipis"] == 1 and res.metrics["tlb_flushes"] == 1


# ------------------------------------------------------------------ the result contract


def test_result_tables_have_exactly_the_results_schema_and_carry_the_run(tmp_path):
    from replay.trace.schema import SIM_TABLES

    lock = LockRef("anon_vma", 9)
    w = Workload([Thread(tid=i, pid=1, mm=1, ops=[Think(3_000), Critical(lock, "write", 2_000, (Gather(700),))] * 5)
                  for i in range(1, 5)], cpus=2)
    res = simulate(w, SimConfig(cpus=2, policy=resolve("2.6.39"), seed=42, probe_period_ns=5_000))
    assert set(res.tables) == {t.name for t in SIM_TABLES}
    for t in SIM_TABLES:
        table = res.tables[t.name]
        assert table.schema.equals(t.schema), t.name
        assert t.kind == "results" and table.column_names[:2] == ["policy_set", "seed"]
        assert set(table.column("policy_set").to_pylist()) <= {"2.6.39"}
        assert set(table.column("seed").to_pylist()) <= {42}
    assert res.tables["sim_lock_waits"].num_rows > 0 and res.tables["sim_probe"].num_rows > 0


def test_progress_is_reported_up_to_completion():
    lock = LockRef("i_mmap_rwsem", 1)
    w = Workload([Thread(tid=i, pid=1, ops=[Critical(lock, "write", 100)] * 20_000) for i in (1, 2)], cpus=2)
    seen: list[float] = []
    simulate(w, SimConfig(cpus=2, policy=resolve("current"), probe=False), progress=seen.append)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1


def test_unknown_lock_classes_are_rejected_by_name():
    w = Workload([Thread(tid=1, pid=1, ops=[Critical(LockRef("i_mmap", 1), "write", 100)])], cpus=1)
    with pytest.raises(ValueError, match="i_mmap"):
        simulate(w, SimConfig(cpus=1, policy=resolve("current")))


@pytest.mark.parametrize(("field", "value"), [("cpus", 0), ("preempt", "rt"), ("mode", "replay")])
def test_nonsense_configs_are_usage_errors(field, value):
    kwargs = {"cpus": 1, "policy": resolve("current"), field: value}
    with pytest.raises(UsageError):
        SimConfig(**kwargs)


def test_service_time_perturbation_is_seeded_and_keeps_the_mean_work():
    lock = LockRef("i_mmap_rwsem", 1)
    w = Workload([Thread(tid=i, pid=1, ops=[Think(2_000), Critical(lock, "write", 1_000)] * 500) for i in (1, 2)],
                 cpus=2)

    def run(seed, perturb):
        return simulate(w, SimConfig(cpus=2, policy=resolve("current"), probe=False, seed=seed, perturb=perturb))

    exact = run(1, 0.0).metrics["work_cpu_ns"]
    a, b, c = run(1, 0.3), run(1, 0.3), run(2, 0.3)
    assert a.metrics == b.metrics
    assert a.metrics["work_cpu_ns"] != c.metrics["work_cpu_ns"]
    for r in (a, c):
        assert r.metrics["work_cpu_ns"] == pytest.approx(exact, rel=0.03)  # 2000 samples, cv 0.3: se ≈ 0.7%
    with pytest.raises(UsageError):
        SimConfig(cpus=1, policy=resolve("current"), perturb=-0.1)


@pytest.mark.parametrize("probe", [False, True])
def test_a_spinlock_holder_sleeping_while_its_waiter_takes_the_only_cpu_is_a_reported_deadlock(probe):
    from replay.errors import MmreplayError

    lock = LockRef("i_mmap_rwsem", 1)
    w = _two_threads([Critical(lock, "write", 100, (Block(10_000),))], [Critical(lock, "write", 100)], cpus=1)
    with pytest.raises(MmreplayError, match="deadlocked"):
        simulate(w, SimConfig(cpus=1, policy=resolve("i_mmap_rwsem=spinlock"), probe=probe))
    # with a second CPU the holder gets back on and the run completes, counting the atomic sleep
    res = simulate(w, SimConfig(cpus=2, policy=resolve("i_mmap_rwsem=spinlock"), probe=probe))
    assert res.metrics["atomic_sleeps"] == 1


@pytest.mark.parametrize(("policy", "knob"), [("i_mmap_rwsem=mutex", "mutex_handoff_after_ns"),
                                              ("i_mmap_rwsem=rwsem", "rwsem_handoff_after_ns")])
def test_spinners_steal_from_a_sleeper_only_until_it_has_waited_the_handoff_time(policy, knob):
    """T1 blocks holding the lock, so T2 goes to sleep; then T1 and T3 keep handing the lock to each
    other by optimistic spinning. T2 gets it once it has waited the hand-off time, not before."""
    lock = LockRef("i_mmap_rwsem", 1)
    loop = [Think(50), Critical(lock, "write", 2_000)] * 200
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))] + loop),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=loop, start_ns=4_990),  # tries at 5 040: T1 runs again, so T3 spins
    ]
    w = Workload(threads, cpus=3)

    def t2_wait(after_ns):
        costs = replace(Costs.zero(), **{knob: after_ns})
        res = simulate(w, SimConfig(cpus=3, policy=resolve(policy), costs=costs, probe=False))
        return next(r["wait"] for r in res.tables["sim_lock_holds"].to_pylist() if r["tid"] == 2)

    assert 50_000 <= t2_wait(50_000) <= 50_000 + 2 * 2_050
    assert t2_wait(10**12) > 700_000  # without the hand-off rule it starves until the others finish


def test_hand_offs_across_sockets_cost_the_remote_line_transfer():
    lock = LockRef("page_table_lock", 1)
    threads = [Thread(tid=i, pid=1, ops=[Critical(lock, "write", 50) for _ in range(300)]) for i in range(1, 9)]
    w = Workload(threads, cpus=8)

    def makespan(per_socket):
        costs = replace(Costs(), cpus_per_socket=per_socket)
        res = simulate(w, SimConfig(cpus=8, policy=resolve("page_table_lock=qspinlock"), costs=costs, probe=False))
        return res.metrics["makespan_ns"]

    one, two = makespan(0), makespan(4)
    assert two > one
    # at most every hand-off pays the difference
    assert two - one <= 8 * 300 * (Costs().line_transfer_remote_ns - Costs().line_transfer_ns)


@pytest.mark.parametrize(("policy", "knob"), [("i_mmap_rwsem=mutex", "mutex_handoff_after_ns"),
                                              ("i_mmap_rwsem=rwsem", "rwsem_handoff_after_ns")])
def test_unlock_wakes_the_sleeper_to_retry_and_a_running_task_takes_the_lock_first(policy, knob):
    """T1 blocks holding the lock, so T2 sleeps on it from 1 000. T1 unlocks at 6 100 and wakes T2,
    which needs 1 000 ns to run; T3 tries at 6 200 and takes the free lock at once (the kernel's
    wake-and-retry, no convoy). T2 retries at 7 100 and loses: a mutex waiter spins on the running T3
    and gets the lock at 9 200; an rwsem writer sleeps again (its wait loop does not spin), T3's unlock
    at 9 200 wakes it and it runs at 10 200. One wait, logged once, from its first attempt. A waiter
    past the hand-off time is handed the lock at the unlock instead, and then T3 waits -- an rwsem writer only
    once it has been woken and found the lock taken (it sets RWSEM_FLAG_HANDOFF itself): T2, asleep since
    it queued, is woken, T3 takes the lock, and T2, now flagged, spins on T3 and gets it at 9 200."""
    lock = LockRef("i_mmap_rwsem", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "write", 3_000)], start_ns=6_200),
    ]
    w = Workload(threads, cpus=3)

    def run(handoff_after_ns):
        costs = replace(Costs.zero(), wakeup_ns=1_000, **{knob: handoff_after_ns})
        res = simulate(w, SimConfig(cpus=3, policy=resolve(policy), costs=costs, probe=False))
        holds = {r["tid"]: r for r in res.tables["sim_lock_holds"].to_pylist()}
        return holds, res.tables["sim_lock_waits"].to_pylist()

    holds, waits = run(10**12)
    assert holds[1]["ts"] + holds[1]["dur"] == 6_100
    assert (holds[3]["ts"], holds[3]["wait"]) == (6_200, 0)  # the running task took the lock first
    if knob == "mutex_handoff_after_ns":
        assert (holds[2]["ts"], holds[2]["wait"]) == (9_200, 8_200)  # after T3, its whole wait logged
        assert [(r["tid"], r["ts"], r["dur"], r["spun_ns"], r["slept"]) for r in waits] == [
            (2, 1_000, 8_200, 2_100, True)]
    else:
        assert (holds[2]["ts"], holds[2]["wait"]) == (10_200, 9_200)
        assert [(r["tid"], r["ts"], r["dur"], r["spun_ns"], r["slept"]) for r in waits] == [
            (2, 1_000, 9_200, 0, True)]

    holds, waits = run(0)
    if knob == "mutex_handoff_after_ns":  # hand-off: the lock goes to T2 at the unlock, T3 waits for it
        assert (holds[2]["ts"], holds[2]["wait"]) == (7_100, 6_100)
        assert (holds[3]["ts"], holds[3]["wait"]) == (8_200, 2_000)  # slept on the off-CPU owner, woken at 7 200
        assert sorted(r["tid"] for r in waits) == [2, 3]
    else:  # an rwsem writer sets the hand-off flag itself once woken: T3 takes the lock first, T2 spins on it
        assert (holds[3]["ts"], holds[3]["wait"]) == (6_200, 0)
        assert (holds[2]["ts"], holds[2]["wait"]) == (9_200, 8_200)


def test_the_3_0_mutex_spinners_race_for_the_lock_at_a_ticket_lock_cost():
    """Three spinners wait on a running owner. Today's mutex (queued spinners) hands over for one line
    transfer; 3.0's (mutex-classic: unqueued, they all re-read the lock word) for 1 + 0.5·(3 − 1) = 2."""
    lock = LockRef("i_mmap_rwsem", 1)
    threads = [Thread(tid=1, pid=1, ops=[Critical(lock, "write", 10_000)])] + [
        Thread(tid=t, pid=1, ops=[Critical(lock, "write", 1_000)], start_ns=1_000 * t) for t in (2, 3, 4)]
    costs = replace(Costs.zero(), line_transfer_ns=100)

    def first_handover(policy):
        res = simulate(Workload(threads, cpus=4), SimConfig(cpus=4, policy=resolve(policy), costs=costs, probe=False))
        return min(r["ts"] for r in res.tables["sim_lock_holds"].to_pylist() if r["tid"] != 1) - 10_000

    assert first_handover("i_mmap_rwsem=mutex") == 100
    assert first_handover("i_mmap_rwsem=mutex-classic") == 200


def test_the_3_0_mutex_wakes_a_sleeper_at_every_unlock_even_when_a_spinner_takes_the_lock():
    """T2 sleeps behind T1, which blocks holding the lock. Back on its CPU, T1 unlocks at 6 100 while
    T3 spins: T3 gets the lock either way. 3.0 also wakes T2, which finds the lock taken and sleeps
    again without spinning; today's mutex leaves T2 asleep until T3's unlock. T2 gets the lock at
    the same time in both, after one wake-up more in 3.0."""
    lock = LockRef("i_mmap_rwsem", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "write", 3_000)], start_ns=6_050),
    ]
    costs = replace(Costs.zero(), wakeup_ns=1_000)

    def run(policy):
        res = simulate(Workload(threads, cpus=3), SimConfig(cpus=3, policy=resolve(policy), costs=costs, probe=False))
        holds = {r["tid"]: r["ts"] for r in res.tables["sim_lock_holds"].to_pylist()}
        return holds, sum(r["next_tid"] == 2 for r in res.tables["sim_sched"].to_pylist())

    today, classic = run("i_mmap_rwsem=mutex"), run("i_mmap_rwsem=mutex-classic")
    assert today[0][3] == classic[0][3] == 6_100 and today[0][2] == classic[0][2] == 10_100
    assert (today[1], classic[1]) == (2, 3)


@pytest.mark.parametrize("engine", ["python", "c"])
def test_the_3_0_mutex_unlock_waits_for_wait_lock_while_the_previous_unlocker_wakes_a_sleeper(engine):
    """3.0's unlock slowpath takes the mutex's wait_lock, then releases the count and calls
    wake_up_process() under it. T2 sleeps behind T1 (which blocks holding the lock); T1's unlock at
    6 100 hands the lock to spinning T3 and wakes T2, holding wait_lock W = 5 µs (T1 pays them). T3's
    unlock at 9 100 spins on wait_lock until 11 100, preemption off, before it releases; T2, runnable
    at 6 100 + W + 1 µs, then finds the lock free. With W = 0, T2 is woken twice and gets it at 10 100."""
    lock = LockRef("i_mmap_rwsem", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "write", 3_000)], start_ns=6_050),
    ]

    def run(waker_ns):
        costs = replace(Costs.zero(), wakeup_ns=1_000, mutex_waker_ns=waker_ns)
        res = simulate(Workload(threads, cpus=3), SimConfig(cpus=3, policy=resolve("i_mmap_rwsem=mutex-classic"),
                                                            costs=costs, probe=False, engine=engine))
        holds = {r["tid"]: (r["ts"], r["ts"] + r["dur"]) for r in res.tables["sim_lock_holds"].to_pylist()}
        woken = sum(r["next_tid"] == 2 for r in res.tables["sim_sched"].to_pylist()) - 1
        poff = [(r["ts"], r["dur"], r["tid"]) for r in res.tables["sim_preempt_off"].to_pylist()]
        return holds, woken, poff, res.metrics

    holds, woken, poff, _ = run(0)
    assert (holds[3], holds[2], woken, poff) == ((6_100, 9_100), (10_100, 10_200), 2, [])
    holds, woken, poff, m = run(5_000)
    assert (holds[3], holds[2], woken) == ((6_100, 11_100), (12_100, 12_200), 1)
    assert poff == [(9_100, 2_000, 3)] and m["spin_cpu_ns"] == 50 + 2_000  # T3 spun for the lock, then for wait_lock
    assert m["makespan_ns"] == 12_200


def test_a_woken_mutex_waiter_stays_first_in_line_and_a_second_unlock_wakes_no_one_else():
    """T2 (from 1 000) and T4 (from 2 000) sleep behind T1. T1's unlock at 6 100 wakes T2; T3 takes
    the lock meanwhile and unlocks at 6 300, before T2 runs (7 100): that unlock wakes no one (T2 is
    still first), so the lock goes T1, T3, T2, T4 and T4 is woken once, by T2's unlock."""
    lock = LockRef("i_mmap_rwsem", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=1_000),
        Thread(tid=4, pid=1, ops=[Critical(lock, "write", 100)], start_ns=2_000),
        Thread(tid=3, pid=1, ops=[Critical(lock, "write", 100)], start_ns=6_200),
    ]
    costs = replace(Costs.zero(), wakeup_ns=1_000, mutex_handoff_after_ns=10**12)
    res = simulate(Workload(threads, cpus=4),
                   SimConfig(cpus=4, policy=resolve("i_mmap_rwsem=mutex"), costs=costs, probe=False))
    holds = sorted(res.tables["sim_lock_holds"].to_pylist(), key=lambda r: r["ts"])
    assert [(r["tid"], r["ts"]) for r in holds] == [(1, 0), (3, 6_200), (2, 7_100), (4, 8_200)]
    dispatches = [r for r in res.tables["sim_sched"].to_pylist() if r["next_tid"] == 4]
    assert len(dispatches) == 2  # its start and the one wake-up


def test_a_downgraded_write_hold_turns_into_a_read_hold_without_letting_a_waiting_writer_in():
    """T1 holds mmap_lock for write 1 µs, downgrades it and holds it for read 5 µs more (munmap). Writer
    T2 (500) and reader T3 (2 000) arrive meanwhile. The read part never waits (one acquisition, two
    holds logged back to back); T3 shares the lock as soon as T1 is a reader; T2 gets it after both,
    spinning on the readers. Under a mutex the hold stays exclusive: T3 waits too."""
    lock = LockRef("mmap_lock", 1)
    threads = [
        Thread(tid=1, pid=1, ops=[Critical(lock, "write", 1_000, downgrade=Critical(lock, "read", 5_000))]),
        Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=500),
        Thread(tid=3, pid=1, ops=[Critical(lock, "read", 1_000)], start_ns=2_000),
    ]
    holds = _replay(threads, "mmap_lock=rwsem")["sim_lock_holds"].to_pylist()
    t1 = sorted((r["ts"], r["dur"], r["mode"], r["wait"]) for r in holds if r["tid"] == 1)
    assert t1 == [(0, 1_000, "write", 0), (1_000, 5_000, "read", 0)]
    by = {r["tid"]: r for r in holds if r["tid"] != 1}
    assert (by[3]["ts"], by[3]["wait"]) == (2_000, 0)
    assert by[2]["ts"] == 6_000  # when the last reader, T1, leaves (T3 left at 3 000)
    assert _waits(threads, "mmap_lock=rwsem")[2][1:] == (5_500, False)  # spun throughout, never slept
    mutex = {r["tid"]: r["ts"] for r in _replay(threads, "mmap_lock=mutex")["sim_lock_holds"].to_pylist()
             if r["tid"] != 1}
    assert mutex[3] >= 6_000


@pytest.mark.parametrize("engine", ["python", "c"])
@pytest.mark.parametrize(("per_socket", "line_attr"), [(0, "line_transfer_ns"), (1, "line_transfer_remote_ns")])
def test_lock_data_follows_the_lock_to_a_new_cpu_and_costs_its_line_transfers(engine, per_socket, line_attr):
    """Closed form (Costs.lock_data_lines): two threads on two CPUs each take one MCS lock K times back to back.
    They alternate strictly, so after the first hold every hold runs on the other CPU than the last owner's and
    costs h + D·L, and every hand-off L: makespan = h + (2K − 1)(h + D·L + L). A thread alone never pays."""
    from replay.sim import cengine

    if engine == "c" and not cengine.available():
        pytest.skip("the compiled engine is not installed")
    h, k, d = 400, 50, 3
    costs = replace(Costs.zero(), line_transfer_ns=31, line_transfer_remote_ns=95, cpus_per_socket=per_socket,
                    lock_data_lines=d)
    line = getattr(costs, line_attr)
    lock = LockRef("i_mmap_rwsem", 1)
    cfg = SimConfig(cpus=2, policy=resolve("i_mmap_rwsem=qspinlock"), costs=costs, probe=False, engine=engine)
    two = [Thread(tid=i, pid=i, ops=[Critical(lock, "write", h) for _ in range(k)]) for i in (1, 2)]
    res = simulate(Workload(two, cpus=2), cfg)
    assert res.metrics["makespan_ns"] == h + (2 * k - 1) * (h + d * line + line)
    assert res.metrics["overhead_cpu_ns"] == (2 * k - 1) * d * line
    alone = simulate(Workload(two[:1], cpus=2), cfg)
    assert alone.metrics["makespan_ns"] == k * h and alone.metrics["overhead_cpu_ns"] == 0
    # not modelled by default: the same run without it is the hand-offs only
    base = simulate(Workload(two, cpus=2), replace(cfg, costs=replace(costs, lock_data_lines=0)))
    assert base.metrics["makespan_ns"] == h + (2 * k - 1) * (h + line)
