"""`mmreplay synth`: synthetic traces are valid, well nested, scaled, reproducible and fittable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.cli.main import main
from replay.synth.fit import fit_model
from replay.synth.model import Empirical, LogNormal, Model
from replay.synth.patterns import PATTERNS
from replay.synth.synthesize import synthesize
from replay.trace.reader import Trace
from replay.trace.writer import write_trace

INTERVALS = ("syscalls", "lock_holds", "gathers", "page_free_batches")
SMALL_REGION = 16  # pages


def synth(tmp_path: Path, name: str, **kw) -> Trace:
    kw.setdefault("tasks", 2)
    kw.setdefault("cpus", kw["tasks"])
    kw.setdefault("seconds", 0.004)
    kw.setdefault("region_pages", SMALL_REGION)
    kw.setdefault("files", 16)
    out = tmp_path / f"{name}-{kw['tasks']}-{kw['cpus']}-{kw['seconds']}-{kw.get('seed', 0)}"
    synthesize(name, out, **kw)
    return Trace.open(out)


def intervals(trace: Trace) -> pl.DataFrame:
    """Every interval with its table, outer ones first at equal starts."""
    parts = [trace.scan(t).select("tid", "ts", "dur", "seq", "cpu", pl.lit(t).alias("table")) for t in INTERVALS]
    return pl.concat(parts).sort(["tid", "ts", "dur"], descending=[False, False, True]).collect()


def nesting(df: pl.DataFrame) -> tuple[int, list[int | None]]:
    """(partial overlaps within a tid, parent row index of each interval)."""
    tid, ts = df["tid"].to_list(), df["ts"].to_list()
    end = [a + b for a, b in zip(ts, df["dur"].to_list(), strict=True)]
    partial, parent, stack, cur = 0, [], [], None
    for i in range(len(ts)):
        if tid[i] != cur:
            stack, cur = [], tid[i]
        while stack and end[stack[-1]] <= ts[i]:
            stack.pop()
        if stack and end[i] > end[stack[-1]]:
            partial += 1
        parent.append(stack[-1] if stack else None)
        stack.append(i)
    return partial, parent


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_pattern_gives_a_valid_trace_whose_intervals_nest_within_each_tid(name, tmp_path):
    trace = synth(tmp_path, name, tasks=3, cpus=2)
    assert trace.manifest.source == "synthetic" and trace.manifest.host.cpus == 2
    for table in ("tasks", "syscalls", "lock_holds", "lock_waits", "gathers", "page_faults", "sched_switch"):
        assert trace.has(table)
    assert trace.rows("lock_holds") > 0 and trace.rows("lock_waits") == 0
    df = intervals(trace)
    partial, parent = nesting(df)
    assert partial == 0
    m = trace.manifest
    assert df["ts"].min() >= m.start_ns and (df["ts"] + df["dur"]).max() <= m.end_ns
    assert (df["dur"] > 0).all()
    # every gather is inside a syscall, every free burst inside a gather; depth counts enclosing holds
    tables, depth_of = df["table"].to_list(), {}
    holds = trace.read("lock_holds").select("seq", "depth")
    depth_of = dict(zip(holds["seq"].to_list(), holds["depth"].to_list(), strict=True))
    seqs = df["seq"].to_list()
    for i, table in enumerate(tables):
        chain, p = [], parent[i]
        while p is not None:
            chain.append(tables[p])
            p = parent[p]
        if table == "gathers":
            assert "syscalls" in chain
        if table == "page_free_batches":
            assert chain and chain[0] == "gathers"
        if table == "lock_holds":
            assert depth_of[seqs[i]] == chain.count("lock_holds")
    # seq orders every event row of the trace
    all_seq = pl.concat([trace.scan(t).select("seq") for t in trace.tables if t != "tasks"]).collect()["seq"]
    assert all_seq.is_unique().all() and all_seq.min() == 0 and all_seq.max() == len(all_seq) - 1


def test_pattern_names_are_the_workload_program_names():
    import tracer.workloads

    assert sorted(PATTERNS) == tracer.workloads.names()


def test_take_all_locks_nests_every_i_mmap_and_anon_vma_lock_inside_one_mmap_lock_write_hold(tmp_path):
    files = 40
    trace = synth(tmp_path, "take-all-locks", tasks=3, cpus=3, files=files, seconds=0.002)
    holds = trace.read("lock_holds").with_columns(pl.col("lock_class").cast(pl.String), pl.col("mode").cast(pl.String))
    locker = holds.filter(pl.col("tid") == holds.sort("depth")["tid"][-1])
    outer = locker.filter((pl.col("depth") == 0) & (pl.col("lock_class") == "mmap_lock"))
    assert len(outer) >= 1 and (outer["mode"] == "write").all()
    first = outer.row(0, named=True)
    inside = locker.filter((pl.col("ts") >= first["ts"]) & (pl.col("ts") + pl.col("dur") <= first["ts"] + first["dur"])
                           & (pl.col("depth") > 0)).sort("depth")
    assert inside["depth"].to_list() == list(range(1, 2 * files + 1))
    assert inside["lock_class"].to_list() == ["i_mmap_rwsem"] * files + ["anon_vma"] * files
    assert inside["lock_addr"].n_unique() == 2 * files
    # the others map and fault the same files meanwhile
    faults = trace.read("page_faults")
    assert faults.filter(pl.col("tid") != first["tid"]).height > 0
    shared = holds.filter((pl.col("tid") != first["tid"]) & (pl.col("lock_class") == "i_mmap_rwsem"))
    assert set(shared["lock_addr"].to_list()) <= set(inside["lock_addr"].to_list())
    assert trace.rows("sched_switch") > 0  # the locker sleeps in synchronize_srcu


def count(trace: Trace, table: str) -> int:
    return trace.rows(table)


def test_counts_scale_with_tasks_and_seconds_and_saturate_at_the_cpus(tmp_path):
    base = count(synth(tmp_path, "mmap1_processes", tasks=2, cpus=2, seconds=0.01), "syscalls")
    more_tasks = count(synth(tmp_path, "mmap1_processes", tasks=4, cpus=4, seconds=0.01), "syscalls")
    longer = count(synth(tmp_path, "mmap1_processes", tasks=2, cpus=2, seconds=0.02), "syscalls")
    shared = synth(tmp_path, "mmap1_processes", tasks=4, cpus=2, seconds=0.01)
    assert more_tasks == pytest.approx(2 * base, rel=0.05)
    assert longer == pytest.approx(2 * base, rel=0.05)
    assert count(shared, "syscalls") == pytest.approx(base, rel=0.05)  # 4 tasks time-share 2 CPUs
    assert shared.rows("sched_switch") > 0
    assert shared.read("tasks").height == 4


def test_faults_and_madvise_take_mmap_lock_for_read_only_when_asked(tmp_path):
    vma = synth(tmp_path, "tlb_flush2_threads", tasks=2, seconds=0.002)
    old = synth(tmp_path / "old", "tlb_flush2_threads", tasks=2, seconds=0.002, fault_lock="mmap_lock")
    for trace, per_op in ((vma, 0), (old, 1)):
        reads = trace.read("lock_holds").filter((pl.col("lock_class") == "mmap_lock") & (pl.col("mode") == "read"))
        calls = trace.read("syscalls").group_by("name").len()
        n = dict(zip(calls["name"].cast(pl.String).to_list(), calls["len"].to_list(), strict=True))
        # munmap always downgrades to read for its zap; faults and MADV_DONTNEED only without per-VMA locks
        assert reads.height == n["munmap"] + per_op * (trace.rows("page_faults") + n["madvise"]) > 0
    # threads share one mm: one mmap_lock for all of them
    writes = vma.read("lock_holds").filter(pl.col("lock_class") == "mmap_lock")
    assert writes["lock_addr"].n_unique() == 1 and writes["tid"].n_unique() == 2


def test_munmap_detaches_under_write_then_zaps_under_read(tmp_path):
    trace = synth(tmp_path, "page_fault1_processes", tasks=1, seconds=0.002)
    holds = trace.read("lock_holds").filter(pl.col("lock_class") == "mmap_lock").sort("ts")
    munmap = trace.read("syscalls").filter(pl.col("name") == "munmap").row(0, named=True)
    inside = holds.filter((pl.col("ts") >= munmap["ts"]) & (pl.col("ts") < munmap["ts"] + munmap["dur"]))
    assert inside["mode"].cast(pl.String).to_list() == ["write", "read"]
    write, read = inside.row(0, named=True), inside.row(1, named=True)
    assert write["ts"] + write["dur"] <= read["ts"]
    gathers = trace.read("gathers").filter((pl.col("ts") >= read["ts"]) & (pl.col("ts") < read["ts"] + read["dur"]))
    assert gathers.height == 1 and gathers["pages"][0] == SMALL_REGION + 1  # the pages and their page table


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    a = synth(tmp_path / "a", "fork-exit", seed=7, seconds=0.003)
    b = synth(tmp_path / "b", "fork-exit", seed=7, seconds=0.003)
    c = synth(tmp_path / "c", "fork-exit", seed=8, seconds=0.003)
    files = sorted(p.name for p in a.path.iterdir())
    assert files == sorted(p.name for p in b.path.iterdir())
    for f in files:
        if f.endswith(".arrow"):
            assert (a.path / f).read_bytes() == (b.path / f).read_bytes(), f
    ma, mb = (json.loads((t.path / "manifest.json").read_text()) for t in (a, b))
    ma.pop("created"), mb.pop("created")
    assert ma == mb
    assert (a.path / "lock_holds.arrow").read_bytes() != (c.path / "lock_holds.arrow").read_bytes()


def test_fit_recovers_known_lognormal_parameters(tmp_path):
    truth = {
        "hold:i_mmap_rwsem:mmap": LogNormal(500, 0.5),
        "hold:mmap_lock:munmap": LogNormal(900, 0.25),
        "syscall:munmap": LogNormal(2000, 0.4),
        "think:user": LogNormal(1000, 0.6),
    }
    model = Model()
    for key, d in truth.items():
        model.dists[key] = d
    trace = synth(tmp_path, "mmap-file", tasks=2, seconds=0.02, model=model)
    fitted, report = fit_model(trace)
    for key, d in truth.items():
        got = fitted[key]
        assert got.median == pytest.approx(d.median, rel=0.05), key
        assert got.sigma == pytest.approx(d.sigma, abs=0.03), key
        assert key in fitted.fitted
    assert any(line.startswith("fitted hold:i_mmap_rwsem:mmap") for line in report.lines())
    # what the trace cannot show stays at its default, and the report says so
    assert fitted["fault:anon"] == Model()["fault:anon"] and "fault:anon" in report.kept


def running_tid_checks(trace: Trace) -> tuple[int, int]:
    """(switches whose prev is not the CPU's previous next, event rows of a tid not running on their CPU)."""
    sw = trace.read("sched_switch").sort("seq")
    breaks = 0
    for _, g in sw.group_by("cpu"):
        prev, nxt = g["prev_tid"].to_list(), g["next_tid"].to_list()
        breaks += sum(1 for i in range(1, len(prev)) if prev[i] != nxt[i - 1])
    events = pl.concat([trace.scan(t).select("seq", "cpu", "tid") for t in (*INTERVALS, "page_faults")]).collect()
    if sw.is_empty():  # then each CPU ran one task all along
        per_cpu = events.group_by("cpu").agg(pl.col("tid").n_unique().alias("n"))
        return breaks, int((per_cpu["n"] - 1).sum())
    first = sw.group_by("cpu").agg(pl.col("prev_tid").first().alias("initial"))
    current = events.sort("seq").join_asof(
        sw.select("seq", "cpu", pl.col("next_tid").alias("running")).sort("seq"), on="seq", by="cpu",
        strategy="backward", check_sortedness=False,
    ).join(first, on="cpu", how="left")
    running = current["running"].fill_null(current["initial"])
    return breaks, int((running != current["tid"]).sum())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["mmap-merge", "fork-exit", "take-all-locks", "page_fault3_threads", "kbuild"]),
    tasks=st.integers(1, 5),
    cpus=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_a_cpu_runs_one_task_at_a_time_and_its_switches_chain(tmp_path, name, tasks, cpus, seed):
    seconds = 0.4 if name == "kbuild" else 0.008
    trace = synth(tmp_path / str(seed), name, tasks=tasks, cpus=cpus, seed=seed, seconds=seconds)
    top = intervals(trace).filter(pl.col("table") == "syscalls")
    for _, g in top.group_by("cpu"):
        g = g.sort("ts")
        ends = (g["ts"] + g["dur"]).to_numpy()
        assert np.all(g["ts"].to_numpy()[1:] >= ends[:-1])
    assert running_tid_checks(trace) == (0, 0)
    assert nesting(intervals(trace))[0] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "nope", "-o", "X"], "unknown pattern 'nope'"),
        (["synth", "mmap1_threads"], "-o DIR"),
        (["synth", "mmap1_threads", "-o", "X", "--tasks", "0"], "--tasks must be from 1"),
        (["synth", "mmap1_threads", "-o", "X", "--tasks", "many"], "--tasks must be an integer"),
        (["synth", "mmap1_threads", "-o", "X", "--seconds", "-1"], "--seconds must be more than 0"),
        (["synth", "mmap1_threads", "-o", "X", "--region", "1000"], "--region must be"),
        (["synth", "mmap1_threads", "-o", "X", "--fault-lock", "bkl"], "--fault-lock must be one of"),
        (["synth", "mmap1_threads", "-o", "X", "--fit-kind", "gamma"], "--fit-kind must be one of"),
        (["synth", "mmap1_threads", "-o", "X", "--fit-kind", "empirical"], "--fit-kind needs --fit"),
        (["synth", "mmap1_threads", "-o", "X", "--fit", "/nonexistent/trace"], "no such trace directory"),
        (["synth", "page_fault1_threads", "-o", "X", "--tasks", "4096", "--seconds", "3600"], "M rows"),
    ],
)
def test_bad_options_are_one_line_errors_with_exit_status_2(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "X" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_trace_refuses_to_overwrite_and_overwrites_with_force(tmp_path, capsys):
    out = str(tmp_path / "t")
    args = ["synth", "tlb_flush2_threads", "-o", out, "--tasks", "2", "--seconds", "0.002", "--region", "65536"]
    assert main(args) == 0
    assert "iterations" in capsys.readouterr().out
    assert Trace.open(out).manifest.extra["synth"]["pattern"] == "tlb_flush2_threads"
    assert main(args) == 2
    assert main([*args, "--force"]) == 0
    assert main(["synth", "--list"]) == 0
    assert "take-all-locks" in capsys.readouterr().out


def test_fit_of_a_trace_without_gathers_keeps_the_holds_that_would_contain_one(tmp_path):
    full = synth(tmp_path, "mmap1_processes", seconds=0.01)
    tier1 = {name: full.arrow(name) for name in full.tables if name != "gathers"}
    write_trace(tmp_path / "tier1", tier1, source="recorded")
    fitted, report = fit_model(Trace.open(tmp_path / "tier1"))
    assert "hold:mmap_lock:munmap_zap" in report.kept and "hold:mmap_lock:munmap_zap" not in fitted.fitted
    # mmap, and munmap's write part before the downgrade, hold no gather: still fitted
    assert "hold:mmap_lock:mmap" in fitted.fitted and "hold:mmap_lock:munmap" in fitted.fitted
    assert any("no gathers table" in n for n in report.notes)


def test_empirical_fit_keeps_the_two_modes_a_lognormal_would_blur(tmp_path):
    fast, slow = np.full(100, 200.0), np.full(101, 5000.0)  # half the holds 200 ns, half 5 µs
    bimodal = Empirical(tuple(np.concatenate([fast, slow])))
    model = Model()
    model.dists["hold:i_mmap_rwsem:munmap"] = bimodal
    trace = synth(tmp_path, "mmap-file", tasks=2, seconds=0.01, model=model)
    fitted, _ = fit_model(trace, kind="empirical")
    got = fitted["hold:i_mmap_rwsem:munmap"]
    assert isinstance(got, Empirical)
    assert float(got.quantile(0.25)) == pytest.approx(200, rel=0.02)
    assert float(got.quantile(0.75)) == pytest.approx(5000, rel=0.02)
    lognormal, _ = fit_model(trace)
    assert float(lognormal["hold:i_mmap_rwsem:munmap"].median) == pytest.approx(1000, rel=0.3)  # between the modes
    out = tmp_path / "again"
    assert main(["synth", "mmap-file", "-o", str(out), "--tasks", "1", "--seconds", "0.002",
                 "--fit", str(trace.path), "--fit-kind", "empirical"]) == 0
    described = Trace.open(out).manifest.extra["synth"]["model"]["hold:i_mmap_rwsem:munmap"]
    assert described["kind"] == "empirical" and described["fitted"] and len(described["quantiles_ns"]) == 201


def test_mprotect_split_shares_the_root_anon_vma_and_mmap_merge_does_not(tmp_path):
    split = synth(tmp_path, "mprotect-split", tasks=3, seconds=0.002)
    anon = split.read("lock_holds").filter(pl.col("lock_class") == "anon_vma")
    assert anon["lock_addr"].n_unique() == 1 and anon["tid"].n_unique() == 3
    calls = split.read("syscalls").group_by("tid").len()["len"].to_list()
    assert anon.height == sum(4 * ((n + 1) // 2) + 3 * (n // 2) for n in calls)  # 4 holds to split, 3 to merge
    merge = synth(tmp_path, "mmap-merge", tasks=3, seconds=0.002)
    anon = merge.read("lock_holds").filter(pl.col("lock_class") == "anon_vma")
    assert anon.group_by("lock_addr").agg(pl.col("tid").n_unique())["tid"].to_list() == [1, 1, 1]
    # as recorded on 6.18: every first write of the remapped page falls back to mmap_lock read
    reads = merge.read("lock_holds").filter((pl.col("lock_class") == "mmap_lock") & (pl.col("mode") == "read"))
    munmaps = merge.read("syscalls").filter(pl.col("name") == "munmap").height
    assert reads.height == merge.rows("page_faults") + munmaps


def test_fit_of_a_trace_with_only_mmap_lock_holds_keeps_the_holds_that_nest_others(tmp_path):
    full = synth(tmp_path, "take-all-locks", tasks=2, seconds=0.02)
    tier1 = {name: full.arrow(name) for name in full.tables}
    holds = full.read("lock_holds")
    tier1["lock_holds"] = holds.filter(pl.col("lock_class") == "mmap_lock")
    write_trace(tmp_path / "tier1", tier1, source="recorded")
    fitted, report = fit_model(Trace.open(tmp_path / "tier1"))
    assert "hold:mmap_lock:take_all" in report.kept and "hold:mmap_lock:take_all" not in fitted.fitted
    assert any("no i_mmap_rwsem/anon_vma holds" in n for n in report.notes)
    fitted_full, _ = fit_model(full)  # with the chain recorded, the own time is what the model drew
    assert fitted_full["hold:mmap_lock:take_all"].median == pytest.approx(Model()["hold:mmap_lock:take_all"].median,
                                                                          rel=0.15)


def _tier2_take_all_trace(path, calls=30, links=64, step=300, drop=100, register=5_000, own=2_000):
    """mm_take_all_locks calls as tier 2 records them: the call, the mmap_lock write hold around it and
    the chain of i_mmap_rwsem/anon_vma holds, released in acquisition (VMA) order."""
    rng = np.random.default_rng(7)
    h = {k: [] for k in ("ts", "dur", "lock_addr", "lock_class", "mode")}
    t = {k: [] for k in ("ts", "dur", "mm")}
    now = 1_000_000
    for _ in range(calls):
        start = now + own // 2
        acq = start + np.cumsum(rng.lognormal(np.log(step), 0.3, links)).astype(np.int64)
        first_rel = acq[-1] + register
        rel = first_rel + np.concatenate([[0], np.cumsum(rng.lognormal(np.log(drop), 0.3, links - 1))]).astype(np.int64)
        t["ts"].append(start), t["dur"].append(int(acq[-1] - start)), t["mm"].append(0xE0)
        h["ts"] += [now, *acq.tolist()]
        h["dur"] += [int(rel[-1] + own // 2 - now), *(rel - acq).tolist()]
        h["lock_addr"] += [0xE0, *range(0x1000, 0x1000 + links)]
        h["lock_class"] += ["mmap_lock", *(["i_mmap_rwsem", "anon_vma"] * links)[:links]]
        h["mode"] += ["write"] * (links + 1)
        now = int(rel[-1]) + 50_000
    n, m = len(h["ts"]), len(t["ts"])
    holds = {**h, "wait": [0] * n, "seq": list(range(n)), "cpu": [0] * n, "pid": [5] * n, "tid": [5] * n,
             "success": [True] * n, "depth": [0] * n, "stack_id": [-1] * n, "incomplete": [False] * n}
    take = {**t, "seq": list(range(m)), "cpu": [0] * m, "pid": [5] * m, "tid": [5] * m, "ret": [0] * m,
            "incomplete": [False] * m}
    write_trace(path, {"lock_holds": holds, "take_all_locks": take}, source="recorded")
    return Trace.open(path)


def test_fit_measures_the_take_all_chain_costs_from_tier2_holds(tmp_path):
    """Issue #12 item 5 / #16 item 4: the chain's per-lock cost comes from the trace, not a constant."""
    trace = _tier2_take_all_trace(tmp_path / "t", step=300, drop=100, register=5_000, own=2_000)
    fitted, report = fit_model(trace)
    assert fitted["take_all:step"].median == pytest.approx(300, rel=0.05)
    assert fitted["take_all:drop"].median == pytest.approx(100, rel=0.05)
    assert fitted["take_all:register"].median == pytest.approx(5_000, rel=0.01)
    assert fitted["hold:mmap_lock:take_all"].median == pytest.approx(2_000, rel=0.01)
    assert {"take_all:step", "take_all:drop", "take_all:register", "hold:mmap_lock:take_all"} <= set(fitted.fitted)
    assert any("30 mm_take_all_locks chains of 64 nested locks" in n for n in report.notes)
    assert "hold:mmap_lock:fork" not in fitted.fitted  # the take-all write holds are not fork's


def _tier1_take_all_trace(tmp_path, files: int, command_prefix=()):
    """A take-all-locks recording as tier 1 sees it: the synthesized trace without the nested i_mmap/anon_vma
    holds, with the recorded program's command line in the manifest."""
    full = synth(tmp_path / f"full-{files}", "take-all-locks", tasks=1, seconds=0.03, files=files)
    tables = {name: full.arrow(name) for name in full.tables}
    tables["lock_holds"] = full.read("lock_holds").filter(pl.col("lock_class") == "mmap_lock")
    out = tmp_path / f"tier1-{files}"
    write_trace(out, tables, source="recorded",
                command=[*command_prefix, "/root/.cache/mmreplay/workloads/take_all_locks", "-t", "1", "-n",
                         str(files)])
    return Trace.open(out)


def test_tier1_take_all_recordings_at_several_chain_lengths_fit_the_cost_per_nested_lock(tmp_path):
    """Issue #16 item 4: from tier 1 (no nested holds) the per-lock cost is the slope of the locker's mmap_lock
    write hold over the chain length, and synth with it reproduces the hold at a length it was not fitted on."""
    model = Model()
    per_lock = model["take_all:step"].mean + model["take_all:drop"].mean
    traces = [_tier1_take_all_trace(tmp_path, f) for f in (32, 64, 128)]
    fitted, report = fit_model(traces[0], more=tuple(traces[1:]))
    assert {"take_all:step", "take_all:drop"} <= set(fitted.fitted)
    got = fitted["take_all:step"].mean + fitted["take_all:drop"].mean
    assert got == pytest.approx(per_lock, rel=0.05)
    assert fitted["take_all:step"].mean / got == pytest.approx(2 / 3, rel=0.05)  # the defaults' split
    assert any("per nested lock" in line for line in report.lines())
    assert not any("take_all" in k for k in report.kept)
    # out of sample: 2 x 256 nested locks
    truth = _tier1_take_all_trace(tmp_path, 256)
    out = tmp_path / "refit"
    synthesize("take-all-locks", out, tasks=1, cpus=1, seconds=0.03, files=256, model=fitted)

    def locker_p50(trace):
        h = trace.read("lock_holds").filter((pl.col("lock_class") == "mmap_lock") & (pl.col("mode") == "write"))
        return float(h.filter(pl.col("dur") > 10_000)["dur"].median())

    assert locker_p50(Trace.open(out)) == pytest.approx(locker_p50(truth), rel=0.10)


def test_take_all_chain_length_comes_from_the_recorded_take_all_locks_command(tmp_path):
    from replay.synth.fit import take_all_chain_length

    assert take_all_chain_length(_tier1_take_all_trace(tmp_path, 40, ("perf", "stat", "--"))) == 80
    other = synth(tmp_path, "mmap-file", tasks=1)
    assert take_all_chain_length(other) is None
    fitted, _ = fit_model(other)
    assert "take_all:step" not in fitted.fitted


def test_one_tier1_take_all_recording_fits_the_slope_over_the_default_fixed_part(tmp_path):
    model = Model()
    fitted, report = fit_model(_tier1_take_all_trace(tmp_path, 128))
    assert fitted["take_all:step"].mean + fitted["take_all:drop"].mean == pytest.approx(
        model["take_all:step"].mean + model["take_all:drop"].mean, rel=0.15)
    assert "hold:mmap_lock:take_all" not in fitted.fitted and "take_all:register" not in fitted.fitted
    assert any("default fixed part" in line for line in report.lines())
