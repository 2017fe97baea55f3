"""Query tables for people (units, separators, terminal width) and every advertised --by key working."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from replay.analytics import queries
from replay.analytics.output import table
from replay.analytics.source import Source
from replay.cli.main import main
from tests import analytics_fixtures as fx

SAMPLE = Path(__file__).parent.parent / "sample_traces" / "take-all-locks"


def test_durations_get_a_unit_in_the_header_and_counts_thousands_separators() -> None:
    df = pl.DataFrame({"lock_class": ["mmap_lock", "anon_vma"], "count": [12_345, 7],
                       "p99_ns": [2_500, 40_000], "total_ns": [25_000_000, 3_000_000], "tid": [12345, 2]})
    lines = table(df, width=200).splitlines()
    assert lines[0].split() == ["lock_class", "count", "p99_us", "total_ms", "tid"]
    assert lines[2].split() == ["mmap_lock", "12,345", "2.50", "25.0", "12345"]
    assert lines[3].split() == ["anon_vma", "7", "40.00", "3.0", "2"]


def test_a_narrow_terminal_wraps_columns_into_blocks_that_repeat_the_labels() -> None:
    df = pl.DataFrame({"lock_class": ["mmap_lock"], **{f"c{i}_ns": [i * 1000] for i in range(8)}})
    text = table(df, width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and all(b.startswith("lock_class") for b in blocks)
    cells = [c for b in blocks for c in b.splitlines()[2].split()[1:]]
    assert cells == [f"{i:.2f}" for i in range(8)]  # nothing cut, nothing lost


def test_json_and_csv_are_spelled_the_same_as_in_the_other_subcommands(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    trace = fx.write_recorded(tmp_path / "t")
    assert main(["query", str(trace), "waits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["p99_ns"] == 99_000  # machines keep nanoseconds
    assert main(["query", str(trace), "waits", "--csv", "--limit", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("lock_class,count,total_ns")


def test_holds_by_caller_name_the_operation_when_no_stack_was_recorded() -> None:
    df = queries.run(Source.open(SAMPLE), "holds", ("caller",))
    callers = dict(zip(df["caller"], df["count"], strict=True))
    assert callers["munmap() [no stack]"] > 10_000 and callers["mmap() [no stack]"] > 5_000
    assert "page fault [no stack]" in callers
    assert callers.get("[no stack]", 0) < 0.01 * sum(callers.values())


def _inputs(tmp_path: Path) -> dict[str, Source]:
    trace = fx.write_recorded(tmp_path / "t")
    return {"trace": Source.open(trace), "results": Source.open(fx.write_results(tmp_path / "r", trace=trace))}


#: (query, key) pairs that apply to one kind of input only: results have no stacks, pids or contention
#: flags; seeds exist only in results; gathers' fullmm needs the tier-2 gathers table.
ONLY = {"caller": "trace", "site": "trace", "pid": "trace", "type": "trace", "seed": "results"}


@pytest.mark.parametrize(("query", "key"), [(q.name, k) for q in queries.QUERIES.values() for k in q.keys])
def test_every_advertised_by_key_groups(query: str, key: str, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    q = queries.get(query)
    kinds = [ONLY[key]] if key in ONLY else ["trace", "results"]
    if q.name == "compare":
        kinds = ["results"]
    if q.name in ("stacks", "tlb", "tlb_hist", "gathers", "gather_hist"):
        kinds = [k for k in kinds if k == "trace"]  # replay results have no such tables
        if not kinds:
            pytest.skip(f"{query} reads recorded-only tables and --by {key} is for results")
    for kind in kinds:
        src = inputs[kind]
        other = inputs["trace"] if q.two_inputs else None
        df = queries.run(src, query, (key,), other)
        from replay.analytics.grouping import KEYS

        assert set(KEYS[key].columns) <= set(df.columns) or key == "caller" and "top_caller" in df.columns


def test_sched_delay_by_cause_says_what_started_each_wait(tmp_path: Path) -> None:
    df = queries.run(_inputs(tmp_path)["trace"], "sched_delay", ("cause",))
    assert set(df["cause"]) <= {"waking", "wakeup", "wakeup_new", "preempted"} and "preempted" in set(df["cause"])
