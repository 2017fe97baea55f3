"""The default comparison adds nothing of its own (issue #16, docs/VALIDATION.md §f).

`mmreplay replay SAMPLE` runs every set with the same seeds, costs, CPUs and
probe and pairs the seeds; any difference it prints between two sets must come
from their policies. Replaying `as-recorded` against the same policies spelled
as a second set (every lock class as recorded, the preemptible gather) must
therefore print zero difference on every metric of every shipped sample: a
difference would be the replayer's (set order, shared random draws, caches of
the first run leaking into the second), not the kernel's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replay.cli.main import main
from replay.policies import resolve
from replay.trace.schema import LOCK_CLASSES

SAMPLES = sorted(p for p in (Path(__file__).resolve().parents[1] / "sample_traces").iterdir()
                 if (p / "manifest.json").exists())
AS_RECORDED_AGAIN = ",".join([*(f"{c}=as-recorded" for c in LOCK_CLASSES), "gather=preemptible"])


def test_the_second_set_is_as_recorded_under_another_name():
    again, named = resolve(AS_RECORDED_AGAIN), resolve("as-recorded")
    assert again.name != named.name
    assert dict(again.locks) == dict(named.locks) and again.gather == named.gather


def test_every_sample_is_there():
    assert len(SAMPLES) >= 10, [p.name for p in SAMPLES]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_as_recorded_against_itself_differs_by_nothing(sample, capsys):
    assert main(["replay", str(sample), "--compare", "as-recorded", AS_RECORDED_AGAIN, "--seeds", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["comparison"]
    assert rows, f"{sample.name}: no metric compared"
    differing = [(r["metric"], r["base_mean"], r["other_mean"]) for r in rows
                 if r["diff_mean"] != 0 or r["base_mean"] != r["other_mean"]]
    assert not differing, f"{sample.name}: as-recorded differs from itself in {differing[:5]}"
    by_set: dict[str, dict[str, float]] = {}
    for s in out["summary"]:
        by_set.setdefault(s["policy_set"], {})[s["metric"]] = s["mean"]
    assert len(by_set) == 2
    first, second = by_set.values()
    assert first == second
