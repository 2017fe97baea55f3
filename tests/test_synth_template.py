"""Iteration templates: flattening, timing, nesting depth and preemption points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.synth.model import LogNormal, Model
from replay.synth.template import Chain, Kernel, Mark, Repeat, Span, Work, compile_template, evaluate

FIXED = Model({"a": LogNormal(10, 0), "b": LogNormal(100, 0), "c": LogNormal(1000, 0)})


def hold(body, cls="mmap_lock"):
    return Span("lock_holds", {"lock_class": cls}, tuple(body))


def test_spans_cover_their_body_and_marks_sit_between_leaves():
    c = compile_template((Work("a"), Mark("page_faults", {}), hold([Work("b"), hold([Work("c")])]), Work("a")))
    tl = evaluate(c, FIXED, np.random.default_rng(0), 2)
    assert tl.v[-1] == pytest.approx(2 * (10 + 100 + 1000 + 10))
    spans = c.inst_last >= 0
    starts = tl.v[c.inst_first[spans]]
    ends = tl.v[c.inst_last[spans] + 1]
    assert sorted(zip(starts.tolist(), ends.tolist(), strict=True)) == [(10, 1110), (110, 1110)]
    assert tl.v[c.inst_first[~spans]].tolist() == [10]  # the mark: after the first leaf
    assert sorted(c.inst_depth[spans].tolist()) == [0, 1]


def test_repeat_tags_instances_with_their_repetition_index():
    c = compile_template((Work("a"), Repeat(4, (Mark("page_faults", {}), Work("b")))))
    assert c.leaves == 5 and c.inst_rep.tolist() == [0, 1, 2, 3]
    assert c.inst_first.tolist() == [1, 2, 3, 4]


def test_a_chain_nests_its_links_in_order_and_releases_them_innermost_first():
    links = tuple({"lock_class": "i_mmap_rwsem", "n": i} for i in range(5))
    c = compile_template((hold([Work("b"), Chain(links, "a", "a", (Work("c"),))]),))
    tl = evaluate(c, FIXED, np.random.default_rng(0), 1)
    depth = c.inst_depth
    order = np.argsort(depth)
    starts, ends = tl.v[c.inst_first[order]], tl.v[c.inst_last[order] + 1]
    assert depth[order].tolist() == [0, 1, 2, 3, 4, 5]
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(ends[1:]) < 0)  # nested, innermost released first
    assert ends[0] == ends[1]  # the mmap_lock hold ends with the chain's last release


def test_only_boundaries_outside_spans_and_kernel_groups_are_preemptible():
    c = compile_template((Work("a"), Kernel((Work("a"), Work("a"))), hold([Work("a"), Work("a")]), Work("a")))
    assert c.free.tolist() == [True, True, False, True, False, True, True]


def test_sleeping_inside_a_span_is_refused():
    with pytest.raises(ValueError, match="inside a span"):
        compile_template((hold([Work("a", block=True)]),))


def test_a_span_without_work_is_refused():
    with pytest.raises(ValueError, match="at least one Work"):
        compile_template((Span("syscalls", {}, (Mark("page_faults", {}),)),))


def _trees(depth: int = 3):
    leaf = st.sampled_from(["a", "b", "c"]).map(Work)
    if depth == 0:
        return leaf
    sub = st.lists(_trees(depth - 1), min_size=1, max_size=3).map(tuple)
    return st.one_of(
        leaf,
        sub.map(lambda body: hold(body)),
        sub.map(Kernel),
        st.tuples(st.integers(1, 4), sub).map(lambda t: Repeat(*t)),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(_trees(), min_size=1, max_size=4), st.integers(1, 3))
def test_any_template_times_add_up_and_its_spans_nest(nodes, iterations):
    c = compile_template(tuple(nodes))
    tl = evaluate(c, FIXED, np.random.default_rng(1), iterations)
    means = {"a": 10, "b": 100, "c": 1000}
    per_iteration = sum(means[d] for d in np.array(c.dists)[c.leaf_dist])
    assert tl.v[-1] == pytest.approx(iterations * per_iteration)
    spans = c.inst_last >= 0
    iv = sorted(zip(c.inst_first[spans].tolist(), c.inst_last[spans].tolist(), c.inst_depth[spans].tolist(),
                    strict=True), key=lambda x: (x[0], -x[1], x[2]))  # identical extents: the outer one first
    stack: list[tuple[int, int, int]] = []
    for first, last, depth in iv:
        while stack and stack[-1][1] < first:
            stack.pop()
        assert not stack or last <= stack[-1][1]  # contained, never partly overlapping
        assert depth == len(stack)
        stack.append((first, last, depth))
        # no boundary strictly inside a span is preemptible
        assert not c.free[first + 1: last + 1].any()
