"""The synthesizer's cost model: one lognormal distribution per kind of work.

Every time-consuming step of a synthetic timeline draws its duration from a
named distribution. Keys follow ``<kind>:<subject>[:<operation>]``:

* ``hold:<lock class>:<op>`` — a lock hold's own time (exclusive of the holds,
  gathers and free bursts nested in it), per lock class and the operation that
  takes the lock (mmap, munmap, madvise, fault, fork, exit, brk, take_all);
* ``syscall:<name>`` — a system call's own time outside the locks it takes;
* ``fault:<kind>`` — page-fault service outside the page-table lock;
* ``think:<what>`` — user-mode (or unmodelled kernel) time between operations;
* ``block:<why>`` — off-CPU sleeps;
* ``zap:page`` / ``free:page`` — per-page cost of unmapping (under the page
  table lock) and freeing (in a page-free burst); multiplied by the pages.

The defaults are *uncontended* costs. Their basis: the per-iteration cost of
each workload program (tracer.workloads) measured with one task on this
project's host (Linux 6.18, x86-64, 2 vCPUs shared with other jobs), e.g.
page_fault1 with a 1 MiB region ran 1.39 M pages/s (0.72 µs per page including
its share of mmap/munmap), mmap1 0.85 M mmap+munmap pairs/s (1.18 µs),
mmap-file 0.90 M/s, mmap-merge 0.33 M/s (3.05 µs), tlb_flush2 0.45 M/s
(2.24 µs for write fault + madvise + read fault), take-all-locks 4.2 k VMs/s
with 512 VMAs (240 µs), fork-exit 1.4 k/s with 1 MiB (730 µs); `perf trace -s`
on page_fault1 gave munmap of 256 populated pages 43 µs avg (0.17 µs/page).
The split of those totals into lock holds and the rest is an estimate from
the kernel code paths (which lock covers which step), marked as such in
``basis``. ``sigma`` (of ln ns) is 0.3 for tight kernel paths and larger where
the work varies (user think time, compiler phases). ``--fit TRACE`` replaces
these with what a recorded trace shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

_MEASURED = "measured per-iteration cost on the project host, split by code path (estimate)"


@dataclass(frozen=True)
class LogNormal:
    """A lognormal duration in ns: ``exp(N(ln median, sigma))``."""

    median: float
    sigma: float
    basis: str = ""

    def __post_init__(self) -> None:
        if not (self.median > 0 and math.isfinite(self.median)):
            raise ValueError(f"median must be a positive number of ns, not {self.median!r}")
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be >= 0, not {self.sigma!r}")

    @property
    def mu(self) -> float:
        return math.log(self.median)

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def sample(self, rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
        return rng.lognormal(self.mu, self.sigma, shape) if self.sigma > 0 else np.full(shape, self.median)

    @classmethod
    def fit(cls, samples: np.ndarray, basis: str) -> LogNormal:
        """Maximum-likelihood fit to positive samples (non-positive ones are dropped)."""
        x = np.asarray(samples, dtype=np.float64)
        x = x[x > 0]
        if x.size < 2:
            raise ValueError("need at least two positive samples to fit a lognormal")
        logs = np.log(x)
        return cls(float(np.exp(logs.mean())), float(logs.std(ddof=1)), basis)


@dataclass(frozen=True)
class Empirical:
    """A duration distribution given by its quantiles (ns) at evenly spaced probabilities
    0, 1/(n-1), ..., 1; sampled by inverse CDF, interpolating log-linearly between them."""

    quantiles: tuple[float, ...]
    basis: str = ""

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=np.float64)
        if q.size < 2 or not np.all(np.isfinite(q)) or np.any(q <= 0) or np.any(np.diff(q) < 0):
            raise ValueError("quantiles must be at least two positive, finite, non-decreasing ns values")

    def _logq(self) -> np.ndarray:
        return np.log(np.asarray(self.quantiles, dtype=np.float64))

    def quantile(self, p: float | np.ndarray) -> np.ndarray:
        n = len(self.quantiles)
        return np.exp(np.interp(np.asarray(p) * (n - 1), np.arange(n), self._logq()))

    @property
    def median(self) -> float:
        return float(self.quantile(0.5))

    @property
    def sigma(self) -> float:
        """Standard deviation of ln(duration), for reports."""
        return float(np.std(np.log(self.quantile(np.linspace(0.0005, 0.9995, 1000)))))

    @property
    def mean(self) -> float:
        return float(np.mean(self.quantile(np.linspace(0.0005, 0.9995, 1000))))

    def sample(self, rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
        return self.quantile(rng.random(shape))

    @classmethod
    def fit(cls, samples: np.ndarray, basis: str, points: int = 201) -> Empirical:
        """The samples' quantiles (non-positive samples dropped)."""
        x = np.asarray(samples, dtype=np.float64)
        x = x[x > 0]
        if x.size < 2:
            raise ValueError("need at least two positive samples for an empirical distribution")
        return cls(tuple(float(v) for v in np.quantile(x, np.linspace(0, 1, points))), basis)


Dist = LogNormal | Empirical


def _d(median: float, sigma: float = 0.3, basis: str = _MEASURED) -> LogNormal:
    return LogNormal(median, sigma, basis)


#: key -> default distribution. Medians in ns.
DEFAULTS: dict[str, LogNormal] = {
    # user-mode time between kernel entries
    "think:user": _d(60, 0.3, "loop overhead + syscall entry/exit between two syscalls of a tight loop (estimate)"),
    "think:touch": _d(20, 0.3, "user loop step between two page writes (estimate)"),
    "think:wait": _d(5_000, 0.5, "wait4 return and loop in the forking parent (estimate)"),
    "think:compile": _d(60_000, 1.0, "kbuild: ~200 ms of cc1 per unit / ~3000 faults per unit, measured here"),
    "think:kvm_create": _d(80_000, 0.3, "kvm_create_vm outside mm_take_all_locks, share of the 240 µs measured"),
    "think:kvm_destroy": _d(30_000, 0.3, "kvm_destroy_vm CPU work, share of the 240 µs measured"),
    "block:srcu": _d(100_000, 0.5, "synchronize_srcu in mmu_notifier_unregister sleeps (estimate)"),
    # page faults (service time outside the page-table lock)
    "fault:anon": _d(500, 0.3, "page_fault1: 0.72 µs/page total, minus zap/free/user (estimate)"),
    "fault:file_private": _d(800, 0.3, "page_fault2: 0.88 µs/page total (COW copy of a page-cache page)"),
    "fault:file_shared": _d(600, 0.3, "page_fault3: 0.76 µs/page total (page-cache lookup, dirtying)"),
    "fault:read": _d(400, 0.3, "tlb_flush*: read fault mapping the zero page or a cached page (estimate)"),
    "fault:cow": _d(500, 0.3, "fork-exit child: copy-on-write of an inherited anon page (estimate)"),
    # system calls' own time (outside their locks)
    "syscall:mmap": _d(200, 0.3, "mmap1: 1.18 µs per mmap+munmap pair, get_unmapped_area + vma alloc (estimate)"),
    "syscall:munmap": _d(200, 0.3),
    "syscall:madvise": _d(600, 0.3, "tlb_flush2: 2.24 µs per write fault + madvise + read fault (estimate)"),
    "syscall:brk": _d(200, 0.3),
    "syscall:mprotect": _d(500, 0.3, "mprotect-split: share of the 4.9 µs per iteration measured"),
    "syscall:exit_group": _d(60_000, 0.4, "fork-exit: 730 µs per iteration measured; exit outside mm teardown"),
    "fork:own": _d(150_000, 0.4, "fork-exit: copy_process outside dup_mmap, share of the 730 µs measured"),
    "exec:own": _d(300_000, 0.4, "kbuild: execve of the compiler (estimate)"),
    # lock holds' own time
    "hold:mmap_lock:mmap": _d(200),
    "hold:mmap_lock:munmap": _d(250),
    "hold:mmap_lock:munmap_zap": _d(100, 0.3, "munmap after mmap_write_downgrade, outside gather and unlinks"),
    "hold:mmap_lock:mprotect": _d(800, 0.3, "mprotect-split: 404 k split+merge/s for 2 tasks (4.9 µs), split"),
    "hold:mmap_lock:madvise": _d(250),
    "hold:mmap_lock:fault": _d(60, 0.3, "find_vma + checks under mmap_lock read when faults take it (pre-6.4)"),
    "hold:mmap_lock:brk": _d(300),
    "hold:mmap_lock:fork": _d(20_000, 0.4, "dup_mmap: copy of VMAs and page tables, share of fork-exit cost"),
    "hold:mmap_lock:exit": _d(10_000, 0.4, "exit_mmap outside the gather and unlinks (estimate)"),
    "hold:mmap_lock:take_all": _d(2_000, 0.3, "vma_start_write of every VMA in mm_take_all_locks (estimate)"),
    "hold:i_mmap_rwsem:mmap": _d(80, 0.3, "vma_link into the file's i_mmap interval tree (estimate)"),
    "hold:i_mmap_rwsem:munmap": _d(80, 0.3, "unlink_file_vma (estimate)"),
    "hold:i_mmap_rwsem:fork": _d(80, 0.3, "dup_mmap linking the child's file VMA (estimate)"),
    "hold:i_mmap_rwsem:exit": _d(80, 0.3, "unlink_file_vma in exit_mmap (estimate)"),
    "hold:anon_vma:mmap": _d(200, 0.3, "mmap-merge: vma_merge expanding a VMA with an anon_vma (estimate)"),
    "hold:anon_vma:munmap": _d(200, 0.3, "mmap-merge: 3.05 µs per iteration; split/unlink under the root lock"),
    "hold:anon_vma:fault": _d(150, 0.3, "anon_vma_prepare linking a fresh anon_vma (estimate)"),
    "hold:anon_vma:mprotect": _d(200, 0.3, "mprotect-split: anon_vma_clone / vma_prepare / unlink (estimate)"),
    "hold:anon_vma:fork": _d(150, 0.3, "anon_vma_fork: chain the child's VMA (estimate)"),
    "hold:anon_vma:exit": _d(100, 0.3, "unlink_anon_vmas in exit_mmap (estimate)"),
    "hold:page_table_lock:fault": _d(60, 0.3, "set_pte + rmap + counters under the PTE lock (estimate)"),
    # mm_take_all_locks chain and the mmu_gather
    "take_all:step": _d(40, 0.3, "one lock of the mm_take_all_locks chain: walk + uncontended down_write"),
    "take_all:register": _d(2_000, 0.3, "mmu notifier registration inside all the locks (estimate)"),
    "take_all:drop": _d(20, 0.3, "one unlock of mm_drop_all_locks"),
    "gather:own": _d(150, 0.3, "tlb_gather_mmu/tlb_finish_mmu bookkeeping (estimate)"),
    "zap:page": _d(60, 0.2, "zap_pte_range per present PTE; munmap 0.17 µs/page incl. free (perf trace)"),
    "free:page": _d(40, 0.2, "free_pages_and_swap_cache per page (estimate)"),
}


@dataclass
class Model:
    """The distributions a synthesis uses, and where each came from."""

    dists: dict[str, Dist] = field(default_factory=lambda: dict(DEFAULTS))
    fitted: dict[str, str] = field(default_factory=dict)  # key -> what it was fitted from

    def __getitem__(self, key: str) -> Dist:
        return self.dists[key]

    def replace(self, key: str, dist: Dist, source: str) -> None:
        if key not in self.dists:
            raise KeyError(key)
        self.dists[key] = replace(dist, basis=source)
        self.fitted[key] = source

    def describe(self) -> dict[str, dict[str, object]]:
        """JSON-ready: key -> kind, median, sigma (of ln ns), basis, fitted (+ quantiles if empirical)."""
        out: dict[str, dict[str, object]] = {}
        for k, d in sorted(self.dists.items()):
            entry: dict[str, object] = {
                "kind": "empirical" if isinstance(d, Empirical) else "lognormal",
                "median_ns": round(d.median, 3), "sigma": round(d.sigma, 4), "basis": d.basis,
                "fitted": k in self.fitted,
            }
            if isinstance(d, Empirical):
                entry["quantiles_ns"] = [round(q, 1) for q in d.quantiles]
            out[k] = entry
        return out
