"""Work reconstruction: turn a trace into the simulator's Workload, and scale it."""

from replay.workload.reconstruct import reconstruct
from replay.workload.scale import scale_tasks

__all__ = ["reconstruct", "scale_tasks"]
