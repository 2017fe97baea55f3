"""Tier-2 probes (fentry/fexit, else kprobes): lock holds, mmu_gather windows, mm_take_all_locks.

Three families, one C file each in bpf/ (tier2_locks.c, tier2_gather.c,
tier2_take_all.c), built on the tier-1 machinery of bpf/mmr_common.h (per-CPU
batches, ring buffer, counters, task filter). Each compiles as fentry programs
(``-DMMR_T2_FENTRY=1``: bcc attaches them as it loads the program) or as plain
functions that ``attach`` hooks to kprobes/kretprobes.

Recording with tier 2:

1. ``plan()`` (``detect()`` gives the same as doctor rows) actually
   compiles, loads and attaches each family on its own (``statuses()``) and
   says in which mode it works, or why not (lockdown, no kprobes, fentry
   refused) and what to do; the answer is cached per boot;
2. the recorder appends ``c_text(family)`` of the usable families to its
   tier-1 program (one ring buffer, one trace-wide ``seq``) and adds
   ``cflags(mode == "fentry")``; a family that failed detection must be left
   out, since a refused fentry program fails the whole load;
3. ``attach(b, family, mode)`` after loading; at stop ``decode_tables`` turns
   the slots (tracer.events.split_batch) and the maps of open windows into
   table columns with numpy, without a Python call per event, and
   ``classify_holds`` names the locks from their stacks.

Lock acquisitions and releases are paired in user space (``pair_lock_edges``:
nesting, holds cut by the start or the stop of the recording); gathers and
mm_take_all_locks arrive paired from the kernel.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replay.trace.schema import TABLES_BY_NAME
from tracer import BPF_DIR, events

# ---- the phase log -----------------------------------------------------------------
# Attaching tier 2 patches kernel text (each fentry site, the BPF trampolines, the kprobes): when a
# kernel hangs around a recording, the question is which phase it was in. MMREPLAY_TIER2_LOG=1 logs
# each phase (compile+load+attach, detach) with its duration to stderr AND to the kernel log
# (/dev/kmsg, root), where its kernel timestamp lines up with a lockup report on the console.

PHASE_LOG_ENV = "MMREPLAY_TIER2_LOG"
KMSG = "/dev/kmsg"
# stderr as it was at import: the phases run inside kernel_env.captured_stderr(), which swallows fd 2
_PHASE_FD: int | None = os.dup(2) if os.environ.get(PHASE_LOG_ENV) == "1" else None


def _phase_say(msg: str) -> None:
    line = f"mmreplay tier2: {msg}\n".encode()
    if _PHASE_FD is not None:
        with contextlib.suppress(OSError):
            os.write(_PHASE_FD, line)
    with contextlib.suppress(OSError):
        fd = os.open(KMSG, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def phase_note(msg: str) -> None:
    """Log one line (only with MMREPLAY_TIER2_LOG=1)."""
    if os.environ.get(PHASE_LOG_ENV) == "1":
        _phase_say(msg)


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """Log ``what`` as it starts and as it ends, with its duration (only with MMREPLAY_TIER2_LOG=1)."""
    if os.environ.get(PHASE_LOG_ENV) != "1":
        yield
        return
    _phase_say(f"{what} ...")
    t0 = time.monotonic()
    try:
        yield
    except BaseException as e:
        _phase_say(f"{what}: failed after {time.monotonic() - t0:.2f} s ({_first_line(e)[:120]})")
        raise
    _phase_say(f"{what}: done in {time.monotonic() - t0:.2f} s")


# ---- the probes -------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One kernel function probed by a family, and the BPF function (kprobe build) that handles it."""

    function: str
    handler: str
    on_return: bool = False  # kretprobe / fexit
    required: bool = True  # the family is unusable without it


@dataclass(frozen=True)
class Family:
    """A tier-2 probe family: its C file, the kernel functions it probes, the table it fills."""

    name: str
    source: str
    table: str
    kinds: tuple[int, ...]
    probes: tuple[Probe, ...]
    raw_tracepoints: tuple[tuple[str, str], ...] = ()  # (tracepoint, handler)
    doc: str = ""
    tier: int = 2

    @property
    def functions(self) -> list[str]:
        return list(dict.fromkeys(p.function for p in self.probes))


#: (function, acquires: entry + return probes / releases: entry probe only, required), as in
#: bpf/tier2_locks.c; the first six are klockstat's core set.
LOCK_FUNCTIONS: tuple[tuple[str, bool, bool], ...] = (
    ("down_read", True, True),
    ("down_write", True, True),
    ("up_read", False, True),
    ("up_write", False, True),
    ("mutex_lock", True, True),
    ("mutex_unlock", False, True),
    ("down_read_killable", True, False),
    ("down_read_interruptible", True, False),
    ("down_read_trylock", True, False),
    ("down_write_killable", True, False),
    ("down_write_trylock", True, False),
    ("mutex_lock_killable", True, False),
    ("mutex_lock_interruptible", True, False),
    ("mutex_trylock", True, False),
    ("downgrade_write", False, False),
)


def _lock_probes() -> tuple[Probe, ...]:
    out: list[Probe] = []
    for fn, acquires, required in LOCK_FUNCTIONS:
        if acquires:
            out.append(Probe(fn, f"mmr_t2_enter_{fn}", False, required))
            out.append(Probe(fn, f"mmr_t2_exit_{fn}", True, required))
        else:
            out.append(Probe(fn, f"mmr_t2_unlock_{fn}", False, required))
    return tuple(out)


FAMILIES: tuple[Family, ...] = (
    Family(
        "lock_holds", "tier2_locks.c", "lock_holds", (events.EV_T2_LOCK_ACQUIRE, events.EV_T2_LOCK_RELEASE),
        _lock_probes(), doc="rw_semaphore and mutex holds per (tid, lock), with wait and nesting depth",
    ),
    Family(
        "gathers", "tier2_gather.c", "gathers", (events.EV_T2_GATHER,),
        (
            Probe("tlb_gather_mmu", "mmr_t2_enter_tlb_gather_mmu"),
            Probe("tlb_gather_mmu_fullmm", "mmr_t2_enter_tlb_gather_mmu_fullmm", required=False),
            Probe("tlb_flush_mmu", "mmr_t2_enter_tlb_flush_mmu"),
            Probe("tlb_finish_mmu", "mmr_t2_exit_tlb_finish_mmu", on_return=True),
        ),
        raw_tracepoints=(("mm_page_free_batched", "mmr_t2_page_free_batched"),),
        doc="mmu_gather windows with their flushes and the pages freed inside",
    ),
    Family(
        "take_all_locks", "tier2_take_all.c", "take_all_locks", (events.EV_T2_TAKE_ALL,),
        (
            Probe("mm_take_all_locks", "mmr_t2_enter_mm_take_all_locks"),
            Probe("mm_take_all_locks", "mmr_t2_exit_mm_take_all_locks", on_return=True),
        ),
        doc="mm_take_all_locks duration (mmu notifier registration)",
    ),
)
FAMILIES_BY_NAME = {f.name: f for f in FAMILIES}

TAKE_ALL_LOCKS_TABLE = TABLES_BY_NAME["take_all_locks"]


# ---- building and loading ------------------------------------------------------------


def gather_takes_range(release: str | None = None) -> bool:
    """Before 5.11 tlb_gather_mmu(tlb, mm, start, end) had no _fullmm variant."""
    release = release or os.uname().release
    try:
        major, minor = (int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (5, 11)


def c_text(family: Family) -> str:
    """The family's C text alone, to append to a tier-1 program (after bpf/mmr_common.h).

    Appending (rather than loading a separate program) shares the tier-1 ring
    buffer, batches and, above all, the trace-wide ``seq`` counter.
    """
    return f"/* ---- {family.source} ---- */\n" + (BPF_DIR / family.source).read_text()


def source(family: Family) -> str:
    """A stand-alone program of one family: the shared tier-1 machinery, then the family's probes."""
    # Pasted, not #included: bcc rewrites map method calls only in the main file.
    return "\n".join([(BPF_DIR / "mmr_common.h").read_text(), c_text(family)])


def cflags(fentry: bool, release: str | None = None, extra: Iterable[str] = ()) -> list[str]:
    flags = [f"-I{BPF_DIR}", "-Wno-macro-redefined", f"-DMMR_T2_FENTRY={int(fentry)}"]
    if gather_takes_range(release):
        flags.append("-DMMR_T2_GATHER_RANGE=1")
    return flags + list(extra)


def compile_kprobe_build(bcc: Any, family: Family, extra_cflags: Iterable[str] = ()) -> Any:
    """Compile the kprobe build and load every handler through the verifier, attaching nothing.

    Works on hosts without kprobes: a kprobe program loads without the kprobe
    machinery; only attaching needs it.
    """
    b = bcc.BPF(text=source(family), cflags=cflags(False, extra=extra_cflags))
    try:
        for p in family.probes:
            b.load_func(p.handler.encode(), bcc.BPF.KPROBE)
        for _tp, handler in family.raw_tracepoints:
            b.load_func(handler.encode(), bcc.BPF.RAW_TRACEPOINT)
    except BaseException:
        b.cleanup()
        raise
    return b


def attach_kprobes(b: Any, family: Family, available: Iterable[str] | None = None) -> list[str]:
    """Attach the kprobe build; optional functions missing from ``available`` are skipped (returned)."""
    have = set(available) if available is not None else None
    skipped = []
    for p in family.probes:
        if have is not None and p.function not in have:
            if p.required:
                raise RuntimeError(f"{p.function} is not a traceable kernel function here")
            skipped.append(p.function)
            continue
        if p.on_return:
            b.attach_kretprobe(event=p.function.encode(), fn_name=p.handler.encode())
        else:
            b.attach_kprobe(event=p.function.encode(), fn_name=p.handler.encode())
    for tp, handler in family.raw_tracepoints:
        attach_raw(b, tp, handler)
    return sorted(set(skipped))


def attach_raw(b: Any, tp: str, handler: str) -> None:
    """Attach ``handler`` of program ``b`` to raw tracepoint ``tp``, also when a tier-1 family of the same
    program holds ``tp`` already (page_free on mm_page_free_batched, since tier 1 attaches raw tracepoints).

    bcc attaches one program per tracepoint name and refuses a second ("Raw tracepoint ... has been
    attached"); the kernel runs any number. The second goes through libbcc, its fd kept in bcc's table
    under its own key so that ``b.cleanup()`` closes it with the others.
    """
    key = tp.encode()
    fds = b.raw_tracepoint_fds
    if key not in fds:
        b.attach_raw_tracepoint(tp=key, fn_name=handler.encode())
        return
    import bcc

    fn = b.load_func(handler.encode(), bcc.BPF.RAW_TRACEPOINT)
    fd = bcc.libbcc.lib.bpf_attach_raw_tracepoint(fn.fd, key)
    if fd < 0:
        raise RuntimeError(f"cannot attach {handler} to raw tracepoint {tp} beside tier 1's program ({fd})")
    fds[key + b" " + handler.encode()] = fd


def attach(b: Any, family: Family, mode: str, available: Iterable[str] | None = None) -> list[str]:
    """Attach a family compiled into program ``b`` in ``mode`` ("fentry" or "kprobe").

    fentry probes were attached by bcc when it loaded ``b``; raw tracepoints
    and kprobes are attached here. Returns the optional functions skipped.
    """
    if mode not in ("fentry", "kprobe"):
        raise ValueError(f"mode {mode!r}: expected 'fentry' or 'kprobe'")
    with phase(f"attach {family.name} ({mode}: {', '.join(_attach_points(family, mode))})"):
        if mode == "kprobe":
            return attach_kprobes(b, family, available)
        for tp, handler in family.raw_tracepoints:
            attach_raw(b, tp, handler)
        return []


def _attach_points(family: Family, mode: str) -> list[str]:
    """What attaching ``family`` in ``mode`` hooks here (fentry probes were attached at load)."""
    out = [f"raw_tp/{tp}" for tp, _ in family.raw_tracepoints]
    if mode == "kprobe":
        out = [("kretprobe/" if p.on_return else "kprobe/") + p.function for p in family.probes] + out
    return out or ["nothing: its fentry probes attached at load"]


def load_fentry_build(bcc: Any, family: Family, extra_cflags: Iterable[str] = ()) -> Any:
    """Compile and load the fentry build; bcc attaches KFUNC probes while loading."""
    b = bcc.BPF(text=source(family), cflags=cflags(True, extra=extra_cflags))
    try:
        for tp, handler in family.raw_tracepoints:
            b.attach_raw_tracepoint(tp=tp.encode(), fn_name=handler.encode())
    except BaseException:
        b.cleanup()
        raise
    return b


# ---- detection --------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What the host says about the kernel features tier 2 needs."""

    lockdown: str | None  # none / integrity / confidentiality, None if unknown
    lockdown_source: str
    kprobes_config: bool | None  # CONFIG_KPROBES, None if the config is not readable
    kprobe_events: bool | None  # tracefs kprobe_events present, None if tracefs is not mounted

    def kprobe_reason(self) -> str:
        parts = []
        if self.kprobes_config is False:
            parts.append("kernel built without CONFIG_KPROBES")
        if self.kprobe_events is False:
            parts.append("tracefs has no kprobe_events")
        if self.lockdown == "confidentiality":
            parts.append(f"kernel lockdown=confidentiality ({self.lockdown_source}) forbids kprobes")
        return "; ".join(parts)

    def describe(self) -> str:
        lock = f"lockdown={self.lockdown} ({self.lockdown_source})" if self.lockdown else "lockdown unknown"
        kp = {True: "CONFIG_KPROBES=y", False: "CONFIG_KPROBES not set", None: "CONFIG_KPROBES unknown"}
        return f"{lock}, {kp[self.kprobes_config]}"


def _kernel_config() -> dict[str, str] | None:
    release = os.uname().release
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except OSError:
            continue
        out: dict[str, str] = {}
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:].split()[0]] = "n"
        return out
    return None


def host_facts(
    securityfs: Path = Path("/sys/kernel/security"),
    tracefs_dirs: Iterable[Path] = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")),
    config: Mapping[str, str] | None = None,
) -> HostFacts:
    """Lockdown mode and kprobe support, from securityfs, the kernel config and tracefs."""
    cfg = _kernel_config() if config is None else config
    lockdown, lsource = None, "unknown"
    try:
        text = (securityfs / "lockdown").read_text()
        lockdown = next((w[1:-1] for w in text.split() if w.startswith("[")), None)
        lsource = str(securityfs / "lockdown")
    except OSError:
        if cfg:
            for mode in ("CONFIDENTIALITY", "INTEGRITY", "NONE"):
                if cfg.get(f"CONFIG_LOCK_DOWN_KERNEL_FORCE_{mode}") == "y":
                    lockdown, lsource = mode.lower(), f"CONFIG_LOCK_DOWN_KERNEL_FORCE_{mode}"
                    break
    kprobes = None if not cfg else cfg.get("CONFIG_KPROBES") == "y"
    kprobe_events = None
    for d in tracefs_dirs:
        if (d / "events").is_dir():
            kprobe_events = (d / "kprobe_events").exists()
            break
    return HostFacts(lockdown, lsource, kprobes, kprobe_events)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(e).__name__
    if "Need super-user privileges" in text and os.geteuid() == 0:
        # bcc's wording for any EPERM from the bpf() syscall
        text = "the kernel refused to load it with EPERM although running as root"
    return text


_FIX = (
    "boot a kernel with CONFIG_KPROBES=y (and lockdown=none or integrity) or one that lets fentry "
    "programs load (BTF, DYNAMIC_FTRACE_WITH_DIRECT_CALLS, no BPF LSM/lockdown policy denying them); "
    "tier 1 still records waits, and replay derives holds (docs/LOCK_CLASSES.md)"
)


@dataclass(frozen=True)
class Status:
    """Whether a tier-2 family works on this host, in which mode, and if not why."""

    family: Family
    mode: str | None  # "fentry", "kprobe" or None (unusable)
    reason: str
    fix: str = ""

    def row(self) -> tuple[str, bool, str, str]:
        return (f"tier2:{self.family.name}", self.mode is not None, self.reason, self.fix)


def statuses(bcc: Any | None = None, families: Iterable[Family] = FAMILIES) -> list[Status]:
    """Try every family for real: fentry first (no kprobe machinery needed), then kprobes.

    Every program loaded here is unloaded before returning.
    """
    families = list(families)
    if bcc is None:
        from tracer.kernel_env import EnvironmentProblem, import_bcc

        try:
            bcc = import_bcc()
        except EnvironmentProblem as e:
            return [Status(f, None, e.reason, e.fix) for f in families]
    if os.geteuid() != 0:
        return [Status(f, None, "loading BPF programs needs root", "run as root") for f in families]
    facts = host_facts()
    try:
        from replay.symbols import Kallsyms

        available: set[str] | None = {n.split(".")[0] for n in Kallsyms.load().names}
    except Exception:  # noqa: BLE001 - without kallsyms every optional probe is attempted
        available = None
    if _fentry_together(bcc, families):
        return [Status(fam, "fentry", "fentry/fexit loads and attaches") for fam in families]
    return [_try_family(bcc, fam, facts, available) for fam in families]


def _fentry_together(bcc: Any, families: list[Family]) -> bool:
    """Whether every family loads and attaches in fentry mode as ONE program, the way a recording loads them.

    One compile instead of one per family: compiling is most of what detection costs (tens of seconds a
    program under emulation, where tier 2 is tested). False (then each family is tried alone, for its
    mode or its reason) when any part is refused.
    """
    if len(families) < 2:
        return False
    try:
        if not bcc.BPF.support_kfunc():
            return False
        text = "\n".join([(BPF_DIR / "mmr_common.h").read_text(), *(c_text(f) for f in families)])
        names = ", ".join(f.name for f in families)
        with phase(f"detect: compile, load and attach (fentry) {names}"):
            b = bcc.BPF(text=text, cflags=cflags(True))
    except Exception:  # noqa: BLE001 - bcc raises bare Exception; the families alone say why
        return False
    try:
        with phase(f"detect: attach raw tracepoints of {names}"):
            for fam in families:
                for tp, handler in fam.raw_tracepoints:
                    b.attach_raw_tracepoint(tp=tp.encode(), fn_name=handler.encode())
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        with phase(f"detect: detach and unload {names}"):
            b.cleanup()


def _try_family(bcc: Any, fam: Family, facts: HostFacts, available: set[str] | None) -> Status:
    try:
        if not bcc.BPF.support_kfunc():
            raise RuntimeError("bcc/kernel lack fentry support (no BTF or no bpf trampoline)")
        with phase(f"detect: {fam.name} alone, fentry: compile, load, attach, detach"):
            load_fentry_build(bcc, fam).cleanup()
        return Status(fam, "fentry", "fentry/fexit loads and attaches")
    except Exception as e:  # noqa: BLE001 - bcc raises bare Exception
        fentry_err = _first_line(e)
    b = None
    try:
        with phase(f"detect: {fam.name} alone, kprobes: compile, load, attach"):
            b = compile_kprobe_build(bcc, fam)
            skipped = attach_kprobes(b, fam, available)
        note = f" (optional functions absent: {', '.join(skipped)})" if skipped else ""
        return Status(fam, "kprobe", "kprobes load and attach" + note)
    except Exception as e:  # noqa: BLE001
        kprobe_err = _first_line(e)
    finally:
        if b is not None:
            with phase(f"detect: {fam.name} alone, kprobes: detach and unload"):
                b.cleanup()
    why = facts.kprobe_reason()
    reason = (
        f"fentry refused ({fentry_err}); kprobes refused ({kprobe_err})"
        + (f"; {why}" if why else "")
        + f"; host: {facts.describe()}"
    )
    return Status(fam, None, reason, _FIX)


def plan(
    bcc: Any | None = None,
    families: Iterable[Family] = FAMILIES,
    cache_dir: Path | None = None,
) -> list[Status]:
    """statuses(), compiling each family at most once per boot: the answer (mode or reason) is cached.

    Loading takes seconds of compilation per family (tens of seconds under
    emulation), and its answer only changes with the boot or the programs: it
    is cached per boot id and program text in ``cache_dir`` (default
    ~/.cache/mmreplay; MMREPLAY_NO_CACHE=1 turns the cache off). The recorder
    and doctor both ask here, so a recording compiles a family for detection
    only when nothing this boot did already.
    """
    families = list(families)
    path = _cache_path(families, cache_dir)
    cached = _read_cache(families, path)
    if cached is not None:
        return cached
    out = statuses(bcc, families)
    if path is not None and os.geteuid() == 0:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps([[s.family.name, s.mode, s.reason, s.fix] for s in out]))
            tmp.replace(path)
        except OSError:
            pass
    return out


def _read_cache(families: list[Family], path: Path | None) -> list[Status] | None:
    """The cached answer for these families at path, None if there is none (or it does not fit)."""
    if path is None:
        return None
    by_name = {f.name: f for f in families}
    try:
        cached = json.loads(path.read_text())
        if [r[0] for r in cached] == [f.name for f in families]:
            phase_note(f"detect: answer cached this boot ({path}), nothing compiled or attached")
            return [Status(by_name[n], mode, reason, fix) for n, mode, reason, fix in cached]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return None


#: The child of plan_in_child(): argv = [package root, cache dir or "", family names...]; prints the answer.
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from tracer import tier2; "
          "sys.exit(tier2._plan_child(sys.argv[2], sys.argv[3:]))")


def plan_in_child(families: Iterable[Family] = FAMILIES, cache_dir: Path | None = None) -> list[Status]:
    """plan(), with any compilation done in a child process: what the recorder asks.

    Detection compiles each family with bcc's in-process clang/LLVM; in the recorder's own process that
    compilation's code and heap set the recording's peak RSS (VmHWM 244 MiB on the first recording of a
    boot, 186 MiB on the others, issue #11). The child runs this same package (``-I``: no PYTHONPATH, no
    user site, so no code from elsewhere), writes the per-boot cache as plan() does, and prints the
    answer; a cached answer is read here without any child. Raises RuntimeError when the child fails."""
    import subprocess
    import sys

    families = list(families)
    cached = _read_cache(families, _cache_path(families, cache_dir))
    if cached is not None:
        return cached
    root = Path(__file__).resolve().parents[1]
    log = os.environ.get(PHASE_LOG_ENV) == "1"  # the phases go to our stderr as they happen
    r = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(root), str(cache_dir or ""),
                        *(f.name for f in families)], stdout=subprocess.PIPE,
                       stderr=None if log else subprocess.PIPE, text=True, check=False)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        err = (r.stderr or "").strip().splitlines()
        raise RuntimeError(f"detection process exited {r.returncode}: {err[-1] if err else 'no output'}")
    by_name = {f.name: f for f in families}
    return [Status(by_name[n], mode, reason, fix) for n, mode, reason, fix in json.loads(lines[-1])]


def _plan_child(cache_dir: str, names: list[str]) -> int:
    by_name = {f.name: f for f in FAMILIES}
    families = [by_name[n] for n in names]
    out = plan(None, families, Path(cache_dir) if cache_dir else None)
    print(json.dumps([[st.family.name, st.mode, st.reason, st.fix] for st in out]), flush=True)
    return 0


def detect(
    bcc: Any | None = None,
    families: Iterable[Family] = FAMILIES,
    cache_dir: Path | None = None,
) -> list[tuple[str, bool, str, str]]:
    """(probe, ok, reason, fix) per tier-2 family, from actually loading and attaching it (cached: plan())."""
    return [s.row() for s in plan(bcc, families, cache_dir)]


def _cache_path(families: list[Family], cache_dir: Path | None) -> Path | None:
    if os.environ.get("MMREPLAY_NO_CACHE") == "1":
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    h = hashlib.sha256(boot.encode())
    for name in ["mmr_common.h", "mmr_batch.h", "mmreplay.h", *(f.source for f in families)]:
        h.update((BPF_DIR / name).read_bytes())
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmreplay"
    return base / f"tier2-plan-{h.hexdigest()[:16]}.json"


# ---- decoding: lock holds ----------------------------------------------------------------


@dataclass
class LockHolds:
    """lock_holds columns from tier-2 edges, plus what the pairing could not match."""

    columns: dict[str, np.ndarray]
    lcb_flags: np.ndarray  # LCB_F_* equivalent per row (READ/WRITE/MUTEX), for replay.lockclass
    mmap_lock: np.ndarray  # bool per row: the current task's mm->mmap_lock (lock_addr is the mm)
    cut: np.ndarray  # int8 per row: 0 whole, CUT_BY_START, CUT_BY_STOP
    other_left_out: int = 0  # holds of sleeping locks no lock-class rule names (classify_holds drops them)
    tier1_mmap_lock: bool = False  # tier 1 records every mmap_lock acquisition: classify_holds drops tier 2's
    mmap_lock_left_out: int = 0  # tier-2 rows of another task's mmap_lock, left to tier 1's

    @property
    def unmatched_releases(self) -> int:
        """Releases of locks taken before the recording (rows cut by the start)."""
        return int((self.cut == CUT_BY_START).sum())

    @property
    def open_at_stop(self) -> int:
        """Acquisitions still held at stop (rows cut by the stop)."""
        return int((self.cut == CUT_BY_STOP).sum())

    @property
    def failed(self) -> int:
        """trylock/killable acquisitions that did not take the lock."""
        return int((~self.columns["success"].astype(bool)).sum())

    def without(self, drop: np.ndarray) -> LockHolds:
        """The same holds without the rows where ``drop`` is true."""
        keep = ~drop
        return LockHolds({k: v[keep] for k, v in self.columns.items()}, self.lcb_flags[keep], self.mmap_lock[keep],
                         self.cut[keep], self.other_left_out, self.tier1_mmap_lock, self.mmap_lock_left_out)


CUT_BY_START, CUT_BY_STOP = 1, 2
_EMPTY_ACQ = np.zeros(0, events.DTYPES["mmr_t2_acquire"])
_EMPTY_REL = np.zeros(0, events.DTYPES["mmr_t2_release"])


def _group_cumsum(values: np.ndarray, new_group: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting where ``new_group`` is true."""
    c = np.cumsum(values)
    starts = np.flatnonzero(new_group)
    base = np.zeros_like(c)
    if len(starts):
        offsets = c[starts] - values[starts]
        seg = np.cumsum(new_group) - 1
        base = offsets[seg]
    return c - base


def pair_lock_edges(
    acquires: np.ndarray | None,
    releases: np.ndarray | None,
    start_ns: int,
    stop_ns: int,
) -> LockHolds:
    """Pair acquisitions with releases per (tid, lock address) into lock_holds rows.

    Same-lock nesting pairs last-in first-out; a release whose acquisition was
    not recorded becomes a hold from ``start_ns`` (incomplete); an acquisition
    never released becomes a hold to ``stop_ns`` (incomplete); a failed
    trylock/killable acquisition becomes a row with success false and dur 0.
    ``depth`` counts the locks the task held when it took this one, including
    those taken before the recording that it released later.
    """
    a = _EMPTY_ACQ if acquires is None else acquires
    r = _EMPTY_REL if releases is None else releases
    ok = a["success"] != 0
    ai = np.flatnonzero(ok)
    na, nr = len(ai), len(r)

    # Edges: successful acquisitions (+1) and releases (-1), grouped per (tid, lock) in seq order.
    tid = np.concatenate([a["tid"][ai], r["tid"]]).astype(np.int64)
    lock = np.concatenate([a["lock_addr"][ai], r["lock_addr"]]).astype(np.uint64)
    seq = np.concatenate([a["seq"][ai], r["seq"]]).astype(np.int64)
    delta = np.concatenate([np.ones(na, np.int64), -np.ones(nr, np.int64)])
    src = np.concatenate([ai, np.arange(nr)])  # index into a (acquisitions) or r (releases)
    order = np.lexsort((seq, lock, tid))
    tid, lock, seq, delta, src = tid[order], lock[order], seq[order], delta[order], src[order]
    new = np.ones(len(tid), bool)
    new[1:] = (tid[1:] != tid[:-1]) | (lock[1:] != lock[:-1])
    group = np.cumsum(new) - 1
    level_after = _group_cumsum(delta, new)
    level = np.where(delta > 0, level_after, level_after + 1)  # the nesting level each edge opens/closes

    # At one (group, level) edges alternate acquire, release, ...: an acquire followed by a release pairs.
    o2 = np.lexsort((level, group))  # stable: seq order within (group, level) is kept
    g2, l2, d2, s2 = group[o2], level[o2], delta[o2], src[o2]
    pair = np.zeros(len(o2), bool)
    if len(o2) > 1:
        pair[:-1] = (d2[:-1] > 0) & (d2[1:] < 0) & (g2[:-1] == g2[1:]) & (l2[:-1] == l2[1:])
    pa_idx = s2[:-1][pair[:-1]] if len(o2) > 1 else np.zeros(0, np.int64)
    pr_idx = s2[1:][pair[:-1]] if len(o2) > 1 else np.zeros(0, np.int64)
    rel_matched = np.zeros(nr, bool)
    rel_matched[pr_idx] = True
    acq_matched = np.zeros(len(a), bool)
    acq_matched[pa_idx] = True
    open_idx = ai[~acq_matched[ai]]
    lone_rel = np.flatnonzero(~rel_matched)
    failed_idx = np.flatnonzero(~ok)

    depth_all = _depths(a, r, ok, rel_matched)

    def rows_from_acq(idx: np.ndarray, end: np.ndarray, incomplete: bool, success: bool) -> dict[str, np.ndarray]:
        ts = a["ts"][idx].astype(np.int64)
        return {
            "ts": ts,
            "dur": end - ts,
            "wait": a["wait"][idx].astype(np.int64),
            "seq": a["seq"][idx].astype(np.int64),
            "cpu": a["cpu"][idx].astype(np.int32),
            "pid": a["pid"][idx].astype(np.int32),
            "tid": a["tid"][idx].astype(np.int32),
            "lock_addr": a["lock_addr"][idx].astype(np.uint64),
            "mode": a["mode"][idx].astype(np.int16),
            "success": np.full(len(idx), success),
            "depth": depth_all[idx].astype(np.int32),
            "stack_id": a["stack_id"][idx].astype(np.int32),
            "incomplete": np.full(len(idx), incomplete),
            "_lock_type": a["lock_type"][idx].astype(np.int16),
            "_flags": a["flags"][idx].astype(np.uint8),
            "_cut": np.full(len(idx), CUT_BY_STOP if incomplete else 0, np.int8),
        }

    parts = [
        rows_from_acq(pa_idx, r["ts"][pr_idx].astype(np.int64), False, True),
        rows_from_acq(open_idx, np.full(len(open_idx), stop_ns, np.int64), True, True),
        rows_from_acq(failed_idx, a["ts"][failed_idx].astype(np.int64), False, False),
    ]
    n_lone = len(lone_rel)
    parts.append(
        {
            "ts": np.full(n_lone, start_ns, np.int64),
            "dur": r["ts"][lone_rel].astype(np.int64) - start_ns,
            "wait": np.zeros(n_lone, np.int64),
            "seq": r["seq"][lone_rel].astype(np.int64),
            "cpu": r["cpu"][lone_rel].astype(np.int32),
            "pid": r["pid"][lone_rel].astype(np.int32),
            "tid": r["tid"][lone_rel].astype(np.int32),
            "lock_addr": r["lock_addr"][lone_rel].astype(np.uint64),
            "mode": r["mode"][lone_rel].astype(np.int16),
            "success": np.ones(n_lone, bool),
            "depth": np.zeros(n_lone, np.int32),  # unknown: taken before the recording
            "stack_id": np.full(n_lone, -1, np.int32),
            "incomplete": np.ones(n_lone, bool),
            "_lock_type": r["lock_type"][lone_rel].astype(np.int16),
            "_flags": r["flags"][lone_rel].astype(np.uint8),
            "_cut": np.full(n_lone, CUT_BY_START, np.int8),
        }
    )
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    by_seq = np.argsort(cols["seq"], kind="stable")
    cols = {k: v[by_seq] for k, v in cols.items()}
    lock_type = cols.pop("_lock_type")
    mmap_lock = (cols.pop("_flags") & events.F_T2_MMAP_LOCK) != 0
    cut = cols.pop("_cut")
    from replay.lockclass import LCB_F_MUTEX, LCB_F_READ, LCB_F_WRITE

    lcb = np.where(lock_type == events.LOCK_MUTEX, LCB_F_MUTEX, np.where(cols["mode"] == 0, LCB_F_READ, LCB_F_WRITE))
    cols["lock_class"] = np.where(mmap_lock, "mmap_lock", "other").astype(object)
    return LockHolds(cols, lcb.astype(np.uint32), mmap_lock, cut)


def _depths(a: np.ndarray, r: np.ndarray, ok: np.ndarray, rel_matched: np.ndarray) -> np.ndarray:
    """Locks held by the task just before each acquisition (all of ``a``, failed ones too)."""
    # Per task in seq order: +1 at a successful acquisition, -1 at every release, and +1 before
    # everything for each release whose acquisition predates the recording (held since the start).
    ai = np.flatnonzero(ok)
    lone = np.flatnonzero(~rel_matched)
    n_contrib = len(ai) + len(r) + len(lone)
    tid = np.concatenate([a["tid"][ai], r["tid"], r["tid"][lone], a["tid"]]).astype(np.int64)
    seq = np.concatenate(
        [a["seq"][ai], r["seq"], np.full(len(lone), -1), a["seq"]]
    ).astype(np.int64)
    delta = np.concatenate(
        [np.ones(len(ai), np.int64), -np.ones(len(r), np.int64), np.ones(len(lone), np.int64),
         np.zeros(len(a), np.int64)]
    )
    is_query = np.concatenate([np.zeros(n_contrib, np.int64), np.ones(len(a), np.int64)])
    # At one seq the query sorts first: an acquisition does not count itself.
    order = np.lexsort((1 - is_query, seq, tid))
    tid_o = tid[order]
    new = np.ones(len(order), bool)
    new[1:] = tid_o[1:] != tid_o[:-1]
    running = _group_cumsum(delta[order], new)
    qpos = np.flatnonzero(is_query[order] == 1)
    out = np.zeros(len(a), np.int64)
    out[order[qpos] - n_contrib] = running[qpos]
    return np.maximum(out, 0)


def classify_holds(holds: LockHolds, stacks: Any, kallsyms: Any) -> None:
    """Fill ``lock_class`` from the stacks (replay.lockclass), each distinct (stack, kind) once;
    leave out (in place) the holds of locks no class names (``other_left_out``)."""
    import polars as pl

    from replay.lockclass import classify_waits

    c = holds.columns
    if not len(c["ts"]):
        return
    frame = pl.DataFrame(
        {"stack_id": c["stack_id"], "flags": holds.lcb_flags, "lock_addr": c["lock_addr"], "tid": c["tid"],
         "ts": c["ts"], "dur": c["dur"]}
    )
    res = classify_waits(frame, stacks, kallsyms=kallsyms)
    # the kernel said which rows are the task's mmap_lock; the stacks name the others
    c["lock_class"] = np.where(holds.mmap_lock, "mmap_lock", res.lock_class.to_numpy()).astype(object)
    from replay.lockclass import LCB_F_MUTEX

    rwsem = (holds.lcb_flags & LCB_F_MUTEX) == 0
    for sid, cls in take_all_sites(c, stacks, kallsyms, rwsem).items():
        at = c["stack_id"] == sid
        c["lock_class"][rwsem & at] = cls
        c["lock_class"][~rwsem & at] = "other"  # mm_all_locks_mutex
    # The probes see every rwsem and mutex; replay's "other" class stands for the spinning locks tier 1
    # saw contended (replayed as recorded, preemption off). A sleeping lock no rule names (debugfs,
    # kernfs, perf's mutexes) has no class to go to: its holds are left out, and counted.
    other = c["lock_class"] == "other"
    # another task's mmap_lock (exec's new mm, /proc, GUP on another process): the kernel could not
    # flag it, the stack names it, and tier 1's tracepoints already recorded the acquisition
    dup = (c["lock_class"] == "mmap_lock") if holds.tier1_mmap_lock else np.zeros(len(other), bool)
    if other.any() or dup.any():
        keep = ~(other | dup)
        for k in list(c):
            c[k] = c[k][keep]
        holds.lcb_flags, holds.mmap_lock, holds.cut = holds.lcb_flags[keep], holds.mmap_lock[keep], holds.cut[keep]
        holds.other_left_out += int(other.sum())
        holds.mmap_lock_left_out += int(dup.sum())


def take_all_sites(columns: Mapping[str, np.ndarray], stacks: Any, kallsyms: Any,
                   rwsem: np.ndarray | None = None) -> dict[int, str]:
    """stack_id -> lock class for the lock calls mm_take_all_locks makes itself.

    vm_lock_mapping (i_mmap_rwsem) and vm_lock_anon_vma (anon_vma root) are
    inlined into mm_take_all_locks on distribution kernels: their stacks differ
    only in the return address, so the stack's functions cannot tell them apart.
    Their order can: mm_take_all_locks walks the VMAs for the file mappings
    first and for the anon_vmas last (mm/mmap.c). In each run of a task's
    consecutive acquisitions from mm_take_all_locks with more than one call
    site, the site that starts last is the anon_vma one; a site is named by
    the majority of its runs. Sites never seen with another keep their class.
    ``rwsem`` masks the rwsem rows: mm_take_all_locks' own mutex_lock
    (mm_all_locks_mutex, no class of the trace) is "other".
    """
    from replay.lockclass import LOCK_PRIMITIVES, base_name

    all_sids = np.asarray(columns["stack_id"])
    if not len(all_sids):
        return {}
    sid_col = all_sids if rwsem is None else np.where(rwsem, all_sids, -1)
    ips = dict(zip(stacks["stack_id"].to_list(), stacks["ips"].to_list(), strict=True))
    taker_sites: set[int] = set()
    for sid in np.unique(all_sids[all_sids >= 0]).tolist():
        frames = [int(a) for a in (ips.get(sid) or ())]
        if not frames:
            continue
        idx, _ = kallsyms.lookup_many(np.asarray(frames, np.uint64))
        names = [base_name(str(kallsyms.names[i])) if i >= 0 else "" for i in idx]
        i = 0
        while i < len(names) and (not names[i] or names[i].startswith(("bpf_prog_", "bpf_trampoline_"))):
            i += 1
        while i < len(names) and names[i] in LOCK_PRIMITIVES:
            i += 1
        if i < len(names) and names[i] == "mm_take_all_locks":
            taker_sites.add(sid)
    out: dict[int, str] = {s: "other" for s in taker_sites}  # sites with no rwsem row: the mutex
    taker_sites &= set(np.unique(sid_col[sid_col >= 0]).tolist())
    if len(taker_sites) < 2:
        return {s: c for s, c in out.items() if s not in taker_sites}
    order = np.lexsort((np.asarray(columns["ts"]), np.asarray(columns["tid"])))
    sid_o, tid_o = sid_col[order], np.asarray(columns["tid"])[order]
    votes: dict[int, list[int]] = {s: [0, 0] for s in taker_sites}  # [i_mmap, anon] votes
    run: list[int] = []  # call sites of the current run, by first appearance
    prev_tid = None

    def close() -> None:
        if len(run) > 1:
            for s in run[:-1]:
                votes[s][0] += 1
            votes[run[-1]][1] += 1
        run.clear()

    for sid, tid in zip(sid_o.tolist(), tid_o.tolist(), strict=True):
        if sid not in taker_sites or tid != prev_tid:
            close()
        prev_tid = tid
        if sid in taker_sites and sid not in run:
            run.append(sid)
    close()
    for s, v in votes.items():
        if v[0] or v[1]:
            out[s] = "anon_vma" if v[1] > v[0] else "i_mmap_rwsem"
        else:
            del out[s]
    return out


# ---- decoding: gathers and mm_take_all_locks -----------------------------------------------


def _cut(ts: np.ndarray, dur: np.ndarray, flags: np.ndarray, start_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Records flagged NO_START carry their end time in dur: they run from the recording start."""
    no_start = (flags & events.F_NO_START) != 0
    ts = np.where(no_start, start_ns, ts.astype(np.int64))
    dur = np.where(no_start, dur.astype(np.int64) - start_ns, dur.astype(np.int64))
    return ts, dur


def gather_rows(
    records: np.ndarray | None,
    open_windows: np.ndarray | None,
    open_tids: np.ndarray | None,
    start_ns: int,
    stop_ns: int,
) -> dict[str, np.ndarray]:
    """gathers columns from MMR_EV_T2_GATHER records plus the windows still open at stop.

    ``open_windows`` are the values of the ``mmr_t2_gathers`` map read at stop
    (dtype mmr_t2_gather_open) and ``open_tids`` its keys.
    """
    e = np.zeros(0, events.DTYPES["mmr_t2_gather"]) if records is None else records
    o = np.zeros(0, events.DTYPES["mmr_t2_gather_open"]) if open_windows is None else open_windows
    otid = np.zeros(len(o), np.int32) if open_tids is None else np.asarray(open_tids)
    ts, dur = _cut(e["ts"], e["dur"], e["flags"], start_ns)
    cols = {
        "ts": np.concatenate([ts, o["ts"].astype(np.int64)]),
        "dur": np.concatenate([dur, stop_ns - o["ts"].astype(np.int64)]),
        "seq": np.concatenate([e["seq"], o["seq"]]).astype(np.int64),
        "cpu": np.concatenate([e["cpu"], o["cpu"]]).astype(np.int32),
        "pid": np.concatenate([e["pid"], o["pid"]]).astype(np.int32),
        "tid": np.concatenate([e["tid"], otid]).astype(np.int32),
        "mm": np.concatenate([e["mm"], o["mm"]]).astype(np.uint64),
        "fullmm": np.concatenate([e["fullmm"], o["fullmm"]]).astype(bool),
        "flushes": np.concatenate([e["flushes"], o["flushes"]]).astype(np.int32),
        "pages": np.concatenate([e["pages"], o["pages"]]).astype(np.int64),
        "incomplete": np.concatenate([(e["flags"] & events.F_INCOMPLETE) != 0, np.ones(len(o), bool)]),
    }
    order = np.argsort(cols["seq"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def take_all_rows(
    records: np.ndarray | None,
    open_calls: np.ndarray | None,
    open_tids: np.ndarray | None,
    stop_ns: int,
) -> dict[str, np.ndarray]:
    """take_all_locks columns from MMR_EV_T2_TAKE_ALL records plus calls still running at stop."""
    e = np.zeros(0, events.DTYPES["mmr_t2_take_all"]) if records is None else records
    o = np.zeros(0, events.DTYPES["mmr_t2_take_all_open"]) if open_calls is None else open_calls
    otid = np.zeros(len(o), np.int32) if open_tids is None else np.asarray(open_tids)
    cols = {
        "ts": np.concatenate([e["ts"], o["ts"]]).astype(np.int64),
        "dur": np.concatenate([e["dur"].astype(np.int64), stop_ns - o["ts"].astype(np.int64)]),
        "seq": np.concatenate([e["seq"], o["seq"]]).astype(np.int64),
        "cpu": np.concatenate([e["cpu"], o["cpu"]]).astype(np.int32),
        "pid": np.concatenate([e["pid"], o["pid"]]).astype(np.int32),
        "tid": np.concatenate([e["tid"], otid]).astype(np.int32),
        "mm": np.concatenate([e["mm"], o["mm"]]).astype(np.uint64),
        "ret": np.concatenate([e["ret"], np.zeros(len(o), np.int32)]).astype(np.int32),
        "incomplete": np.concatenate([np.zeros(len(e), bool), np.ones(len(o), bool)]),
    }
    order = np.argsort(cols["seq"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def read_open(b: Any, map_name: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(tids, values) of a per-task map of open windows at stop; values viewed with ``dtype``."""
    import ctypes

    table = b[map_name]
    keys, raw = [], []
    for k, v in table.items():
        keys.append(int(k.value))
        raw.append(ctypes.string_at(ctypes.addressof(v), dtype.itemsize))
    vals = np.frombuffer(b"".join(raw), dtype=dtype) if raw else np.zeros(0, dtype)
    return np.asarray(keys, np.int32), vals


# ---- all tier-2 tables of a recording -------------------------------------------------------------


@dataclass
class Decoded:
    """The tier-2 tables of a recording, and what the manifest should say about them."""

    tables: dict[str, dict[str, np.ndarray]]
    holds: LockHolds | None  # for classify_holds and the pairing counts
    cut_by_start: dict[str, int]  # table -> rows whose opening event predates the recording
    cut_by_stop: dict[str, int]  # table -> rows still open at stop


def decode_tables(
    by_kind: Mapping[int, np.ndarray],
    b: Any,
    families: Iterable[Family],
    start_ns: int,
    stop_ns: int,
    tier1_mmap_lock: bool = False,
) -> Decoded:
    """Table columns of the tier-2 families recorded by program ``b``, at stop.

    ``by_kind`` is the recording's slots split by kind (tracer.events.split_batch);
    the windows still open are read from ``b``'s maps. lock_holds rows keep
    lock_class "other" until ``classify_holds`` is run with the stacks.
    ``tier1_mmap_lock``: tier 1's mmap_lock tracepoints recorded every mmap_lock
    acquisition into lock_holds already; tier 2's own rows of the tasks'
    mmap_lock are then left out, so each acquisition is one row.
    """
    out = Decoded({}, None, {}, {})
    for fam in families:
        if fam.name == "lock_holds":
            holds = pair_lock_edges(
                by_kind.get(events.EV_T2_LOCK_ACQUIRE), by_kind.get(events.EV_T2_LOCK_RELEASE), start_ns, stop_ns
            )
            if tier1_mmap_lock:
                holds = holds.without(holds.mmap_lock)
                holds.tier1_mmap_lock = True
            out.tables["lock_holds"], out.holds = holds.columns, holds
            out.cut_by_start["lock_holds"], out.cut_by_stop["lock_holds"] = holds.unmatched_releases, holds.open_at_stop
        elif fam.name == "gathers":
            recs = by_kind.get(events.EV_T2_GATHER)
            tids, vals = read_open(b, "mmr_t2_gathers", events.DTYPES["mmr_t2_gather_open"])
            out.tables["gathers"] = gather_rows(recs, vals, tids, start_ns, stop_ns)
            no_start = 0 if recs is None else int(((recs["flags"] & events.F_NO_START) != 0).sum())
            out.cut_by_start["gathers"], out.cut_by_stop["gathers"] = no_start, len(vals)
        elif fam.name == "take_all_locks":
            tids, vals = read_open(b, "mmr_t2_take_alls", events.DTYPES["mmr_t2_take_all_open"])
            out.tables["take_all_locks"] = take_all_rows(by_kind.get(events.EV_T2_TAKE_ALL), vals, tids, stop_ns)
            out.cut_by_start["take_all_locks"], out.cut_by_stop["take_all_locks"] = 0, len(vals)
    return out
