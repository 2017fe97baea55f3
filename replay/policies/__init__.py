"""Lock and mmu_gather policies: which implementation each lock class gets in a replay."""

from replay.policies.sets import GATHER_POLICIES, LOCK_POLICIES, NAMED_SETS, PolicySet, resolve

__all__ = ["GATHER_POLICIES", "LOCK_POLICIES", "NAMED_SETS", "PolicySet", "resolve"]
