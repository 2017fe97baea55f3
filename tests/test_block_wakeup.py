"""A recorded sleep replays as long as recorded (issue #16 item 2, docs/VALIDATION.md §e item 12).

Reconstruction's ``Block`` ops are the recorded tasks' off-CPU intervals, from the switch-out to the next
switch-in: the wake-up latency and the switch are inside them. The engines added their own drawn wake-up
(``wakeup_ns`` + Exp(``wake_jitter_ns``)) and a context switch to every block, so on page_fault1_threads each
recorded sleep replayed a median 8.3 µs (mean 17 µs) longer than recorded, and the mmaps with a sleep inside
their write hold (the per-VMA lock's writer, item 10) were +15 to +53 % at the p99 in every seed that did not
lose the wake-up race. With ``Costs.blocks_hold_wakeup`` (``--calibrate`` sets it) a block ends at its length.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from replay.interference import Interference, apply
from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.cengine import available as c_engine_available
from replay.sim.ops import Block, Span, Think, Thread, Workload

ENGINES = ["python", pytest.param("c", marks=pytest.mark.skipif(not c_engine_available(), reason="no C engine"))]
#: page_fault1_threads' calibrated wake-up (quiet recording of 2026-12-07 21:47 UTC)
COSTS = replace(Costs(), wakeup_ns=1_522, wake_jitter_ns=8_453, context_switch_ns=1_700)


def _mmap_with_a_sleep() -> Workload:
    """An mmap whose recorded 41.5 µs hold a 21.5-µs sleep (switch-out to switch-in), then user work."""
    span = Span("mmap", (Think(15_000, 1_000), Block(21_500, 16_000), Think(5_000, 37_500)), 1_000, 41_500)
    return Workload([Thread(7, 7, [Think(1_000, 0), span, Think(2_000, 42_500)])], cpus=2, contiguous=True)


def _mmap_latencies(costs: Costs, engine: str, seeds: int = 5) -> list[int]:
    out = []
    for seed in range(seeds):
        res = simulate(_mmap_with_a_sleep(), SimConfig(cpus=2, policy=resolve("current"), seed=seed, costs=costs,
                                                       probe=False, engine=engine))
        ops = pl.from_arrow(res.tables["sim_ops"])
        out += ops.filter(pl.col("kind") == "mmap")["dur"].to_list()
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_a_block_that_holds_its_wakeup_replays_its_recorded_length(engine):
    exact = _mmap_latencies(replace(COSTS, blocks_hold_wakeup=1), engine)
    assert exact == [41_500] * 5  # every seed: the recorded latency, no drawn wake-up on top


@pytest.mark.parametrize("engine", ENGINES)
def test_by_default_a_block_still_takes_a_drawn_wakeup_and_a_switch(engine):
    lat = _mmap_latencies(COSTS, engine)
    assert all(x >= 41_500 + COSTS.wakeup_ns + COSTS.context_switch_ns for x in lat)
    assert len(set(lat)) > 1  # the jitter


def test_both_engines_end_blocks_alike():
    costs = replace(COSTS, blocks_hold_wakeup=1)
    w = Workload([Thread(t, t, [Think(3_000, 0), Block(5_000 + 700 * t, 3_000), Think(2_000, None)] * 4)
                  for t in range(1, 5)], cpus=2)
    runs = [simulate(w, SimConfig(cpus=2, policy=resolve("current"), seed=3, costs=costs, probe=False, engine=e))
            for e in ("python", "c") if e == "python" or c_engine_available()]
    assert all(r.metrics == runs[0].metrics for r in runs)


def test_a_block_shorter_than_the_switch_still_leaves_the_cpu():
    w = Workload([Thread(7, 7, [Think(1_000, 0), Block(500, 1_000), Think(1_000, 1_500)])], cpus=1, contiguous=True)
    res = simulate(w, SimConfig(cpus=1, policy=resolve("current"), costs=replace(COSTS, blocks_hold_wakeup=1),
                                probe=False, engine="python"))
    sched = pl.from_arrow(res.tables["sim_sched"])
    assert sched.filter(pl.col("reason") == "block").height == 1


def test_calibration_says_a_traces_blocks_hold_their_wakeup(tmp_path):
    from replay.sim.calibrate import calibrate
    from tests.test_sim_calibrate import _trace

    trace = _trace(tmp_path, {"sched_switch": [{"ts": 1_000, "prev_tid": 5, "prev_state": 1, "next_tid": 0}]})
    assert calibrate(trace).costs.blocks_hold_wakeup == 1
    assert Costs().blocks_hold_wakeup == 0


def test_interference_blocks_are_as_long_as_recorded_when_the_engine_adds_nothing():
    w = Workload([Thread(7, 7, [Think(10_000, 0)])], cpus=1, contiguous=True)
    inf = Interference({7: [(3_000, 20_000)]})
    short = apply(w, inf, overhead_ns=2_000).workload.threads[0].ops
    exact = apply(w, inf, overhead_ns=2_000, exact=True).workload.threads[0].ops
    assert Block(18_000, 3_000) in short
    assert Block(20_000, 3_000) in exact


def test_a_bad_blocks_hold_wakeup_is_a_usage_error():
    from replay.errors import UsageError

    with pytest.raises(UsageError, match="blocks_hold_wakeup"):
        replace(Costs(), blocks_hold_wakeup=2)
