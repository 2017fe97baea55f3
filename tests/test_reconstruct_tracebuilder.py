"""tests/tracebuilder.py writes valid, self-consistent traces (other test files build on it)."""

from __future__ import annotations

from replay.trace import Trace
from tests.tracebuilder import FILE_A, TraceBuilder, mm_addr


def sample(b: TraceBuilder) -> None:
    t, u = b.thread(10, comm="a"), b.thread(20, pid=10, comm="a")
    with t.syscall("munmap"), t.mmap_lock("write", wait=200):
        with t.lock("i_mmap_rwsem", FILE_A, wait=300):
            t.run(400)
        t.gather(pages=100, flushes=2, remote_cpus=1)
    with u.fault(0x1000, wait=50):
        u.run(300)
    u.sleep(1_000)
    u.preempted(500)


def test_every_table_passes_the_reader_and_seq_orders_events(tmp_path):
    b = TraceBuilder(cpus=3)
    sample(b)
    trace = Trace.open(b.write(tmp_path / "t"))
    assert trace.manifest.host.cpus == 3 and trace.manifest.end_ns == b.end_ns
    seqs = []
    for name in trace.tables:
        df = trace.read(name)
        if "seq" in df.columns:
            seqs += df["seq"].to_list()
            assert df.sort("seq")["ts"].is_sorted() or name == "lock_holds"  # holds carry their opening seq
    assert sorted(seqs) == list(range(len(seqs)))


def test_tier1_sees_mmap_lock_holds_and_contended_waits_only(tmp_path):
    b = TraceBuilder()
    sample(b)
    t1 = Trace.open(b.write(tmp_path / "t1"))
    t2 = Trace.open(b.write(tmp_path / "t2", tier=2))
    assert set(t1.read("lock_holds")["lock_class"].cast(str)) == {"mmap_lock"}
    assert set(t2.read("lock_holds")["lock_class"].cast(str)) == {"mmap_lock", "i_mmap_rwsem"}
    assert not t1.has("gathers") and t2.read("gathers")["pages"].to_list() == [100]
    waits = t1.read("lock_waits").sort("tid", "ts")
    assert waits["lock_class"].cast(str).to_list() == ["mmap_lock", "i_mmap_rwsem", "mmap_lock"]
    assert waits["dur"].to_list() == [200, 300, 50]
    holds = t2.read("lock_holds").sort("ts")
    assert holds.filter(holds["lock_class"] == "i_mmap_rwsem")["depth"].to_list() == [1]
    assert holds["lock_addr"].to_list()[0] == mm_addr(10)


def test_truth_keeps_every_hold_and_omit_drops_tables(tmp_path):
    b = TraceBuilder()
    sample(b)
    assert [(h.lock_class, h.wait, h.hold) for h in b.truth if h.tid == 10] == [
        ("mmap_lock", 200, 300 + 400 + 100 * 20 + 2), ("i_mmap_rwsem", 300, 400)]
    trace = Trace.open(b.write(tmp_path / "t", omit=("sched_switch", "ipis")))
    assert not trace.has("sched_switch") and not trace.has("ipis") and trace.has("sched_wakeup")


def test_wait_none_queues_behind_the_last_release(tmp_path):
    b = TraceBuilder()
    a, c = b.thread(1), b.thread(2)
    with a.lock("i_mmap_rwsem", FILE_A, wait=None):  # free: no wait
        a.run(1_000)
    c.run(300)
    with c.lock("i_mmap_rwsem", FILE_A, wait=None):  # arrives at 300, A releases at 1000
        c.run(50)
    assert [(h.tid, h.wait, h.hold) for h in b.truth] == [(1, 0, 1_000), (2, 700, 50)]
