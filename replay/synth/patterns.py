"""The synthetic workloads: one iteration template per task, mirroring tracer.workloads.

Each pattern says what one loop iteration of each task does in the kernel:
which syscalls it makes, which locks those take (class, instance, mode,
nesting), what it faults, what its gathers unmap and free, where it forks a
child or sleeps. The lock *instances* are what decide contention in replay:
an mm's mmap_lock is shared by the threads of a process, a file's
i_mmap_rwsem by everyone mapping that file, a root anon_vma by a process and
its forked children, a page-table lock by the faults of one 2 MiB range.

Code paths modelled (Linux 6.x unless said): mmap links a file VMA into
i_mmap under i_mmap_rwsem (write) inside mmap_lock (write); munmap holds
mmap_lock for write while it detaches VMAs, zaps the pages in an mmu_gather
(page-table lock per 2 MiB of PTEs, a TLB flush and a page-free burst per
~10k pages) and unlinks the VMAs from i_mmap / the anon_vma after downgrading
mmap_lock to read (a write hold, then a read hold, as recorded); MADV_DONTNEED
does its gather under the per-VMA lock (not a lock class here; 6.18 as
recorded) and faults take the per-VMA lock too, or, with
``fault_lock="mmap_lock"`` (kernels before 6.4, the 2011 review's kernels),
both take mmap_lock for read; faults then take the PTE lock;
KVM_CREATE_VM's mm_take_all_locks holds mmap_lock for write and then every
i_mmap_rwsem and every anon_vma root of the mm, nested; fork's dup_mmap holds
the parent's mmap_lock for write and links each file VMA (i_mmap) and anon
VMA (anon_vma root) of the child; exit_mmap does a full-mm gather and unlinks
every VMA. mmap-merge follows the steady state recorded on 6.18 (see
``_mmap_merge``). Simplifications, on purpose: exit_mmap's gather is under
one mmap_lock write hold (the kernel zaps under read, then frees page tables
under write, and its gather spans both); mm_drop_all_locks releases in
reverse order (the kernel walks the VMAs forward) so holds nest; the VMA
write locks of mm_take_all_locks are not a lock class of the trace format
and are folded into the mmap_lock hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replay.synth.template import Chain, Ctx, Kernel, Mark, Node, Repeat, Span, Work

PAGE = 4096
PTRS_PER_PMD = 512  # PTEs per page-table page: one page-table lock covers 2 MiB
PMDS_PER_FLUSH = 19  # ~10k pages (MAX_GATHER_BATCH_COUNT batches of ~510) before tlb_flush_mmu frees them
INVLPG_CEILING = 33  # tlb_single_page_flush_ceiling: larger flushes are full flushes

MM_BASE = 0xFFFF_8881_0000_0000
FILE_BASE = 0xFFFF_8882_0000_0000
ANON_BASE = 0xFFFF_8883_0000_0000
PTL_BASE = 0xFFFF_8884_0000_0000
REGION_TOP = 0x7F00_0000_0000
FAULT_IP = 0x0000_0000_0040_1136
EC_READ, EC_WRITE, EC_COW = 0x4, 0x6, 0x7  # x86 error code: user, +write, +present

TASK_TID_BASE = 2000
CHILD_TID_BASE = 100_000
CHILD_TIDS_PER_TASK = 400_000  # 4096 tasks' children still fit an Int32 tid

Value = int | bool | str | Callable[[Ctx], np.ndarray]


def mm_addr(pid: int) -> int:
    """The mm_struct (its mmap_lock) of process ``pid``."""
    return MM_BASE + pid * 0x1000


def file_addr(file_id: int | np.ndarray) -> int | np.ndarray:
    """The address_space (its i_mmap_rwsem) of file ``file_id``."""
    if isinstance(file_id, np.ndarray):
        return np.uint64(FILE_BASE) + file_id.astype(np.uint64) * np.uint64(0x400)
    return FILE_BASE + file_id * 0x400


def anon_addr(anon_id: int) -> int:
    """The (root) anon_vma ``anon_id``."""
    return ANON_BASE + anon_id * 0x80


def ptl_addr(mm_id: int | np.ndarray, vaddr: int | np.ndarray) -> np.ndarray:
    """The split PTE lock of the page-table page mapping ``vaddr`` in mm ``mm_id``."""
    return (np.uint64(PTL_BASE) + (np.asarray(mm_id, np.uint64) << np.uint64(28))
            + (np.asarray(vaddr, np.uint64) >> np.uint64(21)) * np.uint64(0x40))


@dataclass(frozen=True)
class Params:
    """What the user chose for a synthesis (validated by the CLI)."""

    tasks: int
    cpus: int
    region_pages: int = 0  # 0: the pattern's default
    fault_lock: str = "vma"  # "vma" (6.4+ per-VMA locks) or "mmap_lock" (faults take it for read)
    files: int = 256  # take-all-locks: file VMAs (and as many anon VMAs)


@dataclass(frozen=True)
class TaskInfo:
    index: int
    tid: int
    pid: int
    comm: str
    cpu: int
    child_comm: str = ""

    def child_tid(self, k: np.ndarray | int) -> np.ndarray | int:
        return CHILD_TID_BASE + self.index * CHILD_TIDS_PER_TASK + k


# -- building blocks ---------------------------------------------------------------


def hold(lock_class: str, addr: Value, mode: str, op: str, body: tuple[Node, ...] = (), role: int = 0) -> Span:
    """A lock hold: its own time first, then what it nests."""
    cols = {"lock_addr": addr, "lock_class": lock_class, "mode": mode}
    return Span("lock_holds", cols, (Work(f"hold:{lock_class}:{op}", role=role), *body), role)


def syscall(name: str, body: tuple[Node, ...], arg0: Value = 0, arg1: Value = 0, ret: Value = 0,
            role: int = 0) -> Span:
    cols = {"name": name, "arg0": arg0, "arg1": arg1, "ret": ret}
    return Span("syscalls", cols, (Work(f"syscall:{name}", role=role), *body), role)


def _page_addr(base: Value) -> Callable[[Ctx], np.ndarray]:
    def addr(c: Ctx) -> np.ndarray:
        b = base(c) if callable(base) else np.uint64(base)
        return np.asarray(b, np.uint64) + np.maximum(c.rep, 0).astype(np.uint64) * np.uint64(PAGE)

    return addr


def fault(kind: str, base: Value, mm: Value, mm_id: Value, error_code: int, p: Params,
          role: int = 0) -> tuple[Node, ...]:
    """A user page fault at page ``rep`` of the region at ``base``: the fault row, its
    service time, the PTE lock (inside mmap_lock read when faults take it)."""
    address = _page_addr(base)

    def ptl(c: Ctx) -> np.ndarray:
        mid = mm_id(c) if callable(mm_id) else mm_id
        return ptl_addr(mid, address(c))

    ptl_hold = hold("page_table_lock", ptl, "write", "fault", role=role)
    nodes: list[Node] = [
        Mark("page_faults", {"address": address, "ip": FAULT_IP, "error_code": error_code}, role),
        Work(f"fault:{kind}", role=role),
    ]
    if p.fault_lock == "mmap_lock":
        nodes.append(hold("mmap_lock", mm, "read", "fault", (ptl_hold,), role))
    else:
        nodes.append(ptl_hold)
    return (Kernel(tuple(nodes)),)


def gather(pages: int, mm: Value, mm_id: Value, base: Value, *, freed: bool, fullmm: bool = False,
           pt_pages: int = 0, remote: bool = False, role: int = 0) -> Span:
    """An mmu_gather unmapping ``pages`` present pages from ``base``: a PTE-lock hold per
    2 MiB, a TLB flush and a page-free burst per ~10k pages (none for a full-mm teardown's
    flush, which x86 skips), the page-table pages freed at the end."""
    body: list[Node] = [Work("gather:own", role=role)]
    pmds = -(-pages // PTRS_PER_PMD)
    groups = -(-pmds // PMDS_PER_FLUSH)
    for g in range(groups):
        group_pages = 0
        for pmd in range(g * PMDS_PER_FLUSH, min(pmds, (g + 1) * PMDS_PER_FLUSH)):
            n = min(PTRS_PER_PMD, pages - pmd * PTRS_PER_PMD)
            group_pages += n

            def lock(c: Ctx, pmd: int = pmd) -> np.ndarray:
                b = base(c) if callable(base) else base
                mid = mm_id(c) if callable(mm_id) else mm_id
                return ptl_addr(mid, np.asarray(b, np.uint64) + np.uint64(pmd * PTRS_PER_PMD * PAGE))

            body.append(Span("lock_holds", {"lock_addr": lock, "lock_class": "page_table_lock", "mode": "write"},
                             (Work("zap:page", scale=n, role=role),), role))
        if not fullmm:
            flushed = group_pages if group_pages <= INVLPG_CEILING else -1
            reason = "TLB_LOCAL_SHOOTDOWN" if flushed > 0 else "TLB_LOCAL_MM_SHOOTDOWN"
            body.append(Mark("tlb_flushes", {"reason": reason, "pages": flushed}, role))
            if remote:
                body.append(Mark("tlb_flushes", {"reason": "TLB_REMOTE_SEND_IPI", "pages": flushed}, role))
        burst = (group_pages if freed else 0) + (pt_pages if g == groups - 1 else 0)
        if burst:
            body.append(Span("page_free_batches", {"pages": burst, "batched": True},
                             (Work("free:page", scale=burst, role=role),), role))
    total = (pages if freed else 0) + pt_pages
    cols = {"mm": mm, "fullmm": fullmm, "flushes": groups, "pages": total}
    return Span("gathers", cols, tuple(body), role)


def mmap(mm: Value, length: int, ret: Value, *, file: Value | None = None, anon_vma: Value | None = None,
         role: int = 0) -> Span:
    inner: list[Node] = []
    if file is not None:
        inner.append(hold("i_mmap_rwsem", file, "write", "mmap", role=role))
    if anon_vma is not None:
        inner.append(hold("anon_vma", anon_vma, "write", "mmap", role=role))
    return syscall("mmap", (hold("mmap_lock", mm, "write", "mmap", tuple(inner), role),), 0, length, ret, role)


def munmap(mm: Value, mm_id: Value, base: Value, length: int, present: int, *, freed: bool,
           file: Value | None = None, anon_vma: Value | None = None, remote: bool = False, role: int = 0) -> Span:
    """munmap: detach under mmap_lock write, then downgrade to read (mmap_write_downgrade in
    vms_complete_munmap_vmas) for the gather and the i_mmap / anon_vma unlinks."""
    pt_pages = -(-present // PTRS_PER_PMD) if present else 0
    inner: list[Node] = [gather(present, mm, mm_id, base, freed=freed, pt_pages=pt_pages, remote=remote, role=role)]
    if file is not None:
        inner.append(hold("i_mmap_rwsem", file, "write", "munmap", role=role))
    if anon_vma is not None:
        inner.append(hold("anon_vma", anon_vma, "write", "munmap", role=role))
    detach = hold("mmap_lock", mm, "write", "munmap", role=role)
    zap = hold("mmap_lock", mm, "read", "munmap_zap", tuple(inner), role)
    return syscall("munmap", (detach, zap), base, length, 0, role)


def madvise_dontneed(mm: Value, mm_id: Value, addr: Value, p: Params, *, freed: bool, remote: bool) -> Span:
    """MADV_DONTNEED of one page: a gather under the VMA lock (6.x; not a lock class here) or,
    with ``fault_lock="mmap_lock"``, under mmap_lock read."""
    g = gather(1, mm, mm_id, addr, freed=freed, remote=remote)
    body = (hold("mmap_lock", mm, "read", "madvise", (g,)),) if p.fault_lock == "mmap_lock" else (g,)
    return syscall("madvise", body, addr, PAGE, 0)


def mm_ptl_addr(mm_id: int) -> int:
    """mm->page_table_lock (taken by anon_vma_prepare and page-table allocation), one per mm."""
    return PTL_BASE + (mm_id << 28) + 0x0FFF_FFC0


# -- patterns ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    name: str
    description: str
    mode: str  # processes | threads
    default_region_pages: int
    build: Callable[[TaskInfo, Params, int], tuple[Node, ...]]  # (task, params, region pages) -> iteration

    def region_pages(self, p: Params) -> int:
        return p.region_pages or self.default_region_pages


def _region_base(task: TaskInfo, pages: int) -> int:
    span = -(-pages * PAGE // (2 << 20)) * (2 << 20) + (2 << 20)
    return REGION_TOP - (task.index + 1) * span


def _remote(p: Params, mode: str) -> bool:
    return mode == "threads" and min(p.tasks, p.cpus) > 1


def _wis(test: str, mode: str) -> Callable[[TaskInfo, Params, int], tuple[Node, ...]]:
    file_backed = test in ("page_fault2", "page_fault3", "mmap2", "tlb_flush1", "tlb_flush3")
    shared = test in ("page_fault3", "tlb_flush3")

    def build(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
        mm, base = mm_addr(t.pid), _region_base(t, pages)
        file = file_addr(t.index) if file_backed else None  # will-it-scale: a file per task
        remote = _remote(p, mode)
        length = pages * PAGE
        if test.startswith("mmap"):
            return (Work("think:user"), mmap(mm, length, base, file=file), Work("think:user"),
                    munmap(mm, t.pid, base, length, 0, freed=False, file=file, remote=remote))
        if test.startswith("page_fault"):
            kind = {"page_fault1": "anon", "page_fault2": "file_private", "page_fault3": "file_shared"}[test]
            return (
                Work("think:user"),
                mmap(mm, length, base, file=file),
                Repeat(pages, (Work("think:touch"), *fault(kind, base, mm, t.pid, EC_WRITE, p))),
                Work("think:user"),
                munmap(mm, t.pid, base, length, pages, freed=not shared, file=file, remote=remote),
            )
        kind = {"tlb_flush1": "file_private", "tlb_flush2": "anon", "tlb_flush3": "file_shared"}[test]

        def page(c: Ctx) -> np.ndarray:
            return np.uint64(base) + np.maximum(c.rep, 0).astype(np.uint64) * np.uint64(PAGE)

        return (
            Work("think:user"),
            mmap(mm, length, base, file=file),
            Repeat(pages, (
                Work("think:touch"), *fault(kind, base, mm, t.pid, EC_WRITE, p),
                Work("think:user"), madvise_dontneed(mm, t.pid, page, p, freed=not shared, remote=remote),
                Work("think:touch"), *fault("read", base, mm, t.pid, EC_READ, p),
            )),
            Work("think:user"),
            # what is left mapped is the zero page (tlb_flush1/2) or page cache (tlb_flush3): nothing is freed
            munmap(mm, t.pid, base, length, pages, freed=False, file=file, remote=remote),
        )

    return build


def _mmap_file(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    mm, base, shared = mm_addr(t.pid), _region_base(t, 1), file_addr(0)
    return (Work("think:user"), mmap(mm, PAGE, base, file=shared), Work("think:user"),
            munmap(mm, t.pid, base, PAGE, 0, freed=False, file=shared))


def _mmap_merge(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    """The steady state measured on Linux 6.18 (tier-1 recording of the program): the remapped
    page does not merge back (the forked neighbours' anon_vma chains are not singular, so
    is_mergeable_anon_vma refuses), so its first write falls back from the VMA lock to
    mmap_lock read (one read hold per fault, as recorded) and anon_vma_prepare gives it a
    fresh anon_vma of its own, which the next munmap unlinks. The shared root anon_vma is
    only taken by the first iteration's splits: see mprotect-split for a loop that keeps
    taking it."""
    mm = mm_addr(t.pid)
    page = _region_base(t, 2 * p.tasks + 1) + (2 * t.index + 1) * PAGE
    own = anon_addr(2000 + t.index)  # the page's own anon_vma (the allocator hands the same one back)
    unmap = munmap(mm, t.pid, page, PAGE, 1, freed=True, anon_vma=own)
    remap = mmap(mm, PAGE, page)

    def ptl(c: Ctx) -> np.ndarray:
        return ptl_addr(t.pid, _page_addr(page)(c))

    prepare = hold("anon_vma", own, "write", "fault", (hold("page_table_lock", mm_ptl_addr(t.pid), "write", "fault"),))
    first_write = Kernel((
        Mark("page_faults", {"address": _page_addr(page), "ip": FAULT_IP, "error_code": EC_WRITE}),
        Work("fault:anon"),
        hold("mmap_lock", mm, "read", "fault", (prepare, hold("page_table_lock", ptl, "write", "fault"))),
    ))
    return (Work("think:user"), unmap, Work("think:user"), remap, Work("think:touch"), first_write)


def _mprotect_split(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    """mprotect(PROT_READ) of the child's page splits its inherited VMA twice (anon_vma_clone
    and vma_prepare, each under the shared ROOT anon_vma); mprotect(PROT_READ|PROT_WRITE)
    merges the three pieces back (vma_prepare, and unlink_anon_vmas of the two removed)."""
    mm, root = mm_addr(t.pid), anon_addr(0)
    page = _region_base(t, 2 * p.tasks + 1) + (2 * t.index + 1) * PAGE

    def change(n_root_holds: int) -> Span:
        roots = tuple(hold("anon_vma", root, "write", "mprotect") for _ in range(n_root_holds))
        return syscall("mprotect", (hold("mmap_lock", mm, "write", "mprotect", roots),), page, PAGE, 0)

    return (Work("think:user"), change(4), Work("think:user"), change(3))


def _take_all_locks(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    n = p.files
    mm = mm_addr(t.pid)
    if t.index == 0:
        # i_mmap of every file first, then every anon_vma root (the setup parent's): mm_take_all_locks' order
        links = tuple({"lock_addr": file_addr(j), "lock_class": "i_mmap_rwsem", "mode": "write"} for j in range(n))
        links += tuple({"lock_addr": anon_addr(1000 + j), "lock_class": "anon_vma", "mode": "write"}
                       for j in range(n))
        take = hold("mmap_lock", mm, "write", "take_all",
                    (Chain(links, "take_all:step", "take_all:drop", (Work("take_all:register"),)),))
        # ioctl(KVM_CREATE_VM) and close(vm) are not syscalls of the trace format: Kernel groups
        return (Kernel((Work("think:kvm_create"), take)), Work("think:kvm_destroy"), Work("block:srcu", block=True))

    # the faulters, forked after setup: mmap one page of file (nr + k) mod n, write it, munmap
    def file(c: Ctx) -> np.ndarray:
        return file_addr((t.index + c.k) % n)

    base = _region_base(t, 1)
    return (Work("think:user"), mmap(mm, PAGE, base, file=file), Work("think:touch"),
            *fault("file_shared", base, mm, t.pid, EC_WRITE, p), Work("think:user"),
            munmap(mm, t.pid, base, PAGE, 1, freed=False, file=file))


SHARED_LIBS = 8  # file VMAs of a small process (libc, ld.so, ...): shared by every process
ANON_VMAS = 4  # heap, stack, data, the region


def _fork(parent_mm: int, parent_pid: int) -> tuple[Node, ...]:
    """dup_mmap under the parent's mmap_lock: link each child VMA into i_mmap / its anon_vma root."""
    links: list[Node] = [hold("i_mmap_rwsem", file_addr(5000 + j), "write", "fork") for j in range(SHARED_LIBS)]
    links += [hold("anon_vma", anon_addr(10 * parent_pid + j), "write", "fork") for j in range(ANON_VMAS)]
    return (Kernel((hold("mmap_lock", parent_mm, "write", "fork", tuple(links)), Work("fork:own"))),)


def _exit(t: TaskInfo, pages: int, base: int, libs: range, anon_roots: list[Value]) -> Span:
    """exit_group of the child: exit_mmap's full-mm gather and VMA unlinks under its mmap_lock."""

    def mm(c: Ctx) -> np.ndarray:
        return np.uint64(MM_BASE) + np.asarray(t.child_tid(c.k), np.uint64) * np.uint64(0x1000)

    def mm_id(c: Ctx) -> np.ndarray:
        return np.asarray(t.child_tid(c.k), np.uint64)

    unlinks: list[Node] = [hold("i_mmap_rwsem", file_addr(j), "write", "exit", role=1) for j in libs]
    unlinks += [hold("anon_vma", root, "write", "exit", role=1) for root in anon_roots]
    g = gather(pages, mm, mm_id, base, freed=True, fullmm=True, pt_pages=-(-pages // PTRS_PER_PMD) + 4, role=1)
    return syscall("exit_group", (hold("mmap_lock", mm, "write", "exit", (g, *unlinks), role=1),), role=1)


def _child_fault(t: TaskInfo, kind: str, base: int, ec: int, p: Params) -> tuple[Node, ...]:
    def mm(c: Ctx) -> np.ndarray:
        return np.uint64(MM_BASE) + np.asarray(t.child_tid(c.k), np.uint64) * np.uint64(0x1000)

    def mm_id(c: Ctx) -> np.ndarray:
        return np.asarray(t.child_tid(c.k), np.uint64)

    return fault(kind, base, mm, mm_id, ec, p, role=1)


def _fork_exit(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    base = _region_base(t, pages)
    return (
        Work("think:user"),
        *_fork(mm_addr(t.pid), t.pid),
        Repeat(pages, (Work("think:touch", role=1), *_child_fault(t, "cow", base, EC_COW, p))),
        # the child's anon VMAs hang off the parent's anon_vma roots: unlinking them takes those
        _exit(t, pages, base, range(5000, 5000 + SHARED_LIBS), [anon_addr(10 * t.pid + j) for j in range(ANON_VMAS)]),
        Work("think:wait"),
    )


def _child_anon(t: TaskInfo, j: int) -> Callable[[Ctx], np.ndarray]:
    def root(c: Ctx) -> np.ndarray:
        return np.uint64(ANON_BASE) + (np.asarray(t.child_tid(c.k), np.uint64) * np.uint64(10) + np.uint64(j)) \
            * np.uint64(0x80)

    return root


KBUILD_LIBS = 12  # cc1, libc, ld.so, libgmp, libmpc, ...: one address_space each, shared by every job
KBUILD_FAULTS_PER_BRK = 100
KBUILD_BRKS = 30  # 3000 faults per unit, as measured for the kbuild workload here


def _kbuild(t: TaskInfo, p: Params, pages: int) -> tuple[Node, ...]:
    base = _region_base(t, KBUILD_FAULTS_PER_BRK * KBUILD_BRKS)

    def child_mm(c: Ctx) -> np.ndarray:
        return np.uint64(MM_BASE) + np.asarray(t.child_tid(c.k), np.uint64) * np.uint64(0x1000)

    maps = [mmap(child_mm, 1 << 20, REGION_TOP - (j + 1) * (4 << 20), file=file_addr(6000 + j), role=1)
            for j in range(KBUILD_LIBS)]
    own_roots: list[Value] = [_child_anon(t, j) for j in range(ANON_VMAS)]
    brk = syscall("brk", (hold("mmap_lock", child_mm, "write", "brk", role=1),), role=1)
    compile_unit = Repeat(KBUILD_BRKS, (
        Repeat(KBUILD_FAULTS_PER_BRK, (Work("think:compile", role=1), *_child_fault(t, "anon", base, EC_WRITE, p))),
        brk,
    ))
    return (
        Work("think:user"),
        *_fork(mm_addr(t.pid), t.pid),
        Kernel((Work("exec:own", role=1),)),
        *maps,
        compile_unit,
        # after exec the compiler's anon VMAs have roots of their own
        _exit(t, KBUILD_FAULTS_PER_BRK * KBUILD_BRKS, base, range(6000, 6000 + KBUILD_LIBS), own_roots),
        Work("think:wait"),
    )


WIS_TESTS = {
    "page_fault1": "anonymous memory page fault: mmap anon, write every page, munmap",
    "page_fault2": "private file mapping page fault (a file per task)",
    "page_fault3": "shared file mapping page fault (a file per task)",
    "mmap1": "anonymous mmap + munmap, no touch",
    "mmap2": "private file mmap + munmap, no touch",
    "tlb_flush1": "write + MADV_DONTNEED per page of a private file mapping",
    "tlb_flush2": "write + MADV_DONTNEED per page of an anon mapping (1 MiB)",
    "tlb_flush3": "write + MADV_DONTNEED per page of a shared file mapping",
}


def _catalogue() -> dict[str, Pattern]:
    out: dict[str, Pattern] = {}
    for test, text in WIS_TESTS.items():
        pages = 256 if test == "tlb_flush2" else (128 << 20) // PAGE
        for mode in ("processes", "threads"):
            name = f"{test}_{mode}"
            out[name] = Pattern(name, f"will-it-scale {test}: {text}; tasks are {mode}", mode, pages, _wis(test, mode))
    out["mmap-file"] = Pattern("mmap-file", "forked tasks loop mmap/munmap of one page of one shared file "
                               "(i_mmap_rwsem)", "processes", 1, _mmap_file)
    out["mmap-merge"] = Pattern("mmap-merge", "forked children loop munmap + mmap(MAP_FIXED) of their own anon "
                                "page of an inherited VMA (6.x: after round one, own anon_vmas; faults take "
                                "mmap_lock read)", "processes", 1, _mmap_merge)
    out["mprotect-split"] = Pattern("mprotect-split", "forked children loop mprotect split + merge of their own "
                                    "page of one inherited VMA under the shared root anon_vma (anon_vma)",
                                    "processes", 1, _mprotect_split)
    out["take-all-locks"] = Pattern("take-all-locks", "task 0 loops KVM_CREATE_VM: mm_take_all_locks nests every "
                                    "i_mmap_rwsem and anon_vma of its mm inside mmap_lock; the others map and fault "
                                    "the same files", "processes", 1, _take_all_locks)
    out["fork-exit"] = Pattern("fork-exit", "tasks loop fork of a child that COW-writes its region and exits "
                               "(full-mm gathers)", "processes", 256, _fork_exit)
    out["kbuild"] = Pattern("kbuild", "job slots loop fork + exec of a compiler: shared-library mmaps, 3000 faults, "
                            "brk, full-mm exit", "processes", 1, _kbuild)
    return out


PATTERNS: dict[str, Pattern] = _catalogue()


def tasks_for(pattern: Pattern, p: Params) -> list[TaskInfo]:
    """The tasks of a synthesis: pids and tids as the workload program would have them."""
    out = []
    comm = pattern.name.split("_processes")[0].split("_threads")[0][:15]
    for i in range(p.tasks):
        if pattern.mode == "threads":
            pid, tid = TASK_TID_BASE, TASK_TID_BASE + 1 + i
        else:
            pid = tid = TASK_TID_BASE + 1 + i
        child = "cc1" if pattern.name == "kbuild" else comm
        out.append(TaskInfo(i, tid, pid, comm, i % p.cpus, child))
    return out
