"""Cost constants of the simulated machine, with their sources.

Every figure is a default for a recent single-socket x86-64 machine; override
them with ``Costs.load(file)`` (TOML or JSON, flat ``name = value``) after
calibrating on the host. Figures marked *assumption* have no published source
we could cite; calibrate them from a trace (``gathers.dur``/``pages``,
``sched_wakeup`` → ``sched_switch``) before trusting absolute numbers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

from replay.errors import UsageError

#: the costs that are lists of recorded samples (ns) rather than one figure
SAMPLE_COSTS = ("line_transfer_samples_ns", "lock_wake_samples_ns", "lock_wake_long_samples_ns")


@dataclass(frozen=True)
class Costs:
    """Durations in ns (probabilities and page counts where named so)."""

    # --- locks: perfbook (McKenney, "Is Parallel Programming Hard", CPU-cost table, Nehalem)
    cas_ns: int = 12  #: uncontended CAS: mutex/rwsem fast path (acquire + release)
    spin_lock_unlock_ns: int = 26  #: uncontended spin_lock + spin_unlock
    line_transfer_ns: int = 31  #: cache-line transfer, same socket
    line_transfer_remote_ns: int = 95  #: cache-line transfer, cross socket
    #: the recorded hand-offs to waiters that stayed on their CPU (release -> next owner running), as equally
    #: likely values (quantiles of the recorded distribution): a lock handed to a spinner on the same socket
    #: takes one of them, drawn from the run's seeded generator, instead of line_transfer_ns. A chain of
    #: hand-offs (a convoy) lasts their sum, which a single figure (the median) gets wrong at every link by
    #: the distribution's long tail (docs/VALIDATION.md §e). Empty (the default): line_transfer_ns;
    #: --calibrate measures it from lock_holds.
    line_transfer_samples_ns: tuple[int, ...] = ()
    #: the recorded delays from a lock releaser's wake-up call to the woken waiter's activation on its CPU
    #: (``sched_waking`` in the waker -> ``sched_wakeup`` of the waiter), as equally likely values: a woken
    #: lock sleeper (granted, or woken to retry) takes one, drawn from the run's seeded generator, on top of
    #: the wake-up latency (wakeup_ns + jitter, which runs from the activation to the switch). A wake-up onto
    #: another CPU that idles waits there for an IPI and the CPU's exit from idle: 17-19 µs at the median on
    #: this 2-vCPU guest, 2.4-3.8 µs on the waker's own CPU (docs/VALIDATION.md §e item 10). Empty (the
    #: default): no such delay; --calibrate measures it from sched_wakeup.
    lock_wake_samples_ns: tuple[int, ...] = ()
    #: the recorded delays from a lock releaser's release to the switch-in of the lock sleeper it woke onto another
    #: CPU, for sleepers that had been off their CPU lock_wake_long_after_ns or more, as equally likely values: such
    #: a woken sleeper takes one (drawn) instead of the wake-up latency and lock_wake_samples_ns, whole: runnable
    #: that much after the release less the context switch its dispatch costs. A vCPU that idled that long is off
    #: its host CPU and slow to come back (page_fault1_threads here: 26-44 µs, against 10-39 µs after a short
    #: sleep), so the sleeper's waker, still on its CPU, takes the lock again first (docs/VALIDATION.md §e item
    #: 13). Empty (the default): not modelled; --calibrate measures it from sched_wakeup and sched_switch.
    lock_wake_long_samples_ns: tuple[int, ...] = ()
    #: how long off its CPU a woken lock sleeper must have been to take lock_wake_long_samples_ns (KVM's
    #: halt_poll_ns default: a vCPU halted that long is scheduled out on the host)
    lock_wake_long_after_ns: int = 200_000
    #: a lock waiter that must sleep leaves its CPU this long after it queued (the kernel's way from
    #: contention_begin through schedule() to the switch: the recorder's program, newly-idle balancing); a
    #: grant or a wake to retry inside it is taken on the CPU, without a switch or a wake-up. 0 (the default):
    #: it leaves at once. --calibrate measures it (lock_waits -> sched_switch, docs/VALIDATION.md §e item 10).
    lock_sleep_window_ns: int = 0
    #: 1: a Block's length holds its wake-up, as a recorded off-CPU interval does (sched_switch out to the next
    #: switch-in: reconstruction's sleeps, the interference's intervals): the engine makes the task runnable at
    #: the block's end less the context switch its dispatch then costs, and draws no wake-up for it. 0 (the
    #: default): a block sleeps its length, then takes a wake-up (wakeup_ns + jitter) and the switch, which a
    #: recorded block then replays on top of the recorded ones (page_fault1_threads: +8.3 µs median, +17 µs mean
    #: per sleep). --calibrate sets 1 (docs/VALIDATION.md §e item 12).
    blocks_hold_wakeup: int = 0
    #: CPUs per socket (CPU c is on socket c // cpus_per_socket); 0: all CPUs on one socket.
    #: A lock hand-off between CPUs of different sockets costs line_transfer_remote_ns.
    cpus_per_socket: int = 0
    #: cache lines of protected data a critical section touches that the previous owner wrote:
    #: when a lock is taken on another CPU than its last owner's, they follow it, and the new
    #: owner pays this many line transfers (line_transfer_remote_ns from another socket) on top
    #: of its hold. 0 = not modelled (the hold costs what was recorded or synthesized, which on
    #: one CPU or uncontended already has the data in cache). Simulated locks only, not
    #: as-recorded. docs/SIMULATOR.md, docs/VALIDATION.md §h.
    lock_data_lines: int = 0
    #: ticket lock hand-off: each waiter re-reads the line after a release, serialized at the
    #: directory; the next owner is on average half-way, so hand-off = line_transfer * (1 + (k-1)/2)
    #: for k waiters (Boyd-Wickizer et al., "Non-scalable locks are dangerous", OLS 2012).
    ticket_handoff_per_waiter: float = 0.5
    #: a mutex waiter that has slept this long gets the lock handed to it before optimistic
    #: spinners (approximates MUTEX_FLAG_HANDOFF, kernel/locking/mutex.c) -- assumption 1 ms.
    mutex_handoff_after_ns: int = 1_000_000
    #: mutex-classic (3.0): the unlocker's CPU time for wake_up_process(), which 3.0's unlock
    #: slowpath calls with the mutex's wait_lock held; the next slowpath unlock spins on
    #: wait_lock until it is done (docs/VALIDATION.md §b). 0 = not modelled: no bare-metal figure.
    mutex_waker_ns: int = 0
    #: rwsem: RWSEM_WAIT_TIMEOUT = DIV_ROUND_UP(HZ, 250) jiffies = 4 ms (kernel/locking/rwsem.c).
    rwsem_handoff_after_ns: int = 4_000_000

    #: the tier-1 tracer's own time at an mmap_lock acquisition (mmap_lock_start_locking ->
    #: mmap_lock_acquire_returned, its BPF program and the fast path), which every recorded mmap_lock wait
    #: contains: replayed as CPU time before each attempt, counted in the wait, min(the acquisition's
    #: recorded wait, this) (docs/VALIDATION.md §e). 0: an untraced kernel; --calibrate measures it.
    mmap_lock_tracer_ns: int = 0

    # --- scheduling: lmbench / perf bench sched pipe
    context_switch_ns: int = 1_700  #: context switch (lmbench lat_ctx, 2 processes, small footprint)
    #: wake-up to runnable; with a 1.7 us switch a pipe round trip (2 wakes + 2 switches) is 3.7 us,
    #: the low end of `perf bench sched pipe` (3.7-8.8 us per round trip).
    wakeup_ns: int = 150
    #: exponential jitter (mean) added to every wake-up; spans the 3.7-8.8 us round-trip range -- seeded.
    wake_jitter_ns: int = 1_000
    #: CFS slice with two runnable tasks at sched_latency = 6 ms (kernel/sched/fair.c, pre-EEVDF).
    timeslice_ns: int = 3_000_000

    # --- the injected cyclictest-like probe: OSPERT'13 cyclictest on an idle mainline box:
    #     avg ~2.9 us, max ~20 us.  timer irq + wake-up path chosen so idle latency = 1.2 + 1.7 = 2.9 us.
    probe_irq_ns: int = 1_200
    probe_run_ns: int = 1_000  #: probe body (read clock, compute, arm timer) -- assumption

    # --- TLB: arch/x86/mm/tlb.c
    invlpg_ns: int = 100  #: per-page INVLPG
    full_flush_ns: int = 920  #: full flush ~2.3k cycles incl. refill, at 2.5 GHz
    flush_ceiling_pages: int = 33  #: tlb_single_page_flush_ceiling: above it, a full flush
    #: sender-side cost of a remote shootdown (send IPIs, wait for acks) -- assumption, ~2 us
    #: (Amit, "Optimizing the TLB Shootdown Algorithm", USENIX ATC 2017, reports a few us).
    shootdown_ns: int = 2_000
    ipi_handler_ns: int = 500  #: interrupt entry/exit on the target, on top of its flush -- assumption
    #: exit_mmap's flush on the exiting CPU, which exit_mm left lazy on the mm: flush_tlb_func switches to
    #: init_mm instead of flushing (switch_mm_irqs_off; with PCID a CR3 write without a flush, traced as
    #: TLB_FLUSH_ON_TASK_SWITCH with 0 pages; 6.1 and 6.18 alike) -- assumption, ~500 cycles with the
    #: switch's bookkeeping (mm_cpumask, ASID choice, CR4/LDT checks)
    lazy_leave_ns: int = 200

    # --- mmu_gather (include/asm-generic/tlb.h, mm/memory.c)
    zap_page_ns: int = 40  #: clear one PTE and queue the page (zap_pte_range) -- assumption
    free_page_ns: int = 60  #: free one gathered page (free_pages_and_swap_cache) -- assumption
    free_pt_page_ns: int = 200  #: free one page-table page -- assumption
    percpu_batch_pages: int = 506  #: 2.6.39 FREE_PTE_NR on x86 (per-CPU mmu_gathers)
    zap_block_preempt_pages: int = 8  #: 2.6.39 ZAP_BLOCK_SIZE under CONFIG_PREEMPT
    zap_block_nopreempt_pages: int = 1024  #: 2.6.39 ZAP_BLOCK_SIZE without CONFIG_PREEMPT
    ptl_chunk_pages: int = 512  #: 3.0+: one PTE page (PTRS_PER_PTE) is zapped under its page-table lock
    local_batch_pages: int = 8  #: 3.0+: MMU_GATHER_BUNDLE on-stack local batch
    batch_pages: int = 510  #: 3.0+: pointers in one page-sized batch (MAX_GATHER_BATCH)
    max_gather_pages: int = 10_000  #: 3.0+: MAX_GATHER_BATCH_COUNT * MAX_GATHER_BATCH before a flush
    #: probability that the GFP_NOWAIT allocation of a further batch page fails (seeded).
    batch_alloc_fail_p: float = 0.0

    #: the tier-1 tracer's time inside an mmap_lock hold after the recorded release: mmap_lock_released fires
    #: before up_write/up_read, so its program's time after its timestamp still holds the lock. Replayed as
    #: CPU time (not preemptible) before each mmap_lock release, taken back from the work recorded after it
    #: (that work contains it). 0: an untraced kernel; --calibrate reads the recorder's measurement
    #: (manifest extra.mmap_lock_tail, docs/VALIDATION.md §e).
    mmap_lock_release_tail_ns: int = 0
    #: likewise mmap_write_downgrade: its acquire_returned fires before downgrade_write, so the program's time
    #: after its timestamp is write-held time the recording counts in the read hold.
    mmap_lock_downgrade_tail_ns: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in SAMPLE_COSTS:
                if not isinstance(v, tuple) or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in v):
                    raise UsageError(f"cost {f.name} must be a list of non-negative whole numbers of ns, not {v!r}")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UsageError(f"cost {f.name} must be a non-negative number, not {v!r}")
        if self.blocks_hold_wakeup not in (0, 1):
            raise UsageError(f"cost blocks_hold_wakeup must be 0 or 1, not {self.blocks_hold_wakeup}")
        if self.batch_alloc_fail_p > 1:
            raise UsageError(f"cost batch_alloc_fail_p must be a probability, not {self.batch_alloc_fail_p}")
        for name in ("zap_block_preempt_pages", "zap_block_nopreempt_pages", "ptl_chunk_pages",
                     "percpu_batch_pages", "local_batch_pages", "batch_pages", "max_gather_pages"):
            if getattr(self, name) < 1:
                raise UsageError(f"cost {name} must be at least 1")

    @classmethod
    def load(cls, path: str | Path) -> Costs:
        """Defaults overridden by a TOML (.toml) or JSON file of ``name = value`` pairs."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise UsageError(f"{p}: cannot read cost file: {e.strerror}") from None
        try:
            if p.suffix == ".toml":
                if sys.version_info < (3, 11):
                    raise UsageError(f"{p}: TOML cost files need Python 3.11+; use JSON")
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except ValueError as e:
            raise UsageError(f"{p}: not a valid {p.suffix.lstrip('.') or 'JSON'} cost file: {e}") from None
        return cls.from_mapping(data, where=str(p))

    @classmethod
    def from_mapping(cls, data: object, where: str = "costs") -> Costs:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a table of name = value")
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(data) - set(known))
        if bad:
            raise UsageError(f"{where}: unknown cost {bad[0]!r}; known: {', '.join(known)}")
        out = {}
        for k, v in data.items():
            if k in SAMPLE_COSTS:
                if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float))
                                                  or not float(x).is_integer() for x in v):
                    raise UsageError(f"{where}: cost {k} must be a list of whole numbers of ns, not {v!r}")
                out[k] = tuple(int(x) for x in v)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UsageError(f"{where}: cost {k} must be a number, not {v!r}")
            out[k] = int(v) if known[k].type == "int" and float(v).is_integer() else v
            if known[k].type == "int" and not float(v).is_integer():
                raise UsageError(f"{where}: cost {k} must be an integer number of ns, not {v!r}")
        try:
            return replace(cls(), **out)
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None

    @classmethod
    def zero(cls) -> Costs:
        """No overheads at all: locks, switches, wake-ups and flushes are free (queueing-theory tests)."""
        return replace(
            cls(),
            cas_ns=0, spin_lock_unlock_ns=0, line_transfer_ns=0, line_transfer_remote_ns=0, context_switch_ns=0,
            wakeup_ns=0,
            wake_jitter_ns=0, probe_irq_ns=0, invlpg_ns=0, full_flush_ns=0, shootdown_ns=0, ipi_handler_ns=0,
            lazy_leave_ns=0,
        )
