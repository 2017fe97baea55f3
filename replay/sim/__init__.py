"""The discrete-event simulator of the mm and its locks (docs/SIMULATOR.md)."""

from replay.sim.costs import Costs
from replay.sim.simulate import SimConfig, SimResult, simulate

__all__ = ["Costs", "SimConfig", "SimResult", "simulate"]
