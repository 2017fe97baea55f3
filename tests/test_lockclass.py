"""replay.lockclass: lock classes from realistic contention stacks (innermost frame first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.lockclass import (
    LCB_F_MUTEX,
    LCB_F_READ,
    LCB_F_RT,
    LCB_F_SPIN,
    LCB_F_WRITE,
    RULES,
    TAKERS,
    classify,
    classify_waits,
    explain,
    markdown,
)
from replay.symbols import Kallsyms
from replay.trace.schema import LOCK_CLASSES

# Contention stacks captured on this project's 6.18 machine (lock:contention_begin, bcc stack map)
# under an mmap/mprotect/munmap/fault workload, symbolized; innermost first, truncated.
REAL_STACKS = (
    (4, "mmap_lock", ("rwsem_down_write_slowpath", "down_write_killable", "do_mprotect_pkey", "__x64_sys_mprotect",
                      "do_syscall_64", "entry_SYSCALL_64_after_hwframe")),
    (2, "mmap_lock", ("rwsem_down_read_slowpath", "down_read_killable", "lock_mm_and_find_vma", "exc_page_fault",
                      "asm_exc_page_fault")),
    (1, "runqueue_lock", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock", "__schedule", "schedule",
                          "irqentry_exit_to_user_mode", "asm_exc_page_fault")),
    (1, "runqueue_lock", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock", "__task_rq_lock", "try_to_wake_up",
                          "wake_page_function", "__wake_up_common", "folio_wake_bit")),
    (1, "page_table_lock", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock", "__pte_offset_map_lock",
                            "unmap_page_range", "unmap_vmas", "vms_clear_ptes.part.0", "vms_complete_munmap_vmas")),
    (1, "zone_lock", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock_irqsave", "free_pcppages_bulk",
                      "decay_pcp_high", "refresh_cpu_vm_stats", "vmstat_update", "process_one_work")),
    (4, "i_mmap_rwsem", ("rwsem_down_write_slowpath", "down_write", "unlink_file_vma_batch_process", "free_pgtables",
                         "vms_clear_ptes.part.0", "vms_complete_munmap_vmas", "do_vmi_align_munmap")),
    (1, "runqueue_lock", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock", "sched_tick", "update_process_times",
                          "tick_nohz_handler", "__hrtimer_run_queues", "hrtimer_interrupt")),
    # the rwsem's own wait_lock, taken while waking waiters: a raw spinlock, not the rwsem
    (1, "other", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock_irqsave", "rwsem_wake.isra.0", "up_read",
                  "vms_complete_munmap_vmas", "do_vmi_align_munmap", "do_vmi_munmap")),
    # slab and mapping->i_private_lock: not modelled classes
    (1, "other", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock_irqsave", "__slab_free",
                  "__kmem_cache_free_bulk.part.0", "rcu_free_sheaf", "rcu_do_batch", "rcu_core")),
    (1, "other", ("__pv_queued_spin_lock_slowpath", "_raw_spin_lock", "block_dirty_folio", "unmap_page_range",
                  "unmap_vmas", "vms_clear_ptes.part.0", "vms_complete_munmap_vmas")),
)

# Every function a test stack uses, laid out 0x100 apart like a kernel text section.
FUNCS = sorted(
    {
        "perf_trace_contention_begin", "__traceiter_contention_begin", "bpf_trace_run2", "__bpf_trace_contention_begin",
        "rwsem_down_write_slowpath", "rwsem_down_read_slowpath", "down_write", "down_read", "down_write_killable",
        "down_read_killable", "native_queued_spin_lock_slowpath", "_raw_spin_lock", "_raw_spin_lock_irqsave",
        "_raw_spin_lock_nested", "__mutex_lock.constprop.0", "__mutex_lock_slowpath", "mutex_lock",
        "lock_mm_and_find_vma", "exc_page_fault", "asm_exc_page_fault", "vm_mmap_pgoff", "ksys_mmap_pgoff",
        "do_syscall_64", "entry_SYSCALL_64_after_hwframe", "__vm_munmap", "__x64_sys_munmap", "exit_mmap",
        "__mmput", "do_exit", "vma_link_file", "__mmap_region", "mmap_region", "do_mmap",
        "unlink_file_vma_batch_process", "free_pgtables", "unmap_region", "vms_complete_munmap_vmas",
        "do_vmi_align_munmap", "do_vmi_munmap", "vma_prepare", "commit_merge", "vma_modify_flags",
        "mprotect_fixup", "do_mprotect_pkey", "anon_vma_clone", "__split_vma", "anon_vma_fork", "dup_mmap",
        "copy_process", "kernel_clone", "unlink_anon_vmas", "__anon_vma_prepare", "do_anonymous_page",
        "__handle_mm_fault", "handle_mm_fault", "folio_lock_anon_vma_read", "folio_referenced",
        "shrink_folio_list", "rmap_walk_anon", "try_to_unmap", "mm_take_all_locks", "vm_lock_mapping.isra.0",
        "__mmu_notifier_register", "kvm_create_vm", "__pte_offset_map_lock", "unmap_page_range", "unmap_vmas",
        "__pte_alloc", "do_huge_pmd_anonymous_page", "rmqueue_bulk", "__rmqueue_pcplist",
        "get_page_from_freelist", "__alloc_frozen_pages_noprof", "free_pcppages_bulk", "free_unref_folios",
        "folios_put_refs", "free_pages_and_swap_cache", "tlb_flush_mmu", "raw_spin_rq_lock_nested",
        "try_to_wake_up", "wake_up_q", "__schedule", "schedule", "ttwu_queue_wakelist", "sched_ttwu_pending",
        "inode_lock_slowpath_unknown", "ext4_buffered_write_iter", "vfs_write", "split_huge_page_to_list_to_order",
        "deferred_split_scan", "collapse_huge_page", "i_mmap_lock_write", "madvise_do_behavior", "do_madvise",
        "__x64_sys_madvise",
        "bpf_prog_6deef7357e7b4530_mmr_t2_enter", "bpf_trampoline_6442491234",
        *(f for _, _, stack in REAL_STACKS for f in stack),
    }
)
BASE = 0xFFFFFFFF81000000
ADDR = {name: BASE + 0x100 * i for i, name in enumerate(FUNCS)}
KS = Kallsyms.from_arrays(list(ADDR.values()), list(ADDR), types=["t"] * len(ADDR))


def stack(*frames: str) -> list[int]:
    """Return addresses (a few bytes into each function), innermost first."""
    return [ADDR[f] + 0x2B for f in frames]


def name_of(ip: int) -> str | None:
    hit = KS.lookup(ip)
    return hit[0] if hit else None


TRACING = ("perf_trace_contention_begin", "__traceiter_contention_begin")
RWSEM_W = (*TRACING, "rwsem_down_write_slowpath", "down_write")
RWSEM_R = (*TRACING, "rwsem_down_read_slowpath", "down_read")
SPIN = (*TRACING, "native_queued_spin_lock_slowpath", "_raw_spin_lock")
SYSCALL = ("do_syscall_64", "entry_SYSCALL_64_after_hwframe")


def cls(flags: int, *frames: str, out_of_line=None) -> str:
    return classify(0xFFFF888012345678, flags, stack(*frames), name_of, out_of_line)


# ---- stacks from a real kernel ------------------------------------------------------


@pytest.mark.parametrize(("flags", "expected", "frames"), REAL_STACKS, ids=[s[2][2] for s in REAL_STACKS])
def test_stacks_captured_on_a_6_18_kernel_classify_as_expected(flags: int, expected: str, frames) -> None:
    assert cls(flags, *frames) == expected


# ---- one test per rule -----------------------------------------------------------


def test_page_fault_waiting_in_lock_mm_and_find_vma_is_mmap_lock() -> None:
    frames = (*TRACING, "rwsem_down_read_slowpath", "down_read_killable", "lock_mm_and_find_vma",
              "exc_page_fault", "asm_exc_page_fault")
    assert cls(LCB_F_READ, *frames) == "mmap_lock"


def test_mmap_and_munmap_syscalls_wait_on_mmap_lock() -> None:
    assert cls(LCB_F_WRITE, *TRACING, "rwsem_down_write_slowpath", "down_write_killable", "vm_mmap_pgoff",
               "ksys_mmap_pgoff", *SYSCALL) == "mmap_lock"
    assert cls(LCB_F_WRITE, *RWSEM_W[:-1], "down_write_killable", "__vm_munmap", "__x64_sys_munmap",
               *SYSCALL) == "mmap_lock"
    assert cls(LCB_F_WRITE, *RWSEM_W, "exit_mmap", "__mmput", "do_exit") == "mmap_lock"


def test_madvise_falling_back_from_its_per_vma_lock_waits_on_mmap_lock() -> None:
    # 6.18, tlb_flush2_threads: the other thread's munmap/mmap write-locked the VMA, madvise(MADV_DONTNEED)'s
    # try_vma_read_lock failed and took mmap_read_lock (inlined into madvise_do_behavior); 47 such waits of
    # a 0.5-s recording were "other" (docs/VALIDATION.md §e item 10)
    assert cls(LCB_F_READ, *RWSEM_R, "madvise_do_behavior", "do_madvise", "__x64_sys_madvise", *SYSCALL) \
        == "mmap_lock"


def test_linking_and_unlinking_file_vmas_wait_on_i_mmap_rwsem() -> None:
    assert cls(LCB_F_WRITE, *RWSEM_W, "vma_link_file", "__mmap_region", "mmap_region", "do_mmap") == "i_mmap_rwsem"
    assert cls(LCB_F_WRITE, *RWSEM_W, "unlink_file_vma_batch_process", "free_pgtables", "unmap_region",
               "vms_complete_munmap_vmas", "do_vmi_align_munmap") == "i_mmap_rwsem"


def test_fork_and_vma_split_wait_on_anon_vma() -> None:
    assert cls(LCB_F_WRITE, *RWSEM_W, "anon_vma_clone", "anon_vma_fork", "dup_mmap", "copy_process") == "anon_vma"
    assert cls(LCB_F_WRITE, *RWSEM_W, "anon_vma_clone", "__split_vma", "vma_modify_flags") == "anon_vma"
    assert cls(LCB_F_WRITE, *RWSEM_W, "unlink_anon_vmas", "free_pgtables", "unmap_region") == "anon_vma"


def test_reclaim_rmap_walk_of_an_anon_folio_waits_on_anon_vma_read() -> None:
    assert cls(LCB_F_READ, *RWSEM_R, "folio_lock_anon_vma_read", "folio_referenced",
               "shrink_folio_list") == "anon_vma"
    assert cls(LCB_F_READ, *RWSEM_R, "rmap_walk_anon", "try_to_unmap") == "anon_vma"


def test_first_anon_fault_distinguishes_anon_vma_from_page_table_lock_by_lock_kind() -> None:
    tail = ("__anon_vma_prepare", "do_anonymous_page", "__handle_mm_fault", "handle_mm_fault")
    assert cls(LCB_F_WRITE, *RWSEM_W, *tail) == "anon_vma"
    assert cls(LCB_F_SPIN, *SPIN, *tail) == "page_table_lock"  # mm->page_table_lock


def test_pte_and_pmd_locks_are_page_table_lock() -> None:
    assert cls(LCB_F_SPIN, *SPIN, "__pte_offset_map_lock", "unmap_page_range", "unmap_vmas") == "page_table_lock"
    assert cls(LCB_F_SPIN, *SPIN, "__pte_alloc", "do_anonymous_page") == "page_table_lock"
    assert cls(LCB_F_SPIN, *SPIN, "do_huge_pmd_anonymous_page", "__handle_mm_fault") == "page_table_lock"


def test_buddy_refill_and_drain_are_zone_lock() -> None:
    irq = (*TRACING, "native_queued_spin_lock_slowpath", "_raw_spin_lock_irqsave")
    assert cls(LCB_F_SPIN, *irq, "rmqueue_bulk", "__rmqueue_pcplist", "get_page_from_freelist") == "zone_lock"
    assert cls(LCB_F_SPIN, *irq, "free_pcppages_bulk", "free_unref_folios", "folios_put_refs",
               "free_pages_and_swap_cache", "tlb_flush_mmu") == "zone_lock"


def test_runqueue_lock_is_found_through_raw_spin_rq_lock_nested() -> None:
    nested = (*TRACING, "native_queued_spin_lock_slowpath", "_raw_spin_lock_nested", "raw_spin_rq_lock_nested")
    assert cls(LCB_F_SPIN, *nested, "__schedule", "schedule") == "runqueue_lock"
    assert cls(LCB_F_SPIN, *nested, "sched_ttwu_pending") == "runqueue_lock"


def test_try_to_wake_up_takes_pi_lock_with_irqsave_and_the_rq_lock_without() -> None:
    irq = (*TRACING, "native_queued_spin_lock_slowpath", "_raw_spin_lock_irqsave")
    plain = (*TRACING, "native_queued_spin_lock_slowpath", "_raw_spin_lock")
    assert cls(LCB_F_SPIN, *irq, "try_to_wake_up", "wake_up_q") == "other"  # p->pi_lock
    assert cls(LCB_F_SPIN, *plain, "try_to_wake_up", "wake_up_q") == "runqueue_lock"  # inlined rq_lock()


def test_unknown_takers_and_empty_stacks_are_other() -> None:
    assert cls(LCB_F_WRITE, *RWSEM_W, "inode_lock_slowpath_unknown", "ext4_buffered_write_iter",
               "vfs_write") == "other"
    assert cls(LCB_F_WRITE) == "other"
    assert cls(LCB_F_WRITE, *RWSEM_W) == "other"
    assert classify(0, LCB_F_WRITE, [0x10, 0x20], name_of) == "other"  # unsymbolizable


def test_unknown_frames_above_the_lock_primitive_are_skipped_but_not_elsewhere() -> None:
    gone = 0xFFFFFFFFA0000000  # e.g. a BPF program unloaded before kallsyms was read
    frames = stack(*RWSEM_W[2:], "vma_link_file", "__mmap_region")
    assert classify(0, LCB_F_WRITE, [gone, gone + 8, *frames], name_of) == "i_mmap_rwsem"
    assert classify(0, LCB_F_WRITE, [gone, *stack("vma_link_file")], name_of) == "other"


def test_the_taker_is_the_first_frame_not_the_outer_ones() -> None:
    # A mutex taken under a path that contains mmap_lock takers further out is not mmap_lock.
    mutex = (*TRACING, "__mutex_lock.constprop.0", "__mutex_lock_slowpath", "mutex_lock")
    assert cls(LCB_F_MUTEX, *mutex, "inode_lock_slowpath_unknown", "lock_mm_and_find_vma") == "other"


def test_lock_kind_must_fit_the_class() -> None:
    # A spinlock contended directly in lock_mm_and_find_vma is not the mmap_lock rwsem.
    assert cls(LCB_F_SPIN, *SPIN, "lock_mm_and_find_vma") == "other"
    # A rwsem in rmqueue_bulk is not zone->lock.
    assert cls(LCB_F_WRITE, *RWSEM_W, "rmqueue_bulk") == "other"


def test_preempt_rt_sleeping_spinlocks_still_classify_but_raw_rq_lock_does_not() -> None:
    assert cls(LCB_F_RT, "__pte_offset_map_lock", "unmap_page_range") == "page_table_lock"
    assert cls(LCB_F_RT, "raw_spin_rq_lock_nested", "__schedule") == "other"


def test_an_out_of_line_copy_of_an_inline_wrapper_is_its_own_taker() -> None:
    # -Os/KASAN builds may keep i_mmap_lock_write out of line: it then names the lock itself.
    assert cls(LCB_F_WRITE, *RWSEM_W, "i_mmap_lock_write", "vma_prepare", "commit_merge") == "i_mmap_rwsem"


def test_a_tier2_fentry_stack_skips_the_bpf_program_and_trampoline() -> None:
    frames = ("bpf_prog_6deef7357e7b4530_mmr_t2_enter", "bpf_trampoline_6442491234", "down_write",
              "vma_link_file", "__mmap_region")
    assert cls(LCB_F_WRITE, *frames) == "i_mmap_rwsem"


# ---- ambiguous takers ----------------------------------------------------------


def test_vma_prepare_is_ambiguous_between_i_mmap_and_anon_vma() -> None:
    c = explain(LCB_F_WRITE, stack(*RWSEM_W, "vma_prepare", "commit_merge", "vma_modify_flags",
                                   "mprotect_fixup", "do_mprotect_pkey"), name_of)
    assert c.taker == "vma_prepare" and c.ambiguous
    assert c.candidates == ("i_mmap_rwsem", "anon_vma")
    assert c.lock_class == "i_mmap_rwsem"  # documented default: the one vma_prepare takes first


def test_dup_mmap_tells_mmap_lock_from_i_mmap_by_the_primitive_it_called() -> None:
    killable = (*TRACING, "rwsem_down_write_slowpath", "down_write_killable")
    assert cls(LCB_F_WRITE, *killable, "dup_mmap", "copy_process") == "mmap_lock"
    assert cls(LCB_F_WRITE, *RWSEM_W, "dup_mmap", "copy_process") == "i_mmap_rwsem"


def test_thp_split_tells_anon_vma_from_i_mmap_by_mode() -> None:
    assert cls(LCB_F_WRITE, *RWSEM_W, "split_huge_page_to_list_to_order", "deferred_split_scan") == "anon_vma"
    assert cls(LCB_F_READ, *RWSEM_R, "split_huge_page_to_list_to_order", "deferred_split_scan") == "i_mmap_rwsem"


def test_mm_take_all_locks_uses_which_helpers_the_kernel_kept_out_of_line() -> None:
    frames = (*RWSEM_W, "mm_take_all_locks", "__mmu_notifier_register", "kvm_create_vm")
    # vm_lock_mapping out of line (as on 6.18): a direct down_write is vm_lock_anon_vma's.
    assert cls(LCB_F_WRITE, *frames, out_of_line={"vm_lock_mapping"}) == "anon_vma"
    assert cls(LCB_F_WRITE, *frames, out_of_line={"vm_lock_anon_vma"}) == "i_mmap_rwsem"
    assert explain(LCB_F_WRITE, stack(*frames), name_of).ambiguous
    # ... and the out-of-line helper itself names its class (clone suffix stripped).
    assert cls(LCB_F_WRITE, *RWSEM_W, "vm_lock_mapping.isra.0", "mm_take_all_locks") == "i_mmap_rwsem"


# ---- rule table invariants -------------------------------------------------------


def test_every_rule_names_a_schema_class_and_a_reason() -> None:
    assert {r.lock_class for r in RULES} == set(LOCK_CLASSES) - {"other"}
    assert all(r.why and r.takers for r in RULES)
    assert all(c.lock_class in LOCK_CLASSES for cs in TAKERS.values() for c in cs)


def test_docs_table_matches_the_rules() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "LOCK_CLASSES.md").read_text()
    assert markdown() in doc, "regenerate with: python -m replay.lockclass"


@given(st.lists(st.sampled_from(FUNCS), max_size=12), st.sampled_from([1, 2, 4, 5, 32, 33, 8, 18, 20]))
def test_classify_always_returns_a_schema_class(frames: list[str], flags: int) -> None:
    assert cls(flags, *frames) in LOCK_CLASSES


# ---- a whole lock_waits table ------------------------------------------------------


def _stacks(*stacks: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(
        {"stack_id": list(range(len(stacks))), "ips": [stack(*s) for s in stacks]},
        schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)},
    )


def _waits(rows: list[tuple[int, int, int, int, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"stack_id": pl.Int32, "flags": pl.UInt32, "lock_addr": pl.UInt64, "tid": pl.Int32,
                      "ts": pl.Int64, "dur": pl.Int64}, orient="row",
    )


def test_classify_waits_classifies_rows_and_settles_ambiguity_by_lock_address() -> None:
    stacks = _stacks(
        (*RWSEM_W, "anon_vma_clone", "anon_vma_fork"),  # 0: anon_vma for sure
        (*RWSEM_W, "vma_prepare", "commit_merge"),  # 1: i_mmap or anon_vma
        (*SPIN, "__pte_offset_map_lock", "unmap_page_range"),  # 2
    )
    anon, other = 0xFFFF888000001008, 0xFFFF888000002008
    waits = _waits([
        (0, LCB_F_WRITE, anon, 10, 100, 5),
        (1, LCB_F_WRITE, anon, 11, 200, 5),  # same lock as row 0 -> anon_vma
        (1, LCB_F_WRITE, other, 12, 300, 5),  # nothing else known -> default, ambiguous
        (2, LCB_F_SPIN, 0xFFFF888000003000, 13, 400, 5),
        (-1, LCB_F_SPIN, 0xFFFF888000004000, 13, 500, 5),  # no stack
    ])
    res = classify_waits(waits.lazy(), stacks.lazy(), kallsyms=KS)  # a trace's scan() works as is
    assert res.lock_class.to_list() == ["anon_vma", "anon_vma", "i_mmap_rwsem", "page_table_lock", "other"]
    assert res.ambiguous.to_list() == [False, False, True, False, False]
    assert res.by_address == 1


def test_classify_waits_uses_the_enclosing_mmap_lock_acquisition() -> None:
    stacks = _stacks((*RWSEM_W, "collapse_huge_page"))  # mmap_lock, anon_vma or a pmd lock
    waits = _waits([(0, LCB_F_WRITE, 0xA000, 7, 1_000, 50), (0, LCB_F_WRITE, 0xB000, 7, 5_000, 50)])
    holds = pl.DataFrame({"tid": [7], "ts": [1_100], "wait": [150]})  # started 950, acquired 1100
    res = classify_waits(waits, stacks, kallsyms=KS, mmap_lock_holds=holds)
    assert res.lock_class.to_list() == ["mmap_lock", "mmap_lock"]  # the second only by default
    assert res.by_mmap_lock == 1
    assert res.ambiguous.to_list() == [False, True]


def test_classify_waits_classifies_each_distinct_stack_once() -> None:
    stacks = _stacks((*RWSEM_R, "lock_mm_and_find_vma", "exc_page_fault"))
    n = 10_000
    waits = _waits([(0, LCB_F_READ, 0xC000, i % 7, i, 1) for i in range(n)])
    calls: list[int] = []

    def counting(ip: int) -> str | None:
        calls.append(ip)
        return name_of(ip)

    res = classify_waits(waits, stacks, symbolize=counting)
    assert (res.lock_class == "mmap_lock").all()
    assert len(calls) == len(np.unique(stack(*RWSEM_R, "lock_mm_and_find_vma", "exc_page_fault")))


def test_classify_waits_needs_a_way_to_symbolize() -> None:
    with pytest.raises(TypeError):
        classify_waits(_waits([]), _stacks())
