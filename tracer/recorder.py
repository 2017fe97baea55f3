"""The live recorder: load the BPF probe families, drain batches in bulk, write a trace.

Data path (no Python call per event): BPF programs fill a per-CPU batch of
256 slots and submit it as one ring-buffer record without waking anyone; a
reader thread copies records out every few ms; every 0.5 s the main thread
decodes them with numpy (tracer/events.py), splits them by kind, sorts each
table by (ts, seq) and writes the rows older than a watermark as one chunk
per table. Interval rows (holds, waits, syscalls, bursts) are emitted when
they end, so they are sorted within each chunk only.

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
import os
import shutil
import signal
import subprocess
import sys
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

FLUSH_PERIOD_NS = 100_000_000  # per-CPU partial-batch flush (cpu-clock perf event)
WATERMARK_LAG_NS = 300_000_000  # rows older than now - lag are written out (flush period + slack)
WRITE_EVERY_S = 0.2  # small steps keep the decoding buffers small
POLL_S = 0.005  # ring-buffer consume period (the probes submit without wakeups, see mmr_submit)
CHUNK_ROWS = 1 << 20  # force a write when this many rows are buffered in one table
MAX_BACKLOG_BYTES = 64 << 20  # copied but not yet decoded; beyond it the ring buffer holds the backlog
CTL_RECORDING, CTL_STOPPED = 1, 2  # mmr_ctl[0] (bpf/mmr_common.h); 0: not started yet


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
    rb_pages: int = 16384  # 64 MiB: ~1M events, >0.5 s of the fastest drain rate measured here
    vmlinux: Path | None = None
    check_tier2: bool = True  # detect tier 2 (cached per boot) and record the families that work
    probe_cost: bool = False  # time every probe (kernel BPF statistics, system-wide while recording)


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
        self._copied_bytes = self._decoded_bytes = 0  # their difference: the backlog
        self._pending: dict[int, list[np.ndarray]] = {}
        self._pending_rows: dict[int, int] = {}
        self._tids: set[int] = set()
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
        """Load all families at once (with the usable tier-2 ones); if that fails, drop tier 2, then find
        and skip the tier-1 families that do not load."""
        kw = {"rb_pages": self.opts.rb_pages, "pf_gap_ns": self.opts.pf_gap_ns}
        if self._t2:
            from tracer import tier2

            fentry = self._t2[0][1] == "fentry"
            try:
                with kernel_env.captured_stderr():
                    b = programs.load(bcc, families, flt, extra_text="\n".join(tier2.c_text(f) for f, _ in self._t2),
                                      extra_cflags=tier2.cflags(fentry), **kw)
                return b, families, []
            except Exception as e:  # noqa: BLE001
                self._t2_probes += [Probe(f"tier2:{f.name}", 2, status="failed",
                                          reason=f"loading with tier 1 failed: {str(e).splitlines()[0][:200]}")
                                    for f, _ in self._t2]
                self._t2 = []
        try:
            return programs.load(bcc, families, flt, **kw), families, []
        except Exception:  # noqa: BLE001 - bcc raises bare Exception for compile/verifier/attach failures
            pass
        ok, failed = [], []
        for fam in families:
            with kernel_env.captured_stderr():
                try:
                    programs.load(bcc, [fam], flt, flush=False, **kw).cleanup()
                    ok.append(fam)
                except Exception as e:  # noqa: BLE001
                    failed.append(Probe(fam.name, fam.tier, status="failed", reason=str(e).splitlines()[0][:200]))
        if not ok:
            raise kernel_env.EnvironmentProblem("probes", "no tier-1 probe family loads here",
                                                "run 'mmreplay doctor' for the reason of each")
        return programs.load(bcc, ok, flt, **kw), ok, failed

    # -- data path --------------------------------------------------------------

    def _on_record(self, ctx: Any, data: Any, size: int) -> int:
        self._raw.append(ctypes.string_at(data, size))
        self._copied_bytes += size  # written by the consumer thread only
        return 0

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
        self._pending.setdefault(kind, []).append(rec)
        self._pending_rows[kind] = self._pending_rows.get(kind, 0) + len(rec)
        self._events += len(rec)

    def _consume_loop(self) -> None:
        """Consumer thread: copy ring-buffer records out every few ms, so that decoding and writing
        (main thread) never leave the ring buffer to fill up. ctypes drops the GIL while polling."""
        while not self._consumer_stop.is_set():
            if self._copied_bytes - self._decoded_bytes < MAX_BACKLOG_BYTES:
                self._bpf.ring_buffer_consume()
            # else: decoding is behind; let the kernel ring buffer hold (and, if full, count) the rest
            self._consumer_stop.wait(POLL_S)

    def _drain(self) -> None:
        if self._raw:
            t = time.perf_counter()
            n = len(self._raw)  # the consumer thread only appends
            raw = b"".join(self._raw[:n])
            del self._raw[:n]
            self._decoded_bytes += len(raw)  # written by the main thread only
            self._absorb(raw)
            self._drain_s += time.perf_counter() - t

    def _write(self, watermark: int | None) -> None:
        """Write pending rows with ts < watermark (all if None), sorted, one chunk per table."""
        t = time.perf_counter()
        for kind, parts in list(self._pending.items()):
            if not parts:
                continue
            dt = events.KIND_DTYPES[kind]
            rec = parts[0] if len(parts) == 1 else events.records(np.concatenate([events.words(p) for p in parts]), dt)
            # one gather (as uint64 words: fast), then the watermark split is by slicing
            rec = events.records(events.words(rec)[np.lexsort((rec["seq"], rec["ts"]))], dt)
            if watermark is not None and self._pending_rows.get(kind, 0) < CHUNK_ROWS:
                cut = int(np.searchsorted(rec["ts"], watermark))
                if cut == 0:
                    self._pending[kind] = [rec]
                    continue
                keep, rec = events.records(events.words(rec[cut:]).copy(), dt), rec[:cut]
                self._pending[kind] = [keep] if len(keep) else []
                self._pending_rows[kind] = len(keep)
            else:
                self._pending[kind], self._pending_rows[kind] = [], 0
            self._emit(kind, rec)
        self._drain_s += time.perf_counter() - t

    def _emit(self, kind: int, rec: np.ndarray) -> None:
        fam = programs.FAMILIES_BY_KIND[kind]
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
            self._stack_cache[stack_id] = ips
        return ips

    # -- stop -------------------------------------------------------------------

    def _detach(self) -> None:
        b = self._bpf
        self._set_ctl(CTL_STOPPED)  # stop recording now; detaching takes a while
        self._stop_ns = time.monotonic_ns()
        # Each detach waits for an RCU grace period; do them side by side (the close releases the GIL).
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(b.detach_tracepoint, list(b.tracepoint_fds)))
        try:
            b.detach_perf_event(ev_type=self._bcc.PerfType.SOFTWARE, ev_config=self._bcc.PerfSWConfig.CPU_CLOCK)
        except Exception:  # noqa: BLE001 - never attached
            pass

    def _set_ctl(self, state: int) -> None:
        ctl = self._bpf["mmr_ctl"]
        ctl[ctl.Key(0)] = ctl.Leaf(state)

    def _per_cpu_bytes(self, name: str) -> list[bytes]:
        """The raw per-CPU values of a one-entry per-CPU array map."""
        vals = self._bpf[name][0]
        return [ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v)) for v in vals]

    def _leftovers(self, stop_ns: int) -> None:
        """Partly filled batches, open page-free bursts and open intervals, as rows."""
        for raw in self._per_cpu_bytes("mmr_batches"):
            self._absorb(raw)
        b = self._bpf
        if events.EV_PAGE_FREE in self._kinds:
            rows = []
            for cpu, v in enumerate(b["mmr_pf_bursts"][0]):
                if v.active:
                    rows.append((v.first_ts, v.seq, v.pid, v.tid, cpu, v.batched, v.last_ts - v.first_ts, v.pages))
            self._add_rows(events.EV_PAGE_FREE, rows, ("ts", "seq", "pid", "tid", "cpu", "batched", "dur", "pages"),
                           events.F_INCOMPLETE)
        if events.EV_LOCK_HOLD in self._kinds:
            rows, waiting = [], 0
            for k, v in b["mmr_mmap_lock"].items():
                if v.held:
                    rows.append((v.acq_ts, v.seq, v.pid, k.tid, v.cpu, stop_ns - v.acq_ts, v.wait, k.mm, v.depth,
                                 v.write, 1, 1, -1))
                else:
                    waiting += 1
            self._add_rows(events.EV_LOCK_HOLD, rows,
                           ("ts", "seq", "pid", "tid", "cpu", "dur", "wait", "lock_addr", "depth", "mode", "success",
                            "lock_class", "stack_id"), events.F_INCOMPLETE)
            self._unmatched_extra[events.EV_LOCK_HOLD] = waiting
        if events.EV_LOCK_WAIT in self._kinds:
            rows = [(v.ts, v.seq, v.pid, k.tid, v.cpu, stop_ns - v.ts, k.addr, v.flags, 0, v.begins, v.stack_id)
                    for k, v in b["mmr_contention"].items()]
            self._add_rows(events.EV_LOCK_WAIT, rows,
                           ("ts", "seq", "pid", "tid", "cpu", "dur", "lock_addr", "lcb_flags", "ret", "begins",
                            "stack_id"), events.F_INCOMPLETE)
        if events.EV_SYSCALL in self._kinds:
            rows = [(v.ts, v.seq, v.pid, k.value, v.cpu, stop_ns - v.ts, v.nr, v.arg0, v.arg1, 0)
                    for k, v in b["mmr_sys_open"].items()]
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

    def _stats(self) -> dict[int, tuple[int, int, int]]:
        out: dict[int, tuple[int, int, int]] = {}
        table = self._bpf["mmr_stats"]
        for fam in self._families:
            per_cpu = table[fam.kind]
            out[fam.kind] = (
                sum(int(s.events) for s in per_cpu),
                sum(int(s.lost) for s in per_cpu),
                sum(int(s.unmatched) for s in per_cpu),
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

        self._tier2_plan(bcc)
        self._bpf, self._families, failed = self._load(bcc, families, self._filter)
        b = self._bpf
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
            from replay.symbols import Kallsyms

            self._kallsyms = Kallsyms.load()
        except Exception as e:  # noqa: BLE001 - symbols are optional: classes fall back to "other"
            self._kallsyms = None
            self.notes.say(f"no kernel symbols ({e}); lock classes of waits will be 'other'")
        self._classify = _lock_classifier(self._kallsyms, self._stack)

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
                                          "page_free_gap_ns": o.pf_gap_ns})
        for fam in self._families:
            self._writer.declare(fam.table)

        self._start_ns = time.monotonic_ns()
        self._recording = True
        self._set_ctl(CTL_RECORDING)  # the probes were attached at load; they record from now on
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
        consumer = threading.Thread(target=self._consume_loop, name="mmreplay-ringbuf", daemon=True)
        consumer.start()
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
        next_progress = time.monotonic() + 1.0
        last_events, last_t = 0, time.monotonic()
        while not self._stop:
            time.sleep(0.05)
            now = time.monotonic_ns()
            if deadline is not None and now >= deadline:
                self._stop_reason = "duration"
                break
            if cmd is not None and cmd.proc.poll() is not None:
                self._stop_reason = f"command exited ({cmd.proc.returncode})"
                break
            if time.monotonic() >= next_write:
                self._drain()
                self._write(now - WATERMARK_LAG_NS)
                next_write = time.monotonic() + WRITE_EVERY_S
            if o.progress and time.monotonic() >= next_progress:
                t = time.monotonic()
                lost = sum(s[1] for s in self._stats().values())
                rate = (self._events - last_events) / (t - last_t)
                sys.stderr.write(f"\rmmreplay: recording {(time.monotonic_ns() - self._start_ns) / 1e9:7.1f} s  "
                                 f"{self._events:>12,} events  {rate:>10,.0f} ev/s  lost {lost}   ")
                sys.stderr.flush()
                last_events, last_t, next_progress = self._events, t, t + 1.0
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
            # everything still in the ring buffer, then the partly filled batches and open intervals
            self._bpf.ring_buffer_consume()
            self._drain()
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
            refused, skipped_hits = {}, {}
            for fam in self._families:
                ev, lost, unmatched = stats.get(fam.kind, (0, 0, 0))
                misses = self._recursion_misses(fam)
                refused[fam.name], skipped_hits[fam.name] = lost, misses
                probes.append(Probe(fam.name, fam.tier, status="recorded", events=ev, lost=lost + misses,
                                    unmatched=unmatched + self._unmatched_extra.get(fam.kind, 0)))
            # Probe.lost = both; they differ in kind: a refused batch is lost data of the recorded tasks,
            # a recursion skip is a tracepoint hit the kernel did not run the program for (another BPF
            # program ran on that CPU), counted before the task filter: an upper bound.
            w.manifest.extra["lost_breakdown"] = {"ring_buffer_refused": refused,
                                                  "bpf_recursion_skipped": skipped_hits}
            cost = self._probe_cost()
            if cost:
                w.manifest.extra["probe_cost"] = cost
            probes += not_recorded + self._t2_probes
        finally:
            # whatever failed above, what was written stays a valid, finalized trace
            for p in probes:
                w.add_probe(p)
            w.manifest.extra["stop_reason"] = self._stop_reason
            if self.notes.changes:
                w.manifest.extra["host_changes"] = list(self.notes.changes)
            m = w.close(start_ns=self._start_ns, end_ns=stop_ns)
            self._bpf.cleanup()
        dur = (stop_ns - self._start_ns) / 1e9
        return RecordResult(
            path=self.opts.output, duration_s=dur, events=self._events, lost=m.lost_events,
            rows={n: e.rows for n, e in m.tables.items()}, probes=probes, command_status=status,
            stop_reason=self._stop_reason,
            drain_events_per_s=self._events / self._drain_s if self._drain_s else 0.0,
            notes=list(self.notes.changes),
        )

    def _prog_fds(self, fam: programs.Family) -> dict[str, int]:
        """tracepoint -> fd of the loaded program attached to it."""
        fds = {}
        for tp in fam.tracepoints:
            cat, ev = tp.split(":", 1)
            fn = self._bpf.funcs.get(f"tracepoint__{cat}__{ev}".encode())
            if fn is not None:
                fds[tp] = fn.fd
        return fds

    def _recursion_misses(self, fam: programs.Family) -> int:
        """Hits the kernel skipped because another BPF program ran on the CPU (bpf_prog_info.recursion_misses)."""
        return sum(prog_recursion_misses(fd) for fd in self._prog_fds(fam).values())

    def _probe_cost(self) -> dict[str, dict[str, int]]:
        """tracepoint -> {"runs", "run_ns"}: how often and how long each program ran, for the programs the
        kernel timed (only while its BPF statistics are on; the time each probe adds to the traced code)."""
        cost = {}
        for fam in self._families:
            for tp, fd in self._prog_fds(fam).items():
                runs, ns = prog_run_stats(fd)
                if runs:
                    cost[tp] = {"runs": runs, "run_ns": ns}
        return cost

    def _tier2_plan(self, bcc: Any) -> None:
        """Which tier-2 families to record and in which mode (tracer.tier2), and Probe rows for the others.

        detect() is cached per boot; the slow statuses() (it compiles each family) runs only when
        detection says some family works, to learn its attach mode.
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
            with kernel_env.captured_stderr():
                rows = tier2.detect(bcc)
                statuses = tier2.statuses(bcc) if any(r[1] for r in rows) else []
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
            dec = tier2.decode_tables(by_kind, self._bpf, fams, self._start_ns, stop_ns)
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
                self._t2_probes.append(Probe(f"tier2:{fam.name}", 2, status="recorded", reason=f"{mode} mode",
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


def prog_recursion_misses(fd: int) -> int:
    """bpf_prog_info.recursion_misses of a loaded program (0 if the kernel cannot tell)."""
    info = prog_info(fd)
    return int(info.recursion_misses) if info is not None else 0


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_cnt, run_time_ns) of a loaded program: counted only while the kernel's BPF run-time
    statistics are on (sysctl kernel.bpf_stats_enabled or a BPF_ENABLE_STATS fd), else (0, 0)."""
    info = prog_info(fd)
    return (int(info.run_cnt), int(info.run_time_ns)) if info is not None else (0, 0)


@contextlib.contextmanager
def bpf_run_stats() -> Iterator[bool]:
    """Turn on the kernel's BPF run-time statistics (BPF_ENABLE_STATS) for the duration of the block.

    They are system-wide (every program costs two clock reads more per run) and end when the
    returned fd is closed. Yields False when the kernel refuses (not root, old kernel, not x86_64)."""
    class _Attr(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    sys_bpf, bpf_enable_stats, bpf_stats_run_time = 321, 32, 0  # x86_64
    fd = -1
    if os.uname().machine == "x86_64":
        attr = _Attr(bpf_stats_run_time)
        fd = libc.syscall(sys_bpf, bpf_enable_stats, ctypes.byref(attr), ctypes.sizeof(attr))
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


def prog_info(fd: int) -> _BpfProgInfo | None:
    """The kernel's bpf_prog_info of a loaded program (None if it cannot tell)."""
    info = _BpfProgInfo()

    class _Attr(ctypes.Structure):
        _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]

    attr = _Attr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    libc = ctypes.CDLL(None, use_errno=True)
    bpf_obj_get_info_by_fd, sys_bpf = 15, 321  # x86_64
    if os.uname().machine != "x86_64":
        return None
    if libc.syscall(sys_bpf, bpf_obj_get_info_by_fd, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None
    return info


def record(opts: RecordOptions) -> RecordResult:
    """Record until the duration ends, the command exits, or SIGINT/SIGTERM; always finalize."""
    return Recorder(opts).run()
