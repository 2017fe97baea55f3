"""`mmreplay sweep`: a grid of replays into one results table, locally or on Dask, failures per cell.

Every cell's row holds the metrics of the same replay run alone; the Dask
path (a LocalCluster here) writes the same table as local processes; a cell
that fails is reported with its coordinates and the finished cells are kept;
the output directory is refused when it is not a sweep's to write.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from replay.cli.main import main
from replay.sweep import VOLATILE_COLUMNS, Cell, SweepSettings, grid, run_cell, run_local

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_traces"
TRACES = [str(SAMPLES / "page_fault1_threads"), str(SAMPLES / "mmap-file")]
GRID = ["--compare", "2.6.39", "current", "--cpus", "2,3", "--seeds", "2"]


def _sweep(capsys, out: Path, *args: str) -> tuple[int, str, str]:
    rc = main(["sweep", *map(str, args), "-o", str(out)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _table(out: Path):
    return pq.read_table(out / "results.parquet")


def test_each_cell_holds_the_metrics_of_its_replay_run_alone(capsys, tmp_path):
    from replay.batch import RunSpec, Settings, run_one
    from replay.cli.replay import preempt_default
    from replay.sim.costs import Costs
    from replay.trace.reader import Trace
    from replay.workload import reconstruct

    rc, out, _ = _sweep(capsys, tmp_path / "s", *TRACES, *GRID, "--jobs", "2")
    assert rc == 0 and "16/16 cells finished, 0 failed" in out
    rows = _table(tmp_path / "s").to_pylist()
    assert [(r["trace"], r["cpus"], r["policy_set"], r["seed"]) for r in rows] == [
        (t, c, p, s) for t in TRACES for c in (2, 3) for p in ("2.6.39", "current") for s in (0, 1)]
    for row in rows[::3]:
        trace = Trace.open(row["trace"])
        w = reconstruct(trace, cpus=row["cpus"])
        settings = Settings(cpus=row["cpus"], preempt=preempt_default(trace.manifest.host.preempt_model)[0],
                            mode="closed", costs=Costs(), keep_tables=False)
        alone = run_one(w, RunSpec(row["policy_set"], row["seed"]), settings).metrics
        assert alone and {k: row[k] for k in alone} == alone
        assert row["status"] == "ok" and row["error"] is None and row["threads"] == len(w.threads)
    summary = (tmp_path / "s" / "summary.txt").read_text()
    assert "current - 2.6.39: makespan_ns" in summary and pq.read_table(tmp_path / "s" / "summary.parquet").num_rows


def test_a_dask_cluster_gives_the_table_local_processes_give(capsys, tmp_path):
    distributed = pytest.importorskip("distributed")
    rc, _, _ = _sweep(capsys, tmp_path / "local", *TRACES, *GRID, "--jobs", "2")
    assert rc == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        rc, out, _ = _sweep(capsys, tmp_path / "dask", *TRACES, *GRID, "--scheduler", lc.scheduler_address)
    assert rc == 0 and "16/16 cells finished, 0 failed" in out
    local, dask = (_table(tmp_path / d).drop_columns(list(VOLATILE_COLUMNS)) for d in ("local", "dask"))
    assert local.num_rows == 16 and dask.equals(local)


def test_an_unreachable_scheduler_is_a_one_line_error(capsys, tmp_path):
    pytest.importorskip("distributed")
    rc, _, err = _sweep(capsys, tmp_path / "s", TRACES[0], "--seeds", "1", "--scheduler", "tcp://127.0.0.1:9",
                        "--retries", "0")
    assert rc == 2 and err.startswith("mmreplay: error: cannot reach the Dask scheduler") and len(err.splitlines()) == 1


def test_a_bad_trace_fails_its_cells_with_their_coordinates_and_the_others_are_kept(capsys, tmp_path):
    bad = tmp_path / "cut"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    rc, out, err = _sweep(capsys, tmp_path / "s", TRACES[0], bad, "--compare", "current", "--cpus", "2",
                          "--seeds", "2", "--jobs", "2")
    assert rc == 1 and "4/4 cells finished, 2 failed" in out
    failed = [ln for ln in err.splitlines() if "cell failed" in ln]
    assert len(failed) == 2 and all(f"{bad} cpus=2 scale-tasks=1 current seed" in ln for ln in failed)
    rows = _table(tmp_path / "s").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[0]["makespan_ns"] > 0 and rows[2]["makespan_ns"] is None and str(bad) in rows[2]["error"]


def dies_on_seed_1(cell: Cell, settings: SweepSettings) -> dict:
    """run_cell, except that the worker running seed 1 of 'current' dies as an OOM kill would end it."""
    if cell.seed == 1 and cell.policy_set == "current":
        os._exit(137)
    return run_cell(cell, settings)


@pytest.mark.parametrize("retries", [0, 1])
def test_a_cell_that_kills_its_worker_is_retried_then_reported_and_only_it_is_blamed(retries):
    cells = grid(TRACES[:1], [2], [1.0], ["2.6.39", "current"], 3)
    rows: dict[int, dict] = {}
    run_local(cells, SweepSettings(sets=("2.6.39", "current")), 2, retries, rows.__setitem__, fn=dies_on_seed_1)
    assert sorted(rows) == list(range(6))
    bad = [i for i, c in enumerate(cells) if c.seed == 1 and c.policy_set == "current"]
    assert [i for i in rows if rows[i]["status"] != "ok"] == bad
    assert "worker process died" in rows[bad[0]]["error"] and rows[bad[0]]["attempts"] == retries + 1
    reference = {i: run_cell(c, SweepSettings(sets=("2.6.39", "current"))) for i, c in enumerate(cells) if i not in bad}
    assert all(rows[i]["metrics"] == reference[i]["metrics"] for i in reference)


def test_the_output_directory_must_be_new_empty_or_an_earlier_sweeps_with_force(capsys, tmp_path):
    args = (TRACES[0], "--compare", "current", "--seeds", "1", "--jobs", "1")
    out = tmp_path / "s"
    assert _sweep(capsys, out, *args)[0] == 0
    rc, _, err = _sweep(capsys, out, *args)
    assert rc == 2 and "not empty; use --force" in err
    assert _sweep(capsys, out, *args, "--force")[0] == 0
    (out / "notes.txt").write_text("mine")
    rc, _, err = _sweep(capsys, out, *args, "--force")
    assert rc == 2 and "notes.txt, which mmreplay sweep did not write" in err and (out / "notes.txt").exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    rc, _, err = _sweep(capsys, link, *args)
    assert rc == 2 and "symbolic link" in err and not any((tmp_path / "elsewhere").iterdir())
    rc, _, err = _sweep(capsys, Path(TRACES[0]), *args, "--force")
    assert rc == 2 and "is the trace" in err


@pytest.mark.parametrize("args, message", [
    (["--cpus", "0"], "--cpus: '0' is not an integer from 1 to"),
    (["--cpus", "2,x"], "--cpus needs an integer from 1 to"),
    (["--scale-tasks", "nan"], "--scale-tasks: 'nan' is not a number above 0"),
    (["--scale-tasks", "1,1"], "--scale-tasks: 1 given twice"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--compare", "current", "bogus"], "bogus"),
    (["--engine", "fortran"], "unknown --engine"),
])
def test_nonsense_options_are_one_line_errors_and_write_nothing(capsys, tmp_path, args, message):
    rc, _, err = _sweep(capsys, tmp_path / "s", TRACES[0], *args)
    assert rc == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "s").exists()


def raises_on_current_seed_0(cell: Cell, settings: SweepSettings) -> dict:
    """run_cell with a bug that strikes one cell."""
    if cell.seed == 0 and cell.policy_set == "current":
        raise RuntimeError("a bug strikes")
    return run_cell(cell, settings)


def test_a_cell_that_raises_outside_the_replay_is_reported_and_the_sweep_goes_on():
    cells = grid(TRACES[:1], [2], [1.0], ["2.6.39", "current"], 2)
    rows: dict[int, dict] = {}
    run_local(cells, SweepSettings(sets=("2.6.39", "current")), 2, 1, rows.__setitem__, fn=raises_on_current_seed_0)
    assert [rows[i]["status"] for i in range(4)] == ["ok", "ok", "failed", "ok"]
    assert rows[2]["error"] == "RuntimeError: a bug strikes"
