"""The commands past the loader on mutated traces: one line on stderr, exit 0, 2 or 3, no traceback, no hang.

tests/test_fuzz_inputs.py damages bytes and option values; this fuzz keeps the files well-formed Arrow
and changes what they say, which the loader alone cannot refuse and only the commands meet: table cells
set to null, to the extremes of their type, to zero or negative durations; enum indices out of the
vocabulary and dictionaries with unknown words; rows shuffled (timestamps out of order), duplicated or
dropped; tids and pids that never appear in `tasks`; a table emptied; manifest values replaced (as in
test_fuzz_inputs). Each case then runs one of `replay`, `report`, `export` (both formats), `query` (a
named query or SQL) and `info`, drawn, on the mutated trace.

The contract: exit 0 or 2 (3 only for an InconsistencyError: the simulator caught itself contradicting
the trace, one line naming the thread), one line on stderr, no traceback (MMREPLAY_DEBUG=1 lets an
unexpected exception through: it fails the case), no hang (an alarm per case). Fixed seed (derandomize),
at most CASES cases, and a time budget: cases past BUDGET_S are not run (the count is printed), so a slow
machine runs fewer rather than stretching CI.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.cli.main import DEBUG_ENV, main
from replay.trace.schema import TABLES_BY_NAME
from tests import analytics_fixtures as fx
from tests.inprocess import run_main
from tests.test_fuzz_inputs import JSON_VALUE, _paths, _set

ROOT = Path(__file__).resolve().parents[1]
CASES = 400
BUDGET_S = 70.0  # wall time for all cases; measured 0.2 s per case on this 2-CPU machine (400 in 80 s)
CASE_SECONDS = 20  # one case taking longer is a hang (a replay of the small traces takes < 2 s)
REAL = ROOT / "sample_traces/page_fault1_threads"  # a real recording, next to the hand-made fixture
RAN: collections.Counter[str] = collections.Counter()  # outcome per command, over the module
STATE = {"start": None, "skipped": 0}
FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=CASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


PROGRESS = re.compile(r"mmreplay replay: \d+/\d+ runs done")  # replay's progress, not an error


def run(argv: list[str]) -> int:
    """main(argv) in-process under an alarm; asserts the contract and returns the exit status."""
    rc, text = run_main(argv, CASE_SECONDS)
    assert rc in (0, 2, 3), (argv, rc, text)
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    if rc == 3:
        assert "inconsisten" in text.lower() or "contradict" in text.lower(), (argv, text)
    if rc != 0:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("mmreplay: note:")
                 and not PROGRESS.match(ln)]
        assert len(lines) == 1, (argv, text)
    return rc


@pytest.fixture(autouse=True)
def debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fuzz-cli")
    return {"fixture": fx.write_recorded(d / "fixture"), "real": REAL}


# -- mutations --------------------------------------------------------------------------------------

def _extremes(t: pa.DataType) -> list[object]:
    if pa.types.is_boolean(t):
        return [True, False]
    if pa.types.is_integer(t):
        info = np.iinfo(t.to_pandas_dtype())
        return [int(info.min), int(info.max), 0, -1 if info.min < 0 else 1, 1, 2**31 - 1 if info.max > 2**31 else 7]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ["", "x" * 5000, "\x00\n\u202e", "é"]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [[], [0], [2**64 - 1] * 300]
    return [None]


def _cells(col: pa.ChunkedArray, rows: list[int], value: object) -> pa.Array:
    """``col`` with ``rows`` set to ``value`` (None: null), keeping its type."""
    arr = col.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        idx = arr.indices.to_pylist()
        for r in rows:
            idx[r] = value if value is None or isinstance(value, int) else 0
        return pa.DictionaryArray.from_arrays(pa.array(idx, arr.type.index_type), arr.dictionary, safe=False)
    vals = arr.to_pylist()
    for r in rows:
        vals[r] = value
    return pa.array(vals, arr.type)


def mutate_table(t: pa.Table, name: str, data) -> pa.Table:
    how = data.draw(st.sampled_from(["null", "extreme", "duration", "enum index", "enum word", "shuffle",
                                     "reverse ts", "duplicate", "foreign task", "empty", "slice"]), label="how")
    n = t.num_rows
    if how == "empty":
        return t.slice(0, 0)
    if how == "slice":
        a = data.draw(st.integers(0, n), label="from")
        return t.slice(a, data.draw(st.integers(0, n - a), label="len"))
    if how == "shuffle":
        perm = data.draw(st.permutations(range(n)), label="perm") if n <= 64 else \
            np.random.default_rng(data.draw(st.integers(0, 99), label="seed")).permutation(n)
        return t.take(pa.array(perm, pa.int64()))
    if how == "duplicate":
        k = data.draw(st.integers(0, n - 1), label="row")
        return pa.concat_tables([t, t.slice(k, data.draw(st.integers(1, 5), label="copies"))])
    rows = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 4)), label="rows"))
    names = t.column_names
    if how == "reverse ts" and "ts" in names:
        ts = t.column("ts").to_pylist()
        known = [v for v in ts if v is not None] or [0]
        for r in rows:
            ts[r] = data.draw(st.sampled_from([0, -1, max(known) + 10**12, min(known) - 10**9, 2**62,
                                               max(known) + 10**6, min(known) - 10**6]), label="ts")
        return t.set_column(names.index("ts"), "ts", pa.array(ts, pa.int64()))
    if how == "duration":
        cols = [c for c in names if c in ("dur", "wait", "runtime", "pages", "nr_pages", "start", "end")] or names
        c = data.draw(st.sampled_from(cols), label="column")
        ty = t.column(c).type
        if pa.types.is_signed_integer(ty):
            info = np.iinfo(ty.to_pandas_dtype())
            v = int(np.clip(data.draw(st.sampled_from([0, -1, -(2**40), 2**62, 2**63 - 1]), label="value"),
                            info.min, info.max))
        else:
            v = data.draw(st.sampled_from(_extremes(ty.index_type if pa.types.is_dictionary(ty) else ty)),
                          label="value")
        return t.set_column(names.index(c), c, _cells(t.column(c), rows, v))
    if how == "foreign task":
        cols = [c for c in names if c.endswith("tid") or c.endswith("pid") or c == "cpu" or c == "stack_id"]
        if not cols:
            return t
        c = data.draw(st.sampled_from(cols), label="column")
        v = data.draw(st.sampled_from([99999, 0, -1, 2**31 - 1, 7]), label="value")
        return t.set_column(names.index(c), c, _cells(t.column(c), rows, v))
    enums = [c for c in names if pa.types.is_dictionary(t.column(c).type)]
    if how.startswith("enum") and enums:
        c = data.draw(st.sampled_from(enums), label="column")
        col = t.column(c).combine_chunks()
        if how == "enum index":
            v = data.draw(st.sampled_from([-1, len(col.dictionary), 999, 2**15 - 1]), label="index")
            return t.set_column(names.index(c), c, _cells(t.column(c), rows, v))
        words = pa.array([*col.dictionary.to_pylist(), "NO_SUCH_WORD"], col.dictionary.type)
        idx = col.indices.to_pylist()
        for r in rows:
            idx[r] = len(words) - 1
        return t.set_column(names.index(c), c, pa.DictionaryArray.from_arrays(pa.array(idx, col.indices.type), words,
                                                                               safe=False))
    c = data.draw(st.sampled_from(names), label="column")
    ty = t.column(c).type
    value = None if how == "null" else data.draw(st.sampled_from(_extremes(
        ty.index_type if pa.types.is_dictionary(ty) else ty)), label="value")
    return t.set_column(names.index(c), c, _cells(t.column(c), rows, value))


def _write_table(d: Path, name: str, t: pa.Table) -> None:
    path = d / f"{name}.arrow"
    path.unlink()
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t)
    m = json.loads((d / "manifest.json").read_text())
    m["tables"][name]["rows"] = t.num_rows
    (d / "manifest.json").write_text(json.dumps(m))


def mutate(d: Path, data) -> None:
    m = json.loads((d / "manifest.json").read_text())
    if data.draw(st.integers(0, 9), label="manifest?") == 0:  # one case in ten: a manifest value
        paths = [p for p in _paths(m) if p and p[0] not in ("tables", "format", "version")]
        _set(m, data.draw(st.sampled_from(paths), label="path"), data.draw(JSON_VALUE, label="value"),
             data.draw(st.booleans(), label="delete"))
        (d / "manifest.json").write_text(json.dumps(m))
        return
    tables = sorted(n for n in m["tables"] if n in TABLES_BY_NAME)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        name = data.draw(st.sampled_from(tables), label="table")
        with pa.memory_map(str(d / f"{name}.arrow")) as src:
            t = pa.ipc.open_file(src).read_all()
        if t.num_rows:
            _write_table(d, name, mutate_table(t, name, data))


# -- commands ---------------------------------------------------------------------------------------

QUERIES = ["locks", "waits", "holds", "wait_hist", "stacks", "tlb", "tlb_hist", "gathers", "preempt_off",
           "preempt_summary", "sched_latency", "sched_delay", "ops"]
SQL = ["SELECT count(*) AS n, max(dur) AS m, min(ts) AS t FROM lock_waits",
       "SELECT tid, sum(dur) AS d FROM lock_holds GROUP BY tid ORDER BY d DESC",
       "SELECT lock_class, count(*) AS n FROM lock_waits GROUP BY lock_class"]
COMMANDS = {  # weight: how often a command is drawn (report draws PNGs: slower, rarer)
    "info": 2, "query": 5, "sql": 2, "export perfetto": 3, "export json": 3, "replay": 4, "report": 1,
}


def command(name: str, t: Path, out: Path, data) -> list[str]:
    if name == "info":
        return ["info", str(t)] + (["--json"] if data.draw(st.booleans(), label="json") else [])
    if name == "query":
        q = data.draw(st.sampled_from(QUERIES), label="query")
        by = data.draw(st.sampled_from([[], ["--by", "task"], ["--by", "caller"], ["--by", "cpu"]]), label="by")
        return ["query", str(t), q, *by, "--format", data.draw(st.sampled_from(["table", "csv", "json"]))]
    if name == "sql":
        return ["query", str(t), "--sql", data.draw(st.sampled_from(SQL), label="sql")]
    if name == "export perfetto":
        return ["export", str(t), "-o", str(out / "x.perfetto-trace"), "--force"]
    if name == "export json":
        return ["export", str(t), "--format", "json", "-o", str(out / "x.json"), "--force"]
    if name == "replay":
        sets = data.draw(st.sampled_from([["current"], ["as-recorded"], ["2.6.39", "current"]]), label="sets")
        return ["replay", str(t), "--seeds", "1", "--jobs", "1", "--compare", *sets,
                *data.draw(st.sampled_from([[], ["--mode", "open"], ["--preempt", "full"]]), label="mode")]
    return ["report", str(t), "-o", str(out / "r.html"), "--force"]


@settings(FUZZ)
@given(data=st.data())
def test_commands_on_mutated_traces(bases: dict[str, Path], tmp_path_factory, data) -> None:
    if STATE["start"] is None:
        STATE["start"] = time.monotonic()
    base = bases[data.draw(st.sampled_from(["fixture", "fixture", "real"]), label="base")]
    t = tmp_path_factory.getbasetemp() / "fuzz-cli-case"
    if t.exists():
        shutil.rmtree(t)
    shutil.copytree(base, t)
    out = tmp_path_factory.getbasetemp() / "fuzz-cli-out"
    out.mkdir(exist_ok=True)
    mutate(t, data)
    name = data.draw(st.sampled_from([n for n, w in COMMANDS.items() for _ in range(w)]), label="command")
    argv = command(name, t, out, data)
    if time.monotonic() - STATE["start"] > BUDGET_S:  # drawn all the same: hypothesis sees the same cases
        STATE["skipped"] += 1
        return
    rc = run(argv)
    RAN[f"{name} -> {rc}"] += 1


def test_the_fuzz_ran_every_command_and_both_outcomes() -> None:
    ran = sum(RAN.values())
    if not ran:
        pytest.skip("the fuzz did not run in this session")
    print(f"\nfuzz-cli: {ran} cases run, {STATE['skipped']} past the time budget; {dict(sorted(RAN.items()))}")
    assert ran >= 100, (ran, STATE)  # a machine too slow for 100 cases in the budget tests too little
    for name in COMMANDS:
        assert any(k.startswith(f"{name} -> ") for k in RAN), (name, RAN)
    assert any(k.endswith("-> 0") for k in RAN) and any(k.endswith("-> 2") for k in RAN), RAN


# -- what the fuzz found, as specifications ---------------------------------------------------------

def _one(tmp_path: Path, table: str, column: str, value: object) -> Path:
    t = fx.write_recorded(tmp_path / "t")
    with pa.memory_map(str(t / f"{table}.arrow")) as src:
        data = pa.ipc.open_file(src).read_all()
    _write_table(t, table, data.set_column(data.column_names.index(column), column,
                                           _cells(data.column(column), [0], value)))
    return t


def _refused(argv: list[str], capsys, *words: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_a_null_where_none_may_be_is_refused_on_open(tmp_path, capsys):
    t = _one(tmp_path, "lock_waits", "tid", None)
    _refused(["query", str(t), "waits", "--by", "task"], capsys, "lock_waits.arrow", "'tid'", "nulls")


def test_an_enum_code_outside_its_dictionary_is_refused_on_open(tmp_path, capsys):
    t = _one(tmp_path, "lock_waits", "lock_class", 999)
    _refused(["info", str(t)], capsys, "'lock_class'", "outside its dictionary")


def test_replay_refuses_a_negative_duration_and_an_event_outside_the_span(tmp_path, capsys):
    t = _one(tmp_path, "lock_holds", "dur", -5)
    _refused(["replay", str(t), "--seeds", "1"], capsys, "lock_holds.arrow", "negative duration")
    t = _one(tmp_path / "b", "gathers", "dur", 2**63 - 1)
    _refused(["replay", str(t), "--seeds", "1"], capsys, "gathers.arrow", "outside the recorded span")
