"""Queueing-theory reference models: Poisson workloads and their closed-form waits.

The simulator is validated against these (DESIGN.md §6): one lock fed by Poisson
arrivals is an M/G/1 queue (Pollaczek–Khinchine), N CPUs fed by Poisson
arrivals of CPU work are M/M/c (Erlang C). The workloads are built for the
``open`` replay mode: arrival times are the ops' ``at_ns``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from replay.sim.ops import Critical, LockRef, Think, Thread, Workload


@dataclass(frozen=True)
class Sample:
    """What a Poisson workload actually drew: realised rate and service moments."""

    n: int
    rate_per_ns: float  # arrivals / span of arrival times
    mean_service_ns: float
    second_moment_ns2: float


def _service(rng: random.Random, mean_ns: float, dist: str) -> int:
    if dist == "exp":
        return max(1, round(rng.expovariate(1.0 / mean_ns)))
    if dist == "det":
        return round(mean_ns)
    raise ValueError(f"service distribution must be exp or det, not {dist!r}")


def poisson_lock_workload(n: int, rho: float, service: str = "exp", mean_service_ns: float = 1000.0,
                          seed: int = 0, streams: int = 200, lock_class: str = "i_mmap_rwsem",
                          mode: str = "write") -> tuple[Workload, Sample]:
    """``n`` Poisson arrivals at utilisation ``rho`` of one lock, each holding it for a service time.

    Arrivals are dealt round-robin to ``streams`` threads, so a thread's previous
    request is long finished when its next arrives (open replay). Give the
    simulation at least ``streams`` CPUs so CPUs never limit the lock queue.
    """
    rng = random.Random(seed)
    lam = rho / mean_service_ns
    t = 0.0
    ops: list[list] = [[] for _ in range(streams)]
    s1 = s2 = 0.0
    lock = LockRef(lock_class, 0x1000)
    for i in range(n):
        t += rng.expovariate(lam)
        s = _service(rng, mean_service_ns, service)
        s1 += s
        s2 += float(s) * s
        ops[i % streams].append(Critical(lock, mode, s, at_ns=round(t)))
    threads = [Thread(tid=k + 1, pid=1, ops=o, start_ns=o[0].at_ns if o else 0) for k, o in enumerate(ops)]
    return Workload(threads, cpus=streams, name=f"M/{'M' if service == 'exp' else 'D'}/1 rho={rho}"), \
        Sample(n, n / t, s1 / n, s2 / n)


def poisson_cpu_workload(n: int, rho: float, cpus: int, mean_service_ns: float = 1000.0, seed: int = 0,
                         streams: int = 400) -> tuple[Workload, Sample]:
    """``n`` Poisson arrivals of exponential CPU work at per-CPU utilisation ``rho`` on ``cpus`` CPUs (M/M/c)."""
    rng = random.Random(seed)
    lam = rho * cpus / mean_service_ns
    t = 0.0
    ops: list[list] = [[] for _ in range(streams)]
    s1 = s2 = 0.0
    for i in range(n):
        t += rng.expovariate(lam)
        s = _service(rng, mean_service_ns, "exp")
        s1 += s
        s2 += float(s) * s
        ops[i % streams].append(Think(s, at_ns=round(t)))
    threads = [Thread(tid=k + 1, pid=k + 1, ops=o, mm=k + 1, start_ns=o[0].at_ns if o else 0)
               for k, o in enumerate(ops)]
    return Workload(threads, cpus=cpus, name=f"M/M/{cpus} rho={rho}"), Sample(n, n / t, s1 / n, s2 / n)


def pk_wait(rate: float, mean_s: float, second_moment: float) -> float:
    """Pollaczek–Khinchine mean wait in queue of M/G/1: λE[S²] / (2(1-ρ))."""
    rho = rate * mean_s
    if rho >= 1:
        return math.inf
    return rate * second_moment / (2 * (1 - rho))


def mm1_wait(rate: float, mean_s: float) -> float:
    """M/M/1 mean wait in queue: ρ/(μ-λ)."""
    return pk_wait(rate, mean_s, 2 * mean_s * mean_s)


def md1_wait(rate: float, mean_s: float) -> float:
    """M/D/1 mean wait in queue: ρ/(2μ(1-ρ))."""
    return pk_wait(rate, mean_s, mean_s * mean_s)


def erlang_c(c: int, a: float) -> float:
    """Probability an arrival waits in M/M/c with offered load ``a`` = λ/μ Erlangs."""
    if a >= c:
        return 1.0
    term = 1.0
    total = 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    top = term * a / c * c / (c - a)
    return top / (total + top)


def erlang_c_wait(c: int, rate: float, mean_s: float) -> float:
    """M/M/c mean wait in queue: C(c, a) / (cμ - λ)."""
    a = rate * mean_s
    return erlang_c(c, a) / (c / mean_s - rate)
