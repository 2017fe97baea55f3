"""The named queries give the numbers derivable by hand from tests/analytics_fixtures.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.analytics import queries, stats
from replay.analytics.source import Source
from replay.analytics.sql import run_sql
from replay.analytics.stats import distribution, log2_histogram
from replay.cli.main import main
from tests import analytics_fixtures as fx


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_recorded(tmp_path_factory.mktemp("q") / "trace")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, trace: Path) -> Path:
    return fx.write_results(tmp_path_factory.mktemp("q") / "results", trace=trace)


def q(path: Path, name: str, *by: str, other: Path | None = None) -> pl.DataFrame:
    src = Source.open(path)
    return queries.run(src, name, by or None, Source.open(other) if other else None)


def row(df: pl.DataFrame, **match: object) -> dict:
    hits = df.filter(*(pl.col(k) == v for k, v in match.items()))
    assert hits.height == 1, f"{match}: {hits.height} rows in\n{df}"
    return hits.row(0, named=True)


# -- locks ---------------------------------------------------------------------------------------


def test_wait_summary_by_class_gives_count_total_mean_and_nearest_rank_percentiles(trace: Path) -> None:
    df = q(trace, "waits", "class")
    assert row(df, lock_class="mmap_lock") == {
        "lock_class": "mmap_lock", "count": 100, "total_ns": 5_050_000, "mean_ns": 50_500.0,
        "min_ns": 1000, "p50_ns": 50_000, "p99_ns": 99_000, "max_ns": 100_000,
    }
    assert row(df, lock_class="anon_vma")["p50_ns"] == 500 and row(df, lock_class="anon_vma")["p99_ns"] == 2000
    assert row(df, lock_class="page_table_lock")["p50_ns"] == 200
    assert df["lock_class"].to_list() == ["mmap_lock", "page_table_lock", "anon_vma"]  # longest total first


def test_waits_by_mode_split_shared_and_exclusive_waits_from_the_flags(trace: Path) -> None:
    df = q(trace, "waits", "class", "mode")
    w = row(df, lock_class="mmap_lock", mode="write")
    r = row(df, lock_class="mmap_lock", mode="read")
    assert (w["count"], w["total_ns"], w["p50_ns"], w["p99_ns"]) == (50, 2_500_000, 49_000, 99_000)
    assert (r["count"], r["p50_ns"], r["p99_ns"]) == (50, 50_000, 100_000)


def test_waits_by_type_use_perf_lock_type_names(trace: Path) -> None:
    df = q(trace, "waits", "type")
    assert sorted(df["type"].to_list()) == ["rwsem:R", "rwsem:W", "spinlock"]
    assert row(df, type="rwsem:W")["count"] == 53


def test_caller_is_the_first_frame_outside_the_locking_primitives(trace: Path) -> None:
    df = q(trace, "waits", "caller")
    assert row(df, caller="__vm_munmap")["count"] == 50
    assert row(df, caller="do_user_addr_fault")["total_ns"] == 2_550_000
    assert row(df, caller="zap_pte_range")["count"] == 4
    assert row(df, caller="down_write")["count"] == 3  # nothing but lock frames: keep the innermost
    sites = q(trace, "waits", "site")["caller_site"].to_list()
    assert "__vm_munmap+0x30" in sites and "do_user_addr_fault+0x44" in sites


def test_sched_text_section_counts_as_locking_code_like_perf(tmp_path: Path) -> None:
    # Put __vm_munmap inside .sched.text: the caller of stack 1 moves out to the next frame.
    path = fx.write_recorded(tmp_path / "t", extra_symbols=[(fx.K + 0x1FF, "__sched_text_start"),
                                                            (fx.K + 0x2FF, "__sched_text_end")])
    callers = set(q(path, "waits", "caller")["caller"].to_list())
    assert "__vm_munmap" not in callers and "0x1234" in callers


def test_waits_by_task_carry_the_task_name(trace: Path) -> None:
    df = q(trace, "waits", "task")
    assert row(df, tid=101)["comm"] == "worker1" and row(df, tid=101)["count"] == 60
    assert row(df, tid=102)["count"] == 44


def test_locks_put_waits_and_holds_side_by_side_with_zero_counts_where_absent(trace: Path) -> None:
    df = q(trace, "locks", "class")
    m = row(df, lock_class="mmap_lock")
    assert (m["wait_count"], m["hold_count"], m["hold_total_ns"], m["hold_p50_ns"], m["hold_max_ns"]) == (
        100, 10, 550_000, 50_000, 100_000)
    i = row(df, lock_class="i_mmap_rwsem")
    assert (i["wait_count"], i["wait_total_ns"], i["wait_p50_ns"], i["hold_count"]) == (0, 0, None, 2)


def test_holds_leave_out_failed_acquisitions(trace: Path) -> None:
    assert row(q(trace, "holds", "class"), lock_class="mmap_lock")["count"] == 10


def test_locks_work_with_only_one_of_the_two_tables(tmp_path: Path) -> None:
    path = fx.write_recorded(tmp_path / "t", only=("lock_holds", "tasks"))
    m = row(q(path, "locks"), lock_class="mmap_lock")
    assert m["wait_count"] == 0 and m["hold_count"] == 10


def test_by_none_aggregates_everything(trace: Path, capsys: pytest.CaptureFixture) -> None:
    # 107 waits; the 54th smallest is mmap_lock i=48 (5 shorter anon_vma/ptl waits, plus anon_vma 2000)
    rc, out, _ = cli(capsys, str(trace), "waits", "--by", "none", "--format", "json")
    assert rc == 0 and json.loads(out) == [{"count": 107, "total_ns": 5_123_600, "mean_ns": 5_123_600 / 107,
                                            "min_ns": 100, "p50_ns": 48_000, "p99_ns": 99_000, "max_ns": 100_000}]


def test_wait_histogram_buckets_are_powers_of_two(trace: Path) -> None:
    df = q(trace, "wait_hist", "class").filter(pl.col("lock_class") == "anon_vma")
    assert df.select("bucket", "range", "count").rows() == [(8, "256-511", 2), (10, "1024-2047", 1)]


def test_stacks_rank_kernel_stacks_by_total_wait(trace: Path) -> None:
    df = q(trace, "stacks")
    assert df["stack_id"].to_list() == [2, 1, 3, 4]
    assert df.row(1, named=True)["frames"] == (
        "rwsem_down_write_slowpath+0x10 <- down_write+0x20 <- __vm_munmap+0x30 <- 0x1234")


# -- TLB, gathers, preemption, scheduling ----------------------------------------------------------


def test_tlb_summary_separates_full_flushes_from_ranged_sizes(trace: Path) -> None:
    df = q(trace, "tlb")
    local = row(df, reason="TLB_LOCAL_SHOOTDOWN")
    assert (local["flushes"], local["full"], local["total_pages"], local["p50_pages"], local["max_pages"]) == (
        4, 0, 37, 1, 33)
    remote = row(df, reason="TLB_REMOTE_SHOOTDOWN")
    assert (remote["flushes"], remote["full"], remote["ranged"], remote["max_pages"]) == (2, 1, 1, 5)
    assert row(df, reason="TLB_FLUSH_ON_TASK_SWITCH")["p50_pages"] is None


def test_tlb_histogram_has_a_row_for_full_flushes(trace: Path) -> None:
    df = q(trace, "tlb_hist")
    assert df.select("range", "count").rows() == [("1", 2), ("2-3", 1), ("4-7", 1), ("32-63", 1), ("full", 2)]


def test_gather_sizes_come_from_gather_windows(trace: Path) -> None:
    df = q(trace, "gathers", "fullmm")
    part = row(df, fullmm=False)
    assert (part["source"], part["count"], part["total_pages"], part["p50_pages"], part["max_pages"]) == (
        "gathers", 3, 518, 8, 510)
    assert row(df, fullmm=True)["flushes"] == 3


def test_gather_sizes_fall_back_to_page_free_batches(tmp_path: Path) -> None:
    df = q(fx.write_recorded(tmp_path / "t", only=("page_free_batches",)), "gathers")
    assert df.row(0, named=True) | {"mean_pages": None} == {
        "source": "page_free_batches", "count": 3, "total_pages": 534, "mean_pages": None, "min_pages": 8,
        "p50_pages": 16, "p99_pages": 510, "max_pages": 510, "max_dur_ns": 100}


def test_scheduling_latency_runs_from_first_wake_to_switch_in(trace: Path) -> None:
    df = q(trace, "sched_latency", "task")
    assert (row(df, tid=101)["count"], row(df, tid=101)["total_ns"], row(df, tid=101)["max_ns"]) == (2, 14_000, 10_000)
    assert row(df, tid=102)["total_ns"] == 2000
    all_ = q(trace, "sched_latency").row(0, named=True)
    assert (all_["count"], all_["p50_ns"], all_["max_ns"]) == (3, 4000, 10_000)


def test_preempt_off_lists_spinning_waits_longest_first(trace: Path) -> None:
    df = q(trace, "preempt_off")
    assert df["dur"].to_list() == [70_000, 300, 200, 100]
    assert set(df["source"]) == {"spin_wait"} and df["comm"][0] == "worker2"


def test_operation_latency_per_system_call(trace: Path) -> None:
    df = q(trace, "ops")
    assert (row(df, name="munmap")["count"], row(df, name="munmap")["p50_ns"]) == (3, 20_000)


# -- replay results ------------------------------------------------------------------------------


def test_results_queries_group_by_policy_set_first(results: Path) -> None:
    df = q(results, "waits", "class")
    assert df.columns[:2] == ["policy_set", "lock_class"]
    spin = row(df, policy_set="spinlock", lock_class="mmap_lock")
    assert (spin["count"], spin["p50_ns"], spin["max_ns"]) == (4, 2000, 4000)
    assert row(df, policy_set="mutex", lock_class="mmap_lock")["p50_ns"] == 10_000


def test_results_can_also_be_split_by_seed(results: Path) -> None:
    df = q(results, "waits", "class", "seed")
    assert row(df, policy_set="spinlock", lock_class="mmap_lock", seed=1)["total_ns"] == 7000


def test_results_scheduling_latency_and_preempt_off_come_from_the_simulated_tables(results: Path) -> None:
    lat = q(results, "sched_latency")
    assert row(lat, policy_set="spinlock")["p99_ns"] == 300 and row(lat, policy_set="mutex")["max_ns"] == 2000
    assert q(results, "preempt_off")["dur"].to_list() == [7000, 5000, 100]


def test_compare_joins_recorded_and_simulated_per_policy_set(results: Path, trace: Path) -> None:
    df = q(results, "compare", "class", other=trace)
    spin = row(df, metric="wait", policy_set="spinlock", lock_class="mmap_lock")
    assert (spin["rec_count"], spin["sim_count_per_seed"], spin["rec_p50_ns"], spin["sim_p50_ns"]) == (
        100, 2.0, 50_000, 2000)
    assert spin["p50_ratio"] == pytest.approx(0.04)
    # either order of the two inputs
    assert q(trace, "compare", "class", other=results).equals(df)


def test_compare_counts_runs_without_events_and_classes_never_simulated(results: Path, trace: Path) -> None:
    df = q(results, "compare", "class", other=trace)
    ptl = row(df, metric="wait", policy_set="spinlock", lock_class="page_table_lock")
    assert (ptl["rec_count"], ptl["sim_count_per_seed"], ptl["seeds"], ptl["sim_p50_ns"]) == (4, 0.0, 2, None)
    # one hold in seed 0 and none in seed 1: half a hold per run, not one
    assert row(df, metric="hold", policy_set="mutex", lock_class="mmap_lock")["sim_count_per_seed"] == 0.5


def test_results_say_how_many_holds_rest_on_the_missing_holds_model(results: Path) -> None:
    df = q(results, "locks", "class")
    assert row(df, policy_set="mutex", lock_class="mmap_lock")["hold_derived"] == 1
    assert row(df, policy_set="spinlock", lock_class="mmap_lock")["hold_derived"] == 0


def test_results_probe_latency_splits_by_what_it_waited_for(results: Path) -> None:
    df = q(results, "sched_latency", "cause")
    assert row(df, policy_set="spinlock", cause="spinlock")["max_ns"] == 200
    assert row(df, policy_set="spinlock", cause="idle")["count"] == 1


def test_results_preempt_off_sections_carry_their_cause(results: Path) -> None:
    df = q(results, "preempt_summary", "source")
    assert sorted(df.select("policy_set", "source", "max_ns").rows()) == [
        ("mutex", "ptl", 100), ("spinlock", "gather", 7000), ("spinlock", "spinlock", 5000)]


def test_results_run_delays_come_from_the_simulated_switches(results: Path) -> None:
    df = q(results, "sched_delay")  # default --by task
    assert sorted(df.select("policy_set", "tid", "count", "total_ns", "max_ns").rows()) == [
        ("mutex", 101, 1, 700, 700), ("spinlock", 101, 2, 3000, 3000), ("spinlock", 102, 1, 500, 500)]


def test_results_listings_keep_the_top_rows_of_every_policy_set(results: Path) -> None:
    df = queries.run(Source.open(results), "preempt_off", limit=1)
    assert sorted(df.select("policy_set", "dur").rows()) == [("mutex", 100), ("spinlock", 7000)]


def test_results_cannot_group_by_caller_without_stacks(results: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = cli(capsys, str(results), "waits", "--by", "caller")
    assert rc == 2 and "sim_lock_waits" in err and "'stack_id'" in err


def test_an_empty_table_gives_an_empty_summary(tmp_path: Path) -> None:
    empty = {k: v[:0] for k, v in fx.lock_waits().items()}
    empty["lock_addr"] = fx.u64([])
    path = tmp_path / "t"
    fx.write_trace(path, {"lock_waits": empty}, host=fx.HOST)
    assert q(path, "waits", "class").height == 0


def test_results_lacking_a_table_raise_a_missing_table_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = fx.write_results(tmp_path / "r", only=("sim_lock_waits",))
    assert main(["query", str(path), "sched_latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no 'sim_probe' table" in err and "\n" not in err


# -- the command line ----------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(["query", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_formats_agree_with_the_query(trace: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = cli(capsys, str(trace), "waits", "--format", "json")
    assert rc == 0 and json.loads(out)[0]["p99_ns"] == 99_000
    rc, out, _ = cli(capsys, str(trace), "waits", "--by", "class", "--format", "csv", "--limit", "1")
    assert out.splitlines() == ["lock_class,count,total_ns,mean_ns,min_ns,p50_ns,p99_ns,max_ns",
                                "mmap_lock,100,5050000,50500.0,1000,50000,99000,100000"]
    rc, out, _ = cli(capsys, str(trace), "waits", "--by", "lock")
    assert "0xffff888000001000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["waits", "--by", "bogus"], "unknown --by 'bogus'"),
        (["nosuch"], "unknown query 'nosuch'"),
        (["--sql", "SELECT nope FROM lock_waits"], 'unable to find column "nope"'),
        (["--sql", "SELEC x"], "sql parser error"),
        (["--sql", "SELECT * FROM nosuch"], "'nosuch' was not found"),
        (["compare"], "--against"),
        (["preempt_off", "--by", "cpu"], "takes no --by"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(trace: Path, capsys: pytest.CaptureFixture, argv: list[str],
                                             message: str) -> None:
    rc, out, err = cli(capsys, str(trace), *argv)
    assert rc == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_grouping_by_caller_needs_the_stacks_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = fx.write_recorded(tmp_path / "t", only=("lock_waits",))
    rc, _, err = cli(capsys, str(path), "waits", "--by", "caller")
    assert rc == 2 and "no 'stacks' table, needed for grouping by caller" in err


def test_cli_missing_table_names_the_probe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = fx.write_recorded(tmp_path / "t", only=("lock_waits",))
    rc, _, err = cli(capsys, str(path), "tlb")
    assert rc == 2 and "no 'tlb_flushes' table" in err and "tlb:tlb_flush" in err


def test_sql_sees_every_table_and_the_derived_views(trace: Path) -> None:
    src = Source.open(trace)
    df = run_sql(src, "SELECT c.caller, sum(w.dur) AS total FROM lock_waits w JOIN callers c USING (stack_id) "
                      "GROUP BY c.caller ORDER BY total DESC")
    assert df.row(0) == ("do_user_addr_fault", 2_550_000)
    assert run_sql(src, "SELECT max(dur) AS m FROM sched_latencies").item() == 10_000
    assert run_sql(src, "SELECT count(*) AS n FROM run_delays").item() == 4  # + 101's return after preemption
    assert run_sql(src, "SELECT count(*) AS n FROM preempt_sections").item() == 4
    assert run_sql(src, "SELECT count(*) AS n FROM lock_waits WHERE lock_class = 'anon_vma'").item() == 3


def test_list_names_every_query_and_sql_table(trace: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = cli(capsys, str(trace), "--list")
    assert rc == 0
    for name in [*queries.QUERIES, "lock_waits", "symbols", "callers", "sched_latencies"]:
        assert f"  {name}" in out


# -- invariants ----------------------------------------------------------------------------------

durations = st.lists(st.integers(min_value=0, max_value=2**53), min_size=1, max_size=300)


@pytest.mark.parametrize("fast", [True, False], ids=["polars-quantile", "sort-fallback"])
@settings(max_examples=60, deadline=None)
@given(xs=durations)
def test_percentiles_are_nearest_rank_values_of_the_sample(xs: list[int], fast: bool) -> None:
    saved = stats._EQUIPROBABLE
    stats._EQUIPROBABLE = fast and saved
    try:
        got = pl.DataFrame({"dur": xs}, schema={"dur": pl.Int64}).select(distribution("dur")).row(0, named=True)
    finally:
        stats._EQUIPROBABLE = saved
    s = sorted(xs)
    assert got["count"] == len(xs) and got["total_ns"] == sum(xs)
    assert got["p50_ns"] == s[math.ceil(0.5 * len(s)) - 1]
    assert got["p99_ns"] == s[math.ceil(0.99 * len(s)) - 1]
    assert (got["min_ns"], got["max_ns"]) == (s[0], s[-1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**62), min_size=1, max_size=300))
def test_every_value_falls_in_exactly_its_log2_bucket(xs: list[int]) -> None:
    hist = log2_histogram(pl.LazyFrame({"dur": xs}, schema={"dur": pl.Int64}), "dur", []).collect()
    assert hist["count"].sum() == len(xs)
    for b, lo, hi, n in hist.select("bucket", "lo_ns", "hi_ns", "count").rows():
        inside = [x for x in xs if lo <= x <= hi]
        assert len(inside) == n
        assert (b == -1 and lo == hi == 0) or (lo == 2**b and hi == 2 ** (b + 1) - 1)


def reference_latencies(switches: list[tuple], wakes: list[tuple], preempted: bool) -> list[tuple[int, int, int]]:
    """The definition in docs/QUERIES.md, directly: (tid, start ts, latency) per switch-in that ends a wait."""
    events = sorted([(seq, ts, "switch", prev, state, nxt) for seq, ts, prev, state, nxt in switches]
                    + [(seq, ts, "wake", tid, 0, 0) for seq, ts, tid in wakes])
    starts = [(seq, ts, tid) for seq, ts, kind, tid, _, _ in events if kind == "wake" and tid != 0]
    if preempted:
        starts += [(seq, ts, prev) for seq, ts, kind, prev, state, _ in events
                   if kind == "switch" and prev != 0 and state & 0xFF == 0]
    ends: dict[tuple[int, int], tuple[int, int]] = {}  # (tid, switch seq) -> (earliest start, switch ts)
    for seq, ts, tid in starts:
        nxt = next(((s, t, n == tid) for s, t, k, p, _, n in events
                    if s > seq and k == "switch" and tid in (p, n)), None)
        if nxt is not None and nxt[2]:
            key = (tid, nxt[0])
            ends[key] = (min(ts, ends.get(key, (ts, 0))[0]), nxt[1])
    return sorted((tid, start, end - start) for (tid, _), (start, end) in ends.items())


sched_events = st.lists(
    st.tuples(st.booleans(), st.integers(1, 4), st.integers(0, 4), st.sampled_from([0, 1, 2, 0x100])),
    min_size=1, max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(sched_events, st.booleans())
def test_scheduling_latency_join_matches_its_definition(events: list[tuple], preempted: bool) -> None:
    import tempfile

    from replay.analytics.sched import latencies

    switches, wakes = [], []
    for seq, (is_switch, a, b, state) in enumerate(events):
        ts = 1000 * seq + 7  # ts increases with seq, as in a trace
        if is_switch:
            switches.append((seq, ts, a, state, b if b != a else 0))  # a task never switches to itself
        else:
            wakes.append((seq, ts, a))
    want = reference_latencies(switches, wakes, preempted)
    with tempfile.TemporaryDirectory() as d:
        s_cols = ("seq", "ts", "prev_tid", "prev_state", "next_tid")
        sw = {c: [r[i] for r in switches] for i, c in enumerate(s_cols)}
        sw |= {"cpu": [0] * len(switches), "prev_prio": [120] * len(switches), "next_prio": [120] * len(switches)}
        wk = {"seq": [r[0] for r in wakes], "ts": [r[1] for r in wakes], "tid": [r[2] for r in wakes]}
        n = len(wakes)
        wk |= {"cpu": [0] * n, "prio": [120] * n, "target_cpu": [0] * n, "kind": ["wakeup"] * n, "waker_tid": [1] * n}
        fx.write_trace(Path(d) / "t", {"sched_switch": sw, "sched_wakeup": wk}, host=fx.HOST)
        got = latencies(Source.open(Path(d) / "t"), preempted=preempted).collect()
    assert sorted(got.select("tid", "ts", "dur").rows()) == want


@pytest.mark.parametrize("sql, says", [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() reads files outside the trace"),
    ('SELECT * FROM "READ_CSV"(\'/etc/passwd\')', "read_csv() reads files outside the trace"),
    ("SELECT * FROM read_csv /* hidden */ ('/etc/passwd')", "read_csv() reads files outside the trace"),
    ("SELECT * FROM lock_waits JOIN read_parquet('https://example.com/x.parquet') ON true", "read_parquet()"),
    ("SELECT (SELECT count(*) FROM read_ipc('/etc/passwd')) FROM lock_waits", "read_ipc()"),
    ("SELECT * FROM read_json('/etc/passwd')", "read_json()"),
    ("SELECT * FROM read_ndjson('/etc/passwd')", "read_ndjson()"),
    ("CREATE TABLE x AS SELECT * FROM read_csv('/etc/hostname'); SELECT * FROM x", "read_csv()"),
    ("INSTALL httpfs", "INSTALL reaches outside the trace"),
    ("SELECT 1; LOAD 'ext.so'", "LOAD reaches outside the trace"),
    ("COPY lock_waits TO '/tmp/out.csv'", "COPY reaches outside the trace"),
])
def test_sql_never_reads_outside_the_trace(trace: Path, capsys, sql: str, says: str) -> None:
    assert main(["query", str(trace), "--sql", sql]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_sql_may_mention_file_functions_in_strings_and_comments(trace: Path) -> None:
    src = Source.open(trace)
    df = run_sql(src, "SELECT 'read_csv(x)' AS s, count(*) AS n FROM lock_waits -- read_csv('/etc/passwd')")
    assert df["s"].to_list() == ["read_csv(x)"]


def test_a_plan_that_scans_another_file_is_refused_whatever_the_function_is_called(tmp_path: Path) -> None:
    from replay.analytics.sql import _check_plan
    from replay.errors import UsageError

    other = tmp_path / "other.csv"
    other.write_text("a\n1\n")
    with pytest.raises(UsageError, match="reads .*other.csv, which is not a table of the trace"):
        _check_plan(pl.scan_csv(other), allowed=set())
    _check_plan(pl.scan_csv(other), allowed={str(other)})
