"""The live recorder: load the BPF probe families, drain batches in bulk, write a trace.

Data path (no Python call per event): BPF programs fill a per-CPU batch of
256 slots and submit it as one ring-buffer record without waking anyone; a
reader thread empties the ring buffer every 20 ms and appends the records to
an unnamed spill file itself (it waits for no other thread: the ring buffer
holds ~0.1-0.2 s of a fast workload); every 0.2 s the main thread notes that
period's watermark, and decodes spilled periods, oldest first, only while the
host's CPUs had time to spare in the last period (decoding on a busy host took
CPU from the workload); at stop it decodes the rest. Decoding is numpy
(tracer/events.py), a step at a time: split by kind, the rows older than each
period's watermark written as one chunk per table, sorted by (ts, seq) — the
same chunks whenever it runs (and without a spill file, as records come). Interval rows (holds, waits, syscalls,
bursts) are emitted when they end, so they are sorted within each chunk only.
Memory stays bounded whatever the rate or the backlog (docs/RECORDING.md).

Stop (duration, command exit, SIGINT/SIGTERM) sets a flag that stops every
probe at once, detaches them, then drains the ring buffer, the partly filled
per-CPU batches, the open page-free bursts and the still-open intervals (as
incomplete rows), the tier-2 tables if any, the kernel stacks, the symbols and
the tasks, and finalizes the trace. docs/RECORDING.md has the whole story.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from replay.errors import UsageError
from replay.trace.manifest import Probe
from replay.trace.writer import TraceWriter, check_target
from tracer import decode, events, kernel_env, programs
from tracer.switch_gaps import SwitchGaps

FLUSH_PERIOD_NS = 100_000_000  # per-CPU partial-batch flush (cpu-clock perf event)
WATERMARK_LAG_NS = 300_000_000  # rows older than now - lag are written out (flush period + slack)
WRITE_EVERY_S = 0.2  # small steps keep the decoding buffers small
# Ring-buffer consume period (the probes submit without wakeups, see mmr_submit). Each wake-up of the reader
# takes a CPU from the workload (on 2 CPUs and 2 busy threads, often from an mmap_lock holder); 20 ms is 50
# wake-ups a second and uses 1/6 of the 8 MiB ring at the fastest rate measured (1M events/s, page faults).
POLL_S = 0.02
# glibc keeps the heap pages the decoding freed (a page of it still holds a live object: no trim at its top);
# malloc_trim gives the free pages in the middle back too. ~7 ms a call here: once a second.
TRIM_EVERY_S = 1.0
#: spilled records are decoded while recording only when the last write period left this many CPUs idle
IDLE_CPUS_TO_DECODE = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK_ROWS = 1 << 18  # force a write when this many rows (16 MiB of slots) are buffered in one table
# Ring-buffer data decoded and written per step: a backlog (the recorder was starved of CPU, then catches up)
# is decoded in steps of this size, so the decoding buffers (~5 copies of a step) stay bounded whatever it is.
# 1 MiB (16k events): the copies of a 4-MiB step (~21 MiB, tracemalloc) were the largest part of the RSS the
# recording adds; smaller steps cost nothing measurable in drain rate (docs/RECORDING.md, "Memory").
DRAIN_STEP_BYTES = 1 << 20
# Copied out but neither spilled nor decoded: the reader stops copying at this much (four decoding steps). With a
# spill file it spills it and goes on, so this bounds its copies only; without one (--decode live, or after the
# file failed) it waits for the main thread's decoding, and the ring buffer holds the rest: its pages are resident
# anyway, a copy of them would count twice. Not one step: while the reader is held back the watermark cannot
# pass what it has not copied, and rows wait (up to CHUNK_ROWS).
MAX_BACKLOG_BYTES = 4 * DRAIN_STEP_BYTES
CTL_RECORDING, CTL_STOPPED = 1, 2  # mmr_ctl[0] (bpf/mmr_common.h); 0: not started yet
#: (family, tracepoint, last program, its recovery counter, first program or None, its counters map): the
#: programs that record the hits the kernel skipped because the family's program was running on the CPU (an
#: interrupt's page free or TLB flush in its middle, its dispatch included). page_free: two programs, the
#: family's claims a per-CPU slot for each hit, the last records a hit whose slot it does not find
#: (bpf/mmr_bk_slots.h, bpf/page_free.c); tlb_flush: three, a first program, attached before the family's,
#: pushes each hit, the family's marks it, the last records an unmarked one (bpf/mmr_pf_stack.h).
BACKUPS = (("page_free", b"mm_page_free", b"mmr_pf_backup", "mmr_pf_recovered", None, "mmr_pf_bk"),
           ("tlb_flush", b"tlb_flush", b"mmr_tlb_backup", "mmr_tlb_recovered", b"mmr_tlb_pre", "mmr_tlb_bk"))
#: the counters map of each. page_free: the last program's records of recorded tasks, hits the family's
#: program left to it (no free slot: counted with the kernel's skips, since the last program records them),
#: slots of earlier hits the last program released (their own last program skipped). tlb_flush: the last
#: program's recoveries of recorded tasks, hits the family's program found not pushed (the first program
#: skipped for them, or not running first), stacks emptied when full.
BACKUP_COUNTERS = {"page_free": ("recovered_recorded_tasks", "deferred", "stale_released"),
                   "tlb_flush": ("recovered_recorded_tasks", "not_pushed", "stack_resets")}
#: Frames of a BPF program and its raw-tracepoint dispatch, at the top of its stacks.
PROBE_FRAMES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__bpf_prog_run")
#: Why a recorded task's event is missing from the trace (Probe.lost, the headline of `info`) ...
LOST_REASONS = ("ring_buffer_refused", "bpf_recursion_skipped")
#: ... the recorded tasks' events the kernel itself never emitted: no tracer could have seen them, so they are
#: not lost by the recorder; reported apart (extra.not_emitted_by_kernel), never in the headline
NOT_EMITTED = "switch_unreported"
#: ... and which events the recorder itself caused and dropped on purpose (Probe.recorder, never lost).
RECORDER_REASONS = ("recorder_in_kernel", "recorder_bpf_recursion", "recorder_wakeups")


@dataclass
class RecordOptions:
    """What `mmreplay record` was asked to do."""

    output: Path
    duration: float | None = None
    probes: Sequence[str] | None = None
    pids: Sequence[int] = ()
    tids: Sequence[int] = ()
    comm: str | None = None
    command: Sequence[str] = ()
    force: bool = False
    compression: str | None = None  # lz4 | zstd; None keeps the tables memory-mappable
    progress: bool = False
    system_wide: bool = False  # with a command: record every task, not just the command's
    pf_gap_ns: int = 10_000
    # 8 MiB: ~130k events (509 batches of 256), 0.11-0.19 s of mmap1_threads' 0.7-1.2M events/s here (2 tasks,
    # ~5 events an iteration), 0.13 s of a page-fault loop's 1M/s: a reader off its CPU that long loses events
    # (the reader empties it every 20 ms and waits for no other thread; the longest stretch measured between two
    # of its polls was 108 ms in ~4,600, the next 52 ms: docs/RECORDING.md, "Ring-buffer refusals"). The kernel
    # maps the data area twice into the reader: 16 MiB of RSS (16 MiB ring: 32). What it refuses is counted
    # (ring_buffer_refused).
    rb_pages: int = 2048  # record --buffer-size: a power of two (BPF_MAP_TYPE_RINGBUF)
    vmlinux: Path | None = None
    check_tier2: bool = True  # detect tier 2 (cached per boot) and record the families that work
    probe_cost: bool = False  # time every probe (kernel BPF statistics, system-wide while recording)
    attach: str = "auto"  # auto | raw | classic: how tier-1 families attach (tracer.programs.plan)
    stacks: bool = True  # kernel stack of every lock wait (lock classes need it)
    # when records are decoded: "idle" spills them to a file and decodes while the host has CPU to spare, the
    # rest at stop (cheapest; SIGKILL loses what was not decoded); "live" as they come (SIGKILL keeps it all)
    decode: str = "idle"
    # page_free's skipped hits recovered by a first and a last program beside its own (bpf/page_free.c); off
    # (record --no-page-free-recovery): its program alone on kmem:mm_page_free, cheaper per page freed, and
    # the hits the kernel skipped for it counted as lost instead
    pf_recover: bool = True


@dataclass
class RecordResult:
    """What a recording produced, for the CLI's summary and for tests."""

    path: Path
    duration_s: float
    events: int
    lost: int
    rows: dict[str, int]
    probes: list[Probe]
    command_status: int | None = None
    stop_reason: str = ""  # duration | command exited (N) | SIGINT | SIGTERM
    drain_events_per_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    ring_buffer_refused: int = 0  # of `lost`: events the full ring buffer refused (the reader fell behind)


def _own_tids() -> list[int]:
    """The recorder's own threads (it is never recorded, so neither is a wake-up of it)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [threading.get_native_id()]


def _threads_of(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        raise UsageError(f"--pid {pid}: no such process") from None


def _proc_task(tid: int) -> tuple[int, str] | None:
    """(tgid, comm) of a live task from /proc."""
    try:
        with open(f"/proc/{tid}/status") as f:
            status = f.read()
    except OSError:
        return None
    name, tgid = "", -1
    for line in status.splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Tgid:"):
            tgid = int(line.split(":", 1)[1])
            break
    return tgid, name


def _lock_classifier(kallsyms: Any, stack_of: Callable[[int], list[int]]) -> decode.Classifier:
    """lock_class per lock_waits row via replay.lockclass (R2), cached per (stack_id, flags)."""
    try:
        from replay.lockclass import classify
    except ImportError:
        classify = None
    cache: dict[tuple[int, int], str] = {}

    def symbolize(ip: int) -> str | None:
        hit = kallsyms.lookup(ip) if kallsyms is not None else None
        return hit[0] if hit else None

    def run(stack: np.ndarray, flags: np.ndarray, addr: np.ndarray) -> np.ndarray:
        # one classification per distinct (stack, flags), not per row
        keys = (stack.astype(np.int64) << 32) | flags.astype(np.int64)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        classes = []
        for i in first.tolist():
            key = (int(stack[i]), int(flags[i]))
            cls = cache.get(key)
            if cls is None:
                sid, fl = key
                cls = "other" if classify is None else classify(int(addr[i]), fl, stack_of(sid) if sid >= 0 else [],
                                                                symbolize)
                cache[key] = cls
            classes.append(cls)
        return np.asarray(classes, dtype=object)[inverse.reshape(-1)]

    return run


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM before recording began: set-up is abandoned, the command stopped. A
    KeyboardInterrupt, so that no ``except Exception`` on the way (a probe that failed to load) takes it
    for an error; the CLI prints it as one line and exits with ``exit_status`` (128 + the signal)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.exit_status = status


class _Command:
    """The command to record: forked blocked on a pipe, released once the probes are attached."""

    def __init__(self, argv: Sequence[str]):
        # A small Python stub holds the pid until release() and then exec()s the command in place, so
        # the filter knows the pid before the first instruction. (Popen with a blocking preexec_fn
        # would block Popen itself: it waits for the exec.)
        r, w = os.pipe()
        self._w = w
        if shutil.which(argv[0]) is None:
            raise UsageError(f"cannot run {argv[0]!r}: command not found")
        # An empty read means the recorder died (even SIGKILL) before releasing it: exit, do not run.
        # PR_SET_PDEATHSIG (1): if the recorder dies later, the command gets SIGTERM, not orphaned.
        stub = "import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 15, 0, 0, 0); fd = int(sys.argv[1]); " \
               "go = os.read(fd, 1); os.close(fd); go == b'g' and os.getppid() != 1 or os._exit(125); " \
               "os.execvp(sys.argv[2], sys.argv[2:])"
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", stub, str(r), *argv], pass_fds=(r,))
        except OSError as e:
            os.close(r)
            os.close(w)
            raise UsageError(f"cannot run {argv[0]!r}: {e.strerror}") from None
        os.close(r)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        os.write(self._w, b"g")
        os.close(self._w)

    def stop(self) -> int | None:
        """Terminate the command and every process it started if it still runs (SIGTERM, SIGKILL after
        2 s): none is left behind holding the terminal or the recorder's pipes. Its exit status."""
        if self.proc.poll() is None:
            family = _descendants(self.proc.pid)
            self.proc.terminate()
            _signal_all(family, signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            deadline = time.monotonic() + 2
            while family and time.monotonic() < deadline:
                family = [p for p in family if _alive(p)]
                time.sleep(0.02)
            _signal_all(family, signal.SIGKILL)
        return self.proc.returncode


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from the ppid in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def all_tids() -> np.ndarray:
    """Every task's id now (tid 0, each CPU's idle task, included), sorted."""
    tids = [0]
    with contextlib.suppress(OSError):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    tids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    return np.unique(np.array(tids, dtype=np.int64))


def switched_since(tid: int, csw: int) -> bool:
    """Has the task made a context switch since its count was csw - 1 (csw 0: not known)?"""
    if not csw or tid == 0:
        return False
    try:
        with open(f"/proc/{tid}/status") as f:
            status = f.read()
    except OSError:
        return False
    now = sum(int(line.split(":", 1)[1]) for line in status.splitlines()
              if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))
    return now != csw - 1


def task_alive(tid: int) -> bool:
    """Does this task still run (or wait)? tid 0, each CPU's idle task, always does; a zombie does not."""
    if tid == 0:
        return True
    try:
        with open(f"/proc/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:][:1]
    return state not in (b"Z", b"X", b"x")


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class Recorder:
    """One recording session. Use :func:`record` unless you need the pieces."""

    def __init__(self, opts: RecordOptions):
        self.opts = opts
        self.notes = kernel_env.Notes([])
        self._raw: list[bytes] = []
        # copied out (consumer thread), decoded (main thread), spilled (either, under _spill_lock): the backlog is
        # copied - decoded - spilled
        self._copied_bytes = self._decoded_bytes = 0
        self._backlog_full = False
        self._pending: dict[int, list[np.ndarray]] = {}
        self._alive_at_start: np.ndarray | None = None  # tids alive once recording started (lock waits)
        self._pending_rows: dict[int, int] = {}
        self._tids: set[int] = set()
        self._switch_gaps = SwitchGaps()  # switches of recorded tasks the kernel never reported
        self._stack_ids: set[int] = set()
        self._stack_cache: dict[int, list[int]] = {}
        self._ipi_addrs: set[int] = set()
        self._events = 0
        self._stop_reason = ""
        self._stop = False
        self._recording = False  # set once the probes record: signals then stop, no longer abort
        self._drain_s = 0.0
        self._t2: list[tuple[Any, str]] = []  # (tracer.tier2.Family, attach mode) being recorded
        self._t2_probes: list[Probe] = []
        self._t2_kinds: set[int] = set()
        self._t2_parts: dict[int, list[np.ndarray]] = {}
        self._recorder_wakeups = 0
        self._own_seen: set[int] = set()  # the recorder's threads while it recorded (the reader's is gone at stop)
        self._spill: Any = None  # unnamed file the records go to while recording, decoded at stop (_unspill)
        self._spilled = 0  # bytes in it
        self._spill_marks: list[tuple[int, int]] = []  # (spilled bytes, watermark) at each write period
        self._spill_lock = threading.RLock()  # one writer of the spill file at a time: the reader or the main thread
        self._spill_failed: str | None = None  # why records can no longer be spilled ("" for no note)
        self._spilled_events = 0  # events spilled (under _spill_lock) ...
        self._unspilled_events = 0  # ... and decoded from the spill file (main thread): the progress line
        self._spill_pos = 0  # bytes of it decoded (the periods before the first of _spill_marks)
        self._idle_prev: tuple[float, float, float] | None = None  # (monotonic s, idle CPU s, own CPU s)
        self._decoded_live = False  # spilled periods decoded since the last heap trim
        self._decoding: dict[str, Any] = {}  # the manifest's extra.decoding
        self._kallsyms: Any = None
        self._backup_fds: list[int] = []
        self._backup_attached: set[str] = set()
        self._helper_progs: dict[str, int] = {}  # "pre:<family>" / "backup:<family>" -> program fd
        self._plan = programs.CLASSIC

    # -- setup ------------------------------------------------------------------

    def _choose(self) -> tuple[list[programs.Family], list[Probe]]:
        chosen = programs.select(self.opts.probes)
        use, skipped = [], []
        for fam in chosen:
            missing = fam.missing_tracepoints()
            if missing:
                skipped.append(Probe(fam.name, fam.tier, status="skipped",
                                     reason=f"tracepoint {missing[0]} not in this kernel"))
            else:
                use.append(fam)
        return use, skipped

    def _load(self, bcc: Any, families: list[programs.Family], flt: programs.Filter) -> tuple[Any, list, list[Probe]]:
        """Load all families at once (with the usable tier-2 ones). If the kernel refuses that program, find
        who: each tier-1 family alone (raw tracepoints, then classic), then tier 2 with the tier-1 families
        that load. A family that does not load is one failed Probe with the compiler's or verifier's reason
        (printed at the end of the recording), never a table silently missing, and never the others'."""
        self._plan = programs.plan(families, self.opts.attach, bcc)
        if self.opts.attach == "raw" and self._plan.why_classic:
            bad = [(n, r) for n, r in self._plan.why_classic if n != "syscalls"]
            if bad:
                raise kernel_env.EnvironmentProblem(
                    "raw tracepoints", f"{bad[0][0]}: {bad[0][1]}", "record with --attach auto (classic fallback)")
        kw = {"rb_pages": self.opts.rb_pages, "pf_gap_ns": self.opts.pf_gap_ns, "attach": self._plan,
              "stacks": self.opts.stacks, "pf_recover": self.opts.pf_recover}
        t2_kw: dict[str, Any] = {}
        if self._t2:
            from tracer import tier2

            t2_kw = {"extra_text": "\n".join(tier2.c_text(f) for f, _ in self._t2),
                     "extra_cflags": tier2.cflags(self._t2[0][1] == "fentry")}

        def try_load(fams: list[programs.Family], **more: Any) -> tuple[Any, str]:
            """(the loaded program, "") or (None, why not in one line)."""
            with kernel_env.captured_stderr() as log:
                try:
                    return programs.load(bcc, fams, flt, **kw, **more), ""
                except Exception as e:  # noqa: BLE001 - bcc raises bare Exception for compile/verifier/attach
                    err = e
            return None, programs.load_error(err, log)

        def tier2_failed(why: str) -> None:
            self._t2_probes += [Probe(f"tier2:{f.name}", 2, status="failed", reason=why) for f, _ in self._t2]
            self._t2 = []

        if t2_kw:
            b, err = try_load(families, **t2_kw)
            if b is not None:
                return b, families, []
        b, err1 = try_load(families)
        if b is not None:
            if t2_kw:  # tier 1 alone loads: tier 2 was refused
                tier2_failed(f"loading failed: {err[:300]}")
            return b, families, []
        ok, failed = [], []
        raw = set(self._plan.raw)

        def loads(fam: programs.Family) -> str:
            """'' if fam loads alone with the current plan, else the first line of why not."""
            b, err = try_load([fam], flush=False)
            if b is not None:
                b.cleanup()
            return err[:300]

        for fam in families:
            err = loads(fam)
            if err and fam.name in raw:  # the classic tracepoints may still load
                raw.discard(fam.name)
                kw["attach"] = self._plan = programs.Plan(
                    frozenset(raw), self._plan.offsets,
                    self._plan.why_classic + ((fam.name, f"raw tracepoints failed to load: {err}"),))
                err = loads(fam)
            if err:
                failed.append(Probe(fam.name, fam.tier, status="failed", reason=err))
            else:
                ok.append(fam)
        if not ok:
            raise kernel_env.EnvironmentProblem("probes", f"no tier-1 probe family loads here (first: {err1[:200]})",
                                                "run 'mmreplay doctor' for the reason of each")
        if t2_kw:
            b, err = try_load(ok, **t2_kw)
            if b is not None:
                return b, ok, failed
            tier2_failed(f"loading with tier 1 failed: {err[:300]}")
        b, err = try_load(ok)
        if b is None:  # each loads alone, not together: say so rather than record less than asked
            raise kernel_env.EnvironmentProblem("probes", f"the tier-1 families load one by one but not together: "
                                                f"{err[:200]}", "record fewer --probes; run 'mmreplay doctor'")
        return b, ok, failed

    # -- data path --------------------------------------------------------------

    def _on_record(self, ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, size))
        self._copied_bytes += size  # written by the consumer thread only
        # A full backlog stops this consume (libbpf has consumed this record: it is kept); the rest stays in
        # the ring buffer until a step is spilled (the reader, next) or decoded (the main thread).
        self._backlog_full = self._backlog() >= MAX_BACKLOG_BYTES
        return -1 if self._backlog_full else 0

    def _backlog(self) -> int:
        """Bytes copied out of the ring buffer and still in memory (neither decoded nor spilled)."""
        return self._copied_bytes - self._decoded_bytes - self._spilled

    @property
    def _spill_events(self) -> int:
        """Events in the spill file not yet decoded (the progress line)."""
        return max(0, self._spilled_events - self._unspilled_events)

    def _absorb(self, raw: bytes | np.ndarray) -> None:
        """Decode ring-buffer records (or per-CPU batch snapshots) into pending per-kind arrays."""
        by_kind = events.split_batch(raw)
        for kind, rec in by_kind.items():
            self._add(kind, rec)

    def _add(self, kind: int, rec: np.ndarray) -> None:
        if kind in self._t2_kinds and len(rec):
            # tier 2 pairs acquisitions and releases at stop (tracer.tier2.decode_tables): kept until then
            self._t2_parts.setdefault(kind, []).append(rec)
            self._events += len(rec)
            return
        if kind not in self._kinds or not len(rec):
            return
        if kind == events.EV_LOCK_WAIT and self._alive_at_start is not None:
            # a contention_end without its begin, of a task born after the start: the begin was lost (skipped
            # as BPF recursion; counted unmatched in the program), the wait did not begin before the
            # recording. Written, it would span the recording from its start. (A task alive at the start
            # has a state in the program, which drops its lost begins itself: bpf/mmr_lc_pair.h.)
            lost_begin = ((rec["flags"] & events.F_NO_START) != 0) & ~np.isin(rec["tid"], self._alive_at_start)
            if lost_begin.any():
                rec = rec[~lost_begin]
                if not len(rec):
                    return
        self._pending.setdefault(kind, []).append(rec)
        self._pending_rows[kind] = self._pending_rows.get(kind, 0) + len(rec)
        self._events += len(rec)

    def _consume_loop(self) -> None:
        """Consumer thread: every POLL_S, copy the ring-buffer records out and append them to the spill file
        (if any) itself, until the ring buffer is empty; the main thread only marks each write period's
        watermark and decodes. The reader waits for nobody but the kernel: before, the main thread spilled
        every 0.2 s and the reader stopped at MAX_BACKLOG_BYTES copied, so the main thread late by
        ~0.1 s (decoding spilled periods, or starved of a CPU) filled the ring buffer (docs/RECORDING.md,
        "Ring-buffer refusals"). ctypes drops the GIL while polling, os.writev while writing. Without a spill file
        (--decode live, or after it failed), the main thread decodes what is copied: when MAX_BACKLOG_BYTES
        wait, the kernel ring buffer holds (and, if full, counts) the rest."""
        while not self._consumer_stop.is_set():
            self._consume_once()
            self._consumer_stop.wait(POLL_S)

    def _consume_once(self) -> None:
        t = time.monotonic_ns()
        while self._backlog() < MAX_BACKLOG_BYTES:
            self._backlog_full = False
            self._bpf.ring_buffer_consume()
            self._spill_copied(wait=False)
            if not self._backlog_full:  # the ring buffer was emptied: every batch submitted before t is here
                self._copied_until_ns = t
                return
        # a step's worth waits for the main thread (no spill file, or it is spilling): decode or spill it now,
        # not at the next write period
        self._backlog_ready.set()

    def _spill_copied(self, wait: bool = True) -> bool:
        """Append the copied records to the spill file, in the order copied; True if they all went (or none
        waited). False without a spill file, after it failed (_spill_failed says why; the main thread then
        decodes it and what comes next), or, with wait=False (the reader), while the main thread is spilling:
        the records wait in memory for the next poll."""
        if self._spill is None or self._spill_failed is not None:
            return False
        if not self._spill_lock.acquire(blocking=wait):
            return False
        try:
            if self._spill is None or self._spill_failed is not None:
                return False
            n = len(self._raw)  # the consumer thread only appends
            recs = self._raw[:n]
            if any(len(r) != events.BATCH_SIZE for r in recs):  # not a batch: nothing to spill it as
                self._spill_failed = ""
                return False
            try:
                for i in range(0, n, 512):  # IOV_MAX is 1024
                    part = recs[i:i + 512]
                    size = len(part) * events.BATCH_SIZE
                    done = os.writev(self._spill.fileno(), part)
                    if done != size:  # short write: the rest, joined
                        rest = b"".join(part)[done:]
                        while rest:
                            rest = rest[os.write(self._spill.fileno(), rest):]
                    self._spilled_events += sum(int.from_bytes(r[4:8], "little") for r in part)
                    del self._raw[:len(part)]
                    self._spilled += size  # out of memory: the reader may copy more
            except OSError as e:  # a full disk: what was spilled is decoded now, the rest as it comes
                self._spill_failed = f"records decoded while recording from {self._spilled} bytes on " \
                                     f"(spill file: {e.strerror})"
                return False
            return True
        finally:
            self._spill_lock.release()

    def _drain(self) -> bool:
        """Decode the oldest copied records, up to DRAIN_STEP_BYTES of them (at least one); True if more wait."""
        if not self._raw:
            return False
        step = DRAIN_STEP_BYTES
        t = time.perf_counter()
        n, size = 0, 0
        avail = len(self._raw)  # the consumer thread only appends
        while n < avail and (n == 0 or size + len(self._raw[n]) <= step):
            size += len(self._raw[n])
            n += 1
        raw = self._raw[0] if n == 1 else b"".join(self._raw[:n])
        del self._raw[:n]
        self._decoded_bytes += len(raw)  # written by the main thread only
        self._absorb(raw)
        self._drain_s += time.perf_counter() - t
        return n < avail

    def _drain_and_write(self, watermark: int) -> None:
        """Decode every copied record and write what is older than the watermark, one bounded step at a time."""
        while True:
            more = self._drain()
            self._write(watermark)
            if not more:
                return

    def _start_spill(self) -> None:
        """An unnamed file in the trace's directory (gone with the recorder, whatever ends it) for the records
        copied while recording. Without one (a file system that has none, or --decode live), records are
        decoded as they come."""
        if self.opts.decode == "live":
            return
        try:
            self._spill = tempfile.TemporaryFile(dir=self.opts.output, buffering=0)
        except OSError as e:
            self.notes.say(f"records decoded while recording (no spill file in {self.opts.output}: {e.strerror})")
            self._spill = None

    def _spill_or_write(self, watermark: int) -> None:
        """While recording: mark the end of this period's records in the spill file (the reader appended them;
        what it copied but had not yet spilled goes now), to be decoded at stop with this watermark: a few
        write system calls a period, where decoding was ~400 ns of CPU per recorded row taken from the
        workload's CPUs (docs/RECORDING.md, "The reader"). Without a spill file (or after a write failed),
        decode and write now."""
        if self._spill is None:
            self._drain_and_write(watermark)
            return
        # what the reader copied before the watermark's time is in the file already (it spills before it moves
        # _copied_until_ns); the rest copied so far goes now, under the lock, so that the mark follows it
        with self._spill_lock:
            self._spill_copied()
            self._spill_marks.append((self._spilled, watermark))
        if self._spill_failed is not None:
            if self._spill_failed:
                self.notes.say(self._spill_failed)
            self._unspill()
            self._drain_and_write(watermark)
            return
        # decode spilled periods now only with CPU nobody else wanted in the last period: a recorder killed
        # by SIGKILL then loses only what waits in the spill file
        if self._idle_cpus() >= IDLE_CPUS_TO_DECODE:
            self._decode_spilled(time.monotonic() + WRITE_EVERY_S / 2)
            self._decoded_live = True

    def _idle_cpus(self) -> float:
        """CPUs the host left idle since the previous call (this process's own CPU counted as idle: it is what
        decoding may take); 0 when unknown, which keeps decoding for the stop."""
        try:
            with open("/proc/stat", "rb") as f:
                fields = f.readline().split()
            idle = (int(fields[4]) + int(fields[5])) / CLK_TCK  # idle + iowait
        except (OSError, IndexError, ValueError):
            return 0.0
        t, own = time.monotonic(), sum(os.times()[:2])
        prev, self._idle_prev = self._idle_prev, (t, idle, own)
        if prev is None or t <= prev[0]:
            return 0.0
        return ((idle - prev[1]) + (own - prev[2])) / (t - prev[0])

    def _decode_spilled(self, deadline: float | None) -> None:
        """Decode spilled write periods, oldest first, each written with its watermark, a step at a time, until
        none is left or the monotonic deadline has passed."""
        if self._spill is None:
            return
        step = max(1, DRAIN_STEP_BYTES // events.BATCH_SIZE) * events.BATCH_SIZE
        fd = self._spill.fileno()
        periods = 0
        while self._spill_marks and (deadline is None or time.monotonic() < deadline):
            end, watermark = self._spill_marks[0]
            while self._spill_pos < end:
                chunk = os.pread(fd, min(step, end - self._spill_pos), self._spill_pos)
                if not chunk:
                    raise OSError(errno.EIO, f"spill file ends at {self._spill_pos} of {end} bytes")
                self._spill_pos += len(chunk)
                t, seen = time.perf_counter(), self._events
                self._absorb(chunk)
                self._drain_s += time.perf_counter() - t
                self._unspilled_events += self._events - seen
                self._write(watermark)
                if deadline is not None and self._spill_pos < end and time.monotonic() >= deadline:
                    # the rest of the period at the next call, with the same watermark (the same chunks): the
                    # GIL is held a step past the deadline, not a period (the reader's callbacks need it)
                    return
            self._write(watermark)
            del self._spill_marks[0]
            periods += 1
            if deadline is None and not periods % round(TRIM_EVERY_S / WRITE_EVERY_S):
                trim_heap()  # as while recording: what a second of decoding freed goes back

    def _unspill(self, watermark: int | None = None) -> None:
        """Decode and write the spilled records not yet decoded, as they would have been while recording: each
        write period's records with its watermark, in bounded steps, before any record copied but not spilled.
        What the reader spilled after the last period is decoded with `watermark` (at stop: the stop's; by
        default the last period's, its younger rows kept for the next write)."""
        if self._spill is None:
            return
        last = self._spill_marks[-1] if self._spill_marks else (self._spill_pos, 0)
        if self._spilled > last[0]:
            self._spill_marks.append((self._spilled, last[1] if watermark is None else watermark))
        self._decoding["spilled_bytes"] = self._spilled
        self._decoding["decoded_while_recording_bytes"] = self._spill_pos
        try:
            self._decode_spilled(None)
        finally:
            self._spill.close()
            self._spill = None
            self._spill_marks = []

    def _write(self, watermark: int | None) -> None:
        """Write pending rows with ts < watermark (all if None, or when a table holds CHUNK_ROWS), sorted, one
        chunk per table. Each row is sorted once, when written: a part wholly newer than the watermark is kept
        as it is, one wholly older goes out as it is, only a part that straddles it is split."""
        t = time.perf_counter()
        for kind, parts in list(self._pending.items()):
            if not parts:
                continue
            dt = events.KIND_DTYPES[kind]
            if watermark is None or self._pending_rows.get(kind, 0) >= CHUNK_ROWS:
                out, keep = parts, []
            else:
                out, keep = [], []
                wm = np.uint64(max(watermark, 0))  # a Python int against uint64 compares ~4x slower
                for p in parts:
                    below = p["ts"] < wm
                    n = int(np.count_nonzero(below))
                    if n == len(p):
                        out.append(p)
                    elif n == 0:
                        keep.append(p)
                    else:  # as uint64 words: a gather at memcpy speed (structured copies go field by field)
                        w = events.words(p)
                        out.append(events.records(events.take(w, below), dt))
                        keep.append(events.records(events.take(w, ~below), dt))
            self._pending[kind] = keep
            self._pending_rows[kind] = sum(len(p) for p in keep)
            if not out:
                continue
            rec = out[0] if len(out) == 1 else events.records(np.concatenate([events.words(p) for p in out]), dt)
            # the keys copied out first: lexsort over strided fields is ~5x slower
            order = np.lexsort((np.ascontiguousarray(rec["seq"]), np.ascontiguousarray(rec["ts"])))
            self._emit(kind, events.records(events.take(events.words(rec), order), dt))
        self._drain_s += time.perf_counter() - t

    def _emit(self, kind: int, rec: np.ndarray) -> None:
        fam = programs.FAMILIES_BY_KIND[kind]
        if kind == events.EV_SCHED_WAKEUP and len(rec):
            # a recorded task's wake-up of the recorder's own threads (its reader's timer fired while the task ran)
            mine = np.isin(rec["woken_tid"], np.fromiter(set(_own_tids()) | self._own_seen, np.int64))
            if mine.any():
                self._recorder_wakeups += int(mine.sum())
                rec = rec[~mine]
        if kind == events.EV_SCHED_SWITCH:
            self._switch_gaps.feed(rec)  # rows come out in (ts, seq) order, chunk after chunk
        cols = decode.columns(kind, rec, self._start_ns, self._classify, presorted=True)
        self._tids.update(decode.referenced_tids(kind, rec).tolist())
        if kind in (events.EV_LOCK_WAIT, events.EV_LOCK_HOLD):
            self._stack_ids.update(int(s) for s in np.unique(cols["stack_id"]) if s >= 0)
        if kind == events.EV_IPI:
            self._ipi_addrs.update(np.unique(np.concatenate([cols["callsite"], cols["callback"]])).tolist())
        self._writer.write(fam.table, cols)

    def _stack(self, stack_id: int) -> list[int]:
        ips = self._stack_cache.get(stack_id)
        if ips is None:
            try:
                ips = [int(ip) for ip in self._bpf["mmr_stacks"].walk(stack_id)]
            except KeyError:
                ips = []
            ips = self._without_probe_frames(ips)
            self._stack_cache[stack_id] = ips
        return ips

    def _without_probe_frames(self, ips: list[int]) -> list[int]:
        """A raw tracepoint program's stack starts in the program itself (bpf_prog_*, then bpf_trace_run*);
        a classic one's at the tracepoint (__traceiter_*). Leading frames of the program and its dispatch are
        dropped, so a stack is the same whichever way the probe attached."""
        if self._kallsyms is None:
            return ips
        i = 0
        while i < len(ips):
            hit = self._kallsyms.lookup(ips[i])
            if hit is None or not hit[0].startswith(PROBE_FRAMES):
                break
            i += 1
        return ips[i:]

    # -- stop -------------------------------------------------------------------

    def _detach(self) -> None:
        b = self._bpf
        self._set_ctl(CTL_STOPPED)  # stop recording now; detaching takes a while
        self._stop_ns = time.monotonic_ns()
        self._misses_at_stop = self._misses_now(stop=True)
        # Each detach waits for an RCU grace period; do them side by side (the close releases the GIL).
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(b.detach_tracepoint, list(b.tracepoint_fds)))
            list(pool.map(b.detach_raw_tracepoint, list(b.raw_tracepoint_fds)))
            list(pool.map(os.close, self._backup_fds))
        self._backup_fds = []
        try:
            b.detach_perf_event(ev_type=self._bcc.PerfType.SOFTWARE, ev_config=self._bcc.PerfSWConfig.CPU_CLOCK)
        except Exception:  # noqa: BLE001 - never attached
            pass

    def _attach_raw(self, fn_name: bytes, tp: bytes) -> tuple[int, int] | str:
        """(program fd, attachment fd) of fn_name attached to raw tracepoint tp beside the family's own
        program (bcc attaches one per tracepoint only), or why not."""
        try:
            fn = self._bpf.load_func(fn_name, self._bcc.BPF.RAW_TRACEPOINT)
            fd = self._bcc.libbcc.lib.bpf_attach_raw_tracepoint(fn.fd, tp)
        except Exception as e:  # noqa: BLE001 - without it those hits stay lost, and are counted so
            return str(e).splitlines()[0]
        return (fn.fd, fd) if fd >= 0 else f"attach failed: {-fd}"

    def _attach_first(self, fam: str, tp: bytes, fn_name: bytes) -> None:
        """fn_name on tp BEFORE the family's program: the kernel runs a tracepoint's probes of equal priority
        in the order they were attached (kernel/tracepoint.c func_add), and bcc attached the family's
        program at load, so it is detached, fn_name attached, and it attached again. Nothing is recorded
        yet (mmr_ctl is not set), so nothing is lost in between."""
        main = b"raw_tracepoint__" + tp
        self._bpf.detach_raw_tracepoint(tp)
        got = self._attach_raw(fn_name, tp)
        self._bpf.attach_raw_tracepoint(tp=tp, fn_name=main)
        if isinstance(got, str):
            self.notes.say(f"no first program on {tp.decode()} ({got}): its backup records nothing")
            return
        self._helper_progs[f"pre:{fam}"] = got[0]
        self._backup_fds.append(got[1])

    def _attach_backup(self, fam: str, tp: bytes, fn_name: bytes) -> None:
        """A last raw-tracepoint program on tp: it records the hits the kernel skipped because the family's
        program was running on the CPU (bpf/page_free.c, bpf/tlb_flush.c)."""
        got = self._attach_raw(fn_name, tp)
        if isinstance(got, str):
            self.notes.say(f"no backup program on {tp.decode()} ({got})")
            return
        self._helper_progs[f"backup:{fam}"] = got[0]
        self._backup_fds.append(got[1])
        self._backup_attached.add(fam)

    def _lock_wait_tasks(self) -> None:
        """Give each task alive now (each CPU's idle task too) its lock-wait state (bpf/mmr_lc_pair.h), just
        before the start: the program then tells its ends without a begin apart, a wait cut by the start or a
        begin lost since. A task born later has none (_add drops its ends without a begin)."""
        import bcc.utils

        table = self._bpf["mmr_lc_tasks"]
        keys = [(0, cpu + 1) for cpu in bcc.utils.get_possible_cpus()]
        keys += [(int(t), 0) for t in all_tids() if t]
        zero = table.Leaf()
        for n, (tid, cpu) in enumerate(keys):
            try:
                table[table.Key(tid, cpu, 0)] = zero
            except Exception:  # noqa: BLE001 - full: the rest keep today's rule (cut by the start)
                self.notes.say(f"lock waits: {len(keys) - n} of {len(keys)} tasks got no lock-wait state (map "
                               f"full); an end without a begin of theirs is written as cut by the start")
                break

    def _set_ctl(self, state: int) -> None:
        ctl = self._bpf["mmr_ctl"]
        ctl[ctl.Key(0)] = ctl.Leaf(state)

    def _per_cpu_bytes(self, name: str, entries: int = 1) -> list[bytes]:
        """The raw per-CPU values of the first entries of a per-CPU array map."""
        out = []
        for i in range(entries):
            out += [ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v)) for v in self._bpf[name][i]]
        return out

    def _leftovers(self, stop_ns: int) -> None:
        """Partly filled batches, open page-free bursts and open intervals, as rows."""
        for raw in self._per_cpu_bytes("mmr_batches", events.NEST):
            self._absorb(raw)
        b = self._bpf
        if events.EV_PAGE_FREE in self._kinds:
            rows = []
            for lvl in range(events.NEST):
                for cpu, v in enumerate(b["mmr_pf_bursts"][lvl]):
                    if v.active:
                        rows.append((v.first_ts, v.seq, v.pid, v.tid, cpu, v.batched, v.last_ts - v.first_ts,
                                     v.pages))
            self._add_rows(events.EV_PAGE_FREE, rows, ("ts", "seq", "pid", "tid", "cpu", "batched", "dur", "pages"),
                           events.F_INCOMPLETE)
        if events.EV_LOCK_HOLD in self._kinds:
            rows, waiting = [], 0
            for k, t in b["mmr_mmap_lock"].items():
                for v in t.s:
                    if v.mm and v.held:
                        rows.append((v.acq_ts, v.seq, t.pid, k.value, v.cpu, stop_ns - v.acq_ts, v.wait, v.mm,
                                     v.depth, v.write, 1, 1, -1))
                    elif v.mm:
                        waiting += 1
            self._add_rows(events.EV_LOCK_HOLD, rows,
                           ("ts", "seq", "pid", "tid", "cpu", "dur", "wait", "lock_addr", "depth", "mode", "success",
                            "lock_class", "stack_id"), events.F_INCOMPLETE)
            self._unmatched_extra[events.EV_LOCK_HOLD] = waiting
        if events.EV_LOCK_WAIT in self._kinds:
            # a wait is cut by the stop only if its task still lives and, for a spinning wait, has not been
            # switched out since its begin (bpf/lock_contention.c mmr_lc_csw): any other lost its end
            # (skipped as BPF recursion), a start never ended, not a wait lasting until the stop
            open_waits = [(k, v) for k, v in b["mmr_contention"].items()]
            rows = [(v.ts, v.seq, v.pid, k.tid, v.cpu, stop_ns - v.ts, k.addr, v.p.flags, 0, v.p.begins, v.stack_id)
                    for k, v in open_waits if task_alive(k.tid) and not switched_since(k.tid, v.csw)]
            self._unmatched_extra[events.EV_LOCK_WAIT] = len(open_waits) - len(rows)
            self._add_rows(events.EV_LOCK_WAIT, rows,
                           ("ts", "seq", "pid", "tid", "cpu", "dur", "lock_addr", "lcb_flags", "ret", "begins",
                            "stack_id"), events.F_INCOMPLETE)
        if events.EV_SYSCALL in self._kinds:
            rows = [(v.ts, v.seq, v.pid, k.value, v.cpu, stop_ns - v.ts, v.nr, v.arg0, v.arg1, 0)
                    for k, v in b["mmr_sys_open"].items() if v.open]
            self._add_rows(events.EV_SYSCALL, rows,
                           ("ts", "seq", "pid", "tid", "cpu", "dur", "nr", "arg0", "arg1", "ret"), events.F_INCOMPLETE)

    def _add_rows(self, kind: int, rows: list[tuple], names: tuple[str, ...], flags: int) -> None:
        if not rows:
            return
        rec = np.zeros(len(rows), dtype=events.KIND_DTYPES[kind])
        for i, name in enumerate(names):
            rec[name] = [r[i] for r in rows]
        rec["kind"] = kind
        rec["flags"] = flags
        self._add(kind, rec)

    def _stats(self) -> dict[int, tuple[int, int, int, int]]:
        """kind -> (events, ring-buffer refused, unmatched, caused by the recorder), summed over CPUs;
        kind 0: events lost because a CPU ran out of nesting levels."""
        out: dict[int, tuple[int, int, int, int]] = {}
        table = self._bpf["mmr_stats"]
        for kind in [0, *(fam.kind for fam in self._families)]:
            per_cpu = table[kind]
            out[kind] = (
                sum(int(s.events) for s in per_cpu),
                sum(int(s.lost) for s in per_cpu),
                sum(int(s.unmatched) for s in per_cpu),
                sum(int(s.recorder) for s in per_cpu),
            )
        return out

    def _tasks(self) -> dict[str, list]:
        known: dict[int, tuple[int, str]] = dict(self._tasks_at_start)
        for k, v in self._bpf["mmr_tasks"].items():
            known.setdefault(int(k.value), (int(v.pid), bytes(v.comm).split(b"\0", 1)[0].decode(errors="replace")))
        wanted = self._tids | set(self._filter.tids)
        rows: dict[str, list] = {"tid": [], "pid": [], "comm": []}
        for tid in sorted(wanted):
            pid, comm = known.get(tid, (-1, ""))
            if pid < 0 or not comm:
                live = _proc_task(tid)
                if live is not None:
                    pid = live[0] if pid < 0 else pid
                    comm = comm or live[1]
            if tid == 0:
                pid, comm = 0, comm or "swapper"
            rows["tid"].append(tid)
            rows["pid"].append(pid)
            rows["comm"].append(comm)
        return rows

    def _symbols(self, addresses: set[int]) -> None:
        if self._kallsyms is None or not addresses:
            return
        from replay.symbols import symbol_rows

        self._writer.write("symbols", symbol_rows(self._kallsyms, np.fromiter(addresses, np.uint64),
                                                  self.opts.vmlinux))

    # -- the session --------------------------------------------------------------

    def run(self) -> RecordResult:
        o = self.opts
        check_target(Path(o.output), o.force)  # refuse before the slow set-up; TraceWriter checks again
        if o.duration is not None and o.duration <= 0:
            raise UsageError("--duration must be positive")
        programs.select(o.probes)  # user errors before touching the host
        lean_allocators()
        programs.cflags(programs.Filter(comm=o.comm))
        bcc, _ = kernel_env.prepare(self.notes)
        self._bcc = bcc
        families, skipped = self._choose()
        if not families:
            raise UsageError("none of the requested probes exists in this kernel: "
                             + "; ".join(f"{p.name}: {p.reason}" for p in skipped))
        # SIGINT/SIGTERM from here to the end: during set-up they abort it (the command is stopped, never
        # orphaned); once recording, they stop it; while stopping, they are ignored so that the trace is
        # finalized.
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._session(bcc, families, skipped)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _session(self, bcc: Any, families: list, skipped: list[Probe]) -> RecordResult:
        o = self.opts
        cmd = _Command(o.command) if o.command else None
        try:
            with bpf_run_stats() if o.probe_cost else contextlib.nullcontext(True) as timed:
                if not timed:
                    print("mmreplay: --probe-cost: the kernel refused BPF_ENABLE_STATS; no probe_cost in the manifest",
                          file=sys.stderr)
                return self._run(bcc, families, skipped, cmd)
        finally:
            if cmd is not None and cmd.proc.poll() is None:
                cmd.stop()

    def _run(self, bcc: Any, families: list, skipped: list[Probe], cmd: _Command | None) -> RecordResult:
        o = self.opts
        tids: set[int] = set(o.tids)
        for pid in o.pids:
            tids.update(_threads_of(pid))
        explicit = bool(tids) or o.comm is not None
        if cmd is not None and not o.system_wide and not explicit:
            tids.add(cmd.pid)  # the command and every task it forks
        self._filter = programs.Filter(frozenset(tids), o.comm)
        self._tasks_at_start = {}
        for tid in tids:
            t = _proc_task(tid)
            if t is not None:
                self._tasks_at_start[tid] = t

        release_code_pages()  # the compilations below are the recorder's peak: without the pages they do not run
        self._tier2_plan(bcc)
        from tracer.tier2 import phase, phase_note  # MMREPLAY_TIER2_LOG=1: what patches kernel text, when

        with phase(f"load tier 1 + tier 2 {[f.name for f, _ in self._t2]} (fentry probes attach as bcc loads)"):
            self._bpf, self._families, failed = self._load(bcc, families, self._filter)
        release_compiler_memory()  # before the kallsyms parse below adds its own peak
        b = self._bpf
        for fam, tp, fn, _, pre, _ in BACKUPS:
            if fam == "page_free" and not o.pf_recover:
                continue  # its skipped hits stay counted as lost (_recursion_misses)
            if self._plan.mode(fam) == "raw" and any(f.name == fam for f in self._families):
                if pre is not None:
                    self._attach_first(fam, tp, pre)
                self._attach_backup(fam, tp, fn)
        if "page_free" in self._backup_attached:
            # the main program claimed slots from load to now, alone: empty them before the start
            # (bpf/mmr_bk_slots.h). A hit in flight now is then recorded by the backup, before the start.
            b["mmr_pf_slots"].clear()
        self._kinds = {f.kind for f in self._families}
        if self._t2:
            self._tier2_attach()
        self._t2_kinds = {k for f, _ in self._t2 for k in f.kinds}
        one = ctypes.c_uint8(1)
        ftable = b["mmr_filter_tids"]
        for tid in tids:
            ftable[ftable.Key(tid)] = one
        self._unmatched_extra: dict[int, int] = {}
        try:
            from replay.symbols import CompactKallsyms

            self._kallsyms = CompactKallsyms.load()
        except Exception as e:  # noqa: BLE001 - symbols are optional: classes fall back to "other"
            self._kallsyms = None
            self.notes.say(f"no kernel symbols ({e}); lock classes of waits will be 'other'")
        self._classify = _lock_classifier(self._kallsyms, self._stack)
        release_compiler_memory()  # again: what the kallsyms parse freed

        b["mmr_rb"].open_ring_buffer(self._on_record)
        try:
            with kernel_env.captured_stderr():
                b.attach_perf_event(ev_type=bcc.PerfType.SOFTWARE, ev_config=bcc.PerfSWConfig.CPU_CLOCK,
                                    fn_name=b"mmr_flush", sample_period=FLUSH_PERIOD_NS, cpu=-1)
        except Exception as e:  # noqa: BLE001 - without it, a quiet CPU's batch arrives at stop
            self.notes.say(f"no periodic flush ({str(e).splitlines()[0]}): tables are only ordered within chunks")

        argv = list(o.command) if o.command else list(sys.argv)
        self._writer = TraceWriter(o.output, command=argv, force=o.force, compression=o.compression,
                                   extra={"recorder": "mmreplay record (bcc)",
                                          "filter": {"tids": sorted(tids), "comm": o.comm,
                                                     "system_wide": not tids and o.comm is None},
                                          "page_free_gap_ns": o.pf_gap_ns,
                                          "ring_buffer_bytes": o.rb_pages * os.sysconf("SC_PAGE_SIZE"),
                                          **({} if o.pf_recover else {"page_free_recovery": "off"})})
        for fam in self._families:
            self._writer.declare(fam.table)
        self._start_spill()

        if events.EV_LOCK_WAIT in self._kinds:
            self._lock_wait_tasks()
        self._start_ns = time.monotonic_ns()
        self._misses_at_start = self._misses_now()
        self._recording = True
        self._set_ctl(CTL_RECORDING)  # the probes were attached at load; they record from now on
        if events.EV_LOCK_WAIT in self._kinds:
            self._alive_at_start = all_tids()  # after the start: a task not in it began no wait before
        phase_note("recording: every probe attached; the command runs from now on")
        if cmd is not None:
            cmd.release()
        try:
            self._loop(cmd)
        finally:
            result = self._finish(cmd, skipped + failed)
        return result

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self._recording:
            raise Interrupted(f"{name} during set-up: nothing was recorded", 128 + signum)
        if not self._stop:
            self._stop = True
            self._stop_reason = name

    def _loop(self, cmd: _Command | None) -> None:
        self._consumer_stop = threading.Event()
        self._backlog_ready = threading.Event()
        self._copied_until_ns = time.monotonic_ns()
        consumer = threading.Thread(target=self._consume_loop, name="mmreplay-ringbuf", daemon=True)
        consumer.start()
        self._own_seen.update(_own_tids())
        try:
            self._until_stop(cmd)
        finally:
            self._consumer_stop.set()
            consumer.join()

    def _until_stop(self, cmd: _Command | None) -> None:
        """Decode and write every WRITE_EVERY_S, show progress, until a stop condition."""
        o = self.opts
        deadline = None if o.duration is None else self._start_ns + int(o.duration * 1e9)
        next_write = time.monotonic() + WRITE_EVERY_S
        next_progress = next_trim = time.monotonic() + 1.0
        last_events, last_t = 0, time.monotonic()
        while not self._stop:
            # wake for the next write only (or the deadline): the main thread's wake-ups also take a CPU
            wake = next_write - time.monotonic()
            if deadline is not None:
                wake = min(wake, (deadline - time.monotonic_ns()) / 1e9)
            full = self._backlog_ready.wait(min(max(wake, 0.005), WRITE_EVERY_S))
            self._backlog_ready.clear()
            now = time.monotonic_ns()
            if deadline is not None and now >= deadline:
                self._stop_reason = "duration"
                break
            if cmd is not None and cmd.proc.poll() is not None:
                self._stop_reason = f"command exited ({cmd.proc.returncode})"
                break
            if full or time.monotonic() >= next_write:
                # rows still in the ring buffer (the reader was held back or starved) must not come after
                # younger rows already written: the watermark follows what has been copied, not the clock
                self._spill_or_write(min(now, self._copied_until_ns) - WATERMARK_LAG_NS)
                next_write = time.monotonic() + WRITE_EVERY_S
                if next_write >= next_trim:
                    if self._spill is None or self._decoded_live:  # spilling alone frees nothing (~7 ms a trim)
                        trim_heap()
                        self._decoded_live = False
                    next_trim = next_write + TRIM_EVERY_S
            if o.progress and time.monotonic() >= next_progress:
                t = time.monotonic()
                lost = sum(s[1] for s in self._stats().values())
                seen = self._events + self._spill_events
                rate = (seen - last_events) / (t - last_t)
                sys.stderr.write(f"\rmmreplay: recording {(time.monotonic_ns() - self._start_ns) / 1e9:7.1f} s  "
                                 f"{seen:>12,} events  {rate:>10,.0f} ev/s  lost {lost}   ")
                sys.stderr.flush()
                last_events, last_t, next_progress = seen, t, t + 1.0
        if not self._stop_reason:
            self._stop_reason = "signal"

    def _finish(self, cmd: _Command | None, not_recorded: list[Probe]) -> RecordResult:
        if self.opts.progress:
            sys.stderr.write("\n")
        self._detach()
        stop_ns = self._stop_ns
        status = cmd.stop() if cmd is not None else None
        w = self._writer
        probes: list[Probe] = []
        try:
            # everything in the ring buffer, a backlog at a time; the last rows wait for the partly filled
            # batches (up to a flush period older) to be sorted with them
            # what was recorded, decoded now that the workload no longer competes for the CPUs
            self._unspill(stop_ns - WATERMARK_LAG_NS)
            self._backlog_full = True
            while self._backlog_full:
                self._backlog_full = False
                self._bpf.ring_buffer_consume()
                self._drain_and_write(stop_ns - WATERMARK_LAG_NS)
            self._leftovers(stop_ns)
            self._write(None)
            if self._t2:
                self._tier2_finish(stop_ns)
            stats = self._stats()
            if self._stack_ids:
                ids = sorted(self._stack_ids)
                w.write("stacks", {"stack_id": pa.array(ids, pa.int32()),
                                   "ips": pa.array([self._stack(i) for i in ids], pa.list_(pa.uint64()))})
            addrs = {ip for i in self._stack_ids for ip in self._stack(i)} | {a for a in self._ipi_addrs if a}
            self._symbols(addrs)
            w.write("tasks", self._tasks())
            loss = self._loss(stats)
            for fam in self._families:
                ev, _refused, unmatched, _rec = stats.get(fam.kind, (0, 0, 0, 0))
                lp = loss[fam.name]
                probes.append(Probe(fam.name, fam.tier, status="recorded", events=ev,
                                    lost=sum(lp[r] for r in LOST_REASONS),
                                    unmatched=unmatched + self._unmatched_extra.get(fam.kind, 0),
                                    recorder=sum(lp[r] for r in RECORDER_REASONS),
                                    reason=f"{self._plan.mode(fam.name)} tracepoints"))
            overflow = stats.get(0, (0, 0, 0, 0))[1]
            w.manifest.extra["lost_breakdown"] = {r: {n: v[r] for n, v in loss.items()}
                                                  for r in (*LOST_REASONS, *RECORDER_REASONS)}
            self._refused = sum(v["ring_buffer_refused"] for v in loss.values())
            if events.EV_SCHED_SWITCH in self._kinds:
                w.manifest.extra["not_emitted_by_kernel"] = self._not_emitted(loss["sched_switch"][NOT_EMITTED])
            if overflow:  # not attributable to a probe: reported, and counted once as lost below
                w.manifest.extra["lost_breakdown"]["nesting_overflow"] = overflow
                probes.append(Probe("nesting overflow", 1, status="recorded", lost=overflow,
                                    reason="events of a CPU that ran out of nesting levels"))
            start, stop = getattr(self, "_misses_at_start", {}), getattr(self, "_misses_at_stop", {})
            misses = {tp: stop[tp] - start.get(tp, 0) for tp in stop if not tp.startswith("recovered:")}
            if any(misses.values()):  # per program: which tracepoint's hits the kernel skipped (issue #11)
                w.manifest.extra["recursion_misses"] = {tp: n for tp, n in misses.items() if n > 0}
            if any(self._recovered.values()):  # skipped by the main program, recorded by its backup
                w.manifest.extra["recursion_recovered"] = self._recovered
            helpers = backup_programs(start, stop)
            if helpers:
                w.manifest.extra["backup_programs"] = helpers
            w.manifest.extra["attach"] = {f.name: self._plan.mode(f.name) for f in (*self._families, programs.TASKS)}
            why = dict(self._plan.why_classic)
            if any(why.get(f.name) for f in self._families):
                w.manifest.extra["attach_classic_why"] = {f.name: why[f.name] for f in self._families if f.name in why}
            cost = self._probe_cost()
            if cost:
                w.manifest.extra["probe_cost"] = cost
            tail = self._mmap_lock_tail()
            if tail:
                w.manifest.extra["mmap_lock_tail"] = tail
            probes += not_recorded + self._t2_probes
        finally:
            # whatever failed above, what was written stays a valid, finalized trace
            for p in probes:
                w.add_probe(p)
            w.manifest.extra["stop_reason"] = self._stop_reason
            w.manifest.extra["decoding"] = {"mode": self.opts.decode, **self._decoding}
            if self.notes.changes:
                w.manifest.extra["host_changes"] = list(self.notes.changes)
            m = w.close(start_ns=self._start_ns, end_ns=stop_ns)
            from tracer.tier2 import phase

            with phase("stop: detach and unload every probe"):
                self._bpf.cleanup()
        dur = (stop_ns - self._start_ns) / 1e9
        return RecordResult(
            path=self.opts.output, duration_s=dur, events=self._events, lost=m.lost_events,
            rows={n: e.rows for n, e in m.tables.items()}, probes=probes, command_status=status,
            stop_reason=self._stop_reason,
            drain_events_per_s=self._events / self._drain_s if self._drain_s else 0.0,
            notes=list(self.notes.changes), ring_buffer_refused=getattr(self, "_refused", 0),
        )

    def _prog_fds(self, fam: programs.Family) -> dict[str, int]:
        """tracepoint -> fd of the loaded program attached to it."""
        fds = {}
        if self._plan.mode(fam.name) == "raw":
            for ev, _ in fam.raw:
                fn = self._bpf.funcs.get(f"raw_tracepoint__{ev}".encode())
                if fn is not None:  # named as the classic tracepoint it stands for
                    tp = next((t for t in fam.tracepoints if t.endswith(f":{ev}")), f"raw_syscalls:{ev}")
                    fds[tp] = fn.fd
            return fds
        for tp in fam.tracepoints:
            cat, ev = tp.split(":", 1)
            fn = self._bpf.funcs.get(f"tracepoint__{cat}__{ev}".encode())
            if fn is not None:
                fds[tp] = fn.fd
        return fds

    def _recursion_misses(self, fam: programs.Family) -> int:
        """Hits the kernel skipped because a BPF program already ran on the CPU (bpf_prog_info.recursion_misses):
        for raw tracepoints the same program (per-program guard), for classic ones any program (one global
        per-CPU guard). Counted before the task filter: an upper bound for the recorded tasks."""
        start, stop = getattr(self, "_misses_at_start", {}), getattr(self, "_misses_at_stop", {})
        return sum(max(0, stop.get(tp, 0) - start.get(tp, 0)) for tp in self._prog_fds(fam))

    def _misses_now(self, stop: bool = False) -> dict[str, int]:
        """tracepoint -> the kernel's recursion-miss count of its program so far, and "recovered:<family>" ->
        the skipped hits its backup program saw so far: the programs run (filtered out) from load to detach,
        so a recording's misses and recoveries are the differences between the same two moments, its start
        and stop (a miss outside the recording is then also a recovery outside it, never a loss).

        The backup sees a skipped hit just after the kernel counts the miss: at the start the misses are read
        first and at the stop last, so a hit between the two reads can only count as lost, never hide one."""
        def misses() -> dict[str, int]:
            return {tp: prog_recursion_misses(fd) for fam in self._families for tp, fd in self._prog_fds(fam).items()}

        def recovered(stop: bool) -> dict[str, int]:
            def records() -> dict[str, int]:
                return {f"recovered:{fam}": sum(int(getattr(v, "value", v)) for v in self._bpf[table][0])
                        for fam, _tp, _fn, table, _pre, _bk in BACKUPS if fam in self._backup_attached}

            # the last program's records after the counters at the stop, before them at the start: a
            # page_free hit the main program left to the last program counts as lost until recorded
            out = records() if stop else {}
            for fam, _tp, _fn, _table, _pre, bk in BACKUPS:
                if f"backup:{fam}" in self._helper_progs:
                    table = self._bpf[bk]
                    for i, name in enumerate(BACKUP_COUNTERS[fam]):
                        out[f"recovered:bk:{fam}:{name}"] = sum(int(getattr(v, "value", v)) for v in table[i])
            if not stop:
                out.update(records())
            # the helper programs' own skips: a hit in the first program's window is not pushed (the main
            # program then pushes it marked), one in the backup's window leaves a slot behind
            out.update({f"recovered:skips:{k}": prog_recursion_misses(fd) for k, fd in self._helper_progs.items()})
            return out

        if stop:
            seen = recovered(True)
            return {**seen, **misses()}
        first = misses()
        return {**first, **recovered(False)}

    def _loss(self, stats: dict[int, tuple[int, int, int, int]]) -> dict[str, dict[str, int]]:
        """Per family: what was lost (LOST_REASONS) and what the recorder caused and dropped (RECORDER_REASONS).

        A contention_begin/end that fires while one of our programs runs is on a lock that program took
        (a map's, the ring buffer's): the kernel side counts it as the recorder's, and the recursion skips
        of the lock_contention programs are those same contentions seen by the program already running.
        Every other family's skips are a hit of some task that came while the same program ran (an
        interrupt's TLB flush in the middle of a flush's program): lost."""
        out: dict[str, dict[str, int]] = {}
        self._recovered: dict[str, int] = {}
        for fam in self._families:
            _ev, refused, _unmatched, in_kernel = stats.get(fam.kind, (0, 0, 0, 0))
            misses = self._recursion_misses(fam)
            backup = next((b for b in BACKUPS if b[0] == fam.name), None)
            if backup is not None and fam.name in self._backup_attached:
                # the backup program recorded the skipped hits it saw; its own skips are hits the main
                # program took (they come while the backup runs, after the main one has finished)
                key = f"recovered:{fam.name}"
                start, stop = getattr(self, "_misses_at_start", {}), getattr(self, "_misses_at_stop", {})
                recovered = max(0, stop.get(key, 0) - start.get(key, 0))
                # page_free's main program leaves a hit to the last program when it finds no free slot
                # (bpf/mmr_bk_slots.h): the last program records those too
                deferred = f"recovered:bk:{fam.name}:deferred"
                misses += max(0, stop.get(deferred, 0) - start.get(deferred, 0))
                misses = max(0, misses - recovered)
                self._recovered[fam.name] = recovered
            own = fam.name == "lock_contention"
            unreported = 0  # not emitted by the kernel: never lost (NOT_EMITTED)
            if fam.kind == events.EV_SCHED_SWITCH:
                # a recorded task's switch the kernel ran without an event (tracer/switch_gaps.py), less the
                # ones already counted as refused or skipped (those leave the same gap)
                unreported = max(0, self._switch_gaps.missing - refused - misses)
            out[fam.name] = {
                "ring_buffer_refused": refused,
                "bpf_recursion_skipped": 0 if own else misses,
                NOT_EMITTED: unreported,
                "recorder_in_kernel": in_kernel,
                "recorder_bpf_recursion": misses if own else 0,
                "recorder_wakeups": self._recorder_wakeups if fam.kind == events.EV_SCHED_WAKEUP else 0,
            }
        return out

    def _not_emitted(self, switches: int) -> dict[str, Any]:
        """The recorded tasks' switches the kernel made without a sched_switch event (tracer/switch_gaps.py),
        and, for each missing switch-in, the task its earlier switch-out went to (whose own switch-out the
        kernel did not report either): "<comm> (pid P)" -> gaps, "?" for a task gone or unknown."""
        after: dict[str, int] = {}
        for tid in self._switch_gaps.gap_next:
            t = _proc_task(tid) if tid > 0 else None
            key = f"{t[1]} (pid {t[0]})" if t is not None else "?"
            after[key] = after.get(key, 0) + 1
        return {"sched_switch": switches, "after_switch_to": after}

    def _probe_cost(self) -> dict[str, dict[str, int]]:
        """tracepoint -> {"runs", "run_ns"}: how often and how long each program ran, for the programs the
        kernel timed (only while its BPF statistics are on; the time each probe adds to the traced code)."""
        cost = {}
        for fam in self._families:
            for tp, fd in self._prog_fds(fam).items():
                runs, ns = prog_run_stats(fd)
                if runs:
                    cost[tp] = {"runs": runs, "run_ns": ns}
        # the first and last programs beside a family's own (BACKUPS): what they add to each of its hits
        names = {fam: next((t for f in self._families for t in f.tracepoints if t.endswith(f":{tp.decode()}")),
                           tp.decode()) for fam, tp, *_ in BACKUPS}  # e.g. page_free -> kmem:mm_page_free
        for key, fd in self._helper_progs.items():
            role, fam = key.split(":", 1)
            tp = names.get(fam, fam)
            runs, ns = prog_run_stats(fd)
            if runs:
                cost[f"{tp} ({'first' if role == 'pre' else 'backup'})"] = {"runs": runs, "run_ns": ns}
        return cost

    def _mmap_lock_tail(self) -> dict[str, dict[str, int]]:
        """{"release"|"downgrade": {"samples", "ns"}}: the mmap_lock programs' time after their timestamp, which
        still holds the lock (bpf/mmap_lock.c mmr_ml_tail, sampled), summed over the CPUs; {} without them."""
        if not any(f.name == "mmap_lock" for f in self._families):
            return {}
        try:
            table = self._bpf["mmr_ml_tail"]
            v = [sum(int(getattr(x, "value", x)) for x in table[i]) for i in range(4)]
        except (KeyError, OSError, IndexError):
            return {}
        return {name: {"samples": v[k + 1], "ns": v[k]} for name, k in (("release", 0), ("downgrade", 2))
                if v[k + 1]}

    def _tier2_plan(self, bcc: Any) -> None:
        """Which tier-2 families to record and in which mode (tracer.tier2), and Probe rows for the others.

        tier2.plan_in_child() compiles each family once, in a child process, to learn whether and how it
        loads (then cached per boot).
        """
        self._t2, self._t2_probes = [], []
        if not self.opts.check_tier2:
            self._t2_probes = [Probe("tier2", 2, status="skipped", reason="not checked (--no-tier2-check)")]
            return
        try:
            from tracer import tier2
        except ImportError:
            return
        try:
            statuses = tier2.plan_in_child()  # the compilation's memory stays out of the recorder's RSS
            rows = [st.row() for st in statuses]
        except Exception as e:  # noqa: BLE001 - a detection failure must not stop tier 1
            self._t2_probes = [Probe("tier2", 2, status="skipped", reason=f"detection failed: {e}")]
            return
        usable = [(st.family, st.mode) for st in statuses if st.mode]
        # one program, one MMR_T2_FENTRY: record the families of one attach mode (fentry preferred)
        fentry = any(m == "fentry" for _, m in usable)
        self._t2 = [(f, m) for f, m in usable if (m == "fentry") == fentry]
        chosen = {f"tier2:{f.name}" for f, _ in self._t2}
        for name, ok, reason, _fix in rows:
            if name not in chosen:
                why = reason if not ok else "works only in the other attach mode than the recorded tier-2 families"
                self._t2_probes.append(Probe(name, 2, status="skipped", reason=why))

    def _tier2_attach(self) -> None:
        from tracer import tier2

        attached = []
        for fam, mode in self._t2:
            try:
                with kernel_env.captured_stderr():
                    tier2.attach(self._bpf, fam, mode)
                attached.append((fam, mode))
            except Exception as e:  # noqa: BLE001
                self._t2_probes.append(Probe(f"tier2:{fam.name}", 2, status="failed",
                                             reason=f"attach failed: {str(e).splitlines()[0][:200]}"))
        self._t2 = attached

    def _tier2_finish(self, stop_ns: int) -> None:
        """Decode, classify and write the tier-2 tables; a failure here fails tier 2 only."""
        from tracer import tier2

        fams = [f for f, _ in self._t2]
        try:
            by_kind = {k: events.records(np.concatenate([events.words(p) for p in parts]), events.KIND_DTYPES[k])
                       for k, parts in self._t2_parts.items() if parts}
            dec = tier2.decode_tables(by_kind, self._bpf, fams, self._start_ns, stop_ns,
                                      tier1_mmap_lock=events.EV_LOCK_HOLD in self._kinds)
            if dec.holds is not None and len(dec.holds.columns["ts"]):
                ids = {int(i) for i in np.unique(dec.holds.columns["stack_id"]) if i >= 0}
                self._stack_ids |= ids
                import polars as pl

                stacks = pl.DataFrame({"stack_id": sorted(ids), "ips": [self._stack(i) for i in sorted(ids)]},
                                      schema={"stack_id": pl.Int32, "ips": pl.List(pl.UInt64)})
                tier2.classify_holds(dec.holds, stacks, self._kallsyms)
            for table, cols in dec.tables.items():
                self._writer.write(table, cols)
            for fam, mode in self._t2:
                n = sum(len(by_kind[k]) for k in fam.kinds if k in by_kind)
                cut = dec.cut_by_start.get(fam.table, 0) + dec.cut_by_stop.get(fam.table, 0)
                why = f"{mode} mode"
                if fam.name == "lock_holds" and dec.holds is not None:  # rows tracer.tier2 left out, said
                    why += (f"; left out: {dec.holds.other_left_out} holds of sleeping locks no class names, "
                            f"{dec.holds.mmap_lock_left_out} of other tasks' mmap_lock (tier 1 has them)")
                self._t2_probes.append(Probe(f"tier2:{fam.name}", 2, status="recorded", reason=why,
                                             events=n, unmatched=cut))
        except Exception as e:  # noqa: BLE001
            self._t2_probes += [Probe(f"tier2:{f.name}", 2, status="failed", reason=f"decoding failed: {e}")
                                for f in fams]


class _BpfProgInfo(ctypes.Structure):
    # struct bpf_prog_info up to recursion_misses (include/uapi/linux/bpf.h); offsets are ABI.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
                ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
                ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64),
                ("recursion_misses", ctypes.c_uint64)]


def backup_programs(start: dict[str, int], stop: dict[str, int]) -> dict[str, dict[str, int]]:
    """How each family's first and last programs fared over the recording (manifest extra.backup_programs):
    family -> {BACKUP_COUNTERS..., "pre_skipped", "backup_skipped"}, from the two snapshots of
    Recorder._misses_now ("recovered:bk:<family>:<counter>", "recovered:skips:<pre|backup>:<family>")."""
    out: dict[str, dict[str, int]] = {}
    for k in stop:
        if k.startswith("recovered:bk:"):
            _, _, fam, name = k.split(":", 3)
            out.setdefault(fam, {})[name] = stop[k] - start.get(k, 0)
        elif k.startswith("recovered:skips:"):
            _, _, role, fam = k.split(":", 3)
            out.setdefault(fam, {})[f"{role}_skipped"] = stop[k] - start.get(k, 0)
    return out


def prog_recursion_misses(fd: int) -> int:
    """bpf_prog_info.recursion_misses of a loaded program (0 if the kernel cannot tell)."""
    info = prog_info(fd)
    return int(info.recursion_misses) if info is not None else 0


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_cnt, run_time_ns) of a loaded program: counted only while the kernel's BPF run-time
    statistics are on (sysctl kernel.bpf_stats_enabled or a BPF_ENABLE_STATS fd), else (0, 0)."""
    info = prog_info(fd)
    return (int(info.run_cnt), int(info.run_time_ns)) if info is not None else (0, 0)


BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


@contextlib.contextmanager
def bpf_run_stats() -> Iterator[bool]:
    """Turn on the kernel's BPF run-time statistics (libbpf's bpf_enable_stats) for the duration of the block.

    They are system-wide (every program costs two clock reads more per run) and end when the
    returned fd is closed. Yields False when the kernel or libbpf refuses (not root, old kernel, no libbpf)."""
    lib = kernel_env.libbpf()
    fd = -1
    if lib is not None and hasattr(lib, "bpf_enable_stats"):
        lib.bpf_enable_stats.argtypes = [ctypes.c_int]
        lib.bpf_enable_stats.restype = ctypes.c_int
        fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
#: Buffers at least this big get their own mapping, unmapped when freed (glibc: 128 KiB, raised on the fly to 32 MiB).
MMAP_THRESHOLD = 256 << 10


def lean_allocators() -> None:
    """Make the decoding buffers go back to the kernel when freed, so the recorder's RSS follows what it holds.

    Every 0.2 s the recorder allocates and frees a few MiB of numpy and Arrow buffers. glibc raises its mmap
    threshold each time a big mapped buffer is freed, after which such buffers come from the heap and the
    heap's high water stays resident; pyarrow's mimalloc pool keeps freed segments too. A fixed threshold
    and Arrow's system (malloc) pool keep them from doing so.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    pa.set_memory_pool(pa.system_memory_pool())


def trim_heap() -> None:
    """glibc's malloc_trim(0): the free pages of every malloc arena back to the kernel (not only the top)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


MADV_DONTNEED, MADV_PAGEOUT = 4, 21  # include/uapi/asm-generic/mman-common.h (Linux 5.4+)
#: The shared objects of bcc's in-process compiler (clang and LLVM): used while the programs compile, idle after.
COMPILER_LIBS = ("libLLVM", "libclang")


def _advise_mappings(advice_of: Callable[[str, str], int | None], unwritten_only: bool = False) -> int:
    """madvise every mapping of /proc/self/maps for which advice_of(perms, path) gives an advice; bytes advised.

    unwritten_only: skip a mapping that holds any page of its own (smaps' "Anonymous" > 0: a private file
    mapping written to, e.g. text relocations or a debugger's breakpoints), which MADV_DONTNEED would discard."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open("/proc/self/smaps" if unwritten_only else "/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    maps: list[tuple[str, str, str, int]] = []  # (range, perms, path, anonymous kB)
    for line in lines:
        parts = line.split(maxsplit=5)
        if parts and parts[0] == "Anonymous:" and maps:
            maps[-1] = (*maps[-1][:3], int(parts[1]))
        elif len(parts) >= 5 and "-" in parts[0] and not parts[0].endswith(":"):
            maps.append((parts[0], parts[1], parts[5] if len(parts) > 5 else "", 0))
    advised = 0
    for span, perms, path, anonymous in maps:
        advice = advice_of(perms, path)
        if advice is None or (unwritten_only and anonymous):
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        if libc.madvise(lo, hi - lo, advice) == 0:  # PAGEOUT: EINVAL before 5.4
            advised += hi - lo
    return advised


def release_code_pages() -> int:
    """Drop every shared library's code pages from the recorder's RSS before bcc compiles; bytes advised.

    Loading bcc maps clang and LLVM, and the recorder's imports (numpy, pyarrow) page in code that the
    compilation does not run; their pages and the compiler's add up to the recorder's peak (VmHWM 233 MiB
    measured, 179 without them). Code mappings (r-x, private, from a file) are dropped with MADV_DONTNEED:
    it only unmaps the pages from this process (the page cache keeps them, and other processes sharing
    them keep theirs), and a page run again is mapped back from the page cache. MADV_PAGEOUT would not do:
    it leaves alone pages other processes map too (libc's, libpython's), so the RSS would keep them. A
    mapping with a page of its own (written: text relocations, a breakpoint) is skipped, since
    MADV_DONTNEED would throw that page away (issue #11 review)."""
    return _advise_mappings(lambda perms, path: MADV_DONTNEED if perms == "r-xp" and path.startswith("/") else None,
                            unwritten_only=True)


def release_compiler_memory() -> int:
    """Give back the memory the BPF compilation left resident, once the programs are loaded; bytes advised.

    bcc compiles in this process: clang's and LLVM's code (~80 MiB of file pages touched) and the heap the
    compilation freed would stay in the recorder's RSS for the whole recording. glibc's malloc_trim returns
    the freed heap. The compiler libraries' code (r-x: never written, so every page is the file's) is dropped
    with MADV_DONTNEED, their other mappings get MADV_PAGEOUT (a reclaim hint that keeps written pages);
    a page used again is read back from the page cache, so nothing is lost whatever happens later."""
    trim_heap()

    def advice(perms: str, path: str) -> int | None:
        if not any(lib in path.rsplit("/", 1)[-1] for lib in COMPILER_LIBS):
            return None
        return MADV_DONTNEED if perms.startswith("r-x") and perms[3] == "p" else MADV_PAGEOUT

    return _advise_mappings(advice)


def prog_info(fd: int) -> _BpfProgInfo | None:
    """The kernel's bpf_prog_info of a loaded program, through libbpf's bpf_obj_get_info_by_fd (None if it
    cannot tell). The kernel fills only as much of the struct as it knows, and zeroes the rest."""
    lib = kernel_env.libbpf()
    if lib is None or not hasattr(lib, "bpf_obj_get_info_by_fd"):
        return None
    info = _BpfProgInfo()
    length = ctypes.c_uint32(ctypes.sizeof(info))
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.bpf_obj_get_info_by_fd.restype = ctypes.c_int
    if lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
        return None
    return info


def record(opts: RecordOptions) -> RecordResult:
    """Record until the duration ends, the command exits, or SIGINT/SIGTERM; always finalize."""
    return Recorder(opts).run()
