"""Calibrating simulator costs from what a trace measured."""

from __future__ import annotations

import random

import pyarrow as pa

from replay.sim.calibrate import calibrate
from replay.sim.costs import Costs
from replay.trace.manifest import Host
from replay.trace.reader import Trace
from replay.trace.schema import TABLES_BY_NAME
from replay.trace.writer import write_trace


def _table(name, rows):
    spec = TABLES_BY_NAME[name]
    default = {pa.int64(): 0, pa.int32(): 0, pa.uint64(): 0, pa.uint32(): 0, pa.bool_(): False}
    cols = {}
    for c in spec.columns:
        values = [r.get(c.name, c.values[0] if c.is_enum else default.get(c.type)) for r in rows]
        cols[c.name] = pa.array(values, pa.string() if c.is_enum else c.type)
    return cols


def _trace(tmp_path, tables):
    host = Host(kernel_release="6.8.0-test", arch="x86_64", page_size=4096, cpus=2, preempt_model="voluntary",
                hostname="t")
    write_trace(tmp_path / "t", {n: _table(n, r) for n, r in tables.items()}, host=host)
    return Trace.open(tmp_path / "t")


def test_wakeup_free_and_zap_costs_come_from_the_trace(tmp_path):
    rng = random.Random(1)
    wakes, switches = [], []
    t = 1_000_000
    for i in range(400):
        tid = 10 + i % 7
        lat = 300 + round(rng.expovariate(1 / 2_000))
        wakes.append(dict(ts=t, tid=tid, kind="wakeup", target_cpu=0))
        switches.append(dict(ts=t + lat, next_tid=tid))
        t += 50_000
    bursts = [dict(ts=i * 10_000, pages=p, dur=(p - 1) * 75, batched=True) for i, p in enumerate(range(32, 290, 8))]
    flush = Costs().full_flush_ns
    gathers = [dict(ts=i * 100_000, pages=128, flushes=1, dur=128 * (30 + 75) + flush) for i in range(30)]
    cal = calibrate(_trace(tmp_path, {"sched_wakeup": wakes, "sched_switch": switches,
                                      "page_free_batches": bursts, "gathers": gathers}))
    c = cal.costs
    assert 300 <= c.wakeup_ns <= 600  # 300 + the 5th percentile of Exp(2000) ≈ 403
    assert 1_500 <= c.wake_jitter_ns <= 2_600
    assert c.free_page_ns == 75
    assert c.zap_page_ns == 30
    assert c.context_switch_ns == Costs().context_switch_ns
    assert any("400 wake-up" in n for n in cal.notes)


def test_figures_a_trace_cannot_measure_keep_their_defaults_and_say_why(tmp_path):
    few = [dict(ts=i * 1000, pages=64, dur=63 * 75, batched=True) for i in range(5)]
    cal = calibrate(_trace(tmp_path, {"page_free_batches": few}))
    assert cal.costs == Costs()
    assert any("free_page_ns: default (5 batched bursts" in n for n in cal.notes)
    assert any("no gathers table" in n for n in cal.notes)
    assert any("no sched_wakeup" in n for n in cal.notes)


def test_the_lock_hand_off_comes_from_waits_that_saw_another_task_release(tmp_path):
    """Two tasks alternate on one lock: each waits for the other's release and runs 400 ns after it.
    Uncontended acquisitions (no release inside their wait) and a task's own earlier release do not count."""
    holds = []
    t = 10_000
    for i in range(60):
        a, b = 1 + i % 2, 2 - i % 2
        holds.append(dict(ts=t, dur=1_000, wait=0, tid=a, lock_addr=0x10, lock_class="mmap_lock", mode="write"))
        # b tried during a's hold and got the lock 400 ns after a released it
        holds.append(dict(ts=t + 1_400, dur=1_000, wait=900, tid=b, lock_addr=0x10, lock_class="mmap_lock",
                          mode="write"))
        t += 50_000
    cal = calibrate(_trace(tmp_path, {"lock_holds": holds}))
    assert cal.costs.line_transfer_ns == 400
    assert any("60 lock hand-offs" in n for n in cal.notes)


def test_the_lock_hand_off_leaves_out_waiters_that_slept(tmp_path):
    """40 waiters spin through their wait and run 400 ns after the release; 80 slept and were switched in
    (woken) 9 µs after it. The engine adds a sleeper's wake-up and run-queue wait on top of the hand-off,
    so only the spinners measure it (counting the sleepers too made it 9 µs, added twice)."""
    holds, switches = [], []
    t = 10_000
    for i in range(120):
        a, b = 1 + i % 2, 2 - i % 2
        slept = i % 3 != 0
        gap = 9_000 if slept else 400
        holds.append(dict(ts=t, dur=1_000, wait=0, tid=a, lock_addr=0x10, lock_class="mmap_lock", mode="write"))
        holds.append(dict(ts=t + 1_000 + gap, dur=1_000, wait=500 + gap, tid=b, lock_addr=0x10,
                          lock_class="mmap_lock", mode="write"))
        if slept:
            switches.append(dict(ts=t + 1_000 + gap - 100, prev_tid=0, next_tid=b))
        t += 50_000
    cal = calibrate(_trace(tmp_path, {"lock_holds": holds, "sched_switch": switches}))
    assert cal.costs.line_transfer_ns == 400
    assert any("40 lock hand-offs" in n for n in cal.notes)
