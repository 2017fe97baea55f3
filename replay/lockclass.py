"""Assign a lock class (schema.LOCK_CLASSES) to a contended lock from its kernel stack.

``lock:contention_begin`` gives a lock address and LCB_F_* flags, never the
lock's name. The class comes from the function that took the lock: walk the
stack innermost first, skip tracing frames and the lock primitives themselves
(``rwsem_down_write_slowpath``, ``down_write``, ``_raw_spin_lock`` ...), and
look the first remaining frame — the *taker* — up in the rules below.

The lock wrappers mm code calls (``mmap_read_lock``, ``i_mmap_lock_write``,
``anon_vma_lock_write``, ``pte_offset_map_lock`` before 6.5, ``pmd_lock``) are
static inlines, so they never appear in a stack: the rules name the functions
that *call* them. The rules were read off the kernel sources (v6.1 and current
mainline mm/vma.c, mm/mmap.c, mm/rmap.c, mm/memory.c, mm/page_alloc.c,
kernel/sched/core.c) and checked against /proc/kallsyms of a 6.18 kernel;
docs/LOCK_CLASSES.md is the table with the reasons.

Some takers lock more than one class (``vma_prepare`` takes the file's
i_mmap_rwsem *and* the anon_vma). Candidates are narrowed by the lock kind
(rwsem/mutex vs spinlock, from the flags), the primitive the taker called
(``dup_mmap`` takes mmap_lock with ``down_write_killable`` and i_mmap with
``down_write``), the mode, and by which helpers the running kernel keeps out of
line. What stays ambiguous gets the rule's first candidate and is reported as
ambiguous; ``classify_waits`` then settles it from the other waits on the same
lock address and from the mmap_lock tracepoints.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where a whole table is classified: `mmreplay record` classifies without polars
    import polars as pl

from replay.trace.schema import LOCK_CLASSES

# LCB_F_* (include/trace/events/lock.h)
LCB_F_SPIN = 1
LCB_F_READ = 2
LCB_F_WRITE = 4
LCB_F_RT = 8
LCB_F_PERCPU = 16
LCB_F_MUTEX = 32

OTHER = "other"

# Frames put on the stack by the tracepoint and the BPF program, above the lock code.
_TRACING_PREFIXES = (
    "__traceiter_",
    "__bpf_trace_",
    "bpf_trace_run",
    "perf_trace_",
    "trace_event_raw_event_",
    "bpf_prog_",
    "bpf_trampoline_",  # fentry programs (tier 2) run from a trampoline
    "__bpf_prog_run",
    "perf_tp_event",
    "perf_trace_run_bpf_submit",
)

#: Lock primitives: functions that implement a lock and are never its user.
LOCK_PRIMITIVES = frozenset(
    {
        # rw_semaphore (kernel/locking/rwsem.c)
        "rwsem_down_write_slowpath", "rwsem_down_read_slowpath", "rwsem_optimistic_spin",
        "__rwsem_down_write_failed_common", "__rwsem_down_read_failed_common",
        "rwsem_down_write_failed", "rwsem_down_read_failed",
        "rwsem_down_write_failed_killable", "rwsem_down_read_failed_killable",
        "__down_write", "__down_read", "__down_write_common", "__down_read_common",
        "__down_write_killable", "__down_read_killable", "__down_read_interruptible",
        "down_write", "down_read", "down_write_killable", "down_read_killable",
        "down_read_interruptible", "down_write_nested", "down_read_nested",
        "_down_write_nest_lock", "down_write_killable_nested", "down_read_killable_nested",
        "down_read_non_owner",
        "downgrade_write",  # a write hold becomes a read hold (tier 2 records the read hold from here)
        # percpu rwsem
        "percpu_down_write", "__percpu_down_read", "percpu_rwsem_wait", "percpu_down_read",
        # mutex (kernel/locking/mutex.c)
        "__mutex_lock", "__mutex_lock_common", "__mutex_lock_slowpath",
        "__mutex_lock_killable_slowpath", "__mutex_lock_interruptible_slowpath",
        "mutex_lock", "mutex_lock_killable", "mutex_lock_interruptible", "mutex_lock_io",
        "mutex_lock_nested", "mutex_lock_killable_nested", "mutex_lock_interruptible_nested",
        "mutex_lock_io_nested", "_mutex_lock_nest_lock", "mutex_optimistic_spin",
        "__ww_mutex_lock", "__ww_mutex_lock_slowpath", "ww_mutex_lock", "ww_mutex_lock_interruptible",
        # spinlocks and rwlocks (kernel/locking/qspinlock.c, qrwlock.c, spinlock.c)
        "queued_spin_lock_slowpath", "native_queued_spin_lock_slowpath",
        "__pv_queued_spin_lock_slowpath", "pv_queued_spin_lock_slowpath",
        "do_raw_spin_lock", "_raw_spin_lock", "_raw_spin_lock_irqsave", "_raw_spin_lock_irq",
        "_raw_spin_lock_bh", "_raw_spin_lock_nested", "_raw_spin_lock_irqsave_nested",
        "_raw_spin_lock_nest_lock",
        "queued_read_lock_slowpath", "queued_write_lock_slowpath", "do_raw_read_lock",
        "do_raw_write_lock", "_raw_read_lock", "_raw_read_lock_irqsave", "_raw_read_lock_irq",
        "_raw_read_lock_bh", "_raw_write_lock", "_raw_write_lock_irqsave", "_raw_write_lock_irq",
        "_raw_write_lock_bh", "_raw_write_lock_nested",
        # PREEMPT_RT sleeping spinlocks and rt_mutex based locks
        "rt_spin_lock", "rtlock_slowlock", "rtlock_slowlock_locked", "rt_mutex_slowlock",
        "__rt_mutex_slowlock", "__rt_mutex_slowlock_locked", "rt_mutex_slowlock_block",
        "rt_mutex_lock", "rt_mutex_lock_interruptible", "rt_mutex_lock_killable",
        "rwbase_read_lock", "rwbase_write_lock", "__rwbase_read_lock", "rt_read_lock", "rt_write_lock",
        # semaphores
        "__down", "__down_common", "__down_interruptible", "__down_killable", "__down_timeout",
        "down", "down_interruptible", "down_killable", "down_timeout",
    }
)


@dataclass(frozen=True)
class Candidate:
    """One lock a taker may be contending on, with what tells it apart."""

    lock_class: str
    kinds: frozenset[str]  # lock kinds it can be: "rwsem", "mutex", "spin" (+ "raw": never an RT lock)
    primitives: frozenset[str] = frozenset()  # the primitive the taker calls for it (empty: any)
    modes: frozenset[str] = frozenset()  # "read"/"write" (empty: any)
    via: str = ""  # inline helper that takes it; if the kernel has it out of line, it would be the taker


@dataclass(frozen=True)
class Rule:
    """A lock class, the functions that take it, and why (docs/LOCK_CLASSES.md)."""

    lock_class: str
    takers: tuple[str, ...]
    kinds: frozenset[str]
    why: str


SLEEPING = frozenset({"rwsem", "mutex"})
SPINNING = frozenset({"spin"})

RULES: tuple[Rule, ...] = (
    Rule(
        "mmap_lock",
        (
            # page faults: arch/x86/mm/fault.c do_user_addr_fault (inlined into exc_page_fault), mm/memory.c
            "lock_mm_and_find_vma", "get_mmap_lock_carefully", "upgrade_mmap_lock_carefully",
            "do_user_addr_fault", "exc_page_fault", "mmap_read_lock_maybe_expand",
            # mm system calls: mm/util.c, mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c, mm/mremap.c
            "vm_mmap_pgoff", "vm_munmap", "__vm_munmap", "do_mprotect_pkey", "do_madvise", "madvise_lock",
            # 6.16+ madvise: a per-VMA lock that fails (the VMA write-locked by another task's mmap/munmap) falls
            # back to mmap_read_lock inside madvise_walk_vmas/try_vma_read_lock, inlined into madvise_do_behavior
            "madvise_do_behavior", "madvise_walk_vmas", "try_vma_read_lock",
            "madvise_dontneed_free", "madvise_remove", "madvise_willneed", "madvise_populate",
            "madvise_collapse", "__do_sys_brk", "__x64_sys_brk", "__se_sys_brk", "vm_brk_flags",
            "do_mremap", "__do_sys_mremap", "__x64_sys_mremap", "do_mlock", "apply_mlockall_flags",
            "__x64_sys_munlock", "__x64_sys_mlockall", "__x64_sys_munlockall", "do_mincore",
            "__do_sys_msync", "__x64_sys_msync", "kernel_mbind", "do_mbind", "do_get_mempolicy",
            "do_migrate_pages", "do_pages_stat_array", "add_page_for_migration", "__mm_populate",
            # process lifetime: kernel/fork.c, kernel/exit.c, fs/exec.c, fs/coredump.c
            "exit_mmap", "exit_mm", "exec_mmap", "setup_arg_pages", "get_arg_page", "coredump_wait",
            # remote access and GUP: mm/memory.c, mm/gup.c, mm/process_vm_access.c
            "__access_remote_vm", "access_remote_vm", "get_user_pages_unlocked", "__get_user_pages_locked",
            "__gup_longterm_unlocked", "fault_in_safe_writeable", "fixup_user_fault", "get_dump_page",
            "process_vm_rw_single_vec", "pin_user_pages_remote",
            # background mm users: khugepaged, ksm, oom reaper, mmu notifiers, /proc
            "khugepaged_scan_mm_slot", "hpage_collapse_scan_mm_slot", "collapse_scan_mm_slot",
            "__khugepaged_exit", "__ksm_exit", "ksm_do_scan", "scan_get_next_rmap_item",
            "unmerge_and_remove_all_rmap_items", "break_cow", "get_mergeable_page",
            "oom_reap_task_mm", "oom_reap_task", "mmu_notifier_register", "__mmu_notifier_register",
            "mpol_rebind_mm", "replace_mm_exe_file", "m_start", "lock_vma_range", "proc_pid_cmdline_read",
            "mwriteprotect_range", "mfill_atomic", "expand_stack", "account_locked_vm", "print_vma_addr",
            # the inline wrappers themselves, in builds that keep them out of line (-Os, KASAN, gcov)
            "mmap_read_lock", "mmap_write_lock", "mmap_read_lock_killable", "mmap_write_lock_killable",
            "mmap_write_lock_nested", "mmap_write_downgrade",
            # munmap's mmap_write_downgrade (inline): 4.x-5.19, 6.1, 6.2+
            "__do_munmap", "do_mas_align_munmap", "do_vmi_align_munmap",
        ),
        SLEEPING,
        "mmap_read_lock/mmap_write_lock and their _killable/_trylock forms are static inlines "
        "(include/linux/mmap_lock.h) around down_read/down_write(&mm->mmap_lock): the taker is the "
        "function that calls them (fault path, mm syscalls, fork/exit/exec, GUP, khugepaged, ksm).",
    ),
    Rule(
        "i_mmap_rwsem",
        (
            # VMA creation and removal of file mappings: mm/vma.c, mm/mmap.c
            "vma_link_file", "__vma_link_file", "vma_link", "__mmap_region", "mmap_region",
            "unlink_file_vma", "unlink_file_vma_batch_process", "unlink_file_vma_batch_final",
            "__remove_shared_vm_struct", "vm_lock_mapping",
            # truncation / hole punch / rmap walks of file pages: mm/memory.c, mm/rmap.c
            "unmap_mapping_pages", "unmap_mapping_range", "unmap_mapping_folio", "rmap_walk_file",
            "__rmap_walk_file", "collect_procs_file", "collect_procs_fsdax", "walk_page_mapping",
            "clean_record_shared_mapping_range", "wp_shared_mapping_range", "build_map_info",
            # hugetlb and khugepaged file paths
            "huge_pmd_share", "hugetlb_change_protection", "hugetlb_unshare_pmds",
            "hugetlb_unshare_all_pmds", "move_hugetlb_page_tables", "unmap_ref_private",
            "__unmap_hugepage_range_final", "hugetlb_page_mapping_lock_write", "hugetlb_vmdelete_list",
            "hugetlb_vmtruncate", "hugetlbfs_punch_hole", "remove_inode_hugepages",
            "retract_page_tables", "collapse_and_free_pmd", "collapse_file",
            "i_mmap_lock_write", "i_mmap_lock_read",  # out-of-line copies of the inline wrappers
        ),
        SLEEPING,
        "i_mmap_lock_write/i_mmap_lock_read (include/linux/fs.h) are static inlines around "
        "down_write/down_read(&mapping->i_mmap_rwsem); it guards the file's VMA interval tree, so its "
        "takers link/unlink file VMAs, unmap a file range or walk the rmap of a file folio.",
    ),
    Rule(
        "anon_vma",
        (
            # mm/rmap.c: lock_anon_vma_root is the (possibly inlined) taker in clone/unlink
            "anon_vma_clone", "unlink_anon_vmas", "lock_anon_vma_root", "anon_vma_fork",
            "__anon_vma_prepare", "folio_lock_anon_vma_read", "page_lock_anon_vma_read",
            "rmap_walk_anon", "rmap_walk_anon_lock", "rmap_walk_ksm", "vm_lock_anon_vma",
            # stack expansion and brk: mm/mmap.c, mm/vma.c
            "expand_downwards", "expand_upwards", "do_brk_flags",
            "collapse_huge_page", "split_huge_page_to_list", "split_huge_page_to_list_to_order",
            "__folio_split",
            "anon_vma_lock_write", "anon_vma_lock_read",  # out-of-line copies of the inline wrappers
        ),
        SLEEPING,
        "anon_vma_lock_write/anon_vma_lock_read (include/linux/rmap.h) are static inlines around "
        "down_write/down_read(&anon_vma->root->rwsem): fork and VMA split/merge (clone, unlink), "
        "the first anonymous fault of a VMA (__anon_vma_prepare), and rmap walks of anon folios.",
    ),
    Rule(
        "page_table_lock",
        (
            # pte-level: mm/pgtable-generic.c (6.5+ out of line), mm/memory.c
            "__pte_offset_map_lock", "__pte_alloc", "pmd_install", "__pmd_alloc", "__pud_alloc",
            "__p4d_alloc", "__get_locked_pte", "__handle_mm_fault", "handle_mm_fault", "handle_pte_fault",
            "do_anonymous_page", "do_fault", "finish_fault", "do_set_pmd", "wp_page_copy", "do_wp_page",
            "finish_mkwrite_fault", "do_numa_page", "do_swap_page", "pte_unmap_same", "filemap_map_pages",
            "insert_page", "insert_pages", "insert_pfn", "insert_pfn_pmd", "insert_pfn_pud",
            "apply_to_pte_range", "remap_pte_range", "follow_page_pte", "follow_pte", "follow_pmd_mask",
            "follow_pud_mask", "zap_pte_range", "zap_pmd_range", "unmap_page_range", "copy_pte_range",
            "copy_page_range", "change_pte_range", "move_ptes", "move_page_tables", "move_normal_pmd",
            "move_normal_pud", "page_vma_mapped_walk", "unuse_pte", "mfill_atomic_install_pte",
            "double_pt_lock", "move_pages_pte", "move_pages_ptes", "madvise_free_pte_range",
            "madvise_cold_or_pageout_pte_range", "mincore_pte_range", "walk_pte_range",
            "__migration_entry_wait", "migration_entry_wait_huge", "pmd_migration_entry_wait",
            # huge pages: mm/huge_memory.c, mm/hugetlb.c
            "do_huge_pmd_anonymous_page", "__do_huge_pmd_anonymous_page", "do_huge_pmd_wp_page",
            "do_huge_pmd_numa_page", "__pmd_trans_huge_lock", "__pud_trans_huge_lock", "zap_huge_pmd",
            "zap_huge_pud", "__split_huge_pmd", "__split_huge_pud", "copy_huge_pmd", "copy_huge_pud",
            "change_huge_pmd", "move_huge_pmd", "huge_pmd_set_accessed", "huge_pud_set_accessed",
            "madvise_free_huge_pmd", "huge_pte_lock", "hugetlb_fault", "hugetlb_no_page", "hugetlb_wp",
            "copy_hugetlb_page_range", "__unmap_hugepage_range", "hugetlb_change_protection",
            "huge_pmd_share", "collapse_huge_page", "collapse_pte_mapped_thp", "retract_page_tables",
            # mm->page_table_lock also guards anon_vma attach and stack growth
            "__anon_vma_prepare", "expand_downwards", "expand_upwards",
            # out-of-line copies of the inline wrappers
            "pte_offset_map_lock", "pte_alloc_map_lock", "pmd_lock", "pud_lock",
        ),
        SPINNING,
        "pte_offset_map_lock/pte_lockptr/pmd_lock/pud_lock/huge_pte_lock are inlines around "
        "spin_lock(ptl) (split PTE/PMD locks or mm->page_table_lock); since 6.5 pte_offset_map_lock "
        "calls the out-of-line __pte_offset_map_lock. Takers are the fault, zap, copy, mprotect, "
        "mremap and THP paths.",
    ),
    Rule(
        "zone_lock",
        (
            "rmqueue_bulk", "__rmqueue_pcplist", "rmqueue_buddy", "rmqueue", "get_page_from_freelist",
            "free_pcppages_bulk", "free_one_page", "__free_pages_ok", "reserve_highatomic_pageblock",
            "unreserve_highatomic_pageblock", "take_page_off_buddy", "put_page_back_buddy",
            "__offline_isolated_pages", "set_migratetype_isolate", "unset_migratetype_isolate",
            "isolate_freepages_block", "compact_lock_irqsave", "fast_isolate_freepages",
            "isolate_freepages", "split_free_page", "__setup_per_zone_wmarks", "page_reporting_cycle",
            "accept_page", "try_to_claim_block",
        ),
        SPINNING,
        "spin_lock_irqsave(&zone->lock) in mm/page_alloc.c: refilling a per-CPU list (rmqueue_bulk), "
        "draining one (free_pcppages_bulk), buddy alloc/free bypassing the pcp lists, highatomic "
        "reserves, isolation and compaction. __free_one_page runs under it but never takes it.",
    ),
    Rule(
        "runqueue_lock",
        (
            "raw_spin_rq_lock_nested", "_raw_spin_rq_lock_irqsave", "raw_spin_rq_lock",
            "double_rq_lock", "_double_lock_balance", "double_lock_balance", "sched_core_lock",
        ),
        frozenset({"spin", "raw"}),
        "rq->__lock is taken through raw_spin_rq_lock_nested (kernel/sched/core.c) and the double-rq "
        "helpers; where its fast path is inlined (6.18, !CONFIG_SCHED_CORE) the scheduler functions "
        "(__schedule, try_to_wake_up, __task_rq_lock, sched_tick, ...) call _raw_spin_lock themselves "
        "and are takers too, but only through that primitive: their raw_spin_lock_irqsave is p->pi_lock.",
    ),
)

# Takers that take more than one class, with what tells the candidates apart.
_RWSEM = frozenset({"rwsem"})
_SPIN = frozenset({"spin"})
_AMBIGUOUS: dict[str, tuple[Candidate, ...]] = {
    # vma_prepare: i_mmap_lock_write(vp->mapping) then anon_vma_lock_write(vp->anon_vma) (mm/vma.c);
    # it is inlined into its callers in some builds.
    **{
        name: (
            Candidate("i_mmap_rwsem", _RWSEM, via="vma_prepare" if name != "vma_prepare" else ""),
            Candidate("anon_vma", _RWSEM, via="vma_prepare" if name != "vma_prepare" else ""),
        )
        for name in ("vma_prepare", "commit_merge", "vma_expand", "vma_shrink", "__split_vma",
                     "vma_merge", "vma_merge_existing_range", "vma_merge_new_range", "__vma_adjust")
    },
    # mremap's take_rmap_locks: i_mmap_lock_write then anon_vma_lock_write (mm/mremap.c)
    "take_rmap_locks": (Candidate("i_mmap_rwsem", _RWSEM), Candidate("anon_vma", _RWSEM)),
    # mm_take_all_locks: vm_lock_mapping (file) and vm_lock_anon_vma, static helpers, often inlined
    "mm_take_all_locks": (
        Candidate("i_mmap_rwsem", _RWSEM, via="vm_lock_mapping"),
        Candidate("anon_vma", _RWSEM, via="vm_lock_anon_vma"),
    ),
    # dup_mmap: mmap_write_lock_killable(oldmm), i_mmap_lock_write(mapping) per file VMA (kernel/fork.c, mm/mmap.c)
    "dup_mmap": (
        Candidate("mmap_lock", _RWSEM, primitives=frozenset({"down_write_killable"})),
        Candidate("i_mmap_rwsem", _RWSEM, primitives=frozenset({"down_write"})),
    ),
    # collapse_huge_page: mmap_write_lock(mm) then anon_vma_lock_write; plus pmd_lock
    "collapse_huge_page": (
        Candidate("mmap_lock", _RWSEM),
        Candidate("anon_vma", _RWSEM),
        Candidate("page_table_lock", _SPIN),
    ),
    # collapse_pte_mapped_thp: i_mmap_lock_read/anon_vma_lock_write (6.1), pmd/pte locks
    "collapse_pte_mapped_thp": (
        Candidate("i_mmap_rwsem", _RWSEM, modes=frozenset({"read"})),
        Candidate("anon_vma", _RWSEM, modes=frozenset({"write"})),
        Candidate("page_table_lock", _SPIN),
    ),
    # THP split: anon folios anon_vma_lock_write, file folios i_mmap_lock_read
    **{
        name: (
            Candidate("anon_vma", _RWSEM, modes=frozenset({"write"})),
            Candidate("i_mmap_rwsem", _RWSEM, modes=frozenset({"read"})),
        )
        for name in ("split_huge_page_to_list", "split_huge_page_to_list_to_order", "__folio_split")
    },
    # khugepaged retract_page_tables: i_mmap_trylock_read/i_mmap_lock_read plus pmd/pte locks
    "retract_page_tables": (Candidate("i_mmap_rwsem", _RWSEM), Candidate("page_table_lock", _SPIN)),
    "huge_pmd_share": (Candidate("i_mmap_rwsem", _RWSEM), Candidate("page_table_lock", _SPIN)),
    "hugetlb_change_protection": (Candidate("i_mmap_rwsem", _RWSEM), Candidate("page_table_lock", _SPIN)),
}

# Where raw_spin_rq_lock_nested has an inline fast path (6.18 without CONFIG_SCHED_CORE: seen
# on this project's machines), rq_lock()/task_rq_lock() reach _raw_spin_lock from the scheduler
# function itself. Those functions also take p->pi_lock, with raw_spin_lock_irqsave: the
# primitive tells the two apart.
_RQ_PRIMITIVES = frozenset({"_raw_spin_lock", "_raw_spin_lock_nested", "do_raw_spin_lock"})
_RQ_INLINE_TAKERS = (
    "__schedule", "__task_rq_lock", "task_rq_lock", "try_to_wake_up", "ttwu_queue", "sched_ttwu_pending",
    "wake_up_new_task", "sched_tick", "scheduler_tick", "sched_balance_rq", "load_balance",
    "sched_balance_newidle", "newidle_balance", "do_sched_yield", "migration_cpu_stop", "move_queued_task",
    "yield_to", "__balance_push_cpu_stop", "set_user_nice", "sched_move_task", "task_sched_runtime",
    "rt_mutex_setprio", "__sched_setscheduler", "resched_cpu", "wake_up_if_idle", "push_rt_task",
    "pull_rt_task", "push_dl_task", "pull_dl_task", "active_load_balance_cpu_stop", "sched_tick_remote",
)
_AMBIGUOUS.update(
    {
        name: (Candidate("runqueue_lock", frozenset({"spin", "raw"}), primitives=_RQ_PRIMITIVES),)
        for name in _RQ_INLINE_TAKERS
    }
)

def _build_takers() -> dict[str, tuple[Candidate, ...]]:
    takers: dict[str, tuple[Candidate, ...]] = {}
    for rule in RULES:
        for name in rule.takers:
            takers[name] = (*takers.get(name, ()), Candidate(rule.lock_class, rule.kinds))
    takers.update(_AMBIGUOUS)  # the specific entries win over the per-class lists
    return takers


#: taker name -> the candidates it may be contending on.
TAKERS: dict[str, tuple[Candidate, ...]] = _build_takers()


@dataclass(frozen=True)
class Classification:
    """The outcome of classifying one stack, with the evidence."""

    lock_class: str
    taker: str | None  # first frame that is not tracing or a lock primitive
    primitive: str | None  # outermost lock primitive frame (what the taker called)
    candidates: tuple[str, ...] = field(default=())  # classes still possible; >1 means ambiguous

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


def lock_kind(flags: int) -> str:
    """The kind of lock from LCB_F_*: 'mutex', 'spin' (spinlock, rwlock), 'rt' (a PREEMPT_RT
    sleeping spinlock_t) or 'rwsem' (incl. percpu and RT rw semaphores)."""
    if flags & LCB_F_MUTEX:
        return "mutex"
    if flags & LCB_F_SPIN:
        return "spin"
    if flags & LCB_F_RT and not flags & (LCB_F_READ | LCB_F_WRITE):
        return "rt"
    return "rwsem"


def _kind_fits(kind: str, kinds: frozenset[str]) -> bool:
    if kind in kinds:
        return True
    if kind == "mutex":  # i_mmap and anon_vma were mutexes in 3.0-3.7 (i_mmap until 3.19)
        return "rwsem" in kinds
    if kind == "rt":  # spinlock_t under PREEMPT_RT; raw spinlocks (rq->__lock) never are
        return "spin" in kinds and "raw" not in kinds
    return False


def lock_mode(flags: int) -> str | None:
    if flags & LCB_F_WRITE:
        return "write"
    if flags & LCB_F_READ:
        return "read"
    return None


def base_name(name: str) -> str:
    """Strip compiler clone suffixes: 'vm_lock_mapping.isra.0' -> 'vm_lock_mapping'."""
    return name.split(".", 1)[0]


def explain(
    flags: int,
    stack: Sequence[int],
    symbolize: Callable[[int], str | None],
    out_of_line: Container[str] | None = None,
) -> Classification:
    """Classify with the evidence (see module doc). ``out_of_line``: function names the kernel has as symbols."""
    names = [base_name(n) if (n := symbolize(int(ip))) else None for ip in stack]
    # Leading tracing frames are skipped; so are leading unknown frames (a BPF program whose
    # symbol is gone) but only when a lock primitive follows them.
    i = 0
    unknown = False
    while i < len(names) and (names[i] is None or names[i].startswith(_TRACING_PREFIXES)):
        unknown |= names[i] is None
        i += 1
    if unknown and (i >= len(names) or names[i] not in LOCK_PRIMITIVES):
        return Classification(OTHER, None, None)
    primitive = None
    while i < len(names) and names[i] in LOCK_PRIMITIVES:
        primitive = names[i]
        i += 1
    if i >= len(names) or names[i] is None:
        return Classification(OTHER, None, primitive)
    taker = names[i]
    kind = lock_kind(flags)
    mode = lock_mode(flags)
    left = [
        c
        for c in TAKERS.get(taker, ())
        if _kind_fits(kind, c.kinds)
        and (not c.primitives or primitive in c.primitives)
        and (not c.modes or mode is None or mode in c.modes)
    ]
    if len(left) > 1 and out_of_line is not None:
        narrowed = [c for c in left if not (c.via and c.via in out_of_line)]
        left = narrowed or left
    classes = tuple(dict.fromkeys(c.lock_class for c in left))
    if not classes:
        return Classification(OTHER, taker, primitive)
    return Classification(classes[0], taker, primitive, classes)


def classify(
    lock_addr: int,
    flags: int,
    stack: Sequence[int],
    symbolize: Callable[[int], str | None],
    out_of_line: Container[str] | None = None,
) -> str:
    """The lock class of one contended lock (one of schema.LOCK_CLASSES).

    ``stack`` is innermost first; ``symbolize`` maps an ip to its function name
    (or None). ``lock_addr`` is accepted for the signature's sake; addresses
    matter only across many waits (``classify_waits``).
    """
    del lock_addr
    return explain(flags, stack, symbolize, out_of_line).lock_class


# ---- a whole lock_waits table ---------------------------------------------------


@dataclass(frozen=True)
class WaitClasses:
    """``lock_class`` per lock_waits row, and how it was decided."""

    lock_class: pl.Series  # Utf8, aligned with the input rows
    ambiguous: pl.Series  # Boolean: still a guess between several classes
    by_address: int  # rows settled by other waits on the same lock address
    by_mmap_lock: int  # rows settled by an enclosing mmap_lock acquisition of the same task


def classify_waits(
    waits: pl.DataFrame | pl.LazyFrame,
    stacks: pl.DataFrame | pl.LazyFrame,
    symbolize: Callable[[int], str | None] | None = None,
    kallsyms=None,  # replay.symbols.Kallsyms
    mmap_lock_holds: pl.DataFrame | pl.LazyFrame | None = None,
) -> WaitClasses:
    """Classify every row of a lock_waits table; each distinct (stack_id, flags) is classified once.

    ``waits`` needs stack_id, flags, lock_addr (and tid, ts, dur for the mmap_lock
    rule); ``stacks`` is the trace's stacks table. Give ``kallsyms`` (the full
    snapshot: it also tells which helpers are out of line) or a ``symbolize``.
    ``mmap_lock_holds`` (lock_holds rows of class mmap_lock: tid, ts, wait) turns
    an ambiguous rwsem wait that lies inside a task's mmap_lock acquisition into mmap_lock.
    """
    import polars as pl

    if isinstance(waits, pl.LazyFrame):
        waits = waits.collect()
    if isinstance(stacks, pl.LazyFrame):
        stacks = stacks.collect()
    if isinstance(mmap_lock_holds, pl.LazyFrame):
        mmap_lock_holds = mmap_lock_holds.collect()
    out_of_line: set[str] | None = None
    if kallsyms is not None:
        out_of_line = {base_name(str(n)) for n in kallsyms.names}
    keys = waits.select("stack_id", "flags").unique()
    ip_lists = dict(zip(stacks["stack_id"].to_list(), stacks["ips"].to_list(), strict=True))
    needed = np.unique(
        np.fromiter(
            (ip for sid in keys["stack_id"].to_list() for ip in (ip_lists.get(sid) or ())), dtype=np.uint64
        )
    )
    names: dict[int, str | None] = {}
    if kallsyms is not None:
        idx, _ = kallsyms.lookup_many(needed)
        names = {int(a): (str(kallsyms.names[i]) if i >= 0 else None) for a, i in zip(needed, idx, strict=True)}
    elif symbolize is not None:
        names = {int(a): symbolize(int(a)) for a in needed}
    else:
        raise TypeError("classify_waits needs kallsyms or symbolize")

    rows = []
    for sid, flags in keys.iter_rows():
        c = explain(int(flags), ip_lists.get(sid) or (), names.get, out_of_line)
        mask = sum(1 << LOCK_CLASSES.index(k) for k in c.candidates)
        rows.append((sid, flags, c.lock_class, c.ambiguous, mask))
    table = pl.DataFrame(
        rows,
        schema={"stack_id": waits.schema["stack_id"], "flags": waits.schema["flags"], "_class": pl.Utf8,
                "_ambiguous": pl.Boolean, "_mask": pl.Int64},
        orient="row",
    )
    df = waits.with_row_index("_row").join(table, on=["stack_id", "flags"], how="left").sort("_row")

    by_mmap = 0
    mmap_bit = 1 << LOCK_CLASSES.index("mmap_lock")
    if mmap_lock_holds is not None and len(mmap_lock_holds) and {"tid", "ts", "dur"} <= set(df.columns):
        starts = (
            mmap_lock_holds.select(
                pl.col("tid").cast(pl.Int64),
                (pl.col("ts") - pl.col("wait")).cast(pl.Int64).alias("_lock_start"),
                pl.col("ts").cast(pl.Int64).alias("_acquired"),
            )
            .sort("_lock_start")
        )
        joined = (
            df.select("_row", pl.col("tid").cast(pl.Int64), pl.col("ts").cast(pl.Int64), pl.col("dur").cast(pl.Int64))
            .sort("ts")
            .join_asof(
                starts, left_on="ts", right_on="_lock_start", by="tid", strategy="backward", check_sortedness=False
            )
            .sort("_row")
        )
        inside = (joined["_acquired"].is_not_null() & (joined["ts"] + joined["dur"] <= joined["_acquired"])).fill_null(
            False
        )
        hit = inside & df["_ambiguous"] & ((df["_mask"] & mmap_bit) != 0)
        by_mmap = int(hit.sum())
        df = df.with_columns(
            pl.when(hit).then(pl.lit("mmap_lock")).otherwise(pl.col("_class")).alias("_class"),
            (pl.col("_ambiguous") & ~hit).alias("_ambiguous"),
        )

    # One lock address is one lock: settle ambiguous rows from the unambiguous ones at the same address.
    decided = (
        df.filter(~pl.col("_ambiguous") & (pl.col("_class") != OTHER))
        .group_by("lock_addr")
        .agg(pl.col("_class").unique().alias("_seen"))
        .filter(pl.col("_seen").list.len() == 1)
        .select("lock_addr", pl.col("_seen").list.first().alias("_addr_class"))
    )
    df = df.join(decided, on="lock_addr", how="left").sort("_row")
    bit = pl.col("_addr_class").replace_strict(
        {k: 1 << i for i, k in enumerate(LOCK_CLASSES)}, default=0, return_dtype=pl.Int64
    )
    settle = pl.col("_ambiguous") & pl.col("_addr_class").is_not_null() & ((pl.col("_mask") & bit) != 0)
    by_address = int(df.select(settle.sum()).item())
    df = df.with_columns(
        pl.when(settle).then(pl.col("_addr_class")).otherwise(pl.col("_class")).alias("_class"),
        (pl.col("_ambiguous") & ~settle).alias("_ambiguous"),
    )
    return WaitClasses(
        df["_class"].fill_null(OTHER).alias("lock_class"),
        df["_ambiguous"].fill_null(False).alias("ambiguous"),
        by_address,
        by_mmap,
    )


def markdown() -> str:
    """The rules table of docs/LOCK_CLASSES.md, generated from RULES and the ambiguous takers."""
    out = ["| class | lock kind | takers (first non-lock frame) | why |", "|---|---|---|---|"]
    for r in RULES:
        kinds = "/".join(sorted(r.kinds - {"raw"})) + (" (raw)" if "raw" in r.kinds else "")
        takers = ", ".join(f"`{t}`" for t in r.takers if t not in _AMBIGUOUS)
        out.append(f"| `{r.lock_class}` | {kinds} | {takers} | {r.why} |")
    out += ["", "Takers that take several classes (or a class only through one primitive), and what tells "
            "the candidates apart:", "", "| taker | candidates (first = default) |", "|---|---|"]
    for name, cands in _AMBIGUOUS.items():
        parts = []
        for c in cands:
            extra = [("/".join(sorted(c.kinds)))]
            if c.primitives:
                extra.append("via " + "/".join(f"`{p}`" for p in sorted(c.primitives)))
            if c.modes:
                extra.append("/".join(sorted(c.modes)))
            if c.via:
                extra.append(f"inlined `{c.via}`")
            parts.append(f"`{c.lock_class}` ({', '.join(extra)})")
        out.append(f"| `{name}` | {'; '.join(parts)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown())
