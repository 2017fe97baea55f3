"""What does `mmreplay record` cost the workload it records, compared with `perf record`?

Two cases, each run RUNS times as interleaved rounds (bare, perf, mmreplay, ...)
so that drifting machine load hits all alike; medians and ratios are printed:

  page_fault     tests/data/mm_workload.c (THREADS threads, each mmap / touch
                 every page / munmap): the workload's own wall time (measured
                 inside it, so tracer start-up and exec are excluded)
  mmap1_threads  the will-it-scale mmap1 workload (workloads/mmap1.c), 2 tasks,
                 --seconds each: its own iterations per second

  bare      the workload alone
  perf      `perf record -e <every tier-1 tracepoint>` of the workload's tasks
  mmreplay  `mmreplay record` with every tier-1 probe (the command's tasks)

--per-probe adds, on each chosen case (--case), one `mmreplay record --probes F`
per family F per round (and lock_contention without stack walks, page_free
without its backup program), and one all-probes recording with the kernel's BPF
statistics on: per family the hits per iteration (page_fault: per run), the
throughput against bare, the time each hit adds to the workload (end to end:
tracepoint dispatch + program + ring buffer + the recorder's share of the CPUs)
and the programs' own run time per hit (BPF statistics, which count every task's
hits, not only the workload's; the backup and first programs beside a family's
own included; each run is also charged two clock reads of the statistics).

--truth runs `mmreplay record -- perf stat -e <tracepoints> -- mm_workload`
and compares perf's counts with the rows recorded for the workload's tasks.
--subsets records mmap1_threads with the hottest families left out (all; all but syscalls; all but
syscalls and mmap_lock), interleaved with bare runs.
--rss S records mmap1_threads for S seconds, RUNS times, and prints the recorder's peak RSS (medians: while
recording, and VmHWM); --rss-cold makes each of them detect tier 2 as a boot's first recording does (the
detection compiles in a child process, tracer.tier2.plan_in_child, whose memory is not the recorder's).
--reader S records mmap1_threads for S seconds, RUNS times, and prints what the recorder's own process costs
while the workload runs (its threads' CPU from /proc/PID/task/*/schedstat at the workload's start and exit:
the compilation and the stop left out), per recorded row, its context switches, and how long the stop took.
--dispatch runs the page-fault case (bare, the workload alone: no recorder) with EMPTY raw-tracepoint programs
attached to its per-page tracepoints (1, 2 and 3 on kmem:mm_page_free, 1 on kmem:mm_page_free_batched, 1 on
exceptions:page_fault_user, and the layouts 3 + 1 + 1 (the recorder's before page_free's first program was
dropped), 2 + 1 + 1 (now) and 1 + 1 + 1 (--no-page-free-recovery)), interleaved with bare runs: what the kernel's
dispatch of a program costs per page, before any program body runs (the BPF statistics cannot show it).

Needs root, bcc, perf and gcc. The machine's load average is printed before
and after: a loaded machine stretches every median. Usage:
  sudo PYTHONPATH=. python3 benchmarks/record_overhead.py [--case both] [--runs 3] [--per-probe] [--truth]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.trace.reader import Trace  # noqa: E402
from tracer import programs  # noqa: E402
from tracer.perfcheck import TRUTH_TRACEPOINTS, compare_with_perf, parse_perf_stat_csv  # noqa: E402


def build(tmp: Path) -> Path:
    exe = tmp / "mmr_bench_wl"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/data/mm_workload.c")], check=True)
    return exe


#: Runs a command and prints the CPU time (user + system) of its process tree in ns: a workload's CPU time
#: per iteration includes what the probes add in its context and, unlike its throughput, hardly depends on
#: what else the (shared) machine runs.
CPU_WRAP = [sys.executable, "-c", "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(f'cpu_ns={int((u.ru_utime + u.ru_stime) * 1e9)}', flush=True); sys.exit(r.returncode)"]


def score(case: str, out: str) -> float:
    """The workload's figure of merit from its stdout: page_fault: wall seconds (lower is better);
    mmap1_threads: iterations per second (higher is better)."""
    if case == "page_fault":
        return int(out.strip().splitlines()[-1].split()[0]) / 1e9
    return float(_summary(out).fields["per_second"])


def cpu_per_iteration(case: str, out: str) -> float:
    """CPU ns of the workload per iteration (page_fault: per run)."""
    lines = out.strip().splitlines()
    if case == "page_fault":
        return float(lines[-1].split()[1])
    cpu = next(int(x.split("=", 1)[1]) for x in lines if x.startswith("cpu_ns="))
    return cpu / max(1, _summary(out).iterations)


def _summary(out: str):
    from workloads import parse_summary

    return parse_summary(next(x for x in out.strip().splitlines() if x.startswith("mmap1 ")))


def tracepoints(probes: list[str] | None) -> list[str]:
    tps = [tp for fam in programs.select(probes) for tp in fam.tracepoints] + list(programs.SUPPORT_TRACEPOINTS)
    return list(dict.fromkeys(tps))


def run_bare(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def run_perf(argv: list[str], tmp: Path, probes: list[str] | None) -> str:
    cmd = ["perf", "record", "-q", "-o", str(tmp / "perf.data")]
    for tp in tracepoints(probes):
        cmd += ["-e", tp]
    return subprocess.run(cmd + ["--", *argv], check=True, capture_output=True, text=True).stdout


def run_mmreplay(argv: list[str], tmp: Path, probes: list[str] | None, *extra: str) -> tuple[str, Trace]:
    out = tmp / "trace"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    opts = ["--probes", ",".join(probes)] if probes else []
    r = subprocess.run([sys.executable, "-m", "replay", "record", "-o", str(out), "--force", "--no-tier2-check",
                        *opts, *extra, "--", *argv], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"record_overhead: mmreplay record failed: {r.stderr.strip().splitlines()[-1:]}")
    return r.stdout, Trace.open(out)


def trace_stats(trace: Trace) -> dict:
    m = trace.manifest
    return {"rows": sum(e.rows for e in m.tables.values()), "lost": m.lost_events,
            "recorder": sum(p.recorder for p in m.probes),
            "lost_by_probe": {p.name: p.lost for p in m.probes if p.lost},
            "ring_buffer_refused": sum(m.extra.get("lost_breakdown", {}).get("ring_buffer_refused", {}).values()),
            "events": {p.name: p.events for p in m.probes if p.status == "recorded"},
            # kmem:mm_page_free hits the kernel skipped for page_free's main program (any task's) and the hits
            # its backup recorded (those skips and the ones the main program left to it)
            "pf_skipped": m.extra.get("recursion_misses", {}).get("kmem:mm_page_free", 0),
            "pf_recovered": m.extra.get("recursion_recovered", {}).get("page_free", 0),
            "attach": m.extra.get("attach", {}), "probe_cost": m.extra.get("probe_cost", {})}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


#: --no-recovery-too: the series of a recorder whose page_free program runs alone (bpf/page_free.c MMR_PF_RECOVER)
NO_RECOVERY = "mmreplay, page_free recovery off"


def case_rounds(case: str, argv: list[str], tmp: Path, runs: int, no_recovery: bool = False) -> dict:
    """Interleaved bare/perf/mmreplay rounds of one case: medians, ratios, mmreplay's loss."""
    series: dict[str, list[float]] = {"bare": [], "perf": [], "mmreplay": []}
    if no_recovery:
        series[NO_RECOVERY] = []
    cpu: dict[str, list[float]] = {k: [] for k in series}
    stats = []
    stats_nr = []
    if case != "page_fault":
        argv = [*CPU_WRAP, *argv]
    for _ in range(runs):
        for k in series:
            if k == "bare":
                out = run_bare(argv)
            elif k == "perf":
                out = run_perf(argv, tmp, None)
            elif k == NO_RECOVERY:
                out, trace = run_mmreplay(argv, tmp, None, "--no-page-free-recovery")
                stats_nr.append(trace_stats(trace))
            else:
                out, trace = run_mmreplay(argv, tmp, None)
                stats.append(trace_stats(trace))
            series[k].append(score(case, out))
            cpu[k].append(cpu_per_iteration(case, out))
        time.sleep(0.2)
    med = {k: statistics.median(v) for k, v in series.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    # a ratio > 1 is a slowdown for page_fault (time) and a throughput fraction for mmap1_threads
    ratio = {k: med[k] / med["bare"] for k in series if k != "bare"}
    cpu_ratio = {k: med_cpu[k] / med_cpu["bare"] for k in series if k != "bare"}
    extra = {}
    if stats_nr:
        extra = {"no_recovery": {"lost": [s["lost"] for s in stats_nr], "lost_by_probe": [s["lost_by_probe"]
                                                                                            for s in stats_nr]}}
    return {"case": case, "runs": runs, "median": med, "all": series, "ratio": ratio, **extra,
            "median_cpu_ns": med_cpu, "all_cpu_ns": cpu, "cpu_ratio": cpu_ratio,
            "lost": [s["lost"] for s in stats], "recorder": [s["recorder"] for s in stats],
            "lost_by_probe": [s["lost_by_probe"] for s in stats],
            "pf_skipped_recovered": [(s["pf_skipped"], s["pf_recovered"]) for s in stats],
            "ring_buffer_refused": [s["ring_buffer_refused"] for s in stats], "attach": stats[-1]["attach"]}


def hits_per_iteration(case: str, argv: list[str], tmp: Path) -> dict[str, float]:
    """How often the workload's own tasks hit each tier-1 tracepoint per iteration (perf stat, bare run;
    page_fault: per run)."""
    csv = tmp / "hits.csv"
    cmd = ["perf", "stat", "-x,", "-o", str(csv)]
    for tp in tracepoints(None):
        cmd += ["-e", tp]
    out = subprocess.run([*cmd, "--", *argv], check=True, capture_output=True, text=True).stdout
    iters = 1 if case == "page_fault" else max(1, _summary(out).iterations)
    return {tp: n / iters for tp, n in parse_perf_stat_csv(csv.read_text()).items()}


#: --per-probe: (row name, family, extra record options) besides one row per family alone
PER_PROBE_EXTRA = (("lock_contention --no-stacks", "lock_contention", ("--no-stacks",)),
                   ("page_free --no-page-free-recovery", "page_free", ("--no-page-free-recovery",)))


def family_program_cost(cost: dict, fam: programs.Family) -> float | None:
    """ns of BPF run time per hit of a family's tracepoints: its own programs' and those of the first and
    backup programs beside them (the recorder names them "<tracepoint> (first)" and "(backup)"), over the
    runs of its own programs (every task's hits; None when the kernel timed none)."""
    # the recorder names a raw program by the classic tracepoint it stands for, else raw_syscalls:<event>
    timed = {*fam.tracepoints, *(f"raw_syscalls:{ev}" for ev, _ in fam.raw)}
    runs = sum(cost.get(tp, {}).get("runs", 0) for tp in timed)
    run_ns = sum(v.get("run_ns", 0) for k, v in cost.items() if k.split(" (", 1)[0] in timed)
    return run_ns / runs if runs else None


def per_probe(case: str, argv: list[str], tmp: Path, runs: int) -> list[dict]:
    """Per family: the case recorded with that family alone, rounds interleaved with bare runs.

    ns/hit = (CPU per iteration recorded - bare) / the family's hits per iteration (perf stat): what one
    hit costs the workload's own CPU time, tracepoint dispatch included (page_fault: per run)."""
    if case != "page_fault":
        argv = [*CPU_WRAP, *argv]
    hits = hits_per_iteration(case, argv, tmp)
    variants = [(f.name, [f.name], ()) for f in programs.FAMILIES]
    for name, fam, extra in PER_PROBE_EXTRA:
        at = next(i for i, v in enumerate(variants) if v[0] == fam) + 1
        variants.insert(at, (name, [fam], extra))
    bare: list[tuple[float, float]] = []
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(runs):
        out = run_bare(argv)
        bare.append((score(case, out), cpu_per_iteration(case, out)))
        for name, probes, extra in variants:
            out, _ = run_mmreplay(argv, tmp, probes, *extra)
            got[name].append((score(case, out), cpu_per_iteration(case, out)))
    _, cost_trace = run_mmreplay(argv, tmp, None, "--probe-cost")
    cost = trace_stats(cost_trace)["probe_cost"]
    b_ps, b_cpu = statistics.median(x[0] for x in bare), statistics.median(x[1] for x in bare)
    rows = []
    for name, probes, _ in variants:
        ps, cpu = statistics.median(x[0] for x in got[name]), statistics.median(x[1] for x in got[name])
        fam = programs.FAMILIES_BY_NAME[probes[0]]
        per_iter = sum(hits.get(tp, 0.0) for tp in fam.tracepoints)
        prog = family_program_cost(cost, fam)
        rows.append({"probe": name, "hits_per_iteration": per_iter, "ratio": ps / b_ps, "cpu_ratio": cpu / b_cpu,
                     "added_ns_per_hit": (cpu - b_cpu) / per_iter if per_iter > 0.05 else None,
                     "program_ns_per_run": prog if name == fam.name else None})
    return rows


#: --subsets: the families left out, in the order the advice of docs/RECORDING.md leaves them out
SUBSETS = (("all", ()), ("all but syscalls", ("syscalls",)), ("all but syscalls, mmap_lock", ("syscalls", "mmap_lock")))


def subsets(argv: list[str], tmp: Path, runs: int) -> list[dict]:
    """mmap1_threads recorded with fewer families (SUBSETS), rounds interleaved with bare runs: how much
    leaving the hottest families out gives back."""
    argv = [*CPU_WRAP, *argv]
    bare: list[tuple[float, float]] = []
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in SUBSETS}
    for _ in range(runs):
        out = run_bare(argv)
        bare.append((score("mmap1_threads", out), cpu_per_iteration("mmap1_threads", out)))
        for name, left_out in SUBSETS:
            probes = [f.name for f in programs.FAMILIES if f.name not in left_out] if left_out else None
            out, _ = run_mmreplay(argv, tmp, probes)
            got[name].append((score("mmap1_threads", out), cpu_per_iteration("mmap1_threads", out)))
    b_ps, b_cpu = statistics.median(x[0] for x in bare), statistics.median(x[1] for x in bare)
    return [{"families": name, "ratio": statistics.median(x[0] for x in got[name]) / b_ps,
             "cpu_ratio": statistics.median(x[1] for x in got[name]) / b_cpu,
             "runs": [x[0] for x in got[name]], "bare_runs": [x[0] for x in bare]} for name, _ in SUBSETS]


def truth(tmp: Path, exe: Path) -> list[dict]:
    """perf stat's counts of the workload's tasks against the rows recorded for them in the same run."""
    csv = tmp / "perf.csv"
    cmd = ["perf", "stat", "-x,", "-o", str(csv)]
    for tp in TRUTH_TRACEPOINTS:
        cmd += ["-e", tp]
    _, trace = run_mmreplay([*cmd, "--", str(exe), "4", "200", "256"], tmp, None)
    rows = compare_with_perf(trace, exe.name, parse_perf_stat_csv(csv.read_text()))
    return [{**vars(a), "ratio": a.ratio} for a in rows]


def rss(tmp: Path, seconds: float, cold: bool = False) -> dict[str, float]:
    """The recorder's memory (MiB) over a `mmreplay record` of mmap1_threads this long, read from /proc every
    0.5 s: its VmHWM (peak RSS over its whole life, the compilation of the programs included), its peak RSS
    while the workload ran (the recording itself), and the largest RssAnon then (its own heap; the rest is
    file pages: shared libraries and the ring buffer's mapping). The workload's own memory is not counted."""
    from workloads import command

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = command("mmap1_threads", 2, seconds)
    check = ["--no-tier2-check"]
    if cold:  # as the first recording of a boot: an empty cache, so tier 2 is detected (compiled) again
        env["XDG_CACHE_HOME"] = tempfile.mkdtemp(dir=tmp)
        check = []
    proc = subprocess.Popen([sys.executable, "-m", "replay", "record", "-o", str(tmp / "rss"), "--force",
                             *check, "--", *argv],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hwm = recording = anon = 0
    while proc.poll() is None:
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            running = any(Path(f"/proc/{k}/comm").read_text().startswith("mmap1") for k in kids)
        except (OSError, ValueError):
            continue
        if "VmHWM" not in status:  # exited, not yet reaped: no memory left to read
            time.sleep(0.05)
            continue
        hwm = max(hwm, int(status["VmHWM"].split()[0]))
        if running:
            recording = max(recording, int(status["VmRSS"].split()[0]))
            anon = max(anon, int(status["RssAnon"].split()[0]))
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"record_overhead: mmreplay record failed: {proc.stderr.read().strip()[-300:]}")
    return {"vmhwm": hwm / 1024, "recording": recording / 1024, "recording_anon": anon / 1024}


def rss_runs(tmp: Path, seconds: float, runs: int, cold: bool = False) -> dict[str, float | list[float]]:
    """rss() `runs` times: the medians, and every run's values under "all_<key>"."""
    each = [rss(tmp, seconds, cold) for _ in range(runs)]
    out: dict[str, float | list[float]] = {k: statistics.median(r[k] for r in each) for k in each[0]}
    out.update({f"all_{k}": [r[k] for r in each] for k in each[0]})
    return out


def _threads(pid: int) -> dict[str, tuple[int, int]]:
    """Per thread of pid: (CPU ns from schedstat, voluntary + involuntary context switches)."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            cpu = int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
            status = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except (OSError, ValueError, IndexError):
            continue
        switches = sum(int(line.split(":", 1)[1]) for line in status.splitlines()
                       if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))
        out[t] = (cpu, switches)
    return out


def reader(tmp: Path, seconds: float) -> dict[str, float]:
    """The recorder's CPU per recorded row and its context switches while mmap1_threads runs, and the stop."""
    from workloads import command

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp / "reader"
    proc = subprocess.Popen([sys.executable, "-m", "replay", "record", "-o", str(out), "--force", "--no-tier2-check",
                             "--", *command("mmap1_threads", 2, seconds)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = last = None
    t_exit = None
    while proc.poll() is None:
        try:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            running = any(Path(f"/proc/{k}/comm").read_text().startswith("mmap1")
                          and Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" for k in kids)
        except OSError:
            running = False
        if running and first is None:
            first = (_threads(proc.pid), time.monotonic())
        elif first is not None and not running:
            last, t_exit = _threads(proc.pid), time.monotonic()
            break
        time.sleep(0.01)
    _, err = proc.communicate()
    if proc.returncode != 0 or first is None or last is None:
        raise SystemExit(f"record_overhead: mmreplay record failed: {err.strip()[-300:]}")
    stop_s = time.monotonic() - t_exit
    before = first[0]
    cpu = sum(c - before.get(t, (0, 0))[0] for t, (c, _) in last.items())
    switches = sum(n - before.get(t, (0, 0))[1] for t, (_, n) in last.items())
    rows = sum(e.rows for e in Trace.open(out).manifest.tables.values())
    wall = t_exit - first[1]
    return {"ns_per_row": cpu / max(rows, 1), "cpu_s": cpu / 1e9, "rows": rows, "switches_per_s": switches / wall,
            "stop_s": stop_s}


#: --dispatch: name -> empty raw programs per tracepoint of the page-fault case (one hit each per page)
DISPATCH = (("1 on mm_page_free", (("mm_page_free", 1),)),
            ("2 on mm_page_free", (("mm_page_free", 2),)),
            ("3 on mm_page_free", (("mm_page_free", 3),)),
            ("1 on mm_page_free_batched", (("mm_page_free_batched", 1),)),
            ("1 on page_fault_user", (("page_fault_user", 1),)),
            ("3 + 1 + 1 (the recorder's former layout)", (("mm_page_free", 3), ("mm_page_free_batched", 1),
                                                          ("page_fault_user", 1))),
            ("2 + 1 + 1 (the recorder's layout)", (("mm_page_free", 2), ("mm_page_free_batched", 1),
                                                   ("page_fault_user", 1))),
            ("1 + 1 + 1 (--no-page-free-recovery)", (("mm_page_free", 1), ("mm_page_free_batched", 1),
                                                      ("page_fault_user", 1))))


def dispatch(argv: list[str], runs: int, pages: int) -> list[dict]:
    """The page-fault case with empty raw-tracepoint programs attached (DISPATCH), rounds interleaved with bare
    runs: the workload's CPU per page added by the kernel's dispatch alone (no filter, no body)."""
    from tracer.kernel_env import import_bcc

    bcc = import_bcc()
    most = max(sum(n for _, n in tps) for _, tps in DISPATCH)
    b = bcc.BPF(text="\n".join(f"int mmr_empty{i}(struct bpf_raw_tracepoint_args *ctx) {{ return 0; }}"
                                for i in range(most)).encode())
    fns = [b.load_func(f"mmr_empty{i}".encode(), bcc.BPF.RAW_TRACEPOINT) for i in range(most)]
    cpu: dict[str, list[float]] = {"bare": [], **{name: [] for name, _ in DISPATCH}}
    for _ in range(runs):
        for name in cpu:
            fds = []
            try:
                progs = iter(fns)
                for tp, n in dict(DISPATCH).get(name, ()):
                    for _ in range(n):
                        fd = bcc.libbcc.lib.bpf_attach_raw_tracepoint(next(progs).fd, tp.encode())
                        if fd < 0:
                            raise SystemExit(f"record_overhead: cannot attach a raw program to {tp}: {-fd}")
                        fds.append(fd)
                cpu[name].append(cpu_per_iteration("page_fault", run_bare(argv)))
            finally:
                for fd in fds:
                    os.close(fd)
    b.cleanup()
    bare = statistics.median(cpu["bare"])
    return [{"programs": name, "cpu_ns": statistics.median(v), "cpu_ratio": statistics.median(v) / bare,
             "added_ns_per_page": (statistics.median(v) - bare) / pages, "all_cpu_ns": v}
            for name, v in cpu.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("page_fault", "mmap1_threads", "both", "none"), default="both")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="page_fault: threads")
    ap.add_argument("--iterations", type=int, default=2100, help="page_fault: per thread, each touches --pages pages")
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0, help="mmap1_threads: seconds per run")
    ap.add_argument("--per-probe", action="store_true", help="the per-family cost table of each chosen case")
    ap.add_argument("--truth", action="store_true", help="perf stat's counts against the recorded rows")
    ap.add_argument("--subsets", action="store_true", help="mmap1_threads with the hottest families left out")
    ap.add_argument("--rss", type=float, metavar="S", help="peak RSS of a recording of mmap1_threads of S seconds")
    ap.add_argument("--rss-cold", action="store_true",
                    help="with --rss: each recording detects tier 2 from an empty cache, as a boot's first does")
    ap.add_argument("--reader", type=float, metavar="S",
                    help="the recorder's CPU per recorded row over a recording of mmap1_threads of S seconds")
    ap.add_argument("--no-recovery-too", action="store_true",
                    help="each round also records with --no-page-free-recovery (page_free's program alone)")
    ap.add_argument("--dispatch", action="store_true",
                    help="the page-fault case with empty raw programs attached: the kernel's dispatch cost per page")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("gcc", "perf"):
        if shutil.which(tool) is None:
            print(f"record_overhead: {tool} is not installed", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("record_overhead: needs root (perf tracepoints, bcc)", file=sys.stderr)
        return 2
    from workloads import command

    result: dict = {"loadavg_before": loadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="mmr_bench_") as d:
        tmp = Path(d)
        exe = build(tmp)
        pf_argv = [str(exe), str(args.threads), str(args.iterations), str(args.pages), "time"]
        m1_argv = command("mmap1_threads", 2, args.seconds)
        cases = {"page_fault": pf_argv, "mmap1_threads": m1_argv}
        chosen = list(cases) if args.case == "both" else [] if args.case == "none" else [args.case]
        result["cases"] = [case_rounds(c, cases[c], tmp, args.runs, args.no_recovery_too) for c in chosen]
        if args.per_probe:
            result["per_probe"] = {c: per_probe(c, cases[c], tmp, args.runs) for c in chosen}
        if args.subsets:
            result["subsets"] = subsets(m1_argv, tmp, args.runs)
        if args.truth:
            result["truth"] = truth(tmp, exe)
        if args.rss:
            result["rss_mib"] = rss_runs(tmp, args.rss, args.runs, args.rss_cold)
        if args.dispatch:
            result["dispatch"] = dispatch(pf_argv, args.runs, args.threads * args.iterations * args.pages)
        if args.reader:
            result["reader"] = [reader(tmp, args.reader) for _ in range(args.runs)]
    result["loadavg_after"] = loadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"load average before {result['loadavg_before']}, after {result['loadavg_after']} "
          f"({result['cpus']} CPUs); medians of interleaved rounds")
    for c in result["cases"]:
        med, unit = c["median"], "s (workload wall time)" if c["case"] == "page_fault" else "iterations/s"
        what = "slowdown" if c["case"] == "page_fault" else "throughput"
        print(f"{c['case']}: {c['runs']} rounds, {unit}")
        for k in med:
            ratio = "" if k == "bare" else f"  {what} {c['ratio'][k]:.2f}x, CPU {c['cpu_ratio'][k]:.2f}x bare"
            print(f"  {k:<9} {med[k]:12,.3f}  CPU {c['median_cpu_ns'][k]:12,.0f} ns{ratio}   "
                  f"(runs: {', '.join(f'{x:,.3f}' for x in c['all'][k])})")
        print(f"  mmreplay lost {c['lost']} (of which the ring buffer refused {c['ring_buffer_refused']}), caused by "
              f"the recorder {c['recorder']}; attach {c['attach']}")
        print("  mmreplay page_free hits skipped by the kernel / recorded by the backup (any task's): "
              + ", ".join(f"{a}/{b}" for a, b in c["pf_skipped_recovered"]))
        if "no_recovery" in c:
            print(f"  {NO_RECOVERY}: lost {c['no_recovery']['lost']} ({c['no_recovery']['lost_by_probe']})")
    for case, rows in result.get("per_probe", {}).items():
        per, what = ("run", "wall time") if case == "page_fault" else ("iter", "throughput")
        print(f"per probe ({case}, that family alone, against bare; ns/hit: added CPU per {per} / hits per {per} "
              "(perf stat); program: kernel BPF statistics per hit over all tasks' hits, its backup/first programs "
              "included)")
        print(f"  {'probe':<34} {'hits/' + per:>10} {what:>10} {'CPU/' + per:>9} {'ns/hit':>7} {'program ns':>10}")
        for r in rows:
            ns = f"{r['added_ns_per_hit']:7.0f}" if r["added_ns_per_hit"] is not None else f"{'-':>7}"
            prog = f"{r['program_ns_per_run']:10.0f}" if r["program_ns_per_run"] else f"{'-':>10}"
            print(f"  {r['probe']:<34} {r['hits_per_iteration']:10.3f} {r['ratio']:9.2f}x {r['cpu_ratio']:8.2f}x "
                  f"{ns} {prog}")
    if "subsets" in result:
        print("mmap1_threads with families left out (throughput and CPU per iteration against bare)")
        for r in result["subsets"]:
            runs, bare = (", ".join(f"{x:,.0f}" for x in r[k]) for k in ("runs", "bare_runs"))
            print(f"  {r['families']:<30} {r['ratio']:5.2f}x  CPU {r['cpu_ratio']:5.2f}x   (runs: {runs}; bare {bare})")
    if "truth" in result:
        print("perf stat of the same run (mm_workload 4 threads) against the rows recorded for its tasks")
        for r in result["truth"]:
            ratio = f"{r['ratio'] * 100:7.2f} %" if r["ratio"] is not None else "      -"
            print(f"  {r['tracepoint']:<28} perf {r['perf']:>9,}  recorded {r['recorded']:>9,}  {ratio}  "
                  f"lost {r['lost']}  recorder {r['recorder']}")
    if "dispatch" in result:
        print("the page-fault case with empty raw programs attached (no recorder): the workload's CPU against bare, "
              "and what it adds per page")
        for r in result["dispatch"]:
            runs = ", ".join(f"{x / 1e9:.3f}" for x in r["all_cpu_ns"])
            print(f"  {r['programs']:<36} CPU {r['cpu_ns'] / 1e9:6.3f} s {r['cpu_ratio']:5.2f}x  "
                  f"+{r['added_ns_per_page']:4.0f} ns/page   (runs: {runs})")
    if "rss_mib" in result:
        r = result["rss_mib"]
        cold = " (tier 2 detected from an empty cache each time)" if args.rss_cold else ""
        print(f"recorder memory over a {args.rss:.0f}-s recording of mmap1_threads{cold}, median of {args.runs}: "
              f"peak RSS while recording {r['recording']:.0f} MiB (anonymous {r['recording_anon']:.0f} MiB); VmHWM "
              f"{r['vmhwm']:.0f} MiB (the compilation of the programs included); runs: recording "
              f"{', '.join(f'{x:.0f}' for x in r['all_recording'])}, "
              f"VmHWM {', '.join(f'{x:.0f}' for x in r['all_vmhwm'])}")
    if "reader" in result:
        runs = result["reader"]
        print(f"the recorder while a {args.reader:.0f}-s recording of mmap1_threads ran, median of {args.runs}: "
              f"{statistics.median(r['ns_per_row'] for r in runs):.0f} ns of CPU per recorded row, "
              f"{statistics.median(r['switches_per_s'] for r in runs):.0f} context switches/s; stop "
              f"{statistics.median(r['stop_s'] for r in runs):.2f} s; runs: "
              + "; ".join(f"{r['ns_per_row']:.0f} ns/row ({r['cpu_s']:.2f} s, {r['rows']:,} rows), "
                          f"{r['switches_per_s']:.0f}/s, stop {r['stop_s']:.2f} s" for r in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
