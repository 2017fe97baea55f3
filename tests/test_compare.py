"""Statistics over seeds: paired differences, t-intervals, derived flags, and the RESULTS directory."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.cli.main import main
from replay.compare import (
    MetricKey,
    compare,
    derived_dependent,
    rests_on_derived,
    summarize,
    t_cdf,
    t_quantile,
)
from replay.results import Run, write_results
from replay.sim.ops import Critical, LockRef, Span, Think, Thread, Workload
from replay.trace import Host, Trace


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452),
                                   (1000, 1.9623)])
def test_t_quantile_matches_the_printed_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)


@given(p=st.floats(0.001, 0.999), df=st.integers(1, 200))
def test_t_quantile_inverts_the_cdf(p, df):
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)


def test_metric_keys_split_into_lock_class_or_operation_kind():
    assert MetricKey.parse("wait_p99_ns:i_mmap_rwsem") == MetricKey("wait_p99_ns", lock_class="i_mmap_rwsem")
    assert MetricKey.parse("op_latency_p99_ns:munmap") == MetricKey("op_latency_p99_ns", kind="munmap")
    assert MetricKey.parse("makespan_ns") == MetricKey("makespan_ns")
    assert str(MetricKey.parse("wait_p99_ns:anon_vma")) == "wait_p99_ns:anon_vma"


def test_differences_are_paired_by_seed():
    # seeds differ wildly, but "b" is always exactly 5 more than "a" on the same seed
    runs = {"a": {s: {"x_ns": 1000.0 * s} for s in range(5)},
            "b": {s: {"x_ns": 1000.0 * s + 5} for s in range(5)}}
    (c,) = compare(runs, base="a")
    assert (c.base, c.other, c.seeds) == ("a", "b", 5)
    assert c.diff_mean == 5 and c.ci_low == pytest.approx(5) and c.ci_high == pytest.approx(5)
    assert c.significant


def test_interval_is_mean_plus_minus_t_times_standard_error():
    diffs = [1.0, 3.0, 2.0, 6.0]
    runs = {"a": {s: {"m": 10.0} for s in range(4)}, "b": {s: {"m": 10.0 + d} for s, d in enumerate(diffs)}}
    (c,) = compare(runs, base="a")
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = t_quantile(0.975, 3) * sd / 2
    assert (c.ci_low, c.ci_high) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_one_seed_has_no_interval():
    (c,) = compare({"a": {0: {"m": 1.0}}, "b": {0: {"m": 2.0}}}, base="a")
    assert c.diff_mean == 1 and c.ci_low is None and c.ci_high is None and not c.significant


def test_intervals_cover_the_true_difference_95_percent_of_the_time():
    rng = random.Random(1)
    hits = 0
    trials = 400
    for _ in range(trials):
        runs = {"a": {}, "b": {}}
        for s in range(5):
            base = rng.gauss(100, 30)
            runs["a"][s] = {"m": base}
            runs["b"][s] = {"m": base + 7 + rng.gauss(0, 2)}
        (c,) = compare(runs, base="a")
        hits += c.ci_low <= 7 <= c.ci_high
    assert 0.92 <= hits / trials <= 0.98


def test_every_later_set_is_compared_with_the_first():
    runs = {n: {0: {"m": float(i)}, 1: {"m": float(i)}} for i, n in enumerate(["2.6.39", "3.0", "current"])}
    pairs = [(c.base, c.other) for c in compare(runs, base="2.6.39")]
    assert pairs == [("2.6.39", "3.0"), ("2.6.39", "current")]


def test_summary_has_mean_and_sd_per_set_and_metric():
    runs = {"a": {0: {"m": 1.0}, 1: {"m": 3.0}}}
    (s,) = summarize(runs)
    assert (s.policy_set, s.mean, s.sd, s.seeds) == ("a", 2.0, pytest.approx(math.sqrt(2)), 2)


def nested_workload() -> Workload:
    inner = Critical(LockRef("i_mmap_rwsem", 1), "write", 400, derived=True)
    outer = Critical(LockRef("mmap_lock", 2), "write", 100, body=(inner,))
    other = Critical(LockRef("zone_lock", 3), "write", 10)
    return Workload([Thread(1, 1, [Span("munmap", (outer,)), Think(5), other])], cpus=2,
                    derived_classes=frozenset({"i_mmap_rwsem"}))


def test_figures_resting_on_derived_holds_are_flagged():
    dep = derived_dependent(nested_workload())
    assert dep == {"i_mmap_rwsem", "mmap_lock"}  # mmap_lock's hold contains the derived one
    assert rests_on_derived(MetricKey.parse("hold_p99_ns:i_mmap_rwsem"), dep)
    assert rests_on_derived(MetricKey.parse("wait_p99_ns:mmap_lock"), dep)
    assert not rests_on_derived(MetricKey.parse("wait_p99_ns:zone_lock"), dep)
    assert rests_on_derived(MetricKey.parse("makespan_ns"), dep)
    assert not rests_on_derived(MetricKey.parse("makespan_ns"), frozenset())


def test_results_directory_opens_as_a_trace_and_info_reads_it(tmp_path, capsys):
    runs = [Run(s, seed, {"makespan_ns": 1000.0 + seed + (50 if s == "b" else 0),
                          "wait_p99_ns:i_mmap_rwsem": 10.0 * seed}) for s in ("a", "b") for seed in range(3)]
    by_set = {s: {r.seed: r.metrics for r in runs if r.policy_set == s} for s in ("a", "b")}
    comparisons = compare(by_set, base="a", dependent=frozenset({"i_mmap_rwsem"}))
    write_results(tmp_path / "res", runs, comparisons, dependent=frozenset({"i_mmap_rwsem"}),
                  host=Host(cpus=8), extra={"trace": "x"})
    res = Trace.open(tmp_path / "res")
    assert res.manifest.kind == "results" and res.manifest.source == "simulated"
    summary = res.read("sim_summary")
    assert summary.height == 12
    row = summary.filter(summary["metric"] == "wait_p99_ns").row(0, named=True)
    assert row["lock_class"] == "i_mmap_rwsem" and row["kind"] is None and row["derived"]
    comp = res.read("sim_comparison").filter(res.read("sim_comparison")["metric"] == "makespan_ns").row(0, named=True)
    assert (comp["base"], comp["other"], comp["diff_mean"], comp["seeds"]) == ("a", "b", 50.0, 3)
    assert main(["info", "--json", str(tmp_path / "res")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "results" and info["tables"]["sim_summary"]["rows"] == 12
