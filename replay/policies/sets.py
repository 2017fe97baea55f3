"""Policy sets: a lock implementation per lock class plus an mmu_gather policy.

The named sets follow the kernel history in DESIGN.md §2:

========== ============= ============ ========== ================ =========================
set        mmap_lock     i_mmap       anon_vma   page_table_lock  mmu_gather
========== ============= ============ ========== ================ =========================
2.6.39     rwsem-classic spinlock     spinlock   spinlock         percpu (preempt-off)
3.0        rwsem-classic mutex-c.     mutex-c.   spinlock         preemptible
current    rwsem         rwsem        rwsem      spinlock         preemptible
========== ============= ============ ========== ================ =========================

``rwsem`` is today's (optimistic spinning and lock stealing), ``rwsem-classic``
the FIFO rwsem-xadd of 2.6.39 and 3.0; ``mutex-c.`` is ``mutex-classic``, 3.0's
mutex with unqueued spinners, ``mutex`` today's (replay/sim/locks.py). ``zone_lock`` and
``runqueue_lock`` are spinlocks in every set. ``other`` (slab, lruvec, a filesystem's mutexes: whatever the lock-class
rules do not name) mixes sleeping and spinning locks that none of these changes
touched, so every set replays it with the waits the trace saw; a spinlock model
there would invent preempt-off sections out of sleeping mutexes.
``as-recorded`` replays every lock with the waits the trace saw (the identity
baseline). Explicit mappings such as ``"i_mmap_rwsem=spinlock,gather=percpu"``
override the ``current`` set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from replay.errors import UsageError
from replay.trace.schema import LOCK_CLASSES

LOCK_POLICIES = ("spinlock", "qspinlock", "mutex", "mutex-classic", "rwsem", "rwsem-classic", "as-recorded")
GATHER_POLICIES = ("percpu", "preemptible")


@dataclass(frozen=True)
class PolicySet:
    """A lock policy for every lock class and the mmu_gather policy, under one name."""

    name: str
    locks: Mapping[str, str]
    gather: str

    def __hash__(self) -> int:  # the mapping is read-only: hash its items (SimConfig stays hashable)
        return hash((self.name, tuple(sorted(self.locks.items())), self.gather))

    def lock_policy(self, lock_class: str) -> str:
        """The policy of ``lock_class`` (a class the set does not name is replayed as recorded)."""
        return self.locks.get(lock_class, "as-recorded")


def _set(name: str, mmap_lock: str, i_mmap: str, anon_vma: str, gather: str) -> PolicySet:
    locks = {
        "mmap_lock": mmap_lock,
        "i_mmap_rwsem": i_mmap,
        "anon_vma": anon_vma,
        "page_table_lock": "spinlock",
        "zone_lock": "spinlock",
        "runqueue_lock": "spinlock",
        "other": "as-recorded",
    }
    return PolicySet(name, MappingProxyType(locks), gather)


NAMED_SETS: dict[str, PolicySet] = {
    "2.6.39": _set("2.6.39", "rwsem-classic", "spinlock", "spinlock", "percpu"),
    "3.0": _set("3.0", "rwsem-classic", "mutex-classic", "mutex-classic", "preemptible"),
    "current": _set("current", "rwsem", "rwsem", "rwsem", "preemptible"),
    "as-recorded": PolicySet(
        "as-recorded", MappingProxyType({c: "as-recorded" for c in LOCK_CLASSES}), "preemptible"
    ),
}


def resolve(spec: str | Sequence[str]) -> PolicySet:
    """A PolicySet from a name ("2.6.39", "3.0", "current", "as-recorded") or from
    ``class=policy`` overrides (comma separated or a sequence) applied to "current";
    ``gather=percpu|preemptible`` sets the gather policy. Raises UsageError."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    items = [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
    if not items:
        raise UsageError("empty policy set; use one of " + ", ".join(NAMED_SETS) + " or class=policy")
    if len(items) == 1 and "=" not in items[0]:
        try:
            return NAMED_SETS[items[0]]
        except KeyError:
            raise UsageError(
                f"unknown policy set {items[0]!r}; known: {', '.join(NAMED_SETS)} (or class=policy overrides)"
            ) from None
    base = NAMED_SETS["current"]
    locks = dict(base.locks)
    gather = base.gather
    for item in items:
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise UsageError(f"policy override {item!r} is not class=policy (a named set cannot be combined)")
        if key == "gather":
            if value not in GATHER_POLICIES:
                raise UsageError(f"unknown gather policy {value!r}; known: {', '.join(GATHER_POLICIES)}")
            gather = value
        elif key in LOCK_CLASSES:
            if value not in LOCK_POLICIES:
                raise UsageError(f"unknown lock policy {value!r} for {key}; known: {', '.join(LOCK_POLICIES)}")
            locks[key] = value
        else:
            raise UsageError(f"unknown lock class {key!r}; known: {', '.join(LOCK_CLASSES)}, gather")
    return PolicySet(",".join(items), MappingProxyType(locks), gather)
