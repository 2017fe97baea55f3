"""tracer.tier2: the tier-2 programs compile and verify, detection says why they do not attach,
and the decoders turn event bytes into the right lock_holds / gathers / take_all_locks rows."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.trace.reader import Trace
from replay.trace.writer import write_trace
from tracer import BPF_DIR, events, tier2

START, STOP = 1_000, 100_000
RWSEM, MUTEX = events.LOCK_RWSEM, events.LOCK_MUTEX
READ, WRITE = 0, 1


# ---- crafted event bytes ----------------------------------------------------------------


def batch_bytes(records: list[np.ndarray]) -> bytes:
    """One ring-buffer record (struct mmr_batch) holding these 64-byte slots."""
    slots = np.concatenate([r.view(np.void(events.EVENT_SIZE)) for r in records]) if records else []
    assert len(slots) <= events.BATCH_EVENTS
    b = np.zeros(1, events.DTYPES["mmr_batch"])
    b["count"] = len(slots)
    ev = b["ev"][0].view(np.uint8).reshape(events.BATCH_EVENTS, events.EVENT_SIZE)
    if len(slots):
        ev[: len(slots)] = np.frombuffer(np.asarray(slots).tobytes(), np.uint8).reshape(-1, events.EVENT_SIZE)
    return b.tobytes()


class Edges:
    """Builds acquire/release slots with a global seq, like the BPF side does."""

    def __init__(self) -> None:
        self.seq = 0
        self.records: list[np.ndarray] = []

    def _head(self, kind: int, ts: int, tid: int) -> np.ndarray:
        e = np.zeros(1, events.KIND_DTYPES[kind])
        e["ts"], e["seq"], e["pid"], e["tid"], e["cpu"], e["kind"] = ts, self.seq, tid // 10, tid, tid % 2, kind
        self.seq += 1
        self.records.append(e)
        return e

    def acquire(self, ts, tid, lock, mode=WRITE, wait=0, ok=True, lock_type=RWSEM, stack=7, trylock=False, flags=0):
        e = self._head(events.EV_T2_LOCK_ACQUIRE, ts, tid)
        e["flags"] = flags
        e["wait"], e["lock_addr"], e["mode"], e["success"] = wait, lock, mode, int(ok)
        e["lock_type"], e["stack_id"], e["trylock"] = lock_type, stack, int(trylock)
        return self

    def release(self, ts, tid, lock, mode=WRITE, lock_type=RWSEM, flags=0):
        e = self._head(events.EV_T2_LOCK_RELEASE, ts, tid)
        e["flags"] = flags
        e["lock_addr"], e["mode"], e["lock_type"] = lock, mode, lock_type
        return self

    def decode(self) -> tier2.LockHolds:
        by_kind = events.split_batch(batch_bytes(self.records))
        return tier2.pair_lock_edges(
            by_kind.get(events.EV_T2_LOCK_ACQUIRE), by_kind.get(events.EV_T2_LOCK_RELEASE), START, STOP
        )


def rows(h: tier2.LockHolds) -> list[dict]:
    c = h.columns
    return [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in c.items()} for i in range(len(c["ts"]))]


# ---- pairing ----------------------------------------------------------------------------------


def test_an_acquire_and_its_release_make_one_hold_with_wait_and_duration() -> None:
    h = Edges().acquire(2_000, 11, 0xA0, wait=300).release(2_500, 11, 0xA0).decode()
    (r,) = rows(h)
    assert (r["ts"], r["dur"], r["wait"], r["tid"], r["pid"], r["lock_addr"]) == (2_000, 500, 300, 11, 1, 0xA0)
    assert (r["mode"], r["success"], r["depth"], r["stack_id"], r["incomplete"]) == (WRITE, True, 0, 7, False)
    assert (h.unmatched_releases, h.open_at_stop, h.failed) == (0, 0, 0)


def test_nested_locks_of_one_task_count_depth() -> None:
    e = Edges()
    e.acquire(2_000, 11, 0xA0).acquire(2_100, 11, 0xB0, mode=READ).acquire(2_200, 11, 0xC0, lock_type=MUTEX)
    e.release(2_300, 11, 0xC0, lock_type=MUTEX).release(2_400, 11, 0xB0, mode=READ).release(2_500, 11, 0xA0)
    got = {r["lock_addr"]: (r["ts"], r["dur"], r["depth"], r["mode"]) for r in rows(e.decode())}
    assert got == {0xA0: (2_000, 500, 0, WRITE), 0xB0: (2_100, 300, 1, READ), 0xC0: (2_200, 100, 2, WRITE)}


def test_recursive_read_holds_of_one_lock_pair_last_in_first_out() -> None:
    e = Edges()
    e.acquire(2_000, 11, 0xA0, mode=READ).acquire(2_100, 11, 0xA0, mode=READ)
    e.release(2_200, 11, 0xA0, mode=READ).release(2_600, 11, 0xA0, mode=READ)
    assert [(r["ts"], r["dur"], r["depth"]) for r in rows(e.decode())] == [(2_000, 600, 0), (2_100, 100, 1)]


def test_other_tasks_do_not_pair_or_count_towards_depth() -> None:
    e = Edges()
    e.acquire(2_000, 11, 0xA0, mode=READ).acquire(2_050, 22, 0xA0, mode=READ)
    e.release(2_100, 22, 0xA0, mode=READ).release(2_300, 11, 0xA0, mode=READ)
    got = sorted((r["tid"], r["dur"], r["depth"]) for r in rows(e.decode()))
    assert got == [(11, 300, 0), (22, 50, 0)]


def test_a_release_without_its_acquire_is_a_hold_cut_by_the_start() -> None:
    e = Edges().release(3_000, 11, 0xA0).acquire(3_500, 11, 0xB0).release(3_600, 11, 0xB0)
    h = e.decode()
    first, second = rows(h)
    assert (first["ts"], first["dur"], first["incomplete"], first["stack_id"]) == (START, 2_000, True, -1)
    assert (second["dur"], second["depth"], second["incomplete"]) == (100, 0, False)
    assert h.unmatched_releases == 1


def test_a_lock_held_since_before_the_start_counts_in_depth_until_released() -> None:
    e = Edges().acquire(2_000, 11, 0xB0).release(2_100, 11, 0xB0).release(3_000, 11, 0xA0)
    e.acquire(3_500, 11, 0xC0).release(3_600, 11, 0xC0)
    depth = {r["lock_addr"]: r["depth"] for r in rows(e.decode())}
    assert depth[0xB0] == 1 and depth[0xC0] == 0


def test_an_acquire_never_released_is_a_hold_cut_by_the_stop() -> None:
    h = Edges().acquire(90_000, 11, 0xA0, wait=5).decode()
    (r,) = rows(h)
    assert (r["ts"], r["dur"], r["wait"], r["incomplete"]) == (90_000, STOP - 90_000, 5, True)
    assert h.open_at_stop == 1


def test_a_failed_trylock_holds_nothing_and_does_not_pair() -> None:
    e = Edges().acquire(2_000, 11, 0xA0, ok=False, trylock=True).release(2_500, 11, 0xA0)
    h = e.decode()
    failed, cut = rows(h)
    assert (failed["success"], failed["dur"], failed["incomplete"]) == (False, 0, False)
    assert (cut["ts"], cut["incomplete"]) == (START, True)
    assert h.failed == 1 and h.unmatched_releases == 1


def test_lcb_flags_follow_lock_type_and_mode() -> None:
    e = Edges().acquire(2_000, 11, 0xA0, mode=READ).acquire(2_001, 11, 0xB0, lock_type=MUTEX)
    e.acquire(2_002, 11, 0xC0, mode=WRITE)
    from replay.lockclass import LCB_F_MUTEX, LCB_F_READ, LCB_F_WRITE

    assert e.decode().lcb_flags.tolist() == [LCB_F_READ, LCB_F_MUTEX, LCB_F_WRITE]


def test_rows_come_out_in_seq_order_and_empty_input_gives_no_rows() -> None:
    e = Edges().acquire(2_000, 11, 0xA0).acquire(2_001, 22, 0xB0).release(2_002, 22, 0xB0).release(2_003, 11, 0xA0)
    assert rows(e.decode())[0]["tid"] == 11
    assert len(tier2.pair_lock_edges(None, None, START, STOP).columns["ts"]) == 0


@st.composite
def task_histories(draw):
    """Well-bracketed lock use per task, possibly cut at both ends, interleaved across tasks."""
    e = Edges()
    ts = 2_000
    held: dict[int, list[int]] = {}
    for _ in range(draw(st.integers(0, 60))):
        tid = draw(st.sampled_from([11, 22, 33]))
        stack = held.setdefault(tid, [])
        ts += draw(st.integers(1, 50))
        if stack and draw(st.booleans()):
            e.release(ts, tid, stack.pop())
        else:
            lock = draw(st.sampled_from([0xA0, 0xB0, 0xC0, 0xD0]))
            if lock in stack:
                continue
            e.acquire(ts, tid, lock, ok=draw(st.integers(0, 9)) > 0)
            if e.records[-1]["success"][0]:
                stack.append(lock)
    cut = draw(st.integers(0, len(e.records)))
    e.records = e.records[cut:]  # the recording started late: some releases lose their acquire
    return e


@settings(max_examples=60, deadline=None)
@given(task_histories())
def test_every_edge_ends_up_in_exactly_one_row(e: Edges) -> None:
    h = e.decode()
    acq = [r for r in e.records if r["kind"][0] == events.EV_T2_LOCK_ACQUIRE]
    rel = [r for r in e.records if r["kind"][0] == events.EV_T2_LOCK_RELEASE]
    ok = sum(int(r["success"][0]) for r in acq)
    complete = int((~h.columns["incomplete"] & h.columns["success"]).sum())
    assert len(h.columns["ts"]) == complete + h.open_at_stop + h.unmatched_releases + h.failed
    assert 2 * complete + h.open_at_stop + h.unmatched_releases == ok + len(rel)
    assert (h.columns["dur"] >= 0).all() and (h.columns["depth"] >= 0).all()
    assert (np.diff(h.columns["seq"]) > 0).all()


# ---- gathers and mm_take_all_locks -------------------------------------------------------------


def test_gather_records_decode_with_windows_cut_at_start_and_stop() -> None:
    g = np.zeros(2, events.DTYPES["mmr_t2_gather"])
    g["kind"] = events.EV_T2_GATHER
    g["ts"], g["seq"], g["tid"], g["pid"] = [5_000, 0], [3, 9], [11, 22], [1, 2]
    g["dur"], g["mm"], g["pages"], g["flushes"], g["fullmm"] = [700, 8_000], [0xF0, 0], [512, 0], [2, 0], [1, 0]
    g["flags"] = [0, events.F_INCOMPLETE | events.F_NO_START]
    o = np.zeros(1, events.DTYPES["mmr_t2_gather_open"])
    o["ts"], o["seq"], o["mm"], o["pages"], o["flushes"], o["pid"], o["cpu"] = 99_000, 12, 0xE0, 40, 1, 3, 1
    recs = events.split_batch(batch_bytes([g]))[events.EV_T2_GATHER]
    cols = tier2.gather_rows(recs, o, np.array([33]), START, STOP)
    assert cols["ts"].tolist() == [5_000, START, 99_000]
    assert cols["dur"].tolist() == [700, 8_000 - START, STOP - 99_000]
    assert cols["tid"].tolist() == [11, 22, 33]
    assert cols["pages"].tolist() == [512, 0, 40] and cols["flushes"].tolist() == [2, 0, 1]
    assert cols["fullmm"].tolist() == [True, False, False]
    assert cols["incomplete"].tolist() == [False, True, True]


def test_take_all_locks_records_decode_with_calls_running_at_stop() -> None:
    t = np.zeros(1, events.DTYPES["mmr_t2_take_all"])
    t["kind"], t["ts"], t["seq"], t["tid"] = events.EV_T2_TAKE_ALL, 4_000, 1, 11
    t["dur"], t["mm"], t["ret"] = 900, 7, -4
    o = np.zeros(1, events.DTYPES["mmr_t2_take_all_open"])
    o["ts"], o["seq"], o["mm"], o["pid"] = 50_000, 2, 8, 1
    recs = events.split_batch(batch_bytes([t]))[events.EV_T2_TAKE_ALL]
    cols = tier2.take_all_rows(recs, o, np.array([12]), STOP)
    assert cols["dur"].tolist() == [900, STOP - 50_000]
    assert cols["ret"].tolist() == [-4, 0] and cols["incomplete"].tolist() == [False, True]


def test_take_all_locks_columns_fit_their_table_definition() -> None:
    from replay.trace.writer import conform

    cols = tier2.take_all_rows(None, None, None, STOP)
    assert conform(tier2.TAKE_ALL_LOCKS_TABLE, cols).num_rows == 0


def test_decoded_columns_write_as_valid_trace_tables(tmp_path: Path) -> None:
    h = Edges().acquire(2_000, 11, 0xFFFF888012345678).release(2_500, 11, 0xFFFF888012345678).decode()
    gathers = tier2.gather_rows(None, None, None, START, STOP)
    write_trace(tmp_path / "t", {"lock_holds": h.columns, "gathers": gathers})
    t = Trace.open(tmp_path / "t")
    df = t.read("lock_holds")
    assert df["mode"].to_list() == ["write"] and df["lock_class"].to_list() == ["other"]
    assert df["lock_addr"].to_list() == [0xFFFF888012345678]


def test_classify_holds_names_the_lock_from_the_probe_stack() -> None:
    import polars as pl

    from replay.symbols import Kallsyms

    ks = Kallsyms.from_arrays([0xFFFFFFFF81000000, 0xFFFFFFFF81000100, 0xFFFFFFFF81000200],
                              ["down_write", "vma_link_file", "__mmap_region"])
    stacks = pl.DataFrame({"stack_id": [7], "ips": [[0xFFFFFFFF81000000, 0xFFFFFFFF81000110, 0xFFFFFFFF81000210]]},
                          schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
    h = Edges().acquire(2_000, 11, 0xA0).release(2_500, 11, 0xA0).decode()
    tier2.classify_holds(h, stacks, ks)
    assert h.columns["lock_class"].tolist() == ["i_mmap_rwsem"]


MM, MMAP = 0xFFFF888000AB0000, events.F_T2_MMAP_LOCK


def _mmap_and_i_mmap() -> Edges:
    """munmap-like: mmap_lock write, i_mmap_rwsem inside, downgrade to read, release."""
    e = Edges().release(1_500, 11, MM, mode=READ, flags=MMAP)  # held since before the start
    e.acquire(2_000, 11, MM, flags=MMAP, stack=5).acquire(2_100, 11, 0xA0, stack=7).release(2_200, 11, 0xA0)
    e.release(2_300, 11, MM, flags=MMAP).acquire(2_300, 11, MM, mode=READ, flags=MMAP, stack=8)  # downgrade_write
    return e.release(2_900, 11, MM, mode=READ, flags=MMAP)


def test_mmap_lock_edges_are_keyed_by_the_mm_and_named_mmap_lock_by_the_kernel() -> None:
    h = _mmap_and_i_mmap().decode()
    mm = h.columns["lock_addr"] == MM
    assert mm.sum() == 3 and h.mmap_lock.tolist() == mm.tolist()
    assert set(h.columns["lock_class"][mm]) == {"mmap_lock"}


def test_mmap_lock_acquisitions_count_once_when_tier1_records_them() -> None:
    """Issue #12 bug 2: tier 1 (keyed by mm) and tier 2 (keyed by &mm->mmap_lock) both made rows."""
    e = _mmap_and_i_mmap()
    by_kind = events.split_batch(batch_bytes(e.records))
    d = tier2.decode_tables(by_kind, None, [tier2.FAMILIES_BY_NAME["lock_holds"]], START, STOP, tier1_mmap_lock=True)
    assert d.tables["lock_holds"]["lock_addr"].tolist() == [0xA0]
    assert d.cut_by_start["lock_holds"] == 0  # the cut mmap_lock row went with the others
    alone = tier2.decode_tables(by_kind, None, [tier2.FAMILIES_BY_NAME["lock_holds"]], START, STOP)
    assert len(alone.tables["lock_holds"]["ts"]) == 4 and alone.cut_by_start["lock_holds"] == 1


def test_the_read_hold_after_downgrade_write_is_classified_from_its_stack() -> None:
    """Issue #12 bug 3: the read hold that downgrade_write starts had no stack and came out 'other'."""
    import polars as pl

    from replay.symbols import Kallsyms

    ks = Kallsyms.from_arrays([0xFFFFFFFF81000000, 0xFFFFFFFF81000100], ["downgrade_write", "do_mas_align_munmap"])
    stacks = pl.DataFrame({"stack_id": [8], "ips": [[0xFFFFFFFF81000000, 0xFFFFFFFF81000110]]},
                          schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
    h = Edges().acquire(2_300, 11, 0xB0, mode=READ, stack=8).release(2_900, 11, 0xB0, mode=READ).decode()
    tier2.classify_holds(h, stacks, ks)  # a remote mm's mmap_lock: no kernel flag, the stack decides
    assert h.columns["lock_class"].tolist() == ["mmap_lock"]


def test_downgrade_write_takes_the_stack_of_its_read_hold() -> None:
    src = (BPF_DIR / "tier2_locks.c").read_text()
    body = src[src.index("static __always_inline int mmr_t2_downgrade"):]
    body = body[: body.index("\n}")]
    assert "stack_id = -1" not in body and "mmr_t2_lock_enter(ctx" in body


# ---- the C programs and detection --------------------------------------------------------------


def test_c_probe_list_matches_the_python_one() -> None:
    text = (BPF_DIR / "tier2_locks.c").read_text()
    in_c = re.findall(r"^MMR_T2_(?:LOCK|LOCK_VOID|UNLOCK)\((\w+),", text, re.M)
    assert "int mmr_t2_unlock_downgrade_write(" in text
    assert sorted([*in_c, "downgrade_write"]) == sorted(f for f, _, _ in tier2.LOCK_FUNCTIONS)
    for fam in tier2.FAMILIES[1:]:
        c = (BPF_DIR / fam.source).read_text()
        for p in fam.probes:
            assert f"int {p.handler}(struct pt_regs *ctx)" in c, p.handler


def test_gather_signature_switches_at_5_11() -> None:
    assert tier2.gather_takes_range("5.10.200-foo") and not tier2.gather_takes_range("6.18.44-fc")
    assert "-DMMR_T2_GATHER_RANGE=1" in tier2.cflags(False, "4.19.0")


def test_host_facts_read_lockdown_from_securityfs_or_the_config(tmp_path: Path) -> None:
    (tmp_path / "lockdown").write_text("none [integrity] confidentiality\n")
    (tmp_path / "tracing" / "events").mkdir(parents=True)
    f = tier2.host_facts(tmp_path, [tmp_path / "tracing"], {"CONFIG_KPROBES": "n"})
    assert (f.lockdown, f.kprobes_config, f.kprobe_events) == ("integrity", False, False)
    assert "CONFIG_KPROBES" in f.kprobe_reason()
    g = tier2.host_facts(tmp_path / "absent", [tmp_path / "nope"],
                         {"CONFIG_KPROBES": "y", "CONFIG_LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY": "y"})
    assert (g.lockdown, g.kprobe_events) == ("confidentiality", None)
    assert "confidentiality" in g.kprobe_reason()


def _bcc():
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root")
    from tracer.kernel_env import EnvironmentProblem, import_bcc

    try:
        return import_bcc()
    except EnvironmentProblem as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("family", tier2.FAMILIES, ids=lambda f: f.name)
def test_kprobe_build_compiles_and_passes_the_verifier(family: tier2.Family) -> None:
    bcc = _bcc()
    b = tier2.compile_kprobe_build(bcc, family)
    try:
        for p in family.probes:
            assert b.funcs[p.handler.encode()].fd >= 0
    finally:
        b.cleanup()


@pytest.mark.parametrize("family", tier2.FAMILIES, ids=lambda f: f.name)
def test_fentry_build_compiles(family: tier2.Family) -> None:
    bcc = _bcc()
    try:
        tier2.load_fentry_build(bcc, family).cleanup()
    except Exception as e:  # noqa: BLE001 - a refused load is fine here, a compile error is not
        assert "compile" not in str(e).lower(), str(e)


def test_detect_reports_each_family_with_a_reason_and_a_fix(tmp_path: Path) -> None:
    bcc = _bcc()
    result = tier2.detect(bcc, cache_dir=tmp_path)  # empty cache: really loads
    assert [r[0] for r in result] == [f"tier2:{f.name}" for f in tier2.FAMILIES]
    facts = tier2.host_facts()
    for _probe, ok, reason, fix in result:
        if ok:
            assert "loads and attaches" in reason
            continue
        assert "fentry" in reason and "kprobes" in reason and fix
        if facts.kprobes_config is False:  # this project's machines
            assert "CONFIG_KPROBES" in reason and "lockdown=" in reason


def test_read_open_views_map_values_with_the_open_window_dtype() -> None:
    import ctypes

    class Leaf(ctypes.Structure):  # what bcc builds for struct mmr_t2_gather_state
        _fields_ = [("ts", ctypes.c_uint64), ("seq", ctypes.c_uint64), ("mm", ctypes.c_uint64),
                    ("tlb", ctypes.c_uint64), ("pages", ctypes.c_int64), ("pid", ctypes.c_int32),
                    ("flushes", ctypes.c_int32), ("cpu", ctypes.c_uint16), ("fullmm", ctypes.c_uint8),
                    ("_pad", ctypes.c_uint8 * 5), ("depth", ctypes.c_uint32), ("_pad2", ctypes.c_uint32)]

    class FakeTable:
        def items(self):
            leaf = Leaf(ts=99_000, seq=12, mm=0xE0, pages=40, pid=3, flushes=1, cpu=1, fullmm=1)
            return [(ctypes.c_uint32(33), leaf)]

    class FakeBPF:
        def __getitem__(self, name):
            assert name == "mmr_t2_gathers"
            return FakeTable()

    tids, vals = tier2.read_open(FakeBPF(), "mmr_t2_gathers", events.DTYPES["mmr_t2_gather_open"])
    assert tids.tolist() == [33]
    assert (vals["ts"][0], vals["pages"][0], vals["flushes"][0], vals["cpu"][0], vals["fullmm"][0]) == (
        99_000, 40, 1, 1, 1)


def test_decode_tables_builds_every_family_table_from_slots_and_open_maps() -> None:
    e = Edges().release(3_000, 11, 0xA0).acquire(3_500, 11, 0xB0).release(3_600, 11, 0xB0)
    g = np.zeros(1, events.DTYPES["mmr_t2_gather"])
    g["kind"], g["ts"], g["seq"], g["tid"], g["dur"], g["pages"] = events.EV_T2_GATHER, 4_000, 50, 11, 300, 9
    by_kind = events.split_batch(batch_bytes([*e.records, g]))
    o = np.zeros(1, events.DTYPES["mmr_t2_take_all_open"])
    o["ts"], o["seq"] = 90_000, 60

    class FakeBPF:  # maps of open windows, as read_open sees them
        def __getitem__(self, name):
            import ctypes

            class Table:
                def items(self):
                    if name != "mmr_t2_take_alls":
                        return []
                    leaf = (ctypes.c_uint8 * o.dtype.itemsize).from_buffer_copy(o.tobytes())
                    return [(ctypes.c_uint32(44), leaf)]

            return Table()

    d = tier2.decode_tables(by_kind, FakeBPF(), tier2.FAMILIES, START, STOP)
    assert sorted(d.tables) == ["gathers", "lock_holds", "take_all_locks"]
    assert d.tables["lock_holds"]["dur"].tolist() == [2_000, 100]
    assert d.tables["gathers"]["pages"].tolist() == [9]
    assert d.tables["take_all_locks"]["tid"].tolist() == [44]
    assert d.cut_by_start == {"lock_holds": 1, "gathers": 0, "take_all_locks": 0}
    assert d.cut_by_stop == {"lock_holds": 0, "gathers": 0, "take_all_locks": 1}


def test_all_families_compile_appended_to_the_tier1_program() -> None:
    """How the recorder loads tier 2: appended to its tier-1 program, sharing seq and ring buffer."""
    bcc = _bcc()
    programs = pytest.importorskip("tracer.programs")
    text = programs.source(programs.FAMILIES) + "\n".join(tier2.c_text(f) for f in tier2.FAMILIES)
    flags = programs.cflags(programs.Filter()) + tier2.cflags(False)[2:]
    b = bcc.BPF(text=text, cflags=flags)
    try:
        for fam in tier2.FAMILIES:
            for p in fam.probes:
                b.load_func(p.handler.encode(), bcc.BPF.KPROBE)
    finally:
        b.cleanup()


def test_detect_caches_its_answer_per_boot_and_program_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_statuses(bcc, families):
        calls.append(1)
        return [tier2.Status(f, None, "refused", "fix it") for f in families]

    monkeypatch.setattr(tier2, "statuses", fake_statuses)
    monkeypatch.setattr(tier2.os, "geteuid", lambda: 0)
    first = tier2.detect(object(), cache_dir=tmp_path)
    assert tier2.detect(object(), cache_dir=tmp_path) == first and len(calls) == 1
    assert first[0] == ("tier2:lock_holds", False, "refused", "fix it")
    monkeypatch.setenv("MMREPLAY_NO_CACHE", "1")
    tier2.detect(object(), cache_dir=tmp_path)
    assert len(calls) == 2


def test_a_recording_compiles_each_tier2_family_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #12 bug 4: the recorder's plan asked detect() and then statuses(), compiling every family twice."""
    from types import SimpleNamespace

    from tracer import recorder

    tried: list[str] = []

    def fake_try(bcc, fam, facts, available):
        tried.append(fam.name)
        return tier2.Status(fam, "fentry", "fentry/fexit loads and attaches")

    monkeypatch.setattr(tier2, "_try_family", fake_try)
    monkeypatch.setattr(tier2.os, "geteuid", lambda: 0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a cold cache: detection really runs
    # the recorder detects in a child process (tracer.tier2.plan_in_child), which fake_try cannot reach:
    # here the child's work runs in-process, through the same cache
    monkeypatch.setattr(tier2, "plan_in_child", lambda: tier2.plan(object()))
    rec = object.__new__(recorder.Recorder)
    rec.opts = SimpleNamespace(check_tier2=True)
    rec._tier2_plan(object())
    assert sorted(tried) == sorted(f.name for f in tier2.FAMILIES)
    assert [(f.name, m) for f, m in rec._t2] == [(f.name, "fentry") for f in tier2.FAMILIES]
    rec._tier2_plan(object())  # the same boot: the cached plan, nothing compiled
    assert len(tried) == len(tier2.FAMILIES)


def test_the_recorder_detects_tier2_in_a_child_and_reads_a_cached_answer_without_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #11: detection's compilation must not stay in the recorder's RSS (244 MiB VmHWM on a boot's first
    recording): the recorder gets the answer from a child process, then from the per-boot cache."""
    import subprocess

    from tracer import recorder

    assert "tier2.plan_in_child()" in inspect.getsource(recorder.Recorder._tier2_plan)
    fams = tier2.FAMILIES[:2]
    answer = [[f.name, "kprobe" if i else None, f"reason {i}", ""] for i, f in enumerate(fams)]
    # a stand-in child that answers as the real one does (and writes the cache, as plan() does)
    path = tier2._cache_path(list(fams), tmp_path)
    child = (f"import json, pathlib; a = {answer!r}; pathlib.Path({str(path)!r}).write_text(json.dumps(a)); "
             "print('noise'); print(json.dumps(a))")
    monkeypatch.setattr(tier2, "_CHILD", child)
    got = tier2.plan_in_child(fams, tmp_path)
    assert [(st.family.name, st.mode, st.reason) for st in got] == [(a[0], a[1], a[2]) for a in answer]

    def no_child(*a, **k):
        raise AssertionError("a cached answer must not start a child")

    monkeypatch.setattr(subprocess, "run", no_child)
    assert tier2.plan_in_child(fams, tmp_path) == got
    monkeypatch.undo()
    monkeypatch.setattr(tier2, "_CHILD", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    with pytest.raises(RuntimeError, match="exited 3: boom"):
        tier2.plan_in_child(fams, tmp_path / "empty")


def test_mm_take_all_locks_inlined_call_sites_are_told_apart_by_their_order() -> None:
    """vm_lock_mapping/vm_lock_anon_vma are inlined: same functions on the stack, only the return
    address differs. mm_take_all_locks locks every file mapping first, then every anon_vma."""
    import polars as pl

    from replay.symbols import Kallsyms

    base = 0xFFFFFFFF81000000
    ks = Kallsyms.from_arrays([base, base + 0x100, base + 0x200, base + 0x1000],
                              ["down_write", "mutex_lock", "mm_take_all_locks", "__mmu_notifier_register"])
    frames = {1: [base + 0x10, base + 0x210], 2: [base + 0x10, base + 0x280], 3: [base + 0x110, base + 0x205]}
    stacks = pl.DataFrame({"stack_id": list(frames), "ips": [[*f, base + 0x1010] for f in frames.values()]},
                          schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
    e, ts = Edges(), 2_000
    for _ in range(3):  # three calls: the mutex, 4 files, 3 anon_vmas, all released after
        e.acquire(ts, 5, 0xF00, lock_type=MUTEX, stack=3)
        for k in range(4):
            e.acquire(ts + 10 + k, 5, 0x100 + k, stack=1)
        for k in range(3):
            e.acquire(ts + 20 + k, 5, 0x200 + k, stack=2)
        for k in range(4):
            e.release(ts + 30 + k, 5, 0x100 + k)
        for k in range(3):
            e.release(ts + 40 + k, 5, 0x200 + k)
        e.release(ts + 50, 5, 0xF00, lock_type=MUTEX)
        ts += 1_000
    h = e.decode()
    tier2.classify_holds(h, stacks, ks)
    by_lock = dict(zip(h.columns["lock_addr"].tolist(), h.columns["lock_class"].tolist(), strict=True))
    assert {by_lock[0x100 + k] for k in range(4)} == {"i_mmap_rwsem"}
    assert {by_lock[0x200 + k] for k in range(3)} == {"anon_vma"}
    assert 0xF00 not in by_lock and h.other_left_out == 3  # mm_all_locks_mutex: no class of the trace


def test_holds_of_sleeping_locks_no_class_names_are_left_out_and_counted() -> None:
    """replay's 'other' class is replayed as a spinning lock: a debugfs rwsem held for seconds (cut by
    the start) became an 18.8 s preempt-off section in the first guest recording."""
    import polars as pl

    from replay.symbols import Kallsyms

    ks = Kallsyms.from_arrays([0xFFFFFFFF81000000, 0xFFFFFFFF81000100, 0xFFFFFFFF81000200],
                              ["down_write", "vma_link_file", "debugfs_remove"])
    stacks = pl.DataFrame({"stack_id": [7, 9], "ips": [[0xFFFFFFFF81000000, 0xFFFFFFFF81000110],
                                                       [0xFFFFFFFF81000000, 0xFFFFFFFF81000210]]},
                          schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
    h = (Edges().release(1_500, 11, 0xD0, mode=READ).acquire(2_000, 11, 0xA0).acquire(2_100, 11, 0xD0, stack=9)
         .release(2_200, 11, 0xD0).release(2_500, 11, 0xA0).decode())
    tier2.classify_holds(h, stacks, ks)
    assert h.columns["lock_class"].tolist() == ["i_mmap_rwsem"] and h.columns["lock_addr"].tolist() == [0xA0]
    assert h.other_left_out == 2 and len(h.lcb_flags) == len(h.cut) == len(h.mmap_lock) == 1


def test_another_tasks_mmap_lock_named_by_its_stack_is_left_to_tier1() -> None:
    """exec's new mm is not current->mm: the kernel cannot flag its mmap_lock, its stack names it
    (get_arg_page), and tier 1's tracepoints recorded that acquisition already (issue #12 bug 2)."""
    import polars as pl

    from replay.symbols import Kallsyms

    ks = Kallsyms.from_arrays([0xFFFFFFFF81000000, 0xFFFFFFFF81000100, 0xFFFFFFFF81000200],
                              ["down_read", "get_arg_page", "vma_link_file"])
    stacks = pl.DataFrame({"stack_id": [5, 7], "ips": [[0xFFFFFFFF81000000, 0xFFFFFFFF81000110],
                                                       [0xFFFFFFFF81000000, 0xFFFFFFFF81000210]]},
                          schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
    e = (Edges().acquire(2_000, 11, 0xB0, mode=READ, stack=5).release(2_100, 11, 0xB0, mode=READ)
         .acquire(2_200, 11, 0xA0, stack=7).release(2_300, 11, 0xA0))
    by_kind = events.split_batch(batch_bytes(e.records))
    fam = [tier2.FAMILIES_BY_NAME["lock_holds"]]
    with_t1 = tier2.decode_tables(by_kind, None, fam, START, STOP, tier1_mmap_lock=True).holds
    tier2.classify_holds(with_t1, stacks, ks)
    assert with_t1.columns["lock_class"].tolist() == ["i_mmap_rwsem"] and with_t1.mmap_lock_left_out == 1
    alone = tier2.decode_tables(by_kind, None, fam, START, STOP).holds
    tier2.classify_holds(alone, stacks, ks)
    assert alone.columns["lock_class"].tolist() == ["mmap_lock", "i_mmap_rwsem"]


def test_detection_compiles_once_when_every_family_loads_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling is what detection costs (tens of seconds a program in the emulated guest): all families in
    one fentry program first; each alone only when that is refused, to learn its own mode or reason."""
    compiled: list[str] = []

    class FakeBPF:
        refuse: tuple[str, ...] = ()

        @staticmethod
        def support_kfunc() -> bool:
            return True

        def __init__(self, text: str, cflags: list[str]):
            compiled.append(text)
            if any(f"---- {src} ----" in text for src in FakeBPF.refuse):
                raise Exception("Failed to load BPF program: Permission denied")  # noqa: TRY002 - what bcc raises

        def attach_raw_tracepoint(self, tp: bytes, fn_name: bytes) -> None:
            pass

        def cleanup(self) -> None:
            pass

    fake = SimpleNamespace(BPF=FakeBPF)
    monkeypatch.setattr(tier2.os, "geteuid", lambda: 0)
    got = tier2.statuses(fake)
    assert [(s.family.name, s.mode) for s in got] == [(f.name, "fentry") for f in tier2.FAMILIES]
    assert len(compiled) == 1 and all(f"---- {f.source} ----" in compiled[0] for f in tier2.FAMILIES)

    compiled.clear()
    FakeBPF.refuse = (tier2.FAMILIES[0].source,)
    monkeypatch.setattr(tier2, "compile_kprobe_build", lambda bcc, fam: (_ for _ in ()).throw(Exception("no kprobes")))
    got = tier2.statuses(fake)
    assert [s.mode for s in got] == [None] + ["fentry"] * (len(tier2.FAMILIES) - 1)
    assert len(compiled) == 1 + len(tier2.FAMILIES)  # together, then each alone


def test_a_tier2_raw_tracepoint_attaches_beside_the_tier1_program_on_the_same_tracepoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Since tier 1 attaches raw tracepoints, page_free holds mm_page_free_batched in the recording's program,
    and bcc refused the gathers family's handler on it ("Raw tracepoint ... has been attached"): in the guest
    the tier2:gathers table was lost. The kernel runs both; the second attaches through libbcc."""
    import sys

    attached: list[tuple[int, bytes]] = []

    class FakeBPF:
        RAW_TRACEPOINT = 17

        def __init__(self) -> None:
            self.raw_tracepoint_fds = {b"mm_page_free_batched": 3}  # tier 1's, attached at load

        def attach_raw_tracepoint(self, tp: bytes, fn_name: bytes) -> None:
            if tp in self.raw_tracepoint_fds:
                raise Exception(f"Raw tracepoint {tp} has been attached")  # noqa: TRY002 - what bcc does
            self.raw_tracepoint_fds[tp] = 4

        def load_func(self, name: bytes, kind: int) -> SimpleNamespace:
            assert kind == FakeBPF.RAW_TRACEPOINT
            return SimpleNamespace(fd=40 + len(name))

    def bpf_attach_raw_tracepoint(prog_fd: int, tp: bytes) -> int:
        attached.append((prog_fd, tp))
        return 9

    monkeypatch.setitem(sys.modules, "bcc", SimpleNamespace(
        BPF=FakeBPF, libbcc=SimpleNamespace(lib=SimpleNamespace(bpf_attach_raw_tracepoint=bpf_attach_raw_tracepoint))))
    gathers = tier2.FAMILIES_BY_NAME["gathers"]
    assert any(tp == "mm_page_free_batched" for tp, _ in gathers.raw_tracepoints)
    b = FakeBPF()
    tier2.attach(b, gathers, "fentry")
    assert [tp for _, tp in attached] == [b"mm_page_free_batched"]
    assert sorted(b.raw_tracepoint_fds.values()).count(9) == 1 and b.raw_tracepoint_fds[b"mm_page_free_batched"] == 3
