"""Live cross-check (issue 6): mmreplay's contention summary agrees with `perf lock contention` of the same run.

`mmreplay record --comm W -- perf lock record -- W` starts perf (blocked) only once
the probes are attached, and perf starts W only once its events are set up; both
stop after W has exited. So both read every lock:contention_{begin,end} hit of
W's threads, from the same tracepoint calls:

* counts: each tracepoint call runs our BPF program, then (if it returned
  non-zero) hands the event to perf, and both pair begins with ends per tid and
  lock, from the first begin. perf folds every repeated begin into the open
  wait; we fold the repeats the kernel makes inside one wait (a mutex between
  spinning and sleeping; bpf/mmr_lc_pair.h), which is every repeat when no end
  is lost, and then both pair alike. They differ by the batches our ring buffer
  refused (the manifest's `ring_buffer_refused`) and by hits skipped as BPF
  recursion (`skipped`): with raw tracepoints (this host) our programs' skips
  are ours alone, perf sees those hits; with classic ones a skip is perf's too
  (perf_trace_run_bpf_submit returns early). A lost end makes us drop its wait
  (counted unmatched) where perf, with classic tracepoints, folds the task's
  next wait on that lock into it: either way one wait per skip pairs apart.
  One edge remains: perf stops recording a task in do_exit (perf_event_exit_task),
  we watch it until it is gone, so some waits of a dying thread (stack through
  do_exit; seen: the futex wake of mm_release, for pthread_join) are ours alone.
  Callers: perf 6.1 names a caller after skipping 3 frames, so perf's rows
  are regrouped by mmreplay's rule applied to perf's `-v` stacks (`mm_caller`).
  perf also keys its rows without those 3 frames and prints one stack per row,
  so callers that take a lock directly under a shared path (rcu_core and
  run_timer_softirq, both under handle_softirqs, interrupting the same
  instruction; seen in 1 of 4 runs) share a row: such callers are compared as
  one pool (`perf_lock.caller_pools`).
* totals: our timestamps are `bpf_ktime_get_ns()` at the start of our programs;
  perf's are `local_clock()` taken after our program has run (in
  perf_prepare_sample). So each of our waits is longer by the run time of our
  contention_begin program (most of it the kernel stack capture) and shorter by
  that of our contention_end program: -E_i <= ours_i - perf_i <= B_i. Summed over
  any set of waits, the difference lies in [-sum E, +sum B], and the kernel's BPF
  run-time statistics (`record --probe-cost`) give sum B and sum E as the programs'
  run_time_ns. Added slack: perf prints totals to 2 decimals (its resolution), and
  per wait 0.2 us for what the statistics do not time (entering/leaving the program,
  perf's path to its timestamp; measured ~0.1 us with the stack capture removed), and the steal
  time of the recording: a virtual CPU the host takes away between our program and perf's timestamp
  shifts one wait by that long, outside the programs' run time (the statistics time only the program;
  /proc/stat's steal over the recording, in 10 ms ticks, plus a tick per CPU, bounds it; 0 on bare
  metal, 60-1,010 ms per recording measured here under load, which weakens the totals test by as
  much on such a host). Seen once in 24 loaded runs before this term: irqentry_exit_to_user_mode, equal counts,
  no skip, ours 8.27 ms short of perf where the end program's whole run time was 7.07 ms (the run's
  data was not kept: steal is the candidate, not proven; an interrupt in that window, which this
  kernel does not time (no IRQ_TIME_ACCOUNTING), would do the same and has no term).
  The two clocks run at the same rate here (both TSC; their offset moved by at
  most a few us over a run, <= 2 ppm: <= 0.1 us on a 50 ms wait), so the wait
  length does not enter the bound.

docs/QUERIES.md ("Cross-check with perf lock") has the measured numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from replay.analytics import perf_lock, queries
from replay.analytics.source import Source
from replay.analytics.sql import run_sql
from replay.trace.reader import Trace

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
THREADS, ITERATIONS = 4, 2000  # 200-50k contended waits (mmap_lock sleeping; page-table, LRU spinning), ~3 s
UNTIMED_NS_PER_WAIT = 200
HANG_S = 600  # a command running longer hangs (CI's whole run has 30 minutes)


@dataclass
class SameRun:
    probes: str
    trace: Trace
    perf: pl.DataFrame  # parsed `perf lock contention -v`
    ours: pl.DataFrame  # `waits --by caller`
    cmp: pl.DataFrame  # perf_lock.compare on mm_caller (pooled), plus exit_count/exit_total_ns: ours via do_exit
    refused: int  # lock_contention events our ring buffer refused
    skipped: int  # lock_contention hits the kernel skipped as BPF recursion (for perf too)
    in_lock_op: int  # hits that came while a program of ours was in a map operation: not recorded, ours alone
    begin_run_ns: int | None  # run_time_ns of our contention_begin / contention_end programs
    end_run_ns: int | None
    begin_runs: int
    classic: bool  # the lock_contention programs attached classic tracepoints (a skip is perf's too)
    steal_ns: int  # time the host took this machine's CPUs during the recording (/proc/stat), upper bound


def _live_or_skip() -> None:
    from tracer import kernel_env

    try:
        kernel_env.prepare()
    except kernel_env.EnvironmentProblem as e:
        pytest.skip(f"live recording impossible here: {e}")
    for tool in ("perf", "gcc"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: no perf lock cross-check")
    if not kernel_env.tracepoint_exists("lock", "contention_begin"):
        pytest.skip("kernel has no lock:contention_begin tracepoint")


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Path:
    _live_or_skip()
    exe = tmp_path_factory.mktemp("wl") / f"mmplk{os.getpid() % 100000}"  # unique comm (<= 15 chars)
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/data/perf_lock/mmcontend.c")],
                   check=True)
    return exe


@pytest.fixture(scope="module", params=["lock_contention", "all"])
def same_run(request, tmp_path_factory, workload) -> SameRun:
    """One run of the workload under `perf lock record`, recorded by mmreplay (only the
    lock_contention probe, or every tier-1 probe) with the kernel timing our programs (--probe-cost)."""
    d = tmp_path_factory.mktemp(f"same-{request.param}")
    trace, data = d / "trace", d / "perf.data"
    probes = [] if request.param == "all" else ["--probes", request.param]
    cmd = [sys.executable, "-m", "replay", "record", "-o", str(trace), "--comm", workload.name, *probes,
           "--no-tier2-check", "--probe-cost", "--", "perf", "lock", "record", "-o", str(data), "--",
           str(workload), str(THREADS), str(ITERATIONS)]
    # a hang guard, not a tolerance: the former 120 s was exceeded (compiling the probes, then ~3 s of
    # workload under perf) beside a concurrent system-wide recording at a load average of 14 on 2 CPUs
    steal0 = _steal_ticks()
    r = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=HANG_S)
    steal = _steal_ticks() - steal0 + (os.cpu_count() or 1)  # + one tick per CPU: the counters' resolution
    assert r.returncode == 0, r.stderr
    rep = subprocess.run(["perf", "lock", "contention", "-i", str(data), "-v"], capture_output=True, text=True,
                         timeout=HANG_S)
    assert rep.returncode == 0, rep.stderr[-2000:]
    perf = perf_lock.parse(rep.stderr)
    t = Trace.open(trace)
    ours = queries.run(Source.open(trace), "waits", ["caller"])
    manifest = json.loads((trace / "manifest.json").read_text())
    extra = manifest["extra"]
    mode = next(p["reason"] for p in manifest["probes"] if p["name"] == "lock_contention")
    cost = extra.get("probe_cost", {})
    exiting = run_sql(Source.open(trace), "SELECT c.caller, count(*) AS exit_count, sum(w.dur) AS exit_total_ns "
                      "FROM lock_waits w JOIN callers c USING (stack_id) WHERE c.frames LIKE '%do_exit+%' "
                      "GROUP BY c.caller")
    pools = perf_lock.caller_pools(perf, t)
    exiting = perf_lock.pooled(exiting, pools).group_by("caller").agg(pl.col("exit_count", "exit_total_ns").sum())
    cmp = perf_lock.compare(perf, ours, key="mm_caller", pools=pools)
    cmp = cmp.join(exiting, on="caller", how="left").with_columns(
        pl.col("exit_count", "exit_total_ns").fill_null(0), pl.col("perf_count", "perf_total_ns",
                                                                     "perf_total_resolution_ns").fill_null(0),
        pl.col("mm_count", "mm_total_ns").fill_null(0)).with_columns(
        (pl.col("mm_count") - pl.col("perf_count")).alias("count_diff"),
        (pl.col("mm_total_ns") - pl.col("perf_total_ns")).alias("total_diff_ns"))
    return SameRun(
        probes=request.param, trace=t, perf=perf, ours=ours, cmp=cmp,
        refused=extra["lost_breakdown"]["ring_buffer_refused"]["lock_contention"],
        # with raw tracepoints the lock_contention programs' own skips are contentions the recorder caused
        skipped=sum(extra["lost_breakdown"].get(k, {}).get("lock_contention", 0)
                    for k in ("bpf_recursion_skipped", "recorder_bpf_recursion")),
        # counted as the recorder's (recorder_in_kernel): its own map-lock contention, or an interrupt's
        # contention nested in one of our programs' map operations (seen once: rcu_core's try_to_wake_up
        # waiting for a pi_lock, a workload task's wait perf has): either way not written
        in_lock_op=extra["lost_breakdown"].get("recorder_in_kernel", {}).get("lock_contention", 0),
        begin_run_ns=cost.get("lock:contention_begin", {}).get("run_ns"),
        end_run_ns=cost.get("lock:contention_end", {}).get("run_ns"),
        begin_runs=cost.get("lock:contention_begin", {}).get("runs", 0),
        classic=mode.startswith("classic"),
        steal_ns=steal * 10**9 // os.sysconf("SC_CLK_TCK"))


def _steal_ticks() -> int:
    """Steal time of all CPUs so far (/proc/stat's cpu line, in clock ticks): a hypervisor running something
    else on this machine's virtual CPUs; 0 on bare metal."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


def _show(run: SameRun) -> str:
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=40):
        table = run.cmp.drop("perf_total_resolution_ns", "perf_max_ns")
        return f"probes={run.probes} refused={run.refused} skipped={run.skipped} in_lock_op={run.in_lock_op}\n{table}"


def _paired_alike(run: SameRun) -> tuple[pl.DataFrame, int]:
    """The callers both tools paired alike, and how many of them may still pair one wait apart unseen.

    A contention hit skipped as BPF recursion leaves one wait paired apart (the module docstring). With raw
    tracepoints the skip is ours alone: we drop the wait that lost its end (or never record the one that
    lost its begin), perf has it, and the caller's count is short. With classic ones perf lost it too and
    folds the task's next wait on that lock into the stale begin (a 1.41 s "spinlock" wait against our
    36 ms, seen with 8 skips under load 12) where we start anew: the counts agree, the totals do not, and
    up to one caller per skip not already short may pair apart unseen. No per-wait bound holds for those:
    callers short by other than the exit-path waits are left out of the comparison of totals and maxima,
    and with classic tracepoints up to the remaining skips may fall outside the bound. So are the callers
    we count more waits of than perf beyond the exit path: the raw tracepoints see a few contentions perf's
    own event path does not record (test_every_caller_has_perfs_count_...), waits with no perf counterpart."""
    over = pl.col("count_diff") > pl.col("exit_count")
    if not run.skipped and not run.in_lock_op:
        return run.cmp.filter(~over), 0
    alike = run.cmp.filter(pl.col("count_diff") == pl.col("exit_count"))
    short = run.cmp.filter(pl.col("count_diff") < pl.col("exit_count"))
    assert short.height <= run.skipped + run.in_lock_op, _show(run)
    # a hit not recorded inside our map operation is ours alone (a short caller), never paired apart unseen
    return alike, (max(0, run.skipped - max(0, short.height - run.in_lock_op)) if run.classic else 0)


def test_the_run_contends_and_no_wait_is_cut_by_the_recordings_edges(same_run):
    assert same_run.perf["contended"].sum() >= 100, "the workload did not contend: nothing to compare"
    waits = same_run.trace.scan("lock_waits").collect()
    # perf, and the workload it forks, ran inside the recording: no wait was cut. A hit skipped as BPF
    # recursion leaves a begin open until the stop, of a task gone by then, or an end without its begin, of
    # a task born after the start: neither is a wait cut by the recording's edges, and neither is written
    assert waits["incomplete"].sum() == 0, _show(same_run)


def test_every_caller_has_perfs_count_of_waits_up_to_refused_and_exit_path_waits(same_run):
    """Same tracepoint hits, same pairing: we are short only by ring-buffer refusals, recursion skips and
    hits that came inside one of our programs' map operations (each counted in the manifest). Over, by waits in the
    exit path after perf stopped watching the task and, since the probes attach raw tracepoints (which do
    not share the classic tracepoints' dispatch with perf), by a few waits perf's own event path does not
    record (measured: try_to_wake_up 258 vs perf's 254, sched_balance_rq 5 vs 4, every other caller equal);
    the over-count is therefore not bounded here, only shown."""
    cmp = same_run.cmp
    assert cmp["caller"].null_count() == 0, _show(same_run)
    short = (-cmp["count_diff"]).clip(lower_bound=0).sum()
    assert short <= same_run.refused + same_run.skipped + same_run.in_lock_op, _show(same_run)


def test_wait_totals_differ_by_at_most_the_run_time_of_our_probes(same_run):
    """ours - perf lies in [-(end program time), +(begin program time)] for every caller and in sum."""
    if same_run.begin_run_ns is None or same_run.end_run_ns is None:
        pytest.skip("the kernel did not time the BPF programs (BPF_ENABLE_STATS refused): no bound")
    if same_run.refused:
        pytest.skip(f"{same_run.refused} events refused by the ring buffer: totals lack those waits")
    cmp, unseen = _paired_alike(same_run)
    assert same_run.begin_runs >= cmp["mm_count"].sum()  # the program ran at least once per wait

    def bound(r: dict) -> tuple[int, int]:
        slack = r["perf_total_resolution_ns"] + UNTIMED_NS_PER_WAIT * r["perf_count"] + same_run.steal_ns
        return -same_run.end_run_ns - slack, same_run.begin_run_ns + slack + r["exit_total_ns"]

    outside = [(r, *bound(r)) for r in cmp.iter_rows(named=True)
               if not bound(r)[0] <= r["total_diff_ns"] <= bound(r)[1]]
    assert len(outside) <= unseen, (outside, _show(same_run))
    inside = cmp.filter(~pl.col("caller").is_in([r["caller"] for r, _lo, _hi in outside]))
    total = {"caller": "(all)", **{c: inside[c].sum() for c in (
        "perf_count", "total_diff_ns", "perf_total_resolution_ns", "exit_total_ns")}}
    lo, hi = bound(total)
    assert lo <= total["total_diff_ns"] <= hi, (total, lo, hi, _show(same_run))


def test_every_callers_longest_wait_agrees_within_what_our_probes_cost(same_run):
    """The longest wait per caller, bounded by the probes' measured run time, not by a guessed tail.

    Per wait ours_i - perf_i = B_i - E_i with B_i, E_i >= 0 (the module docstring). With j our longest
    wait and k perf's: ours_max - perf_max <= ours_j - perf_j <= B_j, and perf_max - ours_max <=
    perf_k - ours_k <= E_k <= E (the contention_end program's whole run time, --probe-cost). One B_j is
    at most the caller's sum of B_i = (its total difference) + (its sum of E_i) <= total_diff + E; an
    exit-path wait of ours alone (no perf_j) is at most the exit total, which total_diff includes. So,
    with the same slack as the totals (perf's print resolution, the untimed 0.2 us per wait):
        -E - slack <= ours_max - perf_max <= max(total_diff, 0) + E + slack.
    No tail of B_i is assumed: one wait once differed by 131.7 us in a loaded CI run, where a guessed
    1 % + 100 us failed; this bound holds whatever one wait costs.
    """
    if same_run.begin_run_ns is None or same_run.end_run_ns is None:
        pytest.skip("the kernel did not time the BPF programs (BPF_ENABLE_STATS refused): no bound")
    if same_run.refused:
        pytest.skip(f"{same_run.refused} events refused by the ring buffer: a longest wait may be missing")
    alike, unseen = _paired_alike(same_run)
    both = alike.filter((pl.col("perf_count") > 0) & (pl.col("mm_count") > 0))
    assert both.height > 0, _show(same_run)
    outside = []
    for r in both.iter_rows(named=True):
        slack = r["perf_total_resolution_ns"] + UNTIMED_NS_PER_WAIT * r["perf_count"] + same_run.steal_ns
        lo = -same_run.end_run_ns - slack
        hi = max(r["total_diff_ns"], 0) + same_run.end_run_ns + slack
        if not lo <= r["mm_max_ns"] - r["perf_max_ns"] <= hi:
            outside.append((r, lo, hi))
    assert len(outside) <= unseen, (outside, _show(same_run))
