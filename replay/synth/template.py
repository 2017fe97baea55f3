"""Iteration templates: what one loop iteration of a workload does, as a tree.

A template is a tuple of nodes:

* ``Work(dist)`` — time passes (CPU work, or off CPU with ``block=True``),
  drawn from the model's distribution ``dist`` times ``scale``;
* ``Span(table, cols, body)`` — an interval row of ``table`` around ``body``
  (a syscall, a lock hold, a gather, a page-free burst);
* ``Mark(table, cols)`` — a point row at the current time (a fault, a TLB flush);
* ``Kernel(body)`` — ``body`` runs in the kernel without a row of its own (a
  page fault's service and its lock holds): never preempted or cut inside;
* ``Repeat(n, body)`` — ``body`` n times (the pages of a region);
* ``Chain(links, step, drop, inner)`` — lock holds nested ``len(links)`` deep
  (mm_take_all_locks), compiled without recursion.

``compile_template`` flattens the tree once into arrays: the time-advancing
leaves in order and, for every row-producing node instance, the leaves it spans.
``evaluate`` then draws all leaf durations of K iterations in one go and
turns them into boundary times by a cumulative sum, so a million page faults
cost a few numpy operations, not a million Python calls.

Column values in ``cols`` are constants or callables ``f(ctx) -> array`` of the
instances' iteration index ``ctx.k`` and repetition index ``ctx.rep``.
Every node carries a ``role``: 0 is the task itself, 1 the child process the
iteration forks (fork-exit, kbuild), so one CPU stream holds both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from replay.synth.model import Model


@dataclass(frozen=True, eq=False)
class Work:
    dist: str
    scale: float = 1.0
    role: int = 0
    block: bool = False


@dataclass(frozen=True, eq=False)
class Mark:
    table: str
    cols: Mapping[str, Any]
    role: int = 0


@dataclass(frozen=True, eq=False)
class Span:
    table: str
    cols: Mapping[str, Any]
    body: tuple[Any, ...]
    role: int = 0


@dataclass(frozen=True, eq=False)
class Kernel:
    body: tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class Repeat:
    n: int
    body: tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class Chain:
    """``links[0]`` holds ``links[1]`` holds ... holds ``inner``; each link is taken
    after a ``step`` and released (innermost first) after a ``drop``."""

    links: tuple[Mapping[str, Any], ...]  # lock_holds column values of each link
    step: str
    drop: str
    inner: tuple[Any, ...]
    role: int = 0


Node = Work | Mark | Span | Kernel | Repeat | Chain
NO_ROW = -1  # emitter of a Kernel group: it only keeps preemption out


@dataclass(frozen=True, eq=False)
class Emitter:
    """A row-producing node: which table, which columns, which role, whether an interval."""

    table: str
    cols: Mapping[str, Any]
    role: int
    interval: bool


@dataclass
class Compiled:
    """One iteration, flattened. Leaf j runs from boundary j to boundary j+1."""

    dists: list[str]
    leaf_dist: np.ndarray  # int32 index into dists
    leaf_scale: np.ndarray  # float64
    leaf_role: np.ndarray  # int8
    leaf_block: np.ndarray  # bool
    emitters: list[Emitter]
    inst_emitter: np.ndarray  # int32
    inst_first: np.ndarray  # int64: first leaf (span) or boundary (mark)
    inst_last: np.ndarray  # int64: last leaf, inclusive (span); -1 (mark)
    inst_rep: np.ndarray  # int64: index in the innermost Repeat, -1 outside any
    inst_depth: np.ndarray  # int32: lock holds of the same role enclosing this one
    free: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # boundary j preemptible (len M+1)

    @property
    def leaves(self) -> int:
        return int(self.leaf_dist.size)

    @property
    def instances(self) -> int:
        return int(self.inst_emitter.size)

    def mean_ns(self, model: Model) -> float:
        means = np.array([model[d].mean for d in self.dists])
        return float((means[self.leaf_dist] * self.leaf_scale).sum()) if self.leaves else 0.0


class _Builder:
    def __init__(self) -> None:
        self.dists: dict[str, int] = {}
        self.emitters: dict[tuple[Any, ...], int] = {}
        self.emitter_list: list[Emitter] = []

    def dist(self, key: str) -> int:
        return self.dists.setdefault(key, len(self.dists))

    def emitter(self, key: tuple[Any, ...], table: str, cols: Mapping[str, Any], role: int, interval: bool) -> int:
        """One emitter per template node (``key`` names it), however often the node repeats."""
        if key not in self.emitters:
            self.emitters[key] = len(self.emitter_list)
            self.emitter_list.append(Emitter(table, cols, role, interval))
        return self.emitters[key]


@dataclass
class _Part:
    leaf_dist: list[np.ndarray]
    leaf_scale: list[np.ndarray]
    leaf_role: list[np.ndarray]
    leaf_block: list[np.ndarray]
    inst: list[np.ndarray]  # (n, 5): emitter, first, last, rep, depth
    leaves: int = 0

    @classmethod
    def empty(cls) -> _Part:
        return cls([], [], [], [], [])

    def add_leaf(self, dist: int, scale: float, role: int, block: bool) -> int:
        self.leaf_dist.append(np.array([dist], np.int32))
        self.leaf_scale.append(np.array([scale], np.float64))
        self.leaf_role.append(np.array([role], np.int8))
        self.leaf_block.append(np.array([block], bool))
        self.leaves += 1
        return self.leaves - 1

    def add_inst(self, emitter: int, first: int, last: int, depth: int) -> None:
        self.inst.append(np.array([[emitter, first, last, -1, depth]], np.int64))

    def extend(self, other: _Part) -> None:
        off = self.leaves
        self.leaf_dist += other.leaf_dist
        self.leaf_scale += other.leaf_scale
        self.leaf_role += other.leaf_role
        self.leaf_block += other.leaf_block
        for a in other.inst:
            a = a.copy()
            a[:, 1] += off
            a[:, 2] = np.where(a[:, 2] >= 0, a[:, 2] + off, -1)
            self.inst.append(a)
        self.leaves += other.leaves

    def flat(self) -> tuple[np.ndarray, ...]:
        def cat(xs: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)

        inst = np.concatenate(self.inst) if self.inst else np.zeros((0, 5), np.int64)
        return (cat(self.leaf_dist, np.int32), cat(self.leaf_scale, np.float64), cat(self.leaf_role, np.int8),
                cat(self.leaf_block, bool), inst)


def _compile(nodes: Sequence[Node], b: _Builder, depth: dict[int, int], in_span: int) -> _Part:
    part = _Part.empty()
    for node in nodes:
        if isinstance(node, Work):
            if node.block and in_span:
                raise ValueError(f"Work({node.dist!r}, block=True) inside a span: a task may only sleep between rows")
            part.add_leaf(b.dist(node.dist), node.scale, node.role, node.block)
        elif isinstance(node, Mark):
            e = b.emitter(("node", id(node)), node.table, node.cols, node.role, False)
            part.add_inst(e, part.leaves, -1, depth.get(node.role, 0))
        elif isinstance(node, Span):
            is_lock = node.table == "lock_holds"
            d = depth.get(node.role, 0)
            inner_depth = {**depth, node.role: d + 1} if is_lock else depth
            body = _compile(node.body, b, inner_depth, in_span + 1)
            if body.leaves == 0:
                raise ValueError(f"a {node.table} span needs at least one Work in its body")
            e = b.emitter(("node", id(node)), node.table, node.cols, node.role, True)
            first = part.leaves
            part.extend(body)
            part.add_inst(e, first, part.leaves - 1, d)
        elif isinstance(node, Kernel):
            body = _compile(node.body, b, depth, in_span + 1)
            if body.leaves == 0:
                raise ValueError("a Kernel group needs at least one Work in its body")
            first = part.leaves
            part.extend(body)
            part.add_inst(NO_ROW, first, part.leaves - 1, 0)
        elif isinstance(node, Repeat):
            body = _compile(node.body, b, depth, in_span)
            part.extend(_tile(body, node.n))
        elif isinstance(node, Chain):
            part.extend(_compile_chain(node, b, depth, in_span))
        else:
            raise TypeError(f"not a template node: {node!r}")
    return part


def _compile_chain(node: Chain, b: _Builder, depth: dict[int, int], in_span: int) -> _Part:
    n = len(node.links)
    d0 = depth.get(node.role, 0)
    part = _Part.empty()
    step, drop = b.dist(node.step), b.dist(node.drop)
    for _ in range(n):
        part.add_leaf(step, 1.0, node.role, False)
    inner = _compile(node.inner, b, {**depth, node.role: d0 + n}, in_span + n)
    part.extend(inner)
    for _ in range(n):
        part.add_leaf(drop, 1.0, node.role, False)
    total = part.leaves
    for i, cols in enumerate(node.links):
        e = b.emitter(("chain", id(node), i), "lock_holds", cols, node.role, True)
        part.add_inst(e, i, total - 1 - i, d0 + i)
    return part


def _tile(body: _Part, n: int) -> _Part:
    dist, scale, role, block, inst = body.flat()
    m = body.leaves
    out = _Part.empty()
    out.leaf_dist = [np.tile(dist, n)]
    out.leaf_scale = [np.tile(scale, n)]
    out.leaf_role = [np.tile(role, n)]
    out.leaf_block = [np.tile(block, n)]
    out.leaves = m * n
    if len(inst):
        reps = np.repeat(np.arange(n, dtype=np.int64), len(inst))
        t = np.tile(inst, (n, 1))
        t[:, 1] += reps * m
        t[:, 2] = np.where(t[:, 2] >= 0, t[:, 2] + reps * m, -1)
        t[:, 3] = np.where(t[:, 3] < 0, reps, t[:, 3])
        out.inst = [t]
    return out


def compile_template(nodes: Sequence[Node]) -> Compiled:
    """Flatten one iteration's template into arrays (see the module docstring)."""
    b = _Builder()
    part = _compile(nodes, b, {}, 0)
    dist, scale, role, block, inst = part.flat()
    m = part.leaves
    if m == 0:
        raise ValueError("a template needs at least one Work")
    spans = inst[inst[:, 2] >= 0]  # row-producing spans and Kernel groups
    inst = inst[inst[:, 0] != NO_ROW]
    inside = np.zeros(m + 2, np.int64)
    np.add.at(inside, spans[:, 1] + 1, 1)
    np.add.at(inside, spans[:, 2] + 1, -1)
    free = np.cumsum(inside)[: m + 1] == 0
    # A role change (parent -> forked child -> parent) is a context switch of its own: no preemption there.
    change = np.zeros(m + 1, bool)
    change[1:m] = role[1:] != role[:-1]
    change[0] = change[m] = role[0] != role[-1]
    free &= ~change
    return Compiled(
        dists=list(b.dists),
        leaf_dist=dist,
        leaf_scale=scale,
        leaf_role=role,
        leaf_block=block,
        emitters=b.emitter_list,
        inst_emitter=inst[:, 0].astype(np.int32),
        inst_first=inst[:, 1],
        inst_last=inst[:, 2],
        inst_rep=inst[:, 3],
        inst_depth=inst[:, 4].astype(np.int32),
        free=free,
    )


@dataclass
class Timeline:
    """K iterations of a compiled template on one task's own (virtual) clock, in ns from 0."""

    compiled: Compiled
    iterations: int
    v: np.ndarray  # float64 boundary times, len K*M + 1

    @property
    def leaves(self) -> int:
        return self.compiled.leaves * self.iterations

    def leaf_role(self, leaf: np.ndarray | int) -> np.ndarray:
        return self.compiled.leaf_role[np.asarray(leaf) % self.compiled.leaves]

    @cached_property
    def _free_local(self) -> np.ndarray:
        return np.nonzero(self.compiled.free[: self.compiled.leaves])[0]

    def next_free(self, g: int) -> int:
        """The first preemptible boundary at or after global boundary ``g`` (the timeline's end if none)."""
        free, m, end = self._free_local, self.compiled.leaves, self.leaves
        if free.size == 0 or g >= end:
            return end
        k, j = divmod(g, m)
        i = int(np.searchsorted(free, j, "left"))
        return min(end, k * m + int(free[i]) if i < free.size else (k + 1) * m + int(free[0]))

    def last_free(self, g: int) -> int | None:
        """The last preemptible boundary at or before global boundary ``g`` (None if none)."""
        free, m = self._free_local, self.compiled.leaves
        if free.size == 0 or g < 0:
            return None
        k, j = divmod(min(g, self.leaves), m)
        i = int(np.searchsorted(free, j, "right")) - 1
        if i >= 0:
            return k * m + int(free[i])
        return (k - 1) * m + int(free[-1]) if k > 0 else None

    def block_leaves(self) -> np.ndarray:
        m = self.compiled.leaves
        local = np.nonzero(self.compiled.leaf_block)[0]
        return (np.arange(self.iterations)[:, None] * m + local[None, :]).ravel()

    def role_changes(self) -> np.ndarray:
        """Global boundary indices where the running role changes (fork into the child, exit back)."""
        m = self.compiled.leaves
        r = self.compiled.leaf_role
        local = [j for j in range(1, m) if r[j] != r[j - 1]]
        idx = (np.arange(self.iterations)[:, None] * m + np.array(local, np.int64)[None, :]).ravel()
        if r[0] != r[-1]:
            idx = np.sort(np.concatenate([idx, np.arange(1, self.iterations) * m]))
        return idx


def evaluate(compiled: Compiled, model: Model, rng: np.random.Generator, iterations: int) -> Timeline:
    """Draw every leaf duration of ``iterations`` iterations; boundary times by cumulative sum."""
    m = compiled.leaves
    durations = np.empty((iterations, m), np.float64)
    for d, key in enumerate(compiled.dists):
        cols = np.nonzero(compiled.leaf_dist == d)[0]
        durations[:, cols] = model[key].sample(rng, (iterations, cols.size)) * compiled.leaf_scale[cols]
    np.maximum(durations, 1.0, out=durations)  # no event takes less than a nanosecond
    v = np.empty(iterations * m + 1, np.float64)
    v[0] = 0.0
    np.cumsum(durations.ravel(), out=v[1:])
    return Timeline(compiled, iterations, v)


@dataclass(frozen=True)
class Ctx:
    """What a column callable sees: per instance, its iteration ``k`` and repetition ``rep``."""

    k: np.ndarray
    rep: np.ndarray


def column(value: Any, ctx: Ctx) -> Any:
    """A column value for the instances of ``ctx``: call it if it is callable."""
    if callable(value):
        return value(ctx)
    return value
