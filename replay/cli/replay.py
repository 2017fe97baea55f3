"""`mmreplay replay TRACE`: replay the recorded work under policy sets and compare them over seeds."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from replay.cli import options
from replay.errors import InconsistencyError, UsageError

DEFAULT_SETS = ("as-recorded", "current")
DEFAULT_SEEDS = 5
PREEMPT_MODELS = ("none", "voluntary", "full")
#: recorded preemption models that behave like one of ours
PREEMPT_EQUIVALENT = {"lazy": "full", "rt": "full"}
DERIVED_MARK = "†"


EXAMPLES = """\
examples:
  mmreplay replay mytrace --compare 2.6.39 current --seeds 5 -o results
  mmreplay replay mytrace --compare current --policy i_mmap_rwsem=spinlock,gather=percpu
  mmreplay replay mytrace --compare 2.6.39 3.0 --cpus 24 --scale-tasks 12 --preempt none --jobs 2
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from replay.cli import ExamplesFormatter

    p = sub.add_parser(
        "replay", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="replay a trace under lock / mmu_gather policy sets and compare them",
        description="Reconstruct the recorded per-thread work, replay it in the simulator under each policy "
        "set and seed, and report lock waits and holds, operation latency, preempt-off sections, probe "
        "scheduling latency, CPU spent spinning, context switches, TLB flushes, IPIs and makespan, with "
        "the difference between sets and its 95% confidence interval over seeds.",
    )
    p.add_argument("trace", help="trace directory")
    p.add_argument("--compare", nargs="+", metavar="SET",
                   help="policy sets: 2.6.39, 3.0, current, as-recorded, or CLASS=POLICY[,...] "
                        f"(default: {' '.join(DEFAULT_SETS)}); the first is the base of the differences")
    p.add_argument("--policy", action="append", default=[], metavar="CLASS=POLICY",
                   help="add one more set: 'current' with these overrides (repeatable; gather=percpu|preemptible)")
    p.add_argument("--cpus", metavar="N", help="simulated CPUs (default: the recorded host's)")
    p.add_argument("--scale-tasks", metavar="K", default="1",
                   help="replicate (K>1) or drop (K<1) the recorded tasks (default 1)")
    p.add_argument("--preempt", metavar="MODEL",
                   help="preemption model: none, voluntary, full (default: the recorded one)")
    p.add_argument("--seeds", metavar="S", default=str(DEFAULT_SEEDS),
                   help=f"seeds per set (default {DEFAULT_SEEDS}); differences are paired by seed")
    p.add_argument("--mode", default="closed", metavar="closed|open",
                   help="closed: think time after each op's simulated end (default); open: recorded start times")
    p.add_argument("--costs", metavar="FILE", help="cost constants (TOML or JSON), see replay/sim/costs.py")
    p.add_argument("--calibrate", action="store_true",
                   help="replace the costs the trace measures (wake-up latency, page free/zap, lock hand-off, the "
                        "tracer's own time in each mmap_lock wait) with its figures")
    p.add_argument("--interference", action="store_true",
                   help="replay the time other jobs held the recorded tasks off their CPUs, at the recorded points "
                        "(the recorded host's load; with the recorded tasks and CPUs only)")
    p.add_argument("--perturb", metavar="CV", default="0",
                   help="seeded lognormal noise on think and hold times, as a coefficient of variation "
                        "(default 0: seeds differ only in wake-up jitter and probe timing)")
    p.add_argument("--engine", default="auto", metavar="auto|c|python",
                   help="simulator implementation; results are identical (default auto: C, built by pip install; "
                        "the Python reference, saying so, where it is not installed)")
    p.add_argument("--jobs", metavar="N", default="1",
                   help="replays run in parallel on N processes (default 1); a policy set's seeds share one "
                        "flattened program")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="refuse, before reconstructing, a trace whose replay is estimated to need more than SIZE "
                        "(bytes, or with K, M, G, T: binary units; default: the memory available now, "
                        "MemAvailable or the cgroup's limit, whichever is less)")
    p.add_argument("-o", "--output", metavar="RESULTS", help="write every simulated event and figure here")
    p.add_argument("--force", action="store_true", help="overwrite an existing RESULTS directory")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    sets: tuple[str, ...]
    cpus: int | None
    scale_tasks: float
    preempt: str | None
    seeds: int
    mode: str
    jobs: int
    perturb: float = 0.0
    engine: str = "auto"
    max_memory: int | None = None  # bytes (--max-memory)


def _int(name: str, text: str | None, minimum: int, maximum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} needs an integer, not {text!r}") from None
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum} (got {value})")
    if value > maximum:  # checked before anything is sized by it
        raise UsageError(f"{name} must be at most {maximum} (got {value})")
    return value


def check_options(args: argparse.Namespace) -> Options:
    """Turn the raw arguments into Options; every nonsense value is a one-line UsageError."""
    from replay.policies.sets import resolve

    cpus = _int("--cpus", args.cpus, 1, options.MAX_CPUS)
    seeds = _int("--seeds", args.seeds, 1, options.MAX_SEEDS)
    jobs = _int("--jobs", args.jobs, 1, options.MAX_JOBS)
    try:
        scale = float(args.scale_tasks)
    except ValueError:
        raise UsageError(f"--scale-tasks needs a number, not {args.scale_tasks!r}") from None
    if not (0 < scale <= options.MAX_SCALE):
        raise UsageError(f"--scale-tasks must be a positive number at most {options.MAX_SCALE:g} "
                         f"(got {args.scale_tasks})")
    try:
        perturb = float(args.perturb)
    except ValueError:
        raise UsageError(f"--perturb needs a number, not {args.perturb!r}") from None
    if not 0 <= perturb <= 2:
        raise UsageError(f"--perturb is a coefficient of variation in [0, 2] (got {args.perturb})")
    if args.preempt is not None and args.preempt not in PREEMPT_MODELS:
        raise UsageError(f"unknown --preempt {args.preempt!r}; known: {', '.join(PREEMPT_MODELS)}")
    if args.mode not in ("closed", "open"):
        raise UsageError(f"unknown --mode {args.mode!r}; known: closed, open")
    specs = list(args.compare or (() if args.policy else DEFAULT_SETS))
    if args.policy:
        specs.append(",".join(args.policy))
    names = []
    for spec in specs:
        name = resolve(spec).name  # raises UsageError on an unknown set, class or policy
        if name in names:
            raise UsageError(f"policy set {name!r} given twice")
        names.append(name)
    from replay.sim.simulate import ENGINES

    if args.engine not in ENGINES:
        raise UsageError(f"unknown --engine {args.engine!r}; known: {', '.join(ENGINES)}")
    max_memory = getattr(args, "max_memory", None)
    return Options(tuple(names), cpus, scale, args.preempt, seeds, args.mode, jobs, perturb, args.engine,
                   options.parse_size(max_memory, "--max-memory") if max_memory is not None else None)


#: Peak memory of a replay per trace row (all tables) when reconstruction builds an op object per row
#: (--scale-tasks above 1, --interference), measured with benchmarks/replay_scale.py: on a 10-s
#: mmap1_threads recording (3.08 M rows) ``replay T --compare 2.6.39 current --seeds 2 --jobs 2``
#: peaked at 3 792 MiB of proportional set size for the process tree, 1 293 B per row; rounded up by a
#: sixth for recordings with more nesting per row (docs/SCALING.md, "Memory limit").
REPLAY_BYTES_PER_ROW = 1536
#: The same when the common segments are emitted from the columns (every other replay), measured 2026-12-07
#: 19:56 on nine recordings (0.87-22.3 M rows: the six workloads of benchmarks/fidelity.py, mmap1_threads
#: of 5, 10 and 60 s): 34-129 B of tree PSS per row above the base, the most for fork-exit; rounded up.
REPLAY_BYTES_PER_ROW_EMITTED = 160
#: what a replay needs whatever the trace: the interpreter, polars, numpy, pyarrow (measured: ~160 MiB)
REPLAY_BASE_BYTES = 192 << 20
def available_memory() -> tuple[int, str] | None:
    """(bytes, where from) of the memory a replay may use now: MemAvailable, or the cgroup's room if less."""
    best: tuple[int, str] | None = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    best = (int(line.split()[1]) * 1024, "MemAvailable")
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/cgroup") as f:
            path = next((ln.split(":", 2)[2].strip() for ln in f if ln.startswith("0::")), None)
        if path is not None:
            base = f"/sys/fs/cgroup{path.rstrip('/')}"
            with open(f"{base}/memory.max") as f:
                limit = f.read().strip()
            if limit != "max":
                with open(f"{base}/memory.current") as f:
                    room = int(limit) - int(f.read().strip())
                if best is None or room < best[0]:
                    best = (max(room, 0), f"cgroup {path} memory.max")
    except (OSError, ValueError, StopIteration):
        pass
    return best


def _gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def check_memory(trace: Any, scale_tasks: float, max_memory: int | None, emit: bool = False) -> None:
    """Refuse up front (one-line UsageError) a trace whose replay would not fit: rows x the measured peak
    bytes per row of the reconstruction the replay takes (emitted or op objects; x --scale-tasks when it
    grows the work), against --max-memory or the memory available."""
    rows = sum(trace.rows(t) for t in trace.tables)
    per_row = REPLAY_BYTES_PER_ROW_EMITTED if emit else REPLAY_BYTES_PER_ROW
    need = REPLAY_BASE_BYTES + rows * per_row * max(1.0, scale_tasks)
    if max_memory is not None:
        limit: tuple[int, str] | None = (max_memory, "--max-memory")
    else:
        limit = available_memory()
    if limit is not None and need > limit[0]:
        raise UsageError(f"{trace.path}: replaying {rows:,} rows needs about {_gib(need)} "
                         f"({per_row} B per row, measured), more than the {_gib(limit[0])} limit "
                         f"({limit[1]}); replay a shorter recording, or raise --max-memory if the estimate is wrong")


def preempt_default(recorded: str) -> tuple[str, str]:
    """The model to simulate when --preempt is not given, and a note when it is not the recorded one."""
    if recorded in PREEMPT_MODELS:
        return recorded, ""
    model = PREEMPT_EQUIVALENT.get(recorded, "voluntary")
    return model, f"recorded preemption model {recorded!r} replayed as {model!r}; use --preempt to choose"


#: fewer recorded acquisitions of a class than this cannot give its p99: the policy difference barely shows
FEW_ACQUISITIONS = 100


def check_tables(trace: Any, sets: list[Any], workload: Any, found: Any = None) -> list[str]:
    """Refuse comparisons the trace has no data for (MissingTableError names the probe); return notes
    on compared policies the workload gives nothing to act on (``found``: its compare.census, if taken)."""
    from replay.compare import census

    found = found or census(workload)
    notes = []
    if len({s.gather for s in sets}) > 1:
        if not (trace.has("gathers") or trace.has("page_free_batches")):
            trace.require("page_free_batches", needed_for="comparing mmu_gather policies")
        if not found.gathers:
            notes.append("the policy sets differ in mmu_gather policy but the trace has no gather to replay")
    acquisitions = found.acquisitions
    differing = sorted(c for c in ("i_mmap_rwsem", "anon_vma") if len({s.lock_policy(c) for s in sets}) > 1)
    if differing and not set(differing) & set(acquisitions) and not trace.has("lock_waits"):
        trace.require("lock_waits", needed_for=f"comparing {' and '.join(differing)} policies")
    for c in differing:
        n = acquisitions.get(c, 0)
        if n == 0:
            notes.append(f"the policy sets differ for {c} but the trace has no {c} activity (tier 1 sees only "
                         "contended acquisitions): the difference cannot show")
        elif n < FEW_ACQUISITIONS:  # a lone wait used to silence the note
            notes.append(f"the policy sets differ for {c} but the trace has only {n} {c} acquisition(s) (tier 1 sees "
                         f"only contended ones): the difference can show in those alone, too few for its p99")
    return notes


def workload_notes(workload: Any, found: Any = None) -> list[str]:
    """What the reader of the figures must know about the reconstruction (``found``: its compare.census)."""
    from replay.compare import census
    from replay.workload.intervals import UNMEASURED_FAULTS

    recon = workload.meta.get("notes", {})
    notes = [n for n in recon if n.startswith("no ")]  # a table the trace lacks, and what follows from it
    unmeasured = recon.get(UNMEASURED_FAULTS, 0)
    if unmeasured:
        measured = (found or census(workload)).spans.get("fault", 0)
        notes.append(f"{unmeasured:,} faults have no measured end (per-VMA lock; tier 1 has no fault-exit event): "
                     f"their time is replayed as think time; fault latency covers the {measured:,} measured ones")
    if workload.meta.get("interference"):  # --interference (replay/interference.py)
        notes.append(f"other jobs' time on the CPUs replayed {workload.meta['interference']}")
    return notes


def run(args: argparse.Namespace) -> int:
    from replay.batch import Progress, RunSpec, Settings, run_all
    from replay.compare import census, compare, summarize
    from replay.policies.sets import resolve
    from replay.results import write_results
    from replay.trace.reader import Trace
    from replay.trace.validate import check_values
    from replay.trace.writer import check_target
    from replay.workload import reconstruct, scale_tasks

    opts = check_options(args)
    costs = options.costs(args.costs)
    trace = Trace.open(args.trace)
    check_values(trace)  # a corrupt cell must not become hours of simulated time or an overflow
    if args.output:
        check_target(args.output, args.force)  # refuse (a link, the input, ...) before replaying for minutes
    if trace.manifest.kind != "trace":
        raise UsageError(f"{trace.path}: holds replay results, not a trace; replay the trace it was made from "
                         f"({trace.manifest.extra.get('trace', 'see its manifest')})")
    emit = opts.scale_tasks <= 1 and not args.interference
    check_memory(trace, opts.scale_tasks, opts.max_memory, emit)
    sets = [resolve(s) for s in opts.sets]
    calibration: tuple[str, ...] = ()
    if args.calibrate:
        from replay.sim.calibrate import calibrate

        cal = calibrate(trace, base=costs)
        costs, calibration = cal.costs, cal.notes
    # the common segments as policy-neutral instructions, not op objects, unless something below walks the
    # ops themselves (more tasks copy them, --interference places other jobs' time between them)
    # (their rows are written to files in a private directory as they are made and mapped from there, unlinked
    # at once: a long recording's instructions stay in the page cache, not in this process's memory)
    spool = tempfile.mkdtemp(prefix="mmreplay-neutral-") if emit else None
    try:
        recon = reconstruct(trace, cpus=opts.cpus, emit=emit, spool=spool)
    finally:
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
    options.check_tasks(len(recon.threads), opts.scale_tasks)  # before scale_tasks allocates them
    workload = scale_tasks(recon, opts.scale_tasks)
    del recon  # the workload is all that is kept: run_all frees its ops once flattened (release)
    if not workload.threads:
        raise UsageError(f"{trace.path}: no task in the trace did any mm work to replay")
    if args.interference:
        if opts.scale_tasks != 1 or workload.cpus != trace.manifest.host.cpus:
            raise UsageError("--interference replays the recorded host's load on the recorded tasks: it needs the "
                             "recorded CPUs and tasks (no --cpus or --scale-tasks)")
        from replay.interference import apply, derive

        inf = derive(trace, [t.tid for t in workload.threads], workload.cpus)
        workload = apply(workload, inf, costs.wakeup_ns + costs.wake_jitter_ns + costs.context_switch_ns,
                         woken=opts.mode == "closed", exact=bool(costs.blocks_hold_wakeup)).workload
    found = census(workload)  # one walk over the ops for the notes and the derived flags
    notes = check_tables(trace, sets, workload, found) + workload_notes(workload, found)
    if "as-recorded" in opts.sets and (opts.scale_tasks != 1 or workload.cpus != trace.manifest.host.cpus):
        notes.append("as-recorded replays the recorded waits verbatim: with other CPUs or tasks than recorded "
                     "it is no longer the identity baseline")
    preempt = opts.preempt
    if preempt is None:
        preempt, note = preempt_default(trace.manifest.host.preempt_model)
        if note:
            notes.append(note)
    settings = Settings(cpus=workload.cpus, preempt=preempt, mode=opts.mode, costs=costs,
                        keep_tables=bool(args.output), perturb=opts.perturb, engine=opts.engine)
    specs = [RunSpec(s.name, seed) for s in sets for seed in range(opts.seeds)]
    progress = Progress(len(specs))
    try:
        # the census above is the last reader of the ops: they go once the programs are flattened
        runs = run_all(workload, specs, settings, jobs=opts.jobs, progress=progress, release=True)
    except InconsistencyError as e:  # a bug of ours: say which recording shows it, in one line
        raise InconsistencyError(f"{trace.path}: {e}; please report it with this trace") from None
    finally:
        progress.close()

    by_set = {s.name: {r.seed: r.metrics for r in runs if r.policy_set == s.name} for s in sets}
    dependent = found.dependent
    summaries = summarize(by_set, dependent)
    comparisons = compare(by_set, base=sets[0].name, dependent=dependent)
    facts = _facts(trace, workload, sets, settings, opts, notes)
    facts["calibration"] = list(calibration)
    if args.output:
        write_results(args.output, runs, comparisons, dependent=dependent, host=_host(trace, settings),
                      command=["mmreplay", *sys.argv[1:]], extra=facts, force=args.force)
        facts["results"] = str(args.output)
    if args.json:
        print(json.dumps({
            **facts,
            "summary": [{"metric": str(s.key), "policy_set": s.policy_set, "mean": s.mean, "sd": s.sd,
                         "seeds": s.seeds, "derived": s.derived} for s in summaries],
            "comparison": [{"metric": str(c.key), "base": c.base, "other": c.other, "base_mean": c.base_mean,
                            "other_mean": c.other_mean, "diff_mean": c.diff_mean, "ci_low": c.ci_low,
                            "ci_high": c.ci_high, "seeds": c.seeds, "derived": c.derived} for c in comparisons],
        }, indent=2))
    else:
        print(render(facts, summaries, comparisons))
    return 0


def _host(trace: Any, settings: Any) -> Any:
    from dataclasses import replace

    return replace(trace.manifest.host, cpus=settings.cpus, preempt_model=settings.preempt)


def _facts(trace: Any, workload: Any, sets: list[Any], settings: Any, opts: Options, notes: list[str]) -> dict:
    return {
        "trace": str(trace.path),
        "threads": len(workload.threads),
        "cpus": settings.cpus,
        "recorded_cpus": trace.manifest.host.cpus,
        "scale_tasks": opts.scale_tasks,
        "preempt": settings.preempt,
        "mode": settings.mode,
        "perturb": settings.perturb,
        "seeds": list(range(opts.seeds)),
        "policy_sets": [{"name": s.name, "locks": dict(s.locks), "gather": s.gather} for s in sets],
        "derived_classes": sorted(workload.derived_classes),
        "workload": {k: v for k, v in workload.meta.items() if k != "trace"},
        "notes": notes,
    }


# -- text report ---------------------------------------------------------------------------------

_LOCK_COLS = [("wait", "p50"), ("wait", "p99"), ("wait", "max"), ("hold", "p50"), ("hold", "p99"), ("hold", "max")]
_OP_COLS = ["p50", "p99", "max"]
_SCALARS = [
    ("preempt_off_max_ns", "longest preempt-off section"),
    ("preempt_off_p99_ns", "preempt-off p99"),
    ("probe_latency_p50_ns", "probe latency p50"),
    ("probe_latency_p99_ns", "probe latency p99"),
    ("probe_latency_max_ns", "probe latency max"),
    ("spin_cpu_ns", "CPU time spinning"),
    ("context_switches", "context switches"),
    ("tlb_flushes", "TLB flushes"),
    ("ipis", "IPIs"),
    ("makespan_ns", "makespan"),
]


def fmt(value: float | None, metric: str) -> str:
    """A figure in readable units: ns metrics as ns/µs/ms/s, counts as integers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric.endswith("_ns") or re.search(r"_ns$|_ns:", metric):
        a = abs(value)
        if a >= 1e9:
            return f"{value / 1e9:.3g} s"
        if a >= 1e6:
            return f"{value / 1e6:.3g} ms"
        if a >= 1e3:
            return f"{value / 1e3:.3g} µs"
        return f"{value:.0f} ns"
    if abs(value - round(value)) < 1e-9 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render(facts: dict, summaries: list[Any], comparisons: list[Any]) -> str:
    """The human report: per set the figures (means over seeds), then each set against the first."""
    mark = DERIVED_MARK
    derived_any = False
    lines = [
        f"replay     {facts['trace']}: {facts['threads']} tasks on {facts['cpus']} CPUs "
        f"(recorded {facts['recorded_cpus']}), {facts['mode']}, preempt {facts['preempt']}, "
        f"{len(facts['seeds'])} seed(s)" + (f", tasks x{facts['scale_tasks']:g}" if facts["scale_tasks"] != 1 else ""),
        "holds      measured: " + (", ".join(facts["workload"].get("measured_hold_classes", [])) or "none")
        + ("; derived" + mark + ": " + ", ".join(facts["derived_classes"]) if facts["derived_classes"] else ""),
    ]
    lines += [f"note       {n}" for n in facts["notes"]]
    lines += [f"calibrated {n}" for n in facts.get("calibration", [])]
    by_set: dict[str, dict[str, Any]] = {}
    for s in summaries:
        by_set.setdefault(s.policy_set, {})[str(s.key)] = s
    for ps in facts["policy_sets"]:
        name = ps["name"]
        m = by_set.get(name, {})
        locks = ", ".join(f"{c}={p}" for c, p in ps["locks"].items() if c in ("i_mmap_rwsem", "anon_vma"))
        lines += ["", f"== {name} ({locks}, gather {ps['gather']}) =="]
        classes = sorted({k.split(":", 1)[1] for k in m if k.startswith(("wait_p99_ns:", "hold_p99_ns:"))})
        if classes:
            head = f"{'lock class':<18}" + "".join(f"{w + ' ' + q:>11}" for w, q in _LOCK_COLS) + f"{'acquired':>11}"
            lines.append(head)
            for c in classes:
                flag = any(m[k].derived for k in m if k.endswith(":" + c))
                derived_any |= flag
                row = f"{c + (mark if flag else ''):<18}"
                for w, q in _LOCK_COLS:
                    key = f"{w}_{q}_ns:{c}"
                    row += f"{fmt(m[key].mean if key in m else None, key):>11}"
                acq = m.get(f"acquisitions:{c}")
                row += f"{fmt(acq.mean if acq else None, 'acquisitions'):>11}"
                lines.append(row)
        kinds = sorted({k.split(":", 1)[1] for k in m if k.startswith("op_latency_p99_ns:")})
        if kinds:
            lines.append(f"{'operation':<18}" + "".join(f"{'latency ' + q:>14}" for q in _OP_COLS) + f"{'count':>11}")
            for kd in kinds:
                flag = m[f"op_latency_p99_ns:{kd}"].derived
                derived_any |= flag
                row = f"{kd + (mark if flag else ''):<18}"
                for q in _OP_COLS:
                    key = f"op_latency_{q}_ns:{kd}"
                    row += f"{fmt(m[key].mean if key in m else None, key):>14}"
                cnt = m.get(f"op_count:{kd}")
                row += f"{fmt(cnt.mean if cnt else None, 'count'):>11}"
                lines.append(row)
        for key, label in _SCALARS:
            if key in m:
                s = m[key]
                derived_any |= s.derived
                spread = f"  ± {fmt(s.sd, key)} sd" if s.seeds > 1 and s.sd else ""
                lines.append(f"{label + (mark if s.derived else ''):<30}{fmt(s.mean, key):>12}{spread}")
                if key == "preempt_off_max_ns":
                    causes = sorted(((v.mean, k.split(":", 1)[1]) for k, v in m.items()
                                     if k.startswith("preempt_off_max_ns:") and v.mean > 0), reverse=True)
                    if causes:
                        lines.append(f"{'  longest by cause':<30}" + ", ".join(
                            f"{c} {fmt(v, key)}" for v, c in causes))
    by_pair: dict[tuple[str, str], list[Any]] = {}
    for c in comparisons:
        by_pair.setdefault((c.base, c.other), []).append(c)
    shown = {k for k, _ in _SCALARS} | {"wait_p99_ns", "hold_p99_ns", "wait_max_ns", "op_latency_p99_ns",
                                        "op_latency_max_ns", "wait_p50_ns", "op_latency_p50_ns"}
    for (base, other), rows in by_pair.items():
        n = max((c.seeds for c in rows), default=0)
        lines += ["", f"== {other} vs {base} (difference over {n} paired seed(s), 95% CI) =="]
        lines.append(f"{'metric':<34}{base:>12}{other:>12}{'diff':>12}{'95% CI':>26}{'change':>9}")
        unchanged = 0
        for c in sorted(rows, key=lambda c: (c.key.lock_class or "", c.key.kind or "", c.key.metric)):
            if c.key.metric not in shown:
                continue
            if c.diff_mean == 0 and c.ci_low in (None, 0) and c.ci_high in (None, 0):
                unchanged += 1
                continue
            derived_any |= c.derived
            key = str(c.key)
            ci = "-" if c.ci_low is None else f"[{fmt(c.ci_low, key)}, {fmt(c.ci_high, key)}]"
            change = f"{100 * c.diff_mean / c.base_mean:+.0f}%" if c.base_mean else ""
            sig = "*" if c.significant else ""
            lines.append(f"{key + (mark if c.derived else ''):<34}{fmt(c.base_mean, key):>12}"
                         f"{fmt(c.other_mean, key):>12}{fmt(c.diff_mean, key):>12}{ci:>26}{change + sig:>9}")
        if unchanged:
            lines.append(f"({unchanged} more figure(s) identical in every seed)")
        lines.append("(* the 95% interval excludes zero)" if n > 1 else "(one seed: no interval)")
    if derived_any:
        lines += ["", f"{mark} rests on hold times derived by the missing-holds model for "
                  f"{', '.join(facts['derived_classes'])} (the trace has their waits, not their holds); "
                  "see docs/SIMULATOR.md, \"Missing holds\"."]
    if facts.get("results"):
        lines += ["", f"results    {facts['results']} (mmreplay info {facts['results']})"]
    return "\n".join(lines)
