"""The recorder's pieces that need no kernel: decoding BPF slots into schema rows, and refusing bad input early."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

from replay.cli.main import main
from replay.errors import TraceError, UsageError
from replay.trace.reader import Trace
from replay.trace.schema import LOCK_CLASSES
from replay.trace.writer import write_trace
from tracer import decode, events, programs
from tracer.recorder import Recorder, RecordOptions


def _records(kind: int, n: int, **fields) -> np.ndarray:
    rec = np.zeros(n, dtype=events.KIND_DTYPES[kind])
    rec["kind"] = kind
    rec["ts"] = 1_000 + np.arange(n) * 10
    rec["seq"] = np.arange(n)
    rec["pid"], rec["tid"], rec["cpu"] = 7, 8, 1
    for k, v in fields.items():
        rec[k] = v
    return rec


def _classify_all_other(stack, flags, addr):
    return np.full(len(stack), "other", dtype=object)


def test_every_decoder_yields_rows_its_table_accepts(tmp_path):
    tables = {}
    for kind, fam in programs.FAMILIES_BY_KIND.items():
        rec = _records(kind, 5)
        if kind == events.EV_LOCK_HOLD:
            rec["lock_class"] = 1
            rec["mode"] = 1
        if kind == events.EV_TLB_FLUSH:
            rec["reason"] = 5  # TLB_REMOTE_WRONG_CPU, the newest reason
            rec["pages"] = -1
        if kind == events.EV_SYSCALL:
            rec["nr"] = np.arange(5)
        if kind == events.EV_SCHED_WAKEUP:
            rec["wake_kind"] = 2
        tables[fam.table] = decode.columns(kind, rec, 0, _classify_all_other)
    write_trace(tmp_path / "t", tables)
    trace = Trace.open(tmp_path / "t")
    for fam in programs.FAMILIES:
        assert trace.rows(fam.table) == 5
    assert trace.scan("tlb_flushes").collect()["reason"].cast(str).to_list() == ["TLB_REMOTE_WRONG_CPU"] * 5


def test_intervals_opened_before_the_recording_start_at_the_recording_start():
    start = 5_000
    rec = _records(events.EV_SYSCALL, 2, dur=[300, 9_000])
    rec["flags"][1] = events.F_NO_START | events.F_INCOMPLETE
    rec["ts"][1] = 0  # the BPF side does not know when it opened; dur holds its end
    cols = decode.columns(events.EV_SYSCALL, rec, start, _classify_all_other)
    assert cols["ts"].tolist() == [1_000, start]
    assert cols["dur"].tolist() == [300, 9_000 - start]
    assert cols["incomplete"].tolist() == [False, True]


def test_rows_come_out_sorted_by_timestamp_then_sequence():
    rec = _records(events.EV_PAGE_FAULT, 4)
    rec["ts"] = [30, 10, 10, 20]
    rec["seq"] = [0, 5, 2, 1]
    cols = decode.columns(events.EV_PAGE_FAULT, rec, 0, _classify_all_other)
    assert cols["ts"].tolist() == [10, 10, 20, 30]
    assert cols["seq"].tolist() == [2, 5, 1, 0]


def test_sched_rows_refer_to_every_task_they_mention():
    rec = _records(events.EV_SCHED_SWITCH, 1, next_tid=99)
    assert decode.referenced_tids(events.EV_SCHED_SWITCH, rec).tolist() == [8, 99]


def test_record_refuses_a_non_empty_directory_without_force(tmp_path):
    (tmp_path / "x").write_text("mine")
    with pytest.raises(TraceError, match="--force"):
        Recorder(RecordOptions(output=tmp_path)).run()
    with pytest.raises(TraceError, match="holds no trace"):
        Recorder(RecordOptions(output=tmp_path, force=True)).run()


def test_unknown_probe_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["record", "-o", str(tmp_path / "t"), "--probes", "page_fault,nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and "page_fault" in err[0]
    assert not (tmp_path / "t").exists()


def test_unknown_workload_is_a_one_line_usage_error(tmp_path, capsys):
    assert main(["record", "-o", str(tmp_path / "t"), "--workload", "no-such-workload"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workload" in err[0]


def test_comm_filters_that_cannot_be_compiled_in_are_refused():
    with pytest.raises(UsageError):
        programs.cflags(programs.Filter(comm='a"b'))
    flags = programs.cflags(programs.Filter(comm="a-very-long-task-name"))
    assert '-DMMR_COMM="a-very-long-tas"' in flags  # the kernel keeps 15 characters


def test_page_free_recovery_is_on_unless_record_is_told_otherwise(monkeypatch):
    from replay.cli import record as record_cli
    from replay.cli.main import build_parser

    seen = []
    monkeypatch.setattr("tracer.recorder.record", lambda opts: seen.append(opts) or (_ for _ in ()).throw(SystemExit))
    for argv, want in ((["record", "-o", "t", "--", "true"], True),
                       (["record", "-o", "t", "--no-page-free-recovery", "--", "true"], False)):
        with pytest.raises(SystemExit):
            record_cli.run(build_parser().parse_args(argv))
        assert seen.pop().pf_recover is want
    assert "-DMMR_PF_RECOVER=1" in programs.cflags(programs.Filter())
    assert "-DMMR_PF_RECOVER=0" in programs.cflags(programs.Filter(), pf_recover=False)


def test_probe_selection_keeps_load_order():
    names = [f.name for f in programs.select(["tlb_flush", "page_free"])]
    assert names == ["page_free", "tlb_flush"]  # a TLB flush closes the page-free burst: page_free first
    assert [f.name for f in programs.select(None)] == [f.name for f in programs.FAMILIES]


def test_a_preempted_task_switches_out_with_state_0_as_the_format_says():
    rec = _records(events.EV_SCHED_SWITCH, 3, prev_state=[decode.TASK_REPORT_MAX, 1, 2])
    assert decode.columns(events.EV_SCHED_SWITCH, rec, 0, _classify_all_other)["prev_state"].tolist() == [0, 1, 2]


class _FakeMap:
    """Stands in for a bcc table: items() for hash maps, [key] -> per-CPU values for per-CPU arrays
    (per_cpu: entry 0's; levels: the other entries', e.g. the batches of deeper nesting levels)."""

    def __init__(self, items=(), per_cpu=(), levels=None):
        self._items, self._per_cpu, self._levels = list(items), list(per_cpu), dict(levels or {})

    def items(self):
        return self._items

    def __getitem__(self, key):
        return self._per_cpu if key == 0 else self._levels.get(key, [])


def test_what_is_still_open_at_stop_becomes_incomplete_rows_up_to_the_stop():
    from types import SimpleNamespace as NS

    stop = 10_000
    batch = np.zeros(1, events.DTYPES["mmr_batch"])
    batch["count"] = 1
    slot = batch["ev"][0][:64].view(events.KIND_DTYPES[events.EV_PAGE_FAULT])
    slot["kind"], slot["ts"], slot["tid"] = events.EV_PAGE_FAULT, 9_000, 8
    import ctypes

    cpu_batch = ctypes.create_string_buffer(batch.tobytes(), events.BATCH_SIZE)
    slot["ts"] = 9_500  # an interrupt's event, in the batch of nesting level 2 of the same CPU
    nested_batch = ctypes.create_string_buffer(batch.tobytes(), events.BATCH_SIZE)
    fake = {
        "mmr_batches": _FakeMap(per_cpu=[cpu_batch], levels={2: [nested_batch]}),
        "mmr_pf_bursts": _FakeMap(per_cpu=[NS(active=1, first_ts=8_000, last_ts=8_500, seq=3, pid=7, tid=8,
                                               batched=1, pages=40), NS(active=0)]),
        "mmr_mmap_lock": _FakeMap(items=[  # per task: its mmap_lock slots
            (NS(value=8), NS(pid=7, s=[NS(mm=0xAA, held=1, acq_ts=7_000, seq=1, cpu=0, wait=50, depth=0, write=1),
                                       NS(mm=0, held=0)])),
            (NS(value=9), NS(pid=7, s=[NS(mm=0xAA, held=0)])),  # still waiting for the lock: only counted
        ]),
        "mmr_contention": _FakeMap(items=[
            (NS(tid=os.getpid(), addr=0xBB), NS(ts=6_000, seq=2, pid=7, cpu=1, p=NS(flags=4, begins=2), stack_id=-1,
                                                csw=0)),
            # a task gone by the stop (tids stay below pid_max, 2^22 at most): its end was lost, not cut
            (NS(tid=(1 << 22) + 1, addr=0xBC), NS(ts=6_500, seq=3, pid=7, cpu=1, p=NS(flags=1, begins=1),
                                                  stack_id=-1, csw=0)),
            # a spinning wait (SPIN) of a task switched out since its begin (count 0 then): its end was lost
            (NS(tid=os.getpid(), addr=0xBD), NS(ts=6_700, seq=4, pid=7, cpu=1, p=NS(flags=1, begins=1),
                                                stack_id=-1, csw=1))]),
        "mmr_sys_open": _FakeMap(items=[(NS(value=8), NS(ts=5_000, seq=0, pid=7, cpu=0, nr=1, arg0=1, arg1=2, open=1)),
                                         (NS(value=9), NS(open=0))]),  # a task between two calls
    }
    r = Recorder(RecordOptions(output="unused"))
    r._bpf, r._unmatched_extra, r._start_ns = fake, {}, 0
    r._kinds = {f.kind for f in programs.FAMILIES}
    r._leftovers(stop)
    got = {k: decode.columns(k, np.concatenate(v), 0, _classify_all_other) for k, v in r._pending.items()}
    assert sorted(got[events.EV_PAGE_FAULT]["ts"].tolist()) == [9_000, 9_500]  # the partly filled batches
    burst = got[events.EV_PAGE_FREE]
    assert (burst["pages"].tolist(), burst["dur"].tolist(), burst["incomplete"].tolist()) == ([40], [500], [True])
    hold = got[events.EV_LOCK_HOLD]
    assert (hold["ts"].tolist(), hold["dur"].tolist(), hold["incomplete"].tolist()) == ([7_000], [3_000], [True])
    assert [LOCK_CLASSES[c] for c in hold["lock_class"]] == ["mmap_lock"]
    assert r._unmatched_extra[events.EV_LOCK_HOLD] == 1
    wait = got[events.EV_LOCK_WAIT]
    assert (wait["dur"].tolist(), wait["begins"].tolist(), wait["incomplete"].tolist()) == ([4_000], [2], [True])
    assert r._unmatched_extra[events.EV_LOCK_WAIT] == 2
    call = got[events.EV_SYSCALL]
    assert (call["dur"].tolist(), call["name"].tolist(), call["incomplete"].tolist()) == ([5_000], [1], [True])


def test_a_lock_wait_ended_without_its_begin_by_a_task_born_after_the_start_is_not_written():
    """Its contention_begin was lost (skipped as BPF recursion), the wait did not begin before the recording:
    written from the recording start, it would span the whole recording. A task alive at the start may have
    begun its wait before: that one is a wait cut by the start."""
    r = Recorder(RecordOptions(output="unused"))
    r._kinds = {events.EV_LOCK_WAIT}
    r._alive_at_start = np.array([0, 5, 8])
    rec_ = np.zeros(4, events.KIND_DTYPES[events.EV_LOCK_WAIT])
    rec_["kind"] = events.EV_LOCK_WAIT
    rec_["tid"] = [5, 9, 9, 0]
    rec_["flags"] = [events.F_NO_START | events.F_INCOMPLETE] * 3 + [events.F_NO_START | events.F_INCOMPLETE]
    rec_["flags"][2] = 0  # a whole wait of the new task: kept
    r._add(events.EV_LOCK_WAIT, rec_)
    kept = np.concatenate(r._pending[events.EV_LOCK_WAIT])
    assert kept["tid"].tolist() == [5, 9, 0] and kept["flags"].tolist()[1] == 0


def test_lock_waits_are_classified_once_per_distinct_stack_and_flags(monkeypatch):
    import replay.lockclass
    from tracer.recorder import _lock_classifier

    seen = []

    def fake_classify(lock_addr, flags, stack, symbolize):
        seen.append((tuple(stack), flags))
        return "anon_vma" if stack else "other"

    monkeypatch.setattr(replay.lockclass, "classify", fake_classify)
    run = _lock_classifier(None, lambda sid: [0xFFFF0000 + sid])
    out = run(np.array([3, -1, 3, 5, 3], np.int32), np.array([4, 2, 4, 4, 2], np.uint32), np.zeros(5, np.uint64))
    assert out.tolist() == ["anon_vma", "other", "anon_vma", "anon_vma", "anon_vma"]
    assert sorted(seen) == sorted([((), 2), ((0xFFFF0003,), 4), ((0xFFFF0003,), 2), ((0xFFFF0005,), 4)])
    run(np.array([3], np.int32), np.array([4], np.uint32), np.zeros(1, np.uint64))
    assert len(seen) == 4  # cached across chunks


def test_a_backlog_is_decoded_and_written_in_bounded_steps(monkeypatch):
    """The recorder starved of CPU catches up on a backlog several times the step: no step decodes more than
    DRAIN_STEP_BYTES (the decoding buffers stay bounded), every row is written, in (ts, seq) order."""
    import tracer.recorder as rec

    monkeypatch.setattr(rec, "DRAIN_STEP_BYTES", 8 * events.BATCH_SIZE)
    nbatches, written, steps = 50, [], []
    batches = np.zeros(nbatches, events.DTYPES["mmr_batch"])
    batches["count"] = events.BATCH_EVENTS
    slots = np.zeros(nbatches * events.BATCH_EVENTS, events.KIND_DTYPES[events.EV_PAGE_FAULT])
    slots["kind"] = events.EV_PAGE_FAULT
    slots["ts"] = np.arange(len(slots)) * 10
    slots["seq"] = np.arange(len(slots))
    batches["ev"] = slots.view(np.uint8).reshape(nbatches, -1)
    r = Recorder(RecordOptions(output="unused"))
    r._kinds, r._start_ns, r._classify = {events.EV_PAGE_FAULT}, 0, _classify_all_other
    r._writer = type("W", (), {"write": lambda self, table, cols: written.append(cols["ts"].copy())})()
    r._raw = [b.tobytes() for b in batches]
    absorb = r._absorb
    monkeypatch.setattr(r, "_absorb", lambda raw: (steps.append(len(raw)), absorb(raw)))
    r._drain_and_write(watermark=int(slots["ts"][-1]) + 1)
    assert len(steps) == nbatches // 8 + 1 and max(steps) <= 8 * events.BATCH_SIZE
    ts = np.concatenate(written)
    assert len(ts) == len(slots) and (np.diff(ts) > 0).all()
    assert not r._raw and not any(r._pending_rows.values())


def test_a_table_writes_a_chunk_when_its_pending_rows_reach_the_bound(monkeypatch):
    """Rows above the watermark are kept for sorting with later ones, but never more than CHUNK_ROWS per table."""
    import tracer.recorder as rec

    monkeypatch.setattr(rec, "CHUNK_ROWS", 1000)
    written = []
    r = Recorder(RecordOptions(output="unused"))
    r._kinds, r._start_ns, r._classify = {events.EV_PAGE_FAULT}, 0, _classify_all_other
    r._writer = type("W", (), {"write": lambda self, table, cols: written.append(len(cols["ts"]))})()
    rec_ = np.zeros(600, events.KIND_DTYPES[events.EV_PAGE_FAULT])
    rec_["kind"], rec_["ts"] = events.EV_PAGE_FAULT, 10**9
    r._add(events.EV_PAGE_FAULT, rec_)
    r._write(watermark=0)  # every row is newer than the watermark: kept
    assert written == [] and r._pending_rows[events.EV_PAGE_FAULT] == 600
    r._add(events.EV_PAGE_FAULT, rec_.copy())
    r._write(watermark=0)  # 1200 >= CHUNK_ROWS: written
    assert written == [1200] and r._pending_rows[events.EV_PAGE_FAULT] == 0


def test_the_compilers_code_pages_leave_the_recorders_rss_once_the_programs_are_loaded():
    """bcc compiles in the recorder's process: clang's and LLVM's code stays resident unless given back."""
    import ctypes
    import glob

    from tracer.recorder import release_compiler_memory

    libs = sorted(glob.glob("/usr/lib/*/libLLVM*.so*") + glob.glob("/usr/lib/*/libLLVM-*.so*"))
    if not libs:
        pytest.skip("no libLLVM here (bcc's compiler)")
    ctypes.CDLL(libs[0])

    def code_ranges():
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and "libLLVM" in parts[5] and parts[1].startswith("r-x"):
                    yield tuple(int(x, 16) for x in parts[0].split("-"))

    def resident_kib():
        total, inside = 0, False
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split()[0]
                if "-" in first and not first.endswith(":"):
                    inside = "libLLVM" in line and line.split()[1].startswith("r-x")
                elif inside and first == "Rss:":
                    total += int(line.split()[1])
        return total

    for lo, hi in code_ranges():  # as a compilation would: its code paged in (a byte of every page)
        touched = sum(ctypes.c_char.from_address(page).value[0] for page in range(lo, hi, 4096))
        assert touched >= 0
    before = resident_kib()
    assert release_compiler_memory() > 0
    assert before > 10_000 and resident_kib() < before / 4


def test_a_skip_outside_the_recording_that_the_backup_saw_is_not_lost(monkeypatch):
    """The kernel's recursion misses and the backup program's recoveries are taken at the same two moments:
    a TLB flush skipped between the start snapshot and mmr_ctl = RECORDING (or between CTL_STOPPED and the
    stop snapshot) counts in both, never as lost (the truth test saw a rare tlb_flush 'lost 1' from that)."""
    from types import SimpleNamespace as NS

    import tracer.recorder as rec_mod

    tlb = next(f for f in programs.FAMILIES if f.name == "tlb_flush")
    kernel = {"misses": 0, "seen": 0}  # the kernel's miss count and the backup's per-CPU counter (CPU 0)

    class Backup:
        def __getitem__(self, key):
            return [NS(value=kernel["seen"])]

    r = Recorder(RecordOptions(output="unused"))
    r._families, r._backup_attached = [tlb], {"tlb_flush"}
    r._bpf = {"mmr_tlb_recovered": Backup()}
    monkeypatch.setattr(r, "_prog_fds", lambda fam: {"tlb:tlb_flush": 3})
    monkeypatch.setattr(rec_mod, "prog_recursion_misses", lambda fd: kernel["misses"])

    def skipped(n: int) -> None:  # n hits skipped by the main program, each seen by the backup
        kernel["misses"] += n
        kernel["seen"] += n

    skipped(5)  # before the recording: not in it
    r._misses_at_start = r._misses_now()
    skipped(2)  # between the snapshot and CTL_RECORDING: the backup saw them whatever mmr_ctl said
    skipped(7)  # while recording: recorded by the backup
    kernel["misses"] += 1  # one the backup could not take (it was running itself): a real loss
    skipped(3)  # after CTL_STOPPED, before the stop snapshot
    r._misses_at_stop = r._misses_now(stop=True)
    skipped(4)  # while detaching
    loss = r._loss({})
    assert loss["tlb_flush"]["bpf_recursion_skipped"] == 1
    assert r._recovered["tlb_flush"] == 12


def test_a_switch_the_kernel_never_reported_is_counted_apart_from_lost(monkeypatch):
    """Rows written through the recorder: a recorded task switched out twice in a row is one switch-in the
    kernel did not emit (switch_unreported, never in LOST_REASONS), less what the ring buffer refused (which
    leaves the same gap, and is lost); the gap names the task the first switch-out went to."""
    sw = next(f for f in programs.FAMILIES if f.name == "sched_switch")
    r = Recorder(RecordOptions(output="unused"))
    r._families, r._backup_attached, r._bpf = [sw], set(), {}
    r._misses_at_start = r._misses_at_stop = {}
    monkeypatch.setattr(r, "_prog_fds", lambda fam: {})

    class Sink:
        def write(self, table, cols):
            pass

    r._writer, r._start_ns, r._classify = Sink(), 0, _classify_all_other
    rec = _records(events.EV_SCHED_SWITCH, 3, next_tid=[93, 15, 8], tid=[8, 8, 15],
                   flags=[events.F_PREV_RECORDED, events.F_PREV_RECORDED, events.F_NEXT_RECORDED])
    r._emit(events.EV_SCHED_SWITCH, rec)
    from tracer.recorder import LOST_REASONS, NOT_EMITTED

    assert NOT_EMITTED == "switch_unreported" and NOT_EMITTED not in LOST_REASONS
    assert r._loss({})["sched_switch"]["switch_unreported"] == 1
    assert r._switch_gaps.gap_next == [93]
    assert r._loss({events.EV_SCHED_SWITCH: (3, 1, 0, 0)})["sched_switch"]["switch_unreported"] == 0


def test_every_librarys_code_pages_leave_the_rss_before_compiling_and_come_back_when_run():
    """The compilation is the recorder's peak: code paged in by the imports must not add to it."""
    import numpy as np

    from tracer.recorder import release_code_pages

    def resident_code_kib() -> int:
        total, inside = 0, False
        with open("/proc/self/smaps") as f:
            for line in f:
                first = line.split()[0]
                if "-" in first and not first.endswith(":"):
                    parts = line.split()
                    inside = parts[1] == "r-xp" and len(parts) > 5 and parts[5].startswith("/")
                elif inside and first == "Rss:":
                    total += int(line.split()[1])
        return total

    np.linalg.inv(np.eye(3)) @ np.arange(3.0)  # page some of numpy's code in
    before = resident_code_kib()
    assert release_code_pages() > 0
    after = resident_code_kib()
    assert before > 4096 and after < before / 2
    assert (np.linalg.inv(np.eye(3)) @ np.arange(3.0)).tolist() == [0.0, 1.0, 2.0]  # runs as before


def test_a_written_code_mapping_keeps_its_pages(tmp_path) -> None:
    """MADV_DONTNEED on a private file mapping throws away the pages written to it (text relocations, a
    breakpoint): release_code_pages must leave such a mapping alone."""
    import mmap

    from tracer.recorder import release_code_pages

    path = tmp_path / "code.bin"
    path.write_bytes(b"\x90" * mmap.PAGESIZE * 2)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), mmap.PAGESIZE * 2, flags=mmap.MAP_PRIVATE,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m[:4] = b"\xcc\xcc\xcc\xcc"  # a private copy of the first page, as the loader's relocations make
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(addr, mmap.PAGESIZE * 2, mmap.PROT_READ | mmap.PROT_EXEC) == 0  # r-xp, like code
    release_code_pages()
    assert bytes(m[:4]) == b"\xcc\xcc\xcc\xcc"  # with MADV_DONTNEED it would read the file's 0x90 again


def test_page_free_loss_is_the_main_programs_skips_and_deferrals_less_the_last_programs_records(monkeypatch):
    """page_free's two programs (bpf/page_free.c): the main program's skips, and the hits it left to the last
    program (no free slot), that the last one recorded are not lost; the last program's own skips and the
    slots' counters are reported apart (extra.backup_programs), never added to the loss."""
    from types import SimpleNamespace as NS

    import tracer.recorder as rec_mod

    pf = next(f for f in programs.FAMILIES if f.name == "page_free")
    k = {"main": 0, "backup": 0, "recovered": 0, "mine": 0, "deferred": 0, "stale": 0}

    class PerCpu:
        def __init__(self, *keys):
            self.keys = keys

        def __getitem__(self, i):
            return [NS(value=k[self.keys[i]])]

    r = Recorder(RecordOptions(output="unused"))
    r._families, r._backup_attached = [pf], {"page_free"}
    r._helper_progs = {"backup:page_free": 12}
    r._bpf = {"mmr_pf_recovered": PerCpu("recovered"), "mmr_pf_bk": PerCpu("mine", "deferred", "stale")}
    monkeypatch.setattr(r, "_prog_fds", lambda fam: {"kmem:mm_page_free": 10})
    monkeypatch.setattr(rec_mod, "prog_recursion_misses", lambda fd: k[{10: "main", 12: "backup"}[fd]])

    k.update(main=4, recovered=4)  # before the recording
    start = r._misses_at_start = r._misses_now()
    k["main"] += 30
    k["deferred"] += 3  # three hits found every slot held: the last program records them
    k["recovered"] += 32  # one skipped hit nested in the last program's window too: lost
    k["mine"] += 25  # of the 32, 25 were the recorded tasks' (rows); the rest other tasks' (filtered out)
    k["backup"] += 9
    k["stale"] += 1
    stop = r._misses_at_stop = r._misses_now(stop=True)
    loss = r._loss({})
    assert loss["page_free"]["bpf_recursion_skipped"] == 1
    assert r._recovered["page_free"] == 32
    assert rec_mod.backup_programs(start, stop) == {"page_free": {
        "recovered_recorded_tasks": 25, "deferred": 3, "stale_released": 1, "backup_skipped": 9}}


def _fault_batches(nbatches: int, counts: list[int] | None = None) -> tuple[list[bytes], np.ndarray]:
    batches = np.zeros(nbatches, events.DTYPES["mmr_batch"])
    batches["count"] = counts or events.BATCH_EVENTS
    slots = np.zeros(nbatches * events.BATCH_EVENTS, events.KIND_DTYPES[events.EV_PAGE_FAULT])
    slots["kind"] = events.EV_PAGE_FAULT
    # two CPUs' batches interleaved: each batch in order, the batches not
    slots["ts"] = (np.arange(len(slots)) * 10).reshape(nbatches, -1)[np.r_[0:nbatches:2, 1:nbatches:2]].ravel()
    slots["seq"] = np.arange(len(slots))
    batches["ev"] = slots.view(np.uint8).reshape(nbatches, -1)
    return [b.tobytes() for b in batches], slots


def _chunks_written(r: Recorder, written: list) -> None:
    r._kinds, r._start_ns, r._classify = {events.EV_PAGE_FAULT}, 0, _classify_all_other
    r._writer = type("W", (), {"write": lambda self, table, cols: written.append(cols["ts"].copy())})()


def test_records_spilled_while_recording_are_written_at_stop_as_they_would_have_been_then(tmp_path, monkeypatch):
    """The same records, arriving over several write periods: decoded at once (no spill file) and spilled then
    decoded at stop give the same chunks, with the same watermarks; records copied after the last period (not
    yet spilled) come after the spilled ones; nothing stays in memory while recording."""
    import tracer.recorder as rec

    monkeypatch.setattr(rec, "DRAIN_STEP_BYTES", 3 * events.BATCH_SIZE)
    monkeypatch.setattr(Recorder, "_idle_cpus", lambda self: 0.0)  # a busy host: nothing decoded early
    recs, slots = _fault_batches(20, [events.BATCH_EVENTS] * 19 + [7])
    periods = [(recs[0:6], 900), (recs[6:7], 2_000), (recs[7:15], 30_000), (recs[15:18], 40_000)]
    late = recs[18:]
    results = []
    for spill in (False, True):
        written: list = []
        r = Recorder(RecordOptions(output=tmp_path))
        _chunks_written(r, written)
        if spill:
            r._start_spill()
            assert r._spill is not None
        for part, watermark in periods:
            r._raw.extend(part)
            r._copied_bytes += sum(len(x) for x in part)
            r._spill_or_write(watermark)
            if spill:
                assert not r._raw and not written  # on disk, not decoded
        r._raw.extend(late)
        r._copied_bytes += sum(len(x) for x in late)
        assert r._spill_events == (18 * events.BATCH_EVENTS if spill else 0)  # the progress line's count
        r._unspill()
        assert r._spill is None and r._backlog() == len(late) * events.BATCH_SIZE
        r._drain_and_write(10**9)
        r._write(None)
        results.append(written)
        assert r._spill_events == 0
    direct, spilled = results
    assert len(direct) == len(spilled) > 1
    for a, b in zip(direct, spilled, strict=True):
        assert np.array_equal(a, b)
    assert sum(len(c) for c in spilled) == 19 * events.BATCH_EVENTS + 7
    assert list(tmp_path.iterdir()) == []  # the spill file had no name


def test_spilled_periods_are_decoded_while_recording_when_the_host_has_idle_cpus(tmp_path, monkeypatch):
    """With CPUs to spare after a period, the spilled periods so far are decoded then (oldest first, each with
    its watermark): the chunks are those decoding at once writes, and a recorder killed after such a period
    keeps them; with none to spare (or unknown), they wait for the stop."""
    import tracer.recorder as rec

    monkeypatch.setattr(rec, "DRAIN_STEP_BYTES", 3 * events.BATCH_SIZE)
    recs, _ = _fault_batches(20, [events.BATCH_EVENTS] * 19 + [7])
    periods = [(recs[0:6], 900), (recs[6:7], 2_000), (recs[7:15], 30_000), (recs[15:18], 40_000), (recs[18:], 10**9)]
    results = []
    for idle in ([0.0] * 5, [0.0, 1.5, 0.0, 0.2, 2.0]):
        written: list = []
        r = Recorder(RecordOptions(output=tmp_path))
        _chunks_written(r, written)
        r._start_spill()
        idle_after = iter(idle)
        monkeypatch.setattr(r, "_idle_cpus", idle_after.__next__)
        seen_live = []
        for part, watermark in periods:
            r._raw.extend(part)
            r._copied_bytes += sum(len(x) for x in part)
            r._spill_or_write(watermark)
            seen_live.append(sum(len(c) for c in written))
        r._unspill()
        r._write(None)
        results.append(written)
        if idle[1]:
            # after period 2 the first two periods were decoded (everything older than 2,000 written), then
            # nothing more until period 5, which decoded them all
            assert seen_live[0] == 0 and 0 < seen_live[1] == seen_live[3] < seen_live[4]
            assert r._decoding["decoded_while_recording_bytes"] == r._decoding["spilled_bytes"]
        else:
            assert seen_live == [0] * 5 and r._decoding["decoded_while_recording_bytes"] == 0
    assert len(results[0]) == len(results[1]) > 1
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


def test_live_decoding_has_no_spill_file(tmp_path):
    r = Recorder(RecordOptions(output=tmp_path, decode="live"))
    r._start_spill()
    assert r._spill is None


def test_a_spill_file_that_fails_to_write_decodes_what_it_held_and_goes_on_without_it(tmp_path, monkeypatch):
    recs, _ = _fault_batches(6)
    written: list = []
    r = Recorder(RecordOptions(output=tmp_path))
    _chunks_written(r, written)
    r._start_spill()
    r._raw.extend(recs[:3])
    r._spill_or_write(10**9)
    assert not written

    def full(fd, bufs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    r._raw.extend(recs[3:])
    r._spill_or_write(10**9)
    assert r._spill is None and not r._raw
    assert sum(len(c) for c in written) == 6 * events.BATCH_EVENTS
    assert any("No space left on device" in n for n in r.notes.changes)


class _FakeRing:
    """bcc's ring buffer as the reader sees it: `capacity` records at most (the rest refused, as the kernel
    counts them), handed to the callback in order by ring_buffer_consume until it returns < 0 (libbpf stops
    there; the record it returned that for is consumed)."""

    def __init__(self, r: Recorder, capacity: int):
        self.r, self.capacity, self.held, self.refused = r, capacity, [], 0

    def produce(self, recs: list[bytes]) -> None:
        room = self.capacity - len(self.held)
        self.held += recs[:room]
        self.refused += max(0, len(recs) - room)

    def ring_buffer_consume(self) -> None:
        while self.held:
            buf = ctypes.create_string_buffer(self.held.pop(0))
            if self.r._on_record(None, ctypes.addressof(buf), len(buf) - 1) < 0:
                return


def test_the_reader_keeps_the_ring_buffer_empty_while_the_main_thread_is_late(tmp_path, monkeypatch):
    """The reader alone (the main thread busy decoding, or starved of a CPU, for the whole time): it copies
    the ring buffer out every poll and the records go to the spill file, so the ring buffer refuses nothing
    and the reader's memory stays within MAX_BACKLOG_BYTES. Before, the reader stopped at MAX_BACKLOG_BYTES
    copied until the main thread spilled them, and the ring buffer filled behind it (mmap1_threads lost
    113k-202k events, "ring buffer refused", in 2 of 5 recordings on a quiet host). Then, the main thread's
    periods and the stop write every row once, in (ts, seq) order."""
    import threading

    import tracer.recorder as rec

    monkeypatch.setattr(rec, "MAX_BACKLOG_BYTES", 4 * events.BATCH_SIZE)
    monkeypatch.setattr(rec, "DRAIN_STEP_BYTES", 2 * events.BATCH_SIZE)
    polls, per_poll = 20, 3  # 60 batches arrive while the main thread does nothing; the ring holds 8
    recs, slots = _fault_batches(polls * per_poll)
    written: list = []
    r = Recorder(RecordOptions(output=tmp_path))
    _chunks_written(r, written)
    r._start_spill()
    ring = r._bpf = _FakeRing(r, capacity=8)
    in_memory = []

    class Clock:  # the reader's wait: the next poll's batches arrive meanwhile; stop after the last
        n = 0

        def is_set(self):
            return self.n > polls

        def wait(self, timeout):
            in_memory.append(sum(len(x) for x in r._raw))
            if self.n < polls:
                ring.produce(recs[self.n * per_poll:(self.n + 1) * per_poll])
            self.n += 1

    r._consumer_stop, r._backlog_ready, r._copied_until_ns = Clock(), threading.Event(), 0
    r._consume_loop()
    assert ring.refused == 0 and not ring.held
    assert max(in_memory) <= rec.MAX_BACKLOG_BYTES
    assert not written  # nothing decoded while recording: the main thread was busy
    # the main thread comes back: its period (the records' times are all after its watermark), then the stop
    r._spill_or_write(0)
    r._unspill(0)
    r._drain_and_write(0)
    r._write(None)
    ts = np.concatenate(written)
    assert len(ts) == len(slots) and np.array_equal(np.sort(ts), np.sort(slots["ts"]))
    assert (np.diff(ts) > 0).all()


def test_decoding_spilled_records_while_recording_stops_a_step_past_its_deadline(tmp_path, monkeypatch):
    """Decoding while recording holds the GIL the reader's callbacks need: it stops at its deadline after
    the step it is in, not after the whole period (a period of a fast workload took up to 0.6 s), and the next
    call goes on with the same watermark: the chunks written are those of one uninterrupted decoding."""
    import itertools

    import tracer.recorder as rec

    monkeypatch.setattr(rec, "DRAIN_STEP_BYTES", 2 * events.BATCH_SIZE)
    recs, _ = _fault_batches(12)
    results = []
    for interrupted in (False, True):
        written: list = []
        r = Recorder(RecordOptions(output=tmp_path))
        _chunks_written(r, written)
        r._start_spill()
        r._raw.extend(recs)
        monkeypatch.setattr(r, "_idle_cpus", lambda: 0.0)
        r._spill_or_write(6 * events.BATCH_EVENTS * 10)  # one period: 12 batches, 6 steps
        if interrupted:
            clock = itertools.count()
            calls = 0
            with monkeypatch.context() as m:
                m.setattr(rec.time, "monotonic", lambda c=clock: float(next(c)))
                while r._spill_marks:
                    before = r._spill_pos
                    r._decode_spilled(deadline=rec.time.monotonic() + 1.5)  # passed after the first step
                    assert r._spill_pos - before == 2 * events.BATCH_SIZE
                    calls += 1
            assert calls == 6
        r._unspill()
        r._write(None)
        results.append(written)
    assert len(results[0]) == len(results[1]) > 1
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)
