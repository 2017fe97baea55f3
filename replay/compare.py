"""Statistics over seeds: per-set means and paired differences with 95% t-intervals.

Each (policy set, seed) replay yields a flat ``metrics`` dict (SimResult.metrics).
Runs of two sets with the same seed share their random draws (wake-up jitter,
probe timing), so the difference is taken per seed and the interval is a
Student t-interval on those paired differences: mean ± t(0.975, n−1)·s/√n.
With one seed there is no interval (None).

Metric keys are ``name`` or ``name:qualifier``; a qualifier that is a lock
class (schema.LOCK_CLASSES) is one, anything else is an operation kind (or,
for preempt_off_max_ns, the cause of the section).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from replay.sim.neutral import Emitted, NeutralCode, counts
from replay.sim.ops import Block, Critical, Gather, Span, Think, Workload
from replay.trace.schema import LOCK_CLASSES

#: runs[set][seed] = metrics of that replay
Runs = Mapping[str, Mapping[int, Mapping[str, float]]]


@dataclass(frozen=True, order=True)
class MetricKey:
    """A metric split into its name and its lock class or operation kind."""

    metric: str
    lock_class: str | None = None
    kind: str | None = None

    @classmethod
    def parse(cls, key: str) -> MetricKey:
        name, _, qual = key.partition(":")
        if not qual:
            return cls(name)
        return cls(name, lock_class=qual) if qual in LOCK_CLASSES else cls(name, kind=qual)

    def __str__(self) -> str:
        qual = self.lock_class or self.kind
        return f"{self.metric}:{qual}" if qual else self.metric


@dataclass(frozen=True)
class Summary:
    """One metric of one policy set over its seeds."""

    key: MetricKey
    policy_set: str
    mean: float
    sd: float
    seeds: int
    derived: bool


@dataclass(frozen=True)
class Comparison:
    """``other`` minus ``base`` for one metric, paired by seed."""

    key: MetricKey
    base: str
    other: str
    base_mean: float
    other_mean: float
    diff_mean: float
    ci_low: float | None
    ci_high: float | None
    seeds: int
    derived: bool

    @property
    def significant(self) -> bool:
        """The 95% interval excludes zero."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)


@dataclass(frozen=True)
class Census:
    """What one walk over a workload's op trees finds: the replay report's notes and derived flags need
    nothing else from the ops (three walks of a 10-s recording's millions of ops took longer than
    reconstructing it)."""

    acquisitions: dict[str, int]  # Critical sections by lock class (downgraded read sections included)
    spans: dict[str, int]  # Spans by kind
    gathers: int
    dependent: frozenset[str]  # derived_dependent()


def census(workload: Workload) -> Census:
    """Walk every op once (iteratively, carrying the classes of the enclosing critical sections)."""
    out = set(workload.derived_classes)
    acq: dict[str, int] = {}
    spans: dict[str, int] = {}
    gathers = 0
    todo: list[tuple[tuple, tuple[str, ...]]] = [(tuple(t.ops), ()) for t in workload.threads]
    neutral: dict[int, NeutralCode] = {}  # each thread's policy-neutral instructions, counted once
    while todo:
        ops, outer = todo.pop()
        for op in ops:
            tp = type(op)
            if tp is Think or tp is Block:
                continue
            if tp is Critical:
                cls = op.lock.lock_class
                acq[cls] = acq.get(cls, 0) + 1
                if op.derived and outer:
                    out.update(outer)
                down = op.downgrade
                if op.body or down is not None:
                    todo.append((op.body if down is None else (*op.body, down), (*outer, cls)))
            elif tp is Span:
                spans[op.kind] = spans.get(op.kind, 0) + 1
                if op.body:
                    todo.append((op.body, outer))
            elif tp is Gather:
                gathers += 1
            elif tp is Emitted:  # fast segments at top level: no gather, no derived hold inside
                neutral[id(op.neutral)] = op.neutral
    for nc in neutral.values():
        for into, got in zip((acq, spans), counts(nc), strict=True):
            for k, v in got.items():
                into[k] = into.get(k, 0) + v
    return Census(acq, spans, gathers, frozenset(out))


def derived_dependent(workload: Workload) -> frozenset[str]:
    """Lock classes whose figures rest on derived holds: the derived classes themselves and
    every class whose critical sections contain a derived one (their holds include it)."""
    return census(workload).dependent


def rests_on_derived(key: MetricKey, dependent: frozenset[str]) -> bool:
    """Whether a figure rests on derived holds: per-class figures of a dependent class, and every
    figure not tied to one class (latencies, makespan, CPU time) as soon as any hold is derived."""
    if key.lock_class is not None:
        return key.lock_class in dependent
    return bool(dependent)


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return mean, 0.0
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var)


def summarize(runs: Runs, dependent: frozenset[str] = frozenset()) -> list[Summary]:
    """Mean and standard deviation over seeds of every metric of every set."""
    out = []
    for name, by_seed in runs.items():
        keys = sorted({k for m in by_seed.values() for k in m})
        for k in keys:
            xs = [float(m[k]) for _, m in sorted(by_seed.items()) if k in m]
            mean, sd = _mean_sd(xs)
            key = MetricKey.parse(k)
            out.append(Summary(key, name, mean, sd, len(xs), rests_on_derived(key, dependent)))
    return out


def compare(runs: Runs, base: str, others: Iterable[str] | None = None,
            dependent: frozenset[str] = frozenset(), confidence: float = 0.95) -> list[Comparison]:
    """Each other set minus ``base``, per metric, over the seeds both ran (paired)."""
    out = []
    for other in (others if others is not None else [s for s in runs if s != base]):
        a, b = runs[base], runs[other]
        seeds = sorted(set(a) & set(b))
        keys = sorted({k for s in seeds for k in a[s]} | {k for s in seeds for k in b[s]})
        for k in keys:
            pairs = [(float(a[s][k]), float(b[s][k])) for s in seeds if k in a[s] and k in b[s]]
            if not pairs:
                continue
            diffs = [y - x for x, y in pairs]
            n = len(diffs)
            d_mean, d_sd = _mean_sd(diffs)
            if n >= 2:
                half = t_quantile(0.5 + confidence / 2, n - 1) * d_sd / math.sqrt(n)
                lo, hi = d_mean - half, d_mean + half
            else:
                lo = hi = None
            key = MetricKey.parse(k)
            out.append(Comparison(
                key, base, other, math.fsum(x for x, _ in pairs) / n, math.fsum(y for _, y in pairs) / n,
                d_mean, lo, hi, n, rests_on_derived(key, dependent)))
    return out


# -- Student's t quantile (no scipy in the core) -------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on t_cdf; |error| < 1e-10)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0<p<1 and df>0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0
