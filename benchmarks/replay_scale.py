"""Replay at scale: time and peak memory per stage on 1-s and 10-s traces (issue 13's targets).

    PYTHONPATH=. python3 benchmarks/replay_scale.py                      # record (root + bcc), else synthesize
    PYTHONPATH=. python3 benchmarks/replay_scale.py --source synth --seconds 1,10 --repeat 3
    PYTHONPATH=. python3 benchmarks/replay_scale.py --compare-with /path/to/other/checkout

For each workload (mmap1_threads, page_fault1_threads) and length, the trace is
recorded on this machine (``mmreplay record --workload W --tasks 4 --duration S``)
or synthesized (``mmreplay synth W --tasks 4 --cpus 2 --seconds S``) into
--traces (kept and reused: delete them or pass --fresh to make new ones). Then:

* stages, in a fresh interpreter each repetition: open + reconstruct, flatten
  (one policy set, compiled walk), engine run (one seed, the C engine: events
  per CPU second), simulate() with that program (engine and metrics: what a
  replay without -o does; tables too on a checkout without simulate(tables=));
  the wall and CPU time of each and the process's peak RSS after it
  (ru_maxrss, so cumulative);
* the command a user runs, ``mmreplay replay T --compare 2.6.39 current --seeds 2
  --jobs J`` for each J of --jobs, interleaved: wall and CPU time (user + system,
  workers included), the largest single
  process's peak RSS (wait4's ru_maxrss) and the peak of the whole process
  tree's proportional set size (PSS, sampled every 50 ms from
  /proc/PID/smaps_rollup: shared pages counted once) and the md5 of the report it prints (the
  same for every run of every checkout, or a result changed).

Medians of --repeat runs. On a shared machine wall time follows the load; CPU
time and memory do not: quote those, and ratios from one session.
--compare-with DIR also runs the end-to-end command from another checkout
(PYTHONPATH=DIR), interleaved, e.g. the main branch before a change.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
TARGETS = "targets (issue 13): 10-s mmap1_threads replay <= 10 s wall with --jobs 2 and <= 1 GB peak RSS; " \
          "60-s trace (--seconds 60) <= 6x the 10-s time and <= 1.5 GB; engine >= 10M events/s per core"


def _env(pythonpath: Path, reconstruct: str = "columnar") -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(pythonpath), "MMREPLAY_RECONSTRUCT": reconstruct}


def make_trace(workload: str, seconds: float, source: str, out: Path, tasks: int) -> Path:
    """The trace of ``workload`` for ``seconds`` (made now unless --traces holds it)."""
    path = out / f"{workload}-{seconds:g}s-{source}"
    if path.exists():
        return path
    if source == "record":
        cmd = ["record", "--workload", workload, "--tasks", str(tasks), "--duration", f"{seconds:g}",
               "--no-tier2-check", "-o", str(path)]
    else:
        cmd = ["synth", workload, "--tasks", str(tasks), "--cpus", "2",
               "--seconds", f"{seconds:g}", "-o", str(path)]
    subprocess.run([sys.executable, "-m", "replay", *cmd], check=True, env=_env(ROOT), stdout=subprocess.DEVNULL)
    return path


def stage_child(trace: str) -> None:
    """Run the stages in this (fresh) process and print them as JSON."""
    from replay.batch import RunSpec, Settings, complete_metrics, config_of

    try:
        from replay.batch import release_ops
    except ImportError:  # a checkout before it
        release_ops = None
    from replay.cli.replay import preempt_default
    from replay.sim.cengine import CEngine
    from replay.sim.costs import Costs
    from replay.sim.simulate import program_for, simulate
    from replay.trace.reader import Trace
    from replay.workload import reconstruct

    def rss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    out: dict = {"stages": []}

    def rss_now_mib() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    def stage(name: str, t0: float, **extra) -> None:
        out["stages"].append({"stage": name, "s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0[0],
                              "peak_rss_mib": rss_mib(), "rss_now_mib": round(rss_now_mib()), **extra})
        c0[0] = time.process_time()

    c0 = [time.process_time()]
    t0 = time.perf_counter()
    tr = Trace.open(trace)
    rows = sum(tr.rows(t) for t in tr.tables)
    # what replay does: the common segments emitted as policy-neutral instructions (a checkout before: ops)
    # (and, where reconstruct takes a spool directory, their rows written to files and mapped, as replay does)
    params = inspect.signature(reconstruct).parameters
    emit = "emit" in params
    spool = tempfile.mkdtemp(prefix="mmreplay-bench-neutral-") if "spool" in params else None
    try:
        w = reconstruct(tr, emit=True, **({"spool": spool} if spool else {})) if emit else reconstruct(tr)
    finally:
        if spool:
            shutil.rmtree(spool, ignore_errors=True)
    stage("open + reconstruct", t0, rows=rows, threads=len(w.threads), emitted=emit)
    settings = Settings(cpus=w.cpus, preempt=preempt_default(tr.manifest.host.preempt_model)[0], mode="closed",
                        costs=Costs(), keep_tables=False)
    config = config_of(RunSpec("current", 0), settings)
    c0[0] = time.process_time()
    t0 = time.perf_counter()
    program = program_for(w, config)
    stage("flatten (compiled walk)", t0, instructions=len(program.code))
    if release_ops is not None:  # what replay does once every set is flattened (batch.run_all release)
        c0[0] = time.process_time()
        t0 = time.perf_counter()
        release_ops(w)
        stage("free the op trees (release_ops)", t0)
    eng = CEngine(program, w, config.cpus, config.preempt, config.policy.gather, config.seed, config.costs,
                  config.probe, config.probe_period_ns)
    c0[0] = time.process_time()
    t0 = time.perf_counter()
    eng.run()
    cpu = time.process_time() - c0[0]
    stage("engine run (C, one seed)", t0, events=eng.events, events_per_cpu_s=eng.events / max(cpu, 1e-9))
    del eng
    c0[0] = time.process_time()
    t0 = time.perf_counter()
    # what a replay without -o does: the metrics alone (a checkout before: the tables too)
    alone = "tables" in inspect.signature(simulate).parameters
    result = simulate(w, config, program=program, tables=False) if alone else simulate(w, config, program=program)
    complete_metrics(result.tables, dict(result.metrics))
    stage("simulate() with that program (engine + metrics" + ("" if alone else " + tables") + ")", t0)
    print(json.dumps(out))


def _pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/*/stat's ppid)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def end_to_end(trace: Path, jobs: int, pythonpath: Path, sets: list[str], reconstruct: str = "columnar") -> dict:
    """Run ``mmreplay replay`` once: wall s, largest process's peak RSS, peak tree PSS (or its error)."""
    cmd = [sys.executable, "-m", "replay", "replay", str(trace), "--compare", *sets, "--seeds", "2",
           "--jobs", str(jobs)]
    report = tempfile.TemporaryFile()  # the printed report, for its md5 (a file: a pipe could fill and block)
    t0 = time.perf_counter()
    # cwd too: ``python3 -m replay`` puts the working directory before PYTHONPATH, so run from this
    # checkout's root, or --compare-with would time this checkout twice
    proc = subprocess.Popen(cmd, env=_env(pythonpath, reconstruct), cwd=pythonpath, stdout=report,
                            stderr=subprocess.PIPE)
    peak_pss = 0
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_pss = max(peak_pss, _pss_kib(_tree(proc.pid)))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or ["no output"])[-1]}
    report.seek(0)
    md5 = hashlib.md5(report.read()).hexdigest()
    report.close()
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_mib": ru.ru_maxrss / 1024,
            "peak_pss_mib": peak_pss / 1024, "md5": md5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=("record", "synth"), default="record" if os.geteuid() == 0 else "synth",
                    help="record the workload live (needs root and bcc; the default as root) or synthesize it")
    ap.add_argument("--workloads", default="mmap1_threads,page_fault1_threads")
    ap.add_argument("--seconds", default="1,10")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--sets", default="2.6.39,current", help="the policy sets the end-to-end replay compares")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--traces", default=str(ROOT / "benchmarks" / "out" / "scale"), help="where the traces are kept")
    ap.add_argument("--fresh", action="store_true", help="make new traces even if --traces holds them")
    ap.add_argument("--compare-with", metavar="DIR", help="also run the end-to-end command from this checkout")
    ap.add_argument("--reference", action="store_true",
                    help="also run every stage and command with the reference (object per row) reconstruction, "
                         "MMREPLAY_RECONSTRUCT=reference: the before of the columnar path, in the same session")
    ap.add_argument("--no-stages", action="store_true",
                    help="only the end-to-end command (the stages reconstruct in one process: minutes on a 60-s trace)")
    ap.add_argument("--stage-child", metavar="TRACE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage_child:
        stage_child(a.stage_child)
        return
    out = Path(a.traces)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [int(j) for j in a.jobs.split(",")]
    sets = a.sets.split(",")
    other = Path(a.compare_with).resolve() if a.compare_with else None
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, source {a.source}, {a.repeat} repetitions, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {TARGETS}")
    for workload in a.workloads.split(","):
        for seconds in (float(s) for s in a.seconds.split(",")):
            t0 = time.perf_counter()
            trace = make_trace(workload, seconds, a.source, out, a.tasks)
            made = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in trace.iterdir()) / 2**20
            how = f"made in {made:.1f} s" if made > 1 else "kept"
            print(f"\n== {trace.name}: {size:.1f} MiB on disk ({how})")
            stages: dict[str, list[dict]] = {}
            e2e: dict[str, list[dict]] = {}
            paths = ["columnar", "reference"] if a.reference else ["columnar"]
            for _ in range(a.repeat):
                for path in [] if a.no_stages else paths:
                    res = subprocess.run([sys.executable, __file__, "--stage-child", str(trace)],
                                         env=_env(ROOT, path), capture_output=True, text=True)
                    if res.returncode:
                        raise SystemExit(f"stages failed: {res.stderr.strip().splitlines()[-1:]}")
                    for s in json.loads(res.stdout.strip().splitlines()[-1])["stages"]:
                        stages.setdefault(f"[{path}] {s['stage']}", []).append(s)
                for j in jobs:  # interleaved: each repetition runs every variant once
                    for path in paths:
                        e2e.setdefault(f"{path}, --jobs {j}", []).append(end_to_end(trace, j, ROOT, sets, path))
                    if other:
                        e2e.setdefault(f"{other.name}, --jobs {j}", []).append(end_to_end(trace, j, other, sets))
            print(f"  load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            for name, runs in stages.items():
                extra = {k: v for k, v in runs[0].items() if k not in ("stage", "s", "cpu_s", "peak_rss_mib",
                                                                         "rss_now_mib")}
                extra["RSS_now_MiB"] = round(median(r["rss_now_mib"] for r in runs))
                if "events_per_cpu_s" in extra:
                    extra["events_per_cpu_s"] = f"{median(r['events_per_cpu_s'] for r in runs) / 1e6:.1f}M"
                print(f"  {name:<70} wall {median(r['s'] for r in runs):7.2f} s  CPU "
                      f"{median(r['cpu_s'] for r in runs):7.2f} s  peak RSS "
                      f"{median(r['peak_rss_mib'] for r in runs):7.0f} MiB   "
                      + " ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in extra.items()))
            for name, all_runs in e2e.items():
                runs = [r for r in all_runs if "error" not in r]
                for r in all_runs:
                    if "error" in r:
                        print(f"  replay --compare {' '.join(sets)} --seeds 2, {name}: FAILED: {r['error']}")
                if not runs:
                    continue
                print(f"  replay --compare {' '.join(sets)} --seeds 2, {name:<28} wall "
                      f"{median(r['wall_s'] for r in runs):6.2f} s  CPU {median(r['cpu_s'] for r in runs):6.2f} s  "
                      f"max RSS {median(r['max_rss_mib'] for r in runs):6.0f} MiB  tree PSS "
                      f"{median(r['peak_pss_mib'] for r in runs):6.0f} MiB  (walls: "
                      + ", ".join(f"{r['wall_s']:.1f}" for r in runs) + "; report md5 "
                      + ", ".join(sorted({r["md5"][:12] for r in runs})) + ")")

if __name__ == "__main__":
    main()
