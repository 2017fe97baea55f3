"""Scheduling latency on real kernel events agrees with `perf sched latency` on the same recording.

tests/data/perf_sched/ holds `perf script` output of sched_switch/sched_waking/
sched_wakeup_new events and `perf sched latency -p` of the same run (its README
says how). perf 6.1 measures its "delay" from sched_wakeup/_new and from
switch-outs in state "R" only: it ignores sched_waking and does not read "R+"
(a preemption) as runnable. Shown the events as perf reads them, `sched_delay`
must give perf's maximum for every task; shown all of them it may only find
more and longer waits.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from replay.analytics import queries
from replay.analytics.source import Source
from replay.trace.writer import write_trace
from tests.analytics_fixtures import HOST

DATA = Path(__file__).parent / "data" / "perf_sched"
_EVENT = re.compile(r"^\s*(.+?)\s+(-?\d+)/(-?\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+sched:(\w+):\s+(.*)$")
#: prev_state as the tracepoint reports it: one bit per state, 0 running, TASK_REPORT_MAX preempted.
STATES = {"R": 0, "R+": 0x100, "S": 1, "D": 2, "T": 4, "t": 8, "X": 16, "Z": 32, "P": 64, "I": 128}


def trace_from_perf_script(text: str, out: Path, *, as_perf_61: bool) -> Path:
    """sched_switch / sched_waking / sched_wakeup_new lines -> sched_switch + sched_wakeup tables.

    ``as_perf_61`` keeps only what perf 6.1 uses: no sched_waking, "R+" read as not runnable.
    """
    switch, wake = [], []
    for seq, line in enumerate(text.splitlines()):
        m = _EVENT.match(line)
        if not m:
            continue
        cpu, ts, event = int(m[4]), int(m[5]) * 1_000_000_000 + int(m[6]), m[7]
        f = dict(re.findall(r"(\w+)=(\S+)", m[8]))
        if event == "sched_switch":
            state = STATES[f["prev_state"]]
            if as_perf_61 and f["prev_state"] == "R+":
                state = STATES["S"]
            switch.append((ts, seq, cpu, int(f["prev_pid"]), int(f["prev_prio"]), state, int(f["next_pid"]),
                           int(f["next_prio"])))
        elif event in ("sched_waking", "sched_wakeup", "sched_wakeup_new"):
            if as_perf_61 and event == "sched_waking":
                continue
            wake.append((ts, seq, cpu, int(f["pid"]), int(f["prio"]), int(f["target_cpu"]), event[6:],
                         max(int(m[3]), 0)))
    s_cols = ("ts", "seq", "cpu", "prev_tid", "prev_prio", "prev_state", "next_tid", "next_prio")
    w_cols = ("ts", "seq", "cpu", "tid", "prio", "target_cpu", "kind", "waker_tid")
    write_trace(out, {"sched_switch": dict(zip(s_cols, zip(*switch, strict=True), strict=True)),
                      "sched_wakeup": dict(zip(w_cols, zip(*wake, strict=True), strict=True))}, host=HOST)
    return out


def perf_latency() -> dict[int, tuple[int, float, float]]:
    """pid -> (switches, avg delay ms, max delay ms) from `perf sched latency -p`."""
    row = re.compile(r"^\s*.+:(\d+)\s+\|\s+[\d.]+ ms \|\s+(\d+) \| avg:\s+([\d.]+) ms \| max:\s+([\d.]+) ms")
    out = {}
    for line in (DATA / "latency_pids.txt").read_text().splitlines():
        m = row.match(line)
        if m:
            out[int(m[1])] = (int(m[2]), float(m[3]), float(m[4]))
    return out


@pytest.fixture(scope="module")
def script() -> str:
    return gzip.decompress((DATA / "script.txt.gz").read_bytes()).decode()


def per_task(path: Path, query: str) -> dict[int, dict]:
    return {r["tid"]: r for r in queries.run(Source.open(path), query, ["task"]).iter_rows(named=True)}


def test_max_delay_of_every_task_equals_perfs_on_the_events_perf_reads(tmp_path: Path, script: str) -> None:
    ours = per_task(trace_from_perf_script(script, tmp_path / "t", as_perf_61=True), "sched_delay")
    perf = {pid: p for pid, p in perf_latency().items() if p[2] > 0}
    assert len(perf) > 150
    for pid, (_, _, max_ms) in perf.items():
        assert ours[pid]["max_ns"] / 1e6 == pytest.approx(max_ms, abs=0.0005), pid  # perf prints 3 decimals


def test_delay_counts_equal_perfs_but_for_its_initial_runnable_entry(tmp_path: Path, script: str) -> None:
    # perf opens a zero-length delay for a task whose first event is being switched in
    trace = trace_from_perf_script(script, tmp_path / "t", as_perf_61=True)
    ours = per_task(trace, "sched_delay")
    trace_tables = Source.open(trace).trace
    events = [(r["seq"], r["prev_tid"], False) for r in trace_tables.read("sched_switch").iter_rows(named=True)]
    events += [(r["seq"], r["next_tid"], True) for r in trace_tables.read("sched_switch").iter_rows(named=True)]
    events += [(r["seq"], r["tid"], False) for r in trace_tables.read("sched_wakeup").iter_rows(named=True)]
    first_in: dict[int, bool] = {}
    for _, tid, switched_in in sorted(events):
        first_in.setdefault(tid, switched_in)
    for pid, (switches, avg_ms, _) in perf_latency().items():
        if pid not in ours:
            assert avg_ms == 0.0  # only perf's zero-length initial entries
            continue
        assert switches - ours[pid]["count"] == int(first_in[pid]), pid
        total_ms = avg_ms * switches
        assert ours[pid]["total_ns"] / 1e6 == pytest.approx(total_ms, abs=0.0005 * switches + 1e-9), pid


def test_all_events_give_at_least_perfs_waits(tmp_path: Path, script: str) -> None:
    full = per_task(trace_from_perf_script(script, tmp_path / "t", as_perf_61=False), "sched_delay")
    for pid, (switches, _, max_ms) in perf_latency().items():
        if max_ms > 0:
            assert full[pid]["max_ns"] / 1e6 >= max_ms - 0.0005 and full[pid]["count"] >= switches - 1, pid


def test_wakeup_latency_is_the_part_of_the_delay_that_follows_a_wakeup(tmp_path: Path, script: str) -> None:
    trace = trace_from_perf_script(script, tmp_path / "t", as_perf_61=False)
    woken, delayed = per_task(trace, "sched_latency"), per_task(trace, "sched_delay")
    assert set(woken) <= set(delayed)
    for tid, r in woken.items():
        assert r["count"] <= delayed[tid]["count"] and r["max_ns"] <= delayed[tid]["max_ns"]
    assert sum(r["count"] for r in woken.values()) > 300
