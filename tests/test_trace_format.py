"""The trace format contract: every table round-trips, bad input is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.cli.main import main
from replay.errors import MissingTableError, TraceError
from replay.trace import TABLES, Probe, Trace, TraceWriter, write_trace
from replay.trace.docgen import DOC, regenerate
from replay.trace.repair import repair
from replay.trace.schema import Column, Table

_INT_RANGES = {
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint64": (0, 2**64 - 1),
    "uint32": (0, 2**32 - 1),
}


def column_values(col: Column, n: int) -> st.SearchStrategy:
    """A strategy for n valid values of one column."""
    t = col.type
    if col.is_enum:
        elem = st.sampled_from(col.values)
    elif pa.types.is_boolean(t):
        elem = st.booleans()
    elif pa.types.is_string(t):
        elem = st.text(max_size=20)
    elif pa.types.is_list(t):
        elem = st.lists(st.integers(0, 2**64 - 1), max_size=8)
    else:
        lo, hi = _INT_RANGES[str(t)]
        elem = st.integers(lo, hi)
    if col.nullable:
        elem = st.none() | elem
    return st.lists(elem, min_size=n, max_size=n)


@st.composite
def table_rows(draw: st.DrawFn, table: Table) -> dict[str, list]:
    n = draw(st.integers(0, 30))
    return {c.name: draw(column_values(c, n)) for c in table.columns}


def _expected(table: Table, rows: dict[str, list]) -> pl.DataFrame:
    return pl.DataFrame(
        {c.name: pl.Series(c.name, rows[c.name], dtype=pl.Enum(c.values)) if c.is_enum else rows[c.name]
         for c in table.columns},
        schema_overrides={c.name: _pl_type(c) for c in table.columns if not c.is_enum},
    )


def _pl_type(c: Column) -> pl.DataType:
    return pl.from_arrow(pa.array([], c.type)).dtype


@pytest.mark.parametrize("table", [t for t in TABLES if t.kind == "trace"], ids=lambda t: t.name)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_table_round_trips_through_writer_and_reader(tmp_path_factory, table: Table, data) -> None:
    chunks = data.draw(st.lists(table_rows(table), min_size=1, max_size=3))
    path = tmp_path_factory.mktemp("rt") / "trace"
    with TraceWriter(path, source="synthetic") as w:
        for rows in chunks:
            w.write(table.name, rows)
    trace = Trace.open(path)
    got = trace.read(table.name)
    want = pl.concat([_expected(table, rows) for rows in chunks])
    assert got.equals(want), (got, want)
    assert trace.rows(table.name) == sum(len(rows[table.columns[0].name]) for rows in chunks)


def _faults(n: int, start: int = 0) -> dict[str, np.ndarray]:
    idx = np.arange(start, start + n)
    return dict(
        ts=idx * 1000, seq=idx, cpu=np.zeros(n, np.int32), pid=np.full(n, 7, np.int32),
        tid=np.full(n, 8, np.int32), address=idx.astype(np.uint64), ip=np.zeros(n, np.uint64),
        error_code=np.full(n, 6, np.uint32),
    )


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    path = tmp_path / "t"
    write_trace(path, {"page_faults": _faults(100), "tasks": {"tid": [8], "pid": [7], "comm": ["faulter"]}},
                probes=[Probe("page_fault_user", 1, events=100, lost=3)], source="synthetic")
    return path


def info_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `mmreplay info`, assert it failed with exit 2 and one line; return that line."""
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmreplay: error: "), err
    return err


def test_lz4_compressed_tables_read_back(tmp_path: Path) -> None:
    path = tmp_path / "c"
    write_trace(path, {"page_faults": _faults(1000)}, compression="lz4")
    t = Trace.open(path)
    assert t.manifest.tables["page_faults"].compression == "lz4"
    assert t.read("page_faults")["address"].sum() == sum(range(1000))


def test_enum_values_outside_the_vocabulary_are_refused(tmp_path: Path) -> None:
    rows = {c.name: [0] for c in next(t for t in TABLES if t.name == "tlb_flushes").columns}
    rows["reason"] = ["TLB_FLUSH_SOMETIMES"]
    with TraceWriter(tmp_path / "e") as w, pytest.raises(ValueError, match="not one of"):
        w.write("tlb_flushes", rows)


def test_writer_refuses_to_overwrite_without_force(trace_dir: Path) -> None:
    with pytest.raises(TraceError, match="use --force"):
        TraceWriter(trace_dir)
    TraceWriter(trace_dir, force=True).close()
    assert Trace.open(trace_dir).tables == []


def test_force_never_deletes_a_directory_that_is_not_a_trace(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(TraceError, match="holds no trace"):
        TraceWriter(tmp_path, force=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_missing_directory(tmp_path: Path, capsys) -> None:
    assert "no such trace directory" in info_error(tmp_path / "nope", capsys)


def test_missing_manifest(tmp_path: Path, capsys) -> None:
    assert "no manifest.json" in info_error(tmp_path, capsys)


def test_corrupt_manifest(trace_dir: Path, capsys) -> None:
    (trace_dir / "manifest.json").write_text('{"format": "mmreplay-trace", "version": 1, ')
    assert "manifest.json: corrupt manifest" in info_error(trace_dir, capsys)


def test_manifest_with_malformed_fields(trace_dir: Path, capsys) -> None:
    m = json.loads((trace_dir / "manifest.json").read_text())
    m["probes"] = [{"name": "x", "tier": 1, "colour": "blue"}]
    (trace_dir / "manifest.json").write_text(json.dumps(m))
    assert "malformed field" in info_error(trace_dir, capsys)


def test_unknown_format_version(trace_dir: Path, capsys) -> None:
    m = json.loads((trace_dir / "manifest.json").read_text())
    m["version"] = 99
    (trace_dir / "manifest.json").write_text(json.dumps(m))
    assert "version 99 is not supported" in info_error(trace_dir, capsys)


def test_truncated_table_file(trace_dir: Path, capsys) -> None:
    f = trace_dir / "page_faults.arrow"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    err = info_error(trace_dir, capsys)
    assert "page_faults.arrow: not a valid Arrow IPC file" in err


def test_table_file_that_is_not_arrow(trace_dir: Path, capsys) -> None:
    (trace_dir / "page_faults.arrow").write_text("ts,seq\n1,2\n")
    assert "page_faults.arrow: not a valid Arrow IPC file" in info_error(trace_dir, capsys)


def test_missing_table_file(trace_dir: Path, capsys) -> None:
    (trace_dir / "tasks.arrow").unlink()
    assert "tasks.arrow: table file for 'tasks' is missing" in info_error(trace_dir, capsys)


def test_wrong_column_type(trace_dir: Path, capsys) -> None:
    t = pa.table({"tid": pa.array(["8"]), "pid": pa.array([7], pa.int32()), "comm": ["faulter"]})
    with pa.ipc.new_file(str(trace_dir / "tasks.arrow"), t.schema) as w:
        w.write_table(t)
    assert "column 'tid' has type string, expected Int32" in info_error(trace_dir, capsys)


def test_missing_column(trace_dir: Path, capsys) -> None:
    t = pa.table({"tid": pa.array([8], pa.int32()), "comm": ["faulter"]})
    with pa.ipc.new_file(str(trace_dir / "tasks.arrow"), t.schema) as w:
        w.write_table(t)
    assert "lacks column 'pid'" in info_error(trace_dir, capsys)


def test_rows_disagreeing_with_manifest(trace_dir: Path, capsys) -> None:
    m = json.loads((trace_dir / "manifest.json").read_text())
    m["tables"]["page_faults"]["rows"] = 101
    (trace_dir / "manifest.json").write_text(json.dumps(m))
    assert "holds 100 rows but the manifest says 101" in info_error(trace_dir, capsys)


def test_missing_table_names_the_probe_that_fills_it(trace_dir: Path) -> None:
    expected = "no .gathers. table, needed for the percpu policy; it is filled by tier 2"
    with pytest.raises(MissingTableError, match=expected):
        Trace.open(trace_dir).require("gathers", "the percpu policy")


def test_info_summarizes_manifest_rows_and_lost_events(trace_dir: Path, capsys) -> None:
    assert main(["info", str(trace_dir)]) == 0
    out = capsys.readouterr().out
    assert "mmreplay-trace 1.2 (trace, synthetic)" in out
    assert "lost       3 events" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["page_faults"][0] == "100" and rows["tasks"][0] == "1"
    assert rows["page_fault_user"][:4] == ["1", "recorded", "100", "3"]  # tier, status, events, lost


def test_info_shows_the_probe_cost_the_kernel_measured(tmp_path: Path, capsys) -> None:
    path = tmp_path / "t"
    cost = {"exceptions:page_fault_user": {"runs": 100, "run_ns": 25_000},
            "sched:sched_switch": {"runs": 10, "run_ns": 4_000}, "bogus": {"runs": "many"}}
    write_trace(path, {"page_faults": _faults(100)}, extra={"probe_cost": cost})
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("probe cost"))
    assert lines[at + 1].split() == ["exceptions:page_fault_user", "100", "0.025", "ms", "250", "ns"]
    assert lines[at + 2].split() == ["sched:sched_switch", "10", "0.004", "ms", "400", "ns"]
    assert lines[at + 3] == ""  # the malformed entry is left out


def test_info_json_is_machine_readable(trace_dir: Path, capsys) -> None:
    assert main(["info", str(trace_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["tables"]["page_faults"]["rows"] == 100
    assert s["lost_events"] == 3
    assert s["start_ns"] == 0 and s["end_ns"] == 99_000


def test_interrupted_recording_is_refused_then_repaired_without_losing_chunks(tmp_path: Path) -> None:
    path = tmp_path / "killed"
    # A child process writes three chunks and dies without closing: the files have no footer.
    code = (
        "import os, numpy as np\n"
        "from replay.trace import TraceWriter\n"
        f"from tests.test_trace_format import _faults\n"
        f"w = TraceWriter({str(path)!r})\n"
        "for k in range(3): w.write('page_faults', _faults(1000, k * 1000))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    with pytest.raises(TraceError, match="not finalized.*mmreplay repair"):
        Trace.open(path)
    [r] = repair(path)
    assert (r.table, r.rows, r.action) == ("page_faults", 3000, "rebuilt footer")
    t = Trace.open(path)
    assert t.manifest.extra["repaired"] is True
    assert t.read("page_faults")["seq"].to_list() == list(range(3000))


def test_trace_format_doc_matches_the_schema() -> None:
    text = DOC.read_text()
    assert regenerate(text) == text, "docs/TRACE_FORMAT.md is stale: run python -m replay.trace.docgen"
