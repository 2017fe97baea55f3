"""The trace format's tables: every column's Arrow type, unit, meaning and source.

This module *is* the contract described in docs/TRACE_FORMAT.md; the document's
column tables are generated from it (``python -m replay.trace.docgen``) and a
test keeps the two identical.

Conventions shared by every table:

* ``ts`` is Int64 nanoseconds on one monotonic clock (``bpf_ktime_get_ns``,
  i.e. CLOCK_MONOTONIC); interval tables carry ``ts`` (start) and ``dur``.
* ``seq`` is a trace-wide Int64 sequence number that orders events whose
  timestamps tie; intervals carry the ``seq`` of their opening event.
* ``cpu``, ``pid`` (thread-group id) and ``tid`` are Int32.
* ``incomplete`` is true on an interval cut by the start or the end of the
  recording; its ``dur`` then runs to the cut and is a lower bound.
* Low-cardinality strings (lock class, mode, reasons, syscall names) are
  dictionary-encoded (Arrow dictionary<int16, utf8>; polars reads them as
  Categorical).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

#: Major version: a reader refuses any other. See docs/TRACE_FORMAT.md, "Versioning".
FORMAT_VERSION = 1
#: Minor version: additions only (new tables, new nullable columns at the end).
FORMAT_MINOR = 2  # 1: probes[].recorder, extra.lost_breakdown by reason; 2: extra.not_emitted_by_kernel
FORMAT_NAME = "mmreplay-trace"

ENUM = pa.dictionary(pa.int16(), pa.string())

#: Lock classes every wait and hold is assigned (docs/LOCK_CLASSES.md has the rules).
LOCK_CLASSES = (
    "mmap_lock",
    "i_mmap_rwsem",
    "anon_vma",
    "page_table_lock",
    "zone_lock",
    "runqueue_lock",
    "other",
)
LOCK_MODES = ("read", "write")
#: enum tlb_flush_reason (include/linux/mm_types.h), in kernel order: code = index.
TLB_REASONS = (
    "TLB_FLUSH_ON_TASK_SWITCH",
    "TLB_REMOTE_SHOOTDOWN",
    "TLB_LOCAL_SHOOTDOWN",
    "TLB_LOCAL_MM_SHOOTDOWN",
    "TLB_REMOTE_SEND_IPI",
    "TLB_REMOTE_WRONG_CPU",  # recent kernels (6.x): a flush IPI reached a CPU that had left the mm
)
SYSCALLS = ("mmap", "munmap", "mprotect", "brk", "madvise", "mremap", "exit_group")
WAKE_KINDS = ("waking", "wakeup", "wakeup_new")


@dataclass(frozen=True)
class Column:
    """One column of a table: its name, Arrow type, unit and meaning."""

    name: str
    type: pa.DataType
    unit: str
    meaning: str
    nullable: bool = False
    values: tuple[str, ...] = ()  # the fixed vocabulary of an enum column

    @property
    def is_enum(self) -> bool:
        return bool(self.values)


@dataclass(frozen=True)
class Table:
    """One table of a trace (or of replay results) and the probes that fill it."""

    name: str
    doc: str
    source: str
    columns: tuple[Column, ...]
    kind: str = "trace"  # "trace": written by record/synth; "results": by replay

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    @property
    def filename(self) -> str:
        return f"{self.name}.arrow"


def _ts(meaning: str = "event time") -> Column:
    return Column("ts", pa.int64(), "ns", meaning)


_SEQ = Column("seq", pa.int64(), "-", "trace-wide order of the (opening) event; breaks ties in ts")
_CPU = Column("cpu", pa.int32(), "-", "CPU the event was recorded on")
_PID = Column("pid", pa.int32(), "-", "thread-group id (user-space PID) of the task")
_TID = Column("tid", pa.int32(), "-", "thread id of the task")
_INCOMPLETE = Column(
    "incomplete", pa.bool_(), "-", "interval cut by the start or end of the recording; dur is a lower bound"
)
_STACK = Column(
    "stack_id", pa.int32(), "-", "kernel stack in `stacks` (-1: none captured)"
)
_CLASS = Column("lock_class", ENUM, "-", "lock class (docs/LOCK_CLASSES.md)", values=LOCK_CLASSES)


TABLES: tuple[Table, ...] = (
    Table(
        "tasks",
        "Every task the trace refers to, with the name it had when first seen.",
        "sched_switch/sched_wakeup comm fields, /proc at start and stop",
        (
            _TID,
            _PID,
            Column("comm", pa.string(), "-", "task name (TASK_COMM_LEN, 16 bytes)"),
        ),
    ),
    Table(
        "lock_waits",
        "Contended waits for sleeping and queued locks, paired in the kernel "
        "(several contention_begin may precede one contention_end for a mutex, and an rt_mutex's or "
        "semaphore's wait_lock contention may nest inside its wait; the pair spans the first begin to the "
        "end; a begin whose wait lost its end starts a new wait, docs/RECORDING.md). Waits, never holds.",
        "tier 1: lock:contention_begin + lock:contention_end",
        (
            _ts("first contention_begin"),
            Column("dur", pa.int64(), "ns", "time from first contention_begin to contention_end"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("lock_addr", pa.uint64(), "address", "kernel address of the lock"),
            Column("flags", pa.uint32(), "bitmask", "LCB_F_*: SPIN=1 READ=2 WRITE=4 RT=8 PERCPU=16 MUTEX=32"),
            Column("ret", pa.int32(), "errno", "contention_end ret (0 acquired, <0 e.g. -EINTR)"),
            Column("begins", pa.int32(), "count", "contention_begin events folded into this wait"),
            _CLASS,
            _STACK,
            _INCOMPLETE,
        ),
    ),
    Table(
        "lock_holds",
        "Lock acquisitions with their wait and hold: mmap_lock from its "
        "tracepoints (every acquisition, contended or not), rwsems and "
        "mutexes from tier-2 fentry/kprobes.",
        "tier 1: mmap_lock:{mmap_lock_start_locking,mmap_lock_acquire_returned,mmap_lock_released}; "
        "tier 2: down_{read,write}/up_{read,write}/mutex_{lock,unlock}",
        (
            _ts("acquisition returned (hold starts)"),
            Column("dur", pa.int64(), "ns", "hold time: acquired to released"),
            Column("wait", pa.int64(), "ns", "start of locking to acquired (0 for trylock)"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("lock_addr", pa.uint64(), "address", "lock address (for mmap_lock: the mm_struct)"),
            _CLASS,
            Column("mode", ENUM, "-", "read or write", values=LOCK_MODES),
            Column("success", pa.bool_(), "-", "acquisition succeeded (false: trylock or killable failed; dur 0)"),
            Column("depth", pa.int32(), "count", "locks this task already held when it took this one"),
            _STACK,
            _INCOMPLETE,
        ),
    ),
    Table(
        "tlb_flushes",
        "TLB flushes as the kernel reports them.",
        "tier 1: tlb:tlb_flush",
        (
            _ts(),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("reason", ENUM, "-", "enum tlb_flush_reason, in kernel order", values=TLB_REASONS),
            Column("pages", pa.int64(), "pages", "pages flushed; -1 for a full flush (TLB_FLUSH_ALL)"),
        ),
    ),
    Table(
        "page_free_batches",
        "Bursts of pages freed by one task on one CPU, aggregated in the kernel "
        "(never one row per page); a burst ends after a gap or a CPU/task change.",
        "tier 1: kmem:mm_page_free_batched (and kmem:mm_page_free)",
        (
            _ts("first free of the burst"),
            Column("dur", pa.int64(), "ns", "first to last free of the burst"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("pages", pa.int64(), "pages", "base pages freed in the burst (order-n counts 2^n)"),
            Column("batched", pa.bool_(), "-", "freed through the batched (mmu_gather) path"),
            _INCOMPLETE,
        ),
    ),
    Table(
        "gathers",
        "mmu_gather windows: tlb_gather_mmu to tlb_finish_mmu.",
        "tier 2: tlb_gather_mmu, tlb_flush_mmu, tlb_finish_mmu (fentry/kprobe)",
        (
            _ts("tlb_gather_mmu"),
            Column("dur", pa.int64(), "ns", "gather window length"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("mm", pa.uint64(), "address", "mm_struct of the gather"),
            Column("fullmm", pa.bool_(), "-", "whole-mm teardown (exit_mmap)"),
            Column("flushes", pa.int32(), "count", "tlb_flush_mmu calls inside the window"),
            Column("pages", pa.int64(), "pages", "pages freed inside the window"),
            _INCOMPLETE,
        ),
    ),
    Table(
        "take_all_locks",
        "mm_take_all_locks() calls: how long taking every i_mmap_rwsem and anon_vma lock of an mm took "
        "(an mmu notifier registering, e.g. KVM_CREATE_VM).",
        "tier 2: mm_take_all_locks (fentry/kprobe + return)",
        (
            _ts("mm_take_all_locks entry"),
            Column("dur", pa.int64(), "ns", "entry to return"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("mm", pa.uint64(), "address", "mm_struct"),
            Column("ret", pa.int32(), "errno", "0, or -EINTR when a signal interrupted it"),
            _INCOMPLETE,
        ),
    ),
    Table(
        "page_faults",
        "User-mode page faults.",
        "tier 1: exceptions:page_fault_user",
        (
            _ts(),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("address", pa.uint64(), "address", "faulting user address"),
            Column("ip", pa.uint64(), "address", "user instruction pointer"),
            Column("error_code", pa.uint32(), "bitmask", "x86 PF error code (1 present, 2 write, 4 user, ...)"),
        ),
    ),
    Table(
        "syscalls",
        "mm system calls with their duration.",
        "tier 1: syscalls:sys_{enter,exit}_{mmap,munmap,mprotect,brk,madvise,mremap,exit_group}",
        (
            _ts("sys_enter"),
            Column("dur", pa.int64(), "ns", "sys_enter to sys_exit"),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("name", ENUM, "-", "system call name", values=SYSCALLS),
            Column("arg0", pa.uint64(), "-", "first argument (address for munmap/mprotect/madvise)"),
            Column("arg1", pa.uint64(), "-", "second argument (length)"),
            Column("ret", pa.int64(), "-", "return value (exit_group: none, 0)"),
            _INCOMPLETE,
        ),
    ),
    Table(
        "sched_switch",
        "Context switches.",
        "tier 1: sched:sched_switch",
        (
            _ts(),
            _SEQ,
            _CPU,
            Column("prev_tid", pa.int32(), "-", "task switched out"),
            Column("prev_prio", pa.int32(), "-", "its kernel priority"),
            Column("prev_state", pa.int64(), "bitmask", "its state: 0 preempted, 1 interruptible, 2 uninterruptible"),
            Column("next_tid", pa.int32(), "-", "task switched in"),
            Column("next_prio", pa.int32(), "-", "its kernel priority"),
        ),
    ),
    Table(
        "sched_wakeup",
        "Wakeups (sched_waking is when the waker asks, sched_wakeup when the task is runnable).",
        "tier 1: sched:sched_waking, sched:sched_wakeup, sched:sched_wakeup_new",
        (
            _ts(),
            _SEQ,
            _CPU,
            Column("tid", pa.int32(), "-", "task woken"),
            Column("prio", pa.int32(), "-", "its kernel priority"),
            Column("target_cpu", pa.int32(), "-", "CPU it is woken onto"),
            Column("kind", ENUM, "-", "which tracepoint", values=WAKE_KINDS),
            Column("waker_tid", pa.int32(), "-", "task that issued the wakeup (current on the recording CPU)"),
        ),
    ),
    Table(
        "ipis",
        "Inter-processor interrupts sent (TLB shootdowns arrive as these).",
        "tier 1: ipi:ipi_send_cpu, ipi:ipi_send_cpumask",
        (
            _ts(),
            _SEQ,
            _CPU,
            _PID,
            _TID,
            Column("target_cpu", pa.int32(), "-", "destination CPU (-1: a mask, see ncpus)"),
            Column("ncpus", pa.int32(), "count", "CPUs the IPI was sent to"),
            Column("callsite", pa.uint64(), "address", "kernel call site"),
            Column("callback", pa.uint64(), "address", "function run on the target"),
        ),
    ),
    Table(
        "stacks",
        "Kernel stacks referred to by stack_id, innermost frame first.",
        "BPF stack map of the recording probes",
        (
            Column("stack_id", pa.int32(), "-", "id referred to by other tables"),
            Column("ips", pa.list_(pa.uint64()), "address", "return addresses, innermost first"),
        ),
    ),
    Table(
        "symbols",
        "The part of /proc/kallsyms the trace needs, so it symbolizes on another "
        "machine; file/line are filled when --vmlinux or modules with DWARF were given.",
        "/proc/kallsyms at stop (+ pyelftools on --vmlinux)",
        (
            Column("addr", pa.uint64(), "address", "symbol start address"),
            Column("name", pa.string(), "-", "symbol name"),
            Column("module", pa.string(), "-", "module, empty for vmlinux"),
            Column("file", pa.string(), "-", "source file of the symbol (DWARF), null if unknown", nullable=True),
            Column("line", pa.int32(), "-", "source line of the symbol (DWARF), null if unknown", nullable=True),
        ),
    ),
)

TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def register(table: Table) -> Table:
    """Add a table definition (used by replay/ for its results tables)."""
    existing = TABLES_BY_NAME.get(table.name)
    if existing is not None and existing != table:
        raise ValueError(f"table {table.name!r} already defined differently")
    TABLES_BY_NAME[table.name] = table
    return table


def types_match(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a stored column type satisfies the contract's type.

    Dictionary columns may use any integer index width; string and list
    offsets may be 32- or 64-bit (polars writes the large variants).
    """
    if pa.types.is_dictionary(expected):
        return (
            pa.types.is_dictionary(actual)
            and pa.types.is_integer(actual.index_type)
            and types_match(actual.value_type, expected.value_type)
        )
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_string_view(actual)
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and types_match(
            actual.value_type, expected.value_type
        )
    return actual.equals(expected)


def describe(t: pa.DataType) -> str:
    """A short human name for an Arrow type, as used in the docs."""
    if pa.types.is_dictionary(t):
        return "enum"
    if pa.types.is_list(t):
        return f"list<{describe(t.value_type)}>"
    return {
        "int64": "Int64",
        "int32": "Int32",
        "uint64": "UInt64",
        "uint32": "UInt32",
        "bool": "Boolean",
        "string": "Utf8",
        "double": "Float64",
    }.get(str(t), str(t))


# --- Replay results: simulated events (replay/sim/, owned by the simulator) ------------------
# Each row carries the policy set and seed of the run first, then the recorded tables' column
# names (ts, dur, cpu, tid, lock_addr, lock_class, mode) so one query works on both.

SIM_PREEMPT_CAUSES = ("spinlock", "spin-wait", "gather", "ptl", "recorded-spin")
SIM_PROBE_CAUSES = ("idle", "preemptible", "spinlock", "spin-wait", "gather", "ptl", "recorded-spin", "kernel",
                    "switch")
SIM_SWITCH_REASONS = ("dispatch", "preempt", "block", "sleep-lock", "exit", "probe-end")

_POLICY = Column("policy_set", pa.string(), "-", "policy set of the run (replay/policies)")
_SEED = Column("seed", pa.int32(), "-", "seed of the run")
_SIM_CPU = Column("cpu", pa.int32(), "-", "simulated CPU")
_SIM_TID = Column("tid", pa.int32(), "-", "thread id (as in the workload)")
_SIM_MODE = Column("mode", ENUM, "-", "read or write", values=LOCK_MODES)

SIM_TABLES: tuple[Table, ...] = (
    Table(
        "sim_lock_waits",
        "Simulated contended lock acquisitions: attempt to running with the lock.",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("acquire attempt"),
            Column("dur", pa.int64(), "ns", "wait: attempt until the task runs holding the lock"),
            _SIM_CPU, _SIM_TID,
            Column("lock_addr", pa.uint64(), "address", "lock address"),
            _CLASS, _SIM_MODE,
            Column("spun_ns", pa.int64(), "ns", "part of the wait spent spinning on a CPU"),
            Column("slept", pa.bool_(), "-", "the waiter slept (left its CPU)"),
        ),
        kind="results",
    ),
    Table(
        "sim_lock_holds",
        "Simulated lock holds, every acquisition (contended or not).",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("lock acquired (task runs holding it)"),
            Column("dur", pa.int64(), "ns", "hold time: acquired to released"),
            Column("wait", pa.int64(), "ns", "attempt to acquired (0 uncontended)"),
            _SIM_CPU, _SIM_TID,
            Column("lock_addr", pa.uint64(), "address", "lock address"),
            _CLASS, _SIM_MODE,
            Column("depth", pa.int32(), "count", "locks the task already held"),
            Column("derived", pa.bool_(), "-", "hold time came from the missing-holds model"),
        ),
        kind="results",
    ),
    Table(
        "sim_ops",
        "Simulated end-to-end latency of labelled operations (Span: fault, munmap, exit, ...).",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("operation start"),
            Column("dur", pa.int64(), "ns", "latency: start to end"),
            _SIM_CPU, _SIM_TID,
            Column("kind", pa.string(), "-", "operation kind (ops.Span.kind)"),
        ),
        kind="results",
    ),
    Table(
        "sim_preempt_off",
        "Simulated sections with preemption disabled (per task, closed at any switch).",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("preemption disabled"),
            Column("dur", pa.int64(), "ns", "section length"),
            _SIM_CPU, _SIM_TID,
            Column("cause", ENUM, "-", "what disabled preemption first", values=SIM_PREEMPT_CAUSES),
            Column("lock_class", ENUM, "-", "lock class for lock causes", values=LOCK_CLASSES, nullable=True),
            Column("cut", pa.bool_(), "-", "closed because the task left its CPU with preemption still "
                   "disabled (it slept in atomic context); the section resumes when it runs again"),
        ),
        kind="results",
    ),
    Table(
        "sim_probe",
        "Wake-ups of the injected cyclictest-like probe and their scheduling latency.",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("probe timer expiry (wake-up)"),
            Column("latency", pa.int64(), "ns", "wake-up to running"),
            _SIM_CPU,
            Column("tid", pa.int32(), "-", "task on the CPU at the wake-up (-1 idle)"),
            Column("cause", ENUM, "-", "why the probe waited", values=SIM_PROBE_CAUSES),
        ),
        kind="results",
    ),
    Table(
        "sim_sched",
        "Simulated context switches (tid -1: idle, -2: the probe).",
        "replay simulator",
        (
            _POLICY, _SEED,
            _ts("switch begins (the next task's context-switch cost follows)"),
            _SIM_CPU,
            Column("prev_tid", pa.int32(), "-", "task leaving the CPU"),
            Column("next_tid", pa.int32(), "-", "task getting the CPU"),
            Column("reason", ENUM, "-", "why prev left", values=SIM_SWITCH_REASONS),
            Column("wait", pa.int64(), "ns", "time next was runnable before getting the CPU"),
        ),
        kind="results",
    ),
)
for _t in SIM_TABLES:
    register(_t)


# --- Replay results: figures over seeds (replay/compare.py, written by `mmreplay replay -o`) ------

_METRIC = Column("metric", pa.string(), "-", "metric name (e.g. wait_p99_ns, makespan_ns; docs/SIMULATOR.md)")
_METRIC_CLASS = Column("lock_class", ENUM, "-", "lock class the metric is about (null: not per class)",
                       values=LOCK_CLASSES, nullable=True)
_METRIC_KIND = Column("kind", pa.string(), "-",
                      "operation kind (fault, munmap, ...) or preempt-off cause the metric is about (null: neither)",
                      nullable=True)
_DERIVED = Column("derived", pa.bool_(), "-", "the figure rests on hold times from the missing-holds model")

RESULT_TABLES: tuple[Table, ...] = (
    Table(
        "sim_summary",
        "Every metric of every replay: one row per (policy set, seed, metric).",
        "mmreplay replay (replay/compare.py)",
        (
            Column("policy_set", pa.string(), "-", "policy set of the run (replay/policies)"),
            Column("seed", pa.int32(), "-", "seed of the run"),
            _METRIC, _METRIC_CLASS, _METRIC_KIND,
            Column("value", pa.float64(), "metric unit", "the value (unit in the metric name: _ns, count)"),
            _DERIVED,
        ),
        kind="results",
    ),
    Table(
        "sim_comparison",
        "Differences between policy sets (other minus base), paired by seed, with a 95% t-interval.",
        "mmreplay replay (replay/compare.py)",
        (
            _METRIC, _METRIC_CLASS, _METRIC_KIND,
            Column("base", pa.string(), "-", "policy set compared against (the first one given)"),
            Column("other", pa.string(), "-", "policy set compared"),
            Column("base_mean", pa.float64(), "metric unit", "mean of base over the paired seeds"),
            Column("other_mean", pa.float64(), "metric unit", "mean of other over the paired seeds"),
            Column("diff_mean", pa.float64(), "metric unit", "mean per-seed difference other - base"),
            Column("ci_low", pa.float64(), "metric unit", "95% t-interval low (null: one seed)", nullable=True),
            Column("ci_high", pa.float64(), "metric unit", "95% t-interval high (null: one seed)", nullable=True),
            Column("seeds", pa.int32(), "count", "seeds paired"),
            _DERIVED,
        ),
        kind="results",
    ),
)
for _t in RESULT_TABLES:
    register(_t)
