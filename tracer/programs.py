"""The tier-1 probe families and how their BPF programs are assembled for bcc.

One family = one C file in bpf/ = one event kind = one table. A recording
loads the chosen families as ONE bcc program (they share the per-CPU batch,
the ring buffer, the counters and the filter), preceded by bpf/mmr_common.h
and followed by the task bookkeeping (tasks.c) and the periodic flush (flush.c).

Each family attaches raw tracepoints where the running kernel's BTF shows the
tracepoint arguments the C file expects (cheaper: no event record is built,
recursion is guarded per program), else classic tracepoints; :func:`plan`
decides and says why, `mmreplay doctor` reports it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer import BPF_DIR, events
from tracer.kernel_env import tracepoint_exists


@dataclass(frozen=True)
class Family:
    """A probe family: the tracepoints it attaches, the C file, the event kind and table it fills."""

    name: str
    source: str
    kind: int
    table: str
    tracepoints: tuple[str, ...]  # "category:event"
    doc: str
    tier: int = 1
    #: event -> the TP_PROTO argument shapes the raw programs read (kernel_env.KernelTypes.shape), a prefix
    #: of the kernel's; empty: classic tracepoints only.
    raw: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def macro(self) -> str:
        return f"MMR_RAW_{self.name.upper()}"

    def missing_tracepoints(self) -> list[str]:
        return [tp for tp in self.tracepoints if not tracepoint_exists(*tp.split(":", 1))]


_SYSCALLS = ("mmap", "munmap", "mprotect", "brk", "madvise", "mremap")

#: In load order (page_free before tlb_flush: a flush ends the CPU's page-free burst).
FAMILIES: tuple[Family, ...] = (
    Family("mmap_lock", "mmap_lock.c", events.EV_LOCK_HOLD, "lock_holds",
           ("mmap_lock:mmap_lock_start_locking", "mmap_lock:mmap_lock_acquire_returned",
            "mmap_lock:mmap_lock_released"),
           "mmap_lock wait and hold per mm, every acquisition",
           raw=(("mmap_lock_start_locking", ("ptr:mm_struct", "int")),
                ("mmap_lock_acquire_returned", ("ptr:mm_struct", "int", "int")),
                ("mmap_lock_released", ("ptr:mm_struct", "int")))),
    Family("lock_contention", "lock_contention.c", events.EV_LOCK_WAIT, "lock_waits",
           ("lock:contention_begin", "lock:contention_end"),
           "contended waits of sleeping and queued locks, with the kernel stack",
           raw=(("contention_begin", ("ptr:void", "int")), ("contention_end", ("ptr:void", "int")))),
    Family("page_free", "page_free.c", events.EV_PAGE_FREE, "page_free_batches",
           ("kmem:mm_page_free_batched", "kmem:mm_page_free"),
           "page-free bursts per CPU and task, aggregated in the kernel",
           raw=(("mm_page_free_batched", ("ptr:page",)), ("mm_page_free", ("ptr:page", "int")))),
    Family("tlb_flush", "tlb_flush.c", events.EV_TLB_FLUSH, "tlb_flushes", ("tlb:tlb_flush",),
           "TLB flushes with reason and pages", raw=(("tlb_flush", ("int", "int")),)),
    Family("page_fault", "page_fault.c", events.EV_PAGE_FAULT, "page_faults", ("exceptions:page_fault_user",),
           "user page faults", raw=(("page_fault_user", ("int", "ptr:pt_regs", "int")),)),
    Family("syscalls", "syscalls.c", events.EV_SYSCALL, "syscalls",
           tuple(f"syscalls:sys_{d}_{s}" for s in _SYSCALLS for d in ("enter", "exit"))
           + ("syscalls:sys_enter_exit_group", "sched:sched_process_exit"),
           "mm system calls with duration",
           raw=(("sys_enter", ("ptr:pt_regs", "int")), ("sys_exit", ("ptr:pt_regs", "int")))),
    Family("sched_switch", "sched_switch.c", events.EV_SCHED_SWITCH, "sched_switch", ("sched:sched_switch",),
           "context switches", raw=(("sched_switch", ("int", "ptr:task_struct", "ptr:task_struct", "int")),)),
    Family("sched_wakeup", "sched_wakeup.c", events.EV_SCHED_WAKEUP, "sched_wakeup",
           ("sched:sched_waking", "sched:sched_wakeup", "sched:sched_wakeup_new"),
           "wakeups",
           raw=tuple((e, ("ptr:task_struct",)) for e in ("sched_waking", "sched_wakeup", "sched_wakeup_new"))),
    Family("ipi", "ipi.c", events.EV_IPI, "ipis", ("ipi:ipi_send_cpu", "ipi:ipi_send_cpumask"),
           "IPIs sent (TLB shootdowns among them)",
           raw=(("ipi_send_cpu", ("int", "int", "ptr:void")),
                ("ipi_send_cpumask", ("ptr:cpumask", "int", "ptr:void")))),
)
#: The task bookkeeping (tasks.c), loaded with every recording; its raw variant follows forks through task_struct.
TASKS = Family("tasks", "tasks.c", 0, "tasks", ("sched:sched_process_fork", "sched:sched_process_exit"),
               "task bookkeeping", raw=(("sched_process_fork", ("ptr:task_struct", "ptr:task_struct")),
                                        ("sched_process_exit", ("ptr:task_struct",))))
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}
FAMILIES_BY_KIND = {f.kind: f for f in FAMILIES}
#: Always loaded alongside the chosen families.
SUPPORT_TRACEPOINTS = ("sched:sched_process_fork", "sched:sched_process_exit")


def select(names: Iterable[str] | None) -> list[Family]:
    """Families by name (None or "all": every tier-1 family), in load order."""
    from replay.errors import UsageError

    wanted = None if names is None else {n.strip() for n in names if n.strip()}
    if wanted is None or wanted == {"all"}:
        return list(FAMILIES)
    unknown = wanted - set(FAMILIES_BY_NAME)
    if unknown:
        raise UsageError(
            f"--probes: unknown probe {', '.join(sorted(unknown))} (known: {', '.join(FAMILIES_BY_NAME)})"
        )
    return [f for f in FAMILIES if f.name in wanted]


@dataclass(frozen=True)
class Filter:
    """Which tasks to record, applied in the kernel. Empty: every task but the recorder."""

    tids: frozenset[int] = frozenset()  # followed through fork/clone
    comm: str | None = None

    @property
    def by_tid(self) -> bool:
        return bool(self.tids)


#: task_struct members the raw programs read: macro -> candidate (struct, member) paths, first found wins.
_OFFSETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "MMR_OFF_TASK_PID": (("task_struct", "pid"),),
    "MMR_OFF_TASK_TGID": (("task_struct", "tgid"),),
    "MMR_OFF_TASK_PRIO": (("task_struct", "prio"),),
    "MMR_OFF_TASK_COMM": (("task_struct", "comm"),),
    "MMR_OFF_TASK_EXIT_STATE": (("task_struct", "exit_state"),),
    "MMR_OFF_TASK_CPU": (("task_struct", "cpu"), ("task_struct", "thread_info", "thread_info", "cpu")),
    "MMR_OFF_REGS_IP": (("pt_regs", "ip"), ("pt_regs", "pc"), ("pt_regs", "nip"), ("pt_regs", "psw")),
}
#: ... and members a program reads only when the BTF has them (else it does without, bpf/lock_contention.c).
_OPTIONAL_OFFSETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "MMR_OFF_TASK_NVCSW": (("task_struct", "nvcsw"),),  # context switches: a spinning waiter makes none
    "MMR_OFF_TASK_NIVCSW": (("task_struct", "nivcsw"),),
}


#: Per machine (uname -m): the system call numbers of the recorded calls, where pt_regs keeps the first
#: two arguments and the call number (struct, member[, extra bytes]), and the thread_info word and bit that
#: mark a compat task. Other machines record system calls on the classic tracepoints.
SYSCALL_ABI: dict[str, dict[str, Any]] = {
    "x86_64": {"nr": {"MMAP": 9, "MUNMAP": 11, "MPROTECT": 10, "BRK": 12, "MADVISE": 28, "MREMAP": 25,
                      "EXIT_GROUP": 231},
               "regs": {"ARG0": ("pt_regs", "di", 0), "ARG1": ("pt_regs", "si", 0), "NR": ("pt_regs", "orig_ax", 0)},
               "compat": (("task_struct", "thread_info"), ("thread_info", "status"), 0x0002)},  # TS_COMPAT
    "aarch64": {"nr": {"MMAP": 222, "MUNMAP": 215, "MPROTECT": 226, "BRK": 214, "MADVISE": 233, "MREMAP": 216,
                       "EXIT_GROUP": 94},
                "regs": {"ARG0": ("pt_regs", "regs", 0), "ARG1": ("pt_regs", "regs", 8),
                         "NR": ("pt_regs", "syscallno", 0)},
                "compat": (("task_struct", "thread_info"), ("thread_info", "flags"), 1 << 22)},  # TIF_32BIT
}


def _syscall_abi(kt: Any, machine: str) -> tuple[list[tuple[str, int]], str]:
    """(-D macros, "") for raw system-call probes on this machine, or ([], why not)."""
    abi = SYSCALL_ABI.get(machine)
    if abi is None:
        return [], f"no system-call table for {machine} here: classic tracepoints"
    try:
        out = [(f"MMR_NR_{k}", v) for k, v in abi["nr"].items()]
        out += [(f"MMR_OFF_REGS_{k}", kt.member_offset(st, m) + extra) for k, (st, m, extra) in abi["regs"].items()]
        (s1, m1), (s2, m2), mask = abi["compat"]
        out += [("MMR_COMPAT_OFF", kt.member_offset(s1, m1) + kt.member_offset(s2, m2)), ("MMR_COMPAT_MASK", mask)]
    except KeyError as e:
        return [], f"the kernel's BTF lacks {e.args[0]}"
    return out, ""


@dataclass(frozen=True)
class Plan:
    """How each family attaches: raw tracepoints (names in ``raw``) or classic ones, and why."""

    raw: frozenset[str] = frozenset()
    offsets: tuple[tuple[str, int], ...] = ()
    why_classic: tuple[tuple[str, str], ...] = ()  # (family, reason)

    def mode(self, name: str) -> str:
        return "raw" if name in self.raw else "classic"

    def reason(self, name: str) -> str:
        return dict(self.why_classic).get(name, "")


CLASSIC = Plan()


def plan(families: Sequence[Family], attach: str = "auto", bcc: Any = None) -> Plan:
    """Raw tracepoints for every family whose arguments the running kernel's BTF confirms (attach="auto"
    or "raw"); classic tracepoints for the others and for all with attach="classic"."""
    fams = [*families, TASKS]
    if attach == "classic":
        return Plan(why_classic=tuple((f.name, "classic tracepoints requested (--attach classic)") for f in fams))
    if bcc is not None and not bcc.BPF.support_raw_tracepoint():
        return Plan(why_classic=tuple((f.name, "the kernel has no raw tracepoints") for f in fams))
    from tracer.kernel_env import EnvironmentProblem, KernelTypes

    try:
        kt = KernelTypes()
    except EnvironmentProblem as e:
        return Plan(why_classic=tuple((f.name, f"{e.what}: {e.reason}") for f in fams))
    try:
        offsets = []
        missing = []
        for macro, paths in (*_OFFSETS.items(), *_OPTIONAL_OFFSETS.items()):
            for path in paths:
                try:
                    off = 0
                    for struct, member in zip(path[0::2], path[1::2], strict=True):
                        off += kt.member_offset(struct, member)
                    offsets.append((macro, off))
                    break
                except KeyError:
                    continue
            else:
                if macro in _OFFSETS:
                    missing.append(macro)
        raw, why = set(), []
        sys_macros, sys_why = _syscall_abi(kt, os.uname().machine)
        for f in fams:
            if not f.raw:
                why.append((f.name, "classic tracepoints only"))
                continue
            bad = sys_why if f.name == "syscalls" else ""
            for event, want in ([] if bad else f.raw):
                try:
                    got = kt.tracepoint_args(event)
                except KeyError:
                    bad = f"no BTF prototype for {event}"
                    break
                if tuple(got[:len(want)]) != want:
                    bad = f"{event} takes ({', '.join(got)}), the program reads ({', '.join(want)})"
                    break
            if not bad and missing and f.name in ("sched_switch", "sched_wakeup", "tasks", "page_fault"):
                bad = f"the kernel's BTF lacks {', '.join(missing)}"
            if bad:
                why.append((f.name, bad))
            else:
                raw.add(f.name)
                if f.name == "syscalls":
                    offsets += sys_macros
        return Plan(frozenset(raw), tuple(offsets), tuple(why))
    finally:
        kt.close()


def source(families: Sequence[Family], flush: bool = True) -> str:
    """The C text of one program holding these families."""
    # mmr_common.h is pasted, not #included: bcc rewrites map calls (map.lookup(...)) only in the main file.
    parts = [(BPF_DIR / "mmr_common.h").read_text()]
    for f in families:
        parts.append(f"/* ---- {f.source} ---- */\n")
        parts.append((BPF_DIR / f.source).read_text())
    parts.append((BPF_DIR / "tasks.c").read_text())
    if flush:
        parts.append((BPF_DIR / "flush.c").read_text())
    return "\n".join(parts)


def pid_max() -> int:
    """The kernel's pid_max: tids are below it (the size of the filter array)."""
    try:
        return max(1024, int(Path("/proc/sys/kernel/pid_max").read_text()))
    except (OSError, ValueError):
        return 4194304  # PID_MAX_LIMIT on 64-bit


def cflags(flt: Filter, *, rb_pages: int = 2048, pf_gap_ns: int = 10_000, self_tgid: int | None = None,
           attach: Plan = CLASSIC, stacks: bool = True, pf_recover: bool = True) -> list[str]:
    flags = [
        f"-I{BPF_DIR}",
        f"-DMMR_SELF_TGID={os.getpid() if self_tgid is None else self_tgid}",
        f"-DMMR_RB_PAGES={rb_pages}",
        f"-DMMR_PF_GAP_NS={pf_gap_ns}",
        f"-DMMR_STACKS={int(stacks)}",
        f"-DMMR_PF_RECOVER={int(pf_recover)}",
        "-Wno-macro-redefined",
    ]
    flags += [f"-D{f.macro}=1" for f in (*FAMILIES, TASKS) if f.name in attach.raw]
    flags += [f"-D{macro}={off}" for macro, off in attach.offsets]
    if flt.by_tid:
        flags += ["-DMMR_FILTER_TIDS=1", f"-DMMR_PID_MAX={pid_max()}"]
    if flt.comm is not None:
        comm = flt.comm.encode()[:15]
        if not comm.isascii() or b'"' in comm or b"\\" in comm:
            from replay.errors import UsageError

            raise UsageError(f"--comm {flt.comm!r}: only plain ASCII names without quotes or backslashes")
        flags += ["-DMMR_FILTER_COMM=1", f'-DMMR_COMM="{comm.decode()}"']
    return flags


def load(bcc: Any, families: Sequence[Family], flt: Filter, *, flush: bool = True, extra_text: str = "",
         extra_cflags: Sequence[str] = (), **kw: Any) -> Any:
    """Compile, load and attach (bcc attaches TRACEPOINT_PROBEs as it loads them).

    extra_text/extra_cflags: more families appended to the same program (tier 2, tracer.tier2.c_text).
    """
    text = source(families, flush=flush) + ("\n" + extra_text if extra_text else "")
    return bcc.BPF(text=text.encode(), cflags=cflags(flt, **kw) + list(extra_cflags))


#: Lines of a verifier log that are not its verdict: instructions, source lines, state dumps.
_LOG_DETAIL = re.compile(r"^(\d+: |\d+:$|; |from \d+ to \d+|last_idx |regs=|parent |mark_precise|func#|Live regs|"
                         r"verification time|stack depth|\s*$)")


def load_error(exc: BaseException, log: Sequence[str]) -> str:
    """One line for a program that did not compile or load: bcc's message, and why (the compiler's first
    error, or the verifier's verdict: the last line of its log before "processed N insns").

    bcc's own message names only the program and the errno ("Permission denied"); the reason is in the
    log it writes to stderr (capture it with kernel_env.captured_stderr)."""
    text = str(exc).strip()
    head = text.splitlines()[0] if text else type(exc).__name__
    why = ""
    for i, line in enumerate(log):
        if line.startswith("processed ") and " insns" in line:
            why = next((p.strip() for p in reversed(log[:i]) if not _LOG_DETAIL.match(p)), "")
            break
    if not why:
        why = next((ln.strip() for ln in log if "error:" in ln), "")
    return f"{head} ({why})" if why and why not in head else head
