"""Workload programs that exercise the mm locks mmreplay studies (installed as tracer.workloads).

Each workload is a small C program in this directory, built on first use with
the system compiler ($CC, default gcc) into a cache directory and rebuilt when
its source or any header here is newer than the binary. Every program shares
the driver in ``harness.h`` (near-identical variants share a testcase header,
e.g. ``tlb_flush.h``): it starts ``tasks`` tasks (processes or threads), runs for
``seconds`` (0: until SIGINT/SIGTERM), then prints one summary line of
``key=value`` fields and exits 0.

The recorder runs them as ``command(name, tasks, seconds)``; docs/WORKLOADS.md
says what each one contends and why.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay.cachedir import cache_dir as shared_cache_dir
from replay.cachedir import verify_code_file
from replay.errors import MmreplayError, UsageError

SOURCE_DIR = Path(__file__).resolve().parent
MODES = ("processes", "threads")
MIB = 1 << 20


@dataclass(frozen=True)
class Workload:
    """What every workload has: a program, a task mode and a description."""

    program: str  # C source stem in this directory
    description: str
    mode: str = "processes"

    def options(self) -> list[str]:
        """The program options for this workload's parameters (beyond -t and -d)."""
        return ["-m", self.mode]

    def check(self) -> None:
        """Raise UsageError for parameter values the program would refuse."""
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class RegionWorkload(Workload):
    """A workload over a region of ``region_bytes`` per task (passed to its program as -s)."""

    region_bytes: int = 128 * MIB

    def options(self) -> list[str]:
        return [*super().options(), "-s", str(self.region_bytes)]

    def check(self) -> None:
        super().check()
        _positive("region_bytes", self.region_bytes)


@dataclass(frozen=True)
class PageFault(RegionWorkload):
    """will-it-scale page_fault1/2/3: map a region, write every page, unmap, repeat."""


@dataclass(frozen=True)
class MmapUnmap(RegionWorkload):
    """will-it-scale mmap1/2: map and unmap a region without touching it."""


@dataclass(frozen=True)
class TlbFlush(RegionWorkload):
    """will-it-scale tlb_flush1/2/3: per page write + MADV_DONTNEED (zap and TLB flush)."""


@dataclass(frozen=True)
class MmapFile(Workload):
    """N forked tasks loop mmap/munmap of one page of one shared file (contends i_mmap_rwsem)."""

    file_bytes: int = 1 * MIB  # tasks map distinct pages of it, so only the i_mmap lock is shared
    touch: bool = False  # also write the page (one shared-file fault per iteration)

    def options(self) -> list[str]:
        return [*super().options(), "-s", str(self.file_bytes), *(["-f"] if self.touch else [])]

    def check(self) -> None:
        super().check()
        _positive("file_bytes", self.file_bytes)


@dataclass(frozen=True)
class MmapMerge(Workload):
    """N forked children loop munmap + mmap(MAP_FIXED) of their own anon page of an inherited VMA
    (the 2011 review's anon_vma test; on Linux 6.x only the first round takes the shared root)."""

    def check(self) -> None:
        super().check()
        if self.mode != "processes":
            raise UsageError(f"{self.program.replace('_', '-')} needs forked children sharing one root anon_vma: "
                             "mode must be 'processes'")


@dataclass(frozen=True)
class MprotectSplit(MmapMerge):
    """N forked children loop mprotect split + merge of their own page of one inherited VMA (root anon_vma)."""


@dataclass(frozen=True)
class TakeAllLocks(Workload):
    """Task 0 loops KVM_CREATE_VM (mm_take_all_locks over `files` file and anon VMAs); the rest fault."""

    files: int = 256  # file VMAs (one file each) and as many anon VMAs (one anon_vma each)

    def options(self) -> list[str]:
        return [*super().options(), "-n", str(self.files)]

    def check(self) -> None:
        super().check()
        _positive("files", self.files)


@dataclass(frozen=True)
class ForkExit(RegionWorkload):
    """Each task loops fork of a child that COW-writes `region_bytes` and exits (full-mm gathers)."""

    region_bytes: int = 1 * MIB


@dataclass(frozen=True)
class Kbuild(Workload):
    """A make -jN-like compile of `files` generated C files, one gcc per job slot at a time."""

    files: int = 64

    def options(self) -> list[str]:
        return [*super().options(), "-n", str(self.files)]

    def check(self) -> None:
        super().check()
        _positive("files", self.files)


def _catalogue() -> dict[str, Workload]:
    out: dict[str, Workload] = {}
    wis: list[tuple[str, type[Workload], str, dict[str, Any]]] = [
        ("page_fault1", PageFault, "anonymous memory page fault (mmap anon, write every page, munmap)", {}),
        ("page_fault2", PageFault, "private file mapping page fault (each task its own file)", {}),
        ("page_fault3", PageFault, "shared file mapping page fault (each task its own file)", {}),
        ("mmap1", MmapUnmap, "anonymous mmap + munmap of 128 MiB, no touch", {}),
        ("mmap2", MmapUnmap, "private file mmap + munmap of 128 MiB, no touch", {}),
        ("tlb_flush1", TlbFlush, "write + MADV_DONTNEED per page of a private file mapping", {}),
        ("tlb_flush2", TlbFlush, "write + MADV_DONTNEED per page of a 1 MiB anon mapping", {"region_bytes": MIB}),
        ("tlb_flush3", TlbFlush, "write + MADV_DONTNEED per page of a shared file mapping", {}),
    ]
    for test, cls, text, params in wis:
        for mode in MODES:
            out[f"{test}_{mode}"] = cls(program=test, description=f"will-it-scale {test}: {text}; "
                                        f"tasks are {mode}", mode=mode, **params)
    out["mmap-file"] = MmapFile(program="mmap_file", description=MmapFile.__doc__ or "")
    out["mmap-merge"] = MmapMerge(program="mmap_merge", description=MmapMerge.__doc__ or "")
    out["mprotect-split"] = MprotectSplit(program="mprotect_split", description=MprotectSplit.__doc__ or "")
    out["take-all-locks"] = TakeAllLocks(program="take_all_locks", description=TakeAllLocks.__doc__ or "")
    out["fork-exit"] = ForkExit(program="fork_exit", description=ForkExit.__doc__ or "")
    out["kbuild"] = Kbuild(program="kbuild", description=Kbuild.__doc__ or "")
    return out


CATALOGUE: dict[str, Workload] = _catalogue()


def names() -> list[str]:
    """Every workload name, sorted."""
    return sorted(CATALOGUE)


def spec(name: str, **params: Any) -> Workload:
    """The workload's parameter dataclass, with ``params`` overriding its defaults."""
    base = CATALOGUE.get(name)
    if base is None:
        raise UsageError(f"unknown workload {name!r}; known: {', '.join(names())}")
    fields = {f.name for f in dataclasses.fields(base)} - {"program", "description"}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise UsageError(f"workload {name!r} has no parameter {unknown[0]!r}; it has: {', '.join(sorted(fields))}")
    w = dataclasses.replace(base, **params)
    w.check()
    return w


def describe(name: str) -> str:
    """One paragraph: what the workload does and its parameters with their defaults."""
    w = spec(name)
    params = ", ".join(
        f"{f.name}={getattr(w, f.name)!r}" for f in dataclasses.fields(w) if f.name not in ("program", "description")
    )
    return f"{name}: {' '.join(w.description.split())} [{params}] (source workloads/{w.program}.c)"


def cache_dir() -> Path:
    """Where built programs go: $MMREPLAY_WORKLOAD_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/mmreplay/workloads,
    else a per-user temporary directory when the home cache is not private (replay.cachedir): a directory
    someone else can write is never used, since its programs are run, as root when recording."""
    return shared_cache_dir("workloads", "MMREPLAY_WORKLOAD_CACHE")


def compiler() -> str:
    """$CC, else gcc; MmreplayError if there is none."""
    cc = os.environ.get("CC") or "gcc"
    path = shutil.which(shlex.split(cc)[0])
    if path is None:
        raise MmreplayError(f"no C compiler {cc!r} found to build the workloads (install gcc or set CC)")
    return cc


def build(name: str) -> Path:
    """Build the workload's program if it is missing or older than its sources; return the binary."""
    w = spec(name)
    source = SOURCE_DIR / f"{w.program}.c"
    out_dir = cache_dir()  # checked private (ours, 0700, not a link) on every call: we run what is in it
    binary = out_dir / w.program
    newest = max(p.stat().st_mtime for p in (source, *SOURCE_DIR.glob("*.h")))
    if binary.exists() and binary.stat().st_mtime >= newest:
        return verify_code_file(binary)
    # Build beside the target and rename, so concurrent builders never run a half-written binary.
    fd, tmp = tempfile.mkstemp(prefix=f".{w.program}.", dir=out_dir)
    os.close(fd)
    cmd = [*shlex.split(compiler()), "-O2", "-Wall", "-pthread", "-o", tmp, str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        first = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise MmreplayError(f"building workload {name!r} failed: {' '.join(cmd)}: {first}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)
    return verify_code_file(binary)


def command(name: str, tasks: int, seconds: float, **params: Any) -> list[str]:
    """The argv that runs workload ``name`` with ``tasks`` tasks for ``seconds`` (0: until killed).

    Builds the program if needed. ``params`` override the workload's dataclass
    fields (e.g. ``region_bytes=4 << 20``, ``workdir="/var/tmp"``).
    """
    workdir = params.pop("workdir", None)
    w = spec(name, **params)
    if not isinstance(tasks, int) or isinstance(tasks, bool) or not 1 <= tasks <= 4096:
        raise UsageError(f"tasks must be an integer from 1 to 4096, not {tasks!r}")
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise UsageError(f"seconds must be a number >= 0 (0: until killed), not {seconds!r}")
    argv = [str(build(name)), "-t", str(tasks), "-d", repr(float(seconds)), *w.options()]
    if workdir is not None:
        argv += ["-w", str(workdir)]
    return argv


@dataclass(frozen=True)
class Summary:
    """The summary line a workload program prints when it stops."""

    name: str
    fields: dict[str, str]

    @property
    def iterations(self) -> int:
        return int(self.fields["iterations"])

    @property
    def seconds(self) -> float:
        return float(self.fields["seconds"])

    @property
    def minflt(self) -> int:
        return int(self.fields["minflt"])


def parse_summary(line: str) -> Summary:
    """Parse ``NAME key=value ...`` as printed by harness.h; ValueError if it is not one."""
    words = line.split()
    if not words or "=" in words[0]:
        raise ValueError(f"not a workload summary line: {line!r}")
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if "iterations" not in fields:
        raise ValueError(f"summary line lacks iterations: {line!r}")
    return Summary(words[0], fields)
