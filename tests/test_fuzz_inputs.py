"""Every bad input is one line on stderr and exit 2: no traceback, no hang (hypothesis, fixed seed).

Three families of mutation, each run through the commands a user would run on the result:

* manifests: a JSON value anywhere replaced (wrong type, huge, negative, NaN, nested deep), a key
  dropped, or the bytes damaged (bits flipped, cut short, not UTF-8);
* tables: a table file's bytes flipped, cut, grown with garbage, or the file replaced by an empty
  file, a FIFO or /dev/zero;
* option values: numbers, NaN/inf, huge and negative values, words and unicode for every numeric or
  enumerated option of record, replay, synth, query, report and export.

Unexpected exceptions surface with their traceback (MMREPLAY_DEBUG=1): the test fails on any of them.
Every case runs under an alarm: a hang fails it. The seed is fixed (derandomize), so CI sees the same
cases every run; about 2,100 cases take well under a minute here.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.cli.main import DEBUG_ENV
from tests import analytics_fixtures as fx
from tests.inprocess import run_main

CASE_SECONDS = 10  # one case taking longer is a hang
CASES = {"manifest values": 350, "manifest bytes": 200, "table files": 600, "option values": 900}
OUTCOMES: collections.Counter[int] = collections.Counter()  # exit statuses seen, over the whole module
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def run(argv: list[str]) -> tuple[int, str]:
    """main(argv) in-process; (exit status, stderr). Asserts the bad-input contract."""
    rc, text = run_main(argv, CASE_SECONDS)
    OUTCOMES[rc] += 1
    assert rc in (0, 2), (argv, rc, text)
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    if rc == 2:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("mmreplay: note:")]
        assert len(lines) == 1, (argv, text)
    return rc, text


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_recorded(tmp_path_factory.mktemp("fuzz") / "trace")


@pytest.fixture(autouse=True)
def debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")


def _copy(pristine: Path, where: Path) -> Path:
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(pristine, where)
    return where


READERS = {
    "info": ["info"],
    "waits": ["query", "{t}", "waits", "--by", "caller"],
    "sched": ["query", "{t}", "sched_latency"],
    "sql": ["query", "{t}", "--sql", "SELECT count(*) AS n, max(dur) AS m FROM lock_waits"],
}


def _readers(t: Path, data) -> None:
    """What a user runs on a trace: info or a query (one per case, drawn), then repair and info."""
    reader = READERS[data.draw(st.sampled_from(sorted(READERS)), label="reader")]
    run([a.format(t=t) for a in reader] + ([str(t)] if reader == ["info"] else []))
    rc, _ = run(["repair", str(t)])
    if rc == 0:
        run(["info", str(t), "--json"])


# -- manifests --------------------------------------------------------------------------------------

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**62, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "trace", "results", "mmreplay-trace", "../../etc/passwd", "x" * 300, "/dev/zero"]),
)
JSON_VALUE = st.recursive(JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                              st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                          max_leaves=6)


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, (*prefix, i))


def _set(d, path, value, delete):
    for k in path[:-1]:
        d = d[k]
    if delete and isinstance(d, dict):
        del d[path[-1]]
    else:
        d[path[-1]] = value


@settings(FUZZ, max_examples=CASES["manifest values"])
@given(data=st.data())
def test_mutated_manifest_values(pristine: Path, tmp_path_factory, data) -> None:
    t = _copy(pristine, tmp_path_factory.getbasetemp() / "fuzz-manifest")
    m = json.loads((t / "manifest.json").read_text())
    paths = [p for p in _paths(m) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    _set(m, path, data.draw(JSON_VALUE, label="value"), data.draw(st.booleans(), label="delete"))
    (t / "manifest.json").write_text(json.dumps(m))
    _readers(t, data)


@settings(FUZZ, max_examples=CASES["manifest bytes"])
@given(data=st.data())
def test_damaged_manifest_bytes(pristine: Path, tmp_path_factory, data) -> None:
    t = _copy(pristine, tmp_path_factory.getbasetemp() / "fuzz-manifest-bytes")
    raw = bytearray((t / "manifest.json").read_bytes())
    how = data.draw(st.sampled_from(["flip", "cut", "latin1", "nest", "huge-cpus"]), label="how")
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif how == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    elif how == "latin1":
        raw = raw.replace(b'"hostname": "', b'"hostname": "\xff\xfe')
    elif how == "nest":
        depth = data.draw(st.integers(100, 100_000), label="depth")
        raw = raw.replace(b'"extra": {', b'"extra": {"deep": ' + b"[" * depth + b"]" * depth + b", ")
    else:
        cpus = data.draw(st.sampled_from(["1e300", "99999999999", "-1", '"2"', "2.5", "NaN", "Infinity"]))
        m = raw.decode()
        raw = bytearray(m.replace('"cpus": ', f'"cpus": {cpus}, "x_cpus": ', 1).encode())
    (t / "manifest.json").write_bytes(bytes(raw))
    _readers(t, data)


# -- tables -----------------------------------------------------------------------------------------

TABLE_FILES = ["lock_waits.arrow", "lock_holds.arrow", "stacks.arrow", "symbols.arrow", "tasks.arrow",
               "sched_switch.arrow", "sched_wakeup.arrow"]


@settings(FUZZ, max_examples=CASES["table files"])
@given(data=st.data())
def test_damaged_table_files(pristine: Path, tmp_path_factory, data) -> None:
    t = _copy(pristine, tmp_path_factory.getbasetemp() / "fuzz-table")
    name = data.draw(st.sampled_from(TABLE_FILES), label="table")
    f = t / name
    raw = bytearray(f.read_bytes())
    how = data.draw(st.sampled_from(["flip", "flip", "flip", "cut", "grow", "empty", "fifo", "zero", "dir"]),
                    label="how")
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        f.write_bytes(bytes(raw))
    elif how == "cut":
        f.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]))
    elif how == "grow":
        f.write_bytes(bytes(raw) + data.draw(st.binary(min_size=1, max_size=64), label="garbage"))
    elif how == "empty":
        f.write_bytes(b"")
    elif how == "fifo":
        f.unlink()
        os.mkfifo(f)
    elif how == "zero":
        f.unlink()
        f.symlink_to("/dev/zero")
    else:
        f.unlink()
        f.mkdir()
    _readers(t, data)


# -- option values ----------------------------------------------------------------------------------

WORDS = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e8", "1e30", "1e308", "-1", "0", "-0", "0x10", "1_000",
                         "", " ", "1,2", "3.5", "9" * 40, "abc", "é", "\u0661", "--", "-", "none", "lazy", "full"])
VALUES = st.one_of(WORDS, st.integers(-2**70, 2**70).map(str), st.floats().map(repr), st.text(max_size=8))

OPTIONS = {
    "replay": ["--cpus", "--scale-tasks", "--seeds", "--jobs", "--perturb", "--preempt", "--mode", "--engine",
               "--compare", "--policy"],
    "synth": ["--tasks", "--cpus", "--seconds", "--seed", "--region", "--files", "--fault-lock", "--preempt",
              "--fit-kind"],
    "record": ["--duration", "--tasks", "--page-free-gap-us", "--pid", "--tid", "--comm", "--probes",
               "--compression", "--workload"],
    "query": ["--by", "--limit"],
}


@settings(FUZZ, max_examples=CASES["option values"])
@given(data=st.data())
def test_option_values(pristine: Path, tmp_path: Path, data) -> None:
    cmd = data.draw(st.sampled_from(sorted(OPTIONS)), label="command")
    opt = data.draw(st.sampled_from(OPTIONS[cmd]), label="option")
    value = data.draw(VALUES, label="value")
    if cmd == "replay":  # a trace that does not exist: options are checked first, nothing is replayed
        argv = ["replay", str(tmp_path / "none"), f"{opt}={value}"]
    elif cmd == "synth":
        argv = ["synth", "mmap1_threads", "-o", str(tmp_path / "out"), f"{opt}={value}"]
        if opt in ("--tasks", "--seconds"):
            return _synth_refused_only(argv)
        argv += ["--seconds", "0.001", "--tasks", "1"]
    elif cmd == "record":  # -o names a file: refused before anything is set up, whatever the options
        (tmp_path / "file").write_text("x")
        argv = ["record", "-o", str(tmp_path / "file"), f"{opt}={value}"]
    else:
        argv = ["query", str(pristine), "waits", f"{opt}={value}"]
    run(argv)


def _synth_refused_only(argv: list[str]) -> None:
    """A valid --tasks or --seconds would synthesize a big trace (slow): only values synth refuses are run."""
    from replay.cli.synth import _int, _seconds
    from replay.errors import UsageError

    opt, value = argv[4].split("=", 1)
    try:
        (_seconds(value) if opt == "--seconds" else _int("tasks", value, 1, 4096))
    except UsageError:
        run(argv)


def test_the_suite_runs_at_least_2000_cases_and_they_hit_both_outcomes() -> None:
    assert sum(CASES.values()) >= 2000
    if sum(OUTCOMES.values()) >= 2000:  # the cases above ran in this session: they exercised both paths
        assert OUTCOMES[2] > 500 and OUTCOMES[0] > 500, OUTCOMES
