"""Invariants of the queries on a real recording (tests/data/real_page_fault1, see its README)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from replay.analytics import queries
from replay.analytics.callers import LOCK_FUNCTION, stack_callers
from replay.analytics.sched import latencies
from replay.analytics.source import Source

REAL = Path(__file__).parent / "data" / "real_page_fault1"


@pytest.fixture(scope="module")
def src() -> Source:
    return Source.open(REAL)


@pytest.mark.parametrize("by", [["class"], ["caller"], ["task"], ["type"], ["class", "mode", "cpu"], ["lock"]])
def test_every_grouping_of_the_waits_adds_up_to_the_table(src: Source, by: list[str]) -> None:
    raw = src.trace.read("lock_waits")
    df = queries.run(src, "waits", by)
    assert df["count"].sum() == raw.height and df["total_ns"].sum() == raw["dur"].sum()
    assert df["max_ns"].max() == raw["dur"].max() and df["min_ns"].min() == raw["dur"].min()


def test_holds_count_the_successful_acquisitions(src: Source) -> None:
    raw = src.trace.read("lock_holds").filter(pl.col("success"))
    m = queries.run(src, "locks", ["class"]).filter(pl.col("lock_class") == "mmap_lock").row(0, named=True)
    assert m["hold_count"] == raw.filter(pl.col("lock_class") == "mmap_lock").height > 0


def test_callers_are_outside_the_locking_code_unless_the_stack_has_nothing_else(src: Source) -> None:
    callers = stack_callers(src.trace).collect().filter(pl.col("stack_id") >= 0)
    assert callers.height == src.trace.rows("stacks")
    for r in callers.iter_rows(named=True):
        frames = [f.split("+")[0] for f in r["frames"].split(" <- ")]
        outside = [f for f in frames if not LOCK_FUNCTION.match(f)]
        assert r["caller"] == (outside[0] if outside else frames[0])


def test_every_scheduling_latency_ends_when_its_task_is_switched_in(src: Source) -> None:
    for preempted in (False, True):
        lat = latencies(src, preempted=preempted).collect()
        assert lat.height > 50 and lat["dur"].min() >= 0
        ins = src.trace.read("sched_switch").select(pl.col("ts"), pl.col("next_tid").alias("tid"))
        ends = lat.select((pl.col("ts") + pl.col("dur")).alias("ts"), "tid")
        assert ends.join(ins, on=["ts", "tid"], how="anti").height == 0


def test_wakeup_latencies_are_a_subset_of_the_run_delays(src: Source) -> None:
    woken = latencies(src).collect()
    delayed = latencies(src, preempted=True).collect()
    assert woken.height <= delayed.height <= src.trace.rows("sched_wakeup") + src.trace.rows("sched_switch")
    ended = delayed.select((pl.col("ts") + pl.col("dur")).alias("end"), "tid")
    assert woken.select((pl.col("ts") + pl.col("dur")).alias("end"), "tid").join(ended, on=["end", "tid"],
                                                                                 how="anti").height == 0
