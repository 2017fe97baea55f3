"""Statistics over seeds: paired differences, t-intervals, derived flags, and the RESULTS directory."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.cli.main import main
from replay.compare import (
    MetricKey,
    census,
    compare,
    derived_dependent,
    rests_on_derived,
    summarize,
    t_cdf,
    t_quantile,
)
from replay.results import Run, write_results
from replay.sim.ops import Critical, Gather, LockRef, Span, Think, Thread, Workload, children
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


def _dependent_by_full_walk(workload: Workload) -> frozenset[str]:
    """The definition, walking every op: a derived section adds the classes of all that enclose it."""
    out = set(workload.derived_classes)
    todo = [(op, ()) for t in workload.threads for op in t.ops]
    while todo:
        op, outer = todo.pop()
        if isinstance(op, Critical):
            if op.derived:
                out.update(outer)
            todo += [(b, (*outer, op.lock.lock_class)) for b in children(op)]
        elif isinstance(op, Span):
            todo += [(b, outer) for b in op.body]
    return frozenset(out)


_CLASSES = ("mmap_lock", "i_mmap_rwsem", "anon_vma", "zone_lock", "ptl")


def _ops(depth: int):
    leaf = st.one_of(st.builds(Think, st.integers(0, 9)),
                     st.builds(lambda c, d: Critical(LockRef(c, 1), "read", 3, derived=d),
                               st.sampled_from(_CLASSES), st.booleans()),
                     st.builds(Gather, st.integers(1, 9)))
    if depth == 0:
        return leaf
    inner = st.lists(_ops(depth - 1), max_size=3).map(tuple)
    return st.one_of(
        leaf,
        st.builds(lambda b: Span("munmap", b), inner),
        st.builds(lambda c, b, d: Critical(LockRef(c, 2), "write", 1, body=b, derived=d),
                  st.sampled_from(_CLASSES), inner, st.booleans()),
        st.builds(lambda c, b, r: Critical(LockRef(c, 3), "write", 1, body=b,
                                           downgrade=Critical(LockRef(c, 3), "read", 1, body=r)),
                  st.sampled_from(_CLASSES), inner, inner))


@given(st.lists(st.lists(_ops(3), max_size=4), max_size=3),
       st.frozensets(st.sampled_from(_CLASSES), max_size=2))
def test_census_is_the_full_walk(threads, derived):
    """The one walk the report takes gives what walking every op, one question at a time, gives."""
    w = Workload([Thread(i, 1, ops) for i, ops in enumerate(threads)], cpus=2, derived_classes=derived)
    assert derived_dependent(w) == _dependent_by_full_walk(w)
    every, todo = [], [op for t in w.threads for op in t.ops]
    while todo:
        op = todo.pop()
        every.append(op)
        todo += children(op)
    found = census(w)
    assert found.acquisitions == Counter(op.lock.lock_class for op in every if isinstance(op, Critical))
    assert found.spans == Counter(op.kind for op in every if isinstance(op, Span))
    assert found.gathers == sum(isinstance(op, Gather) for op in every)


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
