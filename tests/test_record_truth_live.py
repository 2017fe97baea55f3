"""Live truth test (issue 11, item 3): perf stat and mmreplay watch ONE run of a workload.

`mmreplay record -- perf stat -e <tracepoints> -- WORKLOAD`: for lock:contention_begin,
sched:sched_switch (switch-outs of the workload's tasks), exceptions:page_fault_user and
tlb:tlb_flush the rows recorded for the workload's tasks are at least 99.5 % of perf's
count, and `info`'s lost is 0 for those probes.

Why this is not flaky although other recordings may run at the same time: both
tools count the same run's hits per task, so the machine's load changes the counts
of both alike; another tool's BPF programs cannot make a raw tracepoint program
skip a hit (its recursion guard is per program); perf's count includes the
contentions our own programs cause in the workload's tasks, which mmreplay counts
apart (tracer.perfcheck.Agreement.ratio takes them out). The workload runs 4 threads
on 2 CPUs so that every tracepoint has tens of hits at least (asserted; contention
needs the threads to overlap). Measured: 100.0 % to 100.66 %; the extra rows are the
workload's hits before perf enables its counters at exec.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replay.trace.reader import Trace
from tests.live import mm_workload
from tracer.perfcheck import TRUTH_TRACEPOINTS, compare_with_perf, parse_perf_stat_csv

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def same_run(tmp_path_factory):
    exe = mm_workload(tmp_path_factory, "mmrtr", "perf")
    csv, out = exe.parent / "perf.csv", exe.parent / "trace"
    perf = ["perf", "stat", "-x,", "-o", str(csv)]
    for tp in TRUTH_TRACEPOINTS:
        perf += ["-e", tp]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "replay", "record", "-o", str(out), "--no-tier2-check", "--",
                        *perf, "--", str(exe), "4", "200", "256"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    trace = Trace.open(out)
    return trace, compare_with_perf(trace, exe.name, parse_perf_stat_csv(csv.read_text()))


@pytest.mark.parametrize("tracepoint", TRUTH_TRACEPOINTS)
def test_recorded_rows_are_at_least_99_5_percent_of_perf_stat(same_run, tracepoint):
    _, rows = same_run
    a = next(r for r in rows if r.tracepoint == tracepoint)
    # below 200 hits the 0.5 % tolerance allows no miss at all, which is what was measured (recorded >=
    # perf - recorder in every run); contention needs the threads to overlap, on a loaded machine
    # they overlap less (84 to 618 contention_begins measured)
    assert a.perf >= 20, a
    assert a.ratio is not None and a.ratio >= 0.995, a


@pytest.mark.parametrize("tracepoint", TRUTH_TRACEPOINTS)
def test_info_reports_no_loss_for_the_compared_probes(same_run, tracepoint):
    trace, rows = same_run
    a = next(r for r in rows if r.tracepoint == tracepoint)
    # a switch the kernel made without a sched_switch event (on this host, after a switch to a thread of
    # the VM's agent, which perf does not see either) is not lost: reported apart (not_emitted_by_kernel)
    assert a.lost == 0, a


def test_info_prints_the_loss_breakdown_and_a_lost_headline_of_real_loss_only(same_run, capsys):
    from replay.cli.main import main

    trace, _ = same_run
    assert main(["info", str(trace.path)]) == 0
    out = capsys.readouterr().out
    headline = next(line for line in out.splitlines() if line.startswith("lost "))
    assert headline.split()[1] == str(trace.manifest.lost_events)
    assert trace.manifest.lost_events == sum(p.lost for p in trace.manifest.probes)
    header = next(line for line in out.splitlines() if line.startswith("probe "))
    assert header.split()[:7] == ["probe", "tier", "status", "events", "lost", "recorder", "unmatched"]
