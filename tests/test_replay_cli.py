"""`mmreplay replay`: options, report, RESULTS directory, determinism and --jobs."""

from __future__ import annotations

import json

import pytest

from replay.cli.main import main
from replay.trace import Trace
from tests.tracebuilder import FILE_A, TraceBuilder


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory):
    """Two tasks munmapping pages of one file (i_mmap_rwsem contended, holds derived) and faulting."""
    b = TraceBuilder(cpus=2)
    tasks = [b.thread(100 + i, comm="mmap-file") for i in range(2)]
    for r in range(4):
        for i, t in enumerate(tasks):
            t.run(2_000 + 500 * i)
            with t.syscall("munmap", arg0=0x7F00_0000_0000, arg1=4096 * 40):
                t.run(200)
                with t.mmap_lock("write"):
                    with t.lock("i_mmap_rwsem", FILE_A, wait=300 + 400 * i + 100 * r):
                        t.run(800)
                    t.gather(pages=40, flushes=2)
            with t.fault(0x7F00_0000_1000):
                t.run(600)
            t.sleep(4_000)
    return b.write(tmp_path_factory.mktemp("trace") / "t")


def replay(capsys, *args):
    rc = main(["replay", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("args, fragment", [
    (["--cpus", "0"], "--cpus must be at least 1"),
    (["--cpus", "many"], "--cpus needs an integer"),
    (["--compare", "2.7"], "unknown policy set '2.7'"),
    (["--compare", "3.0", "3.0"], "given twice"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--jobs", "-1"], "--jobs must be at least 1"),
    (["--scale-tasks", "-1"], "--scale-tasks must be a positive number"),
    (["--scale-tasks", "x"], "--scale-tasks needs a number"),
    (["--preempt", "sometimes"], "unknown --preempt"),
    (["--mode", "ajar"], "unknown --mode"),
    (["--policy", "i_mmap_rwsem=ticket"], "unknown lock policy 'ticket'"),
    (["--policy", "bkl=mutex"], "unknown lock class 'bkl'"),
    (["--perturb", "3"], "--perturb is a coefficient of variation"),
    (["--perturb", "lots"], "--perturb needs a number"),
])
def test_nonsense_options_are_one_line_usage_errors(capsys, trace_path, args, fragment):
    rc, out, err = replay(capsys, trace_path, *args)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mmreplay: error: ") and fragment in err


def test_missing_trace_is_a_one_line_error(capsys, tmp_path):
    rc, _, err = replay(capsys, tmp_path / "nope")
    assert rc == 2 and err.count("\n") == 1 and "no such trace directory" in err


def test_trace_without_lock_holds_names_the_table_and_probe(capsys, tmp_path):
    b = TraceBuilder()
    with b.thread(1).syscall("munmap"):
        pass
    path = b.write(tmp_path / "t", omit=("lock_holds",))
    rc, _, err = replay(capsys, path, "--seeds", "1")
    assert rc == 2 and err.count("\n") == 1
    assert "'lock_holds'" in err and "mmap_lock_acquire_returned" in err


def test_report_covers_every_figure_and_flags_derived_ones(capsys, trace_path):
    rc, out, _ = replay(capsys, trace_path, "--compare", "2.6.39", "3.0", "--seeds", "2")
    assert rc == 0
    for needle in ("== 2.6.39", "== 3.0", "== 3.0 vs 2.6.39", "i_mmap_rwsem†", "munmap", "fault",
                   "wait p99", "hold max", "longest preempt-off section", "longest by cause", "probe latency p99",
                   "CPU time spinning", "context switches", "TLB flushes", "IPIs", "makespan", "95% CI",
                   "† rests on hold times derived by the missing-holds model"):
        assert needle in out, needle


def test_json_has_sets_summary_and_paired_comparisons(capsys, trace_path):
    rc, out, _ = replay(capsys, trace_path, "--compare", "current", "i_mmap_rwsem=spinlock", "--seeds", "3",
                        "--json")
    assert rc == 0
    doc = json.loads(out)
    assert [s["name"] for s in doc["policy_sets"]] == ["current", "i_mmap_rwsem=spinlock"]
    assert doc["derived_classes"] == ["i_mmap_rwsem"]
    assert doc["cpus"] == 2 and doc["seeds"] == [0, 1, 2]
    c = next(c for c in doc["comparison"] if c["metric"] == "makespan_ns")
    assert (c["base"], c["other"], c["seeds"]) == ("current", "i_mmap_rwsem=spinlock", 3)
    assert c["ci_low"] <= c["diff_mean"] <= c["ci_high"]
    assert c["derived"]


def test_same_seeds_give_the_same_output(capsys, trace_path):
    args = (trace_path, "--compare", "2.6.39", "current", "--seeds", "2", "--json")
    assert replay(capsys, *args)[1] == replay(capsys, *args)[1]


def test_jobs_give_results_identical_to_one_process(capsys, trace_path):
    args = (trace_path, "--compare", "2.6.39", "current", "--seeds", "2", "--json")
    serial = replay(capsys, *args, "--jobs", "1")[1]
    parallel = replay(capsys, *args, "--jobs", "2")[1]
    assert serial == parallel


def test_results_directory_holds_every_run_and_info_reads_it(capsys, trace_path, tmp_path):
    res = tmp_path / "res"
    rc, out, _ = replay(capsys, trace_path, "--compare", "2.6.39", "3.0", "--seeds", "2", "--cpus", "4",
                        "--scale-tasks", "1.5", "-o", res)
    assert rc == 0 and str(res) in out
    r = Trace.open(res)
    assert r.manifest.kind == "results" and r.manifest.source == "simulated"
    assert r.manifest.host.cpus == 4 and r.manifest.extra["scale_tasks"] == 1.5
    runs = set(r.read("sim_ops").select("policy_set", "seed").unique().rows())
    assert runs == {("2.6.39", 0), ("2.6.39", 1), ("3.0", 0), ("3.0", 1)}
    assert r.read("sim_ops").filter(r.read("sim_ops")["seed"] == 0)["tid"].n_unique() == 3  # 2 tasks x 1.5
    summary = r.read("sim_summary")
    assert set(summary["policy_set"].unique()) == {"2.6.39", "3.0"}
    assert r.read("sim_comparison").height > 0
    assert main(["info", str(res)]) == 0
    assert "sim_summary" in capsys.readouterr().out
    rc, _, err = replay(capsys, trace_path, "--seeds", "1", "-o", res)
    assert rc == 2 and "--force" in err
    rc, _, err = replay(capsys, res, "--seeds", "1")
    assert rc == 2 and err.count("\n") == 1 and "holds replay results, not a trace" in err
    assert replay(capsys, trace_path, "--seeds", "1", "-o", res, "--force")[0] == 0


def test_open_mode_and_preemption_model_are_passed_through(capsys, trace_path):
    rc, out, _ = replay(capsys, trace_path, "--compare", "current", "--seeds", "1", "--mode", "open",
                        "--preempt", "none", "--json")
    assert rc == 0
    doc = json.loads(out)
    assert (doc["mode"], doc["preempt"]) == ("open", "none")


def test_costs_file_is_read(capsys, trace_path, tmp_path):
    costs = tmp_path / "costs.json"
    costs.write_text('{"context_switch_ns": 1}')
    assert replay(capsys, trace_path, "--compare", "current", "--seeds", "1", "--costs", costs)[0] == 0
    costs.write_text('{"no_such_cost": 1}')
    rc, _, err = replay(capsys, trace_path, "--compare", "current", "--seeds", "1", "--costs", costs)
    assert rc == 2 and "no_such_cost" in err


def test_comparing_policies_the_trace_cannot_inform_says_so(capsys, tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    with t.fault(0x1000):
        t.run(500)
    rc, out, _ = replay(capsys, b.write(tmp_path / "t"), "--compare", "2.6.39", "current", "--seeds", "1")
    assert rc == 0
    assert "differ in mmu_gather policy but the trace has no gather" in out
    assert "differ for i_mmap_rwsem but the trace has no i_mmap_rwsem activity" in out


def test_a_lone_wait_does_not_silence_the_note_that_the_difference_barely_shows(capsys, tmp_path):
    """One contended i_mmap_rwsem acquisition is all tier 1 saw of the class: the 2.6.39 vs current
    difference can show in that one alone (it used to drop the note), and the report says so with
    the count."""
    b = TraceBuilder()
    t = b.thread(1)
    with t.syscall("munmap"), t.mmap_lock("write"), t.lock("i_mmap_rwsem", FILE_A, wait=500):
        t.run(300)
    rc, out, _ = replay(capsys, b.write(tmp_path / "t"), "--compare", "2.6.39", "current", "--seeds", "1")
    assert rc == 0
    assert "differ for i_mmap_rwsem but the trace has only 1 i_mmap_rwsem acquisition(s)" in out
    assert "differ for anon_vma but the trace has no anon_vma activity" in out


def test_progress_is_silent_for_short_batches_and_reports_long_ones():
    import io

    from replay.batch import Progress

    quiet = io.StringIO()
    p = Progress(4, stream=quiet)
    p.update(1, 0.5)
    p.close()
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    p = Progress(4, stream=loud, delay_s=0.0)
    p.update(1, 0.5)
    p.update(1, 0.7)  # not a terminal: no new line until a run finishes (or 10 s pass)
    p.update(4, 0.0)
    lines = loud.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("mmreplay replay: 1/4 runs done,  37.5%")
    assert lines[1].startswith("mmreplay replay: 4/4 runs done, 100.0%")


def test_a_tier2_trace_has_nothing_to_flag(capsys, tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    with t.syscall("munmap"), t.mmap_lock("write"), t.lock("i_mmap_rwsem", FILE_A, wait=300):
        t.run(400)
    rc, out, _ = replay(capsys, b.write(tmp_path / "t", tier=2), "--compare", "2.6.39", "current", "--seeds", "1")
    assert rc == 0 and "†" not in out and "derived" not in out


@pytest.mark.parametrize("value, metric, text", [
    (1_500, "wait_p99_ns:i_mmap_rwsem", "1.5 µs"), (2.5e9, "makespan_ns", "2.5 s"), (870, "spin_cpu_ns", "870 ns"),
    (-360_000.4, "context_switches", "-360,000"), (4.25, "waiters_mean:mmap_lock", "4.25"), (None, "x_ns", "-"),
])
def test_figures_are_printed_in_readable_units(value, metric, text):
    from replay.cli.replay import fmt

    assert fmt(value, metric) == text


def test_unmeasured_faults_are_explained(capsys, tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    for _ in range(3):
        with t.fault(0x1000, vma_lock=True):
            t.run(300)
    with t.fault(0x2000):
        t.run(300)
    rc, out, _ = replay(capsys, b.write(tmp_path / "t"), "--compare", "current", "--seeds", "1")
    assert rc == 0 and "3 faults have no measured end" in out and "covers the 1 measured ones" in out


def test_missing_optional_tables_are_reported_not_fatal(capsys, tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    with t.syscall("munmap"), t.mmap_lock("write"):
        t.run(400)
    t.sleep(1_000)
    path = b.write(tmp_path / "t", omit=("sched_switch", "page_free_batches"))
    rc, out, _ = replay(capsys, path, "--compare", "current", "--seeds", "1")
    assert rc == 0
    assert "no sched_switch table: all gaps taken as on-CPU think time" in out
    assert "no gathers or page_free_batches" in out


def test_calibration_and_perturbation_are_applied_and_reported(capsys, trace_path):
    rc, out, _ = replay(capsys, trace_path, "--compare", "current", "--seeds", "2", "--calibrate", "--perturb", "0.3",
                        "--json")
    assert rc == 0
    doc = json.loads(out)
    assert doc["perturb"] == 0.3
    assert any(n.startswith("wakeup_ns") for n in doc["calibration"])
    makespan = [s for s in doc["summary"] if s["metric"] == "makespan_ns"][0]
    assert makespan["sd"] > 0  # perturbed service times differ between seeds


def test_a_trace_too_large_for_the_memory_limit_is_refused_up_front(capsys, trace_path):
    """The estimate (rows x measured bytes per row) against --max-memory: one line naming the limit,
    before anything is reconstructed; a limit it fits in replays."""
    rows = sum(Trace.open(trace_path).rows(t) for t in Trace.open(trace_path).tables)
    rc, out, err = replay(capsys, trace_path, "--seeds", "1", "--max-memory", "64M")
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"replaying {rows:,} rows needs about" in err and "64 MiB limit (--max-memory)" in err
    rc, out, err = replay(capsys, trace_path, "--seeds", "1", "--max-memory", "1G")
    assert rc == 0, err


def test_the_memory_available_is_the_default_limit(capsys, trace_path, monkeypatch):
    from replay.cli import replay as cli

    monkeypatch.setattr(cli, "available_memory", lambda: (100 << 20, "MemAvailable"))
    rc, out, err = replay(capsys, trace_path, "--seeds", "1")
    assert rc != 0 and "more than the 100 MiB limit (MemAvailable)" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(cli, "available_memory", lambda: None)  # not known: no refusal
    assert replay(capsys, trace_path, "--seeds", "1")[0] == 0


@pytest.mark.parametrize("size", ["x", "-1G", "0", "1.5Q"])
def test_nonsense_memory_limits_are_usage_errors(capsys, trace_path, size):
    rc, out, err = replay(capsys, trace_path, f"--max-memory={size}")
    assert rc == 2 and "--max-memory" in err and len(err.strip().splitlines()) == 1


def test_available_memory_reads_this_machine():
    from replay.cli.options import parse_size
    from replay.cli.replay import available_memory

    got = available_memory()
    assert got is not None and got[0] > 0
    assert parse_size("1.5G") == 3 << 29 and parse_size("512M") == 512 << 20 and parse_size("4096") == 4096


def test_the_memory_estimate_follows_the_reconstruction_the_replay_takes():
    """Emitted segments need a third of the op objects' bytes per row: a limit between the two estimates
    lets the emitted replay through and refuses the one that builds op objects (--interference,
    --scale-tasks above 1)."""
    from replay.cli.replay import REPLAY_BASE_BYTES, REPLAY_BYTES_PER_ROW, REPLAY_BYTES_PER_ROW_EMITTED, check_memory
    from replay.errors import UsageError

    class Big:
        path, tables = "T", ("lock_holds",)

        def rows(self, table):
            return 3_000_000

    limit = REPLAY_BASE_BYTES + 3_000_000 * (REPLAY_BYTES_PER_ROW_EMITTED + REPLAY_BYTES_PER_ROW) // 2
    check_memory(Big(), 1.0, limit, emit=True)
    with pytest.raises(UsageError, match=f"{REPLAY_BYTES_PER_ROW} B per row"):
        check_memory(Big(), 1.0, limit, emit=False)
